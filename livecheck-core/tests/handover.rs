//! A partition handed from one runner to another while the first runner's reports are still
//! on their way to the broker: the next owner must find them there, and not run those tests
//! again. The reports' produce requests are refused (embedded broker, `Produce` errors
//! injected), a second runner joins the group, and the refusals end only once the group has
//! begun to move a partition to it.
mod support;

use std::collections::HashMap;
use std::time::Duration;

use livecheck_core::{
    Case, EmbeddedBroker, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig, Signal, Suite, Topics,
    Trigger,
};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const CASE: &str = "handover.case";
/// Never sent: every run ends in a TIMEOUT after [`STEP_TIMEOUT`].
static STEP: Signal<()> = Signal::new(CASE, "step");
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Tests sent until each of the two partitions has this many.
const TESTS_PER_PARTITION: i64 = 3;

fn case() -> Case {
    Case::new(CASE)
        .timeout(STEP_TIMEOUT)
        .expect(|run: Run, (): ()| async move {
            run.wait(&STEP).await?;
            Ok(())
        })
}

fn runner(client: &LiveCheck, group: &str) -> Runner {
    Runner::new(
        Suite::new([case()]).unwrap(),
        client.clone(),
        RunnerConfig {
            group_id: Some(group.to_owned()),
            ..RunnerConfig::default()
        },
    )
}

/// Waits until `done`, at most `secs` seconds; else fails saying `what`.
async fn until(secs: u64, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reader(kafka: &KafkaConfig) -> BaseConsumer {
    kafka
        .client_config(&[
            ("group.id", &format!("reader-{}", uuid::Uuid::new_v4())),
            ("enable.auto.commit", "false"),
        ])
        .create()
        .unwrap()
}

/// Where each of `topic`'s two partitions ends.
fn ends(reader: &BaseConsumer, topic: &str) -> Vec<i64> {
    (0..2)
        .map(|p| {
            reader
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// How many reports each test has on the reports topic (both partitions, from their start).
fn reports_per_test(kafka: &KafkaConfig, topics: &Topics) -> HashMap<String, usize> {
    let reader = reader(kafka);
    let mut list = TopicPartitionList::new();
    for p in 0..2 {
        list.add_partition_offset(&topics.reports, p, Offset::Beginning)
            .unwrap();
    }
    let ends = ends(&reader, &topics.reports);
    reader.assign(&list).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut read = [0i64; 2];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (0..2).any(|p| read[p] < ends[p]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the reports topic not read to its end"
        );
        let Some(msg) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        read[msg.partition() as usize] = msg.offset() + 1;
        let report: serde_json::Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        let id = report["test_id"].as_str().unwrap().to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_while_its_reports_are_retried_does_not_run_its_tests_again() {
    let topics = Topics::with_prefix(&format!("h{}-", uuid::Uuid::new_v4().simple()));
    let broker = EmbeddedBroker::with_topics(&topics, &[], 2).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
    let client = LiveCheck::new(kafka.clone(), topics.clone()).unwrap();
    let group = format!("handover-{}", uuid::Uuid::new_v4().simple());

    let a = runner(&client, &group);
    let (_stop_a, _task_a) = support::spawn_runner(&a);
    a.ready().await;
    // Tests on both partitions, whichever the group moves.
    let mut ids = Vec::new();
    let tests_reader = reader(&kafka);
    while ends(&tests_reader, &topics.tests)
        .iter()
        .any(|&n| n < TESTS_PER_PARTITION)
    {
        assert!(ids.len() < 100, "the tests fall on one partition");
        let test = Trigger::new(CASE).maybe_trigger(&client, &()).unwrap();
        ids.push(test.id);
        client.flush(Duration::from_secs(5)).unwrap();
    }
    let tests = ids.len();
    // Every run started, then the produce requests refused until the handover has begun
    // (the producers retry a refused report within their `message.timeout.ms`, 30 s: the
    // group moves a partition well within that, about 5 s after B joins here).
    until(10, "A did not start every run", || a.in_flight() >= tests).await;
    broker
        .fail_requests(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 1000],
        )
        .unwrap();
    // The runs end (TIMEOUT, after the step's timeout and the runner's clock slack); their
    // reports are being retried when B joins.
    until(15, "A's runs did not end", || a.in_flight() == 0).await;
    assert!(
        a.counters().reports_published() < tests as u64,
        "A's reports are still being retried when B joins"
    );
    let b = runner(&client, &group);
    let (_stop_b, _task_b) = support::spawn_runner(&b);
    // The group takes a partition from A for B: A's revoke waits for its reports (or, were
    // it not to, B has the partition while they are still refused). Then the broker takes
    // them.
    until(30, "the group moved no partition within 30 s", || {
        a.counters().reports_awaited_on_revoke() > 0 || b.assigned_partitions() > 0
    })
    .await;
    assert!(
        a.counters().reports_published() < tests as u64,
        "A's reports are still refused when its partition moves"
    );
    broker.clear_request_errors(RDKafkaApiKey::Produce).unwrap();
    // B's first assignment can be empty (A gives a partition up first): until it has one.
    until(
        30,
        "the group gave B no partition of A's within 30 s",
        || b.assigned_partitions() > 0,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), b.ready())
        .await
        .expect("B ready within 30 s");
    until(30, "A's reports acknowledged within 30 s", || {
        a.counters().reports_published() >= tests as u64
    })
    .await;
    // What B would run again would end after its step's timeout and the runner's clock
    // slack (2 s by default); and B has nothing in flight then.
    tokio::time::sleep(STEP_TIMEOUT + Duration::from_secs(5)).await;
    assert_eq!(b.in_flight(), 0, "B runs nothing");
    let counts = {
        let (kafka, topics) = (kafka.clone(), topics.clone());
        tokio::task::spawn_blocking(move || reports_per_test(&kafka, &topics))
            .await
            .unwrap()
    };
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tests reported more than once: {twice:?}");
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "the report of test {id}");
    }
    assert_eq!(counts.len(), tests);
    assert!(
        b.counters().decided_restored() > 0,
        "B found A's reports of its partition ({} restored)",
        b.counters().decided_restored()
    );
    assert_eq!(b.counters().verdict_timeout(), 0, "B ran none of A's tests");
    assert!(
        a.counters().reports_awaited_on_revoke() > 0,
        "A's revoke waited for its reports"
    );
}
