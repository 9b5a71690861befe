//! A runner in a consumer group commits what it decided even when the group refused some of
//! its commits, as a group does while it rebalances. librdkafka does not tell a program that
//! an asynchronous commit failed, so the runner commits every position again after each
//! rebalance and every 30th tick (embedded broker; `OffsetCommit` errors injected).

mod support;

use std::time::Duration;

use livecheck_core::{
    Case, EmbeddedBroker, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig, Signal, Suite, Topics,
    Trigger, Verdict,
};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const CASE: &str = "commits.case";
static STEP: Signal<u64> = Signal::new(CASE, "step");

/// One step.
fn case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(30))
        .expect(|run: Run, (): ()| async move {
            run.wait(&STEP).await?;
            Ok(())
        })
}

/// Starts `n` tests with their step; returns once they are sent.
async fn send_tests(client: &LiveCheck, n: usize) {
    for _ in 0..n {
        let test = Trigger::new(CASE).maybe_trigger(client, &()).unwrap();
        client.scope(test, async { STEP.send(&1).await }).await;
    }
}

/// Waits for `n` reports on `reports`, each a PASS.
async fn passes(
    reports: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<livecheck_core::Report>>,
    n: usize,
) {
    for k in 0..n {
        let report = tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .unwrap_or_else(|_| panic!("{k} of {n} reports within 30 s"))
            .expect("reports");
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
}

/// The tests offset `group` has committed for partition 0, if any.
fn committed(kafka: &KafkaConfig, topics: &Topics, group: &str) -> Option<i64> {
    let reader: BaseConsumer = kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topics.tests, 0);
    let offsets = reader
        .committed_offsets(wanted, Duration::from_secs(10))
        .ok()?;
    match offsets.find_partition(&topics.tests, 0)?.offset() {
        Offset::Offset(at) => Some(at),
        _ => None,
    }
}

/// Polls `committed` until it is `want` or `within` passes; returns the last value read.
async fn committed_becomes(
    kafka: &KafkaConfig,
    topics: &Topics,
    group: &str,
    want: i64,
    within: Duration,
) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (kafka, topics, group) = (kafka.clone(), topics.clone(), group.to_owned());
        let last = tokio::task::spawn_blocking(move || committed(&kafka, &topics, &group))
            .await
            .unwrap();
        if last == Some(want) || tokio::time::Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker with one partition per topic, a client, and a group for its runners.
struct World {
    broker: EmbeddedBroker,
    kafka: KafkaConfig,
    topics: Topics,
    client: LiveCheck,
    group: String,
}

impl World {
    fn new() -> Self {
        let topics = Topics::with_prefix(&format!("c{}-", uuid::Uuid::new_v4().simple()));
        let broker = EmbeddedBroker::with_topics(&topics, &[], 1).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka.clone(), topics.clone()).unwrap();
        let group = format!("commits-{}", uuid::Uuid::new_v4().simple());
        Self {
            broker,
            kafka,
            topics,
            client,
            group,
        }
    }

    /// A runner in the group, ticking every `tick`.
    fn runner(&self, tick: Duration) -> Runner {
        Runner::new(
            Suite::new([case()]).unwrap(),
            self.client.clone(),
            RunnerConfig {
                group_id: Some(self.group.clone()),
                sweep_every: tick,
                ..RunnerConfig::default()
            },
        )
    }

    /// Makes the next `n` offset commits fail as during a rebalance.
    fn refuse_commits(&self, n: usize) {
        self.broker
            .fail_requests(
                RDKafkaApiKey::OffsetCommit,
                &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS; n],
            )
            .unwrap();
    }

    async fn committed_becomes(&self, want: i64, within: Duration) -> Option<i64> {
        committed_becomes(&self.kafka, &self.topics, &self.group, want, within).await
    }

    /// A runner in the group ticking every `tick`, ready, with 5 tests passed and
    /// committed; its reports, and what stops it when dropped.
    async fn runner_with_five_committed(
        &self,
        tick: Duration,
    ) -> (
        Runner,
        tokio::sync::broadcast::Receiver<std::sync::Arc<livecheck_core::Report>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let runner = self.runner(tick);
        let mut reports = runner.subscribe();
        let stop = tokio::time::timeout(Duration::from_secs(30), support::start_runner(&runner))
            .await
            .expect("ready within 30 s");
        send_tests(&self.client, 5).await;
        passes(&mut reports, 5).await;
        assert_eq!(
            self.committed_becomes(5, Duration::from_secs(30)).await,
            Some(5),
            "the first 5 tests committed"
        );
        (runner, reports, stop)
    }

    /// Refuses the next `refused` offset commits, then sends 5 more tests and waits for
    /// their passes.
    async fn five_more_with_commits_refused(
        &self,
        reports: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<livecheck_core::Report>>,
        refused: usize,
    ) {
        self.refuse_commits(refused);
        send_tests(&self.client, 5).await;
        passes(reports, 5).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_the_group_refused_are_made_again_though_nothing_moves_after_them() {
    let world = World::new();
    // 30 ticks: 3 s.
    let (_runner, mut reports, _stop) = world
        .runner_with_five_committed(Duration::from_millis(100))
        .await;

    // More refusals than the commits these tests bring (one per tick at most while their
    // positions move): the last of them is refused too, and nothing moves afterwards.
    world.five_more_with_commits_refused(&mut reports, 4).await;
    assert_eq!(
        world.committed_becomes(10, Duration::from_secs(30)).await,
        Some(10),
        "every decided test committed in the end, though the group refused commits"
    );
}

/// A member joining makes the group rebalance: the runner commits everything again then,
/// long before its periodic re-commit (every 30 ticks of 2 s here: a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_makes_the_runner_commit_again_what_the_group_refused() {
    let world = World::new();
    let started = tokio::time::Instant::now();
    let (_first, mut reports, _stop) = world
        .runner_with_five_committed(Duration::from_secs(2))
        .await;

    // These 5 tests are decided within a tick: their one commit is refused.
    world.five_more_with_commits_refused(&mut reports, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A second member: the group rebalances (the one partition stays with the first).
    let second = world.runner(Duration::from_secs(2));
    let _second = tokio::time::timeout(Duration::from_secs(30), support::start_runner(&second))
        .await
        .expect("the second member ready within 30 s");
    // Before the periodic re-commit (a minute after the first member started), so that
    // the rebalance's is the one seen.
    let before_periodic =
        (started + Duration::from_secs(55)).saturating_duration_since(tokio::time::Instant::now());
    assert!(
        before_periodic >= Duration::from_secs(10),
        "the second member took {:?} to be ready: too late to tell the two re-commits apart",
        started.elapsed()
    );
    assert_eq!(
        world.committed_becomes(10, before_periodic).await,
        Some(10),
        "the refused commit made again after the rebalance ({:?} after the first member started)",
        started.elapsed()
    );
}
