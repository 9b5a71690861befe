//! Error types of the core crate.

/// A configuration or connection problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The Kafka client could not be created or failed.
    #[error("kafka client error while {action}")]
    Kafka {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The embedded broker could not start.
    #[error("embedded broker failed: {0}")]
    Embedded(String),
    /// A thread of the client's could not start, or ended without its result.
    #[error("client thread failed: {0}")]
    Thread(String),
}

impl Error {
    pub(crate) fn kafka(
        action: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let action = action.into();
        move |source| Error::Kafka { action, source }
    }
}
