//! # A ledger, checked end to end: the LiveCheck guide
//!
//! A small system of its own, not the stock-ordering example: a **gateway** accepts a
//! transfer over HTTP and puts it on a Kafka topic, a **booker** reads it and books it in
//! a **store** (a sidecar, as a database would be). This crate is the guide: each step
//! below is code of this crate, and every example on this page compiles (`cargo test
//! --doc -p ledger`).
//!
//! ## 1. Instrument the services
//!
//! A case's steps are typed signals, declared once where the services and the checks can
//! both see them ([`signals`]):
//!
//! ```
//! use livecheck_core::Signal;
//! use ledger::signals::{Transfer, TRANSFER};
//!
//! static ACCEPTED: Signal<Transfer> = Signal::new(TRANSFER, "accepted");
//! ```
//!
//! **HTTP.** The gateway's router carries the test context of incoming requests
//! ([`livecheck_core::http::TestContextLayer`]), starts a test when a request is sampled
//! (`Trigger::maybe_trigger`, which keeps a context that came with the request) and sends
//! a signal in the test's scope ([`gateway`]):
//!
//! ```no_run
//! # async fn f(client: livecheck_core::LiveCheck, transfer: ledger::signals::Transfer) {
//! use livecheck_core::Trigger;
//! use ledger::signals::{ACCEPTED, TRANSFER};
//!
//! let trigger = Trigger::new(TRANSFER).probability(0.01);
//! let accept = async { ACCEPTED.send(&transfer).await };   // a no-op outside a test
//! match trigger.maybe_trigger(&client, &transfer) {
//!     Some(context) => client.scope(context, accept).await,
//!     None => accept.await,
//! }
//! # }
//! ```
//!
//! **Kafka.** Records produced through [`LiveCheck::producer`](livecheck_core::LiveCheck::producer)
//! carry the context in their headers; the booker runs its handling of each record in the
//! record's scope with [`LiveCheck::consume`](livecheck_core::LiveCheck::consume)
//! ([`booker`]):
//!
//! ```no_run
//! # async fn f(client: livecheck_core::LiveCheck, consumer: rdkafka::consumer::StreamConsumer)
//! # -> anyhow::Result<()> {
//! use ledger::signals::{Booked, BOOKED};
//!
//! let message = consumer.recv().await?;
//! client
//!     .consume("booker", &message, async {
//!         // ... book it, then:
//!         BOOKED.send(&Booked { amount: 5, from_balance: -5, to_balance: 5 }).await;
//!     })
//!     .await;
//! # Ok(()) }
//! ```
//!
//! ## 2. Write a case
//!
//! The case waits for each step and checks its value ([`checks::transfer`]); its stimulus
//! chooses the test's arguments and sends the request:
//!
//! ```
//! let case = ledger::checks::transfer();
//! assert_eq!(case.name(), "ledger.transfer");
//! assert!(case.has_stimulus());
//! ```
//!
//! ## 3. Run it under `cargo test`
//!
//! The check file `tests/ledger.rs` (`harness = false`) brings up the environment once —
//! the broker, the store as a sidecar, the gateway and the booker as two app services
//! (child processes of the `ledger` binary here; an image or an in-process start work the
//! same way) — and runs each case as a libtest trial, beside plain tests:
//!
//! ```no_run
//! use livecheck_harness::{EnvironmentConfig, Harness, Ready, Service};
//!
//! fn main() -> std::process::ExitCode {
//!     let ledger = "target/debug/ledger"; // env!("CARGO_BIN_EXE_ledger") in a check file
//!     let environment = EnvironmentConfig::from_env()   // LIVECHECK_ENV: embedded, container
//!         .expect("environment settings")
//!         .app_topics(["{prefix}transfers"])
//!         .sidecar(Service::new("store").process(ledger)
//!             .args(["store", "--port", "{port}"]).ready(Ready::http("/healthz")))
//!         .service(Service::new("gateway").process(ledger)
//!             .args(["gateway", "--port", "{port}"]).ready(Ready::http("/healthz")))
//!         .service(Service::new("booker").process(ledger)
//!             .args(["booker", "--store", "http://127.0.0.1:{port:store}"])
//!             .ready(Ready::line(ledger::booker::READY_LINE)));
//!     Harness::from_env("ledger")
//!         .environment(environment)
//!         .cases(ledger::cases())
//!         .run()
//! }
//! ```
//!
//! `cargo test -p ledger --test ledger` runs it on the embedded broker;
//! `LIVECHECK_ENV=container` on a broker container (the harness's `containers` feature).
//!
//! ## 4. Run it in production with your own binary
//!
//! `src/bin/ledger-livecheck.rs` is the whole `livecheck` command for these cases —
//! profiles, flags, status page, API, alerts, documented exit codes:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     livecheck_harness::live::main(ledger::cases())
//! }
//! ```
//!
//! `ledger-livecheck --brokers kafka:9092 --topic-prefix prod-` watches the sampled live
//! transfers. This crate depends on the harness without its `containers` feature (the
//! dev-dependency enables it for the check file), so the production binary links no
//! container machinery.
//!
//! ## Known limitations
//! - The store keeps balances in memory; it is a stand-in for a database.
//! - The check file starts the services as child processes in both environments, so the
//!   container environment runs only the broker in a container here.

pub mod booker;
pub mod checks;
pub mod gateway;
pub mod settings;
pub mod signals;
pub mod store;

pub use checks::cases;
