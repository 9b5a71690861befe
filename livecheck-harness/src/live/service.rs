//! The runner as a long-running service: consumer group, health, alerts, synthetic
//! traffic, operator surfaces, clean shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use livecheck_core::connectivity::ConnectivityContext;
use livecheck_core::{
    Case, Connectivity, KafkaConfig, LiveCheck, Report, Runner, RunnerConfig, Suite, Target,
    TestContext, Topics, Verdict,
};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::admin::AdminApi;
use super::alerts::{self, deliver_alerts, AlertSource};
use super::cli::{SUMMARY_TARGET, VERDICT_TARGET};
use super::config::{ConfigError, LiveArgs, LiveConfig};
use super::control::{self, Control, ControlView, RolloutDriver};
use super::error::LiveError;
use super::health::{HealthMonitor, HealthRules, SUITE_STATE};
use super::state::{Health, LiveState};
use super::web;

/// How long Kafka may be unreachable before every case shows DOWN.
pub const KAFKA_GRACE: Duration = Duration::from_secs(3);
/// How long the runner may hold no partitions (joining, rebalancing) before every case
/// shows DOWN.
pub const PARTITIONS_GRACE: Duration = Duration::from_secs(10);
/// When start-up reports a runner still without partitions (and returns anyway).
pub const STARTUP_REPORT_AFTER: Duration = Duration::from_secs(8);
/// Records per partition of the reports topic the group's voice reads back when it takes
/// over (recent verdicts and announced suite states).
pub const VOICE_LOOK_BACK: i64 = 500;
/// How long start-up waits for the control topic to be read and the configuration's
/// settings to be published (it goes on in the background after that).
pub const CONTROL_STARTUP_WAIT: Duration = Duration::from_secs(10);
/// What the "cannot reach Kafka" line tells the operator to check.
const BROKERS_HINT: &str =
    "check --brokers / LIVECHECK_BROKERS (or `brokers` of the profile) and the network";

/// A running live service.
pub struct LiveService {
    /// Shared state (what the surfaces show).
    pub state: Arc<LiveState>,
    /// Where the HTTP surfaces listen.
    pub http_addr: SocketAddr,
    /// Health decisions.
    pub health: Arc<HealthMonitor>,
    /// The case settings: published to and read back from the control topic.
    pub control: Arc<Control>,
    stop: watch::Sender<bool>,
    runner_task: JoinHandle<Result<(), livecheck_core::Error>>,
    tasks: Vec<JoinHandle<()>>,
    json_logs: bool,
}

