//! The runner: consumes tests and signals, runs each test's expectations, publishes one
//! report per test.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{debug, info, warn};

use crate::case::{Case, CheckError};
use crate::client::LiveCheck;
use crate::connectivity::Connectivity;
use crate::context::TestContext;
use crate::counters::{bump, RunnerCounters};
use crate::error::Error;
use crate::registry::{Arrival, Limits, Pos, Registry, SignalOutcome, TestOutcome};
use crate::report::{Report, Verdict};
use crate::run::{Run, RunShared, RunState};
use crate::signal::SignalEvent;

/// The cases a runner knows, by name.
#[derive(Debug, Clone, Default)]
pub struct Suite {
    cases: HashMap<String, Arc<Case>>,
}

impl Suite {
    /// A suite of `cases`; each is validated and names must be unique.
    pub fn new(cases: impl IntoIterator<Item = Case>) -> Result<Self, Error> {
        let mut map = HashMap::new();
        for case in cases {
            case.validate()?;
            let name = case.name().to_owned();
            if map.insert(name.clone(), Arc::new(case)).is_some() {
                return Err(Error::Config(format!("two cases are named {name}")));
            }
        }
        Ok(Self { cases: map })
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
    /// Consumer group to join; `None` assigns every partition directly (one runner, fast
    /// start, no offsets committed).
    pub group_id: Option<String>,
    /// Buffer limits.
    pub limits: Limits,
    /// How often stale buffers are swept.
    pub sweep_every: Duration,
    /// Without a group: start at the partitions' current ends instead of their beginnings.
    pub start_at_end: bool,
    /// Run only the tests registered with [`Runner::report_for`] and ignore (count as
    /// `foreign_records`) the others: a harness sharing topics with other processes.
    pub watched_only: bool,
    /// On shutdown (group mode), how long in-flight runs may take to finish before they are
    /// handed back (their records stay uncommitted and are read again after a restart).
    pub drain_timeout: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            group_id: None,
            limits: Limits::default(),
            sweep_every: Duration::from_secs(1),
            start_at_end: false,
            watched_only: false,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

struct RunnerInner {
    suite: Suite,
    client: LiveCheck,
    config: RunnerConfig,
    registry: Arc<Mutex<Registry>>,
    counters: RunnerCounters,
    reports: broadcast::Sender<Arc<Report>>,
    watchers: Mutex<HashMap<String, oneshot::Sender<Arc<Report>>>>,
    ready: watch::Sender<bool>,
    offsets: Arc<Mutex<OffsetTracker>>,
    owns_first_partition: Arc<AtomicBool>,
    draining: AtomicBool,
    connectivity: Connectivity,
    assigned_partitions: Arc<AtomicUsize>,
}

/// Per partition: the offsets of records still needed (their tests have no verdict yet)
/// and the next offset after the last record seen. The committable offset is the smallest
/// still-needed one: at-least-once, nothing committed before its report is published.
#[derive(Debug, Default)]
struct OffsetTracker {
    partitions: HashMap<(Arc<str>, i32), PartitionOffsets>,
}

#[derive(Debug, Default)]
struct PartitionOffsets {
    pending: BTreeSet<i64>,
    next: i64,
}

impl OffsetTracker {
    /// Whether the record is new (not pending already).
    fn seen(&mut self, pos: &Pos) -> bool {
        let p = self
            .partitions
            .entry((pos.topic.clone(), pos.partition))
            .or_default();
        p.next = p.next.max(pos.offset + 1);
        p.pending.insert(pos.offset)
    }

    fn release(&mut self, pos: &Pos) {
        if let Some(p) = self.partitions.get_mut(&(pos.topic.clone(), pos.partition)) {
            p.pending.remove(&pos.offset);
        }
    }

    fn committable(&self) -> Vec<(Arc<str>, i32, i64)> {
        self.partitions
            .iter()
            .map(|((topic, partition), p)| {
                (
                    topic.clone(),
                    *partition,
                    p.pending.first().copied().unwrap_or(p.next),
                )
            })
            .collect()
    }
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

struct RunnerContext {
    ready: watch::Sender<bool>,
    tests_topic: String,
    owns_first_partition: Arc<AtomicBool>,
    registry: Arc<Mutex<Registry>>,
    offsets: Arc<Mutex<OffsetTracker>>,
    client: LiveCheck,
    connectivity: Connectivity,
    assigned_partitions: Arc<AtomicUsize>,
}

impl RunnerContext {
    /// How many partitions of the tests topic `list` holds.
    fn tests_partitions(&self, list: &TopicPartitionList) -> usize {
        list.elements_for_topic(&self.tests_topic).len()
    }
}

impl ClientContext for RunnerContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.on_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.connectivity.on_error(&error, reason);
    }
}

impl ConsumerContext for RunnerContext {
    /// Before partitions go, their runs are cancelled without a report and their offsets
    /// forgotten: whoever owns them next reads their records again from the last commit.
    /// (Synchronous, so no record of the next assignment can be mistaken for them.)
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = self.tests_partitions(list);
            let _ =
                self.assigned_partitions
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(revoked))
                    });
            // Commit what is done first, so the next owner re-runs only the unfinished.
            let snapshot = self
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .committable();
            if !snapshot.is_empty() && self.client.flush(Duration::from_secs(5)).is_ok() {
                let mut done = TopicPartitionList::new();
                for (topic, partition, offset) in snapshot {
                    let _ = done.add_partition_offset(&topic, partition, Offset::Offset(offset));
                }
                if let Err(err) = consumer.commit(&done, CommitMode::Sync) {
                    warn!(error = %err, "commit before the rebalance failed");
                }
            }
            let mut cancelled = 0;
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
            for e in list.elements() {
                cancelled += registry.cancel_partition(e.partition());
                offsets
                    .partitions
                    .retain(|(topic, p), _| !(&**topic == e.topic() && *p == e.partition()));
            }
            if cancelled > 0 {
                info!(
                    cancelled,
                    "partitions revoked: runs in flight handed back to their next owner"
                );
            }
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let first = list.find_partition(&self.tests_topic, 0).is_some();
                self.owns_first_partition.store(first, Ordering::Relaxed);
                self.assigned_partitions
                    .fetch_add(self.tests_partitions(list), Ordering::Relaxed);
                self.connectivity.mark_reachable();
                info!(
                    partitions = list.count(),
                    owns_partition_0 = first,
                    "runner assigned partitions"
                );
                self.ready.send_replace(true);
            }
            Rebalance::Revoke(list) => {
                info!(partitions = list.count(), "runner partitions revoked")
            }
            Rebalance::Error(err) => warn!(error = %err, "runner rebalance error"),
        }
    }
}

