//! Event time: how far the runner has read each signals partition, in the records' own
//! timestamps.
//!
//! A step is in time when its record's timestamp is within the timeout of the previous
//! step's (the first step: of the test record's). A run may declare a step missing only
//! once the partition it reads has been read past that deadline — not when the wall clock
//! passes it — so a run replayed after a restart, or one whose runner is behind or cut off
//! from the broker, judges exactly as a run on time would:
//!
//! - the partition's event-time clock is the largest record timestamp read on it;
//! - when the consumer is caught up (librdkafka's statistics: every record up to the high
//!   watermark read by the runner, the partition's leader up), the clock also follows the
//!   wall clock, less the fetch wait and the brokers' round-trip time: nothing older can
//!   come any more;
//! - while the broker is unreachable, and for a grace period after it is back (producers
//!   retry with back-off and deliver what they held), the wall clock does not count and
//!   record timestamps count only up to the start of the outage;
//! - both allow a skew (`slack`) for records of several producers interleaving out of
//!   timestamp order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rdkafka::statistics::Statistics;

#[derive(Debug, Default, Clone, Copy)]
struct PartitionClock {
    /// Largest record timestamp read.
    max_ts: Option<DateTime<Utc>>,
    /// When the consumer was last seen caught up with the partition.
    caught_up_at: Option<DateTime<Utc>>,
    /// The offset after the last record read (or where reading starts).
    read_to: Option<i64>,
    /// The last offsets of the partition that were never read (see [`Clocks::record`]).
    skip: Option<Skip>,
}

/// Offsets of a signals partition that were never read (`first..=last`), seen at `seen_at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Skip {
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) seen_at: DateTime<Utc>,
}

/// Outages as the signals consumer sees them: the current or last episode (start, end);
/// outages less than [`EPISODE_GAP`] apart are one episode.
#[derive(Debug, Default)]
struct Outages {
    episode: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// The latest time the broker was marked down.
    last_down: Option<DateTime<Utc>>,
}

/// Outages closer than this are one episode.
const EPISODE_GAP: TimeDelta = TimeDelta::seconds(30);

impl Outages {
    fn down(&mut self, now: DateTime<Utc>) {
        self.last_down = Some(self.last_down.map_or(now, |d| d.max(now)));
        self.episode = match self.episode {
            Some((start, None)) => Some((start, None)),
            Some((start, Some(end))) if now - end < EPISODE_GAP => Some((start, None)),
            _ => Some((now, None)),
        };
    }

    fn up(&mut self, now: DateTime<Utc>) {
        if let Some((start, None)) = self.episode {
            // A time read just before the outage (or its relapse) was marked, on another
            // thread or by the run loop's turn clock, ends it no earlier than that mark.
            let end = self.last_down.map_or(now, |d| now.max(d)).max(start);
            self.episode = Some((start, Some(end)));
        }
    }
}

#[derive(Debug, Default)]
struct State {
    outages: Outages,
    partitions: HashMap<i32, PartitionClock>,
    /// The brokers' largest recent round-trip time (librdkafka statistics).
    rtt: TimeDelta,
}

