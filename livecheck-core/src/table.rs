//! Tables: state a case keeps across its tests, kept in Kafka.
//!
//! Every case is a stream processor, so it can keep state: a [`Table`] is a typed map (serde
//! keys and values) that a case's expectations read and update through
//! [`Run::table`](crate::Run::table), and that survives restarts and rebalances because every
//! write goes to a compacted changelog topic, `{prefix}livecheck-table-{name}`
//! ([`crate::Topics::table`]). It is what business invariants are checked against: "the
//! open sell exposure of a user never exceeds their limit", "no more than 5 orders per user
//! per minute" ([`Window`]).
//!
//! ```
//! use livecheck_core::{ensure_invariant, Case, Run, Signal, Table};
//!
//! static ACCEPTED: Signal<u64> = Signal::new("orders.exposure", "order_accepted");
//! /// Open sell quantity per user.
//! static EXPOSURE: Table<String, u64> = Table::new("sell_exposure");
//!
//! let case = Case::new("orders.exposure")
//!     .route_by(|user: &String| user.clone()) // every test of a user on one instance
//!     .table(&EXPOSURE)
//!     .expect(|run: Run, user: String| async move {
//!         let quantity = run.wait(&ACCEPTED).await?;
//!         let open = run.table(&EXPOSURE).update(user.clone(), |open| open.unwrap_or(0) + quantity)?;
//!         ensure_invariant!(open <= 100, "open sell exposure <= 100", key = user, open = open);
//!         Ok(())
//!     });
//! # let _ = case;
//! ```
//!
//! ## Partitioned or global
//!
//! - [`Table::new`]: **partitioned** like the tests. Its changelog has as many partitions as
//!   the tests topic, and the entry for key `k` lives on partition
//!   `murmur2(route(k)) % partitions`, the partition of every test routed by `route(k)`
//!   ([`crate::TestContext::route`]: [`crate::Case::route_by`] for a stimulus's tests,
//!   [`crate::Trigger::maybe_trigger_for_key`] for live traffic). So the runner that owns a
//!   test's partition holds every entry that test may touch, restores those entries before it
//!   runs the partition's tests, and drops them when the partition goes. A test may only read
//!   and write keys of its own partition: another key is an `ERROR` that says to route the
//!   case by it. `route(k)` is the key itself for a string key, its JSON for any other type.
//!   Use it for state per business key that tests update (per-user exposure, per-account
//!   balances, windows).
//! - [`Table::global`]: every runner reads the whole changelog, from its start when it starts
//!   and continuously after; tests only read it. Write it with [`Table::publish`] (from a
//!   service, a loader, an admin tool). Use it for small reference data every test may need
//!   (limits per tier, a list of blocked instruments).
//!
//! A test whose key changes partition on a rebalance is no different from any other test of
//! that partition: its new owner restores the partition's entries (and the reports of the
//! tests decided there) before it runs any of its tests, and runs the test again from its
//! records if it was not decided.
//!
//! ## Exactly once
//!
//! A test that is run again (its runner stopped or lost the partition before its verdict
//! was committed) does not apply its writes twice. Each write is numbered among the run's
//! writes to its entry, and the entry records `(test id, write number, the value it left)` until the
//! test's record is committed; the changelog record of the entry carries that list. A run
//! again of the test finds its write there and gets the value it left, without applying it
//! again. So an update that reads the current value and writes the next one must be one
//! call ([`TableView::update`], [`WindowView::add`]); a `get` then an `insert` is two calls,
//! and the `get` of a run again sees the value after its first run's write (and a
//! [`TableView::remove`] run again returns `None`). `change` runs under the store's lock:
//! keep it short.
//!
//! A run's writes are acknowledged by Kafka before its report is published, so a decided
//! test's writes are in the changelog. Writes happen when they are made: tests of one key
//! that run at the same time see each other's writes in the order they made them.
//!
//! ## Changelog records
//!
//! Key: `route(k)` (UTF-8). Value: JSON `{"v": <value>, "ops": [{"t": <test id>, "o":
//! <test record offset>, "n": <write number>, "r": <what a run again gets>}], "e":
//! <owner epoch>}`. `"v"` is absent when the entry was removed while some of its writes
//! still wait for their commit; a record without a value (a tombstone) removes the entry.
//! An entry's record stays under [`MAX_RECORD_BYTES`]: past it the oldest writes lose their
//! `"r"` (still recognised, never applied twice; a run again gets the current value).
//!
//! Each owner of a partition writes a fence `{"fence": <epoch>}` (key `livecheck.fence\0`)
//! when it has restored the partition, before any of its writes, with an epoch above every
//! one it read. A record of an older epoch read after a newer one is skipped
//! (`table_records_fenced`): it was written late by a runner that had lost the partition,
//! for a test whose report it never published (the new owner runs that test again).
//!
//! A record that does not decode is counted (`table_records_malformed`), logged with its
//! topic, partition and offset, and skipped.
//!
//! ## Known limitations
//! - Without a consumer group ([`crate::RunnerConfig::group_id`] `None`), nothing is
//!   committed: a runner that starts from the beginning of the tests topic runs every test
//!   there again, and an entry recognises only the writes it still remembers
//!   ([`MAX_WRITES_PER_ENTRY`], more while they are undecided), so older ones are applied
//!   again. Use a group (as the `livecheck` service does) wherever the tables must be exact.
//! - A write made by an owner before its fence and delivered after the next owner read the
//!   partition is missing from the next owner's entry (it runs that test again, so the
//!   write is made again), and it is in the log before the next owner's fence, so a later
//!   restore reads it in order; only a write delivered after a newer fence is skipped.
//! - A global table is written only with [`Table::publish`]; it is read whole into every
//!   runner's memory.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{debug, info, warn};

use crate::check::CheckError;
use crate::client::{KafkaConfig, LiveCheck};
use crate::connectivity::{Connectivity, ConnectivityContext};
use crate::counters::{bump, RunnerCounters};
use crate::error::Error;
use crate::murmur2::partition_for;
use crate::polled::{AckContext, Acked, Polled};
use crate::run::Run;
use crate::scan;

/// How many writes of tests not yet committed an entry remembers; older ones are dropped
/// (counted in `table_writes_forgotten`). In a consumer group a write is forgotten when its
/// test's record is committed, long before.
pub const MAX_WRITES_PER_ENTRY: usize = 256;

/// How many events a sliding [`Window`] keeps per key; past that the two oldest are merged
/// (their counts and sums kept, at the later time).
pub const MAX_WINDOW_EVENTS: usize = 4096;

/// The partition of a global table's entries in the store (they are not split by owner).
const GLOBAL: i32 = -1;

/// A table a case declares ([`crate::Case::table`]): its name and whether it is global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableSpec {
    /// The table's name (its changelog is [`crate::Topics::table`] of it).
    pub name: &'static str,
    /// Read whole by every runner ([`Table::global`]) rather than partitioned like the tests.
    pub global: bool,
}

