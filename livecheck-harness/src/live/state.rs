//! What live mode knows and shows: per-case health, pass rates (since the start and over
//! sliding windows), invariant failures (broken business rules: since the start by rule,
//! and over the windows), recent runs, the last failures of each kind, transitions, step
//! latencies. Every number of the status page comes from one [`CaseSnapshot`]; the
//! runner's own facts (Kafka, partitions, tables) from [`InputStatus`].
//!
//! A broken invariant is a `FAIL` like any other for suite health and alerts; its kind of
//! failure is its rule (`invariant: <rule>`), whatever the key and the values, which each
//! run keeps in its report.
//!
//! Memory is bounded whatever the traffic: per case [`RECENT_PER_CASE`] runs, a bucket of
//! counts per 10 s over an hour, [`history::KINDS_PER_CASE`] kinds of failure of
//! [`history::RUNS_PER_KIND`] runs each, [`history::TRANSITIONS_PER_CASE`] transitions,
//! [`history::RULES_PER_CASE`] rules; [`RUNS_KEPT`] runs by test id.

pub mod history;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::control::CaseControl;
use livecheck_core::{LiveCheck, Report, Runner, Verdict};
use serde::Serialize;

use super::control::{ControlView, RolloutDriver, RolloutLive};
use super::fleet::{Fleet, InstanceView};
use super::health::{Transition, EVERY_CASE, LIVECHECK_BLIND};
use super::metrics::Metrics;
use super::rollout::{Position, RolloutState};
pub use history::{FailureKind, RuleCount, TransitionRecord, WindowRate, DEFAULT_HISTORY_WINDOW};
use history::{Failures, InvariantCounts, RateBuckets, Transitions};

/// Suite state of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    /// Runs pass.
    Ok,
    /// `max_consecutive_failures` runs in a row did not pass.
    Fail,
    /// No run for `warn_stalled_after`.
    Stall,
    /// The synthetic request could not reach the service.
    Down,
}

impl Health {
    /// `OK`, `FAIL`, `STALL`, `DOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Fail => "FAIL",
            Health::Stall => "STALL",
            Health::Down => "DOWN",
        }
    }

    /// All states.
    pub const ALL: [Health; 4] = [Health::Ok, Health::Fail, Health::Stall, Health::Down];
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Upper bounds (seconds) of the step-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram (Prometheus style: cumulative at render time).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    /// Count per bucket of [`LATENCY_BUCKETS`] (not cumulative), plus one for `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// One case as the status page and `/api/cases` show it.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSnapshot {
    /// Case name.
    pub name: String,
    /// Suite state.
    pub health: Health,
    /// Since when.
    pub health_since: DateTime<Utc>,
    /// Why (the last transition's reason).
    pub health_reason: String,
    /// What the page's headline says now: while runs fail in a row, how many (the same
    /// number as `consecutive_failures`); else `health_reason`.
    pub headline: String,
    /// Whether the case is active: as published on the control topic (what this
    /// instance's runner applies: it skips the tests of an inactive case), else as
    /// configured.
    pub active: bool,
    /// Sampling probability: as published, else as configured.
    pub probability: f64,
    /// The case's settings as published on the control topic (`None`: nothing read yet).
    pub published: Option<CaseControl>,
    /// What each service instance applies (from the heartbeats topic).
    pub instances: Vec<InstanceView>,
    /// The roll-out plan and where it stands (from the published record).
    pub rollout: Option<RolloutView>,
    /// Runs by verdict.
    pub verdicts: HashMap<Verdict, u64>,
    /// Share of PASS among finished non-SKIP runs since the start (`None` before the first).
    pub pass_rate: Option<f64>,
    /// Runs, pass rate and invariant failures over the last 5 minutes and the last hour (by
    /// the runs' `finished_at`, exact to 10 s).
    pub pass_rates: Vec<WindowRate>,
    /// Runs that failed because a business invariant was broken, since the start (they
    /// count as `FAIL` in `verdicts` too).
    pub invariant_failures: u64,
    /// The same by rule, sorted by rule (at most [`history::RULES_PER_CASE`] rules apart).
    pub invariant_failures_by_rule: Vec<RuleCount>,
    /// Non-passing runs in a row.
    pub consecutive_failures: u32,
    /// Non-passing runs in a row that make the case FAIL (`max_consecutive_failures`).
    pub fail_after: u32,
    /// When the last run finished.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The most recent runs, newest first.
    pub recent: Vec<Arc<Report>>,
    /// How long `failures` keeps a run, seconds (`--history-window`).
    pub history_window_secs: u64,
    /// The last failures of each kind that finished within the history window, the kind
    /// with the newest failure first.
    pub failures: Vec<FailureKind>,
    /// Suite-state transitions with their reasons, newest first.
    pub transitions: Vec<TransitionRecord>,
}

