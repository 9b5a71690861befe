//! # The example app's checks
//!
//! The case definitions live here, in a library, so that the same code runs in the three
//! places: `cargo test` (the check file `tests/orders.rs`, through the harness), and the
//! `livecheck` binary in staging and production.

pub mod chaos;
pub mod demo;
pub mod load;
pub mod orders;

use std::time::Duration;

use example_app::{AppConfig, AppTopics, Execution, FaultConfig, RunningApp};
use livecheck_core::{Case, Runner, Suite, TableSpec};
use livecheck_harness::{
    AppHandle, AppStart, EnvironmentConfig, EnvironmentError, ImageRef, Ready, Service,
};

/// Every case of the example app.
pub fn cases() -> Vec<Case> {
    vec![orders::place_order(), orders::sell_limit()]
}

/// The tables the example app's cases declare: their changelogs must exist before a
/// runner starts ([`AppTopics::with_tables`] creates them on an embedded broker).
pub fn tables() -> Vec<TableSpec> {
    Suite::new(cases())
        .and_then(|suite| suite.tables())
        .expect("the example app's cases form a suite")
}

/// Line the app prints when it is ready.
pub const APP_READY_LINE: &str = "example-app listening on";

/// The app setting (`app_env`) that chooses how orders are executed, as the binary's
/// `--execution` reads it from the environment: `kafka` (the default) or `job`.
pub const EXECUTION_ENV: &str = "EXAMPLE_EXECUTION";

/// The app setting (`app_env`) of the sell limit, as the binary's `--sell-limit` reads it
/// from the environment (default [`example_app::DEFAULT_SELL_LIMIT`]).
pub const SELL_LIMIT_ENV: &str = "EXAMPLE_SELL_LIMIT";

/// Starts the example app in-process on the given broker (the embedded environment), with
/// the fault switches, the execution mode ([`EXECUTION_ENV`]) and the sell limit
/// ([`SELL_LIMIT_ENV`]) of its settings.
pub async fn start_app(start: AppStart) -> anyhow::Result<AppHandle> {
    let settings = || start.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let execution = match settings().find(|(k, _)| *k == EXECUTION_ENV) {
        Some((_, mode)) => mode.parse::<Execution>().map_err(anyhow::Error::msg)?,
        None => Execution::default(),
    };
    let sell_limit = match settings().find(|(k, _)| *k == SELL_LIMIT_ENV) {
        Some((_, limit)) => limit
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{SELL_LIMIT_ENV}={limit:?} is not a quantity"))?,
        None => example_app::DEFAULT_SELL_LIMIT,
    };
    let faults = FaultConfig::from_pairs(
        settings().filter(|(k, _)| *k != EXECUTION_ENV && *k != SELL_LIMIT_ENV),
    )
    .map_err(anyhow::Error::msg)?;
    let mut config = AppConfig::new(start.kafka);
    config.listen = "127.0.0.1:0".parse()?;
    config.topics = AppTopics::with_prefix(&start.topic_prefix);
    config.group_prefix = format!("{}example-app-", start.topic_prefix);
    // Only requests that carry a test context become tests in CI.
    config.probability = 0.0;
    config.sell_limit_probability = 0.0;
    config.faults = faults;
    // The checks place fake orders (`?fake=1`).
    config.test_hooks = true;
    config.execution = execution;
    config.sell_limit = sell_limit;
    let app = RunningApp::start(config).await?;
    Ok(AppHandle::new(app.base_url.clone(), app))
}

/// The example app as a service: its image (`livecheck/example-app:local`, built by
/// `ci/build-images.sh`) in the container environment, in-process in the embedded one.
pub fn app_service() -> Service {
    Service::new("app")
        .image(ImageRef::new("livecheck/example-app", "local"))
        .args([
            "--brokers",
            "{brokers}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--topic-prefix",
            "{prefix}",
            "--probability",
            "0",
            "--sell-limit-probability",
            "0",
            "--test-hooks",
        ])
        .ready(Ready::line(APP_READY_LINE))
        .in_process(start_app)
}

/// Where the example app's checks run: `LIVECHECK_ENV` and friends
/// ([`EnvironmentConfig::from_env`]), with the example app and its topics.
pub fn environment() -> Result<EnvironmentConfig, EnvironmentError> {
    Ok(EnvironmentConfig::from_env()?
        .service(app_service())
        .app_topics(["{prefix}orders", "{prefix}order-execution"]))
}

/// A signal timeout short enough for tests that expect a `TIMEOUT`.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(3);

/// A runner's [`Runner::run`] on a task of its own, until [`RunningRunner::stop`].
#[derive(Debug)]
pub struct RunningRunner {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), livecheck_core::Error>>,
}

impl RunningRunner {
    /// Runs `runner` on a task of its own.
    pub fn start(runner: &Runner) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = runner.clone();
        let task = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        Self { stop, task }
    }

    /// Whether the runner stopped on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the runner and waits for it (panics if it failed).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the runner task panicked")
            .expect("the runner failed");
    }
}
