//! Table figures, measured end to end on the embedded broker (librdkafka's mock cluster) and
//! printed, never asserted on time:
//!
//! 1. **restore**: 100,000 changelog records (`{"v":<n>}`, one distinct key each, on the
//!    partition the runner computes for the key) are produced up front; in each of three
//!    rounds a fresh [`Runner`] without a consumer group restores them (and writes its
//!    fence, and so reads the fences of the rounds before) before it is ready, timed from [`Runner::run`]'s start until [`Runner::ready`], and a bare `BaseConsumer`
//!    reads the same records as the restore does (watermarks, assignment, 50 ms fetch wait)
//!    without decoding or keeping them: the ceiling. Medians are printed;
//! 2. **memory per key**: the heap bytes a runner holds once ready (a byte-counting global
//!    allocator: Rust allocations only, librdkafka's own `malloc`s excluded) and the growth of
//!    the process's RSS (`VmRSS`, which the allocator does not give back at once: the first
//!    round's is the one that means something), with 100,000 keys restored, less the same
//!    with an empty table (the runner's own overhead), divided by the keys;
//! 3. **get and update per operation**: on that runner, tests of a case that reads `n`
//!    restored keys with `run.table(&T).get(&k)` then updates each with
//!    `update(k, |v| v + 1)`, timing both loops inside the run (an update includes encoding
//!    its changelog record and enqueuing it; its acknowledgement is awaited before the
//!    run's report, not timed), one test at a time, for runs of 10, 100, 1,000 and 10,000
//!    keys (a run's cost per write may depend on how many it made before). Every key is
//!    updated once in the whole benchmark. A plain `HashMap<String, u64>` of the same keys
//!    does the same reads and read-then-inserts in the same process, in the same chunks; the
//!    medians per run size and the ratios are printed, the headline at 10 keys per run (what
//!    a run does). Every run must pass (every read finds its key, every update leaves
//!    `v + 1`), otherwise the figures mean nothing and the benchmark panics.
//!
//! Times are wall-clock on whatever else the machine is doing: compare runs on a quiet
//! machine only.
//!
//! Run it (release mode; it takes well under a minute) with
//!
//! ```text
//! cargo bench -p livecheck-core --bench tables
//! ```
#![expect(
    unsafe_code,
    reason = "a byte-counting allocator for the memory per key"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use livecheck_core::murmur2::partition_for;
use livecheck_core::{
    ensure, ensure_eq, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig,
    Suite, Table, TestContext, Topics, Verdict,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live_bytes as heap_bytes, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc(std::alloc::System);

const CASE: &str = "bench.tables";
/// The table restored and then read and updated.
static COUNTS: Table<String, u64> = Table::new("bench_counts");

/// Keys restored.
const KEYS: u64 = 100_000;
/// Partitions of every topic. One: the mock cluster keeps about 5 MB per partition, which
/// holds the 100,000 small records; a test may then read and write every key.
const PARTITIONS: i32 = 1;
/// Keys read, then updated, per run, and the timed runs of each size (after one for
/// warm-up). Each run updates keys no earlier run updated, so every entry carries at most
/// one write (nothing is committed without a consumer group): 78,110 keys in all.
const RUN_SIZES: [(u64, u64); 4] = [(10, 200), (100, 50), (1_000, 10), (10_000, 5)];
/// The run size of the headline figures.
const HEADLINE_SIZE: u64 = 10;
/// Restores timed (each by a fresh runner).
const RESTORES: usize = 3;
/// Longest wait for anything the benchmark waits on.
const DEADLINE: Duration = Duration::from_secs(60);

/// The key of record `n`.
fn key(n: u64) -> String {
    format!("user-{n:06}")
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Keys read and updated.
    size: u64,
    /// Not a warm-up run.
    timed: bool,
    get: Duration,
    update: Duration,
}

/// A run's arguments: its keys, `key(first)..key(first + size)`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Chunk {
    first: u64,
    size: u64,
    timed: bool,
}

/// Every run, in order: per size, one warm-up run then the timed ones, on fresh keys.
fn chunks() -> Vec<Chunk> {
    let mut first = 0;
    let mut out = Vec::new();
    for (size, runs) in RUN_SIZES {
        for i in 0..=runs {
            out.push(Chunk {
                first,
                size,
                timed: i > 0,
            });
            first += size;
        }
    }
    assert!(first <= KEYS, "{first} keys needed, {KEYS} restored");
    out
}

