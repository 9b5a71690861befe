//! The whole `livecheck` command in one call: a user's binary is
//! `fn main() -> ExitCode { livecheck_harness::live::main(cases(), None) }`.

use std::process::ExitCode;

use clap::Parser;
use livecheck_core::Case;

use super::config::{LiveArgs, LiveConfig};
use super::service::{run_until, shutdown_signal, DemoFn};

/// Exit code: the configuration is wrong (a setting, a flag, the profile file).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: the service failed while running (or could not start its runtime).
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line (`livecheck --help`), sets up logging (`RUST_LOG`), and runs the
/// live service for `cases` until SIGTERM/SIGINT or `--for`. `demo` runs when no brokers
/// are configured (`None`: no brokers is a configuration error).
pub fn main(cases: Vec<Case>, demo: Option<DemoFn>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,livecheck_harness=info,livecheck_core=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = LiveArgs::parse();
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
