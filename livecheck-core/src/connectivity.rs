//! Whether LiveCheck can reach Kafka, as its own clients see it.
//!
//! A [`Connectivity`] is fed by librdkafka's client callbacks (global errors such as
//! `AllBrokersDown`, and log lines) and by successes (a record received, a delivery
//! acknowledged, a metadata probe answered). It answers [`Connectivity::reachable`] and
//! [`Connectivity::down_since`], counts transitions, and logs for librdkafka: the first
//! message of a kind is logged, repeats of it are summarised once per
//! [`Connectivity::log_every`] with a count, so an unreachable broker is one clear line,
//! not dozens a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tracing::{debug, info, warn};

/// How often repeats of one kind of librdkafka message are summarised by default.
pub const DEFAULT_LOG_EVERY: Duration = Duration::from_secs(30);

/// Kinds of messages remembered by the rate limiter before it starts over.
const MAX_KINDS: usize = 256;

/// Outages closer than this are one episode (see [`Connectivity::outage`]).
const EPISODE_GAP: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Broker connectivity as LiveCheck's clients see it. Cheap to clone (shared).
#[derive(Clone)]
pub struct Connectivity {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    hint: OnceLock<String>,
    log_every: Duration,
    reachable: AtomicBool,
    transitions: AtomicU64,
    state: Mutex<State>,
}

struct State {
    down_since: Option<DateTime<Utc>>,
    down_at: Option<Instant>,
    reason: Option<String>,
    limiter: RateLimiter,
    /// The current or last outage episode: its start, and when Kafka was reachable again
    /// (`None`: not yet). Outages less than [`EPISODE_GAP`] apart are one episode: clients
    /// of one process see the same outage end at different moments.
    episode: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

impl std::fmt::Debug for Connectivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectivity")
            .field("brokers", &self.inner.brokers)
            .field("reachable", &self.reachable())
            .field("transitions", &self.transitions())
            .finish_non_exhaustive()
    }
}

