//! The libtest-mimic harness: a check file's `main` hands its cases to [`Harness`].

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use livecheck_core::{BoxFuture, Case, Verdict};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

use crate::environment::EnvironmentConfig;
use crate::junit::{self, TrialRecord};
use crate::session::{secs, Session};
use crate::BoxError;

/// Runs a check file's cases as libtest trials named `module::case`, and plain async
/// tests beside them (`module::name`), e.g. the fault tests of the same system.
///
/// ```no_run
/// use livecheck_harness::{EnvironmentConfig, Harness};
/// fn main() -> std::process::ExitCode {
///     let environment = EnvironmentConfig::from_env().expect("environment settings");
///     Harness::from_env("orders")
///         .environment(environment)
///         .cases(vec![])
///         .test("a_plain_test", || async { Ok::<(), std::io::Error>(()) })
///         .run()
/// }
/// ```
pub struct Harness {
    module: String,
    cases: Vec<Case>,
    tests: Vec<(String, PlainTest)>,
    environment: Option<EnvironmentConfig>,
    iterations: usize,
    junit: Option<String>,
}

/// A plain test: runs on the harness's runtime.
type PlainTest = Arc<dyn Fn() -> BoxFuture<Result<(), BoxError>> + Send + Sync>;

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("module", &self.module)
            .field("cases", &self.cases)
            .field(
                "tests",
                &self.tests.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("environment", &self.environment)
            .field("iterations", &self.iterations)
            .field("junit", &self.junit)
            .finish()
    }
}

struct Shared {
    runtime: Runtime,
    environment: Option<EnvironmentConfig>,
    cases: Vec<Case>,
    iterations: usize,
    session: OnceCell<Result<Session, String>>,
    records: Mutex<Vec<TrialRecord>>,
}

impl Harness {
    /// A harness for the check file `module`: 3 iterations per case, no JUnit report.
    /// Reads nothing from the environment (see [`from_env`](Self::from_env)).
    pub fn new(module: impl Into<String>) -> Self {
        Self {
            module: module.into(),
            cases: Vec::new(),
            tests: Vec::new(),
            environment: None,
            iterations: 3,
            junit: None,
        }
    }

    /// [`new`](Self::new), with iterations per case from `LIVECHECK_ITERATIONS` and the
    /// JUnit report's path from `LIVECHECK_JUNIT` (the `--junit PATH` flag wins).
    pub fn from_env(module: impl Into<String>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut harness = Self::new(module);
        if let Some(n) = var("LIVECHECK_ITERATIONS").and_then(|v| v.trim().parse().ok()) {
            harness = harness.iterations(n);
        }
        harness.junit = var("LIVECHECK_JUNIT");
        harness
    }

    /// A plain async test beside the cases, trial `module::name`, on the harness's
    /// runtime: it fails on `Err` or a panic. It does not bring the shared environment up
    /// (a fault test starts its own [`Session`]).
    #[must_use]
    pub fn test<F, Fut, E>(mut self, name: impl Into<String>, test: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.tests.push((
            name.into(),
            Arc::new(move || {
                let run = test();
                Box::pin(async move { run.await.map_err(Into::into) })
            }),
        ));
        self
    }

    /// Where the JUnit report goes (the `--junit PATH` flag wins).
    #[must_use]
    pub fn junit(mut self, path: impl Into<String>) -> Self {
        self.junit = Some(path.into());
        self
    }

    /// The cases to run.
    #[must_use]
    pub fn cases(mut self, cases: Vec<Case>) -> Self {
        self.cases = cases;
        self
    }

    /// Where to run them.
    #[must_use]
    pub fn environment(mut self, environment: EnvironmentConfig) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Runs of each case's stimulus per trial.
    #[must_use]
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations.max(1);
        self
    }

    /// Parses libtest's arguments (plus `--junit PATH`), runs the trials, prints figures,
    /// writes the JUnit report, and returns the exit code (never `process::exit`, so the
    /// containers are removed).
    pub fn run(self) -> ExitCode {
        let started = Instant::now();
        let (args, junit_flag) = split_junit(std::env::args().collect());
        let junit_path = junit_flag.or(self.junit.clone());
        let args = Arguments::from_iter(args);
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,livecheck_harness=info".into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(crate::live::cli::colours_on_stderr())
            .try_init();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(err) => {
                eprintln!("error: cannot start the async runtime: {err}");
                return ExitCode::FAILURE;
            }
        };
        let shared = Arc::new(Shared {
            runtime,
            environment: self.environment,
            cases: self.cases,
            iterations: self.iterations,
            session: OnceCell::new(),
            records: Mutex::new(Vec::new()),
        });
        let mut trials: Vec<Trial> = (0..shared.cases.len())
            .map(|i| {
                let case = &shared.cases[i];
                let short = case.name().rsplit('.').next().unwrap_or(case.name());
                let name = format!("{}::{short}", self.module);
                let shared = shared.clone();
                let trial_name = name.clone();
                let has_stimulus = case.has_stimulus();
                Trial::test(name, move || run_trial(&shared, i, &trial_name))
                    .with_ignored_flag(!has_stimulus)
            })
            .collect();
        for (name, test) in self.tests {
            let name = format!("{}::{name}", self.module);
            let (shared, trial_name) = (shared.clone(), name.clone());
            trials.push(Trial::test(name, move || {
                run_plain(&shared, &trial_name, test.as_ref())
            }));
        }
        let conclusion = libtest_mimic::run(&args, trials);

        let Ok(mut shared) = Arc::try_unwrap(shared) else {
            return conclusion.exit_code();
        };
        let records =
            std::mem::take(&mut *shared.records.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(Ok(session)) = shared.session.get() {
            println!("livecheck: {}", session.environment().timing_line());
        }
        if !records.is_empty() {
            println!(
                "livecheck: {} trial(s), suite time {:.2} s (harness start to last verdict)",
                records.len(),
                secs(started)
            );
        }
        if let Some(path) = junit_path {
            match std::fs::write(&path, junit::render(&self.module, &records)) {
                Ok(()) => println!("livecheck: JUnit report written to {path}"),
                Err(err) => eprintln!("livecheck: cannot write the JUnit report to {path}: {err}"),
            }
        }
        // Tear the environment down inside the runtime (containers are removed on drop).
        if let Some(Ok(session)) = shared.session.take() {
            shared.runtime.block_on(session.close());
        }
        shared.runtime.shutdown_timeout(Duration::from_secs(15));
        conclusion.exit_code()
    }
}

