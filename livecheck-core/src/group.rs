//! The consumer-group side of the runner: rebalance callbacks, which partitions are owned
//! and in what state, restoring a partition before its tests run, and commits.
//!
//! The group consumer subscribes to the tests topic only, with incremental
//! (cooperative-sticky) assignment; the signals partitions follow it on a consumer of their
//! own (`signals[P]` is read exactly while `tests[P]` is owned). The rebalance callbacks
//! (rust-rdkafka runs them inside poll) block only for reports: a revoke cancels the
//! partition's runs, forgets its bookkeeping and waits for the reports of runs that ended to
//! be acknowledged (no commit — the next owner skips what is decided, see
//! [`crate::ledger`], and learns it from those reports); an assignment pauses the partition
//! and hands it to the runner loop, which restores it off the async workers:
//!
//! 1. read the partition's commit: the tests offset, and the signals and reports positions
//!    in its metadata;
//! 2. read the reports partition from that position to its end: the tests decided there
//!    are not run again;
//! 3. assign `signals[P]` at its position, resume `tests[P]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::client::{KafkaConfig, Topics};
use crate::clock::Clocks;
use crate::connectivity::Connectivity;
use crate::counters::RunnerCounters;
use crate::ledger::{Ledger, Resume};
use crate::reading::{self, Readings};
use crate::registry::Registry;
use crate::scan;
use crate::sink::Unsettled;

/// A test record read while its partition was still being restored: kept, and handled
/// once the partition is restored.
#[derive(Debug)]
pub(crate) struct HeldRecord {
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
    pub(crate) payload: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) enum PartitionState {
    /// Assigned and paused; its restore is under way. `epoch` tells this assignment from
    /// an earlier one of the same partition (a restore of that one must not be applied).
    Restoring { epoch: u64, held: Vec<HeldRecord> },
    /// Restored: its records are handled. `epoch` is its assignment's.
    Active { epoch: u64 },
}

/// A partition and the epoch of its assignment.
pub(crate) type Assignment = (i32, u64);

/// What the rebalance callbacks tell the runner loop.
#[derive(Debug)]
pub(crate) enum GroupEvent {
    Assigned(Vec<Assignment>),
    Revoked(Vec<i32>),
}

/// State shared by the callbacks and the runner loop.
#[derive(Debug, Default)]
pub(crate) struct Ownership {
    pub(crate) partitions: Mutex<HashMap<i32, PartitionState>>,
    pub(crate) assigned: AtomicUsize,
    pub(crate) owns_first: AtomicBool,
    epochs: std::sync::atomic::AtomicU64,
}

impl Ownership {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, PartitionState>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether records of `partition` are handled now.
    pub(crate) fn is_active(&self, partition: i32) -> bool {
        self.active_epoch(partition).is_some()
    }

    /// The epoch of `partition`'s assignment, if its records are handled now.
    pub(crate) fn active_epoch(&self, partition: i32) -> Option<u64> {
        match self.lock().get(&partition) {
            Some(PartitionState::Active { epoch }) => Some(*epoch),
            _ => None,
        }
    }
}

/// The context of both runner consumers: rebalances (group consumer only), connectivity
/// and statistics for the event-time clocks.
pub(crate) struct RunnerContext {
    /// Whether this is the signals consumer's context: its view of the broker holds the
    /// event-time clocks during outages.
    pub(crate) signals: bool,
    pub(crate) tests_topic: String,
    pub(crate) signals_topic: String,
    pub(crate) ownership: Arc<Ownership>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) ledger: Arc<Mutex<Ledger>>,
    pub(crate) clocks: Arc<Clocks>,
    pub(crate) connectivity: Connectivity,
    pub(crate) events: mpsc::UnboundedSender<GroupEvent>,
    pub(crate) counters: Arc<RunnerCounters>,
    pub(crate) readings: Arc<Readings>,
    pub(crate) reports: Reports,
}

/// The reports of a lane's runs, as a revoke sees them: it waits for those of its
/// partitions on their way to be acknowledged before the group hands the partitions on.
pub(crate) struct Reports {
    pub(crate) unsettled: Arc<Unsettled>,
    /// Set once the lane's shutdown drain has waited for every report itself.
    pub(crate) closing: Arc<AtomicBool>,
    /// The longest a revoke waits (`RunnerConfig::drain_timeout`).
    pub(crate) within: Duration,
}

