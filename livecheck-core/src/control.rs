//! One source of truth for case settings: the control topic, and what services report back.
//!
//! The `livecheck` service publishes each case's settings ([`CaseControl`], keyed by case
//! name) to the compacted control topic (`{prefix}livecheck-control`, one partition). Every
//! service's [`crate::LiveCheck`] client follows it ([`crate::LiveCheck::follow_control`])
//! and its triggers sample with the published probability and active flag, falling back to
//! their compiled-in defaults (and saying so) while the topic cannot be read. Services
//! report what they apply on a heartbeat ([`Heartbeat`], keyed by service, instance and
//! case) to `{prefix}livecheck-heartbeats`, so the status page shows the sampling really
//! applied.
//!
//! ## Reading the control topic
//! - The latest valid record of a case applies: a record whose `version` is not above the
//!   one held is ignored (counter `control_ignored`); one that does not decode, whose key is
//!   not its `case`, or whose probability is not in `[0, 1]` is counted
//!   (`control_malformed`) and logged ([`CaseControl::from_record`]); a tombstone (a record
//!   with no value) hands the case back to its triggers' local settings.
//! - The client *follows* while the last successful fetch of the control partition's high
//!   watermark is less than [`ControlOptions::stale_after`] (10 s) old and, since it started
//!   or last stopped following, it has read the partition up to such a watermark. Otherwise
//!   (broker down, topic missing, still loading) every trigger uses its local settings
//!   ([`SettingsSource::Local`] with the reason), the gauge `control_following` is 0, and
//!   the episode is logged once at warn (at start: only if it has not loaded within
//!   `stale_after`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::trigger::{Sampling, TriggerSettings};

/// A case's settings as the `livecheck` service publishes them on the control topic
/// (record key: the case name). A record with a higher `version` replaces a lower one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseControl {
    /// The case.
    pub case: String,
    /// Share of requests that become tests, in `[0, 1]`.
    pub probability: f64,
    /// Whether the case runs at all (an inactive case triggers no tests).
    pub active: bool,
    /// How triggers sample.
    #[serde(default)]
    pub sampling: SamplingName,
    /// How long after issue a test is still worth running, in seconds (`None`: the
    /// trigger's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_expires_secs: Option<f64>,
    /// Increases with every change (milliseconds since the epoch of the change, made
    /// strictly increasing by the publisher).
    pub version: u64,
    /// Who made the change: `livecheck.toml`, `api:<who>`, `rollout`, ...
    pub changed_by: String,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// The case's roll-out plan and where it stands, if it has one (for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Value>,
}

/// [`Sampling`] as it travels on the control topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingName {
    /// [`Sampling::Random`].
    #[default]
    Random,
    /// [`Sampling::TestId`].
    TestId,
    /// [`Sampling::Key`].
    Key,
}

impl From<Sampling> for SamplingName {
    fn from(s: Sampling) -> Self {
        match s {
            Sampling::Random => SamplingName::Random,
            Sampling::TestId => SamplingName::TestId,
            Sampling::Key => SamplingName::Key,
        }
    }
}

impl From<SamplingName> for Sampling {
    fn from(s: SamplingName) -> Self {
        match s {
            SamplingName::Random => Sampling::Random,
            SamplingName::TestId => Sampling::TestId,
            SamplingName::Key => Sampling::Key,
        }
    }
}

/// Where the settings a service applies come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SettingsSource {
    /// The control topic, at this version.
    Control {
        /// The [`CaseControl::version`] applied.
        version: u64,
    },
    /// The trigger's compiled-in defaults: the control topic has no record for the case,
    /// or cannot be read (`reason`).
    Local {
        /// Why not the control topic.
        reason: String,
    },
}

