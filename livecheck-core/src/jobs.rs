//! Background jobs: the test context rides along with an [apalis] task, from the code that
//! enqueues it to the worker that runs it (feature `jobs-apalis`).
//!
//! At enqueue, the current task's context is written into the job's metadata (apalis's
//! [`MetadataStore`], string pairs that every apalis storage keeps next to the payload: the
//! in-memory one, SQLite, Postgres, Redis), under the header names of [`crate::headers`]
//! and in their wire format, signature, route and arguments included. In the worker,
//! [`TestContextLayer`] reads it back, checks it with [`LiveCheck::accept`] and runs the
//! job inside the test's scope, so [`crate::current_test`] is the test's context and a
//! [`crate::Signal`] sent there belongs to the test.
//!
//! ```no_run
//! use apalis_core::backend::memory::MemoryStorage;
//! use apalis_core::backend::TaskSink as _;
//! use apalis_core::worker::builder::WorkerBuilder;
//! use livecheck_core::{jobs, LiveCheck, Signal};
//!
//! static EXECUTED: Signal<u64> = Signal::new("orders.place_order", "order_executed");
//!
//! async fn execute(order: u64) {
//!     EXECUTED.send(&order).await; // belongs to the test that enqueued the job
//! }
//!
//! # async fn demo(client: LiveCheck) -> Result<(), Box<dyn std::error::Error>> {
//! let mut storage = MemoryStorage::new();
//! // In the request handler, inside the test's scope:
//! storage.push_task(jobs::task(42u64)).await?;
//!
//! // In the worker:
//! let worker = WorkerBuilder::new("execute-order")
//!     .backend(storage)
//!     .layer(jobs::TestContextLayer::new(client))
//!     .build(execute);
//! worker.run().await?;
//! # Ok(()) }
//! ```
//!
//! A job whose stored context is malformed (or, when the client has signing keys, unsigned,
//! forged, tampered or expired) runs as an ordinary job: the rejection is counted in
//! [`crate::counters::ClientCounters`] and logged with the job's id, never an error of the
//! job. A job enqueued outside a test carries nothing and runs unscoped.
//!
//! [apalis]: https://docs.rs/apalis

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::layers::{Layer, Service};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::{Metadata, MetadataStore};
use apalis_core::task::Task;

use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::headers::{self, ContextError};

/// Writes `context` (and its signature, route and arguments, if any: see
/// [`headers::encode_with`]) into a job's metadata, replacing any test context it held.
pub fn inject_context(metadata: &mut MetadataStore, context: &TestContext) {
    for name in headers::EVERY {
        let stale: Vec<String> = metadata
            .keys()
            .filter(|key| key.eq_ignore_ascii_case(name))
            .cloned()
            .collect();
        for key in stale {
            metadata.remove(&key);
        }
    }
    headers::encode_with(context, |name, value| {
        metadata.replace(name, value);
    });
}

/// Writes the current task's test context (if any) into a job's metadata.
pub fn inject(metadata: &mut MetadataStore) {
    if let Some(context) = current_test() {
        inject_context(metadata, &context);
    }
}

/// Reads the test context (and its signature, route and arguments, if any) from a job's
/// metadata (names compared case-insensitively; a name present twice in different cases
/// rejects the context). Checks the form, not the signature: [`LiveCheck::accept`] does.
pub fn extract(metadata: &MetadataStore) -> Result<Option<TestContext>, ContextError> {
    headers::decode_counted(|name| {
        let mut matching = metadata
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name));
        match matching.next() {
            None => (None, 0),
            Some((_, value)) => (Some(value.as_bytes()), 1 + matching.count()),
        }
    })
}

/// A test context as apalis [`Metadata`], for code that builds its tasks itself:
/// `TaskBuilder::new(args).metadata(&JobTestContext::current())`, or in a handler the
/// extractor `Meta<JobTestContext>` (which fails the job on a malformed context: prefer
/// [`TestContextLayer`], which runs it as an ordinary job).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTestContext(pub Option<Arc<TestContext>>);

impl JobTestContext {
    /// The current task's test context, if any.
    #[must_use]
    pub fn current() -> Self {
        Self(current_test())
    }
}

impl Metadata for JobTestContext {
    type Error = ContextError;

    fn extract(store: &MetadataStore) -> Result<Self, ContextError> {
        extract(store).map(|found| Self(found.map(Arc::new)))
    }

    fn inject(&self, store: &mut MetadataStore) -> Result<(), ContextError> {
        if let Some(context) = &self.0 {
            inject_context(store, context);
        }
        Ok(())
    }
}

/// Carries the current test context in jobs built with apalis's [`TaskBuilder`].
pub trait TaskBuilderExt {
    /// Adds the current task's test context (if any) to the job's metadata.
    #[must_use]
    fn test_context(self) -> Self;
}

impl<Args> TaskBuilderExt for TaskBuilder<Args> {
    fn test_context(self) -> Self {
        match current_test() {
            Some(context) => self.metadata(&JobTestContext(Some(context))),
            None => self,
        }
    }
}

/// A job of `args` carrying the current task's test context, if any: push it with
/// apalis's `TaskSink::push_task`.
pub fn task<Args>(args: Args) -> Task<Args> {
    TaskBuilder::new(args).test_context().build()
}

