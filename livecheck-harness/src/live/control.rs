//! Central control: the `livecheck` service publishes each case's settings to the control
//! topic and follows it back, so that every service and every `livecheck` instance applies
//! the same probability and active flag.
//!
//! **The control topic is the source of truth** (compacted, one partition, keyed by case;
//! see [`livecheck_core::control`]). On start an instance reads it to its end, like a
//! changelog, then publishes for each case only what its configuration changed; after that
//! it keeps following it (its runner skips the tests of a case the topic made inactive, its
//! page shows what is published).
//!
//! **Which wins on a restart: the file or the API?** Every record carries, in its
//! [`CONFIG_HEADER`] header, the case's settings as the configuration (compiled case,
//! profile, flags) gave them when the record was made. On start and on reload, setting by
//! setting, the configuration wins only where it differs from that remembered
//! configuration, i.e. where the file changed since: a probability set through the API
//! survives restarts until someone edits that case's probability in `livecheck.toml`
//! (changing its `active` flag leaves the API's probability alone). A record without the
//! header (made by another tool) is taken as changed by nobody's file: the configuration
//! wins.
//!
//! **Several instances of a group** all do this on start, each after reading the topic to
//! its end: the second one finds the first one's record and publishes nothing; two that
//! start at the same moment publish the same values, and the higher version wins (every
//! reader applies a record whose version is at least the one it holds: on equal versions
//! the later record in the partition wins, the same for every reader). A reload (SIGHUP or
//! a change of the file) publishes from the instance that reloads. Roll-outs are driven by
//! the group's voice only (the owner of the tests topic's partition 0).
//!
//! Versions are milliseconds since the epoch, raised to one more than the case's latest
//! version when the clock is not past it: strictly increasing per case.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::connectivity::ConnectivityContext;
use livecheck_core::control::{CaseControl, SamplingName};
use livecheck_core::polled::{AckContext, Polled};
use livecheck_core::Connectivity;
use livecheck_core::{Case, KafkaConfig, Report, Verdict};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::config::LiveConfig;
use super::rollout::{percent, Position, RolloutPlan, RolloutState, StepCounts, StepTally};

/// Header of a control record: the case's settings as the configuration gave them when the
/// record was made (JSON [`ConfigSettings`]). Decides, on the next start or reload, whether
/// the file changed since.
pub const CONFIG_HEADER: &str = "livecheck-config";
/// `changed_by` of a change made by a roll-out plan.
pub const BY_ROLLOUT: &str = "rollout";
/// `changed_by` of a change made through the API (`api:<actor>` with an actor).
pub const BY_API: &str = "api";
/// How long a publication may take to be acknowledged by the broker.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A case's settings as the configuration gives them: the compiled case overridden by the
/// profile and the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSettings {
    /// Probability (the first step of the roll-out plan, if there is one).
    pub probability: f64,
    /// Active flag.
    pub active: bool,
    /// How triggers sample.
    pub sampling: SamplingName,
    /// How long a test is worth running, seconds.
    pub test_expires_secs: Option<f64>,
    /// The roll-out plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlan>,
}

impl ConfigSettings {
    /// The settings of `case` (already overridden by the configuration) with its plan.
    pub fn of(case: &Case, rollout: Option<&RolloutPlan>) -> Self {
        let s = case.settings();
        Self {
            probability: rollout
                .and_then(|p| p.steps.first().copied())
                .unwrap_or(s.probability),
            active: s.active,
            sampling: s.sampling.into(),
            test_expires_secs: Some(s.test_expires.as_secs_f64()),
            rollout: rollout.cloned(),
        }
    }
}

/// The cases of the check files with the configuration's overrides applied (probability,
/// active, sampling, test expiry; a roll-out's first step as the probability). A setting
/// for a case the check files do not define is an error.
pub(crate) fn apply_config(config: &LiveConfig, cases: Vec<Case>) -> Result<Vec<Case>, String> {
    let names: Vec<String> = cases.iter().map(|c| c.name().to_owned()).collect();
    let named = config
        .probabilities
        .keys()
        .chain(config.active.keys())
        .chain(config.sampling.keys())
        .chain(config.test_expires.keys())
        .chain(config.rollouts.keys());
    for name in named {
        if !names.contains(name) {
            return Err(format!(
                "settings name case {name}, which the check files do not define (cases: {})",
                names.join(", ")
            ));
        }
    }
    Ok(cases
        .into_iter()
        .map(|mut case| {
            let name = case.name().to_owned();
            if let Some(p) = config.probabilities.get(&name) {
                case = case.probability(*p);
            }
            if let Some(p) = config.rollouts.get(&name).and_then(|r| r.steps.first()) {
                case = case.probability(*p);
            }
            if let Some(a) = config.active.get(&name) {
                case = case.active(*a);
            }
            if let Some(s) = config.sampling.get(&name) {
                case = case.sampling((*s).into());
            }
            if let Some(d) = config.test_expires.get(&name) {
                case = case.test_expires(*d);
            }
            case
        })
        .collect())
}