/// How often a revoke waiting for reports looks at them and at the broker.
const SETTLE_POLL: Duration = Duration::from_millis(5);

impl Reports {
    /// Waits until the reports of `revoked` on their way ([`Unsettled`]) are acknowledged
    /// or refused, at most `within`: the partitions' next owner learns which tests are
    /// decided from the reports topic, read to its end when it restores a partition, and a
    /// report acknowledged after that read leaves its test to be run again, and reported
    /// twice. It blocks the poll that called it (the lane's loop, and so the lane's runs), as
    /// a commit on revoke would: what it waits for goes on elsewhere, since a report is
    /// claimed only by code that runs on to the producer without yielding
    /// (`Runner::conclude`, `Runner::claim`), and the producer's own thread acknowledges it.
    /// A report that finds its producer's local queue full waits for room in a task of its
    /// own (`Runner::enqueue`), which the other tasks of this worker hand on to another
    /// thread while this waits (`block_in_place`); on a current-thread runtime nothing can,
    /// and such a report holds the revoke to `within`.
    /// Not when the assignment was lost (the group has handed the partitions on already),
    /// the broker is unreachable (nothing can be acknowledged), or once the shutdown's drain
    /// has waited already.
    fn settle(
        &self,
        revoked: &[i32],
        lost: bool,
        connectivity: &Connectivity,
        counters: &RunnerCounters,
    ) {
        let waiting = self.unsettled.of(revoked);
        if waiting == 0 || self.closing.load(Ordering::SeqCst) {
            return;
        }
        if lost || !connectivity.reachable() {
            warn!(partitions = ?revoked, reports = waiting, lost, "revoked partitions handed on with reports not acknowledged (assignment lost, or broker unreachable): their next owner may run those tests again");
            return;
        }
        counters
            .here()
            .reports_awaited_on_revoke
            .fetch_add(waiting as u64, Ordering::Relaxed);
        let start = Instant::now();
        let wait = || loop {
            let left = self.unsettled.of(revoked);
            if left == 0 || start.elapsed() >= self.within || !connectivity.reachable() {
                break left;
            }
            std::thread::sleep(SETTLE_POLL);
        };
        // On a worker of a multi-thread runtime the worker's other tasks move to another
        // thread meanwhile (a report waiting for room in its producer's queue among them).
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let left = if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        let millis = start.elapsed().as_millis() as u64;
        if left == 0 {
            info!(partitions = ?revoked, reports = waiting, millis, "reports acknowledged before the revoked partitions are handed on");
        } else {
            warn!(partitions = ?revoked, reports = left, millis, reachable = connectivity.reachable(), "reports not acknowledged before the revoked partitions are handed on: their next owner may run those tests again");
        }
    }
}

