//! The environment's settings: a builder that reads nothing from the process environment,
//! and one [`EnvironmentConfig::from_env`] that does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use livecheck_core::signing::SigningKeys;
use livecheck_core::TableSpec;

use super::broker::{ApacheKafka, Broker, Tansu};
use super::image::ImageRef;
use super::service::{AppHandle, AppStart, Service};
use crate::BoxError;

/// Which environment to bring up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentKind {
    /// Broker and services in containers (feature `containers`; services without an image
    /// run as child processes).
    Container,
    /// Mock cluster in-process; services in-process or as child processes.
    Embedded,
    /// Broker and app given; nothing started.
    External,
}

impl std::str::FromStr for EnvironmentKind {
    type Err = EnvironmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "container" | "containers" | "docker" => Ok(Self::Container),
            "embedded" => Ok(Self::Embedded),
            "external" => Ok(Self::External),
            other => Err(EnvironmentError::Config(format!(
                "{other:?} is not an environment; use container, embedded or external"
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
#[non_exhaustive]
pub enum EnvironmentError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// Docker is not reachable.
    #[error("the container environment needs a Docker engine and none answered ({0}). Start one (on Debian: `apt-get install -y docker.io`, then run `dockerd`), or choose another environment: LIVECHECK_ENV=embedded (in-process broker, services in-process or as child processes) or LIVECHECK_ENV=external with LIVECHECK_BROKERS and LIVECHECK_APP_URL")]
    NoDocker(String),
    /// A container did not start.
    #[error("container {name} ({image}) did not start: {message}. Is the image built or pulled?")]
    Container {
        /// The broker's or service's name.
        name: String,
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
    /// A child process did not start or get ready.
    #[error("service {name} did not start: {message}")]
    Service {
        /// The service.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// An in-process service did not start.
    #[error("service {name} did not start")]
    App {
        /// The service.
        name: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
}

/// Settings of an environment. The builder methods read nothing from the process
/// environment: [`from_env`](Self::from_env) is the one place that does.
///
/// ```
/// use livecheck_harness::{ApacheKafka, EnvironmentConfig, EnvironmentKind, Ready, Service};
///
/// let config = EnvironmentConfig::new(EnvironmentKind::Container)
///     .broker(ApacheKafka::default())
///     .partitions(2)
///     .kafka_property("session.timeout.ms", "6000")
///     .sidecar(Service::new("stub").process("/bin/true").ready(Ready::Now))
///     .service(
///         Service::new("gateway")
///             .process("target/debug/gateway")
///             .args(["--brokers", "{brokers}", "--port", "{port}"])
///             .ready(Ready::http("/healthz")),
///     );
/// assert_eq!(config.kind_of(), EnvironmentKind::Container);
/// ```
#[derive(Clone)]
pub struct EnvironmentConfig {
    pub(crate) kind: EnvironmentKind,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) services: Vec<Service>,
    pub(crate) sidecars: Vec<Service>,
    /// `LIVECHECK_APP_IMAGE`: replaces the image of the first service that has one.
    pub(crate) app_image_override: Option<ImageRef>,
    pub(crate) brokers: Option<String>,
    pub(crate) app_url: Option<String>,
    pub(crate) topic_prefix: Option<String>,
    pub(crate) run_id: Option<String>,
    pub(crate) app_env: BTreeMap<String, String>,
    pub(crate) partitions: i32,
    pub(crate) kafka_properties: BTreeMap<String, String>,
    pub(crate) app_topics: Vec<String>,
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) signing_keys: Option<SigningKeys>,
}

impl fmt::Debug for EnvironmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvironmentConfig")
            .field("kind", &self.kind)
            .field("broker", &self.broker)
            .field("services", &self.services)
            .field("sidecars", &self.sidecars)
            .field("brokers", &self.brokers)
            .field("app_url", &self.app_url)
            .field("topic_prefix", &self.topic_prefix)
            .field("run_id", &self.run_id)
            .field("app_env", &self.app_env)
            .field("partitions", &self.partitions)
            .field("app_topics", &self.app_topics)
            .field("tables", &self.tables)
            .field("signing_keys", &self.signing_keys)
            .finish_non_exhaustive()
    }
}

impl EnvironmentConfig {
    /// An environment of `kind` with the default broker ([`Tansu`]), 4 partitions per
    /// topic and no services yet.
    pub fn new(kind: EnvironmentKind) -> Self {
        Self {
            kind,
            broker: Arc::new(Tansu::default()),
            services: Vec::new(),
            sidecars: Vec::new(),
            app_image_override: None,
            brokers: None,
            app_url: None,
            topic_prefix: None,
            run_id: None,
            app_env: BTreeMap::new(),
            partitions: 4,
            kafka_properties: BTreeMap::new(),
            app_topics: Vec::new(),
            tables: Vec::new(),
            signing_keys: None,
        }
    }

    /// Settings from the environment variables: `LIVECHECK_ENV` (`container`, `embedded`,
    /// `external`; default `embedded`), `LIVECHECK_BROKER` (`tansu`, `apache-kafka`) and
    /// `LIVECHECK_BROKER_IMAGE` (its image), `LIVECHECK_APP_IMAGE` (replaces the first
    /// service's image), `LIVECHECK_BROKERS` and `LIVECHECK_APP_URL` (external),
    /// `LIVECHECK_TOPIC_PREFIX`, `LIVECHECK_RUN_ID` (see [`run_id`](Self::run_id)),
    /// `LIVECHECK_PARTITIONS` and `LIVECHECK_SIGNING_KEYS`.
    pub fn from_env() -> Result<Self, EnvironmentError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let kind = match var("LIVECHECK_ENV") {
            Some(v) => v
                .parse()
                .map_err(|e| EnvironmentError::Config(format!("LIVECHECK_ENV: {e}")))?,
            None => EnvironmentKind::Embedded,
        };
        let image = var("LIVECHECK_BROKER_IMAGE").map(|s| ImageRef::parse(&s));
        let broker: Arc<dyn Broker> = match var("LIVECHECK_BROKER").as_deref().map(str::trim) {
            None | Some("tansu") => Arc::new(image.map(Tansu::new).unwrap_or_default()),
            Some("apache-kafka" | "kafka") => {
                Arc::new(image.map(ApacheKafka::new).unwrap_or_default())
            }
            Some(other) => {
                return Err(EnvironmentError::Config(format!(
                    "LIVECHECK_BROKER={other:?} is not a broker; use tansu or apache-kafka"
                )))
            }
        };
        let mut config = Self::new(kind);
        config.broker = broker;
        config.app_image_override = var("LIVECHECK_APP_IMAGE").map(|s| ImageRef::parse(&s));
        config.brokers = var("LIVECHECK_BROKERS");
        config.app_url = var("LIVECHECK_APP_URL");
        config.topic_prefix = var("LIVECHECK_TOPIC_PREFIX");
        config.run_id = var("LIVECHECK_RUN_ID");
        if let Some(p) = var("LIVECHECK_PARTITIONS") {
            config.partitions = p.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                EnvironmentError::Config(format!(
                    "LIVECHECK_PARTITIONS={p:?} is not a positive number"
                ))
            })?;
        }
        config.signing_keys =
            SigningKeys::from_env().map_err(|e| EnvironmentError::Config(e.to_string()))?;
        Ok(config)
    }

    /// Sets the kind.
    #[must_use]
    pub fn kind(mut self, kind: EnvironmentKind) -> Self {
        self.kind = kind;
        self
    }

    /// The kind.
    pub fn kind_of(&self) -> EnvironmentKind {
        self.kind
    }

    /// The broker of the container environment (default [`Tansu`]).
    #[must_use]
    pub fn broker(mut self, broker: impl Broker + 'static) -> Self {
        self.broker = Arc::new(broker);
        self
    }

    /// An app service. Services start in the order given, after the sidecars; the first
    /// one's URL is where each case's stimulus goes ([`Environment::app_url`](super::Environment)).
    #[must_use]
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// A sidecar (a database, a stub): started before the services, its port handed to them
    /// as `{port:NAME}`.
    #[must_use]
    pub fn sidecar(mut self, sidecar: Service) -> Self {
        self.sidecars.push(sidecar);
        self
    }

    /// The one app of the example style: a service named `app` that runs in-process in
    /// the embedded environment (shorthand for [`service`](Self::service) with
    /// [`Service::in_process`]).
    #[must_use]
    pub fn embedded_app<F, Fut, E>(self, start: F) -> Self
    where
        F: Fn(AppStart) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<AppHandle, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.service(Service::new("app").in_process(start))
    }

    /// Bootstrap servers of the external environment.
    #[must_use]
    pub fn brokers(mut self, brokers: impl Into<String>) -> Self {
        self.brokers = Some(brokers.into());
        self
    }

    /// App URL of the external environment.
    #[must_use]
    pub fn app_url(mut self, url: impl Into<String>) -> Self {
        self.app_url = Some(url.into());
        self
    }

    /// Prefix of every topic name (default: fresh per environment, or per run id).
    #[must_use]
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = Some(prefix.into());
        self
    }

    /// A run id shared by the processes of one run (nextest runs each trial in its own
    /// process): containers are named after it, labelled `livecheck.run-id=<id>` and
    /// reused by every process of the run instead of started per process. Whoever sets it
    /// removes the containers at the end. Child processes are never shared.
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// An extra setting for every app service (e.g. a fault switch). An environment with
    /// app settings is never shared through the run id.
    #[must_use]
    pub fn app_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.app_env.insert(key.into(), value.into());
        self
    }

    /// Partitions per topic (default 4), handed to the services as `{partitions}`.
    #[must_use]
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// A Kafka client property for the harness's clients and the services (`{kafka}`,
    /// `LIVECHECK_KAFKA`, [`AppStart::kafka`]), in every environment.
    #[must_use]
    pub fn kafka_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka_properties.insert(key.into(), value.into());
        self
    }

    /// Signing keys for the harness's client (it signs each stimulus's test context). The
    /// services need the same keys (give them through their settings).
    #[must_use]
    pub fn signing_keys(mut self, keys: SigningKeys) -> Self {
        self.signing_keys = Some(keys);
        self
    }

    /// The signing keys, if any.
    pub fn signing_keys_of(&self) -> Option<&SigningKeys> {
        self.signing_keys.as_ref()
    }

    /// The app's own topics (`{prefix}orders`), created when the broker starts.
    #[must_use]
    pub fn app_topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.app_topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Tables whose changelogs ([`livecheck_core::Topics::table`]) the environment creates
    /// with the broker's other topics: as many partitions as the tests topic, compacted on
    /// a real broker (the external environment creates nothing). A [`Session`](crate::Session)
    /// adds its suite's tables itself.
    #[must_use]
    pub fn tables(mut self, tables: impl IntoIterator<Item = TableSpec>) -> Self {
        for table in tables {
            if !self.tables.iter().any(|t| t.name == table.name) {
                self.tables.push(table);
            }
        }
        self
    }

    /// The tables whose changelogs the environment creates.
    pub fn tables_of(&self) -> &[TableSpec] {
        &self.tables
    }

    pub(crate) fn app_topic_names(&self, prefix: &str) -> Vec<String> {
        self.app_topics
            .iter()
            .map(|t| t.replace("{prefix}", prefix))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_reads_no_environment_variable() {
        // Whatever this process's LIVECHECK_* say, new() is the same.
        let config = EnvironmentConfig::new(EnvironmentKind::Embedded);
        assert_eq!(config.kind_of(), EnvironmentKind::Embedded);
        assert!(config.run_id.is_none() && config.brokers.is_none());
        assert_eq!(config.partitions, 4);
        assert_eq!(config.broker.image().to_string(), "livecheck/tansu:0.6.0");
        let config = config.broker(ApacheKafka::default()).partitions(0);
        assert_eq!(config.broker.ports(), 2);
        assert_eq!(config.partitions, 1);
    }

    #[test]
    fn tables_are_added_once_each() {
        let spec = |name, global| TableSpec { name, global };
        let config = EnvironmentConfig::new(EnvironmentKind::Embedded)
            .tables([spec("sold", false)])
            .tables([spec("sold", false), spec("limits", true)]);
        assert_eq!(
            config.tables_of(),
            [spec("sold", false), spec("limits", true)]
        );
    }
}