/// The runs' timings, in the order they finished.
static TIMINGS: Mutex<Vec<Timing>> = Mutex::new(Vec::new());

/// Reads the keys of its chunk (every one restored as `{"v": n}`), then updates each; times
/// both loops.
fn table_case() -> Case {
    Case::new(CASE)
        .timeout(DEADLINE)
        .test_expires(Duration::from_secs(3600))
        .table(&COUNTS)
        .expect(|run: Run, chunk: Chunk| async move {
            let table = run.table(&COUNTS);
            let Chunk { first, size, timed } = chunk;
            let keys: Vec<String> = (first..first + size).map(key).collect();
            let start = Instant::now();
            let mut found = 0u64;
            for k in &keys {
                found += u64::from(black_box(table.get(k)?).is_some());
            }
            let get = start.elapsed();
            let start = Instant::now();
            let mut last = 0;
            for k in keys {
                last = table.update(k, |v| v.unwrap_or(0) + 1)?;
            }
            let update = start.elapsed();
            ensure_eq!(found, size, "restored keys found by get");
            ensure_eq!(last, first + size, "the last key's value after update");
            ensure!(
                table.get(&key(first))? == Some(first + 1),
                "the first key was not updated"
            );
            TIMINGS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Timing {
                    size,
                    timed,
                    get,
                    update,
                });
            Ok(())
        })
}

/// The process's resident set, in bytes (`VmRSS` of `/proc/self/status`).
fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    println!("LiveCheck table benchmarks (no timed assertions; figures only)\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench_tables());
}

/// A set of topics on the broker, a client for them, and the changelog of [`COUNTS`].
struct World {
    topics: Topics,
    kafka: KafkaConfig,
    client: LiveCheck,
}

impl World {
    fn new(broker: &EmbeddedBroker) -> Self {
        let topics = Topics::with_prefix(&format!("bench{}-", uuid::Uuid::new_v4().simple()));
        broker
            .create_topics(&topics, PARTITIONS)
            .expect("topics created");
        broker
            .create_topic(&topics.table(COUNTS.name()), PARTITIONS)
            .expect("changelog created");
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let client = LiveCheck::new(kafka.clone(), topics.clone()).expect("LiveCheck client");
        Self {
            topics,
            kafka,
            client,
        }
    }

    fn changelog(&self) -> String {
        self.topics.table(COUNTS.name())
    }
}

/// A runner of [`table_case`] restoring and ready: how long from `run` to ready, what it
/// holds then (heap and RSS growth since before it was created), and how to stop it.
struct Restored {
    runner: Runner,
    elapsed: Duration,
    heap: i64,
    rss: i64,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn restore(world: &World) -> Restored {
    let (heap_before, rss_before) = (heap_bytes(), rss_bytes());
    let runner = Runner::new(
        Suite::new([table_case()]).expect("suite"),
        world.client.clone(),
        RunnerConfig {
            restore_timeout: DEADLINE,
            ..RunnerConfig::default()
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the runner failed");
        }
    });
    tokio::time::timeout(DEADLINE, runner.ready())
        .await
        .expect("the runner was not ready in time");
    let elapsed = start.elapsed();
    Restored {
        elapsed,
        heap: heap_bytes() - heap_before,
        rss: rss_bytes() - rss_before,
        runner,
        stop,
        task,
    }
}

impl Restored {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the runner task panicked");
    }
}

/// Produces [`KEYS`] records `{"v": n}` to the changelog, each keyed by `key(n)` on the
/// partition the runner computes for it.
fn produce_changelog(world: &World) -> Duration {
    let producer: BaseProducer = world
        .kafka
        .client_config(&[("linger.ms", "20"), ("batch.num.messages", "10000")])
        .create()
        .expect("producer");
    let topic = world.changelog();
    let start = Instant::now();
    for n in 0..KEYS {
        let k = key(n);
        let payload = format!(r#"{{"v":{n}}}"#);
        let partition = partition_for(k.as_bytes(), PARTITIONS);
        loop {
            let record = BaseRecord::to(&topic)
                .key(&k)
                .payload(&payload)
                .partition(partition);
            match producer.send(record) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("a changelog record was not enqueued: {e}"),
            }
        }
    }
    producer.flush(DEADLINE).expect("the changelog flushed");
    start.elapsed()
}

