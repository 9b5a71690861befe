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
//! Environments ([`EnvironmentConfig`], chosen with `LIVECHECK_ENV`): `container`
//! (testcontainers: broker and app images; the default under CI), `embedded` (mock cluster
//! and app in-process; the default elsewhere) and `external` (`LIVECHECK_BROKERS`,
//! `LIVECHECK_APP_URL`).
//!
//! With `LIVECHECK_RUN_ID` set, the containers are named after the run and reused by every
//! process of the run (nextest runs each trial in its own process); the script that set
//! the id removes them at the end (label `livecheck.run-id`).
//!
//! ## Known limitations
//! - Containers use the host network: the single-listener broker (tansu) advertises one
//!   address, and `127.0.0.1:PORT` is the one both the host and host-network containers
//!   can reach.
//! - Cases run one stimulus at a time per trial.

mod environment;
mod harness;
pub mod junit;
pub mod live;
mod session;

pub use environment::{
    AppHandle, AppImage, AppStart, EmbeddedAppFn, Environment, EnvironmentConfig, EnvironmentError,
    EnvironmentKind, ImageRef,
};
pub use harness::Harness;
pub use session::{Session, SessionError};
