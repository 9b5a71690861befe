//! Gradual roll-out of a case: a plan of probabilities (`0.1% → 1% → 10% → 100%`), one step
//! every `every`, judged on the case's failure rate during the step. Pure: the clock is
//! passed in, nothing is published here (the service does, see `control`).
//!
//! The rules, in the order they apply while a plan runs:
//! 1. As soon as the step has at least `min_runs` runs and more than `max_failure_rate` of
//!    them failed, the plan rolls back to the previous step (step 0 stays at step 0) and
//!    stops: state `rolled_back`, with the counts in the reason. It does not wait for the end
//!    of the step: a bad step is exposed no longer than needed.
//! 2. Once the step has lasted `every`: with fewer than `min_runs` runs it goes on (the
//!    decision waits for enough runs); otherwise it advances to the next step, or, on the
//!    last step, the plan is `completed` and stays there.
//!
//! A run is a finished test of the case issued during the step (`PASS`, `FAIL`, `ERROR`,
//! `TIMEOUT`; `SKIP` is not a run), counted once per test id; a failure is a run that did not
//! pass.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::Verdict;
use serde::{Deserialize, Serialize};

/// A roll-out plan, as configured (`[profiles.p.cases."c".rollout]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// Probabilities, strictly increasing, each in `(0, 1]`.
    pub steps: Vec<f64>,
    /// How long a step lasts at least, in milliseconds.
    pub every_ms: u64,
    /// The highest failure rate (failures / runs) a step may have and still advance.
    pub max_failure_rate: f64,
    /// Runs a step needs before it is judged.
    pub min_runs: u32,
}

/// Default of [`RolloutPlan::max_failure_rate`].
pub const DEFAULT_MAX_FAILURE_RATE: f64 = 0.05;
/// Default of [`RolloutPlan::min_runs`].
pub const DEFAULT_MIN_RUNS: u32 = 20;

impl RolloutPlan {
    /// A plan; [`RolloutPlan::validate`] says whether it can run.
    pub fn new(steps: Vec<f64>, every: Duration, max_failure_rate: f64, min_runs: u32) -> Self {
        Self {
            steps,
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            max_failure_rate,
            min_runs,
        }
    }

    /// How long a step lasts at least.
    pub fn every(&self) -> Duration {
        Duration::from_millis(self.every_ms)
    }

    /// What is wrong with the plan, as a fragment naming the key (`None`: it can run).
    pub fn validate(&self) -> Option<String> {
        if self.steps.is_empty() {
            return Some(
                "`steps` is empty: give probabilities, e.g. [0.001, 0.01, 0.1, 1.0]".into(),
            );
        }
        if let Some(p) = self.steps.iter().find(|p| !(**p > 0.0 && **p <= 1.0)) {
            return Some(format!(
                "step {p} of `steps` is not a probability in (0, 1]"
            ));
        }
        if let Some(w) = self.steps.windows(2).find(|w| w[1] <= w[0]) {
            return Some(format!(
                "`steps` must increase: {} comes after {}",
                w[1], w[0]
            ));
        }
        if self.every_ms == 0 {
            return Some("`every` is zero: give how long a step lasts, e.g. \"10m\"".into());
        }
        if !(0.0..=1.0).contains(&self.max_failure_rate) {
            return Some(format!(
                "`max_failure_rate` is {}, not between 0 and 1",
                self.max_failure_rate
            ));
        }
        if self.min_runs == 0 {
            return Some("`min_runs` is 0: a step needs at least one run to be judged".into());
        }
        None
    }

    /// The position of a plan that starts `now`.
    pub fn start(&self, now: DateTime<Utc>) -> Position {
        Position {
            plan: self.clone(),
            step: 0,
            step_started_at: now,
            state: RolloutState::Running,
            reason: format!(
                "started at step 1 of {} ({})",
                self.steps.len(),
                percent(self.steps[0])
            ),
        }
    }
}

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Steps advance.
    Running,
    /// The last step passed: the plan stays there.
    Completed,
    /// A step failed: the plan went back one step and stays there.
    RolledBack,
    /// Someone set the probability by hand: the plan no longer moves.
    Stopped,
}

