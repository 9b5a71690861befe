//! HTTP propagation: a tower layer for axum services (incoming) and a reqwest extension
//! (outgoing).

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::Entry;
use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower::{Layer, Service};

use crate::baggage::{self, BAGGAGE, TRACEPARENT};
use crate::client::LiveCheck;
use crate::context::{current_test, TestContext};
use crate::headers::{self, ContextError};

/// Reads a test context (and its signature, route and arguments, if any) from HTTP headers
/// (names are case-insensitive; a context header sent twice rejects the context): from the
/// LiveCheck headers and from the `livecheck.*` members of `baggage`, the LiveCheck headers
/// winning when both are there (see [`crate::baggage`]), with the `traceparent`, if any.
/// Checks the form, not the signature: [`LiveCheck::accept`] does.
pub fn extract(headers: &HeaderMap) -> Result<Option<TestContext>, ContextError> {
    // One pass over the headers, each name matched by its bytes: cheaper than a lookup per
    // context header (each hashes the name) for all but very large requests (measured on a
    // request without a context: 74 ns with 10 headers, 130 ns with 30; 205 ns either way
    // with the lookups).
    let mut found = headers::Found::default();
    let mut traceparent = None;
    for (name, value) in headers {
        let name = name.as_str();
        if let Some(i) = headers::index_of(name.as_bytes()) {
            found.add(i, value.as_bytes());
        } else if traceparent.is_none() && name == TRACEPARENT {
            traceparent = Some(value.as_bytes());
        }
    }
    baggage::extract(
        headers::decode_found(&found),
        || {
            headers
                .get_all(&BAGGAGE_NAME)
                .iter()
                .map(HeaderValue::as_bytes)
        },
        traceparent,
    )
}

/// `baggage`, built once: a lookup by `&str` parses the name every time.
static BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);

/// The name of header `EVERY[i]`, owned: built at compile time, it is a copy (a clone of a
/// static name calls through a vtable, and cost 10 % of an inject).
fn owned_name(i: usize) -> HeaderName {
    match i {
        0 => const { HeaderName::from_static(headers::LOWERCASE[0]) },
        1 => const { HeaderName::from_static(headers::LOWERCASE[1]) },
        2 => const { HeaderName::from_static(headers::LOWERCASE[2]) },
        3 => const { HeaderName::from_static(headers::LOWERCASE[3]) },
        4 => const { HeaderName::from_static(headers::LOWERCASE[4]) },
        5 => const { HeaderName::from_static(headers::LOWERCASE[5]) },
        _ => const { HeaderName::from_static(headers::LOWERCASE[6]) },
    }
}

/// The header values of `parts`, in order, sharing one buffer: two allocations (the buffer,
/// and the record of its sharing) where a value of its own each took one; 5–12 % less time
/// per inject, measured (docs/performance.md, "One buffer for the values"). An `Err` for a
/// part that is not a valid header value (a case name or route from outside may not be: that
/// header is then left out).
fn shared_values<'a, I>(
    parts: I,
) -> impl Iterator<Item = Result<HeaderValue, InvalidHeaderValue>> + use<'a, I>
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    let mut all = Vec::with_capacity(parts.clone().map(<[u8]>::len).sum());
    parts.clone().for_each(|part| all.extend_from_slice(part));
    let all = Bytes::from(all);
    let mut start = 0;
    parts.map(move |part| {
        let end = start + part.len();
        let value = HeaderValue::from_maybe_shared(all.slice(start..end));
        start = end;
        value
    })
}

/// Where the optional headers start in [`headers::EVERY`]: the signature, the route and the
/// arguments follow the four every context has ([`headers::ALL`]).
const FIRST_OPTIONAL: usize = headers::ALL.len();

/// The bit of a template's index that says it ends with `traceparent`, after the bits of
/// the optional LiveCheck headers.
const WITH_TRACEPARENT: usize = 1 << (headers::EVERY.len() - FIRST_OPTIONAL);

