//! Reading partitions to their ends, off the async workers: what a new owner reads before it
//! runs a partition's tests (the reports of decided tests, see [`crate::group`]; the tables'
//! changelogs, see [`crate::table`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use crate::client::KafkaConfig;
use crate::connectivity::{Connectivity, ConnectivityContext};

/// A consumer for [`read_to_ends`]: no group of its own (a fresh id), nothing committed.
pub(crate) fn consumer(
    kafka: &KafkaConfig,
    connectivity: &Connectivity,
) -> KafkaResult<BaseConsumer<ConnectivityContext>> {
    kafka
        .client_config(&[
            (
                "group.id",
                &format!("livecheck-restore-{}", uuid::Uuid::new_v4()),
            ),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            // An offset gone by the time it is read (retention, compaction): from the start.
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "50"),
        ])
        .create_with_context(connectivity.context())
}

/// The low and high watermarks of each of `partitions` of `topic`, in their order, as
/// [`Consumer::fetch_watermarks`] gives them (the same `ListOffsets` requests), in two
/// round trips for them all: one per end, each a request per leader broker. Asked one
/// partition at a time, they cost a round trip each, one after the other: what a new owner
/// of many partitions (a restart, a rebalance) used to wait before it ran a test.
///
/// A partition that has no answer yet (a leader being elected, a request timed out) makes
/// the lookup start again, every [`RETRY_PAUSE`], until `timeout` from the call: librdkafka
/// retries such a partition itself but keeps its first error in the answer.
pub(crate) fn watermarks<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<Vec<(i64, i64)>> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + timeout;
    // `ListOffsets` takes a time per partition; these two mean its first and next offset.
    let ends = |end: Offset| -> KafkaResult<Vec<i64>> {
        loop {
            let mut list = TopicPartitionList::with_capacity(partitions.len());
            for &p in partitions {
                list.add_partition_offset(topic, p, end)?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = consumer.offsets_for_times(list, left).and_then(|found| {
                partitions
                    .iter()
                    .map(|&p| offset_of(&found, topic, p))
                    .collect()
            });
            match asked {
                Err(err) if retriable(&err) && Instant::now() + RETRY_PAUSE < deadline => {
                    std::thread::sleep(RETRY_PAUSE);
                }
                ends => return ends,
            }
        }
    };
    let (low, high) = (ends(Offset::Beginning)?, ends(Offset::End)?);
    Ok(low.into_iter().zip(high).collect())
}

/// How long [`watermarks`] waits before it asks again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The offset `found` holds for `partition` of `topic`, or why it holds none.
fn offset_of(found: &TopicPartitionList, topic: &str, partition: i32) -> KafkaResult<i64> {
    let e = found
        .find_partition(topic, partition)
        .ok_or(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownPartition,
        ))?;
    e.error()?;
    match e.offset() {
        Offset::Offset(at) => Ok(at),
        // Still the time asked for: no answer.
        _ => Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::OffsetNotAvailable,
        )),
    }
}

/// Whether a partition's lookup may succeed if asked again soon.
fn retriable(err: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        err.rdkafka_error_code(),
        Some(
            Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::PreferredLeaderNotAvailable
                | Code::RequestTimedOut
                | Code::FencedLeaderEpoch
                | Code::UnknownLeaderEpoch
                | Code::OffsetNotAvailable
        )
    )
}

/// One partition to read: from `from` to `end` (the high watermark seen before), exclusive.
pub(crate) struct Range<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) from: i64,
    pub(crate) end: i64,
}

