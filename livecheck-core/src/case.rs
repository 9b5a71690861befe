//! Cases: named checks with their settings, their expectations and their stimulus.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::check::CheckError;
use crate::error::Error;
use crate::run::Run;
use crate::runner::Checking;
use crate::stimulus::{stimulus_fn, PreparedStimulus, StimulusError, StimulusFn, Target};
use crate::table::{Declared, TableSpec};
use crate::trigger::{Sampling, Trigger};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A case's expectations, type erased: given a run and what concludes it, the run's whole
/// check as one future ([`Checking::then`]), the case's own future in the same allocation.
pub(crate) type Expectations = Arc<dyn Fn(Run, Checking) -> BoxFuture<()> + Send + Sync>;

/// A case's rule for the route of a test from its arguments ([`Case::route_by`]), type
/// erased: an error when the arguments do not decode.
pub(crate) type RouteFn = Arc<dyn Fn(&serde_json::Value) -> Result<String, String> + Send + Sync>;

/// A case's settings. Each is set by the [`Case`] builder method of the same name and
/// read back here under that name (`case.settings().timeout`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// Share of requests that become tests, in `[0, 1]`. Default 1.
    pub probability: f64,
    /// How the trigger samples. Default [`Sampling::Random`].
    pub sampling: Sampling,
    /// How long each wait waits for its step after the previous one. Default 30 s.
    pub timeout: Duration,
    /// How long the whole run may take, from the test's issue to its last step (by event
    /// time). Default none: only the per-step timeouts bound it.
    pub deadline: Option<Duration>,
    /// After the expectations return, how long (by event time, after the last step) the
    /// run still watches for repeated or forbidden steps before it passes. Default 0.
    pub settle: Duration,
    /// How long after issue a test is still worth running (older tests are `SKIP`).
    /// Default 1 h.
    pub test_expires: Duration,
    /// Raise `STALL` when no test of the case ran for this long. Default none.
    pub warn_stalled_after: Option<Duration>,
    /// Run the stimulus every `frequency` in live mode (synthetic traffic). Default none.
    pub frequency: Option<Duration>,
    /// Suite state goes `FAIL` after this many failed runs in a row. Default 3.
    pub max_consecutive_failures: u32,
    /// An inactive case's tests are `SKIP`. Default true.
    pub active: bool,
    /// A run begins when its test's first record after the test record comes (a step or a
    /// hop), or when its first step's deadline passes, instead of when the test record is
    /// read. Default false. See [`Case::start_on_first_step`].
    pub start_on_first_step: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            probability: 1.0,
            sampling: Sampling::Random,
            timeout: Duration::from_secs(30),
            deadline: None,
            settle: Duration::ZERO,
            test_expires: Duration::from_secs(3600),
            warn_stalled_after: None,
            frequency: None,
            max_consecutive_failures: 3,
            active: true,
            start_on_first_step: false,
        }
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
/// // Each setting is read back under the name that set it.
/// assert_eq!(case.settings().probability, 0.5);
/// ```
#[derive(Clone)]
pub struct Case {
    pub(crate) name: String,
    pub(crate) settings: Settings,
    pub(crate) stimulus: Option<StimulusFn>,
    pub(crate) expectations: Option<Expectations>,
    /// The tables and windows its expectations use.
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) route: Option<RouteFn>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("has_stimulus", &self.stimulus.is_some())
            .field("routes_by_key", &self.route.is_some())
            .finish_non_exhaustive()
    }
}

