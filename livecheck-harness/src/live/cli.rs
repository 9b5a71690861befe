//! The whole `livecheck` command in one call: a user's binary is
//! `fn main() -> ExitCode { livecheck_harness::live::main(cases()) }`.

use std::future::Future;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use livecheck_core::{BoxFuture, Case, KafkaConfig};
use tracing_subscriber::EnvFilter;

use super::config::{LiveArgs, LiveConfig, LogFormat};
use super::error::{chain, BoxError, LiveError};
use super::service::{run_until, shutdown_signal};

/// Target of the verdict lines (`--print-verdicts`).
pub const VERDICT_TARGET: &str = "livecheck::verdict";
/// Target of the periodic summary lines (`--summary-every`).
pub const SUMMARY_TARGET: &str = "livecheck::summary";
/// Levels when `RUST_LOG` is not set: warnings, the service's own progress, the summaries.
pub const DEFAULT_LOG: &str = "warn,livecheck_harness=info,livecheck::summary=info";

/// The whole `livecheck` command for `cases`: parses the command line (`--help` lists
/// every flag and its environment variable), sets up logging (`RUST_LOG`,
/// `--log-format`), and runs the live service until SIGTERM/SIGINT or `--for`. Errors
/// are printed with their causes and end the process with a [`LiveExitCode`](super::LiveExitCode).
///
/// ```no_run
/// use std::process::ExitCode;
/// # fn cases() -> Vec<livecheck_core::Case> { Vec::new() }
/// fn main() -> ExitCode {
///     livecheck_harness::live::main(cases())
/// }
/// ```
pub fn main(cases: Vec<Case>) -> ExitCode {
    Livecheck::new(cases).main()
}

/// Starts a local system for a topic prefix.
type LocalSystemFn = Box<dyn FnOnce(String) -> BoxFuture<Result<LocalSystem, BoxError>> + Send>;

/// The `livecheck` command, with options [`main`] does not take.
pub struct Livecheck {
    cases: Vec<Case>,
    local_system: Option<LocalSystemFn>,
}

impl std::fmt::Debug for Livecheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Livecheck")
            .field("cases", &self.cases.len())
            .field("local_system", &self.local_system.is_some())
            .finish()
    }
}

impl Livecheck {
    /// The command for `cases`.
    pub fn new(cases: Vec<Case>) -> Self {
        Self {
            cases,
            local_system: None,
        }
    }

    /// What to run against when no brokers are configured (no `--brokers`, no
    /// `LIVECHECK_BROKERS`, no profile with brokers): `start` gets the topic prefix and
    /// brings up a broker and the system under test (an embedded broker with your app and
    /// some traffic: a demo, or a developer's local run). Without it, no brokers is a
    /// configuration error.
    #[must_use]
    pub fn local_system<F, Fut, E>(mut self, start: F) -> Self
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<LocalSystem, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.local_system = Some(Box::new(move |prefix| {
            let started = start(prefix);
            Box::pin(async move { started.await.map_err(Into::into) })
        }));
        self
    }

    /// Parses the command line and runs; see [`main`].
    pub fn main(self) -> ExitCode {
        let args = LiveArgs::parse();
        init_logging(args.log_format, args.print_verdicts);
        match self.run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {}", chain(&err));
                ExitCode::from(&err)
            }
        }
    }

    /// Resolves the settings of `args` and runs until SIGTERM/SIGINT or `--for` (on a
    /// runtime of its own).
    pub fn run(self, args: &LiveArgs) -> Result<(), LiveError> {
        let config = LiveConfig::resolve(args)?;
        if config.kafka.is_none() && self.local_system.is_none() {
            return Err(LiveError::NoBrokers);
        }
        let runtime = tokio::runtime::Runtime::new().map_err(LiveError::Runtime)?;
        let run_for = config.run_for;
        let result = runtime.block_on(self.run_until(config, shutdown_signal(run_for)));
        // What was decided is committed by now: a blocking call still under way (a client
        // waiting on an unreachable broker) must not hold the exit for ever.
        runtime.shutdown_timeout(Duration::from_secs(5));
        result
    }

    /// Runs on resolved settings until `until` completes: the local system first when
    /// `config` has no brokers, then the service; the local system stops after it.
    pub async fn run_until(
        self,
        mut config: LiveConfig,
        until: impl Future<Output = ()>,
    ) -> Result<(), LiveError> {
        let local = match (&config.kafka, self.local_system) {
            (Some(_), _) => None,
            (None, Some(start)) => {
                let local = start(config.topic_prefix.clone())
                    .await
                    .map_err(LiveError::LocalSystem)?;
                config.kafka = Some(local.kafka.clone());
                if local.app_url.is_some() {
                    config.app_url.clone_from(&local.app_url);
                }
                Some(local)
            }
            (None, None) => return Err(LiveError::NoBrokers),
        };
        let result = run_until(config, self.cases, until).await;
        // The service's clients close before the local broker goes.
        drop(local);
        result
    }
}

