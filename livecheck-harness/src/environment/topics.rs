//! Topic creation on a real broker (the container environment).

use std::time::Duration;

use livecheck_core::connectivity::ConnectivityContext;
use livecheck_core::{Connectivity, KafkaConfig, TableSpec, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};

use super::config::EnvironmentError;

/// Creates the LiveCheck topics (existing ones are fine): tests, signals, reports and `extra`
/// with `partitions` partitions, the changelogs of `tables` with as many, compacted, and
/// control and heartbeats with one, compacted.
pub(crate) async fn create_topics(
    kafka: &KafkaConfig,
    topics: &Topics,
    extra: &[String],
    tables: &[TableSpec],
    partitions: i32,
) -> Result<(), EnvironmentError> {
    let brokers = kafka.brokers.as_str();
    let err = |message: String| EnvironmentError::Topics {
        brokers: brokers.to_owned(),
        message,
    };
    let admin: AdminClient<ConnectivityContext> = kafka
        .client_config(&[])
        .create_with_context(Connectivity::new(brokers).context())
        .map_err(|e| err(e.to_string()))?;
    // A table's changelog: co-partitioned with the tests, compacted (latest entry per key).
    let changelogs: Vec<String> = tables.iter().map(|t| topics.table(t.name)).collect();
    // The control and heartbeats topics: one partition, compacted (latest record per key).
    let new: Vec<NewTopic<'_>> = topics
        .all()
        .into_iter()
        .chain(extra.iter().map(String::as_str))
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .chain(changelogs.iter().map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")
        }))
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
