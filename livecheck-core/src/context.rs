//! The test context: what identifies one test as it travels through the services.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use crate::client::LiveCheck;

/// Everything a service needs to know about the test a request belongs to.
///
/// It travels in headers (see [`crate::headers`]) and scopes the work done for the
/// request, so that [`crate::Signal::send`] knows which test a step belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestContext {
    /// Unique id of the test (also the Kafka key of its records, unless it has a
    /// [`TestContext::route`]): 1 to 128 bytes of visible ASCII. A `TestExecution` record
    /// with any other id does not decode.
    #[serde(deserialize_with = "deserialize_test_id")]
    pub id: String,
    /// Name of the case this test runs (`orders.place_order`).
    pub case: String,
    /// When the test was issued.
    #[serde(deserialize_with = "crate::json_time::deserialize")]
    pub issued_at: DateTime<Utc>,
    /// After this instant the test is stale and its run is skipped.
    #[serde(deserialize_with = "crate::json_time::deserialize")]
    pub expires_at: DateTime<Utc>,
    /// Arguments of the case (JSON), e.g. the order side: chosen by the stimulus, or by the
    /// service whose trigger starts the test. Carried in the `LiveCheck-Test-Arguments`
    /// header when not `null` (see [`crate::headers::encode_with`]); the runner reads them
    /// from the `TestExecution` record.
    #[serde(default)]
    pub arguments: serde_json::Value,
    /// The signature of the id, case and times, and of the arguments when they are not
    /// `null` at signing (`v1;kid=<kid>;sig=<base64url>`, or `v2;...` with arguments; see
    /// [`crate::signing`]), made by a client with signing keys ([`LiveCheck::sign`]);
    /// carried in the `LiveCheck-Test-Signature` header and in the `TestExecution` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`) of the request or record
    /// the test came in with, when it had one (see [`crate::baggage`]): carried in the
    /// `TestExecution` record, so that the report holds its trace id. Not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The test's route, if it has one: a business key (user, account, tenant) that
    /// replaces the test id as the partition key of every LiveCheck record of the test
    /// (its `TestExecution`, its signals and hops, its report), so that every test of one
    /// key lands on the same partition of the co-partitioned tests, signals and reports
    /// topics and is run by the same runner instance — what a table keyed by that business
    /// key needs. See [`TestContext::partition_key`].
    ///
    /// Set by [`crate::Trigger::maybe_trigger_for_key`] on the tests it starts (the key),
    /// by a harness from the case's rule ([`crate::Case::route_by`]), or with
    /// [`TestContext::route`]. 1 to [`crate::headers::MAX_ROUTE_LEN`] bytes of visible
    /// ASCII (a `TestExecution` record with any other route does not decode); carried in
    /// the `LiveCheck-Test-Route` header and the `livecheck.route` baggage member. Not
    /// signed: a route changed on the way moves the test to another partition (see the
    /// crate's known limitations). Every test of a hot key goes to one partition, so to one
    /// runner instance: routed tests concentrate load as much as their keys do.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_route"
    )]
    pub route: Option<String>,
}

fn deserialize_test_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = String::deserialize(d)?;
    crate::headers::check_test_id(&id).map_err(serde::de::Error::custom)?;
    Ok(id)
}

fn deserialize_route<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let route = Option::<String>::deserialize(d)?;
    if let Some(route) = &route {
        crate::headers::check_route(route).map_err(serde::de::Error::custom)?;
    }
    Ok(route)
}

impl TestContext {
    /// A new context for `case` with a fresh id, issued now and valid for `expires_in`.
    #[must_use]
    pub fn new(case: impl Into<String>, expires_in: std::time::Duration) -> Self {
        Self::with_id(uuid::Uuid::new_v4().to_string(), case, expires_in)
    }

    /// A new context with a caller-chosen id (e.g. the id of the order under test).
    #[must_use]
    pub fn with_id(
        id: impl Into<String>,
        case: impl Into<String>,
        expires_in: std::time::Duration,
    ) -> Self {
        let issued_at = Utc::now();
        let expires_at = issued_at
            + ChronoDuration::from_std(expires_in).unwrap_or_else(|_| ChronoDuration::days(365));
        Self {
            id: id.into(),
            case: case.into(),
            issued_at,
            expires_at,
            arguments: serde_json::Value::Null,
            signature: None,
            traceparent: None,
            route: None,
        }
    }