impl std::fmt::Debug for LiveService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveService")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl LiveService {
    /// Starts everything; returns once the runner has its partitions and the HTTP
    /// surfaces listen. `config.kafka` must be set ([`LiveError::NoBrokers`] otherwise).
    pub async fn start(config: LiveConfig, cases: Vec<Case>) -> Result<Self, LiveError> {
        let compiled = cases;
        let cases = control::apply_config(&config, compiled.clone()).map_err(ConfigError)?;
        let settings = control::config_settings(&config, &compiled).map_err(ConfigError)?;
        let topics = Topics::with_prefix(&config.topic_prefix);
        let kafka = config.kafka.clone().ok_or(LiveError::NoBrokers)?;
        let app_url = config.app_url.clone();
        let mut client = LiveCheck::new(kafka, topics)
            .map_err(|e| LiveError::setup("the Kafka client")(e.into()))?;
        if let Some(keys) = &config.signing_keys {
            client = client.with_signing(keys.clone());
        }
        client.connectivity().set_hint(BROKERS_HINT);
        let suite =
            Suite::new(cases.clone()).map_err(|e| LiveError::setup("the suite")(e.into()))?;
        let runner = Runner::new(
            suite,
            client.clone(),
            RunnerConfig {
                group_id: Some(config.group_id.clone()),
                fetch_wait: config.fetch_wait,
                lanes: config.lanes,
                ..RunnerConfig::default()
            },
        );
        let state = Arc::new(
            LiveState::new(runner.clone(), client.clone()).history_window(config.history_window),
        );
        let (alerts_tx, alerts_rx) = mpsc::channel(1024);
        let health = Arc::new(HealthMonitor::new(
            state.clone(),
            HealthRules {
                hold_down: config.hold_down,
                ..HealthRules::default()
            },
            alerts_tx,
        ));
        // The group's voice is taken when this runner gets partition 0 (see below).
        health.start_without_voice();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();

        // Central control: follow the control topic (the runner and the page apply what it
        // says), publish what the configuration changed, reload on SIGHUP or a file change.
        let control = Arc::new(
            Control::new(
                client.kafka(),
                client.topics().control.clone(),
                state.control.clone(),
                settings,
                config.settings_origin(),
            )
            .map_err(|e| LiveError::setup("the control topic's producer")(e.into()))?,
        );
        {
            let runner = runner.clone();
            tasks.push(tokio::spawn(control::follow_control(
                client.kafka().clone(),
                client.topics().control.clone(),
                state.control.clone(),
                move |published| {
                    let c = &published.control;
                    runner.suite().set_active(&c.case, c.active);
                },
            )));
        }
        {
            let fleet = state.fleet.clone();
            let (f1, f2) = (fleet.clone(), fleet);
            let topic = client.topics().heartbeats.clone();
            let mut warned = false;
            tasks.push(tokio::spawn(control::tail_topic(
                client.kafka().clone(),
                topic.clone(),
                move |message| match message
                    .payload()
                    .map(serde_json::from_slice::<livecheck_core::control::Heartbeat>)
                {
                    Some(Ok(beat)) => f1.observe(beat),
                    Some(Err(err)) if !warned => {
                        warned = true;
                        warn!(%topic, offset = message.offset(), error = %err, "ignored a record that is not a heartbeat (warned once)");
                    }
                    _ => {}
                },
                move |problem| f2.set_problem(problem),
                || debug!("heartbeats topic read to its end"),
            )));
        }
        let (published_tx, mut published_rx) = watch::channel(false);
        {
            #[cfg(unix)]
            let hangups =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => Some(s),
                    Err(err) => {
                        warn!(error = %err, "cannot listen for SIGHUP: reload by file change only");
                        None
                    }
                };
            #[cfg(not(unix))]
            let hangups: Option<()> = None;
            tasks.push(tokio::spawn(settings_task(
                control.clone(),
                config.clone(),
                compiled,
                hangups,
                published_tx,
                stopped.clone(),
            )));
        }
        {
            let (control, state2, health, mut stopped) = (
                control.clone(),
                state.clone(),
                health.clone(),
                stopped.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        _ = tick.tick() => {}
                    }
                    state2.rollouts.set_driving(health.is_voice());
                    state2.rollouts.tick(&control, Utc::now()).await;
                }
            }));
        }

        // Verdicts → state, health, output.
        let mut reports = runner.subscribe();
        {
            let (state, health, print) = (state.clone(), health.clone(), config.print_verdicts);
            let json = config.json_logs;
            tasks.push(tokio::spawn(async move {
                loop {
                    match reports.recv().await {
                        Ok(report) => {
                            if print {
                                log_verdict(&report, json);
                            }
                            // Counts first: health decides on them. The group's voice
                            // decides from the reports topic instead (its own included).
                            state.record(report.clone());
                            if !health.is_voice() {
                                health.on_report(&report);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            warn!(
                                missed = n,
                                "verdict feed lagged: the status page misses {n} runs"
                            );
                        }
                        Err(_) => break,
                    }
                }
            }));
        }

        // Health ticks (blindness first) and summaries.
        {
            let (state, health, runner, mut stopped) = (
                state.clone(),
                health.clone(),
                runner.clone(),
                stopped.clone(),
            );
            let (summary_every, json_logs) = (config.summary_every, config.json_logs);
            let (tests_topic, group) = (client.topics().tests.clone(), config.group_id.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut summary = tokio::time::interval(summary_every);
                summary.tick().await;
                let mut summaries = Summaries::new(json_logs);
                let mut no_partitions_since = Some((tokio::time::Instant::now(), Utc::now()));
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        _ = tick.tick() => {
                            if runner.assigned_partitions() > 0 {
                                no_partitions_since = None;
                            } else {
                                no_partitions_since.get_or_insert((tokio::time::Instant::now(), Utc::now()));
                            }
                            // The grace delays going blind, never seeing again: an outage
                            // ends when Kafka answers and the partitions are back.
                            let was_blind = health.is_blind();
                            let connectivity = runner.connectivity();
                            let blind = if connectivity
                                .down_for()
                                .is_some_and(|d| was_blind || d >= KAFKA_GRACE)
                            {
                                connectivity.describe()
                            } else {
                                no_partitions_since
                                    .filter(|(at, _)| was_blind || at.elapsed() >= PARTITIONS_GRACE)
                                    .map(|(_, since)| format!(
                                        "the runner holds no partitions of {tests_topic} (group {group}) since {}",
                                        livecheck_core::headers::format_time(since)
                                    ))
                            };
                            health.set_blind(blind);
                            health.tick();
                        }
                        _ = summary.tick() => summaries.log(&state),
                    }
                }
            }));
        }

        // Connectivity probe: a metadata request every second says when Kafka is back
        // (and when it is gone, should no client have said so).
        tasks.push(tokio::spawn(probe_kafka(
            client.kafka().clone(),
            client.topics().tests.clone(),
            client.connectivity().clone(),
            stopped.clone(),
        )));

        // One voice per group: the owner of the tests topic's partition 0 follows the
        // whole reports topic, decides suite health from it and sends the alerts.
        {
            let (health, runner, mut stopped) = (health.clone(), runner.clone(), stopped.clone());
            let (kafka, topic) = (client.kafka().clone(), client.topics().reports.clone());
            let (rollouts, view) = (state.rollouts.clone(), state.control.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut follower: Option<JoinHandle<()>> = None;
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        _ = tick.tick() => {}
                    }
                    let owns = runner.owns_first_partition();
                    if owns && follower.is_none() {
                        health.set_voice(true);
                        follower = Some(tokio::spawn(follow_reports(
                            kafka.clone(),
                            topic.clone(),
                            health.clone(),
                            runner.connectivity().clone(),
                            (rollouts.clone(), view.clone()),
                        )));
                    } else if !owns {
                        if let Some(f) = follower.take() {
                            f.abort();
                            health.set_voice(false);
                        }
                    }
                }
                if let Some(f) = follower {
                    f.abort();
                }
            }));
        }

        // Synthetic traffic.
        if let Some(url) = &app_url {
            for case in cases.iter().filter(|c| c.settings().frequency.is_some()) {
                tasks.push(tokio::spawn(synthetic_traffic(
                    case.clone(),
                    Target::new(url.clone()),
                    client.clone(),
                    runner.clone(),
                    health.clone(),
                    stopped.clone(),
                )));
            }
        }

        // Consumer lag, for /metrics.
        {
            let (state, kafka, group) = (
                state.clone(),
                client.kafka().clone(),
                config.group_id.clone(),
            );
            let connectivity = client.connectivity().clone();
            let topics = [
                client.topics().tests.clone(),
                client.topics().signals.clone(),
            ];
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        _ = tick.tick() => {}
                    }
                    if !connectivity.reachable() {
                        continue;
                    }
                    let (kafka, group, topics) = (kafka.clone(), group.clone(), topics.clone());
                    let context = connectivity.context();
                    match tokio::task::spawn_blocking(move || {
                        consumer_lag(&kafka, &group, &topics, context)
                    })
                    .await
                    {
                        Ok(Ok(lag)) => state.set_lag(lag),
                        Ok(Err(err)) => warn!(error = %err, "cannot read the consumer lag"),
                        Err(_) => {}
                    }
                }
            }));
        }

        // Operator surfaces.
        let listener = tokio::net::TcpListener::bind((config.http_host.as_str(), config.http_port))
            .await
            .and_then(|listener| Ok((listener.local_addr()?, listener)));
        let (http_addr, listener) = listener.map_err(|source| LiveError::Listen {
            address: format!("{}:{}", config.http_host, config.http_port),
            source,
        })?;
        // Alerts link to runs on the page: they go out once its address is known (the
        // queue holds what came before).
        tasks.push(tokio::spawn(deliver_alerts(
            alerts_rx,
            state.clone(),
            config.all_webhooks(),
            AlertSource {
                group: config.group_id.clone(),
                profile: config.profile.clone(),
                instance: livecheck_core::control::default_instance(),
                public_url: config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| alerts::default_public_url(http_addr)),
            },
        )));
        {
            let router = web::router_with(
                state.clone(),
                AdminApi::new(config.admin_token.clone(), Some(control.clone())),
            );
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                });
                if let Err(err) = serve.await {
                    warn!(error = %err, "status page server stopped");
                }
            }));
        }

        // The runner.
        let runner_task = {
            let (runner, mut stopped) = (runner.clone(), stopped.clone());
            tokio::spawn(async move {
                runner
                    .run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        };
        // Not an error: live mode keeps waiting (cases show DOWN, /readyz says why) and
        // `--for` still counts. One line says what to check.
        if tokio::time::timeout(STARTUP_REPORT_AFTER, runner.ready())
            .await
            .is_err()
            && runner.connectivity().reachable()
        {
            let ((ready, lanes), held) = (runner.lanes_ready(), runner.assigned_partitions());
            if held == 0 {
                warn!(
                    "the runner holds no partitions of {} after {} s (group {}): {BROKERS_HINT}, and that the LiveCheck topics exist; livecheck keeps waiting",
                    client.topics().tests,
                    STARTUP_REPORT_AFTER.as_secs(),
                    config.group_id
                );
            } else {
                // The group works: a rebalance is still moving partitions between the
                // lanes (one joined late), or a restore is still reading.
                info!(
                    ready,
                    lanes,
                    partitions = held,
                    "not every lane has its partitions of {} after {} s (group {}): a rebalance or a restore is under way",
                    client.topics().tests,
                    STARTUP_REPORT_AFTER.as_secs(),
                    config.group_id
                );
            }
        }
        // The published settings known and the configuration's changes published (or, if
        // the control topic cannot be read yet, later in the background: a topic that does
        // not exist is not waited for).
        let control_ready = async {
            let mut poll = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = published_rx.wait_for(|p| *p) => return true,
                    _ = poll.tick() => {
                        if state.control.problem().is_some() {
                            return false;
                        }
                    }
                }
            }
        };
        if !tokio::time::timeout(CONTROL_STARTUP_WAIT, control_ready)
            .await
            .unwrap_or(false)
        {
            warn!(
                topic = %client.topics().control,
                problem = state.control.problem().as_deref().unwrap_or("none reported"),
                "the control topic is not read to its end: the case settings are published once it is (create it compacted, with one partition); until then services apply their own defaults"
            );
        }
        info!(profile = %config.profile, group = %config.group_id, %http_addr, admin_api = config.admin_token.is_some(), "livecheck running");
        Ok(Self {
            state,
            http_addr,
            health,
            control,
            stop,
            runner_task,
            tasks,
            json_logs: config.json_logs,
        })
    }

    /// Stops taking new tests, lets in-flight runs finish (or hands them back), commits,
    /// and stops everything else.
    pub async fn shutdown(self) -> Result<(), LiveError> {
        self.stop.send_replace(true);
        let result = self.runner_task.await;
        for task in self.tasks {
            task.abort();
            // A task inside a blocking call cannot be interrupted: it is not waited for long.
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                warn!("a background task did not stop within 5 s of shutdown; not waiting for it");
            }
        }
        let _ = self.state.client.flush(Duration::from_secs(10));
        Summaries::new(self.json_logs).log(&self.state);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LiveError::Runner(e)),
            Err(e) => Err(LiveError::RunnerTask(e)),
        }
    }
}

