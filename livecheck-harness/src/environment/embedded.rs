//! The embedded environment: librdkafka's mock cluster in-process.

use std::time::Instant;

use livecheck_core::{EmbeddedBroker, Topics};

use super::config::{EnvironmentConfig, EnvironmentError, EnvironmentKind};
use super::running::Environment;

/// Starts the mock cluster with the LiveCheck topics, the tables' changelogs and the app's.
pub(crate) fn start_broker(
    config: &EnvironmentConfig,
    topics: Topics,
    prefix: &str,
) -> Result<Environment, EnvironmentError> {
    let t = Instant::now();
    let extra = config.app_topic_names(prefix);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let broker = EmbeddedBroker::with_topics(&topics, &extra, config.partitions)
        .and_then(|broker| {
            broker.create_tables(&topics, &config.tables, config.partitions)?;
            Ok(broker)
        })
        .map_err(|e| EnvironmentError::Config(format!("the embedded broker did not start: {e}")))?;
    let mut env = Environment::bare(
        EnvironmentKind::Embedded,
        config.kafka(broker.bootstrap_servers()),
        topics,
    );
    // First kept, last dropped: the services' clients close before the broker goes.
    env.keep(Box::new(broker));
    env.timed("broker", t.elapsed());
    Ok(env)
}
