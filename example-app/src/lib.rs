//! # The example app: the stock-ordering system of the LiveCheck tutorial
//!
//! `GET /order/init/{side}/` creates an order for a user (`?user=NAME`; a fresh user per
//! order when absent) and makes it a test of case `orders.place_order` when the user is
//! sampled: orders are sampled by user (`Trigger::maybe_trigger_for_key`), so every order
//! of a sampled user is a test, and a share of the users given by the probability (0.5 by
//! default) is sampled. It POSTs the order to `/order/create/`
//! carrying the test context, which writes it to Kafka topic `orders`. The *create order*
//! consumer stores it (`order_sent_to_db`), forwards it to `order-execution`
//! (`order_sent_to_kafka` once acknowledged) and indexes it per user (`order_cached`); the
//! *execute order* consumer executes it unless it is fake (`order_executed`). With
//! `--execution job` ([`AppConfig::execution`], [`Execution::Job`]) that consumer hands each
//! order to a background job in the same process instead ([`jobs`]: apalis, in memory),
//! which executes it in the test's scope: the same check passes in both modes.
//!
//! `?quantity=N` (default 1) sets how many shares. A sell order that would take the user's
//! total sold quantity above the sell limit (`--sell-limit`, [`DEFAULT_SELL_LIMIT`] by
//! default) is refused with HTTP 409; the others are accepted and counted. Case
//! `orders.sell_limit` follows that decision: sell orders are its tests, sampled by user
//! (`--sell-limit-probability`, [`AppConfig::sell_limit_probability`]), and the front sends
//! `sell_accepted` or `sell_refused` with the user's total.
//!
//! Faults can be switched on (flags, environment, `POST /admin/faults`) so that checks can
//! be tested against a broken system; see [`faults::FaultConfig`]. `POST /admin/faults` and
//! `?fake=1` are test hooks, off unless `--test-hooks` (`EXAMPLE_APP_TEST_HOOKS=1`,
//! [`AppConfig::test_hooks`]) turns them on. `--signing-keys` (`LIVECHECK_SIGNING_KEYS`)
//! makes its LiveCheck client accept only signed test contexts.
//!
//! Its LiveCheck client follows the control topic as service `example-app`
//! ([`AppConfig::control`]; `--service-name`, `--instance`, `--no-control`): the
//! probability the `livecheck` service publishes for the case overrides `--probability`
//! while the topic can be read, and a heartbeat reports what the app applies.
//!
//! ## Known limitations
//! - The "database" is in-process memory, and so is the quantity each user has sold: a
//!   restart forgets both (a check that remembers what users sold then finds the app
//!   accepting orders above the limit).

pub mod app;
pub mod consumers;
pub mod faults;
pub mod http;
pub mod jobs;
pub mod model;
pub mod signals;
pub mod store;

pub use app::{AppConfig, AppTopics, Execution, RunningApp, DEFAULT_SELL_LIMIT};
pub use faults::FaultConfig;
pub use model::{Order, SellDecision, SellOrder, Side};
