//! Verdicts and reports: what a run ends in.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Every step arrived and every contract held.
    Pass,
    /// A contract was violated (an `ensure!` or `assert!` failed, or the check panicked).
    Fail,
    /// The check itself errored (a value did not decode, the stimulus failed, ...).
    Error,
    /// A step did not arrive in time.
    Timeout,
    /// The test was not run (expired, inactive case, runner at capacity).
    Skip,
}

impl Verdict {
    /// `PASS`, `FAIL`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
            Verdict::Timeout => "TIMEOUT",
            Verdict::Skip => "SKIP",
        }
    }

    /// All verdicts, in display order.
    pub const ALL: [Verdict; 5] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Error,
        Verdict::Timeout,
        Verdict::Skip,
    ];
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a run's timeline: one occurrence of a signal (one send), awaited or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Signal name.
    pub signal: String,
    /// The item, for a per-item step ([`crate::Signal::send_item`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Whether one of the run's waits took this occurrence. A repeated step shows as a
    /// second, not awaited, occurrence.
    #[serde(default = "yes")]
    pub awaited: bool,
    /// When the service sent it (the service's clock).
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub sent_at: DateTime<Utc>,
    /// When the runner received it.
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub arrived_at: DateTime<Utc>,
    /// The record's own timestamp: the event time lateness is judged by.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json_time::serialize_option"
    )]
    pub event_at: Option<DateTime<Utc>>,
    /// Milliseconds from the previous step's send to this one's (the first step: since the
    /// test was issued): the system's own latency.
    pub latency_ms: f64,
    /// Milliseconds from the send to the runner's receipt: the transport's and the
    /// runner's lag, apart from the system's latency.
    #[serde(default)]
    pub lag_ms: f64,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// The outcome of one run, published to the reports topic keyed by the test's route if it
/// had one, else by its test id (as [`crate::TestContext::partition_key`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Test id.
    pub test_id: String,
    /// Case name.
    pub case: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What went wrong, for every verdict but `PASS`.
    pub error: Option<String>,
    /// The step that never came (`TIMEOUT`).
    pub missing_step: Option<String>,
    /// The last step that did come.
    pub last_step: Option<String>,
    /// Signals that arrived for this test but were never waited for (each name once).
    #[serde(default)]
    pub unawaited: Vec<String>,
    /// Every occurrence of every step read for the test, in the order they were sent.
    pub timeline: Vec<Step>,
    /// What each of the run's waits looked for and what it got, in order (for example
    /// "never `cancelled` within 5s: none came").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<String>,
    /// When the test was issued.
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub issued_at: DateTime<Utc>,
    /// When the verdict was reached.
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub finished_at: DateTime<Utc>,
    /// Case arguments.
    #[serde(default)]
    pub arguments: serde_json::Value,
    /// Set when the report was too large to publish whole: what was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncation>,
    /// Where the test's records went between services (LiveCheck's Kafka helpers), in the
    /// order they happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<crate::hop::Hop>,
    /// The W3C trace id the test was carried with, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The test's route ([`crate::TestContext::route`]), when it had one: the report is
    /// keyed by it, so it lands on the partition of the test's other records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Set on a `FAIL` of kind "invariant": the business rule the run found broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invariant: Option<Invariant>,
}

impl Report {
    /// What kind of failure this is, for grouping: `invariant` for a broken business rule,
    /// else the verdict in lower case (`fail`, `timeout`, ...).
    pub fn failure_kind(&self) -> &'static str {
        if self.invariant.is_some() {
            return "invariant";
        }
        match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Timeout => "timeout",
            Verdict::Skip => "skip",
        }
    }
}

/// A business rule a run found broken ([`crate::ensure_invariant!`]): the report of a `FAIL`
/// of kind "invariant".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariant {
    /// The rule, as the case states it ("open sell exposure <= limit").
    pub rule: String,
    /// The business key it was checked for (user, account).
    pub key: String,
    /// The values it was checked on, by name.
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Display for Invariant {
    /// `invariant broken: open sell exposure <= limit, for key "u1" (limit=100, open=120)`
    /// (the values by name, in alphabetical order)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant broken: {}, for key {:?}", self.rule, self.key)?;
        if !self.values.is_empty() {
            f.write_str(" (")?;
            for (i, (name, value)) in self.values.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{name}={value}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What was cut from a report too large to publish whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// The size of the whole report, in bytes of JSON.
    pub original_bytes: usize,
    /// The fields cut or emptied (`arguments`, `error`, `unawaited`, `timeline`).
    pub fields: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Report {
    /// A readable, multi-line account of the run: verdict, error, every step and the
    /// step that never came.
    pub fn render(&self) -> String {
        use fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} (test {})",
            self.case, self.verdict, self.test_id
        );
        if let Some(error) = &self.error {
            let _ = writeln!(out, "  error: {error}");
        }
        let _ = writeln!(
            out,
            "  issued at {}",
            crate::headers::format_time(self.issued_at)
        );
        for step in &self.timeline {
            let name = match &step.item {
                Some(item) => format!("{}[{item}]", step.signal),
                None => step.signal.clone(),
            };
            let _ = writeln!(
                out,
                "  {} {:<24} +{:>9.3} ms  sent {}  (runner lag {:.1} ms; {}[{}]@{})",
                if step.awaited { '✓' } else { '·' },
                name,
                step.latency_ms,
                crate::headers::format_time(step.sent_at),
                step.lag_ms,
                step.topic,
                step.partition,
                step.offset
            );
        }
        for wait in &self.waits {
            let _ = writeln!(out, "  - {wait}");
        }
        if let Some(missing) = &self.missing_step {
            let _ = writeln!(out, "  ✗ {missing:<24} never arrived");
        }
        if !self.unawaited.is_empty() {
            let _ = writeln!(
                out,
                "  arrived but not awaited: {}",
                self.unawaited.join(", ")
            );
        }
        if let Some(t) = &self.truncated {
            let _ = writeln!(
                out,
                "  (published truncated: {} cut from {} bytes)",
                t.fields.join(", "),
                t.original_bytes
            );
        }
        let _ = write!(
            out,
            "  verdict at {}",
            crate::headers::format_time(self.finished_at)
        );
        out
    }
}
