//! Cases: named checks with their settings, their expectations and their stimulus.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::error::Error;
use crate::murmur2::unit_interval;
use crate::run::Run;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub(crate) type Expectations = Arc<dyn Fn(Run) -> BoxFuture<Result<(), CheckError>> + Send + Sync>;
pub(crate) type StimulusFn =
    Arc<dyn Fn(Target) -> BoxFuture<Result<(), StimulusError>> + Send + Sync>;

/// Why a check did not pass. Return it from expectations (`?` on [`Run::wait`], or
/// [`crate::ensure!`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A contract was violated: verdict `FAIL`.
    #[error("{0}")]
    Failed(String),
    /// A step did not arrive in time: verdict `TIMEOUT`. In time means, by the records'
    /// own timestamps (event time), within the timeout of the previous step (the first
    /// step: of the test record).
    #[error("{}", timeout_message(signal, *waited, last_step.as_deref(), *late_by))]
    Timeout {
        /// The step that did not come in time.
        signal: String,
        /// The timeout it had.
        waited: Duration,
        /// The last step that did come.
        last_step: Option<String>,
        /// Set when the step did come, but after its deadline: by how much.
        late_by: Option<Duration>,
    },
    /// The check itself errored: verdict `ERROR`.
    #[error("{0}")]
    Error(String),
}

fn timeout_message(
    signal: &str,
    waited: Duration,
    last_step: Option<&str>,
    late_by: Option<Duration>,
) -> String {
    let since = last_step.map_or("the start of the test (no step arrived)".to_owned(), |s| {
        format!("the previous step `{s}`")
    });
    match late_by {
        Some(late) => {
            format!("signal `{signal}` came {late:?} late: more than {waited:?} after {since}")
        }
        None => format!("signal `{signal}` did not arrive within {waited:?} of {since}"),
    }
}

/// Fails the check (verdict `FAIL`) with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return ::std::result::Result::Err($crate::CheckError::Failed(format!($($arg)+)));
        }
    };
}

/// Fails the check (verdict `FAIL`) unless the two values are equal; the message shows both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if !(*left == *right) {
                    return ::std::result::Result::Err($crate::CheckError::Failed(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($arg)+),
                        right,
                        left
                    )));
                }
            }
        }
    };
}

/// How a trigger decides whether a request becomes a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// A fresh random draw per request.
    #[default]
    Random,
    /// A hash of the test id (murmur2): every service decides the same for the same id.
    KeyHash,
}

