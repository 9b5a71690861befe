//! # LiveCheck core
//!
//! End-to-end checks for asynchronous, Kafka-connected systems, written like unit tests.
//!
//! A service carries a [`TestContext`] along each request (HTTP headers via
//! [`http::TestContextLayer`] and [`http::RequestBuilderExt`], Kafka record headers via
//! [`kafka`]) and sends a typed [`Signal`] at each step. A [`Case`] waits for each signal
//! and asserts on its value; the [`Runner`] consumes the tests and signals topics, runs the
//! case per test and publishes one [`Report`] per test.
//!
//! ```no_run
//! use std::time::Duration;
//! use livecheck_core::{ensure_eq, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Run, Runner,
//!     RunnerConfig, Signal, Suite, Topics, Trigger};
//!
//! static SAVED: Signal<String> = Signal::new("orders.place_order", "order_saved");
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let topics = Topics::default();
//! let broker = EmbeddedBroker::with_topics(&topics, &[], 4)?;
//! let client = LiveCheck::new(KafkaConfig::new(broker.bootstrap_servers()), topics)?;
//!
//! let case = Case::new("orders.place_order").timeout(Duration::from_secs(5)).expect(
//!     |run: Run, side: String| async move {
//!         let saved = run.wait(&SAVED).await?;
//!         ensure_eq!(saved, side, "the side was changed");
//!         Ok(())
//!     },
//! );
//! let runner = Runner::new(Suite::new([case])?, client.clone(), RunnerConfig::default());
//! tokio::spawn({ let r = runner.clone(); async move { r.run(std::future::pending()).await } });
//!
//! // In the service:
//! let trigger = Trigger::new("orders.place_order");
//! if let Some(context) = trigger.maybe_trigger(&client, &"sell") {
//!     let report = runner.report_for(&context.id);
//!     client.scope(context, SAVED.send(&"sell".to_owned())).await;
//!     println!("{}", report.await?.render());
//! }
//! # Ok(()) }
//! ```
//!
//! ## Arguments
//!
//! A test's arguments are what the case checks against, e.g. the side of the order. A
//! stimulus can choose them ([`Case::stimulus_with`]): the harness puts them on the test
//! context before it sends the request, the context carries them from hop to hop (header
//! `LiveCheck-Test-Arguments`), and the service's [`Trigger::maybe_trigger`] keeps them over
//! its own view, so a service that changes the side on the way fails the check. Without them
//! (real traffic, or [`Case::stimulus`]) the service's trigger gives the arguments.
//!
//! ## Routes: tests partitioned by a business key
//!
//! The tests, signals and reports topics are co-partitioned: every record of one test has
//! the same key, so it lands on the same partition of the three (Kafka's murmur2, as the Java
//! client partitions) and one runner instance runs the test. The key is the test id, or the
//! test's *route* when it has one ([`TestContext::route`], [`TestContext::partition_key`]): a
//! business key (user, account) that every test of that key shares, so that one runner
//! instance runs every test of one key — what a table keyed by that business key needs.
//! [`Trigger::maybe_trigger_for_key`] routes the tests it starts by their key; a case's
//! [`Case::route_by`] rule derives the route of the synthetic tests a harness starts from
//! their arguments. The route travels in the `LiveCheck-Test-Route` header (and the
//! `livecheck.route` baggage member) and is kept on the report ([`Report::route`]). All
//! tests of a hot key go to one partition: routing concentrates load as much as the keys do.
//!
//! ## Signed contexts
//!
//! A client built with [`LiveCheck::with_signing`] (keys from [`signing::SigningKeys::parse`]
//! or [`signing::SigningKeys::from_env`], `LIVECHECK_SIGNING_KEYS=kid2:secret2,kid1:secret1`)
//! signs the contexts its triggers create (HMAC-SHA256, header `LiveCheck-Test-Signature`),
//! and its HTTP layer and Kafka helpers drop incoming contexts that are unsigned, forged,
//! tampered or expired: counted by reason in [`counters::ClientCounters`], logged once at
//! warn, and the request goes on as an ordinary request. A runner checks a `TestExecution`
//! record with [`LiveCheck::verify_context`].
//!
//! ## W3C Trace Context and Baggage
//!
//! The helpers also carry the test context as `livecheck.*` members of the W3C `baggage`
//! header, read and written with OpenTelemetry's propagators, so a service that propagates
//! only OpenTelemetry context carries a test through hops the LiveCheck helpers never
//! touched. When the LiveCheck headers carry a context, they win: the baggage is
//! not read at all. A context from the baggage passes the same checks
//! and signature verification as one from the headers. The `traceparent` a test came with
//! travels with it ([`TestContext::traceparent`]) and its trace id is in the
//! [`Report::trace_id`]; with the feature `otel`, the runner exports one span per step into
//! that trace. See [`baggage`].
//!
//! ## Central control
//!
//! A trigger's probability, active flag, sampling and expiry are local defaults. A client
//! that follows the control topic ([`LiveCheck::follow_control`], one call at start with
//! the service's name) applies what the `livecheck` service publishes there for each case
//! instead, within a second or so of a change, in every `maybe_trigger*` call
//! ([`Trigger::effective`] says what applies and where it comes from). While the topic
//! cannot be read its triggers use their local settings, say so (a warning per episode, the
//! gauge `control_following` in [`counters::ClientCounters`]) and go back to the topic when
//! it can be read again; see [`control`] for the rule. The client also publishes a
//! heartbeat per case every 5 s: what it applies, requests decided and tests triggered.
//!
//! ```no_run
//! # fn demo(client: livecheck_core::LiveCheck) -> Result<(), livecheck_core::Error> {
//! use livecheck_core::{SettingsSource, Trigger};
//!
//! client.follow_control("orders-service")?;
//! let trigger = Trigger::new("orders.place_order").probability(0.01); // the local default
//! trigger.announce(&client); // heartbeats for the case from now on
//! let applied = trigger.effective(&client);
//! if let SettingsSource::Local { reason } = &applied.source {
//!     println!("sampling {} locally: {reason}", applied.probability);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Tables, windows and invariants
//!
//! Every case is a stream processor and can keep state: a [`Table`] (typed, serde) that its
//! expectations read and update ([`Run::table`]), a [`Window`] of per-key counts and sums by
//! event time ([`Run::window`]) for anomaly rules, and [`ensure_invariant!`] to report a
//! broken business rule as such (a `FAIL` of kind "invariant", with the key and the values:
//! [`Report::invariant`]). A table lives in a compacted changelog topic
//! ([`Topics::table`]); a runner restores a partition's entries before it runs the
//! partition's tests, and a test run again after a restart or a rebalance does not apply its
//! writes twice. State per business key needs the tests routed by that key, so that one
//! runner sees every test of a key ([`Case::route_by`], [`Trigger::maybe_trigger_for_key`]);
//! small reference data every test reads goes in a global table ([`Table::global`]). See
//! [`table`] for which to use when, the changelog format and the limits.
//!
//! ## Background jobs
//!
//! With the feature `jobs-apalis`, the module `jobs` carries the test context into
//! [apalis](https://docs.rs/apalis) background jobs: `jobs::task` (or
//! `jobs::TaskBuilderExt::test_context` on a builder of your own) stores the current
//! context in the job's metadata at enqueue, and `jobs::TestContextLayer` on the worker
//! runs each job in the scope of the context stored with it, checked as an incoming request's
//! is. Any apalis storage keeps the metadata, so no broker or server is needed for the
//! in-memory one in tests.
//!
//! ## Known limitations
//! - In-flight runs live in memory: after a restart or a rebalance they are run again from
//!   their records (every signal the log holds for them; decided tests are not run again),
//!   so a check with side effects (an HTTP call in its expectations) may repeat them.
//! - Event time comes from the producers' clocks (record timestamps): skew between two
//!   services' clocks shifts which of their steps count as late by as much.
//!   [`RunnerConfig::clock_slack`] only delays declaring a step missing.
//! - Without [`signing::SigningKeys`] (the demo's setting), every well-formed test context
//!   that comes in is trusted: anyone who can reach a service can send a request down its
//!   test path, bypass sampling and choose the test id. Configure keys
//!   ([`LiveCheck::with_signing`], `LIVECHECK_SIGNING_KEYS`) wherever outsiders can reach.
//! - A signature covers the test id, case and times, and the arguments when the context was
//!   signed with them (a stimulus's, [`Case::stimulus_with`], or a service trigger's on a
//!   test it starts). A context signed without arguments (a [`Case::stimulus`] that gives
//!   none) does not cover the arguments a service's trigger then sets: those go only into
//!   the `TestExecution` record, unsigned. It does not cover the hop either: a signed
//!   context can be replayed until it expires.
//! - Arguments travel in a header of at most [`headers::MAX_ARGUMENTS_LEN`] bytes of JSON;
//!   larger ones reach the runner (in the `TestExecution` record) but not the next hops.
//! - Tests and signals topics must have the same partition count.
//! - A route ([`TestContext::route`]) is not covered by the signature: whoever can change it
//!   on the way moves the test to another partition, and so to another runner instance. It
//!   cannot corrupt a table that way: the runner checks a table key against the test's
//!   partition. Every test of one route lands on one partition, so a hot key concentrates
//!   its load on one runner instance. A hop that drops the route (a service that copies
//!   only the Faust headers, without the baggage) keys the test's later records by its id:
//!   they land on another partition and the run does not see them.
//! - A client that cannot read the control topic for [`ControlOptions::stale_after`] (10 s)
//!   goes back to its local settings, although its last-known ones may still be current;
//!   and during those seconds it applies settings that may have changed meanwhile. Only
//!   partition 0 of the control topic is read (a warning says so if there are more).
//! - Two triggers of one case in one process with different local settings: heartbeats
//!   report the last one announced (or the first that decided a request).
//! - A `livecheck.*` member repeated in one `baggage` header is kept once by OpenTelemetry's
//!   propagator, not rejected as a repeated LiveCheck header is; with signing keys the
//!   signature still has to match what is kept. The trace parent is not signed.
//! - The baggage goes wherever OpenTelemetry propagates it, third-party services included:
//!   the test id, case and signature with it (a signed context can be replayed until it
//!   expires, as from the headers).
//! - The reqwest extension merges into the request's `baggage` header only when the request
//!   can be cloned (not with a streaming body): then it replaces the header.
//! - A job's context is checked when the job starts, not when it was enqueued: with signing
//!   keys, a job that waits in its queue past the test's expiry runs as an ordinary job
//!   (counted in `contexts_rejected_expired`).