impl RolloutState {
    /// `running`, `completed`, `rolled back`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Completed => "completed",
            RolloutState::RolledBack => "rolled back",
            RolloutState::Stopped => "stopped",
        }
    }
}

/// A plan and where it stands: what [`livecheck_core::control::CaseControl::rollout`]
/// carries (as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The plan.
    pub plan: RolloutPlan,
    /// The current step (index into the plan's steps).
    pub step: usize,
    /// When the current step began.
    pub step_started_at: DateTime<Utc>,
    /// Running, completed, rolled back or stopped.
    pub state: RolloutState,
    /// Why the plan is where it is (the last decision, with its counts).
    pub reason: String,
}

impl Position {
    /// The probability of the current step.
    pub fn probability(&self) -> f64 {
        self.plan
            .steps
            .get(self.step)
            .or(self.plan.steps.last())
            .copied()
            .unwrap_or(0.0)
    }

    /// The position as it travels on the control topic.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A position read from the control topic (`None`: not one of ours, or malformed).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        serde_json::from_value::<Self>(value.clone())
            .ok()
            .filter(|p| p.plan.validate().is_none() && p.step < p.plan.steps.len())
    }

    /// The plan, stopped by hand (`by`: who set the probability).
    #[must_use]
    pub fn stopped(mut self, by: &str, now: DateTime<Utc>) -> Self {
        if self.state == RolloutState::Running {
            self.state = RolloutState::Stopped;
            self.reason = format!(
                "stopped at step {} of {} ({}): the probability was set by {by} at {}",
                self.step + 1,
                self.plan.steps.len(),
                percent(self.probability()),
                livecheck_core::headers::format_time(now)
            );
        }
        self
    }

    /// What to do now, given the runs counted during the current step. `None`: nothing
    /// yet (or the plan no longer moves).
    pub fn decide(&self, counts: StepCounts, now: DateTime<Utc>) -> Option<Position> {
        if self.state != RolloutState::Running {
            return None;
        }
        let plan = &self.plan;
        let n = plan.steps.len();
        let rate = counts.failure_rate();
        let tally = format!(
            "{} run{}, {} failed ({}, at most {} allowed)",
            counts.runs,
            if counts.runs == 1 { "" } else { "s" },
            counts.failures,
            percent(rate.unwrap_or(0.0)),
            percent(plan.max_failure_rate)
        );
        let here = format!(
            "step {} of {n} ({})",
            self.step + 1,
            percent(self.probability())
        );
        if counts.runs >= plan.min_runs && rate.is_some_and(|r| r > plan.max_failure_rate) {
            let to = self.step.saturating_sub(1);
            let reason = if to == self.step {
                format!(
                    "rolled back: {here} failed with {tally}; stays at the first step and stops"
                )
            } else {
                format!(
                    "rolled back: {here} failed with {tally}; back to step {} ({}) and stopped",
                    to + 1,
                    percent(plan.steps[to])
                )
            };
            return Some(Position {
                plan: plan.clone(),
                step: to,
                step_started_at: now,
                state: RolloutState::RolledBack,
                reason,
            });
        }
        let lasted = (now - self.step_started_at)
            .to_std()
            .is_ok_and(|d| d >= plan.every());
        if !lasted || counts.runs < plan.min_runs {
            return None;
        }
        if self.step + 1 >= n {
            return Some(Position {
                plan: plan.clone(),
                step: self.step,
                step_started_at: self.step_started_at,
                state: RolloutState::Completed,
                reason: format!("completed: {here} passed with {tally}"),
            });
        }
        let to = self.step + 1;
        Some(Position {
            plan: plan.clone(),
            step: to,
            step_started_at: now,
            state: RolloutState::Running,
            reason: format!(
                "advanced: {here} passed with {tally}; now step {} ({})",
                to + 1,
                percent(plan.steps[to])
            ),
        })
    }
}

/// Runs and failures of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepCounts {
    /// Finished non-`SKIP` tests.
    pub runs: u32,
    /// Those that did not pass.
    pub failures: u32,
}

impl StepCounts {
    /// Failures / runs (`None` before the first run).
    pub fn failure_rate(self) -> Option<f64> {
        (self.runs > 0).then(|| f64::from(self.failures) / f64::from(self.runs))
    }
}

