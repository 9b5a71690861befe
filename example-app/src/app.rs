//! The service: HTTP front, two Kafka consumers, wiring.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livecheck_core::signing::SigningKeys;
use livecheck_core::{
    ControlOptions, EmbeddedBroker, KafkaConfig, LiveCheck, Sampling, TableSpec, Topics, Trigger,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::consumers;
use crate::faults::{FaultConfig, Faults};
use crate::http;
use crate::jobs::{self, ExecutionJobs};
use crate::signals::{ORDER_CASE, SELL_LIMIT_CASE};
use crate::store::{Executed, MemoryStore, OrderStore, SoldTotals, UserCache};

/// Topic names of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTopics {
    /// Orders, keyed by order id.
    pub orders: String,
    /// Orders on their way to execution.
    pub execution: String,
    /// LiveCheck's topics.
    pub livecheck: Topics,
    /// The tables of the checks run against the app: [`AppTopics::create_embedded`] creates
    /// their changelogs ([`Topics::table`]).
    pub tables: Vec<TableSpec>,
}

impl AppTopics {
    /// `{prefix}orders`, `{prefix}order-execution` and LiveCheck's with the same prefix; no
    /// tables.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            orders: format!("{prefix}orders"),
            execution: format!("{prefix}order-execution"),
            livecheck: Topics::with_prefix(prefix),
            tables: Vec::new(),
        }
    }

    /// These topics with the tables of the checks that run against the app (a suite's
    /// [`livecheck_core::Suite::tables`]).
    #[must_use]
    pub fn with_tables(mut self, tables: impl IntoIterator<Item = TableSpec>) -> Self {
        self.tables.extend(tables);
        self
    }

    /// The app's topics and LiveCheck's co-partitioned ones (tests, signals, reports); not
    /// LiveCheck's control and heartbeats topics, which have one partition
    /// ([`Topics::settings_topics`]).
    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![self.orders.as_str(), self.execution.as_str()];
        all.extend(self.livecheck.all());
        all
    }

    /// Creates every topic on an embedded broker: [`AppTopics::all`] and the changelogs of
    /// [`AppTopics::tables`] with `partitions` partitions, LiveCheck's control and
    /// heartbeats topics with one.
    pub fn create_embedded(
        &self,
        broker: &EmbeddedBroker,
        partitions: i32,
    ) -> Result<(), livecheck_core::Error> {
        broker.create_topic(&self.orders, partitions)?;
        broker.create_topic(&self.execution, partitions)?;
        broker.create_topics(&self.livecheck, partitions)?;
        broker.create_tables(&self.livecheck, &self.tables, partitions)
    }
}

impl Default for AppTopics {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

/// How the execute-order service executes an order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Execution {
    /// On the spot, as it consumes the order from Kafka.
    #[default]
    Kafka,
    /// As a background job in the same process (apalis, in memory), the test context
    /// carried in the job: see [`crate::jobs`].
    Job,
}

impl std::str::FromStr for Execution {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kafka" => Ok(Self::Kafka),
            "job" => Ok(Self::Job),
            other => Err(format!("execution mode {other:?} is not `kafka` or `job`")),
        }
    }
}

/// The service name the app follows the control topic and sends heartbeats under.
pub const SERVICE_NAME: &str = "example-app";

/// The most a user may sell in total unless configured otherwise (`--sell-limit`,
/// [`AppConfig::sell_limit`]).
pub const DEFAULT_SELL_LIMIT: u64 = 100;

