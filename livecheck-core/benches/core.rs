//! Benchmarks of the LiveCheck core: plain figures, printed, never asserted on time.
//!
//! It measures:
//! 1. [`Signal::send`] outside a test (no task-local context): nanoseconds per call and heap
//!    allocations over the whole loop (a counting global allocator; the goal is zero), and
//!    the same for [`livecheck_core::in_test`];
//! 2. the test-context header round trip, inject and extract each timed on its own, for
//!    Kafka record headers and HTTP headers (goal: at most 300 ns per operation);
//!    2b. recording a hop ([`LiveCheck::consumed`]) without and with a test context;
//! 3. the runner's throughput on the embedded broker (librdkafka's mock cluster): 20 000
//!    tests (one test record and four signals each) are produced up front; then, in each of
//!    five rounds, (a) a bare rdkafka `StreamConsumer` reads every record and parses its
//!    payload as a `serde_json::Value`, (a') the same without parsing (for reference), and
//!    (b) a fresh [`Runner`] reads them all, timed from its start until it has published one
//!    report per test. Every reader starts from scratch (creation, metadata, assignment).
//!    The medians are printed with the ratio runner / (a) in records per second (goal: at
//!    least 0.9). Every verdict must be `PASS`, otherwise the figure means nothing and the
//!    benchmark panics;
//! 4. a trigger's decision (probability 0: decided, never registered) through a client that
//!    does not follow the control topic, one that follows it without a record for the case,
//!    and one that follows it with a record (the published settings read under a lock per
//!    request); the first and the last also on two threads at once, to see the contention
//!    on the shared locks and counters;
//! 5. a runner's start on topics of many partitions (empty), from its start to `ready()`
//!    (every partition assigned, no group: in a group the broker's rebalance delay hides it),
//!    beside the time a bare consumer takes to ask each partition's ends one at a time (what
//!    a runner's start, and each restore of a rebalance, paid per partition before it asked
//!    them all at once).
//!
//! Times are wall-clock on whatever else the machine is doing: compare runs on a quiet
//! machine only.
//!
//! Run it (release mode; it takes well under a minute) with
//!
//! ```text
//! cargo bench -p livecheck-core --bench core
//! ```
#![expect(
    unsafe_code,
    reason = "counting allocator for the zero-allocation benchmark"
)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use http::HeaderMap;
use livecheck_core::control::{CaseControl, SamplingName};
use livecheck_core::{
    ensure_eq, in_test, EmbeddedBroker, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig,
    SettingsSource, Signal, Suite, TestContext, Topics, Trigger,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocations, CountingAlloc};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc(std::alloc::System);

const CASE: &str = "bench.four_steps";
static STEP_1: Signal<u64> = Signal::new(CASE, "step_1");
static STEP_2: Signal<u64> = Signal::new(CASE, "step_2");
static STEP_3: Signal<u64> = Signal::new(CASE, "step_3");
static STEP_4: Signal<u64> = Signal::new(CASE, "step_4");
static STEPS: [&Signal<u64>; 4] = [&STEP_1, &STEP_2, &STEP_3, &STEP_4];

/// Iterations of the no-op loops (`Signal::send`, `in_test`).
const NOOP_ITERATIONS: u64 = 20_000_000;
/// Iterations of each header operation.
const HEADER_ITERATIONS: u64 = 500_000;
/// Goal for each header operation, in nanoseconds.
const HEADER_GOAL_NS: f64 = 300.0;
/// Tests produced for the throughput run; each has one test record and four signals, so
/// 5 × TESTS records in all (the mock cluster keeps a bounded log per partition).
const TESTS: u64 = 20_000;
/// Partitions of each topic.
const PARTITIONS: i32 = 4;
/// Rounds of the throughput comparison (medians are reported).
const ROUNDS: usize = 5;
/// Goal for runner throughput over bare-consumer throughput.
const RATIO_GOAL: f64 = 0.9;
/// Longest wait for a reader to see every record before the benchmark gives up.
const READ_DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    println!("LiveCheck core benchmarks (no timed assertions; figures only)\n");
    bench_noop_send();
    println!();
    bench_headers();
    println!();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async { bench_hops() });
    println!();
    runtime.block_on(bench_runner());
    println!();
    bench_trigger();
    println!();
    runtime.block_on(bench_start());
}

