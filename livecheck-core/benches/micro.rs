//! Micro benchmarks of the core's per-request costs, with criterion (confidence intervals,
//! outlier analysis, comparison with the previous run): the test-context header round trip
//! (Kafka record headers and HTTP headers, inject and extract, without and with a route;
//! goal at most 300 ns each) and `Signal::send` outside a test (the cost every service pays
//! on every request; goal a few nanoseconds), and the decoding of a test record as the runner
//! reads it (`test record decode`). `http floor` is the baseline of `http inject`: the same
//! headers inserted one by one into a fresh map, what `http`'s map costs through its
//! inserts; `kafka floor` that of `kafka extract`: the same headers read through rdkafka,
//! what reading alone costs. `http inject` writes into a new request's empty map, filling in
//! a copy of a template (no name hashed, no slot probed: work its floor does); `http inject
//! into a request` into a request that has headers of its own, one insert per header,
//! against `http floor into a request`. The floors are baselines, not strict floors: they
//! run in the same process as what they are compared with, so they show how fast the
//! machine is that day. After criterion's figures the bench prints each against its floor,
//! timed in alternating blocks (`http inject / http floor: x.xx`), the ratio to compare
//! from machine to machine. The allocation counts and the broker-bound sections stay in the
//! `core` bench.
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
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};
use livecheck_core::{Signal, TestContext};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage, Timestamp};

static STEP: Signal<u64> = Signal::new("bench.micro", "step");

/// One context's headers, written once, and the four operations a bench and its floor time
/// on them: shared by the criterion benches and the interleaved ratios.
struct Fixture {
    context: TestContext,
    /// A record carrying the context's Kafka headers.
    message: OwnedMessage,
    /// The context's HTTP headers.
    http_headers: HeaderMap,
    /// The names and values `http inject` writes, for `http floor` to copy.
    written: Vec<(HeaderName, Vec<u8>)>,
    /// An outgoing request's own headers, before the context's are added: `inject` writes
    /// into an empty map by filling in a template, into this one header by header.
    request: HeaderMap,
}

impl Fixture {
    fn new(context: TestContext) -> Self {
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(context.partition_key().as_bytes().to_vec()),
            "bench-topic".to_owned(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(livecheck_core::kafka::inject_context(
                OwnedHeaders::new_with_capacity(4),
                &context,
            )),
        );
        assert!(
            matches!(livecheck_core::kafka::extract(&message), Ok(Some(ref c)) if c.id == context.id && c.route == context.route),
            "the Kafka round trip gives the context back"
        );
        let mut http_headers = HeaderMap::new();
        livecheck_core::http::inject(&mut http_headers, &context);
        assert!(
            matches!(livecheck_core::http::extract(&http_headers), Ok(Some(ref c)) if c.id == context.id && c.route == context.route),
            "the HTTP round trip gives the context back"
        );
        let written = http_headers
            .iter()
            .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
            .collect();
        Self {
            context,
            message,
            http_headers,
            written,
            request: HeaderMap::from_iter([
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (ACCEPT, HeaderValue::from_static("*/*")),
                (USER_AGENT, HeaderValue::from_static("bench/1.0")),
            ]),
        }
    }

    fn kafka_extract(&self) -> Option<Option<TestContext>> {
        livecheck_core::kafka::extract(black_box(&self.message)).ok()
    }

    /// The floor of any extract: the same headers read through rdkafka (each name measured
    /// and checked as UTF-8), without LiveCheck's work (matching, decoding, the context's
    /// strings).
    fn kafka_floor(&self) -> usize {
        black_box(&self.message).headers().map_or(0, |headers| {
            headers
                .iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum()
        })
    }

    fn http_inject(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        livecheck_core::http::inject(&mut headers, black_box(&self.context));
        headers
    }

    /// `http inject` into a copy of a request's own headers (the copy timed too, as in its
    /// floor).
    fn http_inject_into_request(&self) -> HeaderMap {
        let mut headers = black_box(&self.request).clone();
        livecheck_core::http::inject(&mut headers, black_box(&self.context));
        headers
    }

    /// The baseline of an inject: the same names and values inserted one by one into a fresh
    /// map, without LiveCheck's work (formatting the times, the baggage). Not a strict floor:
    /// the inject into an empty map fills in a template instead, skipping the hashing and
    /// probing of these inserts, and measures below it.
    fn http_floor(&self) -> HeaderMap {
        self.copy_written(HeaderMap::new())
    }

    /// The baseline of `http inject into a request`: the same names and values copied into a
    /// copy of the request's headers.
    fn http_floor_into_request(&self) -> HeaderMap {
        self.copy_written(black_box(&self.request).clone())
    }

    fn copy_written(&self, mut headers: HeaderMap) -> HeaderMap {
        for (name, value) in black_box(&self.written) {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(name.clone(), value);
            }
        }
        headers
    }
}

