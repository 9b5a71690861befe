//! W3C Baggage and Trace Context: the test context in the `baggage` header as well.
//!
//! A service that already propagates OpenTelemetry context copies the `baggage` and
//! `traceparent` headers from each request or record it handles to the ones it sends, with
//! OpenTelemetry's propagators, whether or not it knows of LiveCheck. So besides its own
//! headers ([`crate::headers`]), the test context travels as `livecheck.*` members of the
//! `baggage` header ([`KEYS`]: `livecheck.id`, `livecheck.name`, `livecheck.timestamp`,
//! `livecheck.expires`, `livecheck.signature`, `livecheck.route`, `livecheck.arguments`, the
//! values as in the LiveCheck headers) and reaches the services behind such a hop.
//!
//! - **Writing** ([`crate::http::inject`], [`crate::kafka::inject_context`], the reqwest
//!   extension): the LiveCheck headers and the `livecheck.*` members, merged into the
//!   carrier's `baggage` header, whose other members are kept (any `livecheck.*` members
//!   already there are replaced). A `traceparent` is written when the context carries one and
//!   the carrier has none. The members must fit in [`MAX_BAGGAGE_LEN`] bytes and the
//!   propagator's limits beside the other members; if they do not, the arguments are left
//!   out of the baggage, then the whole context (logged at debug): the LiveCheck headers still
//!   carry it.
//! - **Reading** ([`crate::http::extract`], [`crate::kafka::extract`]): the context of the
//!   LiveCheck headers when they carry one (**the LiveCheck headers win**: the baggage is
//!   then not read at all, which keeps a hop between LiveCheck's helpers as cheap as
//!   before), else the one of the baggage. A bad context in the headers is rejected whatever
//!   the baggage holds. The baggage goes through
//!   OpenTelemetry's [`BaggagePropagator`], then through the same checks as the headers
//!   ([`crate::headers::decode_counted`]): a bad value is rejected with the same
//!   [`ContextError`] kinds, naming the baggage key (`livecheck.id`) instead of the header.
//!   A `baggage` header longer than [`MAX_BAGGAGE_LEN`] bytes (all its values together) that
//!   has `livecheck.*` members is rejected as oversized; a `livecheck.*` member the
//!   propagator had to drop (not UTF-8 once percent-decoded, or past its limits) rejects the
//!   context as not UTF-8. Without a `baggage` header, reading costs one header lookup and
//!   allocates nothing; a `baggage` header without `livecheck.` costs a substring search.
//! - **Trust**: the signature travels as `livecheck.signature` and a context read from the
//!   baggage goes through the same [`crate::LiveCheck::accept`] as one read from the headers:
//!   with signing keys, an unsigned, forged, tampered or expired context is rejected
//!   whichever way it came.
//! - **Trace**: when an accepted context arrives with a valid `traceparent` (read with
//!   OpenTelemetry's [`TraceContextPropagator`]), the context keeps it
//!   ([`TestContext::traceparent`]); the `TestExecution` record carries it to the runner, and
//!   the report holds its trace id ([`crate::Report::trace_id`]). A trigger that starts a
//!   test where none came in takes the trace of OpenTelemetry's current context, if any.
//!   The trace parent is not signed: it labels a test, it does not admit one.

use opentelemetry::baggage::{Baggage, BaggageExt as _};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tracing::debug;

use crate::context::TestContext;
use crate::headers::{self, ContextError};

/// The W3C Baggage header (and Kafka header), lowercase.
pub const BAGGAGE: &str = "baggage";
/// The W3C Trace Context header (and Kafka header), lowercase.
pub const TRACEPARENT: &str = "traceparent";

/// Baggage key of the test id.
pub const TEST_ID: &str = "livecheck.id";
/// Baggage key of the case name.
pub const TEST_NAME: &str = "livecheck.name";
/// Baggage key of the issue time.
pub const TEST_TIMESTAMP: &str = "livecheck.timestamp";
/// Baggage key of the expiry time.
pub const TEST_EXPIRES: &str = "livecheck.expires";
/// Baggage key of the signature.
pub const TEST_SIGNATURE: &str = "livecheck.signature";
/// Baggage key of the route ([`TestContext::route`]).
pub const TEST_ROUTE: &str = "livecheck.route";
/// Baggage key of the arguments.
pub const TEST_ARGUMENTS: &str = "livecheck.arguments";

