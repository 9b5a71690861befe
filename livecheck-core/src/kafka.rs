//! Kafka propagation: the test context in record headers.

use std::future::Future;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::baggage;
use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::headers::{self, ContextError};

/// Adds `context` (and its signature and arguments, if any: see
/// [`headers::encode_with`]) to a record's headers: the LiveCheck headers, and the
/// `livecheck.*` members merged into the `baggage` header (its other members kept; the
/// record's `baggage` headers are replaced by the merged one), plus the context's
/// `traceparent` when the record has none (see [`crate::baggage`]).
pub fn inject_context(record_headers: OwnedHeaders, context: &TestContext) -> OwnedHeaders {
    let mut entries = Vec::with_capacity(headers::EVERY.len());
    headers::encode_with(context, |name, value| {
        entries.push((name, value.to_owned()))
    });
    let is = |h: &Header<&[u8]>, name: &str| h.key.eq_ignore_ascii_case(name);
    let existing = record_headers.iter().filter(|h| is(h, baggage::BAGGAGE));
    let merged = baggage::merge(existing.map(|h| h.value.unwrap_or_default()), &entries);
    let has_traceparent = record_headers.iter().any(|h| is(&h, baggage::TRACEPARENT));
    let had_baggage = record_headers.iter().any(|h| is(&h, baggage::BAGGAGE));
    // Headers cannot be removed from `OwnedHeaders`: without the old `baggage`, a copy.
    let mut out = if had_baggage {
        record_headers
            .iter()
            .filter(|h| !is(h, baggage::BAGGAGE))
            .fold(
                OwnedHeaders::new_with_capacity(record_headers.count() + 8),
                |out, h| out.insert(h),
            )
    } else {
        record_headers
    };
    for (key, value) in &entries {
        out = out.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    if let Some(value) = &merged {
        out = out.insert(Header {
            key: baggage::BAGGAGE,
            value: Some(value.as_bytes()),
        });
    }
    match &context.traceparent {
        Some(traceparent) if !has_traceparent => out.insert(Header {
            key: baggage::TRACEPARENT,
            value: Some(traceparent.as_bytes()),
        }),
        _ => out,
    }
}

/// Adds the current task's test context (if any) to a record's headers.
pub fn inject(record_headers: OwnedHeaders) -> OwnedHeaders {
    match current_test() {
        Some(context) => inject_context(record_headers, &context),
        None => record_headers,
    }
}

/// Reads the test context (and its signature and arguments, if any) from a consumed
/// message's headers (names compared case-insensitively; a context header present twice
/// rejects the context): from the LiveCheck headers and from the `livecheck.*` members of
/// `baggage`, the LiveCheck headers winning when both are there (see [`crate::baggage`]),
/// with the `traceparent`, if any. Checks the form, not the signature:
/// [`LiveCheck::accept_message`] does.
pub fn extract<M: Message>(message: &M) -> Result<Option<TestContext>, ContextError> {
    let Some(record_headers) = message.headers() else {
        return Ok(None);
    };
    let from_headers = headers::decode_counted(|name| {
        let mut matching = record_headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(name));
        match matching.next() {
            None => (None, 0),
            Some(first) => (Some(first.value.unwrap_or_default()), 1 + matching.count()),
        }
    });
    let named = |name: &'static str| {
        record_headers
            .iter()
            .filter(move |h| h.key.eq_ignore_ascii_case(name))
            .map(|h| h.value.unwrap_or_default())
    };
    baggage::extract(
        from_headers,
        || named(baggage::BAGGAGE),
        named(baggage::TRACEPARENT).next(),
    )
}

impl LiveCheck {
    /// The test context of `message` if it is accepted ([`LiveCheck::accept`]: well-formed
    /// and, with signing keys, validly signed and not expired). A rejected context is
    /// counted and logged with topic/partition/offset; `None` means a non-test record.
    pub fn accept_message<M: Message>(&self, message: &M) -> Option<TestContext> {
        self.accept_from(
            extract(message),
            &format_args!(
                "{}[{}]@{}",
                message.topic(),
                message.partition(),
                message.offset()
            ),
        )
    }

    /// Runs `fut` scoped by the test context of `message` if it is accepted
    /// ([`LiveCheck::accept_message`]); otherwise the record is processed as a non-test
    /// record. Handling the same record again sends the same signals again, which the
    /// runner counts once (see [`LiveCheck::scope_consumed`]).
    pub async fn scope_message<M: Message, F: Future>(&self, message: &M, fut: F) -> F::Output {
        self.scope_consumed(
            extract(message),
            message.topic(),
            message.partition(),
            message.offset(),
            fut,
        )
        .await
    }
}