/// Counts the runs of one step: tests issued at or after the step began, each test id once.
#[derive(Debug, Clone)]
pub struct StepTally {
    step: usize,
    since: DateTime<Utc>,
    seen: HashSet<String>,
    counts: StepCounts,
}

impl StepTally {
    /// A tally for the step a position is at.
    pub fn for_position(position: &Position) -> Self {
        Self {
            step: position.step,
            since: position.step_started_at,
            seen: HashSet::new(),
            counts: StepCounts::default(),
        }
    }

    /// Whether this tally counts for `position`'s step.
    pub fn is_for(&self, position: &Position) -> bool {
        self.step == position.step && self.since == position.step_started_at
    }

    /// Takes a finished test into account.
    pub fn record(&mut self, test_id: &str, verdict: Verdict, issued_at: DateTime<Utc>) {
        if verdict == Verdict::Skip
            || issued_at < self.since
            || !self.seen.insert(test_id.to_owned())
        {
            return;
        }
        self.counts.runs += 1;
        if verdict != Verdict::Pass {
            self.counts.failures += 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> StepCounts {
        self.counts
    }
}

/// `0.1%`, `12.5%`, `100%`.
pub fn percent(p: f64) -> String {
    let v = p * 100.0;
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RolloutPlan {
        RolloutPlan::new(
            vec![0.001, 0.01, 0.1, 1.0],
            Duration::from_secs(600),
            0.05,
            20,
        )
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn mins(m: i64) -> chrono::Duration {
        chrono::Duration::minutes(m)
    }

    fn counts(runs: u32, failures: u32) -> StepCounts {
        StepCounts { runs, failures }
    }

    #[test]
    fn a_plan_advances_on_passing_steps_and_completes_on_the_last() {
        let plan = plan();
        let mut p = plan.start(t0());
        assert_eq!((p.step, p.probability()), (0, 0.001));
        // Not before `every`, however good the runs.
        assert_eq!(p.decide(counts(100, 0), t0() + mins(9)), None);
        let mut at = t0();
        for (i, expected) in [0.01, 0.1, 1.0].into_iter().enumerate() {
            at += mins(10);
            p = p.decide(counts(20, 1), at).expect("advances");
            assert_eq!(p.state, RolloutState::Running);
            assert_eq!((p.step, p.probability()), (i + 1, expected));
            assert_eq!(p.step_started_at, at);
        }
        assert!(
            p.reason.starts_with("advanced: step 3 of 4 (10%) passed with 20 runs, 1 failed (5%, at most 5% allowed); now step 4 (100%)"),
            "{}",
            p.reason
        );
        at += mins(10);
        let done = p.decide(counts(30, 0), at).expect("completes");
        assert_eq!(
            (done.state, done.step, done.probability()),
            (RolloutState::Completed, 3, 1.0)
        );
        assert!(
            done.reason.starts_with("completed: step 4 of 4 (100%)"),
            "{}",
            done.reason
        );
        assert_eq!(
            done.decide(counts(30, 30), at + mins(60)),
            None,
            "a completed plan stays"
        );
    }

    #[test]
    fn a_step_without_enough_runs_waits() {
        let p = plan().start(t0());
        assert_eq!(p.decide(counts(19, 0), t0() + mins(60)), None);
        // Failures below min_runs do not roll back either.
        assert_eq!(p.decide(counts(19, 19), t0() + mins(60)), None);
        assert_eq!(
            p.decide(counts(20, 0), t0() + mins(60)).map(|p| p.step),
            Some(1)
        );
    }

    #[test]
    fn failures_roll_back_at_once_and_the_plan_stops() {
        let plan = plan();
        let p = plan.start(t0());
        let p = p.decide(counts(20, 0), t0() + mins(10)).expect("step 2");
        let p = p.decide(counts(20, 0), t0() + mins(20)).expect("step 3");
        assert_eq!(p.probability(), 0.1);
        // 2 of 20 is 10% > 5%: back to step 2 before the step is over.
        let back = p
            .decide(counts(20, 2), t0() + mins(21))
            .expect("rolls back");
        assert_eq!(back.state, RolloutState::RolledBack);
        assert_eq!((back.step, back.probability()), (1, 0.01));
        assert_eq!(
            back.reason,
            "rolled back: step 3 of 4 (10%) failed with 20 runs, 2 failed (10%, at most 5% allowed); back to step 2 (1%) and stopped"
        );
        assert_eq!(
            back.decide(counts(100, 0), t0() + mins(90)),
            None,
            "stopped"
        );
        // Exactly at the threshold is not above it.
        assert_eq!(
            p.decide(counts(20, 1), t0() + mins(30)).map(|p| p.state),
            Some(RolloutState::Running)
        );
    }

    #[test]
    fn the_first_step_failing_stays_at_the_first_step() {
        let p = plan().start(t0());
        let back = p
            .decide(counts(20, 20), t0() + mins(1))
            .expect("rolls back");
        assert_eq!((back.step, back.state), (0, RolloutState::RolledBack));
        assert!(
            back.reason.ends_with("stays at the first step and stops"),
            "{}",
            back.reason
        );
    }

    #[test]
    fn a_hand_set_probability_stops_a_running_plan_only() {
        let p = plan().start(t0());
        let stopped = p.clone().stopped("api:alice", t0() + mins(3));
        assert_eq!(stopped.state, RolloutState::Stopped);
        assert!(
            stopped.reason.contains("set by api:alice"),
            "{}",
            stopped.reason
        );
        assert_eq!(stopped.decide(counts(50, 0), t0() + mins(30)), None);
        let back = p.decide(counts(20, 20), t0()).expect("rolled back");
        assert_eq!(
            back.clone().stopped("api", t0()),
            back,
            "a rolled-back plan keeps its reason"
        );
    }

    #[test]
    fn the_tally_counts_each_test_of_the_step_once_and_skips_are_not_runs() {
        let p = plan().start(t0());
        let mut tally = StepTally::for_position(&p);
        tally.record("a", Verdict::Pass, t0());
        tally.record("a", Verdict::Pass, t0());
        tally.record("b", Verdict::Fail, t0() + mins(1));
        tally.record("c", Verdict::Timeout, t0() + mins(1));
        tally.record("d", Verdict::Skip, t0() + mins(1));
        tally.record("old", Verdict::Fail, t0() - mins(1));
        assert_eq!(tally.counts(), counts(3, 2));
        assert!(tally.is_for(&p));
        let next = p.decide(counts(20, 0), t0() + mins(10)).expect("next");
        assert!(!tally.is_for(&next));
    }

    #[test]
    fn positions_travel_as_json_and_bad_ones_are_refused() {
        let p = plan().start(t0());
        assert_eq!(Position::from_json(&p.to_json()), Some(p.clone()));
        let mut v = p.to_json();
        v["step"] = 9.into();
        assert_eq!(Position::from_json(&v), None);
        assert_eq!(Position::from_json(&serde_json::json!({"plan": 1})), None);
    }

    #[test]
    fn plans_are_validated_with_the_key_named() {
        let ok = plan();
        assert_eq!(ok.validate(), None);
        let with = |f: fn(&mut RolloutPlan)| {
            let mut p = plan();
            f(&mut p);
            p.validate().expect("an error")
        };
        assert!(with(|p| p.steps.clear()).starts_with("`steps` is empty"));
        assert_eq!(
            with(|p| p.steps = vec![0.0, 1.0]),
            "step 0 of `steps` is not a probability in (0, 1]"
        );
        assert_eq!(
            with(|p| p.steps = vec![0.5, 1.5]),
            "step 1.5 of `steps` is not a probability in (0, 1]"
        );
        assert_eq!(
            with(|p| p.steps = vec![0.1, 0.1]),
            "`steps` must increase: 0.1 comes after 0.1"
        );
        assert!(with(|p| p.every_ms = 0).starts_with("`every` is zero"));
        assert_eq!(
            with(|p| p.max_failure_rate = 1.5),
            "`max_failure_rate` is 1.5, not between 0 and 1"
        );
        assert!(with(|p| p.min_runs = 0).starts_with("`min_runs` is 0"));
    }

    #[test]
    fn percentages_read_well() {
        assert_eq!(percent(0.001), "0.1%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(percent(0.0), "0%");
    }
}
