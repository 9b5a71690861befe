//! The two Kafka consumers, as two separate services would run them (separate groups).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use livecheck_core::Connectivity;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app::Shared;
use crate::model::{Cached, Delivered, Execution, Order};
use crate::signals::{ORDER_CACHED, ORDER_EXECUTED, ORDER_SENT_TO_DB, ORDER_SENT_TO_KAFKA};

/// Records processed concurrently per consumer.
const IN_FLIGHT: usize = 512;

/// Tells when the consumer has its partitions (the service is ready then); librdkafka's
/// log lines and errors go to `tracing` once, at sensible levels, through LiveCheck's
/// [`Connectivity`].
#[derive(Debug)]
pub struct ReadyContext {
    ready: watch::Sender<bool>,
    connectivity: Connectivity,
}

impl rdkafka::ClientContext for ReadyContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.on_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.connectivity.on_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for ReadyContext {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if matches!(rebalance, rdkafka::consumer::Rebalance::Assign(_)) {
            self.ready.send_replace(true);
        }
    }
}

fn consumer(
    shared: &Shared,
    group: &str,
    topic: &str,
    ready: watch::Sender<bool>,
) -> anyhow::Result<StreamConsumer<ReadyContext>> {
    let group_id = format!("{}{group}", shared.config.group_prefix);
    let fetch_wait = shared.config.fetch_wait.as_millis().max(1).to_string();
    let consumer: StreamConsumer<ReadyContext> = shared
        .config
        .kafka
        .client_config(&[
            ("group.id", &group_id),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "true"),
            ("session.timeout.ms", "6000"),
            ("fetch.wait.max.ms", &fetch_wait),
        ])
        .create_with_context(ReadyContext {
            ready,
            connectivity: Connectivity::new(shared.config.kafka.brokers.clone()),
        })
        .map_err(|e| anyhow::anyhow!("cannot create consumer {group_id}: {e}"))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| anyhow::anyhow!("consumer {group_id} cannot subscribe to {topic}: {e}"))?;
    Ok(consumer)
}

/// Runs `process` for each well-formed order of `topic`, scoped by the record's test
/// context, up to [`IN_FLIGHT`] at a time. Malformed records are counted, logged, skipped.
#[allow(clippy::too_many_arguments)]
fn spawn_loop<F, Fut>(
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    group: &'static str,
    topic: String,
    process: F,
    ready: watch::Sender<bool>,
    paused: fn(&Shared) -> bool,
) -> anyhow::Result<JoinHandle<()>>
where
    F: Fn(Arc<Shared>, Order) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let consumer = consumer(&shared, group, &topic, ready)?;
    let group_id = format!("{}{group}", shared.config.group_prefix);
    // Hops are recorded under the service's name (the consumer group's, unprefixed).
    let service = shared.livecheck.clone().with_service(group);
    let process = Arc::new(process);
    Ok(tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(IN_FLIGHT));
        info!(group, %topic, "consumer started");
        loop {
            let msg = tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                msg = consumer.recv() => msg,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(err) => {
                    warn!(group, error = %err, "consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // A stopped consumer (fault): the record is not handled until it is switched off.
            while paused(&shared) {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            let origin = format!("{}[{}]@{}", msg.topic(), msg.partition(), msg.offset());
            let order: Order = match msg.payload().map(serde_json::from_slice) {
                Some(Ok(order)) => order,
                Some(Err(e)) => {
                    shared
                        .counters
                        .malformed_records
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(group, record = %origin, error = %e, "skipped a malformed order record");
                    continue;
                }
                None => {
                    shared
                        .counters
                        .malformed_records
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(group, record = %origin, "skipped an order record without payload");
                    continue;
                }
            };
            // The record's test context (if any) and the hop; handling the record again
            // (redelivery) sends the same signals again: the runner counts them once.
            let consumed = service.consumed(&group_id, &msg);
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let shared = shared.clone();
            let process = process.clone();
            tokio::spawn(async move {
                consumed.run(process(shared, order)).await;
                drop(permit);
            });
        }
        info!(group, "consumer stopped");
    }))
}

