//! The signals of the example app's cases, declared next to the code that sends them.

use livecheck_core::Signal;

use crate::model::{Cached, Delivered, Execution, Order, SellDecision};

/// Name of the order case.
pub const ORDER_CASE: &str = "orders.place_order";

/// The order was stored.
pub static ORDER_SENT_TO_DB: Signal<Order> = Signal::new(ORDER_CASE, "order_sent_to_db");
/// The order was acknowledged by Kafka on its way to execution.
pub static ORDER_SENT_TO_KAFKA: Signal<Delivered> = Signal::new(ORDER_CASE, "order_sent_to_kafka");
/// The order was indexed in the per-user cache.
pub static ORDER_CACHED: Signal<Cached> = Signal::new(ORDER_CASE, "order_cached");
/// The order was executed (or, when fake, passed through the executor).
pub static ORDER_EXECUTED: Signal<Execution> = Signal::new(ORDER_CASE, "order_executed");

/// Name of the sell-limit case: a sell order that would take the user's total sold
/// quantity above the sell limit is refused, any other is accepted.
pub const SELL_LIMIT_CASE: &str = "orders.sell_limit";

/// The sell order was within the user's limit and was accepted.
pub static SELL_ACCEPTED: Signal<SellDecision> = Signal::new(SELL_LIMIT_CASE, "sell_accepted");
/// The sell order would have taken the user above the limit and was refused.
pub static SELL_REFUSED: Signal<SellDecision> = Signal::new(SELL_LIMIT_CASE, "sell_refused");