/// Every case's [`ConfigSettings`] under `config`.
pub(crate) fn config_settings(
    config: &LiveConfig,
    cases: &[Case],
) -> Result<BTreeMap<String, ConfigSettings>, String> {
    Ok(apply_config(config, cases.to_vec())?
        .iter()
        .map(|c| {
            (
                c.name().to_owned(),
                ConfigSettings::of(c, config.rollouts.get(c.name())),
            )
        })
        .collect())
}

/// What a control record says, without its version and authorship.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// Probability.
    pub probability: f64,
    /// Active flag.
    pub active: bool,
    /// Sampling.
    pub sampling: SamplingName,
    /// Test expiry, seconds.
    pub test_expires_secs: Option<f64>,
    /// The roll-out position ([`Position`] as JSON).
    pub rollout: Option<serde_json::Value>,
}

impl Values {
    /// The values of a record.
    pub fn of(control: &CaseControl) -> Self {
        Self {
            probability: control.probability,
            active: control.active,
            sampling: control.sampling,
            test_expires_secs: control.test_expires_secs,
            rollout: control.rollout.clone(),
        }
    }

    /// What the configuration gives, a roll-out starting at its first step `now`.
    pub fn from_config(config: &ConfigSettings, now: DateTime<Utc>) -> Self {
        Self {
            probability: config.probability,
            active: config.active,
            sampling: config.sampling,
            test_expires_secs: config.test_expires_secs,
            rollout: config.rollout.as_ref().map(|p| p.start(now).to_json()),
        }
    }

