//! Signals: typed, named steps of a case, sent by production code.

use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{trace, warn};

use crate::context::{with_current, Current};
use crate::counters::bump;

/// The record a signal publishes to the signals topic, keyed by the test's
/// [`crate::TestContext::partition_key`] (its route if it has one, else its id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalEvent {
    /// Signal name (`order_sent_to_db`).
    pub signal: String,
    /// Case the signal belongs to.
    pub case: String,
    /// Test the signal belongs to (also the record key, unless the test has a route).
    pub test_id: String,
    /// When the service sent it.
    pub sent_at: DateTime<Utc>,
    /// The value, as JSON.
    pub value: Box<RawValue>,
    /// Unique per send: the runner keeps one occurrence per send id, so a record the
    /// transport delivers twice counts once, and a step the service sends twice counts
    /// twice. Sent while handling a consumed record ([`crate::LiveCheck::scope_consumed`],
    /// [`crate::LiveCheck::scope_message`]), the id is derived from the record, so
    /// handling the same record again (at-least-once redelivery) sends the same ids;
    /// otherwise it is random. A record without one (an older or foreign sender) is a
    /// repeat of another only when its signal, item, send time and value are all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_id: Option<String>,
    /// For a step that happens once per item ([`Signal::send_item`]): the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
}

#[derive(Serialize)]
struct SignalEventRef<'a, T: ?Sized> {
    signal: &'a str,
    case: &'a str,
    test_id: &'a str,
    sent_at: DateTime<Utc>,
    value: &'a T,
    send_id: SendId,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<&'a str>,
}

/// The signals-topic record of `name` (and `item`) with `value` for the current test;
/// `send_id` when the caller derives it, else from the consumed record or random.
pub(crate) fn encode_event<T: Serialize + ?Sized>(
    current: &Current,
    name: &'static str,
    item: Option<&str>,
    value: &T,
    send_id: Option<u64>,
) -> Option<(Current, Vec<u8>)> {
    let context = &current.context;
    let event = SignalEventRef {
        signal: name,
        case: &context.case,
        test_id: &context.id,
        sent_at: Utc::now(),
        value,
        send_id: SendId(match (send_id, &current.delivery) {
            (Some(id), _) => id,
            (None, Some(delivery)) => delivery.next_send_id(name, item),
            (None, None) => rand::random(),
        }),
        item,
    };
    match serde_json::to_vec(&event) {
        Ok(payload) => Some((current.clone(), payload)),
        Err(err) => {
            bump(&current.client.counters().here().signal_errors);
            warn!(signal = name, test_id = %context.id, error = %err, "signal value does not serialize; not sent");
            None
        }
    }
}

/// A random 64-bit id, written as 16 hex digits.
struct SendId(u64);

impl Serialize for SendId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:016x}", self.0))
    }
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

    /// The name, as a one-name list (what a run watches), borrowed from the declaration.
    pub(crate) fn names(&self) -> &[&'static str] {
        std::slice::from_ref(&self.name)
    }

    /// The case the signal belongs to.
    pub const fn case(&self) -> &'static str {
        self.case
    }
}

/// How long [`Signal::send`] waits for room while the client's local queue is full.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

impl<T: Serialize> Signal<T> {
    /// Publishes `value` for the current test; a no-op when the task has no test context
    /// (or its test runs another case). Never fails the caller: problems are counted and
    /// logged on the client. When the client's local queue is full it waits for room
    /// asynchronously, up to a second, then drops the signal (counted in `signal_errors`;
    /// the run then ends in `TIMEOUT`) — the service's own work is never held up longer.
    #[inline]
    pub async fn send(&self, value: &T) {
        self.send_occurrence(None, value).await;
    }

    /// As [`Signal::send`], for a step that happens once per item (a line of an order, a
    /// leg of a transfer): the run waits for it with [`crate::Run::wait_item`], and each
    /// item's step must happen exactly once.
    #[inline]
    pub async fn send_item(&self, item: &str, value: &T) {
        self.send_occurrence(Some(item), value).await;
    }

    /// As [`Signal::send_item`], for synchronous code (see [`Signal::send_now`]).
    #[inline]
    pub fn send_item_now(&self, item: &str, value: &T) {
        self.send_occurrence_now(Some(item), value);
    }

    #[inline]
    async fn send_occurrence(&self, item: Option<&str>, value: &T) {
        // Fast path: one task-local read; nothing allocated when not in a test.
        let Some(Some((current, payload))) =
            with_current(|current| self.encode(current, item, value))
        else {
            return;
        };
        let client = &current.client;
        let result = client
            .publish_waiting(
                &client.topics().signals,
                current.context.partition_key(),
                &payload,
                QUEUE_WAIT,
            )
            .await;
        self.count(&current, result);
    }

    /// As [`Signal::send`], for synchronous code: never blocks; a full local queue drops
    /// the signal at once (counted).
    #[inline]
    pub fn send_now(&self, value: &T) {
        self.send_occurrence_now(None, value);
    }

    #[inline]
    fn send_occurrence_now(&self, item: Option<&str>, value: &T) {
        let _ = with_current(|current| {
            if let Some((current, payload)) = self.encode(current, item, value) {
                let client = &current.client;
                let result = client.publish(
                    &client.topics().signals,
                    current.context.partition_key(),
                    &payload,
                    None,
                );
                self.count(&current, result);
            }
        });
    }

    /// The record for the current test, if the signal belongs to its case.
    #[cold]
    fn encode(
        &self,
        current: &Current,
        item: Option<&str>,
        value: &T,
    ) -> Option<(Current, Vec<u8>)> {
        let context = &current.context;
        if context.case != self.case {
            trace!(signal = self.name, case = self.case, test_case = %context.case, "signal of another case; not sent");
            return None;
        }
        encode_event(current, self.name, item, value, None)
    }

    fn count(&self, current: &Current, result: Result<(), rdkafka::error::KafkaError>) {
        let counters = current.client.counters();
        match result {
            Ok(()) => bump(&counters.here().signals_sent),
            Err(err) => {
                bump(&counters.here().signal_errors);
                warn!(signal = self.name, test_id = %current.context.id, error = %err, "signal could not be enqueued; dropped");
            }
        }
    }
}
