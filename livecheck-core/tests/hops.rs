//! Kafka propagation in one call each way, on the embedded broker: a producer that carries
//! the test context, a consumer helper that restores it, the hops the runner reports, the
//! records read without a context (counted by group and topic, on the service and, through
//! its position reports, on the runner), and what a `TIMEOUT` says from the hops.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use livecheck_core::{
    Case, EmbeddedBroker, HopKind, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig,
    Signal, Suite, Topics, Trigger, Verdict,
};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

const CASE: &str = "hops.transfer";
static CREDITED: Signal<u64> = Signal::new(CASE, "credited");

struct Fixture {
    client: LiveCheck,
    runner: Runner,
    commands: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    // Last: clients must close before their broker goes.
    _broker: EmbeddedBroker,
}

impl Fixture {
    async fn new() -> Self {
        let topics = Topics::with_prefix(&format!("h{}-", uuid::Uuid::new_v4().simple()));
        let commands = format!("{}commands", topics.tests);
        let broker = EmbeddedBroker::with_topics(&topics, &[&commands], 2).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka, topics).unwrap();
        let case = Case::new(CASE).timeout(Duration::from_millis(1500)).expect(
            |run: Run, (): ()| async move {
                run.wait(&CREDITED).await?;
                Ok(())
            },
        );
        let runner = Runner::new(
            Suite::new([case]).unwrap(),
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
            _stop: stop,
            _broker: broker,
        }
    }

    /// A consumer of the commands topic (both partitions, from the beginning) in group
    /// `group`; assigned, so it reads at once.
    fn consumer(&self, group: &str) -> StreamConsumer {
        let consumer: StreamConsumer = self
            .client
            .kafka()
            .client_config(&[
                ("group.id", group),
                ("auto.offset.reset", "earliest"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        for partition in 0..2 {
            list.add_partition_offset(&self.commands, partition, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        consumer
    }

    /// Starts a test, runs `service` in its scope, and returns the report.
    async fn run<F: std::future::Future<Output = ()>>(&self, service: F) -> Arc<Report> {
        // Watched first: a run can end before the trigger returns.
        let id = uuid::Uuid::new_v4().to_string();
        let report = self.runner.report_for(&id);
        let context = Trigger::new(CASE)
            .maybe_trigger_with_id(&self.client, Some(&id), &())
            .expect("probability 1");
        self.client.scope(context, service).await;
        tokio::time::timeout(Duration::from_secs(30), report)
            .await
            .expect("no report within 30 s")
            .expect("runner dropped the watcher")
    }

    /// Service A: sends `payload` to the commands topic with the LiveCheck producer.
    async fn send_command(&self, payload: &str) -> (i32, i64) {
        let producer: FutureProducer = self.client.kafka().producer_config().create().unwrap();
        let producer = self.client.clone().with_service("debit").producer(producer);
        let delivery = producer
            .send(
                FutureRecord::<str, str>::to(&self.commands)
                    .key("t")
                    .payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        (delivery.partition, delivery.offset)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_goes_through_kafka_in_one_call_each_way_and_the_hops_are_reported() {
    let f = Fixture::new().await;
    let consumer = f.consumer("credit-service");
    let service = f.client.clone().with_service("credit");
    let report = f
        .run(async {
            let (partition, offset) = f.send_command("credit 100").await;
            // Service B, outside the test's scope: the record brings the context back.
            let handled = tokio::spawn(async move {
                let message = consumer.recv().await.unwrap();
                assert_eq!((message.partition(), message.offset()), (partition, offset));
                service
                    .consume("credit-service", &message, async {
                        assert!(livecheck_core::in_test(), "scoped by the record's context");
                        CREDITED.send(&100).await;
                    })
                    .await;
            });
            handled.await.unwrap();
        })
        .await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    let hops: Vec<(HopKind, &str, Option<&str>)> = report
        .hops
        .iter()
        .map(|h| (h.kind, h.service.as_str(), h.group.as_deref()))
        .collect();
    assert_eq!(
        hops,
        [
            (HopKind::Produced, "debit", None),
            (HopKind::Consumed, "credit", Some("credit-service")),
        ]
    );
    assert_eq!(report.hops[0].place(), report.hops[1].place());
    assert!(
        report.timeline.iter().all(|s| s.signal == "credited"),
        "hops are not steps: {:?}",
        report.timeline
    );
    assert_eq!(report.unawaited, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_a_context_is_counted_by_group_and_topic_here_and_on_the_runner() {
    let f = Fixture::new().await;
    // Normal traffic: produced outside any test.
    f.send_command("credit 5").await;
    f.send_command("credit 6").await;
    let consumer = f.consumer("credit-service");
    for _ in 0..2 {
        let message = consumer.recv().await.unwrap();
        f.client
            .consume("credit-service", &message, async {
                assert!(!livecheck_core::in_test());
            })
            .await;
    }
    let expected = vec![("credit-service".to_owned(), f.commands.clone(), 2)];
    assert_eq!(f.client.records_without_context(), expected);
    assert_eq!(f.client.counters().records_without_context(), 2);
    // The service reports its positions about once a second; the runner sums them.
    let start = Instant::now();
    while f.runner.records_without_context() != expected {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the runner has {:?}",
            f.runner.records_without_context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_nobody_reads_is_named_in_the_timeout() {
    let f = Fixture::new().await;
    let mut place = None;
    let report = f
        .run(async {
            place = Some(f.send_command("credit 100").await);
        })
        .await;
    let (partition, offset) = place.unwrap();
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some(
            format!(
                "signal `credited` did not arrive within 1.5s of the start of the test (no step arrived); \
                 the record of this test left debit at {topic}[{partition}]@{offset} and no consumer \
                 using LiveCheck's Kafka helpers reports reading {topic}",
                topic = f.commands
            )
            .as_str()
        )
    );
}
