//! Is every partition the runner reads really read? A broker can leave a consumer short of
//! records it holds. tansu 0.6 answers a fetch from an offset inside a record batch with the
//! batches after it, and with nothing when there is none. So a consumer placed inside a batch
//! (a restart or a rebalance at a committed offset, a resume after a pause) either skips the
//! rest of that batch, or reads nothing at all while the broker holds records after its
//! position. A librdkafka fetcher that stops fetching looks the same from here.
//!
//! Per partition of one consumer, [`Reading`] keeps the next offset the runner takes, and the
//! partition's watermarks from the consumer's statistics. It watches for two things:
//!
//! - **a gap**: a record past the next offset (the broker skipped the rest of a batch);
//! - **a stall**: the broker holds records from the next offset on (its high watermark is
//!   above it), the partition is fetchable (its leader up, fetching, nothing fetched and
//!   waiting), and nothing came for [`STALL_AFTER`]; during a rewind, nothing came at all
//!   (not even the records read before).
//!
//! Either way the partition is **rewound**: the consumer seeks back, so that its fetch starts
//! at or before the start of the batch. It goes back [`FIRST_STEP`] offsets, then ten times
//! further each time the broker still skips, never below the low watermark. Records before the
//! next offset were read already: they are dropped when they come again.
//!
//! After [`MAX_REWINDS`] rewinds in a row, a gap is taken as it is. It is counted, and the runs
//! it concerns end in `ERROR`. A stall is then logged at error.
//!
//! Every offset of a LiveCheck topic holds a record: they hold no transaction markers and are
//! not compacted. An offset without one (a marker of a transactional producer writing to the
//! signals topic) would be taken for a gap, and read again up to four times before it is
//! taken as one.
//!
//! Nothing here talks to Kafka: the runner feeds it records, statistics and the time, and
//! seeks when it is told to.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::statistics::Statistics;

/// How long a fetchable partition may hold records from its next offset on without one
/// coming before it is rewound: far longer than a fetch takes. Records fetched and waiting
/// for a busy runner do not count (the partition's fetch position is past them).
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(3);

/// How far the first rewind goes back. A larger batch (librdkafka's producer defaults allow
/// up to 10,000 records or 1 MB) takes the next rewind, ten times further.
pub(crate) const FIRST_STEP: i64 = 1_000;

/// Rewinds in a row before a gap is taken as it is (a stall: logged at error): 1,000,
/// 10,000, 100,000 and 1,000,000 offsets back.
pub(crate) const MAX_REWINDS: u32 = 4;

/// How old the statistics may be for a stall to be judged on them.
const MARKS_FRESH_FOR: Duration = Duration::from_secs(2);

/// What to do with a record just fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// Handle it (if it follows a gap, the runner's own gap accounting says so).
    Take,
    /// Read already: a rewind serves the records before the next offset again.
    Drop,
    /// Drop it, and seek the partition back to `to` (see the module docs).
    Rewind { to: i64, next: i64 },
}

/// What [`Reading::stalled`] found on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// Seek the partition back to `to`; nothing came from `next`, although the broker holds
    /// records up to `high`.
    Rewind {
        partition: i32,
        to: i64,
        next: i64,
        high: i64,
    },
    /// Every rewind brought nothing: the broker holds records up to `high` that it does not
    /// serve from `next`.
    GaveUp {
        partition: i32,
        next: i64,
        high: i64,
    },
}

/// A partition's watermarks and state in the consumer's statistics.
#[derive(Debug, Clone, Copy)]
struct Marks {
    low: i64,
    high: i64,
    /// Leader up, fetching, and nothing fetched waiting to be taken.
    fetchable: bool,
    /// librdkafka's fetch position for the partition, where known: past the next offset
    /// while what it fetched waits to be taken.
    fetched_to: Option<i64>,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Rewound {
    /// Rewinds in a row so far.
    times: u32,
    /// Where the last one went.
    to: i64,
    /// The last record before the next offset that came since (read before, dropped).
    last_dropped: Option<i64>,
}

#[derive(Debug)]
struct Part {
    /// The offset after the last record taken (or where reading starts).
    next: i64,
    /// When a record was last taken (or reading started or resumed, a rewind was asked, or
    /// a record it reads again came).
    moved_at: Instant,
    /// Paused by the runner: not expected to move.
    paused: bool,
    rewound: Option<Rewound>,
    /// The next offset when the last rewinds gave up on a stall: not tried again there.
    gave_up_at: Option<i64>,
}

/// One consumer's partitions (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Reading {
    parts: HashMap<i32, Part>,
    /// Every partition's in the last statistics, read or not (a partition assigned again
    /// has them at once).
    marks: HashMap<i32, Marks>,
}

