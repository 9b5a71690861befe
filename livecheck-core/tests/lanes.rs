//! A runner in lanes ([`RunnerConfig::lanes`]) and runners on shares of the partitions
//! ([`RunnerConfig::partitions`]): every test is checked once, by the lane or runner that
//! reads its partition, with the verdict one runner gives (embedded broker, real runners).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use livecheck_core::{
    ensure_eq, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig,
    Signal, Suite, Topics, Trigger, Verdict,
};
use tokio::sync::broadcast;

const CASE: &str = "lanes.case";
static FIRST: Signal<String> = Signal::new(CASE, "first");
static SECOND: Signal<String> = Signal::new(CASE, "second");
const PARTITIONS: i32 = 4;
const TESTS: usize = 40;

/// `first`, then `second` with the same value.
fn case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(30))
        .expect(|run: Run, (): ()| async move {
            let a = run.wait(&FIRST).await?;
            let b = run.wait(&SECOND).await?;
            ensure_eq!(b, a, "the second step saw another value");
            Ok(())
        })
}

/// A broker with the topics of a fresh prefix, 4 partitions each, and a client of it.
fn world() -> (EmbeddedBroker, LiveCheck) {
    let topics = Topics::with_prefix(&format!("l{}-", uuid::Uuid::new_v4().simple()));
    let broker = EmbeddedBroker::with_topics(&topics, &[], PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
    let client = LiveCheck::new(kafka, topics).unwrap();
    (broker, client)
}

/// Starts `TESTS` tests, every other one failing its second step; returns the ids of those
/// that must pass and of those that must fail.
async fn send_tests(client: &LiveCheck) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut pass, mut fail) = (BTreeSet::new(), BTreeSet::new());
    for n in 0..TESTS {
        let test = Trigger::new(CASE).maybe_trigger(client, &()).unwrap();
        let second = if n % 2 == 0 { "same" } else { "other" };
        client
            .scope(test.clone(), async {
                FIRST.send(&"same".to_owned()).await;
                SECOND.send(&second.to_owned()).await;
            })
            .await;
        if n % 2 == 0 {
            pass.insert(test.id);
        } else {
            fail.insert(test.id);
        }
    }
    (pass, fail)
}