impl ClientContext for RunnerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            // The end of a partition (enable.partition.eof): news, not an error.
            self.connectivity.mark_reachable();
            return;
        }
        if self.signals
            && error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
            && !reason.starts_with("0/")
        {
            self.clocks.broker_down(Utc::now());
        }
        self.connectivity.on_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let topic = if self.signals {
            &self.signals_topic
        } else {
            &self.tests_topic
        };
        reading::statistics(&mut self.readings.of(self.signals), topic, &statistics);
        if !self.signals {
            return;
        }
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.connectivity.mark_reachable();
            self.clocks.broker_up(Utc::now());
        }
        self.clocks
            .statistics(&self.signals_topic, &statistics, Utc::now());
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for RunnerContext {
    /// A revoke hands the partitions' runs back without a report, synchronously, so that no
    /// record of a later assignment can be mistaken for them; then it waits for the reports
    /// of their runs that ended to be acknowledged ([`Reports::settle`]). No commit here.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked = partitions_of(list, &self.tests_topic);
        let mut cancelled = 0;
        {
            let mut partitions = self.ownership.lock();
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
            for p in &revoked {
                if partitions.remove(p).is_some() {
                    self.ownership.assigned.fetch_sub(1, Ordering::Relaxed);
                }
                cancelled += registry.cancel_partition(*p);
                ledger.close(*p);
                self.clocks.reset(*p);
                self.readings.of(false).forget(*p);
                self.readings.of(true).forget(*p);
                if *p == 0 {
                    self.ownership.owns_first.store(false, Ordering::Relaxed);
                }
            }
        }
        info!(
            partitions = ?revoked,
            cancelled,
            "runner partitions revoked: runs in flight handed back to their next owner"
        );
        // Counted here, as they are handed back: the runner loop may not read this event
        // (a revoke during its shutdown drain).
        self.counters
            .here()
            .runs_handed_back
            .fetch_add(cancelled as u64, Ordering::Relaxed);
        self.reports.settle(
            &revoked,
            consumer.assignment_lost(),
            &self.connectivity,
            &self.counters,
        );
        let _ = self.events.send(GroupEvent::Revoked(revoked));
    }

    /// An assignment pauses the new partitions until the runner loop has restored them.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions_of(list, &self.tests_topic);
                if assigned.is_empty() {
                    // A member given nothing (more lanes or runners than partitions) is
                    // ready all the same: the loop says so.
                    let _ = self.events.send(GroupEvent::Assigned(Vec::new()));
                    return;
                }
                if let Err(err) = consumer.pause(list) {
                    warn!(error = %err, "could not pause newly assigned partitions; their first records wait in memory until they are restored");
                }
                let mut assignments = Vec::new();
                {
                    let mut partitions = self.ownership.lock();
                    for p in &assigned {
                        let epoch = self.ownership.epochs.fetch_add(1, Ordering::Relaxed);
                        let restoring = PartitionState::Restoring {
                            epoch,
                            held: Vec::new(),
                        };
                        if partitions.insert(*p, restoring).is_none() {
                            self.ownership.assigned.fetch_add(1, Ordering::Relaxed);
                        }
                        if *p == 0 {
                            self.ownership.owns_first.store(true, Ordering::Relaxed);
                        }
                        assignments.push((*p, epoch));
                    }
                }
                self.connectivity.mark_reachable();
                info!(partitions = ?assigned, "runner assigned partitions; restoring them");
                let _ = self.events.send(GroupEvent::Assigned(assignments));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => warn!(error = %err, "runner rebalance error"),
        }
    }
}

/// A partition restored by [`restore`].
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) partition: i32,
    /// Where the tests and signals are read from; `reports` is where the reports
    /// partition ended when it was read.
    pub(crate) resume: Resume,
    /// Tests decided by earlier owners, not to run again, with their reports' offsets.
    pub(crate) decided: HashMap<String, i64>,
    /// Where the tests partition ended, read after the reports' ends: a test in `decided`
    /// whose record is on this partition had it read before then, so before this offset.
    pub(crate) tests_end: i64,
    /// The partition's entries of the partitioned tables.
    pub(crate) tables: Vec<(&'static str, crate::table::Shard)>,
}

/// Only what identifies a report; other records of the reports topic (suite state) have
/// no `test_id` or a `kind`.
#[derive(Deserialize)]
struct DecidedRecord {
    test_id: Option<String>,
    verdict: Option<serde::de::IgnoredAny>,
    kind: Option<serde::de::IgnoredAny>,
}

/// The test id of a reports-topic record, when it is a report.
pub(crate) fn decided_test(payload: &[u8]) -> Option<String> {
    let record: DecidedRecord = serde_json::from_slice(payload).ok()?;
    match record {
        DecidedRecord {
            test_id: Some(id),
            verdict: Some(_),
            kind: None,
        } => Some(id),
        _ => None,
    }
}