/// The baggage keys, in the order of [`headers::EVERY`] (the header each stands for).
pub const KEYS: [&str; 7] = [
    TEST_ID,
    TEST_NAME,
    TEST_TIMESTAMP,
    TEST_EXPIRES,
    TEST_SIGNATURE,
    TEST_ROUTE,
    TEST_ARGUMENTS,
];

/// Longest `baggage` header (all values together, in bytes) read or written with a test
/// context in it: the W3C limit on a baggage list.
pub const MAX_BAGGAGE_LEN: usize = 8192;

/// What every key of the test context in baggage starts with.
const PREFIX: &str = "livecheck.";

/// The baggage key standing for header `name` of [`headers::EVERY`].
fn key_for(name: &str) -> &'static str {
    let i = headers::EVERY.iter().position(|n| *n == name).unwrap_or(0);
    KEYS[i]
}

/// Reads the test context of a carrier from both sources and applies the precedence: `from_headers`
/// is what [`headers::decode_counted`] read from the LiveCheck headers, `baggage` gives the
/// raw values of the carrier's `baggage` headers and `traceparent` is its first
/// `traceparent` value.
pub(crate) fn extract<'a, I>(
    from_headers: Result<Option<TestContext>, ContextError>,
    baggage: impl Fn() -> I,
    traceparent: Option<&[u8]>,
) -> Result<Option<TestContext>, ContextError>
where
    I: Iterator<Item = &'a [u8]>,
{
    // A bad context in the LiveCheck headers is rejected whatever the baggage holds, and a
    // good one wins: the baggage is read only when the headers carry no context.
    let mut chosen = match from_headers? {
        Some(context) => Some(context),
        None => decode(baggage)?,
    };
    if let (Some(context), Some(raw)) = (&mut chosen, traceparent) {
        if context.traceparent.is_none() {
            context.traceparent = std::str::from_utf8(raw).ok().and_then(parse_traceparent);
        }
    }
    Ok(chosen)
}

/// Reads a test context from the raw values of a carrier's `baggage` headers, which
/// `values` gives (it is called more than once). `Ok(None)` when there is none, or no
/// `livecheck.*` member; allocates nothing then.
pub fn decode<'a, I: Iterator<Item = &'a [u8]>>(
    values: impl Fn() -> I,
) -> Result<Option<TestContext>, ContextError> {
    let has_ours = |v: &[u8]| v.windows(PREFIX.len()).any(|w| w == PREFIX.as_bytes());
    if !values().any(has_ours) {
        return Ok(None);
    }
    let len: usize = values().map(<[u8]>::len).sum::<usize>() + values().count() - 1;
    if len > MAX_BAGGAGE_LEN {
        return Err(ContextError::Oversized {
            header: BAGGAGE,
            len,
            max: MAX_BAGGAGE_LEN,
        });
    }
    let text =
        |value| std::str::from_utf8(value).map_err(|_| ContextError::NotUtf8 { header: BAGGAGE });
    let mut all = values();
    let first = text(all.next().unwrap_or_default())?;
    // One header (the usual case) is read in place; several are one list (W3C).
    let joined = match all.next() {
        None => std::borrow::Cow::Borrowed(first),
        Some(second) => {
            let mut joined = String::with_capacity(len);
            for value in [first, text(second)?] {
                joined.push_str(value);
                joined.push(',');
            }
            for value in all {
                joined.push_str(text(value)?);
                joined.push(',');
            }
            joined.pop();
            std::borrow::Cow::Owned(joined)
        }
    };
    let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &Carrier(&joined));
    let baggage = cx.baggage();
    if let Some(dropped) = KEYS
        .iter()
        .find(|key| baggage.get(key).is_none() && mentions(&joined, key))
    {
        return Err(ContextError::NotUtf8 { header: dropped });
    }
    headers::decode_counted(|name| {
        let value = baggage.get(key_for(name)).map(|v| v.as_str().as_bytes());
        (value, usize::from(value.is_some()))
    })
    .map_err(renamed)
}

