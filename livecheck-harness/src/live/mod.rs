//! Live mode: the `livecheck` binary runs the check files on live traffic, as a passive
//! observer (production, staging), or on a local system the binary starts itself when no
//! brokers are configured ([`Livecheck::local_system`]).
//!
//! A binary is one call: `fn main() -> ExitCode { livecheck_harness::live::main(cases()) }`.
//! Its exit codes are [`LiveExitCode`]'s.
//!
//! Central control: [`control`] publishes each case's settings to the control topic and
//! follows it back, [`admin`] is the settings API, [`fleet`] what the services report they
//! apply, [`rollout`] the pure roll-out logic.

pub mod admin;
pub mod alerts;
pub(crate) mod cli;
pub mod config;
pub mod control;
mod error;
#[cfg(test)]
mod fixtures;
pub mod fleet;
pub mod health;
pub mod metrics;
pub mod rollout;
pub mod service;
pub mod state;
pub mod web;

pub use cli::{
    init_logging, main, Livecheck, LocalSystem, DEFAULT_LOG, SUMMARY_TARGET, VERDICT_TARGET,
};
pub(crate) use error::chain as error_chain;
pub use error::{BoxError, LiveError, LiveExitCode};
