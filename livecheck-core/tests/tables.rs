//! Tables on the embedded broker: a partition's entries restored before its runs by the
//! next owner, a test run again after a crash that does not apply its write twice, a window
//! rule that fires at N+1 within the window and not after it, records that do not decode
//! counted and skipped, and a global table read whole before the first test.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use livecheck_core::{
    ensure_eq, ensure_invariant, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner,
    RunnerConfig, Signal, Suite, Table, TestContext, Topics, Verdict, Window,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const COUNT_CASE: &str = "tables.count";
const RATE_CASE: &str = "tables.rate";
const LIMIT_CASE: &str = "tables.limit";

/// How many tests of each key were counted.
static COUNTS: Table<String, u64> = Table::new("counts");
/// Orders per user in the last minute.
static PER_MINUTE: Window<String> = Window::sliding("orders_per_minute", Duration::from_secs(60));
/// Limits per user, as reference data.
static LIMITS: Table<String, u64> = Table::global("limits");
/// Sent by the test process when a counting run may finish.
static GO: Signal<()> = Signal::new(COUNT_CASE, "go");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count {
    key: String,
    /// The count this test must see after its own.
    expect: u64,
    /// Wait for `GO` after counting.
    #[serde(default)]
    hold: bool,
}

fn count_case() -> Case {
    Case::new(COUNT_CASE)
        .timeout(Duration::from_secs(30))
        .table(&COUNTS)
        .expect(|run: Run, args: Count| async move {
            let n = run
                .table(&COUNTS)
                .update(args.key.clone(), |n| n.unwrap_or(0) + 1)?;
            if args.hold {
                run.wait(&GO).await?;
            }
            ensure_eq!(n, args.expect, "the count after this test");
            Ok(())
        })
}

fn rate_case() -> Case {
    Case::new(RATE_CASE)
        .table(&PER_MINUTE)
        .expect(|run: Run, user: String| async move {
            let totals = run.window(&PER_MINUTE).add(&user, 1.0)?;
            ensure_invariant!(
                totals.count <= 3,
                "at most 3 orders per user per minute",
                key = user,
                orders = totals.count
            );
            Ok(())
        })
}

fn limit_case() -> Case {
    Case::new(LIMIT_CASE).table(&LIMITS).expect(
        |run: Run, (user, expect): (String, Option<u64>)| async move {
            let limit = run.table(&LIMITS).get(&user)?;
            ensure_eq!(limit, expect, "the limit of {user}");
            Ok(())
        },
    )
}

/// A broker with one-partition topics (every key on the one partition) and the tables'
/// changelogs.
struct World {
    topics: Topics,
    kafka: KafkaConfig,
    client: LiveCheck,
    // Last: clients close before their broker.
    _broker: EmbeddedBroker,
}

impl World {
    fn new() -> Self {
        // Every test's logs, for the message of a verdict that does not come.
        logs();
        let prefix = format!("tb{}-", uuid::Uuid::new_v4().simple());
        let topics = Topics::with_prefix(&prefix);
        let broker = EmbeddedBroker::with_topics(&topics, &[], 1).unwrap();
        for name in ["counts", "orders_per_minute", "limits"] {
            broker.create_topic(&topics.table(name), 1).unwrap();
        }
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka.clone(), topics.clone()).unwrap();
        Self {
            topics,
            kafka,
            client,
            _broker: broker,
        }
    }

    fn runner(&self, group: Option<&str>) -> Runner {
        Runner::new(
            Suite::new([count_case(), rate_case(), limit_case()]).unwrap(),
            self.client.clone(),
            RunnerConfig {
                group_id: group.map(str::to_owned),
                sweep_every: Duration::from_millis(100),
                ..RunnerConfig::default()
            },
        )
    }

    fn producer(&self) -> FutureProducer {
        self.kafka.producer_config().create().unwrap()
    }

    /// Registers a test of `case` with `arguments`; its context.
    fn test(&self, case: &str, arguments: impl Serialize) -> TestContext {
        let context = Self::context(case, arguments);
        self.client.register_test(&context).unwrap();
        context
    }

    fn context(case: &str, arguments: impl Serialize) -> TestContext {
        TestContext::new(case, Duration::from_secs(600))
            .arguments(serde_json::to_value(arguments).unwrap())
    }

    /// A test of `case` with `arguments` run by `runner`: its report. Watched before the
    /// test is registered: a run without waits can be over before the registration returns.
    async fn verdict(&self, runner: &Runner, case: &str, arguments: impl Serialize) -> Arc<Report> {
        let context = Self::context(case, arguments);
        let report = runner.report_for(&context.id);
        self.client.register_test(&context).unwrap();
        report_of(&context, report).await
    }

    /// A test record of `case` whose timestamp (its event time) is `at`, run by `runner`;
    /// its report.
    async fn test_at(
        &self,
        runner: &Runner,
        case: &str,
        arguments: impl Serialize,
        at: chrono::DateTime<Utc>,
    ) -> Arc<Report> {
        let context = TestContext::new(case, Duration::from_secs(3600))
            .arguments(serde_json::to_value(arguments).unwrap());
        // Watched before it is sent: a run without waits is over in a moment.
        let report = runner.report_for(&context.id);
        self.producer()
            .send(
                FutureRecord::to(&self.topics.tests)
                    .key(&context.id)
                    .payload(&serde_json::to_vec(&context).unwrap())
                    .timestamp(at.timestamp_millis()),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        report_of(&context, report).await
    }

    async fn raw(&self, topic: &str, key: Option<&str>, payload: Option<&[u8]>) {
        let mut record = FutureRecord::<str, [u8]>::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer()
            .send(record, Duration::from_secs(5))
            .await
            .unwrap();
    }
}

