//! Producers whose delivery reports a thread of their own serves, as rdkafka's
//! `ThreadedProducer` (and the `FutureProducer` built on it) does, without their busy wait.
//!
//! rdkafka's `BaseProducer::poll(timeout)` polls until its deadline, each wait a whole number
//! of milliseconds rounded down. A `ThreadedProducer` polls 100 ms at a time, so each of its
//! polls ended in up to a millisecond of polling without waiting: 0.9 % of a core per idle
//! producer, measured, and every process here has several (an instrumented service's
//! client, the runner's reports, its tables, the live service's control). [`Polled`] polls
//! [`POLL_SLICE`] at a time, a whole number of milliseconds and 20 µs: the last wait ends past
//! its deadline (or leaves at most those 20 µs to poll without waiting), and an idle producer
//! does next to nothing between two waits (0 ticks of CPU in 5 s for 4 idle producers,
//! against 15–18 for 4 `ThreadedProducer`s). While delivery reports come,
//! a wait that one interrupts leaves a fraction of a millisecond for the next, which may
//! still end in up to a millisecond of polling per slice; a slice of 100 ms keeps that
//! to about 1 % of a core at worst, and keeps dropping the producer as quick as a
//! `ThreadedProducer`'s (its thread is joined within a slice).

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Message, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use crate::connectivity::ConnectivityContext;

/// How long each poll of a [`Polled`] producer's thread lasts: 100 ms and 20 µs (see the
/// module's doc for why not a whole number of milliseconds).
pub const POLL_SLICE: Duration = Duration::from_micros(100_020);

/// A producer whose delivery reports (and errors, and log lines) a thread of its own serves
/// ([`POLL_SLICE`] at a time): a `BaseProducer` to send with, through `Deref`. Dropping it
/// stops and joins the thread, then drops the producer (which purges what it still holds:
/// flush first).
pub struct Polled<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl<C: ProducerContext + 'static> Polled<C> {
    /// Creates the producer from `config` with `context`, and its thread.
    pub fn new(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = std::thread::Builder::new()
            .name("kafka-acks".into())
            .spawn({
                let (producer, stop) = (producer.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL_SLICE);
                    }
                }
            })
            .map_err(|e| {
                KafkaError::ClientCreation(format!("starting the producer's thread: {e}"))
            })?;
        Ok(Self {
            producer,
            stop,
            poller: Some(poller),
        })
    }
}

impl<C: ProducerContext + 'static> std::fmt::Debug for Polled<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Polled")
            .field("in_flight", &self.producer.in_flight_count())
            .finish_non_exhaustive()
    }
}

impl<C: ProducerContext + 'static> Deref for Polled<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(poller) = self.poller.take() else {
            return;
        };
        // Dropped by its own thread (a context that held the producer's owner): the thread
        // ends by itself after this slice.
        if poller.thread().id() == std::thread::current().id() {
            return;
        }
        if poller.join().is_err() {
            tracing::error!("a producer's delivery thread panicked: the delivery reports after the panic were not served");
        }
    }
}

/// Where a record landed (partition, offset), or why it did not.
pub type Ack = Result<(i32, i64), KafkaError>;

/// A record's delivery report, to await: `Err` when the producer went before it came.
pub type Acked = oneshot::Receiver<Ack>;

/// A producer context that hands each record's delivery report to whoever sent it
/// ([`Polled::send_acked`]), and feeds a [`crate::Connectivity`] with the client's errors
/// and log lines.
#[derive(Debug, Clone)]
pub struct AckContext(pub ConnectivityContext);

impl ClientContext for AckContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<oneshot::Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, sender: Self::DeliveryOpaque) {
        let ack = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        // The sender's receiver may have been dropped: nobody waits for this one.
        let _ = sender.send(ack);
    }
}

impl Polled<AckContext> {
    /// Enqueues `record` and gives its delivery report to await; a record the producer
    /// refuses at once (a full queue, an unknown partition, ...) is an error.
    pub fn send_acked<K, P>(&self, record: BaseRecord<'_, K, P>) -> Result<Acked, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (sender, receiver) = oneshot::channel();
        // Every field named: one that rdkafka adds must be carried over here too.
        let BaseRecord {
            topic,
            partition,
            payload,
            key,
            timestamp,
            headers,
            delivery_opaque: (),
        } = record;
        let acked = BaseRecord {
            topic,
            partition,
            payload,
            key,
            timestamp,
            headers,
            delivery_opaque: Box::new(sender),
        };
        self.send(acked)
            .map(|()| receiver)
            .map_err(|(error, _)| error)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;
    use crate::connectivity::Connectivity;
    use crate::embedded::EmbeddedBroker;

    fn producer(broker: &EmbeddedBroker) -> Polled<AckContext> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", broker.bootstrap_servers());
        let context = AckContext(Connectivity::new(broker.bootstrap_servers()).context());
        Polled::new(&config, context).unwrap()
    }

    #[tokio::test]
    async fn a_record_sent_is_acknowledged_with_where_it_landed() {
        let broker = EmbeddedBroker::start().unwrap();
        broker.create_topic("polled", 2).unwrap();
        let producer = producer(&broker);
        let mut offsets = Vec::new();
        for i in 0..3 {
            let acked = producer
                .send_acked(
                    BaseRecord::to("polled")
                        .partition(1)
                        .key("k")
                        .payload(&format!("v{i}")),
                )
                .unwrap();
            offsets.push(acked.await.unwrap().unwrap());
        }
        assert_eq!(offsets, vec![(1, 0), (1, 1), (1, 2)]);
    }

    /// The error a record for `partition` of a topic of one partition is acknowledged
    /// with; when `dropped`, the brokers are down and the producer is dropped right after
    /// the send.
    async fn refusal(partition: i32, dropped: bool) -> KafkaError {
        let broker = EmbeddedBroker::start().unwrap();
        broker.create_topic("polled", 1).unwrap();
        broker.set_brokers_down(dropped).unwrap();
        let producer = producer(&broker);
        let record = BaseRecord::<str, str>::to("polled")
            .partition(partition)
            .payload("x");
        let acked = producer.send_acked(record).unwrap();
        if dropped {
            drop(producer);
        }
        acked.await.unwrap().unwrap_err()
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_placed_is_acknowledged_with_the_error() {
        // Partition 7 does not exist. A new producer has no metadata yet: the record waits
        // for it, and is then refused by the client with the reason.
        let error = refusal(7, false).await;
        assert_eq!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownPartition),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_record_in_flight_when_it_is_dropped_is_acknowledged_with_the_error() {
        // Purged by the producer's drop, and told so: not left waiting.
        let error = refusal(0, true).await;
        assert!(
            matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
            ),
            "{error}"
        );
    }

    #[test]
    fn dropping_it_stops_its_thread() {
        let broker = EmbeddedBroker::start().unwrap();
        let polled = producer(&broker);
        let shared = polled.producer.clone();
        assert_eq!(
            Arc::strong_count(&shared),
            3,
            "this, the handle and its thread"
        );
        drop(polled);
        // The thread has ended and dropped its handle on the producer.
        assert_eq!(Arc::strong_count(&shared), 1);
    }
}