/// Something a case can declare as its state: a [`Table`] or a [`Window`].
pub trait Declared {
    /// The table behind it.
    fn spec(&self) -> TableSpec;
}

/// A typed table of a case's state, backed by a compacted changelog topic (see the
/// [module docs](crate::table)). Declare it once, as a `static`, and on each case that uses
/// it ([`crate::Case::table`]).
pub struct Table<K, V> {
    name: &'static str,
    global: bool,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("global", &self.global)
            .finish()
    }
}

impl<K, V> Table<K, V> {
    /// A table partitioned like the tests: read and written by the tests routed by its keys.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            global: false,
            _types: PhantomData,
        }
    }

    /// A global table: every runner reads all of it; tests read it, [`Table::publish`]
    /// writes it.
    pub const fn global(name: &'static str) -> Self {
        Self {
            name,
            global: true,
            _types: PhantomData,
        }
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<K, V> Declared for Table<K, V> {
    fn spec(&self) -> TableSpec {
        TableSpec {
            name: self.name,
            global: self.global,
        }
    }
}

impl<K: Serialize, V: Serialize> Table<K, V> {
    /// Writes `value` for `key` to the table's changelog (`None` removes the entry), for
    /// every runner to read: how a global table is filled. Enqueued like a signal (delivery
    /// failures are counted in the client's `delivery_errors`); call it from a service or a
    /// loader, not from a test.
    pub async fn publish(
        &self,
        client: &LiveCheck,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), Error> {
        if !self.global {
            return Err(Error::Config(format!(
                "table {} is partitioned: its runs write it (a record from elsewhere would lose the writes it remembers); publish to global tables only",
                self.name
            )));
        }
        let route =
            route_of(key).map_err(|e| Error::Config(format!("table {}: {e}", self.name)))?;
        let payload = match value {
            Some(v) => {
                let v = serde_json::to_string(v).map_err(|e| {
                    Error::Config(format!(
                        "table {}: the value does not serialize: {e}",
                        self.name
                    ))
                })?;
                format!("{{\"v\":{v}}}").into_bytes()
            }
            None => Vec::new(),
        };
        let topic = client.topics().table(self.name);
        client
            .publish_table_record(
                &topic,
                &route,
                (!payload.is_empty()).then_some(&payload[..]),
            )
            .await
            .map_err(Error::kafka(format!("publishing to table {}", self.name)))
    }
}

/// A window of per-key counts and sums by event time, for anomaly rules ("more than 5
/// orders per user in a minute"). It is a partitioned table underneath, declared on the case
/// like one ([`crate::Case::table`]); add to it with [`Run::window`].
///
/// - [`Window::tumbling`]: fixed, back-to-back windows (`[0, size)`, `[size, 2·size)`, ... by
///   event time); the totals are those of the window the test's time falls in.
/// - [`Window::sliding`]: the totals of the `size` before the test's time, `(t - size, t]`.
///
/// The time of an [`WindowView::add`] is the test's event time (its test record's
/// timestamp), so a replay after a restart counts as the first run did.
pub struct Window<K> {
    name: &'static str,
    size: Duration,
    sliding: bool,
    _key: PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for Window<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("sliding", &self.sliding)
            .finish()
    }
}

impl<K> Window<K> {
    /// Back-to-back windows of `size`, aligned on the epoch.
    pub const fn tumbling(name: &'static str, size: Duration) -> Self {
        Self {
            name,
            size,
            sliding: false,
            _key: PhantomData,
        }
    }

    /// The `size` before each test's time.
    pub const fn sliding(name: &'static str, size: Duration) -> Self {
        Self {
            name,
            size,
            sliding: true,
            _key: PhantomData,
        }
    }

    /// The window's name (the name of its table).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How long it is.
    pub fn size(&self) -> Duration {
        self.size
    }
}

impl<K> Declared for Window<K> {
    fn spec(&self) -> TableSpec {
        TableSpec {
            name: self.name,
            global: false,
        }
    }
}

/// What a window holds for a key at a test's time: returned by [`WindowView::add`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowTotals {
    /// How many adds fall in the window (this one included).
    pub count: u64,
    /// The sum of their amounts.
    pub sum: f64,
    /// Where the window starts (exclusive for a sliding window).
    pub from: DateTime<Utc>,
    /// Where it ends: the test's time (sliding), the window's end (tumbling, exclusive).
    pub until: DateTime<Utc>,
}

/// A window's state for one key: `(time ms, count, sum)` events, oldest first.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct WindowState {
    #[serde(rename = "e")]
    events: Vec<(i64, u64, f64)>,
}

impl<K> Window<K> {
    /// Bounds of the window at `at` (ms): `(from, until)`, events with `from < t <= until`
    /// (sliding) or `from <= t < until` (tumbling) count.
    fn bounds(&self, at: i64) -> (i64, i64) {
        let size = i64::try_from(self.size.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        if self.sliding {
            (at.saturating_sub(size), at)
        } else {
            let from = at.div_euclid(size) * size;
            (from, from.saturating_add(size))
        }
    }

    fn contains(&self, (from, until): (i64, i64), t: i64) -> bool {
        if self.sliding {
            from < t && t <= until
        } else {
            from <= t && t < until
        }
    }

    /// `state` with `(at, 1, amount)` added and the events no window at or after `at` can
    /// count dropped.
    fn add_to(&self, mut state: WindowState, at: i64, amount: f64) -> WindowState {
        let (from, _) = self.bounds(at);
        // Events a later window cannot count; a test older than those that came before it
        // keeps what its own window needs.
        let newest = state.events.iter().map(|e| e.0).max().unwrap_or(at).max(at);
        let (keep_from, _) = self.bounds(newest);
        let keep_from = keep_from.min(from);
        state.events.retain(|e| {
            if self.sliding {
                e.0 > keep_from
            } else {
                e.0 >= keep_from
            }
        });
        let at_index = state.events.partition_point(|e| e.0 <= at);
        state.events.insert(at_index, (at, 1, amount));
        while state.events.len() > MAX_WINDOW_EVENTS {
            let (t, n, s) = state.events.remove(0);
            let next = &mut state.events[0];
            next.1 += n;
            next.2 += s;
            next.0 = next.0.max(t);
        }
        state
    }

    fn totals(&self, state: &WindowState, at: i64) -> WindowTotals {
        let bounds = self.bounds(at);
        let (count, sum) = state
            .events
            .iter()
            .filter(|e| self.contains(bounds, e.0))
            .fold((0, 0.0), |(n, s), e| (n + e.1, s + e.2));
        let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        WindowTotals {
            count,
            sum,
            from: time(bounds.0),
            until: time(bounds.1),
        }
    }
}

/// `route(k)`: a string key itself, the JSON of any other key.
pub(crate) fn route_of<K: Serialize + ?Sized>(key: &K) -> Result<String, String> {
    match serde_json::to_value(key) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(format!("the key does not serialize: {e}")),
    }
}

