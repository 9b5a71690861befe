//! Every way a run can wait, on the embedded broker: for each form a run that passes and a
//! run that does not, with the exact verdict and message. The "service" here is the test
//! itself, sending signals in the test's scope as production code would.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use livecheck_core::{
    ensure_eq, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig,
    Signal, Suite, Topics, Trigger, Verdict,
};

const CASE: &str = "forms.ledger";
const OTHER: &str = "forms.other";
static DEBITED: Signal<u64> = Signal::new(CASE, "debited");
static CREDITED: Signal<u64> = Signal::new(CASE, "credited");
static STATUS: Signal<String> = Signal::new(CASE, "status");
static FILL: Signal<u64> = Signal::new(CASE, "fill");
static SHIPPED: Signal<String> = Signal::new(CASE, "shipped");
static REVERSED: Signal<()> = Signal::new(CASE, "reversed");
static NOTIFIED: Signal<()> = Signal::new(CASE, "notified");
static OTHERS: Signal<()> = Signal::new(OTHER, "elsewhere");

/// Which check the case runs: the test's argument picks it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Form {
    Once,
    Where,
    N,
    Collect,
    Optional,
    Never,
    First,
    Items,
    Deadline,
    OtherCase,
    Join,
    /// `wait_where` with a condition that panics on one value.
    Panicky,
}

fn case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_millis(1500))
        .deadline(Duration::from_millis(2500))
        .settle(Duration::from_millis(300))
        .expect(|run: Run, form: Form| async move { check(run, form).await })
}

async fn check(run: Run, form: Form) -> Result<(), livecheck_core::CheckError> {
    match form {
        Form::Once => {
            let debited = run.wait(&DEBITED).await?;
            ensure_eq!(debited, 100, "the debit");
            run.wait(&CREDITED).await?;
        }
        Form::Where => {
            let status = run
                .wait_where(&STATUS, "status is filled", |s: &String| s == "filled")
                .await?;
            ensure_eq!(status, "filled", "the status");
        }
        Form::N => {
            let fills = run.wait_n(&FILL, 3).await?;
            ensure_eq!(fills.iter().sum::<u64>(), 100, "the fills' total");
        }
        Form::Collect => {
            let fills = run.collect(&FILL, Duration::from_millis(800)).await?;
            ensure_eq!(fills.iter().sum::<u64>(), 100, "the fills' total");
        }
        Form::Optional => {
            let reversed = run.wait_optional(&REVERSED).await?;
            let debited = run.wait(&DEBITED).await?;
            livecheck_core::ensure!(
                reversed.is_none() || debited == 0,
                "a reversal came with a debit of {debited}"
            );
        }
        Form::Never => {
            run.wait(&DEBITED).await?;
            run.never(&REVERSED, Duration::from_millis(800)).await?;
        }
        Form::First => {
            let first = run.wait_first(&[&DEBITED, &REVERSED]).await?;
            let debited = first.get(&DEBITED)?;
            ensure_eq!(debited, Some(100), "the first step's debit");
        }
        Form::Items => {
            for item in ["a", "b"] {
                let shipped = run.wait_item(&SHIPPED, item).await?;
                ensure_eq!(shipped, format!("box {item}"), "item {item}");
            }
        }
        Form::Deadline => {
            run.wait(&DEBITED).await?;
            run.wait(&CREDITED).await?;
            run.wait(&NOTIFIED).await?;
        }
        Form::OtherCase => {
            run.wait(&OTHERS).await?;
        }
        Form::Panicky => {
            run.wait_where(&STATUS, "status is filled", |s: &String| {
                assert_ne!(s, "boom", "the condition cannot read this status");
                s == "filled"
            })
            .await?;
        }
        Form::Join => {
            let (debited, notified) = tokio::join!(run.wait(&DEBITED), run.wait(&NOTIFIED));
            ensure_eq!(debited?, 100, "the debit");
            notified?;
        }
    }
    Ok(())
}

