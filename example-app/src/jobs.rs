//! Job mode (`--execution job`): the execute-order service hands each order to a background
//! job in the same process, as a monolith sends celery tasks, instead of executing it on
//! the spot. The queue is apalis's in-memory storage; the worker runs behind LiveCheck's
//! [`livecheck_core::jobs::TestContextLayer`], so a job enqueued for a test's order runs in
//! the test's scope and its `order_executed` step belongs to the test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apalis_core::backend::memory::{MemorySink, MemoryStorage, MemoryStorageError};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use apalis_core::worker::builder::WorkerBuilder;
use futures::channel::mpsc;
use futures::{SinkExt as _, StreamExt as _};
use livecheck_core::jobs::{TaskBuilderExt as _, TestContextLayer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app::Shared;
use crate::consumers;
use crate::model::Order;

/// The name of the worker (and of the queue in logs).
pub const WORKER: &str = "execute-order-jobs";

/// Where orders are enqueued for execution. Enqueueing is a channel send: it never waits and
/// never contends with other senders (apalis's own in-memory sink must not be used from
/// many tasks at once).
#[derive(Debug)]
pub struct ExecutionJobs {
    sender: mpsc::UnboundedSender<Task<Order>>,
    enqueued: AtomicU64,
}

impl ExecutionJobs {
    /// A queue and the storage its worker reads ([`spawn_worker`]).
    pub fn new() -> (Self, MemoryStorage<Order>) {
        let (sender, receiver) = mpsc::unbounded::<Task<Order>>();
        // The storage's own sink, used by the worker only (apalis polls it for readiness).
        let own = sender.clone().sink_map_err(MemoryStorageError::from);
        let own: Box<
            dyn futures::Sink<Task<Order>, Error = MemoryStorageError> + Send + Sync + Unpin,
        > = Box::new(own);
        let storage = MemoryStorage::new_with(
            MemorySink::new(Arc::new(futures::lock::Mutex::new(own))),
            receiver.boxed(),
        );
        let queue = Self {
            sender,
            enqueued: AtomicU64::new(0),
        };
        (queue, storage)
    }

    /// Enqueues the execution of `order`, carrying the current test context (if any). The
    /// job's id is the order's: a job run again sends the same steps, counted once.
    pub fn enqueue(&self, order: Order) {
        let order_id = order.id.clone();
        let job = TaskBuilder::new(order)
            .task_id(TaskId::from_string(order_id.clone()))
            .test_context()
            .build();
        if self.sender.unbounded_send(job).is_err() {
            warn!(%order_id, "the execution worker has stopped; the order is not executed");
            return;
        }
        self.enqueued.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs enqueued so far.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(Ordering::Relaxed)
    }
}

/// Runs the jobs of `storage` (each executes its order as the execute-order consumer would)
/// until `stopped`.
pub fn spawn_worker(
    shared: Arc<Shared>,
    storage: MemoryStorage<Order>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let layer = TestContextLayer::new(shared.livecheck.clone());
    let worker = WorkerBuilder::new(WORKER)
        .backend(storage)
        .layer(layer)
        .build(move |order: Order| consumers::execute(shared.clone(), order));
    tokio::spawn(async move {
        info!(worker = WORKER, "execution worker started");
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        };
        match worker.run_until(stop).await {
            Ok(()) => info!(worker = WORKER, "execution worker stopped"),
            Err(err) => warn!(worker = WORKER, error = %err, "execution worker failed"),
        }
    })
}