/// The key of a partition's fence record (see [`TableStore::restore`]).
const FENCE_KEY: &str = "livecheck.fence\u{0}";

/// A changelog record an entry's value may not exceed; past it the oldest writes' values
/// are not remembered (a run again of those tests gets the entry's current value).
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// One write an entry remembers until its test is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Applied {
    /// Test id.
    #[serde(rename = "t")]
    test: Box<str>,
    /// Offset of the test's record.
    #[serde(rename = "o")]
    offset: i64,
    /// Write number within the run.
    #[serde(rename = "n")]
    op: u32,
    /// What a run again of the test gets: the value the write left (a window: its totals);
    /// absent when it was not remembered (a record over [`MAX_RECORD_BYTES`]).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    result: Option<Box<RawValue>>,
}

/// An entry's changelog record, or a partition's fence (`fence` set, nothing else).
#[derive(Debug, Deserialize)]
struct ChangelogValue {
    #[serde(default)]
    v: Option<Box<RawValue>>,
    #[serde(default)]
    ops: Vec<Applied>,
    /// The epoch of the owner that wrote it.
    #[serde(rename = "e", default)]
    epoch: u64,
    #[serde(default)]
    fence: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Default)]
struct Entry {
    value: Option<Box<RawValue>>,
    ops: Vec<Applied>,
}

/// The entries of one table on one partition.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    entries: HashMap<Box<str>, Entry>,
    /// The newest owner's epoch seen on the partition (this owner's, once it fenced).
    epoch: u64,
    /// Records of an older owner read after a newer owner's: skipped.
    fenced: u64,
}

impl Shard {
    /// Applies a changelog record (`None`: a tombstone). A record of an owner older than
    /// one whose record came before it was written late by a runner that had lost the
    /// partition: it is skipped.
    fn apply(&mut self, route: &str, payload: Option<&[u8]>) -> Result<(), String> {
        let Some(payload) = payload else {
            self.entries.remove(route);
            return Ok(());
        };
        let record: ChangelogValue =
            serde_json::from_slice(payload).map_err(|e| format!("not a table entry: {e}"))?;
        if let Some(fence) = record.fence {
            self.epoch = self.epoch.max(fence);
            return Ok(());
        }
        if record.epoch < self.epoch {
            self.fenced += 1;
            return Ok(());
        }
        self.epoch = record.epoch;
        if record.v.is_none() && record.ops.is_empty() {
            self.entries.remove(route);
        } else {
            self.entries.insert(
                route.into(),
                Entry {
                    value: record.v,
                    ops: record.ops,
                },
            );
        }
        Ok(())
    }

