//! Environments: where the broker and the app under test come from.
//!
//! - *container*: testcontainers starts a Kafka-compatible broker and the app image on the
//!   host network (see "Known limitations" in the crate docs for why not a bridge network);
//! - *embedded*: the mock cluster in-process and the app started by a function you give;
//! - *external*: bootstrap servers and an app URL; nothing is started.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livecheck_core::connectivity::ConnectivityContext;
use livecheck_core::signing::SigningKeys;
use livecheck_core::Connectivity;
use livecheck_core::{BoxFuture, EmbeddedBroker, KafkaConfig, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, ReuseDirective};
use tracing::info;

/// Which environment to bring up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentKind {
    /// Broker and app in containers (testcontainers).
    Container,
    /// Mock cluster in-process, app started in-process.
    Embedded,
    /// Broker and app given; nothing started.
    External,
}

impl EnvironmentKind {
    /// From `LIVECHECK_ENV` (`container`, `embedded`, `external`); without it, `container`
    /// under CI (`CI` set) and `embedded` elsewhere.
    pub fn from_env() -> Result<Self, EnvironmentError> {
        match std::env::var("LIVECHECK_ENV") {
            Ok(v) => v.parse(),
            Err(_) if std::env::var_os("CI").is_some() => Ok(Self::Container),
            Err(_) => Ok(Self::Embedded),
        }
    }
}

impl std::str::FromStr for EnvironmentKind {
    type Err = EnvironmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "container" | "containers" | "docker" => Ok(Self::Container),
            "embedded" => Ok(Self::Embedded),
            "external" => Ok(Self::External),
            other => Err(EnvironmentError::Config(format!(
                "LIVECHECK_ENV={other:?} is not an environment; use container, embedded or external"
            ))),
        }
    }
}

impl fmt::Display for EnvironmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Container => "container",
            Self::Embedded => "embedded",
            Self::External => "external",
        })
    }
}

/// Why an environment did not come up.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// Docker is not reachable.
    #[error("the container environment needs a Docker engine and none answered ({0}). Start one (on Debian: `ci/docker-up.sh`, or `apt-get install -y docker.io` and run `dockerd`), or choose another environment: LIVECHECK_ENV=embedded (in-process broker and app) or LIVECHECK_ENV=external with LIVECHECK_BROKERS and LIVECHECK_APP_URL")]
    NoDocker(String),
    /// A container did not start.
    #[error("container {image} did not start: {message}. Is the image built? (`ci/build-images.sh` builds the local images)")]
    Container {
        /// Image.
        image: String,
        /// What went wrong.
        message: String,
    },
    /// The broker did not accept the topics.
    #[error("cannot create topics on {brokers}: {message}")]
    Topics {
        /// Bootstrap servers.
        brokers: String,
        /// What went wrong.
        message: String,
    },
    /// The app did not start.
    #[error("the app did not start: {0}")]
    App(String),
}

/// A container image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Name (`livecheck/tansu`).
    pub name: String,
    /// Tag (`0.6.0`).
    pub tag: String,
}