/// A roll-out as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    /// Plan and position, as published.
    #[serde(flatten)]
    pub position: Position,
    /// `running`, `completed`, `rolled back`, `stopped`.
    pub state_text: &'static str,
    /// When the current step may advance at the earliest (running plans).
    pub next_decision_at: Option<DateTime<Utc>>,
    /// Runs and failures of the current step so far, when this instance drives it.
    pub live: Option<RolloutLive>,
    /// Whether this instance drives the roll-outs (it is the group's voice).
    pub driven_here: bool,
}

pub(crate) struct CaseState {
    pub(crate) snapshot: CaseSnapshot,
    pub(crate) latencies: HashMap<String, Histogram>,
    pub(crate) stall_after: Option<Duration>,
    pub(crate) max_failures: u32,
    pub(crate) down: bool,
    rates: RateBuckets,
    invariants: InvariantCounts,
    failures: Failures,
    transitions: Transitions,
}

/// Runs by test id, and their ids oldest first (to bound the map).
type RecentRuns = (HashMap<String, Arc<Report>>, VecDeque<String>);

/// Whether this instance speaks for the group and whether it is blind, as the health
/// monitor decided.
#[derive(Debug, Clone, Default)]
struct GroupView {
    voice: bool,
    blind: Option<String>,
}

/// What LiveCheck knows about its own inputs: `/readyz`, `/api/status`, the page's banner.
#[derive(Debug, Clone, Serialize)]
pub struct InputStatus {
    /// Kafka reachable and partitions of the tests topic held.
    pub ready: bool,
    /// Why not ready.
    pub reason: Option<String>,
    /// Whether Kafka is reachable.
    pub kafka_reachable: bool,
    /// Since when it is not.
    pub kafka_down_since: Option<DateTime<Utc>>,
    /// Bootstrap servers.
    pub brokers: String,
    /// Partitions of the tests topic held by this instance's runner.
    pub assigned_partitions: usize,
    /// The suite's tables, with the entries this instance's runner holds of each.
    pub tables: Vec<TableStatus>,
    /// Why every case shows DOWN (LiveCheck blind), if it does.
    pub blind: Option<String>,
    /// Whether this instance decides suite health for the group and sends the alerts.
    pub voice: bool,
    /// Who sends alerts, in words.
    pub alerts: String,
    /// Whether the control topic was read to its end (the published settings are known).
    pub control_read: bool,
    /// Why the control topic cannot be read, if it cannot.
    pub control_problem: Option<String>,
    /// Why the heartbeats topic cannot be read, if it cannot.
    pub heartbeats_problem: Option<String>,
}

/// A table of the suite as `/api/status` and the page show it ([`Runner::tables`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStatus {
    /// The table's name.
    pub name: String,
    /// Read whole by every instance (`true`), or partitioned like the tests.
    pub global: bool,
    /// Entries this instance's runner holds: of the partitions it owns, or all of a global
    /// table.
    pub entries: usize,
}