/// One broker, one client and one runner with the case, topics named for the test.
struct Fixture {
    client: LiveCheck,
    runner: Runner,
    /// A topic of the system under test (commands a service consumes).
    commands: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Last: clients must close before their broker goes.
    _broker: EmbeddedBroker,
}

impl Fixture {
    async fn new() -> Self {
        let topics = Topics::with_prefix(&format!("f{}-", uuid::Uuid::new_v4().simple()));
        let commands = format!("{}commands", topics.tests);
        let broker = EmbeddedBroker::with_topics(&topics, &[&commands], 2).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka, topics).unwrap();
        let runner = Runner::new(
            Suite::new([
                case(),
                Case::new(OTHER).expect(|_: Run, (): ()| async { Ok(()) }),
            ])
            .unwrap(),
            client.clone(),
            RunnerConfig {
                clock_slack: Duration::from_millis(200),
                ..RunnerConfig::default()
            },
        );
        let stop = support::start_runner(&runner).await;
        Self {
            client,
            runner,
            commands,
            stop: Some(stop),
            _broker: broker,
        }
    }

    /// Starts a test of `form`, runs `service` in its scope (the production code's sends),
    /// and returns the report.
    async fn run<F: Future<Output = ()>>(&self, form: Form, service: F) -> Arc<Report> {
        // Watched first: a run can end before the trigger returns.
        let id = uuid::Uuid::new_v4().to_string();
        let report = self.runner.report_for(&id);
        let context = Trigger::new(CASE)
            .maybe_trigger_with_id(&self.client, Some(&id), &form)
            .expect("probability 1");
        self.client.scope(context, service).await;
        tokio::time::timeout(Duration::from_secs(30), report)
            .await
            .expect("no report within 30 s")
            .expect("runner dropped the watcher")
    }
}

