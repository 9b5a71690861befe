//! The runner under the example app's real workload: plain figures, printed, never asserted
//! on time.
//!
//! Every test is published by [`livecheck_tests::load::publish_order_test`] (a test record
//! and the app's four signals with real `Order`, `Delivered`, `Cached` and `Execution`
//! values) into the embedded broker (librdkafka's mock cluster, 4 partitions per topic; or
//! tansu, or any broker: see "Brokers" below) and
//! checked by a [`Runner`] of the real order case, [`livecheck_tests::orders::place_order`]
//! (10 s signal timeout), without its 300 ms `settle` (a window for a repeat of its last
//! step, which would add that much to every verdict and hold every run as long: this
//! measures the runner). It measures:
//!
//! a. verdict accuracy under load: 1,000 tests/s sustained for 10 s; tests sent, the
//!    achieved rate and the count of non-PASS verdicts (every signal is sent right after
//!    its test, so each of them is a false verdict);
//! b. verdict latency over the runs of (a): from the arrival of a run's last signal at the
//!    runner (`timeline.last().arrived_at`) to its verdict (`finished_at`), and from the
//!    service *sending* it (`sent_at`, Kafka included; goal p50 <= 10 ms, p99 <= 50 ms);
//!    beside it the checking's CPU: the runner idle (the process's CPU with the runner idle,
//!    less without it) and CPU per test under load (this process less the embedded
//!    broker's `rdk:mock` threads: generator and runner);
//! b'. the same for 3 s at runner fetch waits of 100, 20, 5, 3, 2 and 1 ms: latency against idle
//!    CPU, the trade-off behind [`livecheck_core::DEFAULT_FETCH_WAIT`];
//! c. sustained throughput, on a runtime of 1, then 2 tokio worker threads (then 4, 8, ...
//!    and as many as the machine has cores, where it has more): 15,000
//!    tests (75,000 records) produced up front, then, in each of 5 rounds, a bare rdkafka
//!    `StreamConsumer` reading them all and parsing each payload as a `serde_json::Value`,
//!    a floor (the same, plus a report of a passing run's shape encoded and produced for
//!    each test, as any runner must: the work that is not the runner's own), and a fresh
//!    runner from its start to its last report; the medians and their ratios, also from
//!    each reader's first record on (its wait for a first record left out; a runner in
//!    lanes, its first lane's);
//!    and the CPU per record of each (this process less the broker's threads), with the
//!    ratio that the runner's CPU per record allows on this machine's cores; and a runner
//!    without verdicts, whose runs take and check the same four steps and then wait for a
//!    fifth that never comes: the runner's intake and checks, timed until every run has
//!    checked its four steps, before any concludes (its `max_run_time` of 3 s ends them
//!    after it, untimed; not in a group); then the
//!    runner's records per second at each worker count against 1 worker (the scaling);
//!    at 2 worker threads and more (up to the 4 partitions), the same again with the runner
//!    in as many lanes as workers (`RunnerConfig::lanes`, as the `livecheck` service runs
//!    by default), and its scaling against 1 lane on 1 worker;
//! d. memory per in-flight run: resident set size (`/proc/self/statm`) before and after
//!    20,000 tests are registered with no signals to a runner whose case waits 600 s, so
//!    they stay in flight, then again after 20,000 more; bytes per run, goal <= 1 KiB.
//!    Beside it, the live Rust heap (a counting global allocator: bytes allocated minus
//!    bytes freed; librdkafka's own mallocs are not seen), which is free of the allocator's
//!    slack and fragmentation, and what it is made of (live allocations per run by size);
//!    and this process's CPU while nothing comes, with the 40,000 runs waiting and with none.
//!
//! d'. the same for the case declared [`Case::start_on_first_step`]: its runs are parked
//!    in the runner, not tasks, until a record of their test comes.
//!
//! The last three lines are the figures to compare run to run: `runner/raw ratio` (c, the
//! largest lane count run that is at most the `livecheck` service's default here, one lane
//! per core up to 8, and at most the bench's 4 partitions, on that many worker threads: 2
//! lanes on 2 cores, 4 on 4 cores or more; 1 lane on 2 workers when none qualifies, as on 1
//! core), `bytes per in-flight run` (d, live Rust heap, runs
//! started at once) and `send to verdict p50/p99 ms` (b, over section a's runs); a section
//! not run prints `n/a (...)` instead of a figure.
//!
//! It exits non-zero when a verdict is not PASS (or a reader does not see every record):
//! the figures would then be meaningless. Times are wall-clock on whatever else the machine
//! is doing: compare runs on a quiet machine only.
//!
//! Run it (release mode; about 3.5 minutes on 2 cores, most of it waiting) with
//!
//! ```text
//! cargo bench -p livecheck-tests --bench live
//! ```
//!
//! It runs on the `livecheck` binaries' global allocator, mimalloc (feature `mimalloc` of
//! this package, on by default); `--no-default-features` measures the system allocator.
//!
//! Brokers: by default each section starts an embedded broker in this process. With
//! `LIVE_BENCH_BROKER=tansu` the bench starts tansu on a free loopback port (the binary that
//! `ci/build-images.sh` caches, or `LIVE_BENCH_TANSU_BIN`) and stops it at the end; with
//! `LIVE_BENCH_BOOTSTRAP=HOST:PORT` it uses a broker already running there (fresh topics
//! per section). The broker's own CPU is never counted.
//!
//! With `LIVE_BENCH_ONLY=a` (a, b and b'), `c` or `d` it runs only those sections (to profile
//! them; the last lines then say `n/a` for what was not measured), and with `LIVE_BENCH_TRACE=1` it prints the runner's
//! counters every 100 ms while a runner works. `LIVE_BENCH_FETCH_WAIT_MS` sets the fetch wait
//! of section (c)'s runner and bare consumer alike (default: the runner's default), and
//! `LIVE_BENCH_WORKERS=2` (a comma-separated list) the worker counts section (c) runs. With
//! `LIVE_BENCH_GROUP=1` section (c)'s runners each join a consumer group of their own, as the
//! `livecheck` service runs (each round then reads a backlog of its own), and
//! `LIVE_BENCH_KAFKA` adds Kafka properties to every client (`key=value` pairs separated by
//! `;`, e.g. `debug=fetch,topic`). With `RUST_LOG` set (e.g.
//! `RUST_LOG=livecheck_core=debug`) the runner's logs are printed (librdkafka's under
//! `librdkafka`).

#![expect(
    unsafe_code,
    reason = "a counting allocator measures the live heap per run"
)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use example_app::model::{Cached, Delivered, Execution, Order};
use example_app::signals::{
    ORDER_CACHED, ORDER_CASE, ORDER_EXECUTED, ORDER_SENT_TO_DB, ORDER_SENT_TO_KAFKA,
};
use example_app::Side;
use livecheck_core::{
    ensure, ensure_eq, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner,
    RunnerConfig, Signal, Step, Suite, Topics, Verdict,
};
use livecheck_tests::load::{publish_order_test, register_order_test};
use livecheck_tests::orders::place_order;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::broadcast::error::RecvError;

#[path = "../../livecheck-core/benches/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{
    allocations, by_size, count_by_size_class, live_bytes as heap_bytes, CountingAlloc,
};

// The `livecheck` binaries' allocator (feature `mimalloc`, on by default), counted.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: CountingAlloc<mimalloc::MiMalloc> = CountingAlloc(mimalloc::MiMalloc);
#[cfg(feature = "mimalloc")]
const ALLOCATOR: &str = "mimalloc, as the livecheck binaries";
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc(std::alloc::System);
#[cfg(not(feature = "mimalloc"))]
const ALLOCATOR: &str = "the system's (built with --no-default-features)";

/// Partitions of each LiveCheck topic.
const PARTITIONS: i32 = 4;
/// Signals per test (the order case's four steps).
const SIGNALS_PER_TEST: u64 = 4;

/// (a) Tests per second, and for how long.
const LOAD_RATE: u64 = 1_000;
const LOAD_FOR: Duration = Duration::from_secs(10);
/// (a) The generator produces the tests due at each tick (a small burst per tick).
const LOAD_TICK: Duration = Duration::from_millis(10);
/// (b) Goal for the verdict latency's 99th percentile.
const LATENCY_GOAL: Duration = Duration::from_millis(50);

/// (c) Tests produced up front: 5 records each, within what the mock cluster keeps.
const THROUGHPUT_TESTS: u64 = 15_000;
/// (c) Rounds (medians are printed).
const ROUNDS: usize = 5;
/// (c) Goal for runner throughput over bare-consumer throughput.
const RATIO_GOAL: f64 = 0.9;

/// (d) Runs kept in flight.
const IN_FLIGHT: usize = 20_000;
/// (d) Goal for memory per in-flight run.
const BYTES_PER_RUN_GOAL: f64 = 1024.0;