/// The reports of `receivers` until `expected` came, then for 1 s more (a test checked twice
/// would show there), by test id (all of each test's reports).
async fn collect(
    receivers: &mut [broadcast::Receiver<Arc<Report>>],
    expected: usize,
) -> BTreeMap<String, Vec<Arc<Report>>> {
    let mut by_test: BTreeMap<String, Vec<Arc<Report>>> = BTreeMap::new();
    let mut count = 0;
    let mut quiet_until = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = tokio::time::Instant::now();
        if quiet_until.is_some_and(|until| now >= until) {
            return by_test;
        }
        assert!(
            now < deadline,
            "{count} of {expected} reports within 30 s: {:?}",
            by_test.keys().collect::<Vec<_>>()
        );
        let mut got = false;
        for rx in receivers.iter_mut() {
            while let Ok(report) = rx.try_recv() {
                got = true;
                count += 1;
                by_test
                    .entry(report.test_id.clone())
                    .or_default()
                    .push(report);
            }
        }
        if count >= expected && quiet_until.is_none() {
            quiet_until = Some(now + Duration::from_secs(1));
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Each test of `pass` passed once and each of `fail` failed once, with its message, and no
/// other report came; returns the signals partitions their steps were read from.
fn assert_each_once(
    by_test: &BTreeMap<String, Vec<Arc<Report>>>,
    pass: &BTreeSet<String>,
    fail: &BTreeSet<String>,
) -> BTreeSet<i32> {
    let mut partitions = BTreeSet::new();
    for (id, reports) in by_test {
        assert_eq!(reports.len(), 1, "test {id} has {} reports", reports.len());
        let report = &reports[0];
        if pass.contains(id) {
            assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
        } else {
            assert!(fail.contains(id), "a report of an unknown test {id}");
            assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
            assert_eq!(
                report.error.as_deref(),
                Some("the second step saw another value: expected \"same\", got \"other\"")
            );
        }
        partitions.extend(report.timeline.iter().map(|step| step.partition));
    }
    assert_eq!(
        by_test.len(),
        pass.len() + fail.len(),
        "a test without a report"
    );
    partitions
}

/// A runner of [`case`] on `client` with `config`.
fn runner(client: &LiveCheck, config: RunnerConfig) -> Runner {
    Runner::new(Suite::new([case()]).unwrap(), client.clone(), config)
}

/// A runner in `lanes` lanes, no group: every test once, from every partition.
async fn every_test_once_in(lanes: usize) {
    let (_broker, client) = world();
    let runner = runner(
        &client,
        RunnerConfig {
            lanes,
            ..RunnerConfig::default()
        },
    );
    let mut reports = [runner.subscribe()];
    assert_eq!(
        runner.lanes_ready(),
        (0, lanes),
        "no lane ready before it runs"
    );
    let _stop = support::start_runner(&runner).await;
    assert_eq!(runner.lanes_ready(), (lanes, lanes));
    assert_eq!(runner.assigned_partitions(), PARTITIONS as usize);
    assert!(runner.owns_first_partition());
    let (pass, fail) = send_tests(&client).await;
    let by_test = collect(&mut reports, TESTS).await;
    let partitions = assert_each_once(&by_test, &pass, &fail);
    assert_eq!(
        partitions,
        (0..PARTITIONS).collect(),
        "{TESTS} tests have steps on every partition, so every lane checked some"
    );
    let c = runner.counters();
    assert_eq!(
        (c.tests_received(), c.signals_received()),
        (TESTS as u64, 2 * TESTS as u64),
        "the lanes' counters together"
    );
    assert_eq!(
        (c.verdict_pass(), c.verdict_fail(), c.verdict_error()),
        (pass.len() as u64, fail.len() as u64, 0)
    );
    assert_eq!(runner.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_in_two_lanes_checks_every_test_once_with_one_runners_verdicts() {
    every_test_once_in(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_beyond_the_partitions_stay_idle_and_every_test_is_checked_once() {
    every_test_once_in(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_on_disjoint_partitions_check_every_test_once_between_them() {
    let (_broker, client) = world();
    let on = |partitions: Vec<i32>| {
        runner(
            &client,
            RunnerConfig {
                partitions: Some(partitions),
                ..RunnerConfig::default()
            },
        )
    };
    // Listed out of order and twice: the same share.
    let (low, high) = (on(vec![1, 0, 1]), on(vec![2, 3]));
    let mut reports = [low.subscribe(), high.subscribe()];
    let _stops = (
        support::start_runner(&low).await,
        support::start_runner(&high).await,
    );
    assert_eq!(
        (low.assigned_partitions(), high.assigned_partitions()),
        (2, 2)
    );
    assert!(low.owns_first_partition() && !high.owns_first_partition());
    let (pass, fail) = send_tests(&client).await;
    let by_test = collect(&mut reports, TESTS).await;
    assert_eq!(
        assert_each_once(&by_test, &pass, &fail),
        (0..PARTITIONS).collect()
    );
    assert_eq!(
        low.counters().tests_received() + high.counters().tests_received(),
        TESTS as u64
    );
    assert!(low.counters().tests_received() > 0 && high.counters().tests_received() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_in_lanes_in_a_group_holds_every_partition_between_its_lanes() {
    in_a_group(2).await;
}

/// The lanes given no partition are ready all the same (the runner's `ready` waits for
/// every lane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_in_more_lanes_than_partitions_in_a_group_is_ready_and_checks_every_test() {
    in_a_group(6).await;
}

/// A runner in `lanes` lanes, in a group: ready, every partition held, every test once.
async fn in_a_group(lanes: usize) {
    let (_broker, client) = world();
    let runner = runner(
        &client,
        RunnerConfig {
            lanes,
            group_id: Some(format!("lanes-{}", uuid::Uuid::new_v4().simple())),
            ..RunnerConfig::default()
        },
    );
    let mut reports = [runner.subscribe()];
    let _stop = tokio::time::timeout(Duration::from_secs(30), support::start_runner(&runner))
        .await
        .expect("every lane ready within 30 s");
    assert_eq!(runner.lanes_ready(), (lanes, lanes));
    // Each lane is a member of the group: the group shares the partitions out.
    for _ in 0..1_000 {
        if runner.assigned_partitions() == PARTITIONS as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runner.assigned_partitions(), PARTITIONS as usize);
    assert!(runner.owns_first_partition());
    let (pass, fail) = send_tests(&client).await;
    let by_test = collect(&mut reports, TESTS).await;
    assert_each_once(&by_test, &pass, &fail);
}

/// What `config` makes `Runner::run` say.
async fn refused(config: RunnerConfig) -> String {
    let (_broker, client) = world();
    let runner = runner(&client, config);
    tokio::time::timeout(Duration::from_secs(30), runner.run(std::future::pending()))
        .await
        .expect("a refused setting stops the runner at once")
        .expect_err("the setting is refused")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_lanes_and_partitions_are_refused_with_what_to_do() {
    for lanes in [0, livecheck_core::MAX_LANES + 1] {
        let message = refused(RunnerConfig {
            lanes,
            ..RunnerConfig::default()
        })
        .await;
        assert!(
            message.contains(&format!(
                "`lanes` is {lanes}: a runner reads with 1 to 256 lanes"
            )),
            "{message}"
        );
    }
    let message = refused(RunnerConfig {
        partitions: Some(vec![1, 7]),
        ..RunnerConfig::default()
    })
    .await;
    assert!(
        message.contains("partition 7 of `partitions` does not exist")
            && message.contains("has 4 (0 to 3)"),
        "{message}"
    );
    let message = refused(RunnerConfig {
        partitions: Some(Vec::new()),
        ..RunnerConfig::default()
    })
    .await;
    assert!(message.contains("lists no partition"), "{message}");
    let message = refused(RunnerConfig {
        partitions: Some(vec![0]),
        group_id: Some("refused".into()),
        ..RunnerConfig::default()
    })
    .await;
    assert!(
        message.contains("set `group_id` or `partitions`, not both"),
        "{message}"
    );
    // A lane that fails stops the others: the runner returns its error.
    let message = refused(RunnerConfig {
        partitions: Some(vec![9]),
        lanes: 2,
        ..RunnerConfig::default()
    })
    .await;
    assert!(message.contains("partition 9"), "{message}");
}
