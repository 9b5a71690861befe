//! The test context across a background job (feature `jobs-apalis`): enqueued inside a test
//! on apalis's in-memory storage, run by a worker behind `jobs::TestContextLayer`, whose
//! signal the runner judges as the test's; jobs enqueued outside a test, or with a stored
//! context that is malformed or badly signed, run as ordinary jobs and the rejection is
//! counted.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::backend::memory::MemoryStorage;
use apalis_core::backend::TaskSink as _;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use livecheck_core::counters::ClientCounters;
use livecheck_core::jobs::{self, TaskBuilderExt as _};
use livecheck_core::signing::SigningKeys;
use livecheck_core::{
    current_test, ensure_eq, headers, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run,
    Runner, RunnerConfig, Signal, Suite, TestContext, Topics, Verdict,
};
use tokio::sync::mpsc;

const CASE: &str = "jobs.background";
static RAN: Signal<u64> = Signal::new(CASE, "job_ran");

/// What a worker saw of one job: its argument and the test it ran for, if any.
type Seen = (u64, Option<String>);

/// Starts a worker for `storage` behind the layer of `client`; each job sends [`RAN`] and
/// reports what it saw.
fn start_worker(storage: MemoryStorage<u64>, client: LiveCheck) -> mpsc::UnboundedReceiver<Seen> {
    let (seen, rx) = mpsc::unbounded_channel::<Seen>();
    let worker = WorkerBuilder::new(format!("jobs-{}", uuid::Uuid::new_v4().simple()))
        .backend(storage)
        .layer(jobs::TestContextLayer::new(client))
        .build(move |n: u64| {
            let seen = seen.clone();
            async move {
                RAN.send(&n).await;
                let _ = seen.send((n, current_test().map(|c| c.id.clone())));
            }
        });
    tokio::spawn(async move {
        if let Err(err) = worker.run().await {
            panic!("the worker stopped: {err}");
        }
    });
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the worker ran the job within 10 s")
        .expect("the worker is running")
}

/// A client that never needs its broker (signals outside a test are not sent).
fn offline_client() -> LiveCheck {
    LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).unwrap()
}

fn counter(counters: &ClientCounters, name: &str) -> u64 {
    counters
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn fresh() -> TestContext {
    TestContext::new(CASE, Duration::from_secs(60))
}

/// A broker, a client and a runner of the case (the job's argument must come back in
/// [`RAN`]; a repeat of the step within the settle time is seen).
struct Fixture {
    client: LiveCheck,
    runner: Runner,
    _stop: tokio::sync::oneshot::Sender<()>,
    // Last: clients must close before their broker goes.
    _broker: EmbeddedBroker,
}

impl Fixture {
    async fn new() -> Self {
        let topics = Topics::with_prefix(&format!("t{}-", uuid::Uuid::new_v4().simple()));
        let broker = EmbeddedBroker::with_topics(&topics, &[], 4).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka, topics).unwrap();
        let case = Case::new(CASE)
            .timeout(Duration::from_secs(10))
            .settle(Duration::from_millis(500))
            .expect(|run: Run, n: u64| async move {
                let ran = run.wait(&RAN).await?;
                ensure_eq!(ran, n, "the job ran with another argument");
                Ok(())
            });
        let runner = Runner::new(
            Suite::new([case]).unwrap(),
            client.clone(),
            RunnerConfig::default(),
        );
        let stop = support::start_runner(&runner).await;
        Self {
            client,
            runner,
            _stop: stop,
            _broker: broker,
        }
    }

    /// A registered test of argument `n`, and its report to come.
    fn test(&self, n: u64) -> (TestContext, tokio::sync::oneshot::Receiver<Arc<Report>>) {
        let context = self.client.new_context(CASE, Duration::from_secs(60));
        let context = context.arguments(serde_json::json!(n));
        // Watched first: a run can be over before the registration returns.
        let report = self.runner.report_for(&context.id);
        self.client.register_test(&context).unwrap();
        (context, report)
    }
}