/// Longest wait for a reader (runner or bare consumer) to get through its records.
const DEADLINE: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(problems) if problems.is_empty() => ExitCode::SUCCESS,
        Ok(problems) => {
            eprintln!("\nerror: the figures above are meaningless:");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("\nerror: {err}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))
}

/// Runs every section; returns what makes figures meaningless (non-PASS verdicts, ...).
/// The last three lines printed are the figures to compare run to run.
fn run() -> Result<Vec<String>, String> {
    println!(
        "LiveCheck runner under the example app's workload (no timed assertions; figures only)"
    );
    let broker = Broker::from_env()?;
    if let Broker::External(b) | Broker::Tansu(_, b) = &broker {
        let _ = EXTERNAL.set(b.clone());
    }
    println!(
        "{}, {PARTITIONS} partitions per topic, case {} (4 signals per test); {} cores; allocator: {ALLOCATOR}\n",
        broker.describe(),
        example_app::signals::ORDER_CASE,
        available_cores()
    );
    let mut problems = Vec::new();
    if std::env::var_os("RUST_LOG").is_some() {
        // On stderr: stdout ends with the three figures' lines, and a task still running
        // after them may log.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // `LIVE_BENCH_ONLY=c` (or `d`) runs only that section (to profile it).
    let only = std::env::var("LIVE_BENCH_ONLY").ok();
    let runs = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let latency = if runs("a") {
        let rt = runtime(2)?;
        let latency = rt.block_on(accuracy_and_latency(&mut problems))?;
        println!();
        rt.block_on(fetch_wait_trade_off(&mut problems))?;
        println!();
        Some(latency)
    } else {
        None
    };
    let mut ratio = None;
    if runs("c") {
        // 1 and 2 workers, and more where the machine has the cores: 4, 8, ... and all.
        let cores = available_cores();
        let counts = worker_counts(cores)?;
        // The ratio printed last is that of the runner as the `livecheck` service runs it
        // here: as many lanes as cores, up to 8 (its default), or as many as this bench's
        // partitions allow, on as many workers.
        let service_lanes = cores.min(8);
        let mut ratio_lanes = 0;
        let (mut rates, mut lane_rates) = (Vec::new(), Vec::new());
        for workers in counts {
            let rt = runtime(workers)?;
            let (r, runner_rate) = rt.block_on(throughput(&mut problems, workers, 1))?;
            if workers == 2 && ratio_lanes == 0 {
                ratio = Some((r, "1 lane on 2 worker threads".to_owned()));
            }
            rates.push((workers, runner_rate));
            println!();
            // As many lanes as workers (the `livecheck` service's default: one per core),
            // each on its share of the partitions.
            if workers > 1 && workers <= PARTITIONS as usize {
                let (r, lanes_rate) = rt.block_on(throughput(&mut problems, workers, workers))?;
                if workers <= service_lanes && workers > ratio_lanes {
                    ratio_lanes = workers;
                    let how = if workers == service_lanes {
                        format!("as the livecheck service runs them on {cores} cores")
                    } else if workers == PARTITIONS as usize {
                        format!("the livecheck service would run {service_lanes} on {cores} cores; the bench's topics have {PARTITIONS} partitions")
                    } else {
                        format!("the livecheck service would run {service_lanes} on {cores} cores; LIVE_BENCH_WORKERS asked for no larger count")
                    };
                    ratio = Some((
                        r,
                        format!("{workers} lanes on {workers} worker threads ({how})"),
                    ));
                }
                lane_rates.push((workers, lanes_rate));
                println!();
            }
        }
        if let Some(&(first, one)) = rates.first() {
            let scaled = |rates: &[(usize, f64)]| {
                rates
                    .iter()
                    .map(|(w, r)| format!("{w}: {r:.0} ({:.2}x)", r / one))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "   scaling: runner records/s by worker threads (against {first}) on {cores} cores: {}",
                scaled(&rates)
            );
            if !lane_rates.is_empty() {
                println!(
                    "   scaling with lanes (as many lanes as workers, against 1 lane on {first}): {}",
                    scaled(&lane_rates)
                );
            }
            println!();
        }
    }
    let rt = runtime(2)?;
    let bytes_per_run = if runs("d") {
        let started = rt.block_on(memory_per_run(false))?;
        println!();
        rt.block_on(memory_per_run(true))?;
        Some(started)
    } else {
        None
    };
    // The runs left in flight by (d) wait 600 s: do not wait for them.
    rt.shutdown_background();
    println!();
    // A section not run says so: a zero would read as a figure.
    let not_run = |section: &str| format!("n/a (section {section} not run: LIVE_BENCH_ONLY)");
    // The last three lines are exactly `name: figure`, to be compared run to run (and read
    // by scripts); what the ratio was measured on comes before them.
    if let Some((_, how)) = &ratio {
        println!("the ratio below: {how}");
    }
    match ratio {
        Some((ratio, _)) => println!("runner/raw ratio: {ratio:.2}"),
        None if runs("c") => println!(
            "runner/raw ratio: n/a (section c ran neither 2 workers nor a lane count up to {}: LIVE_BENCH_WORKERS)",
            available_cores().min(8)
        ),
        None => println!("runner/raw ratio: {}", not_run("c")),
    }
    match bytes_per_run {
        Some(bytes) => println!("bytes per in-flight run: {bytes:.0}"),
        None => println!("bytes per in-flight run: {}", not_run("d")),
    }
    match latency {
        Some((p50, p99)) => println!(
            "send to verdict p50/p99 ms: {:.1} / {:.1}",
            ms(p50),
            ms(p99)
        ),
        None => println!("send to verdict p50/p99 ms: {}", not_run("a")),
    }
    Ok(problems)
}

/// CPU time (user + system) of this process so far, less that of the embedded broker's
/// threads (librdkafka names them `rdk:mock`): the clients' side, as with a remote broker.
fn cpu_time() -> Result<Duration, String> {
    Ok(cpu_split()?.0)
}

/// CPU time so far of the clients (this process less the embedded broker's threads) and of
/// the broker (those threads, or the tansu process the bench started; zero for a broker it
/// did not start).
///
/// A broker thread that ended keeps the time last seen of it in the broker's share (the
/// process's own count keeps it too): summing only the live threads, the broker's time went
/// down when an earlier section's broker stopped, and a delta of it underflowed.
fn cpu_split() -> Result<(Duration, Duration), String> {
    // By thread id and start time (a thread id may be used again).
    static MOCK_THREADS: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());
    let mut seen = MOCK_THREADS.lock().unwrap_or_else(|p| p.into_inner());
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                if stat.contains("(rdk:mock)") {
                    let tid = task.file_name().to_string_lossy().into_owned();
                    // Field 22, the start time, is the 20th after the command name.
                    let start = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
                        .unwrap_or_default()
                        .to_owned();
                    seen.insert((tid, start), stat_ticks(&stat)?);
                }
            }
        }
    }
    let mock: u64 = seen.values().sum();
    drop(seen);
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("reading /proc/self/stat: {e}"))?;
    let started = match BROKER_PID.get() {
        Some(pid) => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("reading the broker's /proc/{pid}/stat: {e}"))
            .and_then(|stat| stat_ticks(&stat))?,
        None => 0,
    };
    // USER_HZ is 100 on Linux.
    let ticks = |n: u64| Duration::from_millis(n * 10);
    Ok((
        ticks(stat_ticks(&stat)?.saturating_sub(mock)),
        ticks(mock + started),
    ))
}

/// The cores this process may use.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The process id of the broker the bench started (tansu), when it did.
static BROKER_PID: OnceLock<u32> = OnceLock::new();

/// utime + stime of a `/proc/.../stat` line, in clock ticks.
fn stat_ticks(stat: &str) -> Result<u64, String> {
    // After the command name (in parentheses): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("unexpected stat line: {stat:?}"))
    };
    Ok(ticks(14)? + ticks(15)?)
}

/// CPU time of this process's live threads by kind, in ticks: the tokio workers (the
/// runner's loop and its runs, or the bare consumer's decoding), librdkafka's client threads
/// (fetching, producing; the embedded broker's `rdk:mock` threads left out) and the others
/// (the bench's main thread, a producer's polling thread). Threads that ended are not in it:
/// read it while the clients measured are alive.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCpu {
    workers: u64,
    librdkafka: u64,
    other: u64,
}

impl ThreadCpu {
    fn now() -> Self {
        let mut cpu = Self::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Ok(ticks) = stat_ticks(&stat) else {
                continue;
            };
            let name = stat
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map_or("", |(name, _)| name);
            if name.starts_with("tokio-rt") {
                cpu.workers += ticks;
            } else if name == "rdk:mock" {
            } else if name.starts_with("rdk:") {
                cpu.librdkafka += ticks;
            } else {
                cpu.other += ticks;
            }
        }
        cpu
    }

    /// Microseconds per record of each kind since `before`.
    fn per_record(self, before: Self, records: u64) -> String {
        let us = |after: u64, before: u64| {
            after.saturating_sub(before) as f64 * 10_000.0 / records as f64
        };
        format!(
            "tokio workers {:.1}, librdkafka threads {:.1}, other threads {:.1}",
            us(self.workers, before.workers),
            us(self.librdkafka, before.librdkafka),
            us(self.other, before.other)
        )
    }
}

/// CPU time this process spends over `window` doing nothing but what runs in the
/// background (consumers fetching, producers idle, the embedded broker answering).
async fn idle_cpu(window: Duration) -> Result<Duration, String> {
    // Whatever was starting or closing (consumers, the previous broker) settles first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_time()?;
    tokio::time::sleep(window).await;
    Ok(cpu_time()?.saturating_sub(before))
}

/// The bootstrap address of an external broker, when the bench runs on one (set once by
/// [`Broker::from_env`]); the embedded broker otherwise.
static EXTERNAL: OnceLock<String> = OnceLock::new();

fn external_broker() -> Option<&'static str> {
    EXTERNAL.get().map(String::as_str)
}

