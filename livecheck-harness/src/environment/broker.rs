//! Brokers for the container environment: a small trait, the local tansu image and an
//! Apache Kafka image.

use std::fmt;

use super::image::ImageRef;
use super::ready::Ready;

/// A Kafka-compatible broker run as a container on the host network.
///
/// Two methods are required: the image and its command line; environment variables,
/// readiness and the number of ports default. The broker must listen for clients on
/// `127.0.0.1:{ports[0]}` and advertise that address; the other ports (see
/// [`Broker::ports`]) are its own to use (a KRaft controller, say).
pub trait Broker: fmt::Debug + Send + Sync {
    /// The image.
    fn image(&self) -> ImageRef;

    /// The command line (empty: the image's own).
    fn args(&self, ports: &[u16]) -> Vec<String>;

    /// Environment variables of the container.
    fn env(&self, ports: &[u16]) -> Vec<(String, String)> {
        let _ = ports;
        Vec::new()
    }

    /// When it is ready (default: its client port accepts connections).
    fn ready(&self) -> Ready {
        Ready::Tcp
    }

    /// How many host ports it needs (default 1: the client port).
    fn ports(&self) -> usize {
        1
    }
}

/// [tansu](https://crates.io/crates/tansu), a Kafka-compatible broker, with in-memory
/// storage. No public image is pinned here: build one (this repository's
/// `ci/build-images.sh` makes `livecheck/tansu:0.6.0` from `cargo install tansu`).
#[derive(Debug, Clone)]
pub struct Tansu {
    image: ImageRef,
}

impl Tansu {
    /// tansu from `image`.
    pub fn new(image: ImageRef) -> Self {
        Self { image }
    }
}

impl Default for Tansu {
    /// `livecheck/tansu:0.6.0`.
    fn default() -> Self {
        Self::new(ImageRef::new("livecheck/tansu", "0.6.0"))
    }
}

impl Broker for Tansu {
    fn image(&self) -> ImageRef {
        self.image.clone()
    }

    fn args(&self, ports: &[u16]) -> Vec<String> {
        let port = ports[0];
        [
            "broker".to_owned(),
            "--listener-url".to_owned(),
            format!("tcp://0.0.0.0:{port}"),
            "--advertised-listener-url".to_owned(),
            format!("tcp://127.0.0.1:{port}"),
            "--storage-engine".to_owned(),
            "memory://tansu/".to_owned(),
        ]
        .into()
    }

    fn ready(&self) -> Ready {
        Ready::line("ready in")
    }
}

/// The official Apache Kafka image (`apache/kafka`), one node in KRaft mode (broker and
/// controller), configured through its `KAFKA_*` environment variables: clients on
/// `127.0.0.1:{ports[0]}`, the controller on `127.0.0.1:{ports[1]}`, replication factors of
/// one, no initial rebalance delay.
#[derive(Debug, Clone)]
pub struct ApacheKafka {
    image: ImageRef,
}

impl ApacheKafka {
    /// Apache Kafka from `image` (`apache/kafka` or `apache/kafka-native`, 3.7 or later).
    pub fn new(image: ImageRef) -> Self {
        Self { image }
    }
}

impl Default for ApacheKafka {
    /// `apache/kafka:3.9.1`.
    fn default() -> Self {
        Self::new(ImageRef::new("apache/kafka", "3.9.1"))
    }
}

impl Broker for ApacheKafka {
    fn image(&self) -> ImageRef {
        self.image.clone()
    }

    fn args(&self, _ports: &[u16]) -> Vec<String> {
        Vec::new()
    }

    fn env(&self, ports: &[u16]) -> Vec<(String, String)> {
        let (port, controller) = (ports[0], ports[1]);
        [
            ("KAFKA_NODE_ID", "1".to_owned()),
            ("KAFKA_PROCESS_ROLES", "broker,controller".to_owned()),
            (
                "KAFKA_LISTENERS",
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
            ),
            (
                "KAFKA_ADVERTISED_LISTENERS",
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".to_owned()),
            (
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_owned(),
            ),
            ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT".to_owned()),
            (
                "KAFKA_CONTROLLER_QUORUM_VOTERS",
                format!("1@127.0.0.1:{controller}"),
            ),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".to_owned()),
            (
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "1".to_owned(),
            ),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".to_owned()),
            ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn ready(&self) -> Ready {
        Ready::line("Kafka Server started")
    }

    fn ports(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn apache_kafka_is_one_kraft_node_advertising_the_loopback_client_port() {
        let kafka = ApacheKafka::default();
        assert_eq!(kafka.image().to_string(), "apache/kafka:3.9.1");
        assert_eq!(kafka.ports(), 2);
        assert!(kafka.args(&[19092, 19093]).is_empty());
        let env: BTreeMap<String, String> = kafka.env(&[19092, 19093]).into_iter().collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("KAFKA_PROCESS_ROLES"), Some("broker,controller"));
        assert_eq!(
            get("KAFKA_ADVERTISED_LISTENERS"),
            Some("PLAINTEXT://127.0.0.1:19092")
        );
        assert_eq!(
            get("KAFKA_LISTENERS"),
            Some("PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093")
        );
        assert_eq!(
            get("KAFKA_CONTROLLER_QUORUM_VOTERS"),
            Some("1@127.0.0.1:19093")
        );
        // Every listener named in the map, the controller's name among them.
        let map = get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP").unwrap();
        for name in ["CONTROLLER", "PLAINTEXT"] {
            assert!(map.contains(&format!("{name}:PLAINTEXT")), "{map}");
        }
        assert_eq!(get("KAFKA_CONTROLLER_LISTENER_NAMES"), Some("CONTROLLER"));
        // One node: internal topics cannot ask for three replicas.
        assert_eq!(get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"), Some("1"));
        assert_eq!(kafka.ready(), Ready::line("Kafka Server started"));
    }

    #[test]
    fn tansu_listens_everywhere_and_advertises_loopback_in_memory() {
        let args = Tansu::default().args(&[30001]).join(" ");
        assert_eq!(
            args,
            "broker --listener-url tcp://0.0.0.0:30001 --advertised-listener-url tcp://127.0.0.1:30001 --storage-engine memory://tansu/"
        );
        assert_eq!(Tansu::default().ports(), 1);
    }
}