impl ImageRef {
    /// `name:tag`.
    pub fn new(name: impl Into<String>, tag: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tag: tag.into(),
        }
    }

    /// Parses `name:tag` (`latest` when no tag is given).
    pub fn parse(s: &str) -> Self {
        match s.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => Self::new(name, tag),
            _ => Self::new(s, "latest"),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// What an in-process app needs to start: the broker and the topic prefix.
#[derive(Debug, Clone)]
pub struct AppStart {
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Extra settings for this app (e.g. faults), as environment-style pairs.
    pub env: BTreeMap<String, String>,
}

/// A started in-process app: its URL and whatever keeps it alive.
pub struct AppHandle {
    /// `http://IP:PORT`.
    pub base_url: String,
    /// Dropped when the environment ends.
    pub guard: Box<dyn std::any::Any + Send + Sync>,
}

impl fmt::Debug for AppHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Starts the app in-process for the embedded environment.
pub type EmbeddedAppFn =
    Arc<dyn Fn(AppStart) -> BoxFuture<anyhow::Result<AppHandle>> + Send + Sync>;

/// How the app image is run in the container environment.
#[derive(Debug, Clone)]
pub struct AppImage {
    /// The image.
    pub image: ImageRef,
    /// Arguments; `{brokers}`, `{port}` and `{prefix}` are replaced.
    pub args: Vec<String>,
    /// A line the app prints on stdout when it is ready.
    pub ready_line: String,
}

/// Settings of an environment. Every field has an environment variable.
#[derive(Clone)]
pub struct EnvironmentConfig {
    /// Which environment (`LIVECHECK_ENV`).
    pub kind: EnvironmentKind,
    /// Broker image (`LIVECHECK_BROKER_IMAGE`, default `livecheck/tansu:0.6.0`).
    pub broker_image: ImageRef,
    /// App image (`LIVECHECK_APP_IMAGE` overrides its name:tag).
    pub app_image: Option<AppImage>,
    /// In-process app for the embedded environment.
    pub embedded_app: Option<EmbeddedAppFn>,
    /// External bootstrap servers (`LIVECHECK_BROKERS`).
    pub brokers: Option<String>,
    /// External app URL (`LIVECHECK_APP_URL`).
    pub app_url: Option<String>,
    /// Topic prefix (`LIVECHECK_TOPIC_PREFIX`; default: fresh per environment, or per run id).
    pub topic_prefix: Option<String>,
    /// Run id shared by the processes of one run (`LIVECHECK_RUN_ID`): containers are named
    /// after it and reused by every process of the run instead of started per process.
    pub run_id: Option<String>,
    /// Extra settings for the app (container env vars / [`AppStart::env`]).
    pub app_env: BTreeMap<String, String>,
    /// Partitions per topic.
    pub partitions: i32,
    /// The app's own topics, created with LiveCheck's; `{prefix}` is replaced.
    pub app_topics: Vec<String>,
    /// Signing keys of the harness's client (`LIVECHECK_SIGNING_KEYS`): it signs the test
    /// context of each stimulus. The app needs the same keys (give them through its own
    /// settings, e.g. [`EnvironmentConfig::app_env`]).
    pub signing_keys: Option<SigningKeys>,
}

impl fmt::Debug for EnvironmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvironmentConfig")
            .field("kind", &self.kind)
            .field("broker_image", &self.broker_image)
            .field("app_image", &self.app_image)
            .field("embedded_app", &self.embedded_app.is_some())
            .field("brokers", &self.brokers)
            .field("app_url", &self.app_url)
            .field("topic_prefix", &self.topic_prefix)
            .field("run_id", &self.run_id)
            .field("app_env", &self.app_env)
            .field("app_topics", &self.app_topics)
            .field("signing_keys", &self.signing_keys)
            .finish()
    }
}