/// Times `iterations` calls of `op` and counts the heap allocations they make.
/// Returns (ns per call, allocations in all).
fn measure(iterations: u64, mut op: impl FnMut(u64)) -> (f64, u64) {
    // Warm-up: caches, lazy statics, branch predictors.
    for i in 0..(iterations / 20).max(1) {
        op(i);
    }
    let allocs_before = allocations();
    let start = Instant::now();
    for i in 0..iterations {
        op(i);
    }
    let elapsed = start.elapsed();
    let allocs = allocations() - allocs_before;
    (elapsed.as_nanos() as f64 / iterations as f64, allocs)
}

fn bench_noop_send() {
    println!("1. Outside a test (no task-local context), {NOOP_ITERATIONS} calls each");
    assert!(!in_test(), "the benchmark thread must not be in a test");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        pin!(STEP_1.send(&0)).poll(&mut cx).is_ready(),
        "Signal::send outside a test completes on its first poll"
    );
    let (ns, allocs) = measure(NOOP_ITERATIONS, |i| {
        let value = black_box(i);
        let send = pin!(STEP_1.send(&value));
        let _ = black_box(send.poll(&mut cx));
    });
    println!(
        "   Signal::send (polled once)   {ns:>8.2} ns/call   {allocs} heap allocations in all"
    );
    let (ns, allocs) = measure(NOOP_ITERATIONS, |_| {
        black_box(in_test());
    });
    println!(
        "   in_test()                    {ns:>8.2} ns/call   {allocs} heap allocations in all"
    );
}

fn header_line(what: &str, ns: f64, allocs: u64, note: &str) {
    let per_op = allocs as f64 / HEADER_ITERATIONS as f64;
    let status = if ns <= HEADER_GOAL_NS {
        "meets"
    } else {
        "MISSES"
    };
    println!(
        "   {what:<16} {ns:>8.1} ns/op   goal <= {HEADER_GOAL_NS:.0} ns ({status})   {per_op:.1} Rust allocs/op{note}"
    );
}

fn bench_headers() {
    println!("2. Test-context header round trip, {HEADER_ITERATIONS} operations each");
    let context = TestContext::new(CASE, Duration::from_secs(3600));

    // Kafka record headers.
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        let headers = livecheck_core::kafka::inject_context(
            OwnedHeaders::new_with_capacity(4),
            black_box(&context),
        );
        black_box(headers);
    });
    header_line(
        "Kafka inject",
        ns,
        allocs,
        " (librdkafka's own mallocs not counted)",
    );
    let message = OwnedMessage::new(
        Some(b"{}".to_vec()),
        Some(context.id.clone().into_bytes()),
        "bench-topic".to_owned(),
        Timestamp::NotAvailable,
        0,
        0,
        Some(livecheck_core::kafka::inject_context(
            OwnedHeaders::new_with_capacity(4),
            &context,
        )),
    );
    let back = livecheck_core::kafka::extract(&message)
        .expect("the injected Kafka context decodes")
        .expect("the injected Kafka context is found");
    assert_eq!(back.id, context.id, "Kafka round trip changed the id");
    assert!(message.headers().is_some());
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        black_box(livecheck_core::kafka::extract(black_box(&message)).ok());
    });
    header_line("Kafka extract", ns, allocs, "");

    // HTTP headers.
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        let mut headers = HeaderMap::new();
        livecheck_core::http::inject(&mut headers, black_box(&context));
        black_box(headers);
    });
    header_line("HTTP inject", ns, allocs, "");
    let mut headers = HeaderMap::new();
    livecheck_core::http::inject(&mut headers, &context);
    let back = livecheck_core::http::extract(&headers)
        .expect("the injected HTTP context decodes")
        .expect("the injected HTTP context is found");
    assert_eq!(back.id, context.id, "HTTP round trip changed the id");
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        black_box(livecheck_core::http::extract(black_box(&headers)).ok());
    });
    header_line("HTTP extract", ns, allocs, "");
}

