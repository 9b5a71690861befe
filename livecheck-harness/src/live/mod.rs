//! Live mode: the `livecheck` binary runs the check files on live traffic, as a passive
//! observer (production, staging) or on the demo (embedded broker, example app).
//!
//! Central control: [`control`] publishes each case's settings to the control topic and
//! follows it back, [`admin`] is the settings API, [`fleet`] what the services report they
//! apply, [`rollout`] the pure roll-out logic.

pub mod admin;
pub mod alerts;
pub(crate) mod cli;
pub mod config;
pub mod control;
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
    init_logging, main, DEFAULT_LOG, EXIT_CONFIG, EXIT_FAILURE, SUMMARY_TARGET, VERDICT_TARGET,
};
