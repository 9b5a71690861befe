//! Suite health per case: OK, FAIL, STALL, DOWN, with a hold-down against flapping; every
//! transition is logged, published to the reports topic and sent to the alert webhook.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::{Report, Verdict};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::state::{Health, LiveState};

/// A suite-state transition, as logged, published and POSTed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Always `suite_state` (tells it from a run report on the reports topic).
    pub kind: &'static str,
    /// The case.
    pub case: String,
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Health rules.
#[derive(Debug, Clone)]
pub struct HealthRules {
    /// Minimum time in a state before leaving it (against flapping).
    pub hold_down: Duration,
    /// Passing runs in a row needed to recover from `FAIL`.
    pub recovery_passes: u32,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            hold_down: Duration::from_secs(5),
            recovery_passes: 2,
        }
    }
}

/// Decides transitions; sends them to the alert queue.
#[derive(Debug)]
pub struct HealthMonitor {
    state: Arc<LiveState>,
    rules: HealthRules,
    passes: std::sync::Mutex<HashMap<String, u32>>,
    alerts: mpsc::Sender<Transition>,
}

impl HealthMonitor {
    /// A monitor over `state`; transitions go to `alerts`.
    pub fn new(
        state: Arc<LiveState>,
        rules: HealthRules,
        alerts: mpsc::Sender<Transition>,
    ) -> Self {
        Self {
            state,
            rules,
            passes: std::sync::Mutex::new(HashMap::new()),
            alerts,
        }
    }

    /// Takes a finished run into account.
    pub fn on_report(&self, report: &Report) {
        {
            let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
            let n = passes.entry(report.case.clone()).or_default();
            match report.verdict {
                Verdict::Pass => *n += 1,
                Verdict::Skip => {}
                _ => *n = 0,
            }
        }
        self.evaluate(&report.case, Utc::now());
    }

    /// Marks the case's service unreachable (`DOWN`) or reachable again.
    pub fn set_down(&self, case: &str, down: Option<String>) {
        let changed = {
            let mut cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
            match cases.get_mut(case) {
                Some(c) if c.down != down.is_some() => {
                    c.down = down.is_some();
                    true
                }
                _ => false,
            }
        };
        if let Some(reason) = &down {
            warn!(case, %reason, "synthetic request failed");
        }
        if changed || down.is_none() {
            self.evaluate_with(case, Utc::now(), down);
        }
    }

    /// Re-evaluates every case (stall detection); call it every second or so.
    pub fn tick(&self) {
        let names: Vec<String> = self
            .state
            .cases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let now = Utc::now();
        for name in names {
            self.evaluate(&name, now);
        }
    }

    fn evaluate(&self, case: &str, now: DateTime<Utc>) {
        self.evaluate_with(case, now, None);
    }

    fn evaluate_with(&self, case: &str, now: DateTime<Utc>, down_reason: Option<String>) {
        let passes = self
            .passes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(case)
            .copied()
            .unwrap_or(0);
        let transition = {
            let mut cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
            let Some(c) = cases.get_mut(case) else { return };
            let s = &c.snapshot;
            let failing = s.consecutive_failures >= c.max_failures;
            let last = s.last_run_at.unwrap_or(self.state.started_at);
            let stalled = c
                .stall_after
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .is_some_and(|d| s.active && now - last > d);
            let (target, reason) = if c.down {
                (
                    Health::Down,
                    down_reason
                        .unwrap_or_else(|| "the synthetic request cannot reach the service".into()),
                )
            } else if failing || (s.health == Health::Fail && passes < self.rules.recovery_passes) {
                let n = s.consecutive_failures.max(c.max_failures);
                (
                    Health::Fail,
                    format!(
                        "{n} run{} in a row did not pass",
                        if n == 1 { "" } else { "s" }
                    ),
                )
            } else if stalled {
                (
                    Health::Stall,
                    format!(
                        "no run since {}",
                        livecheck_core::headers::format_time(last)
                    ),
                )
            } else {
                (Health::Ok, "runs pass".to_owned())
            };
            if target == s.health {
                return;
            }
            let held = now - s.health_since;
            let hold = chrono::Duration::from_std(self.rules.hold_down).unwrap_or_default();
            // Entering a worse state is immediate; recovering waits out the hold-down.
            if target == Health::Ok && held < hold {
                return;
            }
            let transition = Transition {
                kind: "suite_state",
                case: case.to_owned(),
                from: s.health,
                to: target,
                reason: reason.clone(),
                at: now,
            };
            c.snapshot.health = target;
            c.snapshot.health_since = now;
            c.snapshot.health_reason = reason;
            transition
        };
        *self
            .state
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(transition.to)
            .or_default() += 1;
        if transition.to == Health::Ok {
            info!(case, from = %transition.from, "suite recovered: OK");
        } else {
            warn!(case, from = %transition.from, to = %transition.to, reason = %transition.reason, "suite state changed");
        }
        if self.alerts.try_send(transition).is_err() {
            warn!(case, "alert queue full: transition not sent to the webhook");
        }
    }
}

/// Sends transitions to the reports topic and the webhook (JSON POST, retried), never
/// blocking the runner. Returns when the queue closes.
pub async fn deliver_alerts(
    mut rx: mpsc::Receiver<Transition>,
    state: Arc<LiveState>,
    webhook: Option<String>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    while let Some(t) = rx.recv().await {
        let client = &state.client;
        if let Err(err) = client.publish_json(&client.topics().reports, &t.case, &t) {
            warn!(case = %t.case, "suite-state record {err}");
        }
        let Some(url) = &webhook else { continue };
        let mut delay = Duration::from_millis(250);
        for attempt in 1..=4 {
            match http.post(url).json(&t).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    warn!(%url, status = %r.status(), attempt, "alert webhook refused the alert")
                }
                Err(e) => warn!(%url, error = %e, attempt, "alert webhook unreachable"),
            }
            if attempt == 4 {
                warn!(%url, case = %t.case, to = %t.to, "alert not delivered after 4 attempts");
            } else {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