/// Live state shared by the service, the health checks and the web surfaces.
pub struct LiveState {
    pub(crate) cases: Mutex<HashMap<String, CaseState>>,
    runs: Mutex<RecentRuns>,
    /// The runner (counters, buffers).
    pub runner: Runner,
    /// The client (counters).
    pub client: LiveCheck,
    /// Consumer lag per partition, refreshed by the service ([`LiveState::lag`]).
    lag: Mutex<Vec<(String, i32, i64)>>,
    /// Health transitions so far, by case and target state.
    transitions: Mutex<HashMap<(String, Health), u64>>,
    /// When live mode started.
    pub started_at: DateTime<Utc>,
    /// The control topic as read back.
    pub control: Arc<ControlView>,
    /// What the services apply (heartbeats).
    pub fleet: Arc<Fleet>,
    /// Roll-outs driven by this instance.
    pub rollouts: Arc<RolloutDriver>,
    group: Mutex<GroupView>,
    history_window: Duration,
    /// Series recorded as things happen (run durations, alert deliveries) for `/metrics`.
    pub metrics: Metrics,
}

impl std::fmt::Debug for LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveState")
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

/// Recent runs kept per case.
pub const RECENT_PER_CASE: usize = 20;
/// Runs kept for `/api/runs/{id}`.
pub const RUNS_KEPT: usize = 2_000;

impl LiveState {
    /// Consumer lag per partition: `(topic, partition, lag)`, as last read.
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the consumer lag (the service reads it every few seconds).
    pub(crate) fn set_lag(&self, lag: Vec<(String, i32, i64)>) {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }

    /// State for the runner's suite.
    pub fn new(runner: Runner, client: LiveCheck) -> Self {
        let now = Utc::now();
        let cases = runner
            .suite()
            .cases()
            .into_iter()
            .map(|case| {
                (
                    case.name().to_owned(),
                    CaseState {
                        snapshot: CaseSnapshot {
                            name: case.name().to_owned(),
                            health: Health::Ok,
                            health_since: now,
                            health_reason: "started".to_owned(),
                            headline: String::new(),
                            active: case.settings().active,
                            probability: case.settings().probability,
                            published: None,
                            instances: Vec::new(),
                            rollout: None,
                            verdicts: HashMap::new(),
                            pass_rate: None,
                            pass_rates: Vec::new(),
                            invariant_failures: 0,
                            invariant_failures_by_rule: Vec::new(),
                            consecutive_failures: 0,
                            fail_after: case.settings().max_consecutive_failures.max(1),
                            last_run_at: None,
                            recent: Vec::new(),
                            history_window_secs: 0,
                            failures: Vec::new(),
                            transitions: Vec::new(),
                        },
                        latencies: HashMap::new(),
                        stall_after: case.settings().warn_stalled_after,
                        max_failures: case.settings().max_consecutive_failures.max(1),
                        down: false,
                        rates: RateBuckets::default(),
                        invariants: InvariantCounts::default(),
                        failures: Failures::default(),
                        transitions: Transitions::default(),
                    },
                )
            })
            .collect();
        Self {
            cases: Mutex::new(cases),
            runs: Mutex::new((HashMap::new(), VecDeque::new())),
            runner,
            client,
            lag: Mutex::new(Vec::new()),
            transitions: Mutex::new(HashMap::new()),
            started_at: now,
            control: Arc::default(),
            fleet: Arc::default(),
            rollouts: Arc::default(),
            group: Mutex::new(GroupView::default()),
            history_window: DEFAULT_HISTORY_WINDOW,
            metrics: Metrics::default(),
        }
    }

    /// Keeps each kind's last failures until they finished longer than `window` ago
    /// (default [`DEFAULT_HISTORY_WINDOW`]); at least a second.
    #[must_use]
    pub fn history_window(mut self, window: Duration) -> Self {
        self.history_window = window.max(Duration::from_secs(1));
        self
    }

    pub(crate) fn set_voice(&self, voice: bool) {
        self.group.lock().unwrap_or_else(|p| p.into_inner()).voice = voice;
    }

    pub(crate) fn set_blind(&self, blind: Option<String>) {
        self.group.lock().unwrap_or_else(|p| p.into_inner()).blind = blind;
    }