/// Whether `raw` has a member named `key` (a guard for members the propagator dropped; the
/// parsing is the propagator's).
fn mentions(raw: &str, key: &str) -> bool {
    raw.match_indices(key).any(|(at, _)| {
        let before = raw[..at].trim_end();
        (before.is_empty() || before.ends_with(','))
            && raw[at + key.len()..].trim_start().starts_with('=')
    })
}

/// `err` naming the baggage key instead of the LiveCheck header.
fn renamed(err: ContextError) -> ContextError {
    match err {
        ContextError::Missing { header } => ContextError::Missing {
            header: key_for(header),
        },
        ContextError::Empty { header } => ContextError::Empty {
            header: key_for(header),
        },
        ContextError::NotUtf8 { header } => ContextError::NotUtf8 {
            header: key_for(header),
        },
        ContextError::Oversized { header, len, max } => ContextError::Oversized {
            header: key_for(header),
            len,
            max,
        },
        ContextError::BadTimestamp { header, value } => ContextError::BadTimestamp {
            header: key_for(header),
            value,
        },
        ContextError::DuplicateHeader { header, count } => ContextError::DuplicateHeader {
            header: key_for(header),
            count,
        },
        other => other,
    }
}

/// What OpenTelemetry's baggage propagator percent-encodes in a member's key and value.
const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b';').add(b',').add(b'=');

/// The `livecheck.*` members of a `baggage` value for a carrier that has no `baggage` yet,
/// written as OpenTelemetry's propagator writes them (the same percent-encoding) without
/// building its map: one string, no other allocation.
#[derive(Debug, Default)]
pub(crate) struct Ours {
    value: String,
    /// Where the arguments member begins (its comma), once pushed.
    arguments_at: Option<usize>,
}

impl Ours {
    /// Adds the member standing for LiveCheck header `name` (called in the order of
    /// [`headers::encode_with`], the arguments last).
    pub(crate) fn push(&mut self, name: &'static str, value: &str) {
        if self.value.capacity() == 0 {
            self.value.reserve(192 + value.len());
        }
        if name == headers::TEST_ARGUMENTS {
            self.arguments_at = Some(self.value.len());
        }
        if !self.value.is_empty() {
            self.value.push(',');
        }
        self.value.push_str(key_for(name));
        self.value.push('=');
        self.value.extend(utf8_percent_encode(value, ENCODED));
    }

    /// The value, if it fits the W3C limit: whole, else without the arguments, else none.
    pub(crate) fn finish(mut self) -> Option<String> {
        if self.value.is_empty() {
            return None;
        }
        if self.value.len() <= MAX_BAGGAGE_LEN {
            return Some(self.value);
        }
        if let Some(at) = self.arguments_at {
            self.value.truncate(at);
            if self.value.len() <= MAX_BAGGAGE_LEN {
                debug!("the test arguments do not fit in the baggage; they travel in the LiveCheck headers only");
                return Some(self.value);
            }
        }
        debug!("the test context does not fit in the baggage; it travels in the LiveCheck headers only");
        None
    }
}

