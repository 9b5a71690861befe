//! Cases that start on their first step ([`Case::start_on_first_step`]): a run is parked
//! until a record of its test comes or its first step's deadline passes, and gives the
//! verdicts a run started at once gives (embedded broker, real runner).

mod support;

use std::sync::Arc;
use std::time::Duration;

use livecheck_core::{
    ensure_eq, Case, CheckError, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner,
    RunnerConfig, Signal, Suite, TestContext, Topics, Trigger, Verdict,
};

const PARKED: &str = "parked.case";
const AT_ONCE: &str = "parked.at_once";
static FIRST: Signal<String> = Signal::new(PARKED, "first");
static SECOND: Signal<String> = Signal::new(PARKED, "second");
static AT_ONCE_FIRST: Signal<String> = Signal::new(AT_ONCE, "first");

/// The same check for both cases: `first`, then `second` with the same value.
fn case(name: &'static str, park: bool, timeout: Duration) -> Case {
    let (first, second) = if name == PARKED {
        (&FIRST, &SECOND)
    } else {
        (&AT_ONCE_FIRST, &AT_ONCE_FIRST)
    };
    let case = Case::new(name)
        .timeout(timeout)
        .expect(move |run: Run, (): ()| async move {
            let a = run.wait(first).await?;
            if name == PARKED {
                let b = run.wait(second).await?;
                ensure_eq!(b, a, "the second step saw another value");
            }
            Ok(())
        });
    if park {
        case.start_on_first_step()
    } else {
        case
    }
}

struct Fixture {
    client: LiveCheck,
    runner: Runner,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Last: clients must close before their broker goes.
    _broker: EmbeddedBroker,
}

impl Fixture {
    async fn new(cases: Vec<Case>) -> Self {
        Self::with_config(cases, RunnerConfig::default()).await
    }

