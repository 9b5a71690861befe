//! App services and sidecars: what the environment starts besides the broker.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use livecheck_core::{BoxFuture, KafkaConfig};

use super::image::ImageRef;
use super::ready::Ready;
use crate::BoxError;

/// What an in-process service gets to start: the broker, the topic prefix, the partition
/// count, its settings, and the ports of the sidecars started before it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppStart {
    /// The service's name.
    pub name: String,
    /// Kafka settings: bootstrap servers and the environment's client properties.
    pub kafka: KafkaConfig,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Partitions of every topic the environment created.
    pub partitions: i32,
    /// The service's settings ([`Service::env`], then the environment's
    /// [`app_env`](super::EnvironmentConfig::app_env)), as environment-style pairs.
    pub env: BTreeMap<String, String>,
    /// Ports of the sidecars and services started before this one, by name.
    pub ports: BTreeMap<String, u16>,
}

/// A started in-process service: its URL and whatever keeps it alive.
pub struct AppHandle {
    base_url: String,
    guard: Box<dyn std::any::Any + Send + Sync>,
}

impl AppHandle {
    /// A service at `base_url` (`http://127.0.0.1:PORT`), kept alive by `guard` until the
    /// environment ends.
    pub fn new(base_url: impl Into<String>, guard: impl std::any::Any + Send + Sync) -> Self {
        Self {
            base_url: base_url.into(),
            guard: Box::new(guard),
        }
    }

    /// `http://IP:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn into_parts(self) -> (String, Box<dyn std::any::Any + Send + Sync>) {
        (self.base_url, self.guard)
    }
}

impl fmt::Debug for AppHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Starts a service in-process (the embedded environment).
pub(crate) type InProcessFn =
    Arc<dyn Fn(AppStart) -> BoxFuture<Result<AppHandle, BoxError>> + Send + Sync>;

/// A service the environment starts: an app under test or a sidecar (a database, a stub).
///
/// A service may say how to run in several ways; each environment takes the first it can:
/// the container environment an [`image`](Self::image), else a child
/// [`process`](Self::process), else the [`in_process`](Self::in_process) start; the
/// embedded environment the in-process start, else the child process.
///
/// Arguments and the values of [`env`](Self::env) may hold placeholders: `{brokers}`,
/// `{port}` (the service's own port on 127.0.0.1, free or derived from the run id),
/// `{prefix}` (topic prefix), `{partitions}`, `{kafka}` (the Kafka client properties as
/// `key=value,key=value`) and `{port:NAME}` (the port of service `NAME`, started before).
/// Containers and child processes also get them as `LIVECHECK_BROKERS`,
/// `LIVECHECK_TOPIC_PREFIX`, `LIVECHECK_PARTITIONS` and `LIVECHECK_KAFKA`.
#[derive(Clone)]
pub struct Service {
    pub(crate) name: String,
    pub(crate) image: Option<ImageRef>,
    pub(crate) program: Option<PathBuf>,
    pub(crate) in_process: Option<InProcessFn>,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) ready: Ready,
    pub(crate) startup_timeout: Duration,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("program", &self.program)
            .field("in_process", &self.in_process.is_some())
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("ready", &self.ready)
            .finish()
    }
}

impl Service {
    /// A service named `name` (unique in its environment; containers are named after it).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: None,
            program: None,
            in_process: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            ready: Ready::Tcp,
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs as a container of `image` (host network).
    #[must_use]
    pub fn image(mut self, image: ImageRef) -> Self {
        self.image = Some(image);
        self
    }

    /// Runs as a child process of `program` (e.g. `env!("CARGO_BIN_EXE_my-service")`),
    /// killed when the environment ends.
    #[must_use]
    pub fn process(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Runs in-process: `start` brings the service up on the given broker.
    #[must_use]
    pub fn in_process<F, Fut, E>(mut self, start: F) -> Self
    where
        F: Fn(AppStart) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<AppHandle, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let start = Arc::new(start);
        self.in_process = Some(Arc::new(move |s| {
            let started = start(s);
            Box::pin(async move { started.await.map_err(Into::into) })
        }));
        self
    }

    /// Arguments of its container or process (placeholders replaced).
    #[must_use]
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// A setting: an environment variable of its container or process, a pair of
    /// [`AppStart::env`] in-process.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// When it is ready (default: its port accepts connections).
    #[must_use]
    pub fn ready(mut self, ready: Ready) -> Self {
        self.ready = ready;
        self
    }

    /// How long it may take to be ready (default 60 s).
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

/// What placeholders stand for when a service starts.
#[derive(Debug, Clone)]
pub(crate) struct Placeholders {
    pub(crate) kafka: KafkaConfig,
    pub(crate) prefix: String,
    pub(crate) partitions: i32,
    pub(crate) ports: BTreeMap<String, u16>,
}

impl Placeholders {
    /// `key=value,key=value`.
    pub(crate) fn kafka_properties(&self) -> String {
        self.kafka
            .properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn fill(&self, text: &str, port: u16) -> String {
        let mut out = text
            .replace("{brokers}", &self.kafka.brokers)
            .replace("{port}", &port.to_string())
            .replace("{prefix}", &self.prefix)
            .replace("{partitions}", &self.partitions.to_string())
            .replace("{kafka}", &self.kafka_properties());
        for (name, port) in &self.ports {
            out = out.replace(&format!("{{port:{name}}}"), &port.to_string());
        }
        out
    }

    /// The environment variables of a container or process: the standard ones, then the
    /// service's settings (placeholders filled).
    pub(crate) fn env(
        &self,
        settings: &BTreeMap<String, String>,
        port: u16,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("LIVECHECK_BROKERS".to_owned(), self.kafka.brokers.clone()),
            ("LIVECHECK_TOPIC_PREFIX".to_owned(), self.prefix.clone()),
            (
                "LIVECHECK_PARTITIONS".to_owned(),
                self.partitions.to_string(),
            ),
        ]);
        if !self.kafka.properties.is_empty() {
            env.insert("LIVECHECK_KAFKA".to_owned(), self.kafka_properties());
        }
        for (k, v) in settings {
            env.insert(k.clone(), self.fill(v, port));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_hand_the_broker_partitions_properties_and_sidecar_ports_to_a_service() {
        let mut kafka = KafkaConfig::new("127.0.0.1:9092");
        kafka
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        let p = Placeholders {
            kafka,
            prefix: "t1-".into(),
            partitions: 3,
            ports: BTreeMap::from([("db".to_owned(), 5432)]),
        };
        assert_eq!(
            p.fill(
                "--brokers {brokers} --port {port} --topics {prefix}x/{partitions} --db 127.0.0.1:{port:db} --kafka {kafka}",
                8080
            ),
            "--brokers 127.0.0.1:9092 --port 8080 --topics t1-x/3 --db 127.0.0.1:5432 --kafka session.timeout.ms=6000"
        );
        let env = p.env(
            &BTreeMap::from([("DB".to_owned(), "{port:db}".to_owned())]),
            1,
        );
        assert_eq!(env["LIVECHECK_PARTITIONS"], "3");
        assert_eq!(env["LIVECHECK_KAFKA"], "session.timeout.ms=6000");
        assert_eq!(env["DB"], "5432");
    }
}
