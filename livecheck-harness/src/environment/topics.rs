//! Topic creation on a real broker (the container environment, and any broker with the admin API).

use std::time::Duration;

use livecheck_core::connectivity::ConnectivityContext;
use livecheck_core::{Connectivity, KafkaConfig, TableSpec, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};

use super::config::EnvironmentError;

/// Creates the LiveCheck topics on a broker (existing ones are fine): tests, signals,
/// reports and `extra` with `partitions` partitions, the changelogs of `tables` with as
/// many, compacted, and control and heartbeats with one, compacted. A broker just started
/// may not answer its first admin request in time: tried up to 3 times, 2 s apart.
///
/// The container environment calls it on its broker; it serves any broker that implements
/// the admin API (not the embedded broker: see [`livecheck_core::EmbeddedBroker::create_topics`]).
pub async fn create_topics(
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
    // A broker just started may not answer its first admin request in time (seen once in
    // CI: a fresh container timed out both tests of a crate): a bounded retry. Topics that
    // exist by then are fine, so trying again is safe.
    let mut attempt = 1;
    loop {
        let outcome = match admin.create_topics(&new, &options).await {
            Ok(results) => results
                .into_iter()
                .find_map(|result| match result {
                    Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) | Ok(_) => None,
                    Err((topic, code)) => Some(format!("topic {topic}: {code}")),
                })
                .map_or(Ok(()), Err),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(message) if attempt < CREATE_ATTEMPTS => {
                tracing::warn!(brokers, attempt, error = %message, "creating the topics failed; trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                attempt += 1;
            }
            Err(message) => {
                return Err(err(format!(
                    "{message} (after {CREATE_ATTEMPTS} attempts; is the broker up and reachable at this address?)"
                )))
            }
        }
    }
}

/// How many times topic creation is tried before the environment gives up.
const CREATE_ATTEMPTS: u32 = 3;