/// Per partition of `topics`: end offset minus the group's committed offset.
fn consumer_lag(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
    context: ConnectivityContext,
) -> Result<Vec<(String, i32, i64)>, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(5);
    let consumer: BaseConsumer<ConnectivityContext> = kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create_with_context(context)?;
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    let mut lag = Vec::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag.push((e.topic().to_owned(), e.partition(), (high - from).max(0)));
    }
    Ok(lag)
}

/// Asks for the tests topic's metadata every second: an answer marks Kafka reachable, two
/// failures in a row unreachable.
async fn probe_kafka(
    kafka: KafkaConfig,
    topic: String,
    connectivity: Connectivity,
    mut stopped: watch::Receiver<bool>,
) {
    let consumer: BaseConsumer<ConnectivityContext> = match kafka
        .client_config(&[("group.id", "livecheck-probe")])
        .create_with_context(connectivity.context())
    {
        Ok(c) => c,
        Err(err) => {
            warn!(error = %err, "cannot create the Kafka connectivity probe");
            return;
        }
    };
    let consumer = Arc::new(consumer);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let (c, t) = (consumer.clone(), topic.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let answer = c.fetch_metadata(Some(&t), Duration::from_secs(2)).map(drop);
            // Serves the client's error callbacks: all that are queued, so that errors of
            // an outage are not drained one a second long after it ended.
            for _ in 0..1000 {
                if c.poll(Duration::ZERO).is_none() {
                    break;
                }
            }
            answer
        })
        .await;
        match answer {
            Ok(Ok(())) => {
                failures = 0;
                connectivity.mark_reachable();
            }
            Ok(Err(err)) => {
                failures += 1;
                if failures >= 2 {
                    connectivity.mark_unreachable(&format!("metadata request failed: {err}"));
                }
            }
            Err(_) => {}
        }
    }
}