/// What one service instance applies for one case, published every few seconds to the
/// heartbeats topic (record key: `service/instance/case`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The service's name.
    pub service: String,
    /// This instance (host and process id by default).
    pub instance: String,
    /// The case.
    pub case: String,
    /// The probability its trigger samples with now.
    pub probability: f64,
    /// Whether its trigger triggers at all now.
    pub active: bool,
    /// Where those come from.
    pub source: SettingsSource,
    /// Requests its triggers decided on by sampling since the instance started (a request
    /// that came with a test context of the case is continued, not decided, and not
    /// counted).
    pub requests: u64,
    /// Tests they started by sampling since the instance started (registered).
    pub tests_triggered: u64,
    /// When this heartbeat was made.
    pub at: DateTime<Utc>,
    /// How often the instance sends one, in milliseconds (a reader marks the instance
    /// stale after a few missed).
    pub every_ms: u64,
}

/// The reason given in [`SettingsSource::Local`] when the client follows the control topic
/// and it holds no record for the case (not an error: the case is not centrally managed).
pub const NO_CONTROL_RECORD: &str = "no control record for the case";

/// The reason given in [`SettingsSource::Local`] when the client was never asked to follow
/// the control topic ([`crate::LiveCheck::follow_control`]).
pub const NOT_FOLLOWING: &str =
    "the client does not follow the control topic (LiveCheck::follow_control was not called)";

/// Why a control record was not applied: it is counted (`control_malformed`) and logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlRecordError {
    /// The record has no key (the key is the case name).
    #[error("the record has no key (the case name)")]
    NoKey,
    /// The key is not UTF-8.
    #[error("the record key is not UTF-8")]
    KeyNotUtf8,
    /// The value is not a [`CaseControl`] in JSON.
    #[error("the value is not a CaseControl in JSON")]
    Json(#[source] serde_json::Error),
    /// The key and the record's `case` differ.
    #[error("the record key {key:?} is not its case {case:?}")]
    KeyMismatch {
        /// The record key.
        key: String,
        /// [`CaseControl::case`].
        case: String,
    },
    /// The probability is not a number in `[0, 1]`.
    #[error("probability {0} is not in [0, 1]")]
    Probability(f64),
    /// The expiry is not a positive number of seconds.
    #[error("test_expires_secs {0} is not a positive number of seconds")]
    Expiry(f64),
}

impl CaseControl {
    /// Checks what a reader needs: a probability in `[0, 1]` and, if given, a positive
    /// finite expiry. A publisher can call it before publishing.
    pub fn validate(&self) -> Result<(), ControlRecordError> {
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(ControlRecordError::Probability(self.probability));
        }
        match self.test_expires_secs {
            Some(secs) if !(secs.is_finite() && secs > 0.0) => {
                Err(ControlRecordError::Expiry(secs))
            }
            _ => Ok(()),
        }
    }

    /// Decodes and checks a control record: key `case`, value JSON.
    pub fn from_record(key: Option<&[u8]>, value: &[u8]) -> Result<Self, ControlRecordError> {
        let key = std::str::from_utf8(key.ok_or(ControlRecordError::NoKey)?)
            .map_err(|_| ControlRecordError::KeyNotUtf8)?;
        let control: CaseControl =
            serde_json::from_slice(value).map_err(ControlRecordError::Json)?;
        if control.case != key {
            return Err(ControlRecordError::KeyMismatch {
                key: key.to_owned(),
                case: control.case,
            });
        }
        control.validate()?;
        Ok(control)
    }
}

/// The settings a trigger applies for its case right now, and where they come from
/// ([`crate::Trigger::effective`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveSettings {
    /// Share of requests that become tests.
    pub probability: f64,
    /// Whether the trigger triggers at all.
    pub active: bool,
    /// How it samples.
    pub sampling: Sampling,
    /// How long after issue its tests are still worth running.
    pub test_expires: Duration,
    /// The control topic (at a version) or the trigger's local settings (and why).
    pub source: SettingsSource,
}

/// How a client follows the control topic ([`crate::LiveCheck::follow_control_with`]):
/// each field under the name of the builder method that sets it. [`ControlOptions::new`]
/// gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControlOptions {
    /// The service's name (heartbeats say it).
    pub service: String,
    /// This process's name among the service's instances (`None`: [`default_instance`]).
    pub instance: Option<String>,
    /// How often heartbeats are published.
    pub heartbeat_every: Duration,
    /// How long after the last successful fetch of the control partition's high watermark
    /// the client stops following.
    pub stale_after: Duration,
    /// How often the control partition's high watermark is fetched.
    pub probe_every: Duration,
}