    async fn with_config(cases: Vec<Case>, config: RunnerConfig) -> Self {
        let prefix = format!("p{}-", uuid::Uuid::new_v4().simple());
        let topics = Topics::with_prefix(&prefix);
        let broker = EmbeddedBroker::with_topics(&topics, &[], 4).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka, topics).unwrap();
        Self::on(broker, client, cases, config).await
    }

    /// A runner of `cases` on `client`'s broker.
    async fn on(
        broker: EmbeddedBroker,
        client: LiveCheck,
        cases: Vec<Case>,
        config: RunnerConfig,
    ) -> Self {
        let runner = Runner::new(Suite::new(cases).unwrap(), client.clone(), config);
        let stop = support::start_runner(&runner).await;
        Self {
            _broker: broker,
            client,
            runner,
            stop: Some(stop),
        }
    }

    async fn report(&self, rx: tokio::sync::oneshot::Receiver<Arc<Report>>) -> Arc<Report> {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("no report within 30 s")
            .expect("runner dropped the watcher")
    }

    /// Waits (at most 10 s) until `holds` of the runner.
    async fn until(&self, what: &str, holds: impl Fn(&Runner) -> bool) {
        for _ in 0..1_000 {
            if holds(&self.runner) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{what}: not within 10 s (in flight {}, parked {})",
            self.runner.in_flight(),
            self.runner.parked_runs()
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_starts_on_its_first_step_and_gives_its_verdict() {
    let fx = Fixture::new(vec![case(PARKED, true, Duration::from_secs(30))]).await;
    let pass = Trigger::new(PARKED).maybe_trigger(&fx.client, &()).unwrap();
    let fail = Trigger::new(PARKED).maybe_trigger(&fx.client, &()).unwrap();
    let pass_report = fx.runner.report_for(&pass.id);
    let fail_report = fx.runner.report_for(&fail.id);
    // Both tests read, neither run started: parked, and in flight.
    fx.until("two runs parked", |r| r.parked_runs() == 2).await;
    assert_eq!(fx.runner.in_flight(), 2);

    fx.client
        .scope(pass.clone(), FIRST.send(&"x".to_owned()))
        .await;
    // Its first step started it; the other stays parked.
    fx.until("one run left parked", |r| r.parked_runs() == 1)
        .await;
    assert_eq!(fx.runner.in_flight(), 2);
    fx.client
        .scope(fail, async {
            FIRST.send(&"x".to_owned()).await;
            SECOND.send(&"y".to_owned()).await;
        })
        .await;
    let fail_report = fx.report(fail_report).await;
    assert_eq!(
        fail_report.verdict,
        Verdict::Fail,
        "{}",
        fail_report.render()
    );
    assert_eq!(
        fail_report.error.as_deref(),
        Some("the second step saw another value: expected \"x\", got \"y\"")
    );
    assert_eq!(fx.runner.parked_runs(), 0);

    fx.client.scope(pass, SECOND.send(&"x".to_owned())).await;
    let pass_report = fx.report(pass_report).await;
    assert_eq!(
        pass_report.verdict,
        Verdict::Pass,
        "{}",
        pass_report.render()
    );
    let steps: Vec<_> = pass_report
        .timeline
        .iter()
        .map(|s| s.signal.as_str())
        .collect();
    assert_eq!(steps, ["first", "second"]);
    fx.until("nothing in flight", |r| r.in_flight() == 0).await;
    assert_eq!(fx.runner.counters().verdict_pass(), 1);
    assert_eq!(fx.runner.counters().verdict_fail(), 1);
}

/// [`both_give`] on a fixture of the parked case and the case started at once, with
/// `timeout` and `config`; no run is left parked.
async fn both_under(
    config: RunnerConfig,
    timeout: Duration,
    verdict: Verdict,
    error: &str,
) -> Fixture {
    let fx = Fixture::with_config(
        vec![case(PARKED, true, timeout), case(AT_ONCE, false, timeout)],
        config,
    )
    .await;
    both_give(&fx, verdict, error).await;
    assert_eq!(fx.runner.parked_runs(), 0);
    fx
}

/// The `ERROR` of a run stopped by a `max_run_time` of 1 s.
const OVERDUE: &str =
    "the check did not finish within 1s (max_run_time): stopped; does an expectation hang?";

/// A case whose expectations never end (an HTTP call that never returns, say).
fn hanging(name: &'static str) -> Case {
    Case::new(name).expect(|_run: Run, (): ()| async move {
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// One test of the parked case and one of the case started at once, none of whose steps
/// comes (the parked one is seen parked); their reports, each checked to give `verdict`
/// with the message `error`.
async fn both_give(fx: &Fixture, verdict: Verdict, error: &str) -> [Arc<Report>; 2] {
    let parked = Trigger::new(PARKED).maybe_trigger(&fx.client, &()).unwrap();
    let at_once = Trigger::new(AT_ONCE)
        .maybe_trigger(&fx.client, &())
        .unwrap();
    let parked = fx.runner.report_for(&parked.id);
    let at_once = fx.runner.report_for(&at_once.id);
    fx.until("one run parked", |r| r.parked_runs() == 1).await;
    let reports = [fx.report(parked).await, fx.report(at_once).await];
    for report in &reports {
        assert_eq!(report.verdict, verdict, "{}", report.render());
        assert_eq!(report.error.as_deref(), Some(error), "{}", report.render());
    }
    reports
}

/// A test none of whose steps comes: the parked run starts when its first step's deadline
/// passes, and says what a run started at once says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_without_steps_times_out_as_a_run_started_at_once() {
    let timeout = Duration::from_millis(700);
    let fx = Fixture::new(vec![
        case(PARKED, true, timeout),
        case(AT_ONCE, false, timeout),
    ])
    .await;
    let reports = both_give(
        &fx,
        Verdict::Timeout,
        "signal `first` did not arrive within 700ms of the start of the test (no step arrived)",
    )
    .await;
    for report in &reports {
        assert_eq!(report.missing_step.as_deref(), Some("first"));
    }
    assert_eq!(fx.runner.parked_runs(), 0);
    assert_eq!(fx.runner.counters().verdict_timeout(), 2);
}

/// A parked run's first step is due in the queue the waits use (looked at every 20 ms),
/// not at the runner's sweep: with a sweep every two minutes, past the 30 s this test waits
/// for a report, the parked run still times out as the run started at once does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_times_out_without_waiting_for_the_sweep() {
    let config = RunnerConfig {
        sweep_every: Duration::from_secs(120),
        ..RunnerConfig::default()
    };
    both_under(
        config,
        Duration::from_millis(700),
        Verdict::Timeout,
        "signal `first` did not arrive within 700ms of the start of the test (no step arrived)",
    )
    .await;
}

/// Steps that came before their test record: the run starts at once, it is not parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_whose_steps_came_first_is_not_parked() {
    let fx = Fixture::new(vec![case(PARKED, true, Duration::from_secs(30))]).await;
    let context = TestContext::new(PARKED, Duration::from_secs(60));
    let report = fx.runner.report_for(&context.id);
    fx.client
        .scope(context.clone(), async {
            FIRST.send(&"x".to_owned()).await;
            SECOND.send(&"x".to_owned()).await;
        })
        .await;
    fx.until("both steps buffered", |r| {
        r.counters().signals_buffered() == 2
    })
    .await;
    fx.client.register_test(&context).unwrap();
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(fx.runner.parked_runs(), 0);
}

/// `max_run_time` counts from the test record for a parked run too: one whose step never
/// comes and whose deadline is far away ends in the `ERROR` a run started at once gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_is_bounded_by_max_run_time_as_a_run_started_at_once() {
    let config = RunnerConfig {
        max_run_time: Duration::from_secs(1),
        ..RunnerConfig::default()
    };
    let fx = both_under(config, Duration::from_secs(600), Verdict::Error, OVERDUE).await;
    assert_eq!(fx.runner.counters().runs_overdue(), 2);
}

/// An expectation that hangs outside any wait (an HTTP call that never returns, say) is
/// stopped by `max_run_time` as well: the runner's sweep aborts its task, and the run gets
/// one `ERROR` report, while a run of the same suite that finishes in time passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expectation_that_hangs_outside_its_waits_is_stopped_by_max_run_time_once() {
    const HANGS: &str = "parked.hangs";
    let config = RunnerConfig {
        max_run_time: Duration::from_secs(1),
        sweep_every: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let hangs = hanging(HANGS);
    let fx = Fixture::with_config(
        vec![hangs, case(AT_ONCE, false, Duration::from_secs(30))],
        config,
    )
    .await;
    let hung = Trigger::new(HANGS).maybe_trigger(&fx.client, &()).unwrap();
    let hung = fx.runner.report_for(&hung.id);
    let fine = Trigger::new(AT_ONCE)
        .maybe_trigger(&fx.client, &())
        .unwrap();
    let passed = fx.runner.report_for(&fine.id);
    fx.client
        .scope(fine, async {
            AT_ONCE_FIRST.send(&"x".to_owned()).await;
        })
        .await;
    let passed = fx.report(passed).await;
    assert_eq!(passed.verdict, Verdict::Pass, "{}", passed.render());
    let hung = fx.report(hung).await;
    assert_eq!(hung.verdict, Verdict::Error, "{}", hung.render());
    assert_eq!(hung.error.as_deref(), Some(OVERDUE));
    // One report each, and nothing left running; the sweeps go on without stopping more.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let c = fx.runner.counters();
    assert_eq!(c.runs_overdue(), 1);
    assert_eq!((c.verdict_error(), c.verdict_pass()), (1, 1));
    assert_eq!(c.reports_published(), 2);
    assert_eq!(fx.runner.in_flight(), 0);
}

/// A parked run stopped by `max_run_time` starts only to end: if its case's closure panics
/// as it builds the run's check, the run still gets the one `ERROR` of a run stopped, with
/// one report, counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_stopped_whose_closure_panics_is_concluded_once() {
    const PANICS: &str = "parked.panics";
    let config = RunnerConfig {
        max_run_time: Duration::from_secs(1),
        sweep_every: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let panics = Case::new(PANICS)
        .timeout(Duration::from_secs(600))
        .start_on_first_step()
        .expect(
            |_run: Run, (): ()| -> std::future::Ready<Result<(), CheckError>> {
                panic!("no check for this run")
            },
        );
    let fx = Fixture::with_config(vec![panics], config).await;
    let test = Trigger::new(PANICS).maybe_trigger(&fx.client, &()).unwrap();
    let report = fx.report(fx.runner.report_for(&test.id)).await;
    assert_eq!(report.verdict, Verdict::Error, "{}", report.render());
    assert_eq!(report.error.as_deref(), Some(OVERDUE));
    // Nothing more comes of it: one report, one run stopped.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let c = fx.runner.counters();
    assert_eq!(c.runs_overdue(), 1);
    assert_eq!((c.verdict_error(), c.reports_published()), (1, 1));
    assert_eq!(fx.runner.in_flight(), 0);
}

/// Outside a group a stopped runner still concludes its runs in flight (no one else will):
/// a hung one read just before the stop ends in `ERROR` once `max_run_time` has passed,
/// with one report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_hangs_past_a_stop_outside_a_group_still_ends_in_error() {
    const HANGS: &str = "parked.hangs_past_stop";
    let config = RunnerConfig {
        max_run_time: Duration::from_secs(1),
        ..RunnerConfig::default()
    };
    let hangs = hanging(HANGS);
    let mut fx = Fixture::with_config(vec![hangs], config).await;
    let hung = Trigger::new(HANGS).maybe_trigger(&fx.client, &()).unwrap();
    let hung = fx.runner.report_for(&hung.id);
    fx.until("the run started", |r| r.in_flight() == 1).await;
    if let Some(stop) = fx.stop.take() {
        let _ = stop.send(());
    }
    let hung = fx.report(hung).await;
    assert_eq!(hung.verdict, Verdict::Error, "{}", hung.render());
    assert_eq!(hung.error.as_deref(), Some(OVERDUE));
    // One conclusion (the stopped runner no longer counts acknowledged reports).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(fx.runner.counters().runs_overdue(), 1);
    assert_eq!(fx.runner.counters().verdict_error(), 1);
    assert_eq!(fx.runner.in_flight(), 0);
}

