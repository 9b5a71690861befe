//! A lane's runs, polled by the lane's own loop.
//!
//! A run waits for its steps, and the lane that reads its records wakes it. As a tokio task
//! of its own, each run cost a task (spawned, scheduled, freed), and each step a wake of
//! that task, which another worker often took: the run then took its lane's registry lock
//! while the lane held it, and the two workers passed the run's state back and forth. In
//! its lane's set, a run is polled on the lane's worker, right after the records that woke
//! it, and a wake is a mark in the set (see `docs/performance.md`, "Runs in their lane").
//! A runner's parallelism is its lanes (`RunnerConfig::lanes`), one per core by default in
//! the `livecheck` service.
//!
//! While the loop lasts, [`RunStarter::start`] hands each run to its [`LaneRuns`]; outside
//! it (before the loop, after it, in a test), a run is a task of its own. The runs in the set
//! when the loop ends become tasks of their own too ([`LaneRuns`]'s drop), so a run goes on
//! to its verdict however the loop ends, as a task would have.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use futures::future::{AbortHandle, Abortable, Aborted, CatchUnwind};
use futures::stream::{FuturesUnordered, StreamExt as _};
use futures::FutureExt as _;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::case::BoxFuture;

/// A run in a lane's set: its check, which its [`AbortHandle`] stops. A panic the check
/// does not catch itself (one in LiveCheck's own code around the case: the case's panics
/// are its `FAIL`) ends that run, not the lane: see [`ended`].
type LaneRun = Abortable<CatchUnwind<AssertUnwindSafe<BoxFuture<()>>>>;

/// How a run left its set.
type Ended = Result<Result<(), Box<dyn Any + Send>>, Aborted>;

/// Logs a run that ended in a panic (as a tokio task would have ended: the panic hook has
/// printed it; the run's test gets no verdict from this runner).
fn ended(run: Ended) {
    if let Ok(Err(panic)) = run {
        error!(
            panic = %crate::runner::panic_message(&*panic),
            "a run panicked outside its check (a LiveCheck bug: please report it); its test gets no verdict from this runner, the lane goes on"
        );
    }
}

/// Where a lane's runs start: in its loop's set while there is one, else in a task.
#[derive(Default)]
pub(crate) struct RunStarter(OnceLock<mpsc::UnboundedSender<LaneRun>>);

impl RunStarter {
    /// The set of the lane's loop: `None` if it was opened already (a lane has one loop).
    pub(crate) fn open(&self) -> Option<LaneRuns> {
        let (tx, new) = mpsc::unbounded_channel();
        self.0.set(tx).ok()?;
        Some(LaneRuns {
            runs: FuturesUnordered::new(),
            new,
        })
    }

    /// Starts `check`, and gives the handle that stops it (its future is dropped the next
    /// time it would be polled).
    pub(crate) fn start(&self, check: BoxFuture<()>) -> AbortHandle {
        let (handle, registration) = AbortHandle::new_pair();
        let run = Abortable::new(AssertUnwindSafe(check).catch_unwind(), registration);
        let run = match self.0.get() {
            Some(tx) => match tx.send(run) {
                Ok(()) => return handle,
                // The loop has ended.
                Err(mpsc::error::SendError(run)) => run,
            },
            None => run,
        };
        drop(tokio::spawn(run.map(ended)));
        handle
    }
}

/// The runs a lane's loop polls (see the module's doc).
pub(crate) struct LaneRuns {
    runs: FuturesUnordered<LaneRun>,
    /// The runs started since the last poll.
    new: mpsc::UnboundedReceiver<LaneRun>,
}

impl LaneRuns {
    /// Ready once a run has ended. Each poll takes in the runs started since the last one
    /// and polls the runs woken since (those left, when `FuturesUnordered` yields after
    /// polling as many as it holds, on the next). Never ready while no run is going.
    pub(crate) fn next_ended(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_ended(cx))
    }

    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Poll::Ready(Some(run)) = self.new.poll_recv(cx) {
            self.runs.push(run);
        }
        match self.runs.poll_next_unpin(cx) {
            Poll::Ready(Some(run)) => {
                ended(run);
                Poll::Ready(())
            }
            // Empty: the channel's waker stands for the next run.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// How many runs the set holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.len()
    }
}

impl Drop for LaneRuns {
    /// The runs left (and any started from now on) go on as tasks of their own.
    fn drop(&mut self) {
        self.new.close();
        while let Ok(run) = self.new.try_recv() {
            self.runs.push(run);
        }
        let runs = std::mem::take(&mut self.runs);
        if runs.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                for run in runs {
                    drop(handle.spawn(run.map(ended)));
                }
            }
            Err(_) => warn!(
                runs = runs.len(),
                "a lane's runs dropped without a verdict: its loop ended outside a tokio runtime"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A run that counts its polls and ends at its second.
    fn two_polls(polls: Arc<AtomicUsize>) -> BoxFuture<()> {
        Box::pin(async move {
            polls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            polls.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn the_loop_polls_its_runs_and_a_run_started_after_it_is_a_task() {
        let starter = RunStarter::default();
        let mut lane = starter.open().expect("first open");
        assert!(starter.open().is_none(), "a lane has one loop");
        let polls = Arc::new(AtomicUsize::new(0));
        let _handle = starter.start(two_polls(polls.clone()));
        assert_eq!(
            polls.load(Ordering::SeqCst),
            0,
            "not polled before the loop polls it"
        );
        lane.next_ended().await;
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        assert_eq!(lane.len(), 0);

        // An aborted run ends without being polled again.
        let stopped = Arc::new(AtomicUsize::new(0));
        let handle = starter.start(Box::pin({
            let stopped = stopped.clone();
            async move {
                stopped.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        }));
        let waits = futures::poll!(Box::pin(lane.next_ended()));
        assert!(waits.is_pending() && stopped.load(Ordering::SeqCst) == 1);
        handle.abort();
        lane.next_ended().await;
        assert_eq!(lane.len(), 0);

        // A run that panics ends; the set goes on.
        let _panics = starter.start(Box::pin(async { panic!("a bug") }));
        lane.next_ended().await;
        assert_eq!(lane.len(), 0);

        // Left in the set when the loop ends, or started after it: tasks of their own.
        let left = Arc::new(AtomicUsize::new(0));
        let _left = starter.start(two_polls(left.clone()));
        drop(lane);
        let after = Arc::new(AtomicUsize::new(0));
        let _after = starter.start(two_polls(after.clone()));
        for _ in 0..100 {
            if left.load(Ordering::SeqCst) == 2 && after.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            left.load(Ordering::SeqCst),
            2,
            "the run left in the set ended"
        );
        assert_eq!(
            after.load(Ordering::SeqCst),
            2,
            "the run started after the loop ended"
        );
    }
}
