//! The runner's bookkeeping: in-flight tests, signals that came early, finished tests.
//! Every collection is bounded; evictions are counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::NonZeroI64;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::AbortHandle;
use serde_json::value::RawValue;
use std::task::Waker;
use thin_vec::ThinVec;

/// A signal as the runner received it.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(crate) signal: String,
    pub(crate) value: Box<RawValue>,
    pub(crate) sent_at: DateTime<Utc>,
    pub(crate) arrived_at: DateTime<Utc>,
    /// The record's timestamp (event time); `None` when the record had none.
    pub(crate) event_at: Option<DateTime<Utc>>,
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The sender's id of this send (see [`crate::SignalEvent::send_id`]).
    pub(crate) send_id: Option<Box<str>>,
    /// The item of a per-item step.
    pub(crate) item: Option<Box<str>>,
}

/// Where a record came from: what the consumer commits past once it is done with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl Arrival {
    /// Whether `other` is the same send delivered again (not a second occurrence).
    pub(crate) fn same_send(&self, other: &Arrival) -> bool {
        if self.signal != other.signal || self.item != other.item {
            return false;
        }
        match (&self.send_id, &other.send_id) {
            (Some(a), Some(b)) => a == b,
            // A sender without send ids: the same send has the same time and value.
            _ => self.sent_at == other.sent_at && self.value.get() == other.value.get(),
        }
    }

    /// An occurrence of `signal` with the JSON `value` from the send `send_id`, read just
    /// now at offset 0 of partition 0 of `signals` (for unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(signal: &str, send_id: &str, value: &str) -> Self {
        Self {
            signal: signal.into(),
            value: RawValue::from_string(value.into()).expect("a JSON value"),
            sent_at: Utc::now(),
            arrived_at: Utc::now(),
            event_at: None,
            topic: Arc::from("signals"),
            partition: 0,
            offset: 0,
            send_id: Some(send_id.into()),
            item: None,
        }
    }

    pub(crate) fn pos(&self) -> Pos {
        Pos {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

fn positions(arrivals: &[Arc<Arrival>]) -> impl Iterator<Item = Pos> + '_ {
    arrivals.iter().map(|a| a.pos())
}

/// What a run watching some steps of its test gets.
pub(crate) enum Watch {
    /// Every occurrence of the watched steps so far, in the order they arrived (more than
    /// the caller had seen).
    Ready(Vec<Arc<Arrival>>),
    /// None new yet: the caller's waker is woken when one arrives (or the deadline passes).
    Pending,
    /// The test is not tracked any more.
    Gone,
}

#[derive(Default)]
struct Slot {
    /// The partition of the test's record (`None`: not known). Its position is the run's
    /// (`RunShared::test_offset`): the slot keeps 4 bytes, not a `Pos`'s 32, in every
    /// entry of the map of running tests.
    partition: Option<i32>,
    /// Every occurrence of every step of the test, once per send, in arrival order (a
    /// `ThinVec`: one pointer, where most slots hold none yet).
    arrived: ThinVec<Arc<Arrival>>,
    /// Set when an occurrence was dropped for lack of room: counts are not known.
    overflowed: bool,
    waiters: Vec<Waiter>,
    /// The earliest deadline queued for the test in [`Registry::deadlines`]: its waiters'
    /// earliest, or a parked run's first step's (none queued: `None`).
    deadline: Option<QueuedAt>,
    task: Option<AbortHandle>,
    /// A run not started yet (see [`crate::Case::start_on_first_step`]): what starts it.
    parked: Option<Box<Parked>>,
    /// When the test record was read, in tenths of a second since [`Registry::epoch`]
    /// (rounded up): `max_run_time` counts from it ([`Registry::abort_overdue`]).
    read_at: u32,
    /// The run was stopped for `max_run_time`: its task ends without concluding, and the
    /// runner concludes it with an `ERROR` ([`Registry::is_overdue`]).
    overdue: bool,
    /// The run is concluding (its verdict being published): `max_run_time` no longer
    /// stops it ([`Registry::begin_conclusion`]).
    concluding: bool,
}

/// A run waiting for steps of its test: woken when one of them arrives, or when its
/// partition's event-time clock passes `until` (see [`Registry::expire_waits`]).
struct Waiter {
    steps: Steps,
    /// The waiting run's task: woken (and the waiter removed) once.
    waker: Waker,
    until: DateTime<Utc>,
    /// Which wait of the test this is (a run can wait for several steps at once).
    id: u32,
}

/// The steps a waiter watches: names are the `&'static str` of their `Signal` declarations,
/// so a wait for one step (the usual case) allocates nothing for them.
enum Steps {
    One(&'static str),
    /// Boxed twice: a thin pointer beside `One`'s, so that a waiter is 48 bytes, not 56
    /// (a wait for several steps at once, rarer, allocates once more).
    Any(Box<Box<[&'static str]>>),
}

impl Steps {
    fn new(signals: &[&'static str]) -> Self {
        match signals {
            [one] => Self::One(one),
            more => Self::Any(Box::new(more.into())),
        }
    }

    fn contains(&self, signal: &str) -> bool {
        match self {
            Self::One(one) => *one == signal,
            Self::Any(any) => any.contains(&signal),
        }
    }
}

/// What a run of a case that starts on its first step needs to start: held in the
/// registry instead of a task until the test's first record after the test record (or its
/// first step's deadline) comes.
pub(crate) struct Parked {
    pub(crate) case: Arc<crate::Case>,
    pub(crate) context: Arc<crate::TestContext>,
    pub(crate) pos: Pos,
    pub(crate) event_at: Option<DateTime<Utc>>,
}

/// A test's occurrences when its run ends.
pub(crate) struct Finished {
    pub(crate) arrived: ThinVec<Arc<Arrival>>,
    /// Every record of the test but its test record: its signals and hops.
    pub(crate) records: Vec<Pos>,
}

struct Early {
    /// Moved into the test's slot when its test record comes.
    arrivals: ThinVec<Arc<Arrival>>,
    /// Set when one was dropped for lack of room.
    overflowed: bool,
    since: Instant,
}

/// The tests whose signals came before their test record.
mod early {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{positions, Early, FastMap, Pos, ThinVec};

    /// The early tests, in the order their first signal came. Changed through these methods
    /// only, so that the count the run loop reads on every record without the registry's
    /// lock ([`EarlyTests::count`], for [`crate::flow`]) follows every change.
    #[derive(Default)]
    pub(super) struct EarlyTests {
        tests: FastMap<String, Early>,
        /// Ids in the order their first signal came; an id already gone is skipped.
        order: VecDeque<String>,
        len: Arc<AtomicUsize>,
    }

    impl EarlyTests {
        /// How many tests have early signals, after the last change.
        pub(super) fn count(&self) -> Arc<AtomicUsize> {
            self.len.clone()
        }

        fn changed(&self) {
            self.len.store(self.tests.len(), Ordering::Relaxed);
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> usize {
            self.tests.len()
        }

        pub(super) fn remove(&mut self, test_id: &str) -> Option<Early> {
            let early = self.tests.remove(test_id)?;
            self.changed();
            Some(early)
        }

        /// The entry of `test_id`, made if it has none: to keep at most `max` tests, the
        /// oldest are evicted first (their signals' positions go to `evicted`).
        pub(super) fn entry(
            &mut self,
            test_id: &str,
            max: usize,
            evicted: &mut Vec<Pos>,
        ) -> &mut Early {
            if !self.tests.contains_key(test_id) {
                while self.tests.len() >= max {
                    let Some(old) = self.order.pop_front() else {
                        break;
                    };
                    if let Some(e) = self.tests.remove(&old) {
                        evicted.extend(positions(&e.arrivals));
                    }
                }
                self.order.push_back(test_id.to_owned());
                // Its entry comes in just below.
                self.len.store(self.tests.len() + 1, Ordering::Relaxed);
            }
            self.tests
                .entry(test_id.to_owned())
                .or_insert_with(|| Early {
                    arrivals: ThinVec::new(),
                    overflowed: false,
                    since: Instant::now(),
                })
        }

        /// Drops the tests whose first signal came `ttl` or longer before `now`; returns
        /// their signals' positions.
        pub(super) fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<Pos> {
            let mut dropped = Vec::new();
            while let Some(id) = self.order.front() {
                match self.tests.get(id) {
                    Some(e) if now.duration_since(e.since) < ttl => break,
                    Some(_) => {
                        if let Some(e) = self.tests.remove(id) {
                            dropped.extend(positions(&e.arrivals));
                        }
                        self.order.pop_front();
                    }
                    None => {
                        self.order.pop_front();
                    }
                }
            }
            self.changed();
            dropped
        }

        pub(super) fn retain(&mut self, keep: impl FnMut(&String, &mut Early) -> bool) {
            self.tests.retain(keep);
            self.changed();
        }

        /// Shrinks the map and the queue each where `roomy` says so (by length and
        /// capacity) to twice its length.
        pub(super) fn shrink(&mut self, roomy: impl Fn(usize, usize) -> bool) {
            if roomy(self.tests.len(), self.tests.capacity()) {
                self.tests.shrink_to(self.tests.len() * 2);
            }
            if roomy(self.order.len(), self.order.capacity()) {
                self.order.shrink_to(self.order.len() * 2);
            }
        }

        #[cfg(test)]
        pub(super) fn capacity(&self) -> usize {
            self.tests.capacity()
        }
    }
}

/// Limits of the runner's buffers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Tests whose signals came before their test record, at most.
    pub max_early_tests: usize,
    /// Signals kept per test, at most: before its test record came, and during its run
    /// (every occurrence is kept, to count them). A run that reached the limit cannot
    /// pass: its counts are not known.
    pub max_early_signals_per_test: usize,
    /// How long early signals wait for their test record.
    pub early_ttl: Duration,
    /// Finished test ids remembered (to drop duplicates and late signals).
    pub max_finished: usize,
    /// Runs in flight, at most (more are `SKIP`ped and counted).
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_early_tests: 10_000,
            max_early_signals_per_test: 256,
            early_ttl: Duration::from_secs(120),
            max_finished: 100_000,
            max_in_flight: 100_000,
        }
    }
}

/// What happened to an incoming signal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SignalOutcome {
    Delivered,
    /// Stored for a run that was parked: [`Registry::take_parked`] gives what starts it.
    Woke,
    Stored,
    Duplicate,
    Late,
    Buffered {
        evicted: Vec<Pos>,
    },
    BufferFull,
    /// A hop past [`MAX_HOPS_PER_TEST`]: dropped, the run goes on as if it had not come.
    HopsFull,
}

/// Runs to wake once the registry's lock is let go ([`Registry::on_signal`],
/// [`Registry::expire_waits`]). A run woken under the lock, polled at once on another
/// worker thread, wanted the lock while the thread that woke it still held it (waking may
/// unpark that worker: a system call). Counted in the live bench with 2 workers, the runs'
/// contended acquisitions of the lock per round of 15,000 tests were slightly fewer
/// (10,400–11,900 against 11,100–13,500 in alternating runs).
///
/// Dropped, it wakes what it holds: the waiters it took are out of the registry, and a run
/// not woken would wait for ever.
#[derive(Debug, Default)]
#[must_use = "the runs it holds are woken only by `wake` (or when it is dropped)"]
pub(crate) struct Wakers {
    /// The one waker of a signal delivered to a waiting run: no allocation.
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Wakers {
    fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.more.push(waker);
        }
    }

    /// Wakes them all (call without the registry's lock).
    pub(crate) fn wake(&mut self) {
        if let Some(waker) = self.first.take() {
            waker.wake();
        }
        for waker in self.more.drain(..) {
            waker.wake();
        }
    }
}

impl Drop for Wakers {
    fn drop(&mut self) {
        self.wake();
    }
}

/// Hops kept per test ([`crate::hop::HOP_SIGNAL`]); they never count toward
/// [`Limits::max_early_signals_per_test`], which bounds the steps.
pub(crate) const MAX_HOPS_PER_TEST: usize = 64;

/// Whether `arrival` still fits among `arrivals`: hops and steps are bounded apart, so a
/// test that touches many records never loses a step (nor its verdict) to its hops.
fn fits(
    arrivals: &[Arc<Arrival>],
    arrival: &Arrival,
    max_steps: usize,
) -> Result<(), SignalOutcome> {
    let is_hop = arrival.signal == crate::hop::HOP_SIGNAL;
    let held = arrivals
        .iter()
        .filter(|a| (a.signal == crate::hop::HOP_SIGNAL) == is_hop)
        .count();
    match (is_hop, held) {
        (true, n) if n >= MAX_HOPS_PER_TEST => Err(SignalOutcome::HopsFull),
        (false, n) if n >= max_steps => Err(SignalOutcome::BufferFull),
        _ => Ok(()),
    }
}

/// What happened to an incoming test record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TestOutcome {
    Started,
    Duplicate,
    AtCapacity,
}

