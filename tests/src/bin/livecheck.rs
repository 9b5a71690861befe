//! `livecheck`: the example app's check files on live traffic. With no settings it runs
//! the demo on the embedded broker; with `--profile staging|production` it attaches to
//! the real streams (see `livecheck.toml`).

use std::process::ExitCode;

use clap::Parser;
use livecheck_harness::live::config::{LiveArgs, LiveConfig};
use livecheck_harness::live::service::{run_until, shutdown_signal};

fn main() -> ExitCode {
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
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let run_for = config.run_for;
    let result = runtime.block_on(run_until(
        config,
        livecheck_tests::cases(),
        Some(livecheck_tests::demo::demo()),
        shutdown_signal(run_for),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
