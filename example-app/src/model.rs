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
