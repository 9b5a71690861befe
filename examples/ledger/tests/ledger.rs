//! The ledger's check file: the case of `src/checks.rs` against the store (a sidecar), the
//! gateway and the booker (two app services), all child processes of the `ledger` binary,
//! on the embedded broker or (`LIVECHECK_ENV=container`) a broker container; and a plain
//! test beside it: a transfer that never reaches the booker must time out at `booked`.

use std::process::ExitCode;
use std::time::Duration;

use livecheck_core::Verdict;
use livecheck_harness::{EnvironmentConfig, EnvironmentError, Harness, Session};

const LEDGER: &str = env!("CARGO_BIN_EXE_ledger");

/// The store, and the gateway and booker unless `without_booker`.
fn environment(without_booker: bool) -> Result<EnvironmentConfig, EnvironmentError> {
    let config = EnvironmentConfig::from_env()?
        // Its own topics, also when a CI run shares one broker between check files.
        .topic_prefix(format!("ledger-{}-", uuid::Uuid::new_v4().simple()))
        .partitions(2)
        .kafka_property("socket.keepalive.enable", "true");
    Ok(ledger::checks::environment(config, LEDGER, without_booker))
}

async fn a_transfer_nobody_books_times_out_at_booked() -> Result<(), String> {
    let config = environment(true).map_err(|e| e.to_string())?;
    let mut case = ledger::checks::transfer();
    case = case.timeout(Duration::from_secs(3));
    let session = Session::start(&config, vec![case.clone()])
        .await
        .map_err(|e| e.to_string())?;
    let report = session.run_once(&case).await;
    session.close().await;
    if report.verdict != Verdict::Timeout || report.missing_step.as_deref() != Some("booked") {
        return Err(format!(
            "expected a TIMEOUT at booked:\n{}",
            report.render()
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let environment = match environment(false) {
        Ok(environment) => environment,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    Harness::from_env("ledger")
        .environment(environment)
        .cases(ledger::cases())
        .test("a_transfer_nobody_books_times_out_at_booked", || {
            a_transfer_nobody_books_times_out_at_booked()
        })
        .run()
}
