//! What can go wrong in live mode, and the exit code each failure gives.

use std::process::ExitCode;

use super::config::ConfigError;

/// An error from anything a user supplies (a local system's start-up, say), boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The exit codes of a `livecheck` binary (nextest style: named, documented, stable).
///
/// | code | meaning |
/// |---|---|
/// | 0 | ran until SIGTERM, SIGINT or `--for` and stopped cleanly |
/// | [`FAILURE`](Self::FAILURE) (1) | the service failed while it ran (the runner stopped with an error) |
/// | [`CONFIG`](Self::CONFIG) (2) | the configuration is wrong: a flag, an environment variable, the profile file, no brokers (clap's usage errors are 2 as well) |
/// | [`SETUP`](Self::SETUP) (3) | the configuration is fine but the service could not start: the async runtime, the Kafka clients, the HTTP port, the local system |
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LiveExitCode;

impl LiveExitCode {
    /// The service failed while it ran.
    pub const FAILURE: u8 = 1;
    /// The configuration is wrong.
    pub const CONFIG: u8 = 2;
    /// The service could not start.
    pub const SETUP: u8 = 3;
}

/// Why the live service did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No brokers are configured and the binary has no local system to start.
    #[error("no brokers configured: give --brokers (or LIVECHECK_BROKERS) or --profile")]
    NoBrokers,
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The local system (started when no brokers are configured) did not start.
    #[error("the local system did not start")]
    LocalSystem(#[source] BoxError),
    /// A Kafka client, the suite or the control publisher could not be set up.
    #[error("cannot set up {what}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// The HTTP surfaces cannot listen.
    #[error(
        "cannot listen on {address} (choose another port with --http-port or LIVECHECK_HTTP_PORT)"
    )]
    Listen {
        /// `host:port`.
        address: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The runner stopped with an error.
    #[error("the runner failed")]
    Runner(#[source] livecheck_core::Error),
    /// The runner's task panicked or was cancelled.
    #[error("the runner task failed")]
    RunnerTask(#[source] tokio::task::JoinError),
}

impl LiveError {
    pub(crate) fn setup(
        what: &'static str,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        move |source| Self::Setup { what, source }
    }

    /// The [`LiveExitCode`] this error ends the binary with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::NoBrokers => LiveExitCode::CONFIG,
            Self::Runtime(_) | Self::LocalSystem(_) | Self::Setup { .. } | Self::Listen { .. } => {
                LiveExitCode::SETUP
            }
            Self::Runner(_) | Self::RunnerTask(_) => LiveExitCode::FAILURE,
        }
    }
}

impl From<&LiveError> for ExitCode {
    fn from(err: &LiveError) -> Self {
        ExitCode::from(err.exit_code())
    }
}

/// `error: outer: inner: root`, the error with its source chain, as `main` prints it.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_exit_code_and_the_chain_names_the_cause() {
        let listen = LiveError::Listen {
            address: "0.0.0.0:8080".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(listen.exit_code(), LiveExitCode::SETUP);
        assert_eq!(
            chain(&listen),
            "cannot listen on 0.0.0.0:8080 (choose another port with --http-port or LIVECHECK_HTTP_PORT): address in use"
        );
        assert_eq!(LiveError::NoBrokers.exit_code(), LiveExitCode::CONFIG);
        assert_eq!(
            LiveError::from(ConfigError("--for: bad".into())).exit_code(),
            LiveExitCode::CONFIG
        );
        let runner = LiveError::Runner(livecheck_core::Error::Config("x".into()));
        assert_eq!(runner.exit_code(), LiveExitCode::FAILURE);
        let local = LiveError::LocalSystem("no port".into());
        assert_eq!(local.exit_code(), LiveExitCode::SETUP);
        assert_eq!(chain(&local), "the local system did not start: no port");
    }
}