impl ControlOptions {
    /// Options for service `service`: instance [`default_instance`], a heartbeat every
    /// 5 s, the high watermark fetched every second, not following after 10 s without one.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            instance: None,
            heartbeat_every: Duration::from_secs(5),
            stale_after: Duration::from_secs(10),
            probe_every: Duration::from_secs(1),
        }
    }

    /// This process's name among the service's instances (default [`default_instance`]).
    #[must_use]
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// How often heartbeats are published (default 5 s).
    #[must_use]
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat_every = every;
        self
    }

    /// How long after the last successful fetch of the control partition's high watermark
    /// the client stops following (default 10 s).
    #[must_use]
    pub fn stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// How often the control partition's high watermark is fetched (default 1 s; it must
    /// be below [`ControlOptions::stale_after`]).
    #[must_use]
    pub fn probe_every(mut self, probe_every: Duration) -> Self {
        self.probe_every = probe_every;
        self
    }

    /// Checks the names (non-empty, no `/`: heartbeat keys are `service/instance/case`)
    /// and the intervals; returns the instance to use.
    pub(crate) fn check(&self) -> Result<String, crate::Error> {
        let instance = self.instance.clone().unwrap_or_else(default_instance);
        for (what, name) in [("service", &self.service), ("instance", &instance)] {
            if name.is_empty() || name.contains('/') {
                return Err(crate::Error::Config(format!(
                    "the {what} name {name:?} must be non-empty and without '/'"
                )));
            }
        }
        if self.heartbeat_every.is_zero() || self.probe_every.is_zero() {
            return Err(crate::Error::Config(
                "the heartbeat and probe intervals must be positive".into(),
            ));
        }
        if self.stale_after <= self.probe_every {
            return Err(crate::Error::Config(format!(
                "stale_after ({:?}) must be longer than probe_every ({:?})",
                self.stale_after, self.probe_every
            )));
        }
        Ok(instance)
    }
}

/// `host:pid`: the host name from `HOSTNAME`, else `/proc/sys/kernel/hostname`, else
/// `unknown`.
pub fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{}:{}", host.replace('/', "_"), std::process::id())
}

/// Whether the client follows the control topic, as [`crate::LiveCheck::control_status`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlStatus {
    /// Whether triggers apply the control topic now.
    pub following: bool,
    /// Why not (`None` while following).
    pub reason: Option<String>,
    /// Cases the control topic holds a record for.
    pub cases: usize,
}

/// What the control topic says, case by case: the latest valid record of each (the
/// highest version wins; a tombstone removes the case).
#[derive(Debug, Default, Clone)]
pub(crate) struct ControlTable {
    cases: HashMap<String, CaseControl>,
}

/// What [`ControlTable::apply`] did with a record.
#[derive(Debug)]
pub(crate) enum Applied {
    /// New settings for the case.
    Changed(CaseControl),
    /// A version not above the one held: ignored.
    Stale {
        /// The version held.
        held: u64,
        /// The record's.
        version: u64,
    },
    /// A tombstone: the case is no longer managed (`true` if it was).
    Removed(bool),
    /// Not applied.
    Malformed(ControlRecordError),
}

impl ControlTable {
    /// Applies a record of the control topic (`value` `None`: a tombstone).
    pub(crate) fn apply(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Applied {
        let Some(value) = value else {
            return match key.map(std::str::from_utf8) {
                Some(Ok(case)) => Applied::Removed(self.cases.remove(case).is_some()),
                Some(Err(_)) => Applied::Malformed(ControlRecordError::KeyNotUtf8),
                None => Applied::Malformed(ControlRecordError::NoKey),
            };
        };
        let control = match CaseControl::from_record(key, value) {
            Ok(control) => control,
            Err(err) => return Applied::Malformed(err),
        };
        match self.cases.get(&control.case) {
            Some(held) if held.version >= control.version => Applied::Stale {
                held: held.version,
                version: control.version,
            },
            _ => {
                self.cases.insert(control.case.clone(), control.clone());
                Applied::Changed(control)
            }
        }
    }

    /// The settings held for `case`.
    pub(crate) fn get(&self, case: &str) -> Option<&CaseControl> {
        self.cases.get(case)
    }

    /// Cases held.
    pub(crate) fn len(&self) -> usize {
        self.cases.len()
    }
}

/// The settings a trigger decides with, without the reason text (cheap to copy: the hot
/// path).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Decision {
    pub(crate) probability: f64,
    pub(crate) active: bool,
    pub(crate) sampling: Sampling,
    pub(crate) test_expires: Duration,
    pub(crate) origin: Origin,
}

