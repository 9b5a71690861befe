//! A run: one execution of a case's expectations for one test.
//!
//! Every send of a signal is an *occurrence*; the runner keeps each one (a record the
//! transport delivers twice counts once, by its send id). The waits take occurrences and
//! claim how often their step may happen; when the expectations return, the run checks the
//! claims against every occurrence read by then (after the case's `settle` time), so a step
//! that happened twice fails a run that waited for it once.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt as _;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use thin_vec::ThinVec;

use crate::check::CheckError;
use crate::context::TestContext;
use crate::registry::{Arrival, Registry, Watch};
use crate::signal::Signal;
use crate::table::{PendingWrite, TableStore, Written};

/// A predicate on a step's JSON value.
type Filter = Arc<dyn Fn(&RawValue) -> bool + Send + Sync>;

/// How often a claimed step may happen in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    Exactly(usize),
    AtMost(usize),
}

impl Times {
    fn allows(self, n: usize) -> bool {
        match self {
            Times::Exactly(k) => n == k,
            Times::AtMost(k) => n <= k,
        }
    }

    fn describe(self) -> String {
        match self {
            Times::Exactly(1) => "expected once".to_owned(),
            Times::Exactly(k) => format!("expected {k} times"),
            Times::AtMost(1) => "expected at most once".to_owned(),
            Times::AtMost(k) => format!("expected at most {k} times"),
        }
    }
}

/// A step the run took, with how often it may happen.
struct Claim {
    signal: &'static str,
    item: Option<String>,
    filter: Option<Condition>,
    times: Times,
}

/// Which of the waits that take one occurrence a wait is, as its report lines name it: a
/// byte in every waiting run's future, not a string's 16.
#[derive(Clone, Copy)]
enum Form {
    Wait,
    WaitWhere,
    WaitItem,
    WaitOptional,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::WaitWhere => "wait_where",
            Self::WaitItem => "wait_item",
            Self::WaitOptional => "wait_optional",
        }
    }
}

/// A `wait_where`'s condition on the step's value and its description; boxed, so a wait
/// without one (most) carries one pointer in its future (memory per in-flight run).
type Condition = Box<(Filter, String)>;

impl Claim {
    fn matches(&self, a: &Arrival) -> bool {
        matches(
            a,
            self.signal,
            self.item.as_deref(),
            self.filter.as_ref().map(|f| &f.0),
        )
    }

    fn describe_step(&self) -> String {
        let mut s = step_name(self.signal, self.item.as_deref());
        if let Some(condition) = &self.filter {
            s.push_str(" where ");
            s.push_str(&condition.1);
        }
        s
    }
}

fn matches(a: &Arrival, signal: &str, item: Option<&str>, filter: Option<&Filter>) -> bool {
    a.signal == signal && a.item.as_deref() == item && filter.is_none_or(|f| f(&a.value))
}

fn step_name(signal: &str, item: Option<&str>) -> String {
    match item {
        Some(item) => format!("{signal}[{item}]"),
        None => signal.to_owned(),
    }
}

/// What a run did so far: its steps, its waits, its claims.
///
/// Its vectors are `ThinVec`s (a pointer each, 48 bytes less in every run than `Vec`s): a
/// run waiting for its first step has pushed nothing to them yet. (Once one holds items, its
/// allocation is 16 bytes larger than a `Vec`'s, for its length and capacity.)
pub(crate) struct RunState {
    /// The occurrences the run's waits took, in the order taken.
    pub(crate) taken: ThinVec<Arc<Arrival>>,
    /// Event time of the previous step (the first step: of the test record).
    pub(crate) previous_at: DateTime<Utc>,
    /// The step that did not come, for the report. Boxed twice, one pointer in every run's
    /// state (16 bytes less than a `String`): it is set only when a step times out.
    pub(crate) missing_step: Option<Box<Box<str>>>,
    /// What each wait looked for and what it got, for the report.
    pub(crate) waits: ThinVec<String>,
    claims: ThinVec<Claim>,
}

impl RunState {
    pub(crate) fn new(started_at: DateTime<Utc>) -> Self {
        Self {
            taken: ThinVec::new(),
            previous_at: started_at,
            missing_step: None,
            waits: ThinVec::new(),
            claims: ThinVec::new(),
        }
    }

    fn take(&mut self, arrival: &Arc<Arrival>) {
        if !self.taken.iter().any(|t| Arc::ptr_eq(t, arrival)) {
            self.previous_at = self.previous_at.max(event_at(arrival));
            self.taken.push(arrival.clone());
        }
    }

    fn claim(&mut self, claim: Claim) {
        let same = |c: &Claim| {
            c.signal == claim.signal
                && c.item == claim.item
                && c.filter.as_ref().map(|f| &f.1) == claim.filter.as_ref().map(|f| &f.1)
        };
        if !self.claims.iter().any(same) {
            self.claims.push(claim);
        }
    }
}

/// What a run's waits share: one allocation per run in flight, kept small (its case's
/// settings are read from the case, not copied).
pub(crate) struct RunShared {
    /// Held here, not behind an `Arc` of its own: one allocation less per run.
    pub(crate) context: TestContext,
    pub(crate) case: Arc<crate::Case>,
    /// Event time of the test record: where the first step's timeout counts from.
    pub(crate) started_at: DateTime<Utc>,
    /// Its runner: the registry the waits watch, the partitions' clocks, and what concludes
    /// the run (one pointer for all of them).
    pub(crate) runner: crate::runner::Runner,
    pub(crate) state: Mutex<RunState>,
    /// The partition the test's records are on, and its event-time clock.
    pub(crate) partition: i32,
    /// Offset of the test's record (what its report's commit holds; a table write is
    /// remembered until it is committed).
    pub(crate) test_offset: i64,
    /// The suite's tables and this run's writes to them, for a case that declares tables
    /// (boxed: a run of another case pays one pointer).
    pub(crate) tables: Option<Box<RunTables>>,
}

