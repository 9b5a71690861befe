//! What the services apply: the heartbeats they publish (one per service instance and case,
//! every few seconds, on the heartbeats topic), held per instance and compared with what
//! the control topic says.
//!
//! An instance is
//! - `stale` when its last heartbeat is older than [`STALE_AFTER_BEATS`] × its `every_ms`;
//! - `following` when it applies the published version (and its values);
//! - `catching up` when it applies an older version and the newer one was published less
//!   than [`STALE_AFTER_BEATS`] heartbeats ago;
//! - `not following` otherwise: another version than the published one, its local
//!   defaults, or values that are not the version's.
//!
//! The realized fraction is counted from the first heartbeat with the instance's current
//! settings (probability, active, source): tests triggered / requests since then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use livecheck_core::control::{CaseControl, Heartbeat, SettingsSource};
use serde::Serialize;

/// Heartbeats an instance may miss before it is stale.
pub const STALE_AFTER_BEATS: u64 = 3;
/// Instances silent for longer are no longer shown.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How an instance stands with the published settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Following {
    /// It applies the published version.
    Following,
    /// It applies an older version; the newer one is only just published.
    CatchingUp,
    /// It applies something else (see the problem).
    NotFollowing,
    /// Its heartbeats stopped.
    Stale,
}

/// One service instance's view of one case, as shown on the page and `/api/cases`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    /// Service name.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// The probability its trigger samples with.
    pub probability: f64,
    /// Whether its trigger triggers.
    pub active: bool,
    /// Where those come from.
    pub source: SettingsSource,
    /// Requests decided since it started.
    pub requests: u64,
    /// Tests triggered since it started.
    pub tests_triggered: u64,
    /// Requests since its settings were last seen to change.
    pub requests_at_settings: u64,
    /// Tests triggered since then.
    pub tests_at_settings: u64,
    /// `tests_at_settings / requests_at_settings` (`None` before a request).
    pub realized_fraction: Option<f64>,
    /// When its last heartbeat was made.
    pub last_heartbeat_at: DateTime<Utc>,
    /// How old that is, milliseconds.
    pub age_ms: i64,
    /// How often it beats, milliseconds.
    pub every_ms: u64,
    /// Whether it follows the published settings.
    pub following: Following,
    /// What is wrong, in words (`None` when it follows).
    pub problem: Option<String>,
}

#[derive(Debug)]
struct Seen {
    beat: Heartbeat,
    settings: (u64, bool, SettingsSource),
    base: (u64, u64),
}

/// The latest heartbeat of every instance, per case.
#[derive(Debug, Default)]
pub struct Fleet {
    seen: Mutex<HashMap<(String, String, String), Seen>>,
    problem: Problem,
}

impl Fleet {
    /// Takes a heartbeat (an older one than held for the instance is ignored).
    pub fn observe(&self, beat: Heartbeat) {
        let key = (
            beat.service.clone(),
            beat.instance.clone(),
            beat.case.clone(),
        );
        let settings = (beat.probability.to_bits(), beat.active, beat.source.clone());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(&key) {
            Some(s) if s.beat.at > beat.at => {}
            Some(s) => {
                // New settings, or a restart (counters went back): count from here.
                if s.settings != settings
                    || beat.requests < s.beat.requests
                    || beat.tests_triggered < s.beat.tests_triggered
                {
                    s.base = (beat.requests, beat.tests_triggered);
                    s.settings = settings;
                }
                s.beat = beat;
            }
            None => {
                let base = (beat.requests, beat.tests_triggered);
                seen.insert(
                    key,
                    Seen {
                        beat,
                        settings,
                        base,
                    },
                );
            }
        }
    }

    /// Why the heartbeats topic cannot be read (`None`: it can).
    pub fn problem(&self) -> Option<String> {
        self.problem.get()
    }

    /// Sets why the heartbeats topic cannot be read.
    pub fn set_problem(&self, problem: Option<String>) {
        self.problem.set(problem);
    }

