//! The runner: consumes tests and signals, runs each test's expectations, publishes one
//! report per test.
//!
//! In a consumer group (live mode) it gives exactly one true verdict per test across
//! restarts and rebalances: see [`crate::group`] (rebalances and restores),
//! [`crate::ledger`] (what is committed), [`crate::clock`] (event time) and
//! [`crate::sink`] (reports that are never lost).

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{CommitMode, Consumer, MessageStream, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::metadata::Metadata;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::case::{BoxFuture, Case};
use crate::check::CheckError;
use crate::client::LiveCheck;
use crate::clock::Clocks;
use crate::connectivity::Connectivity;
use crate::context::TestContext;
use crate::counters::{bump, RunnerCounters};
use crate::error::Error;
use crate::flow::{self, Flow};
use crate::group::{
    self, Assignment, GroupEvent, HeldRecord, Ownership, PartitionState, Restored, RunnerContext,
};
use crate::hop::{self, Hop, Positions, PositionsRecord, HOP_SIGNAL};
use crate::lane_runs::RunStarter;
use crate::ledger::Ledger;
use crate::reading::{self, Fetched, Readings, Stall};
use crate::registry::{
    Arrival, FastMap, Limits, Parked, Pos, Registry, SignalOutcome, TestOutcome, Wakers,
};
use crate::report::{Report, Step, Verdict};
use crate::run::{Run, RunShared, RunState, RunTables};
use crate::scan;
use crate::sink::{self, Claim, Hold, Outgoing, ReportSink, SinkEvent, Unsettled};
use crate::table::{TableSpec, TableStats, TableStore};

/// The cases a runner knows, by name.
#[derive(Debug, Clone, Default)]
pub struct Suite {
    cases: FastMap<String, Arc<Case>>,
    /// Active flags set at run time (see [`Suite::set_active`]).
    pub(crate) active: Arc<crate::switches::ActiveSwitches>,
}

impl Suite {
    /// A suite of `cases`; each is validated and names must be unique.
    pub fn new(cases: impl IntoIterator<Item = Case>) -> Result<Self, Error> {
        let mut map = FastMap::default();
        for case in cases {
            case.validate()?;
            let name = case.name().to_owned();
            if map.insert(name.clone(), Arc::new(case)).is_some() {
                return Err(Error::Config(format!("two cases are named {name}")));
            }
        }
        let suite = Self {
            cases: map,
            active: Arc::default(),
        };
        suite.tables()?;
        Ok(suite)
    }

    /// Every table and window the cases declared, once each, by name. An error when two
    /// cases declare one name differently (global and partitioned).
    pub fn tables(&self) -> Result<Vec<TableSpec>, Error> {
        let mut specs: Vec<TableSpec> = Vec::new();
        for case in self.cases() {
            for spec in case.tables() {
                match specs.iter().find(|s| s.name == spec.name) {
                    Some(s) if s.global != spec.global => {
                        return Err(Error::Config(format!(
                            "table {} is declared global by one case and partitioned by another (case {})",
                            spec.name,
                            case.name()
                        )))
                    }
                    Some(_) => {}
                    None => specs.push(*spec),
                }
            }
        }
        specs.sort_by_key(|s| s.name);
        Ok(specs)
    }

    /// The case named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Case>> {
        self.cases.get(name)
    }

    /// All cases, sorted by name.
    pub fn cases(&self) -> Vec<&Arc<Case>> {
        let mut cases: Vec<_> = self.cases.values().collect();
        cases.sort_by(|a, b| a.name().cmp(b.name()));
        cases
    }
}

/// How the runner consumes.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Consumer group to join; `None` assigns the partitions directly (every partition, or
    /// those of [`RunnerConfig::partitions`], shared out between the lanes; fast start, no
    /// offsets committed).
    pub group_id: Option<String>,
    /// Buffer limits (per lane: see [`RunnerConfig::lanes`]).
    pub limits: Limits,
    /// How often stale buffers are swept and offsets committed.
    pub sweep_every: Duration,
    /// Without a group: start at the partitions' current ends instead of their beginnings.
    pub start_at_end: bool,
    /// Run only the tests registered with [`Runner::report_for`] and ignore (count as
    /// `foreign_records`) the others: a harness sharing topics with other processes.
    pub watched_only: bool,
    /// On shutdown (group mode), how long in-flight runs may take to finish before they are
    /// handed back (their records stay uncommitted and are read again after a restart).
    /// Also the longest a revoke waits for the reports of the partitions' runs that ended to
    /// be acknowledged before the group hands them on (a report acknowledged after that
    /// leaves its test to be run again by the next owner).
    pub drain_timeout: Duration,
    /// How far out of timestamp order records may arrive (several producers interleaving,
    /// a producer retrying a refused request): a step is declared missing once the signals
    /// are read this far past its deadline (default 2 s). It delays `TIMEOUT` verdicts by as
    /// much; it never changes a verdict (lateness is judged on the timestamps themselves).
    pub clock_slack: Duration,
    /// After the broker was unreachable, how long producers may take to deliver what they
    /// held (their reconnect back-off) before steps of that time are declared missing.
    pub outage_grace: Duration,
    /// The longest a run may take, whatever its expectations do: a hung check ends in
    /// `ERROR` and cannot hold its partition. Counted from when the test record was read,
    /// and looked at by every sweep (`sweep_every`): no run holds a timer of its own, and
    /// none is stopped before this (nor during a broker outage and its grace period).
    pub max_run_time: Duration,
    /// Reports larger than this (bytes of JSON) are published truncated.
    pub max_report_bytes: usize,
    /// How long a report the broker refuses is retried before it is given up (counted as
    /// `reports_lost`, logged at error) so that its partition's commit moves on.
    pub report_retry_for: Duration,
    /// How long restoring an assigned partition may take before it is tried again.
    pub restore_timeout: Duration,
    /// `fetch.wait.max.ms` of the runner's consumers: how long the broker may hold a fetch
    /// that found no new records (default [`DEFAULT_FETCH_WAIT`], 2 ms). It bounds the
    /// verdict latency, since brokers that do not answer a held fetch when records arrive
    /// (librdkafka's mock cluster: up to 1× this wait per hop; tansu 0.6: 1–2×) make every
    /// signal wait for it; a shorter wait costs more fetches (CPU) while idle. See the
    /// README's Performance section for both measured.
    pub fetch_wait: Duration,
    /// Outside a group: the partitions of the tests and signals topics this runner reads
    /// (`None`, the default: every partition). Runners side by side on disjoint shares of
    /// the partitions check every test once between them, each on a loop of its own: the
    /// way to use more cores than one runner's loop keeps busy (see the README's
    /// Performance section, "Lanes"). Each partition listed must exist. A group assigns its
    /// members' partitions itself, so this and [`RunnerConfig::group_id`] exclude each
    /// other.
    pub partitions: Option<Vec<i32>>,
    /// How many loops ("lanes") the runner reads and checks with, each on its own share of
    /// the partitions (default 1). One loop takes every record in on one thread, so it keeps
    /// about one core busy however many the runtime has; each lane has its own consumers,
    /// runs, reports producer and tables, like a runner of its own (in a group, a member of
    /// its own), and the runner's counters, reports and status are the lanes' together. The
    /// [`Limits`] hold per lane (a lane whose partitions bring more tests than the others'
    /// must not be cut short): n lanes may hold n times as many tests. More lanes than
    /// partitions leave the extra ones idle; 1 to [`MAX_LANES`]. See the README's
    /// Performance section ("Lanes"), and `docs/performance.md` for the figures.
    pub lanes: usize,
}

/// Most lanes a runner may have (see [`RunnerConfig::lanes`]).
pub const MAX_LANES: usize = 256;

/// The default [`RunnerConfig::fetch_wait`]: 2 ms, the longest that keeps the last signal
/// sent to verdict under 10 ms at the median on tansu, which holds a fetch for 1–2× the
/// wait (the live bench's section b' measures the trade-off on either broker). On Apache
/// Kafka, which answers a held fetch when records arrive, a long wait (500 ms) costs no
/// latency and less CPU.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(2);

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            group_id: None,
            limits: Limits::default(),
            sweep_every: Duration::from_secs(1),
            start_at_end: false,
            watched_only: false,
            drain_timeout: Duration::from_secs(30),
            clock_slack: Duration::from_secs(2),
            outage_grace: Duration::from_secs(15),
            max_run_time: Duration::from_secs(600),
            max_report_bytes: sink::DEFAULT_MAX_REPORT_BYTES,
            report_retry_for: Duration::from_secs(300),
            restore_timeout: Duration::from_secs(30),
            fetch_wait: DEFAULT_FETCH_WAIT,
            partitions: None,
            lanes: 1,
        }
    }
}

struct RunnerInner {
    suite: Suite,
    client: LiveCheck,
    config: RunnerConfig,
    registry: Arc<Mutex<Registry>>,
    ledger: Arc<Mutex<Ledger>>,
    ownership: Arc<Ownership>,
    clocks: Arc<Clocks>,
    counters: Arc<RunnerCounters>,
    tables: Arc<TableStore>,
    reports: broadcast::Sender<Arc<Report>>,
    /// Shared by the lanes: a test is watched before anyone knows which lane runs it.
    watchers: Arc<Watchers>,
    ready: watch::Sender<bool>,
    draining: AtomicBool,
    /// After the drain: a refused report is not sent again (its test stays uncommitted, for
    /// the next owner), and a revoke does not wait for reports (the drain did). Shared with
    /// the revokes.
    closing: Arc<AtomicBool>,
    /// The reports of each partition on their way to the broker (in a group).
    unsettled: Arc<Unsettled>,
    sink: OnceLock<ReportSink>,
    /// Where the lane's runs start: in its loop's set (see [`crate::lane_runs`]).
    runs: RunStarter,
    signals_topic: Arc<str>,
    /// The tests topic's name, shared by the position of every test record (one allocation
    /// per runner, not per record).
    tests_topic: Arc<str>,
    connectivity: Connectivity,
    flow: Mutex<Flow>,
    /// How many tests have early signals ([`Registry::early_count`]): read for the flow on
    /// every record without the registry's lock.
    early_tests: Arc<AtomicUsize>,
    /// What the services' consumer groups report reading (for the diagnosis of a
    /// missing step). Shared by the lanes: each reads the reports of its partitions.
    positions: Arc<Mutex<Positions>>,
    /// Per tests partition, the offset after the last test record read (or where reading
    /// starts): a record past it follows offsets never read (see
    /// `RunnerCounters::tests_skipped_by_broker`).
    tests_read_to: Mutex<HashMap<i32, i64>>,
    /// Whether each partition is really read (see [`crate::reading`]).
    readings: Arc<Readings>,
    /// This lane's number, and how many there are (see [`RunnerConfig::lanes`]).
    lane: (usize, usize),
    /// The other lanes, in the first lane (the `Runner` its user holds): each is a runner of
    /// its own, sharing the counters, reports, watchers and positions of the first.
    others: Vec<Runner>,
    /// How many of the lanes are done (see [`Departure`]): shared by the lanes.
    leaving: Arc<watch::Sender<usize>>,
}

/// A lane's leaving of its group: once its drain and last commit are done, it waits (at
/// most [`LEAVE_TOGETHER_FOR`]) until every lane of the runner is done too; a lane that
/// ends any other way is done when this is dropped.
struct Departure<'a> {
    done: &'a watch::Sender<usize>,
    counted: bool,
}

/// How long a lane leaving its group waits for its partitions to be revoked before it
/// closes all the same.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(5);

/// How long a lane waits for its group consumer's close.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// How long a lane that is done waits for the others before it leaves its group all the
/// same.
const LEAVE_TOGETHER_FOR: Duration = Duration::from_secs(30);

impl<'a> Departure<'a> {
    fn new(done: &'a watch::Sender<usize>) -> Self {
        Self {
            done,
            counted: false,
        }
    }

    fn count(&mut self) {
        if !self.counted {
            self.counted = true;
            self.done.send_modify(|done| *done += 1);
        }
    }

    /// Counts this lane done; resolves once `lanes` lanes are.
    fn done(&mut self, lanes: usize) -> impl Future<Output = ()> + use<> {
        self.count();
        let mut rx = self.done.subscribe();
        async move {
            let _ = rx.wait_for(|done| *done >= lanes).await;
        }
    }
}

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        self.count();
    }
}

/// What the lanes of a runner share.
struct Shared {
    leaving: Arc<watch::Sender<usize>>,
    counters: Arc<RunnerCounters>,
    reports: broadcast::Sender<Arc<Report>>,
    watchers: Arc<Watchers>,
    positions: Arc<Mutex<Positions>>,
}

/// Who waits for which test's report ([`Runner::report_for`]), shared by the lanes. Every
/// report looks here: `count` lets it skip the lock (whose cache line would go from core to
/// core with the lanes) while no one waits, as in the `livecheck` service.
#[derive(Default)]
struct Watchers {
    by_test: Mutex<FastMap<String, oneshot::Sender<Arc<Report>>>>,
    /// `by_test`'s length, written under its lock.
    count: AtomicUsize,
}

impl Watchers {
    fn with<R>(
        &self,
        f: impl FnOnce(&mut FastMap<String, oneshot::Sender<Arc<Report>>>) -> R,
    ) -> R {
        let mut by_test = self.by_test.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut by_test);
        self.count.store(by_test.len(), Ordering::Release);
        r
    }

    fn insert(&self, test_id: &str, tx: oneshot::Sender<Arc<Report>>) {
        self.with(|by_test| by_test.insert(test_id.to_owned(), tx));
    }

    fn remove(&self, test_id: &str) -> Option<oneshot::Sender<Arc<Report>>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.with(|by_test| by_test.remove(test_id))
    }

    fn contains(&self, test_id: &str) -> bool {
        self.count.load(Ordering::Acquire) > 0 && self.with(|by_test| by_test.contains_key(test_id))
    }
}

/// Resolves once `stopped` says so (or its sender is gone).
async fn stop_when(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Which topic's records [`Runner::never_read`] is about.
#[derive(Debug, Clone, Copy)]
enum Unread {
    Tests,
    Signals,
}

/// Runs the suite's cases for the tests it consumes. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<RunnerInner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("topics", self.inner.client.topics())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

type Consumer2 = StreamConsumer<RunnerContext>;

/// How often the runner looks for waits whose deadline their partition's event-time clock
/// has passed (a step missing is told at most this much after its deadline; one timer for
/// every waiting run: each run held a timer of its own before, 112 bytes, re-armed at least
/// every 2 s).
const WAITS_CHECKED_EVERY: Duration = Duration::from_millis(20);

/// In a group, every this many ticks (`sweep_every`, 30 s by default) a lane commits every
/// partition's position, moved or not: an asynchronous commit the group refused is not
/// known otherwise, and a partition whose position stays put would keep its older commit
/// (see `Ledger::commit_all_again`). A rebalance has the same effect at once.
const COMMIT_ALL_EVERY_TICKS: u64 = 30;

/// Records of one consumer taken in a row by the runner loop (see [`Runner::run`]).
const RECORDS_PER_TURN: usize = 32;

/// Which of the runner's consumers a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Tests,
    Signals,
}

/// The runner's two consumers.
#[derive(Clone, Copy)]
struct Consumers<'a> {
    tests: &'a Arc<Consumer2>,
    signals: &'a Arc<Consumer2>,
}

