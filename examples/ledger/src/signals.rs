//! The case's name, its steps and their values: shared by the services and the checks.

use livecheck_core::Signal;
use serde::{Deserialize, Serialize};

/// The case: one transfer from the gateway to the books.
pub const TRANSFER: &str = "ledger.transfer";

/// A transfer as the gateway accepted it (also the test's arguments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// Cents.
    pub amount: i64,
}

/// A transfer as the booker booked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booked {
    /// The amount booked.
    pub amount: i64,
    /// The debited account's balance after the transfer.
    pub from_balance: i64,
    /// The credited account's balance after the transfer.
    pub to_balance: i64,
}

/// The gateway accepted the transfer and put it on the `transfers` topic.
pub static ACCEPTED: Signal<Transfer> = Signal::new(TRANSFER, "accepted");
/// The booker debited and credited the accounts in the store.
pub static BOOKED: Signal<Booked> = Signal::new(TRANSFER, "booked");