/// Per-partition event-time clocks of the signals topic, shared behind an `Arc` (every run
/// holds one: a pointer, not a copy of the settings).
#[derive(Debug)]
pub(crate) struct Clocks {
    state: Mutex<State>,
    slack: TimeDelta,
    outage_grace: TimeDelta,
    /// How stale librdkafka's view of the high watermark can be when it says "caught up".
    fetch_staleness: TimeDelta,
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Clocks {
    pub(crate) fn new(slack: Duration, outage_grace: Duration, fetch_wait: Duration) -> Self {
        Self {
            state: Mutex::default(),
            slack: delta(slack),
            outage_grace: delta(outage_grace),
            fetch_staleness: delta(fetch_wait) + TimeDelta::milliseconds(100),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The signals consumer lost every broker (librdkafka's "all brokers down").
    pub(crate) fn broker_down(&self, now: DateTime<Utc>) {
        self.lock().outages.down(now);
    }

    /// The signals consumer hears from the broker again (a record, an end of partition,
    /// statistics with a broker up).
    pub(crate) fn broker_up(&self, now: DateTime<Utc>) {
        self.lock().outages.up(now);
    }

    /// Reading `partition` starts at `offset`: its clock starts again.
    pub(crate) fn assigned(&self, partition: i32, offset: i64) {
        self.lock().partitions.insert(
            partition,
            PartitionClock {
                read_to: Some(offset),
                ..PartitionClock::default()
            },
        );
    }

    /// The record at `offset`, with timestamp `ts`, was read from `partition` at `now`.
    /// Returns the offsets skipped before it (first and last), if it came after a gap: the
    /// consumer reads every offset of a LiveCheck topic in order (they hold no transaction
    /// markers and are not compacted), so a gap is records the broker did not serve, or
    /// that retention deleted before they were read. A record read again (after a pause, or
    /// a seek back) is no gap. The gap is remembered ([`Clocks::skipped_since`]) under the
    /// same lock that moves the clock, so a run that times out on this record's time sees it.
    pub(crate) fn record(
        &self,
        partition: i32,
        offset: i64,
        ts: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(i64, i64)> {
        let mut state = self.lock();
        let clock = state.partitions.entry(partition).or_default();
        let skipped = clock
            .read_to
            .filter(|&expected| offset > expected)
            .map(|expected| (expected, offset - 1));
        if let Some((first, last)) = skipped {
            clock.skip = Some(Skip {
                first,
                last,
                seen_at: now,
            });
        }
        clock.read_to = Some(clock.read_to.map_or(offset + 1, |r| r.max(offset + 1)));
        if let Some(ts) = ts {
            clock.max_ts = Some(clock.max_ts.map_or(ts, |m| m.max(ts)));
        }
        skipped
    }

    /// The consumer reached the end of `partition` (an EOF event) at `now`.
    pub(crate) fn caught_up(&self, partition: i32, now: DateTime<Utc>) {
        let mut state = self.lock();
        let as_of = now - self.fetch_staleness - state.rtt;
        let clock = state.partitions.entry(partition).or_default();
        clock.caught_up_at = Some(clock.caught_up_at.map_or(as_of, |c| c.max(as_of)));
    }

    /// `partition` changed hands: its clock starts again.
    pub(crate) fn reset(&self, partition: i32) {
        self.lock().partitions.remove(&partition);
    }

    /// The latest gap seen at or after `since` on `partition` (on any partition with
    /// `None`), with its partition.
    pub(crate) fn skipped_since(
        &self,
        partition: Option<i32>,
        since: DateTime<Utc>,
    ) -> Option<(i32, Skip)> {
        self.lock()
            .partitions
            .iter()
            .filter(|(p, _)| partition.is_none_or(|q| q == **p))
            .filter_map(|(p, clock)| clock.skip.map(|skip| (*p, skip)))
            .filter(|(_, skip)| skip.seen_at >= since)
            .max_by_key(|(_, skip)| skip.seen_at)
    }

    /// Takes the consumer's statistics: every signals partition whose records up to the
    /// high watermark were all handed over, with its leader up, is caught up as of the
    /// statistics' time (less how stale the watermark may be).
    pub(crate) fn statistics(&self, topic: &str, stats: &Statistics, now: DateTime<Utc>) {
        let Some(t) = stats.topics.get(topic) else {
            return;
        };
        let leaders_up: Vec<i32> = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .map(|b| b.nodeid)
            .collect();
        // A record a producer sent just before the fetch that said "caught up" may still be
        // on its way: allow for the brokers' round trips (more under injected latency).
        let rtt = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .filter_map(|b| b.rtt.as_ref().map(|w| w.max))
            .max()
            .unwrap_or(0);
        let rtt = TimeDelta::microseconds(rtt.max(0));
        let as_of = now - self.fetch_staleness - rtt;
        let mut state = self.lock();
        state.rtt = rtt;
        for (partition, p) in &t.partitions {
            if *partition < 0
                || p.leader < 0
                || p.fetch_state != "active"
                || !leaders_up.contains(&p.leader)
            {
                continue;
            }
            // Read up to: what the runner handed over itself (librdkafka's own counters of
            // the forwarded queue cover every partition at once).
            let Some(clock) = state.partitions.get_mut(partition) else {
                continue;
            };
            if p.hi_offset >= 0 && clock.read_to.is_some_and(|r| r >= p.hi_offset) {
                clock.caught_up_at = Some(clock.caught_up_at.map_or(as_of, |c| c.max(as_of)));
            }
        }
    }

    /// The skew the clock allows for records of several producers interleaving.
    pub(crate) fn slack(&self) -> TimeDelta {
        self.slack
    }

    /// The event-time "now" of `partition` as of wall-clock `now`: every record with a
    /// timestamp up to it has been read (see the module docs). `None` before any evidence.
    pub(crate) fn now(&self, partition: i32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let state = self.lock();
        let clock = state
            .partitions
            .get(&partition)
            .copied()
            .unwrap_or_default();
        event_now(
            clock,
            state.outages.episode,
            now,
            self.slack,
            self.outage_grace,
        )
    }
}

/// The clock's reading (see [`Clocks::now`]) given the partition's evidence and the
/// broker's outage, going on (`(start, None)`) or last ended (`(start, Some(end))`).
fn event_now(
    clock: PartitionClock,
    outage: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    now: DateTime<Utc>,
    slack: TimeDelta,
    grace: TimeDelta,
) -> Option<DateTime<Utc>> {
    let mut t = match clock.caught_up_at {
        Some(c) => Some(clock.max_ts.map_or(c, |m| m.max(c))),
        None => clock.max_ts,
    }?;
    // An outage now, or one that ended within the grace period: what producers held
    // during it may still come, with timestamps from its start on.
    let held_from = match outage {
        Some((since, None)) => Some(since),
        Some((since, Some(back))) if now < back + grace => Some(since),
        _ => None,
    };
    if let Some(since) = held_from {
        t = t.min(since);
    }
    Some(t - slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn clocks() -> Clocks {
        Clocks::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_millis(0),
        )
    }

    const SLACK: TimeDelta = TimeDelta::milliseconds(100);
    const GRACE: TimeDelta = TimeDelta::seconds(10);

    #[test]
    fn offsets_the_broker_did_not_serve_are_a_gap_and_records_read_again_are_not() {
        let c = clocks();
        assert_eq!(
            c.record(0, 7, None, at(0)),
            None,
            "the first record, position unknown"
        );
        assert_eq!(c.record(0, 8, None, at(0)), None);
        // Paused at 9 and resumed: the broker served from 12 (9..=11 never came).
        assert_eq!(c.record(0, 12, None, at(0)), Some((9, 11)));
        assert_eq!(c.record(0, 13, None, at(0)), None);
        // Read again after a seek back: no gap, and the position does not go back.
        assert_eq!(c.record(0, 10, None, at(0)), None);
        assert_eq!(c.record(0, 14, None, at(0)), None);
        // Assigned at a position: a gap counts from it.
        c.assigned(1, 100);
        assert_eq!(c.record(1, 100, None, at(0)), None);
        c.assigned(2, 100);
        assert_eq!(c.record(2, 104, None, at(0)), Some((100, 103)));
        assert_eq!(c.record(3, 5, None, at(0)), None, "partitions are separate");
        // What a run that timed out asks.
        assert_eq!(c.record(1, 110, None, at(500)), Some((101, 109)));
        let (p, skip) = c
            .skipped_since(Some(1), at(400))
            .expect("partition 1 skipped at 500");
        assert_eq!((p, skip.first, skip.last), (1, 101, 109));
        assert_eq!(c.skipped_since(Some(1), at(501)), None, "before the run");
        assert_eq!(c.skipped_since(Some(3), at(0)), None, "another partition");
        assert_eq!(
            c.skipped_since(None, at(0)).map(|(p, _)| p),
            Some(1),
            "the latest"
        );
        assert_eq!(c.skipped_since(None, at(1)).map(|(p, _)| p), Some(1));
        c.reset(1);
        assert_eq!(
            c.skipped_since(Some(1), at(0)),
            None,
            "forgotten with the partition"
        );
    }

    #[test]
    fn no_evidence_no_time() {
        assert_eq!(clocks().now(0, at(0)), None);
    }

    #[test]
    fn records_move_the_clock_less_the_slack() {
        let c = clocks();
        c.record(0, 0, Some(at(1000)), at(0));
        c.record(0, 1, Some(at(500)), at(0));
        assert_eq!(c.now(0, at(9000)), Some(at(900)));
        assert_eq!(c.now(1, at(9000)), None, "partitions are separate");
    }

    #[test]
    fn caught_up_follows_the_wall_clock() {
        let c = clocks();
        c.record(0, 0, Some(at(1000)), at(0));
        c.caught_up(0, at(5000));
        // Less the fetch staleness (100 ms here) and the slack (100 ms).
        assert_eq!(c.now(0, at(6000)), Some(at(4800)));
        c.caught_up(0, at(4000));
        assert_eq!(c.now(0, at(6000)), Some(at(4800)), "never backwards");
    }

    #[test]
    fn an_outage_holds_the_clock_at_its_start_until_the_grace_ends() {
        let clock = PartitionClock {
            max_ts: Some(at(6000)),
            caught_up_at: Some(at(5000)),
            read_to: None,
            skip: None,
        };
        let during = Some((at(2000), None));
        assert_eq!(
            event_now(clock, during, at(6000), SLACK, GRACE),
            Some(at(1900))
        );
        let ended = Some((at(2000), Some(at(17_000))));
        assert_eq!(
            event_now(clock, ended, at(20_000), SLACK, GRACE),
            Some(at(1900)),
            "within the grace"
        );
        let clock = PartitionClock {
            caught_up_at: Some(at(27_500)),
            ..clock
        };
        assert_eq!(
            event_now(clock, ended, at(27_500), SLACK, GRACE),
            Some(at(27_400)),
            "after the grace"
        );
    }

    #[test]
    fn outages_close_together_are_one_episode_from_the_first_start() {
        let c = clocks();
        c.caught_up(0, at(1000));
        c.broker_down(at(2000));
        c.broker_up(at(17_000));
        // A relapse soon after (a late error, a flap): the same episode.
        c.broker_down(at(18_000));
        c.broker_up(at(18_001));
        c.caught_up(0, at(25_000));
        assert_eq!(
            c.now(0, at(25_000)),
            Some(at(1900)),
            "held at the first start until the grace (10 s) after the last end"
        );
        c.caught_up(0, at(40_000));
        assert_eq!(
            c.now(0, at(40_000)),
            Some(at(39_800)),
            "after the grace: the wall clock again"
        );
    }

    #[test]
    fn an_outage_ends_no_earlier_than_it_began() {
        // The run loop's turn clock (or another thread) read the time just before the
        // outage was marked: the end it gives is the start, not before it.
        let c = clocks();
        c.broker_down(at(2000));
        c.broker_up(at(1999));
        assert_eq!(c.lock().outages.episode, Some((at(2000), Some(at(2000)))));
        // A relapse within the episode: its end is no earlier than the relapse.
        c.broker_down(at(9000));
        c.broker_up(at(8999));
        assert_eq!(c.lock().outages.episode, Some((at(2000), Some(at(9000)))));
    }

    #[test]
    fn a_reset_partition_starts_again() {
        let c = clocks();
        c.record(0, 0, Some(at(1000)), at(0));
        c.reset(0);
        assert_eq!(c.now(0, at(2000)), None);
    }
}