/// The broker the bench measures on, chosen by the environment:
///
/// - nothing set: the embedded broker, a fresh one per section;
/// - `LIVE_BENCH_BOOTSTRAP=HOST:PORT`: a Kafka-compatible broker already running there;
/// - `LIVE_BENCH_BROKER=tansu`: a tansu broker started by the bench on a free loopback
///   port with in-memory storage (the binary from `LIVE_BENCH_TANSU_BIN`, else the one
///   `ci/build-images.sh` caches, `$HOME/.cache/livecheck/tansu/bin/tansu`), stopped at
///   the end. Its own CPU is not counted in the figures, as the embedded broker's is not.
enum Broker {
    Embedded,
    External(String),
    Tansu(std::process::Child, String),
}

impl Broker {
    fn from_env() -> Result<Self, String> {
        if let Ok(bootstrap) = std::env::var("LIVE_BENCH_BOOTSTRAP") {
            return Ok(Self::External(bootstrap));
        }
        match std::env::var("LIVE_BENCH_BROKER").as_deref() {
            Err(_) | Ok("embedded") => Ok(Self::Embedded),
            Ok("tansu") => Self::start_tansu(),
            Ok(other) => Err(format!(
                "LIVE_BENCH_BROKER={other}: expected `embedded` or `tansu` (or set LIVE_BENCH_BOOTSTRAP=HOST:PORT)"
            )),
        }
    }