impl EnvironmentConfig {
    /// Settings from the environment variables (see the fields).
    pub fn from_env() -> Result<Self, EnvironmentError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Self {
            kind: EnvironmentKind::from_env()?,
            broker_image: var("LIVECHECK_BROKER_IMAGE").map_or_else(
                || ImageRef::new("livecheck/tansu", "0.6.0"),
                |s| ImageRef::parse(&s),
            ),
            app_image: None,
            embedded_app: None,
            brokers: var("LIVECHECK_BROKERS"),
            app_url: var("LIVECHECK_APP_URL"),
            topic_prefix: var("LIVECHECK_TOPIC_PREFIX"),
            run_id: var("LIVECHECK_RUN_ID"),
            app_env: BTreeMap::new(),
            partitions: 4,
            app_topics: Vec::new(),
            signing_keys: SigningKeys::from_env()
                .map_err(|e| EnvironmentError::Config(e.to_string()))?,
        })
    }

    /// Sets the kind.
    #[must_use]
    pub fn kind(mut self, kind: EnvironmentKind) -> Self {
        self.kind = kind;
        self
    }

    /// The app image for the container environment (`LIVECHECK_APP_IMAGE` overrides the
    /// image's name and tag).
    #[must_use]
    pub fn app_image(mut self, mut app: AppImage) -> Self {
        if let Ok(image) = std::env::var("LIVECHECK_APP_IMAGE") {
            if !image.trim().is_empty() {
                app.image = ImageRef::parse(&image);
            }
        }
        self.app_image = Some(app);
        self
    }

    /// The in-process app for the embedded environment.
    #[must_use]
    pub fn embedded_app<F, Fut>(mut self, start: F) -> Self
    where
        F: Fn(AppStart) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<AppHandle>> + Send + 'static,
    {
        self.embedded_app = Some(Arc::new(move |s| Box::pin(start(s))));
        self
    }

    /// An extra setting for the app (e.g. a fault switch). An environment with app
    /// settings is never shared through the run id.
    #[must_use]
    pub fn app_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.app_env.insert(key.into(), value.into());
        self
    }

    /// Signing keys for the harness's client (it signs each stimulus's test context).
    #[must_use]
    pub fn signing_keys(mut self, keys: SigningKeys) -> Self {
        self.signing_keys = Some(keys);
        self
    }

    /// The app's own topics (`{prefix}orders`), created when the broker starts.
    #[must_use]
    pub fn app_topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.app_topics = topics.into_iter().map(Into::into).collect();
        self
    }

    fn app_topic_names(&self, prefix: &str) -> Vec<String> {
        self.app_topics
            .iter()
            .map(|t| t.replace("{prefix}", prefix))
            .collect()
    }

    /// Brings the environment up.
    pub async fn start(&self) -> Result<Environment, EnvironmentError> {
        let started = Instant::now();
        // Shared through the run id only when the app is the plain one.
        let shared_run = self.run_id.clone().filter(|_| self.app_env.is_empty());
        let prefix = self
            .topic_prefix
            .clone()
            .unwrap_or_else(|| match &shared_run {
                Some(run) => format!("{}-", sanitize(run)),
                None => format!("lc{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            });
        let topics = Topics::with_prefix(&prefix);
        let mut env = match self.kind {
            EnvironmentKind::External => {
                let brokers = self.brokers.clone().ok_or_else(|| {
                    EnvironmentError::Config(
                        "the external environment needs LIVECHECK_BROKERS (bootstrap servers)"
                            .into(),
                    )
                })?;
                let app_url = self.app_url.clone().ok_or_else(|| {
                    EnvironmentError::Config(
                        "the external environment needs LIVECHECK_APP_URL".into(),
                    )
                })?;
                Environment::bare(self.kind, KafkaConfig::new(brokers), topics, app_url)
            }
            EnvironmentKind::Embedded => self.start_embedded(topics, &prefix).await?,
            EnvironmentKind::Container => {
                self.start_containers(topics, &prefix, shared_run).await?
            }
        };
        env.timings.push(("total", started.elapsed()));
        Ok(env)
    }

    async fn start_embedded(
        &self,
        topics: Topics,
        prefix: &str,
    ) -> Result<Environment, EnvironmentError> {
        let start = self.embedded_app.clone().ok_or_else(|| {
            EnvironmentError::Config(
                "the embedded environment needs a way to start the app in-process (EnvironmentConfig::embedded_app)"
                    .into(),
            )
        })?;
        let t = Instant::now();
        let extra = self.app_topic_names(prefix);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let broker = EmbeddedBroker::with_topics(&topics, &extra, self.partitions)
            .map_err(|e| EnvironmentError::Config(e.to_string()))?;
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let broker_ready = t.elapsed();
        let t = Instant::now();
        let app = start(AppStart {
            kafka: kafka.clone(),
            topic_prefix: prefix.to_owned(),
            env: self.app_env.clone(),
        })
        .await
        .map_err(|e| EnvironmentError::App(format!("{e:#}")))?;
        let mut env = Environment::bare(
            EnvironmentKind::Embedded,
            kafka,
            topics,
            app.base_url.clone(),
        );
        env.timings.push(("broker", broker_ready));
        env.timings.push(("app", t.elapsed()));
        // The app's clients must close before the broker goes: guards drop in order.
        env.guards.push(Box::new(app.guard));
        env.guards.push(Box::new(broker));
        Ok(env)
    }

    async fn start_containers(
        &self,
        topics: Topics,
        prefix: &str,
        shared_run: Option<String>,
    ) -> Result<Environment, EnvironmentError> {
        check_docker().await?;
        let app = self.app_image.clone().ok_or_else(|| {
            EnvironmentError::Config(
                "the container environment needs an app image (EnvironmentConfig::app_image)"
                    .into(),
            )
        })?;
        let (broker_port, app_port) = match &shared_run {
            Some(run) => ports_for_run(run),
            None => (free_port()?, free_port()?),
        };
        let names = shared_run.as_ref().map(|run| {
            (
                format!("livecheck-{}-broker", sanitize(run)),
                format!("livecheck-{}-app", sanitize(run)),
            )
        });
        let brokers = format!("127.0.0.1:{broker_port}");

        let t = Instant::now();
        let broker_request = || {
            GenericImage::new(
                self.broker_image.name.clone(),
                self.broker_image.tag.clone(),
            )
            .with_wait_for(WaitFor::message_on_either_std("ready in"))
            .with_network("host")
            .with_cmd([
                "broker".to_owned(),
                "--listener-url".to_owned(),
                format!("tcp://0.0.0.0:{broker_port}"),
                "--advertised-listener-url".to_owned(),
                format!("tcp://127.0.0.1:{broker_port}"),
                "--storage-engine".to_owned(),
                "memory://tansu/".to_owned(),
            ])
            .with_startup_timeout(Duration::from_secs(60))
        };
        let broker = start_container(
            broker_request,
            &self.broker_image,
            names.as_ref().map(|n| n.0.clone()),
            shared_run.as_deref(),
        )
        .await?;
        create_topics(
            &brokers,
            &topics,
            &self.app_topic_names(prefix),
            self.partitions,
        )
        .await?;
        let broker_ready = t.elapsed();

        let t = Instant::now();
        let args: Vec<String> = app
            .args
            .iter()
            .map(|a| {
                a.replace("{brokers}", &brokers)
                    .replace("{port}", &app_port.to_string())
                    .replace("{prefix}", prefix)
            })
            .collect();
        let app_request = || {
            let mut request = GenericImage::new(app.image.name.clone(), app.image.tag.clone())
                .with_wait_for(WaitFor::message_on_stdout(app.ready_line.clone()))
                .with_network("host")
                .with_cmd(args.clone())
                .with_startup_timeout(Duration::from_secs(60));
            for (k, v) in &self.app_env {
                request = request.with_env_var(k.clone(), v.clone());
            }
            request
        };
        let app_container = start_container(
            app_request,
            &app.image,
            names.as_ref().map(|n| n.1.clone()),
            shared_run.as_deref(),
        )
        .await?;
        let app_ready = t.elapsed();
        info!(%brokers, app_port, reused = shared_run.is_some(), "container environment ready");
        let mut env = Environment::bare(
            EnvironmentKind::Container,
            KafkaConfig::new(brokers),
            topics,
            format!("http://127.0.0.1:{app_port}"),
        );
        env.timings.push(("broker", broker_ready));
        env.timings.push(("app", app_ready));
        env.guards.push(Box::new(app_container));
        env.guards.push(Box::new(broker));
        Ok(env)
    }
}

async fn check_docker() -> Result<(), EnvironmentError> {
    let output = tokio::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .await
        .map_err(|e| EnvironmentError::NoDocker(format!("cannot run `docker`: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(EnvironmentError::NoDocker(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

async fn start_container(
    request: impl Fn() -> testcontainers::ContainerRequest<GenericImage>,
    image: &ImageRef,
    name: Option<String>,
    run_id: Option<&str>,
) -> Result<ContainerAsync<GenericImage>, EnvironmentError> {
    let request = || match (&name, run_id) {
        (Some(name), Some(run)) => request()
            .with_container_name(name.clone())
            .with_label("livecheck.run-id", run)
            .with_reuse(ReuseDirective::Always),
        _ => request(),
    };
    // Processes of one run race to create the shared containers: the loser finds the
    // winner's container on its next try.
    let mut last = String::new();
    for attempt in 0..5 {
        match request().start().await {
            Ok(container) => return Ok(container),
            Err(err) => {
                last = err.to_string();
                if !last.contains("Conflict") && !last.contains("already in use") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300 * (attempt + 1))).await;
            }
        }
    }
    Err(EnvironmentError::Container {
        image: image.to_string(),
        message: last,
    })
}

/// Creates the LiveCheck topics (existing ones are fine): tests, signals, reports and `extra`
/// with `partitions` partitions, control and heartbeats with one, compacted.
async fn create_topics(
    brokers: &str,
    topics: &Topics,
    extra: &[String],
    partitions: i32,
) -> Result<(), EnvironmentError> {
    let err = |message: String| EnvironmentError::Topics {
        brokers: brokers.to_owned(),
        message,
    };
    let admin: AdminClient<ConnectivityContext> = KafkaConfig::new(brokers)
        .client_config(&[])
        .create_with_context(Connectivity::new(brokers).context())
        .map_err(|e| err(e.to_string()))?;
    // The control and heartbeats topics: one partition, compacted (latest record per key).
    let new: Vec<NewTopic<'_>> = topics
        .all()
        .into_iter()
        .chain(extra.iter().map(String::as_str))
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .chain(topics.settings_topics().into_iter().map(|t| {
            NewTopic::new(t, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact")
        }))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| err(e.to_string()))?;
    for result in results {
        if let Err((topic, code)) = result {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(err(format!("topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

fn free_port() -> Result<u16, EnvironmentError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EnvironmentError::Config(format!("cannot find a free port: {e}")))
}

/// Ports every process of a run agrees on (the shared containers use host networking).
fn ports_for_run(run: &str) -> (u16, u16) {
    let h = (livecheck_core::murmur2::murmur2(run.as_bytes()) as u32) % 10_000;
    let base = 30_000 + (h as u16) * 2;
    (base, base + 1)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A running environment. Dropping it stops what it started (inside the runtime).
pub struct Environment {
    /// Which kind.
    pub kind: EnvironmentKind,
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// LiveCheck topics.
    pub topics: Topics,
    /// The app's base URL.
    pub app_url: String,
    /// Time to ready, per component (`broker`, `app`, `total`).
    pub timings: Vec<(&'static str, Duration)>,
    guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("kind", &self.kind)
            .field("brokers", &self.kafka.brokers)
            .field("app_url", &self.app_url)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl Environment {
    fn bare(kind: EnvironmentKind, kafka: KafkaConfig, topics: Topics, app_url: String) -> Self {
        Self {
            kind,
            kafka,
            topics,
            app_url,
            timings: Vec::new(),
            guards: Vec::new(),
        }
    }

    /// One line: `environment container ready: broker 0.31 s, app 0.42 s, total 0.80 s`.
    pub fn timing_line(&self) -> String {
        let parts: Vec<String> = self
            .timings
            .iter()
            .map(|(what, d)| format!("{what} {:.2} s", d.as_secs_f64()))
            .collect();
        format!("environment {} ready: {}", self.kind, parts.join(", "))
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        // In order: the app before the broker.
        for guard in self.guards.drain(..) {
            drop(guard);
        }
    }
}