/// When the runner loop yields its worker thread. A record is always ready while the runner
/// catches up: without yielding the loop would read a whole backlog before the runs it
/// starts get a turn, holding all of them in memory at once (and the verdicts back).
///
/// The loop polls the runs its records wake itself, between its turns (see
/// [`crate::lane_runs`]). On one worker thread it yields when tokio's budget is spent. With
/// more, every [`YIELD_EVERY`] records: the other tasks of its worker (reports sent again,
/// another lane when there are more lanes than workers) get a turn that often. (When runs
/// were tasks of their own, yielding at tokio's budget made the loop wait behind every run
/// it had woken on its own worker while the others idled: 12 % fewer records/s.)
struct Pace {
    /// Yields every this many records; `None` (one worker): when tokio's budget is spent.
    every: Option<u32>,
    /// Records since the last yield.
    records: u32,
}

/// See [`Pace`].
const YIELD_EVERY: u32 = 1024;

/// How long a report waits for room in its producer's full local queue before it is handed
/// to the retries of a refused report ([`Runner::enqueue`]).
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// `reconnect.backoff.ms` of the runner's consumers: 20 ms, where librdkafka's default is
/// 100. A consumer connects first to its bootstrap address, which it closes once the
/// metadata names the broker there by its id; a request any broker may answer then waits for
/// librdkafka's next "connect to any broker", which it holds back for half of this (11 ms at
/// least). At 100 ms, one of a lane's two consumers waited 50 ms for its first metadata in
/// about half the starts, and the lane read nothing meanwhile; at 20 ms the live bench's
/// runner was ready in 8–27 ms (docs/performance.md, "Runs in their lane"). It is also the
/// first pause before reconnecting to a broker that closed a connection (doubled at each
/// failure, up to `reconnect.backoff.max.ms`, 10 s): a broker that is down gets two or three
/// attempts more from each consumer in the first second. The Kafka properties of the client
/// (`KafkaConfig`) override it.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);

/// The clocks of one turn of the run loop ([`Runner::take_fetched`]), read once for the
/// records it takes (up to [`RECORDS_PER_TURN`], taken without waiting): a clock read cost
/// 2–4 % of the lanes' time (45–90 ns each on this VM). Read again after anything that may
/// have given the worker up ([`Self::stale`]), so a time is at most one turn old: tens of
/// microseconds at full speed. A record the fetcher queued during the turn gets a time a
/// little before it was taken; verdicts judge lateness by the records' own timestamps.
#[derive(Default)]
struct TurnClock {
    read: Option<(DateTime<Utc>, Instant)>,
}

impl TurnClock {
    fn now(&mut self) -> (DateTime<Utc>, Instant) {
        *self
            .read
            .get_or_insert_with(|| (Utc::now(), Instant::now()))
    }

    /// Wall-clock time.
    fn utc(&mut self) -> DateTime<Utc> {
        self.now().0
    }

    /// Monotonic time.
    fn instant(&mut self) -> Instant {
        self.now().1
    }

    /// The turn awaited: read the clocks again when next asked.
    fn stale(&mut self) {
        self.read = None;
    }
}

impl Pace {
    fn new() -> Self {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        Self {
            every: (workers > 1).then_some(YIELD_EVERY),
            records: 0,
        }
    }

    /// One record (or turn of the loop) done. Whether it gave the worker up.
    async fn record(&mut self) -> bool {
        let Some(every) = self.every else {
            // `consume_budget` yields exactly when no budget is left before it.
            let yields = !tokio::task::coop::has_budget_remaining();
            tokio::task::coop::consume_budget().await;
            return yields;
        };
        self.records += 1;
        if self.records >= every {
            self.records = 0;
            tokio::task::yield_now().await;
            return true;
        }
        false
    }
}

/// Restores under way: the partitions, and what each restore found.
type Restores = JoinSet<(Vec<Assignment>, Result<Vec<Restored>, KafkaError>)>;

impl Runner {
    /// A runner for `suite`, publishing reports through `client`.
    pub fn new(suite: Suite, client: LiveCheck, config: RunnerConfig) -> Self {
        let shared = Shared {
            leaving: Arc::new(watch::channel(0).0),
            counters: Arc::new(RunnerCounters::default()),
            reports: broadcast::channel(1024).0,
            watchers: Arc::default(),
            positions: Arc::default(),
        };
        // `run` refuses a count out of bounds; none is built beyond them.
        let lanes = config.lanes.clamp(1, MAX_LANES);
        let others = (1..lanes)
            .map(|lane| {
                Self::lane(
                    suite.clone(),
                    client.clone(),
                    config.clone(),
                    &shared,
                    (lane, lanes),
                    Vec::new(),
                )
            })
            .collect();
        Self::lane(suite, client, config, &shared, (0, lanes), others)
    }

    /// Lane `lane.0` of `lane.1`, with `shared`.
    fn lane(
        suite: Suite,
        client: LiveCheck,
        config: RunnerConfig,
        shared: &Shared,
        lane: (usize, usize),
        others: Vec<Runner>,
    ) -> Self {
        let (ready, _) = watch::channel(false);
        let connectivity = client.connectivity().clone();
        let clocks = Arc::new(Clocks::new(
            config.clock_slack,
            config.outage_grace,
            config.fetch_wait,
        ));
        let signals_topic = Arc::from(client.topics().signals.as_str());
        let tests_topic = Arc::from(client.topics().tests.as_str());
        let flow = Mutex::new(Flow::new(config.limits.max_early_tests));
        let counters = shared.counters.clone();
        // Suite::new checked the declarations.
        let tables = Arc::new(TableStore::new(
            suite.tables().unwrap_or_default(),
            client.topics(),
            counters.clone(),
        ));
        let registry = Registry::new(config.limits.clone());
        let early_tests = registry.early_count();
        Self {
            inner: Arc::new(RunnerInner {
                suite,
                registry: Arc::new(Mutex::new(registry)),
                ledger: Arc::default(),
                ownership: Arc::default(),
                clocks,
                client,
                config,
                counters,
                tables,
                reports: shared.reports.clone(),
                watchers: shared.watchers.clone(),
                ready,
                draining: AtomicBool::new(false),
                closing: Arc::default(),
                unsettled: Arc::default(),
                sink: OnceLock::new(),
                runs: RunStarter::default(),
                signals_topic,
                tests_topic,
                connectivity,
                flow,
                early_tests,
                positions: shared.positions.clone(),
                tests_read_to: Mutex::default(),
                readings: Arc::default(),
                lane,
                others,
                leaving: shared.leaving.clone(),
            }),
        }
    }

    /// This runner's lanes: itself and the others (see [`RunnerConfig::lanes`]).
    fn lanes(&self) -> impl Iterator<Item = &Runner> {
        std::iter::once(self).chain(&self.inner.others)
    }

    /// The runner's counters.
    pub fn counters(&self) -> &RunnerCounters {
        &self.inner.counters
    }

    /// The suite's tables, with the entries this runner holds of each (a global table's
    /// once: every lane holds all of it).
    pub fn tables(&self) -> Vec<TableStats> {
        let mut all = self.inner.tables.stats();
        for lane in &self.inner.others {
            for (table, of_lane) in all.iter_mut().zip(lane.inner.tables.stats()) {
                if !table.global {
                    table.entries += of_lane.entries;
                }
            }
        }
        all
    }

    /// The suite.
    pub fn suite(&self) -> &Suite {
        &self.inner.suite
    }

    /// Records the services' consumer groups read through [`LiveCheck::consume`] without
    /// a test context, as they report it: (group, topic, count), summed over the reporting
    /// instances.
    pub fn records_without_context(&self) -> Vec<(String, String, u64)> {
        self.inner
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .without_context()
    }

    /// Runs in flight now.
    pub fn in_flight(&self) -> usize {
        self.lanes().map(Self::lane_in_flight).sum()
    }

    /// Runs in flight in this lane.
    fn lane_in_flight(&self) -> usize {
        self.lock_registry().in_flight()
    }

    /// Runs in flight that are parked until their first step (cases that
    /// [`Case::start_on_first_step`]): counted in [`Self::in_flight`] too.
    pub fn parked_runs(&self) -> usize {
        self.lanes().map(|l| l.lock_registry().parked()).sum()
    }

    /// Tests with early (buffered) signals now.
    pub fn buffered_tests(&self) -> usize {
        self.lanes().map(Self::lane_buffered_tests).sum()
    }

    /// Tests with early signals in this lane (its flow control's measure).
    fn lane_buffered_tests(&self) -> usize {
        self.inner.early_tests.load(Ordering::Relaxed)
    }

    /// Tests-topic partitions this runner holds now (restored or being restored).
    pub fn assigned_partitions(&self) -> usize {
        self.lanes()
            .map(|l| l.inner.ownership.assigned.load(Ordering::Relaxed))
            .sum()
    }

    /// Signals partitions paused now because their tests partition is behind (a backlog
    /// being replayed; see the crate's flow control).
    pub fn paused_signal_partitions(&self) -> usize {
        self.lanes().map(|l| l.lock_flow().paused()).sum()
    }

    /// Broker connectivity as the runner's consumers and its client's producer see it.
    pub fn connectivity(&self) -> &Connectivity {
        &self.inner.connectivity
    }

    /// Records read and not yet committable (tests, signals): what a restart would read
    /// again.
    pub fn uncommitted(&self) -> (usize, usize) {
        self.lanes()
            .map(|l| l.lock_ledger().held())
            .fold((0, 0), |(t, s), (lt, ls)| (t + lt, s + ls))
    }

