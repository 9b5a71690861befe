//! Kafka propagation: the test context in record headers. [`LiveCheck::producer`] and
//! [`LiveCheck::consume`] do it in one call each and record the test's hops; [`inject`],
//! [`extract`] and [`LiveCheck::scope_message`] are the parts.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use tracing::debug;

use crate::baggage;
use crate::client::LiveCheck;
use crate::context::{current_test, scope_current, Current, TestContext};
use crate::counters::bump;
use crate::headers::{self, ContextError};
use crate::hop::{self, Hop, HopKind};

/// Adds `context` (and its signature, route and arguments, if any: see
/// [`headers::encode_with`]) to a record's headers: the LiveCheck headers, and the
/// `livecheck.*` members merged into the `baggage` header (its other members kept; the
/// record's `baggage` headers are replaced by the merged one), plus the context's
/// `traceparent` when the record has none (see [`crate::baggage`]).
pub fn inject_context(record_headers: OwnedHeaders, context: &TestContext) -> OwnedHeaders {
    let is = |h: &Header<&[u8]>, name: &str| h.key.eq_ignore_ascii_case(name);
    let (mut has_traceparent, mut had_baggage) = (false, false);
    for h in record_headers.iter() {
        has_traceparent |= is(&h, baggage::TRACEPARENT);
        had_baggage |= is(&h, baggage::BAGGAGE);
    }
    let mut out = if had_baggage {
        // Merged with the record's members; headers cannot be removed from `OwnedHeaders`:
        // without the old `baggage`, a copy.
        let mut entries = Vec::with_capacity(headers::EVERY.len());
        headers::encode_with(context, |name, value| {
            entries.push((name, value.to_owned()))
        });
        let existing = record_headers.iter().filter(|h| is(h, baggage::BAGGAGE));
        let merged = baggage::merge(existing.map(|h| h.value.unwrap_or_default()), &entries);
        let mut out = record_headers
            .iter()
            .filter(|h| !is(h, baggage::BAGGAGE))
            .fold(
                OwnedHeaders::new_with_capacity(record_headers.count() + 8),
                |out, h| out.insert(h),
            );
        for (key, value) in &entries {
            out = out.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        match &merged {
            Some(value) => out.insert(Header {
                key: baggage::BAGGAGE,
                value: Some(value.as_bytes()),
            }),
            None => out,
        }
    } else {
        // The usual case: the headers, then our members written on the stack.
        headers::encode_values(context, |values| {
            let mut out = record_headers;
            for &(i, value) in values {
                out = out.insert(Header {
                    key: headers::EVERY[i],
                    value: Some(value),
                });
            }
            baggage::with_ours(values, |ours| match ours {
                Some(value) => out.insert(Header {
                    key: baggage::BAGGAGE,
                    value: Some(value),
                }),
                None => out,
            })
        })
    };
    if let Some(traceparent) = context.traceparent.as_deref().filter(|_| !has_traceparent) {
        out = out.insert(Header {
            key: baggage::TRACEPARENT,
            value: Some(traceparent.as_bytes()),
        });
    }
    out
}

/// Adds the current task's test context (if any) to a record's headers.
pub fn inject(record_headers: OwnedHeaders) -> OwnedHeaders {
    match current_test() {
        Some(context) => inject_context(record_headers, &context),
        None => record_headers,
    }
}

/// Reads the test context (and its signature, route and arguments, if any) from a
/// consumed message's headers (names compared case-insensitively; a context header present twice
/// rejects the context): from the LiveCheck headers and from the `livecheck.*` members of
/// `baggage`, the LiveCheck headers winning when both are there (see [`crate::baggage`]),
/// with the `traceparent`, if any. Checks the form, not the signature:
/// [`LiveCheck::accept_message`] does.
pub fn extract<M: Message>(message: &M) -> Result<Option<TestContext>, ContextError> {
    let Some(record_headers) = message.headers() else {
        return Ok(None);
    };
    // One pass over the record's headers (each one read is a call into librdkafka), each
    // name matched by its bytes: a record without a context allocates nothing.
    let mut found = headers::Found::default();
    let (mut baggage_seen, mut traceparent) = (false, None);
    for h in record_headers.iter() {
        let value = h.value.unwrap_or_default();
        if let Some(i) = headers::index_of(h.key.as_bytes()) {
            found.add(i, value);
        } else if h.key.eq_ignore_ascii_case(baggage::BAGGAGE) {
            baggage_seen = true;
        } else if traceparent.is_none() && h.key.eq_ignore_ascii_case(baggage::TRACEPARENT) {
            traceparent = Some(value);
        }
    }
    if found.is_empty() && !baggage_seen && traceparent.is_none() {
        return Ok(None);
    }
    baggage::extract(
        headers::decode_found(&found),
        // Read again only when the LiveCheck headers carry no context.
        || {
            record_headers
                .iter()
                .filter(|h| h.key.eq_ignore_ascii_case(baggage::BAGGAGE))
                .map(|h| h.value.unwrap_or_default())
        },
        traceparent,
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

/// A Kafka producer that carries the test context: a record sent inside a test's scope
/// gets the context's headers (unless it carries a LiveCheck context already), and the
/// hop — the topic, partition and offset it was delivered to — is recorded for the test,
/// so a `TIMEOUT` can say where the test's record went. Outside a test it is the wrapped
/// producer, nothing added. Made by [`LiveCheck::producer`].
#[derive(Clone)]
pub struct Producer<C: ClientContext + 'static = DefaultClientContext> {
    producer: FutureProducer<C>,
    client: LiveCheck,
}

impl<C: ClientContext + 'static> std::fmt::Debug for Producer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl<C: ClientContext + 'static> Producer<C> {
    /// Sends `record` (see [`FutureProducer::send`]) with the current test's context in
    /// its headers, and records where it was delivered.
    pub async fn send<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: impl Into<Timeout>,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let topic = record.topic;
        let Some(context) = current_test() else {
            return self.producer.send(record, queue_timeout).await;
        };
        let headers = record.headers.take().unwrap_or_default();
        let carried = headers
            .iter()
            .any(|h| h.key.eq_ignore_ascii_case(headers::TEST_ID));
        record = record.headers(if carried {
            headers
        } else {
            inject_context(headers, &context)
        });
        let delivered = self.producer.send(record, queue_timeout).await;
        if let Ok(delivery) = &delivered {
            hop::record_produced(
                Some(self.client.service_name()),
                topic,
                delivery.partition,
                delivery.offset,
            );
        }
        delivered
    }

    /// The wrapped producer (records sent with it carry nothing and record nothing).
    pub fn inner(&self) -> &FutureProducer<C> {
        &self.producer
    }
}

/// A consumed record, seen by [`LiveCheck::consumed`]: its test context (if it carried an
/// accepted one) and where it was read. [`Consumed::run`] runs the handling in its scope.
#[derive(Debug)]
pub struct Consumed {
    scoped: Option<Scoped>,
}

/// What [`Consumed::run`] scopes the handling with.
#[derive(Debug)]
struct Scoped {
    client: LiveCheck,
    context: Arc<TestContext>,
    delivery: Arc<crate::context::Delivery>,
    hop: Hop,
}

impl Consumed {
    /// The record's test context, if it carried an accepted one.
    pub fn context(&self) -> Option<&TestContext> {
        self.scoped.as_ref().map(|s| &*s.context)
    }

    /// Runs `fut` scoped by the record's test context (signals sent inside belong to the
    /// test and get send ids derived from the record, as with [`LiveCheck::scope_consumed`]),
    /// recording the hop first; without a context, runs it as is.
    pub async fn run<F: Future>(self, fut: F) -> F::Output {
        match self.scoped {
            Some(Scoped {
                client,
                context,
                delivery,
                hop,
            }) => {
                let current = Current {
                    context,
                    client,
                    delivery: Some(delivery),
                };
                scope_current(current, async move {
                    hop::record(hop);
                    fut.await
                })
                .await
            }
            None => fut.await,
        }
    }
}

impl LiveCheck {
    /// Wraps `producer` so that records sent inside a test's scope carry its context and
    /// their hops are recorded under this client's service name
    /// ([`LiveCheck::with_service`]): see [`Producer`].
    pub fn producer<C: ClientContext + 'static>(&self, producer: FutureProducer<C>) -> Producer<C> {
        Producer {
            producer,
            client: self.clone(),
        }
    }

    /// Records, for the current test, that a record of it was produced to
    /// `topic[partition]@offset` by other means than [`Producer`] (another client, a
    /// proxy); does nothing outside a test.
    pub fn produced(&self, topic: &str, partition: i32, offset: i64) {
        hop::record_produced(Some(self.service_name()), topic, partition, offset);
    }

    /// Sees a record that consumer group `group` read: decodes and accepts its test context
    /// (as [`LiveCheck::accept_message`]), notes the group's position for the consumer
    /// positions this client reports (every second, to the signals topic: a `TIMEOUT` then
    /// tells a record not read yet from one read without its context), and counts a record
    /// without a context (`records_without_context`, by group and topic in
    /// [`LiveCheck::records_without_context`]). Run the handling with [`Consumed::run`].
    /// Allocates nothing for a record without a context once the group and topic are known.
    pub fn consumed<M: Message>(&self, group: &str, message: &M) -> Consumed {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if !self.inner.reading.reporter_started() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    if self.inner.reading.start_reporter() {
                        runtime.spawn(hop::report_positions(
                            Arc::downgrade(&self.inner),
                            self.service_name().to_owned(),
                        ));
                    }
                }
                // Tried again on the next record: a consumer on a thread of its own may
                // hand records over from a runtime later.
                Err(_) => debug!(
                    "LiveCheck::consumed outside a Tokio runtime: consumer positions are not reported yet"
                ),
            }
        }
        let context = self.accept_from(
            extract(message),
            &format_args!("{topic}[{partition}]@{offset}"),
        );
        self.inner
            .reading
            .note(group, topic, partition, offset, context.is_some());
        let Some(context) = context else {
            bump(&self.inner.counters.here().records_without_context);
            return Consumed { scoped: None };
        };
        let hop = Hop {
            kind: HopKind::Consumed,
            service: self.service_name().to_owned(),
            group: Some(group.to_owned()),
            topic: topic.to_owned(),
            partition,
            offset,
            at: Utc::now(),
        };
        Consumed {
            scoped: Some(Scoped {
                client: self.clone(),
                context: Arc::new(context),
                delivery: Arc::new(crate::context::Delivery::new(topic, partition, offset)),
                hop,
            }),
        }
    }

    /// [`LiveCheck::consumed`] and [`Consumed::run`] in one call: runs `fut` for the record
    /// `message` that consumer group `group` read, scoped by its test context if it has
    /// one, recording the hop.
    pub async fn consume<M: Message, F: Future>(
        &self,
        group: &str,
        message: &M,
        fut: F,
    ) -> F::Output {
        self.consumed(group, message).run(fut).await
    }
}