/// Reads the [`KEYS`] changelog records with a bare consumer as the restore does (created,
/// watermarks read, assigned from the low one, 50 ms fetch wait), touching nothing.
fn bare_read(world: &World) -> Duration {
    let start = Instant::now();
    let consumer: BaseConsumer = world
        .kafka
        .client_config(&[
            ("group.id", "bare"),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "50"),
        ])
        .create()
        .expect("bare consumer");
    let topic = world.changelog();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (low, _) = consumer
            .fetch_watermarks(&topic, p, DEADLINE)
            .expect("watermarks");
        list.add_partition_offset(&topic, p, Offset::Offset(low))
            .expect("partition added");
    }
    consumer.assign(&list).expect("assigned");
    let mut read = 0;
    while read < KEYS {
        assert!(
            start.elapsed() < DEADLINE,
            "the bare consumer read {read} of {KEYS} records"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            black_box(message.expect("a record"));
            read += 1;
        }
    }
    start.elapsed()
}

/// Runs the test of `chunk` on `runner`; panics unless it passes.
async fn run_chunk(world: &World, runner: &Runner, chunk: Chunk) {
    let context = TestContext::new(CASE, Duration::from_secs(3600))
        .arguments(serde_json::to_value(chunk).expect("JSON"));
    let report = runner.report_for(&context.id);
    world
        .client
        .register_test(&context)
        .expect("test registered");
    let report = tokio::time::timeout(DEADLINE, report)
        .await
        .unwrap_or_else(|_| panic!("no report for {chunk:?}"))
        .expect("the report");
    assert_eq!(
        report.verdict,
        Verdict::Pass,
        "{chunk:?} did not pass ({:?}); the figures would be meaningless",
        report.error
    );
}