    /// Readiness and what LiveCheck knows about its inputs now.
    pub fn input_status(&self) -> InputStatus {
        let group = self.group.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let connectivity = self.runner.connectivity();
        let kafka_reachable = connectivity.reachable();
        let assigned_partitions = self.runner.assigned_partitions();
        let reason = if !kafka_reachable {
            Some(connectivity.describe().unwrap_or_else(|| {
                format!(
                    "livecheck cannot reach Kafka (brokers {})",
                    connectivity.brokers()
                )
            }))
        } else if assigned_partitions == 0 {
            Some("the runner holds no partitions".to_owned())
        } else {
            None
        };
        InputStatus {
            ready: reason.is_none(),
            reason,
            kafka_reachable,
            kafka_down_since: connectivity.down_since(),
            brokers: connectivity.brokers().to_owned(),
            assigned_partitions,
            tables: self.tables(),
            blind: group.blind,
            voice: group.voice,
            alerts: if group.voice {
                "alerts are sent by this instance (it owns partition 0)".to_owned()
            } else {
                super::health::NOT_THE_VOICE.to_owned()
            },
            control_read: self.control.is_caught_up(),
            control_problem: self.control.problem(),
            heartbeats_problem: self.fleet.problem(),
        }
    }

    /// Records a finished run (counts, pass rates, recent runs, failures, step latencies).
    pub fn record(&self, report: Arc<Report>) {
        self.record_at(report, Utc::now());
    }

    /// [`LiveState::record`] as if it were `now`: windows and the history window are
    /// reckoned from `now`, the run's time is its `finished_at`.
    pub fn record_at(&self, report: Arc<Report>, now: DateTime<Utc>) {
        self.metrics.observe_run(&report);
        {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if runs
                .0
                .insert(report.test_id.clone(), report.clone())
                .is_none()
            {
                runs.1.push_back(report.test_id.clone());
            }
            while runs.1.len() > RUNS_KEPT {
                if let Some(old) = runs.1.pop_front() {
                    runs.0.remove(&old);
                }
            }
        }
        let mut cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        let Some(case) = cases.get_mut(&report.case) else {
            return;
        };
        let s = &mut case.snapshot;
        *s.verdicts.entry(report.verdict).or_default() += 1;
        let pass = s.verdicts.get(&Verdict::Pass).copied().unwrap_or(0);
        let judged: u64 = s
            .verdicts
            .iter()
            .filter(|(v, _)| **v != Verdict::Skip)
            .map(|(_, n)| *n)
            .sum();
        s.pass_rate = (judged > 0).then(|| pass as f64 / judged as f64);
        match report.verdict {
            Verdict::Pass => s.consecutive_failures = 0,
            Verdict::Skip => {}
            _ => s.consecutive_failures += 1,
        }
        s.last_run_at = Some(report.finished_at);
        s.recent.insert(0, report.clone());
        s.recent.truncate(RECENT_PER_CASE);
        case.rates.record(
            report.finished_at,
            report.verdict,
            report.invariant.is_some(),
            now,
        );
        if let Some(invariant) = &report.invariant {
            case.invariants.record(&invariant.rule);
        }
        case.failures.record(&report, now, self.history_window);
        for step in report.timeline.iter().filter(|s| s.awaited) {
            case.latencies
                .entry(step.signal.clone())
                .or_default()
                .observe(step.latency_ms / 1000.0);
        }
    }

    /// Records a suite-state transition (every instance records what it decides, whether
    /// or not it alerts): counted, and kept in the history of its case (of every case it
    /// names, for the whole suite's).
    pub fn record_transition(&self, transition: &Transition) {
        *self
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((transition.case.clone(), transition.to))
            .or_default() += 1;
        let record = TransitionRecord {
            from: transition.from,
            to: transition.to,
            reason: transition.reason.clone(),
            at: transition.at,
            suite: transition.kind == LIVECHECK_BLIND,
        };
        let mut cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        if transition.case == EVERY_CASE {
            for (name, case) in cases.iter_mut() {
                if transition.cases.is_empty() || transition.cases.contains(name) {
                    case.transitions.record(record.clone());
                }
            }
        } else if let Some(case) = cases.get_mut(&transition.case) {
            case.transitions.record(record);
        }
    }