/// What [`LiveCheck::consumed`] costs a consumer per record: a record without a context
/// (normal traffic: the group's position noted, counted) and one with a test's context (the
/// hop prepared; it is sent when the handling runs).
fn bench_hops() {
    println!("2b. Hop recording (LiveCheck::consumed), {HEADER_ITERATIONS} records each");
    let client = LiveCheck::new(KafkaConfig::new("127.0.0.1:9"), Topics::default())
        .expect("a client")
        .with_service("bench");
    let record = |headers: Option<OwnedHeaders>| {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"k".to_vec()),
            "orders".to_owned(),
            Timestamp::NotAvailable,
            3,
            1234,
            headers,
        )
    };
    let plain = record(None);
    let other_headers = record(Some(
        OwnedHeaders::new_with_capacity(2)
            .insert(rdkafka::message::Header {
                key: "content-type",
                value: Some("application/json"),
            })
            .insert(rdkafka::message::Header {
                key: "source",
                value: Some("checkout"),
            }),
    ));
    let context = TestContext::new(CASE, Duration::from_secs(3600));
    let carrying = record(Some(livecheck_core::kafka::inject_context(
        OwnedHeaders::new_with_capacity(4),
        &context,
    )));
    // The group and topic are known after the first record.
    black_box(client.consumed("bench-group", &plain));
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        black_box(client.consumed(black_box("bench-group"), black_box(&plain)));
    });
    let per_op = allocs as f64 / HEADER_ITERATIONS as f64;
    println!(
        "   without a context  {ns:>8.1} ns/record   goal <= 1000 ns ({})   {per_op:.1} Rust allocs/record",
        if ns <= 1000.0 { "meets" } else { "MISSES" }
    );
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        black_box(client.consumed(black_box("bench-group"), black_box(&other_headers)));
    });
    let per_op = allocs as f64 / HEADER_ITERATIONS as f64;
    println!(
        "   ... other headers  {ns:>8.1} ns/record   goal <= 1000 ns ({})   {per_op:.1} Rust allocs/record",
        if ns <= 1000.0 { "meets" } else { "MISSES" }
    );
    let (ns, allocs) = measure(HEADER_ITERATIONS, |_| {
        black_box(client.consumed(black_box("bench-group"), black_box(&carrying)));
    });
    let per_op = allocs as f64 / HEADER_ITERATIONS as f64;
    println!(
        "   with a context     {ns:>8.1} ns/record   (extract, accept, the hop)   {per_op:.1} Rust allocs/record"
    );
}