    /// `probability 0.5 → 0.01, active true → false` (what differs from `before`).
    pub fn describe_change(&self, before: Option<&Values>) -> String {
        let Some(b) = before else {
            return format!(
                "probability {}, active {}, sampling {:?}, test_expires {}{}",
                self.probability,
                self.active,
                self.sampling,
                self.test_expires_secs
                    .map_or("the trigger's".to_owned(), |s| format!("{s} s")),
                rollout_summary(self.rollout.as_ref())
                    .map_or(String::new(), |r| format!(", rollout {r}"))
            );
        };
        let mut parts = Vec::new();
        if b.probability != self.probability {
            parts.push(format!(
                "probability {} → {}",
                b.probability, self.probability
            ));
        }
        if b.active != self.active {
            parts.push(format!("active {} → {}", b.active, self.active));
        }
        if b.sampling != self.sampling {
            parts.push(format!("sampling {:?} → {:?}", b.sampling, self.sampling));
        }
        if b.test_expires_secs != self.test_expires_secs {
            parts.push(format!(
                "test_expires {:?} → {:?} s",
                b.test_expires_secs, self.test_expires_secs
            ));
        }
        if b.rollout != self.rollout {
            parts.push(format!(
                "rollout {} → {}",
                rollout_summary(b.rollout.as_ref()).unwrap_or_else(|| "none".into()),
                rollout_summary(self.rollout.as_ref()).unwrap_or_else(|| "none".into())
            ));
        }
        if parts.is_empty() {
            "no value changed (the configuration it was made with did)".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

fn rollout_summary(rollout: Option<&serde_json::Value>) -> Option<String> {
    let p = Position::from_json(rollout?)?;
    Some(format!(
        "step {}/{} ({}) {}",
        p.step + 1,
        p.plan.steps.len(),
        percent(p.probability()),
        p.state.as_str()
    ))
}

/// The latest control record of a case, as read back from the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The record.
    pub control: CaseControl,
    /// The configuration it was made with ([`CONFIG_HEADER`]; `None`: not said).
    pub config: Option<ConfigSettings>,
}

/// What to publish for a case so that the topic says what the configuration says, where
/// the configuration changed since `latest` was made (see the [module docs](self)).
/// `None`: nothing to publish.
pub fn reconcile(
    config: &ConfigSettings,
    latest: Option<&Published>,
    now: DateTime<Utc>,
) -> Option<Values> {
    let Some(latest) = latest else {
        return Some(Values::from_config(config, now));
    };
    let was = latest.config.as_ref();
    let current = Values::of(&latest.control);
    let file_changed = |same: &dyn Fn(&ConfigSettings) -> bool| was.is_none_or(|w| !same(w));
    let mut next = current.clone();
    // Probability and roll-out go together: a plan decides the probability.
    let plan_changed = file_changed(&|w| w.rollout == config.rollout);
    match &config.rollout {
        Some(plan) => {
            let running_this_plan = current
                .rollout
                .as_ref()
                .and_then(Position::from_json)
                .is_some_and(|p| &p.plan == plan);
            if plan_changed || !running_this_plan {
                let position = plan.start(now);
                next.probability = position.probability();
                next.rollout = Some(position.to_json());
            }
        }
        None => {
            if plan_changed || file_changed(&|w| w.probability == config.probability) {
                next.probability = config.probability;
                next.rollout = None;
            }
        }
    }
    if file_changed(&|w| w.active == config.active) {
        next.active = config.active;
    }
    if file_changed(&|w| w.sampling == config.sampling) {
        next.sampling = config.sampling;
    }
    if file_changed(&|w| w.test_expires_secs == config.test_expires_secs) {
        next.test_expires_secs = config.test_expires_secs;
    }
    (next != current || was != Some(config)).then_some(next)
}

/// The control topic as this instance has read it: the latest record per case.
#[derive(Debug)]
pub struct ControlView {
    latest: Mutex<HashMap<String, Published>>,
    caught_up: watch::Sender<bool>,
    changes: watch::Sender<u64>,
    problem: super::fleet::Problem,
}

impl Default for ControlView {
    fn default() -> Self {
        Self {
            latest: Mutex::new(HashMap::new()),
            caught_up: watch::Sender::new(false),
            changes: watch::Sender::new(0),
            problem: super::fleet::Problem::default(),
        }
    }
}

impl ControlView {
    /// Takes a record read from the topic: it replaces the case's record unless that one
    /// has a higher version. Returns whether it did.
    pub fn apply(&self, control: CaseControl, config: Option<ConfigSettings>) -> bool {
        let applied = {
            let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            match latest.get(&control.case) {
                Some(p) if p.control.version > control.version => false,
                _ => {
                    latest.insert(control.case.clone(), Published { control, config });
                    true
                }
            }
        };
        if applied {
            self.changes.send_modify(|n| *n += 1);
        }
        applied
    }

    /// The latest record of `case`.
    pub fn get(&self, case: &str) -> Option<Published> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(case)
            .cloned()
    }

    /// Whether the topic was read to its end once (what was published before is known).
    pub fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// Marks the topic read to its end.
    pub fn set_caught_up(&self) {
        self.caught_up.send_replace(true);
    }

    /// Waits (up to `timeout`) until the topic was read to its end.
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        let mut rx = self.caught_up.subscribe();
        let caught_up = tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok();
        caught_up
    }

