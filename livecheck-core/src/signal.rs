//! Signals: typed, named steps of a case, sent by production code.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{trace, warn};

use crate::context::with_current;
use crate::counters::bump;

/// The record a signal publishes to the signals topic, keyed by test id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalEvent {
    /// Signal name (`order_sent_to_db`).
    pub signal: String,
    /// Case the signal belongs to.
    pub case: String,
    /// Test the signal belongs to (also the record key).
    pub test_id: String,
    /// When the service sent it.
    pub sent_at: DateTime<Utc>,
    /// The value, as JSON.
    pub value: Box<RawValue>,
}

#[derive(Serialize)]
struct SignalEventRef<'a, T> {
    signal: &'a str,
    case: &'a str,
    test_id: &'a str,
    sent_at: DateTime<Utc>,
    value: &'a T,
}

/// A named step of a case, typed by the value it carries.
///
/// Declare it once, next to the code that sends it:
///
/// ```
/// use livecheck_core::Signal;
/// pub static ORDER_SAVED: Signal<String> = Signal::new("orders.place_order", "order_saved");
/// ```
///
/// [`Signal::send`] outside a test does nothing and allocates nothing.
#[derive(Debug)]
pub struct Signal<T> {
    case: &'static str,
    name: &'static str,
    _value: PhantomData<fn(&T)>,
}

impl<T> Signal<T> {
    /// A signal `name` of case `case`.
    pub const fn new(case: &'static str, name: &'static str) -> Self {
        Self {
            case,
            name,
            _value: PhantomData,
        }
    }

    /// The signal's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The case the signal belongs to.
    pub const fn case(&self) -> &'static str {
        self.case
    }
}

impl<T: Serialize> Signal<T> {
    /// Publishes `value` for the current test; a no-op when the task has no test context
    /// (or its test runs another case). Never fails the caller: problems are counted and
    /// logged on the client.
    #[inline]
    pub async fn send(&self, value: &T) {
        self.send_now(value);
    }

    /// As [`Signal::send`], for synchronous code.
    #[inline]
    pub fn send_now(&self, value: &T) {
        // Fast path: one thread-local read; nothing allocated when not in a test.
        let _ = with_current(|current| self.publish(current, value));
    }

    #[cold]
    fn publish(&self, current: &crate::context::Current, value: &T) {
        let context = &current.context;
        if context.case != self.case {
            trace!(signal = self.name, case = self.case, test_case = %context.case, "signal of another case; not sent");
            return;
        }
        let client = &current.client;
        let event = SignalEventRef {
            signal: self.name,
            case: self.case,
            test_id: &context.id,
            sent_at: Utc::now(),
            value,
        };
        match client.publish_json(&client.topics().signals, &context.id, &event) {
            Ok(()) => bump(&client.counters().signals_sent),
            Err(err) => {
                bump(&client.counters().signal_errors);
                warn!(signal = self.name, test_id = %context.id, "signal {err}");
            }
        }
    }
}