    /// Forgets the writes of tests whose records are before `committed`; the keys of the
    /// entries that leave with them (removed, and no write left to remember).
    fn prune(&mut self, committed: i64) -> Vec<Box<str>> {
        let mut gone = Vec::new();
        self.entries.retain(|route, e| {
            e.ops.retain(|a| a.offset >= committed);
            let keep = e.value.is_some() || !e.ops.is_empty();
            if !keep {
                gone.push(route.clone());
            }
            keep
        });
        gone
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A write of a run waiting for its acknowledgement (awaited before the run's report).
pub(crate) struct PendingWrite {
    table: &'static str,
    partition: i32,
    route: Box<str>,
    delivery: Option<Acked>,
}

/// What a write gives back: what its first run remembered, or the entry's current value
/// when nothing was remembered.
pub(crate) enum Written {
    Remembered(Box<RawValue>),
    Current(Option<Box<RawValue>>),
}

thread_local! {
    /// Set while a write's `change` runs: a table call from inside it would deadlock.
    static IN_CHANGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn not_inside_change(table: &str) -> Result<(), CheckError> {
    if IN_CHANGE.with(std::cell::Cell::get) {
        return Err(CheckError::Error(format!(
            "table `{table}` used inside an update's closure: read or write tables before or after it"
        )));
    }
    Ok(())
}

struct StoreState {
    /// The tests topic's partition count (0 until known).
    partitions: i32,
    /// Per partition, tests whose reports were acknowledged (they are not run again), by
    /// test id, with their records' offsets: their writes may be forgotten first.
    decided: HashMap<i32, HashMap<Box<str>, i64>>,
    shards: HashMap<(&'static str, i32), Shard>,
    /// Per partition, the tests offset below which writes are forgotten (a commit known
    /// to have landed), and the last one sent.
    committed: HashMap<i32, (i64, i64)>,
}

/// Every table of a suite, as one runner holds them.
pub(crate) struct TableStore {
    specs: Vec<TableSpec>,
    topics: HashMap<&'static str, String>,
    state: Mutex<StoreState>,
    producer: OnceLock<Polled<AckContext>>,
    counters: Arc<RunnerCounters>,
}

impl fmt::Debug for TableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStore")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

/// A table's entries as the store hands them over for a status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// The table.
    pub name: &'static str,
    /// Global or partitioned.
    pub global: bool,
    /// Entries held by this runner.
    pub entries: usize,
}

impl TableStore {
    pub(crate) fn new(
        specs: Vec<TableSpec>,
        topics: &crate::client::Topics,
        counters: Arc<RunnerCounters>,
    ) -> Self {
        let topics = specs
            .iter()
            .map(|s| (s.name, topics.table(s.name)))
            .collect();
        Self {
            specs: specs.clone(),
            topics,
            state: Mutex::new(StoreState {
                partitions: 0,
                decided: HashMap::new(),
                // A global table without records reads as empty, not as missing.
                shards: specs
                    .iter()
                    .filter(|s| s.global)
                    .map(|s| ((s.name, GLOBAL), Shard::default()))
                    .collect(),
                committed: HashMap::new(),
            }),
            producer: OnceLock::new(),
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub(crate) fn specs(&self) -> &[TableSpec] {
        &self.specs
    }

    fn partitioned(&self) -> impl Iterator<Item = &TableSpec> {
        self.specs.iter().filter(|s| !s.global)
    }

    fn global(&self) -> impl Iterator<Item = &TableSpec> {
        self.specs.iter().filter(|s| s.global)
    }

    /// The changelog topics, partitioned ones first.
    pub(crate) fn topics(&self) -> Vec<(&str, bool)> {
        self.specs
            .iter()
            .map(|s| (self.topics[s.name].as_str(), s.global))
            .collect()
    }

    /// Creates the producer of the changelog writes (idempotent: a partition's writes land
    /// in the order they were made).
    pub(crate) fn start(
        &self,
        kafka: &KafkaConfig,
        connectivity: &Connectivity,
    ) -> Result<(), Error> {
        if self.is_empty() || self.producer.get().is_some() {
            return Ok(());
        }
        let producer = Polled::new(
            &kafka.client_config(&[
                ("enable.idempotence", "true"),
                ("linger.ms", "1"),
                ("message.timeout.ms", "30000"),
            ]),
            AckContext(connectivity.context()),
        )
        .map_err(Error::kafka("creating the tables' producer"))?;
        let _ = self.producer.set(producer);
        Ok(())
    }

    /// Waits (blocking) up to `timeout` for the writes enqueued so far.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Some(producer) = self.producer.get() {
            if let Err(err) = producer.flush(timeout) {
                warn!(error = %err, "not every table write was acknowledged at shutdown; their tests run again after a restart");
            }
        }
    }

    pub(crate) fn set_partitions(&self, partitions: i32) {
        self.lock().partitions = partitions;
    }

    pub(crate) fn partitions(&self) -> i32 {
        self.lock().partitions
    }

    /// Every partition of every partitioned table, empty (no group: nothing to restore
    /// from a commit; [`TableStore::restore`] fills them).
    pub(crate) fn install(
        &self,
        partition: i32,
        shards: Vec<(&'static str, Shard)>,
        committed: Option<i64>,
    ) {
        let mut state = self.lock();
        for spec in self.partitioned() {
            state.shards.entry((spec.name, partition)).or_default();
        }
        for (name, shard) in shards {
            state.shards.insert((name, partition), shard);
        }
        if let Some(committed) = committed {
            state.committed.insert(partition, (committed, committed));
        }
    }

    /// Forgets a partition's entries (revoked: its next owner restores them).
    pub(crate) fn drop_partition(&self, partition: i32) {
        let mut state = self.lock();
        state.shards.retain(|(_, p), _| *p != partition);
        state.committed.remove(&partition);
        state.decided.remove(&partition);
    }

    /// The report of test `test_id` (its record at `offset` of `partition`) was
    /// acknowledged: it is not run again, so its writes may be forgotten first.
    pub(crate) fn decided(&self, partition: i32, test_id: &str, offset: i64) {
        if !self.specs.iter().any(|s| !s.global) {
            return;
        }
        self.lock()
            .decided
            .entry(partition)
            .or_default()
            .insert(test_id.into(), offset);
    }

    /// A commit of the partition's tests before `offset` was sent. Commits are
    /// asynchronous: the writes of the tests before the *previous* such offset (one sweep
    /// earlier) are forgotten at the next write of their entries.
    pub(crate) fn committed(&self, partition: i32, offset: i64) {
        if self.is_empty() {
            return;
        }
        let mut state = self.lock();
        let entry = state.committed.entry(partition).or_insert((offset, offset));
        *entry = (entry.1.min(offset), offset);
        let forget_before = entry.0;
        if let Some(decided) = state.decided.get_mut(&partition) {
            decided.retain(|_, o| *o >= forget_before);
        }
    }

    /// Entries held per table.
    pub(crate) fn stats(&self) -> Vec<TableStats> {
        let state = self.lock();
        self.specs
            .iter()
            .map(|s| TableStats {
                name: s.name,
                global: s.global,
                entries: state
                    .shards
                    .iter()
                    .filter(|((n, _), _)| *n == s.name)
                    .map(|(_, shard)| shard.len())
                    .sum(),
            })
            .collect()
    }

    fn spec(&self, name: &str) -> Option<TableSpec> {
        self.specs.iter().find(|s| s.name == name).copied()
    }

    /// Where `route` of `table` lives for a test on `partition`: an error when the table
    /// is not declared, or the key is not on the test's partition.
    fn place(
        &self,
        state: &StoreState,
        table: &str,
        case: &str,
        route: &str,
        partition: i32,
    ) -> Result<(&'static str, i32), CheckError> {
        let Some(spec) = self.spec(table) else {
            return Err(CheckError::Error(format!(
                "table `{table}` is not declared on case {case}: add `.table(&...)` to the case so the runner restores it"
            )));
        };
        if spec.global {
            return Ok((spec.name, GLOBAL));
        }
        if state.partitions <= 0 {
            return Err(CheckError::Error(format!(
                "table `{table}`: the runner does not know the partition count yet"
            )));
        }
        let wanted = partition_for(route.as_bytes(), state.partitions);
        if wanted != partition {
            return Err(CheckError::Error(format!(
                "table `{table}`: key {route:?} belongs to partition {wanted} and this test to partition {partition}: route the case by this key (Case::route_by, Trigger::maybe_trigger_for_key) so every test of the key runs where its entry is, or use a global table"
            )));
        }
        Ok((spec.name, partition))
    }

    /// Reads `route` of `table` for a test on `partition`.
    pub(crate) fn get(
        &self,
        table: &str,
        case: &str,
        route: &str,
        partition: i32,
    ) -> Result<Option<Box<RawValue>>, CheckError> {
        not_inside_change(table)?;
        let state = self.lock();
        let place = self.place(&state, table, case, route, partition)?;
        bump(&self.counters.here().table_reads);
        let Some(shard) = state.shards.get(&place) else {
            return Err(not_held(table, partition));
        };
        Ok(shard.entries.get(route).and_then(|e| e.value.clone()))
    }

    /// Applies write number `op` of test `test` (its record at `offset` of `partition`) to
    /// `route` of `table`: `change` gets the current value and gives the next (`None`
    /// removes) and what a run again of the test gets. A write this test made already (a
    /// run again) is not applied again: it gets what the first run remembered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write(
        &self,
        table: &str,
        case: &str,
        route: &str,
        partition: i32,
        test: (&str, i64, u32),
        change: impl FnOnce(
            Option<&RawValue>,
        ) -> Result<(Option<Box<RawValue>>, Box<RawValue>), CheckError>,
    ) -> Result<(Written, Option<PendingWrite>), CheckError> {
        not_inside_change(table)?;
        let (test_id, offset, op) = test;
        let mut guard = self.lock();
        let state = &mut *guard;
        let place = self.place(state, table, case, route, partition)?;
        if place.1 == GLOBAL {
            return Err(CheckError::Error(format!(
                "table `{table}` is global: tests read it; write it with Table::publish"
            )));
        }
        let committed = state.committed.get(&partition).map(|c| c.0);
        let decided = state.decided.get(&partition);
        let Some(shard) = state.shards.get_mut(&place) else {
            return Err(not_held(table, partition));
        };
        let epoch = shard.epoch;
        let current = shard.entries.get(route);
        if let Some(done) =
            current.and_then(|e| e.ops.iter().find(|a| &*a.test == test_id && a.op == op))
        {
            bump(&self.counters.here().table_writes_replayed);
            debug!(
                table,
                route,
                test_id,
                op,
                "write already applied by an earlier run of this test; not applied again"
            );
            let written = match &done.result {
                Some(r) => Written::Remembered(r.clone()),
                None => Written::Current(current.and_then(|e| e.value.clone())),
            };
            return Ok((written, None));
        }
        IN_CHANGE.with(|f| f.set(true));
        let changed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            change(current.and_then(|e| e.value.as_deref()))
        }));
        IN_CHANGE.with(|f| f.set(false));
        let (next, remembered) = match changed {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let entry = shard.entries.entry(route.into()).or_default();
        if let Some(committed) = committed {
            entry.ops.retain(|a| a.offset >= committed);
        }
        if entry.ops.len() >= MAX_WRITES_PER_ENTRY {
            self.make_room(entry, decided);
        }
        entry.value = next;
        entry.ops.push(Applied {
            test: test_id.into(),
            offset,
            op,
            result: Some(remembered.clone()),
        });
        bump(&self.counters.here().table_writes);
        let delivery = self.send(place.0, partition, route, entry, epoch);
        Ok((
            Written::Remembered(remembered),
            Some(PendingWrite {
                table: place.0,
                partition,
                route: route.into(),
                delivery,
            }),
        ))
    }

    /// An entry at [`MAX_WRITES_PER_ENTRY`] writes: forgets those of tests already decided
    /// (oldest first). Writes of undecided tests are kept up to four times the bound; past
    /// that the oldest go, counted in `table_writes_forgotten` and logged.
    fn make_room(&self, entry: &mut Entry, decided: Option<&HashMap<Box<str>, i64>>) {
        let over = entry.ops.len() + 1 - MAX_WRITES_PER_ENTRY;
        let mut dropped = 0;
        if let Some(decided) = decided {
            entry.ops.retain(|a| {
                let drop = dropped < over && decided.contains_key(&a.test);
                dropped += usize::from(drop);
                !drop
            });
        }
        let hard = 4 * MAX_WRITES_PER_ENTRY;
        if entry.ops.len() >= hard {
            let over = entry.ops.len() + 1 - hard;
            entry.ops.drain(..over);
            self.counters
                .here()
                .table_writes_forgotten
                .fetch_add(over as u64, std::sync::atomic::Ordering::Relaxed);
            warn!(
                over,
                "a table entry has more writes of undecided tests than it can remember; the oldest are forgotten (a run again of those tests would apply them again)"
            );
        }
    }

    /// Enqueues the changelog record of `entry` (under the store's lock: a partition's
    /// records are enqueued in the order of its writes). `None` when it could not be.
    fn send(
        &self,
        table: &'static str,
        partition: i32,
        route: &str,
        entry: &mut Entry,
        epoch: u64,
    ) -> Option<Acked> {
        let mut payload = encode_entry(entry, epoch);
        // Over budget: the oldest writes' results are not remembered (they are still
        // recognised, so not applied twice).
        while payload.len() > MAX_RECORD_BYTES {
            let Some(oldest) = entry.ops.iter_mut().find(|a| a.result.is_some()) else {
                break;
            };
            oldest.result = None;
            bump(&self.counters.here().table_results_dropped);
            payload = encode_entry(entry, epoch);
        }
        let producer = self.producer.get()?;
        let record = BaseRecord::to(&self.topics[table])
            .key(route)
            .partition(partition)
            .payload(&payload);
        match producer.send_acked(record) {
            Ok(delivery) => Some(delivery),
            Err(err) => {
                bump(&self.counters.here().table_write_errors);
                debug!(table, partition, route, error = %err, "table write not enqueued; retried");
                None
            }
        }
    }

    /// Waits until the writes are acknowledged, sending an entry again (as it is now: a
    /// later state of it is as good) when its write was refused. Gives up after `retry_for`
    /// unless `in_outage` says Kafka is unreachable; a write given up is counted and
    /// logged.
    pub(crate) async fn settle(
        &self,
        writes: Vec<PendingWrite>,
        retry_for: Duration,
        in_outage: impl Fn() -> bool,
    ) {
        let started = Instant::now();
        for mut write in writes {
            let mut attempts = 0u32;
            loop {
                let refused = match write.delivery.take() {
                    Some(delivery) => match delivery.await {
                        Ok(Ok(_)) => break,
                        Ok(Err(err)) => err.to_string(),
                        Err(_) => "the producer went away".to_owned(),
                    },
                    None => "not enqueued".to_owned(),
                };
                attempts += 1;
                if started.elapsed() > retry_for && !in_outage() {
                    bump(&self.counters.here().table_writes_lost);
                    tracing::error!(table = write.table, partition = write.partition, key = %write.route, error = %refused, retried_for = ?retry_for,
                        "table write LOST: Kafka refused it for longer than report_retry_for; the entry is written again at its next write");
                    break;
                }
                bump(&self.counters.here().table_write_errors);
                tokio::time::sleep(Duration::from_millis(100 << attempts.min(6))).await;
                let mut state = self.lock();
                let Some(shard) = state.shards.get_mut(&(write.table, write.partition)) else {
                    // The partition went: its next owner runs the test.
                    break;
                };
                let epoch = shard.epoch;
                let Some(entry) = shard.entries.get_mut(&*write.route) else {
                    break;
                };
                write.delivery =
                    self.send(write.table, write.partition, &write.route, entry, epoch);
            }
        }
    }

    /// Reads the changelogs of the partitioned tables on `partitions` from their beginnings
    /// to their ends (blocking: run it off the async workers). `committed` gives each
    /// partition's committed tests offset, below which writes are forgotten.
    pub(crate) fn restore(
        &self,
        kafka: &KafkaConfig,
        connectivity: &Connectivity,
        partitions: &[i32],
        committed: &HashMap<i32, i64>,
        timeout: Duration,
    ) -> KafkaResult<HashMap<i32, Vec<(&'static str, Shard)>>> {
        let specs: Vec<TableSpec> = self.partitioned().copied().collect();
        let mut out: HashMap<i32, Vec<(&'static str, Shard)>> = HashMap::new();
        if specs.is_empty() || partitions.is_empty() {
            return Ok(out);
        }
        let started = Instant::now();
        // Writes this process made before (a partition revoked and assigned back) land
        // before the ends are read.
        if let Some(producer) = self.producer.get() {
            let _ = producer.flush(timeout);
        }
        let wanted: Vec<(&str, i32)> = specs
            .iter()
            .flat_map(|s| {
                partitions
                    .iter()
                    .map(move |p| (self.topics[s.name].as_str(), *p))
            })
            .collect();
        let by_topic: HashMap<&str, &'static str> = specs
            .iter()
            .map(|s| (self.topics[s.name].as_str(), s.name))
            .collect();
        let mut shards: HashMap<(&'static str, i32), Shard> = HashMap::new();
        let read = read_to_end(
            kafka,
            connectivity,
            &wanted,
            timeout,
            |topic, p, offset, key, payload| {
                if let Some(name) = by_topic.get(topic) {
                    self.on_record(
                        shards.entry((name, p)).or_default(),
                        topic,
                        p,
                        offset,
                        key,
                        payload,
                    );
                }
            },
        )?;
        let mut fenced = 0;
        for spec in &specs {
            let topic = self.topics[spec.name].as_str();
            for p in partitions {
                let mut shard = shards.remove(&(spec.name, *p)).unwrap_or_default();
                fenced += shard.fenced;
                let gone = committed
                    .get(p)
                    .map(|c| shard.prune(*c))
                    .unwrap_or_default();
                // This owner's epoch, in the log before any of its writes: a record of an
                // earlier owner that lands after it is skipped by every later restore.
                shard.epoch += 1;
                self.fence(topic, *p, shard.epoch, &gone)?;
                out.entry(*p).or_default().push((spec.name, shard));
            }
        }
        bump_by(&self.counters.here().table_records_restored, read);
        bump_by(&self.counters.here().table_records_fenced, fenced);
        info!(
            partitions = ?partitions,
            tables = specs.len(),
            records = read,
            entries = out.values().flatten().map(|(_, s)| s.len()).sum::<usize>(),
            millis = started.elapsed().as_millis() as u64,
            "table partitions restored"
        );
        Ok(out)
    }

    /// Writes the fence of `epoch` on `topic[partition]` and waits for it (blocking), with
    /// tombstones for the entries `gone` before it.
    fn fence(&self, topic: &str, partition: i32, epoch: u64, gone: &[Box<str>]) -> KafkaResult<()> {
        let Some(producer) = self.producer.get() else {
            return Ok(());
        };
        for route in gone {
            let record = BaseRecord::<str, [u8]>::to(topic)
                .key(route)
                .partition(partition);
            if let Err(err) = producer.send_acked(record) {
                debug!(topic, partition, error = %err, "tombstone of a removed entry not enqueued; it is sent at the next restore");
            }
        }
        let payload = format!("{{\"fence\":{epoch}}}");
        let record = BaseRecord::to(topic)
            .key(FENCE_KEY)
            .partition(partition)
            .payload(&payload);
        let delivery = producer.send_acked(record)?;
        // Resolves within the producer's message.timeout.ms.
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        }
    }

    fn on_record(
        &self,
        shard: &mut Shard,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let route = match key.map(std::str::from_utf8) {
            Some(Ok(route)) => route,
            Some(Err(_)) => {
                return self.malformed(topic, partition, offset, "its key is not UTF-8")
            }
            None => return self.malformed(topic, partition, offset, "it has no key"),
        };
        if let Err(why) = shard.apply(route, payload) {
            self.malformed(topic, partition, offset, &why);
        }
    }

    fn malformed(&self, topic: &str, partition: i32, offset: i64, why: &str) {
        bump(&self.counters.here().table_records_malformed);
        warn!(topic, partition, offset, "skipped a table record: {why}");
    }

    /// Reads the global tables whole, then follows them until `shutdown` (blocking: run it
    /// on a thread of its own). `caught_up` is called when the ends seen at the start
    /// were reached.
    pub(crate) fn follow_global(
        &self,
        kafka: &KafkaConfig,
        connectivity: &Connectivity,
        caught_up: &mut dyn FnMut(),
        shutdown: &std::sync::atomic::AtomicBool,
    ) -> KafkaResult<()> {
        let specs: Vec<TableSpec> = self.global().copied().collect();
        if specs.is_empty() {
            caught_up();
            return Ok(());
        }
        let consumer: BaseConsumer<ConnectivityContext> = kafka
            .client_config(&[
                (
                    "group.id",
                    &format!("livecheck-tables-{}", uuid::Uuid::new_v4()),
                ),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "100"),
            ])
            .create_with_context(connectivity.context())?;
        let mut list = TopicPartitionList::new();
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        for spec in &specs {
            let topic = &self.topics[spec.name];
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let count = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len()) as i32;
            let all: Vec<i32> = (0..count).collect();
            let watermarks = scan::watermarks(&consumer, topic, &all, Duration::from_secs(10))?;
            for (p, (low, high)) in all.into_iter().zip(watermarks) {
                list.add_partition_offset(topic, p, Offset::Beginning)?;
                if high > low {
                    ends.insert((topic.clone(), p), high);
                }
            }
        }
        consumer.assign(&list)?;
        let by_topic: HashMap<&str, &'static str> = specs
            .iter()
            .map(|s| (self.topics[s.name].as_str(), s.name))
            .collect();
        let mut caught_up = Some(caught_up);
        let started = Instant::now();
        let mut read = 0u64;
        while !shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            if ends.is_empty() {
                if let Some(done) = caught_up.take() {
                    info!(
                        records = read,
                        millis = started.elapsed().as_millis() as u64,
                        "global tables read"
                    );
                    done();
                }
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    read += 1;
                    bump(&self.counters.here().table_records_restored);
                    let topic = msg.topic();
                    let (p, offset) = (msg.partition(), msg.offset());
                    if let Some(name) = by_topic.get(topic) {
                        let mut state = self.lock();
                        let shard = state.shards.entry((name, GLOBAL)).or_default();
                        self.on_record(shard, topic, p, offset, msg.key(), msg.payload());
                    }
                    if ends
                        .get(&(topic.to_owned(), p))
                        .is_some_and(|end| offset + 1 >= *end)
                    {
                        ends.remove(&(topic.to_owned(), p));
                    }
                }
                Some(Err(err)) => {
                    connectivity.on_client_error("reading a global table", &err);
                    std::thread::sleep(Duration::from_millis(100));
                }
                None => {
                    if !ends.is_empty() {
                        let position = consumer.position()?;
                        ends.retain(|(t, p), end| {
                            !matches!(
                                position.find_partition(t, *p).map(|e| e.offset()),
                                Some(Offset::Offset(at)) if at >= *end
                            )
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn not_held(table: &str, partition: i32) -> CheckError {
    CheckError::Error(format!(
        "table `{table}`: partition {partition} is not held by this runner (revoked or not restored)"
    ))
}

fn bump_by(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Reads `wanted` partitions from their beginnings to the ends they have now, handing each
/// record to `on_record(topic, partition, offset, key, payload)`; how many were read. The
/// timeout bounds a read that makes no progress.
fn read_to_end(
    kafka: &KafkaConfig,
    connectivity: &Connectivity,
    wanted: &[(&str, i32)],
    timeout: Duration,
    mut on_record: impl FnMut(&str, i32, i64, Option<&[u8]>, Option<&[u8]>),
) -> KafkaResult<u64> {
    let scan = scan::consumer(kafka, connectivity)?;
    let mut ranges = Vec::with_capacity(wanted.len());
    // Each topic's partitions asked at once.
    let mut topics: Vec<&str> = wanted.iter().map(|&(topic, _)| topic).collect();
    topics.sort_unstable();
    topics.dedup();
    for topic in topics {
        let partitions: Vec<i32> = wanted
            .iter()
            .filter(|&&(t, _)| t == topic)
            .map(|&(_, p)| p)
            .collect();
        let ends = scan::watermarks(&scan, topic, &partitions, timeout)?;
        for (partition, (from, end)) in partitions.into_iter().zip(ends) {
            ranges.push(scan::Range {
                topic,
                partition,
                from,
                end,
            });
        }
    }
    scan::read_to_ends(&scan, &ranges, timeout, |msg| {
        on_record(
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.key(),
            msg.payload(),
        );
    })
}

/// A table as a run reads and writes it: [`Run::table`].
pub struct TableView<'r, K, V> {
    run: &'r Run,
    table: &'r Table<K, V>,
}

impl<K, V> fmt::Debug for TableView<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableView")
            .field("table", &self.table.name)
            .field("test_id", &self.run.test_id())
            .finish()
    }
}

fn encode<V: Serialize>(table: &str, value: &V) -> Result<Box<RawValue>, CheckError> {
    serde_json::value::to_raw_value(value).map_err(|e| {
        CheckError::Error(format!(
            "table `{table}`: the value does not serialize: {e}"
        ))
    })
}

fn decode<V: DeserializeOwned>(table: &str, route: &str, raw: &RawValue) -> Result<V, CheckError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        CheckError::Error(format!(
            "table `{table}`: the value of key {route:?} does not decode as {}: {e}",
            std::any::type_name::<V>()
        ))
    })
}

impl<K: Serialize, V: Serialize + DeserializeOwned> TableView<'_, K, V> {
    fn route(&self, key: &K) -> Result<String, CheckError> {
        route_of(key).map_err(|e| CheckError::Error(format!("table `{}`: {e}", self.table.name)))
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &K) -> Result<Option<V>, CheckError> {
        let route = self.route(key)?;
        let raw = self.run.table_get(self.table.name, &route)?;
        raw.map(|r| decode(self.table.name, &route, &r)).transpose()
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: K, value: V) -> Result<(), CheckError> {
        let route = self.route(&key)?;
        let raw = encode(self.table.name, &value)?;
        self.run
            .table_write(self.table.name, &route, move |_| {
                Ok((Some(raw.clone()), raw))
            })
            .map(drop)
    }

    /// Removes `key`; what it held (`None` in a run again of the test: the first run's
    /// removal is not applied again).
    pub fn remove(&self, key: &K) -> Result<Option<V>, CheckError> {
        let route = self.route(key)?;
        let mut before = None;
        self.run.table_write(self.table.name, &route, |current| {
            before = current.map(|c| c.to_owned());
            Ok((None, null()))
        })?;
        before
            .map(|r| decode(self.table.name, &route, &r))
            .transpose()
    }

    /// Reads `key`'s value and writes the next one, `change(current)`, as one write; the
    /// value written. A run again of the test gets the value its first run wrote, and
    /// `change` is not called. `change` runs under the tables' lock: it must not use a
    /// table itself (that is an `ERROR`).
    pub fn update(&self, key: K, change: impl FnOnce(Option<V>) -> V) -> Result<V, CheckError> {
        let route = self.route(&key)?;
        let name = self.table.name;
        let written = self.run.table_write(name, &route, |current| {
            let current = current.map(|c| decode::<V>(name, &route, c)).transpose()?;
            let next = encode(name, &change(current))?;
            Ok((Some(next.clone()), next))
        })?;
        let raw = match written {
            Written::Remembered(raw) => Some(raw),
            Written::Current(current) => current,
        };
        match raw {
            Some(raw) => decode(name, &route, &raw),
            None => Err(CheckError::Error(format!(
                "table `{name}`: key {route:?} was removed after an earlier run of this test wrote it"
            ))),
        }
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// A window as a run adds to it: [`Run::window`].
pub struct WindowView<'r, K> {
    run: &'r Run,
    window: &'r Window<K>,
}

impl<K> fmt::Debug for WindowView<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowView")
            .field("window", &self.window.name)
            .field("test_id", &self.run.test_id())
            .finish()
    }
}

