//! A running environment, and bringing one up.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use livecheck_core::{KafkaConfig, Topics};

use super::config::{EnvironmentConfig, EnvironmentError, EnvironmentKind};
use super::process::start_process;
use super::service::{AppStart, Placeholders, Service};

pub(crate) type Guard = Box<dyn Any + Send + Sync>;

/// A running environment. Dropping it stops what it started (inside the runtime), the
/// services in reverse order of their start, the broker last.
pub struct Environment {
    /// Which kind.
    pub kind: EnvironmentKind,
    /// Kafka settings (with the environment's client properties).
    pub kafka: KafkaConfig,
    /// LiveCheck topics.
    pub topics: Topics,
    /// The first app service's base URL: where each case's stimulus goes.
    pub app_url: String,
    /// Time to ready, per component (`broker`, each service, `total`).
    pub timings: Vec<(String, Duration)>,
    ports: BTreeMap<String, u16>,
    /// Dropped last to first.
    guards: Vec<Guard>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("kind", &self.kind)
            .field("brokers", &self.kafka.brokers)
            .field("app_url", &self.app_url)
            .field("ports", &self.ports)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl Environment {
    pub(crate) fn bare(kind: EnvironmentKind, kafka: KafkaConfig, topics: Topics) -> Self {
        Self {
            kind,
            kafka,
            topics,
            app_url: String::new(),
            timings: Vec::new(),
            ports: BTreeMap::new(),
            guards: Vec::new(),
        }
    }

    /// The port of a service or sidecar on 127.0.0.1.
    pub fn port(&self, service: &str) -> Option<u16> {
        self.ports.get(service).copied()
    }

    /// `http://127.0.0.1:{port}` of a service.
    pub fn url(&self, service: &str) -> Option<String> {
        self.port(service).map(|p| format!("http://127.0.0.1:{p}"))
    }

    pub(crate) fn keep(&mut self, guard: Guard) {
        self.guards.push(guard);
    }

    pub(crate) fn timed(&mut self, what: impl Into<String>, took: Duration) {
        self.timings.push((what.into(), took));
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

    pub(crate) fn placeholders(&self, prefix: &str, partitions: i32) -> Placeholders {
        Placeholders {
            kafka: self.kafka.clone(),
            prefix: prefix.to_owned(),
            partitions,
            ports: self.ports.clone(),
        }
    }

    /// Starts `service` as the environment's kind prefers (see [`Service`]) on `port`,
    /// records its port and timing, and keeps it running.
    pub(crate) async fn launch(
        &mut self,
        config: &EnvironmentConfig,
        service: &Service,
        is_app: bool,
        prefix: &str,
        port: u16,
        shared_run: Option<&str>,
    ) -> Result<(), EnvironmentError> {
        let t = Instant::now();
        let placeholders = self.placeholders(prefix, config.partitions);
        let mut settings = service.env.clone();
        if is_app {
            settings.extend(config.app_env.clone());
        }
        let args: Vec<String> = service
            .args
            .iter()
            .map(|a| placeholders.fill(a, port))
            .collect();
        let containers = self.kind == EnvironmentKind::Container;
        let how = match (
            containers,
            &service.image,
            &service.program,
            &service.in_process,
        ) {
            (true, Some(image), _, _) => How::Image(image),
            (true, None, Some(program), _) | (false, _, Some(program), None) => {
                How::Program(program)
            }
            (_, _, _, Some(start)) => How::InProcess(start),
            _ => {
                return Err(EnvironmentError::Config(format!(
                    "service {} cannot run in the {} environment: give it {}",
                    service.name,
                    self.kind,
                    if containers {
                        "an image, a program or an in-process start"
                    } else {
                        "an in-process start or a program (an image runs only in the container environment)"
                    }
                )))
            }
        };
        let url = match how {
            How::Image(image) => {
                #[cfg(feature = "containers")]
                {
                    let container =
                        super::container::start_container(super::container::ContainerSpec {
                            name: &service.name,
                            image,
                            args,
                            env: placeholders.env(&settings, port),
                            ready: &service.ready,
                            port,
                            timeout: service.startup_timeout,
                            shared: shared_run.map(|run| (container_name(run, &service.name), run)),
                        })
                        .await?;
                    self.keep(Box::new(container));
                    format!("http://127.0.0.1:{port}")
                }
                #[cfg(not(feature = "containers"))]
                {
                    let _ = (image, shared_run);
                    return Err(no_containers());
                }
            }
            How::InProcess(start) => {
                let handle = start(AppStart {
                    name: service.name.clone(),
                    kafka: self.kafka.clone(),
                    topic_prefix: prefix.to_owned(),
                    partitions: config.partitions,
                    env: settings,
                    ports: self.ports.clone(),
                })
                .await
                .map_err(|source| EnvironmentError::App {
                    name: service.name.clone(),
                    source,
                })?;
                let (url, guard) = handle.into_parts();
                self.keep(guard);
                url
            }
            How::Program(program) => {
                let child = start_process(
                    &service.name,
                    program,
                    &args,
                    &placeholders.env(&settings, port),
                    &service.ready,
                    port,
                    service.startup_timeout,
                )
                .await?;
                self.keep(Box::new(child));
                format!("http://127.0.0.1:{port}")
            }
        };
        let port = url
            .rsplit_once(':')
            .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
            .unwrap_or(port);
        self.ports.insert(service.name.clone(), port);
        if is_app && self.app_url.is_empty() {
            self.app_url = url;
        }
        self.timed(service.name.clone(), t.elapsed());
        Ok(())
    }
}

/// How a service runs in this environment.
enum How<'a> {
    Image(&'a super::image::ImageRef),
    InProcess(&'a super::service::InProcessFn),
    Program(&'a std::path::Path),
}

/// A container name that is the same in every process of a run.
#[cfg(feature = "containers")]
pub(crate) fn container_name(run: &str, what: &str) -> String {
    format!("livecheck-{}-{}", sanitize(run), sanitize(what))
}

#[cfg(not(feature = "containers"))]
pub(crate) fn no_containers() -> EnvironmentError {
    EnvironmentError::Config(
        "this build of livecheck-harness has no container support: enable its `containers` feature (a dev-dependency feature: the live binary does not need it)".into(),
    )
}

pub(crate) fn sanitize(s: &str) -> String {
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

pub(crate) fn free_port() -> Result<u16, EnvironmentError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EnvironmentError::Config(format!("cannot find a free port: {e}")))
}

impl EnvironmentConfig {
    /// Brings the environment up: the broker, the topics, the sidecars, then the services.
    pub async fn start(&self) -> Result<Environment, EnvironmentError> {
        let started = Instant::now();
        // Shared through the run id only when the services run with their plain settings.
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
                        "the external environment needs bootstrap servers (LIVECHECK_BROKERS)"
                            .into(),
                    )
                })?;
                let app_url = self.app_url.clone().ok_or_else(|| {
                    EnvironmentError::Config(
                        "the external environment needs the app's URL (LIVECHECK_APP_URL)".into(),
                    )
                })?;
                let mut env = Environment::bare(self.kind, self.kafka(brokers), topics);
                env.app_url = app_url;
                env
            }
            EnvironmentKind::Embedded => {
                let mut env = super::embedded::start_broker(self, topics, &prefix)?;
                self.start_services(&mut env, &prefix, None, |_| free_port())
                    .await?;
                env
            }
            EnvironmentKind::Container => {
                #[cfg(feature = "containers")]
                {
                    super::container::start(self, topics, &prefix, shared_run.as_deref()).await?
                }
                #[cfg(not(feature = "containers"))]
                {
                    let _ = (topics, shared_run);
                    return Err(no_containers());
                }
            }
        };
        env.timed("total", started.elapsed());
        Ok(env)
    }

    pub(crate) fn kafka(&self, brokers: impl Into<String>) -> KafkaConfig {
        let mut kafka = KafkaConfig::new(brokers);
        kafka.properties.extend(self.kafka_properties.clone());
        kafka
    }

    /// The sidecars, then the services, each on the port `port_of` gives (by index over
    /// both lists).
    pub(crate) async fn start_services(
        &self,
        env: &mut Environment,
        prefix: &str,
        shared_run: Option<&str>,
        mut port_of: impl FnMut(usize) -> Result<u16, EnvironmentError>,
    ) -> Result<(), EnvironmentError> {
        let mut services: Vec<(Service, bool)> = self
            .sidecars
            .iter()
            .map(|s| (s.clone(), false))
            .chain(self.services.iter().map(|s| (s.clone(), true)))
            .collect();
        if let Some(image) = &self.app_image_override {
            if let Some((service, _)) = services
                .iter_mut()
                .find(|(s, is_app)| *is_app && s.image.is_some())
            {
                service.image = Some(image.clone());
            }
        }
        if !services.iter().any(|(_, is_app)| *is_app) {
            return Err(EnvironmentError::Config(
                "the environment has no app service (EnvironmentConfig::service)".into(),
            ));
        }
        for (i, (service, is_app)) in services.iter().enumerate() {
            // Child processes and in-process services always get a free port: they are
            // never shared between processes.
            let shared = shared_run
                .filter(|_| self.kind == EnvironmentKind::Container && service.image.is_some());
            let port = if shared.is_some() {
                port_of(i)?
            } else {
                free_port()?
            };
            env.launch(self, service, *is_app, prefix, port, shared)
                .await?;
        }
        Ok(())
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        // The services before what they use: last started, first stopped.
        while let Some(guard) = self.guards.pop() {
            drop(guard);
        }
    }
}
