//! What a case's past looks like beyond its last runs, in bounded memory: pass rates and
//! invariant failures over sliding windows (counts in 10-second buckets), invariant failures
//! by rule since the start, the last failures of each kind until they age out of the history
//! window, and the suite-state transitions.
//!
//! Every type here takes the time as an argument (`now`), so tests can replay an hour in a
//! microsecond; times of runs are their reports' `finished_at`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::{Report, Verdict};
use serde::Serialize;

use super::Health;

/// Width of a pass-rate bucket: windows are exact to this.
pub const BUCKET: Duration = Duration::from_secs(10);
/// The windows of the pass rates: (name, length).
pub const RATE_WINDOWS: [(&str, Duration); 2] = [
    ("5m", Duration::from_secs(5 * 60)),
    ("1h", Duration::from_secs(60 * 60)),
];
/// How long failures are kept, unless configured (`--history-window`).
pub const DEFAULT_HISTORY_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Kinds of failure kept per case (the kind seen longest ago goes first).
pub const KINDS_PER_CASE: usize = 12;
/// Runs kept per kind of failure (the newest).
pub const RUNS_PER_KIND: usize = 5;
/// Transitions kept per case (the newest).
pub const TRANSITIONS_PER_CASE: usize = 50;
/// Characters of an error message that name its kind at most.
const KIND_CHARS: usize = 160;
/// Rules whose invariant failures are counted apart per case; the failures of further rules
/// are counted together under [`OTHER_RULES`] (a rule is text in the case's code, so a
/// case has a handful; this bounds a rule built from data).
pub const RULES_PER_CASE: usize = 32;
/// The rule the invariant failures of a case's rules past [`RULES_PER_CASE`] are counted
/// under.
pub const OTHER_RULES: &str = "(other rules)";

/// Runs of a case in one window, as `/api/cases` and the page show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRate {
    /// `5m`, `1h`.
    pub window: &'static str,
    /// The window's length, seconds.
    pub seconds: u64,
    /// Finished non-SKIP runs in the window.
    pub runs: u64,
    /// PASS runs among them.
    pub passes: u64,
    /// `passes / runs` (`None` without runs).
    pub pass_rate: Option<f64>,
    /// Runs among them that failed because a business invariant was broken.
    pub invariant_failures: u64,
}

/// The runs of one [`BUCKET`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Start, seconds since the epoch.
    start: i64,
    runs: u64,
    passes: u64,
    /// Runs that broke an invariant.
    invariants: u64,
}

/// Runs, passes and invariant failures per [`BUCKET`], oldest first, over the longest of
/// [`RATE_WINDOWS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RateBuckets {
    /// Sorted by start.
    buckets: VecDeque<Bucket>,
}

fn bucket_of(at: DateTime<Utc>) -> i64 {
    let width = BUCKET.as_secs() as i64;
    at.timestamp().div_euclid(width) * width
}

fn longest_window() -> Duration {
    RATE_WINDOWS.iter().map(|(_, d)| *d).max().unwrap_or(BUCKET)
}

