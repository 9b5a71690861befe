//! The whole `livecheck` command in one call: a user's binary is
//! `fn main() -> ExitCode { livecheck_harness::live::main(cases(), None) }`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use livecheck_core::Case;
use tracing_subscriber::EnvFilter;

use super::config::{LiveArgs, LiveConfig, LogFormat};
use super::service::{run_until, shutdown_signal, DemoFn};

/// Exit code: the configuration is wrong (a setting, a flag, the profile file).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: the service failed while running (or could not start its runtime).
pub const EXIT_FAILURE: u8 = 1;

/// Target of the verdict lines (`--print-verdicts`).
pub const VERDICT_TARGET: &str = "livecheck::verdict";
/// Target of the periodic summary lines (`--summary-every`).
pub const SUMMARY_TARGET: &str = "livecheck::summary";
/// Levels when `RUST_LOG` is not set: warnings, the service's own progress, the summaries.
pub const DEFAULT_LOG: &str = "warn,livecheck_harness=info,livecheck::summary=info";

/// Parses the command line (`livecheck --help`), sets up logging (`RUST_LOG`,
/// `--log-format`), and runs the live service for `cases` until SIGTERM/SIGINT or `--for`.
/// `demo` runs when no brokers are configured (`None`: no brokers is a configuration
/// error).
pub fn main(cases: Vec<Case>, demo: Option<DemoFn>) -> ExitCode {
    let args = LiveArgs::parse();
    init_logging(args.log_format, args.print_verdicts);
    let config = match LiveConfig::resolve(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if config.kafka.is_none() && demo.is_none() {
        eprintln!(
            "error: no brokers configured: give --brokers (or LIVECHECK_BROKERS) or --profile"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let run_for = config.run_for;
    match runtime.block_on(run_until(config, cases, demo, shutdown_signal(run_for))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
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