    /// Sets the case arguments. Sign after setting them ([`LiveCheck::sign`]) so that the
    /// signature covers them.
    #[must_use]
    pub fn arguments(mut self, arguments: serde_json::Value) -> Self {
        self.arguments = arguments;
        self
    }

    /// Routes the test by business key `route` ([`TestContext::route`]): its LiveCheck
    /// records are keyed by `route` instead of the test id. The route is not signed, so it
    /// may be set before or after signing; a route that is not 1 to
    /// [`crate::headers::MAX_ROUTE_LEN`] bytes of visible ASCII is rejected by the next
    /// service that reads the context (`contexts_rejected_bad_route`), so check it first
    /// ([`crate::headers::check_route`]) when it comes from outside.
    #[must_use]
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// The Kafka key of every LiveCheck record of this test: its route if it has one
    /// ([`TestContext::route`]), else its test id. Records with one key land on one
    /// partition (murmur2, as Kafka's Java client partitions).
    pub fn partition_key(&self) -> &str {
        self.route.as_deref().unwrap_or(&self.id)
    }

    /// Sets the W3C trace parent the test belongs to (`00-<trace id>-<parent id>-<flags>`);
    /// a value that is not a valid `traceparent` is logged and leaves the context without
    /// one.
    #[must_use]
    pub fn traceparent(mut self, traceparent: &str) -> Self {
        self.traceparent = crate::baggage::parse_traceparent(traceparent);
        if self.traceparent.is_none() {
            tracing::warn!(test_id = %self.id, value = %traceparent.escape_debug(), "not a valid W3C traceparent; the test has no trace");
        }
        self
    }

    /// The W3C trace id (32 lowercase hex digits) of [`TestContext::traceparent`], if any.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref()?.split('-').nth(1)
    }

    /// Whether the test is past its expiry at `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        now > self.expires_at
    }
}

/// The context of the current task together with the client that publishes its signals.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) context: Arc<TestContext>,
    pub(crate) client: LiveCheck,
    /// The consumed record the work handles, when it handles one.
    pub(crate) delivery: Option<Arc<Delivery>>,
}

/// The handling of one consumed record: signals sent while handling it get send ids
/// derived from the record, so handling the same record again (at-least-once redelivery
/// after a crash or a rebalance) sends the same ids, and the runner counts them once;
/// sending a step twice in one handling gives two ids, and counts twice.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The program, topic, partition and offset of the record.
    seed: String,
    /// Sends so far per signal and item in this handling.
    sends: std::sync::Mutex<Vec<(&'static str, Option<String>, u32)>>,
}