fn split_junit(args: Vec<String>) -> (Vec<String>, Option<String>) {
    let mut rest = Vec::with_capacity(args.len());
    let mut junit = None;
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "--junit" {
            junit = iter.next();
        } else if let Some(path) = arg.strip_prefix("--junit=") {
            junit = Some(path.to_owned());
        } else {
            rest.push(arg);
        }
    }
    (rest, junit)
}

fn run_plain(
    shared: &Shared,
    name: &str,
    test: &(dyn Fn() -> BoxFuture<Result<(), BoxError>> + Send + Sync),
) -> Result<(), Failed> {
    let started = Instant::now();
    // A panic (a failed assertion) is a failure like an `Err`, recorded for the report.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shared.runtime.block_on(test())
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the test panicked");
        Err(format!("panicked: {message}").into())
    })
    .map_err(|err| crate::live::error_chain(err.as_ref()));
    shared
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(TrialRecord {
            name: name.to_owned(),
            duration: started.elapsed(),
            failure: result.as_ref().err().cloned(),
        });
    result.map_err(Failed::from)
}

fn run_trial(shared: &Shared, index: usize, name: &str) -> Result<(), Failed> {
    let started = Instant::now();
    let case = &shared.cases[index];
    let result = shared.runtime.block_on(async {
        let session = shared
            .session
            .get_or_init(|| async {
                let Some(config) = &shared.environment else {
                    return Err(
                        "the harness has no environment: call Harness::environment".to_owned()
                    );
                };
                Session::start(config, shared.cases.clone())
                    .await
                    .map_err(|e| format!("the environment did not come up: {e}"))
            })
            .await;
        let session = session.as_ref().map_err(String::clone)?;
        let reports = session.run_case(case, shared.iterations).await;
        let bad: Vec<_> = reports
            .iter()
            .filter(|r| r.verdict != Verdict::Pass)
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            let mut text = format!(
                "{} of {} run(s) of {} did not pass:\n",
                bad.len(),
                reports.len(),
                case.name()
            );
            for report in bad {
                text.push_str(&report.render());
                text.push('\n');
            }
            Err(text)
        }
    });
    shared
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(TrialRecord {
            name: name.to_owned(),
            duration: started.elapsed(),
            failure: result.as_ref().err().cloned(),
        });
    result.map_err(Failed::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_test_fails_on_err_and_on_panic_with_its_message_and_is_recorded() {
        let shared = Shared {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            environment: None,
            cases: Vec::new(),
            iterations: 1,
            session: OnceCell::new(),
            records: Mutex::new(Vec::new()),
        };
        let passes: PlainTest = Arc::new(|| Box::pin(async { Ok(()) }));
        let errs: PlainTest = Arc::new(|| Box::pin(async { Err("no verdict".into()) }));
        let panics: PlainTest = Arc::new(|| Box::pin(async { panic!("expected TIMEOUT") }));
        assert!(run_plain(&shared, "m::passes", passes.as_ref()).is_ok());
        let failed = run_plain(&shared, "m::errs", errs.as_ref()).unwrap_err();
        assert_eq!(failed.message(), Some("no verdict"));
        let failed = run_plain(&shared, "m::panics", panics.as_ref()).unwrap_err();
        assert_eq!(failed.message(), Some("panicked: expected TIMEOUT"));
        let records = shared.records.lock().unwrap();
        let failures: Vec<_> = records.iter().map(|r| r.failure.is_some()).collect();
        assert_eq!(failures, [false, true, true]);
    }

    #[test]
    fn junit_flag_is_taken_out_of_libtest_arguments() {
        let args = [
            "bin",
            "--junit",
            "out.xml",
            "--exact",
            "orders::place_order",
        ]
        .map(String::from)
        .to_vec();
        let (rest, junit) = split_junit(args);
        assert_eq!(rest, ["bin", "--exact", "orders::place_order"]);
        assert_eq!(junit.as_deref(), Some("out.xml"));
    }
}
