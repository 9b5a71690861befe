//! The "database", the per-user cache and the quantity each user has sold.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use crate::model::{Order, SellDecision};

/// Where orders are stored.
pub trait OrderStore: Send + Sync + 'static {
    /// Stores an order (replacing one with the same id).
    fn insert(&self, order: Order);
    /// The order with `id`.
    fn get(&self, id: &str) -> Option<Order>;
    /// Number of orders stored.
    fn len(&self) -> usize;
    /// Whether no order is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An in-process store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    orders: Mutex<HashMap<String, Order>>,
}

impl OrderStore for MemoryStore {
    fn insert(&self, order: Order) {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order.id.clone(), order);
    }

    fn get(&self, id: &str) -> Option<Order> {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn len(&self) -> usize {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Order ids per user.
#[derive(Debug, Default)]
pub struct UserCache {
    by_user: Mutex<HashMap<String, Vec<String>>>,
}

impl UserCache {
    /// Indexes an order; returns how many orders the user has now.
    pub fn index(&self, user_id: &str, order_id: &str) -> usize {
        let mut map = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        let orders = map.entry(user_id.to_owned()).or_default();
        if !orders.iter().any(|o| o == order_id) {
            orders.push(order_id.to_owned());
        }
        orders.len()
    }
}

/// Orders executed, remembered (the last [`Executed::CAPACITY`]) so that an order record
/// handled again (at-least-once redelivery, or the same order forwarded twice) is not
/// executed twice.
#[derive(Debug, Default)]
pub struct Executed {
    ids: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Executed {
    /// Order ids remembered.
    pub const CAPACITY: usize = 100_000;

    /// Records `order_id` as executed; false if it was already.
    pub fn first_time(&self, order_id: &str) -> bool {
        let mut guard = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if !set.insert(order_id.to_owned()) {
            return false;
        }
        order.push_back(order_id.to_owned());
        if order.len() > Self::CAPACITY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// The quantity each user has sold (every accepted sell order, fake ones included), held
/// against the sell limit. In memory: a restart forgets it.
#[derive(Debug, Default)]
pub struct SoldTotals {
    by_user: tokio::sync::Mutex<HashMap<String, u64>>,
}

impl SoldTotals {
    /// Decides a sell of `quantity` by `user`: accepted (and added to the user's total)
    /// when the total stays within `limit`, or whatever the total when `enforce` is false;
    /// refused otherwise. `announce` runs with the decision before the next sell is
    /// decided, so whatever it sends (the case's signals) leaves in the order of the
    /// decisions.
    pub async fn sell<Fut: Future<Output = ()>>(
        &self,
        user: &str,
        quantity: u64,
        limit: u64,
        enforce: bool,
        announce: impl FnOnce(&Result<SellDecision, SellDecision>) -> Fut,
    ) -> Result<SellDecision, SellDecision> {
        let mut by_user = self.by_user.lock().await;
        let sold = by_user.get(user).copied().unwrap_or(0);
        let after = sold.saturating_add(quantity);
        let decision = |sold| SellDecision {
            user_id: user.to_owned(),
            quantity,
            sold,
            limit,
        };
        let decision = if enforce && after > limit {
            Err(decision(sold))
        } else {
            by_user.insert(user.to_owned(), after);
            Ok(decision(after))
        };
        announce(&decision).await;
        decision
    }

    /// The quantity `user` has sold.
    pub async fn sold(&self, user: &str) -> u64 {
        self.by_user.lock().await.get(user).copied().unwrap_or(0)
    }
}