/// What a stimulus could not do. A stimulus error makes the run `ERROR`.
#[derive(Debug, thiserror::Error)]
pub enum StimulusError {
    /// The request did not get an answer.
    #[error("request to {url} failed: {source}")]
    Request {
        /// The URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error status.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: http::StatusCode,
        /// The start of the body.
        body: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The service a stimulus talks to: a base URL and an HTTP client that carries the current
/// test context in its requests.
#[derive(Debug, Clone)]
pub struct Target {
    base_url: String,
    http: reqwest::Client,
}

impl Target {
    /// A target at `base_url` (`http://127.0.0.1:6066`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::with_client(base_url, reqwest::Client::new())
    }

    /// A target with a client of your own.
    pub fn with_client(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The HTTP client (use [`crate::http::RequestBuilderExt::test_context`] on requests).
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// GETs `path` with the current test context; an error status is an error.
    pub async fn get(&self, path: &str) -> Result<String, StimulusError> {
        use crate::http::RequestBuilderExt as _;
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .test_context()
            .send()
            .await
            .map_err(|source| StimulusError::Request {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: String = body.chars().take(200).collect();
            return Err(StimulusError::Status { url, status, body });
        }
        Ok(body)
    }
}

/// A named check and its settings. Build it with the consuming builder:
///
/// ```
/// use std::time::Duration;
/// use livecheck_core::{Case, Run, Signal};
///
/// static SAVED: Signal<String> = Signal::new("orders.place_order", "order_saved");
///
/// let case = Case::new("orders.place_order")
///     .probability(0.5)
///     .timeout(Duration::from_secs(10))
///     .expect(|run: Run, side: String| async move {
///         let saved = run.wait(&SAVED).await?;
///         livecheck_core::ensure_eq!(saved, side, "the side was changed on the way");
///         Ok(())
///     });
/// assert_eq!(case.name(), "orders.place_order");
/// ```
#[derive(Clone)]
pub struct Case {
    pub(crate) name: String,
    pub(crate) probability: f64,
    pub(crate) sampling: Sampling,
    pub(crate) timeout: Duration,
    pub(crate) test_expires: Duration,
    pub(crate) warn_stalled_after: Option<Duration>,
    pub(crate) frequency: Option<Duration>,
    pub(crate) stimulus: Option<StimulusFn>,
    pub(crate) max_consecutive_failures: u32,
    pub(crate) active: bool,
    pub(crate) expectations: Option<Expectations>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("probability", &self.probability)
            .field("sampling", &self.sampling)
            .field("timeout", &self.timeout)
            .field("test_expires", &self.test_expires)
            .field("warn_stalled_after", &self.warn_stalled_after)
            .field("frequency", &self.frequency)
            .field("has_stimulus", &self.stimulus.is_some())
            .field("max_consecutive_failures", &self.max_consecutive_failures)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Case {
    /// A case named `name`, probability 1, 30 s per signal, tests expire after 1 h.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            probability: 1.0,
            sampling: Sampling::Random,
            timeout: Duration::from_secs(30),
            test_expires: Duration::from_secs(3600),
            warn_stalled_after: None,
            frequency: None,
            stimulus: None,
            max_consecutive_failures: 3,
            active: true,
            expectations: None,
        }
    }

    /// Share of requests that become tests, in `[0, 1]`.
    #[must_use]
    pub fn probability(mut self, probability: f64) -> Self {
        self.probability = probability;
        self
    }

    /// How the trigger samples.
    #[must_use]
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// How long each `wait` waits for its signal, counted from when that wait began.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long after issue a test is still worth running (older tests are `SKIP`).
    #[must_use]
    pub fn test_expires(mut self, expires: Duration) -> Self {
        self.test_expires = expires;
        self
    }

    /// Raise `STALL` when no test of this case ran for this long.
    #[must_use]
    pub fn warn_stalled_after(mut self, after: Duration) -> Self {
        self.warn_stalled_after = Some(after);
        self
    }

    /// Run the stimulus every `frequency` (synthetic traffic in live mode).
    #[must_use]
    pub fn frequency(mut self, frequency: Duration) -> Self {
        self.frequency = Some(frequency);
        self
    }

    /// The synthetic request that starts a test: it runs scoped with a fresh test context,
    /// and [`Target::get`] carries that context to the service.
    #[must_use]
    pub fn stimulus<F, Fut>(mut self, stimulus: F) -> Self
    where
        F: Fn(Target) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StimulusError>> + Send + 'static,
    {
        self.stimulus = Some(Arc::new(move |target| Box::pin(stimulus(target))));
        self
    }

    /// Suite state goes `FAIL` after this many failed runs in a row.
    #[must_use]
    pub fn max_consecutive_failures(mut self, n: u32) -> Self {
        self.max_consecutive_failures = n;
        self
    }

    /// An inactive case's tests are `SKIP`.
    #[must_use]
    pub fn active(mut self, active: bool) -> Self {
        self.active = active;
        self
    }

    /// The expectations: plain async code that waits for signals and asserts on them.
    /// `A` is decoded from the test's arguments (an undecodable argument is `ERROR`).
    #[must_use]
    pub fn expect<A, F, Fut>(mut self, expectations: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(Run, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CheckError>> + Send + 'static,
    {
        self.expectations = Some(Arc::new(move |run: Run| {
            // Decoded before the future is built: the run holds the arguments already.
            let arguments = &run.context().arguments;
            match A::deserialize(arguments) {
                Ok(args) => Box::pin(expectations(run, args)) as BoxFuture<_>,
                Err(e) => {
                    let error = CheckError::Error(format!(
                        "test arguments {arguments} do not decode as {}: {e}",
                        std::any::type_name::<A>()
                    ));
                    Box::pin(async move { Err(error) })
                }
            }
        }));
        self
    }

    /// The case name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-signal timeout.
    pub fn signal_timeout(&self) -> Duration {
        self.timeout
    }

    /// Test expiry.
    pub fn expires(&self) -> Duration {
        self.test_expires
    }

    /// `warn_stalled_after`, if set.
    pub fn stalled_after(&self) -> Option<Duration> {
        self.warn_stalled_after
    }

    /// Synthetic-traffic period, if set.
    pub fn stimulus_frequency(&self) -> Option<Duration> {
        self.frequency
    }

    /// `max_consecutive_failures`.
    pub fn failure_threshold(&self) -> u32 {
        self.max_consecutive_failures
    }

    /// Whether the case is active.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The sampling probability.
    pub fn sample_probability(&self) -> f64 {
        self.probability
    }

    /// Whether the case has a stimulus.
    pub fn has_stimulus(&self) -> bool {
        self.stimulus.is_some()
    }

    /// Runs the stimulus against `target` (scope it with the test context first).
    pub async fn run_stimulus(&self, target: Target) -> Result<(), StimulusError> {
        match &self.stimulus {
            Some(stimulus) => stimulus(target).await,
            None => Err(StimulusError::Other(format!(
                "case {} has no stimulus; give it one with Case::stimulus",
                self.name
            ))),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Config(format!("case {}: {what}", self.name)));
        if self.name.trim().is_empty() {
            return Err(Error::Config("a case needs a name".into()));
        }
        if !(0.0..=1.0).contains(&self.probability) || self.probability.is_nan() {
            return bad(format!("probability {} is not in [0, 1]", self.probability));
        }
        if self.timeout.is_zero() {
            return bad("the signal timeout is zero".into());
        }
        if self.test_expires.is_zero() {
            return bad("test_expires is zero".into());
        }
        if self.expectations.is_none() {
            return bad("no expectations; add them with Case::expect".into());
        }
        if self.frequency.is_some_and(|f| f.is_zero()) {
            return bad("the frequency is zero".into());
        }
        if self.frequency.is_some() && self.stimulus.is_none() {
            return bad("a frequency is set but no stimulus".into());
        }
        Ok(())
    }

    /// The service-side trigger with this case's settings.
    pub fn trigger(&self) -> Trigger {
        Trigger {
            case: self.name.clone(),
            probability: self.probability,
            sampling: self.sampling,
            expires: self.test_expires,
        }
    }
}

/// The service side of a case: where tests begin. A service needs only this (not the
/// expectations), so check files and services can live in different crates.
#[derive(Debug, Clone)]
pub struct Trigger {
    case: String,
    probability: f64,
    sampling: Sampling,
    expires: Duration,
}

impl Trigger {
    /// A trigger for `case`, probability 1, random sampling, tests expire after 1 h.
    pub fn new(case: impl Into<String>) -> Self {
        Case::new(case).trigger()
    }

    /// Share of requests that become tests, clamped to `[0, 1]`.
    #[must_use]
    pub fn probability(mut self, probability: f64) -> Self {
        self.probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        self
    }

    /// How to sample.
    #[must_use]
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// Test expiry.
    #[must_use]
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = expires;
        self
    }

    /// The case name.
    pub fn case(&self) -> &str {
        &self.case
    }

    /// Whether a request with test id `id` is sampled.
    pub fn sample(&self, id: &str) -> bool {
        if self.probability >= 1.0 {
            return true;
        }
        if self.probability <= 0.0 {
            return false;
        }
        let draw = match self.sampling {
            Sampling::Random => rand::random::<f64>(),
            Sampling::KeyHash => unit_interval(id.as_bytes()),
        };
        draw < self.probability
    }

    /// Samples the request; on a hit publishes a `TestExecution` (with `arguments`) and
    /// returns the context to scope the rest of the request with ([`LiveCheck::scope`]).
    ///
    /// Inside a test of this case already (a context came in with the request) it returns
    /// that context with the arguments and registers it, whatever the sampling says; its
    /// signature is kept. A fresh context is signed when the client has signing keys.
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
                    TestContext::with_id(id, self.case.clone(), self.expires).arguments(arguments),
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
