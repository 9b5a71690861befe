//! # LiveCheck harness
//!
//! Check files run by `cargo test`. A check file is an ordinary `harness = false` test
//! target whose `main` hands its cases to [`Harness`]: each case becomes a libtest trial
//! named `module::case` (so `--list`, `--exact`, filters, `--ignored`, `--test-threads` and
//! `cargo nextest run` work as usual). The harness brings the environment up once per
//! binary (only when a trial runs, not for `--list`), runs each case's stimulus a few
//! times with a fresh test context, and fails the trial with the run's timeline on any
//! verdict but `PASS`.
//!
//! Environments ([`EnvironmentConfig`]): `container` (feature `containers`, on by
//! default: a [`Broker`] — [`Tansu`] or [`ApacheKafka`] — and each [`Service`]'s image via
//! testcontainers), `embedded` (the mock cluster in-process; services in-process or as
//! child processes) and `external` (bootstrap servers and an app URL). The builders read
//! nothing from the process environment; [`EnvironmentConfig::from_env`] and
//! [`Harness::from_env`] do (`LIVECHECK_ENV`, `LIVECHECK_BROKER`, ...).
//!
//! With a run id ([`EnvironmentConfig::run_id`], `LIVECHECK_RUN_ID`), the containers are
//! named after the run and reused by every process of the run (nextest runs each trial in
//! its own process); whoever set the id removes them at the end (label `livecheck.run-id`).
//!
//! Live mode ([`live`]): a production binary is `live::main(cases())`, built with
//! `default-features = false` so that it links no container machinery.
//!
//! ## Guide
//!
//! The crate docs of `examples/ledger` (package `ledger`) are the tutorial: a small
//! system of three services instrumented for HTTP and Kafka, a case, its check file with
//! two app services and a sidecar, and its own `livecheck` binary; every example there is
//! doc-tested and its check file runs in CI.
//!
//! ## Known limitations
//! - Containers use the host network: the single-listener broker (tansu) advertises one
//!   address, and `127.0.0.1:PORT` is the one both the host and host-network containers
//!   can reach.
//! - Cases run one stimulus at a time per trial.
//! - With a run id only containers are shared between processes; child processes and
//!   in-process services start per process.

mod environment;
mod harness;
pub mod junit;
pub mod live;
mod session;

#[cfg(feature = "containers")]
pub use environment::create_topics;
pub use environment::{
    ApacheKafka, AppHandle, AppStart, Broker, Environment, EnvironmentConfig, EnvironmentError,
    EnvironmentKind, ImageRef, Ready, Service, Tansu,
};
pub use harness::Harness;
pub use live::BoxError;
pub use session::{Session, SessionError};