    fn start_tansu() -> Result<Self, String> {
        let binary = std::env::var_os("LIVE_BENCH_TANSU_BIN")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| {
                    std::path::Path::new(&home).join(".cache/livecheck/tansu/bin/tansu")
                })
            })
            .ok_or("set LIVE_BENCH_TANSU_BIN to the tansu binary")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free loopback port: {e}"))?
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(&binary)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://{address}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{address}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting tansu ({}): {e}; build it with ci/build-images.sh or set LIVE_BENCH_TANSU_BIN",
                    binary.display()
                )
            })?;
        let _ = BROKER_PID.set(child.id());
        // Killed on drop, whatever happens next.
        let mut broker = Self::Tansu(child, address.clone());
        let start = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            if let Self::Tansu(child, _) = &mut broker {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "tansu ({}) exited at start ({status}); run it by hand to see why: {} broker --listener-url tcp://{address} --advertised-listener-url tcp://{address} --storage-engine memory://tansu/",
                        binary.display(),
                        binary.display()
                    ));
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("tansu did not listen on {address} within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    fn describe(&self) -> String {
        match self {
            Self::Embedded => "embedded broker (librdkafka's mock cluster, in this process)".into(),
            Self::External(b) => format!("external broker at {b}"),
            Self::Tansu(_, b) => format!("tansu 0.6 at {b} (its own process, in-memory storage)"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Self::Tansu(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Fresh topics on the bench's broker, and a client of it.
struct World {
    // Dropped before the broker: a client whose broker vanished never finishes closing.
    client: LiveCheck,
    topics: Topics,
    /// Section (c)'s floor writes its reports here, away from the runner's reports topic.
    floor_topic: String,
    _broker: Option<EmbeddedBroker>,
}

impl World {
    /// A fresh embedded broker per world, or fresh topics on the external broker of
    /// [`external_broker`].
    async fn new(tag: &str) -> Result<Self, String> {
        let prefix = format!("{tag}{}-", uuid::Uuid::new_v4().simple());
        let topics = Topics::with_prefix(&prefix);
        let floor_topic = format!("{prefix}floor-reports");
        let (bootstrap, broker) = match external_broker() {
            Some(bootstrap) => {
                livecheck_harness::create_topics(
                    &KafkaConfig::new(bootstrap),
                    &topics,
                    std::slice::from_ref(&floor_topic),
                    &[],
                    PARTITIONS,
                )
                .await
                .map_err(|e| e.to_string())?;
                (bootstrap.to_owned(), None)
            }
            None => {
                let broker = EmbeddedBroker::with_topics(&topics, &[&floor_topic], PARTITIONS)
                    .map_err(|e| format!("embedded broker: {e}"))?;
                (broker.bootstrap_servers().to_owned(), Some(broker))
            }
        };
        let client = LiveCheck::new(kafka_config(bootstrap)?, topics.clone())
            .map_err(|e| format!("LiveCheck client: {e}"))?;
        // As a service does at start: otherwise the generator's first records wait about
        // 100 ms for the topics' look-up, and in a 3 s row of (b') the p99 is that wait.
        client
            .connect(Duration::from_secs(10))
            .await
            .map_err(|e| format!("LiveCheck client: {e}"))?;
        Ok(Self {
            client,
            topics,
            floor_topic,
            _broker: broker,
        })
    }

    fn flush(&self) -> Result<(), String> {
        self.client
            .flush(Duration::from_secs(60))
            .map_err(|e| format!("producer flush: {e}"))?;
        let c = self.client.counters();
        let failed = c.signal_errors() + c.delivery_errors();
        if failed > 0 {
            return Err(format!("{failed} records were not produced"));
        }
        Ok(())
    }
}

/// A runner consuming in a task of its own.
struct Running {
    runner: Runner,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), livecheck_core::Error>>,
}

impl Running {
    fn start(runner: Runner) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let runner = runner.clone();
            async move {
                runner
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        Self { runner, stop, task }
    }

    /// Waits (at most [`DEADLINE`]) until `done` holds of the runner.
    async fn wait_for(&self, what: &str, done: impl Fn(&Runner) -> bool) -> Result<(), String> {
        let start = Instant::now();
        let trace = std::env::var_os("LIVE_BENCH_TRACE").is_some();
        let mut last = start;
        while !done(&self.runner) {
            if start.elapsed() > DEADLINE || self.task.is_finished() {
                return Err(format!(
                    "the runner did not reach {what} in {:.0} s; counters: {:?}",
                    start.elapsed().as_secs_f64(),
                    nonzero(self.runner.counters().snapshot())
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            if trace && last.elapsed() >= Duration::from_millis(100) {
                last = Instant::now();
                let c = self.runner.counters();
                eprintln!(
                    "     {:>6.3} s: tests {} signals {} reports {} in flight {}",
                    start.elapsed().as_secs_f64(),
                    c.tests_received(),
                    c.signals_received(),
                    c.reports_published(),
                    self.runner.in_flight()
                );
            }
        }
        Ok(())
    }

    async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| format!("the runner task failed: {e}"))?
            .map_err(|e| format!("the runner failed: {e}"))
    }
}

/// The runner's verdict counts, in the order of [`Verdict::ALL`].
fn verdicts(runner: &Runner) -> [u64; 5] {
    let c = runner.counters();
    [
        c.verdict_pass(),
        c.verdict_fail(),
        c.verdict_error(),
        c.verdict_timeout(),
        c.verdict_skip(),
    ]
}

fn describe(verdicts: [u64; 5]) -> String {
    Verdict::ALL
        .iter()
        .zip(verdicts)
        .map(|(v, n)| format!("{v} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the report subscriber of (a) collects.
#[derive(Debug, Default)]
struct Seen {
    reports: u64,
    lagged: u64,
    /// Last signal's arrival at the runner to verdict, per PASS run.
    arrival_to_verdict: Vec<Duration>,
    /// Last signal sent by the service to verdict, per PASS run (includes Kafka).
    sent_to_verdict: Vec<Duration>,
    /// The first few non-PASS reports.
    non_pass: Vec<Arc<Report>>,
}

/// What one load run (a runner under [`LOAD_RATE`] tests/s) gave.
struct LoadOutcome {
    sent: u64,
    load_time: Duration,
    settle: Duration,
    counts: [u64; 5],
    counters: Vec<(&'static str, u64)>,
    all_reported: Result<(), String>,
    seen: Seen,
    /// Process CPU over an idle window before the runner started, and with it idle.
    idle_without: Duration,
    idle_with: Duration,
    /// Process CPU from the first test sent to the last report.
    under_load: Duration,
    /// RSS (bytes) with the runner started and idle, after the last report, and after
    /// [`RSS_SETTLE`] more of idling.
    rss: [u64; 3],
    /// The live Rust heap (bytes) at the same three points.
    heap: [i64; 3],
}

/// How long the runner idles after a load run before its RSS is read again.
const RSS_SETTLE: Duration = Duration::from_secs(3);

/// How long the idle CPU windows last.
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// A fresh broker and runner (`fetch_wait`), idle CPU without and with the runner, then
/// [`LOAD_RATE`] tests/s for `duration`, every report taken.
async fn load_run(fetch_wait: Duration, duration: Duration) -> Result<LoadOutcome, String> {
    let total = LOAD_RATE * duration.as_secs();
    let world = World::new("live-a").await?;
    let idle_without = idle_cpu(IDLE_WINDOW).await?;
    let runner = Runner::new(
        Suite::new([order_case()]).map_err(|e| e.to_string())?,
        world.client.clone(),
        RunnerConfig {
            fetch_wait,
            ..RunnerConfig::default()
        },
    );
    // Drain every report as it comes (a receiver that is not drained lags).
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut reports = runner.subscribe();
    let drain = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                match reports.recv().await {
                    Ok(report) => {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        seen.reports += 1;
                        if report.verdict != Verdict::Pass {
                            if seen.non_pass.len() < 3 {
                                seen.non_pass.push(report);
                            }
                            continue;
                        }
                        if let Some(last) = report.timeline.last() {
                            seen.arrival_to_verdict
                                .push(between(last.arrived_at, report.finished_at));
                            seen.sent_to_verdict
                                .push(between(last.sent_at, report.finished_at));
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        seen.lock().unwrap_or_else(|p| p.into_inner()).lagged += n;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    });
    let running = Running::start(runner.clone());
    runner.ready().await;
    let idle_with = idle_cpu(IDLE_WINDOW).await?;
    let rss_before = rss()?;
    let heap_before = heap_bytes();

    // Sustained load: at each tick, produce the tests due by now.
    let cpu_before = cpu_time()?;
    let mut ticks = tokio::time::interval(LOAD_TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        ticks.tick().await;
        let due = ((start.elapsed().as_secs_f64() * LOAD_RATE as f64) as u64 + 1).min(total);
        while sent < due {
            let side = if sent % 2 == 0 { Side::Buy } else { Side::Sell };
            publish_order_test(&world.client, side)
                .await
                .map_err(|e| format!("publishing a test: {e}"))?;
            sent += 1;
        }
    }
    let load_time = start.elapsed();
    let ended = Instant::now();
    let all_reported = running
        .wait_for("one report per test", |r| {
            r.counters().reports_published() >= sent
        })
        .await;
    let settle = ended.elapsed();
    let under_load = cpu_time()?.saturating_sub(cpu_before);
    let rss_after = rss()?;
    let heap_after = heap_bytes();
    // Let the subscriber take the last reports.
    let caught_up = Instant::now();
    while {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.reports + s.lagged < runner.counters().reports_published()
    } && caught_up.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(RSS_SETTLE).await;
    let rss_settled = rss()?;
    let heap_settled = heap_bytes();
    let counts = verdicts(&runner);
    let counters = nonzero(runner.counters().snapshot());
    running.stop().await?;
    drain.abort();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    seen.arrival_to_verdict.sort();
    seen.sent_to_verdict.sort();
    Ok(LoadOutcome {
        sent,
        load_time,
        settle,
        counts,
        counters,
        all_reported,
        seen,
        idle_without,
        idle_with,
        under_load,
        rss: [rss_before, rss_after, rss_settled],
        heap: [heap_before, heap_after, heap_settled],
    })
}

impl LoadOutcome {
    /// The runner's idle CPU, in ms per second (the process's with it, less without it).
    fn idle_ms_per_s(&self) -> f64 {
        per_second(
            self.idle_with.saturating_sub(self.idle_without),
            IDLE_WINDOW,
        )
    }

    /// CPU per test under load, in microseconds (generator and runner, not the broker).
    fn us_per_test(&self) -> f64 {
        self.under_load.as_secs_f64() * 1e6 / self.sent.max(1) as f64
    }

    fn sent_to_verdict(&self) -> (Duration, Duration) {
        (
            percentile(&self.seen.sent_to_verdict, 0.50),
            percentile(&self.seen.sent_to_verdict, 0.99),
        )
    }
}

/// (a) and (b); returns the send-to-verdict p50 and p99.
async fn accuracy_and_latency(problems: &mut Vec<String>) -> Result<(Duration, Duration), String> {
    let total = LOAD_RATE * LOAD_FOR.as_secs();
    println!(
        "a. Verdict accuracy under load: {LOAD_RATE} tests/s ({} signals/s) for {} s = {total} tests, runner fetch wait {} ms (the default)",
        LOAD_RATE * SIGNALS_PER_TEST,
        LOAD_FOR.as_secs(),
        livecheck_core::DEFAULT_FETCH_WAIT.as_millis()
    );
    println!("   (for context: the original LiveCheck gave false TIMEOUTs for 30% of tests at 25 requests/s)");
    let out = load_run(livecheck_core::DEFAULT_FETCH_WAIT, LOAD_FOR).await?;
    let (sent, counts) = (out.sent, out.counts);
    let non_pass: u64 = counts[1..].iter().sum();
    println!(
        "   tests sent       {sent} ({} signals) in {:.2} s",
        sent * SIGNALS_PER_TEST,
        out.load_time.as_secs_f64()
    );
    println!(
        "   achieved rate    {:.0} tests/s ({:.0} signals/s); last report {:.2} s after the load ended",
        rate(sent, out.load_time),
        rate(sent * SIGNALS_PER_TEST, out.load_time),
        out.settle.as_secs_f64()
    );
    println!(
        "   non-PASS         {non_pass} of {} verdicts ({})",
        counts.iter().sum::<u64>(),
        describe(counts)
    );
    println!("   runner counters  {:?}", out.counters);
    for report in &out.seen.non_pass {
        println!("{}", indent(&report.render()));
    }
    if let Err(err) = &out.all_reported {
        problems.push(format!("(a) {err}"));
    }
    if non_pass > 0 {
        problems.push(format!(
            "(a) {non_pass} of {sent} verdicts under load are not PASS ({})",
            describe(counts)
        ));
    }

    println!();
    println!("b. Verdict latency over the PASS runs of (a), and what the checking cost");
    if out.seen.lagged > 0 {
        println!(
            "   (the report subscriber lagged and missed {} reports; they are not in the figures)",
            out.seen.lagged
        );
    }
    let latencies = &out.seen.arrival_to_verdict;
    if latencies.is_empty() {
        println!("   no PASS run to measure");
        return Ok((Duration::ZERO, Duration::ZERO));
    }
    let p99 = percentile(latencies, 0.99);
    println!(
        "   last signal's arrival at the runner -> verdict: runs {:>6}   p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        latencies.len(),
        ms(percentile(latencies, 0.50)),
        ms(p99),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    let (p50, p99) = out.sent_to_verdict();
    println!(
        "   last signal sent by the service -> verdict (Kafka included): p50 {:.3} ms   p99 {:.3} ms   goal p50 <= 10 ms, p99 <= {} ms ({})",
        ms(p50),
        ms(p99),
        LATENCY_GOAL.as_millis(),
        if p50 <= Duration::from_millis(10) && p99 <= LATENCY_GOAL {
            "meets"
        } else {
            "MISSES"
        }
    );
    println!(
        "   CPU: runner idle {:.1} ms/s (the process with it idle, less without it); under load {:.0} us per test (generator and runner; the broker not counted)",
        out.idle_ms_per_s(),
        out.us_per_test()
    );
    println!(
        "   RSS: {:.1} MiB with the runner idle before the load, {:.1} MiB after the last verdict, {:.1} MiB {} s later{}",
        mib(out.rss[0] as f64),
        mib(out.rss[1] as f64),
        mib(out.rss[2] as f64),
        RSS_SETTLE.as_secs(),
        if external_broker().is_none() {
            " (the embedded broker and its logs live in this process too)"
        } else {
            ""
        }
    );
    println!(
        "   live Rust heap at the same points: {:.1} / {:.1} / {:.1} MiB",
        mib(out.heap[0] as f64),
        mib(out.heap[1] as f64),
        mib(out.heap[2] as f64),
    );
    Ok((p50, p99))
}

/// (b') The fetch wait's trade-off: latency against idle CPU.
async fn fetch_wait_trade_off(problems: &mut Vec<String>) -> Result<(), String> {
    const FOR: Duration = Duration::from_secs(3);
    println!(
        "b'. Fetch wait of the runner's consumers: {LOAD_RATE} tests/s for {} s each (the embedded broker holds an empty fetch for the whole wait, tansu for 1-2x)",
        FOR.as_secs()
    );
    for wait_ms in [100, 20, 5, 3, 2, 1] {
        let out = load_run(Duration::from_millis(wait_ms), FOR).await?;
        let (p50, p99) = out.sent_to_verdict();
        let non_pass: u64 = out.counts[1..].iter().sum();
        println!(
            "   fetch.wait.max.ms {wait_ms:>3}: send -> verdict p50 {:>7.1} ms   p99 {:>7.1} ms | runner idle {:>5.1} ms CPU/s | under load {:>4.0} us CPU/test (generator + runner) | non-PASS {non_pass}",
            ms(p50),
            ms(p99),
            out.idle_ms_per_s(),
            out.us_per_test()
        );
        if non_pass > 0 || out.all_reported.is_err() {
            problems.push(format!(
                "(b') fetch wait {wait_ms} ms: verdicts {}",
                describe(out.counts)
            ));
        }
    }
    Ok(())
}

/// Section (c) at `workers` tokio worker threads, the runner reading with `lanes` lanes
/// (`RunnerConfig::lanes`): the ratio runner / bare consumer and the runner's records per
/// second (medians over the rounds).
async fn throughput(
    problems: &mut Vec<String>,
    workers: usize,
    lanes: usize,
) -> Result<(f64, f64), String> {
    let records = THROUGHPUT_TESTS * (1 + SIGNALS_PER_TEST);
    let lanes_said = if lanes > 1 {
        format!(", the runner in {lanes} lanes (RunnerConfig::lanes)")
    } else {
        String::new()
    };
    println!(
        "c. Sustained runner throughput, {workers} tokio worker thread(s){lanes_said}: {THROUGHPUT_TESTS} tests x (1 test + {SIGNALS_PER_TEST} signals) = {records} records produced up front, {ROUNDS} rounds"
    );
    // In a group (`LIVE_BENCH_GROUP`, as the `livecheck` service runs) each round reads a
    // backlog of its own: a runner in a group takes the tests the reports topic has decided
    // already as done, so a second round on the same topics would have nothing to run.
    let in_group = std::env::var_os("LIVE_BENCH_GROUP").is_some();
    if in_group {
        println!("   each runner in a consumer group of its own (LIVE_BENCH_GROUP), each round on a backlog of its own");
    }
    let mut world = backlog(records).await?;
    let (mut raw_rates, mut tests_rates, mut signals_rates, mut ratios, mut intake_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut raw_cpus, mut runner_cpus, mut runner_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_rates, mut floor_cpus, mut over_floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut steady_ratios, mut report_sizes) = (Vec::new(), Vec::new());
    let (mut raw_allocs, mut runner_allocs) = (Vec::new(), Vec::new());
    let (mut open_ratios, mut open_steady_ratios, mut open_cpus) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        if in_group && round > 1 {
            world = backlog(records).await?;
        }
        let raw_cpu_before = cpu_split()?.0;
        let raw_allocs_before = allocations();
        let Read {
            time: raw_time,
            first: raw_first,
            threads: raw_threads,
            ..
        } = raw_read(world.client.kafka(), &world.topics, records).await?;
        let raw_cpu = cpu_split()?.0.saturating_sub(raw_cpu_before);
        let raw_allocated = allocations() - raw_allocs_before;
        let floor_cpu_before = cpu_split()?.0;
        let Read {
            time: floor_time,
            first: floor_first,
            threads: floor_threads,
            report_bytes,
        } = floor_read(
            world.client.kafka(),
            &world.topics,
            &world.floor_topic,
            records,
            THROUGHPUT_TESTS,
        )
        .await?;
        let floor_cpu = cpu_split()?.0.saturating_sub(floor_cpu_before);
        let heap_before = heap_bytes();
        let runner = Runner::new(
            Suite::new([order_case()]).map_err(|e| e.to_string())?,
            world.client.clone(),
            RunnerConfig {
                fetch_wait: fetch_wait(),
                group_id: in_group.then(|| format!("live-bench-{}", uuid::Uuid::new_v4().simple())),
                limits: max_early_tests(),
                lanes,
                ..RunnerConfig::default()
            },
        );
        let cpu_before = cpu_split()?;
        let threads_before = ThreadCpu::now();
        let allocs_before = allocations();
        let start = Instant::now();
        let running = Running::start(runner.clone());
        // Side by side: with lanes, one lane may take records before another is ready.
        // Polled on a 1 ms sleep, so the first record's time is 1–2 ms late at most.
        let (ready_after, (first_taken, first_after)) = tokio::join!(
            async {
                // Bounded: a runner that stops before every lane is ready never is.
                let _ = tokio::time::timeout(DEADLINE, runner.ready()).await;
                start.elapsed()
            },
            async {
                let taken = running
                    .wait_for("a first record", |r| taken_in(r) > 0)
                    .await;
                (taken, start.elapsed())
            }
        );
        let taken_in = running
            .wait_for("every record taken in", |r| taken_in(r) >= records)
            .await;
        let intake_time = start.elapsed();
        let drained = running
            .wait_for("one report per test", |r| {
                r.counters().reports_published() >= THROUGHPUT_TESTS
            })
            .await;
        let runner_time = start.elapsed();
        let cpu_after = cpu_split()?;
        let runner_allocated = allocations() - allocs_before;
        let runner_threads = ThreadCpu::now().per_record(threads_before, records);
        let counts = verdicts(&runner);
        let c = runner.counters();
        let (tests, signals) = (c.tests_received(), c.signals_received());
        let buffered = c.signals_buffered();
        if round == ROUNDS {
            // The runner idle after the backlog, one sweep later: what it keeps.
            let peak = heap_bytes();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            println!(
                "            live Rust heap: {:.1} MiB before the runner, {:.1} MiB at its last report, {:.1} MiB 1.5 s later (idle; it keeps the {THROUGHPUT_TESTS} finished test ids)",
                mib(heap_before as f64),
                mib(peak as f64),
                mib(heap_bytes() as f64)
            );
        }
        running.stop().await?;
        let cores = |cpu: Duration| cpu.as_secs_f64() / runner_time.as_secs_f64();
        let (clients, broker) = (
            cpu_after.0.saturating_sub(cpu_before.0),
            cpu_after.1.saturating_sub(cpu_before.1),
        );
        first_taken.map_err(|e| format!("(c) round {round}: {e}"))?;
        taken_in.map_err(|e| format!("(c) round {round}: {e}"))?;
        drained.map_err(|e| format!("(c) round {round}: {e}"))?;
        let raw = rate(records, raw_time);
        let runner_rate = rate(tests + signals, runner_time);
        println!(
            "   round {round}: bare consumer + JSON {raw:>7.0} records/s ({:.3} s) | runner {:>6.0} tests/s, {:>7.0} signals/s, {runner_rate:>7.0} records/s ({:.3} s to {THROUGHPUT_TESTS} reports, of which {:.3} s to be ready and {:.3} s to take every record in; {buffered} signals came before their test) | {}",
            raw_time.as_secs_f64(),
            rate(tests, runner_time),
            rate(signals, runner_time),
            runner_time.as_secs_f64(),
            ready_after.as_secs_f64(),
            intake_time.as_secs_f64(),
            describe(counts)
        );
        let (rewinds, skipped, stalled) = (
            c.partition_rewinds(),
            c.tests_skipped_by_broker() + c.signals_skipped_by_broker(),
            c.partitions_stalled(),
        );
        if rewinds + skipped + stalled > 0 {
            // A broker that answers a fetch from inside a record batch with what follows
            // the batch (tansu 0.6), after the flow control's pauses.
            println!(
                "            the broker left records out: {rewinds} partitions read again from earlier, {skipped} offsets never read, {stalled} stalls given up"
            );
        }
        if in_group {
            // A group's first join waits for the broker's initial rebalance delay (3 s by
            // default, on Apache Kafka as on the embedded broker): not the runner's pace.
            println!(
                "            in the group: {:.0} records/s from ready to the last report ({:.3} s)",
                rate(tests + signals, runner_time.saturating_sub(ready_after)),
                runner_time.saturating_sub(ready_after).as_secs_f64()
            );
        }
        println!(
            "            CPU while the runner worked: this process less the broker's threads {:.2} cores, the broker {:.2} cores, of {} (the runner's consumers and producer threads are in this process)",
            cores(clients),
            cores(broker),
            available_cores()
        );
        let per_record = |cpu: Duration| cpu.as_secs_f64() * 1e6 / records as f64;
        println!(
            "            CPU per record (this process, broker excluded): bare consumer {:.1} us, runner {:.1} us",
            per_record(raw_cpu),
            per_record(clients)
        );
        // Counted, not timed: the same from run to run on any machine, so a change in the
        // work per test shows here even where the timings are noisy.
        let per_test = |n: u64| n as f64 / THROUGHPUT_TESTS as f64;
        println!(
            "            Rust allocations per test (1 + {SIGNALS_PER_TEST} records; librdkafka's own not counted): bare consumer {:.1}, runner {:.1} (its start included)",
            per_test(raw_allocated),
            per_test(runner_allocated)
        );
        println!("            by thread (us per record): bare consumer {raw_threads}; runner {runner_threads}");
        let floor = rate(records, floor_time);
        println!(
            "            floor (the bare consumer + a report per test produced, in one task): {floor:.0} records/s ({:.3} s, {:.2} of the bare consumer), CPU per record {:.1} us ({floor_threads}); the runner at {:.2} of it",
            floor_time.as_secs_f64(),
            floor / raw,
            per_record(floor_cpu),
            runner_rate / floor
        );
        // The same from each reader's first record on: the start-ups (new clients' first
        // connections, up to about 50 ms each; see README, Performance) left out.
        let steady = |time: Duration, first: Duration| rate(records, time.saturating_sub(first));
        let (raw_steady, floor_steady, runner_steady) = (
            steady(raw_time, raw_first),
            steady(floor_time, floor_first),
            steady(runner_time, first_after),
        );
        println!(
            "            from each one's first record on (the wait for it left out: bare consumer {:.3} s, floor {:.3} s, runner's first lane {:.3} s): bare consumer {raw_steady:.0}, floor {floor_steady:.0}, runner {runner_steady:.0} records/s; runner / bare consumer {:.2}",
            raw_first.as_secs_f64(),
            floor_first.as_secs_f64(),
            first_after.as_secs_f64(),
            runner_steady / raw_steady
        );
        // A runner in a group reads a backlog of its own per round: not compared here.
        if !in_group {
            let open = intake_only(problems, round, &world, lanes, records).await?;
            let open_steady = steady(open.time, open.first);
            println!(
                "            intake without verdicts (a runner whose runs take and check the same 4 steps, then wait for a 5th: timed until every run has checked its 4, before any concludes): {:.0} records/s ({:.3} s, {:.3} s to the first record), {:.2} of the bare consumer, from the first records on {:.2}; CPU per record {:.1} us ({})",
                rate(records, open.time),
                open.time.as_secs_f64(),
                open.first.as_secs_f64(),
                rate(records, open.time) / raw,
                open_steady / raw_steady,
                open.cpu_per_record,
                open.threads
            );
            open_ratios.push(rate(records, open.time) / raw);
            open_steady_ratios.push(open_steady / raw_steady);
            open_cpus.push(open.cpu_per_record);
        }
        steady_ratios.push(runner_steady / raw_steady);
        floor_rates.push(floor / raw);
        report_sizes.push(report_bytes as f64 / THROUGHPUT_TESTS as f64);
        floor_cpus.push(per_record(floor_cpu));
        over_floor.push(runner_rate / floor);
        raw_cpus.push(per_record(raw_cpu));
        runner_cpus.push(per_record(clients));
        raw_allocs.push(per_test(raw_allocated));
        runner_allocs.push(per_test(runner_allocated));
        if counts[0] != THROUGHPUT_TESTS
            || (tests, signals) != (THROUGHPUT_TESTS, THROUGHPUT_TESTS * SIGNALS_PER_TEST)
        {
            problems.push(format!(
                "(c) round {round}: the runner read {tests} tests and {signals} signals, verdicts {}",
                describe(counts)
            ));
        }
        raw_rates.push(raw);
        tests_rates.push(rate(tests, runner_time));
        signals_rates.push(rate(signals, runner_time));
        ratios.push(runner_rate / raw);
        runner_rates.push(runner_rate);
        intake_ratios.push(rate(records, intake_time) / raw);
    }
    let raw = median(raw_rates);
    let ratio = median(ratios);
    let intake_ratio = median(intake_ratios);
    println!("   medians over {ROUNDS} rounds:");
    println!("   bare rdkafka StreamConsumer + serde_json::Value   {raw:>9.0} records/s");
    println!(
        "   Runner (start to last report)                     {:>9.0} tests/s   {:>9.0} signals/s",
        median(tests_rates),
        median(signals_rates)
    );
    println!(
        "   intake alone (every record read, decoded and handed to its run; the runs' checking and reports share the cores meanwhile) / bare consumer: {intake_ratio:.2}"
    );
    // With every core busy the runner gets through cores / (CPU per record) records a
    // second at best: against the bare consumer's rate, the ratio its CPU allows here.
    let (raw_cpu, runner_cpu) = (median(raw_cpus), median(runner_cpus));
    println!(
        "   CPU per record: bare consumer {raw_cpu:.1} us, runner {runner_cpu:.1} us ({:.1}x); on {} cores the runner's CPU allows a ratio of at most {:.2}",
        runner_cpu / raw_cpu,
        available_cores(),
        available_cores() as f64 / (runner_cpu * 1e-6) / raw
    );
    println!(
        "   Rust allocations per test: bare consumer {:.1}, runner {:.1}",
        median(raw_allocs),
        median(runner_allocs)
    );
    // The floor's CPU per record is the least a runner reading and reporting this way
    // spends here; its records/s are those of one task, not a bound. The runner's CPU
    // beyond the floor's is mostly its own work (matching signals to tests, running the
    // cases, the timeline), plus its lanes' extra clients and hand-offs between threads.
    let floor_cpu = median(floor_cpus);
    println!(
        "   floor (bare consumer + a report per test produced, in one task) / bare consumer: {:.2}, CPU per record {floor_cpu:.1} us (with every core busy, that CPU would allow a ratio to the bare consumer of at most {:.2} on {} cores); runner / floor: {:.2}; reports of {:.0} bytes on average",
        median(floor_rates),
        available_cores() as f64 / (floor_cpu * 1e-6) / raw,
        available_cores(),
        median(over_floor),
        median(report_sizes)
    );
    println!(
        "   runner / bare consumer from each one's first record on (each one's wait for it left out; the runner's first lane's): {:.2}",
        median(steady_ratios)
    );
    // The runner's line less what concluding its runs costs (the verdict, the timeline, the
    // report's JSON and its production): how far the intake and the checks alone go.
    if open_ratios.is_empty() {
        println!("   intake without verdicts: not measured in a group (LIVE_BENCH_GROUP)");
    } else {
        println!(
            "   intake without verdicts (runs that take and check every step, then wait) / bare consumer: {:.2}, from the first records on {:.2}; CPU per record {:.1} us (the runner's line: {runner_cpu:.1} us)",
            median(open_ratios),
            median(open_steady_ratios),
            median(open_cpus)
        );
    }
    println!(
        "   runner / bare consumer (records/s), {workers} worker(s): {ratio:.2}   goal >= {RATIO_GOAL} ({})",
        if ratio >= RATIO_GOAL {
            "meets"
        } else {
            "MISSES"
        }
    );
    Ok((ratio, median(runner_rates)))
}

/// What a runner of [`order_case_left_open`] did in one round of (c).
struct Intake {
    /// From its start until every run took and checked its four steps.
    time: Duration,
    /// From its start to its first record.
    first: Duration,
    /// CPU per record over `time`: this process less the broker's threads.
    cpu_per_record: f64,
    threads: String,
}

/// (c) The runner's intake without its verdicts: a fresh runner of [`order_case_left_open`]
/// on the round's records (as many lanes, the same fetch wait and limits as the runner's
/// line, outside a group), timed from its start until every run has taken and checked its
/// four steps; nothing concludes meanwhile. Its runs are then stopped at its
/// `max_run_time` ([`LEFT_OPEN_FOR`]) with `ERROR` (reports produced, not timed), and the
/// runner is stopped with none left in flight. A verdict before the end of the timing, or
/// any but that `ERROR`, is a problem.
async fn intake_only(
    problems: &mut Vec<String>,
    round: usize,
    world: &World,
    lanes: usize,
    records: u64,
) -> Result<Intake, String> {
    let runner = Runner::new(
        Suite::new([order_case_left_open()]).map_err(|e| e.to_string())?,
        world.client.clone(),
        RunnerConfig {
            fetch_wait: fetch_wait(),
            limits: max_early_tests(),
            lanes,
            max_run_time: LEFT_OPEN_FOR,
            ..RunnerConfig::default()
        },
    );
    LEFT_OPEN.store(0, Ordering::Relaxed);
    let failed = |e: String| format!("(c) round {round}, the runner without verdicts: {e}");
    let cpu_before = cpu_split()?.0;
    let threads_before = ThreadCpu::now();
    let start = Instant::now();
    let running = Running::start(runner.clone());
    let (first, checked) = tokio::join!(
        async {
            let first = running.wait_for("a first record", |r| taken_in(r) > 0);
            first.await.map(|()| start.elapsed())
        },
        async {
            let all = running.wait_for("every run's four steps checked", |_| {
                LEFT_OPEN.load(Ordering::Relaxed) >= THROUGHPUT_TESTS
            });
            all.await.map(|()| start.elapsed())
        }
    );
    let cpu = cpu_split()?.0.saturating_sub(cpu_before);
    let threads = ThreadCpu::now().per_record(threads_before, records);
    let early = verdicts(&runner);
    // Each run is stopped at `max_run_time`; then the runner stops with none in flight.
    let concluded = running
        .wait_for("an ERROR per test (max_run_time)", |r| {
            r.counters().reports_published() >= THROUGHPUT_TESTS && r.in_flight() == 0
        })
        .await;
    let counts = verdicts(&runner);
    running.stop().await?;
    let (first, time) = (first.map_err(failed)?, checked.map_err(failed)?);
    concluded.map_err(failed)?;
    let overdue = runner.counters().runs_overdue();
    if early.iter().sum::<u64>() > 0
        || counts != [0, 0, THROUGHPUT_TESTS, 0, 0]
        || overdue != THROUGHPUT_TESTS
    {
        problems.push(failed(format!(
            "verdicts {} while it was timed, {} in all ({overdue} runs stopped at max_run_time), where each of the {THROUGHPUT_TESTS} runs should be stopped at max_run_time, with ERROR, after it",
            describe(early),
            describe(counts)
        )));
    }
    Ok(Intake {
        time,
        first,
        cpu_per_record: cpu.as_secs_f64() * 1e6 / records as f64,
        threads,
    })
}

/// The records `runner` has taken in so far: tests and signals.
fn taken_in(runner: &Runner) -> u64 {
    let c = runner.counters();
    c.tests_received() + c.signals_received()
}

/// Publishes `tests` order tests with their signals into `world`, buying and selling in
/// turn, and flushes them.
async fn publish_orders(world: &World, tests: u64) -> Result<(), String> {
    for n in 0..tests {
        let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
        publish_order_test(&world.client, side)
            .await
            .map_err(|e| format!("publishing a test: {e}"))?;
    }
    world.flush()
}

/// A world with section (c)'s backlog in it: `records` records, produced up front.
async fn backlog(records: u64) -> Result<World, String> {
    let world = World::new("live-c").await?;
    let start = Instant::now();
    publish_orders(&world, THROUGHPUT_TESTS).await?;
    let produced = start.elapsed();
    println!(
        "   produced and flushed in {:.2} s ({:.0} records/s through the generator)",
        produced.as_secs_f64(),
        rate(records, produced)
    );
    Ok(world)
}

/// The Kafka settings of every client of a world: `bootstrap`, and the properties of
/// `LIVE_BENCH_KAFKA` (`key=value` pairs separated by `;`, e.g. `fetch.wait.max.ms=10`) to
/// try a setting on the runner and the bare consumer alike.
fn kafka_config(bootstrap: String) -> Result<KafkaConfig, String> {
    let mut kafka = KafkaConfig::new(bootstrap);
    if let Ok(list) = std::env::var("LIVE_BENCH_KAFKA") {
        for pair in list.split(';').filter(|p| !p.trim().is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!(
                    "LIVE_BENCH_KAFKA: {pair:?} is not key=value (e.g. fetch.wait.max.ms=10)"
                ));
            };
            kafka = kafka.set(key.trim(), value.trim());
        }
    }
    Ok(kafka)
}

/// Section (c)'s runner limits: the default, or `LIVE_BENCH_MAX_EARLY_TESTS` tests with
/// early signals at most (a small buffer makes the flow control pause and resume the
/// signals partitions while the tests are read).
fn max_early_tests() -> livecheck_core::Limits {
    let mut limits = livecheck_core::Limits::default();
    if let Some(n) = std::env::var("LIVE_BENCH_MAX_EARLY_TESTS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        limits.max_early_tests = n;
    }
    limits
}

/// The worker counts section (c) runs: `LIVE_BENCH_WORKERS` (e.g. `2`, or `1,4`), or 1, 2,
/// 4, ... up to the machine's cores, and all of them.
fn worker_counts(cores: usize) -> Result<Vec<usize>, String> {
    if let Ok(list) = std::env::var("LIVE_BENCH_WORKERS") {
        return list
            .split(',')
            .map(|n| match n.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "LIVE_BENCH_WORKERS={list:?}: expected worker counts above 0, comma-separated (e.g. 1,2)"
                )),
            })
            .collect();
    }
    let mut counts: Vec<usize> = std::iter::successors(Some(1), |n| Some(n * 2))
        .take_while(|n| *n <= cores.max(2))
        .collect();
    if !counts.contains(&cores) {
        counts.push(cores);
    }
    Ok(counts)
}

/// The fetch wait of section (c)'s runner and bare consumer: `LIVE_BENCH_FETCH_WAIT_MS`, or
/// the default.
fn fetch_wait() -> Duration {
    let Ok(ms) = std::env::var("LIVE_BENCH_FETCH_WAIT_MS") else {
        return livecheck_core::DEFAULT_FETCH_WAIT;
    };
    match ms.parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms.max(1)),
        Err(_) => {
            eprintln!(
                "LIVE_BENCH_FETCH_WAIT_MS={ms:?} is not whole milliseconds: the default is used"
            );
            livecheck_core::DEFAULT_FETCH_WAIT
        }
    }
}

/// How long a reader took, and its CPU per record by thread kind.
struct Read {
    /// From its start (the creation of its first client) to the last record, or to the
    /// broker's acknowledgement of the last report.
    time: Duration,
    /// From its start to the first record: its start-up.
    first: Duration,
    threads: String,
    /// The reports' encoded bytes, in all (the floor's; 0 for the bare consumer).
    report_bytes: u64,
}

/// Reads `expected` records of the tests and signals topics with a bare consumer (no group,
/// every partition from the beginning, after a metadata fetch as the runner does), parsing
/// each payload as JSON.
async fn raw_read(kafka: &KafkaConfig, topics: &Topics, expected: u64) -> Result<Read, String> {
    let threads_before = ThreadCpu::now();
    let start = Instant::now();
    let consumer = bare_consumer(kafka, topics)?;
    let (mut read, mut first) = (0, None);
    while read < expected {
        let (_, value) = next_json(&consumer, "the bare consumer", read, expected).await?;
        first.get_or_insert_with(|| start.elapsed());
        std::hint::black_box(value);
        read += 1;
    }
    let elapsed = start.elapsed();
    // Before the consumer and its threads go.
    Ok(Read {
        time: elapsed,
        first: first.unwrap_or(elapsed),
        threads: ThreadCpu::now().per_record(threads_before, expected),
        report_bytes: 0,
    })
}

/// A consumer of every partition of the tests and signals topics from the beginning (no
/// group; after a metadata fetch, as the runner does), with the runner's fetch wait.
fn bare_consumer(kafka: &KafkaConfig, topics: &Topics) -> Result<StreamConsumer, String> {
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", "live-bench-bare"),
            ("enable.auto.commit", "false"),
            // The runner's fetch wait and reconnect pause, so that the two read alike (the
            // pause sets how long librdkafka holds a second metadata request back).
            ("fetch.wait.max.ms", &fetch_wait().as_millis().to_string()),
            (
                "reconnect.backoff.ms",
                &livecheck_core::RECONNECT_BACKOFF.as_millis().to_string(),
            ),
        ])
        .create()
        .map_err(|e| format!("bare consumer: {e}"))?;
    let mut list = TopicPartitionList::new();
    for topic in [&topics.tests, &topics.signals] {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        for p in 0..partitions as i32 {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| format!("assignment: {e}"))?;
        }
    }
    consumer
        .assign(&list)
        .map_err(|e| format!("assignment: {e}"))?;
    Ok(consumer)
}