impl Case {
    /// A case named `name` with the default [`Settings`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            settings: Settings::default(),
            stimulus: None,
            expectations: None,
            tables: Vec::new(),
            route: None,
        }
    }

    /// Share of requests that become tests, in `[0, 1]`.
    #[must_use]
    pub fn probability(mut self, probability: f64) -> Self {
        self.settings.probability = probability;
        self
    }

    /// How the trigger samples.
    #[must_use]
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.settings.sampling = sampling;
        self
    }

    /// How long each wait waits for its step, after the previous step.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// How long the whole run may take, from the test's issue (by event time): a step
    /// still missing then is `TIMEOUT` naming the deadline, whatever its own timeout.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = Some(deadline);
        self
    }

    /// After the expectations return, keep watching this long (by event time, after the
    /// last step) for a step that happens again, before passing. Without it, a repeat of
    /// the last step, or one from another producer racing it, may be read after the
    /// verdict (then it is only counted in `late_signals`); the runner's `clock_slack` is
    /// the settle time that sees every such repeat, and every verdict waits as long.
    #[must_use]
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settings.settle = settle;
        self
    }

    /// Begin each run when its test's first record after the test record comes (a step or
    /// a hop), or when its first step's deadline passes (by the partition's event time, in
    /// the runner's queue of deadlines, as a wait's), instead of when the test record is
    /// read. Until then the run is a small entry in the runner, not a task: for checks whose
    /// first act is a wait, whose tests mostly wait, this is about half the memory per run
    /// in flight (see `docs/performance.md`). The verdicts are the same: a wait's deadline
    /// counts from the test record's time either way.
    ///
    /// Only for checks that do nothing before their first wait but wait: what comes before
    /// it (an HTTP call to read a balance before the steps, a table read) would happen
    /// later, after the first step, and see its effects.
    #[must_use]
    pub fn start_on_first_step(mut self) -> Self {
        self.settings.start_on_first_step = true;
        self
    }

    /// How long after issue a test is still worth running (older tests are `SKIP`).
    #[must_use]
    pub fn test_expires(mut self, test_expires: Duration) -> Self {
        self.settings.test_expires = test_expires;
        self
    }

    /// Raise `STALL` when no test of this case ran for this long.
    #[must_use]
    pub fn warn_stalled_after(mut self, after: Duration) -> Self {
        self.settings.warn_stalled_after = Some(after);
        self
    }

    /// Run the stimulus every `frequency` (synthetic traffic in live mode).
    #[must_use]
    pub fn frequency(mut self, frequency: Duration) -> Self {
        self.settings.frequency = Some(frequency);
        self
    }

    /// Suite state goes `FAIL` after this many failed runs in a row.
    #[must_use]
    pub fn max_consecutive_failures(mut self, n: u32) -> Self {
        self.settings.max_consecutive_failures = n;
        self
    }

    /// An inactive case's tests are `SKIP`.
    #[must_use]
    pub fn active(mut self, active: bool) -> Self {
        self.settings.active = active;
        self
    }

    /// Declares a [`crate::Table`] or [`crate::Window`] the expectations use: the runner
    /// restores it before it runs the tests of a partition (see [`crate::table`]). Reading
    /// or writing an undeclared table is an `ERROR`.
    #[must_use]
    pub fn table(mut self, table: &impl Declared) -> Self {
        let spec = table.spec();
        if !self.tables.contains(&spec) {
            self.tables.push(spec);
        }
        self
    }

    /// The tables and windows the case declared.
    pub fn tables(&self) -> &[TableSpec] {
        &self.tables
    }

    /// The synthetic request that starts a test: it runs scoped with a fresh test context,
    /// and [`Target::get`] carries that context to the service. The test's arguments are
    /// `null`, so the service's trigger gives them; use [`Case::stimulus_with`] to choose them.
    #[must_use]
    pub fn stimulus<F, Fut>(self, stimulus: F) -> Self
    where
        F: Fn(Target) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StimulusError>> + Send + 'static,
    {
        self.stimulus_with(|| (), move |target, ()| stimulus(target))
    }

    /// A stimulus that chooses the test's arguments: `arguments` makes fresh ones for each
    /// run, the test context carries them (header `LiveCheck-Test-Arguments`, covered by
    /// the signature), and `stimulus` sends the request with them. A service's trigger keeps
    /// them over its own, so the expectations check the stimulus's intent, not the
    /// service's view of it.
    ///
    /// ```
    /// use livecheck_core::{Case, Run, Target};
    ///
    /// let case = Case::new("orders.place_order")
    ///     .stimulus_with(
    ///         || if rand::random::<bool>() { "buy" } else { "sell" },
    ///         |app: Target, side: &'static str| async move {
    ///             app.get(&format!("/order/init/{side}/")).await.map(drop)
    ///         },
    ///     )
    ///     .expect(|_run: Run, _side: String| async move { Ok(()) });
    /// assert!(case.has_stimulus());
    /// ```
    #[must_use]
    pub fn stimulus_with<A, G, F, Fut>(mut self, arguments: G, stimulus: F) -> Self
    where
        A: serde::Serialize + Send + 'static,
        G: Fn() -> A + Send + Sync + 'static,
        F: Fn(Target, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StimulusError>> + Send + 'static,
    {
        self.stimulus = Some(stimulus_fn(arguments, stimulus));
        self
    }

    /// The case's rule for routing a test by a business key (user, account): `f` derives
    /// the route ([`crate::TestContext::route`]) from the test's arguments, decoded as `A`.
    /// A harness puts it on the contexts it creates for the stimulus
    /// ([`PreparedStimulus::route`]), so that a synthetic test lands on the partition (and
    /// the runner instance) of its key, as a test a service starts with
    /// [`Trigger::maybe_trigger_for_key`] does. Give it to a case whose services trigger by
    /// key, deriving the same key they do.
    ///
    /// ```
    /// use livecheck_core::{Case, Run, Target};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Transfer { from: String, amount: u64 }
    ///
    /// let case = Case::new("ledger.transfer")
    ///     .route_by(|t: &Transfer| t.from.clone())
    ///     .stimulus_with(
    ///         || Transfer { from: "account-7".into(), amount: 5 },
    ///         |_app: Target, _t: Transfer| async move { Ok(()) },
    ///     );
    /// assert!(case.routes_by_key());
    /// let stimulus = case.prepare_stimulus().unwrap();
    /// assert_eq!(stimulus.route(), Some("account-7"));
    /// ```
    #[must_use]
    pub fn route_by<A, F>(mut self, f: F) -> Self
    where
        A: DeserializeOwned,
        F: Fn(&A) -> String + Send + Sync + 'static,
    {
        self.route = Some(Arc::new(move |arguments: &serde_json::Value| {
            let decoded = A::deserialize(arguments).map_err(|e| {
                format!(
                    "test arguments {arguments} do not decode as {}: {e}",
                    std::any::type_name::<A>()
                )
            })?;
            Ok(f(&decoded))
        }));
        self
    }

    /// The route of a test of this case with `arguments`, by the case's rule
    /// ([`Case::route_by`]): `None` when the case has none; an error when the arguments do
    /// not decode, or the route is not 1 to [`crate::headers::MAX_ROUTE_LEN`] bytes of
    /// visible ASCII.
    pub fn route_for(&self, arguments: &serde_json::Value) -> Result<Option<String>, String> {
        let Some(rule) = &self.route else {
            return Ok(None);
        };
        let route = rule(arguments)?;
        crate::headers::check_route(&route).map_err(|e| e.to_string())?;
        Ok(Some(route))
    }

    /// Whether the case routes its tests by a business key ([`Case::route_by`]).
    pub fn routes_by_key(&self) -> bool {
        self.route.is_some()
    }

    /// The expectations: plain async code that waits for signals and asserts on them.
    /// `A` is decoded from the test's arguments (an undecodable argument is `ERROR`).
    ///
    /// The closure is called on the runner's loop, which reads the records, when the run
    /// starts: it should only build its future (`|run, args| async move { ... }`), doing its
    /// work in the future. The future is polled by its lane's loop too, between the records
    /// that wake it: it must not block (no blocking I/O, `std::thread::sleep` or long
    /// computation: use `tokio::task::spawn_blocking` and await it), or its whole lane waits.
    /// A panic, in the closure or in the future, fails that run (`FAIL`, "the check
    /// panicked: ...").
    #[must_use]
    pub fn expect<A, F, Fut>(mut self, expectations: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(Run, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CheckError>> + Send + 'static,
    {
        self.expectations = Some(Arc::new(move |run: Run, checking: Checking| {
            // Decoded before the future is built: the run holds the arguments already.
            let arguments = &run.context().arguments;
            match A::deserialize(arguments) {
                Ok(args) => checking.then(expectations(run, args)),
                Err(e) => {
                    let error = CheckError::Error(format!(
                        "test arguments {arguments} do not decode as {}: {e}",
                        std::any::type_name::<A>()
                    ));
                    checking.then(std::future::ready(Err(error)))
                }
            }
        }));
        self
    }

    /// The case name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings, each under the name of the builder method that sets it.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the case has a stimulus.
    pub fn has_stimulus(&self) -> bool {
        self.stimulus.is_some()
    }

    /// Chooses one run's arguments and returns the stimulus ready to send: build the test
    /// context with [`PreparedStimulus::arguments`] and [`PreparedStimulus::route`] first.
    /// An error when the case has no stimulus, the arguments do not serialize, or the
    /// case's route rule ([`Case::route_by`]) fails on them.
    pub fn prepare_stimulus(&self) -> Result<PreparedStimulus, StimulusError> {
        let Some(stimulus) = &self.stimulus else {
            return Err(StimulusError::Other(format!(
                "case {} has no stimulus; give it one with Case::stimulus",
                self.name
            )));
        };
        let mut prepared = stimulus(&self.name)?;
        prepared.route =
            self.route_for(prepared.arguments())
                .map_err(|error| StimulusError::Route {
                    case: self.name.clone(),
                    error,
                })?;
        Ok(prepared)
    }

    /// Runs the stimulus against `target` (scope it with the test context first). The
    /// arguments it chooses are not on that context: use [`Case::prepare_stimulus`] to put
    /// them there.
    pub async fn run_stimulus(&self, target: Target) -> Result<(), StimulusError> {
        self.prepare_stimulus()?.send(target).await
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Config(format!("case {}: {what}", self.name)));
        let s = &self.settings;
        if self.name.trim().is_empty() {
            return Err(Error::Config("a case needs a name".into()));
        }
        if !(0.0..=1.0).contains(&s.probability) || s.probability.is_nan() {
            return bad(format!("probability {} is not in [0, 1]", s.probability));
        }
        if s.timeout.is_zero() {
            return bad("the signal timeout is zero".into());
        }
        if s.deadline.is_some_and(|d| d.is_zero()) {
            return bad("the deadline is zero".into());
        }
        if s.test_expires.is_zero() {
            return bad("test_expires is zero".into());
        }
        if self.expectations.is_none() {
            return bad("no expectations; add them with Case::expect".into());
        }
        if s.frequency.is_some_and(|f| f.is_zero()) {
            return bad("the frequency is zero".into());
        }
        if s.frequency.is_some() && self.stimulus.is_none() {
            return bad("a frequency is set but no stimulus".into());
        }
        for t in &self.tables {
            let valid = !t.name.is_empty()
                && t.name.len() <= 100
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return bad(format!(
                    "table name {:?} is not 1 to 100 of [a-zA-Z0-9._-] (it names a topic)",
                    t.name
                ));
            }
            if self
                .tables
                .iter()
                .any(|o| o.name == t.name && o.global != t.global)
            {
                return bad(format!(
                    "table {} is declared both global and partitioned",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// The service-side trigger with this case's settings.
    pub fn trigger(&self) -> Trigger {
        Trigger::new(self.name.clone())
            .probability(self.settings.probability)
            .sampling(self.settings.sampling)
            .test_expires(self.settings.test_expires)
    }
}