/// The contexts the header benches write and read: a plain one, and one routed by a business
/// key (one header, and one baggage member, more).
fn fixtures() -> [(&'static str, Fixture); 2] {
    let plain = TestContext::new("bench.micro", Duration::from_secs(3600));
    let routed = plain.clone().route("user-7");
    [("", Fixture::new(plain)), (" routed", Fixture::new(routed))]
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    for (suffix, fixture) in &fixtures() {
        group.bench_function(format!("kafka inject{suffix}"), |b| {
            b.iter(|| {
                livecheck_core::kafka::inject_context(
                    OwnedHeaders::new_with_capacity(4),
                    black_box(&fixture.context),
                )
            })
        });
        group.bench_function(format!("kafka extract{suffix}"), |b| {
            b.iter(|| fixture.kafka_extract())
        });
        group.bench_function(format!("kafka floor{suffix}"), |b| {
            b.iter(|| fixture.kafka_floor())
        });
        group.bench_function(format!("http inject{suffix}"), |b| {
            b.iter(|| fixture.http_inject())
        });
        group.bench_function(format!("http floor{suffix}"), |b| {
            b.iter(|| fixture.http_floor())
        });
        group.bench_function(format!("http inject into a request{suffix}"), |b| {
            b.iter(|| fixture.http_inject_into_request())
        });
        group.bench_function(format!("http floor into a request{suffix}"), |b| {
            b.iter(|| fixture.http_floor_into_request())
        });
        group.bench_function(format!("http extract{suffix}"), |b| {
            b.iter(|| livecheck_core::http::extract(black_box(&fixture.http_headers)).ok())
        });
    }
    group.finish();
}

/// Pairs of blocks in the interleaved comparison.
const PAIRS: usize = 40;
/// Calls per block.
const PER_BLOCK: u32 = 10_000;

/// Nanoseconds per call of `f`, over [`PER_BLOCK`] calls.
fn block<R>(f: impl Fn() -> R) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_BLOCK {
        black_box(f());
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(PER_BLOCK)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match (values.get(mid.wrapping_sub(1)), values.get(mid)) {
        (Some(low), Some(high)) if values.len() % 2 == 0 => f64::midpoint(*low, *high),
        (_, Some(middle)) => *middle,
        _ => f64::NAN,
    }
}

/// `what` against its floor, timed in alternating blocks so that both see the machine at the
/// same speed (criterion times one, then the other; on a shared VM times moved by up to 1.9x
/// between runs minutes apart): the median of the blocks' ratios, and each side's median.
fn interleaved<A, B>(what: &str, floor: &str, a: impl Fn() -> A, b: impl Fn() -> B) {
    let (mut ours, mut floors, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..PAIRS {
        // Each first in turn, so that neither always follows the other.
        let (x, y) = if pair % 2 == 0 {
            (block(&a), block(&b))
        } else {
            let y = block(&b);
            (block(&a), y)
        };
        ours.push(x);
        floors.push(y);
        ratios.push(x / y);
    }
    println!(
        "{what} / {floor}: {:.2}   ({what} {:.0} ns, {floor} {:.0} ns; medians of {PAIRS} pairs of blocks of {PER_BLOCK}, each first in turn)",
        median(ratios),
        median(ours),
        median(floors),
    );
}

/// The ids of the benches the ratios compare, as criterion names them.
const COMPARED: [&str; 12] = [
    "headers/http inject",
    "headers/http floor",
    "headers/http inject into a request",
    "headers/http floor into a request",
    "headers/kafka extract",
    "headers/kafka floor",
    "headers/http inject routed",
    "headers/http floor routed",
    "headers/http inject into a request routed",
    "headers/http floor into a request routed",
    "headers/kafka extract routed",
    "headers/kafka floor routed",
];

/// Whether to time the ratios: under `cargo bench` (which passes `--bench`), unless criterion
/// only lists, tests, profiles or loads saved results (`--list`, `--test`, `--ignored`,
/// `--profile-time`, `--load-baseline`), or its filter (a regular expression, as criterion
/// reads it; the whole id with `--exact`) matches none of the compared benches.
fn ratios_wanted() -> bool {
    // criterion's options that take a value: that value is not the filter. (A value after
    // combined short flags, `-vs base`, is taken for one: the ratios are then left out.)
    const WITH_VALUE: [&str; 19] = [
        "-c",
        "--color",
        "--colour",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--format",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let given = |name: &str| {
        args.iter().any(|arg| {
            arg == name
                || arg
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    };
    let skipped = [
        "--list",
        "--test",
        "--ignored",
        "--profile-time",
        "--load-baseline",
    ];
    if !given("--bench") || skipped.iter().any(|name| given(name)) {
        return false;
    }
    let mut filter = None;
    let mut value_next = false;
    for arg in &args {
        if std::mem::take(&mut value_next) {
            continue;
        }
        if WITH_VALUE.contains(&arg.as_str()) {
            value_next = true;
        } else if !arg.starts_with('-') {
            filter = Some(arg.as_str());
        }
    }
    let Some(filter) = filter else {
        return true;
    };
    if given("--exact") {
        return COMPARED.contains(&filter);
    }
    // criterion refuses a filter that is not a regular expression: nothing runs then.
    regex::Regex::new(filter).is_ok_and(|filter| COMPARED.iter().any(|id| filter.is_match(id)))
}

/// The ratios to compare from machine to machine: what LiveCheck adds to the cost of the
/// carrier's own work (see [`ratios_wanted`] for when).
fn ratios() {
    if !ratios_wanted() {
        return;
    }
    println!("\nInterleaved against the floors:");
    for (suffix, fixture) in &fixtures() {
        interleaved(
            &format!("http inject{suffix}"),
            &format!("http floor{suffix}"),
            || fixture.http_inject(),
            || fixture.http_floor(),
        );
        interleaved(
            &format!("http inject into a request{suffix}"),
            &format!("http floor into a request{suffix}"),
            || fixture.http_inject_into_request(),
            || fixture.http_floor_into_request(),
        );
        interleaved(
            &format!("kafka extract{suffix}"),
            &format!("kafka floor{suffix}"),
            || fixture.kafka_extract(),
            || fixture.kafka_floor(),
        );
    }
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

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