/// The group's voice: reads every partition of the reports topic (assigned, not as a group
/// member; from [`VOICE_LOOK_BACK`] records before the end) and feeds the health monitor:
/// run reports as input, suite-state records as what the group has announced.
async fn follow_reports(
    kafka: KafkaConfig,
    topic: String,
    health: Arc<HealthMonitor>,
    connectivity: Connectivity,
    (rollouts, view): (Arc<RolloutDriver>, Arc<ControlView>),
) {
    let consumer: StreamConsumer<ConnectivityContext> = match super::control::tail_config(
        &kafka, "voice",
    )
    .create_with_context(connectivity.context())
    {
        Ok(c) => c,
        Err(err) => {
            warn!(error = %err, "cannot create the reports reader: suite health is decided from this instance's runs only");
            return;
        }
    };
    let consumer = Arc::new(consumer);
    let mut attempt = 0u32;
    loop {
        let (c, t) = (consumer.clone(), topic.clone());
        let assigned = tokio::task::spawn_blocking(move || {
            super::control::assign_all(&*c, &t, |(low, high)| {
                Offset::Offset((high - VOICE_LOOK_BACK).max(low))
            })
            .map(|watermarks| watermarks.len())
        })
        .await;
        attempt += 1;
        match assigned {
            Ok(Ok(n)) if n > 0 => {
                info!(partitions = n, %topic, "following the whole reports topic: suite health and alerts speak for the group");
                break;
            }
            Ok(Ok(_)) => warn!(%topic, "the reports topic has no partitions; retrying"),
            Ok(Err(err)) if attempt == 1 => {
                warn!(error = %err, %topic, "cannot read the reports topic yet; retrying")
            }
            Ok(Err(err)) => debug!(error = %err, %topic, "cannot read the reports topic yet"),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    loop {
        let msg = match consumer.recv().await {
            Ok(msg) => msg,
            Err(err) => {
                debug!(error = %err, "reports reader error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        connectivity.mark_reachable();
        let Some(value) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        else {
            continue;
        };
        match value.get("kind").and_then(|k| k.as_str()) {
            Some(SUITE_STATE) => {
                let case = value.get("case").and_then(|c| c.as_str());
                let to = value
                    .get("to")
                    .and_then(|t| serde_json::from_value::<Health>(t.clone()).ok());
                if let (Some(case), Some(to)) = (case, to) {
                    health.on_announced(case, to);
                }
            }
            Some(_) => {}
            None => {
                if let Ok(report) = serde_json::from_value::<Report>(value) {
                    if health.is_voice() {
                        health.on_report(&report);
                        rollouts.on_report(&report, &view);
                    }
                }
            }
        }
    }
}

async fn synthetic_traffic(
    case: Case,
    target: Target,
    client: LiveCheck,
    runner: Runner,
    health: Arc<HealthMonitor>,
    mut stopped: watch::Receiver<bool>,
) {
    let Some(every) = case.settings().frequency else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        // One instance of the group sends: the owner of the tests topic's partition 0. An
        // instance that stopped owning it no longer knows, so it clears its DOWN.
        if !runner.owns_first_partition() {
            health.set_down(case.name(), None);
            continue;
        }
        // An inactive case (as the control topic says) gets no synthetic traffic.
        if !runner.suite().is_active(&case) {
            health.set_down(case.name(), None);
            continue;
        }
        let mut delay = Duration::from_millis(200);
        let mut outcome = Err(String::new());
        for attempt in 1..=3 {
            // Fresh arguments per attempt, on the context before the request is sent.
            let stimulus = match case.prepare_stimulus() {
                Ok(stimulus) => stimulus,
                Err(err) => {
                    // Not worth retrying: the same arguments code fails the same way.
                    outcome = Err(format!("synthetic request not sent: {err}"));
                    break;
                }
            };
            let mut context = TestContext::new(case.name(), case.settings().test_expires)
                .arguments(stimulus.arguments().clone());
            // Routed by the case's rule, if any; signed after (the route is not signed).
            context.route = stimulus.route().map(str::to_owned);
            let context = client.sign(context);
            match client.scope(context, stimulus.send(target.clone())).await {
                Ok(()) => {
                    outcome = Ok(());
                    break;
                }
                Err(err) => {
                    outcome = Err(format!("synthetic request failed {attempt} times: {err}"));
                    if attempt < 3 {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        health.set_down(case.name(), outcome.err());
    }
}

/// Publishes the configuration's settings once the control topic is read, then reloads the
/// profile on SIGHUP and when the file's contents change.
async fn settings_task<S: Hangups + Send + 'static>(
    control: Arc<Control>,
    config: LiveConfig,
    compiled: Vec<Case>,
    hangups: Option<S>,
    published: watch::Sender<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    let view = control.view().clone();
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => return,
        _ = async { while !view.wait_caught_up(Duration::from_secs(3600)).await {} } => {}
    }
    let n = control.publish_config(None).await;
    info!(published = n, origin = %config.settings_origin(), "case settings checked against the control topic");
    published.send_replace(true);
    let path = config.reload.as_ref().map(|a| a.config.clone());
    let mut contents = path.as_deref().and_then(control::read_contents);
    let watching = path.is_some() && !config.watch_every.is_zero();
    let mut tick = tokio::time::interval(if watching {
        config.watch_every
    } else {
        Duration::from_secs(3600)
    });
    tick.tick().await;
    let mut hangups = hangups;
    loop {
        let why = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = async {
                match hangups.as_mut() {
                    Some(h) => h.next().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = tick.tick() => {
                if !watching {
                    continue;
                }
                let now = path.as_deref().and_then(control::read_contents);
                if now == contents || now.is_none() {
                    continue;
                }
                contents = now;
                "the file changed"
            }
        };
        match &config.reload {
            Some(args) => {
                if why == "SIGHUP" {
                    contents = path.as_deref().and_then(control::read_contents);
                }
                reload(&control, args, &compiled, &config, why).await;
            }
            None => {
                info!("{why}: nothing to reload (no --profile: the settings come from flags only)")
            }
        }
    }
}

/// SIGHUP, or something that stands for it.
trait Hangups {
    /// Waits for the next one.
    fn next(&mut self) -> impl Future<Output = ()> + Send;
}

#[cfg(unix)]
impl Hangups for tokio::signal::unix::Signal {
    async fn next(&mut self) {
        if self.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

impl Hangups for () {
    async fn next(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// Reads the profile again (with the same flags over it) and publishes the case settings
/// that changed; an invalid file changes nothing.
async fn reload(
    control: &Control,
    args: &LiveArgs,
    compiled: &[Case],
    running: &LiveConfig,
    why: &str,
) {
    let file = args.config.display();
    let new = match LiveConfig::resolve(args) {
        Ok(new) => new,
        Err(err) => {
            tracing::error!(%why, "reload of {file} refused, nothing changed: {err}");
            return;
        }
    };
    let settings = match control::config_settings(&new, compiled) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%why, "reload of {file} refused, nothing changed: {err}");
            return;
        }
    };
    let needs_restart: Vec<&str> = [
        ("brokers and kafka", new.kafka != running.kafka),
        ("topic_prefix", new.topic_prefix != running.topic_prefix),
        ("group_id", new.group_id != running.group_id),
        (
            "http_host and http_port",
            (&new.http_host, new.http_port) != (&running.http_host, running.http_port),
        ),
        ("alert_webhook", new.alert_webhook != running.alert_webhook),
        ("webhooks", new.webhooks != running.webhooks),
        ("public_url", new.public_url != running.public_url),
        ("app_url", new.app_url != running.app_url),
        ("hold_down_secs", new.hold_down != running.hold_down),
        ("fetch_wait", new.fetch_wait != running.fetch_wait),
        ("lanes", new.lanes != running.lanes),
        (
            "history_window",
            new.history_window != running.history_window,
        ),
        ("admin_token", new.admin_token != running.admin_token),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect();
    if !needs_restart.is_empty() {
        warn!(
            "{file}: {} changed; they take effect on a restart (a reload applies the case settings only)",
            needs_restart.join(", ")
        );
    }
    let n = control.publish_config(Some(settings)).await;
    info!(%why, published = n, "{file} reloaded: {n} case setting record(s) published");
}

/// `PASS orders.place_order 6f1c… 12.4 ms` (and the error for other verdicts).
pub fn verdict_line(report: &Report) -> String {
    let mut line = format!(
        "{:<7} {} {} {:.1} ms",
        report.verdict.as_str(),
        report.case,
        report.test_id,
        awaited_ms(report)
    );
    if let Some(error) = &report.error {
        line.push_str(" — ");
        line.push_str(error);
    }
    line
}

/// Sum of the awaited steps' latencies.
fn awaited_ms(report: &Report) -> f64 {
    report
        .timeline
        .iter()
        .filter(|s| s.awaited)
        .map(|s| s.latency_ms)
        .sum()
}

/// Logs a finished run at target [`VERDICT_TARGET`] (INFO): the line of [`verdict_line`],
/// or with `json` the verdict, case, test id, milliseconds and error as fields.
pub fn log_verdict(report: &Report, json: bool) {
    if !json {
        info!(target: VERDICT_TARGET, "{}", verdict_line(report));
        return;
    }
    info!(
        target: VERDICT_TARGET,
        verdict = report.verdict.as_str(),
        case = %report.case,
        test_id = %report.test_id,
        ms = awaited_ms(report),
        error = report.error.as_deref(),
        "verdict"
    );
}

/// The periodic summary: per case, one line at target [`SUMMARY_TARGET`] (INFO) with the
/// runs since the previous summary and the counts since start; a sentence as text, the
/// numbers as fields in JSON.
#[derive(Debug)]
pub struct Summaries {
    json: bool,
    previous: HashMap<String, u64>,
    at: Option<std::time::Instant>,
}

impl Summaries {
    /// Summaries as text sentences, or (`json`) as fields.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            previous: HashMap::new(),
            at: None,
        }
    }

    /// Logs one line per case (the first call: since start only).
    pub fn log(&mut self, state: &LiveState) {
        let now = std::time::Instant::now();
        let interval_s = self
            .at
            .replace(now)
            .map(|at| now.duration_since(at).as_secs_f64().round());
        let in_flight = state.runner.in_flight();
        for case in state.cases() {
            let count = |v: Verdict| case.verdicts.get(&v).copied().unwrap_or(0);
            let runs: u64 = case.verdicts.values().sum();
            let new_runs =
                runs.saturating_sub(self.previous.insert(case.name.clone(), runs).unwrap_or(0));
            let pass_rate = case.pass_rate.map(|r| r * 100.0);
            if self.json {
                info!(
                    target: SUMMARY_TARGET,
                    case = %case.name,
                    health = case.health.as_str(),
                    runs,
                    new_runs = interval_s.map(|_| new_runs),
                    interval_s,
                    pass_rate,
                    pass = count(Verdict::Pass),
                    fail = count(Verdict::Fail),
                    error = count(Verdict::Error),
                    timeout = count(Verdict::Timeout),
                    skip = count(Verdict::Skip),
                    in_flight,
                    "summary"
                );
                continue;
            }
            let recent = interval_s.map_or(String::new(), |s| {
                format!("{new_runs} runs in the last {s}s, ")
            });
            let rate = pass_rate.map_or(String::new(), |r| format!(", {r:.1}% passed"));
            info!(
                target: SUMMARY_TARGET,
                "{} {}: {recent}{runs} since start{rate} (PASS {} FAIL {} ERROR {} TIMEOUT {} SKIP {}); {in_flight} runs in flight",
                case.name,
                case.health,
                count(Verdict::Pass),
                count(Verdict::Fail),
                count(Verdict::Error),
                count(Verdict::Timeout),
                count(Verdict::Skip),
            );
        }
    }
}

/// Waits for SIGINT/SIGTERM, or `run_for`.
pub async fn shutdown_signal(run_for: Option<Duration>) {
    let term = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    let until = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        () = term => info!("SIGTERM: shutting down"),
        () = until => info!("--for elapsed: shutting down"),
    }
}

/// The whole of `livecheck`'s main once the settings are resolved: start, wait, shut down.
pub async fn run_until<F: Future<Output = ()>>(
    config: LiveConfig,
    cases: Vec<Case>,
    until: F,
) -> Result<(), LiveError> {
    let service = LiveService::start(config, cases).await?;
    println!(
        "livecheck status page: http://{}/  (metrics: /metrics, API: /api/cases)",
        service.http_addr
    );
    until.await;
    service.shutdown().await
}
