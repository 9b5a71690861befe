//! Kafka propagation: the test context in record headers.

use std::future::Future;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::headers::{self, ContextError};

/// Adds `context` to a record's headers.
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

/// Reads the test context from a consumed message's headers (names compared
/// case-insensitively; the first occurrence wins).
pub fn extract<M: Message>(message: &M) -> Result<Option<TestContext>, ContextError> {
    let Some(record_headers) = message.headers() else {
        return Ok(None);
    };
    headers::decode(|name| {
        record_headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .map(|h| h.value.unwrap_or_default())
    })
}

impl LiveCheck {
    /// Runs `fut` scoped by the test context of `message` (if any). A malformed context is
    /// counted, logged with topic/partition/offset, and the record is processed as a
    /// non-test record.
    pub async fn scope_message<M: Message, F: Future>(&self, message: &M, fut: F) -> F::Output {
        let decoded = extract(message);
        let context = if decoded.is_err() {
            let origin = format!(
                "{}[{}]@{}",
                message.topic(),
                message.partition(),
                message.offset()
            );
            self.accept(decoded, &origin)
        } else {
            self.accept(decoded, "")
        };
        match context {
            Some(context) => self.scope(context, fut).await,
            None => fut.await,
        }
    }
}