    /// Every report this runner publishes, as it publishes it (a slow receiver lags).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Report>> {
        self.inner.reports.subscribe()
    }

    /// The report for `test_id`, once published. Register before the test can finish.
    #[must_use = "the receiver gets the report; dropping it stops the watch"]
    pub fn report_for(&self, test_id: &str) -> oneshot::Receiver<Arc<Report>> {
        let (tx, rx) = oneshot::channel();
        self.inner.watchers.insert(test_id, tx);
        rx
    }

    /// Whether this runner holds partition 0 of the tests topic (the one instance of a group
    /// that sends synthetic traffic). Without a group: true unless
    /// [`RunnerConfig::partitions`] leaves partition 0 out.
    pub fn owns_first_partition(&self) -> bool {
        self.lanes()
            .any(|l| l.inner.ownership.owns_first.load(Ordering::Relaxed))
    }

    /// Stops waiting for the report of `test_id` (e.g. its stimulus failed).
    pub fn forget(&self, test_id: &str) {
        self.inner.watchers.remove(test_id);
    }

    /// Resolves once the runner has its partitions (restored, in a group): every lane.
    pub async fn ready(&self) {
        for lane in self.lanes() {
            let mut rx = lane.inner.ready.subscribe();
            let _ = rx.wait_for(|ready| *ready).await;
        }
    }

    /// How many lanes have been ready (their partitions assigned and restored, or none
    /// given them by their group), of how many: once ready, a lane stays so.
    pub fn lanes_ready(&self) -> (usize, usize) {
        self.lanes().fold((0, 0), |(ready, all), lane| {
            (ready + usize::from(*lane.inner.ready.borrow()), all + 1)
        })
    }

    /// The registry of the runs and their tests.
    pub(crate) fn registry(&self) -> &Mutex<Registry> {
        &self.inner.registry
    }

    /// The event-time clocks of the signals partitions.
    pub(crate) fn clocks(&self) -> &Clocks {
        &self.inner.clocks
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_group(&self) -> bool {
        self.inner.config.group_id.is_some()
    }

    /// Consumes until `shutdown` resolves: every lane (see [`RunnerConfig::lanes`]), each in
    /// a task of its own. A lane that stops (an error) stops the others, and the first error
    /// is returned; a lane that panics stops the others and the panic goes on from here.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let lanes = self.inner.config.lanes;
        if !(1..=MAX_LANES).contains(&lanes) {
            return Err(Error::Config(format!(
                "`lanes` is {lanes}: a runner reads with 1 to {MAX_LANES} lanes (one per core is plenty)"
            )));
        }
        if self.inner.others.is_empty() {
            return self.run_lane(shutdown).await;
        }
        let (stop, stopped) = watch::channel(false);
        let mut running = JoinSet::new();
        for lane in self.lanes() {
            let (lane, stopped) = (lane.clone(), stopped.clone());
            running.spawn(async move { lane.run_lane(stop_when(stopped)).await });
        }
        tokio::pin!(shutdown);
        let (mut result, mut panic, mut stopping) = (Ok(()), None, false);
        loop {
            tokio::select! {
                () = &mut shutdown, if !stopping => {
                    // Every lane at once: they drain side by side.
                    stopping = true;
                    stop.send_replace(true);
                }
                joined = running.join_next() => {
                    let Some(joined) = joined else { break };
                    // One lane ended: the others stop too.
                    stopping = true;
                    stop.send_replace(true);
                    match joined {
                        Ok(lane) => {
                            if result.is_ok() {
                                result = lane;
                            }
                        }
                        Err(e) if e.is_panic() => {
                            panic.get_or_insert(e.into_panic());
                        }
                        Err(e) => {
                            if result.is_ok() {
                                result = Err(Error::Config(format!("a lane of the runner stopped: {e}")));
                            }
                        }
                    }
                }
            }
        }
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
        result
    }

    /// One lane's [`Runner::run`].
    async fn run_lane(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        // However this lane ends, the others do not wait for it to leave the group.
        let mut departure = Departure::new(&self.inner.leaving);
        let topics = self.inner.client.topics().clone();
        let kafka = self.inner.client.kafka();
        let in_group = self.in_group();
        match &self.inner.config.partitions {
            Some(_) if in_group => {
                return Err(Error::Config(
                    "a runner in a group is assigned its partitions by the group: set `group_id` or `partitions`, not both".into(),
                ))
            }
            Some(list) if list.is_empty() => {
                return Err(Error::Config(
                    "`partitions` lists no partition: list at least one, or leave it unset to read them all".into(),
                ))
            }
            _ => {}
        }
        let (sink, mut sink_events) = ReportSink::new(
            kafka,
            topics.reports.clone(),
            self.inner.config.max_report_bytes,
            self.inner.connectivity.clone(),
        )?;
        let once = || Error::Config("a runner runs once; create another one".into());
        if self.inner.sink.set(sink).is_err() {
            return Err(once());
        }
        // The lane's runs, polled by its loop below; those left when it ends go on as tasks.
        let mut runs = self.inner.runs.open().ok_or_else(once)?;
        self.inner.tables.start(kafka, &self.inner.connectivity)?;
        let group_id = self
            .inner
            .config
            .group_id
            .clone()
            .unwrap_or_else(|| format!("livecheck-runner-{}", uuid::Uuid::new_v4()));
        let (group_tx, mut group_events) = mpsc::unbounded_channel();
        let context = |signals: bool| RunnerContext {
            signals,
            tests_topic: topics.tests.clone(),
            signals_topic: topics.signals.clone(),
            ownership: self.inner.ownership.clone(),
            registry: self.inner.registry.clone(),
            ledger: self.inner.ledger.clone(),
            clocks: self.inner.clocks.clone(),
            connectivity: self.inner.connectivity.clone(),
            events: group_tx.clone(),
            counters: self.inner.counters.clone(),
            readings: self.inner.readings.clone(),
            reports: crate::group::Reports {
                unsettled: self.inner.unsettled.clone(),
                closing: self.inner.closing.clone(),
                within: self.inner.config.drain_timeout,
            },
        };
        let fetch_wait = self.inner.config.fetch_wait.as_millis().max(1).to_string();
        let backoff = RECONNECT_BACKOFF.as_millis().to_string();
        let tests_consumer: Arc<Consumer2> = Arc::new(
            kafka
                .client_config(&[
                    ("group.id", &group_id),
                    // Offsets are committed by hand, with the signals and reports positions.
                    ("enable.auto.commit", "false"),
                    ("auto.offset.reset", "earliest"),
                    ("session.timeout.ms", "6000"),
                    ("fetch.wait.max.ms", &fetch_wait),
                    // Caught up with a tests partition: its signals need not wait for it.
                    ("enable.partition.eof", "true"),
                    // Incremental rebalances: a join or leave moves only what moves.
                    ("partition.assignment.strategy", "cooperative-sticky"),
                    // Watermarks, to notice a partition the broker does not serve.
                    ("statistics.interval.ms", "500"),
                    ("reconnect.backoff.ms", &backoff),
                ])
                .create_with_context(context(false))
                .map_err(Error::kafka("creating the runner's tests consumer"))?,
        );
        // Assigned by hand, following the tests partitions; never joins the group.
        let signals_consumer: Arc<Consumer2> = kafka
            .client_config(&[
                ("group.id", &format!("{group_id}.signals")),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", &fetch_wait),
                ("enable.partition.eof", "true"),
                ("statistics.interval.ms", "500"),
                ("reconnect.backoff.ms", &backoff),
            ])
            .create_with_context(context(true))
            .map(Arc::new)
            .map_err(Error::kafka("creating the runner's signals consumer"))?;
        let follower_stop = Arc::new(AtomicBool::new(false));
        // Stops the global tables' follower however this function returns.
        let _follower = StopOnDrop(follower_stop.clone());
        self.follow_global_tables(&follower_stop).await?;
        if in_group {
            // The signals consumer is assigned its partitions only as the tests partitions
            // are restored: it must know their leaders by then (see `learn_leaders`).
            let leaders = learn_leaders(&signals_consumer, topics.signals.clone());
            self.check_partitions(&tests_consumer).await?;
            let _ = leaders.await;
            tests_consumer
                .subscribe(&[&topics.tests])
                .map_err(Error::kafka("subscribing to the tests topic"))?;
        } else {
            self.assign_all(&tests_consumer, &signals_consumer).await?;
        }
        info!(tests = %topics.tests, signals = %topics.signals, group = ?self.inner.config.group_id, lane = self.inner.lane.0, lanes = self.inner.lane.1, "runner consuming");
        let mut tick = tokio::time::interval(self.inner.config.sweep_every);
        // After a stall, one sweep, not one per period missed.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for the deadlines of every waiting run (see `Registry::expire_waits`).
        let mut waits_tick = tokio::time::interval(WAITS_CHECKED_EVERY);
        waits_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut restores: Restores = JoinSet::new();
        tokio::pin!(shutdown);
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut ticks: u64 = 0;
        // One stream per consumer for the whole loop: a `recv()` per turn registers and
        // drops a waker slot each time.
        let (mut tests, mut signals) = (tests_consumer.stream(), signals_consumer.stream());
        let mut pace = Pace::new();
        let consumers = Consumers {
            tests: &tests_consumer,
            signals: &signals_consumer,
        };
        let unconstrained = pace.every.is_some();
        let looped = async {
            loop {
                tokio::select! {
                    biased;
                    () = &mut shutdown, if drain_until.is_none() => {
                        if !in_group {
                            break;
                        }
                        // Stop taking new tests; let the in-flight runs finish.
                        self.inner.draining.store(true, Ordering::Relaxed);
                        let in_flight = self.lane_in_flight();
                        info!(in_flight, "runner draining: no new tests; waiting for the runs in flight");
                        drain_until = Some(tokio::time::Instant::now() + self.inner.config.drain_timeout);
                    }
                    Some(event) = group_events.recv() => {
                        self.on_group_event(event, &tests_consumer, &signals_consumer, &mut restores);
                    }
                    Some(done) = restores.join_next() => match done {
                        Ok((assignments, result)) => self.on_restored(
                            assignments, result, &tests_consumer, &signals_consumer, &group_tx,
                        ),
                        Err(err) => warn!(error = %err, "a partition restore task failed"),
                    },
                    Some(event) = sink_events.recv() => self.on_sink_event(event),
                    // Before the consumers: while they have a backlog a record is always ready,
                    // and the sweep (expiries, runs past `max_run_time`) and the commits would
                    // wait for its end. Ready once per period, it never holds them back.
                    _ = tick.tick() => {
                        self.sweep();
                        self.check_reading(&tests_consumer, &signals_consumer);
                        if in_group {
                            // What moved; and every so often everything, since a commit
                            // refused after it was sent is not known (see
                            // `Ledger::commit_all_again`).
                            ticks += 1;
                            let all = ticks % COMMIT_ALL_EVERY_TICKS == 0;
                            self.commit(&tests_consumer, CommitMode::Async, all);
                        }
                    }
                    _ = waits_tick.tick() => self.expire_waits(),
                    // The runs the records woke, right after those records (and before the
                    // next ones: with a backlog, a record is always ready).
                    () = runs.next_ended() => {}
                    // The records a consumer has fetched already are taken in a row, up to
                    // `RECORDS_PER_TURN`, without polling the other arms in between (an empty
                    // queue is polled twice, a waker registered): the other arms wait at most that.
                    Some(msg) = tests.next() => {
                        self.take_fetched(Source::Tests, msg, &mut tests, consumers, &mut pace).await;
                    }
                    Some(msg) = signals.next() => {
                        self.take_fetched(Source::Signals, msg, &mut signals, consumers, &mut pace).await;
                    }
                }
                if let Some(until) = drain_until {
                    // Runs first: a run that ends claims its report before it leaves them.
                    // Reports are not waited for while the broker is unreachable: they
                    // would hold the drain to its end (the flush below still waits).
                    let in_flight = self.lane_in_flight();
                    let reports = if self.inner.connectivity.reachable() {
                        self.inner.unsettled.total()
                    } else {
                        0
                    };
                    if in_flight + reports == 0 || tokio::time::Instant::now() >= until {
                        if in_flight + reports > 0 {
                            warn!(in_flight, reports, "drain timeout: handing the unfinished runs back (their records, and those of reports not acknowledged, stay uncommitted)");
                        }
                        break;
                    }
                }
                pace.record().await;
            }
        };
        // With more than one worker the loop yields by `pace`, not by tokio's budget.
        if unconstrained {
            tokio::task::unconstrained(looped).await;
        } else {
            looped.await;
        }
        if in_group {
            // Runs still going are handed back: they must not publish after the last commit.
            // Stopped before they leave the lane's set, so that none is polled, on another
            // worker, between the two.
            let handed_back = self.lock_registry().cancel_all();
            drop(runs);
            if handed_back > 0 {
                self.inner
                    .counters
                    .here()
                    .runs_handed_back
                    .fetch_add(handed_back as u64, Ordering::Relaxed);
                warn!(
                    handed_back,
                    "runs not finished at shutdown stay uncommitted and run again after a restart"
                );
            }
            // No report refused from now on is sent again (see `resend`); wait for those
            // enqueued so far, so the last commit covers them.
            self.inner.closing.store(true, Ordering::SeqCst);
            let runner = self.clone();
            let flushed = tokio::task::spawn_blocking(move || {
                runner.inner.tables.flush(Duration::from_secs(5));
                runner.sink().map(|s| s.flush(Duration::from_secs(10)))
            })
            .await;
            // A report sent again just before `closing` was set may have been enqueued after
            // the flush began.
            let settled_by = tokio::time::Instant::now() + Duration::from_secs(1);
            while self.inner.unsettled.total() > 0 && tokio::time::Instant::now() < settled_by {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !matches!(flushed, Ok(Some(Ok(())))) || self.inner.unsettled.total() > 0 {
                warn!("not every report was acknowledged at shutdown; their tests run again after a restart");
            }
            while let Ok(event) = sink_events.try_recv() {
                self.on_sink_event(event);
            }
            let runner = self.clone();
            let consumer = tests_consumer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                runner.commit(&consumer, CommitMode::Sync, true)
            })
            .await;
            // The lanes leave the group together: a lane that left first would hand its
            // partitions to lanes still draining, which would restore them only to hand
            // them on again.
            // Meanwhile the consumer is polled, so that the group's rebalances are served
            // (a record it brings is dropped: it is not committed, its next owner reads it).
            let done = departure.done(self.inner.lane.1);
            let give_up = tokio::time::sleep(LEAVE_TOGETHER_FOR);
            tokio::pin!(done, give_up);
            loop {
                tokio::select! {
                    () = &mut done => break,
                    () = &mut give_up => break,
                    Some(_) = tests.next() => tokio::task::yield_now().await,
                }
            }
            // Then each gives its partitions up before it closes: librdkafka's close of a
            // group member waits for the group with no bound, and a member that closes while
            // the group hands it partitions can wait for ever (librdkafka#4527; once here,
            // with four members of one group leaving at once). The consumer is polled a
            // while after the unsubscribe (a rebalance under way is served, even for a
            // member that holds nothing), then until it holds nothing.
            tests_consumer.unsubscribe();
            let (start, until) = (
                tokio::time::Instant::now(),
                tokio::time::Instant::now() + GIVE_UP_WITHIN,
            );
            loop {
                let now = tokio::time::Instant::now();
                let served = now >= start + Duration::from_millis(200)
                    && !tests_consumer.assignment().is_ok_and(|a| a.count() > 0);
                if served || now >= until {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), tests.next()).await;
                tokio::task::yield_now().await;
            }
            drop((tests, signals));
            self.close_group_consumer(tests_consumer, restores).await;
        } else {
            // The runs still going go on to their verdicts, as tasks of their own.
            drop(runs);
            self.finish_in_background();
        }
        info!("runner stopped");
        Ok(())
    }

    /// Closes a lane's group consumer once the restores under way (each holds it) are over,
    /// on a thread of its own, waited for [`CLOSE_WITHIN`]: a close that hangs all the same
    /// holds neither the runtime's workers nor the runner's stop.
    async fn close_group_consumer(&self, consumer: Arc<Consumer2>, mut restores: Restores) {
        restores.abort_all();
        let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
        // A restore on a blocking thread is not stopped by the abort: it is waited for.
        let _ = tokio::time::timeout_at(deadline, async {
            while restores.join_next().await.is_some() {}
        })
        .await;
        let mut consumer = consumer;
        let last = loop {
            match Arc::try_unwrap(consumer) {
                Ok(last) => break Some(last),
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    consumer = shared;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => break None,
            }
        };
        let closed = match last {
            Some(last) => {
                let closing = tokio::task::spawn_blocking(move || drop(last));
                tokio::time::timeout_at(deadline, closing).await.is_ok()
            }
            None => false,
        };
        if !closed {
            warn!(
                within_s = CLOSE_WITHIN.as_secs(),
                "the runner's group consumer did not close in time; the group drops it after its session timeout"
            );
        }
    }

    /// Outside a group, the runs in flight when the runner stops go on to their verdicts
    /// (no one runs them again): their waits' deadlines (and parked runs' first steps') are
    /// looked at every 20 ms, and `max_run_time` at every `sweep_every`, until they are
    /// done — at most `max_run_time` and a sweep after the stop, not counting a broker
    /// outage (during which no run is stopped).
    fn finish_in_background(&self) {
        let in_flight = |r: &Self| r.lock_registry().in_flight();
        if in_flight(self) == 0 {
            return;
        }
        let runner = self.clone();
        let sweep_every = self.inner.config.sweep_every;
        let mut until = tokio::time::Instant::now()
            + self.inner.config.max_run_time
            + sweep_every
            + Duration::from_secs(1);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WAITS_CHECKED_EVERY);
            let mut swept = tokio::time::Instant::now();
            while in_flight(&runner) > 0 && tokio::time::Instant::now() < until {
                every.tick().await;
                runner.expire_waits();
                if swept.elapsed() >= sweep_every {
                    swept = tokio::time::Instant::now();
                    if runner.in_outage() {
                        until += sweep_every;
                    }
                    runner.abort_overdue();
                }
            }
        });
    }

    /// Handles `first`, then the records its consumer has fetched already, up to
    /// [`RECORDS_PER_TURN`] in all (see [`Runner::run`]).
    async fn take_fetched<'a>(
        &self,
        source: Source,
        first: KafkaResult<BorrowedMessage<'a>>,
        stream: &mut MessageStream<'a, RunnerContext>,
        consumers: Consumers<'_>,
        pace: &mut Pace,
    ) {
        let mut clock = TurnClock::default();
        let mut more = self.on_fetched(source, first, consumers, &mut clock).await;
        for _ in 1..RECORDS_PER_TURN {
            if !more {
                break;
            }
            if pace.record().await {
                clock.stale();
            }
            let Some(Some(msg)) = stream.next().now_or_never() else {
                break;
            };
            more = self.on_fetched(source, msg, consumers, &mut clock).await;
        }
    }

    /// A record (or an event) of the tests or signals consumer. Whether the batch it is part
    /// of goes on: not after an error, which waits a while (each of a burst of errors would
    /// hold the loop's other arms back that long again).
    async fn on_fetched(
        &self,
        source: Source,
        msg: KafkaResult<BorrowedMessage<'_>>,
        consumers: Consumers<'_>,
        clock: &mut TurnClock,
    ) -> bool {
        let signals = consumers.signals;
        match (source, msg) {
            (Source::Tests, Ok(msg)) => self.on_tests_message(&msg, consumers, clock),
            (Source::Signals, Ok(msg)) => self.on_signals_message(&msg, signals, clock),
            (_, Err(KafkaError::PartitionEOF(p))) => {
                if source == Source::Tests {
                    let action = self.lock_flow().tests_caught_up(p);
                    self.apply(action, signals);
                } else {
                    self.on_consumer_error(KafkaError::PartitionEOF(p)).await;
                    clock.stale();
                }
            }
            (source, Err(err)) => {
                if source == Source::Signals
                    && err.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
                {
                    self.inner.clocks.broker_down(Utc::now());
                }
                self.on_consumer_error(err).await;
                return false;
            }
        }
        true
    }

    fn sink(&self) -> Option<&ReportSink> {
        self.inner.sink.get()
    }

    /// In a group: tests, signals and reports must have the same partition count (they are
    /// co-partitioned by test id or route). A broker that does not answer is not an error here: the
    /// runner waits for it (and says so).
    async fn check_partitions(&self, consumer: &Arc<Consumer2>) -> Result<(), Error> {
        let consumer = consumer.clone();
        let topics = self.inner.client.topics().clone();
        let table_topics: Vec<(String, bool)> = self
            .inner
            .tables
            .topics()
            .into_iter()
            .map(|(t, g)| (t.to_owned(), g))
            .collect();
        let counts = tokio::task::spawn_blocking(move || {
            // One request for every topic: a broker that does not answer costs 5 s, once.
            consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|m| {
                    let count = |name: &str| partitions_of(&m, name);
                    let main = topics
                        .all()
                        .iter()
                        .map(|name| (name.to_string(), count(name)))
                        .collect::<Vec<_>>();
                    let tables = table_topics
                        .iter()
                        .map(|(name, global)| (name.clone(), *global, count(name)))
                        .collect::<Vec<_>>();
                    (main, tables)
                })
        })
        .await
        .map_err(|e| Error::Config(format!("the metadata task failed: {e}")))?;
        match counts {
            Ok((counts, table_counts)) => {
                if counts.iter().any(|(_, n)| *n == 0) {
                    return Err(Error::Config(format!(
                        "a LiveCheck topic does not exist or has no partitions ({}); create the three topics with the same partition count",
                        describe(&counts)
                    )));
                }
                if counts.windows(2).any(|w| w[0].1 != w[1].1) {
                    return Err(Error::Config(format!(
                        "the tests, signals and reports topics must have the same partition count (they are co-partitioned by test id or route): {}",
                        describe(&counts)
                    )));
                }
                self.check_table_topics(&table_counts, counts[0].1)?;
                self.inner.tables.set_partitions(counts[0].1 as i32);
                Ok(())
            }
            Err(err) => {
                warn!(brokers = %self.inner.client.kafka().brokers, error = %err, "cannot read the LiveCheck topics' metadata; the runner waits for the broker");
                Ok(())
            }
        }
    }

    /// The changelog of every table must exist; a partitioned table's must have as many
    /// partitions as the tests topic (its entries are co-partitioned with the tests).
    fn check_table_topics(
        &self,
        counts: &[(String, bool, usize)],
        partitions: usize,
    ) -> Result<(), Error> {
        for (topic, global, count) in counts {
            if *count == 0 {
                return Err(Error::Config(format!(
                    "the changelog topic {topic} of a table does not exist; create it compacted (cleanup.policy=compact) with {partitions} partitions, as the tests topic"
                )));
            }
            if !global && *count != partitions {
                return Err(Error::Config(format!(
                    "the changelog topic {topic} has {count} partitions and the tests topic {partitions}: a partitioned table's changelog is co-partitioned with the tests; recreate it with {partitions}"
                )));
            }
        }
        Ok(())
    }

    /// Reads the global tables whole before any test runs, then follows them on a thread
    /// of its own until `stop`.
    async fn follow_global_tables(&self, stop: &Arc<AtomicBool>) -> Result<(), Error> {
        if !self.inner.tables.specs().iter().any(|s| s.global) {
            return Ok(());
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let runner = self.clone();
        let stop_flag = stop.clone();
        std::thread::Builder::new()
            .name("livecheck-global-tables".into())
            .spawn(move || {
                let inner = &runner.inner;
                // Only a real catch-up sends; a failed attempt keeps the sender for the next.
                let mut ready = Some(ready_tx);
                let mut caught_up = || {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                };
                while !stop_flag.load(Ordering::Relaxed) {
                    let result = inner.tables.follow_global(
                        inner.client.kafka(),
                        &inner.connectivity,
                        &mut caught_up,
                        &stop_flag,
                    );
                    match result {
                        Ok(()) => break,
                        Err(err) => {
                            warn!(error = %err, "cannot read the global tables; trying again in 1 s");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            })
            .map_err(|e| Error::Config(format!("cannot start the global tables' thread: {e}")))?;
        info!("reading the global tables before the first test");
        let _ = ready_rx.await;
        Ok(())
    }

    /// Without a group: every partition of both topics, from their beginnings or ends.
    async fn assign_all(
        &self,
        tests: &Arc<Consumer2>,
        signals: &Arc<Consumer2>,
    ) -> Result<(), Error> {
        let topics = self.inner.client.topics().clone();
        let start_at_end = self.inner.config.start_at_end;
        let table_topics: Vec<(String, bool)> = self
            .inner
            .tables
            .topics()
            .into_iter()
            .map(|(t, g)| (t.to_owned(), g))
            .collect();
        // The partitions of the tests topic, and those of them this runner reads.
        type Found = (Vec<TopicPartitionList>, usize, Vec<(String, bool, usize)>);
        let wanted = self.inner.config.partitions.clone();
        let (lane, lanes) = self.inner.lane;
        let lists = {
            let consumer = tests.clone();
            let signals_consumer = signals.clone();
            tokio::task::spawn_blocking(move || -> Result<Found, Error> {
                // Each consumer reads the metadata of its own topic: a consumer assigned
                // partitions whose leader it does not know yet fetches nothing until its
                // metadata refresh finds it (seen here: a second without a signal). The two
                // at once: a new client's first request may wait for its connection (50 ms
                // on the embedded broker in about half the starts), and they wait together.
                let assignment = |topic: &str, consumer: &Consumer2| {
                    let partitions = partition_count(consumer, topic)?;
                    if partitions == 0 {
                        return Err(Error::Config(format!(
                            "topic {topic} does not exist or has no partitions; create it first"
                        )));
                    }
                    let all: Vec<i32> = match &wanted {
                        None => (0..partitions as i32).collect(),
                        Some(wanted) => {
                            if let Some(p) = wanted.iter().find(|p| !(0..partitions as i32).contains(*p)) {
                                return Err(Error::Config(format!(
                                    "partition {p} of `partitions` does not exist: topic {topic} has {partitions} (0 to {})",
                                    partitions - 1
                                )));
                            }
                            wanted.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect()
                        }
                    };
                    // This lane's share: every `lanes`-th partition.
                    let all: Vec<i32> = all
                        .into_iter()
                        .enumerate()
                        .filter(|(k, _)| k % lanes == lane)
                        .map(|(_, p)| p)
                        .collect();
                    let ends = scan::watermarks(consumer, topic, &all, Duration::from_secs(10))
                        .map_err(Error::kafka(format!("reading the ends of {topic}")))?;
                    let mut list = TopicPartitionList::new();
                    for (p, (low, high)) in all.into_iter().zip(ends) {
                        let offset = if start_at_end { high } else { low };
                        list.add_partition_offset(topic, p, Offset::Offset(offset))
                            .map_err(Error::kafka("building the assignment"))?;
                    }
                    Ok((list, partitions))
                };
                let (tests_list, signals_list) = std::thread::scope(|scope| {
                    let signals = scope.spawn(|| assignment(&topics.signals, &signals_consumer));
                    let tests = assignment(&topics.tests, &consumer);
                    let signals = signals.join().unwrap_or_else(|_| {
                        Err(Error::Config(
                            "reading the signals topic's ends panicked".to_owned(),
                        ))
                    });
                    (tests, signals)
                });
                let ((tests_list, count), (signals_list, signals_count)) =
                    (tests_list?, signals_list?);
                if (wanted.is_some() || lanes > 1) && signals_count != count {
                    // A test's signals are on its own partition's number only when both
                    // topics have as many partitions.
                    return Err(Error::Config(format!(
                        "`partitions` and `lanes` need the tests and signals topics co-partitioned: {} has {count} partitions and {} {signals_count}; recreate one with as many as the other",
                        topics.tests, topics.signals
                    )));
                }
                let mut table_counts = Vec::new();
                for (topic, global) in &table_topics {
                    table_counts.push((topic.clone(), *global, partition_count(&consumer, topic)?));
                }
                Ok((vec![tests_list, signals_list], count, table_counts))
            })
            .await
            .map_err(|e| Error::Config(format!("the metadata task failed: {e}")))??
        };
        let (lists, count, table_counts) = lists;
        let partitions: Vec<i32> = lists[0].elements().iter().map(|e| e.partition()).collect();
        self.check_table_topics(&table_counts, count)?;
        self.inner.tables.set_partitions(count as i32);
        if !self.inner.tables.is_empty() {
            let runner = self.clone();
            let wanted = partitions.clone();
            let shards = tokio::task::spawn_blocking(move || {
                let inner = &runner.inner;
                inner.tables.restore(
                    inner.client.kafka(),
                    &inner.connectivity,
                    &wanted,
                    &HashMap::new(),
                    inner.config.restore_timeout,
                )
            })
            .await
            .map_err(|e| Error::Config(format!("the table restore task failed: {e}")))?
            .map_err(Error::kafka("reading the tables' changelogs"))?;
            let mut shards = shards;
            for p in &partitions {
                self.inner
                    .tables
                    .install(*p, shards.remove(p).unwrap_or_default(), None);
            }
        }
        tests
            .assign(&lists[0])
            .map_err(Error::kafka("assigning the tests partitions"))?;
        signals
            .assign(&lists[1])
            .map_err(Error::kafka("assigning the signals partitions"))?;
        let now = Instant::now();
        for e in lists[1].elements() {
            if let Offset::Offset(offset) = e.offset() {
                self.inner.clocks.assigned(e.partition(), offset);
                self.inner
                    .readings
                    .of(true)
                    .start(e.partition(), offset, now);
            }
        }
        for e in lists[0].elements() {
            if let Offset::Offset(offset) = e.offset() {
                self.tests_read(e.partition(), offset, true);
                self.inner
                    .readings
                    .of(false)
                    .start(e.partition(), offset, now);
            }
        }
        {
            let mut partitions = self.inner.ownership.lock();
            // Epoch 0, the first epoch a group hands out: the two never meet, since assignment
            // epochs are only compared in a group, and a runner outside one never joins one.
            for e in lists[0].elements() {
                partitions.insert(e.partition(), PartitionState::Active { epoch: 0 });
            }
            self.inner
                .ownership
                .assigned
                .store(partitions.len(), Ordering::Relaxed);
        }
        self.inner
            .ownership
            .owns_first
            .store(partitions.contains(&0), Ordering::Relaxed);
        self.inner.ready.send_replace(true);
        Ok(())
    }

    fn on_group_event(
        &self,
        event: GroupEvent,
        tests: &Arc<Consumer2>,
        signals: &Consumer2,
        restores: &mut Restores,
    ) {
        // The group rebalanced: the commits sent meanwhile may have been refused.
        self.lock_ledger().commit_all_again();
        match event {
            GroupEvent::Assigned(assignments) => {
                // Only those still waiting for this very assignment (a retry may come after
                // a revoke, or after the partition came back).
                let (assignments, restoring): (Vec<Assignment>, bool) = {
                    let owned = self.inner.ownership.lock();
                    let restoring = owned
                        .values()
                        .any(|state| matches!(state, PartitionState::Restoring { .. }));
                    let assignments = assignments
                        .into_iter()
                        .filter(|(p, epoch)| {
                            matches!(owned.get(p), Some(PartitionState::Restoring { epoch: e, .. }) if e == epoch)
                        })
                        .collect();
                    (assignments, restoring)
                };
                if assignments.is_empty() {
                    // An empty assignment (more members than partitions, or a rebalance that
                    // gave this one nothing new): ready, unless an earlier assignment is
                    // still being restored (its end says so).
                    if !restoring {
                        self.inner.ready.send_replace(true);
                    }
                    return;
                }
                let consumer = tests.clone();
                let kafka = self.inner.client.kafka().clone();
                let topics = self.inner.client.topics().clone();
                let timeout = self.inner.config.restore_timeout;
                let connectivity = self.inner.connectivity.clone();
                let tables = self.inner.tables.clone();
                restores.spawn_blocking(move || {
                    let partitions: Vec<i32> = assignments.iter().map(|(p, _)| *p).collect();
                    let result = group::restore(
                        &*consumer,
                        &kafka,
                        &connectivity,
                        &topics,
                        &partitions,
                        timeout,
                    )
                    .and_then(|mut restored| {
                        if tables.is_empty() {
                            return Ok(restored);
                        }
                        if tables.partitions() == 0 {
                            // The start's metadata read failed (broker down then): now.
                            let metadata = consumer.fetch_metadata(Some(&topics.tests), timeout)?;
                            let count = metadata
                                .topics()
                                .first()
                                .map_or(0, |t| t.partitions().len());
                            tables.set_partitions(count as i32);
                        }
                        // The tables after the commit: writes of committed tests forgotten.
                        let committed: HashMap<i32, i64> = restored
                            .iter()
                            .map(|r| (r.partition, r.resume.tests))
                            .collect();
                        let mut shards = tables.restore(
                            &kafka,
                            &connectivity,
                            &partitions,
                            &committed,
                            timeout,
                        )?;
                        for r in &mut restored {
                            r.tables = shards.remove(&r.partition).unwrap_or_default();
                        }
                        Ok(restored)
                    });
                    (assignments, result)
                });
            }
            GroupEvent::Revoked(partitions) => {
                {
                    let mut flow = self.lock_flow();
                    for p in &partitions {
                        flow.forget(*p);
                    }
                }
                for p in &partitions {
                    self.inner.tables.drop_partition(*p);
                }
                let topic = &self.inner.client.topics().signals;
                let mut list = TopicPartitionList::new();
                for p in &partitions {
                    list.add_partition(topic, *p);
                }
                // Only those assigned already (a partition revoked mid-restore was not).
                let assigned = signals.assignment().unwrap_or_default();
                let list = list
                    .elements()
                    .iter()
                    .filter(|e| assigned.find_partition(e.topic(), e.partition()).is_some())
                    .fold(TopicPartitionList::new(), |mut l, e| {
                        l.add_partition(e.topic(), e.partition());
                        l
                    });
                if list.count() > 0 {
                    if let Err(err) = signals.incremental_unassign(&list) {
                        warn!(error = %err, "could not stop reading revoked signals partitions; their records are ignored");
                    }
                }
            }
        }
    }

    fn on_restored(
        &self,
        assignments: Vec<Assignment>,
        result: Result<Vec<Restored>, KafkaError>,
        tests: &Arc<Consumer2>,
        signals: &Consumer2,
        retry: &mpsc::UnboundedSender<GroupEvent>,
    ) {
        let restored = match result {
            Ok(restored) => restored,
            Err(err) => {
                bump(&self.inner.counters.here().restore_retries);
                warn!(partitions = ?assignments.iter().map(|(p, _)| p).collect::<Vec<_>>(), error = %err, "could not restore assigned partitions; trying again in 1 s");
                let retry = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = retry.send(GroupEvent::Assigned(assignments));
                });
                return;
            }
        };
        let topics = self.inner.client.topics();
        for mut r in restored {
            let p = r.partition;
            let Some(epoch) = assignments.iter().find(|(q, _)| *q == p).map(|(_, e)| *e) else {
                continue;
            };
            let held = {
                let mut owned = self.inner.ownership.lock();
                match owned.get_mut(&p) {
                    Some(PartitionState::Restoring { epoch: e, held }) if *e == epoch => {
                        let held = std::mem::take(held);
                        owned.insert(p, PartitionState::Active { epoch });
                        held
                    }
                    // Revoked meanwhile (and maybe assigned again: its own restore follows).
                    _ => continue,
                }
            };
            {
                let mut registry = self.lock_registry();
                for id in r.decided.keys() {
                    registry.mark_finished(id, Some(p));
                }
            }
            self.inner
                .counters
                .here()
                .decided_restored
                .fetch_add(r.decided.len() as u64, Ordering::Relaxed);
            let decided = r.decided.len();
            // Before any test of the partition runs.
            self.inner
                .tables
                .install(p, std::mem::take(&mut r.tables), Some(r.resume.tests));
            self.lock_ledger().open(p, r.resume, r.decided, r.tests_end);
            self.inner.clocks.assigned(p, r.resume.signals);
            let now = Instant::now();
            self.inner.readings.of(true).start(p, r.resume.signals, now);
            self.inner.readings.of(false).start(p, r.resume.tests, now);
            self.lock_flow().forget(p);
            let mut list = TopicPartitionList::new();
            let _ = list.add_partition_offset(&topics.signals, p, Offset::Offset(r.resume.signals));
            if let Err(err) = signals.incremental_assign(&list) {
                error!(partition = p, error = %err, "could not read the signals partition of a restored tests partition");
            } else if let Err(err) = signals.resume(&list) {
                // librdkafka keeps an application's pause across an unassign: a partition
                // the flow control paused before it was revoked would stay paused.
                error!(partition = p, error = %err, "could not resume the signals partition of a restored tests partition");
            }
            let mut list = TopicPartitionList::new();
            list.add_partition(&topics.tests, p);
            match tests.resume(&list) {
                Ok(()) => wake_fetcher(tests, self.inner.tests_topic.clone(), p),
                Err(err) => {
                    error!(partition = p, error = %err, "could not resume a restored tests partition")
                }
            }
            debug!(partition = p, resume = ?r.resume, decided, held = held.len(), "partition restored");
            self.tests_read(p, r.resume.tests, true);
            for record in held {
                match self.take(Source::Tests, tests, p, record.offset, Instant::now()) {
                    Fetched::Take => {}
                    Fetched::Drop => continue,
                    // Those after it come again from the rewind.
                    Fetched::Rewind { .. } => break,
                }
                self.tests_read(p, record.offset, false);
                self.on_test_record(
                    p,
                    record.offset,
                    record.timestamp,
                    record.payload.as_deref(),
                );
            }
        }
        self.inner.ready.send_replace(true);
    }

    async fn on_consumer_error(&self, err: KafkaError) {
        if let KafkaError::PartitionEOF(p) = err {
            self.inner.connectivity.mark_reachable();
            self.inner.clocks.broker_up(Utc::now());
            self.inner.clocks.caught_up(p, Utc::now());
            return;
        }
        self.inner
            .connectivity
            .on_client_error("runner consumer error; retrying", &err);
        // A broker connection's errors come one event each, at librdkafka's own pace (its
        // reconnect backoff, 15–30 ms at first for these consumers): taken as they come. A
        // pause for each let a 15 s outage queue more of them than the loop read, and the
        // old ones, read after the broker was back, said it was down for a minute more
        // (the likely cause of one failure of the outage test). Other errors pause the loop a
        // while, each.
        let transport = matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        );
        if !transport {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn lock_flow(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.inner.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses or resumes a signals partition (see [`crate::flow`]).
    fn apply(&self, action: Option<flow::Action>, signals: &Arc<Consumer2>) {
        let Some(action) = action else { return };
        let mut list = TopicPartitionList::new();
        let (flow::Action::Pause(p) | flow::Action::Resume(p)) = action;
        list.add_partition(&self.inner.signals_topic, p);
        let result = match action {
            flow::Action::Pause(_) => signals.pause(&list),
            flow::Action::Resume(_) => signals.resume(&list),
        };
        match result {
            Ok(()) => {
                debug!(?action, "signals partition flow");
                let paused = matches!(action, flow::Action::Pause(_));
                self.inner
                    .readings
                    .of(true)
                    .pause(p, paused, Instant::now());
                if let flow::Action::Resume(p) = action {
                    wake_fetcher(signals, self.inner.signals_topic.clone(), p);
                }
            }
            Err(err) => {
                warn!(?action, error = %err, "could not pause or resume a signals partition")
            }
        }
    }

    fn on_tests_message(
        &self,
        msg: &BorrowedMessage<'_>,
        consumers: Consumers<'_>,
        clock: &mut TurnClock,
    ) {
        self.inner.connectivity.mark_reachable();
        let p = msg.partition();
        if self.in_group() {
            let mut owned = self.inner.ownership.lock();
            match owned.get_mut(&p) {
                Some(PartitionState::Active { .. }) => {}
                Some(PartitionState::Restoring { held, .. }) => {
                    held.push(HeldRecord {
                        offset: msg.offset(),
                        timestamp: msg.timestamp().to_millis(),
                        payload: msg.payload().map(<[u8]>::to_vec),
                    });
                    return;
                }
                // Not ours any more.
                None => return,
            }
        }
        let at = clock.instant();
        if self.take(Source::Tests, consumers.tests, p, msg.offset(), at) != Fetched::Take {
            return;
        }
        self.tests_read(p, msg.offset(), false);
        self.on_test_record(p, msg.offset(), msg.timestamp().to_millis(), msg.payload());
        let buffered = self.lane_buffered_tests();
        let action = self.lock_flow().test_record(p, buffered);
        self.apply(action, consumers.signals);
    }

    fn on_signals_message(
        &self,
        msg: &BorrowedMessage<'_>,
        signals: &Arc<Consumer2>,
        clock: &mut TurnClock,
    ) {
        self.inner.connectivity.mark_reachable();
        // The turn's time: the broker was up then, and the signal had arrived by then.
        let now = clock.utc();
        self.inner.clocks.broker_up(now);
        let p = msg.partition();
        let event_at = msg
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis);
        if self.in_group() && !self.inner.ownership.is_active(p) {
            return;
        }
        if self.take(Source::Signals, signals, p, msg.offset(), clock.instant()) != Fetched::Take {
            return;
        }
        // A consumer-positions report is read past, but its timestamp is not a step's: every
        // service that reads sends one to every partition, and a fast clock in one of them
        // must not move the event time of every test.
        let is_positions = msg
            .payload()
            .is_some_and(|p| p.starts_with(PositionsRecord::PREFIX));
        let clock_at = if is_positions { None } else { event_at };
        if let Some((first, last)) = self.inner.clocks.record(p, msg.offset(), clock_at, now) {
            self.never_read(Unread::Signals, p, first, last);
        }
        let buffered = self.lane_buffered_tests();
        let action = self.lock_flow().signal_record(p, buffered);
        self.apply(action, signals);
        let pos = Pos {
            topic: self.inner.signals_topic.clone(),
            partition: p,
            offset: msg.offset(),
        };
        if self.in_group() && !self.lock_ledger().signal_read(p, pos.offset) {
            // Read again while still held: already counted.
            return;
        }
        if !self.on_signal_record(&pos, event_at, now, msg.payload()) {
            self.release_signals([&pos]);
        }
    }

    /// Whether the record at `offset` of `partition` is handled (see [`crate::reading`]): a
    /// rewind it calls for is asked of `consumer` here.
    fn take(
        &self,
        source: Source,
        consumer: &Consumer2,
        partition: i32,
        offset: i64,
        now: Instant,
    ) -> Fetched {
        let signals = source == Source::Signals;
        let take = self
            .inner
            .readings
            .of(signals)
            .record(partition, offset, now);
        if let Fetched::Rewind { to, next } = take {
            let topic = self.topic_of(source);
            warn!(
                topic = %topic,
                partition,
                next,
                served = offset,
                from = to,
                "the broker served a record past the next one to read (it answered a fetch from inside a record \
                 batch with the batches after it): reading the partition again from an earlier offset; the records \
                 read before are dropped"
            );
            self.rewind(consumer, topic, partition, to);
        }
        take
    }

    /// The name of `source`'s topic.
    fn topic_of(&self, source: Source) -> &Arc<str> {
        match source {
            Source::Tests => &self.inner.tests_topic,
            Source::Signals => &self.inner.signals_topic,
        }
    }

    /// Seeks `partition` of `topic` back to `to` (without waiting: records fetched before
    /// the seek are not handed over after it).
    fn rewind(&self, consumer: &Consumer2, topic: &str, partition: i32, to: i64) {
        bump(&self.inner.counters.here().partition_rewinds);
        if let Err(err) = consumer.seek(topic, partition, Offset::Offset(to), Duration::ZERO) {
            warn!(topic, partition, to, error = %err, "could not read a partition again from an earlier offset; trying again later");
        }
    }

    /// Rewinds the partitions that stalled: the broker holds records after the next one to
    /// read, and serves none (see [`crate::reading`]).
    fn check_reading(&self, tests: &Consumer2, signals: &Consumer2) {
        let now = Instant::now();
        for (source, consumer) in [(Source::Tests, tests), (Source::Signals, signals)] {
            let stalls = self
                .inner
                .readings
                .of(source == Source::Signals)
                .stalled(now);
            let topic = self.topic_of(source);
            for stall in stalls {
                match stall {
                    Stall::Rewind {
                        partition,
                        to,
                        next,
                        high,
                    } => {
                        warn!(
                            topic = %topic,
                            partition,
                            next,
                            high,
                            from = to,
                            stalled_s = reading::STALL_AFTER.as_secs(),
                            "no record came from the next offset to read although the broker holds records after it \
                             (it may answer a fetch from inside a record batch with nothing): reading the partition \
                             again from an earlier offset; the records read before are dropped"
                        );
                        self.rewind(consumer, topic, partition, to);
                    }
                    Stall::GaveUp {
                        partition,
                        next,
                        high,
                    } => {
                        bump(&self.inner.counters.here().partitions_stalled);
                        error!(
                            topic = %topic,
                            partition,
                            next,
                            high,
                            rewinds = reading::MAX_REWINDS,
                            "the broker holds records after the next offset to read but serves none, even from earlier \
                             offsets: the tests and steps they hold wait. Check the broker's health and logs"
                        );
                    }
                }
            }
        }
    }

    /// Test record `offset` of `partition` was read (with `start`: reading starts there).
    /// Offsets skipped before it were never read: their tests are not run and have no
    /// report, so they are counted and logged (see `Runner::never_read`).
    fn tests_read(&self, partition: i32, offset: i64, start: bool) {
        let expected = {
            let mut read_to = self
                .inner
                .tests_read_to
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if start {
                read_to.insert(partition, offset);
                return;
            }
            let next = read_to.entry(partition).or_insert(offset);
            let expected = *next;
            *next = (*next).max(offset + 1);
            expected
        };
        if offset > expected {
            self.never_read(Unread::Tests, partition, expected, offset - 1);
        }
    }

    /// Offsets `first..=last` of a `partition` were never read: counted and logged (see
    /// `RunnerCounters::signals_skipped_by_broker`). A test whose record they held is not
    /// run; a test in flight that then misses a step ends in `ERROR`, not `TIMEOUT` (see
    /// `Runner::conclude`).
    fn never_read(&self, unread: Unread, partition: i32, first: i64, last: i64) {
        let counters = &self.inner.counters;
        let (counter, topic, then) = match unread {
            Unread::Tests => (
                &counters.here().tests_skipped_by_broker,
                &self.inner.tests_topic,
                "their tests are not run and have no report",
            ),
            Unread::Signals => (
                &counters.here().signals_skipped_by_broker,
                &self.inner.signals_topic,
                "tests in flight that miss a step end in ERROR, not TIMEOUT",
            ),
        };
        let skipped = last - first + 1;
        counter.fetch_add(skipped as u64, Ordering::Relaxed);
        error!(
            topic = %topic,
            partition,
            first,
            last,
            skipped,
            then,
            "records were never read: the broker did not serve them, even when the partition was read again from \
             earlier offsets, or retention deleted them before they were read. Check the broker's logs, and keep \
             the topics' retention longer than LiveCheck may stay behind"
        );
    }

    /// Signal records no test needs any more.
    fn release_signals<'a>(&self, done: impl IntoIterator<Item = &'a Pos>) {
        if self.in_group() {
            let mut ledger = self.lock_ledger();
            for pos in done {
                ledger.signals_done(pos.partition, [pos.offset]);
            }
        }
    }

    /// A test record that needs nothing more.
    fn test_done(&self, partition: i32, offset: i64) {
        if self.in_group() {
            self.lock_ledger().test_done(partition, offset);
        }
    }

    /// Commits what is decided: per partition the tests offset, with the signals and
    /// reports positions as metadata. Only what moved, unless `all`. An asynchronous
    /// commit's `Ok` says it was sent, not that the group took it: what it refuses is
    /// committed again after the next rebalance, or with everything every
    /// [`COMMIT_ALL_EVERY_TICKS`] ticks.
    fn commit(&self, consumer: &Consumer2, mode: CommitMode, all: bool) {
        let positions = {
            let ledger = self.lock_ledger();
            if all {
                ledger.positions()
            } else {
                ledger.to_commit()
            }
        };
        if positions.is_empty() {
            return;
        }
        let list = group::commit_list(self.inner.client.topics(), &positions);
        match consumer.commit(&list, mode) {
            Ok(()) => {
                let mut ledger = self.lock_ledger();
                for (p, resume) in positions {
                    self.inner.tables.committed(p, resume.tests);
                    ledger.committed(p, resume);
                }
            }
            Err(err) => debug!(error = %err, "offset commit failed; retrying at the next tick"),
        }
    }

    fn sweep(&self) {
        self.abort_overdue();
        let dropped = {
            let mut registry = self.lock_registry();
            let dropped = registry.expire_early(Instant::now());
            registry.shrink();
            dropped
        };
        if !dropped.is_empty() {
            self.release_signals(&dropped);
            self.inner
                .counters
                .here()
                .buffer_evictions
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            warn!(
                dropped = dropped.len(),
                "early signals expired without their test record"
            );
        }
    }

    fn is_foreign(&self, test_id: &str) -> bool {
        self.inner.config.watched_only
            && !self.inner.watchers.contains(test_id)
            && !self.lock_registry().is_known(test_id)
    }

    fn malformed(&self, topic: &str, partition: i32, offset: i64, why: &str) {
        bump(&self.inner.counters.here().records_malformed);
        warn!(
            topic,
            partition, offset, "skipped a malformed record: {why}"
        );
    }

    /// Handles one record of the tests topic.
    fn on_test_record(
        &self,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        payload: Option<&[u8]>,
    ) {
        if self.inner.draining.load(Ordering::Relaxed) {
            // Draining: not taken; left uncommitted for whoever takes the partition next.
            return;
        }
        if self.in_group() && !self.lock_ledger().test_read(partition, offset) {
            return;
        }
        let topic = self.inner.client.topics().tests.as_str();
        bump(&self.inner.counters.here().tests_received);
        let Some(payload) = payload else {
            self.malformed(topic, partition, offset, "no payload");
            return self.test_done(partition, offset);
        };
        let context: TestContext = match decode_json(payload) {
            Ok(c) => c,
            Err(e) => {
                self.malformed(
                    topic,
                    partition,
                    offset,
                    &format!("not a TestExecution: {e}"),
                );
                return self.test_done(partition, offset);
            }
        };
        if let Err(err) = self.inner.client.verify_context(&context) {
            let c = &self.inner.counters;
            bump(match err.reason() {
                "unsigned" => &c.here().tests_rejected_unsigned,
                "malformed_signature" | "unknown_key" | "bad_signature" => {
                    &c.here().tests_rejected_bad_signature
                }
                _ => &c.here().tests_rejected_other,
            });
            warn!(topic, partition, offset, test_id = %context.id, case = %context.case, reason = err.reason(), error = %err, "refused a test record: its context is not trusted; no run");
            return self.test_done(partition, offset);
        }
        if self.is_foreign(&context.id) {
            bump(&self.inner.counters.here().foreign_records);
            return self.test_done(partition, offset);
        }
        let Some(case) = self.inner.suite.get(&context.case).cloned() else {
            bump(&self.inner.counters.here().unknown_case);
            warn!(topic, partition, offset, case = %context.case, test_id = %context.id, "skipped a test of an unknown case");
            return self.test_done(partition, offset);
        };
        let pos = Pos {
            topic: self.inner.tests_topic.clone(),
            partition,
            offset,
        };
        let event_at = timestamp.and_then(DateTime::from_timestamp_millis);
        let outcome = {
            let mut registry = self.lock_registry();
            if registry.is_known(&context.id) {
                TestOutcome::Duplicate
            } else if !self.inner.suite.is_active(&case)
                // Expired when it was registered (by the record's time: a replay after a
                // restart runs what was in time then).
                || context.is_expired_at(event_at.unwrap_or_else(Utc::now))
            {
                let dropped = registry.mark_finished(&context.id, Some(partition));
                drop(registry);
                let why = if self.inner.suite.is_active(&case) {
                    format!(
                        "test expired at {} before the runner saw it",
                        crate::headers::format_time(context.expires_at)
                    )
                } else {
                    format!("case {} is inactive", case.name())
                };
                let hold = self.hold(pos.partition, pos.offset, &dropped);
                self.spawn_publish(skip_report(&context, why), hold);
                return;
            } else {
                registry.start_test(&context.id, Some(pos.partition))
            }
        };
        match outcome {
            TestOutcome::Started => {
                let parked = Parked {
                    case,
                    context: Arc::new(context),
                    pos,
                    event_at,
                };
                if parked.case.settings().start_on_first_step {
                    self.park(Box::new(parked));
                } else {
                    self.start_run(parked);
                }
            }
            TestOutcome::Duplicate => {
                bump(&self.inner.counters.here().duplicate_tests);
                debug!(test_id = %context.id, "test already decided or running; record ignored");
                let pinned = self.in_group()
                    && self
                        .lock_ledger()
                        .decided_before(partition, offset, &context.id);
                if !pinned {
                    self.test_done(partition, offset);
                }
            }
            TestOutcome::AtCapacity => {
                bump(&self.inner.counters.here().capacity_skips);
                let dropped = self
                    .lock_registry()
                    .mark_finished(&context.id, Some(partition));
                let limit = self.inner.config.limits.max_in_flight;
                let hold = self.hold(pos.partition, pos.offset, &dropped);
                self.spawn_publish(
                    skip_report(
                        &context,
                        format!("runner at capacity ({limit} runs in flight)"),
                    ),
                    hold,
                );
            }
        }
    }

    /// Starts a run: in its lane's set (see [`crate::lane_runs`]).
    fn start_run(&self, parked: Parked) {
        let Parked {
            case,
            context,
            pos,
            event_at,
        } = parked;
        debug!(test_id = %context.id, case = %context.case, "run started");
        let (check, shared) = self.clone().execute(case, context, pos, event_at);
        let stop = self.inner.runs.start(check);
        self.lock_registry().set_task(&shared.context.id, stop);
    }

    /// Holds the run of a case that starts on its first step until a record of its test
    /// comes ([`Self::on_signal_record`]) or its first step's deadline passes (in the
    /// registry's queue of deadlines: [`Self::expire_waits`]); a test whose signals came
    /// first starts at once.
    fn park(&self, parked: Box<Parked>) {
        let settings = parked.case.settings();
        let context = &parked.context;
        let started_at = parked.event_at.unwrap_or(context.issued_at);
        // A deadline past what a time can hold is never: the run waits for a record (or
        // `max_run_time`).
        let after = |from: DateTime<Utc>, d: Duration| {
            TimeDelta::from_std(d)
                .ok()
                .and_then(|d| from.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        let step = after(started_at, settings.timeout);
        let due = match settings.deadline {
            Some(d) => step.min(after(context.issued_at.min(started_at), d)),
            None => step,
        };
        let context = context.clone();
        // The registry's lock is let go before either arm takes a lock again.
        let refused = self.lock_registry().park(&context.id, parked, due);
        match refused {
            None => debug!(test_id = %context.id, "run parked until its first step"),
            Some(parked) => {
                // The run's own copy then, which it takes without copying the context.
                drop(context);
                self.start_run(*parked);
            }
        }
    }

    /// Wakes the runs whose wait's deadline their partition's clock has passed, and starts
    /// the parked runs whose first step's deadline it has passed.
    fn expire_waits(&self) {
        let now = Utc::now();
        let clocks = &self.inner.clocks;
        let (mut due, mut wake) = (Vec::new(), Wakers::default());
        self.lock_registry()
            .expire_waits(|p| clocks.now(p, now), &mut due, &mut wake);
        wake.wake();
        for parked in due {
            self.start_run(parked);
        }
    }

    /// Stops the runs that have run `max_run_time` since their test record was read (their
    /// guards conclude them with an `ERROR`), parked runs too (started, they are stopped at
    /// once: their `ERROR` is that of a run started at once) — not during a broker outage
    /// and its grace period, when waits are held by event time: once it is over.
    fn abort_overdue(&self) {
        if self.in_outage() {
            return;
        }
        let mut parked = Vec::new();
        let stopped = self.lock_registry().abort_overdue(
            self.inner.config.max_run_time,
            Instant::now(),
            &mut parked,
        );
        for run in parked {
            self.start_run(run);
        }
        if stopped > 0 {
            debug!(stopped, "runs stopped for max_run_time");
        }
    }

    /// What a report of the test whose record is at `test_offset` of `partition`, decided
    /// now, decides (group mode).
    fn hold(&self, partition: i32, test_offset: i64, records: &[Pos]) -> Option<Hold> {
        self.hold_in(self.epoch_now(partition), partition, test_offset, records)
    }

    /// The epoch of `partition`'s assignment now; one no epoch matches if the partition is
    /// not active.
    fn epoch_now(&self, partition: i32) -> u64 {
        self.inner
            .ownership
            .active_epoch(partition)
            .unwrap_or(u64::MAX)
    }

    /// What a report decided in the assignment of epoch `epoch` decides (see [`Self::hold`]).
    fn hold_in(
        &self,
        epoch: u64,
        partition: i32,
        test_offset: i64,
        records: &[Pos],
    ) -> Option<Hold> {
        self.in_group().then(|| Hold {
            partition,
            epoch,
            test_offset,
            signals: records
                .iter()
                .filter(|p| {
                    Arc::ptr_eq(&p.topic, &self.inner.signals_topic)
                        || *p.topic == *self.inner.signals_topic
                })
                .map(|p| p.offset)
                .collect(),
        })
    }

    /// Handles one record of the signals topic; whether its test keeps it.
    fn on_signal_record(
        &self,
        pos: &Pos,
        event_at: Option<DateTime<Utc>>,
        arrived_at: DateTime<Utc>,
        payload: Option<&[u8]>,
    ) -> bool {
        let (topic, partition, offset) = (&pos.topic, pos.partition, pos.offset);
        let Some(payload) = payload else {
            bump(&self.inner.counters.here().signals_received);
            self.malformed(topic, partition, offset, "no payload");
            return false;
        };
        // Consumer positions share the topic (every runner reads some partitions of it);
        // they are not signals.
        if payload.starts_with(PositionsRecord::PREFIX) {
            match serde_json::from_slice::<PositionsRecord>(payload) {
                Ok(record) => {
                    bump(&self.inner.counters.here().positions_received);
                    self.inner
                        .positions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .apply(&record);
                }
                Err(e) => self.malformed(
                    topic,
                    partition,
                    offset,
                    &format!("not consumer positions: {e}"),
                ),
            }
            return false;
        }
        bump(&self.inner.counters.here().signals_received);
        // Decoded in place: only what the run keeps is copied.
        let event: SignalRecord<'_> = match decode_json(payload) {
            Ok(e) => e,
            Err(e) => {
                self.malformed(topic, partition, offset, &format!("not a SignalEvent: {e}"));
                return false;
            }
        };
        if self.is_foreign(&event.test_id) {
            bump(&self.inner.counters.here().foreign_records);
            return false;
        }
        if self.inner.suite.get(&event.case).is_none() {
            bump(&self.inner.counters.here().unknown_case);
            warn!(%topic, partition, offset, case = %event.case, signal = %event.signal, "skipped a signal of an unknown case");
            return false;
        }
        let arrival = Arrival {
            signal: event.signal.into_owned(),
            value: event.value.to_owned(),
            sent_at: event.sent_at,
            arrived_at,
            event_at,
            topic: topic.clone(),
            partition,
            offset,
            send_id: event.send_id.as_deref().map(Box::from),
            item: event.item.as_deref().map(Box::from),
        };
        let mut wake = Wakers::default();
        let (outcome, woke) = {
            let mut registry = self.lock_registry();
            let outcome = registry.on_signal(&event.test_id, arrival, &mut wake);
            let woke = (outcome == SignalOutcome::Woke)
                .then(|| registry.take_parked(&event.test_id))
                .flatten();
            (outcome, woke)
        };
        // Without the lock: the run woken takes it at once.
        wake.wake();
        if let Some(parked) = woke {
            self.start_run(*parked);
        }
        let c = &self.inner.counters;
        match outcome {
            SignalOutcome::Delivered | SignalOutcome::Stored | SignalOutcome::Woke => true,
            SignalOutcome::Duplicate => {
                bump(&c.here().duplicate_signals);
                false
            }
            SignalOutcome::Late => {
                bump(&c.here().late_signals);
                debug!(test_id = %event.test_id, "signal for a finished test ignored");
                false
            }
            SignalOutcome::Buffered { evicted } => {
                bump(&c.here().signals_buffered);
                if !evicted.is_empty() {
                    self.release_signals(&evicted);
                    c.here()
                        .buffer_evictions
                        .fetch_add(evicted.len() as u64, Ordering::Relaxed);
                    warn!(
                        evicted = evicted.len(),
                        "early-signal buffer full: evicted the oldest test's signals"
                    );
                }
                true
            }
            SignalOutcome::HopsFull => {
                bump(&c.here().hops_dropped);
                debug!(test_id = %event.test_id, "more hops than a test keeps; dropped this one");
                false
            }
            SignalOutcome::BufferFull => {
                bump(&c.here().buffer_evictions);
                warn!(%topic, partition, offset, test_id = %event.test_id, "too many early signals for one test; dropped this one");
                false
            }
        }
    }

    /// A run of `case` on the test `context`, whose record is at `pos`: the future its lane
    /// polls, and the run's shared state. That state is set up before the future is, and the
    /// case's future and what concludes the run share one allocation ([`Checking::then`]),
    /// so that the run's node in its lane's set holds only a pointer to it.
    fn execute(
        self,
        case: Arc<Case>,
        context: Arc<TestContext>,
        pos: Pos,
        event_at: Option<DateTime<Utc>>,
    ) -> (BoxFuture<()>, Arc<RunShared>) {
        let started_at = event_at.unwrap_or(context.issued_at);
        // Held only here (a copy only if something else held it still).
        let context = Arc::unwrap_or_clone(context);
        let tables = (!case.tables().is_empty()).then(|| {
            Box::new(RunTables {
                store: self.inner.tables.clone(),
                writes: Mutex::default(),
            })
        });
        let expectations = case.expectations.clone();
        // The future reaches the case through the run's shared state, which holds it.
        let shared = Arc::new(RunShared {
            context,
            case,
            started_at,
            runner: self,
            state: Mutex::new(RunState::new(started_at)),
            partition: pos.partition,
            test_offset: pos.offset,
            tables,
        });
        let guard = |shared: &Arc<RunShared>| Checking(shared.clone());
        let Some(expectations) = expectations else {
            let error =
                CheckError::Error(format!("case {} has no expectations", shared.case.name()));
            return (guard(&shared).then(std::future::ready(Err(error))), shared);
        };
        let run = Run {
            shared: shared.clone(),
        };
        let checking = guard(&shared);
        let check = match std::panic::catch_unwind(AssertUnwindSafe(|| expectations(run, checking)))
        {
            Ok(check) => check,
            // A panic of the expectations' closure itself, before it gave its future: the
            // check panicked, as if in its future.
            Err(panic) => guard(&shared).then(async move { std::panic::resume_unwind(panic) }),
        };
        (check, shared)
    }

    /// Ends a run whose expectations gave `result`: its table writes settled, its verdict
    /// and report, published.
    async fn conclude(
        self,
        shared: Arc<RunShared>,
        result: std::thread::Result<Result<(), CheckError>>,
    ) {
        let (context, started_at) = (&shared.context, shared.started_at);
        // The run's table writes are in Kafka before its verdict is (see `crate::table`).
        let writes = shared.tables.as_ref().map_or_else(Vec::new, |t| {
            std::mem::take(&mut t.writes.lock().unwrap_or_else(|p| p.into_inner()).pending)
        });
        if !writes.is_empty() {
            Box::pin(
                self.inner
                    .tables
                    .settle(writes, self.inner.config.report_retry_for, || {
                        self.in_outage()
                    }),
            )
            .await;
        }
        // Said of a step that did not come (a late one says how late instead).
        let missing = match &result {
            // A wait that saw some of what it wanted (`wait_n`, `wait_where`) says so itself.
            Ok(Err(CheckError::Timeout {
                signal,
                late_by: None,
                detail: None,
                ..
            })) => Some(signal.clone()),
            _ => None,
        };
        // A step that did not come at all (not merely late), in full or in part.
        let not_came = matches!(&result, Ok(Err(CheckError::Timeout { late_by: None, .. })));
        let mut invariant = None;
        let (verdict, mut error) = match result {
            Ok(Ok(())) => (Verdict::Pass, None),
            Ok(Err(CheckError::Invariant(broken))) => {
                bump(&self.inner.counters.here().invariant_failures);
                let message = broken.to_string();
                invariant = Some(*broken);
                (Verdict::Fail, Some(message))
            }
            Ok(Err(e @ CheckError::Failed(_))) => (Verdict::Fail, Some(e.to_string())),
            Ok(Err(e @ CheckError::Timeout { .. })) => (Verdict::Timeout, Some(e.to_string())),
            Ok(Err(e @ CheckError::Error(_))) => (Verdict::Error, Some(e.to_string())),
            Err(panic) => (
                Verdict::Fail,
                Some(format!("the check panicked: {}", panic_message(&*panic))),
            ),
        };
        // A step the broker skipped is not a step that did not come: no TIMEOUT then.
        let skipped = (verdict == Verdict::Timeout && not_came)
            .then(|| {
                self.inner.clocks.skipped_since(
                    self.in_group().then_some(shared.partition),
                    // Its early signals, if any, were read up to `early_ttl` before it.
                    chrono::TimeDelta::from_std(self.inner.config.limits.early_ttl)
                        .ok()
                        .and_then(|ttl| started_at.checked_sub_signed(ttl))
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                )
            })
            .flatten();
        let verdict = match skipped {
            Some((p, skip)) => {
                let why = format!(
                    "signals records {}..={} of partition {p} were never read while this test ran (see the error logged then), so LiveCheck cannot say the step did not come",
                    skip.first, skip.last
                );
                error = Some(match error {
                    Some(error) => format!("{error}; {why}"),
                    None => why,
                });
                Verdict::Error
            }
            None => verdict,
        };
        let state = std::mem::replace(
            &mut *shared.state.lock().unwrap_or_else(|p| p.into_inner()),
            RunState::new(started_at),
        );
        // Claimed before the run leaves those in flight: a revoke (or the drain) that finds
        // it gone waits for its report. The epoch too: a run still in flight belongs to the
        // partition's assignment now (a revoke would have taken it out).
        let (claim, epoch) = if self.in_group() {
            (
                Some(self.inner.unsettled.claim(shared.partition)),
                self.epoch_now(shared.partition),
            )
        } else {
            (None, u64::MAX)
        };
        let Some(finished) = self.lock_registry().finish_test(&context.id) else {
            // Handed back (partition revoked, or shutdown) while it ended: the next owner
            // runs it. Counted where it was handed back, once.
            return;
        };
        let (hop_records, steps): (Vec<_>, Vec<_>) = finished
            .arrived
            .iter()
            .cloned()
            .partition(|a| a.signal == HOP_SIGNAL);
        let hops = self.hops(&context.id, &hop_records);
        if let (Some(signal), Some(error)) = (&missing, &mut error) {
            let positions = self
                .inner
                .positions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(why) = hop::diagnose(&hops, &positions, signal) {
                error.push_str("; ");
                error.push_str(&why);
            }
        }
        let (timeline, unawaited) = timeline(context, &steps, &state.taken);
        // Built in a block of its own: the report borrowed by the span export must not stay
        // in the run's future across the await below (memory per in-flight run).
        let report = {
            let report = Report {
                test_id: context.id.clone(),
                case: context.case.clone(),
                verdict,
                error,
                missing_step: if verdict == Verdict::Timeout || skipped.is_some() {
                    state.missing_step.map(|step| String::from(*step))
                } else {
                    None
                },
                last_step: state.taken.last().map(|s| s.signal.clone()),
                unawaited,
                timeline,
                waits: state.waits.into(),
                issued_at: context.issued_at,
                finished_at: Utc::now(),
                arguments: context.arguments.clone(),
                truncated: None,
                hops,
                trace_id: context.trace_id().map(str::to_owned),
                invariant,
                route: context.route.clone(),
            };
            #[cfg(feature = "otel")]
            crate::otel::export_steps(context, &report);
            report
        };
        let done = finished.records;
        let hold = self.hold_in(epoch, shared.partition, shared.test_offset, &done);
        // Boxed: a future holding a report inline would make every waiting run's future that
        // large (2,176 bytes per run in flight, measured; see the live bench).
        Box::pin(self.publish(report, hold, claim)).await;
    }

    /// The hops among a test's records, in the order they happened (a hop that does not
    /// decode is counted as malformed and left out).
    fn hops(&self, test_id: &str, records: &[Arc<Arrival>]) -> Vec<Hop> {
        let mut hops: Vec<Hop> = records
            .iter()
            .filter_map(|a| match serde_json::from_str::<Hop>(a.value.get()) {
                Ok(hop) => Some(hop),
                Err(e) => {
                    self.malformed(
                        &a.topic,
                        a.partition,
                        a.offset,
                        &format!("hop of test {test_id} does not decode: {e}"),
                    );
                    None
                }
            })
            .collect();
        hops.sort_by_key(|h| h.at);
        hops
    }

    /// Whether the broker is unreachable, or was within the outage grace period.
    fn in_outage(&self) -> bool {
        match self.inner.connectivity.outage() {
            Some((_, None)) => true,
            Some((_, Some(back))) => {
                Utc::now() - back
                    < chrono::TimeDelta::from_std(self.inner.config.outage_grace)
                        .unwrap_or(chrono::TimeDelta::MAX)
            }
            None => false,
        }
    }

    /// Publishes a report decided on the loop (a skip) in a task of its own.
    fn spawn_publish(&self, report: Report, hold: Option<Hold>) {
        let runner = self.clone();
        tokio::spawn(async move {
            if let Ok(claim) = runner.claim_or_hand_back(hold.as_ref(), &report.test_id) {
                runner.publish(report, hold, claim).await;
            }
        });
    }

    /// [`Self::claim`] for a report about to be sent (none outside a group); `Err` when it
    /// must not be: then its test is counted as handed back.
    fn claim_or_hand_back(&self, hold: Option<&Hold>, test_id: &str) -> Result<Option<Claim>, ()> {
        let Some(hold) = hold else {
            return Ok(None);
        };
        match self.claim(hold) {
            Some(claim) => Ok(Some(claim)),
            None => {
                bump(&self.inner.counters.here().runs_handed_back);
                debug!(%test_id, partition = hold.partition, "report not sent: the partition was given up meanwhile, or the runner is stopping; the test stays uncommitted for the partition's next owner");
                Err(())
            }
        }
    }

    /// Counts a report of `hold`'s partition on its way ([`Unsettled`]), unless the lane is
    /// closing or the assignment it was decided in has ended (the partition given up,
    /// maybe given back since: that restore did not see this report, and the test is
    /// decided again). Claimed before the partition is looked at, so that a revoke from
    /// then on waits for the report, and one before it is seen here.
    fn claim(&self, hold: &Hold) -> Option<Claim> {
        let claim = self.inner.unsettled.claim(hold.partition);
        (!self.inner.closing.load(Ordering::SeqCst) && self.still_held(hold)).then_some(claim)
    }

    /// Whether the assignment `hold` was decided in lasts.
    fn still_held(&self, hold: &Hold) -> bool {
        self.inner.ownership.active_epoch(hold.partition) == Some(hold.epoch)
    }

    /// Publishes a report: to the watchers and subscribers now, to the reports topic through
    /// the sink (its acknowledgement decides the test in the ledger).
    async fn publish(&self, report: Report, hold: Option<Hold>, claim: Option<Claim>) {
        let c = &self.inner.counters;
        bump(match report.verdict {
            Verdict::Pass => &c.here().verdict_pass,
            Verdict::Fail => &c.here().verdict_fail,
            Verdict::Error => &c.here().verdict_error,
            Verdict::Timeout => &c.here().verdict_timeout,
            Verdict::Skip => &c.here().verdict_skip,
        });
        if report.verdict == Verdict::Pass {
            debug!(test_id = %report.test_id, case = %report.case, "PASS");
        } else {
            info!(test_id = %report.test_id, case = %report.case, verdict = %report.verdict, error = report.error.as_deref().unwrap_or(""), "run finished");
        }
        let report = Arc::new(report);
        let watcher = self.inner.watchers.remove(&report.test_id);
        if let Some(tx) = watcher {
            let _ = tx.send(report.clone());
        }
        let _ = self.inner.reports.send(report.clone());
        self.enqueue(Outgoing::new(report, hold, claim)).await;
    }

    /// Hands a report to the sink. A full local queue is waited out (up to [`QUEUE_WAIT`]) in
    /// a task of its own, not here: a run's conclusion is polled by its lane's loop, which a
    /// revoke blocks until the reports of its partitions are acknowledged
    /// ([`crate::group`]'s `Reports::settle`), and a report waiting here for room would hold
    /// that revoke to its end.
    async fn enqueue(&self, outgoing: Box<Outgoing>) {
        let Some(sink) = self.sink_for(&outgoing) else {
            return;
        };
        match sink.send(outgoing, Duration::ZERO).await {
            Ok(()) => {}
            Err((outgoing, error)) if crate::client::is_queue_full(&error) => {
                let runner = self.clone();
                tokio::spawn(async move {
                    if let Some(sink) = runner.sink_for(&outgoing) {
                        if let Err((outgoing, error)) = sink.send(outgoing, QUEUE_WAIT).await {
                            sink.fail(outgoing, error);
                        }
                    }
                });
            }
            Err((outgoing, error)) => sink.fail(outgoing, error),
        }
    }

    /// The sink for `outgoing`; `None`, logged, while the runner is not running (the sink is
    /// set once, when it starts, before any run, and never taken).
    fn sink_for(&self, outgoing: &Outgoing) -> Option<&ReportSink> {
        let sink = self.sink();
        if sink.is_none() {
            error!(test_id = %outgoing.report.test_id, "report not published: the runner is not running");
        }
        sink
    }

    /// A report was acknowledged or refused.
    fn on_sink_event(&self, event: SinkEvent) {
        let c = &self.inner.counters;
        match event {
            SinkEvent::Delivered {
                outgoing,
                partition,
                offset,
            } => {
                bump(&c.here().reports_published);
                if outgoing.truncated {
                    bump(&c.here().reports_truncated);
                }
                if self.in_group() {
                    // What it decides, in the assignment it was decided in only (a later one
                    // restored its decisions from the reports topic).
                    let hold = outgoing.hold.as_ref().filter(|h| self.still_held(h));
                    let mut ledger = self.lock_ledger();
                    ledger.report_acked(partition, offset);
                    if let Some(hold) = hold {
                        self.inner.tables.decided(
                            hold.partition,
                            &outgoing.report.test_id,
                            hold.test_offset,
                        );
                        ledger.decided(
                            hold.partition,
                            hold.test_offset,
                            hold.signals.iter().copied(),
                            (hold.partition == partition).then_some(offset),
                        );
                    }
                }
            }
            SinkEvent::Failed {
                mut outgoing,
                error,
            } => {
                bump(&c.here().report_errors);
                let test_id = outgoing.report.test_id.clone();
                let owned = outgoing.hold.as_ref().is_none_or(|h| self.still_held(h));
                if !owned {
                    // The partition went: its next owner runs the test (this report is not
                    // on the reports topic, so it is not decided there).
                    bump(&c.here().runs_handed_back);
                    debug!(%test_id, error = %error, "report of a revoked partition refused; its next owner runs the test");
                } else if sink::is_too_large(&error) && outgoing.shrink < sink::MAX_SHRINK {
                    outgoing.shrink += 1;
                    warn!(%test_id, error = %error, shrink = outgoing.shrink, "report refused as too large; publishing it truncated");
                    self.resend(outgoing, Duration::ZERO);
                } else if self.in_outage()
                    || outgoing.first_try.elapsed() < self.inner.config.report_retry_for
                {
                    // While Kafka is unreachable, reports wait for it, however long.
                    bump(&c.here().reports_retried);
                    let backoff = Duration::from_millis(100 << outgoing.attempts.min(7))
                        .min(Duration::from_secs(10));
                    debug!(%test_id, error = %error, ?backoff, "report refused; retrying");
                    self.resend(outgoing, backoff);
                } else {
                    bump(&c.here().reports_lost);
                    error!(%test_id, case = %outgoing.report.case, verdict = %outgoing.report.verdict, error = %error, retried_for = ?self.inner.config.report_retry_for,
                        "report LOST: Kafka refused it for longer than report_retry_for while reachable (check the reports topic's configuration and ACLs); its partition's commit moves on");
                    if let Some(hold) = &outgoing.hold {
                        self.lock_ledger().decided(
                            hold.partition,
                            hold.test_offset,
                            hold.signals.iter().copied(),
                            None,
                        );
                    }
                }
            }
        }
    }

    fn resend(&self, mut outgoing: Box<Outgoing>, after: Duration) {
        let runner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let claimed =
                runner.claim_or_hand_back(outgoing.hold.as_ref(), &outgoing.report.test_id);
            if let Ok(claim) = claimed {
                outgoing.claim = claim;
                runner.enqueue(outgoing).await;
            }
        });
    }
}