/// The same reads and read-then-writes on a `HashMap` of the same keys, in the same chunks.
fn hashmap_chunks() -> Vec<Timing> {
    let mut map: HashMap<String, u64> = (0..KEYS).map(|n| (key(n), n)).collect();
    chunks()
        .into_iter()
        .map(|Chunk { first, size, timed }| {
            let keys: Vec<String> = (first..first + size).map(key).collect();
            let start = Instant::now();
            let mut found = 0u64;
            for k in &keys {
                found += u64::from(black_box(map.get(k)).is_some());
            }
            let get = start.elapsed();
            let start = Instant::now();
            for k in keys {
                let next = map.get(&k).map_or(0, |v| v + 1);
                map.insert(k, next);
            }
            let update = start.elapsed();
            assert_eq!(found, size);
            assert_eq!(map[&key(first)], first + 1);
            Timing {
                size,
                timed,
                get,
                update,
            }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median nanoseconds per operation over the timed runs of `size` keys.
fn per_op(timings: &[Timing], size: u64, of: impl Fn(&Timing) -> Duration) -> f64 {
    median(
        timings
            .iter()
            .filter(|t| t.timed && t.size == size)
            .map(|t| of(t).as_nanos() as f64 / size as f64)
            .collect(),
    )
}

async fn bench_tables() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    println!(
        "Table `{}`: {KEYS} keys, {PARTITIONS} partition(s); runs of n gets then n updates (keys, timed runs after one to warm up): {RUN_SIZES:?}",
        COUNTS.name()
    );

    // The runner's own overhead: the same, with an empty changelog.
    let empty = World::new(&broker);
    let baseline = restore(&empty).await;
    let counters = baseline.runner.counters();
    assert_eq!(counters.table_records_restored(), 0);
    let (baseline_heap, baseline_rss, baseline_elapsed) =
        (baseline.heap, baseline.rss, baseline.elapsed);
    baseline.stop().await;
    println!(
        "   empty table: ready in {:.3} s, runner heap {} KiB",
        baseline_elapsed.as_secs_f64(),
        baseline_heap / 1024
    );

    let world = World::new(&broker);
    let produced = produce_changelog(&world);
    println!(
        "   {KEYS} changelog records produced and flushed in {:.2} s",
        produced.as_secs_f64()
    );

    // Each round: a bare read, then a fresh runner's restore; the last runner stays for
    // the gets and updates.
    let (mut bare, mut seconds, mut heap, mut rss) = (vec![], vec![], vec![], vec![]);
    let mut last: Option<Restored> = None;
    for round in 1..=RESTORES {
        if let Some(previous) = last.take() {
            previous.stop().await;
        }
        let read = bare_read(&world).as_secs_f64();
        let restored = restore(&world).await;
        let counters = restored.runner.counters();
        let entries: usize = restored.runner.tables().iter().map(|t| t.entries).sum();
        // The records, and the fence each earlier owner of the partition wrote.
        let fences = (round - 1) as u64 * PARTITIONS as u64;
        assert!(
            counters.table_records_restored() == KEYS + fences
                && counters.table_records_malformed() == 0
                && entries == KEYS as usize,
            "restored {} records ({} malformed) into {entries} entries, expected {KEYS} and \
             {fences} fences: the mock cluster may have dropped the oldest; the figures would \
             be meaningless",
            counters.table_records_restored(),
            counters.table_records_malformed()
        );
        let per_key = |bytes: i64, baseline: i64| (bytes - baseline) as f64 / KEYS as f64;
        println!(
            "   restore {round}: bare consumer {read:.3} s, runner ready in {:.3} s; per key: heap {:.0} bytes, RSS growth {:.0} bytes",
            restored.elapsed.as_secs_f64(),
            per_key(restored.heap, baseline_heap),
            per_key(restored.rss, baseline_rss),
        );
        bare.push(read);
        seconds.push(restored.elapsed.as_secs_f64());
        heap.push(per_key(restored.heap, baseline_heap));
        rss.push(per_key(restored.rss, baseline_rss));
        last = Some(restored);
    }
    let restored = last.expect("a restore");
    let runner = &restored.runner;
    let counters = runner.counters();
    let (bare, seconds, heap_per_key) = (median(bare), median(seconds), median(heap));
    let rss_first = rss[0];

    let chunks = chunks();
    for chunk in &chunks {
        run_chunk(&world, runner, *chunk).await;
    }
    let timings = TIMINGS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(timings.len(), chunks.len(), "one timing per run");
    let written: u64 = chunks.iter().map(|c| c.size).sum();
    assert_eq!(counters.table_writes(), written, "every update wrote once");
    let map = hashmap_chunks();
    restored.stop().await;

    println!("   medians per run size (ns per operation):");
    println!(
        "   keys per run   table get   HashMap get   ratio   table update   HashMap update   ratio"
    );
    for (size, _) in RUN_SIZES {
        let (get, map_get) = (
            per_op(&timings, size, |t| t.get),
            per_op(&map, size, |t| t.get),
        );
        let (update, map_update) = (
            per_op(&timings, size, |t| t.update),
            per_op(&map, size, |t| t.update),
        );
        println!(
            "   {size:>12}   {get:>9.0}   {map_get:>11.1}   {:>5.1}   {update:>12.0}   {map_update:>14.1}   {:>5.0}",
            get / map_get,
            update / map_update
        );
    }
    let headline = |of: fn(&Timing) -> Duration| {
        let (table, map) = (
            per_op(&timings, HEADLINE_SIZE, of),
            per_op(&map, HEADLINE_SIZE, of),
        );
        (table, map, table / map)
    };
    let (get, map_get, get_ratio) = headline(|t| t.get);
    let (update, map_update, update_ratio) = headline(|t| t.update);
    let largest = RUN_SIZES[RUN_SIZES.len() - 1].0;
    println!(
        "table get: {get:.0} ns/op (HashMap: {map_get:.1} ns/op, ratio {get_ratio:.1}; runs of {HEADLINE_SIZE} keys)"
    );
    println!(
        "table update: {update:.0} ns/op (HashMap: {map_update:.1} ns/op, ratio {update_ratio:.0}; runs of {HEADLINE_SIZE} keys; the changelog record's encoding and enqueue included; in runs of {largest} keys: {:.0} ns/op)",
        per_op(&timings, largest, |t| t.update)
    );
    println!("   medians over {RESTORES} restores:");
    println!(
        "table restore: {KEYS} keys in {seconds:.3} s ({:.0} keys/s, from Runner::run to ready; with an empty table: {:.3} s, the process's first runner; a bare consumer reads the same records in {bare:.3} s, {:.0} records/s)",
        KEYS as f64 / seconds,
        baseline_elapsed.as_secs_f64(),
        KEYS as f64 / bare,
    );
    println!(
        "table memory per key: {heap_per_key:.0} bytes (Rust heap held once ready, less an empty table's; RSS growth at the first restore: {rss_first:.0} bytes)"
    );
    drop(world);
    drop(empty);
    drop(broker);
}