    /// Transitions so far: (case, state entered, count), sorted.
    pub fn transition_counts(&self) -> Vec<(String, Health, u64)> {
        let mut out: Vec<_> = self
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((case, to), n)| (case.clone(), *to, *n))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
        out
    }

    /// Every case, sorted by name, with what is published and applied.
    pub fn cases(&self) -> Vec<CaseSnapshot> {
        self.cases_at(Utc::now())
    }

    /// [`LiveState::cases`] as if it were `now` (windows, aging out, instances).
    pub fn cases_at(&self, now: DateTime<Utc>) -> Vec<CaseSnapshot> {
        let window = self.history_window;
        let mut out: Vec<_> = {
            let mut cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
            cases
                .values_mut()
                .map(|c| {
                    c.rates.prune(now);
                    c.failures.prune(now, window);
                    let mut s = c.snapshot.clone();
                    s.headline = headline(&s);
                    s.pass_rates = c.rates.rates(now);
                    s.invariant_failures = c.invariants.total();
                    s.invariant_failures_by_rule = c.invariants.by_rule();
                    s.history_window_secs = window.as_secs();
                    s.failures = c.failures.kinds().to_vec();
                    s.transitions = c.transitions.to_vec();
                    s
                })
                .collect()
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let driving = self.rollouts.is_driving();
        for case in &mut out {
            let published = self.control.get(&case.name).map(|p| p.control);
            case.instances = self.fleet.instances(&case.name, published.as_ref(), now);
            case.rollout = published
                .as_ref()
                .and_then(|p| p.rollout.as_ref())
                .and_then(Position::from_json)
                .map(|position| RolloutView {
                    state_text: position.state.as_str(),
                    next_decision_at: chrono::Duration::from_std(position.plan.every())
                        .ok()
                        .and_then(|every| position.step_started_at.checked_add_signed(every))
                        .filter(|_| position.state == RolloutState::Running),
                    live: self.rollouts.live(&case.name, &position),
                    driven_here: driving,
                    position,
                });
            if let Some(p) = &published {
                case.probability = p.probability;
                case.active = p.active;
            }
            case.published = published;
        }
        out
    }

    /// The suite's tables and the entries this instance's runner holds of each, sorted by
    /// name.
    pub fn tables(&self) -> Vec<TableStatus> {
        let mut tables: Vec<TableStatus> = self
            .runner
            .tables()
            .into_iter()
            .map(|t| TableStatus {
                name: t.name.to_owned(),
                global: t.global,
                entries: t.entries,
            })
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        tables
    }

    /// Step-latency histograms: (case, signal, histogram).
    pub fn latencies(&self) -> Vec<(String, String, Histogram)> {
        let cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (name, case) in cases.iter() {
            for (signal, h) in &case.latencies {
                out.push((name.clone(), signal.clone(), h.clone()));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// A run by test id: one of the last [`RUNS_KEPT`], or a failure the page still
    /// shows.
    pub fn run(&self, test_id: &str) -> Option<Arc<Report>> {
        let recent = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(test_id)
            .cloned();
        recent.or_else(|| {
            let cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
            cases
                .values()
                .find_map(|c| c.failures.run(test_id).cloned())
        })
    }
}

/// The headline of a case: while runs fail in a row, how many (so that it always says what
/// `consecutive_failures` says; the reason of the transition stays in the history), else
/// why it is in its state.
fn headline(s: &CaseSnapshot) -> String {
    let n = s.consecutive_failures;
    let in_a_row = || {
        format!(
            "{n} run{} in a row did not pass (FAIL at {})",
            if n == 1 { "" } else { "s" },
            s.fail_after
        )
    };
    match s.health {
        Health::Ok | Health::Fail if n > 0 => in_a_row(),
        Health::Fail if s.last_run_at.is_some() => {
            "recovering: the last run passed; FAIL until enough pass in a row".to_owned()
        }
        _ => s.health_reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use livecheck_core::{Case, KafkaConfig, Run, RunnerConfig, Suite, Topics};

    use super::*;

    const C: &str = "orders.place_order";

    fn state(window: Duration) -> LiveState {
        let client =
            LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
        let case = Case::new(C)
            .max_consecutive_failures(3)
            .expect(|_: Run, (): ()| async { Ok(()) });
        let runner = Runner::new(
            Suite::new([case]).expect("suite"),
            client.clone(),
            RunnerConfig::default(),
        );
        LiveState::new(runner, client).history_window(window)
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn run(id: &str, verdict: Verdict, at: DateTime<Utc>) -> Arc<Report> {
        Arc::new(Report {
            test_id: id.to_owned(),
            case: C.to_owned(),
            verdict,
            error: (verdict != Verdict::Pass).then(|| format!("order {id} was not saved")),
            missing_step: None,
            last_step: None,
            unawaited: Vec::new(),
            timeline: Vec::new(),
            waits: Vec::new(),
            issued_at: at,
            finished_at: at,
            arguments: serde_json::Value::Null,
            truncated: None,
            hops: Vec::new(),
            trace_id: None,
            invariant: None,
            route: None,
        })
    }

    fn transition(from: Health, to: Health, reason: &str, at: DateTime<Utc>) -> Transition {
        Transition {
            kind: super::super::health::SUITE_STATE,
            case: C.to_owned(),
            from,
            to,
            reason: reason.to_owned(),
            at,
            cases: Vec::new(),
            failing_run: None,
        }
    }

    #[test]
    fn a_failure_outlives_the_recent_runs_until_the_window_ends() {
        let state = state(DEFAULT_HISTORY_WINDOW);
        let now = t0();
        // Ten minutes ago, 20 passes; 70 s ago a failure; then 30 passes.
        for i in 0..20 {
            state.record_at(
                run(&format!("old-{i}"), Verdict::Pass, now - secs(600)),
                now,
            );
        }
        state.record_at(run("t-fail", Verdict::Fail, now - secs(70)), now);
        for i in 0..30 {
            state.record_at(
                run(&format!("p-{i}"), Verdict::Pass, now - secs(60 - i)),
                now,
            );
        }
        let c = &state.cases_at(now)[0];
        assert!(
            c.recent.iter().all(|r| r.test_id != "t-fail"),
            "out of the recent runs"
        );
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].verdict, Verdict::Fail);
        assert_eq!(c.failures[0].kind, "order t-fail was not saved");
        assert_eq!(c.failures[0].runs[0].test_id, "t-fail");
        assert_eq!(c.history_window_secs, 3_600);
        // Windows: 31 runs in 5 minutes, 51 in the hour, as many since the start.
        assert_eq!((c.pass_rates[0].runs, c.pass_rates[0].passes), (31, 30));
        assert_eq!((c.pass_rates[1].runs, c.pass_rates[1].passes), (51, 50));
        assert_eq!(c.pass_rate, Some(50.0 / 51.0));
        assert_eq!(c.consecutive_failures, 0);
        // An hour later the failure has aged out, and so have the windows' runs; the
        // cumulative counts stay.
        let later = &state.cases_at(now + secs(3_600))[0];
        assert!(later.failures.is_empty());
        assert_eq!(later.pass_rates[0].pass_rate, None);
        assert_eq!(later.pass_rates[1].runs, 0);
        assert_eq!(later.pass_rate, Some(50.0 / 51.0));
    }

    /// A run of `C` that broke `rule` for `key` with `open` (a FAIL, as the runner reports
    /// it).
    fn broken(id: &str, rule: &str, key: &str, open: u64, at: DateTime<Utc>) -> Arc<Report> {
        let invariant = livecheck_core::Invariant {
            rule: rule.to_owned(),
            key: key.to_owned(),
            values: [("open".to_owned(), open.into())].into_iter().collect(),
        };
        let mut r = (*run(id, Verdict::Fail, at)).clone();
        r.error = Some(invariant.to_string());
        r.invariant = Some(invariant);
        Arc::new(r)
    }

    /// A broken invariant is a FAIL on the same path as any other: it counts toward the
    /// failures in a row, turns the case FAIL and names the run in the alert; and it is
    /// counted apart, by rule and in the windows, and kept as its rule's kind.
    #[tokio::test]
    async fn an_invariant_failure_counts_toward_health_and_alerts_like_any_fail() {
        use super::super::health::{HealthMonitor, HealthRules};

        let state = Arc::new(state(DEFAULT_HISTORY_WINDOW));
        let (tx, mut alerts) = tokio::sync::mpsc::channel(8);
        let health = HealthMonitor::new(state.clone(), HealthRules::default(), tx);
        let now = Utc::now();
        let rule = "open sell exposure <= 100";
        let runs = [
            broken("t-1", rule, "u1", 120, now - secs(3)),
            run("t-2", Verdict::Fail, now - secs(2)),
            broken("t-3", rule, "u2", 450, now - secs(1)),
        ];
        for r in &runs {
            state.record_at(r.clone(), now);
            health.on_report(r);
        }
        let c = &state.cases_at(now)[0];
        assert_eq!(c.health, Health::Fail);
        assert_eq!(c.consecutive_failures, 3);
        assert_eq!(c.verdicts.get(&Verdict::Fail), Some(&3));
        let alert = alerts.try_recv().expect("the FAIL alert");
        assert_eq!(
            (alert.to, alert.failing_run.as_deref()),
            (Health::Fail, Some("t-3"))
        );
        // Counted apart: since the start, by rule, in each window.
        assert_eq!(c.invariant_failures, 2);
        assert_eq!(
            c.invariant_failures_by_rule,
            [RuleCount {
                rule: rule.to_owned(),
                count: 2
            }]
        );
        assert!(c.pass_rates.iter().all(|w| w.invariant_failures == 2));
        // One kind for the rule, the newest run with its own key and values.
        let kind = c
            .failures
            .iter()
            .find(|k| k.rule.as_deref() == Some(rule))
            .expect("the rule's kind");
        assert_eq!(kind.kind, format!("invariant: {rule}"));
        assert_eq!(kind.count, 2);
        let newest = kind.runs[0].invariant.as_ref().expect("invariant");
        assert_eq!(
            (newest.key.as_str(), &newest.values["open"]),
            ("u2", &450.into())
        );
        assert_eq!(c.failures.len(), 2, "the plain FAIL is a kind of its own");
    }

    #[test]
    fn the_suites_tables_are_runner_facts() {
        static HELD: livecheck_core::Table<String, u64> = livecheck_core::Table::new("held");
        static LIMITS: livecheck_core::Table<String, u64> = livecheck_core::Table::global("limits");
        let client =
            LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
        let case = Case::new(C)
            .table(&LIMITS)
            .table(&HELD)
            .expect(|_: Run, (): ()| async { Ok(()) });
        let runner = Runner::new(
            Suite::new([case]).expect("suite"),
            client.clone(),
            RunnerConfig::default(),
        );
        let state = LiveState::new(runner, client);
        let tables = state.input_status().tables;
        assert_eq!(
            tables,
            [
                TableStatus {
                    name: "held".to_owned(),
                    global: false,
                    entries: 0
                },
                TableStatus {
                    name: "limits".to_owned(),
                    global: true,
                    entries: 0
                },
            ]
        );
    }

    #[test]
    fn the_history_window_is_configurable() {
        let state = state(Duration::from_secs(600));
        let now = t0();
        state.record_at(run("too-old", Verdict::Fail, now - secs(601)), now);
        state.record_at(run("kept", Verdict::Timeout, now - secs(599)), now);
        let c = &state.cases_at(now)[0];
        assert_eq!(c.history_window_secs, 600);
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].runs[0].test_id, "kept");
        assert!(state.cases_at(now + secs(2))[0].failures.is_empty());
    }

    #[test]
    fn a_kept_failure_is_served_by_test_id_after_the_recent_runs_moved_on() {
        let state = state(DEFAULT_HISTORY_WINDOW);
        let now = t0();
        state.record_at(run("t-fail", Verdict::Error, now - secs(1)), now);
        for i in 0..(RUNS_KEPT + 1) {
            state.record_at(run(&format!("p-{i}"), Verdict::Pass, now), now);
        }
        assert_eq!(state.runs.lock().unwrap().1.len(), RUNS_KEPT);
        assert_eq!(state.run("t-fail").map(|r| r.verdict), Some(Verdict::Error));
        assert!(state.run("nope").is_none());
    }

    #[test]
    fn memory_stays_bounded_at_a_thousand_failures_a_second() {
        let state = state(DEFAULT_HISTORY_WINDOW);
        let start = t0();
        // Ten minutes (every tenth second, 1,000 runs each), every run a new kind.
        for s in (0..600).step_by(10) {
            let now = start + secs(s);
            for i in 0..1_000 {
                let mut r = (*run(&format!("{s}-{i}"), Verdict::Fail, now)).clone();
                r.error = Some(format!("kind {} broke", "x".repeat(i % 50 + 1)));
                state.record_at(Arc::new(r), now);
            }
        }
        let c = &state.cases_at(start + secs(600))[0];
        assert_eq!(c.recent.len(), RECENT_PER_CASE);
        assert_eq!(c.failures.len(), history::KINDS_PER_CASE);
        assert!(c
            .failures
            .iter()
            .all(|k| k.runs.len() <= history::RUNS_PER_KIND));
        assert_eq!(c.pass_rates[1].runs, 60_000);
        assert_eq!(state.runs.lock().unwrap().0.len(), RUNS_KEPT);
    }

    #[test]
    fn transitions_are_kept_with_their_reasons_for_their_cases() {
        let state = state(DEFAULT_HISTORY_WINDOW);
        let now = t0();
        state.record_transition(&transition(
            Health::Ok,
            Health::Fail,
            "3 runs in a row did not pass",
            now - secs(60),
        ));
        state.record_transition(&transition(Health::Fail, Health::Ok, "runs pass", now));
        state.record_transition(&Transition {
            kind: LIVECHECK_BLIND,
            case: EVERY_CASE.to_owned(),
            from: Health::Ok,
            to: Health::Down,
            reason: "livecheck cannot reach Kafka".to_owned(),
            at: now + secs(1),
            cases: vec![C.to_owned()],
            failing_run: None,
        });
        let c = &state.cases_at(now + secs(2))[0];
        let seen: Vec<(Health, Health, &str, bool)> = c
            .transitions
            .iter()
            .map(|t| (t.from, t.to, t.reason.as_str(), t.suite))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Health::Ok,
                    Health::Down,
                    "livecheck cannot reach Kafka",
                    true
                ),
                (Health::Fail, Health::Ok, "runs pass", false),
                (
                    Health::Ok,
                    Health::Fail,
                    "3 runs in a row did not pass",
                    false
                ),
            ]
        );
        assert_eq!(
            state.transition_counts(),
            [
                (EVERY_CASE.to_owned(), Health::Down, 1),
                (C.to_owned(), Health::Fail, 1),
                (C.to_owned(), Health::Ok, 1),
            ]
        );
    }

    #[test]
    fn the_headline_says_the_failures_in_a_row_shown() {
        let state = state(DEFAULT_HISTORY_WINDOW);
        let now = t0();
        let set_health = |h: Health, reason: &str| {
            let mut cases = state.cases.lock().unwrap();
            let s = &mut cases.get_mut(C).unwrap().snapshot;
            s.health = h;
            s.health_reason = reason.to_owned();
        };
        assert_eq!(state.cases_at(now)[0].headline, "started");
        state.record_at(run("f-0", Verdict::Fail, now), now);
        let c = &state.cases_at(now)[0];
        assert_eq!(c.headline, "1 run in a row did not pass (FAIL at 3)");
        // FAIL was entered at 3; 59 in a row later the headline says 59, like the count.
        set_health(Health::Fail, "3 runs in a row did not pass");
        for i in 1..59 {
            state.record_at(run(&format!("f-{i}"), Verdict::Fail, now), now);
        }
        let c = &state.cases_at(now)[0];
        assert_eq!(c.consecutive_failures, 59);
        assert_eq!(c.headline, "59 runs in a row did not pass (FAIL at 3)");
        assert_eq!(c.health_reason, "3 runs in a row did not pass");
        state.record_at(run("p", Verdict::Pass, now), now);
        assert!(state.cases_at(now)[0].headline.starts_with("recovering"));
        set_health(Health::Stall, "no run since 12:00:00");
        assert_eq!(state.cases_at(now)[0].headline, "no run since 12:00:00");
    }
}