/// What a run of a case with tables needs of them.
pub(crate) struct RunTables {
    pub(crate) store: Arc<TableStore>,
    pub(crate) writes: Mutex<RunWrites>,
}

/// A run's table writes: how many it made to each entry (a write is numbered among the
/// run's writes to its entry, so branches that write different entries in any order number
/// them alike), and those not yet acknowledged.
#[derive(Default)]
pub(crate) struct RunWrites {
    made: std::collections::HashMap<(Box<str>, Box<str>), u32>,
    pub(crate) pending: Vec<PendingWrite>,
}

impl RunWrites {
    /// The number of the run's next write to `route` of `table`.
    fn next(&mut self, table: &str, route: &str) -> u32 {
        let made = self.made.entry((table.into(), route.into())).or_insert(0);
        *made += 1;
        *made - 1
    }
}

impl Run {
    /// Reads `route` of `table` (raw JSON).
    pub(crate) fn table_get(
        &self,
        table: &str,
        route: &str,
    ) -> Result<Option<Box<RawValue>>, CheckError> {
        let s = &self.shared;
        self.tables(table)?
            .store
            .get(table, &s.context.case, route, s.partition)
    }

    fn tables(&self, table: &str) -> Result<&RunTables, CheckError> {
        self.shared.tables.as_deref().ok_or_else(|| {
            CheckError::Error(format!(
                "table `{table}` is not declared on case {}: add `.table(&...)` to the case so the runner restores it",
                self.shared.context.case
            ))
        })
    }

    /// Makes the run's next write: `change` gets the current value of `route` and gives the
    /// next (see [`TableStore::write`]); the value written.
    pub(crate) fn table_write(
        &self,
        table: &str,
        route: &str,
        change: impl FnOnce(
            Option<&RawValue>,
        ) -> Result<(Option<Box<RawValue>>, Box<RawValue>), CheckError>,
    ) -> Result<Written, CheckError> {
        let s = &self.shared;
        let tables = self.tables(table)?;
        let mut writes = tables.writes.lock().unwrap_or_else(|p| p.into_inner());
        let op = writes.next(table, route);
        let (written, pending) = tables.store.write(
            table,
            &s.context.case,
            route,
            s.partition,
            (&s.context.id, s.test_offset, op),
            change,
        )?;
        writes.pending.extend(pending);
        Ok(written)
    }
}

/// The handle expectations get: wait for signals of the test, read its context.
///
/// Every wait takes *occurrences* (one per send of the signal) and says how often its
/// step may happen in the run:
///
/// | form | returns | the step must happen |
/// |---|---|---|
/// | [`Run::wait`] | the value | exactly once |
/// | [`Run::wait_where`] | the first value satisfying a predicate | exactly once among the values that satisfy it |
/// | [`Run::wait_item`] | the value for one item | exactly once per item |
/// | [`Run::wait_n`] | `n` values | exactly `n` times |
/// | [`Run::wait_optional`] | `Some(value)` or `None` | at most once; absence is not an error |
/// | [`Run::wait_first`] | the first of several steps | the chosen one exactly once |
/// | [`Run::collect`] | every value within a window | any number of times |
/// | [`Run::never`] | `()` | not within a window (else `FAIL`) |
///
/// Counts are checked when the expectations return (after the case's
/// [`crate::Case::settle`] time): a step that happened more often than its wait allows makes
/// the run `FAIL` ("step `debited` happened 2 times, expected once"). A record the transport
/// delivers twice is one occurrence (same send id), a step the service sends twice is two.
///
/// A `Run` holds its runner: keep it in the expectations' future, not in a task that
/// outlives the run.
///
/// Independent steps can be awaited in parallel branches (`tokio::join!`); a branch's
/// timeout counts from the latest step taken when it began to wait:
///
/// ```
/// # use livecheck_core::{CheckError, Run, Signal};
/// # static DEBITED: Signal<u64> = Signal::new("ledger.transfer", "debited");
/// # static NOTIFIED: Signal<String> = Signal::new("ledger.transfer", "notified");
/// async fn check(run: Run) -> Result<(), CheckError> {
///     let (debited, notified) = tokio::join!(run.wait(&DEBITED), run.wait(&NOTIFIED));
///     let (debited, _notified) = (debited?, notified?);
///     livecheck_core::ensure!(debited > 0, "nothing was debited");
///     Ok(())
/// }
/// ```
pub struct Run {
    pub(crate) shared: Arc<RunShared>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("test_id", &self.shared.context.id)
            .field("case", &self.shared.context.case)
            .finish_non_exhaustive()
    }
}

/// A step that [`Run::wait_first`] can wait for: any [`Signal`], whatever its value type.
pub trait AnySignal: Send + Sync {
    /// The signal's name.
    fn signal_name(&self) -> &'static str;
    /// The case the signal belongs to.
    fn signal_case(&self) -> &'static str;
}