/// The value of the `baggage` header that carries `entries` (the LiveCheck headers' names
/// and values, as [`headers::encode_with`] gives them) beside the members of `existing` (the
/// carrier's `baggage` values, if any), written by OpenTelemetry's [`BaggagePropagator`].
/// `None` when there is nothing to write.
pub fn merge<'a>(
    existing: impl Iterator<Item = &'a [u8]>,
    entries: &[(&'static str, String)],
) -> Option<String> {
    let mut joined = String::new();
    for value in existing {
        // A value that is not UTF-8 cannot be parsed: it is not kept.
        if let Ok(text) = std::str::from_utf8(value) {
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(text);
        }
    }
    let propagator = BaggagePropagator::new();
    let theirs = propagator.extract_with_context(&Context::new(), &Carrier(&joined));
    let build = |with: &dyn Fn(&str) -> bool| {
        let mut baggage = Baggage::new();
        for (key, (value, metadata)) in theirs.baggage() {
            if !key.as_str().starts_with(PREFIX) {
                baggage.insert_with_metadata(key.clone(), value.clone(), metadata.clone());
            }
        }
        let mut fits = true;
        for (name, value) in entries.iter().filter(|(name, _)| with(name)) {
            let key = key_for(name);
            baggage.insert(key, value.clone());
            fits &= baggage.get(key).is_some();
        }
        let mut out = Written(None);
        propagator.inject_context(&Context::new().with_baggage(baggage), &mut out);
        let fits = fits && out.0.as_ref().is_none_or(|v| v.len() <= MAX_BAGGAGE_LEN);
        (out.0, fits)
    };
    let (value, fits) = build(&|_| true);
    if fits {
        return value;
    }
    let (value, fits) = build(&|name| name != headers::TEST_ARGUMENTS);
    if fits {
        debug!("the test arguments do not fit in the baggage beside its other members; they travel in the LiveCheck headers only");
        return value;
    }
    debug!("the test context does not fit in the baggage beside its other members; it travels in the LiveCheck headers only");
    build(&|_| false).0
}

/// The canonical `traceparent` of a valid W3C trace parent (read with OpenTelemetry's
/// [`TraceContextPropagator`]), or `None`.
pub fn parse_traceparent(value: &str) -> Option<String> {
    format_traceparent(&span_context(value)?)
}

/// The remote span context of a valid W3C trace parent, read with OpenTelemetry's
/// [`TraceContextPropagator`].
pub(crate) fn span_context(traceparent: &str) -> Option<SpanContext> {
    let cx = TraceContextPropagator::new()
        .extract_with_context(&Context::new(), &TraceCarrier(traceparent));
    let span = cx.span();
    let span = span.span_context();
    span.is_valid().then(|| span.clone())
}

/// The `traceparent` of OpenTelemetry's current context, if it has a valid span.
pub(crate) fn current_traceparent() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    format_traceparent(span.span_context())
}

fn format_traceparent(span: &SpanContext) -> Option<String> {
    span.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags() & TraceFlags::SAMPLED
        )
    })
}

/// A carrier with only a `baggage` value.
struct Carrier<'a>(&'a str);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key.eq_ignore_ascii_case(BAGGAGE) && !self.0.is_empty()).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![BAGGAGE]
    }
}

/// A carrier with only a `traceparent` value.
struct TraceCarrier<'a>(&'a str);