/// A tower layer for apalis workers that runs each job inside the scope of the test
/// context stored with it. A malformed context (or, when the client has signing keys, an
/// unsigned, forged, tampered or expired one) is counted on the client, logged with the
/// job's id, and the job runs as an ordinary job: never a job error.
///
/// Signals sent while running a job with an id get send ids derived from that id, so a job
/// run again (a retry, or a redelivery after a crash) sends the same steps again and the
/// runner counts each once.
#[derive(Debug, Clone)]
pub struct TestContextLayer {
    client: LiveCheck,
}

impl TestContextLayer {
    /// A layer whose signals go through `client`.
    pub fn new(client: LiveCheck) -> Self {
        Self { client }
    }
}

impl<S> Layer<S> for TestContextLayer {
    type Service = TestContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TestContextService {
            inner,
            client: self.client.clone(),
        }
    }
}

/// The service of [`TestContextLayer`].
#[derive(Debug, Clone)]
pub struct TestContextService<S> {
    inner: S,
    client: LiveCheck,
}

impl<S, Args> Service<Task<Args>> for TestContextService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, job: Task<Args>) -> Self::Future {
        let decoded = extract(job.ctx().metadata());
        if let Ok(None) = decoded {
            return Box::pin(self.inner.call(job));
        }
        let job_id = job.ctx().task_id().map(ToString::to_string);
        let context = self.client.accept_from(
            decoded,
            &format_args!("job {}", job_id.as_deref().unwrap_or("without an id")),
        );
        let fut = self.inner.call(job);
        let Some(context) = context else {
            return Box::pin(fut);
        };
        let client = self.client.clone();
        match job_id {
            // Send ids from the job: a job run again sends the same ids. (This accepts the
            // context a second time: a second HMAC when signing is on, a microsecond.)
            Some(id) => Box::pin(async move {
                client
                    .scope_consumed(Ok(Some(context)), &format!("job/{id}"), 0, 0, fut)
                    .await
            }),
            None => Box::pin(async move { client.scope(context, fut).await }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::{KafkaConfig, Topics};

    /// A client that never needs its broker (nothing here is flushed).
    fn offline_client() -> LiveCheck {
        LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).unwrap()
    }

    fn context() -> TestContext {
        TestContext::new("jobs.probe", Duration::from_secs(60))
            .arguments(serde_json::json!({"side": "sell"}))
    }

    #[tokio::test]
    async fn a_job_built_in_a_test_carries_its_context_and_one_built_outside_nothing() {
        let client = offline_client();
        let ctx = context();
        let inside = client.scope(ctx.clone(), async { task(1u8) }).await;
        let back = extract(inside.ctx().metadata()).unwrap().unwrap();
        assert_eq!(back.id, ctx.id);
        assert_eq!(back.case, ctx.case);
        assert_eq!(back.arguments, ctx.arguments);

        let outside = task(2u8);
        assert!(outside.ctx().metadata().is_empty());
        assert_eq!(extract(outside.ctx().metadata()), Ok(None));
    }

    #[test]
    fn injecting_replaces_a_stale_context_whatever_the_case_of_its_names() {
        let mut metadata = MetadataStore::new();
        metadata.replace("livecheck-test-id", "old");
        metadata.replace(headers::TEST_SIGNATURE, "v1;kid=k;sig=old");
        metadata.replace("other", "kept");
        let ctx = TestContext::new("jobs.probe", Duration::from_secs(60));
        inject_context(&mut metadata, &ctx);
        assert_eq!(extract(&metadata).unwrap().unwrap().id, ctx.id);
        assert_eq!(metadata.get(headers::TEST_SIGNATURE), None);
        assert_eq!(metadata.get("other"), Some("kept"));
        assert_eq!(metadata.len(), 5);
    }

    #[test]
    fn a_route_rides_along_and_a_stale_one_goes() {
        let mut metadata = MetadataStore::new();
        let routed = context().route("user-7");
        inject_context(&mut metadata, &routed);
        assert_eq!(metadata.get(headers::TEST_ROUTE), Some("user-7"));
        let back = extract(&metadata).unwrap().unwrap();
        assert_eq!((back.id, back.route), (routed.id, routed.route));
        // A context without a route replaces the routed one, route included.
        let plain = context();
        inject_context(&mut metadata, &plain);
        assert_eq!(metadata.get(headers::TEST_ROUTE), None);
        assert_eq!(extract(&metadata).unwrap().unwrap().route, None);
    }

    #[test]
    fn a_name_twice_in_different_cases_rejects_the_context() {
        let mut metadata = MetadataStore::new();
        inject_context(&mut metadata, &context());
        metadata.replace("LIVECHECK-TEST-ID", "another");
        assert_eq!(
            extract(&metadata),
            Err(ContextError::DuplicateHeader {
                header: headers::TEST_ID,
                count: 2
            })
        );
    }

    #[test]
    fn the_metadata_type_round_trips() {
        let ctx = Arc::new(context());
        let mut store = MetadataStore::new();
        JobTestContext(Some(ctx.clone()))
            .inject(&mut store)
            .unwrap();
        let back = store.extract_as::<JobTestContext>().unwrap();
        assert_eq!(back.0.as_deref().map(|c| &c.id), Some(&ctx.id));
        assert_eq!(
            MetadataStore::new().extract_as::<JobTestContext>(),
            Ok(JobTestContext(None))
        );
    }
}