impl Fixture {
    /// A command record carrying the current test's context, as a service consumes it.
    async fn consumed_command(&self) -> rdkafka::message::OwnedMessage {
        use rdkafka::consumer::{Consumer as _, StreamConsumer};
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = self.client.kafka().producer_config().create().unwrap();
        let delivered = producer
            .send(
                FutureRecord::to(&self.commands)
                    .key("debit")
                    .payload("debit 100")
                    .headers(livecheck_core::kafka::inject(Default::default())),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let consumer: StreamConsumer = self
            .client
            .kafka()
            .client_config(&[
                ("group.id", "debit-service"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(
            &self.commands,
            delivered.partition,
            rdkafka::Offset::Offset(delivered.offset),
        )
        .unwrap();
        consumer.assign(&list).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("the command within 10 s")
            .unwrap();
        message.detach()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn assert_verdict(report: &Report, verdict: Verdict, error: Option<&str>) {
    assert_eq!(
        (report.verdict, report.error.as_deref()),
        (verdict, error),
        "{}",
        report.render()
    );
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sent_twice_fails_naming_the_step_and_the_count() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Once, async {
            DEBITED.send(&100).await;
            CREDITED.send(&100).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    assert_eq!(r.timeline.len(), 2);
    assert!(r.timeline.iter().all(|s| s.awaited));

    // The handler ran twice and signalled twice: a double debit never passes.
    let r = fx
        .run(Form::Once, async {
            DEBITED.send(&100).await;
            DEBITED.send(&100).await;
            CREDITED.send(&100).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `debited` happened 2 times, expected once"),
    );
    assert_eq!(r.timeline.len(), 3, "every occurrence is in the report");
    assert_eq!(r.timeline.iter().filter(|s| !s.awaited).count(), 1);
    assert_eq!(r.unawaited, vec!["debited".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_within_the_settle_time_is_caught_after_the_last_step() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Once, async {
            DEBITED.send(&100).await;
            CREDITED.send(&100).await;
            pause().await;
            DEBITED.send(&100).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `debited` happened 2 times, expected once"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_where_takes_the_value_that_satisfies_the_condition() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Where, async {
            STATUS.send(&"new".to_owned()).await;
            STATUS.send(&"filled".to_owned()).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    assert_eq!(r.timeline.iter().filter(|s| s.awaited).count(), 1);

    let r = fx
        .run(Form::Where, async {
            STATUS.send(&"new".to_owned()).await;
            STATUS.send(&"open".to_owned()).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Timeout,
        Some(
            "signal `status` did not arrive within 1.5s of the start of the test (no step \
             arrived) (2 occurrences came where not status is filled)",
        ),
    );

    let r = fx
        .run(Form::Where, async {
            STATUS.send(&"filled".to_owned()).await;
            STATUS.send(&"filled".to_owned()).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `status where status is filled` happened 2 times, expected once"),
    );
}

/// A case's condition that panics fails its own run only: it runs without the runner's
/// locks held, so the next runs are checked as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_that_panics_fails_its_run_and_no_other() {
    let fx = Fixture::new().await;
    for _ in 0..2 {
        let r = fx
            .run(Form::Panicky, async {
                STATUS.send(&"boom".to_owned()).await;
            })
            .await;
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("the check panicked: assertion `left != right` failed: the condition cannot read this status"),
            "{error}"
        );
    }
    let r = fx
        .run(Form::Where, async {
            STATUS.send(&"filled".to_owned()).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_n_wants_exactly_n() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::N, async {
            for fill in [50, 30, 20] {
                FILL.send(&fill).await;
            }
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);

    let r = fx
        .run(Form::N, async {
            for fill in [50, 50] {
                FILL.send(&fill).await;
            }
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Timeout,
        Some(
            "signal `fill` did not arrive within 1.5s of the start of the test (no step \
             arrived) (2 of 3 came)",
        ),
    );

    let r = fx
        .run(Form::N, async {
            for fill in [50, 30, 20, 20] {
                FILL.send(&fill).await;
            }
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `fill` happened 4 times, expected 3 times"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_takes_every_occurrence_within_the_window() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Collect, async {
            for fill in [10, 20, 30, 40] {
                FILL.send(&fill).await;
            }
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    assert_eq!(
        r.waits,
        vec!["collect `fill` within 800ms: 4 taken".to_owned()]
    );

    let r = fx
        .run(Form::Collect, async {
            FILL.send(&10).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("the fills' total: expected 100, got 10"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_step_may_be_absent_but_not_repeated() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Optional, async {
            DEBITED.send(&100).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    assert_eq!(r.missing_step, None);
    assert!(r
        .waits
        .contains(&"wait_optional `reversed`: absent".to_owned()));

    let r = fx
        .run(Form::Optional, async {
            REVERSED.send(&()).await;
            DEBITED.send(&100).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("a reversal came with a debit of 100"),
    );

    let r = fx
        .run(Form::Optional, async {
            REVERSED.send(&()).await;
            REVERSED.send(&()).await;
            DEBITED.send(&0).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `reversed` happened 2 times, expected once"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_step_that_comes_fails() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Never, async {
            DEBITED.send(&100).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    assert!(r
        .waits
        .contains(&"never `reversed` within 800ms: none came".to_owned()));

    let r = fx
        .run(Form::Never, async {
            DEBITED.send(&100).await;
            REVERSED.send(&()).await;
        })
        .await;
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.render());
    let error = r.error.as_deref().unwrap();
    assert!(
        error.starts_with("step `reversed` happened ")
            && error.ends_with(" after the previous step `debited`, but must not within 800ms"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_first_takes_whichever_step_comes_first() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::First, async {
            DEBITED.send(&100).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);

    let r = fx
        .run(Form::First, async {
            REVERSED.send(&()).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("the first step's debit: expected Some(100), got None"),
    );

    let r = fx.run(Form::First, async {}).await;
    assert_verdict(
        &r,
        Verdict::Timeout,
        Some(
            "signal `debited|reversed` did not arrive within 1.5s of the start of the test (no \
             step arrived)",
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_steps_happen_once_per_item() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Items, async {
            SHIPPED.send_item("b", &"box b".to_owned()).await;
            SHIPPED.send_item("a", &"box a".to_owned()).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);

    let r = fx
        .run(Form::Items, async {
            SHIPPED.send_item("a", &"box a".to_owned()).await;
            SHIPPED.send_item("b", &"box b".to_owned()).await;
            SHIPPED.send_item("a", &"box a".to_owned()).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `shipped[a]` happened 2 times, expected once"),
    );

    let r = fx
        .run(Form::Items, async {
            SHIPPED.send_item("a", &"box a".to_owned()).await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Timeout,
        Some("signal `shipped[b]` did not arrive within 1.5s of the previous step `shipped`"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_deadline_bounds_the_whole_run() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Deadline, async {
            DEBITED.send(&100).await;
            CREDITED.send(&100).await;
            NOTIFIED.send(&()).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);

    // Each step within its own 1.5 s timeout, but the run past its 2.5 s deadline.
    let r = fx
        .run(Form::Deadline, async {
            DEBITED.send(&100).await;
            tokio::time::sleep(Duration::from_millis(1300)).await;
            CREDITED.send(&100).await;
            tokio::time::sleep(Duration::from_millis(1300)).await;
            // NOTIFIED would be due 1.5 s after CREDITED: after the run's deadline.
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Timeout,
        Some(
            "signal `notified` did not arrive before the run's deadline (2.5s after the test was \
             issued)",
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_another_cases_signal_is_an_error_at_once() {
    let fx = Fixture::new().await;
    let started = std::time::Instant::now();
    let r = fx.run(Form::OtherCase, async {}).await;
    assert_verdict(
        &r,
        Verdict::Error,
        Some(
            "the check of case `forms.ledger` waits for signal `elsewhere` of case \
             `forms.other`: a run only receives its own case's signals (declare the signal \
             with case \"forms.ledger\")",
        ),
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "at once, not after the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_branches_wait_side_by_side() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Join, async {
            NOTIFIED.send(&()).await;
            DEBITED.send(&100).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);

    let r = fx
        .run(Form::Join, async {
            DEBITED.send(&100).await;
        })
        .await;
    // Its timeout counts from the latest step taken when the branch began to wait: the
    // start, or `debited` if that branch took it first.
    assert_eq!(r.verdict, Verdict::Timeout, "{}", r.render());
    assert!(r
        .error
        .as_deref()
        .unwrap()
        .starts_with("signal `notified` did not arrive within 1.5s of the "));
    assert_eq!(r.missing_step.as_deref(), Some("notified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latencies_are_measured_between_sends_and_the_runner_lag_apart() {
    let fx = Fixture::new().await;
    let r = fx
        .run(Form::Once, async {
            DEBITED.send(&100).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            CREDITED.send(&100).await;
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    let credited = &r.timeline[1];
    assert_eq!(credited.signal, "credited");
    assert!(
        (300.0..600.0).contains(&credited.latency_ms),
        "latency between the sends: {} ms",
        credited.latency_ms
    );
    let expected_lag = (credited.arrived_at - credited.sent_at)
        .num_microseconds()
        .unwrap() as f64
        / 1000.0;
    assert!((credited.lag_ms - expected_lag).abs() < 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_handled_again_counts_once_and_a_step_sent_twice_in_one_handling_twice() {
    let fx = Fixture::new().await;
    // The debit service handles its command, crashes before committing, and handles the
    // same record again after the restart: at-least-once redelivery, not a double debit.
    let client = fx.client.clone();
    let r = fx
        .run(Form::Once, async {
            let command = fx.consumed_command().await;
            for _ in 0..2 {
                client
                    .scope_message(&command, async {
                        DEBITED.send(&100).await;
                        CREDITED.send(&100).await;
                    })
                    .await;
            }
        })
        .await;
    assert_verdict(&r, Verdict::Pass, None);
    assert_eq!(r.timeline.len(), 2, "one occurrence per step");

    // One handling that debits twice.
    let r = fx
        .run(Form::Once, async {
            let command = fx.consumed_command().await;
            client
                .scope_message(&command, async {
                    DEBITED.send(&100).await;
                    DEBITED.send(&100).await;
                    CREDITED.send(&100).await;
                })
                .await;
        })
        .await;
    assert_verdict(
        &r,
        Verdict::Fail,
        Some("step `debited` happened 2 times, expected once"),
    );
}
