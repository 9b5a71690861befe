//! The order cases.
//!
//! `orders.place_order`: an order placed over HTTP is stored with the side it was placed
//! with, forwarded to Kafka, cached for its user and executed (or, when fake, passed
//! through).
//!
//! The stimulus chooses the side (sell, buy, sell, ... per case value) and makes it the
//! test's argument, so the case checks the side the order was placed with, not the side the
//! service says it read: a front that misreads the side fails even though it reports its
//! own reading consistently. Real orders sampled in production carry the side the service
//! read.
//!
//! `orders.sell_limit`: a business rule kept in a table. The case remembers, per user, the
//! quantity of the sell orders the app accepted ([`SOLD`]), and holds every decision of the
//! app against it: an accepted sell must leave the user within the limit (an invariant),
//! and a refused one must have gone past it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use example_app::model::{Cached, Delivered, Execution};
use example_app::signals::{
    ORDER_CACHED, ORDER_CASE, ORDER_EXECUTED, ORDER_SENT_TO_DB, ORDER_SENT_TO_KAFKA, SELL_ACCEPTED,
    SELL_LIMIT_CASE, SELL_REFUSED,
};
use example_app::{Order, SellOrder, Side, DEFAULT_SELL_LIMIT};
use livecheck_core::{
    ensure, ensure_eq, ensure_invariant, Case, Run, StimulusError, Table, Target,
};

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

/// The sell limit `orders.sell_limit` holds the app to: the app's default (`--sell-limit`).
pub const SELL_LIMIT: u64 = DEFAULT_SELL_LIMIT;

/// The quantity of each sell the case's stimulus places: a user's third sell goes past
/// the limit (40 + 40 + 40 > 100).
pub const STIMULUS_QUANTITY: u64 = 40;

/// Sells the stimulus places per user before it takes a fresh one: two within the limit,
/// then one past it.
pub const SELLS_PER_USER: usize = 3;

/// The quantity each user has sold, by the sell orders the app accepted: partitioned like
/// the tests, which are routed by user.
pub static SOLD: Table<String, u64> = Table::new("sold_per_user");

/// The stimulus's users: a fresh one every [`SELLS_PER_USER`] sells.
#[derive(Debug, Default)]
struct Sellers {
    placed: usize,
    user: String,
}

impl Sellers {
    fn next(&mut self) -> SellOrder {
        if self.placed % SELLS_PER_USER == 0 {
            self.user = format!("seller-{}", uuid::Uuid::new_v4().simple());
        }
        self.placed += 1;
        SellOrder {
            user: self.user.clone(),
            quantity: STIMULUS_QUANTITY,
        }
    }
}

/// `orders.sell_limit`: a sell order the app accepted leaves its user within [`SELL_LIMIT`]
/// (`invariant broken: sold quantity per user <= sell limit, for key "USER" (limit=100,
/// sold=120)` otherwise), and one it refused would have gone past it (`FAIL`: "refused
/// although within the limit"). Tests are routed by user, so every test of a user runs
/// where the user's entry of [`SOLD`] is.
///
/// Its stimulus sells [`STIMULUS_QUANTITY`] for a fresh user (`seller-<uuid>`) three times
/// in a row, then takes another: accepted (40), accepted (80), refused (120 > 100). What
/// keeps the verdicts deterministic:
/// - the users are fresh, so no run shares an entry of the table, or a total in the app,
///   with another process, another environment or an earlier run (the container
///   environment's app and topics are shared by the processes of a CI run);
/// - the harness runs a case's stimuli one after the other, each after the previous
///   verdict, so the table has applied a user's earlier sells when the next one is judged;
///   and the app sends each decision's step before it decides the next sell, so in live
///   mode too a user's steps reach the (one) runner of the user's partition in the order
///   the app decided (tests of one user that run at once in the runner could still apply
///   their writes out of order: traffic that sells for one user faster than a verdict
///   takes can give false verdicts);
/// - the quantity is fixed, so the third sell of a user is the one past the limit whatever
///   else runs: `LIVECHECK_ITERATIONS` runs give accepted, accepted, refused, accepted, ...
///   and all pass on a correct app.
pub fn sell_limit() -> Case {
    let sellers = Mutex::new(Sellers::default());
    Case::new(SELL_LIMIT_CASE)
        .probability(0.5)
        .timeout(Duration::from_secs(10))
        .test_expires(Duration::from_secs(600))
        .warn_stalled_after(Duration::from_secs(60))
        .frequency(Duration::from_secs(10))
        .max_consecutive_failures(3)
        .route_by(|order: &SellOrder| order.user.clone())
        .table(&SOLD)
        .stimulus_with(
            move || sellers.lock().unwrap_or_else(|p| p.into_inner()).next(),
            |app: Target, order: SellOrder| async move {
                let path = format!(
                    "/order/init/sell/?fake=1&user={}&quantity={}",
                    order.user, order.quantity
                );
                match app.get(&path).await {
                    Ok(_) => Ok(()),
                    // Refused: one of the two outcomes the case judges.
                    Err(StimulusError::Status { status, .. }) if status.as_u16() == 409 => Ok(()),
                    Err(err) => Err(err),
                }
            },
        )
        .expect(|run: Run, order: SellOrder| async move {
            let step = run.wait_first(&[&SELL_ACCEPTED, &SELL_REFUSED]).await?;
            let sold = run.table(&SOLD);
            if let Some(accepted) = step.get(&SELL_ACCEPTED)? {
                ensure_eq!(
                    accepted.user_id,
                    order.user,
                    "the sell was accepted for another user"
                );
                let total = sold.update(order.user.clone(), |sold| {
                    sold.unwrap_or(0) + order.quantity
                })?;
                ensure_invariant!(
                    total <= SELL_LIMIT,
                    "sold quantity per user <= sell limit",
                    key = order.user,
                    sold = total,
                    limit = SELL_LIMIT
                );
            } else if let Some(refused) = step.get(&SELL_REFUSED)? {
                ensure_eq!(
                    refused.user_id,
                    order.user,
                    "the sell was refused for another user"
                );
                let current = sold.get(&order.user)?.unwrap_or(0);
                ensure!(
                    current + order.quantity > SELL_LIMIT,
                    "refused although within the limit: sold {current} + {} <= {SELL_LIMIT}",
                    order.quantity
                );
            }
            Ok(())
        })
}
