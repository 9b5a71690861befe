//! Flow control between a tests partition and its signals partition.
//!
//! Signals read before their test record wait in the runner's bounded early-signal buffer.
//! When the tests consumer is behind — a restart replaying a backlog, a slow restore — the
//! signals consumer can run far ahead and overflow that buffer, and an evicted signal is a
//! false `TIMEOUT` later. So when the buffer is more than half full, a signals partition
//! whose tests partition is not caught up pauses; it resumes when its tests partition
//! catches up or the buffer is down to a quarter. A tests partition that is caught up never
//! holds its signals back: signals without a test record there are orphans, which the
//! buffer's TTL clears.

use std::collections::HashMap;

/// What to do with a signals partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Pause(i32),
    Resume(i32),
}

#[derive(Debug, Default)]
struct PartitionFlow {
    /// Whether the tests consumer reached the partition's end since its last record.
    tests_caught_up: bool,
    /// Whether the signals partition is paused.
    paused: bool,
}

/// Per partition flow state; see the module docs.
#[derive(Debug)]
pub(crate) struct Flow {
    partitions: HashMap<i32, PartitionFlow>,
    /// Early-buffer sizes (tests) at which signals pause and resume.
    high: usize,
    low: usize,
}

impl Flow {
    /// Flow control for an early-signal buffer of `capacity` tests.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            partitions: HashMap::new(),
            high: capacity / 2,
            low: capacity / 4,
        }
    }

    /// A test record of `partition` was read; `buffered` tests have early signals now.
    pub(crate) fn test_record(&mut self, partition: i32, buffered: usize) -> Option<Action> {
        let low = self.low;
        let f = self.partitions.entry(partition).or_default();
        f.tests_caught_up = false;
        (f.paused && buffered <= low).then(|| {
            f.paused = false;
            Action::Resume(partition)
        })
    }

    /// The tests consumer reached the end of `partition`.
    pub(crate) fn tests_caught_up(&mut self, partition: i32) -> Option<Action> {
        let f = self.partitions.entry(partition).or_default();
        f.tests_caught_up = true;
        f.paused.then(|| {
            f.paused = false;
            Action::Resume(partition)
        })
    }

    /// A signal of `partition` was read; `buffered` tests have early signals now.
    pub(crate) fn signal_record(&mut self, partition: i32, buffered: usize) -> Option<Action> {
        let high = self.high;
        let f = self.partitions.entry(partition).or_default();
        (!f.paused && !f.tests_caught_up && buffered > high).then(|| {
            f.paused = true;
            Action::Pause(partition)
        })
    }

    /// `partition` changed hands: it starts again, unpaused.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Signals partitions paused now.
    pub(crate) fn paused(&self) -> usize {
        self.partitions.values().filter(|f| f.paused).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_of_a_lagging_tests_partition_pause_when_the_buffer_fills() {
        let mut f = Flow::new(100);
        assert_eq!(f.test_record(0, 0), None);
        assert_eq!(f.signal_record(0, 50), None, "half full");
        assert_eq!(f.signal_record(0, 51), Some(Action::Pause(0)));
        assert_eq!(f.signal_record(0, 52), None, "paused once");
        assert_eq!(f.paused(), 1);
        assert_eq!(f.test_record(0, 30), None, "still above a quarter");
        assert_eq!(f.test_record(0, 25), Some(Action::Resume(0)));
        assert_eq!(f.paused(), 0);
    }

    #[test]
    fn a_caught_up_tests_partition_never_holds_signals_back() {
        let mut f = Flow::new(100);
        assert_eq!(f.tests_caught_up(0), None);
        assert_eq!(f.signal_record(0, 99), None, "orphans, not a backlog");
        // Behind again after a new record, then caught up: resumes.
        f.test_record(0, 99);
        assert_eq!(f.signal_record(0, 99), Some(Action::Pause(0)));
        assert_eq!(f.tests_caught_up(0), Some(Action::Resume(0)));
    }

    #[test]
    fn a_partition_that_changed_hands_starts_again() {
        let mut f = Flow::new(100);
        f.signal_record(0, 60);
        assert_eq!(f.paused(), 1);
        f.forget(0);
        assert_eq!(f.paused(), 0);
    }
}