/// Restores `partitions` (blocking: run it off the async workers): their commit, and the
/// tests decided on the reports topic since. `group` reads the commit; a short-lived
/// consumer of its own reads the reports.
pub(crate) fn restore<C: ConsumerContext>(
    group: &impl Consumer<C>,
    kafka: &KafkaConfig,
    connectivity: &Connectivity,
    topics: &Topics,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<Vec<Restored>> {
    let started = Instant::now();
    let mut wanted = TopicPartitionList::new();
    for p in partitions {
        wanted.add_partition(&topics.tests, *p);
        wanted.add_partition(&topics.signals, *p);
        wanted.add_partition(&topics.reports, *p);
    }
    let committed = group.committed_offsets(wanted, timeout)?;
    let committed_at = |topic: &str, p: i32| {
        committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some((o, e.metadata().to_owned())),
                _ => None,
            })
    };
    let scan = scan::consumer(kafka, connectivity)?;
    let mut restored = Vec::new();
    let mut ranges = Vec::with_capacity(partitions.len());
    // The ends of every partition at once; the starts only where no commit says.
    let reports = scan::watermarks(&scan, &topics.reports, partitions, timeout)?;
    let starts = |topic: &str, wanted: &dyn Fn(i32) -> bool| -> KafkaResult<HashMap<i32, i64>> {
        let wanted: Vec<i32> = partitions.iter().copied().filter(|&p| wanted(p)).collect();
        let ends = scan::watermarks(&scan, topic, &wanted, timeout)?;
        Ok(wanted
            .into_iter()
            .zip(ends.into_iter().map(|(low, _)| low))
            .collect())
    };
    // As the resume below: the signals start for a partition never committed, or
    // committed by an older runner (no positions in the metadata) without a signals commit.
    let tests_starts = starts(&topics.tests, &|p| committed_at(&topics.tests, p).is_none())?;
    let signals_starts = starts(&topics.signals, &|p| match committed_at(&topics.tests, p) {
        None => true,
        Some((tests, metadata)) => {
            Resume::parse_metadata(tests, &metadata).is_none()
                && committed_at(&topics.signals, p).is_none()
        }
    })?;
    let start_of = |starts: &HashMap<i32, i64>, p: i32| {
        starts.get(&p).copied().ok_or(KafkaError::MetadataFetch(
            RDKafkaErrorCode::OffsetNotAvailable,
        ))
    };
    for (&p, &(low, high)) in partitions.iter().zip(&reports) {
        let resume = match committed_at(&topics.tests, p) {
            Some((tests, metadata)) => match Resume::parse_metadata(tests, &metadata) {
                Some(resume) => resume,
                // The metadata lost (a broker that does not keep it), or committed by an
                // older runner: each position is its own topic's commit.
                None => Resume {
                    tests,
                    signals: match committed_at(&topics.signals, p) {
                        Some((s, _)) => s,
                        None => start_of(&signals_starts, p)?,
                    },
                    reports: committed_at(&topics.reports, p).map_or(low, |(r, _)| r),
                },
            },
            // Never committed: everything from the start (auto.offset.reset=earliest).
            None => Resume {
                tests: start_of(&tests_starts, p)?,
                signals: start_of(&signals_starts, p)?,
                reports: low,
            },
        };
        ranges.push(scan::Range {
            topic: &topics.reports,
            partition: p,
            from: resume.reports.max(low),
            end: high,
        });
        restored.push(Restored {
            partition: p,
            resume: Resume {
                reports: high,
                ..resume
            },
            decided: HashMap::new(),
            tests_end: 0,
            tables: Vec::new(),
        });
    }
    // After the reports' ends: a report is written after its test record was read.
    let tests_ends = scan::watermarks(&scan, &topics.tests, partitions, timeout)?;
    for (r, (_, high)) in restored.iter_mut().zip(tests_ends) {
        r.tests_end = high;
    }
    let mut decided: HashMap<i32, HashMap<String, i64>> = HashMap::new();
    let read = scan::read_to_ends(&scan, &ranges, timeout, |msg| {
        if let Some(id) = msg.payload().and_then(decided_test) {
            decided
                .entry(msg.partition())
                .or_default()
                .insert(id, msg.offset());
        }
    })?;
    for r in &mut restored {
        r.decided = decided.remove(&r.partition).unwrap_or_default();
    }
    info!(
        partitions = ?partitions,
        reports_read = read,
        decided = restored.iter().map(|r| r.decided.len()).sum::<usize>(),
        millis = started.elapsed().as_millis() as u64,
        "partitions restored"
    );
    Ok(restored)
}