impl Reading {
    /// Reading `partition` starts (again) at `offset`.
    pub(crate) fn start(&mut self, partition: i32, offset: i64, now: Instant) {
        self.parts.insert(
            partition,
            Part {
                next: offset,
                moved_at: now,
                paused: false,
                rewound: None,
                gave_up_at: None,
            },
        );
    }

    /// `partition` is not read here any more.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// The runner paused or resumed `partition`.
    pub(crate) fn pause(&mut self, partition: i32, paused: bool, now: Instant) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.paused = paused;
            part.moved_at = now;
        }
    }

    /// The consumer's statistics on `partition`.
    pub(crate) fn marks(
        &mut self,
        partition: i32,
        low: i64,
        high: i64,
        fetchable: bool,
        now: Instant,
    ) {
        self.marks.insert(
            partition,
            Marks {
                low,
                high,
                fetchable,
                fetched_to: None,
                at: now,
            },
        );
    }

    /// librdkafka's fetch position for `partition`, in the same statistics as its
    /// watermarks ([`Reading::marks`], called first).
    pub(crate) fn fetch_position(&mut self, partition: i32, offset: i64) {
        if let Some(m) = self.marks.get_mut(&partition) {
            m.fetched_to = Some(offset);
        }
    }

    /// The consumer fetched the record at `offset` of `partition`.
    pub(crate) fn record(&mut self, partition: i32, offset: i64, now: Instant) -> Fetched {
        let marks = self.marks.get(&partition).copied();
        let Some(part) = self.parts.get_mut(&partition) else {
            return Fetched::Take;
        };
        if offset < part.next {
            if let Some(r) = &mut part.rewound {
                // The rewind's records come: it is under way.
                r.last_dropped = Some(offset);
                part.moved_at = now;
            }
            return Fetched::Drop;
        }
        if offset > part.next {
            // Read again up to the record before the next one, and still a gap: a real one.
            let real = part
                .rewound
                .is_some_and(|r| r.last_dropped == Some(part.next - 1));
            if !real {
                if let Some(to) = part.rewind(marks) {
                    part.moved_at = now;
                    return Fetched::Rewind {
                        to,
                        next: part.next,
                    };
                }
            }
            // A real gap, or nowhere left to go: taken as it is.
        }
        part.next = offset + 1;
        part.moved_at = now;
        part.rewound = None;
        part.gave_up_at = None;
        Fetched::Take
    }

    /// The partitions that stalled (see the module docs), each rewound or given up on.
    pub(crate) fn stalled(&mut self, now: Instant) -> Vec<Stall> {
        let mut found = Vec::new();
        for (&partition, part) in &mut self.parts {
            if part.paused || now.saturating_duration_since(part.moved_at) < STALL_AFTER {
                continue;
            }
            // Records from the next offset on that the broker still has (retention may have
            // deleted them all), fetchable now.
            let Some(marks) = self.marks.get(&partition).copied().filter(|m| {
                m.fetchable
                    && m.fetched_to.is_none_or(|f| f <= part.next)
                    && m.high > part.next.max(m.low)
                    && now.saturating_duration_since(m.at) <= MARKS_FRESH_FOR
            }) else {
                continue;
            };
            let high = marks.high;
            if part.rewound.is_none() && part.gave_up_at == Some(part.next) {
                continue;
            }
            part.moved_at = now;
            let next = part.next;
            found.push(match part.rewind(Some(marks)) {
                Some(to) => Stall::Rewind {
                    partition,
                    to,
                    next,
                    high,
                },
                None => {
                    part.rewound = None;
                    part.gave_up_at = Some(next);
                    Stall::GaveUp {
                        partition,
                        next,
                        high,
                    }
                }
            });
        }
        found.sort_by_key(|s| match s {
            Stall::Rewind { partition, .. } | Stall::GaveUp { partition, .. } => *partition,
        });
        found
    }
}