pub mod baggage;
mod case;
mod check;
mod client;
mod clock;
pub mod connectivity;
mod context;
pub mod control;
pub mod counters;
mod embedded;
mod error;
mod flow;
mod follower;
mod group;
pub mod headers;
pub mod hop;
pub mod http;
#[cfg(feature = "jobs-apalis")]
pub mod jobs;
mod json_time;
pub mod kafka;
mod lane_runs;
mod ledger;
// Kafka's murmur2, public for the tests that pin partitions; not part of the API.
#[doc(hidden)]
pub mod murmur2;
#[cfg(feature = "otel")]
pub mod otel;
pub mod polled;
mod reading;
pub mod redact;
mod registry;
mod report;
mod run;
mod runner;
mod scan;
mod signal;
pub mod signing;
mod sink;
mod stimulus;
mod switches;
pub mod table;
mod trigger;

pub use case::{BoxFuture, Case, Settings};
pub use check::CheckError;
pub use client::{KafkaConfig, LiveCheck, Topics};
pub use connectivity::Connectivity;
pub use context::{current_test, in_test, propagate, spawn, TestContext};
pub use control::{ControlOptions, ControlStatus, EffectiveSettings, SettingsSource};
pub use embedded::EmbeddedBroker;
pub use error::Error;
pub use headers::ContextError;
pub use hop::{Hop, HopKind};
pub use registry::Limits;
pub use report::{Invariant, Report, Step, Truncation, Verdict};
pub use run::{AnySignal, Occurrence, Run};
pub use runner::{Runner, RunnerConfig, Suite, DEFAULT_FETCH_WAIT, MAX_LANES, RECONNECT_BACKOFF};
pub use signal::{Signal, SignalEvent};
pub use stimulus::{PreparedStimulus, StimulusError, Target};
pub use table::{Table, TableSpec, Window, WindowTotals};
pub use trigger::{Sampling, Trigger, TriggerSettings};