impl<T> AnySignal for Signal<T> {
    fn signal_name(&self) -> &'static str {
        self.name()
    }

    fn signal_case(&self) -> &'static str {
        self.case()
    }
}

/// The step [`Run::wait_first`] got: which signal, and its value.
#[derive(Debug, Clone)]
pub struct Occurrence {
    arrival: Arc<Arrival>,
}

impl Occurrence {
    /// The name of the signal that came.
    pub fn signal(&self) -> &str {
        &self.arrival.signal
    }

    /// Whether it is `signal`.
    pub fn is<T>(&self, signal: &Signal<T>) -> bool {
        self.arrival.signal == signal.name()
    }

    /// Its value as `signal`'s type, when it is `signal`: `Ok(None)` when another step
    /// came, an `ERROR` when the value does not decode.
    pub fn get<T: DeserializeOwned>(&self, signal: &Signal<T>) -> Result<Option<T>, CheckError> {
        if self.is(signal) {
            decode::<T>(&self.arrival).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// What a watch of some steps ended with.
enum Watched<R> {
    /// The decision came.
    Done(R),
    /// The clock passed the watch's end first; every matching occurrence read by then.
    Expired(Vec<Arc<Arrival>>),
}

fn event_at(a: &Arrival) -> DateTime<Utc> {
    a.event_at.unwrap_or(a.arrived_at)
}

fn decode<T: DeserializeOwned>(a: &Arrival) -> Result<T, CheckError> {
    serde_json::from_str(a.value.get()).map_err(|e| {
        CheckError::Error(format!(
            "value of signal `{}` ({}) does not decode as {}: {e}",
            a.signal,
            truncate(a.value.get(), 200),
            std::any::type_name::<T>()
        ))
    })
}

/// Where a wait stands in the registry: its waiter's id there (`None`: not in place) and
/// how many occurrences of its steps it has looked at.
#[derive(Default)]
struct Place {
    id: Option<u32>,
    /// A `u32`: 8 bytes less in a waiting run. A test holds far fewer occurrences (the
    /// registry bounds them: `Limits::max_early_signals_per_test`, `MAX_HOPS_PER_TEST`).
    seen: u32,
}

impl Place {
    /// Every occurrence of `signals` when there are more than `seen`; `None` once the
    /// clock has passed `until`; pending otherwise, with the waiter in place. Each poll
    /// looks again (a wake may be spurious), the clock after the waiter is in place, so that
    /// a clock passing `until` after the look wakes it. The registry's lock is let go on
    /// return.
    fn poll_next(
        &mut self,
        run: &Run,
        signals: &[&'static str],
        until: DateTime<Utc>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Vec<Arc<Arrival>>>, CheckError>> {
        // Woken (or polled) after its waiter was put in place: the clock first, so that a
        // deadline does not put the waiter back (what raced it is looked at by `expired`).
        if self.id.is_some() && run.clock_passed(until) {
            return Poll::Ready(Ok(None));
        }
        let watch = run.registry().map(|mut registry| {
            registry.watch(
                run.test_id(),
                signals,
                self.seen as usize,
                until,
                run.shared.partition,
                &mut self.id,
                cx.waker(),
            )
        });
        Poll::Ready(match watch {
            Ok(Watch::Pending) if !run.clock_passed(until) => return Poll::Pending,
            Ok(Watch::Pending) => Ok(None),
            Ok(Watch::Ready(all)) => Ok(Some(all)),
            Ok(Watch::Gone) => Err(run.gone()),
            Err(e) => Err(e),
        })
    }

    /// Takes the waiter away, if it is in place.
    fn cancel(&mut self, run: &Run) {
        if let Some(id) = self.id.take() {
            if let Ok(mut registry) = run.registry() {
                registry.cancel_wait(run.test_id(), id);
            }
        }
    }
}

/// A step a form of wait on one step watches: a [`Signal`] of any value type.
trait OneStep: AnySignal {
    /// Its name, as a one-name list.
    fn names(&self) -> &[&'static str];
}

impl<T> OneStep for Signal<T> {
    fn names(&self) -> &[&'static str] {
        Signal::names(self)
    }
}

/// A form of wait, as the [`Waiting`] future runs it: what it watches, what decides it,
/// and what it ends with.
trait WaitFor {
    /// What [`WaitFor::decide`] finds in the occurrences, once they give it.
    type Decision;
    /// The wait's result.
    type Output;
    /// The step watched by a form of wait on one step, or `None`: by default, then, no step
    /// is watched and there is nothing to check (the settle window); a form that watches
    /// several steps gives its own [`WaitFor::signals`] and [`WaitFor::check`].
    fn step(&self) -> Option<&dyn OneStep> {
        None
    }
    /// The steps watched.
    fn signals(&self) -> &[&'static str] {
        self.step().map_or(&[], OneStep::names)
    }
    /// The deadline, set at the first poll: by default `timeout` after the previous step,
    /// or the run's deadline if that comes first (see [`Run::until`]).
    fn until(&self, run: &Run, timeout: Duration) -> Until {
        run.until(timeout)
    }
    /// At the first poll, before the deadline is set: a wait on a step of another case is
    /// a mistake in the check, an `ERROR` at once.
    fn check(&self, run: &Run) -> Result<(), CheckError> {
        self.step().map_or(Ok(()), |step| {
            run.check_step_case(step.signal_name(), step.signal_case())
        })
    }
    /// A decision on the occurrences of the steps so far (every one, in arrival order), if
    /// they give one. The registry's lock is not held: this may run a case's own
    /// condition, which may be slow or panic.
    fn decide(&self, run: &Run, until: &Until, all: &[Arc<Arrival>]) -> Option<Self::Decision>;
    /// The result, once the watch ended (its waiter taken away): a decision, or the clock
    /// past the deadline with every occurrence read by then.
    fn conclude(
        &mut self,
        run: &Run,
        until: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<Self::Output, CheckError>;
}

/// The future of every wait (and of the case's settle window): it sets the deadline at its
/// first poll (counting from the steps taken before), keeps one waiter in the registry
/// while it waits, and takes it away whenever it ends, or is dropped (a branch of a
/// `select!` that lost, a run aborted).
///
/// Written by hand rather than as `async` blocks: a case's own future holds the future of
/// the wait it is at inline, for the whole run, and the blocks held their arguments, the
/// deadline and the registry waiter's copies of them twice over (a wait for one step was
/// 224 bytes; it is 104 this way).
struct Waiting<'a, W> {
    run: &'a Run,
    form: W,
    stage: Stage,
}

/// Where a [`Waiting`] is.
enum Stage {
    /// Not polled yet: the timeout or window the deadline counts (from the steps taken
    /// before the wait begins, at its first poll).
    Start(Duration),
    /// Watching its steps until the deadline.
    Watching { until: Until, place: Place },
    /// Done (its waiter taken away).
    Done,
}

impl<'a, W> Waiting<'a, W> {
    fn new(run: &'a Run, form: W, timeout: Duration) -> Self {
        Self {
            run,
            form,
            stage: Stage::Start(timeout),
        }
    }
}

impl<W: WaitFor + Unpin> Future for Waiting<'_, W> {
    type Output = Result<W::Output, CheckError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let run = this.run;
        loop {
            let (until, place) = match &mut this.stage {
                Stage::Start(timeout) => {
                    let timeout = *timeout;
                    if let Err(e) = this.form.check(run) {
                        this.stage = Stage::Done;
                        return Poll::Ready(Err(e));
                    }
                    this.stage = Stage::Watching {
                        until: this.form.until(run, timeout),
                        place: Place::default(),
                    };
                    continue;
                }
                Stage::Watching { until, place } => (until, place),
                Stage::Done => panic!("a wait's future polled after it completed"),
            };
            let form = &this.form;
            let signals = form.signals();
            let watched = match place.poll_next(run, signals, until.at, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => Err(e),
                Poll::Ready(Ok(Some(all))) => {
                    place.seen = u32::try_from(all.len()).unwrap_or(u32::MAX);
                    match form.decide(run, until, &all) {
                        Some(decision) => Ok(Watched::Done(decision)),
                        None => continue,
                    }
                }
                Poll::Ready(Ok(None)) => {
                    // Give up the watch; what raced the clock is still looked at.
                    place.cancel(run);
                    let seen = place.seen as usize;
                    run.expired(signals, seen, &mut |all: &[Arc<Arrival>]| {
                        form.decide(run, until, all)
                    })
                }
            };
            place.cancel(run);
            let Stage::Watching { until, .. } = std::mem::replace(&mut this.stage, Stage::Done)
            else {
                unreachable!("the stage was watching")
            };
            return Poll::Ready(watched.and_then(|w| this.form.conclude(run, until, w)));
        }
    }
}

impl<W> Drop for Waiting<'_, W> {
    fn drop(&mut self) {
        if let Stage::Watching { place, .. } = &mut self.stage {
            place.cancel(self.run);
        }
    }
}

/// The occurrence `a` taken, or its step (named by `name`) late: `a` came after the deadline
/// by event time.
fn in_time<S: AsRef<str>>(
    run: &Run,
    until: &Until,
    a: &Arc<Arrival>,
    name: impl FnOnce() -> S,
) -> Result<Arc<Arrival>, CheckError> {
    if event_at(a) > until.at {
        Err(run.timed_out(name().as_ref(), until, Some(event_at(a) - until.at), None))
    } else {
        Ok(a.clone())
    }
}

/// A wait for one occurrence of one step ([`Run::wait`], `wait_timeout`, `wait_where`,
/// `wait_item`, `wait_optional`): it takes the first occurrence that matches and claims it
/// exactly once.
struct One<'a, T> {
    signal: &'a Signal<T>,
    /// What narrows the step, if anything (`wait_item`, `wait_where`): boxed, one pointer
    /// (16 bytes less in the future of every wait, which a waiting run holds).
    narrow: Option<Box<Narrow<'a>>>,
    form: Form,
}

/// Which occurrences of its step a [`One`] takes.
enum Narrow<'a> {
    /// Those of this item.
    Item(&'a str),
    /// Those whose value satisfies the condition.
    Where(Condition),
}

impl<T> One<'_, T> {
    fn item(&self) -> Option<&str> {
        match self.narrow.as_deref() {
            Some(Narrow::Item(item)) => Some(item),
            _ => None,
        }
    }

    fn condition(&self) -> Option<&Condition> {
        match self.narrow.as_deref() {
            Some(Narrow::Where(condition)) => Some(condition),
            _ => None,
        }
    }
}

impl<T> WaitFor for One<'_, T> {
    /// The occurrence, or the step late.
    type Decision = Result<Arc<Arrival>, CheckError>;
    type Output = Arc<Arrival>;

