//! Micro benchmarks of the core's per-request costs, with criterion (confidence intervals,
//! outlier analysis, comparison with the previous run): the test-context header round trip
//! (Kafka record headers and HTTP headers, inject and extract, without and with a route;
//! goal at most 300 ns each) and `Signal::send` outside a test (the cost every service pays
//! on every request; goal a few nanoseconds), and the decoding of a test record as the runner
//! reads it (`test record decode`). `http floor` is the baseline of `http inject`:
//! the same headers copied into a fresh map, what `http`'s map alone costs; `kafka floor`
//! that of `kafka extract`: the same headers read through rdkafka, what reading alone costs.
//! The floors run in the same process as what they bound, so they show how fast the machine
//! is that day. The allocation counts and the broker-bound sections stay in the `core`
//! bench.
//!
//! ```text
//! cargo bench -p livecheck-core --bench micro
//! ```
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use livecheck_core::{Signal, TestContext};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage, Timestamp};

static STEP: Signal<u64> = Signal::new("bench.micro", "step");

fn headers(c: &mut Criterion) {
    let plain = TestContext::new("bench.micro", Duration::from_secs(3600));
    // A test routed by a business key: one header (and baggage member) more.
    let routed = plain.clone().route("user-7");
    let mut group = c.benchmark_group("headers");
    for (suffix, context) in [("", &plain), (" routed", &routed)] {
        group.bench_function(format!("kafka inject{suffix}"), |b| {
            b.iter(|| {
                livecheck_core::kafka::inject_context(
                    OwnedHeaders::new_with_capacity(4),
                    black_box(context),
                )
            })
        });
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(context.partition_key().as_bytes().to_vec()),
            "bench-topic".to_owned(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(livecheck_core::kafka::inject_context(
                OwnedHeaders::new_with_capacity(4),
                context,
            )),
        );
        assert!(
            matches!(livecheck_core::kafka::extract(&message), Ok(Some(ref c)) if c.id == context.id && c.route == context.route),
            "the Kafka round trip gives the context back"
        );
        group.bench_function(format!("kafka extract{suffix}"), |b| {
            b.iter(|| livecheck_core::kafka::extract(black_box(&message)).ok())
        });
        // The floor of any extract: the same headers read through rdkafka (each name
        // measured and checked as UTF-8), without LiveCheck's work (matching, decoding,
        // the context's strings).
        group.bench_function(format!("kafka floor{suffix}"), |b| {
            b.iter(|| {
                black_box(&message).headers().map_or(0, |headers| {
                    headers
                        .iter()
                        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                        .sum::<usize>()
                })
            })
        });
        group.bench_function(format!("http inject{suffix}"), |b| {
            b.iter(|| {
                let mut headers = HeaderMap::new();
                livecheck_core::http::inject(&mut headers, black_box(context));
                headers
            })
        });
        let mut http_headers = HeaderMap::new();
        livecheck_core::http::inject(&mut http_headers, context);
        assert!(
            matches!(livecheck_core::http::extract(&http_headers), Ok(Some(ref c)) if c.id == context.id && c.route == context.route),
            "the HTTP round trip gives the context back"
        );
        // The floor of any inject: the same names and values copied into a fresh map, as
        // `http` does it, without LiveCheck's work (formatting the times, the baggage).
        let written: Vec<_> = http_headers
            .iter()
            .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
            .collect();
        group.bench_function(format!("http floor{suffix}"), |b| {
            b.iter(|| {
                let mut headers = HeaderMap::new();
                for (name, value) in black_box(&written) {
                    if let Ok(value) = HeaderValue::from_bytes(value) {
                        headers.insert(name.clone(), value);
                    }
                }
                headers
            })
        });
        group.bench_function(format!("http extract{suffix}"), |b| {
            b.iter(|| livecheck_core::http::extract(black_box(&http_headers)).ok())
        });
    }
    group.finish();
}

/// A test record's payload as the runner reads it: the `TestContext` a client registers,
/// with its two times as chrono writes them.
fn test_record(c: &mut Criterion) {
    let context = TestContext::with_id(
        "3f0b6c1e-5d2a-4c8e-9b7a-0e1d2c3b4a59",
        "orders.place_order",
        Duration::from_secs(600),
    )
    .arguments(serde_json::json!("sell"));
    let payload = serde_json::to_vec(&context).expect("a context encodes");
    c.bench_function("test record decode", |b| {
        b.iter(|| black_box(serde_json::from_slice::<TestContext>(black_box(&payload))).is_ok())
    });
}

fn noop_send(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function("Signal::send outside a test (polled once)", |b| {
        b.iter(|| {
            let value = black_box(7u64);
            let send = pin!(STEP.send(&value));
            black_box(send.poll(&mut cx).is_ready())
        })
    });
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared; criterion's intervals say how much that matters.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = headers, test_record, noop_send
}
criterion_main!(benches);