/// The commit of `positions` on the tests topic, with the signals and reports positions as
/// metadata; in the same request (one write), the signals and reports offsets as commits
/// of their own topics, for a broker that does not keep a commit's metadata (tansu 0.6).
pub(crate) fn commit_list(topics: &Topics, positions: &[(i32, Resume)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (p, resume) in positions {
        let mut e = list.add_partition(&topics.tests, *p);
        let _ = e.set_offset(Offset::Offset(resume.tests));
        e.set_metadata(resume.metadata());
        let _ = list.add_partition_offset(&topics.signals, *p, Offset::Offset(resume.signals));
        let _ = list.add_partition_offset(&topics.reports, *p, Offset::Offset(resume.reports));
    }
    list
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::CommitMode;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;
    use crate::embedded::EmbeddedBroker;

    /// Each way a partition can be found: committed by this runner (positions in the
    /// metadata), by an older one (tests and signals committed apart), never committed, and
    /// committed by this runner on a broker that lost the metadata (each topic's own commit).
    #[test]
    fn a_restore_resumes_each_partition_from_its_commit_or_its_start() {
        let topics = Topics::with_prefix("restore-");
        let broker = EmbeddedBroker::with_topics(&topics, &[], 4).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let producer: BaseProducer = kafka.client_config(&[]).create().unwrap();
        let decided = |id: &str| format!(r#"{{"test_id":"{id}","verdict":"PASS","case":"c"}}"#);
        for (p, reports) in [(0, 3), (1, 1), (2, 2), (3, 2)] {
            for n in 0..reports {
                let payload = decided(&format!("t{p}-{n}"));
                producer
                    .send(
                        BaseRecord::<(), _>::to(&topics.reports)
                            .partition(p)
                            .payload(&payload),
                    )
                    .unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let group: BaseConsumer = kafka
            .client_config(&[
                ("group.id", "restore-test"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .unwrap();
        let ours = Resume {
            tests: 7,
            signals: 9,
            reports: 1,
        };
        let mut commits = commit_list(&topics, &[(0, ours)]);
        commits
            .add_partition_offset(&topics.tests, 1, Offset::Offset(4))
            .unwrap();
        commits
            .add_partition_offset(&topics.signals, 1, Offset::Offset(6))
            .unwrap();
        // As `commit_list` commits them, the metadata lost.
        for (topic, offset) in [
            (&topics.tests, 5),
            (&topics.signals, 8),
            (&topics.reports, 1),
        ] {
            commits
                .add_partition_offset(topic, 3, Offset::Offset(offset))
                .unwrap();
        }
        group.commit(&commits, CommitMode::Sync).unwrap();

        let connectivity = Connectivity::new(broker.bootstrap_servers());
        let timeout = Duration::from_secs(10);
        let mut restored = restore(
            &group,
            &kafka,
            &connectivity,
            &topics,
            &[2, 0, 3, 1],
            timeout,
        )
        .unwrap();
        restored.sort_by_key(|r| r.partition);
        let resumes: Vec<Resume> = restored.iter().map(|r| r.resume).collect();
        assert_eq!(
            resumes,
            [
                // Ours; the reports read from its position to their end (3).
                Resume { reports: 3, ..ours },
                // An older runner's: each offset its own commit.
                Resume {
                    tests: 4,
                    signals: 6,
                    reports: 1,
                },
                // Never committed: every topic from its start.
                Resume {
                    tests: 0,
                    signals: 0,
                    reports: 2,
                },
                // The metadata lost: each topic's commit, the reports read from theirs.
                Resume {
                    tests: 5,
                    signals: 8,
                    reports: 2,
                },
            ]
        );
        let decided_ids = |p: usize| {
            let mut ids: Vec<&str> = restored[p].decided.keys().map(String::as_str).collect();
            ids.sort_unstable();
            ids
        };
        // Partitions 0's and 3's reports from offset 1 (their commits' position), the
        // others' all.
        assert_eq!(decided_ids(0), ["t0-1", "t0-2"]);
        assert_eq!(decided_ids(1), ["t1-0"]);
        assert_eq!(decided_ids(2), ["t2-0", "t2-1"]);
        assert_eq!(decided_ids(3), ["t3-1"]);
    }

    #[test]
    fn reports_are_decided_tests_and_suite_states_are_not() {
        assert_eq!(
            decided_test(br#"{"test_id":"t1","verdict":"PASS","case":"c"}"#),
            Some("t1".to_owned())
        );
        assert_eq!(
            decided_test(br#"{"kind":"suite_state","case":"c","test_id":"x","verdict":"x"}"#),
            None
        );
        assert_eq!(decided_test(b"not json"), None);
        assert_eq!(decided_test(br#"{"test_id":"t1"}"#), None);
    }

    #[test]
    fn a_commit_carries_the_positions_in_its_metadata() {
        let resume = Resume {
            tests: 3,
            signals: 4,
            reports: 5,
        };
        let topics = Topics::with_prefix("p-");
        let list = commit_list(&topics, &[(2, resume)]);
        let e = list.find_partition(&topics.tests, 2).unwrap();
        assert_eq!(e.offset(), Offset::Offset(3));
        assert_eq!(Resume::parse_metadata(3, e.metadata()), Some(resume));
        // And each position as its own topic's commit, in the same request.
        let offset = |topic: &str| list.find_partition(topic, 2).unwrap().offset();
        assert_eq!(offset(&topics.signals), Offset::Offset(4));
        assert_eq!(offset(&topics.reports), Offset::Offset(5));
        assert_eq!(list.count(), 3);
    }
}