    fn step(&self) -> Option<&dyn OneStep> {
        Some(self.signal)
    }

    fn decide(&self, run: &Run, until: &Until, all: &[Arc<Arrival>]) -> Option<Self::Decision> {
        let (name, item) = (self.signal.name(), self.item());
        let filter = self.condition().map(|f| &f.0);
        let first = all.iter().find(|a| matches(a, name, item, filter))?;
        Some(in_time(run, until, first, || step_name(name, item)))
    }

    fn conclude(
        &mut self,
        run: &Run,
        until: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<Arc<Arrival>, CheckError> {
        let (name, item, form) = (self.signal.name(), self.item(), self.form);
        let label = step_name(name, item);
        let first = match watched {
            Watched::Done(Ok(first)) => first,
            Watched::Done(Err(late)) => {
                run.note(format!("{} `{label}`: late", form.name()));
                return Err(late);
            }
            Watched::Expired(all) => {
                run.note(format!("{} `{label}`: did not come", form.name()));
                let detail = self.condition().map(|c| &c.1).and_then(|what| {
                    let other = all
                        .iter()
                        .filter(|a| a.item.as_deref() == item && event_at(a) <= until.at)
                        .count();
                    (other > 0).then(|| {
                        format!(
                            "{other} occurrence{} came where not {what}",
                            if other == 1 { "" } else { "s" }
                        )
                    })
                });
                return Err(run.timed_out(&label, &until, None, detail));
            }
        };
        let item = item.map(str::to_owned);
        let filter = match self.narrow.take().map(|n| *n) {
            Some(Narrow::Where(condition)) => Some(condition),
            _ => None,
        };
        let mut state = run.state();
        state.take(&first);
        state.claim(Claim {
            signal: name,
            item,
            filter,
            times: Times::Exactly(1),
        });
        // The common line, joined without `format!` (one per step of every run).
        state
            .waits
            .push([form.name(), " `", &label, "`: taken"].concat());
        Ok(first)
    }
}

/// [`Run::wait_n`]: `n` occurrences of a step (not per item), exactly.
struct Exactly<'a, T> {
    signal: &'a Signal<T>,
    n: usize,
}

