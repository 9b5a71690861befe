//! Suite health per case: OK, FAIL, STALL, DOWN, with a hold-down against flapping; every
//! transition is logged, and the instance that speaks for the group (the owner of the
//! tests topic's partition 0) publishes it to the reports topic and sends it to the alert
//! webhooks ([`super::alerts`]).
//!
//! When LiveCheck itself is blind (Kafka unreachable, no partitions held), every case shows
//! `DOWN` with the cause, one alert goes out for the outage and one for its end; the cases'
//! own transitions are not alerted meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::{Report, Verdict};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::state::{Health, LiveState};

/// `kind` of a per-case transition.
pub const SUITE_STATE: &str = "suite_state";
/// `kind` of the one transition for the whole suite when LiveCheck goes blind or sees again.
pub const LIVECHECK_BLIND: &str = "livecheck_blind";
/// `case` of a [`LIVECHECK_BLIND`] transition: every case.
pub const EVERY_CASE: &str = "*";
/// What an instance that does not speak for the group says about alerts.
pub const NOT_THE_VOICE: &str = "alerts are sent by the instance that owns partition 0";

/// A suite-state transition, as logged, published and POSTed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// [`SUITE_STATE`] for one case, [`LIVECHECK_BLIND`] for the whole suite (tells it
    /// from a run report on the reports topic).
    pub kind: &'static str,
    /// The case ([`EVERY_CASE`] for [`LIVECHECK_BLIND`]).
    pub case: String,
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The cases concerned, for [`LIVECHECK_BLIND`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<String>,
    /// The test id of the last run that did not pass, when the case entered `FAIL` (`None`
    /// for `OK`, `STALL`, `DOWN`): the run an alert links to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_run: Option<String>,
}

/// Health rules.
#[derive(Debug, Clone)]
pub struct HealthRules {
    /// How long a case must stay healthy before `OK` is announced (and how long LiveCheck
    /// must see its inputs again before the end of an outage is): a clearing fault does not
    /// flap.
    pub hold_down: Duration,
    /// Passing runs in a row needed to recover from `FAIL`.
    pub recovery_passes: u32,
    /// After taking over as the group's voice, how long transitions are applied without
    /// alerts (the state is rebuilt from the reports topic meanwhile).
    pub warm_up: Duration,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            hold_down: Duration::from_secs(30),
            recovery_passes: 2,
            warm_up: Duration::from_secs(5),
        }
    }
}

/// What health is decided on, per case.
#[derive(Debug, Default)]
struct Inputs {
    consecutive_failures: u32,
    passes: u32,
    last_run_at: Option<DateTime<Utc>>,
    /// The test id of the last run that did not pass.
    last_failure: Option<String>,
}

/// LiveCheck blind: why, since when, and each case's state before.
#[derive(Debug)]
struct Blind {
    reason: String,
    since: DateTime<Utc>,
    clear_since: Option<DateTime<Utc>>,
    before: HashMap<String, (Health, DateTime<Utc>, String)>,
    /// Whether the outage alert went out (a warm-up may have held it back).
    alerted: bool,
}

#[derive(Debug)]
struct Monitor {
    inputs: HashMap<String, Inputs>,
    /// When a case's target became `OK` (continuously) while it is not `OK` yet.
    healthy_since: HashMap<String, DateTime<Utc>>,
    blind: Option<Blind>,
    /// No `STALL` for runs missed before this (the start, the end of an outage).
    stall_baseline: DateTime<Utc>,
    voice: bool,
    quiet_until: Option<DateTime<Utc>>,
    /// The last state the group announced per case, as read on the reports topic.
    announced: HashMap<String, Health>,
    /// The end of an outage whose start was announced, while this instance could not speak
    /// (warming up as the voice again after a rebalance): announced once it can.
    pending_recovery: Option<Transition>,
}

