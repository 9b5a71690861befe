//! What the core's integration tests share.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

use livecheck_core::{EmbeddedBroker, KafkaConfig, Runner};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

/// Runs `runner` in the background until the returned sender is used or dropped, and
/// waits until it has its partitions.
pub(crate) async fn start_runner(runner: &Runner) -> oneshot::Sender<()> {
    start_runner_task(runner).await.0
}

/// [`start_runner`], with the runner's task (to abort it: a crash, with no drain and no last
/// commit).
pub(crate) async fn start_runner_task(
    runner: &Runner,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, task) = spawn_runner(runner);
    runner.ready().await;
    (stop, task)
}

/// Runs `runner` in the background until the returned sender is used or dropped; its task
/// (to abort it: a crash, with no drain and no last commit).
pub(crate) fn spawn_runner(runner: &Runner) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let r = runner.clone();
    let task = tokio::spawn(async move {
        r.run(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task)
}

/// Produces one record per header list to a fresh one-partition topic of `broker` and
/// reads them back in order.
pub(crate) async fn through_kafka(
    broker: &EmbeddedBroker,
    kafka: &KafkaConfig,
    lists: &[Vec<(&'static str, String)>],
) -> Vec<OwnedMessage> {
    let topic = format!("headers-{}", uuid::Uuid::new_v4().simple());
    broker.create_topic(&topic, 1).unwrap();
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    for (i, list) in lists.iter().enumerate() {
        let mut record_headers = OwnedHeaders::new();
        for (key, value) in list {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("k{i}"))
                    .payload("{}")
                    .headers(record_headers),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let consumer: StreamConsumer = kafka
        .client_config(&[("group.id", "unused"), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut messages = Vec::new();
    while messages.len() < lists.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("a record within 10 s")
            .unwrap();
        messages.push(message.detach());
    }
    messages
}