impl<T> WaitFor for Exactly<'_, T> {
    /// The first `n` occurrences, or the `n`th late.
    type Decision = Result<Vec<Arc<Arrival>>, CheckError>;
    type Output = Vec<Arc<Arrival>>;

    fn step(&self) -> Option<&dyn OneStep> {
        Some(self.signal)
    }

    fn decide(&self, run: &Run, until: &Until, all: &[Arc<Arrival>]) -> Option<Self::Decision> {
        let (name, n) = (self.signal.name(), self.n);
        let mine: Vec<_> = all.iter().filter(|a| a.item.is_none()).collect();
        let nth = mine.get(n.checked_sub(1)?)?;
        Some(
            in_time(run, until, nth, || name)
                .map(|_| mine[..n].iter().map(|a| Arc::clone(a)).collect()),
        )
    }

    fn conclude(
        &mut self,
        run: &Run,
        until: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<Vec<Arc<Arrival>>, CheckError> {
        let (name, n) = (self.signal.name(), self.n);
        let taken = match watched {
            Watched::Done(taken) => taken?,
            Watched::Expired(all) => {
                let came = all
                    .iter()
                    .filter(|a| a.item.is_none() && event_at(a) <= until.at)
                    .count();
                run.note(format!("wait_n `{name}` ×{n}: {came} came"));
                return Err(run.timed_out(name, &until, None, Some(format!("{came} of {n} came"))));
            }
        };
        let mut state = run.state();
        for a in &taken {
            state.take(a);
        }
        state.claim(Claim {
            signal: name,
            item: None,
            filter: None,
            times: Times::Exactly(n),
        });
        state.waits.push(format!("wait_n `{name}` ×{n}: taken"));
        Ok(taken)
    }
}

/// [`Run::wait_first`]: the first occurrence of any of several steps (not per item).
struct FirstOf<'a> {
    steps: &'a [&'a dyn AnySignal],
    names: Vec<&'static str>,
}

impl WaitFor for FirstOf<'_> {
    /// The occurrence, or the step late.
    type Decision = Result<Arc<Arrival>, CheckError>;
    type Output = Occurrence;

    fn signals(&self) -> &[&'static str] {
        &self.names
    }

    fn check(&self, run: &Run) -> Result<(), CheckError> {
        self.steps
            .iter()
            .try_for_each(|step| run.check_step_case(step.signal_name(), step.signal_case()))
    }

    fn decide(&self, run: &Run, until: &Until, all: &[Arc<Arrival>]) -> Option<Self::Decision> {
        let first = all.iter().find(|a| a.item.is_none())?;
        Some(in_time(run, until, first, || first.signal.as_str()))
    }

    fn conclude(
        &mut self,
        run: &Run,
        until: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<Occurrence, CheckError> {
        let names = &self.names;
        let label = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let first = match watched {
            Watched::Done(first) => first?,
            Watched::Expired(_) => {
                run.note(format!("wait_first {label}: none came"));
                return Err(run.timed_out(&names.join("|"), &until, None, None));
            }
        };
        let signal = names
            .iter()
            .copied()
            .find(|n| *n == first.signal)
            .unwrap_or_default();
        let mut state = run.state();
        state.take(&first);
        state.claim(Claim {
            signal,
            item: None,
            filter: None,
            times: Times::Exactly(1),
        });
        state
            .waits
            .push(format!("wait_first {label}: `{}` came", first.signal));
        Ok(Occurrence { arrival: first })
    }
}