/// The headers `inject` writes into an empty map, with empty values: one map for each set of
/// optional headers (bit `k` of the index: [`headers::EVERY`]`[FIRST_OPTIONAL + k]`; then
/// [`WITH_TRACEPARENT`]), each holding the LiveCheck headers in their order, `baggage`, and
/// `traceparent` if its bit is set. A clone keeps each name's hash, so filling one in spares
/// the hashing and probing of an insert per header (hashing the names, FNV over their bytes,
/// was 18–20 % of an inject in profiles).
static TEMPLATES: LazyLock<[HeaderMap; 2 * WITH_TRACEPARENT]> = LazyLock::new(|| {
    std::array::from_fn(|set| {
        let mut map = HeaderMap::new();
        for i in 0..headers::EVERY.len() {
            if i < FIRST_OPTIONAL || set & (1 << (i - FIRST_OPTIONAL)) != 0 {
                map.insert(owned_name(i), HeaderValue::from_static(""));
            }
        }
        map.insert(&BAGGAGE_NAME, HeaderValue::from_static(""));
        if set & WITH_TRACEPARENT != 0 {
            map.insert(TRACEPARENT, HeaderValue::from_static(""));
        }
        map
    })
});

/// Writes `context` (and its signature, route and arguments, if any: see
/// [`headers::encode_with`]) into HTTP headers: the LiveCheck headers, and the `livecheck.*`
/// members merged into the `baggage` header (its other members kept), plus the context's
/// `traceparent` when the headers have none (see [`crate::baggage`]).
pub fn inject(headers: &mut HeaderMap, context: &TestContext) {
    let traceparent = context.traceparent.as_deref();
    headers::encode_values(context, |values| {
        // A new request's map is empty: the headers' names are then those of a template.
        if headers.is_empty() && fill_template(headers, values, traceparent) {
            return;
        }
        insert_each(headers, values);
        if let Some(traceparent) = traceparent {
            // One lookup (hashing the name) for both the test and the insert.
            if let Entry::Vacant(entry) =
                headers.entry(const { HeaderName::from_static(TRACEPARENT) })
            {
                if let Ok(value) = HeaderValue::from_str(traceparent) {
                    entry.insert(value);
                }
            }
        }
    });
}

/// Makes the empty map `headers` a copy of the template for `values` (in
/// [`headers::encode_values`]'s order) and `traceparent`, with their values filled in.
/// False, with `headers` empty, when a value is not a valid header value or the `baggage`
/// value is not written: the inserts then leave those out.
fn fill_template(
    headers: &mut HeaderMap,
    values: &[(usize, &[u8])],
    traceparent: Option<&str>,
) -> bool {
    let set = values
        .iter()
        .filter_map(|&(i, _)| i.checked_sub(FIRST_OPTIONAL))
        .fold(0, |set, k| set | 1 << k)
        | if traceparent.is_some() {
            WITH_TRACEPARENT
        } else {
            0
        };
    // The template lines up with `values` when it has one header more, the `baggage` (and
    // the `traceparent`).
    let Some(template) = TEMPLATES
        .get(set)
        .filter(|template| template.len() == values.len() + 1 + usize::from(traceparent.is_some()))
    else {
        return false;
    };
    *headers = template.clone();
    #[cfg(test)]
    tests::TEMPLATE_USED.set(true);
    let filled = baggage::with_ours(values, |ours| {
        let Some(ours) = ours else {
            return false;
        };
        let parts = values.iter().map(|&(_, value)| value).chain([ours]);
        let mut slots = headers.values_mut();
        shared_values(parts.chain(traceparent.map(str::as_bytes))).all(|value| {
            slots
                .next()
                .zip(value.ok())
                .map(|(slot, value)| *slot = value)
                .is_some()
        })
    });
    if !filled {
        headers.clear();
    }
    filled
}

/// Inserts the headers of `values` (in [`headers::encode_values`]'s order) into `headers`,
/// replacing any there, and merges our `baggage` members with the carrier's.
fn insert_each(headers: &mut HeaderMap, values: &[(usize, &[u8])]) {
    baggage::with_ours(values, |ours| {
        let mut shared = shared_values(values.iter().map(|&(_, value)| value).chain(ours));
        for (&(i, _), value) in values.iter().zip(&mut shared) {
            if let Ok(value) = value {
                headers.insert(owned_name(i), value);
            }
        }
        merge_baggage(headers, values, || shared.next().and_then(Result::ok));
    });
}

