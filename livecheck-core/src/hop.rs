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
    #[serde(
        serialize_with = "crate::json_time::serialize",
        deserialize_with = "crate::json_time::deserialize"
    )]
    pub at: DateTime<Utc>,
}

impl Hop {
    /// The hop's send id: derived from what happened (kind, who, where), so a record read
    /// again by the same group (redelivery) is one hop, while two groups reading one record,
    /// or a record produced again at another offset, are two.
    pub(crate) fn send_id(&self) -> u64 {
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        let kind = match self.kind {
            HopKind::Produced => "produced",
            HopKind::Consumed => "consumed",
        };
        for part in [
            kind,
            self.group.as_deref().unwrap_or(&self.service),
            &self.topic,
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update(self.partition.to_be_bytes());
        hash.update(self.offset.to_be_bytes());
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// `orders[2]@1234`.
    pub fn place(&self) -> String {
        format!("{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

/// The signal name a hop is sent under on the signals topic (its value is the [`Hop`]);
/// runs never wait for it and reports list hops apart from the steps.
pub const HOP_SIGNAL: &str = "livecheck.hop";

/// How far a consumer group has read a partition, as the LiveCheck helpers of its services
/// report it ([`PositionsRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The last offset handed to the helper (read, with or without a context).
    pub offset: i64,
    /// Records of this topic the reporting instance of the group read without a test
    /// context, since it started (all partitions).
    #[serde(default)]
    pub without_context: u64,
}

/// What a service instance reports about its consumers, about once a second while they read:
/// one record to each partition of the signals topic, so every runner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionsRecord {
    /// Always [`PositionsRecord::KIND`]: tells it from a signal.
    pub kind: String,
    /// The service (the LiveCheck client's service name).
    #[serde(default)]
    pub service: String,
    /// The reporting client instance (random per process).
    pub instance: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The positions.
    pub positions: Vec<Position>,
}

impl PositionsRecord {
    /// `kind` of a positions record.
    pub const KIND: &'static str = "positions";
    /// How its JSON begins (the runner tells it from a signal without parsing twice).
    pub(crate) const PREFIX: &'static [u8] = br#"{"kind":"positions""#;
}

/// A consumer group's position on one partition, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPosition {
    /// The last offset read.
    pub offset: i64,
    /// The service that reported it.
    pub service: String,
    /// Since when it has been there: the report that first gave this offset (a stuck
    /// consumer keeps its old time however often it reports).
    pub at: DateTime<Utc>,
}

/// What every consumer group reported reading, by (group, topic, partition); and the
/// records read without a context, by (group, topic), summed over the reporting instances.
#[derive(Debug, Default)]
pub struct Positions {
    by_partition: std::collections::HashMap<(String, String, i32), GroupPosition>,
    without_context:
        std::collections::HashMap<(String, String), std::collections::HashMap<String, u64>>,
}

impl Positions {
    /// Takes in a report (positions only move forward, and keep the time they moved; counts
    /// are per reporting instance).
    pub fn apply(&mut self, record: &PositionsRecord) {
        for p in &record.positions {
            let key = (p.group.clone(), p.topic.clone(), p.partition);
            // Only forward, and the time is when the offset got there.
            let moved = self
                .by_partition
                .get(&key)
                .is_none_or(|held| p.offset > held.offset);
            if moved {
                self.by_partition.insert(
                    key,
                    GroupPosition {
                        offset: p.offset,
                        service: record.service.clone(),
                        at: record.at,
                    },
                );
            }
            let counts = self
                .without_context
                .entry((p.group.clone(), p.topic.clone()))
                .or_default();
            let held = counts.entry(record.instance.clone()).or_default();
            *held = (*held).max(p.without_context);
        }
    }

    /// The groups that reported reading `topic`, sorted.
    pub fn groups_of(&self, topic: &str) -> Vec<&str> {
        let mut groups: Vec<&str> = self
            .by_partition
            .keys()
            .filter(|(_, t, _)| t == topic)
            .map(|(g, _, _)| g.as_str())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Where `group` last reported being on `topic[partition]`.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&GroupPosition> {
        self.by_partition
            .get(&(group.to_owned(), topic.to_owned(), partition))
    }

    /// Records read without a test context: (group, topic, count), sorted.
    pub fn without_context(&self) -> Vec<(String, String, u64)> {
        let mut out: Vec<_> = self
            .without_context
            .iter()
            .map(|((g, t), by_instance)| (g.clone(), t.clone(), by_instance.values().sum()))
            .collect();
        out.sort();
        out
    }
}

/// At most this many findings in one diagnosis.
const MAX_FINDINGS: usize = 3;

/// Why the step `missing` did not come, from the test's hops and the groups' positions:
/// the context was lost between two services, a group has not read a record yet, or a
/// service received a record and went no further. `None` when the hops tell nothing.
///
/// Each group that reports reading a topic is expected to read each of the test's records
/// on it: a record is checked per (record, group), so a group that did read it (an audit
/// consumer) does not hide one that did not.
pub fn diagnose(hops: &[Hop], positions: &Positions, missing: &str) -> Option<String> {
    let read_by = |p: &Hop, group: &str| {
        hops.iter().any(|h| {
            h.kind == HopKind::Consumed
                && h.group.as_deref() == Some(group)
                && (&h.topic, h.partition, h.offset) == (&p.topic, p.partition, p.offset)
        })
    };
    let mut produced: Vec<&Hop> = hops
        .iter()
        .filter(|h| h.kind == HopKind::Produced)
        .collect();
    produced.sort_by_key(|h| std::cmp::Reverse(h.at));
    let mut findings = Vec::new();
    for p in &produced {
        for group in positions.groups_of(&p.topic) {
            if read_by(p, group) {
                continue;
            }
            let place = p.place();
            let from = who(p);
            findings.push(match positions.get(group, &p.topic, p.partition) {
                Some(at) if at.offset >= p.offset => format!(
                    "the test context was lost between {from} and group {group} at {place}: the group has read past the record and no hop of it came (its context dropped or rejected on the way, or the record not handled through LiveCheck's consume)"
                ),
                Some(at) => format!(
                    "group {group} is {} records behind on {}[{}] (at offset {} since {}); the record of this test ({place}) has not been read",
                    p.offset - at.offset,
                    p.topic,
                    p.partition,
                    at.offset,
                    shown(at.at),
                ),
                None => format!(
                    "group {group} has not reported reading {}[{}]; the record of this test ({place}) has not been read",
                    p.topic, p.partition
                ),
            });
        }
    }
    if findings.is_empty() {
        // Every record was read where it is read: the services that received one and went
        // no further (no record of their own after it; times compared within a service).
        let mut dead_ends: Vec<&Hop> = hops
            .iter()
            .filter(|c| c.kind == HopKind::Consumed)
            .filter(|c| {
                !hops
                    .iter()
                    .any(|h| h.kind == HopKind::Produced && h.service == c.service && h.at >= c.at)
            })
            .collect();
        dead_ends.sort_by_key(|h| std::cmp::Reverse(h.at));
        findings.extend(dead_ends.iter().map(|c| {
            format!(
                "{} received the record {} at {} with the test context and did not send `{missing}`",
                who(c),
                c.place(),
                shown(c.at),
            )
        }));
    }
    if findings.is_empty() {
        // A record nobody reads with LiveCheck's helpers.
        findings.extend(produced.iter().map(|p| {
            format!(
                "the record of this test left {} at {} and no consumer using LiveCheck's Kafka helpers reports reading {}",
                who(p),
                p.place(),
                p.topic
            )
        }));
    }
    let more = findings.len().saturating_sub(MAX_FINDINGS);
    findings.truncate(MAX_FINDINGS);
    if more > 0 {
        findings.push(format!("{more} more"));
    }
    (!findings.is_empty()).then(|| findings.join("; "))
}

/// A time in a message: RFC 3339, milliseconds, UTC.
fn shown(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `create-order (group example-create-order)`, `create-order`, `group G`, `a service`.
fn who(hop: &Hop) -> String {
    match (hop.service.is_empty(), &hop.group) {
        (false, Some(group)) => format!("{} (group {group})", hop.service),
        (false, None) => hop.service.clone(),
        (true, Some(group)) => format!("group {group}"),
        (true, None) => "a service".to_owned(),
    }
}

/// Sends `hop` for the current test (no-op outside a test).
pub(crate) fn record(hop: Hop) {
    let _ = crate::context::with_current(|current| {
        let Some((current, payload)) =
            crate::signal::encode_event(current, HOP_SIGNAL, None, &hop, Some(hop.send_id()))
        else {
            return;
        };
        let client = &current.client;
        let counters = client.counters();
        match client.publish(
            &client.topics().signals,
            current.context.partition_key(),
            &payload,
            None,
        ) {
            Ok(()) => crate::counters::bump(&counters.here().hops_sent),
            Err(err) => {
                crate::counters::bump(&counters.here().hop_errors);
                tracing::warn!(test_id = %current.context.id, place = %hop.place(), error = %err, "hop could not be enqueued; dropped");
            }
        }
    });
}

/// Records, for the current test, that `service` (the current client's, if `None`) had a
/// record delivered to `topic[partition]@offset`.
pub(crate) fn record_produced(service: Option<&str>, topic: &str, partition: i32, offset: i64) {
    let Some(service) = crate::context::with_current(|c| {
        service
            .unwrap_or_else(|| c.client.service_name())
            .to_owned()
    }) else {
        return;
    };
    record(Hop {
        kind: HopKind::Produced,
        service,
        group: None,
        topic: topic.to_owned(),
        partition,
        offset,
        at: Utc::now(),
    });
}

/// How often a client reports its consumers' positions while they read (and every
/// 10 reports, everything it knows, for runners that started since).
pub const POSITIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Reports between two full ones.
const POSITIONS_FULL_EVERY: u32 = 10;

/// What one topic's consumer (in one group) of this process has read.
#[derive(Debug, Default)]
struct TopicReading {
    /// The last offset read, by partition.
    partitions: std::collections::HashMap<i32, i64>,
    without_context: u64,
    changed: bool,
}

/// What this process's consumers read through the helpers, by group and topic; reported
/// by a background task as [`PositionsRecord`]s.
#[derive(Debug)]
pub(crate) struct Reading {
    instance: String,
    by_group: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::HashMap<String, TopicReading>>,
    >,
    reporter: std::sync::OnceLock<()>,
}

impl Default for Reading {
    fn default() -> Self {
        Self {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            by_group: std::sync::Mutex::default(),
            reporter: std::sync::OnceLock::new(),
        }
    }
}

impl Reading {
    /// Notes that `group` read `topic[partition]@offset`, with or without a test context.
    /// Allocates only the first time a group or topic is seen.
    pub(crate) fn note(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        with_context: bool,
    ) {
        let mut by_group = self.by_group.lock().unwrap_or_else(|p| p.into_inner());
        let topics = match by_group.get_mut(group) {
            Some(topics) => topics,
            None => by_group.entry(group.to_owned()).or_default(),
        };
        let reading = match topics.get_mut(topic) {
            Some(reading) => reading,
            None => topics.entry(topic.to_owned()).or_default(),
        };
        let last = reading.partitions.entry(partition).or_insert(offset);
        *last = (*last).max(offset);
        if !with_context {
            reading.without_context += 1;
        }
        reading.changed = true;
    }

    /// Whether the reporter task runs already.
    pub(crate) fn reporter_started(&self) -> bool {
        self.reporter.get().is_some()
    }

    /// Whether the reporter task still has to be started (true once).
    pub(crate) fn start_reporter(&self) -> bool {
        self.reporter.set(()).is_ok()
    }

    /// The positions to report now: of the topics read since the last report, or (`full`)
    /// of every topic. `None` when there is nothing to report.
    pub(crate) fn report(&self, service: &str, full: bool) -> Option<PositionsRecord> {
        let mut by_group = self.by_group.lock().unwrap_or_else(|p| p.into_inner());
        let mut positions = Vec::new();
        for (group, topics) in by_group.iter_mut() {
            for (topic, reading) in topics.iter_mut() {
                if !(full || reading.changed) {
                    continue;
                }
                reading.changed = false;
                for (partition, offset) in &reading.partitions {
                    positions.push(Position {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        without_context: reading.without_context,
                    });
                }
            }
        }
        (!positions.is_empty()).then(|| PositionsRecord {
            kind: PositionsRecord::KIND.to_owned(),
            service: service.to_owned(),
            instance: self.instance.clone(),
            at: Utc::now(),
            positions,
        })
    }

    /// Records read without a context so far: (group, topic, count).
    pub(crate) fn without_context(&self) -> Vec<(String, String, u64)> {
        let by_group = self.by_group.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = by_group
            .iter()
            .flat_map(|(g, topics)| {
                topics
                    .iter()
                    .map(move |(t, r)| (g.clone(), t.clone(), r.without_context))
            })
            .collect();
        out.sort();
        out
    }
}

/// The reporter: every [`POSITIONS_EVERY`], the positions read since the last report, to
/// every partition of the signals topic; ends when the client is dropped.
pub(crate) async fn report_positions(
    client: std::sync::Weak<crate::client::Inner>,
    service: String,
) {
    let mut tick = tokio::time::interval(POSITIONS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut partitions: Option<(i32, tokio::time::Instant)> = None;
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let Some(inner) = client.upgrade() else {
            return;
        };
        n = n.wrapping_add(1);
        // The signals topic's partition count, looked up again every minute.
        if partitions.is_none_or(|(_, at)| at.elapsed() > std::time::Duration::from_secs(60)) {
            let lookup = inner.clone();
            match tokio::task::spawn_blocking(move || lookup.signals_partitions()).await {
                Ok(Ok(count)) if count > 0 => {
                    partitions = Some((count, tokio::time::Instant::now()))
                }
                Ok(Ok(_)) => tracing::debug!(
                    "the signals topic has no partitions yet: positions not reported"
                ),
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "cannot look up the signals topic: positions not reported")
                }
                Err(_) => return,
            }
        }
        let Some((count, _)) = partitions else {
            continue;
        };
        let Some(record) = inner
            .reading
            .report(&service, n % POSITIONS_FULL_EVERY == 0)
        else {
            continue;
        };
        inner.publish_positions(&record, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn produced(service: &str, topic: &str, partition: i32, offset: i64, t: i64) -> Hop {
        Hop {
            kind: HopKind::Produced,
            service: service.into(),
            group: None,
            topic: topic.into(),
            partition,
            offset,
            at: at(t),
        }
    }

    fn consumed(group: &str, topic: &str, partition: i32, offset: i64, t: i64) -> Hop {
        Hop {
            kind: HopKind::Consumed,
            service: "execute".into(),
            group: Some(group.into()),
            ..produced("", topic, partition, offset, t)
        }
    }

    fn reported(group: &str, topic: &str, partition: i32, offset: i64) -> Positions {
        let mut positions = Positions::default();
        positions.apply(&PositionsRecord {
            kind: PositionsRecord::KIND.into(),
            service: "execute".into(),
            instance: "i1".into(),
            at: at(500),
            positions: vec![Position {
                group: group.into(),
                topic: topic.into(),
                partition,
                offset,
                without_context: 1,
            }],
        });
        positions
    }

    #[test]
    fn a_record_read_past_without_its_context_is_a_lost_context() {
        let hops = [produced("create", "execution", 2, 1234, 0)];
        assert_eq!(
            diagnose(&hops, &reported("g-exec", "execution", 2, 1240), "executed").as_deref(),
            Some("the test context was lost between create and group g-exec at execution[2]@1234: the group has read past the record and no hop of it came (its context dropped or rejected on the way, or the record not handled through LiveCheck's consume)")
        );
    }

    #[test]
    fn a_group_behind_the_record_has_not_read_it() {
        let hops = [produced("create", "execution", 2, 1234, 0)];
        assert_eq!(
            diagnose(&hops, &reported("g-exec", "execution", 2, 1200), "executed").as_deref(),
            Some("group g-exec is 34 records behind on execution[2] (at offset 1200 since 2027-01-15T08:00:00.500Z); the record of this test (execution[2]@1234) has not been read")
        );
        assert_eq!(
            diagnose(&hops, &reported("g-exec", "execution", 0, 9), "executed").as_deref(),
            Some("group g-exec has not reported reading execution[2]; the record of this test (execution[2]@1234) has not been read")
        );
    }

    #[test]
    fn a_record_received_with_its_context_and_no_step_names_the_receiver() {
        let hops = [
            produced("create", "execution", 2, 1234, 0),
            consumed("g-exec", "execution", 2, 1234, 10),
        ];
        assert_eq!(
            diagnose(&hops, &reported("g-exec", "execution", 2, 1234), "executed").as_deref(),
            Some("execute (group g-exec) received the record execution[2]@1234 at 2027-01-15T08:00:00.010Z with the test context and did not send `executed`")
        );
    }

    #[test]
    fn a_group_that_read_the_record_does_not_hide_one_that_did_not() {
        // An audit group read the record with its context; the executor read past it
        // without one.
        let hops = [
            produced("create", "execution", 2, 1234, 0),
            consumed("g-audit", "execution", 2, 1234, 10),
        ];
        let mut positions = reported("g-exec", "execution", 2, 1240);
        positions.apply(&PositionsRecord {
            kind: PositionsRecord::KIND.into(),
            service: "audit".into(),
            instance: "i9".into(),
            at: at(600),
            positions: vec![Position {
                group: "g-audit".into(),
                topic: "execution".into(),
                partition: 2,
                offset: 1234,
                without_context: 0,
            }],
        });
        let why = diagnose(&hops, &positions, "executed").unwrap();
        assert!(
            why.starts_with(
                "the test context was lost between create and group g-exec at execution[2]@1234"
            ),
            "{why}"
        );
        assert!(!why.contains("g-audit"), "{why}");
    }

    #[test]
    fn a_receiver_is_a_dead_end_even_when_the_producer_heard_back_later() {
        // The producer's delivery acknowledgement can come after the consumer read the
        // record: times are compared within the receiving service only.
        let hops = [
            consumed("g-exec", "execution", 2, 1234, 5),
            produced("create", "execution", 2, 1234, 10),
        ];
        assert_eq!(
            diagnose(&hops, &reported("g-exec", "execution", 2, 1234), "executed").as_deref(),
            Some("execute (group g-exec) received the record execution[2]@1234 at 2027-01-15T08:00:00.005Z with the test context and did not send `executed`")
        );
    }

    #[test]
    fn a_stuck_group_keeps_the_time_its_offset_last_moved() {
        let mut positions = reported("g", "t", 0, 10);
        positions.apply(&PositionsRecord {
            kind: PositionsRecord::KIND.into(),
            service: "s".into(),
            instance: "i1".into(),
            at: at(60_000),
            positions: vec![Position {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 10,
                without_context: 1,
            }],
        });
        assert_eq!(positions.get("g", "t", 0).unwrap().at, at(500));
    }

    #[test]
    fn without_positions_an_unread_record_is_named_and_no_hops_tell_nothing() {
        let hops = [produced("create", "audit", 0, 7, 0)];
        assert_eq!(
            diagnose(&hops, &Positions::default(), "executed").as_deref(),
            Some("the record of this test left create at audit[0]@7 and no consumer using LiveCheck's Kafka helpers reports reading audit")
        );
        assert_eq!(diagnose(&[], &Positions::default(), "executed"), None);
    }

    #[test]
    fn positions_move_forward_and_counts_sum_over_instances() {
        let mut positions = reported("g", "t", 0, 10);
        let mut older = PositionsRecord {
            kind: PositionsRecord::KIND.into(),
            service: "s".into(),
            instance: "i2".into(),
            at: at(900),
            positions: vec![Position {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 5,
                without_context: 3,
            }],
        };
        positions.apply(&older);
        assert_eq!(positions.get("g", "t", 0).unwrap().offset, 10);
        older.positions[0].without_context = 2;
        positions.apply(&older);
        assert_eq!(positions.without_context(), [("g".into(), "t".into(), 4)]);
        let json = serde_json::to_vec(&older).unwrap();
        assert!(json.starts_with(PositionsRecord::PREFIX));
    }
}