/// The report `report` brings, the report of `context`'s test.
async fn report_of(context: &TestContext, report: oneshot::Receiver<Arc<Report>>) -> Arc<Report> {
    tokio::time::timeout(Duration::from_secs(30), report)
        .await
        .unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(300)..].join("\n");
            panic!(
                "no report for {} within 30 s; the last log lines of this binary:\n{tail}",
                context.id
            )
        })
        .unwrap()
}

fn count(key: &str, expect: u64) -> Count {
    Count {
        key: key.to_owned(),
        expect,
        hold: false,
    }
}

/// Every log line of this test binary (the runners log on tokio's workers, so the
/// subscriber is global).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let writer = move || LogWriter(logs);
        let _ = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_env_filter("info,livecheck_core=debug")
            .try_init();
        logs
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_of_a_partition_sees_the_entries_the_previous_one_wrote() {
    let world = World::new();
    let a = world.runner(Some("owners"));
    let (stop_a, task_a) = support::start_runner_task(&a).await;
    for expect in 1..=3 {
        let report = world.verdict(&a, COUNT_CASE, count("k", expect)).await;
        assert_eq!(report.verdict, Verdict::Pass, "{report:?}");
    }
    // A leaves (drains, commits); B takes the partition and restores it before its runs.
    let _ = stop_a.send(());
    task_a.await.unwrap();
    let b = world.runner(Some("owners"));
    let (_stop_b, _task_b) = support::start_runner_task(&b).await;
    let report = world.verdict(&b, COUNT_CASE, count("k", 4)).await;
    assert_eq!(report.verdict, Verdict::Pass, "{report:?}");
    // A's three writes and the fences of A's restores (one per assignment).
    let restored = b.counters().table_records_restored();
    assert!((4..=6).contains(&restored), "{restored} records restored");
    assert_eq!(b.counters().table_writes_replayed(), 0);
    assert_eq!(
        b.counters().duplicate_tests(),
        0,
        "A's tests were committed"
    );
    let stats = b.tables();
    let counts = stats.iter().find(|t| t.name == "counts").unwrap();
    assert_eq!(counts.entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_run_again_after_a_crash_does_not_apply_its_write_twice() {
    let world = World::new();
    let a = world.runner(Some("crash"));
    // A runs on a runtime of its own, so that dropping it kills A and its runs at once.
    let crashable = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop_a, stopped) = oneshot::channel::<()>();
    crashable.spawn({
        let a = a.clone();
        async move {
            let _ = a
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        }
    });
    a.ready().await;
    assert_eq!(
        world.verdict(&a, COUNT_CASE, count("k", 1)).await.verdict,
        Verdict::Pass
    );
    // The second test counts, then waits for GO: its write is in the changelog, its
    // verdict is not.
    let held = world.test(
        COUNT_CASE,
        Count {
            key: "k".into(),
            expect: 2,
            hold: true,
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.counters().table_writes() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held test did not write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its record delivered (linger 1 ms), then A dies without a drain or a last commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    crashable.shutdown_background();
    drop((a, stop_a));

    let b = world.runner(Some("crash"));
    let (_stop_b, _task_b) = support::start_runner_task(&b).await;
    let report = b.report_for(&held.id);
    world.client.scope(held.clone(), GO.send(&())).await;
    let report = tokio::time::timeout(Duration::from_secs(30), report)
        .await
        .expect("the held test is run again by B")
        .unwrap();
    assert_eq!(report.verdict, Verdict::Pass, "{report:?}");
    assert_eq!(
        b.counters().table_writes_replayed(),
        1,
        "B found the write of its first run"
    );
    let report = world.verdict(&b, COUNT_CASE, count("k", 3)).await;
    assert_eq!(report.verdict, Verdict::Pass, "no double count: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_rule_fires_at_n_plus_1_within_the_window_and_not_after_it() {
    let world = World::new();
    let runner = world.runner(None);
    let (_stop, _task) = support::start_runner_task(&runner).await;
    let t0 = Utc::now() - TimeDelta::seconds(300);
    let at = |s: i64| t0 + TimeDelta::seconds(s);
    let mut verdicts = Vec::new();
    // Four orders within a minute: the fourth breaks the rule. One 61 s after the third:
    // the first three are out of its window.
    for (user, s) in [
        ("u1", 0),
        ("u1", 10),
        ("u1", 20),
        ("u1", 30),
        ("u2", 30),
        ("u1", 81),
    ] {
        let report = world.test_at(&runner, RATE_CASE, user, at(s)).await;
        verdicts.push((user, s, report.verdict, report.error.clone()));
        if s == 30 && user == "u1" {
            assert_eq!(report.failure_kind(), "invariant");
            let invariant = report.invariant.as_ref().unwrap();
            assert_eq!(invariant.key, "u1");
            assert_eq!(invariant.values["orders"], 4);
        }
    }
    assert_eq!(
        verdicts,
        [
            ("u1", 0, Verdict::Pass, None),
            ("u1", 10, Verdict::Pass, None),
            ("u1", 20, Verdict::Pass, None),
            (
                "u1",
                30,
                Verdict::Fail,
                Some(r#"invariant broken: at most 3 orders per user per minute, for key "u1" (orders=4)"#.to_owned())
            ),
            ("u2", 30, Verdict::Pass, None),
            ("u1", 81, Verdict::Pass, None),
        ]
    );
    assert_eq!(runner.counters().invariant_failures(), 1);
    assert_eq!(runner.counters().verdict_fail(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_records_that_do_not_decode_are_counted_and_skipped_with_their_place() {
    let logs = logs();
    let world = World::new();
    let topic = world.topics.table("counts");
    world.raw(&topic, Some("k"), Some(br#"{"v":5}"#)).await;
    world.raw(&topic, Some("k"), Some(b"{not json")).await;
    world.raw(&topic, None, Some(br#"{"v":1}"#)).await;
    world
        .raw(&topic, Some("k2"), Some(br#"{"v":"five"}"#))
        .await;
    let runner = world.runner(None);
    let (_stop, _task) = support::start_runner_task(&runner).await;
    assert_eq!(runner.counters().table_records_malformed(), 2);
    assert_eq!(runner.counters().table_records_restored(), 4);
    // The entry before the bad record is kept.
    assert_eq!(
        world
            .verdict(&runner, COUNT_CASE, count("k", 6))
            .await
            .verdict,
        Verdict::Pass
    );
    // A value that decodes as JSON but not as the table's type: the run's ERROR says so.
    let report = world.verdict(&runner, COUNT_CASE, count("k2", 1)).await;
    assert_eq!(report.verdict, Verdict::Error);
    let error = report.error.as_deref().unwrap();
    assert!(
        error.starts_with(r#"table `counts`: the value of key "k2" does not decode as u64: invalid type: string "five""#),
        "{error}"
    );
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    for (offset, why) in [
        (1, "not a table entry: key must be a string"),
        (2, "it has no key"),
    ] {
        let line = text
            .lines()
            .find(|l| {
                l.contains("skipped a table record")
                    && l.contains(&format!("offset={offset}"))
                    && l.contains(&topic)
            })
            .unwrap_or_else(|| panic!("no log line for offset {offset} in:\n{text}"));
        assert!(line.contains("partition=0"), "{line}");
        assert!(line.contains(why), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_table_is_read_whole_before_the_first_test_and_followed_after() {
    let world = World::new();
    LIMITS
        .publish(&world.client, &"gold".to_owned(), Some(&500))
        .await
        .unwrap();
    LIMITS
        .publish(&world.client, &"basic".to_owned(), Some(&100))
        .await
        .unwrap();
    world.client.flush(Duration::from_secs(5)).unwrap();
    let runner = world.runner(Some("global"));
    let (_stop, _task) = support::start_runner_task(&runner).await;
    assert_eq!(
        world
            .verdict(&runner, LIMIT_CASE, ("gold", Some(500)))
            .await
            .verdict,
        Verdict::Pass
    );
    // Changed and removed while the runner runs: followed.
    LIMITS
        .publish(&world.client, &"gold".to_owned(), Some(&700))
        .await
        .unwrap();
    LIMITS
        .publish(&world.client, &"basic".to_owned(), None)
        .await
        .unwrap();
    world.client.flush(Duration::from_secs(5)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if world
            .verdict(&runner, LIMIT_CASE, ("gold", Some(700)))
            .await
            .verdict
            == Verdict::Pass
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not followed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        world
            .verdict(&runner, LIMIT_CASE, ("basic", None::<u64>))
            .await
            .verdict,
        Verdict::Pass
    );
}