/// The next record of `consumer` (`who`, which has read `read` of `expected`), its payload
/// parsed as a JSON value.
async fn next_json<'a>(
    consumer: &'a StreamConsumer,
    who: &str,
    read: u64,
    expected: u64,
) -> Result<(rdkafka::message::BorrowedMessage<'a>, serde_json::Value), String> {
    let message = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .map_err(|_| format!("{who} read only {read} of {expected} records"))?
        .map_err(|e| format!("{who}: {e}"))?;
    let value = serde_json::from_slice(message.payload().unwrap_or_default())
        .map_err(|e| format!("a payload is not JSON: {e}"))?;
    Ok((message, value))
}

/// Counts the floor's reports the broker acknowledged and refused.
#[derive(Default)]
struct FloorDeliveries {
    acknowledged: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for FloorDeliveries {}

impl rdkafka::producer::ProducerContext for FloorDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, (): ()) {
        let counter = if result.is_ok() {
            &self.acknowledged
        } else {
            &self.refused
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What any runner must do at least, whatever its design: [`raw_read`]'s reading and JSON
/// decoding of every record, plus one report per test record, of a passing run's shape
/// (its test's id, case and arguments, a four-step timeline), encoded as the runner's sink
/// encodes one and produced with the runner's producer settings to a topic of its own.
/// It matches no signal to its test and runs no case: that is the runner's own work. All
/// of it in one task, one record after another: its CPU per record is the least a runner
/// reading and reporting this way spends, its records/s are one task's. Its time runs from the producer's creation (just
/// before the consumer's) to the broker's acknowledgement of the last report.
async fn floor_read(
    kafka: &KafkaConfig,
    topics: &Topics,
    floor_topic: &str,
    expected: u64,
    tests: u64,
) -> Result<Read, String> {
    use livecheck_core::polled::Polled;
    use rdkafka::producer::{BaseRecord, Producer};
    use std::sync::atomic::Ordering;

    let steps = [
        ORDER_SENT_TO_DB.name(),
        ORDER_SENT_TO_KAFKA.name(),
        ORDER_CACHED.name(),
        ORDER_EXECUTED.name(),
    ];
    let threads_before = ThreadCpu::now();
    let start = Instant::now();
    // The runner's kind of producer (see `livecheck_core::polled`).
    let producer = Polled::new(&kafka.producer_config(), FloorDeliveries::default())
        .map_err(|e| format!("floor producer: {e}"))?;
    let consumer = bare_consumer(kafka, topics)?;
    let (mut read, mut reports, mut first, mut report_bytes) = (0, 0u64, None, 0u64);
    while read < expected {
        let (message, value) = next_json(&consumer, "the floor", read, expected).await?;
        first.get_or_insert_with(|| start.elapsed());
        read += 1;
        if message.topic() != topics.tests {
            std::hint::black_box(value);
            continue;
        }
        let text = |key: &str| {
            value[key].as_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "a test record without {key:?} at offset {} of partition {}",
                    message.offset(),
                    message.partition()
                )
            })
        };
        let now = chrono::Utc::now();
        let report = Report {
            test_id: text("id")?,
            case: text("case")?,
            verdict: Verdict::Pass,
            error: None,
            missing_step: None,
            last_step: Some(steps[3].to_owned()),
            unawaited: Vec::new(),
            timeline: (0..)
                .zip(steps)
                .map(|(n, signal)| Step {
                    signal: signal.to_owned(),
                    item: None,
                    awaited: true,
                    sent_at: now,
                    arrived_at: now,
                    event_at: Some(now),
                    latency_ms: 1.5,
                    lag_ms: 2.5,
                    topic: topics.signals.clone(),
                    partition: message.partition(),
                    offset: message.offset() * 4 + n,
                })
                .collect(),
            waits: Vec::new(),
            issued_at: now,
            finished_at: now,
            arguments: value["arguments"].clone(),
            truncated: None,
            hops: Vec::new(),
            trace_id: None,
            invariant: None,
            route: None,
        };
        // As the sink encodes a report (`sink::encode`: sized up front, as much as it
        // reserves, then written).
        let mut payload = Vec::with_capacity(4_096);
        serde_json::to_writer(&mut payload, &report)
            .map_err(|e| format!("encoding a floor report: {e}"))?;
        report_bytes += payload.len() as u64;
        let mut record = BaseRecord::to(floor_topic)
            .key(report.test_id.as_str())
            .payload(&payload);
        // A full local queue is waited out, as the sink does (up to `DEADLINE`).
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) if start.elapsed() < DEADLINE => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(format!("the floor's producer: {e}")),
            }
        }
        reports += 1;
    }
    let producer = tokio::task::spawn_blocking(move || {
        let flushed = producer.flush(DEADLINE);
        (producer, flushed)
    })
    .await
    .map_err(|e| format!("the floor's flush: {e}"))?;
    let elapsed = start.elapsed();
    let (producer, flushed) = producer;
    flushed.map_err(|e| format!("the floor's producer flush: {e}"))?;
    let deliveries = producer.context();
    let (acknowledged, refused) = (
        deliveries.acknowledged.load(Ordering::Relaxed),
        deliveries.refused.load(Ordering::Relaxed),
    );
    if reports != tests || acknowledged != reports || refused > 0 {
        return Err(format!(
            "the floor's reports: {reports} sent for {tests} tests, {acknowledged} acknowledged, {refused} refused"
        ));
    }
    Ok(Read {
        time: elapsed,
        first: first.unwrap_or(elapsed),
        threads: ThreadCpu::now().per_record(threads_before, expected),
        report_bytes,
    })
}