/// The create-order service: store, signal, forward to execution, cache.
pub fn spawn_create_order(
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    // Records produced inside a test carry its context, and the hop is recorded.
    let producer = shared
        .livecheck
        .clone()
        .with_service("create-order")
        .producer(
            shared
                .config
                .kafka
                .producer_config()
                .create_with_context(
                    Connectivity::new(shared.config.kafka.brokers.clone()).context(),
                )
                .map_err(|e| anyhow::anyhow!("cannot create the create-order producer: {e}"))?,
        );
    let topic = shared.config.topics.orders.clone();
    spawn_loop(
        shared,
        stopped,
        "create-order",
        topic,
        move |shared, order| {
            let producer = producer.clone();
            async move {
                shared.store.insert(order.clone());
                shared
                    .counters
                    .orders_stored
                    .fetch_add(1, Ordering::Relaxed);
                ORDER_SENT_TO_DB.send(&order).await;

                let payload = serde_json::to_vec(&order).unwrap_or_default();
                let topic = &shared.config.topics.execution;
                let record = FutureRecord::to(topic).key(&order.id).payload(&payload);
                let sent = if shared.faults.drop_headers() {
                    // As a hop that loses the headers on the way (a proxy, a connector, a
                    // copy): the record is the test's, but arrives without its context.
                    warn!(order_id = %order.id, "fault drop-headers: forwarding without the test headers");
                    let sent = producer
                        .inner()
                        .send(record.headers(OwnedHeaders::new()), Duration::from_secs(10))
                        .await;
                    if let Ok(delivery) = &sent {
                        shared
                            .livecheck
                            .clone()
                            .with_service("create-order")
                            .produced(topic, delivery.partition, delivery.offset);
                    }
                    sent
                } else {
                    producer.send(record, Duration::from_secs(10)).await
                };
                match sent {
                    Ok(delivery) => {
                        ORDER_SENT_TO_KAFKA
                            .send(&Delivered {
                                order_id: order.id.clone(),
                                topic: topic.clone(),
                                partition: delivery.partition,
                                offset: delivery.offset,
                            })
                            .await;
                    }
                    Err((e, _)) => {
                        warn!(order_id = %order.id, error = %e, "could not forward the order to execution")
                    }
                }

                let user_orders = shared.cache.index(&order.user_id, &order.id);
                ORDER_CACHED
                    .send(&Cached {
                        order_id: order.id.clone(),
                        user_id: order.user_id.clone(),
                        user_orders,
                    })
                    .await;
            }
        },
        ready,
        |_| false,
    )
}

/// The execute-order service: executes unless fake, signals; in job mode
/// ([`crate::app::Execution::Job`]) it hands each order to a background job that does.
pub fn spawn_execute_order(
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let topic = shared.config.topics.execution.clone();
    spawn_loop(
        shared,
        stopped,
        "execute-order",
        topic,
        |shared, order| async move {
            match &shared.execution_jobs {
                Some(jobs) => jobs.enqueue(order),
                None => execute(shared, order).await,
            }
        },
        ready,
        |shared| shared.faults.stop_execute_consumer(),
    )
}

/// Executes `order` unless it is fake, and signals `order_executed`.
pub(crate) async fn execute(shared: Arc<Shared>, order: Order) {
    let delay = shared.faults.delay_ms();
    if delay > 0 {
        warn!(order_id = %order.id, delay, "fault delay: holding the execution step");
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if shared.faults.skip_execution() {
        warn!(order_id = %order.id, "fault skip-execution: not executing");
        return;
    }
    if !shared.executed.first_time(&order.id) {
        info!(order_id = %order.id, "order executed already; not executing it again");
        return;
    }
    let times = if shared.faults.execute_twice() {
        warn!(order_id = %order.id, "fault execute-twice: executing the order twice");
        2
    } else {
        1
    };
    for _ in 0..times {
        let execution_id = (!order.fake).then(|| uuid::Uuid::new_v4().to_string());
        if execution_id.is_some() {
            shared
                .counters
                .orders_executed
                .fetch_add(1, Ordering::Relaxed);
        }
        ORDER_EXECUTED
            .send(&Execution {
                order_id: order.id.clone(),
                execution_id,
            })
            .await;
    }
}