/// Settings of the app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the HTTP front listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: AppTopics,
    /// Share of users whose orders become tests (orders are sampled by user).
    pub probability: f64,
    /// Consumer group prefix (`{prefix}create-order`, `{prefix}execute-order`).
    pub group_prefix: String,
    /// Fault switches at start.
    pub faults: FaultConfig,
    /// Test hooks: `POST /admin/faults` and the `?fake=1` switch. Off by default (then
    /// `/admin/faults` answers 404 and `fake` is ignored); tests and the demo turn them on.
    pub test_hooks: bool,
    /// Signing keys for the LiveCheck client: with them, only signed test contexts are
    /// accepted and the tests this app triggers are signed.
    pub signing_keys: Option<SigningKeys>,
    /// How the LiveCheck client follows the control topic (service name, instance,
    /// heartbeat interval): its trigger then samples with the probability and active flag
    /// the `livecheck` service publishes. `None`: it does not follow, and samples with
    /// [`AppConfig::probability`] only.
    pub control: Option<ControlOptions>,
    /// How orders are executed: by the Kafka consumer itself (the default) or as background
    /// jobs.
    pub execution: Execution,
    /// `fetch.wait.max.ms` of the app's consumers: how long the broker may hold a fetch that
    /// found nothing; each hop through a broker that does not answer a held fetch early
    /// (the embedded mock, tansu) waits for it. Default: the runner's,
    /// [`livecheck_core::DEFAULT_FETCH_WAIT`] (2 ms).
    pub fetch_wait: std::time::Duration,
    /// The most a user may sell in total: a sell order that would take the user's sold
    /// quantity above it is refused (HTTP 409). Default [`DEFAULT_SELL_LIMIT`].
    pub sell_limit: u64,
    /// Share of users whose sell orders become tests of `orders.sell_limit` (sampled by
    /// user), 0.5 by default: the local default, as [`AppConfig::probability`] is for the
    /// order case. 0 when no runner judges that case.
    pub sell_limit_probability: f64,
}

impl AppConfig {
    /// Defaults for `kafka`: port 6066 on loopback, probability 0.5, following the control
    /// topic as service `example-app`.
    pub fn new(kafka: KafkaConfig) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6066)),
            kafka,
            topics: AppTopics::default(),
            probability: 0.5,
            group_prefix: "example-app-".to_owned(),
            faults: FaultConfig::default(),
            test_hooks: false,
            signing_keys: None,
            control: Some(ControlOptions::new(SERVICE_NAME)),
            execution: Execution::Kafka,
            fetch_wait: livecheck_core::DEFAULT_FETCH_WAIT,
            sell_limit: DEFAULT_SELL_LIMIT,
            sell_limit_probability: 0.5,
        }
    }
}

/// Counters of the app.
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Orders accepted by `/order/create/`.
    pub orders_created: AtomicU64,
    /// Orders stored by the create-order consumer.
    pub orders_stored: AtomicU64,
    /// Orders executed.
    pub orders_executed: AtomicU64,
    /// Records that did not decode (logged with topic/partition/offset).
    pub malformed_records: AtomicU64,
    /// Requests refused with 4xx.
    pub bad_requests: AtomicU64,
    /// Sell orders refused by the sell limit (HTTP 409).
    pub sells_refused: AtomicU64,
}

impl AppCounters {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the handlers and consumers share.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: AppConfig,
    /// LiveCheck client (signals, triggers, counters).
    pub livecheck: LiveCheck,
    /// The order case's trigger.
    pub trigger: Trigger,
    /// The sell-limit case's trigger (sell orders, by user).
    pub sell_limit_trigger: Trigger,
    /// Fault switches.
    pub faults: Faults,
    /// Orders.
    pub store: Arc<dyn OrderStore>,
    /// Per-user index.
    pub cache: UserCache,
    /// Orders executed (an order is executed once).
    pub executed: Executed,
    /// The quantity each user has sold, against the sell limit.
    pub sold: SoldTotals,
    /// Counters.
    pub counters: AppCounters,
    /// Base URL of the HTTP front (for its own calls to `/order/create/`).
    pub base_url: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The queue of execution jobs, in job mode ([`Execution::Job`]).
    pub execution_jobs: Option<ExecutionJobs>,
}

impl std::fmt::Debug for dyn OrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrderStore({} orders)", self.len())
    }
}

/// A running app. Dropping it stops the HTTP front and the consumers.
#[derive(Debug)]
pub struct RunningApp {
    /// Shared state (faults, counters, store).
    pub shared: Arc<Shared>,
    /// `http://IP:PORT`.
    pub base_url: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _broker: Option<EmbeddedBroker>,
}

impl RunningApp {
    /// Starts the app on `config`'s brokers.
    pub async fn start(config: AppConfig) -> anyhow::Result<Self> {
        Self::start_inner(config, None).await
    }

    /// Starts an embedded broker with the app's topics (4 partitions) and the app on it.
    pub async fn start_embedded(mut config: AppConfig) -> anyhow::Result<Self> {
        let broker = EmbeddedBroker::start()?;
        config.topics.create_embedded(&broker, 4)?;
        config.kafka.brokers = broker.bootstrap_servers().to_owned();
        Self::start_inner(config, Some(broker)).await
    }