/// Where a [`Decision`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A control record of this version.
    Control(u64),
    /// Following, no record for the case.
    NoRecord,
    /// Not following (see the state's reason).
    NotFollowing,
}

impl Decision {
    fn local(local: &TriggerSettings, origin: Origin) -> Self {
        Self {
            probability: local.probability,
            active: local.active,
            sampling: local.sampling,
            test_expires: local.test_expires,
            origin,
        }
    }

    fn control(local: &TriggerSettings, control: &CaseControl) -> Self {
        Self {
            probability: control.probability,
            active: control.active,
            sampling: control.sampling.into(),
            test_expires: control
                .test_expires_secs
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .unwrap_or(local.test_expires),
            origin: Origin::Control(control.version),
        }
    }
}

/// What one case's triggers did in this process (for heartbeats).
#[derive(Debug)]
pub(crate) struct CaseStats {
    /// The local settings of the trigger that announced the case (the last one).
    local: Mutex<TriggerSettings>,
    /// Requests decided by sampling.
    pub(crate) requests: AtomicU64,
    /// Tests started by sampling.
    pub(crate) tests_triggered: AtomicU64,
}

/// The client's view of the control topic, shared by its triggers (readers) and its
/// follower (the one writer).
#[derive(Debug)]
pub(crate) struct ControlState {
    table: RwLock<ControlTable>,
    following: AtomicBool,
    reason: Mutex<String>,
    cases: RwLock<HashMap<String, Arc<CaseStats>>>,
}

impl Default for ControlState {
    fn default() -> Self {
        Self {
            table: RwLock::default(),
            following: AtomicBool::new(false),
            reason: Mutex::new(NOT_FOLLOWING.to_owned()),
            cases: RwLock::default(),
        }
    }
}

impl ControlState {
    /// The settings `case` decides with now: the control record while following and one
    /// is held, else `local`. One atomic load, and one read lock while following.
    pub(crate) fn decision(&self, case: &str, local: &TriggerSettings) -> Decision {
        if !self.following.load(Ordering::Acquire) {
            return Decision::local(local, Origin::NotFollowing);
        }
        match read(&self.table).get(case) {
            Some(control) => Decision::control(local, control),
            None => Decision::local(local, Origin::NoRecord),
        }
    }

    /// [`ControlState::decision`] with the reason spelled out.
    pub(crate) fn effective(&self, case: &str, local: &TriggerSettings) -> EffectiveSettings {
        let decision = self.decision(case, local);
        let source = match decision.origin {
            Origin::Control(version) => SettingsSource::Control { version },
            Origin::NoRecord => SettingsSource::Local {
                reason: NO_CONTROL_RECORD.to_owned(),
            },
            Origin::NotFollowing => SettingsSource::Local {
                reason: self.reason(),
            },
        };
        EffectiveSettings {
            probability: decision.probability,
            active: decision.active,
            sampling: decision.sampling,
            test_expires: decision.test_expires,
            source,
        }
    }

