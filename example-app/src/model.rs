//! Orders and the values the signals carry.

use serde::{Deserialize, Serialize};

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    /// The other side.
    pub fn flipped(self) -> Self {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// `buy` or `sell`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

impl std::str::FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "buy" => Ok(Side::Buy),
            "sell" => Ok(Side::Sell),
            other => Err(format!("side must be `buy` or `sell`, not {other:?}")),
        }
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Order id (the test id when the order is a test).
    pub id: String,
    /// The user who placed it.
    pub user_id: String,
    /// Buy or sell.
    pub side: Side,
    /// A synthetic order: it goes through every step but is never executed.
    #[serde(default)]
    pub fake: bool,
    /// How many shares (at least 1; records without it mean 1).
    #[serde(default = "one")]
    pub quantity: u64,
}

fn one() -> u64 {
    1
}

/// The arguments of a test of case `orders.sell_limit`: who sells how much. Tests are
/// routed by the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellOrder {
    /// The user selling.
    pub user: String,
    /// How many shares.
    pub quantity: u64,
}

/// Value of `sell_accepted` and `sell_refused`: a sell order held against the user's sell
/// limit, as the app saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellDecision {
    /// The user selling.
    pub user_id: String,
    /// How many shares the order sells.
    pub quantity: u64,
    /// The user's total sold quantity after the decision (the order's included when it was
    /// accepted).
    pub sold: u64,
    /// The limit the app applies.
    pub limit: u64,
}

/// Value of `order_sent_to_kafka`: where the order went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Order id.
    pub order_id: String,
    /// Topic written.
    pub topic: String,
    /// Partition written.
    pub partition: i32,
    /// Offset written.
    pub offset: i64,
}

/// Value of `order_cached`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// Order id.
    pub order_id: String,
    /// The user whose index holds it.
    pub user_id: String,
    /// Orders in the user's index after this one.
    pub user_orders: usize,
}

/// Value of `order_executed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// Order id.
    pub order_id: String,
    /// Execution id (`None` for a fake order, which is not executed).
    pub execution_id: Option<String>,
}

/// A JSON error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}