    /// Waits (up to `timeout`) until the record of `case` has at least `version`.
    pub async fn wait_version(&self, case: &str, version: u64, timeout: Duration) -> bool {
        let mut rx = self.changes.subscribe();
        let has = || self.get(case).is_some_and(|p| p.control.version >= version);
        tokio::time::timeout(timeout, async {
            while !has() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
            && has()
    }

    /// Why the topic cannot be read now (`None`: it can).
    pub fn problem(&self) -> Option<String> {
        self.problem.get()
    }

    /// Sets why the topic cannot be read (`None`: it can again).
    pub fn set_problem(&self, problem: Option<String>) {
        self.problem.set(problem);
    }
}

/// Why a change was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The topic was not read to its end yet: what is published is not known.
    #[error("the control topic {0} has not been read to its end yet (is it reachable?); nothing was changed, try again")]
    NotCaughtUp(String),
    /// The broker did not acknowledge the record.
    #[error("the control record for case {case} was not acknowledged by Kafka within {timeout:?}: {reason}; nothing was changed")]
    NotDelivered {
        /// The case.
        case: String,
        /// The broker's answer, or a timeout.
        reason: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The suite has no such case.
    #[error("no case named {0:?}")]
    UnknownCase(String),
    /// The record does not serialize (a bug).
    #[error("the control record for case {0} does not serialize: {1}")]
    Serialize(String, String),
}

/// Publishes control records and follows the control topic back.
pub struct Control {
    view: Arc<ControlView>,
    producer: Polled<AckContext>,
    topic: String,
    /// The configuration's settings per case (replaced on reload).
    config: RwLock<BTreeMap<String, ConfigSettings>>,
    /// Who the configuration's changes are by (`livecheck.toml`, ...).
    origin: String,
    /// The highest version this instance published per case (before it is read back).
    issued: Mutex<HashMap<String, u64>>,
    /// One publication at a time: versions and read-backs stay in order.
    publishing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("topic", &self.topic)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The result of a change asked for through the API.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The record now published (the latest one when nothing changed).
    pub published: CaseControl,
    /// Whether a record was published (`false`: the values were already those).
    pub changed: bool,
    /// Whether this instance read it back from the topic before answering.
    pub read_back: bool,
}

impl Control {
    /// A publisher to `topic` for the cases of `config` (`origin`: who the configuration's
    /// changes are by).
    pub fn new(
        kafka: &KafkaConfig,
        topic: String,
        view: Arc<ControlView>,
        config: BTreeMap<String, ConfigSettings>,
        origin: String,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = Polled::new(
            &kafka.client_config(&[
                ("linger.ms", "0"),
                (
                    "message.timeout.ms",
                    &PUBLISH_TIMEOUT.as_millis().to_string(),
                ),
            ]),
            AckContext(Connectivity::new(kafka.brokers.clone()).context()),
        )?;
        Ok(Self {
            view,
            producer,
            topic,
            config: RwLock::new(config),
            origin,
            issued: Mutex::new(HashMap::new()),
            publishing: tokio::sync::Mutex::new(()),
        })
    }

    /// The view of the topic.
    pub fn view(&self) -> &Arc<ControlView> {
        &self.view
    }

    /// The control topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The configuration's settings of `case`.
    pub fn config_of(&self, case: &str) -> Option<ConfigSettings> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(case)
            .cloned()
    }

    /// Every case's configuration settings.
    pub fn config(&self) -> BTreeMap<String, ConfigSettings> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `case` is one of the suite's.
    pub fn knows(&self, case: &str) -> bool {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(case)
    }

    /// Publishes for every case what the configuration changed (see [`reconcile`]); after
    /// a reload, with the new configuration. Returns how many records were published.
    pub async fn publish_config(&self, new: Option<BTreeMap<String, ConfigSettings>>) -> usize {
        if let Some(new) = new {
            *self.config.write().unwrap_or_else(|p| p.into_inner()) = new;
        }
        let mut published = 0;
        for (case, config) in self.config() {
            let _guard = self.publishing.lock().await;
            let latest = self.view.get(&case);
            let Some(values) = reconcile(&config, latest.as_ref(), Utc::now()) else {
                continue;
            };
            match self.send(&case, values, &config, &self.origin).await {
                Ok(_) => published += 1,
                Err(err) => {
                    error!(case, error = %err, "the configuration's settings were not published")
                }
            }
        }
        published
    }

    /// Sets the probability and/or active flag of `case` (an API change by `by`); a
    /// running roll-out of the case stops when the probability is set. Waits (briefly)
    /// until the record is read back.
    pub async fn set(
        &self,
        case: &str,
        probability: Option<f64>,
        active: Option<bool>,
        by: &str,
    ) -> Result<Change, PublishError> {
        if !self.view.is_caught_up() {
            return Err(PublishError::NotCaughtUp(self.topic.clone()));
        }
        let Some(config) = self.config_of(case) else {
            return Err(PublishError::UnknownCase(case.to_owned()));
        };
        let guard = self.publishing.lock().await;
        let now = Utc::now();
        let latest = self.view.get(case);
        let current = latest.as_ref().map_or_else(
            || Values::from_config(&config, now),
            |p| Values::of(&p.control),
        );
        let mut next = current.clone();
        if let Some(p) = probability {
            next.probability = p;
            if p != current.probability {
                next.rollout = current
                    .rollout
                    .as_ref()
                    .and_then(Position::from_json)
                    .map(|pos| pos.stopped(by, now).to_json());
            }
        }
        if let Some(a) = active {
            next.active = a;
        }
        if let (Some(latest), true) = (&latest, next == current) {
            return Ok(Change {
                published: latest.control.clone(),
                changed: false,
                read_back: true,
            });
        }
        let record = self.send(case, next, &config, by).await?;
        drop(guard);
        let read_back = self
            .view
            .wait_version(case, record.version, Duration::from_secs(5))
            .await;
        Ok(Change {
            published: record,
            changed: true,
            read_back,
        })
    }

    /// Publishes a roll-out decision for `case` over its latest record.
    async fn publish_rollout(&self, case: &str, from_version: u64, next: &Position) -> Option<u64> {
        let _guard = self.publishing.lock().await;
        let latest = self.view.get(case)?;
        if latest.control.version != from_version {
            return None; // someone changed it meanwhile: decide again on the new record
        }
        let config = self.config_of(case).or_else(|| latest.config.clone())?;
        let mut values = Values::of(&latest.control);
        values.probability = next.probability();
        values.rollout = Some(next.to_json());
        match self.send(case, values, &config, BY_ROLLOUT).await {
            Ok(record) => Some(record.version),
            Err(err) => {
                error!(case, error = %err, "roll-out decision not published");
                None
            }
        }
    }

    /// Publishes one record (version strictly above every one known for the case) and
    /// waits for the broker's acknowledgement.
    async fn send(
        &self,
        case: &str,
        values: Values,
        config: &ConfigSettings,
        by: &str,
    ) -> Result<CaseControl, PublishError> {
        let now = Utc::now();
        let before = self.view.get(case);
        let floor = {
            let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
            before
                .as_ref()
                .map(|p| p.control.version)
                .max(issued.get(case).copied())
        };
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let version = floor.map_or(now_ms, |v| now_ms.max(v + 1));
        let record = CaseControl {
            case: case.to_owned(),
            probability: values.probability,
            active: values.active,
            sampling: values.sampling,
            test_expires_secs: values.test_expires_secs,
            version,
            changed_by: by.to_owned(),
            changed_at: now,
            rollout: values.rollout.clone(),
        };
        let payload = serde_json::to_vec(&record)
            .map_err(|e| PublishError::Serialize(case.to_owned(), e.to_string()))?;
        let config_json = serde_json::to_vec(config)
            .map_err(|e| PublishError::Serialize(case.to_owned(), e.to_string()))?;
        let headers = OwnedHeaders::new().insert(Header {
            key: CONFIG_HEADER,
            value: Some(&config_json),
        });
        let outgoing = BaseRecord::to(&self.topic)
            .key(case)
            .payload(&payload)
            .headers(headers);
        // Acknowledged, or refused, within the producer's message.timeout.ms.
        let sent = match self.producer.send_acked(outgoing) {
            Ok(acked) => acked.await.unwrap_or(Err(KafkaError::Canceled)),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            return Err(PublishError::NotDelivered {
                case: case.to_owned(),
                reason: err.to_string(),
                timeout: PUBLISH_TIMEOUT,
            });
        }
        {
            let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
            let v = issued.entry(case.to_owned()).or_default();
            *v = (*v).max(version);
        }
        let from = before.as_ref().map(|p| Values::of(&p.control));
        info!(
            case,
            by,
            version,
            change = %values.describe_change(from.as_ref()),
            topic = %self.topic,
            "case settings published"
        );
        Ok(record)
    }
}

/// What a control record's bytes say (`Err`: why it is ignored).
pub(crate) fn decode(message: &BorrowedMessage<'_>) -> Result<Published, String> {
    let payload = message
        .payload()
        .ok_or("a record without a value (a tombstone)")?;
    let control: CaseControl =
        serde_json::from_slice(payload).map_err(|e| format!("not a CaseControl: {e}"))?;
    let config = message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == CONFIG_HEADER)
            .and_then(|h| h.value)
            .and_then(|v| serde_json::from_slice::<ConfigSettings>(v).ok())
    });
    Ok(Published { control, config })
}