    /// The per-case counters of `case`, created (with `local` remembered) on first use.
    pub(crate) fn stats(&self, case: &str, local: &TriggerSettings) -> Arc<CaseStats> {
        if let Some(stats) = read(&self.cases).get(case) {
            return stats.clone();
        }
        write(&self.cases)
            .entry(case.to_owned())
            .or_insert_with(|| {
                Arc::new(CaseStats {
                    local: Mutex::new(local.clone()),
                    requests: AtomicU64::new(0),
                    tests_triggered: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Remembers `local` as `case`'s local settings (the heartbeat reports them while the
    /// control topic does not apply).
    pub(crate) fn announce(&self, case: &str, local: &TriggerSettings) {
        let stats = self.stats(case, local);
        *lock(&stats.local) = local.clone();
    }

    /// One heartbeat per announced or triggered case, sorted by case.
    pub(crate) fn heartbeats(
        &self,
        service: &str,
        instance: &str,
        every: Duration,
        at: DateTime<Utc>,
    ) -> Vec<(String, Heartbeat)> {
        let cases: Vec<(String, Arc<CaseStats>)> = read(&self.cases)
            .iter()
            .map(|(case, stats)| (case.clone(), stats.clone()))
            .collect();
        let mut beats: Vec<(String, Heartbeat)> = cases
            .into_iter()
            .map(|(case, stats)| {
                let local = lock(&stats.local).clone();
                let effective = self.effective(&case, &local);
                let heartbeat = Heartbeat {
                    service: service.to_owned(),
                    instance: instance.to_owned(),
                    probability: effective.probability,
                    active: effective.active,
                    source: effective.source,
                    requests: stats.requests.load(Ordering::Relaxed),
                    tests_triggered: stats.tests_triggered.load(Ordering::Relaxed),
                    at,
                    every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                    case,
                };
                (heartbeat.key(), heartbeat)
            })
            .collect();
        beats.sort_by(|a, b| a.0.cmp(&b.0));
        beats
    }

    /// Applies a record (the follower).
    pub(crate) fn apply(&self, key: Option<&[u8]>, value: Option<&[u8]>) -> Applied {
        write(&self.table).apply(key, value)
    }

    /// Whether triggers apply the control topic now.
    pub(crate) fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// Sets whether they do, and why not.
    pub(crate) fn set_following(&self, following: bool, reason: &str) {
        {
            let mut held = lock(&self.reason);
            if *held != reason {
                reason.clone_into(&mut held);
            }
        }
        self.following.store(following, Ordering::Release);
    }

    /// Why triggers do not apply the control topic (meaningful while not following).
    pub(crate) fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// The status, for [`crate::LiveCheck::control_status`].
    pub(crate) fn status(&self) -> ControlStatus {
        let following = self.following();
        ControlStatus {
            following,
            reason: (!following).then(|| self.reason()),
            cases: read(&self.table).len(),
        }
    }
}

impl Heartbeat {
    /// The record key: `service/instance/case`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.service, self.instance, self.case)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the follower follows, from what it saw: the rule behind [`ControlStatus`].
///
/// The client follows when (1) the last successful fetch of the control partition's high
/// watermark is less than `stale_after` old, and (2) since it last stopped following (or
/// started), it has read the partition up to the high watermark of a successful fetch.
/// Consumer errors give the reason while it does not follow.
#[derive(Debug)]
pub(crate) struct FollowState {
    topic: String,
    stale_after: Duration,
    started: Instant,
    last_ok: Option<Instant>,
    /// The high watermark to reach before following (set by the first fetch after loading
    /// began).
    target: Option<i64>,
    /// The next offset to read.
    position: i64,
    loaded: bool,
    last_error: Option<String>,
    following: bool,
    /// Whether the current not-following episode was logged.
    warned: bool,
}

/// What changed at [`FollowState::evaluate`], to log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Following now (`again`: after a logged episode).
    Following {
        /// After an episode that was warned about.
        again: bool,
    },
    /// Not following, for this reason: warn (once per episode).
    NotFollowing(String),
}

impl FollowState {
    pub(crate) fn new(topic: &str, stale_after: Duration, now: Instant) -> Self {
        Self {
            topic: topic.to_owned(),
            stale_after,
            started: now,
            last_ok: None,
            target: None,
            position: 0,
            loaded: false,
            last_error: None,
            following: false,
            warned: false,
        }
    }

    /// The high watermark was fetched.
    pub(crate) fn on_probe(&mut self, high: i64, now: Instant) {
        self.last_ok = Some(now);
        self.last_error = None;
        if !self.loaded && self.target.is_none() {
            self.target = Some(high);
        }
    }

    /// A record at `offset` was read.
    pub(crate) fn on_record(&mut self, offset: i64) {
        self.position = self.position.max(offset + 1);
    }

    /// A fetch or the consumer failed.
    pub(crate) fn on_error(&mut self, error: String) {
        self.last_error = Some(error);
    }

    /// Whether it follows now.
    pub(crate) fn following(&self) -> bool {
        self.following
    }

    /// Why not (meaningful while not following).
    pub(crate) fn reason(&self, now: Instant) -> String {
        let topic = &self.topic;
        match (&self.last_error, self.last_ok) {
            (Some(err), _) => format!("cannot read the control topic {topic}: {err}"),
            (None, Some(ok)) if now.duration_since(ok) >= self.stale_after => format!(
                "cannot read the control topic {topic}: no high watermark fetched for {:.0} s",
                now.duration_since(ok).as_secs_f64()
            ),
            _ => format!("loading the control topic {topic}"),
        }
    }

    /// Updates whether it follows at `now`; returns the change to log, if any.
    pub(crate) fn evaluate(&mut self, now: Instant) -> Option<Transition> {
        let fresh = self
            .last_ok
            .is_some_and(|ok| now.duration_since(ok) < self.stale_after);
        if !fresh {
            self.loaded = false;
            self.target = None;
        } else if !self.loaded && self.target.is_some_and(|t| self.position >= t) {
            self.loaded = true;
        }
        let following = fresh && self.loaded;
        let change = if following && !self.following {
            let again = std::mem::take(&mut self.warned);
            Some(Transition::Following { again })
        } else if !following
            && !self.warned
            && (self.following || now.duration_since(self.started) >= self.stale_after)
        {
            self.warned = true;
            Some(Transition::NotFollowing(self.reason(now)))
        } else {
            None
        };
        self.following = following;
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(case: &str, version: u64, probability: f64) -> CaseControl {
        CaseControl {
            case: case.to_owned(),
            probability,
            active: true,
            sampling: SamplingName::TestId,
            test_expires_secs: Some(30.0),
            version,
            changed_by: "test".to_owned(),
            changed_at: Utc::now(),
            rollout: None,
        }
    }

    fn json(control: &CaseControl) -> Vec<u8> {
        serde_json::to_vec(control).unwrap()
    }

    fn local(probability: f64) -> TriggerSettings {
        crate::Trigger::new("c")
            .probability(probability)
            .settings()
            .clone()
    }

    #[test]
    fn the_highest_version_wins() {
        let mut table = ControlTable::default();
        let v2 = control("a", 2, 0.5);
        assert!(matches!(
            table.apply(Some(b"a"), Some(&json(&v2))),
            Applied::Changed(_)
        ));
        assert!(matches!(
            table.apply(Some(b"a"), Some(&json(&control("a", 1, 0.1)))),
            Applied::Stale {
                held: 2,
                version: 1
            }
        ));
        assert!(matches!(
            table.apply(Some(b"a"), Some(&json(&control("a", 2, 0.1)))),
            Applied::Stale { .. }
        ));
        assert_eq!(table.get("a"), Some(&v2));
        let v3 = control("a", 3, 0.0);
        assert!(matches!(
            table.apply(Some(b"a"), Some(&json(&v3))),
            Applied::Changed(_)
        ));
        assert_eq!(table.get("a"), Some(&v3));
        // Cases are independent.
        table.apply(Some(b"b"), Some(&json(&control("b", 1, 1.0))));
        assert_eq!(table.len(), 2);
        assert!(matches!(
            table.apply(Some(b"a"), None),
            Applied::Removed(true)
        ));
        assert!(matches!(
            table.apply(Some(b"a"), None),
            Applied::Removed(false)
        ));
        assert_eq!(table.get("a"), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn malformed_records_are_refused_with_a_reason() {
        let mut table = ControlTable::default();
        let good = json(&control("a", 1, 0.5));
        let malformed =
            |table: &mut ControlTable, key: Option<&[u8]>, value: Option<&[u8]>| match table
                .apply(key, value)
            {
                Applied::Malformed(err) => err.to_string(),
                other => panic!("expected malformed, got {other:?}"),
            };
        assert!(malformed(&mut table, None, Some(&good)).contains("no key"));
        assert!(malformed(&mut table, Some(&[0xff]), Some(&good)).contains("UTF-8"));
        assert!(malformed(&mut table, Some(&[0xff]), None).contains("UTF-8"));
        assert!(malformed(&mut table, Some(b"a"), Some(b"{")).contains("JSON"));
        assert!(malformed(&mut table, Some(b"a"), Some(b"{}")).contains("JSON"));
        assert!(malformed(&mut table, Some(b"b"), Some(&good)).contains("is not its case"));
        for p in [-0.1, 1.5] {
            let bad = json(&control("a", 1, p));
            assert!(malformed(&mut table, Some(b"a"), Some(&bad)).contains("probability"));
        }
        let mut bad = control("a", 1, 0.5);
        bad.test_expires_secs = Some(0.0);
        assert!(malformed(&mut table, Some(b"a"), Some(&json(&bad))).contains("test_expires"));
        assert_eq!(table.len(), 0);
        // A NaN cannot travel in JSON; a record from elsewhere is checked all the same.
        assert!(control("a", 1, f64::NAN).validate().is_err());
    }

    #[test]
    fn a_record_decodes_with_defaults_for_optional_fields() {
        let value = br#"{"case":"a","probability":0.25,"active":false,"version":7,
            "changed_by":"api:alice","changed_at":"2026-11-25T10:00:00Z"}"#;
        let control = CaseControl::from_record(Some(b"a"), value).unwrap();
        assert_eq!(control.sampling, SamplingName::Random);
        assert_eq!(control.test_expires_secs, None);
        assert_eq!(control.rollout, None);
        assert!(!control.active);
    }

    #[test]
    fn decisions_follow_the_table_only_while_following() {
        let state = ControlState::default();
        let local = local(0.5);
        let decision = state.decision("c", &local);
        assert_eq!(decision.origin, Origin::NotFollowing);
        assert_eq!(decision.probability, 0.5);
        assert_eq!(
            state.effective("c", &local).source,
            SettingsSource::Local {
                reason: NOT_FOLLOWING.to_owned()
            }
        );

        state.apply(Some(b"c"), Some(&json(&control("c", 4, 0.01))));
        // Held, but not applied until following.
        assert_eq!(state.decision("c", &local).origin, Origin::NotFollowing);
        state.set_following(true, "");
        let effective = state.effective("c", &local);
        assert_eq!(effective.source, SettingsSource::Control { version: 4 });
        assert_eq!(effective.probability, 0.01);
        assert_eq!(effective.sampling, Sampling::TestId);
        assert_eq!(effective.test_expires, Duration::from_secs(30));
        assert_eq!(
            state.effective("other", &local).source,
            SettingsSource::Local {
                reason: NO_CONTROL_RECORD.to_owned()
            }
        );

        state.set_following(false, "cannot read the control topic t: broker down");
        let effective = state.effective("c", &local);
        assert_eq!(effective.probability, 0.5);
        assert_eq!(
            effective.source,
            SettingsSource::Local {
                reason: "cannot read the control topic t: broker down".to_owned()
            }
        );
        assert_eq!(
            state.status(),
            ControlStatus {
                following: false,
                reason: Some("cannot read the control topic t: broker down".to_owned()),
                cases: 1,
            }
        );
    }

    #[test]
    fn heartbeats_say_what_each_case_applies() {
        let state = ControlState::default();
        state.set_following(true, "");
        state.apply(Some(b"a"), Some(&json(&control("a", 2, 0.25))));
        let stats = state.stats("a", &local(0.5));
        stats.requests.fetch_add(8, Ordering::Relaxed);
        stats.tests_triggered.fetch_add(2, Ordering::Relaxed);
        state.announce("b", &local(0.75));
        let at = Utc::now();
        let beats = state.heartbeats("svc", "host:1", Duration::from_secs(5), at);
        assert_eq!(beats.len(), 2);
        assert_eq!(beats[0].0, "svc/host:1/a");
        let a = &beats[0].1;
        assert_eq!(
            (a.probability, a.requests, a.tests_triggered, a.every_ms),
            (0.25, 8, 2, 5_000)
        );
        assert_eq!(a.source, SettingsSource::Control { version: 2 });
        assert_eq!(beats[1].0, "svc/host:1/b");
        assert_eq!(beats[1].1.probability, 0.75);
        assert_eq!(beats[1].1.key(), beats[1].0);
        let round_trip: Heartbeat =
            serde_json::from_slice(&serde_json::to_vec(a).unwrap()).unwrap();
        assert_eq!(&round_trip, a);
    }

    #[test]
    fn following_needs_a_fresh_watermark_and_the_log_read_up_to_it() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut state = FollowState::new("t", Duration::from_secs(10), start);
        // Loading: not following, not yet worth a warning.
        assert_eq!(state.evaluate(at(100)), None);
        assert!(state.reason(at(100)).starts_with("loading"));
        state.on_probe(3, at(200));
        state.on_record(0);
        state.on_record(1);
        assert_eq!(state.evaluate(at(300)), None, "offset 2 not read yet");
        state.on_record(2);
        assert_eq!(
            state.evaluate(at(400)),
            Some(Transition::Following { again: false })
        );
        assert!(state.following());
        // Records and probes keep it following.
        state.on_probe(5, at(1_000));
        assert_eq!(state.evaluate(at(1_100)), None);
        assert!(
            state.following(),
            "following does not wait for each new watermark"
        );

        // No successful probe for 10 s: one warning, with the error.
        state.on_error("no broker can be reached".into());
        assert_eq!(state.evaluate(at(10_999)), None);
        let Some(Transition::NotFollowing(reason)) = state.evaluate(at(11_000)) else {
            panic!("expected a warning");
        };
        assert_eq!(
            reason,
            "cannot read the control topic t: no broker can be reached"
        );
        assert_eq!(state.evaluate(at(12_000)), None, "once per episode");
        assert!(!state.following());

        // Back: a probe gives a watermark to reach first.
        state.on_probe(9, at(13_000));
        assert_eq!(
            state.evaluate(at(13_100)),
            None,
            "offsets 5 to 8 not read yet"
        );
        assert!(state.reason(at(13_100)).starts_with("loading"));
        state.on_record(8);
        assert_eq!(
            state.evaluate(at(13_200)),
            Some(Transition::Following { again: true })
        );
    }

    #[test]
    fn a_topic_that_never_loads_is_warned_about_after_the_limit() {
        let start = Instant::now();
        let mut state = FollowState::new("t", Duration::from_secs(10), start);
        state.on_error("the topic t does not exist".into());
        assert_eq!(state.evaluate(start + Duration::from_secs(9)), None);
        assert_eq!(
            state.evaluate(start + Duration::from_secs(10)),
            Some(Transition::NotFollowing(
                "cannot read the control topic t: the topic t does not exist".into()
            ))
        );
        // An empty topic loads at once.
        state.on_probe(0, start + Duration::from_secs(11));
        assert_eq!(
            state.evaluate(start + Duration::from_secs(11)),
            Some(Transition::Following { again: true })
        );
    }

    #[test]
    fn options_are_checked() {
        assert!(ControlOptions::new("svc").instance("h:1").check().is_ok());
        assert_eq!(
            ControlOptions::new("svc").instance("h:1").check().unwrap(),
            "h:1"
        );
        assert!(ControlOptions::new("").check().is_err());
        assert!(ControlOptions::new("a/b").check().is_err());
        assert!(ControlOptions::new("svc").instance("x/y").check().is_err());
        assert!(ControlOptions::new("svc")
            .stale_after(Duration::from_secs(1))
            .check()
            .is_err());
        assert!(ControlOptions::new("svc")
            .heartbeat_every(Duration::ZERO)
            .check()
            .is_err());
        let instance = default_instance();
        let (host, pid) = instance.rsplit_once(':').unwrap();
        assert!(!host.is_empty() && !host.contains('/'));
        assert_eq!(pid, std::process::id().to_string());
    }
}