/// A case waiting for its four steps, each carrying the test's argument.
fn four_step_case() -> livecheck_core::Case {
    livecheck_core::Case::new(CASE)
        .timeout(Duration::from_secs(30))
        .test_expires(Duration::from_secs(3600))
        .expect(|run: Run, n: u64| async move {
            for step in STEPS {
                let value = run.wait(step).await?;
                ensure_eq!(value, n, "step {} carried another value", step.name());
            }
            Ok(())
        })
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// One runner pass: how long it took and what it read.
struct RunnerPass {
    elapsed: Duration,
    signals: u64,
    tests: u64,
}

async fn bench_runner() {
    let records = TESTS * 5;
    println!(
        "3. Runner throughput on the embedded broker: {TESTS} tests x (1 test + 4 signals) = {records} records, {PARTITIONS} partitions, {ROUNDS} rounds"
    );
    let prefix = format!("bench{}-", uuid::Uuid::new_v4().simple());
    let topics = Topics::with_prefix(&prefix);
    let broker = EmbeddedBroker::with_topics(&topics, &[], PARTITIONS).expect("embedded broker");
    let client = LiveCheck::new(KafkaConfig::new(broker.bootstrap_servers()), topics.clone())
        .expect("LiveCheck client");

    // Produce every test and its four signals up front.
    let start = Instant::now();
    for n in 0..TESTS {
        let context = TestContext::new(CASE, Duration::from_secs(3600)).arguments(n.into());
        client.register_test(&context).expect("test registered");
        client
            .scope(context, async {
                for step in STEPS {
                    step.send(&n).await;
                }
            })
            .await;
    }
    client
        .flush(Duration::from_secs(30))
        .expect("producer flushed");
    let produced = start.elapsed();
    let c = client.counters();
    let sent = c.signals_sent();
    let failed = c.signal_errors() + c.delivery_errors();
    assert!(
        sent == TESTS * 4 && failed == 0,
        "producing failed: {sent} signals sent, {failed} errors; the figures would be meaningless"
    );
    println!(
        "   produced and flushed in {:.2} s ({:.0} records/s, through LiveCheck::register_test and Signal::send)",
        produced.as_secs_f64(),
        rate(records, produced)
    );

    // Each round reads the same records three ways; every reader starts from scratch
    // (consumer creation and assignment are part of its time).
    let mut raw_rates = Vec::new();
    let mut bare_rates = Vec::new();
    let mut runner_rates = Vec::new();
    let mut runner_signal_rates = Vec::new();
    for round in 1..=ROUNDS {
        let start = Instant::now();
        raw_read(client.kafka(), &topics, records, true).await;
        let raw = rate(records, start.elapsed());
        let start = Instant::now();
        raw_read(client.kafka(), &topics, records, false).await;
        let bare = rate(records, start.elapsed());
        let pass = runner_pass(&client).await;
        let runner = rate(pass.tests + pass.signals, pass.elapsed);
        let signals = rate(pass.signals, pass.elapsed);
        println!(
            "   round {round}: (a) bare consumer + JSON {raw:>7.0} records/s | (a') bare consumer, no parsing {bare:>7.0} records/s | (b) runner {runner:>7.0} records/s, {signals:>7.0} signals/s ({:.3} s to {TESTS} reports)",
            pass.elapsed.as_secs_f64()
        );
        raw_rates.push(raw);
        bare_rates.push(bare);
        runner_rates.push(runner);
        runner_signal_rates.push(signals);
    }
    let raw = median(raw_rates);
    let runner = median(runner_rates);
    println!("   medians over {ROUNDS} rounds:");
    println!("   (a)  bare rdkafka StreamConsumer + serde_json::Value  {raw:>9.0} records/s");
    println!(
        "   (a') bare rdkafka StreamConsumer, payload untouched   {:>9.0} records/s",
        median(bare_rates)
    );
    println!(
        "   (b)  Runner (start to last report published)          {runner:>9.0} records/s   {:>9.0} signals/s",
        median(runner_signal_rates)
    );
    let ratio = runner / raw;
    let status = if ratio >= RATIO_GOAL {
        "meets"
    } else {
        "MISSES"
    };
    println!(
        "   runner / bare consumer with JSON (records/s): {ratio:.2}   goal >= {RATIO_GOAL} ({status})"
    );
    drop(client);
    drop(broker);
}

/// A fresh runner of the four-step case, running (no group) until `stop` is sent.
fn start_runner(
    client: &LiveCheck,
) -> (
    Runner,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), livecheck_core::Error>>,
) {
    let runner = Runner::new(
        Suite::new([four_step_case()]).expect("suite"),
        client.clone(),
        RunnerConfig::default(),
    );
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
    (runner, stop, task)
}

