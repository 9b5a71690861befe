//! One source of truth for case settings: the control topic, and what services report back.
//!
//! The `livecheck` service publishes each case's settings ([`CaseControl`], keyed by case
//! name) to the compacted control topic (`{prefix}livecheck-control`, one partition). Every
//! service's [`crate::LiveCheck`] client follows it and its triggers sample with the
//! published probability and active flag, falling back to their compiled-in defaults (and
//! saying so) while the topic cannot be read. Services report what they apply on a
//! heartbeat ([`Heartbeat`], keyed by service, instance and case) to
//! `{prefix}livecheck-heartbeats`, so the status page shows the sampling really applied.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::trigger::Sampling;

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
    /// Requests the trigger decided on since the instance started.
    pub requests: u64,
    /// Tests it triggered since the instance started.
    pub tests_triggered: u64,
    /// When this heartbeat was made.
    pub at: DateTime<Utc>,
    /// How often the instance sends one, in milliseconds (a reader marks the instance
    /// stale after a few missed).
    pub every_ms: u64,
}