async fn report(rx: tokio::sync::oneshot::Receiver<Arc<Report>>) -> Arc<Report> {
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("a report within 30 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_in_a_test_runs_in_its_scope_and_its_signal_is_the_tests() {
    let fx = Fixture::new().await;
    let (context, report_rx) = fx.test(7);
    let mut storage = MemoryStorage::new();
    fx.client
        .scope(context.clone(), async {
            storage.push_task(jobs::task(7u64)).await.unwrap();
        })
        .await;
    let mut seen = start_worker(storage, fx.client.clone());

    assert_eq!(next(&mut seen).await, (7, Some(context.id.clone())));
    let report = report(report_rx).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    let steps: Vec<_> = report.timeline.iter().map(|s| s.signal.as_str()).collect();
    assert_eq!(steps, ["job_ran"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_again_sends_its_steps_again_and_they_count_once() {
    let fx = Fixture::new().await;
    // The same job (same id) twice, as a retry or a redelivery runs it: one step. Two jobs
    // with their own ids: the step happened twice.
    let (again, again_rx) = fx.test(1);
    let (twice, twice_rx) = fx.test(2);
    let mut storage = MemoryStorage::new();
    for (context, n, ids) in [
        (&again, 1u64, ["job-a", "job-a"]),
        (&twice, 2, ["job-b", "job-c"]),
    ] {
        for id in ids {
            let job = fx
                .client
                .scope(context.clone(), async {
                    TaskBuilder::new(n)
                        .task_id(TaskId::from_string(id))
                        .test_context()
                        .build()
                })
                .await;
            storage.push_task(job).await.unwrap();
        }
    }
    let mut seen = start_worker(storage, fx.client.clone());
    let mut ran = Vec::new();
    for _ in 0..4 {
        ran.push(next(&mut seen).await);
    }
    ran.sort();
    let (a, b) = (Some(again.id.clone()), Some(twice.id.clone()));
    assert_eq!(ran, [(1, a.clone()), (1, a), (2, b.clone()), (2, b)]);

    let again = report(again_rx).await;
    assert_eq!(again.verdict, Verdict::Pass, "{}", again.render());
    let twice = report(twice_rx).await;
    assert_eq!(twice.verdict, Verdict::Fail, "{}", twice.render());
    assert_eq!(
        twice.error.as_deref(),
        Some("step `job_ran` happened 2 times, expected once")
    );
}

#[tokio::test]
async fn a_job_enqueued_outside_a_test_carries_nothing() {
    let client = offline_client();
    let mut storage = MemoryStorage::new();
    let job = jobs::task(1u64);
    assert!(job.ctx().metadata().is_empty());
    storage.push_task(job).await.unwrap();
    // A builder of its own, outside a test, adds nothing either.
    storage
        .push_task(TaskBuilder::new(2u64).test_context().build())
        .await
        .unwrap();
    let mut seen = start_worker(storage, client.clone());

    let mut ran = vec![next(&mut seen).await, next(&mut seen).await];
    ran.sort();
    assert_eq!(ran, [(1, None), (2, None)]);
    let counters = client.counters();
    assert_eq!(counter(counters, "signals_sent"), 0);
    assert_eq!(counter(counters, "contexts_rejected"), 0);
}

/// A job whose metadata holds these context fields.
fn job_with(n: u64, fields: &[(&'static str, String)]) -> apalis_core::task::Task<u64> {
    let metadata: MetadataStore = fields.iter().cloned().collect();
    TaskBuilder::new(n).with_metadata(metadata).build()
}

#[tokio::test]
async fn a_job_with_a_malformed_stored_context_runs_as_an_ordinary_job_counted() {
    let client = offline_client();
    let good: HashMap<_, _> = headers::encode(&fresh()).into_iter().collect();
    let mut bad_time = good.clone();
    bad_time.insert(headers::TEST_TIMESTAMP, "yesterday".to_owned());
    let mut no_name = good.clone();
    no_name.remove(headers::TEST_NAME);
    let mut bad_id = good.clone();
    bad_id.insert(headers::TEST_ID, "two words".to_owned());
    let mut storage = MemoryStorage::new();
    for (n, fields) in [bad_time, no_name, bad_id].into_iter().enumerate() {
        let fields: Vec<_> = fields.into_iter().collect();
        storage
            .push_task(job_with(n as u64, &fields))
            .await
            .unwrap();
    }
    let mut seen = start_worker(storage, client.clone());
    let mut ran: Vec<_> = vec![
        next(&mut seen).await,
        next(&mut seen).await,
        next(&mut seen).await,
    ];
    ran.sort();
    assert_eq!(ran, [(0, None), (1, None), (2, None)]);

    let counters = client.counters();
    assert_eq!(counter(counters, "contexts_rejected"), 3);
    assert_eq!(counter(counters, "contexts_rejected_malformed"), 2);
    assert_eq!(counter(counters, "contexts_rejected_bad_test_id"), 1);
    assert_eq!(counter(counters, "signals_sent"), 0);
}

#[tokio::test]
async fn signatures_ride_with_the_job_and_a_bad_one_makes_it_an_ordinary_job() {
    let keys = SigningKeys::new("k1", "the-shared-secret-of-this-test").unwrap();
    let client = offline_client().with_signing(keys);
    let mut storage = MemoryStorage::new();

    // Signed by the client: the signature travels in the job and the worker accepts it.
    let signed = client.sign(fresh().arguments(serde_json::json!({"side": "buy"})));
    let job = client
        .scope(signed.clone(), async { jobs::task(1u64) })
        .await;
    assert_eq!(
        job.ctx().metadata().get(headers::TEST_SIGNATURE),
        signed.signature.as_deref()
    );
    storage.push_task(job).await.unwrap();

    // Tampered after signing, and unsigned: ordinary jobs, counted by reason.
    let mut tampered: HashMap<_, _> = headers::encode(&signed).into_iter().collect();
    tampered.insert(headers::TEST_ARGUMENTS, r#"{"side":"sell"}"#.to_owned());
    let unsigned: HashMap<_, _> = headers::encode(&fresh()).into_iter().collect();
    for (n, fields) in [(2, tampered), (3, unsigned)] {
        let fields: Vec<_> = fields.into_iter().collect();
        storage.push_task(job_with(n, &fields)).await.unwrap();
    }
    let mut seen = start_worker(storage, client.clone());
    let mut ran = vec![
        next(&mut seen).await,
        next(&mut seen).await,
        next(&mut seen).await,
    ];
    ran.sort();
    assert_eq!(ran, [(1, Some(signed.id.clone())), (2, None), (3, None)]);
    let counters = client.counters();
    assert_eq!(counter(counters, "contexts_rejected"), 2);
    assert_eq!(counter(counters, "contexts_rejected_bad_signature"), 1);
    assert_eq!(counter(counters, "contexts_rejected_unsigned"), 1);
}
