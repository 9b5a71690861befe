//! HTTP propagation: a tower layer for axum services (incoming) and a reqwest extension
//! (outgoing).

use std::pin::Pin;
use std::task::{Context, Poll};

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
    let from_headers = headers::decode_counted(|name| {
        let mut values = headers.get_all(header_name(name)).iter();
        match values.next() {
            None => (None, 0),
            Some(first) => (Some(first.as_bytes()), 1 + values.count()),
        }
    });
    baggage::extract(
        from_headers,
        || {
            headers
                .get_all(&BAGGAGE_NAME)
                .iter()
                .map(HeaderValue::as_bytes)
        },
        headers.get(&TRACEPARENT_NAME).map(HeaderValue::as_bytes),
    )
}

/// The header names, lowercase, built once, in the order of [`headers::EVERY`].
static NAMES: [HeaderName; headers::EVERY.len()] = [
    HeaderName::from_static("livecheck-test-id"),
    HeaderName::from_static("livecheck-test-name"),
    HeaderName::from_static("livecheck-test-timestamp"),
    HeaderName::from_static("livecheck-test-expires"),
    HeaderName::from_static("livecheck-test-signature"),
    HeaderName::from_static("livecheck-test-route"),
    HeaderName::from_static("livecheck-test-arguments"),
];

/// `baggage` and `traceparent`, built once: a lookup by `&str` parses the name every time.
static BAGGAGE_NAME: HeaderName = HeaderName::from_static(BAGGAGE);
static TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);

fn header_name(name: &'static str) -> &'static HeaderName {
    let i = headers::EVERY.iter().position(|n| *n == name).unwrap_or(0);
    &NAMES[i]
}

/// Writes `context` (and its signature, route and arguments, if any: see
/// [`headers::encode_with`]) into HTTP headers: the LiveCheck headers, and the `livecheck.*`
/// members merged into the `baggage` header (its other members kept), plus the context's
/// `traceparent` when the headers have none (see [`crate::baggage`]).
pub fn inject(headers: &mut HeaderMap, context: &TestContext) {
    let merged = if headers.contains_key(&BAGGAGE_NAME) {
        let mut entries = Vec::with_capacity(headers::EVERY.len());
        headers::encode_with(context, |name, value| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(header_name(name), value);
            }
            entries.push((name, value.to_owned()));
        });
        let merged = baggage::merge(
            headers
                .get_all(&BAGGAGE_NAME)
                .iter()
                .map(HeaderValue::as_bytes),
            &entries,
        );
        headers.remove(&BAGGAGE_NAME);
        merged
    } else {
        // The usual case: one pass writes the headers and our members.
        let mut ours = baggage::Ours::default();
        headers::encode_with(context, |name, value| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(header_name(name), value);
            }
            ours.push(name, value);
        });
        ours.finish()
    };
    if let Some(value) = merged.and_then(|v| HeaderValue::try_from(v).ok()) {
        headers.insert(&BAGGAGE_NAME, value);
    }
    if let Some(traceparent) = &context.traceparent {
        if !headers.contains_key(&TRACEPARENT_NAME) {
            if let Ok(value) = HeaderValue::from_str(traceparent) {
                headers.insert(&TRACEPARENT_NAME, value);
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
        let mut map = HeaderMap::with_capacity(8);
        inject(&mut map, &context);
        // Blind to the request's own `traceparent`: leave it be.
        map.remove(TRACEPARENT);
        self.headers(map)
    }
}