/// [`Run::collect`]: every occurrence of a step (not per item) within a window.
struct Within<'a, T> {
    signal: &'a Signal<T>,
    window: Duration,
}

impl<T> WaitFor for Within<'_, T> {
    /// Never: the window always runs out.
    type Decision = std::convert::Infallible;
    type Output = Vec<Arc<Arrival>>;

    fn step(&self) -> Option<&dyn OneStep> {
        Some(self.signal)
    }

    fn decide(&self, _: &Run, _: &Until, _: &[Arc<Arrival>]) -> Option<Self::Decision> {
        None
    }

    fn conclude(
        &mut self,
        run: &Run,
        until: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<Vec<Arc<Arrival>>, CheckError> {
        let all = match watched {
            Watched::Done(never) => match never {},
            Watched::Expired(all) => all,
        };
        let taken: Vec<_> = all
            .into_iter()
            .filter(|a| a.item.is_none() && event_at(a) <= until.at)
            .collect();
        let mut state = run.state();
        for a in &taken {
            state.take(a);
        }
        state.waits.push(format!(
            "collect `{}` within {:?}: {} taken",
            self.signal.name(),
            self.window,
            taken.len()
        ));
        Ok(taken)
    }
}

/// [`Run::never`]: no occurrence of a step within a window.
struct None_<'a, T> {
    signal: &'a Signal<T>,
    window: Duration,
}

impl<T> WaitFor for None_<'_, T> {
    /// The occurrence that came within the window.
    type Decision = Arc<Arrival>;
    type Output = ();

    fn step(&self) -> Option<&dyn OneStep> {
        Some(self.signal)
    }

    fn decide(&self, _: &Run, until: &Until, all: &[Arc<Arrival>]) -> Option<Self::Decision> {
        all.iter().find(|a| event_at(a) <= until.at).cloned()
    }

    fn conclude(
        &mut self,
        run: &Run,
        until: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<(), CheckError> {
        let (name, window) = (self.signal.name(), self.window);
        match watched {
            Watched::Done(came) => {
                run.note(format!("never `{name}` within {window:?}: came"));
                let (since, from) = match &until.since {
                    Some(s) => (format!("the previous step `{}`", s.signal), event_at(s)),
                    None => ("the start of the test".to_owned(), run.started_at()),
                };
                let came_after = (event_at(&came) - from).to_std().unwrap_or_default();
                Err(CheckError::Failed(format!(
                    "step `{name}` happened {came_after:?} after {since}, but must not within {window:?}"
                )))
            }
            Watched::Expired(_) => {
                run.note(format!("never `{name}` within {window:?}: none came"));
                Ok(())
            }
        }
    }
}

/// The case's settle window ([`crate::Case::settle`]), before a run's claims are checked:
/// no step watched, the registry's waiter only waits for the clock, so that repeats of the
/// last steps sent within the window are read and counted.
struct Settle;

impl WaitFor for Settle {
    /// Never: the window always runs out.
    type Decision = std::convert::Infallible;
    type Output = ();

    /// `settle` after the previous step: a window for repeats, not a deadline, so the
    /// clock's slack for out-of-order producers is not added to it.
    fn until(&self, run: &Run, settle: Duration) -> Until {
        let from = run.state().previous_at;
        Until::new(
            from + TimeDelta::from_std(settle).unwrap_or(TimeDelta::MAX)
                - run.shared.runner.clocks().slack(),
            settle,
            false,
            None,
        )
    }

    fn decide(&self, _: &Run, _: &Until, _: &[Arc<Arrival>]) -> Option<Self::Decision> {
        None
    }

    fn conclude(
        &mut self,
        _: &Run,
        _: Until,
        watched: Watched<Self::Decision>,
    ) -> Result<(), CheckError> {
        match watched {
            Watched::Done(never) => match never {},
            Watched::Expired(_) => Ok(()),
        }
    }
}

/// A wait's deadline: the earlier of the step's timeout and the run's deadline, or the end
/// of the settle window ([`Settle`], which the run's deadline does not shorten; its
/// `waited` is the window, and it has no previous step or run deadline to tell).
#[derive(Clone)]
struct Until {
    at: DateTime<Utc>,
    /// How long the wait was (see [`Until::waited`]), in nanoseconds: 8 bytes less than a
    /// `Duration` in a waiting run.
    waited_nanos: u64,
    run_deadline: bool,
    /// The step the timeout counts from (`None`: the start of the test).
    since: Option<Arc<Arrival>>,
}

impl Until {
    fn new(
        at: DateTime<Utc>,
        waited: Duration,
        run_deadline: bool,
        since: Option<Arc<Arrival>>,
    ) -> Self {
        Self {
            at,
            // Saturated: past 584 years, as good as never.
            waited_nanos: u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            run_deadline,
            since,
        }
    }

    /// The step's timeout, the run's deadline when it came first, or the settle window.
    fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos)
    }
}

impl Run {
    /// The test id.
    pub fn test_id(&self) -> &str {
        &self.shared.context.id
    }

    /// The test context.
    pub fn context(&self) -> &TestContext {
        &self.shared.context
    }

