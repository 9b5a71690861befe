//! Hops: where a test's records went between services, as LiveCheck's Kafka helpers saw
//! them (produced to a topic-partition-offset, consumed there by a group). The runner keeps
//! them per test and a `TIMEOUT` says from them why a step did not come.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to a record at a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    /// A service produced the record inside the test's scope.
    Produced,
    /// A consumer group read the record and restored the test's context from it.
    Consumed,
}

/// One hop of one of a test's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Produced or consumed.
    pub kind: HopKind,
    /// The service that produced or consumed it (the LiveCheck client's service name;
    /// empty when it has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// The consumer group (consumed hops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Topic of the record.
    pub topic: String,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// When the service produced (delivery acknowledged) or consumed it.
    pub at: DateTime<Utc>,
}

impl Hop {
    /// `orders[2]@1234`.
    pub fn place(&self) -> String {
        format!("{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}
