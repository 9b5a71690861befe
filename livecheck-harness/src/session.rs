//! A session: an environment plus a LiveCheck client and a runner, ready to run cases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use livecheck_core::{
    Case, LiveCheck, Report, Runner, RunnerConfig, Suite, Target, TestContext, Verdict,
};
use tokio::sync::oneshot;

use crate::environment::{Environment, EnvironmentConfig, EnvironmentError};

/// The environment, a client and a runner that runs only the tests this session starts.
#[derive(Debug)]
pub struct Session {
    client: LiveCheck,
    runner: Runner,
    target: Target,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    // Last: the environment outlives the client and the runner.
    environment: Environment,
}

impl Session {
    /// Brings `config`'s environment up, with the changelogs of the tables `cases` declare
    /// ([`EnvironmentConfig::tables`]), and starts a runner for `cases` on it.
    pub async fn start(config: &EnvironmentConfig, cases: Vec<Case>) -> Result<Self, SessionError> {
        let suite = Suite::new(cases).map_err(|e| SessionError::Setup(e.to_string()))?;
        let tables = suite
            .tables()
            .map_err(|e| SessionError::Setup(e.to_string()))?;
        let environment = config.clone().tables(tables).start().await?;
        let mut client = LiveCheck::new(environment.kafka.clone(), environment.topics.clone())
            .map_err(|e| SessionError::Setup(e.to_string()))?;
        if let Some(keys) = &config.signing_keys {
            client = client.with_signing(keys.clone());
        }
        let runner = Runner::new(
            suite,
            client.clone(),
            RunnerConfig {
                start_at_end: true,
                watched_only: true,
                ..RunnerConfig::default()
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let (failed, runner_failed) = oneshot::channel::<String>();
        let r = runner.clone();
        let task = tokio::spawn(async move {
            if let Err(err) = r
                .run(async {
                    let _ = stopped.await;
                })
                .await
            {
                tracing::error!(error = %err, "the harness runner stopped");
                let _ = failed.send(err.to_string());
            }
        });
        // A runner that refuses to start (a missing topic, a bad partition count) says why.
        tokio::select! {
            () = runner.ready() => {}
            failure = runner_failed => {
                return Err(SessionError::Setup(match failure {
                    Ok(err) => format!("the runner stopped: {err}"),
                    Err(_) => "the runner stopped before it got its partitions".into(),
                }));
            }
            () = tokio::time::sleep(Duration::from_secs(30)) => {
                return Err(SessionError::Setup(
                    "the runner did not get its partitions within 30 s".into(),
                ));
            }
        }
        let target = Target::new(environment.app_url.clone());
        Ok(Self {
            client,
            runner,
            target,
            stop: Some(stop),
            task: Some(task),
            environment,
        })
    }

    /// Stops the runner, waits for its consumer to close, then tears the environment down
    /// (so no client sees its broker vanish).
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = self.client.flush(Duration::from_secs(5));
    }

    /// The environment.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// The LiveCheck client.
    pub fn client(&self) -> &LiveCheck {
        &self.client
    }

    /// The runner.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Runs `case` once: the stimulus chooses its arguments, a fresh test context carries
    /// them and the route the case derives from them ([`Case::route_by`]; signed after they
    /// are set, when the environment has signing keys), the stimulus's request is sent
    /// scoped by it, then the verdict. A failed stimulus (its arguments do not serialize,
    /// the case's route rule fails on them, or its request failed) is an `ERROR` report
    /// naming what failed.
    pub async fn run_once(&self, case: &Case) -> Report {
        let expires = case.settings().test_expires;
        let stimulus = match case.prepare_stimulus() {
            Ok(stimulus) => stimulus,
            Err(err) => {
                let context = TestContext::new(case.name(), expires);
                return synthetic_report(
                    &context,
                    Verdict::Error,
                    format!("stimulus failed: {err}"),
                );
            }
        };
        let mut context =
            TestContext::new(case.name(), expires).arguments(stimulus.arguments().clone());
        // Routed by the case's rule, if any; signed after (the route is not signed).
        context.route = stimulus.route().map(str::to_owned);
        let context = self.client.sign(context);
        let report = self.runner.report_for(&context.id);
        let sent = self
            .client
            .scope(context.clone(), stimulus.send(self.target.clone()))
            .await;
        if let Err(err) = sent {
            self.runner.forget(&context.id);
            return synthetic_report(&context, Verdict::Error, format!("stimulus failed: {err}"));
        }
        // Every wait has its own timeout; bound the whole run generously above that.
        let bound = case.settings().timeout * 10 + Duration::from_secs(30);
        match tokio::time::timeout(bound, report).await {
            Ok(Ok(report)) => Arc::unwrap_or_clone(report),
            Ok(Err(_)) => synthetic_report(
                &context,
                Verdict::Error,
                "the runner stopped before the verdict".into(),
            ),
            Err(_) => {
                self.runner.forget(&context.id);
                synthetic_report(
                &context,
                Verdict::Error,
                format!(
                    "no verdict within {bound:?}: the runner never saw the test record (does the service call maybe_trigger for case {}?)",
                    case.name()
                ),
            )
            }
        }
    }

    /// Runs `case` `iterations` times, one after the other.
    pub async fn run_case(&self, case: &Case, iterations: usize) -> Vec<Report> {
        let mut reports = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            reports.push(self.run_once(case).await);
        }
        reports
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn synthetic_report(context: &TestContext, verdict: Verdict, error: String) -> Report {
    Report {
        test_id: context.id.clone(),
        case: context.case.clone(),
        verdict,
        error: Some(error),
        missing_step: None,
        last_step: None,
        unawaited: Vec::new(),
        timeline: Vec::new(),
        issued_at: context.issued_at,
        finished_at: Utc::now(),
        arguments: context.arguments.clone(),
        waits: Vec::new(),
        truncated: None,
        hops: Vec::new(),
        trace_id: None,
        invariant: None,
        route: context.route.clone(),
    }
}

/// Why a session did not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The environment did not come up.
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    /// The client, suite or runner could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Time since `start`, for figures.
pub(crate) fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