impl<K: Serialize> WindowView<'_, K> {
    /// Adds `amount` for `key` at the test's event time; the window's totals then (this add
    /// included). Count-only rules add `1.0` and read [`WindowTotals::count`]. A run again of
    /// the test gets the totals its first run got, without adding again.
    pub fn add(&self, key: &K, amount: f64) -> Result<WindowTotals, CheckError> {
        let name = self.window.name;
        let route =
            route_of(key).map_err(|e| CheckError::Error(format!("window `{name}`: {e}")))?;
        let at = self.run.event_time().timestamp_millis();
        let window = self.window;
        let written = self.run.table_write(name, &route, |current| {
            let state = match current {
                Some(raw) => decode::<WindowState>(name, &route, raw)?,
                None => WindowState::default(),
            };
            let next = window.add_to(state, at, amount);
            // Remembered: the totals (small), not the events.
            let totals = encode(name, &window.totals(&next, at))?;
            Ok((Some(encode(name, &next)?), totals))
        })?;
        match written {
            Written::Remembered(raw) => decode(name, &route, &raw),
            Written::Current(current) => {
                let state = match current {
                    Some(raw) => decode::<WindowState>(name, &route, &raw)?,
                    None => WindowState::default(),
                };
                Ok(window.totals(&state, at))
            }
        }
    }

    /// The window's totals for `key` at the test's event time, without adding.
    pub fn totals(&self, key: &K) -> Result<WindowTotals, CheckError> {
        let name = self.window.name;
        let route =
            route_of(key).map_err(|e| CheckError::Error(format!("window `{name}`: {e}")))?;
        let at = self.run.event_time().timestamp_millis();
        let state = match self.run.table_get(name, &route)? {
            Some(raw) => decode::<WindowState>(name, &route, &raw)?,
            None => WindowState::default(),
        };
        Ok(self.window.totals(&state, at))
    }
}

