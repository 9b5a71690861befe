//! The service-side handle: one shared producer for tests and signals, plus counters.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::Serialize;
use tracing::{debug, warn};

use crate::connectivity::Connectivity;
use crate::context::{scope_current, Current, Delivery, TestContext};
use crate::control::{ControlOptions, ControlState, ControlStatus};
use crate::counters::{bump, ClientCounters};
use crate::error::Error;
use crate::follower::Follower;
use crate::headers::{self, ContextError};
use crate::polled::Polled;
use crate::signing::SigningKeys;

/// Names of the LiveCheck topics. Tests and signals must have the same partition count
/// (they are co-partitioned by [`TestContext::partition_key`]: the test's route if it has
/// one, else its id); control and heartbeats have one partition each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `TestExecution` records, keyed by [`TestContext::partition_key`].
    pub tests: String,
    /// `SignalEvent` records (signals and hops), keyed by [`TestContext::partition_key`].
    pub signals: String,
    /// `Report` records, keyed by the test's route if it has one, else its id.
    pub reports: String,
    /// [`crate::control::CaseControl`] records, keyed by case: compacted, one partition.
    pub control: String,
    /// [`crate::control::Heartbeat`] records, keyed by service/instance/case: compacted,
    /// one partition.
    pub heartbeats: String,
}

impl Topics {
    /// `{prefix}livecheck-tests`, `{prefix}livecheck-signals`, `{prefix}livecheck-reports`,
    /// `{prefix}livecheck-control`, `{prefix}livecheck-heartbeats`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            tests: format!("{prefix}livecheck-tests"),
            signals: format!("{prefix}livecheck-signals"),
            reports: format!("{prefix}livecheck-reports"),
            control: format!("{prefix}livecheck-control"),
            heartbeats: format!("{prefix}livecheck-heartbeats"),
        }
    }

    /// The changelog of table `name` ([`crate::Table`]): `{prefix}livecheck-table-{name}`,
    /// where the prefix is that of the tests topic (`{tests}.table-{name}` when the tests
    /// topic was named otherwise). Create it compacted (`cleanup.policy=compact`), with as
    /// many partitions as the tests topic.
    pub fn table(&self, name: &str) -> String {
        match self.tests.strip_suffix("livecheck-tests") {
            Some(prefix) => format!("{prefix}livecheck-table-{name}"),
            None => format!("{}.table-{name}", self.tests),
        }
    }

    /// The control and heartbeats topics (compacted, one partition each).
    pub fn settings_topics(&self) -> [&str; 2] {
        [&self.control, &self.heartbeats]
    }

    /// The three co-partitioned names (tests, signals, reports), tests first.
    pub fn all(&self) -> [&str; 3] {
        [&self.tests, &self.signals, &self.reports]
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

/// How to reach Kafka: bootstrap servers plus any librdkafka property (security included).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Extra client properties (`security.protocol`, `sasl.*`, `linger.ms`, ...).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    /// Secret properties (`sasl.password`, ...) show redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &crate::redact::properties(&self.properties))
            .finish()
    }
}

impl KafkaConfig {
    /// Config for `brokers` with no extra properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// Adds a client property.
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// A librdkafka config with the servers and the properties (user properties last, so
    /// they win over `defaults`).
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// Producer settings used everywhere: Java-compatible murmur2 partitioning, short linger.
    pub fn producer_config(&self) -> ClientConfig {
        self.client_config(&[
            ("partitioner", "murmur2_random"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "30000"),
        ])
    }
}

/// Whether the producer refused a record because its local queue is full.
pub(crate) fn is_queue_full(err: &rdkafka::error::KafkaError) -> bool {
    matches!(
        err,
        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
    )
}

/// Counts (and logs) records the broker did not acknowledge; feeds the connectivity.
#[derive(Debug)]
pub(crate) struct DeliveryCounter {
    pub(crate) counters: Arc<ClientCounters>,
    pub(crate) connectivity: Connectivity,
}