impl Extractor for TraceCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case(TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Takes the `baggage` value the propagator writes.
struct Written(Option<String>);

impl Injector for Written {
    fn set(&mut self, key: &str, value: String) {
        if key.eq_ignore_ascii_case(BAGGAGE) {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::http::{extract, inject};

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// A context with arguments, its times at microseconds (as on the wire).
    fn context() -> TestContext {
        use chrono::SubsecRound as _;
        let mut ctx = TestContext::new("orders.place_order", Duration::from_secs(60))
            .arguments(serde_json::json!({"side": "sell", "note": "a, b; c=d \"q\" caf\u{e9}"}));
        ctx.issued_at = ctx.issued_at.trunc_subsecs(6);
        ctx.expires_at = ctx.expires_at.trunc_subsecs(6);
        ctx
    }

    /// The headers `inject` writes for `context`, but only the W3C ones.
    fn baggage_only(context: &TestContext) -> HeaderMap {
        let mut map = HeaderMap::new();
        inject(&mut map, context);
        for name in headers::EVERY {
            let optional = [headers::TEST_SIGNATURE, headers::TEST_ROUTE];
            assert!(map.remove(name).is_some() || optional.contains(&name));
        }
        map
    }

    fn with_baggage(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(BAGGAGE, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn a_context_round_trips_through_baggage_alone() {
        let ctx = context().traceparent(TRACE);
        let map = baggage_only(&ctx);
        let back = extract(&map).unwrap().unwrap();
        assert_eq!(back, ctx);
        assert_eq!(back.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(map[TRACEPARENT], TRACE);
    }

    #[test]
    fn a_route_round_trips_through_baggage_alone_and_the_headers_win() {
        let ctx = context().route("user-7");
        let map = baggage_only(&ctx);
        let value = map[BAGGAGE].to_str().unwrap();
        assert!(value.contains("livecheck.route=user-7"), "{value}");
        let back = extract(&map).unwrap().unwrap();
        assert_eq!(back, ctx);
        assert_eq!(back.partition_key(), "user-7");
        // Without a route, no member.
        let plain = baggage_only(&context());
        assert!(!plain[BAGGAGE].to_str().unwrap().contains(TEST_ROUTE));
        assert_eq!(extract(&plain).unwrap().unwrap().route, None);

        // Both there: the LiveCheck headers' context, route included.
        let theirs = ctx.clone().route("user-8");
        let mut both = HeaderMap::new();
        inject(&mut both, &theirs);
        let mut mixed = baggage_only(&ctx);
        for name in headers::EVERY {
            if let Some(value) = both.get(name) {
                mixed.insert(name, value.clone());
            }
        }
        assert_eq!(
            extract(&mixed).unwrap().unwrap().route.as_deref(),
            Some("user-8")
        );
        // A context in the headers without a route does not take the baggage's.
        mixed.remove(headers::TEST_ROUTE);
        assert_eq!(extract(&mixed).unwrap().unwrap().route, None);
    }

    #[test]
    fn a_bad_route_member_is_rejected() {
        let ctx = context().route("user-7");
        let value = baggage_only(&ctx)[BAGGAGE].to_str().unwrap().to_owned();
        let bad = value.replace("livecheck.route=user-7", "livecheck.route=user%207");
        let e = extract(&with_baggage(&bad)).unwrap_err();
        assert_eq!(e.reason(), "bad_route", "{e}");
        let long = value.replace(
            "livecheck.route=user-7",
            &format!("livecheck.route={}", "r".repeat(headers::MAX_ROUTE_LEN + 1)),
        );
        assert_eq!(
            extract(&with_baggage(&long)).unwrap_err(),
            ContextError::Oversized {
                header: TEST_ROUTE,
                len: headers::MAX_ROUTE_LEN + 1,
                max: headers::MAX_VALUE_LEN
            }
        );
    }

    #[test]
    fn no_baggage_or_foreign_baggage_is_no_test() {
        assert_eq!(extract(&HeaderMap::new()), Ok(None));
        assert_eq!(extract(&with_baggage("user=1,tenant=acme")), Ok(None));
        assert_eq!(decode(std::iter::empty::<&[u8]>), Ok(None));
    }

    #[test]
    fn inject_keeps_other_members_and_replaces_stale_ones() {
        let stale = context();
        let mut map = with_baggage("user=1;prop=x");
        map.append(BAGGAGE, HeaderValue::from_static("tenant=acme"));
        inject(&mut map, &stale);
        let ctx = context();
        inject(&mut map, &ctx);
        assert_eq!(map.get_all(BAGGAGE).iter().count(), 1);
        let value = map[BAGGAGE].to_str().unwrap();
        let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &Carrier(value));
        assert_eq!(cx.baggage().get("user").map(|v| v.as_str()), Some("1"));
        assert_eq!(cx.baggage().get("tenant").map(|v| v.as_str()), Some("acme"));
        assert_eq!(
            cx.baggage().get(TEST_ID).map(|v| v.as_str()),
            Some(ctx.id.as_str())
        );
        assert!(!value.contains(&stale.id), "{value}");
        // Without the LiveCheck headers, the baggage alone gives the newest context.
        for name in headers::EVERY {
            map.remove(name);
        }
        assert_eq!(extract(&map).unwrap().unwrap().id, ctx.id);
    }

    #[test]
    fn the_livecheck_headers_win_over_the_baggage() {
        let ctx = context();
        let other = context();
        let mut map = baggage_only(&other);
        let mut theirs = HeaderMap::new();
        crate::http::inject(&mut theirs, &ctx);
        for name in headers::EVERY {
            if let Some(value) = theirs.get(name) {
                map.insert(name, value.clone());
            }
        }
        assert_eq!(extract(&map).unwrap().unwrap().id, ctx.id);
        // Bad baggage beside good headers: the headers' context.
        map.insert(BAGGAGE, HeaderValue::from_static("livecheck.id=x"));
        assert_eq!(extract(&map).unwrap().unwrap().id, ctx.id);
        // The same context both ways.
        let mut same = HeaderMap::new();
        inject(&mut same, &ctx);
        assert_eq!(extract(&same).unwrap().unwrap(), ctx);
    }

    #[test]
    fn our_members_are_written_as_the_propagator_writes_them() {
        let mut ctx =
            context().arguments(serde_json::json!({"side": "sell, then buy; a=b \"quoted\""}));
        ctx.signature = Some("v2:k1:c2lnbmF0dXJl".into());
        let mut ours = Ours::default();
        let mut entries = Vec::new();
        headers::encode_with(&ctx, |name, value| {
            ours.push(name, value);
            entries.push((name, value.to_owned()));
        });
        let fast = ours.finish().unwrap();
        let slow = merge(std::iter::once(&b"other=1"[..]), &entries).unwrap();
        // The same members, read back by the propagator, as the general path writes them.
        let read = |v: &str| {
            let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &Carrier(v));
            let mut members: Vec<(String, String)> = cx
                .baggage()
                .iter()
                .filter(|(k, _)| k.as_str().starts_with(PREFIX))
                .map(|(k, (v, _))| (k.to_string(), v.to_string()))
                .collect();
            members.sort();
            members
        };
        assert_eq!(read(&fast), read(&slow));
        // id, name, timestamp, expires, arguments.
        assert_eq!(read(&fast).len(), 5);
        // Too long for the baggage: the arguments stay out, the rest goes.
        let mut ours = Ours::default();
        ours.push(headers::TEST_ID, "t1");
        ours.push(headers::TEST_ARGUMENTS, &"x".repeat(MAX_BAGGAGE_LEN));
        assert_eq!(ours.finish().as_deref(), Some("livecheck.id=t1"));
    }

    #[test]
    fn bad_members_are_rejected_naming_the_key() {
        let ctx = context();
        let value = baggage_only(&ctx)[BAGGAGE].to_str().unwrap().to_owned();
        let cx = BaggagePropagator::new().extract_with_context(&Context::new(), &Carrier(&value));
        // Rebuilds the baggage with one member changed (or removed).
        let with = |key: &str, replacement: Option<&str>| -> String {
            let mut members: Vec<String> = cx
                .baggage()
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .map(|(k, (v, _))| {
                    let mut out = Written(None);
                    let one: Baggage = [opentelemetry::KeyValue::new(k.clone(), v.to_string())]
                        .into_iter()
                        .collect();
                    BaggagePropagator::new()
                        .inject_context(&Context::new().with_baggage(one), &mut out);
                    out.0.unwrap()
                })
                .collect();
            if let Some(raw) = replacement {
                members.push(format!("{key}={raw}"));
            }
            members.join(",")
        };
        let err = |baggage: String| extract(&with_baggage(&baggage)).unwrap_err();

        let e = err(with(TEST_ID, Some(&"x".repeat(headers::MAX_VALUE_LEN + 1))));
        assert_eq!(
            e,
            ContextError::Oversized {
                header: TEST_ID,
                len: headers::MAX_VALUE_LEN + 1,
                max: headers::MAX_VALUE_LEN
            }
        );
        assert_eq!(e.reason(), "oversized");
        let e = err(with(TEST_NAME, None));
        assert_eq!(e, ContextError::Missing { header: TEST_NAME });
        assert_eq!(
            e.to_string(),
            "test context header livecheck.name is missing (the other LiveCheck headers are present)"
        );
        let e = err(with(TEST_TIMESTAMP, Some("yesterday")));
        assert!(
            matches!(
                e,
                ContextError::BadTimestamp {
                    header: TEST_TIMESTAMP,
                    ..
                }
            ),
            "{e}"
        );
        let e = err(with(TEST_ARGUMENTS, Some("%7B%22side")));
        assert_eq!(e.reason(), "bad_arguments");
        // Not UTF-8 once percent-decoded: the propagator drops the member.
        let e = err(with(TEST_ARGUMENTS, Some("%FF")));
        assert_eq!(
            e,
            ContextError::NotUtf8 {
                header: TEST_ARGUMENTS
            }
        );
        assert_eq!(e.reason(), "malformed");
        let e = err(with(TEST_ID, Some("two%20words")));
        assert_eq!(e.reason(), "bad_test_id");
        // A whole header past the W3C limit, with our members in it.
        let big = format!("{},pad={}", value, "p".repeat(MAX_BAGGAGE_LEN));
        let e = err(big);
        assert!(
            matches!(
                e,
                ContextError::Oversized {
                    header: BAGGAGE,
                    max: MAX_BAGGAGE_LEN,
                    ..
                }
            ),
            "{e}"
        );
        // Not UTF-8 at all.
        let mut map = HeaderMap::new();
        map.insert(
            BAGGAGE,
            HeaderValue::from_bytes(b"livecheck.id=\xff").unwrap(),
        );
        assert_eq!(
            extract(&map),
            Err(ContextError::NotUtf8 { header: BAGGAGE })
        );
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            "",
            ",",
            ",,,;;;===",
            "livecheck.",
            "livecheck.id",
            "livecheck.id=",
            "=livecheck.id",
            "livecheck.id=a=b",
            "livecheck.id=%",
            "livecheck.id=%zz;;;,livecheck.name",
            "livecheck.timestamp=2020-05-01T12:30:00Z,livecheck.expires=1999",
            " livecheck.id = t , livecheck.name = c ",
        ] {
            let _ = extract(&with_baggage(raw));
        }
        let mut map = HeaderMap::new();
        for raw in ["livecheck.id=t1", "livecheck.name=c", ""] {
            map.append(BAGGAGE, HeaderValue::from_str(raw).unwrap());
        }
        assert_eq!(
            extract(&map),
            Err(ContextError::Missing {
                header: TEST_TIMESTAMP
            })
        );
    }

    #[test]
    fn arguments_that_do_not_fit_stay_out_of_the_baggage() {
        let ctx = TestContext::new("c", Duration::from_secs(60))
            .arguments(serde_json::json!("\"".repeat(3000)));
        // Their members fill the W3C length limit nearly.
        let theirs = format!("pad={}", "p".repeat(4000));
        let mut map = with_baggage(&theirs);
        inject(&mut map, &ctx);
        for name in headers::EVERY {
            map.remove(name);
        }
        let back = extract(&map).unwrap().unwrap();
        assert_eq!(back.id, ctx.id);
        assert!(back.arguments.is_null());
        assert!(map[BAGGAGE].to_str().unwrap().contains(&theirs));
        // And when nothing of ours fits, their members are still written.
        let theirs = format!("pad={}", "p".repeat(MAX_BAGGAGE_LEN - 10));
        let mut map = with_baggage(&theirs);
        inject(&mut map, &ctx);
        assert_eq!(map[BAGGAGE], theirs.as_str());
    }

    #[test]
    fn a_bad_traceparent_is_ignored() {
        assert_eq!(parse_traceparent(TRACE).as_deref(), Some(TRACE));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let ctx = context();
        let mut map = baggage_only(&ctx);
        map.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let back = extract(&map).unwrap().unwrap();
        assert_eq!(back.traceparent, None);
        assert_eq!(back.trace_id(), None);
    }
}