/// Runs a fresh runner over every produced record, from its start until it has published a
/// report per test; panics unless every verdict is PASS.
async fn runner_pass(client: &LiveCheck) -> RunnerPass {
    let start = Instant::now();
    let (runner, stop, task) = start_runner(client);
    let counters = runner.counters();
    // Sampled every 5 ms: how close the run came to the registry's limits.
    let (mut peak_in_flight, mut peak_buffered) = (0, 0);
    while counters.reports_published() < TESTS {
        if start.elapsed() > READ_DEADLINE || task.is_finished() {
            panic!(
                "the runner published {} of {TESTS} reports in {:.1} s; counters: {:?}",
                counters.reports_published(),
                start.elapsed().as_secs_f64(),
                nonzero(counters.snapshot())
            );
        }
        peak_in_flight = peak_in_flight.max(runner.in_flight());
        peak_buffered = peak_buffered.max(runner.buffered_tests());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    task.await
        .expect("the runner task panicked")
        .expect("the runner failed");

    let verdicts = [
        ("PASS", counters.verdict_pass()),
        ("FAIL", counters.verdict_fail()),
        ("ERROR", counters.verdict_error()),
        ("TIMEOUT", counters.verdict_timeout()),
        ("SKIP", counters.verdict_skip()),
    ];
    let shown: Vec<String> = verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    println!(
        "   (b) verdicts: {}; runner counters: {:?}; peaks (5 ms samples): {peak_in_flight} runs in flight, {peak_buffered} tests with early signals",
        shown.join(", "),
        nonzero(counters.snapshot())
    );
    assert!(
        verdicts[0].1 == TESTS && verdicts[1..].iter().all(|(_, n)| *n == 0),
        "not every verdict is PASS ({}); the throughput figure is meaningless",
        shown.join(", ")
    );
    let pass = RunnerPass {
        elapsed,
        signals: counters.signals_received(),
        tests: counters.tests_received(),
    };
    assert_eq!(
        (pass.tests, pass.signals),
        (TESTS, TESTS * 4),
        "the runner did not read each record exactly once"
    );
    pass
}

/// Reads `expected` records of the tests and signals topics with a bare consumer (no group,
/// every partition from the beginning), parsing each payload as JSON when `parse` is set.
async fn raw_read(kafka: &KafkaConfig, topics: &Topics, expected: u64, parse: bool) {
    // Same fetch wait as the runner's consumer, so that the two read alike.
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", "raw"),
            ("enable.auto.commit", "false"),
            (
                "fetch.wait.max.ms",
                &livecheck_core::DEFAULT_FETCH_WAIT.as_millis().to_string(),
            ),
        ])
        .create()
        .expect("bare consumer");
    let mut list = TopicPartitionList::new();
    for topic in [&topics.tests, &topics.signals] {
        // As the runner does before it assigns: learn the partitions (and so the leader).
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        assert_eq!(partitions, PARTITIONS as usize, "partitions of {topic}");
        for p in 0..PARTITIONS {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition added");
        }
    }
    consumer.assign(&list).expect("partitions assigned");
    let mut read = 0;
    while read < expected {
        let message = tokio::time::timeout(READ_DEADLINE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("the bare consumer read only {read} of {expected} records"))
            .expect("a record");
        let payload = message.payload().unwrap_or_default();
        if parse {
            let value: serde_json::Value = serde_json::from_slice(payload).expect("a JSON payload");
            black_box(value);
        } else {
            black_box(payload);
        }
        read += 1;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn nonzero(snapshot: Vec<(&'static str, u64)>) -> Vec<(&'static str, u64)> {
    snapshot.into_iter().filter(|(_, n)| *n != 0).collect()
}

/// Trigger decisions per measurement.
const TRIGGER_ITERATIONS: u64 = 1_000_000;

/// Partitions per topic for section 5.
const START_PARTITIONS: i32 = 64;

/// Starts timed per way in section 5.
const START_ROUNDS: usize = 7;

async fn bench_start() {
    println!(
        "5. A runner's start on the embedded broker, {START_PARTITIONS} partitions per topic (empty), median of {START_ROUNDS}"
    );
    let prefix = format!("start{}-", uuid::Uuid::new_v4().simple());
    let topics = Topics::with_prefix(&prefix);
    let broker =
        EmbeddedBroker::with_topics(&topics, &[], START_PARTITIONS).expect("embedded broker");
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let client = LiveCheck::new(kafka.clone(), topics.clone()).expect("LiveCheck client");
    let one_by_one = {
        let kafka = kafka.clone();
        let topics = topics.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: rdkafka::consumer::BaseConsumer = kafka
                .client_config(&[("group.id", "bench-start-bare")])
                .create()
                .expect("bare consumer");
            // Its metadata first, as a runner has it.
            consumer
                .fetch_metadata(Some(&topics.tests), Duration::from_secs(10))
                .expect("metadata");
            (0..START_ROUNDS)
                .map(|_| {
                    let start = Instant::now();
                    for topic in [&topics.tests, &topics.signals] {
                        for p in 0..START_PARTITIONS {
                            consumer
                                .fetch_watermarks(topic, p, Duration::from_secs(10))
                                .expect("watermarks");
                        }
                    }
                    start.elapsed().as_secs_f64()
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("the lookups' task")
    };
    println!(
        "   a bare consumer asking the two ends of each tests and signals partition, one at a time: {:.1} ms",
        median(one_by_one) * 1e3
    );
    let mut times = Vec::new();
    for _ in 0..START_ROUNDS {
        let start = Instant::now();
        let (runner, stop, task) = start_runner(&client);
        tokio::time::timeout(READ_DEADLINE, runner.ready())
            .await
            .expect("the runner was not ready in time");
        times.push(start.elapsed().as_secs_f64() * 1e3);
        let _ = stop.send(());
        task.await
            .expect("the runner task panicked")
            .expect("the runner failed");
    }
    let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
    let slowest = times.iter().copied().fold(0.0, f64::max);
    println!(
        "   runner start to ready() (every partition assigned, no group): fastest {fastest:.1} ms, median {:.1} ms, slowest {slowest:.1} ms (a new client's first request may wait 50 ms for its connection: see README)",
        median(times)
    );
}

fn bench_trigger() {
    println!(
        "4. Trigger decisions at probability 0 (maybe_trigger_with_id, fixed id), {TRIGGER_ITERATIONS} each"
    );
    let prefix = format!("benchctl{}-", uuid::Uuid::new_v4().simple());
    let topics = Topics::with_prefix(&prefix);
    let broker = EmbeddedBroker::with_topics(&topics, &[], 1).expect("embedded broker");
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let client = || LiveCheck::new(kafka.clone(), topics.clone()).expect("LiveCheck client");
    let trigger = Trigger::new(CASE).probability(0.0);
    let wait_for = |what: &str, ready: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A trigger per measurement: a trigger caches the first client's counters.
    let line = |what: &str, client: &LiveCheck| {
        let trigger = Trigger::new(CASE).probability(0.0);
        let (ns, allocs) = measure(TRIGGER_ITERATIONS, |_| {
            black_box(trigger.maybe_trigger_with_id(client, Some("order-1"), &()));
        });
        let per_op = allocs as f64 / TRIGGER_ITERATIONS as f64;
        println!("   {what:<34} {ns:>8.1} ns/decision   {per_op:.1} allocs/decision");
    };

    let plain = client();
    line("not following", &plain);

    let following = client();
    following.follow_control("bench").expect("following");
    wait_for("following the control topic", &|| {
        following.control_status().following
    });
    line("following, no record for the case", &following);

    let producer: rdkafka::producer::BaseProducer = kafka
        .client_config(&[("linger.ms", "0")])
        .create()
        .expect("producer");
    let control = CaseControl {
        case: CASE.to_owned(),
        probability: 0.0,
        active: true,
        sampling: SamplingName::Random,
        test_expires_secs: None,
        version: 1,
        changed_by: "bench".to_owned(),
        changed_at: chrono::Utc::now(),
        rollout: None,
    };
    let payload = serde_json::to_vec(&control).expect("JSON");
    producer
        .send(
            rdkafka::producer::BaseRecord::to(&topics.control)
                .key(CASE)
                .payload(&payload),
        )
        .map_err(|(e, _)| e)
        .expect("control record enqueued");
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flushed");
    wait_for("the control record applied", &|| {
        trigger.effective(&following).source == SettingsSource::Control { version: 1 }
    });
    line("following, record for the case", &following);

    let two_threads = |what: &str, client: &LiveCheck| {
        let trigger = Trigger::new(CASE).probability(0.0);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let trigger = trigger.clone();
                    for _ in 0..TRIGGER_ITERATIONS {
                        black_box(trigger.maybe_trigger_with_id(client, Some("order-1"), &()));
                    }
                });
            }
        });
        let ns = start.elapsed().as_nanos() as f64 / TRIGGER_ITERATIONS as f64;
        println!("   {what:<34} {ns:>8.1} ns/decision per thread");
    };
    two_threads("not following, two threads", &plain);
    two_threads("record for the case, two threads", &following);
}
