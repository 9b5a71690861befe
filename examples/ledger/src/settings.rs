//! What every ledger service needs: the broker and the topic prefix, as the harness hands
//! them to a service (`LIVECHECK_BROKERS`, `LIVECHECK_TOPIC_PREFIX`, `LIVECHECK_KAFKA`).

use livecheck_core::{KafkaConfig, LiveCheck, Topics};

/// The broker and topics of one ledger deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Prefix of every topic name.
    pub prefix: String,
}

impl Settings {
    /// `brokers`, the topic `prefix` and Kafka properties as `key=value,key=value`.
    pub fn new(brokers: &str, prefix: &str, properties: &str) -> anyhow::Result<Self> {
        let mut kafka = KafkaConfig::new(brokers);
        for pair in properties.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("Kafka property {pair:?} is not key=value"))?;
            kafka.properties.insert(k.trim().into(), v.trim().into());
        }
        Ok(Self {
            kafka,
            prefix: prefix.to_owned(),
        })
    }

    /// The topic the gateway writes and the booker reads.
    pub fn transfers_topic(&self) -> String {
        format!("{}transfers", self.prefix)
    }

    /// A LiveCheck client for service `name`.
    pub fn client(&self, name: &str) -> anyhow::Result<LiveCheck> {
        Ok(
            LiveCheck::new(self.kafka.clone(), Topics::with_prefix(&self.prefix))?
                .with_service(name),
        )
    }
}
