//! The signals of the order case, declared next to the code that sends them.

use livecheck_core::Signal;

use crate::model::{Cached, Delivered, Execution, Order};

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