/// A record's JSON payload decoded: checked as UTF-8 once, then read as text, so that
/// `serde_json` does not check each of its strings again (as it does reading bytes: 2–3 % of
/// the lanes' time, perf). A payload that is not UTF-8 anywhere is malformed, also where
/// the bytes are in a field the runner skips (JSON is UTF-8; `from_slice` let those by).
fn decode_json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8 ({e})"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A signals-topic record ([`crate::SignalEvent`]) decoded without copying: its strings
/// borrow from the payload unless they hold escapes.
#[derive(Deserialize)]
struct SignalRecord<'a> {
    #[serde(borrow)]
    signal: Cow<'a, str>,
    #[serde(borrow)]
    case: Cow<'a, str>,
    #[serde(borrow)]
    test_id: Cow<'a, str>,
    #[serde(deserialize_with = "crate::json_time::deserialize")]
    sent_at: DateTime<Utc>,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default, borrow)]
    send_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    item: Option<Cow<'a, str>>,
}

/// What concludes a run, given to its case's expectations ([`crate::case::Expectations`]) to
/// make the run's whole check of the case's future ([`Checking::then`]). Dropped unused (the
/// case's closure panicked), it does nothing: the run's guard is armed by `then`.
pub(crate) struct Checking(Arc<RunShared>);