/// A test's id as the registry keeps it: the 16 bytes of a UUID when the id is a UUID in
/// its canonical text (lowercase, hyphenated: the ids the client makes), the text
/// otherwise. Two ids are the same key exactly when they are the same text. A finished
/// test costs about 60 bytes this way, against about 220 as two `String`s (the map's key
/// and the eviction queue's), and finished tests are kept long after their verdicts; the
/// key of a running test with a UUID id needs no allocation (a text id's is allocated at
/// every lookup too: clients make UUIDs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TestKey {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl TestKey {
    fn new(test_id: &str) -> Self {
        // Of the forms `Uuid::try_parse` reads, only the hyphenated one has this length;
        // other spellings of the same UUID (uppercase) stay distinct texts.
        if test_id.len() == uuid::fmt::Hyphenated::LENGTH
            && !test_id.bytes().any(|b| b.is_ascii_uppercase())
        {
            if let Ok(id) = uuid::Uuid::try_parse(test_id) {
                return Self::Uuid(id.into_bytes());
            }
        }
        Self::Text(test_id.into())
    }
}

/// A map of the registry's: looked up on every record, so hashed with foldhash (SipHash
/// took 2–3 % of the lanes' time). Its seed is random per process, as `std`'s is, but it
/// does not claim `std`'s resistance to crafted collisions: test ids come from the
/// LiveCheck topics, which the services of the system under test write.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Deadlines of waiting runs, earliest first (see [`Registry::expire_waits`]). An entry is
/// 32 bytes (40 with a `DateTime`), and a wait that ends sooner leaves its entry queued
/// until its time: about tests per second times their timeout.
type Deadlines = BinaryHeap<Reverse<(QueuedAt, TestKey)>>;

/// A deadline as the queue and the slots hold it ([`queued_at`]): nanoseconds since the Unix
/// epoch, never 0, so that a slot's `Option` of it is 8 bytes.
type QueuedAt = NonZeroI64;

/// Nanoseconds since the Unix epoch of `at`, saturated to `low..=high`.
fn nanos(at: DateTime<Utc>, low: i64, high: i64) -> i64 {
    at.timestamp_nanos_opt()
        .unwrap_or(if at.timestamp() < 0 { low } else { high })
        .clamp(low, high)
}

/// The deadline `at` as it is queued, rounded up where nanoseconds cannot say it exactly (a
/// time after 2262 is `i64::MAX`, the epoch itself a nanosecond later), while a clock is
/// rounded down ([`clock_at`]). So a queued deadline at or before a clock's reading is a
/// deadline the clock has passed: a waiter then expires, and the test's next deadline
/// queued is later than the clock (it does not come out again in the same pass). A
/// deadline after 2262 is never reached.
fn queued_at(at: DateTime<Utc>) -> QueuedAt {
    let nanos = nanos(at, i64::MIN + 1, i64::MAX);
    NonZeroI64::new(nanos).unwrap_or(const { NonZeroI64::new(1).unwrap() })
}

/// A partition clock's reading `now`, to compare with queued deadlines: rounded down (see
/// [`queued_at`]).
fn clock_at(now: DateTime<Utc>) -> i64 {
    nanos(now, i64::MIN, i64::MAX - 1)
}

/// Queues `at` for the test `key` on `partition` when it is sooner than what the test has
/// queued already ([`Slot::deadline`]: at most one live entry per test).
fn queue_deadline(
    deadlines: &mut FastMap<i32, Deadlines>,
    slot: &mut Slot,
    partition: i32,
    at: DateTime<Utc>,
    key: TestKey,
) {
    let at = queued_at(at);
    if slot.deadline.is_none_or(|queued| at < queued) {
        slot.deadline = Some(at);
        deadlines
            .entry(partition)
            .or_default()
            .push(Reverse((at, key)));
    }
}

/// Capacity (entries) under which [`Registry::shrink`] leaves a map alone.
const SHRINK_ABOVE: usize = 1024;

pub(crate) struct Registry {
    /// Boxed: a map entry of 32 bytes, not 120, where the map has room for up to twice as
    /// many entries as tests (its load), so each test pays for its slot once.
    running: FastMap<TestKey, Box<Slot>>,
    early: early::EarlyTests,
    /// Finished tests, with the partition of their records (`None`: not known). Kept
    /// after the verdicts (up to [`Limits::max_finished`]), so compact: see [`TestKey`].
    finished: FastMap<TestKey, Option<i32>>,
    finished_order: VecDeque<TestKey>,
    /// Runs parked (see [`Parked`]).
    parked: usize,
    /// The id of the next waiter (see [`Waiter::id`]).
    next_wait: u32,
    /// Per partition, the deadlines of the waiting and parked runs on it, earliest first:
    /// one entry per test for its earliest waiter or its parked run's first step (see
    /// [`Slot::deadline`]), and entries left by waits that ended sooner (and runs started
    /// sooner), dropped when their time comes.
    deadlines: FastMap<i32, Deadlines>,
    /// What [`Slot::read_at`] counts from.
    epoch: Instant,
    limits: Limits,
}