impl Part {
    /// Takes the next rewind, if there is one: where to seek.
    fn rewind(&mut self, marks: Option<Marks>) -> Option<i64> {
        let times = self.rewound.map_or(0, |r| r.times);
        if times >= MAX_REWINDS {
            return None;
        }
        let floor = marks.map_or(0, |m| m.low.max(0));
        if self.next <= floor || self.rewound.is_some_and(|r| r.to <= floor) {
            // Nothing before it to read (retention deleted it), or already from the start.
            return None;
        }
        let back = FIRST_STEP.saturating_mul(10_i64.saturating_pow(times));
        let to = self.next.saturating_sub(back).max(floor);
        self.rewound = Some(Rewound {
            times: times + 1,
            to,
            last_dropped: None,
        });
        Some(to)
    }
}

/// Feeds `reading` the watermarks of each partition of `topic` in a consumer's statistics
/// (the last stable offset as the high one, where known: a consumer reading committed
/// records reads no further). A partition is fetchable when its leader is up and librdkafka
/// fetches it. Records fetched and not yet taken show in its fetch position (`next_offset`)
/// past the next offset; the queue's count is the consumer's whole queue when partitions
/// share one, as the runner's do, so it is used only when the position is not known.
pub(crate) fn statistics(reading: &mut Reading, topic: &str, stats: &Statistics) {
    let Some(t) = stats.topics.get(topic) else {
        return;
    };
    let now = Instant::now();
    for (&partition, p) in &t.partitions {
        let high = if p.ls_offset >= 0 {
            p.ls_offset
        } else {
            p.hi_offset
        };
        if partition < 0 || high < 0 {
            continue;
        }
        let leader_up = p.leader >= 0
            && stats
                .brokers
                .values()
                .any(|b| b.nodeid == p.leader && b.state == "UP");
        // Records fetched and waiting: the partition's fetch position is past the next
        // offset then. Without one, the queue's count (the whole queue, shared).
        let position = (p.next_offset >= 0).then_some(p.next_offset);
        let waiting = position.is_none() && p.fetchq_cnt > 0;
        let fetchable = leader_up && p.fetch_state == "active" && !waiting;
        reading.marks(partition, p.lo_offset.max(0), high, fetchable, now);
        if let Some(offset) = position {
            reading.fetch_position(partition, offset);
        }
    }
}

/// The readings of the runner's two consumers, shared with their contexts (statistics,
/// revokes).
#[derive(Debug, Default)]
pub(crate) struct Readings {
    pub(crate) tests: Mutex<Reading>,
    pub(crate) signals: Mutex<Reading>,
}

impl Readings {
    /// The tests consumer's (`signals` false) or the signals consumer's reading.
    pub(crate) fn of(&self, signals: bool) -> MutexGuard<'_, Reading> {
        let reading = if signals { &self.signals } else { &self.tests };
        reading.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    const STALL_MS: u64 = STALL_AFTER.as_millis() as u64;

    #[test]
    fn records_in_order_are_taken_and_untracked_partitions_too() {
        let mut r = Reading::default();
        r.start(0, 10, at(0));
        assert_eq!(r.record(0, 10, at(1)), Fetched::Take);
        assert_eq!(r.record(0, 11, at(2)), Fetched::Take);
        assert_eq!(r.record(0, 11, at(3)), Fetched::Drop, "read already");
        assert_eq!(r.record(7, 99, at(3)), Fetched::Take, "not tracked");
    }

    #[test]
    fn a_gap_rewinds_further_each_time_the_broker_still_skips_then_is_taken() {
        let mut r = Reading::default();
        r.start(0, 50_000, at(0));
        r.marks(0, 0, 60_000, true, at(0));
        let rewind = |to| Fetched::Rewind { to, next: 50_000 };
        // The broker served the batch after the one holding 50,000.
        assert_eq!(r.record(0, 50_300, at(1)), rewind(49_000));
        assert_eq!(r.record(0, 50_300, at(2)), rewind(40_000), "still skipped");
        assert_eq!(r.record(0, 50_300, at(3)), rewind(0), "the low watermark");
        // From the start and still a gap: taken, for the runner's gap accounting.
        assert_eq!(r.record(0, 50_300, at(4)), Fetched::Take);
        assert_eq!(r.record(0, 50_301, at(5)), Fetched::Take);
    }

    #[test]
    fn a_rewind_drops_what_was_read_and_takes_the_rest_from_the_next_offset() {
        let mut r = Reading::default();
        r.start(0, 1_500, at(0));
        assert_eq!(
            r.record(0, 1_600, at(1)),
            Fetched::Rewind {
                to: 500,
                next: 1_500
            }
        );
        // The batch from 1,200 comes whole.
        for offset in 1_200..1_500 {
            assert_eq!(r.record(0, offset, at(2)), Fetched::Drop);
        }
        for offset in 1_500..1_700 {
            assert_eq!(r.record(0, offset, at(3)), Fetched::Take);
        }
        // A later gap starts its own rewinds.
        assert!(matches!(
            r.record(0, 1_800, at(4)),
            Fetched::Rewind { to: 700, .. }
        ));
    }

