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
    // Whatever its readiness line says (a reused container has printed it long ago, and a
    // broker prints it before it binds): it takes connections.
    Ready::Tcp
        .poll(broker_ports[0], Duration::from_secs(60))
        .await
        .map_err(|message| EnvironmentError::Container {
            name: "broker".to_owned(),
            image: image.to_string(),
            message: format!(
                "its port {} takes no connection: {message}",
                broker_ports[0]
            ),
        })?;
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
/// `count` consecutive ports from one derived from the run id (FNV-1a), below the range
/// the kernel hands out as the local ports of outgoing connections. Inside that range a
/// client socket of any process can hold the port when the broker binds it: seen in CI,
/// the broker's container exited ("Address already in use") and every test of the crate
/// timed out creating its topics.
fn ports_for_run(run: &str, count: usize) -> Vec<u16> {
    run_ports(run, count, ephemeral_start())
}

/// [`ports_for_run`] with the ephemeral range starting at `ephemeral`: blocks of 16 from
/// port 10,000 up to it (from 30,000 up, as before, if it starts too low for a block).
fn run_ports(run: &str, count: usize, ephemeral: u16) -> Vec<u16> {
    const FIRST: u16 = 10_000;
    const BLOCK: u16 = 16;
    let hash = run.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let (first, blocks) = match ephemeral.saturating_sub(FIRST) / BLOCK {
        0 => (30_000, 2_000),
        n => (FIRST, n),
    };
    let block = u16::try_from(hash % u64::from(blocks)).unwrap_or(0);
    let base = first + block * BLOCK;
    (0..count.min(usize::from(BLOCK)))
        .map(|i| base + u16::try_from(i).unwrap_or(0))
        .collect()
}

/// Where the kernel's range of local ports for outgoing connections starts
/// (`/proc/sys/net/ipv4/ip_local_port_range`; Linux's default, 32768, elsewhere).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_ports_lie_below_the_ephemeral_range_and_agree_across_processes() {
        for run in ["ci-1795707035-7343", "ci-1", "local"] {
            let ports = run_ports(run, 3, 32_768);
            assert_eq!(
                ports,
                run_ports(run, 3, 32_768),
                "the same in every process"
            );
            assert_eq!(ports.len(), 3);
            assert!(ports.windows(2).all(|w| w[1] == w[0] + 1));
            assert!(ports[0] >= 10_000 && ports[2] < 32_768, "{ports:?}");
        }
        // An ephemeral range that leaves no room below: the ports of before.
        let low = run_ports("ci-1", 2, 10_010);
        assert!(low[0] >= 30_000, "{low:?}");
    }
}
