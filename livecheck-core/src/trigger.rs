//! Triggers: where tests begin, on the service side, and how they are sampled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;

use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::control::{CaseStats, ControlState, Decision, EffectiveSettings};
use crate::counters::bump;
use crate::murmur2::unit_interval;

/// How a trigger decides whether a request becomes a test.
///
/// Each request gets a draw `u` in `[0, 1)` and is sampled iff `u < probability`. A hashed
/// draw is fixed by its input (test id or key), so every process decides the same for it,
/// and raising the probability keeps every id or key that was sampled sampled.
///
/// | call | `Random` | `TestId` | `Key` |
/// |---|---|---|---|
/// | [`Trigger::maybe_trigger`], [`Trigger::maybe_trigger_with_id`] | fresh random draw | hash of the test id | hash of the test id, warned once per trigger |
/// | [`Trigger::maybe_trigger_for_key`], [`Trigger::maybe_trigger_for_key_with_id`] | hash of case and key | hash of case and key | hash of case and key |
///
/// A call that names a key always samples by that key, whatever this setting: services that
/// must agree on a key cannot disagree through a setting each of them has to get right.
/// Whatever the sampling, a request that carries a test context of the case is never
/// sampled again (the context is registered as it came).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// A fresh random draw per request.
    #[default]
    Random,
    /// A hash of the test id: every service decides the same for the same id, e.g. an
    /// order id passed to [`Trigger::maybe_trigger_with_id`]. The draw is
    /// `(murmur2(id bytes) & 0x7fffffff) / 2^31`, Kafka's murmur2 (as for keys, below).
    TestId,
    /// A hash of a business key the service names (account, user, tenant), given to
    /// [`Trigger::maybe_trigger_for_key`]: every request of a sampled key becomes a test
    /// (each with its own test id), in every service, and the share of keys sampled is the
    /// probability. The draw is [`Trigger::key_draw`] (the formula is documented there).
    ///
    /// Set it on a case whose services all trigger with a key: a call without one
    /// ([`Trigger::maybe_trigger`]) then falls back to [`Sampling::TestId`] and logs a
    /// warning, once per trigger.
    ///
    /// A test that [`Trigger::maybe_trigger_for_key`] starts is routed by its key
    /// ([`TestContext::route`]): every test of one key lands on one partition of the tests,
    /// signals and reports topics, and is run by one runner instance.
    Key,
}

/// The service side of a case: where tests begin. A service needs only this (not the
/// expectations), so check files and services can live in different crates.
///
/// Its settings are *local* defaults: when the client it triggers with follows the control
/// topic ([`LiveCheck::follow_control`]) and the topic holds a record for the case, the
/// `maybe_trigger*` calls, [`Trigger::sample_with`], [`Trigger::samples_key_with`] and
/// [`Trigger::effective`] use that record's probability, active flag, sampling and expiry
/// instead.
#[derive(Debug, Clone)]
pub struct Trigger {
    case: String,
    settings: TriggerSettings,
    /// Set once [`Sampling::Key`] fell back to the test id (warned once; shared by clones).
    warned_no_key: Arc<AtomicBool>,
    /// Set once a key that cannot be a route started no test (warned once; shared by
    /// clones).
    warned_bad_route: Arc<AtomicBool>,
    /// The case's counters in the first client it decided with (shared by clones): saves
    /// a map lookup per request. The `Weak` keeps that client's state allocated, so the
    /// pointer comparison cannot mistake another client for it.
    stats: Arc<OnceLock<(Weak<ControlState>, Arc<CaseStats>)>>,
}

/// A trigger's settings, each under the name of the [`Trigger`] builder method that sets it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TriggerSettings {
    /// Share of requests that become tests, in `[0, 1]`.
    pub probability: f64,
    /// How requests are sampled.
    pub sampling: Sampling,
    /// How long after issue a test is still worth running.
    pub test_expires: Duration,
    /// Whether the trigger triggers at all.
    pub active: bool,
}