impl Delivery {
    pub(crate) fn new(topic: &str, partition: i32, offset: i64) -> Self {
        Self {
            seed: format!("{}\0{topic}\0{partition}\0{offset}", program()),
            sends: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The send id of the next send of `signal` (and `item`) in this handling: the first 64
    /// bits of SHA-256 over the record, the signal, the item and the send's number.
    pub(crate) fn next_send_id(&self, signal: &'static str, item: Option<&str>) -> u64 {
        use sha2::{Digest as _, Sha256};
        let n = {
            let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
            match sends
                .iter_mut()
                .find(|(s, i, _)| *s == signal && i.as_deref() == item)
            {
                Some((_, _, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    sends.push((signal, item.map(str::to_owned), 0));
                    0
                }
            }
        };
        let mut hash = Sha256::new();
        for part in [
            self.seed.as_bytes(),
            signal.as_bytes(),
            item.unwrap_or("").as_bytes(),
        ] {
            hash.update(part);
            hash.update([0]);
        }
        hash.update(n.to_be_bytes());
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

/// The name of this program (its executable's file name): a service handling the same
/// record after a restart has the same name.
pub(crate) fn program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default()
    })
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The test context of the current task, if the task runs on behalf of a test.
pub fn current_test() -> Option<Arc<TestContext>> {
    CURRENT.try_with(|c| c.context.clone()).ok()
}

/// Whether the current task runs on behalf of a test. Costs a thread-local read.
#[inline]
pub fn in_test() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

pub(crate) fn current() -> Option<Current> {
    CURRENT.try_with(Clone::clone).ok()
}

pub(crate) fn with_current<R>(f: impl FnOnce(&Current) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

pub(crate) async fn scope_current<F: Future>(current: Current, fut: F) -> F::Output {
    CURRENT.scope(current, fut).await
}

/// Runs `fut` with the current task's test context (if any) and returns its output.
///
/// Use it for work handed to another task by hand; [`spawn`] does it for you.
pub fn propagate<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let current = current();
    async move {
        match current {
            Some(current) => CURRENT.scope(current, fut).await,
            None => fut.await,
        }
    }
}

/// Spawns a task that keeps the current task's test context (plain `tokio::spawn` loses it).
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(propagate(fut))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_partition_key_is_the_route_if_any_else_the_id() {
        let context = TestContext::with_id("order-1", "c", Duration::from_secs(60));
        assert_eq!(context.route, None);
        assert_eq!(context.partition_key(), "order-1");
        let routed = context.route("user-7");
        assert_eq!(routed.route.as_deref(), Some("user-7"));
        assert_eq!(routed.partition_key(), "user-7");
        assert_eq!(routed.id, "order-1");
    }

    #[test]
    fn old_records_without_a_route_still_parse_and_none_is_not_written() {
        let json = r#"{"id":"t1","case":"c","issued_at":"2020-05-01T12:30:00Z","expires_at":"2020-05-01T13:30:00Z","arguments":"sell","signature":"v2;kid=k1;sig=AAAA"}"#;
        let context: TestContext = serde_json::from_str(json).unwrap();
        assert_eq!(context.route, None);
        assert_eq!(context.partition_key(), "t1");
        assert!(!serde_json::to_string(&context).unwrap().contains("route"));

        let routed = context.route("account:42");
        let json = serde_json::to_value(&routed).unwrap();
        assert_eq!(json["route"], "account:42");
        let back: TestContext = serde_json::from_value(json).unwrap();
        assert_eq!(back, routed);
    }

    /// The times are read as chrono reads them (a fast path for the form it writes): with an
    /// offset, with any number of fractional digits, and not when they are not times.
    #[test]
    fn the_times_read_as_chrono_reads_them() {
        let json = |issued: &str| {
            format!(
                r#"{{"id":"t1","case":"c","issued_at":"{issued}","expires_at":"2020-05-01T13:30:00.5Z","arguments":null}}"#
            )
        };
        for issued in [
            "2020-05-01T12:30:00Z",
            "2020-05-01T12:30:00.123456789Z",
            "2020-05-01T14:30:00.25+02:00",
            "2020-05-01t12:30:00z",
        ] {
            let context: TestContext = serde_json::from_str(&json(issued)).unwrap();
            let expected = chrono::DateTime::parse_from_rfc3339(issued).unwrap();
            assert_eq!(context.issued_at, expected, "{issued}");
            assert_eq!(
                context.expires_at.to_rfc3339(),
                "2020-05-01T13:30:00.500+00:00"
            );
        }
        for bad in ["2020-05-01", "2020-02-30T12:30:00Z", "yesterday"] {
            assert!(
                serde_json::from_str::<TestContext>(&json(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_record_with_a_bad_route_does_not_decode() {
        let context = TestContext::new("c", Duration::from_secs(60));
        for bad in ["two words".to_owned(), String::new(), "r".repeat(257)] {
            let mut json = serde_json::to_value(&context).unwrap();
            json["route"] = bad.clone().into();
            let err = serde_json::from_value::<TestContext>(json).unwrap_err();
            assert!(err.to_string().contains("visible ASCII"), "{bad:?}: {err}");
        }
        let mut json = serde_json::to_value(&context).unwrap();
        json["route"] = serde_json::Value::Null;
        assert_eq!(
            serde_json::from_value::<TestContext>(json).unwrap().route,
            None
        );
    }
}
