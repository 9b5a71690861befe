//! The checks: the same case runs under `cargo test` (`tests/ledger.rs`) and in the
//! `ledger-livecheck` binary.

use std::time::Duration;

use livecheck_core::{ensure_eq, Case, Run, Target};
use livecheck_harness::{EnvironmentConfig, Ready, Service};

use crate::signals::{Transfer, ACCEPTED, BOOKED, TRANSFER};

/// Every case of the ledger.
pub fn cases() -> Vec<Case> {
    vec![transfer()]
}

/// A transfer of 5 cents from alice to bob is accepted unchanged and booked once.
pub fn transfer() -> Case {
    Case::new(TRANSFER)
        .timeout(Duration::from_secs(10))
        .stimulus_with(
            || Transfer {
                from: "alice".into(),
                to: "bob".into(),
                amount: 5,
            },
            |app: Target, t: Transfer| async move {
                app.get(&format!("/transfer/{}/{}/{}", t.from, t.to, t.amount))
                    .await
                    .map(drop)
            },
        )
        .expect(|run: Run, asked: Transfer| async move {
            let accepted = run.wait(&ACCEPTED).await?;
            ensure_eq!(accepted, asked, "the gateway changed the transfer");
            let booked = run.wait(&BOOKED).await?;
            ensure_eq!(
                booked.amount,
                asked.amount,
                "the booker booked another amount"
            );
            Ok(())
        })
}

/// The ledger's services added to `config`: the store as a sidecar, the gateway (where
/// stimuli go) and, unless `without_booker`, the booker, all child processes of the
/// `ledger` binary at `ledger`.
pub fn environment(
    config: EnvironmentConfig,
    ledger: &str,
    without_booker: bool,
) -> EnvironmentConfig {
    let config = config
        .app_topics(["{prefix}transfers"])
        .sidecar(
            Service::new("store")
                .process(ledger)
                .args(["store", "--port", "{port}"])
                .ready(Ready::http("/healthz")),
        )
        .service(
            Service::new("gateway")
                .process(ledger)
                .args(["gateway", "--port", "{port}"])
                .ready(Ready::http("/healthz")),
        );
    if without_booker {
        return config;
    }
    config.service(
        Service::new("booker")
            .process(ledger)
            .args(["booker", "--store", "http://127.0.0.1:{port:store}"])
            .ready(Ready::line(crate::booker::READY_LINE)),
    )
}
