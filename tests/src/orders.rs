//! The order case: an order placed over HTTP is stored with the side it was placed with,
//! forwarded to Kafka, cached for its user and executed (or, when fake, passed through).
//!
//! The stimulus chooses the side (sell, buy, sell, ... per case value) and makes it the
//! test's argument, so the case checks the side the order was placed with, not the side the
//! service says it read: a front that misreads the side fails even though it reports its
//! own reading consistently. Real orders sampled in production carry the side the service
//! read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use example_app::model::{Cached, Delivered, Execution};
use example_app::signals::{
    ORDER_CACHED, ORDER_CASE, ORDER_EXECUTED, ORDER_SENT_TO_DB, ORDER_SENT_TO_KAFKA,
};
use example_app::{Order, Side};
use livecheck_core::{ensure, ensure_eq, Case, Run, Target};

/// `orders.place_order`. Its stimulus places fake orders alternately on each side, sell
/// first.
pub fn place_order() -> Case {
    let placed = AtomicUsize::new(0);
    Case::new(ORDER_CASE)
        .probability(0.5)
        .timeout(Duration::from_secs(10))
        .test_expires(Duration::from_secs(600))
        .warn_stalled_after(Duration::from_secs(60))
        .frequency(Duration::from_secs(10))
        .max_consecutive_failures(3)
        // The last step, executed twice by a consumer that handles its record again, is
        // seen if the repeat comes within this long of the first.
        .settle(Duration::from_millis(300))
        .stimulus_with(
            move || {
                if placed.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    Side::Sell
                } else {
                    Side::Buy
                }
            },
            |app: Target, side: Side| async move {
                app.get(&format!("/order/init/{}/?fake=1", side.as_str()))
                    .await
                    .map(drop)
            },
        )
        .expect(|run: Run, side: Side| async move {
            let order: Order = run.wait(&ORDER_SENT_TO_DB).await?;
            ensure_eq!(
                order.side,
                side,
                "the side of the stored order is not the test's argument"
            );
            ensure_eq!(
                order.id,
                run.test_id(),
                "the stored order is not the test's order"
            );

            let delivered: Delivered = run.wait(&ORDER_SENT_TO_KAFKA).await?;
            ensure_eq!(
                delivered.order_id,
                order.id,
                "another order was forwarded to execution"
            );

            let cached: Cached = run.wait(&ORDER_CACHED).await?;
            ensure_eq!(
                cached.user_id,
                order.user_id,
                "the order was cached for another user"
            );
            ensure!(
                cached.user_orders >= 1,
                "the user's index is empty after caching"
            );

            let executed: Execution = run.wait(&ORDER_EXECUTED).await?;
            ensure_eq!(executed.order_id, order.id, "another order was executed");
            if order.fake {
                ensure!(
                    executed.execution_id.is_none(),
                    "a fake order was executed ({:?})",
                    executed.execution_id
                );
            } else {
                ensure!(
                    executed.execution_id.is_some(),
                    "a real order was not executed"
                );
            }
            Ok(())
        })
}