/// Writes our `baggage` members (`ours`, written in one pass) into `headers`, merged with the
/// carrier's members (from `values`) when it has a `baggage` header of its own.
fn merge_baggage(
    headers: &mut HeaderMap,
    values: &[(usize, &[u8])],
    ours: impl FnOnce() -> Option<HeaderValue>,
) {
    match headers.entry(const { HeaderName::from_static(BAGGAGE) }) {
        // The usual case: our members alone.
        Entry::Vacant(entry) => {
            if let Some(value) = ours() {
                entry.insert(value);
            }
        }
        // Merged with the carrier's members, in a new `baggage` header.
        Entry::Occupied(entry) => {
            let entries: Vec<_> = values
                .iter()
                .filter_map(|&(i, value)| {
                    let value = std::str::from_utf8(value).ok()?;
                    Some((headers::EVERY[i], value.to_owned()))
                })
                .collect();
            let merged = baggage::merge(entry.iter().map(HeaderValue::as_bytes), &entries);
            drop(entry.remove_entry_mult());
            if let Some(value) = merged.and_then(|v| HeaderValue::try_from(v).ok()) {
                headers.insert(&BAGGAGE_NAME, value);
            }
        }
    }
}

/// A tower layer that scopes each request's handling with the test context of its headers.
/// A malformed context (or, when the client has signing keys, an unsigned, forged, tampered
/// or expired one) is counted on the client, logged, and the request goes on as a non-test
/// request: never an HTTP error.
#[derive(Debug, Clone)]
pub struct TestContextLayer {
    client: LiveCheck,
}

impl TestContextLayer {
    /// A layer whose signals go through `client`.
    pub fn new(client: LiveCheck) -> Self {
        Self { client }
    }
}

impl<S> Layer<S> for TestContextLayer {
    type Service = TestContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TestContextService {
            inner,
            client: self.client.clone(),
        }
    }
}

/// The service of [`TestContextLayer`].
#[derive(Debug, Clone)]
pub struct TestContextService<S> {
    inner: S,
    client: LiveCheck,
}

impl<S, B> Service<Request<B>> for TestContextService<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let decoded = extract(request.headers());
        let context = self.client.accept(decoded, request.uri().path());
        let fut = self.inner.call(request);
        match context {
            Some(context) => {
                let client = self.client.clone();
                Box::pin(async move { client.scope(context, fut).await })
            }
            None => Box::pin(fut),
        }
    }
}

/// Carries the current test context in outgoing reqwest requests.
pub trait RequestBuilderExt {
    /// Adds the current task's test context (if any) to the request's headers.
    #[must_use]
    fn test_context(self) -> Self;
}