impl Monitor {
    /// The run an alert about `case` entering `to` links to: the last that did not pass,
    /// for `FAIL` only (a stall or an unreachable service has no failing run).
    fn failing_run(&self, case: &str, to: Health) -> Option<String> {
        if to != Health::Fail {
            return None;
        }
        self.inputs.get(case).and_then(|i| i.last_failure.clone())
    }
}

/// Decides transitions; sends them to the alert queue when this instance speaks for the
/// group.
#[derive(Debug)]
pub struct HealthMonitor {
    state: Arc<LiveState>,
    rules: HealthRules,
    monitor: Mutex<Monitor>,
    alerts: mpsc::Sender<Transition>,
}

impl HealthMonitor {
    /// A monitor over `state` that speaks for the group (see [`HealthMonitor::set_voice`]);
    /// transitions go to `alerts`.
    pub fn new(
        state: Arc<LiveState>,
        rules: HealthRules,
        alerts: mpsc::Sender<Transition>,
    ) -> Self {
        let monitor = Monitor {
            inputs: HashMap::new(),
            healthy_since: HashMap::new(),
            blind: None,
            stall_baseline: state.started_at,
            voice: true,
            quiet_until: None,
            announced: HashMap::new(),
            pending_recovery: None,
        };
        state.set_voice(true);
        Self {
            state,
            rules,
            monitor: Mutex::new(monitor),
            alerts,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &HealthRules {
        &self.rules
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Monitor> {
        self.monitor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every case shows DOWN because LiveCheck cannot see its inputs.
    pub fn is_blind(&self) -> bool {
        self.lock().blind.is_some()
    }

    /// Whether this instance took the group's voice less than [`HealthRules::warm_up`] ago
    /// (it sends no alert yet).
    pub fn warming_up(&self) -> bool {
        self.lock().quiet_until.is_some()
    }

    /// Whether this instance speaks for the group (decides from the whole reports topic
    /// and sends alerts).
    pub fn is_voice(&self) -> bool {
        self.lock().voice
    }

    /// Starts without the group's voice, as a service does before its runner is assigned
    /// any partition: [`Self::set_voice`] gives it when this instance gets partition 0. Says
    /// so in the log, as a wait, where giving the voice up later says it is another's.
    pub fn start_without_voice(&self) {
        self.without_voice(
            self.lock(),
            ": this instance sends them if it is assigned partition 0, and until then shows its own runs",
        );
    }

    /// Holds no voice from now on (`m`, locked, is this monitor's), logging [`NOT_THE_VOICE`]
    /// followed by `what`.
    fn without_voice(&self, mut m: std::sync::MutexGuard<'_, Monitor>, what: &str) {
        m.voice = false;
        m.quiet_until = None;
        drop(m);
        info!("{NOT_THE_VOICE}{what}");
        self.state.set_voice(false);
    }

    /// Takes (`true`) or gives up the group's voice. Taking it starts from the current
    /// state with fresh inputs and sends no alert for [`HealthRules::warm_up`]; at the end
    /// of the warm-up, only states that differ from what the group last announced are
    /// alerted.
    pub fn set_voice(&self, voice: bool) {
        let now = Utc::now();
        let mut m = self.lock();
        if m.voice == voice {
            return;
        }
        if !voice {
            self.without_voice(m, "; this instance shows its own runs and sends none");
            return;
        }
        m.voice = true;
        for inputs in m.inputs.values_mut() {
            inputs.consecutive_failures = 0;
            inputs.passes = 0;
        }
        m.quiet_until = Some(now + to_chrono(self.rules.warm_up));
        info!(
            warm_up_s = self.rules.warm_up.as_secs_f64(),
            "this instance owns partition 0: it decides suite health for the group from the reports topic and sends the alerts"
        );
        drop(m);
        self.state.set_voice(true);
    }

    /// A suite-state record read on the reports topic: what the group announced last.
    pub fn on_announced(&self, case: &str, health: Health) {
        self.lock().announced.insert(case.to_owned(), health);
    }

    /// Takes a finished run into account.
    pub fn on_report(&self, report: &Report) {
        {
            let mut m = self.lock();
            let n = m.inputs.entry(report.case.clone()).or_default();
            match report.verdict {
                Verdict::Pass => {
                    n.passes += 1;
                    n.consecutive_failures = 0;
                }
                Verdict::Skip => {}
                _ => {
                    n.passes = 0;
                    n.consecutive_failures += 1;
                    n.last_failure = Some(report.test_id.clone());
                }
            }
            n.last_run_at = n.last_run_at.max(Some(report.finished_at));
        }
        self.evaluate(&report.case, Utc::now(), None);
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
            self.evaluate(case, Utc::now(), down);
        }
    }

    /// LiveCheck is blind (`Some(why)`: Kafka unreachable, no partitions) or sees its
    /// inputs (`None`). Call it every second or so, before [`HealthMonitor::tick`].
    pub fn set_blind(&self, blind: Option<String>) {
        self.set_blind_at(blind, Utc::now());
    }

    fn set_blind_at(&self, blind: Option<String>, now: DateTime<Utc>) {
        let mut m = self.lock();
        match (&mut m.blind, blind) {
            (None, None) => {}
            (None, Some(reason)) => {
                let mut before = HashMap::new();
                let mut names = Vec::new();
                {
                    let mut cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
                    for (name, c) in cases.iter_mut() {
                        let s = &mut c.snapshot;
                        before.insert(
                            name.clone(),
                            (s.health, s.health_since, s.health_reason.clone()),
                        );
                        s.health = Health::Down;
                        s.health_since = now;
                        s.health_reason = reason.clone();
                        names.push(name.clone());
                    }
                }
                names.sort();
                m.healthy_since.clear();
                m.blind = Some(Blind {
                    reason: reason.clone(),
                    since: now,
                    clear_since: None,
                    before,
                    alerted: false,
                });
                self.state.set_blind(Some(reason.clone()));
                warn!(reason = %reason, "LiveCheck is blind: every case shows DOWN until it sees its inputs again");
                let t = Transition {
                    kind: LIVECHECK_BLIND,
                    case: EVERY_CASE.to_owned(),
                    from: Health::Ok,
                    to: Health::Down,
                    reason,
                    at: now,
                    cases: names,
                    failing_run: None,
                };
                self.state.record_transition(&t);
                // A recovery the group has not heard yet: for it the outage goes on.
                let alerted = m.pending_recovery.take().is_some() || self.emit(&mut m, t);
                if let Some(b) = &mut m.blind {
                    b.alerted = alerted;
                }
            }
            (Some(b), Some(reason)) => {
                b.clear_since = None;
                if b.reason != reason {
                    b.reason = reason.clone();
                    let mut cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
                    for c in cases.values_mut() {
                        c.snapshot.health_reason = reason.clone();
                    }
                    self.state.set_blind(Some(reason));
                }
            }
            (Some(b), None) => {
                let clear_since = *b.clear_since.get_or_insert(now);
                if now - clear_since < to_chrono(self.rules.hold_down) {
                    return;
                }
                let Some(b) = m.blind.take() else { return };
                let blind_for = (now - b.since).num_milliseconds() as f64 / 1000.0;
                let reason = format!(
                    "livecheck sees Kafka and its partitions again (blind for {blind_for:.1} s)"
                );
                let mut names = Vec::new();
                {
                    let mut cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
                    for (name, c) in cases.iter_mut() {
                        let s = &mut c.snapshot;
                        match b.before.get(name) {
                            Some((health, since, why)) if *health != Health::Ok => {
                                (s.health, s.health_since, s.health_reason) =
                                    (*health, *since, why.clone());
                            }
                            _ => {
                                (s.health, s.health_since, s.health_reason) =
                                    (Health::Ok, now, reason.clone());
                            }
                        }
                        names.push(name.clone());
                    }
                }
                names.sort();
                m.stall_baseline = now;
                self.state.set_blind(None);
                info!(blind_for_s = blind_for, "LiveCheck sees its inputs again");
                let t = Transition {
                    kind: LIVECHECK_BLIND,
                    case: EVERY_CASE.to_owned(),
                    from: Health::Down,
                    to: Health::Ok,
                    reason,
                    at: now,
                    cases: names,
                    failing_run: None,
                };
                self.state.record_transition(&t);
                if !self.emit(&mut m, t.clone()) && b.alerted && m.voice {
                    m.pending_recovery = Some(t);
                }
            }
        }
    }

    /// Re-evaluates every case (stall detection, hold-down, end of the warm-up); call it
    /// every second or so.
    pub fn tick(&self) {
        self.tick_at(Utc::now());
    }

    fn tick_at(&self, now: DateTime<Utc>) {
        let names: Vec<String> = self
            .state
            .cases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for name in &names {
            self.evaluate(name, now, None);
        }
        let mut m = self.lock();
        if m.quiet_until.is_some_and(|until| now >= until) {
            m.quiet_until = None;
            // Announce what the group has not heard yet (states it last heard of are not
            // repeated; a case it never heard of is taken as having been OK).
            let differing: Vec<(String, Health, DateTime<Utc>, String)> = {
                let cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
                names
                    .iter()
                    .filter_map(|name| {
                        let s = &cases.get(name)?.snapshot;
                        let heard = m.announced.get(name).copied().unwrap_or(Health::Ok);
                        (m.blind.is_none() && heard != s.health)
                            .then(|| (name.clone(), heard, s.health_since, s.health_reason.clone()))
                    })
                    .collect()
            };
            info!(
                announced = differing.len(),
                "warm-up over: this instance now alerts for the group"
            );
            // An outage that began during the warm-up is announced now.
            let held_back = m.blind.as_ref().filter(|b| !b.alerted).map(|b| Transition {
                kind: LIVECHECK_BLIND,
                case: EVERY_CASE.to_owned(),
                from: Health::Ok,
                to: Health::Down,
                reason: b.reason.clone(),
                at: now,
                cases: names.clone(),
                failing_run: None,
            });
            if let Some(t) = held_back {
                let alerted = self.emit(&mut m, t);
                if let Some(b) = &mut m.blind {
                    b.alerted = alerted;
                }
            }
            // The end of an announced outage that came during the warm-up.
            if let Some(t) = m.pending_recovery.take() {
                let _ = self.emit(&mut m, t);
            }
            for (case, heard, _, reason) in differing {
                let to = self
                    .state
                    .cases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&case)
                    .map_or(Health::Ok, |c| c.snapshot.health);
                let failing_run = m.failing_run(&case, to);
                let t = Transition {
                    kind: SUITE_STATE,
                    case,
                    from: heard,
                    to,
                    reason,
                    at: now,
                    cases: Vec::new(),
                    failing_run,
                };
                let _ = self.emit(&mut m, t);
            }
        }
    }

    fn evaluate(&self, case: &str, now: DateTime<Utc>, down_reason: Option<String>) {
        let mut m = self.lock();
        if m.blind.is_some() {
            return;
        }
        let (failures, passes, last_run_at) = m.inputs.get(case).map_or((0, 0, None), |i| {
            (i.consecutive_failures, i.passes, i.last_run_at)
        });
        let stall_baseline = m.stall_baseline;
        let failing_run = m.failing_run(case, Health::Fail);
        let transition = {
            let mut cases = self.state.cases.lock().unwrap_or_else(|p| p.into_inner());
            let Some(c) = cases.get_mut(case) else { return };
            let s = &c.snapshot;
            let failing = failures >= c.max_failures;
            let last = last_run_at.unwrap_or(stall_baseline).max(stall_baseline);
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
                let n = failures.max(c.max_failures);
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
            if target == Health::Ok {
                if s.health == Health::Ok {
                    m.healthy_since.remove(case);
                    return;
                }
                // Recovering waits until the case has been healthy for the hold-down: a
                // fault that clears and comes back within it sends nothing.
                let since = *m.healthy_since.entry(case.to_owned()).or_insert(now);
                if now - since < to_chrono(self.rules.hold_down) {
                    return;
                }
            } else {
                m.healthy_since.remove(case);
            }
            if target == s.health {
                return;
            }
            let transition = Transition {
                kind: SUITE_STATE,
                case: case.to_owned(),
                from: s.health,
                to: target,
                reason: reason.clone(),
                at: now,
                cases: Vec::new(),
                failing_run: failing_run.filter(|_| target == Health::Fail),
            };
            c.snapshot.health = target;
            c.snapshot.health_since = now;
            c.snapshot.health_reason = reason;
            transition
        };
        m.healthy_since.remove(case);
        if transition.to == Health::Ok {
            info!(case, from = %transition.from, "suite recovered: OK");
        } else {
            warn!(case, from = %transition.from, to = %transition.to, reason = %transition.reason, "suite state changed");
        }
        self.state.record_transition(&transition);
        let _ = self.emit(&mut m, transition);
    }

    /// When this instance speaks for the group and is not warming up, queues a transition
    /// for the reports topic and the webhooks. (The state records each transition once,
    /// where it happens; an announcement after the warm-up is not a second one.)
    fn emit(&self, m: &mut Monitor, transition: Transition) -> bool {
        if !m.voice {
            info!(case = %transition.case, to = %transition.to, "not alerting: {NOT_THE_VOICE}");
            return false;
        }
        if m.quiet_until.is_some() {
            info!(case = %transition.case, to = %transition.to, "not alerting yet: warming up as the group's voice");
            return false;
        }
        if transition.kind == SUITE_STATE {
            m.announced.insert(transition.case.clone(), transition.to);
        }
        let case = transition.case.clone();
        if self.alerts.try_send(transition).is_err() {
            self.state.metrics.alert_dropped();
            warn!(
                case,
                "alert queue full: transition not sent to the webhooks"
            );
            return false;
        }
        true
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use livecheck_core::{Case, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig, Suite, Topics};

    use super::*;

    const A: &str = "orders.place_order";
    const B: &str = "orders.refund";

    fn monitor(hold_down_s: u64) -> (HealthMonitor, mpsc::Receiver<Transition>) {
        let client =
            LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
        let cases = [A, B].map(|name| {
            Case::new(name)
                .max_consecutive_failures(1)
                .expect(|_: Run, (): ()| async { Ok(()) })
        });
        let runner = Runner::new(
            Suite::new(cases).expect("suite"),
            client.clone(),
            RunnerConfig::default(),
        );
        let state = Arc::new(LiveState::new(runner, client));
        let (tx, rx) = mpsc::channel(64);
        let rules = HealthRules {
            hold_down: Duration::from_secs(hold_down_s),
            recovery_passes: 2,
            warm_up: Duration::from_secs(10),
        };
        (HealthMonitor::new(state, rules, tx), rx)
    }

    fn report(case: &str, verdict: Verdict) -> Report {
        let now = Utc::now();
        Report {
            test_id: uuid::Uuid::new_v4().to_string(),
            case: case.to_owned(),
            verdict,
            error: None,
            missing_step: None,
            last_step: None,
            unawaited: Vec::new(),
            timeline: Vec::new(),
            issued_at: now,
            finished_at: now,
            arguments: serde_json::Value::Null,
            waits: Vec::new(),
            truncated: None,
            hops: Vec::new(),
            trace_id: None,
            invariant: None,
            route: None,
        }
    }

    fn sent(rx: &mut mpsc::Receiver<Transition>) -> Vec<(String, Health, Health)> {
        let mut out = Vec::new();
        while let Ok(t) = rx.try_recv() {
            out.push((t.case, t.from, t.to));
        }
        out
    }

    fn health_of(m: &HealthMonitor, case: &str) -> (Health, String) {
        let c = m
            .state
            .cases()
            .into_iter()
            .find(|c| c.name == case)
            .unwrap();
        (c.health, c.health_reason)
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    #[tokio::test]
    async fn blind_shows_every_case_down_with_the_cause_and_alerts_once_each_way() {
        let (m, mut rx) = monitor(30);
        m.on_report(&report(A, Verdict::Fail));
        assert_eq!(sent(&mut rx), [(A.into(), Health::Ok, Health::Fail)]);
        let t0 = Utc::now();
        let why = "livecheck cannot reach Kafka (brokers 127.0.0.1:1) since 12:00:00";
        m.set_blind_at(Some(why.to_owned()), t0);
        for case in [A, B] {
            assert_eq!(
                health_of(&m, case),
                (Health::Down, why.to_owned()),
                "{case}"
            );
        }
        m.set_blind_at(Some(why.to_owned()), t0 + secs(1));
        m.on_report(&report(B, Verdict::Fail));
        m.tick_at(t0 + secs(2));
        assert_eq!(
            health_of(&m, B).0,
            Health::Down,
            "no case decides while blind"
        );
        let alerts = sent(&mut rx);
        assert_eq!(alerts, [("*".into(), Health::Ok, Health::Down)]);

        // Inputs back, but not for the hold-down yet: still DOWN, nothing sent.
        m.set_blind_at(None, t0 + secs(5));
        m.set_blind_at(None, t0 + secs(20));
        assert_eq!(health_of(&m, A).0, Health::Down);
        // A relapse within the hold-down restarts it.
        m.set_blind_at(Some(why.to_owned()), t0 + secs(21));
        m.set_blind_at(None, t0 + secs(22));
        m.set_blind_at(None, t0 + secs(40));
        assert!(sent(&mut rx).is_empty());
        m.set_blind_at(None, t0 + secs(52));
        assert_eq!(sent(&mut rx), [("*".into(), Health::Down, Health::Ok)]);
        // Each case is back where it was before the outage.
        assert_eq!(health_of(&m, A).0, Health::Fail);
        let (health, reason) = health_of(&m, B);
        assert_eq!(health, Health::Ok);
        assert!(reason.starts_with("livecheck sees Kafka"), "{reason}");
    }

    #[tokio::test]
    async fn a_fail_names_the_run_that_did_not_pass_and_other_states_none() {
        let (m, mut rx) = monitor(0);
        let failed = report(A, Verdict::Timeout);
        m.on_report(&failed);
        let t = rx.try_recv().expect("FAIL");
        assert_eq!(
            (t.to, t.failing_run.as_deref()),
            (Health::Fail, Some(failed.test_id.as_str()))
        );
        m.on_report(&report(A, Verdict::Pass));
        m.on_report(&report(A, Verdict::Pass));
        m.tick_at(Utc::now() + secs(1));
        let t = rx.try_recv().expect("OK");
        assert_eq!((t.to, t.failing_run), (Health::Ok, None));
        m.set_down(B, Some("connection refused".into()));
        let t = rx.try_recv().expect("DOWN");
        assert_eq!(
            (t.case.as_str(), t.to, t.failing_run),
            (B, Health::Down, None)
        );
    }

    #[tokio::test]
    async fn a_clearing_fault_does_not_flap() {
        let (m, mut rx) = monitor(30);
        let t0 = Utc::now();
        m.on_report(&report(A, Verdict::Fail));
        m.on_report(&report(A, Verdict::Pass));
        m.on_report(&report(A, Verdict::Pass));
        m.tick_at(t0 + secs(10));
        assert_eq!(health_of(&m, A).0, Health::Fail, "healthy for 10 s of 30");
        // FAIL → (OK) → FAIL within the hold-down: nothing for the middle OK.
        m.on_report(&report(A, Verdict::Fail));
        m.on_report(&report(A, Verdict::Pass));
        m.on_report(&report(A, Verdict::Pass));
        m.tick_at(Utc::now() + secs(29));
        assert_eq!(health_of(&m, A).0, Health::Fail);
        m.tick_at(Utc::now() + secs(31));
        assert_eq!(health_of(&m, A).0, Health::Ok);
        assert_eq!(
            sent(&mut rx),
            [
                (A.into(), Health::Ok, Health::Fail),
                (A.into(), Health::Fail, Health::Ok)
            ]
        );
    }

    #[tokio::test]
    async fn only_the_voice_alerts_and_a_new_voice_repeats_nothing_the_group_heard() {
        let (m, mut rx) = monitor(30);
        // As the service starts: without the voice until its runner gets partition 0.
        m.start_without_voice();
        assert!(!m.is_voice());
        m.on_report(&report(A, Verdict::Fail));
        m.set_blind_at(Some("the runner holds no partitions".into()), Utc::now());
        assert_eq!(
            health_of(&m, A).0,
            Health::Down,
            "the local page still shows it"
        );
        assert!(sent(&mut rx).is_empty(), "not the voice: no alert");
        m.set_blind_at(None, Utc::now() + secs(1));
        m.set_blind_at(None, Utc::now() + secs(32));
        assert!(m.state.input_status().blind.is_none());
        assert!(sent(&mut rx).is_empty());
        assert_eq!(
            m.state.input_status().alerts,
            NOT_THE_VOICE,
            "the page says who alerts"
        );

        // Taking over: the group announced A's FAIL already; B fails during the warm-up.
        m.on_announced(A, Health::Fail);
        m.set_voice(true);
        m.on_report(&report(A, Verdict::Fail));
        m.on_report(&report(B, Verdict::Fail));
        assert_eq!(health_of(&m, B).0, Health::Fail);
        m.tick_at(Utc::now() + secs(5));
        assert!(sent(&mut rx).is_empty(), "warming up");
        m.tick_at(Utc::now() + secs(11));
        assert_eq!(sent(&mut rx), [(B.into(), Health::Ok, Health::Fail)]);
        m.tick_at(Utc::now() + secs(12));
        assert!(sent(&mut rx).is_empty());
        // The announcement after the warm-up is an alert, not a second transition.
        let entered_fail = |case: &str| {
            m.state
                .transition_counts()
                .into_iter()
                .find(|(c, to, _)| c == case && *to == Health::Fail)
                .map_or(0, |(_, _, n)| n)
        };
        assert_eq!(entered_fail(B), 1);
        let b = m.state.cases().into_iter().find(|c| c.name == B).unwrap();
        let to_fail = b
            .transitions
            .iter()
            .filter(|t| t.to == Health::Fail)
            .count();
        assert_eq!(to_fail, 1, "{:?}", b.transitions);
    }

    #[tokio::test]
    async fn an_outage_announced_before_the_voice_moved_back_is_ended_after_the_warm_up() {
        let (m, mut rx) = monitor(2);
        let t0 = Utc::now();
        m.set_blind_at(Some("livecheck cannot reach Kafka".into()), t0);
        assert_eq!(sent(&mut rx), [("*".into(), Health::Ok, Health::Down)]);
        // The outage cost the group session: partition 0 goes and comes back.
        m.set_voice(false);
        m.set_voice(true);
        m.set_blind_at(None, t0 + secs(20));
        m.set_blind_at(None, t0 + secs(23));
        assert!(sent(&mut rx).is_empty(), "warming up");
        m.tick_at(Utc::now() + secs(11));
        assert_eq!(sent(&mut rx), [("*".into(), Health::Down, Health::Ok)]);
        // A new outage then is announced again, once.
        m.set_blind_at(
            Some("livecheck cannot reach Kafka".into()),
            Utc::now() + secs(12),
        );
        assert_eq!(sent(&mut rx), [("*".into(), Health::Ok, Health::Down)]);
    }
}