/// (d); returns the live Rust heap per in-flight run, in bytes (second step).
async fn memory_per_run(parked: bool) -> Result<f64, String> {
    println!(
        "d{}. Memory per in-flight run: {IN_FLIGHT} tests registered with no signals; the case waits 600 s for its first step{}",
        if parked { "'" } else { "" },
        if parked {
            "; the case starts each run on its first step (Case::start_on_first_step): runs are parked"
        } else {
            "; each run started when its test record is read (the default)"
        }
    );
    let world = World::new("live-d").await?;
    let mut case: Case = order_case().timeout(Duration::from_secs(600));
    if parked {
        case = case.start_on_first_step();
    }
    let runner = Runner::new(
        Suite::new([case]).map_err(|e| e.to_string())?,
        world.client.clone(),
        RunnerConfig::default(),
    );
    let running = Running::start(runner.clone());
    runner.ready().await;
    // Warm up (allocator, consumer, producer, runtime) with complete tests, which finish.
    const WARM_UP: u64 = 1_000;
    publish_orders(&world, WARM_UP).await?;
    running
        .wait_for("the warm-up reports", |r| {
            r.counters().reports_published() >= WARM_UP && r.in_flight() == 0
        })
        .await?;
    // The runner's CPU with no run in flight, to set the CPU with runs waiting against.
    let none_waiting = idle_cpu(IDLE_WINDOW).await?;
    let mut levels = vec![(0usize, rss()?, heap_bytes())];
    let mut classes = Vec::new();
    count_by_size_class(true);
    for level in 1..=2 {
        for _ in 0..IN_FLIGHT {
            let id = uuid::Uuid::new_v4().to_string();
            register_order_test(&world.client, &id, Side::Sell)
                .map_err(|e| format!("registering a test: {e}"))?;
        }
        world.flush()?;
        let target = level * IN_FLIGHT;
        running
            .wait_for(&format!("{target} runs in flight"), |r| {
                r.in_flight() >= target
            })
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        levels.push((runner.in_flight(), rss()?, heap_bytes()));
        classes.push(by_size());
    }
    count_by_size_class(false);
    // What waiting runs cost while nothing comes (each run's wait once looked at its
    // partition's clock on a timer of its own).
    let all_waiting = idle_cpu(IDLE_WINDOW).await?;
    let parked_runs = runner.parked_runs();
    let counters = nonzero(runner.counters().snapshot());
    running.stop().await?;

    let per_run = |from: f64, to: f64, runs: (usize, usize)| (to - from) / (runs.1 - runs.0) as f64;
    let verdict = |bytes: f64| {
        if bytes <= BYTES_PER_RUN_GOAL {
            "meets"
        } else {
            "MISSES"
        }
    };
    println!(
        "   runs in flight {:>6} {:>6} {:>6}   (the first after {WARM_UP} warm-up tests, which finished)",
        levels[0].0, levels[1].0, levels[2].0
    );
    println!(
        "   RSS (MiB)      {:>6.1} {:>6.1} {:>6.1}",
        mib(levels[0].1 as f64),
        mib(levels[1].1 as f64),
        mib(levels[2].1 as f64)
    );
    println!(
        "   Rust heap (MiB){:>6.1} {:>6.1} {:>6.1}",
        mib(levels[0].2 as f64),
        mib(levels[1].2 as f64),
        mib(levels[2].2 as f64)
    );
    for (from, to) in [(0, 1), (1, 2)] {
        let (a, b) = (levels[from], levels[to]);
        let rss_per_run = per_run(a.1 as f64, b.1 as f64, (a.0, b.0));
        let heap_per_run = per_run(a.2 as f64, b.2 as f64, (a.0, b.0));
        println!(
            "   {:>5} -> {:>5} in flight: live Rust heap {heap_per_run:>6.0} bytes per run   goal <= {BYTES_PER_RUN_GOAL:.0} ({})   RSS delta / K {rss_per_run:>6.0} bytes per run",
            a.0,
            b.0,
            verdict(heap_per_run)
        );
    }
    println!(
        "   (the goal is the live heap's; RSS also holds the allocator's overhead, the embedded broker's copy of the test records, what producing and fetching them left in the allocators, and table growth in steps)"
    );
    // What the second step's runs hold, by allocation size (largest shares first).
    let runs = (levels[2].0 - levels[1].0).max(1) as f64;
    let mut shares: Vec<(usize, f64)> = classes[1]
        .iter()
        .zip(&classes[0])
        .enumerate()
        .map(|(class, (b, a))| (class, (b - a) as f64 / runs))
        .filter(|(_, per_run)| per_run.abs() >= 0.05)
        .collect();
    shares.sort_by(|x, y| {
        ((y.1 * (y.0 * 16) as f64).abs()).total_cmp(&(x.1 * (x.0 * 16) as f64).abs())
    });
    let shown: Vec<String> = shares
        .iter()
        .take(12)
        .map(|(class, per_run)| format!("{per_run:.2} x <={} B", class * 16))
        .collect();
    println!("   live allocations per run by size: {}", shown.join(", "));
    println!(
        "   CPU of this process (broker excluded) while nothing comes: {:.0} ms/s with {} runs waiting, {:.0} ms/s with none",
        per_second(all_waiting, IDLE_WINDOW),
        levels[2].0,
        per_second(none_waiting, IDLE_WINDOW),
    );
    println!("   runs parked at the end: {parked_runs}");
    println!("   runner counters  {counters:?}");
    let (a, b) = (levels[1], levels[2]);
    Ok(per_run(a.2 as f64, b.2 as f64, (a.0, b.0)))
}