impl Runner {
    /// A runner for `suite`, publishing reports through `client`.
    pub fn new(suite: Suite, client: LiveCheck, config: RunnerConfig) -> Self {
        let (reports, _) = broadcast::channel(1024);
        let (ready, _) = watch::channel(false);
        let connectivity = client.connectivity().clone();
        Self {
            inner: Arc::new(RunnerInner {
                suite,
                registry: Arc::new(Mutex::new(Registry::new(config.limits.clone()))),
                client,
                config,
                counters: RunnerCounters::default(),
                reports,
                watchers: Mutex::new(HashMap::new()),
                ready,
                offsets: Arc::new(Mutex::new(OffsetTracker::default())),
                owns_first_partition: Arc::new(AtomicBool::new(false)),
                draining: AtomicBool::new(false),
                connectivity,
                assigned_partitions: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// The runner's counters.
    pub fn counters(&self) -> &RunnerCounters {
        &self.inner.counters
    }

    /// The suite.
    pub fn suite(&self) -> &Suite {
        &self.inner.suite
    }

    /// Runs in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock_registry().in_flight()
    }

    /// Tests with early (buffered) signals now.
    pub fn buffered_tests(&self) -> usize {
        self.lock_registry().early_tests()
    }

    /// Every report this runner publishes, as it publishes it (a slow receiver lags).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Report>> {
        self.inner.reports.subscribe()
    }

    /// The report for `test_id`, once published. Register before the test can finish.
    pub fn report_for(&self, test_id: &str) -> oneshot::Receiver<Arc<Report>> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(test_id.to_owned(), tx);
        rx
    }

    /// Whether this runner holds partition 0 of the tests topic (the one instance of a group
    /// that sends synthetic traffic). Always true without a group.
    pub fn owns_first_partition(&self) -> bool {
        self.inner.owns_first_partition.load(Ordering::Relaxed)
    }

    /// Broker connectivity as the runner's consumer and its client's producer see it.
    pub fn connectivity(&self) -> &Connectivity {
        &self.inner.connectivity
    }

    /// Partitions of the tests topic this runner holds now.
    pub fn assigned_partitions(&self) -> usize {
        self.inner.assigned_partitions.load(Ordering::Relaxed)
    }

    /// Stops waiting for the report of `test_id` (e.g. its stimulus failed).
    pub fn forget(&self, test_id: &str) {
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(test_id);
    }

    /// Resolves once the runner has its partitions.
    pub async fn ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Consumes until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let topics = self.inner.client.topics().clone();
        let group = self.inner.config.group_id.clone();
        let kafka = self.inner.client.kafka();
        let group_id = group
            .clone()
            .unwrap_or_else(|| format!("livecheck-runner-{}", uuid::Uuid::new_v4()));
        let consumer: StreamConsumer<RunnerContext> = kafka
            .client_config(&[
                ("group.id", &group_id),
                // Offsets are committed by hand, only past records whose reports are out.
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
                ("fetch.wait.max.ms", "100"),
            ])
            .create_with_context(RunnerContext {
                ready: self.inner.ready.clone(),
                tests_topic: topics.tests.clone(),
                owns_first_partition: self.inner.owns_first_partition.clone(),
                registry: self.inner.registry.clone(),
                offsets: self.inner.offsets.clone(),
                client: self.inner.client.clone(),
                connectivity: self.inner.connectivity.clone(),
                assigned_partitions: self.inner.assigned_partitions.clone(),
            })
            .map_err(Error::kafka("creating the runner consumer"))?;
        if group.is_some() {
            consumer
                .subscribe(&[&topics.tests, &topics.signals])
                .map_err(Error::kafka("subscribing to the tests and signals topics"))?;
        } else {
            let mut list = TopicPartitionList::new();
            for topic in [&topics.tests, &topics.signals] {
                let metadata = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .map_err(Error::kafka(format!(
                        "reading the metadata of topic {topic}"
                    )))?;
                let partitions = metadata
                    .topics()
                    .first()
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                if partitions == 0 {
                    return Err(Error::Config(format!(
                        "topic {topic} does not exist or has no partitions; create it first"
                    )));
                }
                if topic == &topics.tests {
                    self.inner
                        .assigned_partitions
                        .store(partitions, Ordering::Relaxed);
                }
                for p in 0..partitions as i32 {
                    let offset = if self.inner.config.start_at_end {
                        let (_, high) = consumer
                            .fetch_watermarks(topic, p, Duration::from_secs(10))
                            .map_err(Error::kafka(format!("reading the end of {topic}[{p}]")))?;
                        Offset::Offset(high)
                    } else {
                        Offset::Beginning
                    };
                    list.add_partition_offset(topic, p, offset)
                        .map_err(Error::kafka("building the assignment"))?;
                }
            }
            consumer
                .assign(&list)
                .map_err(Error::kafka("assigning the tests and signals partitions"))?;
            self.inner
                .owns_first_partition
                .store(true, Ordering::Relaxed);
            self.inner.ready.send_replace(true);
        }
        info!(tests = %topics.tests, signals = %topics.signals, group = ?group, "runner consuming");
        let tests_topic: Arc<str> = Arc::from(topics.tests.as_str());
        let signals_topic: Arc<str> = Arc::from(topics.signals.as_str());
        let mut sweep = tokio::time::interval(self.inner.config.sweep_every);
        let in_group = group.is_some();
        tokio::pin!(shutdown);
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown, if drain_until.is_none() => {
                    if !in_group {
                        break;
                    }
                    // Stop taking new tests; let the in-flight runs finish.
                    self.inner.draining.store(true, Ordering::Relaxed);
                    let in_flight = self.in_flight();
                    info!(in_flight, "runner draining: no new tests; waiting for the runs in flight");
                    drain_until = Some(tokio::time::Instant::now() + self.inner.config.drain_timeout);
                }
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        self.inner.connectivity.mark_reachable();
                        self.handle_message(&msg, &tests_topic, &signals_topic)
                    }
                    Err(err) => {
                        self.inner.connectivity.on_client_error("runner consumer error; retrying", &err);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sweep.tick() => {
                    self.sweep();
                    if in_group {
                        self.commit(&consumer, CommitMode::Async).await;
                    }
                }
            }
            if let Some(until) = drain_until {
                let in_flight = self.in_flight();
                if in_flight == 0 || tokio::time::Instant::now() >= until {
                    if in_flight > 0 {
                        warn!(in_flight, "drain timeout: handing the unfinished runs back (their records stay uncommitted)");
                    }
                    break;
                }
            }
        }
        if in_group {
            // Runs still going are handed back: they must not publish after the last commit.
            let handed_back = self.lock_registry().cancel_all();
            if handed_back > 0 {
                warn!(
                    handed_back,
                    "runs not finished at shutdown stay uncommitted and run again after a restart"
                );
            }
            self.commit(&consumer, CommitMode::Sync).await;
        }
        info!("runner stopped");
        Ok(())
    }

    /// Commits, per assigned partition, the smallest offset still needed, after making sure
    /// every report enqueued so far is acknowledged.
    async fn commit(&self, consumer: &StreamConsumer<RunnerContext>, mode: CommitMode) {
        // What is committable now; every report behind it is enqueued already.
        let snapshot = self
            .inner
            .offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .committable();
        if snapshot.is_empty() {
            return;
        }
        let client = self.inner.client.clone();
        let errors_before = client.counters().delivery_errors.load(Ordering::Relaxed);
        let flushed =
            tokio::task::spawn_blocking(move || client.flush(Duration::from_secs(10))).await;
        let errors_after = self
            .inner
            .client
            .counters()
            .delivery_errors
            .load(Ordering::Relaxed);
        if !matches!(flushed, Ok(Ok(()))) || errors_after != errors_before {
            warn!("reports not all acknowledged; not committing this time (their tests run again after a restart)");
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in snapshot {
            let _ = list.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        if let Err(err) = consumer.commit(&list, mode) {
            warn!(error = %err, "offset commit failed; will retry");
        }
    }

    /// Notes a record's offset as still needed; whether it was new (a re-read of a record
    /// still pending must not release it).
    fn track(&self, pos: &Pos) -> bool {
        self.inner.config.group_id.is_none()
            || self
                .inner
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seen(pos)
    }

    fn release<'a>(&self, done: impl IntoIterator<Item = &'a Pos>) {
        if self.inner.config.group_id.is_some() {
            let mut offsets = self.inner.offsets.lock().unwrap_or_else(|p| p.into_inner());
            for pos in done {
                offsets.release(pos);
            }
        }
    }

    fn sweep(&self) {
        let dropped = self.lock_registry().expire_early(Instant::now());
        if !dropped.is_empty() {
            self.release(&dropped);
            self.inner
                .counters
                .buffer_evictions
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            warn!(
                dropped = dropped.len(),
                "early signals expired without their test record"
            );
        }
    }

    fn handle_message(&self, msg: &BorrowedMessage<'_>, tests: &Arc<str>, signals: &Arc<str>) {
        let topic = if msg.topic() == &**tests {
            tests
        } else if msg.topic() == &**signals {
            signals
        } else {
            return;
        };
        let pos = Pos {
            topic: topic.clone(),
            partition: msg.partition(),
            offset: msg.offset(),
        };
        let new = self.track(&pos);
        let retained = if Arc::ptr_eq(topic, tests) {
            self.on_test_record(&pos, msg.payload())
        } else {
            self.on_signal_record(&pos, msg.payload())
        };
        if !retained && new {
            self.release([&pos]);
        }
    }

    fn is_foreign(&self, test_id: &str) -> bool {
        self.inner.config.watched_only
            && !self
                .inner
                .watchers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(test_id)
            && !self.lock_registry().is_known(test_id)
    }

    fn malformed(&self, topic: &str, partition: i32, offset: i64, why: &str) {
        bump(&self.inner.counters.records_malformed);
        warn!(
            topic,
            partition, offset, "skipped a malformed record: {why}"
        );
    }

    /// Handles one record of the tests topic; whether its test keeps it (uncommitted).
    fn on_test_record(&self, pos: &Pos, payload: Option<&[u8]>) -> bool {
        let (topic, partition, offset) = (&*pos.topic, pos.partition, pos.offset);
        if self.inner.draining.load(Ordering::Relaxed) {
            // Draining: not taken; left uncommitted for whoever takes the partition next.
            return true;
        }
        bump(&self.inner.counters.tests_received);
        let Some(payload) = payload else {
            self.malformed(topic, partition, offset, "no payload");
            return false;
        };
        let context: TestContext = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                self.malformed(
                    topic,
                    partition,
                    offset,
                    &format!("not a TestExecution: {e}"),
                );
                return false;
            }
        };
        if self.is_foreign(&context.id) {
            bump(&self.inner.counters.foreign_records);
            return false;
        }
        let Some(case) = self.inner.suite.get(&context.case).cloned() else {
            bump(&self.inner.counters.unknown_case);
            warn!(topic, partition, offset, case = %context.case, test_id = %context.id, "skipped a test of an unknown case");
            return false;
        };
        let outcome = {
            let mut registry = self.lock_registry();
            if registry.is_known(&context.id) {
                TestOutcome::Duplicate
            } else if !case.is_active() || context.is_expired_at(Utc::now()) {
                let dropped = registry.mark_finished(&context.id);
                drop(registry);
                let why = if case.is_active() {
                    format!(
                        "test expired at {} before the runner saw it",
                        crate::headers::format_time(context.expires_at)
                    )
                } else {
                    format!("case {} is inactive", case.name())
                };
                if self.publish(skip_report(&context, why)) {
                    self.release(&dropped);
                }
                return false;
            } else {
                registry.start_test(&context.id, Some(pos.clone()))
            }
        };
        match outcome {
            TestOutcome::Started => {
                debug!(test_id = %context.id, case = %context.case, "run started");
                let id = context.id.clone();
                let task = tokio::spawn(self.clone().execute(case, Arc::new(context)));
                self.lock_registry().set_task(&id, task.abort_handle());
                true
            }
            TestOutcome::Duplicate => {
                bump(&self.inner.counters.duplicate_tests);
                debug!(test_id = %context.id, "duplicate test record ignored");
                false
            }
            TestOutcome::AtCapacity => {
                bump(&self.inner.counters.capacity_skips);
                let dropped = self.lock_registry().mark_finished(&context.id);
                let limit = self.inner.config.limits.max_in_flight;
                if self.publish(skip_report(
                    &context,
                    format!("runner at capacity ({limit} runs in flight)"),
                )) {
                    self.release(&dropped);
                }
                false
            }
        }
    }

    /// Handles one record of the signals topic; whether its test keeps it (uncommitted).
    fn on_signal_record(&self, pos: &Pos, payload: Option<&[u8]>) -> bool {
        let (topic, partition, offset) = (&pos.topic, pos.partition, pos.offset);
        bump(&self.inner.counters.signals_received);
        let Some(payload) = payload else {
            self.malformed(topic, partition, offset, "no payload");
            return false;
        };
        let event: SignalEvent = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                self.malformed(topic, partition, offset, &format!("not a SignalEvent: {e}"));
                return false;
            }
        };
        if self.is_foreign(&event.test_id) {
            bump(&self.inner.counters.foreign_records);
            return false;
        }
        if self.inner.suite.get(&event.case).is_none() {
            bump(&self.inner.counters.unknown_case);
            warn!(%topic, partition, offset, case = %event.case, signal = %event.signal, "skipped a signal of an unknown case");
            return false;
        }
        let arrival = Arrival {
            signal: event.signal,
            value: event.value,
            sent_at: event.sent_at,
            arrived_at: Utc::now(),
            topic: topic.clone(),
            partition,
            offset,
        };
        let outcome = self.lock_registry().on_signal(&event.test_id, arrival);
        let c = &self.inner.counters;
        match outcome {
            SignalOutcome::Delivered | SignalOutcome::Stored => true,
            SignalOutcome::Duplicate => {
                bump(&c.duplicate_signals);
                false
            }
            SignalOutcome::Late => {
                bump(&c.late_signals);
                debug!(test_id = %event.test_id, "signal for a finished test ignored");
                false
            }
            SignalOutcome::Buffered { evicted } => {
                bump(&c.signals_buffered);
                if !evicted.is_empty() {
                    self.release(&evicted);
                    c.buffer_evictions
                        .fetch_add(evicted.len() as u64, Ordering::Relaxed);
                    warn!(
                        evicted = evicted.len(),
                        "early-signal buffer full: evicted the oldest test's signals"
                    );
                }
                true
            }
            SignalOutcome::BufferFull => {
                bump(&c.buffer_evictions);
                warn!(%topic, partition, offset, test_id = %event.test_id, "too many early signals for one test; dropped this one");
                false
            }
        }
    }

    async fn execute(self, case: Arc<Case>, context: Arc<TestContext>) {
        let shared = Arc::new(RunShared {
            context: context.clone(),
            timeout: case.signal_timeout(),
            registry: self.inner.registry.clone(),
            state: Mutex::new(RunState {
                timeline: Vec::new(),
                previous_at: context.issued_at,
                missing_step: None,
            }),
        });
        let run = Run {
            shared: shared.clone(),
        };
        let result = match &case.expectations {
            Some(expectations) =>
            // Called inside the future, so a panic in the closure itself is caught too.
            {
                AssertUnwindSafe(async move { expectations(run).await })
                    .catch_unwind()
                    .await
            }
            None => Ok(Err(CheckError::Error(format!(
                "case {} has no expectations",
                case.name()
            )))),
        };
        let (verdict, error) = match result {
            Ok(Ok(())) => (Verdict::Pass, None),
            Ok(Err(e @ CheckError::Failed(_))) => (Verdict::Fail, Some(e.to_string())),
            Ok(Err(e @ CheckError::Timeout { .. })) => (Verdict::Timeout, Some(e.to_string())),
            Ok(Err(e @ CheckError::Error(_))) => (Verdict::Error, Some(e.to_string())),
            Err(panic) => (
                Verdict::Fail,
                Some(format!("the check panicked: {}", panic_message(&*panic))),
            ),
        };
        let state = std::mem::replace(
            &mut *shared.state.lock().unwrap_or_else(|p| p.into_inner()),
            RunState {
                timeline: Vec::new(),
                previous_at: context.issued_at,
                missing_step: None,
            },
        );
        let awaited: Vec<&str> = state.timeline.iter().map(|s| s.signal.as_str()).collect();
        let (unawaited, done) = self.lock_registry().finish_test(&context.id, &awaited);
        let report = Report {
            test_id: context.id.clone(),
            case: context.case.clone(),
            verdict,
            error,
            missing_step: if verdict == Verdict::Timeout {
                state.missing_step
            } else {
                None
            },
            last_step: state.timeline.last().map(|s| s.signal.clone()),
            unawaited,
            timeline: state.timeline,
            issued_at: context.issued_at,
            finished_at: Utc::now(),
            arguments: context.arguments.clone(),
        };
        if self.publish(report) {
            self.release(&done);
        }
    }

    /// Publishes a report; whether it was enqueued (else its records stay uncommitted).
    fn publish(&self, report: Report) -> bool {
        let c = &self.inner.counters;
        bump(match report.verdict {
            Verdict::Pass => &c.verdict_pass,
            Verdict::Fail => &c.verdict_fail,
            Verdict::Error => &c.verdict_error,
            Verdict::Timeout => &c.verdict_timeout,
            Verdict::Skip => &c.verdict_skip,
        });
        let client = &self.inner.client;
        let published =
            match client.publish_json(&client.topics().reports, &report.test_id, &report) {
                Ok(()) => {
                    bump(&c.reports_published);
                    true
                }
                Err(err) => {
                    bump(&c.report_errors);
                    warn!(test_id = %report.test_id, "report {err}");
                    false
                }
            };
        if report.verdict == Verdict::Pass {
            debug!(test_id = %report.test_id, case = %report.case, "PASS");
        } else {
            info!(test_id = %report.test_id, case = %report.case, verdict = %report.verdict, error = report.error.as_deref().unwrap_or(""), "run finished");
        }
        let report = Arc::new(report);
        let watcher = self
            .inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&report.test_id);
        if let Some(tx) = watcher {
            let _ = tx.send(report.clone());
        }
        let _ = self.inner.reports.send(report);
        published
    }
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
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