/// In a consumer group: a runner that leaves hands its parked runs back (no report, its
/// test records uncommitted), and the next owner parks them again and gives each test its
/// one verdict when its steps come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_runs_are_handed_back_on_leaving_and_decided_once_by_the_next_owner() {
    let prefix = format!("pg{}-", uuid::Uuid::new_v4().simple());
    let topics = Topics::with_prefix(&prefix);
    let broker = EmbeddedBroker::with_topics(&topics, &[], 2).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
    let client = LiveCheck::new(kafka, topics).unwrap();
    let config = RunnerConfig {
        group_id: Some(format!("{prefix}runners")),
        drain_timeout: Duration::from_secs(1),
        sweep_every: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let cases = || vec![case(PARKED, true, Duration::from_secs(600))];
    let runner_a = Runner::new(Suite::new(cases()).unwrap(), client.clone(), config.clone());
    let stop_a = support::start_runner(&runner_a).await;
    let tests: Vec<TestContext> = (0..6)
        .map(|_| Trigger::new(PARKED).maybe_trigger(&client, &()).unwrap())
        .collect();
    for _ in 0..1_000 {
        if runner_a.parked_runs() == tests.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runner_a.parked_runs(), tests.len());
    // A leaves: its parked runs are handed back after the drain timeout, without a report.
    let _ = stop_a.send(());
    for _ in 0..1_000 {
        if runner_a.counters().runs_handed_back() == tests.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runner_a.counters().runs_handed_back(), tests.len() as u64);
    assert_eq!(runner_a.counters().reports_published(), 0);
    assert_eq!(runner_a.parked_runs(), 0);

    let fx = Fixture::on(broker, client, cases(), config).await;
    fx.until("the tests parked again by the next owner", |r| {
        r.parked_runs() == tests.len()
    })
    .await;
    let reports: Vec<_> = tests.iter().map(|t| fx.runner.report_for(&t.id)).collect();
    for test in &tests {
        fx.client
            .scope(test.clone(), async {
                FIRST.send(&"x".to_owned()).await;
                SECOND.send(&"x".to_owned()).await;
            })
            .await;
    }
    for report in reports {
        let report = fx.report(report).await;
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
    fx.until("nothing in flight", |r| r.in_flight() == 0).await;
    let c = fx.runner.counters();
    assert_eq!(
        (
            c.verdict_pass(),
            c.duplicate_tests(),
            fx.runner.parked_runs()
        ),
        (tests.len() as u64, 0, 0)
    );
}

/// In a consumer group, a cooperative rebalance while runs are parked: a second runner
/// joins, the first hands back the parked runs of the partition that moves (no report) and
/// keeps the others parked; the new owner restores that partition and parks them again.
/// When the steps come, every test gets one PASS, from the owner of its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_runs_move_with_their_partition_in_a_rebalance_and_are_decided_once() {
    use livecheck_core::murmur2::partition_for;
    const PARTITIONS: i32 = 2;
    let prefix = format!("pr{}-", uuid::Uuid::new_v4().simple());
    let topics = Topics::with_prefix(&prefix);
    let broker = EmbeddedBroker::with_topics(&topics, &[], PARTITIONS).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
    let client = LiveCheck::new(kafka, topics).unwrap();
    let config = RunnerConfig {
        group_id: Some(format!("{prefix}runners")),
        sweep_every: Duration::from_millis(100),
        ..RunnerConfig::default()
    };
    let cases = || vec![case(PARKED, true, Duration::from_secs(600))];
    let runner_a = Runner::new(Suite::new(cases()).unwrap(), client.clone(), config.clone());
    let mut reports_a = runner_a.subscribe();
    let (stop_a, run_a) = spawn_runner(&runner_a);
    runner_a.ready().await;
    // Tests on both partitions, at least three on each.
    let mut tests: Vec<(TestContext, i32)> = Vec::new();
    for _ in 0..200 {
        let on = |p: i32| tests.iter().filter(|(_, q)| *q == p).count();
        if on(0) >= 3 && on(1) >= 3 {
            break;
        }
        let test = Trigger::new(PARKED).maybe_trigger(&client, &()).unwrap();
        let partition = partition_for(test.partition_key().as_bytes(), PARTITIONS);
        tests.push((test, partition));
    }
    let n = tests.len();
    let wait = |what: &'static str, holds: &dyn Fn() -> bool| {
        let ok = (0..3_000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            holds()
        });
        assert!(ok, "{what}: not within 30 s");
    };
    wait("every test parked by the first runner", &|| {
        runner_a.parked_runs() == n
    });

    // A second runner joins: one partition moves to it.
    let runner_b = Runner::new(Suite::new(cases()).unwrap(), client.clone(), config);
    let mut reports_b = runner_b.subscribe();
    let (stop_b, run_b) = spawn_runner(&runner_b);
    wait("one partition each", &|| {
        runner_a.assigned_partitions() == 1 && runner_b.assigned_partitions() == 1
    });
    let moved = i32::from(!runner_b.owns_first_partition());
    let moved_tests = tests.iter().filter(|(_, p)| *p == moved).count();
    wait(
        "the moved partition's runs parked again by its new owner",
        &|| {
            runner_b.parked_runs() == moved_tests
                && runner_a.parked_runs() == n - moved_tests
                && runner_a.counters().runs_handed_back() == moved_tests as u64
        },
    );
    assert_eq!(runner_a.counters().reports_published(), 0);

    for (test, _) in &tests {
        client
            .scope(test.clone(), async {
                FIRST.send(&"x".to_owned()).await;
                SECOND.send(&"x".to_owned()).await;
            })
            .await;
    }
    // Every test once, from the owner of its partition.
    let mut by_a = Vec::new();
    let mut by_b = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while by_a.len() + by_b.len() < n {
        tokio::select! {
            Ok(report) = reports_a.recv() => by_a.push(report),
            Ok(report) = reports_b.recv() => by_b.push(report),
            () = tokio::time::sleep_until(deadline) => panic!(
                "{} of {n} reports within 30 s", by_a.len() + by_b.len()
            ),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(report) = reports_a.try_recv() {
        by_a.push(report);
    }
    while let Ok(report) = reports_b.try_recv() {
        by_b.push(report);
    }
    for (reports, owner_has) in [(&by_a, 1 - moved), (&by_b, moved)] {
        for report in reports {
            assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
            let partition = tests
                .iter()
                .find(|(t, _)| t.id == report.test_id)
                .map(|(_, p)| *p);
            assert_eq!(partition, Some(owner_has), "{}", report.render());
        }
    }
    let mut ids: Vec<&str> = by_a
        .iter()
        .chain(&by_b)
        .map(|r| r.test_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), by_a.len() + by_b.len()), (n, n));
    for (runner, handed_back) in [(&runner_a, moved_tests as u64), (&runner_b, 0)] {
        let c = runner.counters();
        assert_eq!(
            (
                c.duplicate_tests(),
                runner.parked_runs(),
                runner.in_flight(),
                c.runs_handed_back()
            ),
            (0, 0, 0, handed_back)
        );
    }
    // Both runners leave before their broker goes.
    for (stop, run) in [(stop_b, run_b), (stop_a, run_a)] {
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("a runner stops within 30 s")
            .unwrap()
            .unwrap();
    }
    drop(broker);
}

/// Runs `runner` in a task of its own until the sender is used.
fn spawn_runner(
    runner: &Runner,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), livecheck_core::Error>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = runner.clone();
    let run = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, run)
}