impl Checking {
    /// The run's check: `body` (the case's expectations), then, when they pass, the run's
    /// claims (after the case's settle time), then its conclusion. A panic in `body` fails
    /// the run. One allocation holds `body` and the rest, and the run's node in its lane's set
    /// ([`crate::lane_runs`]) holds a pointer to it: a boxed future of its own beside that
    /// would cost its own allocation (memory per in-flight run).
    pub(crate) fn then<F>(self, body: F) -> BoxFuture<()>
    where
        F: Future<Output = Result<(), CheckError>> + Send + 'static,
    {
        Box::pin(Checked {
            body,
            stage: CheckStage::Body(RunGuard(Some(self.0))),
        })
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Checking::then`].
    struct Checked<F> {
        // Declared first: dropped (the task aborted) before the guard in `stage` concludes
        // the run, so the expectations are gone by then.
        #[pin]
        body: F,
        stage: CheckStage,
    }
}

/// Where a [`Checked`] is: 16 bytes.
enum CheckStage {
    /// The expectations run.
    Body(RunGuard),
    /// They ended: the run's claims and conclusion (boxed, so that the future of a run that
    /// waits does not hold them; boxed again, a thin pointer).
    After(Box<BoxFuture<()>>),
    Done,
}

impl<F: Future<Output = Result<(), CheckError>>> Future for Checked<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::task::Poll;
        let mut this = self.project();
        loop {
            match this.stage {
                CheckStage::Body(_) => {
                    let polled =
                        std::panic::catch_unwind(AssertUnwindSafe(|| this.body.as_mut().poll(cx)));
                    let result = match polled {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(result)) => Ok(result),
                        Err(panic) => Err(panic),
                    };
                    let CheckStage::Body(guard) = std::mem::replace(this.stage, CheckStage::Done)
                    else {
                        unreachable!("matched just above");
                    };
                    *this.stage = CheckStage::After(Box::new(Box::pin(guard.after(result))));
                }
                CheckStage::After(after) => {
                    if after.as_mut().as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this.stage = CheckStage::Done;
                    return Poll::Ready(());
                }
                CheckStage::Done => return Poll::Ready(()),
            }
        }
    }
}

/// What a run's future holds of its state (and, through it, its runner) until the run is
/// concluded (`None` then). Dropped before — the run aborted — it concludes the run with
/// an `ERROR` if `max_run_time` stopped it ([`Registry::abort_overdue`]), in a task of its
/// own, once the run's expectations are gone; a run aborted otherwise (its partition
/// revoked, the runner stopping) is not concluded here. Armed only in the run's check
/// ([`Checking::then`]), so there is one per run.
struct RunGuard(Option<Arc<RunShared>>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        let runner = &shared.runner;
        if !runner.lock_registry().is_overdue(&shared.context.id) {
            return;
        }
        bump(&runner.inner.counters.here().runs_overdue);
        let max_run_time = runner.inner.config.max_run_time;
        let result = Ok(Err(CheckError::Error(format!(
            "the check did not finish within {max_run_time:?} (max_run_time): stopped; does an expectation hang?"
        ))));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(runner.clone().conclude(shared, result))),
            Err(_) => {
                warn!(test_id = %shared.context.id, "a run stopped for max_run_time could not be concluded: no runtime")
            }
        }
    }
}

impl RunGuard {
    /// What follows the expectations that gave `result`: when they passed, the run's claims
    /// are checked (how often each step happened, after the case's settle time); then the
    /// run is concluded, unless `max_run_time` stopped it just now (then this guard,
    /// dropped, concludes it).
    async fn after(mut self, result: std::thread::Result<Result<(), CheckError>>) {
        let Some(shared) = self.0.clone() else {
            return;
        };
        let result = match result {
            Ok(Ok(())) => {
                let run = Run {
                    shared: shared.clone(),
                };
                AssertUnwindSafe(run.conclude()).catch_unwind().await
            }
            other => other,
        };
        let runner = shared.runner.clone();
        if !runner.lock_registry().begin_conclusion(&shared.context.id) {
            return;
        }
        // Concluded here: the guard has nothing left to do.
        self.0 = None;
        runner.conclude(shared, result).await;
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Has `consumer` read the metadata of `topic`, off the loop, so that partitions of it
/// assigned later are fetched at once: a consumer assigned partitions whose leader it does
/// not know fetches nothing until its next metadata refresh finds them (measured in a
/// group: the signals came 0.85–0.9 s after each restore). A failure is only logged: the
/// refresh finds the leaders later, as it would have.
fn learn_leaders(consumer: &Arc<Consumer2>, topic: String) -> tokio::task::JoinHandle<()> {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(err) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)) {
            debug!(topic = %topic, error = %err, "could not read a topic's metadata ahead of its assignment; its first fetch waits for the next metadata refresh");
        }
    })
}

/// Gets the fetcher of `consumer` going again on `partition` of `topic`, just resumed.
///
/// librdkafka resumes a partition without waking its leader's broker thread
/// (`rd_kafka_toppar_pause_resume` in `rdkafka_partition.c`), and a broker thread with
/// nothing to fetch sleeps until its next turn, up to a second (`rd_kafka_max_block_ms`),
/// unless a request or a response wakes it. So when every partition a consumer reads from a
/// broker had been paused (a restore pauses the tests partitions; the flow control pauses
/// signals partitions while their tests catch up), the first records after the resume came
/// up to a second late: measured in a group, 0.9–1.0 s after each restore, while the
/// signals, assigned at once, ran ahead and filled the early-signal buffer. Asking the
/// partition's watermarks sends a request to its leader, which wakes that broker thread; it
/// then sees the partition fetchable and fetches. Off the loop (the call blocks for a round
/// trip); the answer is not needed.
fn wake_fetcher(consumer: &Arc<Consumer2>, topic: Arc<str>, partition: i32) {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(err) = consumer.fetch_watermarks(&topic, partition, WAKE_FETCHER_TIMEOUT) {
            debug!(topic = %topic, partition, error = %err, "could not wake the fetcher of a resumed partition; it fetches at its broker thread's next turn");
        }
    });
}

/// How long [`wake_fetcher`] waits for a partition's watermarks.
const WAKE_FETCHER_TIMEOUT: Duration = Duration::from_secs(2);

/// How many partitions `topic` has in `metadata` (0: it is not there).
fn partitions_of(metadata: &Metadata, topic: &str) -> usize {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len())
}

/// How many partitions `topic` has (0: it does not exist), asking the broker (blocking).
fn partition_count(consumer: &Consumer2, topic: &str) -> Result<usize, Error> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(Error::kafka(format!(
            "reading the metadata of topic {topic}"
        )))?;
    Ok(partitions_of(&metadata, topic))
}

fn describe(counts: &[(String, usize)]) -> String {
    counts
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn skip_report(context: &TestContext, why: String) -> Report {
    Report {
        test_id: context.id.clone(),
        case: context.case.clone(),
        verdict: Verdict::Skip,
        error: Some(why),
        missing_step: None,
        last_step: None,
        unawaited: Vec::new(),
        timeline: Vec::new(),
        issued_at: context.issued_at,
        finished_at: Utc::now(),
        arguments: context.arguments.clone(),
        waits: Vec::new(),
        truncated: None,
        hops: Vec::new(),
        trace_id: context.trace_id().map(str::to_owned),
        invariant: None,
        route: context.route.clone(),
    }
}

/// The message of a panic's payload (its text, or a note that it has none).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// The report's timeline: every occurrence of the test's steps, in the order they were
/// sent, marked when a wait took it; and the names of the steps no wait took.
fn timeline(
    context: &TestContext,
    arrived: &[Arc<Arrival>],
    taken: &[Arc<Arrival>],
) -> (Vec<Step>, Vec<String>) {
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
    let mut sorted: Vec<&Arc<Arrival>> = arrived.iter().collect();
    sorted.sort_by_key(|a| (a.sent_at, a.offset));
    let mut previous = context.issued_at;
    let mut unawaited: Vec<String> = Vec::new();
    let steps = sorted
        .into_iter()
        .map(|a| {
            let awaited = taken.iter().any(|t| Arc::ptr_eq(t, a));
            if !awaited && !unawaited.contains(&a.signal) {
                unawaited.push(a.signal.clone());
            }
            let step = Step {
                signal: a.signal.clone(),
                item: a.item.as_deref().map(str::to_owned),
                awaited,
                sent_at: a.sent_at,
                arrived_at: a.arrived_at,
                event_at: a.event_at,
                latency_ms: ms(a.sent_at - previous).max(0.0),
                lag_ms: ms(a.arrived_at - a.sent_at).max(0.0),
                topic: a.topic.to_string(),
                partition: a.partition,
                offset: a.offset,
            };
            previous = previous.max(a.sent_at);
            step
        })
        .collect();
    (steps, unawaited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KafkaConfig, Signal, Topics};

    /// The run loop reads the clocks once per turn and again after a turn's pace gave the
    /// worker up ([`TurnClock`]): `Pace::record` must say every time it did, and only then.
    /// Another task counts each time it runs; it can run only while the pace has yielded.
    #[tokio::test(flavor = "current_thread")]
    async fn pace_says_when_it_gave_the_worker_up() {
        let ran = Arc::new(AtomicUsize::new(0));
        let other = {
            let ran = ran.clone();
            tokio::spawn(async move {
                loop {
                    ran.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::task::yield_now().await;
        // One worker: tokio's budget; then a yield every 4 records, as with more workers.
        for mut pace in [
            Pace::new(),
            Pace {
                every: Some(4),
                records: 0,
            },
        ] {
            let (mut yielded, mut kept) = (0, 0);
            for record in 0..1_000 {
                let before = ran.load(Ordering::Relaxed);
                let said = pace.record().await;
                let others_ran = ran.load(Ordering::Relaxed) != before;
                assert_eq!(
                    said, others_ran,
                    "record {record}: the pace said {said}, another task ran: {others_ran}"
                );
                if said {
                    yielded += 1;
                } else {
                    kept += 1;
                }
            }
            assert!(
                yielded > 0 && kept > 0,
                "{yielded} yields, {kept} records without"
            );
            if pace.every.is_some() {
                assert_eq!(yielded, 250);
            }
        }
        other.abort();
    }

    static STEP: Signal<u64> = Signal::new("size.case", "step");

    /// A runner of one case, `size.case`, that waits for [`STEP`], and a run of it (not
    /// started: its expectations are not running).
    fn step_case_run() -> (Runner, Run, Arc<TestContext>) {
        let client =
            LiveCheck::new(KafkaConfig::new("127.0.0.1:9"), Topics::default()).expect("a client");
        let case = Case::new("size.case").expect(|run: Run, _: ()| async move {
            run.wait(&STEP).await?;
            Ok(())
        });
        let runner = Runner::new(
            Suite::new([case]).expect("suite"),
            client,
            RunnerConfig::default(),
        );
        let context = Arc::new(TestContext::new("size.case", Duration::from_secs(60)));
        let run = Run {
            shared: Arc::new(RunShared {
                context: (*context).clone(),
                case: runner.suite().get("size.case").expect("case").clone(),
                started_at: Utc::now(),
                runner: runner.clone(),
                state: Mutex::new(RunState::new(Utc::now())),
                partition: 0,
                test_offset: 0,
                tables: None,
            }),
        };
        (runner, run, context)
    }

    /// A run in flight is a node of its lane's set holding a pointer to its check: the case's
    /// future and the check's own state, in one allocation. Their sizes are memory per in-flight run:
    /// printed, and bounded so that a future holding a report inline again (2,176 bytes
    /// measured before it was boxed) is noticed.
    #[tokio::test]
    async fn a_waiting_run_is_a_small_task() {
        let (runner, run, context) = step_case_run();
        let case = runner.suite().get("size.case").expect("case").clone();
        let pos = Pos {
            topic: Arc::from("tests"),
            partition: 0,
            offset: 0,
        };
        let (execute, _) = runner.clone().execute(case, context, pos, None);
        // The run's node in its lane's set holds a pointer to this (the node is 96 bytes, and
        // the handle that stops the run 48 more: see `crate::lane_runs`).
        let size = std::mem::size_of_val(&*execute);
        // And the future of a wait, which the case's own (boxed) future holds inline.
        let wait = std::mem::size_of_val(&run.wait(&STEP));
        let shared = std::mem::size_of::<RunShared>();
        // Every form of wait is a `Waiting` future; as `async` fns they were 144 (wait_where,
        // wait_optional) to 232 bytes (wait_n); 80 to 120 before the last compaction.
        let window = Duration::from_secs(1);
        let forms = [
            (
                "wait_optional",
                std::mem::size_of_val(&run.wait_optional(&STEP)),
            ),
            (
                "wait_where",
                std::mem::size_of_val(&run.wait_where(&STEP, "any", |_| true)),
            ),
            (
                "wait_item",
                std::mem::size_of_val(&run.wait_item(&STEP, "i")),
            ),
            ("wait_n", std::mem::size_of_val(&run.wait_n(&STEP, 2))),
            (
                "wait_first",
                std::mem::size_of_val(&run.wait_first(&[&STEP])),
            ),
            (
                "collect",
                std::mem::size_of_val(&run.collect(&STEP, window)),
            ),
            ("never", std::mem::size_of_val(&run.never(&STEP, window))),
        ];
        println!("the other forms' futures (bytes): {forms:?}");
        for (form, size) in forms {
            assert!(size <= 96, "the future of {form} grew to {size} bytes");
        }
        println!(
            "a run's check (the case's future in it): {size} bytes; a wait's future: {wait} bytes; a run's shared state: {shared} bytes"
        );
        // 728 and 720 bytes before the waits shared one timer and the futures stopped
        // copying their arguments; the run's was 216 with its own `max_run_time` timer (a
        // 384-byte task), then 96 in a 256-byte task beside the case's boxed future.
        // Here the case waits for one step: its future (a wait, its run) and 16 bytes of the
        // check.
        assert!(size <= 112, "the run's check grew to {size} bytes");
        // 224 bytes as an `async` block (its arguments, the deadline and the registry
        // waiter's copies of them); 104 as the hand-written `Waiting` of a `One`; 80 with
        // its item or condition boxed and its times compact.
        assert!(wait <= 80, "a wait's future grew to {wait} bytes");
        // 176 bytes of it are the test context, held here since its own `Arc` (192 bytes
        // with the counts) went; the rest was 176 bytes then.
        assert!(shared <= 280, "a run's shared state grew to {shared} bytes");
    }

    /// A wait puts one waiter in the registry while it waits, and leaves none behind when
    /// it ends: dropped before its first poll, dropped while waiting (a `select!` branch
    /// that lost), or done with its step.
    #[tokio::test]
    async fn a_wait_leaves_no_waiter_behind() {
        use std::future::Future as _;
        use std::task::{Context, Poll, Waker};

        let (runner, run, _) = step_case_run();
        let registry = || runner.inner.registry.lock().expect("registry");
        registry().start_test(run.test_id(), Some(0));
        let waiters = || registry().waiters_of(run.test_id());
        let cx = &mut Context::from_waker(Waker::noop());

        drop(run.wait(&STEP));
        assert_eq!(waiters(), 0, "a wait never polled");

        let mut wait = Box::pin(run.wait(&STEP));
        assert!(wait.as_mut().poll(cx).is_pending());
        assert!(wait.as_mut().poll(cx).is_pending());
        assert_eq!(waiters(), 1, "a wait polled twice has one waiter");
        drop(wait);
        assert_eq!(waiters(), 0, "a wait dropped while waiting");

        let mut wait = Box::pin(run.wait(&STEP));
        assert!(wait.as_mut().poll(cx).is_pending());
        let arrival = Arrival::for_test("step", "s1", "7");
        assert_eq!(
            registry().signal_now(run.test_id(), arrival),
            SignalOutcome::Delivered
        );
        assert!(matches!(wait.as_mut().poll(cx), Poll::Ready(Ok(7))));
        assert_eq!(waiters(), 0, "a wait done with its step");
        drop(wait);
        let state = run.shared.state.lock().expect("state");
        assert_eq!(state.waits, ["wait `step`: taken"]);
        assert_eq!(state.taken.len(), 1);
    }

    #[test]
    fn test_records_never_read_are_counted() {
        let (runner, _run, _context) = step_case_run();
        let skipped = |r: &Runner| r.counters().tests_skipped_by_broker();
        runner.tests_read(0, 5, false);
        runner.tests_read(0, 6, false);
        assert_eq!(skipped(&runner), 0, "in order");
        runner.tests_read(0, 9, false);
        assert_eq!(skipped(&runner), 2, "7 and 8 never came");
        runner.tests_read(0, 7, false);
        assert_eq!(skipped(&runner), 2, "a record read again is no gap");
        runner.tests_read(1, 100, true);
        runner.tests_read(1, 103, false);
        assert_eq!(skipped(&runner), 5, "counted from where reading starts");
    }

    /// The signal record decodes as [`SignalEvent`] does, timestamps included.
    #[test]
    fn a_signal_record_decodes_as_a_signal_event() {
        use chrono::{SecondsFormat, TimeZone as _};
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 1, 48, 31).unwrap()
            + chrono::TimeDelta::nanoseconds(123_456_789);
        for text in [
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
            at.to_rfc3339_opts(SecondsFormat::Millis, true),
            at.to_rfc3339_opts(SecondsFormat::Micros, true),
            at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            at.to_rfc3339_opts(SecondsFormat::Nanos, false),
            "2026-11-26T01:48:31.5Z".to_owned(),
            "2026-11-26T01:48:31.1234567891Z".to_owned(),
            "2026-11-26 01:48:31Z".to_owned(),
            "2026-11-26T01:48:31.123+02:00".to_owned(),
            "2026-02-30T01:48:31Z".to_owned(),
            "2026-11-26T24:00:00Z".to_owned(),
            "2026-11-26T01:48:60Z".to_owned(),
            "2026-11-26T01:48:31.Z".to_owned(),
            "2026-1x-26T01:48:31Z".to_owned(),
        ] {
            let json = format!(
                r#"{{"signal":"s\u0031","case":"c","test_id":"t","sent_at":"{text}","value":{{"a":[1]}},"send_id":"x","item":null}}"#
            );
            let full = serde_json::from_str::<crate::SignalEvent>(&json);
            let fast = serde_json::from_str::<SignalRecord<'_>>(&json);
            match (full, fast) {
                (Ok(full), Ok(fast)) => {
                    assert_eq!(full.sent_at, fast.sent_at, "{text}");
                    assert_eq!(full.signal, fast.signal, "{text}");
                    assert_eq!(full.value.get(), fast.value.get());
                    assert_eq!(full.send_id.as_deref(), fast.send_id.as_deref());
                    assert_eq!(full.item, None);
                    assert!(fast.item.is_none());
                }
                (Err(_), Err(_)) => {}
                (full, fast) => panic!("{text}: {full:?} / {:?}", fast.map(|f| f.sent_at)),
            }
        }
        assert_eq!(
            crate::json_time::utc_time(&at.to_rfc3339_opts(SecondsFormat::Nanos, true)),
            Some(at)
        );
    }
}