/// Reads each of `ranges` (the empty ones skipped) with `scan`, handing every record to
/// `on_record`; returns how many were read. The deadline is on progress, not on the whole
/// read: a long read that moves is fine, one that stalls for `timeout` is an error.
pub(crate) fn read_to_ends(
    scan: &BaseConsumer<ConnectivityContext>,
    ranges: &[Range<'_>],
    timeout: Duration,
    mut on_record: impl FnMut(&BorrowedMessage<'_>),
) -> KafkaResult<u64> {
    let mut list = TopicPartitionList::new();
    // By topic, then partition: a record's topic is looked up without a copy.
    let mut ends: HashMap<&str, HashMap<i32, i64>> = HashMap::new();
    for r in ranges.iter().filter(|r| r.from < r.end) {
        list.add_partition_offset(r.topic, r.partition, Offset::Offset(r.from))?;
        ends.entry(r.topic).or_default().insert(r.partition, r.end);
    }
    let mut read = 0u64;
    if ends.is_empty() {
        return Ok(read);
    }
    scan.assign(&list)?;
    let mut progress = Instant::now();
    while !ends.is_empty() {
        if progress.elapsed() > timeout {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match scan.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                read += 1;
                progress = Instant::now();
                on_record(&msg);
                let (topic, p) = (msg.topic(), msg.partition());
                let topic_done = ends.get_mut(topic).is_some_and(|partitions| {
                    if partitions
                        .get(&p)
                        .is_some_and(|end| msg.offset() + 1 >= *end)
                    {
                        partitions.remove(&p);
                    }
                    partitions.is_empty()
                });
                if topic_done {
                    ends.remove(topic);
                }
            }
            Some(Err(err)) => return Err(err),
            None => {
                // The end may be a record never delivered (a transaction marker, a
                // compacted gap): the position says.
                let position = scan.position()?;
                for (topic, partitions) in &mut ends {
                    partitions.retain(|p, end| {
                        !matches!(
                            position.find_partition(topic, *p).map(|e| e.offset()),
                            Some(Offset::Offset(at)) if at >= *end
                        )
                    });
                }
                ends.retain(|_, partitions| !partitions.is_empty());
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;
    use crate::embedded::EmbeddedBroker;

    /// Writes `count` records to each `(partition, count)` of topic `ends`; a consumer of
    /// the topic's broker.
    fn fill(kafka: &KafkaConfig, counts: &[(i32, usize)]) -> BaseConsumer {
        let producer: BaseProducer = kafka.client_config(&[]).create().unwrap();
        for &(partition, count) in counts {
            for _ in 0..count {
                let record = BaseRecord::<(), _>::to("ends").partition(partition);
                producer.send(record.payload("x")).unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        kafka
            .client_config(&[("group.id", "ends-test")])
            .create()
            .unwrap()
    }

    #[test]
    fn watermarks_are_those_of_each_partition_in_the_order_asked() {
        let broker = EmbeddedBroker::start().unwrap();
        broker.create_topic("ends", 3).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let consumer = fill(&kafka, &[(0, 0), (1, 2), (2, 5)]);
        let timeout = Duration::from_secs(10);
        let asked = [2, 0, 1];
        let ends = watermarks(&consumer, "ends", &asked, timeout).unwrap();
        let one_by_one: Vec<(i64, i64)> = asked
            .iter()
            .map(|&p| consumer.fetch_watermarks("ends", p, timeout).unwrap())
            .collect();
        assert_eq!(ends, one_by_one);
        assert_eq!(ends, [(0, 5), (0, 0), (0, 2)]);
        assert_eq!(watermarks(&consumer, "ends", &[], timeout).unwrap(), []);
        assert!(
            watermarks(&consumer, "ends", &[0, 7], Duration::from_secs(2)).is_err(),
            "a partition the topic does not have is an error, not an end"
        );
    }

    /// A leader being elected answers `ListOffsets` with an error for a while; the ends come
    /// once it answers, as `fetch_watermarks` gives them.
    #[test]
    fn watermarks_are_asked_again_while_a_leader_has_no_answer() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("ends", 2, 1).unwrap();
        let kafka = KafkaConfig::new(cluster.bootstrap_servers());
        let consumer = fill(&kafka, &[(1, 3)]);
        consumer
            .fetch_metadata(Some("ends"), Duration::from_secs(10))
            .unwrap();
        cluster.request_errors(
            RDKafkaApiKey::ListOffsets,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE; 4],
        );
        let ends = watermarks(&consumer, "ends", &[0, 1], Duration::from_secs(10)).unwrap();
        assert_eq!(ends, [(0, 0), (0, 3)]);
    }
}