    #[test]
    fn a_gap_after_the_rewind_came_back_is_real_and_a_gap_below_the_low_watermark_is_kept() {
        let mut r = Reading::default();
        r.start(0, 100, at(0));
        assert!(matches!(
            r.record(0, 105, at(1)),
            Fetched::Rewind { to: 0, .. }
        ));
        assert_eq!(r.record(0, 99, at(2)), Fetched::Drop);
        assert_eq!(
            r.record(0, 105, at(3)),
            Fetched::Take,
            "nothing at 100..=104"
        );
        // Read again only up to 97, then past the next offset: not from just before it, so
        // the broker may still have skipped some; further back.
        r.start(2, 3_000, at(0));
        assert_eq!(
            r.record(2, 3_100, at(1)),
            Fetched::Rewind {
                to: 2_000,
                next: 3_000
            }
        );
        assert_eq!(r.record(2, 2_997, at(2)), Fetched::Drop);
        assert!(matches!(
            r.record(2, 3_100, at(3)),
            Fetched::Rewind { to: 0, .. }
        ));
        // Retention deleted what was next: nothing to go back for (the watermarks known
        // before reading starts, as after a restore).
        r.marks(1, 200, 300, true, at(0));
        r.start(1, 100, at(0));
        assert_eq!(r.record(1, 200, at(1)), Fetched::Take);
    }

    #[test]
    fn a_fetchable_partition_holding_records_it_does_not_serve_is_rewound_then_given_up() {
        let mut r = Reading::default();
        r.start(0, 5_000, at(0));
        r.marks(0, 0, 5_400, true, at(100));
        assert_eq!(r.stalled(at(STALL_MS - 1)), [], "not yet");
        r.marks(0, 0, 5_400, true, at(STALL_MS));
        let rewind = |to| Stall::Rewind {
            partition: 0,
            to,
            next: 5_000,
            high: 5_400,
        };
        assert_eq!(r.stalled(at(STALL_MS)), [rewind(4_000)]);
        assert_eq!(r.stalled(at(STALL_MS + 1)), [], "a stall period per rewind");
        // Nothing from the rewind either, and still fetchable: further back.
        r.marks(0, 0, 5_400, true, at(2 * STALL_MS));
        assert_eq!(r.stalled(at(2 * STALL_MS)), [rewind(0)]);
        r.marks(0, 0, 5_400, true, at(3 * STALL_MS));
        assert_eq!(
            r.stalled(at(3 * STALL_MS)),
            [Stall::GaveUp {
                partition: 0,
                next: 5_000,
                high: 5_400
            }]
        );
        // Given up at this offset: no more rewinds there, even with fresh statistics.
        r.marks(0, 0, 5_400, true, at(5 * STALL_MS));
        assert_eq!(r.stalled(at(5 * STALL_MS)), []);
        // A record moves it on, and a later stall is tried again.
        assert_eq!(r.record(0, 5_000, at(5 * STALL_MS)), Fetched::Take);
        r.marks(0, 0, 5_400, true, at(7 * STALL_MS));
        assert!(matches!(
            r.stalled(at(7 * STALL_MS))[..],
            [Stall::Rewind { to: 4_001, .. }]
        ));
    }

    #[test]
    fn a_rewind_whose_records_come_or_that_cannot_fetch_is_not_taken_further() {
        let mut r = Reading::default();
        r.start(0, 50_000, at(0));
        r.marks(0, 0, 60_000, true, at(0));
        assert!(matches!(
            r.record(0, 50_500, at(0)),
            Fetched::Rewind { to: 49_000, .. }
        ));
        // The records read before come again, slowly: the rewind is under way.
        for (i, offset) in (49_000..49_005).enumerate() {
            let t = at(i as u64 * (STALL_MS - 1));
            r.marks(0, 0, 60_000, true, t);
            assert_eq!(r.record(0, offset, t), Fetched::Drop);
            assert_eq!(r.stalled(t), []);
        }
        // Nothing comes, but nothing can be fetched either (a backlog, the leader down).
        let later = at(10 * STALL_MS);
        r.marks(0, 0, 60_000, false, later);
        assert_eq!(r.stalled(later), []);
    }