    /// Waits for `signal` with the case's timeout, after the previous step by event time (see
    /// [`Run::wait_timeout`]), and returns its value. The step must happen exactly once.
    pub fn wait<'a, T: DeserializeOwned + 'a>(
        &'a self,
        signal: &'a Signal<T>,
    ) -> impl Future<Output = Result<T, CheckError>> + 'a {
        self.wait_timeout(signal, self.timeout())
    }

    /// Waits for `signal` at most `timeout` after the previous step (by event time: the
    /// records' own timestamps) and returns its value. The step must happen exactly once
    /// in the run: a second occurrence makes the run `FAIL`.
    ///
    /// The step is missing only once the runner has read the signals past that deadline:
    /// a runner that is behind, replaying after a restart, or cut off from the broker does
    /// not time a step out that was sent in time; a step sent after its deadline is late,
    /// whenever it is read.
    ///
    /// (The waits are functions returning a future rather than `async fn`s: the future of
    /// a waiting run is smaller without a copy of their arguments in it.)
    pub fn wait_timeout<'a, T: DeserializeOwned + 'a>(
        &'a self,
        signal: &'a Signal<T>,
        timeout: Duration,
    ) -> impl Future<Output = Result<T, CheckError>> + 'a {
        // A combinator, not an `async` block, which would hold the wait twice.
        self.take_one(signal, None, timeout, Form::Wait)
            .map(|taken| decode(&*taken?))
    }

    /// Waits for the first occurrence of `signal` whose value satisfies `condition` (`what`
    /// describes it in messages: `"status is Filled"`), with the case's timeout. Other
    /// values of the step may come (they are listed in the report), but exactly one may
    /// satisfy the condition.
    pub fn wait_where<'a, T, F>(
        &'a self,
        signal: &'a Signal<T>,
        what: &str,
        condition: F,
    ) -> impl Future<Output = Result<T, CheckError>> + 'a
    where
        T: DeserializeOwned + 'a,
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let filter: Filter = Arc::new(move |raw: &RawValue| {
            serde_json::from_str::<T>(raw.get()).is_ok_and(|v| condition(&v))
        });
        let condition = Narrow::Where(Box::new((filter, what.to_owned())));
        self.take_one(signal, Some(condition), self.timeout(), Form::WaitWhere)
            .map(|taken| decode(&*taken?))
    }

    /// Waits for the step `signal` of one item (sent with [`Signal::send_item`]), with the
    /// case's timeout; each item's step must happen exactly once.
    pub fn wait_item<'a, T: DeserializeOwned + 'a>(
        &'a self,
        signal: &'a Signal<T>,
        item: &'a str,
    ) -> impl Future<Output = Result<T, CheckError>> + 'a {
        self.take_one(
            signal,
            Some(Narrow::Item(item)),
            self.timeout(),
            Form::WaitItem,
        )
        .map(|taken| decode(&*taken?))
    }

    /// Waits for `signal` to happen `n` times, the last of them within the case's timeout
    /// of the previous step, and returns the values in the order they came. More than `n`
    /// occurrences make the run `FAIL`.
    pub fn wait_n<'a, T: DeserializeOwned + 'a>(
        &'a self,
        signal: &'a Signal<T>,
        n: usize,
    ) -> impl Future<Output = Result<Vec<T>, CheckError>> + 'a {
        Waiting::new(self, Exactly { signal, n }, self.timeout())
            .map(|taken| taken?.iter().map(|a| decode(a)).collect())
    }

    /// Waits for `signal` with the case's timeout, as [`Run::wait`], but a step that does
    /// not come is not an error: `Ok(None)`. It may happen at most once.
    pub fn wait_optional<'a, T: DeserializeOwned + 'a>(
        &'a self,
        signal: &'a Signal<T>,
    ) -> impl Future<Output = Result<Option<T>, CheckError>> + 'a {
        self.take_one(signal, None, self.timeout(), Form::WaitOptional)
            .map(move |taken| match taken {
                Ok(a) => decode(&a).map(Some),
                Err(CheckError::Timeout { .. }) => {
                    let mut state = self.state();
                    // Not missing: optional.
                    state.missing_step = None;
                    state.claim(Claim {
                        signal: signal.name(),
                        item: None,
                        filter: None,
                        times: Times::AtMost(1),
                    });
                    if let Some(last) = state.waits.last_mut() {
                        *last = format!("wait_optional `{}`: absent", signal.name());
                    }
                    Ok(None)
                }
                Err(e) => Err(e),
            })
    }

    /// Waits for the first of several steps, with the case's timeout, and returns it; the
    /// step that came must happen exactly once (the others are not constrained).
    pub fn wait_first<'a>(
        &'a self,
        steps: &'a [&'a dyn AnySignal],
    ) -> impl Future<Output = Result<Occurrence, CheckError>> + 'a {
        let names = steps.iter().map(|step| step.signal_name()).collect();
        Waiting::new(self, FirstOf { steps, names }, self.timeout())
    }

    /// Every occurrence of `signal` within `window` of the previous step (by event time),
    /// in the order they came: waits the whole window, never fails for a missing step.
    pub fn collect<'a, T: DeserializeOwned + 'a>(
        &'a self,
        signal: &'a Signal<T>,
        window: Duration,
    ) -> impl Future<Output = Result<Vec<T>, CheckError>> + 'a {
        Waiting::new(self, Within { signal, window }, window)
            .map(|taken| taken?.iter().map(|a| decode(a)).collect())
    }

    /// Fails the run (`FAIL`) if `signal` happens within `window` of the previous step (by
    /// event time); waits the whole window otherwise.
    pub fn never<'a, T>(
        &'a self,
        signal: &'a Signal<T>,
        window: Duration,
    ) -> impl Future<Output = Result<(), CheckError>> + 'a {
        Waiting::new(self, None_ { signal, window }, window)
    }

    /// Called by the runner when the expectations passed: waits the case's settle time,
    /// then checks every claimed step's count against every occurrence read.
    pub(crate) async fn conclude(&self) -> Result<(), CheckError> {
        let settle = self.shared.case.settings().settle;
        if !settle.is_zero() {
            Waiting::new(self, Settle, settle).await?;
        }
        let (all, overflowed) = self
            .registry()?
            .occurrences(self.test_id())
            .ok_or_else(|| self.gone())?;
        if overflowed {
            return Err(CheckError::Error(
                "more signals came for this test than the runner keeps per test \
                 (Limits::max_early_signals_per_test): how often each step happened is not known"
                    .into(),
            ));
        }
        let state = self.state();
        for claim in &state.claims {
            let n = all.iter().filter(|a| claim.matches(a)).count();
            if !claim.times.allows(n) {
                return Err(CheckError::Failed(format!(
                    "step `{}` happened {n} time{}, {}",
                    claim.describe_step(),
                    if n == 1 { "" } else { "s" },
                    claim.times.describe()
                )));
            }
        }
        Ok(())
    }

    /// Waits for one occurrence of a step (first match, in arrival order) and takes it,
    /// claiming it exactly once (see [`One`]).
    fn take_one<'a, T>(
        &'a self,
        signal: &'a Signal<T>,
        narrow: Option<Narrow<'a>>,
        timeout: Duration,
        form: Form,
    ) -> Waiting<'a, One<'a, T>> {
        let one = One {
            signal,
            narrow: narrow.map(Box::new),
            form,
        };
        Waiting::new(self, one, timeout)
    }

    /// Whether the run's partition's event-time clock has passed `until`.
    fn clock_passed(&self, until: DateTime<Utc>) -> bool {
        self.shared
            .runner
            .clocks()
            .now(self.shared.partition, Utc::now())
            .is_some_and(|c| c >= until)
    }

    /// The end of a [`Waiting`] whose deadline passed, its waiter given up: a decision
    /// on the occurrences that raced the clock, if any, or every occurrence of `signals`.
    fn expired<R>(
        &self,
        signals: &[&'static str],
        seen: usize,
        decide: &mut impl FnMut(&[Arc<Arrival>]) -> Option<R>,
    ) -> Result<Watched<R>, CheckError> {
        let (all, _) = self
            .registry()?
            .occurrences(self.test_id())
            .ok_or_else(|| self.gone())?;
        let all: Vec<_> = all
            .into_iter()
            .filter(|a| signals.contains(&a.signal.as_str()))
            .collect();
        if all.len() > seen {
            if let Some(decision) = decide(&all) {
                return Ok(Watched::Done(decision));
            }
        }
        Ok(Watched::Expired(all))
    }

    /// A wait on another case's signal is a mistake in the check: `ERROR` at once.
    fn check_step_case(&self, name: &str, case: &str) -> Result<(), CheckError> {
        let this = &self.shared.context.case;
        if case == this {
            return Ok(());
        }
        Err(CheckError::Error(format!(
            "the check of case `{this}` waits for signal `{name}` of case `{case}`: a run only \
             receives its own case's signals (declare the signal with case \"{this}\")"
        )))
    }

    /// The step's deadline: `timeout` after the previous step, or the run's deadline if
    /// that comes first.
    fn until(&self, timeout: Duration) -> Until {
        let state = self.state();
        let step = state.previous_at + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        let since = state.taken.last().cloned();
        drop(state);
        match self.deadline() {
            Some((at, waited)) if at < step => Until::new(at, waited, true, since),
            _ => Until::new(step, timeout, false, since),
        }
    }

    fn started_at(&self) -> DateTime<Utc> {
        self.shared.started_at
    }

    /// The case's timeout of a step.
    fn timeout(&self) -> Duration {
        self.shared.case.settings().timeout
    }

    /// The run's deadline by event time (from the test's issue, or from the test record if
    /// that is earlier), and the duration it was set from.
    fn deadline(&self) -> Option<(DateTime<Utc>, Duration)> {
        let d = self.shared.case.settings().deadline?;
        let from = self.shared.context.issued_at.min(self.shared.started_at);
        Some((from + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX), d))
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn registry(&self) -> Result<MutexGuard<'_, Registry>, CheckError> {
        self.shared
            .runner
            .registry()
            .lock()
            .map_err(|_| CheckError::Error("runner state is poisoned".into()))
    }

    fn gone(&self) -> CheckError {
        CheckError::Error(format!(
            "test {} is no longer tracked by the runner",
            self.test_id()
        ))
    }

    fn note(&self, wait: String) {
        self.state().waits.push(wait);
    }

    fn timed_out(
        &self,
        name: &str,
        until: &Until,
        late_by: Option<TimeDelta>,
        detail: Option<String>,
    ) -> CheckError {
        self.state().missing_step = Some(Box::new(name.into()));
        CheckError::Timeout {
            signal: name.to_owned(),
            waited: until.waited(),
            last_step: until.since.as_ref().map(|s| s.signal.clone()),
            late_by: late_by.map(|d| d.to_std().unwrap_or_default()),
            detail,
            run_deadline: until.run_deadline,
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