    async fn start_inner(
        config: AppConfig,
        broker: Option<EmbeddedBroker>,
    ) -> anyhow::Result<Self> {
        let mut livecheck = LiveCheck::new(config.kafka.clone(), config.topics.livecheck.clone())?
            .with_service("example-app");
        if let Some(keys) = &config.signing_keys {
            livecheck = livecheck.with_signing(keys.clone());
        }
        if let Some(options) = &config.control {
            livecheck.follow_control_with(options.clone())?;
        }
        // The first test and signals are then not held about 100 ms while the producer
        // looks their topics up; in the background, so that a broker down at start does not
        // hold the app back (the records wait for it as always).
        tokio::spawn({
            let livecheck = livecheck.clone();
            async move {
                if let Err(e) = livecheck.connect(Duration::from_secs(5)).await {
                    let error = format!("{:#}", anyhow::Error::from(e));
                    tracing::warn!(%error, "LiveCheck topics not looked up at start; the first records will wait for the broker");
                }
            }
        });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {}: {e} (choose another port with --port)",
                    config.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let (execution_jobs, job_storage) = match config.execution {
            Execution::Kafka => (None, None),
            Execution::Job => {
                let (queue, storage) = ExecutionJobs::new();
                (Some(queue), Some(storage))
            }
        };
        let shared = Arc::new(Shared {
            trigger: Trigger::new(ORDER_CASE)
                .probability(config.probability)
                .sampling(Sampling::Key)
                .test_expires(Duration::from_secs(600)),
            sell_limit_trigger: Trigger::new(SELL_LIMIT_CASE)
                .probability(config.sell_limit_probability)
                .sampling(Sampling::Key)
                .test_expires(Duration::from_secs(600)),
            faults: Faults::new(&config.faults),
            store: Arc::new(MemoryStore::default()),
            cache: UserCache::default(),
            executed: Executed::default(),
            sold: SoldTotals::default(),
            counters: AppCounters::default(),
            base_url: base_url.clone(),
            http: reqwest::Client::new(),
            execution_jobs,
            livecheck,
            config,
        });
        if shared.config.control.is_some() {
            // Heartbeats report the case from now on, not only after the first order.
            shared.trigger.announce(&shared.livecheck);
            shared.sell_limit_trigger.announce(&shared.livecheck);
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let router = http::router(shared.clone());
        let mut http_stop = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "HTTP front stopped");
            }
        }));
        if let Some(storage) = job_storage {
            tasks.push(jobs::spawn_worker(shared.clone(), storage, stopped.clone()));
        }
        let (create_ready, mut create_ready_rx) = watch::channel(false);
        let (execute_ready, mut execute_ready_rx) = watch::channel(false);
        tasks.push(consumers::spawn_create_order(
            shared.clone(),
            stopped.clone(),
            create_ready,
        )?);
        tasks.push(consumers::spawn_execute_order(
            shared.clone(),
            stopped,
            execute_ready,
        )?);
        // Ready when both consumers have their partitions (a group join takes ~3 s on the
        // embedded broker): orders placed before would wait that long for their first step.
        let both = async {
            let _ = create_ready_rx.wait_for(|r| *r).await;
            let _ = execute_ready_rx.wait_for(|r| *r).await;
        };
        if tokio::time::timeout(Duration::from_secs(30), both)
            .await
            .is_err()
        {
            tracing::warn!("the consumers have no partitions after 30 s; serving anyway (is the broker reachable?)");
        }
        let control = shared.livecheck.control_options();
        info!(
            %base_url,
            brokers = %shared.config.kafka.brokers,
            service = control.map(|c| c.service.as_str()),
            instance = control.and_then(|c| c.instance.as_deref()),
            execution = ?shared.config.execution,
            "example app started"
        );
        Ok(Self {
            shared,
            base_url,
            stop,
            tasks,
            _broker: broker,
        })
    }

    /// The Kafka bootstrap servers the app uses.
    pub fn brokers(&self) -> &str {
        &self.shared.config.kafka.brokers
    }

    /// Stops the HTTP front and the consumers and waits for them.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        drop(self._broker.take());
    }
}

impl Drop for RunningApp {
    /// Stops the tasks. An embedded broker keeps serving for a grace period after its drop,
    /// so the consumers can still close.
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