impl Trigger {
    /// A trigger for `case`, probability 1, random sampling, tests expire after 1 h.
    pub fn new(case: impl Into<String>) -> Self {
        let defaults = crate::case::Settings::default();
        Self {
            case: case.into(),
            settings: TriggerSettings {
                probability: defaults.probability,
                sampling: defaults.sampling,
                test_expires: defaults.test_expires,
                active: defaults.active,
            },
            warned_no_key: Arc::new(AtomicBool::new(false)),
            warned_bad_route: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
        }
    }

    /// Share of requests that become tests, clamped to `[0, 1]`.
    #[must_use]
    pub fn probability(mut self, probability: f64) -> Self {
        self.settings.probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        self
    }

    /// How to sample.
    #[must_use]
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.settings.sampling = sampling;
        self
    }

    /// How long after issue a test is still worth running (older tests are `SKIP`).
    #[must_use]
    pub fn test_expires(mut self, test_expires: Duration) -> Self {
        self.settings.test_expires = test_expires;
        self
    }

    /// Whether the trigger triggers at all (default true); an inactive trigger still
    /// registers a test whose context came in with the request.
    #[must_use]
    pub fn active(mut self, active: bool) -> Self {
        self.settings.active = active;
        self
    }

    /// The case name.
    pub fn case(&self) -> &str {
        &self.case
    }

    /// The settings.
    pub fn settings(&self) -> &TriggerSettings {
        &self.settings
    }

    /// Whether a request with test id `id` and no key is sampled (see [`Sampling`]), by the
    /// local settings: [`Trigger::sample_with`] applies the control topic.
    pub fn sample(&self, id: &str) -> bool {
        self.settings.active
            && self.draw_below(self.settings.probability, self.settings.sampling, id)
    }

    /// As [`Trigger::sample`], with the settings that apply through `client` (the control
    /// topic's, when it follows it and holds a record for the case). Counts nothing.
    pub fn sample_with(&self, client: &LiveCheck, id: &str) -> bool {
        let decision = self.decision(client);
        decision.active && self.draw_below(decision.probability, decision.sampling, id)
    }

    /// The settings that apply to this trigger through `client`, and where they come from:
    /// the control topic at a version, or the local settings and why
    /// ([`crate::control::SettingsSource`]).
    pub fn effective(&self, client: &LiveCheck) -> EffectiveSettings {
        client.control().effective(&self.case, &self.settings)
    }

    /// Announces this trigger's case to `client`: its heartbeat is sent from now on (not
    /// only after the first request) and reports these local settings while the control
    /// topic does not apply. A trigger that decides a request announces itself.
    pub fn announce(&self, client: &LiveCheck) {
        client.control().announce(&self.case, &self.settings);
    }

    /// The case's counters in `control` if they are the cached ones (the first client's).
    fn cached_stats(&self, control: &Arc<ControlState>) -> Option<&CaseStats> {
        let (owner, stats) = self.stats.get_or_init(|| {
            (
                Arc::downgrade(control),
                control.stats(&self.case, &self.settings),
            )
        });
        std::ptr::eq(owner.as_ptr(), Arc::as_ptr(control)).then_some(&**stats)
    }

    fn decision(&self, client: &LiveCheck) -> Decision {
        client.control().decision(&self.case, &self.settings)
    }

    /// Whether the draw for `id` is below `probability` (see [`Sampling`]).
    fn draw_below(&self, probability: f64, sampling: Sampling, id: &str) -> bool {
        if probability >= 1.0 {
            return true;
        }
        if probability <= 0.0 {
            return false;
        }
        let draw = match sampling {
            Sampling::Random => rand::random::<f64>(),
            Sampling::TestId => unit_interval(id.as_bytes()),
            Sampling::Key => {
                if !self.warned_no_key.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        case = %self.case,
                        "case is sampled by key, but a request was triggered without one \
                         (maybe_trigger instead of maybe_trigger_for_key): sampling such \
                         requests by test id; logged once"
                    );
                }
                unit_interval(id.as_bytes())
            }
        };
        draw < probability
    }

    /// The draw of business key `key` for this case, in `[0, 1)`: the key is sampled iff
    /// the draw is below the probability ([`Trigger::samples_key`]). Stable across
    /// processes, languages and versions:
    ///
    /// ```text
    /// bytes = UTF-8(case name) ++ [0x00] ++ UTF-8(key)
    /// draw  = (murmur2(bytes) & 0x7fffffff) / 2^31
    /// ```
    ///
    /// where `murmur2` is Kafka's (seed `0x9747b28c`, the one its Java client partitions by). The case
    /// name is hashed in so that different cases sample different sets of keys. In Java:
    ///
    /// ```java
    /// byte[] bytes = (caseName + "\u0000" + key).getBytes(StandardCharsets.UTF_8);
    /// double draw = (Utils.murmur2(bytes) & 0x7fffffff) / 2147483648.0;
    /// boolean sampled = draw < probability;
    /// ```
    ///
    /// ```
    /// use livecheck_core::Trigger;
    ///
    /// let trigger = Trigger::new("orders.place_order").probability(0.5);
    /// let draw = trigger.key_draw("account-42");
    /// assert!((0.0..1.0).contains(&draw));
    /// assert_eq!(trigger.samples_key("account-42"), draw < 0.5);
    /// ```
    pub fn key_draw(&self, key: &str) -> f64 {
        let mut bytes = Vec::with_capacity(self.case.len() + 1 + key.len());
        bytes.extend_from_slice(self.case.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(key.as_bytes());
        unit_interval(&bytes)
    }

    /// Whether requests of business key `key` (account, user, tenant) become tests of this
    /// case, by the local settings: [`Trigger::key_draw`] below the probability, and the
    /// trigger active. Pure: every process with the same case name and probability decides
    /// the same, and a key sampled at some probability stays sampled at any higher one.
    pub fn samples_key(&self, key: &str) -> bool {
        self.settings.active && self.key_draw(key) < self.settings.probability
    }

    /// As [`Trigger::samples_key`], with the settings that apply through `client` (the
    /// control topic's, when it follows it and holds a record for the case). Counts nothing.
    pub fn samples_key_with(&self, client: &LiveCheck, key: &str) -> bool {
        let decision = self.decision(client);
        decision.active && self.key_draw(key) < decision.probability
    }

    /// Samples the request; on a hit publishes a `TestExecution` (with `arguments`) and
    /// returns the context to scope the rest of the request with ([`LiveCheck::scope`]).
    /// It samples with the settings that apply through `client` ([`Trigger::effective`]:
    /// the control topic's when followed, else the local ones): an inactive case starts no
    /// test. The decision and the test are counted for the case's heartbeat.
    ///
    /// Inside a test of this case already (a context came in with the request) it returns
    /// that context and registers it, whatever the sampling says; its signature is kept. If
    /// the context came with arguments (a stimulus chose them), they are kept and `arguments`
    /// is ignored: the test checks the stimulus's intent, not the service's view of it. If it
    /// came with `null` arguments, `arguments` become the test's. A fresh context is signed
    /// (its arguments included) when the client has signing keys.
    #[must_use = "the context scopes the rest of the work; dropping it loses the test"]
    pub fn maybe_trigger<A: Serialize>(
        &self,
        client: &LiveCheck,
        arguments: &A,
    ) -> Option<TestContext> {
        self.maybe_trigger_with_id(client, None, arguments)
    }

    /// As [`Trigger::maybe_trigger`], with the test id chosen by the caller (e.g. the id
    /// of the order under test), or a fresh one when `id` is `None`. An id that is not 1 to
    /// 128 bytes of visible ASCII triggers nothing (logged).
    #[must_use = "the context scopes the rest of the work; dropping it loses the test"]
    pub fn maybe_trigger_with_id<A: Serialize>(
        &self,
        client: &LiveCheck,
        id: Option<&str>,
        arguments: &A,
    ) -> Option<TestContext> {
        self.trigger(client, None, id, arguments)
    }

    /// As [`Trigger::maybe_trigger`], sampled by a business key the service names (account,
    /// user, tenant; [`Trigger::samples_key`]) whatever [`TriggerSettings::sampling`] says:
    /// every request of a sampled key becomes a test, each with its own test id, and every
    /// service that samples this case by the same key decides the same.
    ///
    /// A test it starts is routed by `key` ([`TestContext::route`]): its records are keyed
    /// by `key` instead of its test id, so every test of one key lands on one partition of
    /// the co-partitioned LiveCheck topics and is run by one runner instance (what tables
    /// keyed by that business key need); a hot key puts all its tests on one partition. A
    /// key that cannot be a route (not 1 to [`crate::headers::MAX_ROUTE_LEN`] bytes of
    /// visible ASCII) starts no test (logged at warn the first time, then at debug).
    ///
    /// A context of this case that came with the request is registered whatever the key
    /// says, as with [`Trigger::maybe_trigger`], and kept as it came: with its route, or
    /// with none.
    #[must_use = "the context scopes the rest of the work; dropping it loses the test"]
    pub fn maybe_trigger_for_key<A: Serialize>(
        &self,
        client: &LiveCheck,
        key: &str,
        arguments: &A,
    ) -> Option<TestContext> {
        self.maybe_trigger_for_key_with_id(client, key, None, arguments)
    }

    /// As [`Trigger::maybe_trigger_for_key`] (a test it starts is routed by `key`), with the
    /// test id chosen by the caller (as [`Trigger::maybe_trigger_with_id`]).
    #[must_use = "the context scopes the rest of the work; dropping it loses the test"]
    pub fn maybe_trigger_for_key_with_id<A: Serialize>(
        &self,
        client: &LiveCheck,
        key: &str,
        id: Option<&str>,
        arguments: &A,
    ) -> Option<TestContext> {
        self.trigger(client, Some(key), id, arguments)
    }

    /// Every `maybe_trigger*`: continues a context of this case that came in, or samples
    /// (by `key` when given) with the settings that apply through `client`, counting the
    /// decision and the test for the case's heartbeat.
    fn trigger<A: Serialize>(
        &self,
        client: &LiveCheck,
        key: Option<&str>,
        id: Option<&str>,
        arguments: &A,
    ) -> Option<TestContext> {
        let arguments = match serde_json::to_value(arguments) {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(case = %self.case, error = %err, "test arguments do not serialize; not triggering");
                return None;
            }
        };
        let owned: Arc<CaseStats>;
        let (context, stats) = match current_test() {
            Some(current) if current.case == self.case && !current.arguments.is_null() => {
                (TestContext::clone(&current), None)
            }
            Some(current) if current.case == self.case => {
                (TestContext::clone(&current).arguments(arguments), None)
            }
            Some(_) => return None,
            None => {
                let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
                if let Err(err) = crate::headers::check_test_id(&id) {
                    tracing::warn!(case = %self.case, error = %err, "not triggering a test with this id");
                    return None;
                }
                if let Some(Err(err)) = key.map(crate::headers::check_route) {
                    if self.warned_bad_route.swap(true, Ordering::Relaxed) {
                        tracing::debug!(case = %self.case, error = %err, "not triggering a test routed by this key");
                    } else {
                        tracing::warn!(case = %self.case, error = %err, "not triggering a test routed by this key: a key must be 1 to 256 bytes of visible ASCII to route a test (further keys are logged at debug)");
                    }
                    return None;
                }
                let control = client.control();
                let decision = control.decision(&self.case, &self.settings);
                let stats = match self.cached_stats(control) {
                    Some(stats) => stats,
                    None => {
                        owned = control.stats(&self.case, &self.settings);
                        &owned
                    }
                };
                bump(&stats.requests);
                let sampled = decision.active
                    && match key {
                        Some(key) => self.key_draw(key) < decision.probability,
                        None => self.draw_below(decision.probability, decision.sampling, &id),
                    };
                if !sampled {
                    return None;
                }
                let mut context =
                    TestContext::with_id(id, self.case.clone(), decision.test_expires)
                        .arguments(arguments);
                // Routed by the key, set before signing (the route is not signed).
                context.route = key.map(str::to_owned);
                (client.sign(context), Some(stats))
            }
        };
        let mut context = context;
        if context.traceparent.is_none() {
            // A test started here belongs to the trace of the work that started it, if any.
            context.traceparent = crate::baggage::current_traceparent();
        }
        match client.register_test(&context) {
            Ok(()) => {
                if let Some(stats) = stats {
                    bump(&stats.tests_triggered);
                }
                Some(context)
            }
            Err(err) => {
                tracing::warn!(case = %self.case, error = %err, "could not register the test; going on without it");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::client::{KafkaConfig, Topics};

    /// A client whose records go nowhere: triggering needs no broker.
    fn offline_client() -> LiveCheck {
        LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).unwrap()
    }

    fn triggered(client: &LiveCheck) -> u64 {
        client.counters().tests_triggered()
    }

    /// The first of `account-0`, `account-1`, ... that `trigger` does (or does not) sample.
    fn account(trigger: &Trigger, sampled: bool) -> String {
        (0..)
            .map(|i| format!("account-{i}"))
            .find(|key| trigger.samples_key(key) == sampled)
            .unwrap()
    }

    /// Pinned draws, computed by an independent port (Python) of the Java client's
    /// `Utils.murmur2` on `case ++ "\0" ++ key`: the formula must not change between
    /// versions, or services of different versions would disagree.
    #[test]
    fn key_draws_are_the_documented_formula() {
        let cases = [
            ("orders.place_order", "account-42", 883_473_402_u32),
            ("orders.place_order", "user-1", 248_461_053),
            ("orders.place_order", "", 1_890_962_286),
            ("billing.invoice", "account-42", 663_022_117),
            ("orders.place_order", "ü-ключ", 943_352_745),
        ];
        for (case, key, scaled) in cases {
            let draw = Trigger::new(case).key_draw(key);
            assert_eq!(
                draw,
                f64::from(scaled) / 2_147_483_648.0,
                "{case} / {key:?}"
            );
        }
    }

    /// Over 10,000 distinct keys the share sampled is the probability to within 4 standard
    /// deviations of a binomial, `|count - n p| <= 4 sqrt(n p (1 - p))`: 12.6 keys (0.13
    /// percentage points) at p = 0.001, 200 keys (2 points) at p = 0.5. The draws are
    /// deterministic, so this either always passes or always fails.
    #[test]
    fn the_share_of_keys_sampled_is_the_probability() {
        const N: usize = 10_000;
        for (case, shape) in [
            ("orders.place_order", "account-"),
            ("billing.invoice", "user-"),
        ] {
            for p in [0.001, 0.01, 0.1, 0.25, 0.5] {
                let trigger = Trigger::new(case).probability(p);
                let count = (0..N)
                    .filter(|i| trigger.samples_key(&format!("{shape}{i}")))
                    .count();
                let n = N as f64;
                let expected = n * p;
                let bound = 4.0 * (n * p * (1.0 - p)).sqrt();
                println!(
                    "{case} {shape}*: p = {p}: {count} of {N} keys ({:.4}), expected {expected} +- {bound:.1}",
                    count as f64 / n
                );
                assert!(
                    (count as f64 - expected).abs() <= bound,
                    "{case}, p = {p}: {count} of {N} keys sampled, expected {expected} +- {bound:.1}"
                );
            }
        }
    }

    #[test]
    fn raising_the_probability_keeps_every_sampled_key_sampled() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        let sampled_at = |p: f64| -> HashSet<&str> {
            let trigger = Trigger::new("orders.place_order").probability(p);
            keys.iter()
                .map(String::as_str)
                .filter(|k| trigger.samples_key(k))
                .collect()
        };
        let grid = [0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.99, 1.0];
        let sets: Vec<_> = grid.iter().map(|&p| sampled_at(p)).collect();
        assert!(sets[0].is_empty());
        assert_eq!(sets[grid.len() - 1].len(), keys.len());
        for (i, pair) in sets.windows(2).enumerate() {
            assert!(
                pair[0].is_subset(&pair[1]),
                "a key sampled at p = {} is not sampled at p = {}",
                grid[i],
                grid[i + 1]
            );
        }
    }

    /// Two cases at p = 0.5 share about a quarter of their keys (independent draws), not all.
    #[test]
    fn different_cases_sample_different_keys() {
        let a = Trigger::new("orders.place_order").probability(0.5);
        let b = Trigger::new("orders.cancel_order").probability(0.5);
        let both = (0..10_000)
            .map(|i| format!("account-{i}"))
            .filter(|k| a.samples_key(k) && b.samples_key(k))
            .count();
        // Binomial(10,000, 0.25): 2,500 +- 4 * 43.3.
        assert!(
            (2_327..=2_673).contains(&both),
            "{both} keys sampled by both cases"
        );
    }

    #[test]
    fn every_request_of_one_key_decides_the_same() {
        let client = offline_client();
        let trigger = Trigger::new("orders.place_order").probability(0.5);
        let (sampled, skipped) = (account(&trigger, true), account(&trigger, false));

        let contexts: Vec<TestContext> = (0..1_000)
            .filter_map(|_| trigger.maybe_trigger_for_key(&client, &sampled, &"sell"))
            .collect();
        assert_eq!(contexts.len(), 1_000, "requests of sampled key {sampled}");
        let ids: HashSet<&str> = contexts.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), 1_000, "each test has its own id");
        assert!(contexts.iter().all(|c| c.case == "orders.place_order"));
        assert_eq!(contexts[0].arguments, serde_json::json!("sell"));
        assert_eq!(triggered(&client), 1_000);

        let none = (0..1_000)
            .filter_map(|_| trigger.maybe_trigger_for_key(&client, &skipped, &"sell"))
            .count();
        assert_eq!(none, 0, "requests of unsampled key {skipped}");
        assert_eq!(triggered(&client), 1_000);

        // With the caller's test id, and whatever the trigger's sampling setting says.
        let random = trigger.clone().sampling(Sampling::Random);
        let context = random
            .maybe_trigger_for_key_with_id(&client, &sampled, Some("order-1"), &"buy")
            .unwrap();
        assert_eq!(context.id, "order-1");
        assert!(random
            .maybe_trigger_for_key_with_id(&client, &skipped, Some("order-2"), &"buy")
            .is_none());
        // An invalid id triggers nothing, as with maybe_trigger_with_id.
        assert!(trigger
            .maybe_trigger_for_key_with_id(&client, &sampled, Some("has space"), &"buy")
            .is_none());
        assert_eq!(triggered(&client), 1_001);
    }

    #[tokio::test]
    async fn a_context_that_came_in_is_registered_whatever_the_key() {
        let client = offline_client();
        let trigger = Trigger::new("orders.place_order").probability(0.5);
        let skipped = account(&trigger, false);
        let came_in =
            TestContext::with_id("order-9", "orders.place_order", Duration::from_secs(60));
        let context = client
            .scope(came_in, async {
                trigger.maybe_trigger_for_key(&client, &skipped, &"sell")
            })
            .await
            .expect("the context that came in");
        assert_eq!(context.id, "order-9");
        assert_eq!(context.arguments, serde_json::json!("sell"));
        assert_eq!(triggered(&client), 1);
        // A context of another case: no test of this one.
        let other = TestContext::new("billing.invoice", Duration::from_secs(60));
        let sampled = account(&trigger, true);
        let none = client
            .scope(other, async {
                trigger.maybe_trigger_for_key(&client, &sampled, &"sell")
            })
            .await;
        assert!(none.is_none());
    }

    #[tokio::test]
    async fn a_test_started_by_key_is_routed_by_it_and_one_that_came_in_is_kept() {
        let client = offline_client();
        let trigger = Trigger::new("orders.place_order");
        let fresh = trigger
            .maybe_trigger_for_key(&client, "user-7", &"sell")
            .unwrap();
        assert_eq!(fresh.route.as_deref(), Some("user-7"));
        assert_eq!(fresh.partition_key(), "user-7");
        let with_id = trigger
            .maybe_trigger_for_key_with_id(&client, "user-7", Some("order-1"), &"sell")
            .unwrap();
        assert_eq!(
            (with_id.id.as_str(), with_id.partition_key()),
            ("order-1", "user-7")
        );
        // Without a key: no route.
        let plain = trigger.maybe_trigger(&client, &"sell").unwrap();
        assert_eq!(plain.route, None);
        assert_eq!(plain.partition_key(), plain.id);
        assert_eq!(triggered(&client), 3);

        // A context that came in is kept as it came: its route, or none.
        for came_in in [plain.clone(), fresh.clone().route("user-8")] {
            let kept = client
                .scope(came_in.clone(), async {
                    trigger.maybe_trigger_for_key(&client, "user-7", &"sell")
                })
                .await
                .unwrap();
            assert_eq!((&kept.id, &kept.route), (&came_in.id, &came_in.route));
        }

        // A key that cannot be a route starts no test.
        for bad in ["two words".to_owned(), String::new(), "k".repeat(257)] {
            assert!(
                trigger
                    .maybe_trigger_for_key(&client, &bad, &"sell")
                    .is_none(),
                "{bad:?}"
            );
        }
        assert_eq!(triggered(&client), 5);
        assert!(trigger.warned_bad_route.load(Ordering::Relaxed));
    }

    #[test]
    fn key_sampling_without_a_key_falls_back_to_the_test_id() {
        let trigger = Trigger::new("orders.place_order")
            .probability(0.5)
            .sampling(Sampling::Key);
        assert!(!trigger.warned_no_key.load(Ordering::Relaxed));
        for i in 0..1_000 {
            let id = format!("order-{i}");
            assert_eq!(
                trigger.sample(&id),
                unit_interval(id.as_bytes()) < 0.5,
                "{id}"
            );
        }
        assert!(trigger.warned_no_key.load(Ordering::Relaxed));
        let by_id = Trigger::new("orders.place_order")
            .probability(0.5)
            .sampling(Sampling::TestId);
        assert!((0..1_000).all(|i| {
            let id = format!("order-{i}");
            by_id.sample(&id) == trigger.sample(&id)
        }));
    }

    /// `client` follows a control topic that says `probability` and `active` for the case.
    fn control(client: &LiveCheck, version: u64, probability: f64, active: bool) {
        let record = serde_json::json!({
            "case": "orders.place_order", "probability": probability, "active": active,
            "version": version, "changed_by": "test", "changed_at": "2026-11-25T10:00:00Z",
        });
        let value = serde_json::to_vec(&record).unwrap();
        client
            .control()
            .apply(Some(b"orders.place_order"), Some(&value));
        client.control().set_following(true, "");
    }

    fn heartbeat_counts(client: &LiveCheck) -> Vec<(String, u64, u64)> {
        client
            .control()
            .heartbeats("svc", "i", Duration::from_secs(5), chrono::Utc::now())
            .into_iter()
            .map(|(_, b)| (b.case, b.requests, b.tests_triggered))
            .collect()
    }

    #[tokio::test]
    async fn the_control_settings_decide_and_a_context_that_came_in_is_continued() {
        let client = offline_client();
        let trigger = Trigger::new("orders.place_order").probability(1.0);
        control(&client, 1, 0.0, true);
        assert!((0..1_000).all(|i| trigger.maybe_trigger(&client, &i).is_none()));
        assert!(!trigger.sample_with(&client, "order-1"));
        assert!(trigger.sample("order-1"), "sample is local");
        control(&client, 2, 1.0, false);
        assert!((0..1_000).all(|i| trigger.maybe_trigger(&client, &i).is_none()));
        assert!(!trigger.samples_key_with(&client, "account-1"));
        let came_in =
            TestContext::with_id("order-9", "orders.place_order", Duration::from_secs(60));
        let continued = client
            .scope(came_in, async {
                trigger.maybe_trigger_for_key(&client, "account-1", &"sell")
            })
            .await;
        assert_eq!(continued.map(|c| c.id).as_deref(), Some("order-9"));
        control(&client, 3, 1.0, true);
        assert_eq!(
            (0..10)
                .filter_map(|i| trigger.maybe_trigger(&client, &i))
                .count(),
            10
        );
        // 2,010 decided, 10 started by sampling; the continued test is not counted.
        assert_eq!(
            heartbeat_counts(&client),
            [("orders.place_order".to_owned(), 2_010, 10)]
        );
        assert_eq!(triggered(&client), 11);
    }

    #[test]
    fn a_trigger_used_with_two_clients_counts_in_each() {
        let (a, b) = (offline_client(), offline_client());
        let trigger = Trigger::new("orders.place_order").probability(1.0);
        for _ in 0..3 {
            let _ = trigger.maybe_trigger(&a, &());
        }
        let clone = trigger.clone();
        let _ = clone.maybe_trigger(&b, &());
        let _ = clone.maybe_trigger(&a, &());
        assert_eq!(
            heartbeat_counts(&a),
            [("orders.place_order".to_owned(), 4, 4)]
        );
        assert_eq!(
            heartbeat_counts(&b),
            [("orders.place_order".to_owned(), 1, 1)]
        );
    }
}