    /// The instances that applied `case` in the last [`FORGET_AFTER`], by service and
    /// instance, judged against `published` at `now`.
    pub fn instances(
        &self,
        case: &str,
        published: Option<&CaseControl>,
        now: DateTime<Utc>,
    ) -> Vec<InstanceView> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<InstanceView> = seen
            .values()
            .filter(|s| s.beat.case == case)
            .filter_map(|s| {
                let age = now - s.beat.at;
                let forget =
                    chrono::Duration::from_std(FORGET_AFTER).unwrap_or(chrono::Duration::MAX);
                (age <= forget).then(|| view(s, published, now))
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        out
    }
}

fn view(s: &Seen, published: Option<&CaseControl>, now: DateTime<Utc>) -> InstanceView {
    let b = &s.beat;
    let age_ms = (now - b.at).num_milliseconds();
    let every_ms = b.every_ms.max(1);
    let beats = chrono::Duration::milliseconds(
        i64::try_from(STALE_AFTER_BEATS.saturating_mul(every_ms)).unwrap_or(i64::MAX),
    );
    let (following, problem) = if age_ms > beats.num_milliseconds() {
        (
            Following::Stale,
            Some(format!(
                "no heartbeat for {:.1} s (it beats every {:.1} s)",
                age_ms as f64 / 1000.0,
                every_ms as f64 / 1000.0
            )),
        )
    } else {
        judge(b, published, now, beats)
    };
    let requests_at_settings = b.requests.saturating_sub(s.base.0);
    let tests_at_settings = b.tests_triggered.saturating_sub(s.base.1);
    InstanceView {
        service: b.service.clone(),
        instance: b.instance.clone(),
        probability: b.probability,
        active: b.active,
        source: b.source.clone(),
        requests: b.requests,
        tests_triggered: b.tests_triggered,
        requests_at_settings,
        tests_at_settings,
        realized_fraction: (requests_at_settings > 0)
            .then(|| tests_at_settings as f64 / requests_at_settings as f64),
        last_heartbeat_at: b.at,
        age_ms,
        every_ms: b.every_ms,
        following,
        problem,
    }
}

fn judge(
    b: &Heartbeat,
    published: Option<&CaseControl>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> (Following, Option<String>) {
    let not = |why: String| (Following::NotFollowing, Some(why));
    match (&b.source, published) {
        (SettingsSource::Local { reason }, Some(p)) => not(format!(
            "applies its local defaults ({reason}) while version {} is published",
            p.version
        )),
        (SettingsSource::Local { reason }, None) => not(format!(
            "applies its local defaults ({reason}); nothing is published for the case"
        )),
        (SettingsSource::Control { version }, None) => not(format!(
            "applies version {version}, which this livecheck instance has not read"
        )),
        (SettingsSource::Control { version }, Some(p)) if *version == p.version => {
            if b.probability != p.probability || b.active != p.active {
                not(format!(
                    "says it applies version {version} but samples with probability {} active {} (the version says {} and {})",
                    b.probability, b.active, p.probability, p.active
                ))
            } else {
                (Following::Following, None)
            }
        }
        (SettingsSource::Control { version }, Some(p)) if *version < p.version => {
            let why = format!(
                "applies version {version}; version {} was published at {} by {}",
                p.version,
                livecheck_core::headers::format_time(p.changed_at),
                p.changed_by
            );
            if now - p.changed_at <= grace {
                (Following::CatchingUp, Some(why))
            } else {
                not(why)
            }
        }
        (SettingsSource::Control { version }, Some(p)) => not(format!(
            "applies version {version}, newer than version {} this livecheck instance has read",
            p.version
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(
        instance: &str,
        version: Option<u64>,
        p: f64,
        at: DateTime<Utc>,
        counts: (u64, u64),
    ) -> Heartbeat {
        Heartbeat {
            service: "orders".into(),
            instance: instance.into(),
            case: "c".into(),
            probability: p,
            active: true,
            source: match version {
                Some(version) => SettingsSource::Control { version },
                None => SettingsSource::Local {
                    reason: "control topic unreachable".into(),
                },
            },
            requests: counts.0,
            tests_triggered: counts.1,
            at,
            every_ms: 1000,
        }
    }

    fn published(version: u64, p: f64, at: DateTime<Utc>) -> CaseControl {
        CaseControl {
            case: "c".into(),
            probability: p,
            active: true,
            sampling: Default::default(),
            test_expires_secs: None,
            version,
            changed_by: "api:alice".into(),
            changed_at: at,
            rollout: None,
        }
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    #[test]
    fn instances_are_judged_against_the_published_version() {
        let t0 = Utc::now();
        let fleet = Fleet::default();
        fleet.observe(beat("a", Some(7), 0.25, t0, (100, 25)));
        fleet.observe(beat("b", Some(6), 1.0, t0, (10, 10)));
        fleet.observe(beat("c", None, 1.0, t0, (10, 10)));
        fleet.observe(beat("d", Some(7), 0.5, t0, (10, 5)));
        let p = published(7, 0.25, t0 - secs(60));
        let views = fleet.instances("c", Some(&p), t0 + secs(1));
        let by: HashMap<&str, &InstanceView> =
            views.iter().map(|v| (v.instance.as_str(), v)).collect();
        assert_eq!(by["a"].following, Following::Following);
        assert_eq!(by["a"].problem, None);
        assert_eq!(by["b"].following, Following::NotFollowing);
        assert!(by["b"]
            .problem
            .as_deref()
            .unwrap_or_default()
            .starts_with("applies version 6; version 7 was published"));
        assert_eq!(by["c"].following, Following::NotFollowing);
        assert!(by["c"]
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("local defaults (control topic unreachable)"));
        assert_eq!(
            by["d"].following,
            Following::NotFollowing,
            "values not the version's"
        );
        // Just published: an older version is catching up.
        let fresh = published(7, 0.25, t0);
        assert_eq!(
            fleet
                .instances("c", Some(&fresh), t0 + secs(1))
                .iter()
                .find(|v| v.instance == "b")
                .map(|v| v.following),
            Some(Following::CatchingUp)
        );
        assert!(fleet.instances("other", Some(&p), t0).is_empty());
    }

    #[test]
    fn an_instance_goes_stale_after_three_missed_beats_and_is_forgotten_after_an_hour() {
        let t0 = Utc::now();
        let fleet = Fleet::default();
        fleet.observe(beat("a", Some(7), 0.25, t0, (0, 0)));
        let p = published(7, 0.25, t0);
        assert_eq!(
            fleet.instances("c", Some(&p), t0 + secs(3))[0].following,
            Following::Following
        );
        let late = &fleet.instances("c", Some(&p), t0 + secs(4))[0];
        assert_eq!(late.following, Following::Stale);
        assert_eq!(
            late.problem.as_deref(),
            Some("no heartbeat for 4.0 s (it beats every 1.0 s)")
        );
        assert!(fleet.instances("c", Some(&p), t0 + secs(3601)).is_empty());
    }

    #[test]
    fn the_realized_fraction_counts_from_the_current_settings() {
        let t0 = Utc::now();
        let fleet = Fleet::default();
        fleet.observe(beat("a", Some(1), 1.0, t0, (100, 100)));
        fleet.observe(beat("a", Some(1), 1.0, t0 + secs(1), (200, 200)));
        fleet.observe(beat("a", Some(2), 0.25, t0 + secs(2), (210, 202)));
        fleet.observe(beat("a", Some(2), 0.25, t0 + secs(3), (610, 302)));
        // An older heartbeat arriving late changes nothing.
        fleet.observe(beat("a", Some(1), 1.0, t0, (100, 100)));
        let v = &fleet.instances("c", None, t0 + secs(3))[0];
        assert_eq!((v.requests_at_settings, v.tests_at_settings), (400, 100));
        assert_eq!(v.realized_fraction, Some(0.25));
        // A restart (counters back to small numbers) counts from there.
        fleet.observe(beat("a", Some(2), 0.25, t0 + secs(4), (4, 1)));
        let v = &fleet.instances("c", None, t0 + secs(4))[0];
        assert_eq!((v.requests_at_settings, v.realized_fraction), (0, None));
    }
}

/// Why a topic cannot be read now (`None`: it can), shared between its reader and the page.
#[derive(Debug, Default)]
pub(crate) struct Problem(Mutex<Option<String>>);

impl Problem {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, problem: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }
}