/// Reads every partition of `topic` from its beginning, forever: `on_record` for each
/// record, `view_problem` with why the topic cannot be read (and `None` once it can), and
/// `caught_up` once every partition was read to the end it had when reading began.
pub async fn tail_topic(
    kafka: KafkaConfig,
    topic: String,
    mut on_record: impl FnMut(&BorrowedMessage<'_>) + Send,
    mut view_problem: impl FnMut(Option<String>) + Send,
    caught_up: impl FnOnce() + Send,
) {
    let consumer: Arc<StreamConsumer<ConnectivityContext>> = match tail_config(&kafka, "tail")
        .create_with_context(Connectivity::new(kafka.brokers.clone()).context())
    {
        Ok(c) => Arc::new(c),
        Err(err) => {
            view_problem(Some(format!("cannot create a consumer of {topic}: {err}")));
            return;
        }
    };
    // Assign every partition from its beginning; remember where each ended.
    let mut attempt = 0u32;
    let ends: HashMap<i32, i64> = loop {
        attempt += 1;
        let (c, t) = (consumer.clone(), topic.clone());
        let assigned =
            tokio::task::spawn_blocking(move || assign_all(&*c, &t, |_| Offset::Beginning)).await;
        match assigned {
            Ok(Ok(watermarks)) if !watermarks.is_empty() => {
                view_problem(None);
                debug!(%topic, partitions = watermarks.len(), "reading from the beginning");
                break watermarks
                    .into_iter()
                    .filter(|(_, (low, high))| high > low)
                    .map(|(p, (_, high))| (p, high))
                    .collect();
            }
            Ok(Ok(_)) => {
                let why = format!("topic {topic} does not exist (or has no partitions)");
                if attempt == 1 {
                    warn!("{why}; retrying every 2 s");
                }
                view_problem(Some(why));
            }
            Ok(Err(err)) => {
                let why = format!("cannot read topic {topic}: {err}");
                if attempt == 1 {
                    warn!("{why}; retrying every 2 s");
                }
                view_problem(Some(why));
            }
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let mut pending = ends;
    let mut caught_up = Some(caught_up);
    if pending.is_empty() {
        if let Some(f) = caught_up.take() {
            f();
        }
    }
    loop {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(message)) => {
                on_record(&message);
                if let Some(end) = pending.get(&message.partition()) {
                    if message.offset() + 1 >= *end {
                        pending.remove(&message.partition());
                    }
                }
            }
            Ok(Err(err)) => {
                debug!(%topic, error = %err, "read error");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {
                // Nothing more to read: a partition whose position passed its end (records
                // compacted away, transaction markers) is read to its end too.
                if let Ok(position) = consumer.position() {
                    for e in position.elements() {
                        if let (Offset::Offset(o), Some(end)) =
                            (e.offset(), pending.get(&e.partition()))
                        {
                            if o >= *end {
                                pending.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
        if pending.is_empty() {
            if let Some(f) = caught_up.take() {
                f();
            }
        }
    }
}

/// Follows the control topic into `view`; `on_change` runs for every record that becomes
/// a case's latest.
pub async fn follow_control(
    kafka: KafkaConfig,
    topic: String,
    view: Arc<ControlView>,
    on_change: impl Fn(&Published) + Send,
) {
    let (v1, v2, v3) = (view.clone(), view.clone(), view);
    let mut warned = false;
    tail_topic(
        kafka,
        topic.clone(),
        move |message| match decode(message) {
            Ok(published) => {
                if v1.apply(published.control.clone(), published.config.clone()) {
                    debug!(case = %published.control.case, version = published.control.version, by = %published.control.changed_by, "control record applied");
                    on_change(&published);
                }
            }
            Err(why) if !warned => {
                warned = true;
                warn!(%topic, offset = message.offset(), "ignored a control record: {why} (warned once)");
            }
            Err(_) => {}
        },
        move |problem| v2.set_problem(problem),
        move || {
            info!("control topic read to its end: the published settings are known");
            v3.set_caught_up();
        },
    )
    .await;
}

/// What a roll-out driven here counts now (for the page).
#[derive(Debug, Clone, Serialize)]
pub struct RolloutLive {
    /// Runs and failures of the current step so far.
    pub counts: StepCounts,
}

/// Drives the roll-out plans: counts the runs of each case's current step (from the
/// reports the group's voice reads) and publishes each decision. Only the group's voice
/// drives; the others show the published position.
#[derive(Debug, Default)]
pub struct RolloutDriver {
    tallies: Mutex<HashMap<String, StepTally>>,
    /// A decision published and not read back yet, per case (its version).
    pending: Mutex<HashMap<String, u64>>,
    driving: std::sync::atomic::AtomicBool,
}

impl RolloutDriver {
    /// Whether this instance drives the roll-outs (it is the group's voice).
    pub fn is_driving(&self) -> bool {
        self.driving.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts or stops driving; stopping forgets the counts.
    pub fn set_driving(&self, driving: bool) {
        let was = self
            .driving
            .swap(driving, std::sync::atomic::Ordering::Relaxed);
        if was && !driving {
            self.tallies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    /// Counts a finished test for its case's current step (`view`: where each plan stands).
    pub fn on_report(&self, report: &Report, view: &ControlView) {
        if !self.is_driving() || report.verdict == Verdict::Skip {
            return;
        }
        let Some(position) = view
            .get(&report.case)
            .and_then(|p| p.control.rollout)
            .and_then(|r| Position::from_json(&r))
            .filter(|p| p.state == RolloutState::Running)
        else {
            return;
        };
        let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        let tally = tallies
            .entry(report.case.clone())
            .or_insert_with(|| StepTally::for_position(&position));
        if !tally.is_for(&position) {
            *tally = StepTally::for_position(&position);
        }
        tally.record(&report.test_id, report.verdict, report.issued_at);
    }

    /// The counts of `case`'s current step, when this instance drives it.
    pub fn live(&self, case: &str, position: &Position) -> Option<RolloutLive> {
        if !self.is_driving() || position.state != RolloutState::Running {
            return None;
        }
        let tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        Some(RolloutLive {
            counts: tallies
                .get(case)
                .filter(|t| t.is_for(position))
                .map(StepTally::counts)
                .unwrap_or_default(),
        })
    }

    /// Decides every running plan whose plan is the configuration's, and publishes the
    /// decisions. Call it every second or so.
    pub async fn tick(&self, control: &Control, now: DateTime<Utc>) {
        if !self.is_driving() {
            return;
        }
        for (case, config) in control.config() {
            let Some(plan) = &config.rollout else {
                continue;
            };
            let Some(published) = control.view().get(&case) else {
                continue;
            };
            let Some(position) = published
                .control
                .rollout
                .as_ref()
                .and_then(Position::from_json)
            else {
                continue;
            };
            if &position.plan != plan {
                continue; // a reload publishes the new plan
            }
            let pending = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&case)
                .copied();
            if pending.is_some_and(|v| v > published.control.version) {
                continue; // our last decision is not read back yet
            }
            let counts = {
                let tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
                tallies
                    .get(&case)
                    .filter(|t| t.is_for(&position))
                    .map(StepTally::counts)
                    .unwrap_or_default()
            };
            let Some(next) = position.decide(counts, now) else {
                continue;
            };
            match next.state {
                RolloutState::RolledBack => {
                    warn!(case, reason = %next.reason, "roll-out rolled back")
                }
                _ => info!(case, reason = %next.reason, "roll-out step"),
            }
            if let Some(version) = control
                .publish_rollout(&case, published.control.version, &next)
                .await
            {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(case.clone(), version);
            }
        }
    }
}

/// Reads a file's bytes for change detection (`None`: unreadable now).
pub fn read_contents(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// A reader that assigns partitions itself and never commits (`role` names its throwaway
/// group id, which rdkafka wants even to assign).
/// Assigns every partition of `topic` to `consumer` (not as a group member), each from the
/// offset `start` gives for its `(low, high)` watermarks; returns the watermarks by
/// partition (empty: the topic does not exist or has no partitions). Blocking.
pub(crate) fn assign_all<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
    start: impl Fn((i64, i64)) -> Offset,
) -> Result<HashMap<i32, (i64, i64)>, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .filter(|m| m.error().is_none())
        .map(|m| m.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut list = TopicPartitionList::new();
    let mut watermarks = HashMap::new();
    for p in partitions {
        let marks = consumer.fetch_watermarks(topic, p, timeout)?;
        list.add_partition_offset(topic, p, start(marks))?;
        watermarks.insert(p, marks);
    }
    if !watermarks.is_empty() {
        consumer.assign(&list)?;
    }
    Ok(watermarks)
}

pub(crate) fn tail_config(kafka: &KafkaConfig, role: &str) -> rdkafka::ClientConfig {
    kafka.client_config(&[
        (
            "group.id",
            &format!("livecheck-{role}-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("enable.auto.commit", "false"),
        ("fetch.wait.max.ms", "100"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(probability: f64, active: bool) -> ConfigSettings {
        ConfigSettings {
            probability,
            active,
            sampling: SamplingName::Random,
            test_expires_secs: Some(3600.0),
            rollout: None,
        }
    }

    fn record(values: &Values, version: u64, by: &str) -> CaseControl {
        CaseControl {
            case: "c".into(),
            probability: values.probability,
            active: values.active,
            sampling: values.sampling,
            test_expires_secs: values.test_expires_secs,
            version,
            changed_by: by.into(),
            changed_at: Utc::now(),
            rollout: values.rollout.clone(),
        }
    }

    fn published(values: &Values, made_with: Option<ConfigSettings>) -> Published {
        Published {
            control: record(values, 1, "x"),
            config: made_with,
        }
    }

    #[test]
    fn an_empty_topic_gets_the_configuration() {
        let c = config(0.5, true);
        let v = reconcile(&c, None, Utc::now()).expect("publish");
        assert_eq!((v.probability, v.active), (0.5, true));
    }

    #[test]
    fn an_unchanged_file_publishes_nothing_and_an_api_change_survives() {
        let c = config(0.5, true);
        let same = Values::from_config(&c, Utc::now());
        assert_eq!(
            reconcile(&c, Some(&published(&same, Some(c.clone()))), Utc::now()),
            None
        );
        // The API set 0.01 (the record remembers the file said 0.5): the file still says
        // 0.5, so the API's value stays.
        let api = Values {
            probability: 0.01,
            ..same.clone()
        };
        assert_eq!(
            reconcile(&c, Some(&published(&api, Some(c.clone()))), Utc::now()),
            None
        );
    }

    #[test]
    fn a_setting_changed_in_the_file_since_wins_and_only_that_one() {
        let was = config(0.5, true);
        // The API made it 0.01 and inactive; then the file's probability changed to 0.2.
        let api = Values {
            probability: 0.01,
            active: false,
            ..Values::from_config(&was, Utc::now())
        };
        let now = config(0.2, true);
        let v = reconcile(&now, Some(&published(&api, Some(was))), Utc::now()).expect("publish");
        assert_eq!(
            (v.probability, v.active),
            (0.2, false),
            "active stays the API's"
        );
        // A record that does not say what it was made with: the configuration wins.
        let v = reconcile(&now, Some(&published(&api, None)), Utc::now()).expect("publish");
        assert_eq!((v.probability, v.active), (0.2, true));
    }

    #[test]
    fn a_file_that_now_says_what_the_topic_says_is_remembered() {
        let was = config(0.5, true);
        let api = Values {
            probability: 0.2,
            ..Values::from_config(&was, Utc::now())
        };
        let now = config(0.2, true);
        let v = reconcile(&now, Some(&published(&api, Some(was))), Utc::now())
            .expect("republished with the new configuration");
        assert_eq!(v, api);
    }

    #[test]
    fn a_new_plan_starts_at_its_first_step_and_a_known_one_resumes() {
        let plan = RolloutPlan::new(vec![0.01, 0.5, 1.0], Duration::from_secs(60), 0.1, 5);
        let mut c = config(0.01, true);
        c.rollout = Some(plan.clone());
        let t0 = Utc::now();
        let v = reconcile(&c, None, t0).expect("publish");
        let p = Position::from_json(v.rollout.as_ref().expect("rollout")).expect("position");
        assert_eq!((p.step, v.probability), (0, 0.01));
        // Resumes at step 2 when the plan is unchanged.
        let mut at2 = v.clone();
        let p2 = p
            .decide(
                StepCounts {
                    runs: 5,
                    failures: 0,
                },
                t0 + chrono::Duration::seconds(61),
            )
            .expect("advance");
        at2.probability = p2.probability();
        at2.rollout = Some(p2.to_json());
        assert_eq!(
            reconcile(&c, Some(&published(&at2, Some(c.clone()))), Utc::now()),
            None
        );
        // A changed plan starts again.
        let mut c2 = c.clone();
        c2.rollout = Some(RolloutPlan::new(
            vec![0.1, 1.0],
            Duration::from_secs(60),
            0.1,
            5,
        ));
        let v =
            reconcile(&c2, Some(&published(&at2, Some(c.clone()))), Utc::now()).expect("restart");
        assert_eq!(v.probability, 0.1);
        // Removing the plan gives the file's probability.
        let c3 = config(0.3, true);
        let v = reconcile(&c3, Some(&published(&at2, Some(c))), Utc::now()).expect("no plan");
        assert_eq!((v.probability, v.rollout), (0.3, None));
    }

    #[test]
    fn the_view_keeps_the_highest_version_and_the_later_of_equals() {
        let view = ControlView::default();
        let v = Values::from_config(&config(0.5, true), Utc::now());
        assert!(view.apply(record(&v, 10, "a"), None));
        assert!(!view.apply(record(&v, 9, "b"), None));
        assert_eq!(view.get("c").expect("c").control.changed_by, "a");
        assert!(view.apply(record(&v, 10, "c"), None));
        assert_eq!(view.get("c").expect("c").control.changed_by, "c");
    }

    #[test]
    fn changes_are_described_from_to() {
        let a = Values::from_config(&config(0.5, true), Utc::now());
        let b = Values {
            probability: 0.01,
            active: false,
            ..a.clone()
        };
        assert_eq!(
            b.describe_change(Some(&a)),
            "probability 0.5 → 0.01, active true → false"
        );
        assert!(a
            .describe_change(None)
            .starts_with("probability 0.5, active true"));
    }
}