impl Connectivity {
    /// Connectivity to `brokers` (used in messages only), reachable until told otherwise.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self::with_log_every(brokers, DEFAULT_LOG_EVERY)
    }

    /// As [`Connectivity::new`], summarising repeated librdkafka messages every `log_every`.
    pub fn with_log_every(brokers: impl Into<String>, log_every: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                brokers: brokers.into(),
                hint: OnceLock::new(),
                log_every,
                reachable: AtomicBool::new(true),
                transitions: AtomicU64::new(0),
                state: Mutex::new(State::with_log_every(log_every)),
            }),
        }
    }

    /// Sets (once) what the "cannot reach Kafka" line tells the operator to check, e.g.
    /// `check --brokers / LIVECHECK_BROKERS and the network`.
    pub fn set_hint(&self, hint: impl Into<String>) {
        let _ = self.inner.hint.set(hint.into());
    }

    /// The bootstrap servers this is about.
    pub fn brokers(&self) -> &str {
        &self.inner.brokers
    }

    /// How often repeats of a librdkafka message are summarised.
    pub fn log_every(&self) -> Duration {
        self.inner.log_every
    }

    /// Whether Kafka is reachable (not known to be down).
    pub fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Acquire)
    }

    /// Since when Kafka is unreachable (`None` while reachable).
    pub fn down_since(&self) -> Option<DateTime<Utc>> {
        self.lock().down_since
    }

    /// The outage episode going on (its start, `None`) or else the last one (its start and
    /// end): what producers held back during it may still come. Outages less than 30 s
    /// apart count as one episode, from the first one's start.
    pub fn outage(&self) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        self.lock().episode
    }

    /// For how long Kafka has been unreachable (`None` while reachable).
    pub fn down_for(&self) -> Option<Duration> {
        self.lock().down_at.map(|at| at.elapsed())
    }

    /// The error that made Kafka unreachable (`None` while reachable).
    pub fn reason(&self) -> Option<String> {
        self.lock().reason.clone()
    }

    /// Reachable ↔ unreachable transitions so far.
    pub fn transitions(&self) -> u64 {
        self.inner.transitions.load(Ordering::Relaxed)
    }

    /// `livecheck cannot reach Kafka (brokers …) since …` while unreachable.
    pub fn describe(&self) -> Option<String> {
        let state = self.lock();
        let since = state.down_since?;
        Some(format!(
            "livecheck cannot reach Kafka (brokers {}) since {}{}",
            self.inner.brokers,
            crate::headers::format_time(since),
            state
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ))
    }

    /// A success: a record received, a delivery acknowledged, a probe answered. Cheap when
    /// already reachable (one atomic load).
    pub fn mark_reachable(&self) {
        if self.reachable() {
            return;
        }
        let mut state = self.lock();
        if self.inner.reachable.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.transitions.fetch_add(1, Ordering::Relaxed);
        let down_for = state.down_at.map(|at| at.elapsed()).unwrap_or_default();
        let suppressed = state.limiter.suppressed();
        if let Some((start, None)) = state.episode {
            state.episode = Some((start, Some(Utc::now())));
        }
        state.down_since = None;
        state.down_at = None;
        state.reason = None;
        state.limiter = RateLimiter::with_every(self.inner.log_every);
        drop(state);
        info!(
            brokers = %self.inner.brokers,
            suppressed_client_messages = suppressed,
            "Kafka is reachable again after {:.1} s",
            down_for.as_secs_f64()
        );
    }

    /// A failure that means no broker can be reached (all brokers down, a probe failed).
    /// The first one logs one line that says what to check; the others are counted.
    pub fn mark_unreachable(&self, reason: &str) {
        let mut state = self.lock();
        if !self.inner.reachable.swap(false, Ordering::AcqRel) {
            return;
        }
        self.inner.transitions.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        state.episode = match state.episode {
            Some((start, Some(end))) if now - end < EPISODE_GAP => Some((start, None)),
            _ => Some((now, None)),
        };
        state.down_since = Some(now);
        state.down_at = Some(Instant::now());
        state.reason = Some(reason.to_owned());
        drop(state);
        let hint = self.inner.hint.get().map_or(
            "check the bootstrap servers and the network",
            String::as_str,
        );
        warn!(
            "livecheck cannot reach Kafka at {} ({reason}): {hint}; retrying, and repeated client errors are summarised every {} s",
            self.inner.brokers,
            self.inner.log_every.as_secs()
        );
    }

    /// Feeds a librdkafka global error (`ClientContext::error`).
    pub fn on_error(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        // "0/2 brokers are down": raised as the brokers came back; not an outage.
        if code == Some(RDKafkaErrorCode::AllBrokersDown) && reason.starts_with("0/") {
            debug!(target: "librdkafka", "Kafka client error: {error}: {reason}");
            return;
        }
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.mark_unreachable(reason);
            // Counted with the other repeats, not logged again.
            let _ = self
                .lock()
                .limiter
                .check("all brokers down", Instant::now());
            return;
        }
        let kind = format!("error {}", normalize(&format!("{error}: {reason}")));
        if let Some(repeats) = self.lock().limiter.check(&kind, Instant::now()) {
            // One broker's transport failure is routine (the outage line covers all down).
            if code == Some(RDKafkaErrorCode::BrokerTransportFailure) {
                info!(target: "librdkafka", repeats, "Kafka client error: {error}: {reason}");
            } else {
                warn!(target: "librdkafka", repeats, "Kafka client error: {error}: {reason}");
            }
        }
    }

    /// Feeds an error a client returned (e.g. a consumer's `recv`), rate-limited per kind;
    /// `AllBrokersDown` marks Kafka unreachable.
    pub fn on_client_error(&self, what: &str, error: &KafkaError) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.mark_unreachable("all broker connections are down");
        }
        let kind = format!("client {what} {}", normalize(&error.to_string()));
        if let Some(repeats) = self.lock().limiter.check(&kind, Instant::now()) {
            if matches!(
                code,
                Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
            ) {
                info!(repeats, error = %error, "{what}");
            } else {
                warn!(repeats, error = %error, "{what}");
            }
        }
    }

    /// Feeds a librdkafka log line (`ClientContext::log`), rate-limited per kind.
    pub fn on_log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if matches!(level, RDKafkaLogLevel::Debug) {
            debug!(target: "librdkafka", "{fac} {message}");
            return;
        }
        let kind = format!("log {fac} {}", normalize(message));
        let Some(repeats) = self.lock().limiter.check(&kind, Instant::now()) else {
            return;
        };
        if is_warning(level, fac, message) {
            warn!(target: "librdkafka", repeats, "{fac} {message}");
        } else {
            info!(target: "librdkafka", repeats, "{fac} {message}");
        }
    }

    /// A client context that feeds this connectivity (for consumers made outside the
    /// runner: probes, lag readers).
    pub fn context(&self) -> ConnectivityContext {
        ConnectivityContext {
            connectivity: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A librdkafka client context that feeds a [`Connectivity`] (errors and log lines).
#[derive(Debug, Clone)]
pub struct ConnectivityContext {
    connectivity: Connectivity,
}

impl ConnectivityContext {
    /// The connectivity it feeds.
    pub fn connectivity(&self) -> &Connectivity {
        &self.connectivity
    }
}

impl ClientContext for ConnectivityContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connectivity.on_error(&error, reason);
    }
}

impl ConsumerContext for ConnectivityContext {}

