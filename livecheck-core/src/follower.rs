//! The control topic's follower: a thread with an assigned consumer (partition 0 from the
//! beginning, no group, no commits) that keeps a client's [`ControlState`] up to date,
//! decides whether the client follows ([`FollowState`]) and sends its heartbeats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, info, warn};

use crate::client::KafkaConfig;
use crate::connectivity::{Connectivity, ConnectivityContext};
use crate::control::{Applied, ControlOptions, ControlState, FollowState, Transition};
use crate::counters::{bump, ClientCounters};
use crate::error::Error;

/// How long one poll of the consumer waits: the loop's period when nothing comes.
const POLL: Duration = Duration::from_millis(100);

/// What the follower thread needs.
pub(crate) struct Follower {
    pub(crate) topic: String,
    pub(crate) options: ControlOptions,
    pub(crate) state: Arc<ControlState>,
    pub(crate) counters: Arc<ClientCounters>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Sends the heartbeats; `false` once the client is gone (the thread then ends).
    pub(crate) heartbeat: Box<dyn FnMut() -> bool + Send>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("topic", &self.topic)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Creates the consumer and starts the thread. Only a bad configuration fails here: an
    /// unreachable broker or a missing topic are what the thread waits out.
    pub(crate) fn spawn(
        self,
        kafka: &KafkaConfig,
        connectivity: &Connectivity,
    ) -> Result<(), Error> {
        // rust-rdkafka wants a group id even to assign; this one never joins or commits.
        let group = format!("livecheck-control-{}", uuid::Uuid::new_v4());
        let consumer: BaseConsumer<ConnectivityContext> = kafka
            .client_config(&[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "100"),
                ("topic.metadata.refresh.interval.ms", "5000"),
                // Back within a couple of seconds of the broker's return (default: up to 10 s).
                ("reconnect.backoff.max.ms", "2000"),
            ])
            .create_with_context(connectivity.context())
            .map_err(Error::kafka("creating the control topic's consumer"))?;
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(&self.topic, 0, Offset::Beginning)
            .map_err(Error::kafka("assigning the control topic"))?;
        consumer
            .assign(&partitions)
            .map_err(Error::kafka("assigning the control topic"))?;
        std::thread::Builder::new()
            .name("livecheck-control".into())
            .spawn(move || self.run(consumer))
            .map_err(|e| Error::Config(format!("cannot start the control thread: {e}")))?;
        Ok(())
    }

    fn run(mut self, consumer: BaseConsumer<ConnectivityContext>) {
        let topic = self.topic.clone();
        let probe_every = self.options.probe_every;
        let probe_timeout = probe_every
            .max(Duration::from_secs(1))
            .min(self.options.stale_after / 2);
        let heartbeat_every = self.options.heartbeat_every;
        let mut follow = FollowState::new(&topic, self.options.stale_after, Instant::now());
        self.state
            .set_following(false, &follow.reason(Instant::now()));
        let mut next_probe = Instant::now();
        let mut next_beat = Instant::now() + heartbeat_every;
        let mut warned_partitions = false;
        debug!(%topic, service = %self.options.service, "following the control topic");
        while !self.stop.load(Ordering::Relaxed) {
            match consumer.poll(POLL) {
                Some(Ok(message)) => {
                    follow.on_record(message.offset());
                    self.apply(&message, follow.following());
                }
                Some(Err(err)) => {
                    debug!(%topic, error = %err, "reading the control topic failed");
                    follow.on_error(describe(&err, &topic));
                }
                None => {}
            }
            if Instant::now() >= next_probe {
                match consumer.fetch_watermarks(&topic, 0, probe_timeout) {
                    Ok((_, high)) => {
                        follow.on_probe(high, Instant::now());
                        if !warned_partitions {
                            warned_partitions = true;
                            warn_if_partitioned(&consumer, &topic, probe_timeout);
                        }
                    }
                    Err(err) => {
                        debug!(%topic, error = %err, "fetching the control topic's high watermark failed");
                        follow.on_error(describe(&err, &topic));
                    }
                }
                next_probe = Instant::now() + probe_every;
            }
            let now = Instant::now();
            match follow.evaluate(now) {
                Some(Transition::Following { again }) => {
                    let status = self.state.status();
                    if again {
                        info!(%topic, cases = status.cases, "following the control topic again: triggers apply its settings");
                    } else {
                        info!(%topic, cases = status.cases, "following the control topic: triggers apply its settings");
                    }
                }
                Some(Transition::NotFollowing(reason)) => {
                    bump(&self.counters.here().control_episodes);
                    warn!(%topic, %reason, "not following the control topic: triggers use their local settings until it can be read again");
                }
                None => {}
            }
            let following = follow.following();
            if following {
                self.state.set_following(true, "");
            } else {
                self.state.set_following(false, &follow.reason(now));
            }
            self.counters
                .gauges()
                .control_following
                .store(u64::from(following), Ordering::Relaxed);
            if now >= next_beat {
                if !(self.heartbeat)() {
                    break;
                }
                next_beat = now + heartbeat_every;
            }
        }
        self.counters
            .gauges()
            .control_following
            .store(0, Ordering::Relaxed);
        debug!(%topic, "stopped following the control topic");
    }

    /// Applies a record: counted, and logged (at info once loaded).
    fn apply<M: Message>(&self, message: &M, loaded: bool) {
        let (topic, offset) = (message.topic(), message.offset());
        match self.state.apply(message.key(), message.payload()) {
            Applied::Changed(control) => {
                bump(&self.counters.here().control_records);
                if loaded {
                    info!(
                        case = %control.case, probability = control.probability,
                        active = control.active, version = control.version,
                        changed_by = %control.changed_by,
                        "control topic: new settings for the case"
                    );
                } else {
                    debug!(case = %control.case, version = control.version, "control topic: settings loaded");
                }
            }
            Applied::Removed(was_held) => {
                bump(&self.counters.here().control_records);
                if was_held {
                    info!(%topic, offset, key = ?message.key().map(String::from_utf8_lossy), "control topic: the case's record was deleted; its triggers use their local settings");
                }
            }
            Applied::Stale { held, version } => {
                bump(&self.counters.here().control_ignored);
                debug!(%topic, offset, held, version, "control record ignored: not newer than the settings held");
            }
            Applied::Malformed(err) => {
                bump(&self.counters.here().control_malformed);
                warn!(%topic, partition = message.partition(), offset, error = %err, "malformed control record ignored");
            }
        }
    }
}

/// A reader's account of a client error.
fn describe(err: &KafkaError, topic: &str) -> String {
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition,
        ) => {
            format!("the topic {topic} does not exist")
        }
        Some(RDKafkaErrorCode::AllBrokersDown) => "no broker can be reached".to_owned(),
        Some(RDKafkaErrorCode::OperationTimedOut) => "the broker did not answer in time".to_owned(),
        _ => err.to_string(),
    }
}

/// Warns when the control topic has more than one partition: only partition 0 is read.
fn warn_if_partitioned(
    consumer: &BaseConsumer<ConnectivityContext>,
    topic: &str,
    timeout: Duration,
) {
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
        return;
    };
    if let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) {
        let partitions = found.partitions().len();
        if partitions > 1 {
            warn!(%topic, partitions, "the control topic has more than one partition: only partition 0 is read (create it with one)");
        }
    }
}
