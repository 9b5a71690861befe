//! W3C Baggage and Trace Context on the embedded broker: a test carried through an HTTP hop
//! and a Kafka hop by a service that knows only OpenTelemetry's propagators, the trace id in
//! the report, and the Kafka helpers' merging of the `baggage` header.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::HeaderMap;
use livecheck_core::http::{RequestBuilderExt as _, TestContextLayer};
use livecheck_core::{
    baggage, ensure_eq, kafka, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner,
    RunnerConfig, Signal, Suite, TestContext, Topics, Trigger, Verdict,
};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator as _,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Timestamp;
use tokio::sync::mpsc;

const CASE: &str = "baggage.otel_hops";
static CONSUMED: Signal<String> = Signal::new(CASE, "consumed");

const TRIGGERED: &str = "baggage.triggered";
static HANDLED: Signal<()> = Signal::new(TRIGGERED, "handled");

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One broker, one client and one runner per test, with topics named for the test.
struct Fixture {
    client: LiveCheck,
    runner: Runner,
    orders_topic: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Last: clients must close before their broker goes.
    _broker: EmbeddedBroker,
}

impl Fixture {
    async fn new(cases: Vec<Case>) -> Self {
        let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
        let topics = Topics::with_prefix(&prefix);
        let orders_topic = format!("{prefix}orders");
        let broker = EmbeddedBroker::with_topics(&topics, &[&orders_topic], 2).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka, topics).unwrap();
        let runner = Runner::new(
            Suite::new(cases).unwrap(),
            client.clone(),
            RunnerConfig::default(),
        );
        let stop = support::start_runner(&runner).await;
        Self {
            client,
            runner,
            orders_topic,
            stop: Some(stop),
            _broker: broker,
        }
    }

    async fn report(&self, rx: tokio::sync::oneshot::Receiver<Arc<Report>>) -> Arc<Report> {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("no report within 30 s")
            .expect("runner dropped the watcher")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What an OpenTelemetry-instrumented service propagates: trace context and baggage.
fn otel_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// OpenTelemetry's view of incoming HTTP headers.
struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// OpenTelemetry's view of outgoing Kafka record headers.
#[derive(Default)]
struct RecordHeaders(Vec<(String, String)>);

impl Injector for RecordHeaders {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Service A, OpenTelemetry only: no LiveCheck layer; it copies the trace context and the
/// baggage of each request into the record it produces, with OpenTelemetry's propagators.
async fn start_otel_only_service(fx: &Fixture) -> String {
    let producer: FutureProducer = fx.client.kafka().producer_config().create().unwrap();
    let topic = fx.orders_topic.clone();
    let app = Router::new().route(
        "/order",
        get(move |request_headers: HeaderMap| {
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                assert!(livecheck_core::current_test().is_none());
                let propagator = otel_propagator();
                let cx = propagator.extract(&HttpHeaders(&request_headers));
                let mut carried = RecordHeaders::default();
                propagator.inject_context(&cx, &mut carried);
                let record_headers =
                    carried
                        .0
                        .iter()
                        .fold(OwnedHeaders::new(), |out, (key, value)| {
                            out.insert(Header {
                                key,
                                value: Some(value.as_bytes()),
                            })
                        });
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .key("order")
                            .payload("sell")
                            .headers(record_headers),
                        Duration::from_secs(5),
                    )
                    .await
                    .map_err(|(e, _)| e.to_string())
                    .unwrap();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Service B: a Kafka consumer that restores the context with LiveCheck's helper and
/// signals. Sends the header names of each record it reads to `seen`.
fn start_consumer_service(fx: &Fixture, seen: mpsc::UnboundedSender<Vec<String>>) {
    let consumer: StreamConsumer = fx
        .client
        .kafka()
        .client_config(&[("group.id", "service-b"), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..2 {
        list.add_partition_offset(&fx.orders_topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let client = fx.client.clone();
    tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                continue;
            };
            let names = msg
                .headers()
                .map(|h| h.iter().map(|h| h.key.to_owned()).collect())
                .unwrap_or_default();
            let _ = seen.send(names);
            client
                .scope_message(&msg, async {
                    // The test and its trace, as this service got them.
                    let seen = livecheck_core::current_test()
                        .map(|c| format!("{} {}", c.id, c.trace_id().unwrap_or("no-trace")))
                        .unwrap_or_default();
                    CONSUMED.send(&seen).await;
                })
                .await;
        }
    });
}

fn otel_hops_case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(20))
        .expect(|run: Run, (): ()| async move {
            let seen = run.wait(&CONSUMED).await?;
            ensure_eq!(
                seen,
                format!("{} {TRACE_ID}", run.test_id()),
                "the consumer did not get the test and its trace"
            );
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_carries_the_test_through_hops_that_only_propagate_opentelemetry() {
    let fx = Fixture::new(vec![otel_hops_case()]).await;
    let base = start_otel_only_service(&fx).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    start_consumer_service(&fx, seen_tx);

    let context = TestContext::new(CASE, Duration::from_secs(60)).traceparent(TRACEPARENT);
    let report = fx.runner.report_for(&context.id);
    fx.client.register_test(&context).unwrap();
    let response = fx
        .client
        .scope(context.clone(), async {
            reqwest::Client::new()
                .get(format!("{base}/order"))
                // Baggage of the caller's own: kept beside the test's members.
                .header("baggage", "tenant=acme")
                .test_context()
                .send()
                .await
        })
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The record carried nothing but what OpenTelemetry propagates.
    let names = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        names
            .iter()
            .all(|n| ["baggage", "traceparent", "tracestate"].contains(&n.as_str())),
        "{names:?}"
    );
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.trace_id.as_deref(), Some(TRACE_ID));
    assert_eq!(fx.client.counters().contexts_rejected(), 0);
}

/// Service C: behind the LiveCheck layer, its trigger registers the test it is handed.
async fn start_triggering_service(client: LiveCheck) -> String {
    let trigger_client = client.clone();
    let app = Router::new()
        .route(
            "/handle",
            get(move || {
                let client = trigger_client.clone();
                async move {
                    if Trigger::new(TRIGGERED)
                        .maybe_trigger(&client, &())
                        .is_some()
                    {
                        HANDLED.send(&()).await;
                    }
                    "ok"
                }
            }),
        )
        .layer(TestContextLayer::new(client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/handle")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_holds_the_trace_id_of_the_stimulus() {
    let case = Case::new(TRIGGERED)
        .timeout(Duration::from_secs(20))
        .expect(|run: Run, (): ()| async move {
            run.wait(&HANDLED).await?;
            Ok(())
        });
    let fx = Fixture::new(vec![case]).await;
    let url = start_triggering_service(fx.client.clone()).await;
    let http = reqwest::Client::new();

    for traceparent in [Some(TRACEPARENT), None] {
        // As a harness's stimulus does: the test context in the request, not registered.
        let context = TestContext::new(TRIGGERED, Duration::from_secs(60));
        let report = fx.runner.report_for(&context.id);
        fx.client
            .scope(context, async {
                let mut request = http.get(&url);
                if let Some(traceparent) = traceparent {
                    request = request.header("traceparent", traceparent);
                }
                request.test_context().send().await.unwrap()
            })
            .await;
        let report = fx.report(report).await;
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
        assert_eq!(
            report.trace_id.as_deref(),
            traceparent.map(|_| TRACE_ID),
            "{traceparent:?}"
        );
    }
}

/// A consumed record with `record_headers`.
fn message(record_headers: OwnedHeaders) -> OwnedMessage {
    OwnedMessage::new(
        Some(b"{}".to_vec()),
        None,
        "orders".into(),
        Timestamp::NotAvailable,
        0,
        7,
        Some(record_headers),
    )
}

#[test]
fn the_kafka_helpers_merge_the_baggage_and_read_it_alone() {
    let context = TestContext::new(CASE, Duration::from_secs(60))
        .arguments(serde_json::json!({"side": "sell"}))
        .traceparent(TRACEPARENT);
    let theirs = OwnedHeaders::new()
        .insert(Header {
            key: "baggage",
            value: Some("tenant=acme"),
        })
        .insert(Header {
            key: "other",
            value: Some("kept"),
        });
    let injected = kafka::inject_context(theirs, &context);
    let list: Vec<(String, String)> = injected
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    let count = |name: &str| list.iter().filter(|(n, _)| n == name).count();
    assert_eq!(
        (count("baggage"), count("other"), count("traceparent")),
        (1, 1, 1),
        "{list:?}"
    );
    let baggage_value = &list.iter().find(|(n, _)| n == "baggage").unwrap().1;
    assert!(baggage_value.contains("tenant=acme"), "{baggage_value}");
    assert!(baggage_value.contains(baggage::TEST_ID), "{baggage_value}");

    // Only the W3C headers on the record: the same context comes back.
    let w3c = list
        .iter()
        .filter(|(n, _)| n == "baggage" || n == "traceparent")
        .fold(OwnedHeaders::new(), |out, (key, value)| {
            out.insert(Header {
                key,
                value: Some(value),
            })
        });
    let back = kafka::extract(&message(w3c)).unwrap().unwrap();
    assert_eq!(back.id, context.id);
    assert_eq!(back.arguments, context.arguments);
    assert_eq!(back.trace_id(), Some(TRACE_ID));

    // A malformed member is a rejected context, never a panic.
    let bad = OwnedHeaders::new().insert(Header {
        key: "baggage",
        value: Some(format!("{}=x,{}=c", baggage::TEST_ID, baggage::TEST_NAME).as_str()),
    });
    assert_eq!(
        kafka::extract(&message(bad)),
        Err(livecheck_core::ContextError::Missing {
            header: baggage::TEST_TIMESTAMP
        })
    );
    // A record with neither the LiveCheck headers nor baggage is not a test.
    assert_eq!(kafka::extract(&message(OwnedHeaders::new())), Ok(None));
}