/// Whether a librdkafka log line (not debug) is logged at warn, else at info. Routine news
/// is info however librdkafka ranks it:
/// - a connection failure (`FAIL`): routine per broker, and the outage line covers all down;
/// - an offset commit refused because the group is rebalancing or has rebalanced under it
///   (`COMMITFAIL` whose errors are all "Group rebalance in progress", "Specified group
///   generation id is not valid" or "Unknown member"): members joining or leaving cause it, and the runner commits every position
///   again after the rebalance (and every 30th tick whatever happened: see
///   `Ledger::commit_all_again`). Other commit failures (authorization, a coordinator gone)
///   stay warnings, and so does a line that names another error besides.
fn is_warning(level: RDKafkaLogLevel, fac: &str, message: &str) -> bool {
    // librdkafka's texts of those errors, lower case, after "Broker: ".
    const REBALANCING: [&str; 3] = [
        "group rebalance in progress",
        "specified group generation id is not valid",
        "unknown member",
    ];
    match level {
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => false,
        _ if fac == "FAIL" => false,
        _ if fac == "COMMITFAIL" => {
            // librdkafka names each failed partition's error after the request's: every
            // `Broker: ...` error of the line must be one of those.
            let message = message.to_ascii_lowercase();
            let mut errors = message.split("broker: ").skip(1).peekable();
            errors.peek().is_none()
                || !errors.all(|error| REBALANCING.iter().any(|cause| error.starts_with(cause)))
        }
        _ => true,
    }
}

/// A message with its digits folded, so that `after 0ms` and `after 12ms`, or two ports of
/// one host, are one kind.
fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out.replace(", # identical error(s) suppressed", "")
}

/// The first message of a kind passes; repeats within `every` are counted and the next
/// one after `every` passes with the count.
#[derive(Debug)]
struct RateLimiter {
    every: Duration,
    kinds: HashMap<String, Repeats>,
}

#[derive(Debug)]
struct Repeats {
    last_logged: Instant,
    suppressed: u64,
}

impl RateLimiter {
    fn with_every(every: Duration) -> Self {
        Self {
            every,
            kinds: HashMap::new(),
        }
    }