/// A system `livecheck` starts itself when no brokers are configured (see
/// [`Livecheck::local_system`]): its broker, its app's URL (for synthetic traffic) and
/// whatever keeps them running until the service stops.
pub struct LocalSystem {
    kafka: KafkaConfig,
    app_url: Option<String>,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for LocalSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSystem")
            .field("brokers", &self.kafka.brokers)
            .field("app_url", &self.app_url)
            .finish_non_exhaustive()
    }
}

impl LocalSystem {
    /// A system on `kafka`, kept alive by `guard` (dropped when the service has stopped).
    pub fn new(kafka: KafkaConfig, guard: impl std::any::Any + Send + Sync) -> Self {
        Self {
            kafka,
            app_url: None,
            _guard: Box::new(guard),
        }
    }

    /// The app's base URL (synthetic traffic goes there).
    #[must_use]
    pub fn app_url(mut self, url: impl Into<String>) -> Self {
        self.app_url = Some(url.into());
        self
    }
}

/// Installs the `tracing` subscriber of the `livecheck` binary: stderr, `RUST_LOG` levels
/// (else [`DEFAULT_LOG`]), verdict lines when `print_verdicts`, text with colours only on a
/// terminal (and never with `NO_COLOR`), or one JSON object per line. librdkafka's own log
/// lines reach it once, through LiveCheck's client contexts (target `librdkafka`).
pub fn init_logging(format: LogFormat, print_verdicts: bool) {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref(), print_verdicts);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (a test, an embedding program) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colours_on_stderr()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Whether log lines on stderr may carry ANSI colours: only on a terminal, and never with
/// `NO_COLOR` set (<https://no-color.org>).
pub(crate) fn colours_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// The filter for `rust_log` (the `RUST_LOG` value, if set): its directives, or
/// [`DEFAULT_LOG`] when unset, empty or invalid (then said on stderr), plus the verdict
/// lines when asked for.
fn log_filter(rust_log: Option<&str>, print_verdicts: bool) -> EnvFilter {
    let verdicts = if print_verdicts {
        format!(",{VERDICT_TARGET}=info")
    } else {
        String::new()
    };
    let wanted = rust_log.map(str::trim).filter(|s| !s.is_empty());
    if let Some(wanted) = wanted {
        match EnvFilter::try_new(format!("{wanted}{verdicts}")) {
            Ok(filter) => return filter,
            Err(err) => eprintln!(
                "warning: RUST_LOG={wanted:?} is not a valid filter ({err}); using {DEFAULT_LOG:?}"
            ),
        }
    }
    EnvFilter::new(format!("{DEFAULT_LOG}{verdicts}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines_are_added_to_any_filter_only_when_asked_for() {
        let shown = |filter: EnvFilter| filter.to_string();
        assert_eq!(
            shown(log_filter(None, false)),
            shown(EnvFilter::new(DEFAULT_LOG))
        );
        assert!(shown(log_filter(None, true)).contains("livecheck::verdict=info"));
        assert!(shown(log_filter(Some("debug"), true)).contains("livecheck::verdict=info"));
        assert!(!shown(log_filter(Some("debug"), false)).contains("verdict"));
        // An invalid RUST_LOG falls back to the default rather than to nothing.
        let fallback = shown(log_filter(Some("=[="), false));
        assert!(fallback.contains("livecheck::summary=info"), "{fallback}");
    }
}