impl RequestBuilderExt for reqwest::RequestBuilder {
    /// Adds the LiveCheck headers, the `livecheck.*` baggage members (merged into the
    /// request's `baggage` header: call it after setting your own) and the context's
    /// `traceparent` if the request has none. A request whose body cannot be cloned (a
    /// stream) gets a `baggage` header of its own instead, replacing any set before, and no
    /// `traceparent`.
    fn test_context(self) -> Self {
        let Some(context) = current_test() else {
            return self;
        };
        // Reading the request's headers needs the built request: a clone of the builder, so
        // that a builder that fails keeps its own error.
        if let Some(probe) = self.try_clone() {
            let (client, request) = probe.build_split();
            if let Ok(mut request) = request {
                inject(request.headers_mut(), &context);
                return reqwest::RequestBuilder::from_parts(client, request);
            }
        }
        let mut map = HeaderMap::new();
        inject(&mut map, &context);
        // Blind to the request's own `traceparent`: leave it be.
        map.remove(TRACEPARENT);
        self.headers(map)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    thread_local! {
        /// Whether `fill_template` took a template on this thread (each test has its own).
        pub(super) static TEMPLATE_USED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// `inject` into an empty map, and whether it took a template (even if it then fell back).
    fn inject_new(context: &TestContext) -> (HeaderMap, bool) {
        TEMPLATE_USED.set(false);
        let mut map = HeaderMap::new();
        inject(&mut map, context);
        (map, TEMPLATE_USED.get())
    }

    /// Contexts with every set of optional headers, with and without a trace parent.
    fn every_shape() -> Vec<TestContext> {
        let mut contexts = Vec::new();
        for optional in 0..8 {
            let mut context = TestContext::new("orders.place", Duration::from_secs(60));
            if optional & 1 != 0 {
                // `v2`: a signature that covers the arguments, which then travel with it.
                context.signature = Some("v2;kid=k1;sig=c2lnbmF0dXJl".to_owned());
            }
            if optional & 2 != 0 {
                context = context.route("user-7");
            }
            if optional & 4 != 0 {
                context = context.arguments(serde_json::json!({"side": "buy", "note": "a b,c"}));
            }
            contexts.push(context.clone());
            contexts.push(
                context.traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            );
        }
        contexts
    }

    /// What the per-header inserts write into an empty map.
    fn inserted(context: &TestContext) -> HeaderMap {
        let mut map = HeaderMap::new();
        headers::encode_values(context, |values| insert_each(&mut map, values));
        if let Some(traceparent) = &context.traceparent {
            map.insert(TRACEPARENT, HeaderValue::from_str(traceparent).unwrap());
        }
        map
    }

    /// What the template writes into an empty map, if it does.
    fn from_template(context: &TestContext) -> Option<HeaderMap> {
        let mut map = HeaderMap::new();
        let filled = headers::encode_values(context, |values| {
            fill_template(&mut map, values, context.traceparent.as_deref())
        });
        assert_eq!(filled, !map.is_empty(), "{map:?}");
        filled.then_some(map)
    }

    #[test]
    fn the_template_writes_what_the_inserts_write_in_their_order() {
        let mut sets = std::collections::HashSet::new();
        for context in every_shape() {
            let map = from_template(&context).expect("every shape has its template");
            let inserted = inserted(&context);
            assert!(map.iter().eq(inserted.iter()), "{map:?}\n{inserted:?}");
            sets.insert(
                map.keys()
                    .map(|name| name.as_str().to_owned())
                    .collect::<Vec<_>>(),
            );
            // `inject` takes the template into an empty map.
            let (injected, used) = inject_new(&context);
            assert!(used);
            assert!(injected.iter().eq(map.iter()), "{injected:?}");
            let read = extract(&injected).unwrap().unwrap();
            assert_eq!(
                (
                    &read.id,
                    &read.case,
                    &read.route,
                    &read.signature,
                    &read.traceparent
                ),
                (
                    &context.id,
                    &context.case,
                    &context.route,
                    &context.signature,
                    &context.traceparent
                ),
            );
        }
        // Every template was used, each with another set of headers.
        assert_eq!(sets.len(), TEMPLATES.len());
    }

    #[test]
    fn a_map_with_headers_gets_the_same_ones_and_keeps_its_own() {
        for context in every_shape() {
            let mut map = HeaderMap::new();
            map.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            inject(&mut map, &context);
            assert_eq!(
                map.remove(http::header::CONTENT_TYPE).unwrap(),
                "application/json"
            );
            assert_eq!(map, inserted(&context), "{context:?}");
            // The request's own `traceparent` is kept.
            let mut map = HeaderMap::new();
            map.insert(TRACEPARENT, HeaderValue::from_static("00-theirs"));
            inject(&mut map, &context);
            assert_eq!(map[TRACEPARENT], "00-theirs");
            assert_eq!(
                map.len(),
                inserted(&context).len() + usize::from(context.traceparent.is_none())
            );
        }
    }

    #[test]
    fn a_value_that_is_no_header_value_is_left_out_of_an_empty_map_too() {
        // A case name with a line break: the template is not used, and the inserts leave the
        // name's header out and write the others.
        let context = TestContext::new("orders\nplace", Duration::from_secs(60)).route("user-7");
        assert_eq!(from_template(&context), None);
        let (map, _) = inject_new(&context);
        assert_eq!(map, inserted(&context));
        assert!(!map.contains_key(headers::LOWERCASE[1]), "{map:?}");
        assert_eq!(map[headers::LOWERCASE[5]], "user-7");
        assert!(map.values().all(|value| !value.is_empty()), "{map:?}");
    }

    #[test]
    fn a_bad_traceparent_or_a_baggage_too_long_falls_back_to_the_inserts() {
        // A trace parent with a line break (set by hand: `TestContext::traceparent` checks).
        let mut context = TestContext::new("orders.place", Duration::from_secs(60));
        context.traceparent = Some("00-a\nb".to_owned());
        assert_eq!(from_template(&context), None);
        let (map, used) = inject_new(&context);
        assert!(used);
        assert_eq!(map.len(), 5, "{map:?}");
        assert!(!map.contains_key(TRACEPARENT));
        assert!(map.values().all(|value| !value.is_empty()), "{map:?}");
        // A case name too long for the baggage: the context travels in the LiveCheck headers
        // only, with no empty `baggage` header.
        let context = TestContext::new(
            "x".repeat(baggage::MAX_BAGGAGE_LEN),
            Duration::from_secs(60),
        );
        assert_eq!(from_template(&context), None);
        let (map, _) = inject_new(&context);
        assert_eq!(map, inserted(&context));
        assert!(!map.contains_key(BAGGAGE), "{map:?}");
        assert_eq!(map.len(), 4, "{map:?}");
    }
}
