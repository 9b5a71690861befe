//! Kafka propagation: the test context in record headers.

use std::future::Future;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::headers::{self, ContextError};

/// Adds `context` (and its signature and arguments, if any: see
/// [`headers::encode_with`]) to a record's headers.
pub fn inject_context(record_headers: OwnedHeaders, context: &TestContext) -> OwnedHeaders {
    let mut record_headers = Some(record_headers);
    headers::encode_with(context, |key, value| {
        record_headers = record_headers.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
    });
    record_headers.unwrap_or_default()
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
/// rejects the context). Checks the form, not the signature: [`LiveCheck::accept_message`]
/// does.
pub fn extract<M: Message>(message: &M) -> Result<Option<TestContext>, ContextError> {
    let Some(record_headers) = message.headers() else {
        return Ok(None);
    };
    headers::decode_counted(|name| {
        let mut matching = record_headers
            .iter()
            .filter(|h| h.key.eq_ignore_ascii_case(name));
        match matching.next() {
            None => (None, 0),
            Some(first) => (Some(first.value.unwrap_or_default()), 1 + matching.count()),
        }
    })
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