impl Run {
    /// The table `table` as this run reads and writes it. The case must declare it
    /// ([`crate::Case::table`]); a partitioned table's keys must be on the test's partition
    /// (route the case by the key).
    pub fn table<'r, K, V>(&'r self, table: &'r Table<K, V>) -> TableView<'r, K, V> {
        TableView { run: self, table }
    }

    /// The window `window` as this run adds to it (declared on the case as a table).
    pub fn window<'r, K>(&'r self, window: &'r Window<K>) -> WindowView<'r, K> {
        WindowView { run: self, window }
    }

    /// The test's event time: its record's timestamp (its issue time without one).
    pub fn event_time(&self) -> DateTime<Utc> {
        self.shared.started_at
    }
}

/// Used by [`crate::ensure_invariant!`]: a value as JSON (`null` when it does not
/// serialize).
#[doc(hidden)]
pub fn __json<T: Serialize + ?Sized>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// An entry's changelog record.
fn encode_entry(entry: &Entry, epoch: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        v: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "<[Applied]>::is_empty")]
        ops: &'a [Applied],
        #[serde(rename = "e", skip_serializing_if = "is_zero")]
        epoch: u64,
    }
    serde_json::to_vec(&Out {
        v: entry.value.as_deref(),
        ops: &entry.ops,
        epoch,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: i64) -> i64 {
        s * 1000
    }

    #[test]
    fn a_sliding_window_counts_the_size_before_each_time() {
        let w: Window<String> = Window::sliding("w", Duration::from_secs(60));
        let mut state = WindowState::default();
        for t in [0, 10, 20] {
            state = w.add_to(state, ms(t), 1.0);
        }
        assert_eq!(w.totals(&state, ms(20)).count, 3);
        // At 60 s the event at 0 is out ((0, 60] excludes 0), at 81 s only the one at 30.
        state = w.add_to(state, ms(60), 2.0);
        let t = w.totals(&state, ms(60));
        assert_eq!((t.count, t.sum), (3, 4.0));
        state = w.add_to(state, ms(81), 1.0);
        let t = w.totals(&state, ms(81));
        assert_eq!((t.count, t.sum), (2, 3.0), "the events at 60 and 81");
        assert!(
            state.events.iter().all(|e| e.0 > ms(21)),
            "older events are dropped: {state:?}"
        );
    }

    #[test]
    fn a_tumbling_window_starts_again_at_each_boundary() {
        let w: Window<String> = Window::tumbling("w", Duration::from_secs(60));
        let mut state = WindowState::default();
        for t in [0, 30, 59] {
            state = w.add_to(state, ms(t), 1.0);
        }
        assert_eq!(w.totals(&state, ms(59)).count, 3);
        state = w.add_to(state, ms(60), 1.0);
        let t = w.totals(&state, ms(60));
        assert_eq!(t.count, 1);
        assert_eq!(t.from.timestamp_millis(), ms(60));
        assert_eq!(t.until.timestamp_millis(), ms(120));
    }

    #[test]
    fn an_out_of_order_test_keeps_what_its_window_needs() {
        let w: Window<String> = Window::sliding("w", Duration::from_secs(10));
        let mut state = WindowState::default();
        state = w.add_to(state, ms(100), 1.0);
        state = w.add_to(state, ms(95), 1.0);
        assert_eq!(w.totals(&state, ms(95)).count, 1);
        assert_eq!(w.totals(&state, ms(100)).count, 2);
    }

    #[test]
    fn a_full_window_merges_its_oldest_events() {
        let w: Window<String> = Window::sliding("w", Duration::from_secs(3600));
        let mut state = WindowState::default();
        for t in 0..(MAX_WINDOW_EVENTS as i64 + 10) {
            state = w.add_to(state, t, 1.0);
        }
        assert_eq!(state.events.len(), MAX_WINDOW_EVENTS);
        assert_eq!(
            w.totals(&state, MAX_WINDOW_EVENTS as i64 + 9).count,
            MAX_WINDOW_EVENTS as u64 + 10
        );
    }

    #[test]
    fn routes_are_string_keys_themselves_and_json_otherwise() {
        assert_eq!(route_of("user-7").unwrap(), "user-7");
        assert_eq!(route_of(&42u32).unwrap(), "42");
        assert_eq!(route_of(&("a", 1)).unwrap(), "[\"a\",1]");
    }

    #[test]
    fn a_shard_applies_records_tombstones_and_forgets_committed_writes() {
        let mut shard = Shard::default();
        shard
            .apply(
                "u1",
                Some(br#"{"v":5,"ops":[{"t":"a","o":3,"n":0,"r":5}]}"#),
            )
            .unwrap();
        shard.apply("u2", Some(br#"{"v":1}"#)).unwrap();
        shard
            .apply("u3", Some(br#"{"ops":[{"t":"b","o":9,"n":0}]}"#))
            .unwrap();
        assert_eq!(shard.len(), 3);
        shard.apply("u2", None).unwrap();
        assert_eq!(shard.len(), 2);
        let err = shard.apply("u4", Some(b"{not json")).unwrap_err();
        assert!(err.starts_with("not a table entry: "), "{err}");
        shard.prune(10);
        assert_eq!(
            shard.len(),
            1,
            "u3 was only a removed entry's pending write"
        );
        assert!(shard.entries["u1"].ops.is_empty());
    }

    #[test]
    fn a_record_of_an_owner_that_lost_the_partition_is_skipped_after_the_new_owners_fence() {
        let mut shard = Shard::default();
        shard.apply("u1", Some(br#"{"v":1,"e":1}"#)).unwrap();
        shard.apply(FENCE_KEY, Some(br#"{"fence":2}"#)).unwrap();
        // The old owner's write lands late: skipped.
        shard.apply("u1", Some(br#"{"v":5,"e":1}"#)).unwrap();
        assert_eq!(shard.entries["u1"].value.as_ref().unwrap().get(), "1");
        assert_eq!(shard.fenced, 1);
        shard.apply("u1", Some(br#"{"v":7,"e":2}"#)).unwrap();
        assert_eq!(shard.entries["u1"].value.as_ref().unwrap().get(), "7");
        assert!(
            !shard.entries.contains_key(FENCE_KEY),
            "a fence is not an entry"
        );
        assert_eq!(shard.epoch, 2);
    }

    #[test]
    fn an_entry_record_stays_under_its_byte_budget_by_forgetting_old_results() {
        let big = serde_json::value::to_raw_value(&"x".repeat(4096)).unwrap();
        let mut entry = Entry {
            value: Some(big.clone()),
            ops: (0..100)
                .map(|i| Applied {
                    test: format!("t{i}").into(),
                    offset: i,
                    op: 0,
                    result: Some(big.clone()),
                })
                .collect(),
        };
        let counters = Arc::new(RunnerCounters::default());
        let store = TableStore::new(Vec::new(), &crate::Topics::default(), counters.clone());
        assert!(encode_entry(&entry, 1).len() > MAX_RECORD_BYTES);
        // No producer: nothing is sent, but the budget is applied first.
        assert!(store.send("t", 0, "k", &mut entry, 1).is_none());
        assert!(encode_entry(&entry, 1).len() <= MAX_RECORD_BYTES);
        let forgotten = entry.ops.iter().filter(|a| a.result.is_none()).count();
        assert_eq!(counters.table_results_dropped(), forgotten as u64);
        assert_eq!(entry.ops.len(), 100, "every write is still recognised");
        assert!(
            entry.ops[..forgotten].iter().all(|a| a.result.is_none()),
            "the oldest go first"
        );
        assert!(entry.ops[forgotten..].iter().all(|a| a.result.is_some()));
    }
}