    /// `Some(repeats suppressed since the last one logged)` when this one is to be logged.
    fn check(&mut self, kind: &str, now: Instant) -> Option<u64> {
        let every = self.every;
        if let Some(r) = self.kinds.get_mut(kind) {
            if now.saturating_duration_since(r.last_logged) < every {
                r.suppressed += 1;
                return None;
            }
            let repeats = r.suppressed;
            r.last_logged = now;
            r.suppressed = 0;
            return Some(repeats);
        }
        if self.kinds.len() >= MAX_KINDS {
            self.kinds.clear();
        }
        self.kinds.insert(
            kind.to_owned(),
            Repeats {
                last_logged: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Messages suppressed and not summarised yet.
    fn suppressed(&self) -> u64 {
        self.kinds.values().map(|r| r.suppressed).sum()
    }
}

impl State {
    fn with_log_every(every: Duration) -> Self {
        Self {
            down_since: None,
            down_at: None,
            reason: None,
            limiter: RateLimiter::with_every(every),
            episode: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connectivity() -> Connectivity {
        Connectivity::with_log_every("127.0.0.1:9", Duration::from_secs(30))
    }

    #[test]
    fn transitions_are_counted_once_per_change() {
        let c = connectivity();
        assert!(c.reachable());
        assert_eq!((c.down_since(), c.transitions()), (None, 0));
        c.mark_reachable();
        assert_eq!(
            c.transitions(),
            0,
            "a success while reachable is no transition"
        );

        c.mark_unreachable("1/1 brokers are down");
        assert!(!c.reachable());
        let since = c.down_since().expect("down since");
        c.mark_unreachable("still down");
        assert_eq!(c.transitions(), 1);
        assert_eq!(c.down_since(), Some(since), "the outage keeps its start");
        assert_eq!(c.reason().as_deref(), Some("1/1 brokers are down"));
        let text = c.describe().expect("a description while down");
        assert!(
            text.starts_with("livecheck cannot reach Kafka (brokers 127.0.0.1:9) since "),
            "{text}"
        );

        assert_eq!(c.outage(), Some((since, None)));
        c.mark_reachable();
        assert!(c.reachable());
        assert_eq!(
            (c.down_since(), c.reason(), c.describe()),
            (None, None, None)
        );
        assert!(
            matches!(c.outage(), Some((s, Some(until))) if s == since && until >= since),
            "the ended outage is remembered"
        );
        assert_eq!(c.transitions(), 2);
        assert!(c.clone().reachable(), "clones share the state");
        // A relapse right after is the same episode, from the first start.
        c.mark_unreachable("2/2 brokers are down");
        assert_eq!(c.outage(), Some((since, None)));
    }

    #[test]
    fn all_brokers_down_makes_it_unreachable_and_other_errors_do_not() {
        let c = connectivity();
        c.on_error(
            &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9/1: Connect failed",
        );
        assert!(
            c.reachable(),
            "one broker's transport error is not an outage"
        );
        c.on_error(
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(!c.reachable());
        assert_eq!(c.transitions(), 1);
        c.context().connectivity().mark_reachable();
        assert!(c.reachable());
    }

    #[test]
    fn repeats_are_summarised_once_per_period_with_a_count() {
        let mut limiter = RateLimiter::with_every(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(limiter.check("FAIL connect refused", t0), Some(0));
        for i in 1..=25 {
            let at = t0 + Duration::from_millis(40 * i);
            assert_eq!(
                limiter.check("FAIL connect refused", at),
                None,
                "repeat {i}"
            );
        }
        assert_eq!(
            limiter.check("other", t0 + Duration::from_secs(1)),
            Some(0),
            "another kind is logged at once"
        );
        assert_eq!(limiter.suppressed(), 25);
        assert_eq!(
            limiter.check("FAIL connect refused", t0 + Duration::from_secs(30)),
            Some(25),
            "after the period: logged with the count of repeats"
        );
        assert_eq!(
            limiter.check("FAIL connect refused", t0 + Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn commits_refused_by_a_rebalance_are_news_and_other_failures_warnings() {
        // librdkafka's own lines (rdkafka_cgrp.c), as a member joining a group logs them.
        let refused = [
            "Offset commit (manual) failed for 1/1 partition(s) in join-state wait-join: Broker: Group rebalance in progress: livecheck-tests[0]@57(Broker: Group rebalance in progress)",
            "Offset commit (manual) failed for 1/1 partition(s) in join-state steady: Broker: Specified group generation id is not valid: livecheck-tests[0]@57(Broker: Specified group generation id is not valid)",
            "Offset commit (manual) failed for 2/2 partition(s) in join-state init: Broker: Unknown member",
        ];
        for message in refused {
            assert!(
                !is_warning(RDKafkaLogLevel::Warning, "COMMITFAIL", message),
                "{message}"
            );
        }
        let failed = "Offset commit (manual) failed for 1/1 partition(s) in join-state steady: Broker: Group authorization failed";
        assert!(is_warning(RDKafkaLogLevel::Warning, "COMMITFAIL", failed));
        assert!(is_warning(RDKafkaLogLevel::Error, "COMMITFAIL", failed));
        // The line names the last partition's error first: another partition's counts too.
        let mixed = "Offset commit (manual) failed for 2/2 partition(s) in join-state steady: Broker: Group rebalance in progress: livecheck-tests[0]@5(Broker: Group authorization failed), livecheck-tests[1]@7(Broker: Group rebalance in progress)";
        assert!(is_warning(RDKafkaLogLevel::Warning, "COMMITFAIL", mixed));
        // No broker error named (a local one, or none): a warning.
        for message in [
            "Offset commit (manual) failed for 1/1 partition(s) in join-state steady: Local: Timed out: livecheck-tests[0]@5(Local: Timed out)",
            "Offset commit (manual) failed for 1/1 partition(s) in join-state steady: livecheck-tests[0]@5",
        ] {
            assert!(
                is_warning(RDKafkaLogLevel::Warning, "COMMITFAIL", message),
                "{message}"
            );
        }
        // Whatever the facility, the cause decides only for commits.
        assert!(is_warning(
            RDKafkaLogLevel::Warning,
            "SESSTMOUT",
            "Consumer group session timed out (in join-state steady): Group rebalance in progress"
        ));
        assert!(!is_warning(
            RDKafkaLogLevel::Error,
            "FAIL",
            "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
        ));
        assert!(!is_warning(RDKafkaLogLevel::Notice, "MAXPOLL", "anything"));
    }

    #[test]
    fn numbers_do_not_make_new_kinds() {
        assert_eq!(
            normalize("Connect to ipv4#127.0.0.1:40123 failed (after 0ms in state CONNECT)"),
            normalize("Connect to ipv4#127.0.0.1:40123 failed (after 12ms in state CONNECT, 3 identical error(s) suppressed)")
        );
        let c = connectivity();
        let now = Instant::now();
        let mut state = c.lock();
        let a = format!("log FAIL {}", normalize("after 1ms"));
        let b = format!("log FAIL {}", normalize("after 250ms"));
        assert_eq!(state.limiter.check(&a, now), Some(0));
        assert_eq!(state.limiter.check(&b, now), None);
    }
}
