//! Containers (feature `containers`): testcontainers on the host network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use livecheck_core::Topics;
use tracing::info;

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, ReuseDirective};

use super::config::{EnvironmentConfig, EnvironmentError, EnvironmentKind};
use super::image::ImageRef;
use super::ready::Ready;
use super::running::{container_name, free_port, Environment};
use super::topics::create_topics;

/// A container to start.
#[derive(Debug)]
pub(crate) struct ContainerSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) image: &'a ImageRef,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) ready: &'a Ready,
    pub(crate) port: u16,
    pub(crate) timeout: Duration,
    /// `(container name, run id)`: named, labelled and reused by every process of a run.
    pub(crate) shared: Option<(String, &'a str)>,
}

/// Fails with a message that says how to get an engine when none answers.
pub(crate) async fn check_docker() -> Result<(), EnvironmentError> {
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

/// Starts the container and waits until it is ready.
pub(crate) async fn start_container(
    spec: ContainerSpec<'_>,
) -> Result<ContainerAsync<GenericImage>, EnvironmentError> {
    let request = || {
        let mut image = GenericImage::new(spec.image.name(), spec.image.tag());
        if let Ready::Line(line) = spec.ready {
            image = image.with_wait_for(WaitFor::message_on_either_std(line.clone()));
        }
        let mut request = image
            .with_network("host")
            .with_cmd(spec.args.clone())
            .with_startup_timeout(spec.timeout);
        for (k, v) in &spec.env {
            request = request.with_env_var(k.clone(), v.clone());
        }
        match &spec.shared {
            Some((name, run)) => request
                .with_container_name(name.clone())
                .with_label("livecheck.run-id", *run)
                .with_reuse(ReuseDirective::Always),
            None => request,
        }
    };
    // Processes of one run race to create the shared containers: the loser finds the
    // winner's container on its next try.
    let mut last = String::new();
    for attempt in 0..5 {
        match request().start().await {
            Ok(container) => {
                spec.ready
                    .poll(spec.port, spec.timeout)
                    .await
                    .map_err(|message| EnvironmentError::Container {
                        name: spec.name.to_owned(),
                        image: spec.image.to_string(),
                        message,
                    })?;
                return Ok(container);
            }
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
        name: spec.name.to_owned(),
        image: spec.image.to_string(),
        message: last,
    })
}

/// The container environment: the broker's container, the topics, then the sidecars and
/// services (containers, or child processes when they have no image).
pub(crate) async fn start(
    config: &EnvironmentConfig,
    topics: Topics,
    prefix: &str,
    shared_run: Option<&str>,
) -> Result<Environment, EnvironmentError> {
    check_docker().await?;
    let broker = &config.broker;
    let ports_needed = broker.ports() + config.sidecars.len() + config.services.len();
    let ports: Vec<u16> = match shared_run {
        Some(run) => ports_for_run(run, ports_needed),
        None => (0..broker.ports())
            .map(|_| free_port())
            .collect::<Result<_, _>>()?,
    };
    let (broker_ports, service_ports) = ports.split_at(broker.ports());
    let t = Instant::now();
    let image = broker.image();
    let container = start_container(ContainerSpec {
        name: "broker",
        image: &image,
        args: broker.args(broker_ports),
        env: broker.env(broker_ports).into_iter().collect(),
        ready: &broker.ready(),
        port: broker_ports[0],
        timeout: Duration::from_secs(60),
        shared: shared_run.map(|run| (container_name(run, "broker"), run)),
    })
    .await?;
    let kafka = config.kafka(format!("127.0.0.1:{}", broker_ports[0]));
    create_topics(
        &kafka,
        &topics,
        &config.app_topic_names(prefix),
        &config.tables,
        config.partitions,
    )
    .await?;
    let mut env = Environment::bare(EnvironmentKind::Container, kafka, topics);
    env.keep(Box::new(container));
    env.timed("broker", t.elapsed());
    let service_ports = service_ports.to_vec();
    config
        .start_services(&mut env, prefix, shared_run, |i| {
            service_ports
                .get(i)
                .copied()
                .ok_or_else(|| EnvironmentError::Config("no port left for a service".into()))
        })
        .await?;
    info!(brokers = %env.kafka.brokers, app = %env.app_url, reused = shared_run.is_some(), "container environment ready");
    Ok(env)
}

/// Ports every process of a run agrees on (the shared containers use host networking):
/// `count` consecutive ports from one derived from the run id (FNV-1a).
fn ports_for_run(run: &str, count: usize) -> Vec<u16> {
    let hash = run.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let block = u16::try_from(hash % 2_000).unwrap_or(0);
    let base = 30_000 + block * 16;
    (0..count.min(16))
        .map(|i| base + u16::try_from(i).unwrap_or(0))
        .collect()
}
