//! Triggers: where tests begin, on the service side, and how they are sampled.

use std::time::Duration;

use serde::Serialize;

use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::murmur2::unit_interval;

/// How a trigger decides whether a request becomes a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// A fresh random draw per request.
    #[default]
    Random,
    /// A hash of the test id (murmur2): every service decides the same for the same id.
    KeyHash,
}

/// The service side of a case: where tests begin. A service needs only this (not the
/// expectations), so check files and services can live in different crates.
#[derive(Debug, Clone)]
pub struct Trigger {
    case: String,
    settings: TriggerSettings,
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
            },
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

    /// The case name.
    pub fn case(&self) -> &str {
        &self.case
    }

    /// The settings.
    pub fn settings(&self) -> &TriggerSettings {
        &self.settings
    }

    /// Whether a request with test id `id` is sampled.
    pub fn sample(&self, id: &str) -> bool {
        let probability = self.settings.probability;
        if probability >= 1.0 {
            return true;
        }
        if probability <= 0.0 {
            return false;
        }
        let draw = match self.settings.sampling {
            Sampling::Random => rand::random::<f64>(),
            Sampling::KeyHash => unit_interval(id.as_bytes()),
        };
        draw < probability
    }

    /// Samples the request; on a hit publishes a `TestExecution` (with `arguments`) and
    /// returns the context to scope the rest of the request with ([`LiveCheck::scope`]).
    ///
    /// Inside a test of this case already (a context came in with the request) it returns
    /// that context and registers it, whatever the sampling says; its signature is kept. If
    /// the context came with arguments (a stimulus chose them), they are kept and `arguments`
    /// is ignored: the test checks the stimulus's intent, not the service's view of it. If it
    /// came with `null` arguments, `arguments` become the test's. A fresh context is signed
    /// (its arguments included) when the client has signing keys.
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
    pub fn maybe_trigger_with_id<A: Serialize>(
        &self,
        client: &LiveCheck,
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
        let context = match current_test() {
            Some(current) if current.case == self.case && !current.arguments.is_null() => {
                TestContext::clone(&current)
            }
            Some(current) if current.case == self.case => {
                TestContext::clone(&current).arguments(arguments)
            }
            Some(_) => return None,
            None => {
                let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
                if let Err(err) = crate::headers::check_test_id(&id) {
                    tracing::warn!(case = %self.case, error = %err, "not triggering a test with this id");
                    return None;
                }
                if !self.sample(&id) {
                    return None;
                }
                client.sign(
                    TestContext::with_id(id, self.case.clone(), self.settings.test_expires).arguments(arguments),
                )
            }
        };
        match client.register_test(&context) {
            Ok(()) => Some(context),
            Err(err) => {
                tracing::warn!(case = %self.case, error = %err, "could not register the test; going on without it");
                None
            }
        }
    }
}