    #[test]
    fn retention_past_the_next_offset_is_no_stall() {
        let mut r = Reading::default();
        r.start(0, 100, at(0));
        r.marks(0, 500, 500, true, at(STALL_MS));
        assert_eq!(r.stalled(at(STALL_MS)), [], "nothing left to read");
        r.marks(0, 500, 700, true, at(STALL_MS));
        assert!(
            matches!(
                r.stalled(at(STALL_MS))[..],
                [Stall::GaveUp { next: 100, .. }]
            ),
            "records after the low watermark, none served, none to go back for"
        );
    }

    #[test]
    fn statistics_give_each_partition_its_watermarks_and_whether_it_can_fetch() {
        let mut stats = Statistics::default();
        for (id, state) in [(1, "UP"), (2, "DOWN")] {
            stats.brokers.insert(
                format!("b{id}"),
                rdkafka::statistics::Broker {
                    nodeid: id,
                    state: state.into(),
                    ..Default::default()
                },
            );
        }
        let partition =
            |leader, state: &str, queued, ls_offset, next_offset| rdkafka::statistics::Partition {
                leader,
                fetch_state: state.into(),
                fetchq_cnt: queued,
                lo_offset: 10,
                hi_offset: 90,
                ls_offset,
                next_offset,
                ..Default::default()
            };
        let mut topic = rdkafka::statistics::Topic::default();
        for (p, part) in [
            (0, partition(1, "active", 0, -1, 20)),
            (1, partition(1, "active", 0, 80, 20)),
            (2, partition(2, "active", 0, -1, 20)),
            (3, partition(1, "offset-query", 0, -1, 20)),
            (4, partition(1, "active", 3, -1, -1001)),
            (5, partition(1, "active", 3, -1, 35)),
        ] {
            topic.partitions.insert(p, part);
        }
        stats.topics.insert("signals".into(), topic);
        let mut r = Reading::default();
        let now = Instant::now();
        for p in 0..6 {
            r.start(p, 20, now);
        }
        statistics(&mut r, "signals", &stats);
        statistics(&mut r, "another", &stats);
        let marks = |p| {
            let m = r.marks[&p];
            (m.low, m.high, m.fetchable, m.fetched_to)
        };
        assert_eq!(marks(0), (10, 90, true, Some(20)));
        assert_eq!(
            marks(1),
            (10, 80, true, Some(20)),
            "the last stable offset, where known"
        );
        assert_eq!(marks(2), (10, 90, false, Some(20)), "its leader is down");
        assert_eq!(marks(3), (10, 90, false, Some(20)), "not fetching");
        assert_eq!(
            marks(4),
            (10, 90, false, None),
            "no fetch position, and records in the queue"
        );
        assert_eq!(
            marks(5),
            (10, 90, true, Some(35)),
            "the queue's records may be any partition's: the position says"
        );
    }

    #[test]
    fn records_fetched_and_not_yet_taken_are_no_stall() {
        let mut r = Reading::default();
        r.start(0, 20, at(0));
        r.marks(0, 0, 90, true, at(STALL_MS));
        r.fetch_position(0, 35);
        assert_eq!(r.stalled(at(STALL_MS)), [], "fetched up to 35, waiting");
        r.fetch_position(0, 20);
        assert!(matches!(
            r.stalled(at(STALL_MS))[..],
            [Stall::Rewind {
                to: 0,
                next: 20,
                ..
            }]
        ));
    }

    #[test]
    fn no_stall_while_paused_caught_up_busy_or_without_fresh_statistics() {
        let mut r = Reading::default();
        let late = at(10 * STALL_MS);
        // Paused by the runner.
        r.start(0, 10, at(0));
        r.marks(0, 0, 20, true, late);
        r.pause(0, true, at(0));
        // Caught up.
        r.start(1, 20, at(0));
        r.marks(1, 0, 20, true, late);
        // Records fetched and waiting for a busy runner.
        r.start(2, 10, at(0));
        r.marks(2, 0, 20, false, late);
        // Statistics too old to say.
        r.start(3, 10, at(0));
        r.marks(3, 0, 20, true, at(0));
        // No statistics.
        r.start(4, 10, at(0));
        assert_eq!(r.stalled(late), []);
        // Resumed: a stall period from the resume.
        r.pause(0, false, late);
        assert_eq!(r.stalled(late), []);
    }
}