impl ClientContext for DeliveryCounter {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.on_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.connectivity.on_error(&error, reason);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if result.is_ok() {
            self.connectivity.mark_reachable();
        }
        if let Err((err, msg)) = result {
            bump(&self.counters.here().delivery_errors);
            warn!(topic = msg.topic(), error = %err, "livecheck record was not delivered");
        }
    }
}

pub(crate) struct Inner {
    topics: Topics,
    kafka: KafkaConfig,
    producer: Polled<DeliveryCounter>,
    pub(crate) counters: Arc<ClientCounters>,
    connectivity: Connectivity,
    control: Arc<ControlState>,
    follow: OnceLock<Follow>,
    /// What this process's consumers read through [`LiveCheck::consume`].
    pub(crate) reading: crate::hop::Reading,
}

/// How the client follows the control topic (set once by
/// [`LiveCheck::follow_control_with`]).
struct Follow {
    /// With the instance name resolved.
    options: ControlOptions,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    /// Stops the follower thread (it ends at its next turn, within a poll).
    fn drop(&mut self) {
        if let Some(follow) = self.follow.get() {
            follow.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl Inner {
    /// Partitions of the signals topic (blocking metadata request).
    pub(crate) fn signals_partitions(&self) -> Result<i32, rdkafka::error::KafkaError> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topics.signals), Duration::from_secs(5))?;
        Ok(metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32))
    }

    /// Publishes a consumer-positions report to each of the `partitions` of the signals
    /// topic (every runner reads some of them).
    pub(crate) fn publish_positions(&self, record: &crate::hop::PositionsRecord, partitions: i32) {
        let payload = match serde_json::to_vec(record) {
            Ok(payload) => payload,
            Err(err) => {
                bump(&self.counters.here().position_errors);
                debug!(error = %err, "positions do not serialize");
                return;
            }
        };
        for partition in 0..partitions {
            let sent = BaseRecord::to(&self.topics.signals)
                .partition(partition)
                .key("livecheck.positions")
                .payload(&payload);
            match self.producer.send(sent) {
                Ok(()) => bump(&self.counters.here().positions_sent),
                Err((err, _)) => {
                    bump(&self.counters.here().position_errors);
                    debug!(partition, error = %err, "positions not enqueued");
                }
            }
        }
    }

    /// Publishes one heartbeat per case this process's triggers announced or decided on.
    fn send_heartbeats(&self) -> Result<usize, Error> {
        let follow = self.follow.get().ok_or_else(|| {
            Error::Config("heartbeats need LiveCheck::follow_control first".into())
        })?;
        let options = &follow.options;
        let beats = self.control.heartbeats(
            &options.service,
            options.instance.as_deref().unwrap_or_default(),
            options.heartbeat_every,
            chrono::Utc::now(),
        );
        let mut sent = 0;
        let mut first_error = None;
        for (key, heartbeat) in beats {
            let payload = match serde_json::to_vec(&heartbeat) {
                Ok(payload) => payload,
                Err(err) => {
                    bump(&self.counters.here().heartbeat_errors);
                    debug!(%key, error = %err, "heartbeat does not serialize");
                    continue;
                }
            };
            let record = BaseRecord::to(&self.topics.heartbeats)
                .key(&key)
                .payload(&payload);
            match self.producer.send(record) {
                Ok(()) => {
                    bump(&self.counters.here().heartbeats_sent);
                    sent += 1;
                }
                Err((err, _)) => {
                    bump(&self.counters.here().heartbeat_errors);
                    debug!(%key, error = %err, "heartbeat not enqueued");
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(Error::Kafka {
                action: "publishing a heartbeat".into(),
                source: err,
            }),
            None => Ok(sent),
        }
    }
}

/// A LiveCheck client: what a service (or a harness) uses to trigger tests, scope work and
/// publish signals. Cheap to clone; create one per process.
///
/// With [`SigningKeys`] ([`LiveCheck::with_signing`]) it signs the contexts it creates and
/// accepts only incoming contexts that are signed with one of its keys and not expired.
/// Without keys every well-formed incoming context is accepted: anyone who can reach the
/// service can then start a test path with the test id of their choice.
#[derive(Clone)]
pub struct LiveCheck {
    pub(crate) inner: Arc<Inner>,
    signing: Option<SigningKeys>,
    service: Option<Arc<str>>,
}

impl std::fmt::Debug for LiveCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCheck")
            .field("brokers", &self.inner.kafka.brokers)
            .field("topics", &self.inner.topics)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

impl LiveCheck {
    /// Creates the client and its producer.
    pub fn new(kafka: KafkaConfig, topics: Topics) -> Result<Self, Error> {
        let counters = Arc::new(ClientCounters::default());
        let connectivity = Connectivity::new(kafka.brokers.clone());
        let producer = Polled::new(
            &kafka.producer_config(),
            DeliveryCounter {
                counters: counters.clone(),
                connectivity: connectivity.clone(),
            },
        )
        .map_err(Error::kafka("creating the LiveCheck producer"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                topics,
                kafka,
                producer,
                counters,
                connectivity,
                control: Arc::default(),
                follow: OnceLock::new(),
                reading: crate::hop::Reading::default(),
            }),
            signing: None,
            service: None,
        })
    }

    /// Follows the control topic as service `service`, with the default
    /// [`ControlOptions`]: see [`LiveCheck::follow_control_with`].
    pub fn follow_control(&self, service: &str) -> Result<(), Error> {
        self.follow_control_with(ControlOptions::new(service))
    }

    /// Starts following the control topic ([`Topics::control`]) in a background thread:
    /// partition 0 is read from the beginning by a consumer of its own (assigned, no group,
    /// no commits), and every trigger used with this client (or a clone) then samples with
    /// the latest valid [`crate::control::CaseControl`] of its case (the highest version
    /// wins; malformed records are counted in `control_malformed` and logged).
    ///
    /// The client *follows* while the last successful fetch of the control partition's high
    /// watermark (one every [`ControlOptions::probe_every`]) is less than
    /// [`ControlOptions::stale_after`] (10 s) old, and it has read the partition up to such
    /// a watermark since it started or last stopped following. Otherwise (broker down,
    /// topic missing, still loading) triggers use their local settings, the gauge
    /// `control_following` is 0, the episode is logged once at warn, and
    /// [`crate::Trigger::effective`] says why ([`crate::control::SettingsSource::Local`]).
    /// A case without a record uses its local settings too (reason
    /// [`crate::control::NO_CONTROL_RECORD`]), which is not an error.
    ///
    /// It also publishes a [`crate::control::Heartbeat`] per case every
    /// [`ControlOptions::heartbeat_every`] (5 s) to [`Topics::heartbeats`]. The thread
    /// ends when the last clone of the client is dropped. A second call is an error, as
    /// are names that are empty or contain `/`.
    pub fn follow_control_with(&self, options: ControlOptions) -> Result<(), Error> {
        let instance = options.check()?;
        if let Some(follow) = self.inner.follow.get() {
            return Err(Error::Config(format!(
                "this client already follows the control topic as service {}",
                follow.options.service
            )));
        }
        let options = options.instance(instance);
        let stop = Arc::new(AtomicBool::new(false));
        let follow = Follow {
            options: options.clone(),
            stop: stop.clone(),
        };
        if self.inner.follow.set(follow).is_err() {
            return Err(Error::Config(
                "this client already follows the control topic".into(),
            ));
        }
        let weak = Arc::downgrade(&self.inner);
        let follower = Follower {
            topic: self.inner.topics.control.clone(),
            options,
            state: self.inner.control.clone(),
            counters: self.inner.counters.clone(),
            stop: stop.clone(),
            heartbeat: Box::new(move || match weak.upgrade() {
                Some(inner) => {
                    // Errors are counted; an outage is the connectivity's to report.
                    let _ = inner.send_heartbeats();
                    true
                }
                None => false,
            }),
        };
        follower
            .spawn(&self.inner.kafka, &self.inner.connectivity)
            .inspect_err(|_| stop.store(true, Ordering::Relaxed))
    }

    /// How this client follows the control topic (the instance name resolved), if it does.
    pub fn control_options(&self) -> Option<&ControlOptions> {
        self.inner.follow.get().map(|f| &f.options)
    }

    /// Whether triggers apply the control topic now, and why not.
    pub fn control_status(&self) -> ControlStatus {
        self.inner.control.status()
    }

    /// Publishes the heartbeats now (the follower does every
    /// [`ControlOptions::heartbeat_every`]); returns how many were enqueued. An error if
    /// the client does not follow the control topic or a heartbeat could not be enqueued.
    pub fn heartbeat_now(&self) -> Result<usize, Error> {
        self.inner.send_heartbeats()
    }

    /// The client's view of the control topic (for triggers).
    pub(crate) fn control(&self) -> &Arc<ControlState> {
        &self.inner.control
    }

    /// This client with signing keys: it signs the contexts it creates and drops incoming
    /// contexts that are unsigned, forged, tampered or expired (counted, logged, and the
    /// request goes on as a non-test request). Clones made before this call keep their own
    /// setting.
    #[must_use]
    pub fn with_signing(mut self, keys: SigningKeys) -> Self {
        self.signing = Some(keys);
        self
    }

    /// Names the service this client speaks for in the hops it records
    /// ([`LiveCheck::consume`], [`LiveCheck::producer`]) and in its consumer-position
    /// reports. Without it: the service name given to [`LiveCheck::follow_control`], else the
    /// program's name. Clones made before this call keep their own name.
    #[must_use]
    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into().into());
        self
    }

    /// The service name hops are recorded under (see [`LiveCheck::with_service`]).
    pub fn service_name(&self) -> &str {
        if let Some(name) = &self.service {
            return name;
        }
        match self.inner.follow.get() {
            Some(follow) => &follow.options.service,
            None => crate::context::program(),
        }
    }

    /// Records this process's consumers read through [`LiveCheck::consume`] without a test
    /// context so far: (group, topic, count).
    pub fn records_without_context(&self) -> Vec<(String, String, u64)> {
        self.inner.reading.without_context()
    }

    /// The signing keys, if any.
    pub fn signing(&self) -> Option<&SigningKeys> {
        self.signing.as_ref()
    }

    /// `context` signed with the current key (any previous signature replaced); unchanged
    /// when the client has no keys.
    #[must_use = "the context scopes the rest of the work; dropping it loses the test"]
    pub fn sign(&self, mut context: TestContext) -> TestContext {
        if let Some(keys) = &self.signing {
            context.signature = Some(keys.sign(&context));
        }
        context
    }

    /// A fresh context for `case` valid for `expires_in`, with `null` arguments, signed when
    /// the client has keys. A harness that gives the test arguments sets them first and
    /// signs after: `client.sign(TestContext::new(case, expires_in).arguments(json))`.
    #[must_use = "the context scopes the rest of the work; dropping it loses the test"]
    pub fn new_context(&self, case: impl Into<String>, expires_in: Duration) -> TestContext {
        self.sign(TestContext::new(case, expires_in))
    }

    /// Checks a context read from a `TestExecution` record: its test id always, and, when the
    /// client has keys, its signature (unsigned, malformed, unknown key id, forged or
    /// tampered are errors). Expiry is not checked here: the runner reports an expired test
    /// as `SKIP`. Counts nothing; the caller counts and logs.
    pub fn verify_context(&self, context: &TestContext) -> Result<(), ContextError> {
        match &self.signing {
            Some(keys) => keys.verify(context),
            None => headers::check_test_id(&context.id),
        }
    }

    /// The topics this client publishes to.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The Kafka settings this client was made with.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.inner.kafka
    }

    /// The client's counters.
    pub fn counters(&self) -> &ClientCounters {
        &self.inner.counters
    }

    /// Broker connectivity as this client (and the runner made with it) sees it.
    pub fn connectivity(&self) -> &Connectivity {
        &self.inner.connectivity
    }

    /// Runs `fut` on behalf of the test `context`: signals sent inside belong to it.
    pub async fn scope<F: Future>(&self, context: TestContext, fut: F) -> F::Output {
        self.scope_arc(Arc::new(context), fut).await
    }

    /// As [`LiveCheck::scope`], with a shared context.
    pub async fn scope_arc<F: Future>(&self, context: Arc<TestContext>, fut: F) -> F::Output {
        let current = Current {
            context,
            client: self.clone(),
            delivery: None,
        };
        scope_current(current, fut).await
    }

    /// Runs `fut` scoped by the context decoded from the headers of the consumed record
    /// `topic[partition]@offset` (or unscoped, as [`LiveCheck::scope_decoded`]). Signals sent
    /// inside get send ids derived from the record: if the record is handled again
    /// (at-least-once redelivery after a crash or a rebalance), the runner counts each step
    /// it sends once, while a step sent twice in one handling counts twice. The ids also
    /// depend on the program's name, so two services handling the same record are told
    /// apart.
    pub async fn scope_consumed<F: Future>(
        &self,
        decoded: Result<Option<TestContext>, ContextError>,
        topic: &str,
        partition: i32,
        offset: i64,
        fut: F,
    ) -> F::Output {
        let origin = format!("{topic}[{partition}]@{offset}");
        match self.accept(decoded, &origin) {
            Some(context) => {
                let current = Current {
                    context: Arc::new(context),
                    client: self.clone(),
                    delivery: Some(Arc::new(Delivery::new(topic, partition, offset))),
                };
                scope_current(current, fut).await
            }
            None => fut.await,
        }
    }

    /// Runs `fut` scoped by the context decoded from incoming headers, or unscoped when there
    /// is none or it was rejected (the rejection is counted and logged).
    pub async fn scope_decoded<F: Future>(
        &self,
        decoded: Result<Option<TestContext>, ContextError>,
        origin: &str,
        fut: F,
    ) -> F::Output {
        match self.accept(decoded, origin) {
            Some(context) => self.scope(context, fut).await,
            None => fut.await,
        }
    }

    /// Returns the context to scope an incoming request with: the decoded one if it is
    /// well-formed and, when the client has keys, validly signed (its arguments included,
    /// [`SigningKeys::verify_carried_at`]) and not expired. A rejected
    /// context is counted (in total and by reason), logged once at warn with `origin`, and
    /// `None` is returned: the request goes on as a non-test request.
    pub fn accept(
        &self,
        decoded: Result<Option<TestContext>, ContextError>,
        origin: &str,
    ) -> Option<TestContext> {
        self.accept_from(decoded, &origin)
    }

    /// As [`LiveCheck::accept`], with an origin formatted only if the context is rejected.
    pub(crate) fn accept_from(
        &self,
        decoded: Result<Option<TestContext>, ContextError>,
        origin: &dyn std::fmt::Display,
    ) -> Option<TestContext> {
        let checked = decoded.and_then(|found| match (found, &self.signing) {
            (Some(context), Some(keys)) => keys
                .verify_carried_at(&context, chrono::Utc::now())
                .map(|()| Some(context)),
            (found, _) => Ok(found),
        });
        match checked {
            Ok(found) => found,
            Err(err) => {
                let counters = &self.inner.counters;
                bump(&counters.here().contexts_rejected);
                bump(counters.rejected_for(&err));
                warn!(%origin, reason = err.reason(), error = %err, "rejected a test context; handling the request as a non-test request");
                None
            }
        }
    }

    /// Publishes `TestExecution` for `context` to the tests topic (the runner starts its run),
    /// keyed by [`TestContext::partition_key`]. A route that is not 1 to
    /// [`headers::MAX_ROUTE_LEN`] bytes of visible ASCII is an error (the record would not
    /// decode).
    pub fn register_test(&self, context: &TestContext) -> Result<(), Error> {
        if let Some(route) = &context.route {
            headers::check_route(route).map_err(|e| Error::Config(e.to_string()))?;
        }
        let payload = serde_json::to_vec(context)
            .map_err(|e| Error::Config(format!("test arguments do not serialize: {e}")))?;
        self.publish(
            &self.inner.topics.tests,
            context.partition_key(),
            &payload,
            None,
        )
        .map_err(Error::kafka(format!("publishing test {}", context.id)))?;
        bump(&self.inner.counters.here().tests_triggered);
        debug!(test_id = %context.id, case = %context.case, "test registered");
        Ok(())
    }

    /// Enqueues a record keyed by `key`, once: a full local queue is refused at once
    /// (`QueueFull`), never waited out on the caller's thread. Delivery failures are counted
    /// by the producer.
    pub(crate) fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        self.inner.producer.send(record).map_err(|(err, _)| err)
    }

    /// Enqueues a table changelog record (`None`: a tombstone), waiting asynchronously while
    /// the local queue is full (up to 5 s).
    pub(crate) async fn publish_table_record(
        &self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut record = BaseRecord::<str, [u8]>::to(topic).key(key);
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            match self.inner.producer.send(record).map_err(|(err, _)| err) {
                Err(err) if is_queue_full(&err) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                result => return result,
            }
        }
    }

    /// As [`LiveCheck::publish`], waiting asynchronously (up to `wait`, with back-off) while
    /// the local queue is full: back-pressure that never blocks an async worker.
    pub(crate) async fn publish_waiting(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        wait: Duration,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.publish(topic, key, payload, None) {
                Err(err) if is_queue_full(&err) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }

    /// Serializes `value` as JSON and publishes it keyed by `key` (e.g. a suite-state
    /// record on the reports topic). Delivery failures are counted.
    pub fn publish_json<T: Serialize>(
        &self,
        topic: &str,
        key: &str,
        value: &T,
    ) -> Result<(), String> {
        let payload = serde_json::to_vec(value).map_err(|e| format!("does not serialize: {e}"))?;
        self.publish(topic, key, &payload, None)
            .map_err(|e| format!("could not be enqueued: {e}"))
    }

    /// Looks up the tests and signals topics through the client's producer now, which also
    /// connects it, so that the first test and signals a service sends after it starts are
    /// not held while that happens: librdkafka looks a topic up on its first record (and
    /// may hold a new client's first request up to 50 ms for its connection), up to about
    /// 100 ms for the first records, measured on the embedded broker. Optional: without it
    /// the first records wait that once, and are sent as always.
    ///
    /// Waits up to `timeout` for each of the two topics when no broker answers: spawn it to
    /// keep a service's start from waiting. An error (no broker answering in time; a topic
    /// that does not exist, where the broker does not create it, or may not be read)
    /// changes nothing else: the client goes on as usual. Dropped before it ends, the
    /// look-up still ends on its own thread (within twice `timeout`), holding the client's
    /// producer until then.
    pub async fn connect(&self, timeout: Duration) -> Result<(), Error> {
        let inner = self.inner.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        // A thread of its own, not the runtime's blocking pool: a runtime shutting down
        // while no broker answers does not wait for it.
        std::thread::Builder::new()
            .name("livecheck-connect".into())
            .spawn(move || {
                let looked_up = [&inner.topics.tests, &inner.topics.signals]
                    .into_iter()
                    .try_for_each(|topic| look_up(&inner, topic, timeout));
                // The client is let go here, not by whoever awaits the result: its last
                // reference closes the producer.
                drop(inner);
                let _ = done.send(looked_up);
            })
            .map_err(|e| Error::Thread(format!("cannot start a thread to connect: {e}")))?;
        result.await.unwrap_or_else(|_| {
            Err(Error::Thread(
                "the thread looking up the tests and signals topics ended without a result".into(),
            ))
        })
    }

    /// Waits until every enqueued record is acknowledged (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.inner
            .producer
            .flush(timeout)
            .map_err(Error::kafka("flushing the LiveCheck producer"))
    }
}

/// Looks `topic` up through the client's producer (see [`LiveCheck::connect`]).
fn look_up(inner: &Inner, topic: &str, timeout: Duration) -> Result<(), Error> {
    let action = || {
        format!(
            "looking up topic {topic} through brokers {}",
            inner.kafka.brokers
        )
    };
    let metadata = inner
        .producer
        .client()
        .fetch_metadata(Some(topic), timeout)
        .map_err(Error::kafka(action()))?;
    match metadata.topics().first().and_then(|t| t.error()) {
        None => Ok(()),
        Some(code) => Err(Error::Kafka {
            action: action(),
            source: rdkafka::error::KafkaError::MetadataFetch(code.into()),
        }),
    }
}