/// Resident set size of this process, in bytes.
fn rss() -> Result<u64, String> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| format!("reading /proc/self/statm: {e}"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("unexpected /proc/self/statm: {statm:?}"))?;
    Ok(pages * 4096)
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn between(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// The `q` quantile of sorted `values` (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `cpu` spent over `window`, in milliseconds per second.
fn per_second(cpu: Duration, window: Duration) -> f64 {
    ms(cpu) / window.as_secs_f64()
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("   {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn nonzero(snapshot: Vec<(&'static str, u64)>) -> Vec<(&'static str, u64)> {
    snapshot.into_iter().filter(|(_, n)| *n != 0).collect()
}

/// The order case without its settle time (see the module docs).
fn order_case() -> Case {
    place_order().settle(Duration::ZERO)
}

/// A step of the order case that no service sends: what [`order_case_left_open`] waits for.
static NEVER_SENT: Signal<serde_json::Value> = Signal::new(ORDER_CASE, "bench_never_sent");

/// How long the runner without verdicts ([`intake_only`]) lets a run go
/// (`RunnerConfig::max_run_time`, counted from when its test record was read, in wall-clock
/// time): longer than it takes to read the records, so that no run concludes while it is
/// timed; then each is stopped with `ERROR`. (A wait's own timeout would not do: it counts
/// from the records' timestamps, and the backlog is older at each round.)
const LEFT_OPEN_FOR: Duration = Duration::from_secs(3);

/// Runs of [`order_case_left_open`] that took and checked their four steps and now wait for
/// the fifth (reset by [`intake_only`]).
static LEFT_OPEN: AtomicU64 = AtomicU64::new(0);

/// The order case's four steps, taken, decoded and checked as [`place_order`] does, then a
/// wait for a fifth that never comes: its runs do the runner's work on every record of their
/// test, and conclude only when [`intake_only`]'s runner stops them ([`LEFT_OPEN_FOR`]).
fn order_case_left_open() -> Case {
    Case::new(ORDER_CASE)
        .timeout(Duration::from_secs(600))
        .expect(|run: Run, side: Side| async move {
            let order: Order = run.wait(&ORDER_SENT_TO_DB).await?;
            ensure_eq!(order.side, side, "the side of the stored order");
            ensure_eq!(order.id, run.test_id(), "the stored order");
            let delivered: Delivered = run.wait(&ORDER_SENT_TO_KAFKA).await?;
            ensure_eq!(delivered.order_id, order.id, "the order forwarded");
            let cached: Cached = run.wait(&ORDER_CACHED).await?;
            ensure_eq!(cached.user_id, order.user_id, "the user cached");
            ensure!(cached.user_orders >= 1, "the user's index is empty");
            let executed: Execution = run.wait(&ORDER_EXECUTED).await?;
            ensure_eq!(executed.order_id, order.id, "the order executed");
            ensure!(
                executed.execution_id.is_some() != order.fake,
                "a fake order executed, or a real one not"
            );
            LEFT_OPEN.fetch_add(1, Ordering::Relaxed);
            run.wait(&NEVER_SENT).await?;
            Ok(())
        })
}