/// A tenth of a second, in nanoseconds.
const TENTH: u128 = 100_000_000;

/// Tenths of a second from `epoch` to `at`, rounded down, or up with `up` (0 before it;
/// about 13 years at most). A time kept rounded up and compared with a cutoff rounded
/// down is never taken as earlier than it was: `max_run_time` never stops a run early.
fn tenths_since(epoch: Instant, at: Instant, up: bool) -> u32 {
    let nanos = at.saturating_duration_since(epoch).as_nanos();
    let tenths = if up {
        nanos.div_ceil(TENTH)
    } else {
        nanos / TENTH
    };
    u32::try_from(tenths).unwrap_or(u32::MAX)
}

impl Registry {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            running: FastMap::default(),
            early: early::EarlyTests::default(),
            finished: FastMap::default(),
            finished_order: VecDeque::new(),
            parked: 0,
            next_wait: 0,
            deadlines: FastMap::default(),
            epoch: Instant::now(),
            limits,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.running.len()
    }

    #[cfg(test)]
    pub(crate) fn early_tests(&self) -> usize {
        self.early.len()
    }

    /// How many tests have early signals now, readable without the registry's lock: the
    /// length of the early signals' map after each change made under it.
    pub(crate) fn early_count(&self) -> Arc<AtomicUsize> {
        self.early.count()
    }

    pub(crate) fn is_known(&self, test_id: &str) -> bool {
        let key = TestKey::new(test_id);
        self.running.contains_key(&key) || self.finished.contains_key(&key)
    }

    /// Starts tracking a test; moves its early signals in.
    pub(crate) fn start_test(&mut self, test_id: &str, partition: Option<i32>) -> TestOutcome {
        if self.is_known(test_id) {
            return TestOutcome::Duplicate;
        }
        if self.running.len() >= self.limits.max_in_flight {
            return TestOutcome::AtCapacity;
        }
        let mut slot = Box::new(Slot {
            partition,
            read_at: tenths_since(self.epoch, Instant::now(), true),
            ..Slot::default()
        });
        if let Some(early) = self.early.remove(test_id) {
            slot.arrived = early.arrivals;
            slot.overflowed = early.overflowed;
        }
        self.running.insert(TestKey::new(test_id), slot);
        TestOutcome::Started
    }

    /// Marks a test finished without running it (skip, or decided by an earlier owner of
    /// `partition`) so duplicates are recognised. Returns the positions of early signals
    /// dropped with it.
    pub(crate) fn mark_finished(&mut self, test_id: &str, partition: Option<i32>) -> Vec<Pos> {
        let dropped = self
            .early
            .remove(test_id)
            .map(|e| positions(&e.arrivals).collect())
            .unwrap_or_default();
        let key = TestKey::new(test_id);
        if self.finished.insert(key.clone(), partition).is_none() {
            self.finished_order.push_back(key);
            while self.finished_order.len() > self.limits.max_finished {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
        dropped
    }

    /// Stops tracking a running test; returns every occurrence of its steps and the
    /// positions of every record of the test. Memory held for the test is released here.
    /// `None` when the test is not running any more (its partition was revoked: its run is
    /// handed back and must not publish).
    pub(crate) fn finish_test(&mut self, test_id: &str) -> Option<Finished> {
        let slot = self.running.remove(&TestKey::new(test_id))?;
        self.parked -= usize::from(slot.parked.is_some());
        let records: Vec<Pos> = positions(&slot.arrived).collect();
        let partition = slot
            .partition
            .or_else(|| records.first().map(|p| p.partition));
        self.mark_finished(test_id, partition);
        Some(Finished {
            arrived: slot.arrived,
            records,
        })
    }

    /// Every occurrence so far of a running test's steps, and whether some were dropped.
    pub(crate) fn occurrences(&self, test_id: &str) -> Option<(ThinVec<Arc<Arrival>>, bool)> {
        self.running
            .get(&TestKey::new(test_id))
            .map(|slot| (slot.arrived.clone(), slot.overflowed))
    }

    /// A signal of `test_id`: kept for its run (the runs it wakes are put in `wake`, to be
    /// woken without the lock), or among the early signals, or refused.
    pub(crate) fn on_signal(
        &mut self,
        test_id: &str,
        arrival: Arrival,
        wake: &mut Wakers,
    ) -> SignalOutcome {
        let key = TestKey::new(test_id);
        if let Some(slot) = self.running.get_mut(&key) {
            if slot.arrived.iter().any(|a| a.same_send(&arrival)) {
                return SignalOutcome::Duplicate;
            }
            if let Err(outcome) = fits(
                &slot.arrived,
                &arrival,
                self.limits.max_early_signals_per_test,
            ) {
                slot.overflowed |= outcome == SignalOutcome::BufferFull;
                return outcome;
            }
            let arrival = Arc::new(arrival);
            slot.arrived.push(arrival.clone());
            if slot.parked.is_some() {
                return SignalOutcome::Woke;
            }
            // Wake only the runs watching this test and this signal.
            let mut delivered = false;
            let mut i = 0;
            while i < slot.waiters.len() {
                if slot.waiters[i].steps.contains(&arrival.signal) {
                    wake.push(slot.waiters.swap_remove(i).waker);
                    delivered = true;
                } else {
                    i += 1;
                }
            }
            return if delivered {
                SignalOutcome::Delivered
            } else {
                SignalOutcome::Stored
            };
        }
        if self.finished.contains_key(&key) {
            return SignalOutcome::Late;
        }
        let mut evicted = Vec::new();
        let early = self
            .early
            .entry(test_id, self.limits.max_early_tests, &mut evicted);
        if early.arrivals.iter().any(|a| a.same_send(&arrival)) {
            return SignalOutcome::Duplicate;
        }
        if let Err(outcome) = fits(
            &early.arrivals,
            &arrival,
            self.limits.max_early_signals_per_test,
        ) {
            early.overflowed |= outcome == SignalOutcome::BufferFull;
            return outcome;
        }
        early.arrivals.push(Arc::new(arrival));
        SignalOutcome::Buffered { evicted }
    }

    /// Drops early signals older than the TTL; returns their positions.
    pub(crate) fn expire_early(&mut self, now: Instant) -> Vec<Pos> {
        self.early.expire(now, self.limits.early_ttl)
    }

    /// Gives back the room a burst left (a restart replaying a backlog can hold tens of
    /// thousands of runs at once; the maps keep their largest size otherwise, about 140
    /// bytes per run): a map or queue at under a quarter of its capacity shrinks to twice
    /// its length. Cheap when nothing is to shrink; the runner calls it on every sweep.
    pub(crate) fn shrink(&mut self) {
        fn roomy(len: usize, capacity: usize) -> bool {
            capacity > SHRINK_ABOVE && len < capacity / 4
        }
        if roomy(self.running.len(), self.running.capacity()) {
            self.running.shrink_to(self.running.len() * 2);
        }
        self.early.shrink(roomy);
        // A wait that ends sooner than its deadline (its step came, its test ended) leaves
        // its entry queued until then: about tests per second times the timeout of them.
        // Once they outnumber the runs, only the entries of waiters still in place are kept.
        let queued: usize = self.deadlines.values().map(BinaryHeap::len).sum();
        if queued > SHRINK_ABOVE + 2 * self.running.len() {
            let running = &self.running;
            for heap in self.deadlines.values_mut() {
                heap.retain(|Reverse((until, key))| {
                    running
                        .get(key)
                        .is_some_and(|slot| slot.deadline == Some(*until))
                });
            }
            self.deadlines.retain(|_, heap| !heap.is_empty());
        }
        for heap in self.deadlines.values_mut() {
            if roomy(heap.len(), heap.capacity()) {
                heap.shrink_to(heap.len() * 2);
            }
        }
    }

    /// The occurrences of the steps `signals` of a running test, when there are more than
    /// `seen`; otherwise `Pending`, with `waker` woken by the next one, or once the clock
    /// of `partition` has passed `until` ([`Registry::expire_waits`]): one timer for every
    /// run, not one per wait. `wait` is the wait's waiter, if it has one in place (its
    /// waker is updated), and is set to the one put in place; it is `None` after `Ready`
    /// (the waiter is gone). A wait that ends otherwise calls [`Registry::cancel_wait`].
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, which holds them all"
    )]
    pub(crate) fn watch(
        &mut self,
        test_id: &str,
        signals: &[&'static str],
        seen: usize,
        until: DateTime<Utc>,
        partition: i32,
        wait: &mut Option<u32>,
        waker: &Waker,
    ) -> Watch {
        let key = TestKey::new(test_id);
        let Some(slot) = self.running.get_mut(&key) else {
            *wait = None;
            return Watch::Gone;
        };
        if let Some(waiter) = wait.and_then(|id| slot.waiters.iter_mut().find(|w| w.id == id)) {
            // Polled again while in place (by another branch of the run, say): nothing it
            // watches came, or the waiter would be gone. The task may have moved.
            waiter.waker.clone_from(waker);
            return Watch::Pending;
        }
        let matching = |a: &&Arc<Arrival>| signals.contains(&a.signal.as_str());
        if slot.arrived.iter().filter(matching).count() > seen {
            *wait = None;
            return Watch::Ready(slot.arrived.iter().filter(matching).cloned().collect());
        }
        // An id no other waiter of the test has (the counter wraps).
        let mut id = self.next_wait;
        while slot.waiters.iter().any(|w| w.id == id) {
            id = id.wrapping_add(1);
        }
        self.next_wait = id.wrapping_add(1);
        *wait = Some(id);
        // Runs mostly wait for one signal at a time: room for exactly one.
        slot.waiters.reserve_exact(1);
        slot.waiters.push(Waiter {
            steps: Steps::new(signals),
            waker: waker.clone(),
            until,
            id,
        });
        queue_deadline(&mut self.deadlines, slot, partition, until, key);
        Watch::Pending
    }

    /// The waiters of a running test in place now (0: not running).
    #[cfg(test)]
    pub(crate) fn waiters_of(&self, test_id: &str) -> usize {
        self.running
            .get(&TestKey::new(test_id))
            .map_or(0, |slot| slot.waiters.len())
    }

    /// Forgets the waiter `wait` of a test (its wait ended, or was dropped); other waits on
    /// the same signal stay.
    pub(crate) fn cancel_wait(&mut self, test_id: &str, wait: u32) {
        if let Some(slot) = self.running.get_mut(&TestKey::new(test_id)) {
            slot.waiters.retain(|w| w.id != wait);
        }
    }

    /// Takes into `wake` the waiters whose deadline their partition's clock
    /// (`clock(partition)`; `None`: not known yet) has passed; each, woken, then looks at the
    /// clock and its steps itself. The parked runs whose first step's deadline it has passed
    /// are taken into `due`: started, they time out (or find a step that raced the clock).
    /// Returns how many waiters were taken.
    pub(crate) fn expire_waits(
        &mut self,
        clock: impl Fn(i32) -> Option<DateTime<Utc>>,
        due: &mut Vec<Parked>,
        wake: &mut Wakers,
    ) -> usize {
        let mut woken = 0;
        for (partition, heap) in &mut self.deadlines {
            let Some(now) = clock(*partition) else {
                continue;
            };
            let queued_now = clock_at(now);
            // Queued after the pass: whatever the times, it ends.
            let mut next_entries = Vec::new();
            while heap
                .peek()
                .is_some_and(|Reverse((until, _))| until.get() <= queued_now)
            {
                let Some(Reverse((until, key))) = heap.pop() else {
                    break;
                };
                let Some(slot) = self.running.get_mut(&key) else {
                    // The test ended: the entry of a wait that ended sooner.
                    continue;
                };
                // A parked run has no waiters: its queued deadline is its first step's.
                let first_step_due = slot.deadline.is_some_and(|d| d.get() <= queued_now);
                if let Some(parked) = slot.parked.take_if(|_| first_step_due) {
                    self.parked -= 1;
                    due.push(*parked);
                }
                let mut i = 0;
                while i < slot.waiters.len() {
                    if slot.waiters[i].until <= now {
                        wake.push(slot.waiters.swap_remove(i).waker);
                        woken += 1;
                    } else {
                        i += 1;
                    }
                }
                if slot.deadline == Some(until) {
                    // This was the test's queued entry: queue its next deadline, if any.
                    slot.deadline = slot.waiters.iter().map(|w| queued_at(w.until)).min();
                    if let Some(next) = slot.deadline {
                        next_entries.push(Reverse((next, key)));
                    }
                }
            }
            heap.extend(next_entries);
        }
        self.deadlines.retain(|_, heap| !heap.is_empty());
        woken
    }

    /// Parks the run of a test just started (see [`Parked`]) until a record of the test
    /// comes or the clock of its partition passes `due` (its first step's deadline: see
    /// [`Registry::expire_waits`]); hands it back when the test has records already
    /// (signals that came before it): that run starts at once.
    pub(crate) fn park(
        &mut self,
        test_id: &str,
        parked: Box<Parked>,
        due: DateTime<Utc>,
    ) -> Option<Box<Parked>> {
        let key = TestKey::new(test_id);
        match self.running.get_mut(&key) {
            Some(slot) if slot.arrived.is_empty() && slot.task.is_none() => {
                let partition = parked.pos.partition;
                if slot.parked.replace(parked).is_none() {
                    self.parked += 1;
                }
                queue_deadline(&mut self.deadlines, slot, partition, due, key);
                None
            }
            _ => Some(parked),
        }
    }

    /// What starts a parked run, taken (`None`: not parked, or not running any more).
    pub(crate) fn take_parked(&mut self, test_id: &str) -> Option<Box<Parked>> {
        let parked = self
            .running
            .get_mut(&TestKey::new(test_id))?
            .parked
            .take()?;
        self.parked -= 1;
        Some(parked)
    }

    /// How many runs are parked.
    pub(crate) fn parked(&self) -> usize {
        self.parked
    }

    /// Whether a test's run is parked.
    #[cfg(test)]
    fn is_parked(&self, test_id: &str) -> bool {
        self.running
            .get(&TestKey::new(test_id))
            .is_some_and(|slot| slot.parked.is_some())
    }

    /// Stops the runs whose test record was read `max_run_time` or longer before `now` and
    /// that are not concluding: their tasks are aborted (the runner concludes each with an
    /// `ERROR`, once its task has let go of it: see [`Registry::is_overdue`]), and parked
    /// runs are taken into `parked`, marked so, for the runner to start (their tasks are
    /// aborted as they are set: [`Registry::set_task`]). One pass over the running tests,
    /// made at every sweep: no run holds a timer of its own. Returns how many were stopped.
    pub(crate) fn abort_overdue(
        &mut self,
        max_run_time: Duration,
        now: Instant,
        parked: &mut Vec<Parked>,
    ) -> usize {
        // In tenths from the epoch (an `Instant` less `max_run_time` may not exist so soon
        // after boot on some systems); `max_run_time` rounded up, never stopping early.
        let max = u32::try_from(max_run_time.as_nanos().div_ceil(TENTH)).unwrap_or(u32::MAX);
        let Some(cutoff) = tenths_since(self.epoch, now, false).checked_sub(max) else {
            return 0;
        };
        let mut stopped = 0;
        for slot in self.running.values_mut() {
            if slot.read_at > cutoff || slot.overdue || slot.concluding {
                continue;
            }
            if let Some(task) = &slot.task {
                task.abort();
            } else if let Some(run) = slot.parked.take() {
                self.parked -= 1;
                parked.push(*run);
            } else {
                // Its task is about to be set (and aborted then).
            }
            slot.overdue = true;
            stopped += 1;
        }
        stopped
    }

    /// Whether a test's run was stopped for `max_run_time` ([`Registry::abort_overdue`]).
    pub(crate) fn is_overdue(&self, test_id: &str) -> bool {
        self.running
            .get(&TestKey::new(test_id))
            .is_some_and(|slot| slot.overdue)
    }

    /// Marks a test's run as concluding, so that `max_run_time` no longer stops it; `false`
    /// when it was stopped already (the runner concludes it). A test no longer running
    /// (its partition revoked) is `true`: its conclusion finds it gone and publishes
    /// nothing.
    pub(crate) fn begin_conclusion(&mut self, test_id: &str) -> bool {
        match self.running.get_mut(&TestKey::new(test_id)) {
            Some(slot) if slot.overdue => false,
            Some(slot) => {
                slot.concluding = true;
                true
            }
            None => true,
        }
    }

    /// Remembers the task running a test (to cancel it on a rebalance).
    /// A run stopped for `max_run_time` before its task was set (a parked run) has it
    /// aborted at once: its guard concludes it.
    pub(crate) fn set_task(&mut self, test_id: &str, task: AbortHandle) {
        match self.running.get_mut(&TestKey::new(test_id)) {
            Some(slot) => {
                if slot.overdue {
                    task.abort();
                }
                slot.task = Some(task);
            }
            // Finished already.
            None => drop(task),
        }
    }

    /// Drops every test and early signal whose records live on partition `partition` (of
    /// either topic: they are co-partitioned), aborting their runs without a report: the
    /// partition's next owner reads them again. Returns the number of runs cancelled.
    pub(crate) fn cancel_partition(&mut self, partition: i32) -> usize {
        let mut cancelled = 0;
        let mut parked = 0;
        self.running.retain(|_, slot| {
            let on_partition = slot.partition == Some(partition);
            if on_partition {
                cancelled += 1;
                parked += usize::from(slot.parked.is_some());
                if let Some(task) = &slot.task {
                    task.abort();
                }
            }
            !on_partition
        });
        self.parked -= parked;
        self.deadlines.remove(&partition);
        self.early
            .retain(|_, e| !e.arrivals.iter().any(|a| a.partition == partition));
        // What was decided here is known to the partition's next owner (this runner too, if
        // the partition comes back) from the reports topic, not from this memory: a report
        // still on its way when the partition went must not make its test look decided.
        self.finished.retain(|_, p| *p != Some(partition));
        // And from the eviction queue: a test decided again later is queued again, and the
        // stale entry must not evict it early. (A revoke is rare; this is one pass.)
        let finished = &self.finished;
        self.finished_order.retain(|key| finished.contains_key(key));
        cancelled
    }

    /// Aborts every run (the runner stops and hands them back).
    pub(crate) fn cancel_all(&mut self) -> usize {
        let n = self.running.len();
        self.parked = 0;
        self.deadlines.clear();
        for (_, slot) in self.running.drain() {
            if let Some(task) = slot.task {
                task.abort();
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline no test here reaches.
    const LATER: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

    /// A run's task, as a waker that counts its wakes.
    #[derive(Default)]
    struct Task(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A wait put in place by [`watch`]: its waiter's id and its task.
    struct Waiting {
        id: Option<u32>,
        task: Arc<Task>,
    }

    impl Waiting {
        /// Whether the task was woken since the last call.
        fn woken(&self) -> bool {
            self.task.0.swap(0, std::sync::atomic::Ordering::SeqCst) > 0
        }
    }

    /// What a run watching gets: `Watch`, with the wait when it is pending.
    enum Watched {
        Ready(Vec<Arc<Arrival>>),
        Pending(Waiting),
        Gone,
    }

    fn watch(
        r: &mut Registry,
        test_id: &str,
        signals: &[&'static str],
        seen: usize,
        until: DateTime<Utc>,
        partition: i32,
    ) -> Watched {
        let task = Arc::new(Task::default());
        let mut id = None;
        let waker = Waker::from(task.clone());
        match r.watch(test_id, signals, seen, until, partition, &mut id, &waker) {
            Watch::Ready(all) => Watched::Ready(all),
            Watch::Pending => Watched::Pending(Waiting { id, task }),
            Watch::Gone => Watched::Gone,
        }
    }

    /// [`Registry::expire_waits`] where no run is parked: how many waiters it woke.
    fn expire(r: &mut Registry, clock: impl Fn(i32) -> Option<DateTime<Utc>>) -> usize {
        let mut due = Vec::new();
        let woken = r.expire_waits_now(clock, &mut due);
        assert!(due.is_empty(), "no run is parked");
        woken
    }

    impl Registry {
        /// [`Registry::on_signal`], the runs it wakes woken at once.
        pub(crate) fn signal_now(&mut self, test_id: &str, arrival: Arrival) -> SignalOutcome {
            let mut wake = Wakers::default();
            let outcome = self.on_signal(test_id, arrival, &mut wake);
            wake.wake();
            outcome
        }

        /// [`Registry::expire_waits`], the runs it wakes woken at once.
        fn expire_waits_now(
            &mut self,
            clock: impl Fn(i32) -> Option<DateTime<Utc>>,
            due: &mut Vec<Parked>,
        ) -> usize {
            let mut wake = Wakers::default();
            let woken = self.expire_waits(clock, due, &mut wake);
            wake.wake();
            woken
        }
    }

    fn arrival(signal: &str) -> Arrival {
        sent(signal, signal)
    }

    /// An occurrence of `signal` from the send `send_id`.
    fn sent(signal: &str, send_id: &str) -> Arrival {
        Arrival::for_test(signal, send_id, "1")
    }

    fn ready(w: Watched) -> usize {
        match w {
            Watched::Ready(all) => all.len(),
            _ => panic!("not ready"),
        }
    }

    #[test]
    fn early_signals_move_into_the_run() {
        let mut r = Registry::new(Limits::default());
        assert_eq!(
            r.signal_now("t", arrival("a")),
            SignalOutcome::Buffered { evicted: vec![] }
        );
        assert_eq!(r.signal_now("t", arrival("a")), SignalOutcome::Duplicate);
        assert_eq!(r.start_test("t", None), TestOutcome::Started);
        assert_eq!(ready(watch(&mut r, "t", &["a"], 0, LATER, 0)), 1);
        assert_eq!(r.start_test("t", None), TestOutcome::Duplicate);
    }

    /// The runs a signal or a deadline wakes are handed to the caller, to be woken once the
    /// lock is let go, not woken under it.
    #[test]
    fn runs_are_woken_by_the_caller_after_the_lock() {
        use chrono::TimeZone as _;
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let mut r = Registry::new(Limits::default());
        r.start_test("t1", None);
        r.start_test("t2", None);
        let Watched::Pending(signalled) = watch(&mut r, "t1", &["a"], 0, LATER, 0) else {
            panic!()
        };
        let Watched::Pending(due) = watch(&mut r, "t2", &["b"], 0, at(10), 0) else {
            panic!()
        };
        let mut wake = Wakers::default();
        assert_eq!(
            r.on_signal("t1", arrival("a"), &mut wake),
            SignalOutcome::Delivered
        );
        let mut parked = Vec::new();
        assert_eq!(r.expire_waits(|_| Some(at(10)), &mut parked, &mut wake), 1);
        assert!(!signalled.woken() && !due.woken(), "nothing woken yet");
        wake.wake();
        assert!(signalled.woken() && due.woken(), "both woken by the caller");
        wake.wake();
        assert!(!signalled.woken() && !due.woken(), "once");

        // Dropped unwoken (an early return, a panic), it wakes them: none waits for ever.
        r.start_test("t3", None);
        let Watched::Pending(dropped) = watch(&mut r, "t3", &["c"], 0, LATER, 0) else {
            panic!()
        };
        let mut wake = Wakers::default();
        r.on_signal("t3", arrival("c"), &mut wake);
        assert!(!dropped.woken());
        drop(wake);
        assert!(dropped.woken(), "woken when dropped");
    }

    #[test]
    fn only_the_matching_waiter_wakes() {
        let mut r = Registry::new(Limits::default());
        r.start_test("t1", None);
        r.start_test("t2", None);
        let Watched::Pending(rx1) = watch(&mut r, "t1", &["a"], 0, LATER, 0) else {
            panic!()
        };
        let Watched::Pending(rx2) = watch(&mut r, "t2", &["a"], 0, LATER, 0) else {
            panic!()
        };
        let Watched::Pending(rx3) = watch(&mut r, "t1", &["b"], 0, LATER, 0) else {
            panic!()
        };
        assert_eq!(r.signal_now("t1", arrival("a")), SignalOutcome::Delivered);
        assert!(rx1.woken());
        assert!(!rx2.woken());
        assert!(!rx3.woken());
    }

    #[test]
    fn the_early_buffer_is_bounded_and_evicts_the_oldest() {
        let limits = Limits {
            max_early_tests: 2,
            max_early_signals_per_test: 1,
            ..Limits::default()
        };
        let mut r = Registry::new(limits);
        r.signal_now("t1", arrival("a"));
        r.signal_now("t2", arrival("a"));
        assert_eq!(r.signal_now("t2", arrival("b")), SignalOutcome::BufferFull);
        assert!(matches!(
            r.signal_now("t3", arrival("a")),
            SignalOutcome::Buffered { evicted } if evicted.len() == 1
        ));
        assert_eq!(r.early_tests(), 2);
        assert_eq!(r.start_test("t1", None), TestOutcome::Started);
        assert!(matches!(
            watch(&mut r, "t1", &["a"], 0, LATER, 0),
            Watched::Pending(_)
        ));
    }

    /// The run loop reads the count without the lock: every change to the early signals
    /// must keep it (a wrong count pauses or resumes the signals partitions wrongly).
    #[test]
    fn the_count_of_early_tests_follows_every_change() {
        let mut r = Registry::new(Limits {
            max_early_tests: 2,
            ..Limits::default()
        });
        let count = r.early_count();
        let seen = |r: &Registry| {
            assert_eq!(
                count.load(std::sync::atomic::Ordering::Relaxed),
                r.early_tests()
            );
            r.early_tests()
        };
        assert!(matches!(
            r.signal_now("t1", arrival("a")),
            SignalOutcome::Buffered { .. }
        ));
        assert_eq!(seen(&r), 1);
        assert_eq!(r.signal_now("t1", arrival("a")), SignalOutcome::Duplicate);
        assert_eq!(seen(&r), 1);
        r.signal_now("t2", arrival("a"));
        assert_eq!(seen(&r), 2);
        // Evicts t1's.
        assert!(matches!(
            r.signal_now("t3", arrival("a")),
            SignalOutcome::Buffered { evicted } if evicted.len() == 1
        ));
        assert_eq!(seen(&r), 2);
        assert_eq!(r.start_test("t2", Some(0)), TestOutcome::Started);
        assert_eq!(seen(&r), 1);
        r.expire_early(Instant::now() + Limits::default().early_ttl * 2);
        assert_eq!(seen(&r), 0);
        r.signal_now("t4", arrival("a"));
        assert_eq!(seen(&r), 1);
        r.cancel_partition(0);
        assert_eq!(seen(&r), 0);
        // A test skipped (or decided elsewhere) drops its early signals.
        r.signal_now("t5", arrival("a"));
        assert_eq!(seen(&r), 1);
        assert_eq!(r.mark_finished("t5", Some(0)).len(), 1);
        assert_eq!(seen(&r), 0);
    }

    #[test]
    fn finished_tests_release_memory_and_turn_signals_late() {
        let mut r = Registry::new(Limits::default());
        r.start_test("t", None);
        r.signal_now("t", arrival("a"));
        r.signal_now("t", arrival("b"));
        let finished = r.finish_test("t").unwrap();
        assert_eq!(finished.arrived.len(), 2);
        assert_eq!(finished.records.len(), 2);
        assert_eq!(r.in_flight(), 0);
        assert_eq!(r.signal_now("t", arrival("c")), SignalOutcome::Late);
        assert_eq!(r.start_test("t", None), TestOutcome::Duplicate);
    }

    #[test]
    fn room_left_by_a_burst_is_given_back() {
        let mut r = Registry::new(Limits::default());
        let ids: Vec<String> = (0..20_000).map(|i| format!("t{i}")).collect();
        for id in &ids {
            r.start_test(id, None);
            r.signal_now(&format!("early-{id}"), arrival("a"));
        }
        let peak = (r.running.capacity(), r.early.capacity());
        r.shrink();
        assert_eq!(
            (r.running.capacity(), r.early.capacity()),
            peak,
            "full: kept"
        );
        for id in &ids[100..] {
            assert!(r.finish_test(id).is_some());
        }
        r.expire_early(Instant::now() + Limits::default().early_ttl * 2);
        r.shrink();
        assert!(
            r.running.capacity() < peak.0 / 8,
            "{}",
            r.running.capacity()
        );
        assert!(r.running.capacity() >= 200);
        assert!(
            r.early.capacity() <= SHRINK_ABOVE * 2,
            "{}",
            r.early.capacity()
        );
        // What is left is still there.
        assert!(matches!(
            watch(&mut r, &ids[0], &["a"], 0, LATER, 0),
            Watched::Pending(_)
        ));
        assert_eq!(r.in_flight(), 100);
    }

    #[test]
    fn finished_ids_are_kept_compactly_and_told_apart_exactly_as_texts() {
        let id = "0b6a5f0e-3c1d-4e59-9a57-2f1c1d9b7c11";
        assert!(matches!(TestKey::new(id), TestKey::Uuid(_)));
        // The same UUID spelled otherwise is another test id, kept as text.
        let upper = id.to_uppercase();
        let simple = id.replace('-', "");
        // And 36 bytes that are no UUID's canonical text, or no UUID.
        let mixed = format!("{}{}", &id[..35], "C");
        let braced = format!("{{{}}}", &id[..34]);
        let urn = format!("urn:uuid:{}", &id[..27]);
        let no_hyphens = format!("{}{}", simple, "abcd");
        for other in [
            upper.as_str(),
            simple.as_str(),
            mixed.as_str(),
            braced.as_str(),
            urn.as_str(),
            no_hyphens.as_str(),
            "order-42",
            "",
        ] {
            assert!(matches!(TestKey::new(other), TestKey::Text(_)), "{other}");
            assert_ne!(TestKey::new(other), TestKey::new(id), "{other}");
        }
        assert!(std::mem::size_of::<TestKey>() <= 24);

        let mut r = Registry::new(Limits {
            max_finished: 2,
            ..Limits::default()
        });
        for test in [id, upper.as_str(), "order-42"] {
            assert_eq!(r.start_test(test, None), TestOutcome::Started, "{test}");
            assert!(r.finish_test(test).is_some());
        }
        // The oldest of the three is forgotten; the other two are recognised.
        assert_eq!(r.start_test(&upper, None), TestOutcome::Duplicate);
        assert_eq!(r.start_test("order-42", None), TestOutcome::Duplicate);
        assert_eq!(r.signal_now("order-42", arrival("a")), SignalOutcome::Late);
        assert_eq!(r.start_test(id, None), TestOutcome::Started);
    }

    #[test]
    fn giving_up_one_wait_keeps_another_on_the_same_signal() {
        let mut r = Registry::new(Limits::default());
        r.start_test("t", None);
        let Watched::Pending(mut first) = watch(&mut r, "t", &["a"], 0, LATER, 0) else {
            panic!()
        };
        let Watched::Pending(second) = watch(&mut r, "t", &["a"], 0, LATER, 0) else {
            panic!()
        };
        r.cancel_wait("t", first.id.take().unwrap());
        assert_eq!(r.signal_now("t", arrival("a")), SignalOutcome::Delivered);
        assert!(second.woken());
        assert!(!first.woken(), "the wait given up is not woken");
        // With no waiter left, a step is stored.
        assert_eq!(r.signal_now("t", arrival("b")), SignalOutcome::Stored);
    }

    /// A wait polled again keeps its one waiter (its task's latest waker is the one woken);
    /// a step takes the waiter away, and the next look gets the step, with no waiter left.
    #[test]
    fn a_wait_polled_again_keeps_one_waiter_with_its_latest_waker() {
        let mut r = Registry::new(Limits::default());
        r.start_test("t", None);
        let (old, new) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let mut id = None;
        let watch = |r: &mut Registry, id: &mut Option<u32>, task: &Arc<Task>| {
            r.watch("t", &["a"], 0, LATER, 0, id, &Waker::from(task.clone()))
        };
        assert!(matches!(watch(&mut r, &mut id, &old), Watch::Pending));
        let first = id;
        assert!(matches!(watch(&mut r, &mut id, &new), Watch::Pending));
        assert_eq!(id, first, "the same waiter");
        assert_eq!(r.running[&TestKey::new("t")].waiters.len(), 1);
        assert_eq!(r.signal_now("t", arrival("a")), SignalOutcome::Delivered);
        let woken = |t: &Arc<Task>| t.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!((woken(&old), woken(&new)), (0, 1));
        assert!(matches!(watch(&mut r, &mut id, &new), Watch::Ready(all) if all.len() == 1));
        assert_eq!(id, None);
        assert!(r.running[&TestKey::new("t")].waiters.is_empty());
    }

    /// Deadlines are woken by the partition's clock, earliest first, each once, a test's
    /// later waits still queued; a partition whose clock is not known yet wakes nothing.
    #[test]
    fn waits_wake_when_their_partition_clock_passes_their_deadline() {
        use chrono::TimeZone as _;
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let uuid = "3f0b6c1e-5d2a-4c8e-9b7a-0e1d2c3b4a59";
        let mut r = Registry::new(Limits::default());
        for id in ["t", uuid, "other"] {
            r.start_test(id, None);
        }
        let pending = |w: Watched| match w {
            Watched::Pending(rx) => rx,
            _ => panic!("pending"),
        };
        let t_late = pending(watch(&mut r, "t", &["a"], 0, at(20), 0));
        let t_soon = pending(watch(&mut r, "t", &["b"], 0, at(10), 0));
        let u = pending(watch(&mut r, uuid, &[], 0, at(10), 0));
        let other = pending(watch(&mut r, "other", &["a", "b"], 0, at(5), 1));
        // Partition 1's clock is not known: nothing there wakes.
        let clock = |now: i64| move |p: i32| (p == 0).then(|| at(now));
        assert_eq!(expire(&mut r, clock(9)), 0);
        assert_eq!(expire(&mut r, clock(10)), 2, "both waits due at 10 s");
        assert!(t_soon.woken() && u.woken());
        assert!(!t_late.woken(), "the later wait of the same test stays");
        assert_eq!(expire(&mut r, clock(19)), 0);
        assert_eq!(expire(&mut r, clock(25)), 1);
        assert!(t_late.woken());
        assert!(!other.woken());
        assert_eq!(
            expire(&mut r, |_| Some(at(5))),
            1,
            "partition 1's clock known now"
        );
        assert!(other.woken());
        assert!(r.deadlines.is_empty(), "nothing left queued");
        // A wait that ended sooner (its step came) leaves an entry that wakes nothing.
        let _rx = pending(watch(&mut r, "t", &["a"], 0, at(30), 0));
        assert_eq!(r.signal_now("t", arrival("a")), SignalOutcome::Delivered);
        assert_eq!(expire(&mut r, clock(40)), 0);
        assert!(r.deadlines.is_empty());
    }

    /// Deadlines are queued as nanoseconds, which cannot say every time: one the queue
    /// rounds (past 2262, before 1677, the epoch itself) still wakes its wait only once the
    /// clock has passed it, and a pass over the queue ends whatever the times.
    #[test]
    fn deadlines_past_what_nanoseconds_hold_wake_in_order_and_never_spin() {
        use chrono::TimeZone as _;
        let far = |s: i64| Utc.timestamp_opt(10_000_000_000 + s, 0).unwrap(); // year 2286
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        let mut r = Registry::new(Limits::default());
        for id in ["far", "never", "epoch", "early"] {
            r.start_test(id, None);
        }
        let pending = |w: Watched| match w {
            Watched::Pending(rx) => rx,
            _ => panic!("pending"),
        };
        let far_wait = pending(watch(&mut r, "far", &["a"], 0, far(20), 0));
        let never = pending(watch(
            &mut r,
            "never",
            &["a"],
            0,
            DateTime::<Utc>::MAX_UTC,
            0,
        ));
        let epoch_wait = pending(watch(&mut r, "epoch", &["a"], 0, epoch, 1));
        let early = pending(watch(
            &mut r,
            "early",
            &["a"],
            0,
            DateTime::<Utc>::MIN_UTC,
            2,
        ));
        // A clock past 2262 but before the far deadline: nothing due, and the pass ends
        // (the far deadline and the clock are both past what nanoseconds hold).
        assert_eq!(expire(&mut r, |p| (p == 0).then(|| far(10))), 0);
        assert!(!far_wait.woken() && !never.woken());
        // A deadline past 2262 is never reached, even by a clock past it.
        assert_eq!(expire(&mut r, |p| (p == 0).then(|| far(30))), 0);
        // The epoch: due a nanosecond after it, not before.
        let ns = chrono::TimeDelta::nanoseconds(1);
        assert_eq!(expire(&mut r, |p| (p == 1).then(|| epoch - ns)), 0);
        assert_eq!(expire(&mut r, |p| (p == 1).then_some(epoch)), 0);
        assert_eq!(expire(&mut r, |p| (p == 1).then(|| epoch + ns)), 1);
        assert!(epoch_wait.woken());
        // Before 1677: due once the clock is later than that, not while it is as early.
        assert_eq!(
            expire(&mut r, |p| (p == 2).then_some(DateTime::<Utc>::MIN_UTC)),
            0
        );
        assert_eq!(expire(&mut r, |p| (p == 2).then_some(epoch)), 1);
        assert!(early.woken());
    }

    /// Waits that ended before their deadline leave entries behind; once those outnumber
    /// the runs, a sweep keeps only the entries of waiters still in place.
    #[test]
    fn entries_of_waits_that_ended_sooner_are_dropped_by_a_sweep() {
        use chrono::TimeZone as _;
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let mut r = Registry::new(Limits::default());
        r.start_test("live", None);
        let Watched::Pending(live) = watch(&mut r, "live", &["a"], 0, at(5_000), 0) else {
            panic!("pending")
        };
        let ended = SHRINK_ABOVE + 10;
        for i in 0..ended {
            let id = uuid::Uuid::new_v4().to_string();
            r.start_test(&id, None);
            let _ = watch(&mut r, &id, &["a"], 0, at(i as i64), (i % 3) as i32);
            r.finish_test(&id);
        }
        let queued = |r: &Registry| r.deadlines.values().map(BinaryHeap::len).sum::<usize>();
        assert_eq!(queued(&r), ended + 1);
        r.shrink();
        assert_eq!(queued(&r), 1, "only the waiter still in place");
        assert_eq!(expire(&mut r, |_| Some(at(5_000))), 1);
        assert!(live.woken());
    }

    #[test]
    fn a_revoked_partition_drops_its_runs_and_early_signals() {
        let mut r = Registry::new(Limits::default());
        r.start_test("done0", Some(0));
        r.finish_test("done0").unwrap();
        r.mark_finished("done1", Some(1));
        r.start_test("on0", Some(0));
        r.start_test("on1", Some(1));
        r.signal_now("early0", arrival("a")); // arrival() is on partition 0
        assert_eq!(r.cancel_partition(0), 1);
        assert_eq!(r.in_flight(), 1);
        assert_eq!(r.early_tests(), 0);
        // Not finished: its records, read again, start it again.
        assert_eq!(r.start_test("on0", Some(0)), TestOutcome::Started);
        // What was decided on the revoked partition is known from the reports topic, not
        // from this memory; the other partitions' decisions stay.
        assert_eq!(r.start_test("done0", Some(0)), TestOutcome::Started);
        assert_eq!(r.start_test("done1", Some(1)), TestOutcome::Duplicate);
    }

    #[test]
    fn a_test_decided_again_after_a_revoke_is_not_forgotten_early() {
        let mut r = Registry::new(Limits {
            max_finished: 2,
            ..Limits::default()
        });
        r.mark_finished("a", Some(0));
        r.cancel_partition(0);
        // Decided again by this runner (the partition came back), then one more test.
        r.mark_finished("a", Some(0));
        r.mark_finished("b", Some(1));
        // Both fit in max_finished: "a"'s stale entry must not have evicted "a".
        assert_eq!(r.start_test("a", Some(0)), TestOutcome::Duplicate);
        assert_eq!(r.start_test("b", Some(1)), TestOutcome::Duplicate);
    }

    #[test]
    fn stale_early_signals_expire() {
        let limits = Limits {
            early_ttl: Duration::from_millis(0),
            ..Limits::default()
        };
        let mut r = Registry::new(limits);
        r.signal_now("t", arrival("a"));
        assert_eq!(
            r.expire_early(Instant::now() + Duration::from_millis(1))
                .len(),
            1
        );
        assert_eq!(r.early_tests(), 0);
    }

    #[test]
    fn every_send_is_an_occurrence_and_a_redelivery_is_not() {
        let mut r = Registry::new(Limits::default());
        r.start_test("t", None);
        assert_eq!(
            r.signal_now("t", sent("debited", "s1")),
            SignalOutcome::Stored
        );
        // The transport delivers the same send again: one occurrence.
        assert_eq!(
            r.signal_now("t", sent("debited", "s1")),
            SignalOutcome::Duplicate
        );
        // The service sends the step again: a second occurrence.
        assert_eq!(
            r.signal_now("t", sent("debited", "s2")),
            SignalOutcome::Stored
        );
        assert_eq!(ready(watch(&mut r, "t", &["debited"], 0, LATER, 0)), 2);
        assert!(matches!(
            watch(&mut r, "t", &["debited"], 2, LATER, 0),
            Watched::Pending(_)
        ));
        // Without send ids, the same time and value is the same send.
        let mut a = sent("credited", "x");
        a.send_id = None;
        let mut b = sent("credited", "y");
        b.send_id = None;
        b.sent_at = a.sent_at;
        assert_eq!(r.signal_now("t", a), SignalOutcome::Stored);
        assert_eq!(r.signal_now("t", b), SignalOutcome::Duplicate);
    }

    #[test]
    fn a_run_past_the_per_test_limit_is_marked() {
        let limits = Limits {
            max_early_signals_per_test: 2,
            ..Limits::default()
        };
        let mut r = Registry::new(limits);
        r.start_test("t", None);
        r.signal_now("t", sent("a", "1"));
        r.signal_now("t", sent("a", "2"));
        assert_eq!(r.signal_now("t", sent("a", "3")), SignalOutcome::BufferFull);
        assert!(r.occurrences("t").unwrap().1, "counts are not known");
        // Dropped before the test record came: the same.
        r.signal_now("early", sent("a", "1"));
        r.signal_now("early", sent("a", "2"));
        assert_eq!(
            r.signal_now("early", sent("a", "3")),
            SignalOutcome::BufferFull
        );
        r.start_test("early", None);
        assert!(r.occurrences("early").unwrap().1);
    }

    #[test]
    fn hops_never_crowd_out_steps_nor_mark_the_counts_unknown() {
        let limits = Limits {
            max_early_signals_per_test: 2,
            ..Limits::default()
        };
        let mut r = Registry::new(limits);
        r.start_test("t", None);
        let hop = crate::hop::HOP_SIGNAL;
        for i in 0..MAX_HOPS_PER_TEST {
            r.signal_now("t", sent(hop, &format!("h{i}")));
        }
        assert_eq!(
            r.signal_now("t", sent(hop, "one more")),
            SignalOutcome::HopsFull
        );
        assert_eq!(r.signal_now("t", sent("a", "1")), SignalOutcome::Stored);
        assert_eq!(r.signal_now("t", sent("a", "2")), SignalOutcome::Stored);
        assert!(!r.occurrences("t").unwrap().1, "the step counts are known");
        assert_eq!(r.signal_now("t", sent("a", "3")), SignalOutcome::BufferFull);
    }

    fn parked(id: &str, partition: i32) -> Box<Parked> {
        Box::new(Parked {
            case: Arc::new(crate::Case::new("c")),
            context: Arc::new(crate::TestContext::new("c", Duration::from_secs(60))),
            pos: Pos {
                topic: Arc::from("tests"),
                partition,
                offset: id.len() as i64,
            },
            event_at: None,
        })
    }

    #[test]
    fn a_parked_run_wakes_on_its_first_record_and_is_counted_until_it_goes() {
        let mut r = Registry::new(Limits::default());
        let before = Instant::now();
        for id in ["t1", "t2", "t3", "t4"] {
            assert_eq!(r.start_test(id, None), TestOutcome::Started);
            assert!(r.park(id, parked(id, 0), LATER).is_none());
        }
        assert_eq!((r.parked(), r.in_flight()), (4, 4));
        assert!(r.is_parked("t1"));
        // A step wakes it; the step is kept for the run.
        assert_eq!(r.signal_now("t1", arrival("a")), SignalOutcome::Woke);
        assert!(r.take_parked("t1").is_some());
        assert!(r.take_parked("t1").is_none(), "taken once");
        assert_eq!(ready(watch(&mut r, "t1", &["a"], 0, LATER, 0)), 1);
        assert_eq!(r.signal_now("t1", arrival("b")), SignalOutcome::Stored);
        // A duplicate of a parked test's step does not wake it twice.
        assert_eq!(r.signal_now("t2", sent("a", "1")), SignalOutcome::Woke);
        assert_eq!(r.signal_now("t2", sent("a", "1")), SignalOutcome::Duplicate);
        assert!(r.take_parked("t2").is_some());
        assert_eq!(r.parked(), 2);
        // Finished, cancelled with its partition, or all at shutdown: no longer counted.
        assert!(r.finish_test("t3").is_some());
        assert_eq!(r.parked(), 1);
        // Parked for `max_run_time`: taken out to be started (and stopped), by when their
        // records were read.
        let max = Duration::from_secs(60);
        let mut due = Vec::new();
        assert_eq!(r.abort_overdue(max, before + max, &mut due), 0);
        assert!(due.is_empty());
        let later = Instant::now() + max + Duration::from_millis(200);
        assert_eq!(r.abort_overdue(max, later, &mut due), 3, "t1, t2 and t4");
        assert_eq!(due.len(), 1);
        assert_eq!(r.parked(), 0);
        assert_eq!(r.cancel_all(), 3);
        assert_eq!((r.parked(), r.in_flight()), (0, 0));
    }

    #[test]
    fn a_test_with_records_already_is_not_parked() {
        let mut r = Registry::new(Limits::default());
        r.signal_now("t", arrival("a"));
        assert_eq!(r.start_test("t", None), TestOutcome::Started);
        assert!(
            r.park("t", parked("t", 0), LATER).is_some(),
            "handed back: start it now"
        );
        assert!(r.park("unknown", parked("unknown", 0), LATER).is_some());
        assert_eq!(r.parked(), 0);
    }

    /// A parked run is started by its partition's clock passing its first step's deadline,
    /// in the queue the waits use; not before, not twice, and not once a record started it.
    #[test]
    fn a_parked_run_starts_when_its_first_step_is_due() {
        use chrono::TimeZone as _;
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap();
        let uuid = "3f0b6c1e-5d2a-4c8e-9b7a-0e1d2c3b4a59";
        let mut r = Registry::new(Limits::default());
        for (id, partition, due) in [
            ("soon", 0, 10),
            (uuid, 0, 20),
            ("woken", 0, 10),
            ("p1", 1, 5),
        ] {
            assert_eq!(r.start_test(id, None), TestOutcome::Started);
            assert!(r.park(id, parked(id, partition), at(due)).is_none());
        }
        // Started by a record before its deadline: the deadline then starts nothing.
        assert_eq!(r.signal_now("woken", arrival("a")), SignalOutcome::Woke);
        assert!(r.take_parked("woken").is_some());
        // Its first wait ends later than the parked deadline: queued again when that pops.
        let Watched::Pending(later) = watch(&mut r, "woken", &["b"], 0, at(35), 0) else {
            panic!("pending")
        };
        let clock = |now: i64| move |p: i32| (p == 0).then(|| at(now));
        let mut due = Vec::new();
        assert_eq!(r.expire_waits_now(clock(9), &mut due), 0);
        assert!(due.is_empty(), "not due yet");
        r.expire_waits_now(clock(10), &mut due);
        let started: Vec<_> = due.drain(..).map(|p| p.pos.offset).collect();
        assert_eq!(started, ["soon".len() as i64], "only the run due at 10 s");
        assert!(!r.is_parked("soon") && r.is_parked(uuid) && r.is_parked("p1"));
        assert_eq!(r.parked(), 2);
        assert_eq!(r.expire_waits_now(clock(30), &mut due), 0);
        assert_eq!(due.len(), 1, "the UUID's run, once");
        assert!(!later.woken());
        assert_eq!(r.expire_waits_now(clock(40), &mut due), 1, "the later wait");
        assert!(later.woken());
        assert_eq!(due.len(), 1, "not twice");
        // Partition 1's clock is known now.
        due.clear();
        r.expire_waits_now(|_| Some(at(5)), &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(r.parked(), 0);
        assert_eq!(r.in_flight(), 4, "started, not finished");
        // A started run's own waits use the same queue.
        let Watched::Pending(w) = watch(&mut r, "soon", &["a"], 0, at(50), 0) else {
            panic!("pending")
        };
        assert_eq!(expire(&mut r, clock(50)), 1);
        assert!(w.woken());
    }

    /// `max_run_time` stops a running task once it has passed, from when the test record
    /// was read, and a parked run (taken out to be started: its task is stopped as it is
    /// set); never a run that is concluding.
    /// A task that never ends unless the handle stops it; it ends `Err` once stopped.
    fn abortable_pending() -> (
        tokio::task::JoinHandle<Result<(), futures::future::Aborted>>,
        AbortHandle,
    ) {
        let (stop, registration) = AbortHandle::new_pair();
        let run = futures::future::Abortable::new(std::future::pending::<()>(), registration);
        (tokio::spawn(run), stop)
    }

    #[tokio::test]
    async fn max_run_time_stops_running_tasks_once_and_never_a_concluding_one() {
        let mut r = Registry::new(Limits::default());
        let mut tasks = Vec::new();
        for id in ["runs", "concludes", "parked"] {
            assert_eq!(r.start_test(id, Some(0)), TestOutcome::Started);
            if id == "parked" {
                assert!(r.park(id, parked(id, 0), LATER).is_none());
            } else {
                let (task, stop) = abortable_pending();
                r.set_task(id, stop);
                tasks.push((id, task));
            }
        }
        assert!(r.begin_conclusion("concludes"));
        let max = Duration::from_secs(60);
        let now = Instant::now();
        let mut due = Vec::new();
        assert_eq!(r.abort_overdue(max, now, &mut due), 0, "not yet");
        let later = now + max + Duration::from_secs(1);
        assert_eq!(r.abort_overdue(max, later, &mut due), 2);
        assert!(r.is_overdue("runs") && !r.is_overdue("concludes") && r.is_overdue("parked"));
        assert_eq!(due.len(), 1, "the parked run, to start");
        assert_eq!(r.parked(), 0);
        assert!(
            !r.begin_conclusion("runs"),
            "stopped: the runner concludes it"
        );
        assert_eq!(
            r.abort_overdue(max, now + max * 2, &mut due),
            0,
            "stopped once, whatever the later passes"
        );
        // The parked run's task, once started, is stopped as it is set.
        let (started, stop) = abortable_pending();
        r.set_task("parked", stop);
        assert!(started.await.is_ok_and(|run| run.is_err()), "stopped");
        for (id, task) in tasks {
            if id == "runs" {
                assert!(task.await.is_ok_and(|run| run.is_err()), "aborted");
            } else {
                assert!(!task.is_finished(), "{id} goes on");
                task.abort();
            }
        }
        // A test that is not running any more concludes as before (it publishes nothing).
        assert!(r.begin_conclusion("unknown"));
    }

    #[test]
    fn a_waiter_is_small() {
        // One per waiting run, in a vector of its own: 48 bytes is an allocation size
        // class less than 56.
        assert!(std::mem::size_of::<Steps>() <= 16);
        assert!(std::mem::size_of::<Waiter>() <= 48);
    }

    #[test]
    fn a_running_test_is_small() {
        // One slot per running test, boxed: the map's entries (room for up to twice as many
        // as the tests) hold a key and a pointer.
        assert_eq!(std::mem::size_of::<(TestKey, Box<Slot>)>(), 32);
        assert!(std::mem::size_of::<Slot>() <= 72);
    }
}