fn before(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl RateBuckets {
    /// Counts a run that finished `at` (a time after `now` counts as `now`: a skewed clock
    /// cannot make buckets that never age out), and whether it broke an invariant. SKIP runs
    /// are not judged and not counted.
    pub(crate) fn record(
        &mut self,
        at: DateTime<Utc>,
        verdict: Verdict,
        invariant: bool,
        now: DateTime<Utc>,
    ) {
        if verdict == Verdict::Skip {
            return;
        }
        self.prune(now);
        let start = bucket_of(at.min(now));
        if start + (BUCKET.as_secs() as i64) <= before(now, longest_window()).timestamp() {
            return;
        }
        let pass = u64::from(verdict == Verdict::Pass);
        let invariants = u64::from(invariant);
        match self.buckets.binary_search_by_key(&start, |b| b.start) {
            Ok(i) => {
                let b = &mut self.buckets[i];
                b.runs += 1;
                b.passes += pass;
                b.invariants += invariants;
            }
            Err(i) => self.buckets.insert(
                i,
                Bucket {
                    start,
                    runs: 1,
                    passes: pass,
                    invariants,
                },
            ),
        }
    }

    /// Drops the buckets wholly before the longest window.
    pub(crate) fn prune(&mut self, now: DateTime<Utc>) {
        let oldest = before(now, longest_window()).timestamp();
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start + (BUCKET.as_secs() as i64) <= oldest)
        {
            self.buckets.pop_front();
        }
    }

    /// Runs in the buckets that overlap `[now - window, now]` (up to one [`BUCKET`] more
    /// than `window`).
    pub(crate) fn rate(
        &self,
        name: &'static str,
        window: Duration,
        now: DateTime<Utc>,
    ) -> WindowRate {
        let from = before(now, window).timestamp();
        let (runs, passes, invariant_failures) = self
            .buckets
            .iter()
            .rev()
            .take_while(|b| b.start + (BUCKET.as_secs() as i64) > from)
            .fold((0, 0, 0), |(r, p, i), b| {
                (r + b.runs, p + b.passes, i + b.invariants)
            });
        WindowRate {
            window: name,
            seconds: window.as_secs(),
            runs,
            passes,
            pass_rate: (runs > 0).then(|| passes as f64 / runs as f64),
            invariant_failures,
        }
    }

    /// Every window of [`RATE_WINDOWS`].
    pub(crate) fn rates(&self, now: DateTime<Utc>) -> Vec<WindowRate> {
        RATE_WINDOWS
            .iter()
            .map(|(name, window)| self.rate(name, *window, now))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Failures of one kind (same verdict, same error once numbers and ids are blanked; for a
/// broken invariant, the same rule).
#[derive(Debug, Clone, Serialize)]
pub struct FailureKind {
    /// `FAIL`, `ERROR` or `TIMEOUT`.
    pub verdict: Verdict,
    /// What the failures have in common: `invariant: <rule>` for a broken business rule
    /// (whatever the key and the values: each run keeps them, in its report's `invariant`),
    /// the missing step of a TIMEOUT, else the first line of the error with every word that
    /// holds a digit written `#`.
    pub kind: String,
    /// The rule, when the kind is a broken invariant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Failures of this kind since `first_at` (it is kept while its newest failure is in
    /// the history window).
    pub count: u64,
    /// When the first of them finished.
    pub first_at: DateTime<Utc>,
    /// When the newest finished.
    pub last_at: DateTime<Utc>,
    /// The newest runs of this kind (at most [`RUNS_PER_KIND`]), newest first.
    pub runs: Vec<Arc<Report>>,
}

/// The kind of a failed run (see [`FailureKind::kind`]).
pub fn failure_kind(report: &Report) -> String {
    if let Some(invariant) = &report.invariant {
        // The rule as written (its numbers are part of it: "exposure <= 100").
        return cut(format!("invariant: {}", invariant.rule));
    }
    if report.verdict == Verdict::Timeout {
        if let Some(step) = &report.missing_step {
            return format!("step `{step}` did not arrive");
        }
    }
    let first_line = report
        .error
        .as_deref()
        .and_then(|e| e.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("no error message");
    let blanked: Vec<&str> = first_line
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect();
    cut(blanked.join(" "))
}

/// `kind` cut to [`KIND_CHARS`] characters (and an ellipsis).
fn cut(kind: String) -> String {
    match kind.char_indices().nth(KIND_CHARS) {
        Some((at, _)) => format!("{}…", &kind[..at]),
        None => kind,
    }
}

/// The last failures of each kind within the history window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Failures {
    /// Newest `last_at` first.
    kinds: Vec<FailureKind>,
}

impl Failures {
    /// Keeps a run that did not pass, unless it finished before `now - window`.
    pub(crate) fn record(&mut self, report: &Arc<Report>, now: DateTime<Utc>, window: Duration) {
        if matches!(report.verdict, Verdict::Pass | Verdict::Skip) {
            return;
        }
        self.prune(now, window);
        let at = report.finished_at;
        if at <= before(now, window) {
            return;
        }
        let kind = failure_kind(report);
        let i = match self
            .kinds
            .iter()
            .position(|k| k.verdict == report.verdict && k.kind == kind)
        {
            Some(i) => i,
            None => {
                if self.kinds.len() >= KINDS_PER_CASE {
                    // The kind seen longest ago makes room (kinds are sorted).
                    self.kinds.pop();
                }
                self.kinds.push(FailureKind {
                    verdict: report.verdict,
                    kind,
                    rule: report.invariant.as_ref().map(|i| i.rule.clone()),
                    count: 0,
                    first_at: at,
                    last_at: at,
                    runs: Vec::new(),
                });
                self.kinds.len() - 1
            }
        };
        let k = &mut self.kinds[i];
        k.count += 1;
        k.first_at = k.first_at.min(at);
        k.last_at = k.last_at.max(at);
        let pos = k.runs.partition_point(|r| r.finished_at > at);
        k.runs.insert(pos, report.clone());
        k.runs.truncate(RUNS_PER_KIND);
        self.kinds.sort_by_key(|k| std::cmp::Reverse(k.last_at));
    }

    /// Drops runs that finished before `now - window`, and kinds left without runs.
    pub(crate) fn prune(&mut self, now: DateTime<Utc>, window: Duration) {
        let oldest = before(now, window);
        for k in &mut self.kinds {
            k.runs.retain(|r| r.finished_at > oldest);
        }
        self.kinds.retain(|k| !k.runs.is_empty());
    }

    /// The kinds, newest first.
    pub(crate) fn kinds(&self) -> &[FailureKind] {
        &self.kinds
    }

    /// A kept run by test id.
    pub(crate) fn run(&self, test_id: &str) -> Option<&Arc<Report>> {
        self.kinds
            .iter()
            .flat_map(|k| &k.runs)
            .find(|r| r.test_id == test_id)
    }
}

/// Invariant failures of one rule of a case, as `/api/cases` and the page show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    /// The rule ([`livecheck_core::Invariant::rule`]), or [`OTHER_RULES`].
    pub rule: String,
    /// Runs that broke it since the start.
    pub count: u64,
}

/// Invariant failures of a case by rule since the start: at most [`RULES_PER_CASE`] rules
/// apart, the rest under [`OTHER_RULES`].
#[derive(Debug, Clone, Default)]
pub(crate) struct InvariantCounts {
    by_rule: BTreeMap<String, u64>,
    total: u64,
}

impl InvariantCounts {
    /// Counts a run that broke `rule`.
    pub(crate) fn record(&mut self, rule: &str) {
        self.total += 1;
        if let Some(n) = self.by_rule.get_mut(rule) {
            *n += 1;
            return;
        }
        let apart = self.by_rule.len() - usize::from(self.by_rule.contains_key(OTHER_RULES));
        let rule = if apart < RULES_PER_CASE {
            rule
        } else {
            OTHER_RULES
        };
        *self.by_rule.entry(rule.to_owned()).or_default() += 1;
    }

    /// Runs that broke an invariant since the start.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Counts by rule, sorted by rule.
    pub(crate) fn by_rule(&self) -> Vec<RuleCount> {
        self.by_rule
            .iter()
            .map(|(rule, count)| RuleCount {
                rule: rule.clone(),
                count: *count,
            })
            .collect()
    }
}

/// A suite-state transition of a case, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionRecord {
    /// State before.
    pub from: Health,
    /// State after.
    pub to: Health,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Whether it was the whole suite's (LiveCheck blind, or seeing again).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub suite: bool,
}

/// The last [`TRANSITIONS_PER_CASE`] transitions, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transitions(VecDeque<TransitionRecord>);

impl Transitions {
    pub(crate) fn record(&mut self, transition: TransitionRecord) {
        let pos = self.0.partition_point(|t| t.at > transition.at);
        self.0.insert(pos, transition);
        self.0.truncate(TRANSITIONS_PER_CASE);
    }

    pub(crate) fn to_vec(&self) -> Vec<TransitionRecord> {
        self.0.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    fn failed(id: &str, verdict: Verdict, error: &str, at: DateTime<Utc>) -> Arc<Report> {
        Arc::new(Report {
            test_id: id.to_owned(),
            case: "c".to_owned(),
            verdict,
            error: Some(error.to_owned()),
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

    #[test]
    fn a_window_counts_the_runs_of_its_buckets() {
        let mut b = RateBuckets::default();
        let now = t0();
        // 10 minutes ago: 4 failures; 2 minutes ago: 3 passes, 1 failure; SKIP is not judged.
        for _ in 0..4 {
            b.record(now - secs(600), Verdict::Fail, false, now);
        }
        for _ in 0..3 {
            b.record(now - secs(120), Verdict::Pass, false, now);
        }
        b.record(now - secs(119), Verdict::Timeout, false, now);
        b.record(now - secs(5), Verdict::Skip, false, now);
        let rates = b.rates(now);
        assert_eq!(rates[0].window, "5m");
        assert_eq!((rates[0].runs, rates[0].passes), (4, 3));
        assert_eq!(rates[0].pass_rate, Some(0.75));
        assert_eq!(rates[1].window, "1h");
        assert_eq!((rates[1].runs, rates[1].passes), (8, 3));
        assert_eq!(rates[1].pass_rate, Some(3.0 / 8.0));
        // Without runs there is no rate.
        assert_eq!(
            RateBuckets::default()
                .rate("5m", RATE_WINDOWS[0].1, now)
                .pass_rate,
            None
        );
    }

    #[test]
    fn a_window_is_exact_to_a_bucket() {
        let mut b = RateBuckets::default();
        let now = t0(); // on a bucket boundary
        let five = RATE_WINDOWS[0].1;
        b.record(now - secs(300), Verdict::Pass, false, now); // on the edge: in
        b.record(now - secs(311), Verdict::Fail, false, now); // a bucket wholly before: out
        assert_eq!(b.rate("5m", five, now).runs, 1);
        // 9 s later the edge bucket still overlaps the window, 10 s later it does not.
        assert_eq!(b.rate("5m", five, now + secs(9)).runs, 1);
        assert_eq!(b.rate("5m", five, now + secs(10)).runs, 0);
    }

    #[test]
    fn runs_out_of_order_or_from_the_future_land_in_their_bucket() {
        let mut b = RateBuckets::default();
        let now = t0();
        b.record(now - secs(35), Verdict::Pass, false, now);
        b.record(now - secs(200), Verdict::Fail, false, now);
        b.record(now - secs(31), Verdict::Fail, false, now);
        b.record(now + secs(3_600), Verdict::Pass, false, now); // counts as now
        assert_eq!(b.len(), 3);
        let r = b.rate("1m", Duration::from_secs(60), now);
        assert_eq!((r.runs, r.passes), (3, 2));
        // A run older than the longest window is not counted at all.
        b.record(now - secs(3_700), Verdict::Fail, false, now);
        assert_eq!(b.rates(now)[1].runs, 4);
    }

    #[test]
    fn buckets_are_bounded_by_the_longest_window() {
        let mut b = RateBuckets::default();
        let start = t0();
        // Two hours of one run a second (a thousand a second would fill the same buckets).
        for s in 0..7_200 {
            let now = start + secs(s);
            b.record(now, Verdict::Pass, false, now);
        }
        let most = (longest_window().as_secs() / BUCKET.as_secs()) as usize + 1;
        assert!(b.len() <= most, "{} buckets", b.len());
        // The bucket the window starts in counts whole: up to 10 s more.
        let now = start + secs(7_199);
        assert_eq!(b.rates(now)[1].runs, 3_610);
        assert_eq!(b.rates(now)[0].runs, 310);
        let now = start + secs(7_200);
        assert_eq!(b.rates(now)[1].runs, 3_600);
        // Quiet for an hour: everything aged out.
        b.prune(now + secs(3_610));
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn failures_are_grouped_by_verdict_and_kind() {
        assert_eq!(
            failure_kind(&failed(
                "a",
                Verdict::Fail,
                "order 1001 has side BUY, expected SELL\nat x.rs:3",
                t0()
            )),
            "order # has side BUY, expected SELL"
        );
        let mut timeout = (*failed("b", Verdict::Timeout, "waited 5s", t0())).clone();
        timeout.missing_step = Some("order_saved".to_owned());
        assert_eq!(failure_kind(&timeout), "step `order_saved` did not arrive");
        let long = "x".repeat(500);
        assert_eq!(
            failure_kind(&failed("c", Verdict::Error, &long, t0()))
                .chars()
                .count(),
            KIND_CHARS + 1
        );

        let mut f = Failures::default();
        let now = t0();
        f.record(
            &failed("1", Verdict::Fail, "order 1 flipped", now - secs(50)),
            now,
            DEFAULT_HISTORY_WINDOW,
        );
        f.record(
            &failed("2", Verdict::Fail, "order 2 flipped", now - secs(40)),
            now,
            DEFAULT_HISTORY_WINDOW,
        );
        f.record(
            &failed("3", Verdict::Error, "order 3 flipped", now - secs(45)),
            now,
            DEFAULT_HISTORY_WINDOW,
        );
        f.record(
            &failed("p", Verdict::Pass, "", now),
            now,
            DEFAULT_HISTORY_WINDOW,
        );
        let kinds = f.kinds();
        assert_eq!(kinds.len(), 2);
        assert_eq!((kinds[0].verdict, kinds[0].count), (Verdict::Fail, 2));
        assert_eq!(kinds[0].kind, "order # flipped");
        assert_eq!(kinds[0].first_at, now - secs(50));
        assert_eq!(kinds[0].last_at, now - secs(40));
        let ids: Vec<&str> = kinds[0].runs.iter().map(|r| r.test_id.as_str()).collect();
        assert_eq!(ids, ["2", "1"]);
        assert_eq!(kinds[1].verdict, Verdict::Error);
        assert!(f.run("3").is_some());
        assert!(f.run("p").is_none());
    }

    /// A FAIL that broke `rule` for `key` with `values`, its message as the runner writes it.
    fn broken(
        id: &str,
        rule: &str,
        key: &str,
        values: &[(&str, u64)],
        at: DateTime<Utc>,
    ) -> Arc<Report> {
        let invariant = livecheck_core::Invariant {
            rule: rule.to_owned(),
            key: key.to_owned(),
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).into()))
                .collect(),
        };
        let mut r = (*failed(id, Verdict::Fail, &invariant.to_string(), at)).clone();
        r.invariant = Some(invariant);
        Arc::new(r)
    }

    #[test]
    fn a_broken_invariant_is_one_kind_per_rule_whatever_the_key_and_values() {
        let now = t0();
        let rule = "open sell exposure <= 100";
        let a = broken("a", rule, "u1", &[("open", 120)], now - secs(3));
        let b = broken("b", rule, "u2", &[("open", 450)], now - secs(2));
        let other = broken(
            "c",
            "at most 5 orders per minute",
            "u1",
            &[("orders", 6)],
            now,
        );
        assert_eq!(failure_kind(&a), "invariant: open sell exposure <= 100");
        assert_eq!(failure_kind(&a), failure_kind(&b));
        // A plain FAIL with the same message is another kind.
        let plain = failed("d", Verdict::Fail, a.error.as_deref().unwrap_or(""), now);
        assert_ne!(failure_kind(&plain), failure_kind(&a));

        let mut f = Failures::default();
        for r in [&a, &b, &other, &plain] {
            f.record(r, now, DEFAULT_HISTORY_WINDOW);
        }
        let kinds = f.kinds();
        assert_eq!(kinds.len(), 3);
        let k = kinds
            .iter()
            .find(|k| k.kind == "invariant: open sell exposure <= 100")
            .expect("the rule's kind");
        assert_eq!((k.verdict, k.count), (Verdict::Fail, 2));
        assert_eq!(k.rule.as_deref(), Some(rule));
        // Each run keeps its own key and values; the newest first.
        let newest = k.runs[0].invariant.as_ref().expect("invariant");
        assert_eq!(
            (newest.key.as_str(), &newest.values["open"]),
            ("u2", &450.into())
        );
        assert_eq!(
            k.runs[0].error.as_deref(),
            Some(r#"invariant broken: open sell exposure <= 100, for key "u2" (open=450)"#)
        );
        assert_eq!(
            k.runs[1].invariant.as_ref().map(|i| i.key.as_str()),
            Some("u1")
        );
        let plain_kind = kinds.iter().find(|k| k.rule.is_none()).expect("plain");
        assert_eq!(plain_kind.count, 1);
    }

    #[test]
    fn windows_count_invariant_failures() {
        let mut b = RateBuckets::default();
        let now = t0();
        b.record(now - secs(600), Verdict::Fail, true, now);
        b.record(now - secs(100), Verdict::Fail, true, now);
        b.record(now - secs(90), Verdict::Fail, false, now);
        b.record(now - secs(80), Verdict::Pass, false, now);
        let rates = b.rates(now);
        assert_eq!((rates[0].runs, rates[0].invariant_failures), (3, 1));
        assert_eq!((rates[1].runs, rates[1].invariant_failures), (4, 2));
        assert_eq!(b.rates(now + secs(3_600))[1].invariant_failures, 0);
    }

    #[test]
    fn invariant_failures_are_counted_by_rule_in_bounded_memory() {
        let mut c = InvariantCounts::default();
        c.record("b rule");
        c.record("a rule");
        c.record("b rule");
        assert_eq!(c.total(), 3);
        assert_eq!(
            c.by_rule(),
            [
                RuleCount {
                    rule: "a rule".to_owned(),
                    count: 1
                },
                RuleCount {
                    rule: "b rule".to_owned(),
                    count: 2
                },
            ]
        );
        // Rules made from data do not grow the map past the bound.
        for i in 0..(RULES_PER_CASE * 4) {
            c.record(&format!("rule {i}"));
        }
        let rules = c.by_rule();
        assert_eq!(rules.len(), RULES_PER_CASE + 1);
        assert_eq!(c.total(), 3 + (RULES_PER_CASE * 4) as u64);
        assert_eq!(rules.iter().map(|r| r.count).sum::<u64>(), c.total());
        let other = rules.iter().find(|r| r.rule == OTHER_RULES).expect("other");
        assert_eq!(
            other.count,
            (RULES_PER_CASE * 4 - (RULES_PER_CASE - 2)) as u64
        );
        // A rule counted apart stays apart.
        c.record("a rule");
        let a = c.by_rule().into_iter().find(|r| r.rule == "a rule");
        assert_eq!(a.map(|r| r.count), Some(2));
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let window = Duration::from_secs(600);
        let mut f = Failures::default();
        let now = t0();
        f.record(
            &failed("old", Verdict::Fail, "a", now - secs(600)),
            now,
            window,
        );
        assert!(
            f.kinds().is_empty(),
            "finished at the window's edge: not kept"
        );
        f.record(
            &failed("1", Verdict::Fail, "a", now - secs(500)),
            now,
            window,
        );
        f.record(
            &failed("2", Verdict::Fail, "a", now - secs(100)),
            now,
            window,
        );
        f.record(
            &failed("3", Verdict::Timeout, "b", now - secs(300)),
            now,
            window,
        );
        f.prune(now + secs(150), window);
        assert_eq!(f.kinds().len(), 2);
        assert!(f.run("1").is_none(), "aged out");
        assert!(f.run("2").is_some());
        f.prune(now + secs(350), window);
        assert_eq!(f.kinds().len(), 1, "the timeout aged out with its only run");
        assert_eq!(f.kinds()[0].kind, "a");
        f.prune(now + secs(500), window);
        assert!(f.kinds().is_empty());
    }

    #[test]
    fn failures_are_bounded_in_count() {
        let mut f = Failures::default();
        let now = t0();
        // An hour of a thousand failures a second, of ever new kinds, is cut to the bound.
        for i in 0..(KINDS_PER_CASE * 3) {
            for j in 0..(RUNS_PER_KIND * 3) {
                let at = now + secs((i * 100 + j) as i64);
                let error = format!("kind-{} broke", "x".repeat(i + 1));
                f.record(
                    &failed(&format!("{i}-{j}"), Verdict::Fail, &error, at),
                    at,
                    DEFAULT_HISTORY_WINDOW,
                );
            }
        }
        let kinds = f.kinds();
        assert_eq!(kinds.len(), KINDS_PER_CASE);
        assert!(kinds.iter().all(|k| k.runs.len() == RUNS_PER_KIND));
        assert!(kinds.iter().all(|k| k.count == (RUNS_PER_KIND * 3) as u64));
        // The kinds kept are the newest; the runs kept are each kind's newest.
        let newest = KINDS_PER_CASE * 3 - 1;
        assert_eq!(
            kinds[0].runs[0].test_id,
            format!("{newest}-{}", RUNS_PER_KIND * 3 - 1)
        );
        assert!(f.run("0-0").is_none());
    }

    #[test]
    fn transitions_are_kept_newest_first_and_bounded() {
        let mut t = Transitions::default();
        for i in 0..(TRANSITIONS_PER_CASE as i64 + 10) {
            t.record(TransitionRecord {
                from: Health::Ok,
                to: Health::Fail,
                reason: format!("{i}"),
                at: t0() + secs(i),
                suite: false,
            });
        }
        let all = t.to_vec();
        assert_eq!(all.len(), TRANSITIONS_PER_CASE);
        assert_eq!(all[0].reason, format!("{}", TRANSITIONS_PER_CASE + 9));
        assert!(all.windows(2).all(|w| w[0].at >= w[1].at));
    }
}
