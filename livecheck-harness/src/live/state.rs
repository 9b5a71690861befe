//! What live mode knows and shows: per-case health, pass rates, recent runs, step latencies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::control::CaseControl;
use livecheck_core::{LiveCheck, Report, Runner, Verdict};
use serde::Serialize;

use super::control::{ControlView, RolloutDriver, RolloutLive};
use super::fleet::{Fleet, InstanceView};
use super::health::Transition;
use super::metrics::Metrics;
use super::rollout::{Position, RolloutState};

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
    /// Share of PASS among finished non-SKIP runs (`None` before the first).
    pub pass_rate: Option<f64>,
    /// Non-passing runs in a row.
    pub consecutive_failures: u32,
    /// When the last run finished.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The most recent runs, newest first.
    pub recent: Vec<Arc<Report>>,
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

/// Live state shared by the service, the health checks and the web surfaces.
pub struct LiveState {
    pub(crate) cases: Mutex<HashMap<String, CaseState>>,
    runs: Mutex<RecentRuns>,
    /// The runner (counters, buffers).
    pub runner: Runner,
    /// The client (counters).
    pub client: LiveCheck,
    /// Consumer lag per partition, refreshed by the service.
    pub lag: Mutex<Vec<(String, i32, i64)>>,
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
                            active: case.settings().active,
                            probability: case.settings().probability,
                            published: None,
                            instances: Vec::new(),
                            rollout: None,
                            verdicts: HashMap::new(),
                            pass_rate: None,
                            consecutive_failures: 0,
                            last_run_at: None,
                            recent: Vec::new(),
                        },
                        latencies: HashMap::new(),
                        stall_after: case.settings().warn_stalled_after,
                        max_failures: case.settings().max_consecutive_failures.max(1),
                        down: false,
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
            metrics: Metrics::default(),
        }
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

    /// Records a finished run (counts, pass rate, recent runs, step latencies).
    pub fn record(&self, report: Arc<Report>) {
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
        for step in report.timeline.iter().filter(|s| s.awaited) {
            case.latencies
                .entry(step.signal.clone())
                .or_default()
                .observe(step.latency_ms / 1000.0);
        }
    }

    /// Records a suite-state transition (every instance records what it decides, whether
    /// or not it alerts).
    pub fn record_transition(&self, transition: &Transition) {
        *self
            .transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((transition.case.clone(), transition.to))
            .or_default() += 1;
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
        let mut out: Vec<_> = {
            let cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
            cases.values().map(|c| c.snapshot.clone()).collect()
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let now = Utc::now();
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

    /// A run by test id (the last [`RUNS_KEPT`]).
    pub fn run(&self, test_id: &str) -> Option<Arc<Report>> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(test_id)
            .cloned()
    }
}
