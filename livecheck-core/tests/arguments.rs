//! Test arguments chosen by the stimulus, end to end on the embedded broker: they travel in
//! the `LiveCheck-Test-Arguments` header through a real axum server (the tower layer and the
//! reqwest extension) and real Kafka record headers; bad argument headers are rejected and
//! counted; a signed context's arguments cannot be changed on the way; and the case checks
//! the stimulus's arguments, not the service's, so a service that changes the side on the
//! way fails.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use livecheck_core::counters::ClientCounters;
use livecheck_core::http::{RequestBuilderExt as _, TestContextLayer};
use livecheck_core::signing::SigningKeys;
use livecheck_core::{
    current_test, ensure_eq, headers, kafka, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report,
    Run, Runner, RunnerConfig, Signal, Suite, Target, TestContext, Topics, Trigger, Verdict,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const CASE: &str = "arguments.place_order";
const SECRET: &str = "the-shared-secret-of-this-test";

/// The side the service saw, as it signals it.
static SIDE_SEEN: Signal<Side> = Signal::new(CASE, "side_seen");
/// The test's arguments as the Kafka consumer saw them in its record's headers.
static ARGUMENTS_AT_CONSUMER: Signal<Value> = Signal::new(CASE, "arguments_at_consumer");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Buy,
    Sell,
}

impl Side {
    fn parse(text: &str) -> Self {
        if text == "buy" {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    fn flipped(self) -> Self {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

fn keys() -> SigningKeys {
    SigningKeys::new("k1", SECRET).unwrap()
}

/// One broker, one client (signing with `keys`, if any), a runner for `cases`, the order
/// service (HTTP) and its Kafka consumer, with topics named for the test.
struct Fixture {
    client: LiveCheck,
    runner: Runner,
    target: Target,
    kafka: KafkaConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Last: clients must close before their broker goes.
    broker: EmbeddedBroker,
}

impl Fixture {
    async fn new(cases: Vec<Case>, keys: Option<SigningKeys>) -> Self {
        let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
        let topics = Topics::with_prefix(&prefix);
        let orders = format!("{prefix}orders");
        let broker = EmbeddedBroker::with_topics(&topics, &[&orders], 4).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let mut client = LiveCheck::new(kafka.clone(), topics).unwrap();
        if let Some(keys) = keys {
            client = client.with_signing(keys);
        }
        let runner = Runner::new(
            Suite::new(cases).unwrap(),
            client.clone(),
            RunnerConfig::default(),
        );
        let stop = support::start_runner(&runner).await;
        let base = start_order_service(&client, &kafka, &orders).await;
        start_order_consumer(&client, &kafka, &orders);
        Self {
            client,
            runner,
            target: Target::new(base),
            kafka,
            stop: Some(stop),
            broker,
        }
    }

    /// What the harness does: the stimulus's arguments on a fresh context, signed after, the
    /// request scoped by it, then the verdict.
    async fn run_once(&self, case: &Case) -> Arc<Report> {
        let stimulus = case.prepare_stimulus().unwrap();
        let context = self.client.sign(
            TestContext::new(case.name(), case.settings().test_expires)
                .arguments(stimulus.arguments().clone()),
        );
        let report = self.runner.report_for(&context.id);
        self.client
            .scope(context, stimulus.send(self.target.clone()))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), report)
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

/// The order service. `GET /order/{side}` is honest; `GET /corrupt/{side}` is a gateway that
/// flips the side and reports its own view consistently (trigger arguments and signal), the
/// bug a check of the service's own arguments cannot see. Both call `maybe_trigger` with
/// their view, signal it, and forward the order to Kafka with the context.
/// `GET /probe` answers the arguments of the request's test (`"none"` outside a test).
async fn start_order_service(client: &LiveCheck, kafka: &KafkaConfig, orders: &str) -> String {
    let producer: FutureProducer = kafka.producer_config().create().unwrap();
    let order = {
        let client = client.clone();
        let orders = orders.to_owned();
        move |side: Side| {
            let client = client.clone();
            let producer = producer.clone();
            let orders = orders.clone();
            async move {
                let Some(context) = Trigger::new(CASE).maybe_trigger(&client, &side) else {
                    return "not a test".to_owned();
                };
                let id = context.id.clone();
                client
                    .scope(context, async {
                        SIDE_SEEN.send(&side).await;
                        producer
                            .send(
                                FutureRecord::to(&orders)
                                    .key(&id)
                                    .payload("order")
                                    .headers(kafka::inject(OwnedHeaders::new())),
                                Duration::from_secs(5),
                            )
                            .await
                            .map_err(|(e, _)| e.to_string())
                            .unwrap();
                    })
                    .await;
                id
            }
        }
    };
    let honest = order.clone();
    let app = Router::new()
        .route(
            "/order/{side}",
            get(move |Path(side): Path<String>| honest(Side::parse(&side))),
        )
        .route(
            "/corrupt/{side}",
            get(move |Path(side): Path<String>| order(Side::parse(&side).flipped())),
        )
        .route(
            "/probe",
            get(|| async {
                current_test().map_or_else(|| "none".to_owned(), |c| c.arguments.to_string())
            }),
        )
        .layer(TestContextLayer::new(client.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The consumer of the orders: it signals the arguments its record's headers carried.
fn start_order_consumer(client: &LiveCheck, kafka: &KafkaConfig, orders: &str) {
    let consumer = assigned_consumer(kafka, orders, 4);
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                continue;
            };
            client
                .scope_message(&msg, async {
                    if let Some(context) = current_test() {
                        ARGUMENTS_AT_CONSUMER.send(&context.arguments).await;
                    }
                })
                .await;
        }
    });
}

fn assigned_consumer(kafka: &KafkaConfig, topic: &str, partitions: i32) -> StreamConsumer {
    let consumer: StreamConsumer = kafka
        .client_config(&[("group.id", "unused"), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    consumer
}

/// The order case: the stimulus places an order on `side` at `path` (`/order` or
/// `/corrupt`), choosing `side` as the test's argument; the service must see that side.
fn order_case(path: &'static str, side: Side) -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(10))
        .stimulus_with(
            move || side,
            move |app: Target, side: Side| async move {
                app.get(&format!("{path}/{}", side.as_str()))
                    .await
                    .map(drop)
            },
        )
        .expect(expect_side)
}

async fn expect_side(run: Run, side: Side) -> Result<(), livecheck_core::CheckError> {
    let seen = run.wait(&SIDE_SEEN).await?;
    ensure_eq!(
        seen,
        side,
        "the service saw another side than the stimulus chose"
    );
    let at_consumer = run.wait(&ARGUMENTS_AT_CONSUMER).await?;
    ensure_eq!(
        at_consumer,
        serde_json::to_value(side).unwrap(),
        "the Kafka hop carried other arguments"
    );
    Ok(())
}

fn counter(counters: &ClientCounters, name: &str) -> u64 {
    counters
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

async fn probe(fx: &Fixture, header_list: &[(&'static str, String)]) -> String {
    let mut request = reqwest::Client::new().get(fx.target.url("/probe"));
    for (name, value) in header_list {
        request = request.header(*name, value);
    }
    request.send().await.unwrap().text().await.unwrap()
}

/// The LiveCheck headers of `context` as the Kafka helpers inject them, read back as a list
/// (without the W3C `baggage` that carries it too).
async fn kafka_header_list(
    client: &LiveCheck,
    context: TestContext,
) -> Vec<(&'static str, String)> {
    use rdkafka::message::Headers as _;
    let injected = client
        .scope(context, async { kafka::inject(OwnedHeaders::new()) })
        .await;
    injected
        .iter()
        .filter_map(|h| {
            let key = headers::EVERY.into_iter().find(|n| *n == h.key)?;
            Some((key, String::from_utf8(h.value.unwrap().to_vec()).unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_travel_through_http_and_kafka_headers() {
    let fx = Fixture::new(vec![order_case("/order", Side::Sell)], None).await;
    let arguments = json!({"side": "sell", "amount": 12.5, "user": "Zoë"});
    let context = TestContext::new(CASE, Duration::from_secs(60)).arguments(arguments.clone());

    // HTTP: the reqwest extension sends them, the tower layer scopes the handler with them.
    let seen = probe_in(&fx, context.clone()).await;
    assert_eq!(serde_json::from_str::<Value>(&seen).unwrap(), arguments);

    // Kafka: the helpers inject them, `accept_message` reads them.
    let list = kafka_header_list(&fx.client, context.clone()).await;
    assert_eq!(
        list.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [
            headers::TEST_ID,
            headers::TEST_NAME,
            headers::TEST_TIMESTAMP,
            headers::TEST_EXPIRES,
            headers::TEST_ARGUMENTS
        ]
    );
    let messages = support::through_kafka(&fx.broker, &fx.kafka, &[list]).await;
    let accepted = fx.client.accept_message(&messages[0]).unwrap();
    assert_eq!(accepted.id, context.id);
    assert_eq!(accepted.arguments, arguments);

    // Null arguments: no header at all, on either transport.
    let plain = TestContext::new(CASE, Duration::from_secs(60));
    assert_eq!(kafka_header_list(&fx.client, plain.clone()).await.len(), 4);
    let seen = probe_in(&fx, plain).await;
    assert_eq!(seen, "null");
    assert_eq!(counter(fx.client.counters(), "contexts_rejected"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_too_long_to_send_are_left_out_and_counted() {
    let fx = Fixture::new(vec![order_case("/order", Side::Sell)], None).await;
    let long = json!({ "note": "x".repeat(headers::MAX_ARGUMENTS_LEN) });
    let context = TestContext::new(CASE, Duration::from_secs(60)).arguments(long);
    let seen = probe_in(&fx, context.clone()).await;
    // The test context goes on, without its arguments.
    assert_eq!(seen, "null");
    assert_eq!(counter(fx.client.counters(), "arguments_not_injected"), 1);
    let list = kafka_header_list(&fx.client, context).await;
    assert_eq!(list.len(), 4, "{list:?}");
    assert_eq!(counter(fx.client.counters(), "arguments_not_injected"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_argument_headers_are_rejected_and_counted() {
    let fx = Fixture::new(vec![order_case("/order", Side::Sell)], None).await;
    let with_arguments = |value: String| {
        let mut list = headers::encode(&TestContext::new(CASE, Duration::from_secs(60)));
        list.push((headers::TEST_ARGUMENTS, value));
        list
    };
    let bad = [
        (
            "contexts_rejected_oversized",
            with_arguments(format!("\"{}\"", "x".repeat(headers::MAX_ARGUMENTS_LEN))),
        ),
        (
            "contexts_rejected_bad_arguments",
            with_arguments(r#"{"side":"sell""#.to_owned()),
        ),
        (
            "contexts_rejected_bad_arguments",
            with_arguments("sell".to_owned()),
        ),
        (
            "contexts_rejected_duplicate_header",
            [
                with_arguments(r#""sell""#.to_owned()),
                vec![(headers::TEST_ARGUMENTS, r#""buy""#.to_owned())],
            ]
            .concat(),
        ),
    ];
    // HTTP: each one is a non-test request, counted by reason.
    for (i, (reason, list)) in bad.iter().enumerate() {
        let before = counter(fx.client.counters(), reason);
        assert_eq!(probe(&fx, list).await, "none", "{reason}: {list:?}");
        assert_eq!(
            counter(fx.client.counters(), reason),
            before + 1,
            "{reason}"
        );
        assert_eq!(
            counter(fx.client.counters(), "contexts_rejected"),
            i as u64 + 1
        );
    }
    // Kafka: the same.
    let lists: Vec<_> = bad.iter().map(|(_, list)| list.clone()).collect();
    let messages = support::through_kafka(&fx.broker, &fx.kafka, &lists).await;
    for (message, (reason, list)) in messages.iter().zip(&bad) {
        let before = counter(fx.client.counters(), reason);
        assert!(
            fx.client.accept_message(message).is_none(),
            "{reason}: {list:?}"
        );
        assert_eq!(
            counter(fx.client.counters(), reason),
            before + 1,
            "{reason}"
        );
    }
    assert_eq!(
        counter(fx.client.counters(), "contexts_rejected"),
        2 * bad.len() as u64
    );
    assert_eq!(
        counter(fx.client.counters(), "contexts_rejected_bad_arguments"),
        4
    );
    // A good value next to them is accepted.
    assert_eq!(
        probe(&fx, &with_arguments(r#""sell""#.to_owned())).await,
        r#""sell""#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_context_whose_arguments_were_changed_or_added_is_rejected() {
    let fx = Fixture::new(vec![order_case("/order", Side::Sell)], Some(keys())).await;
    let signed = fx
        .client
        .sign(TestContext::new(CASE, Duration::from_secs(60)).arguments(json!({"side": "sell"})));
    assert!(signed.signature.as_deref().unwrap().starts_with("v2;"));
    let good = headers::encode(&signed);
    assert_eq!(probe(&fx, &good).await, r#"{"side":"sell"}"#);

    let mut changed = good.clone();
    changed[5].1 = r#"{"side":"buy"}"#.into();
    let mut removed = good.clone();
    removed.truncate(5);
    // Arguments added to a context signed without any.
    let mut added = headers::encode(
        &fx.client
            .sign(TestContext::new(CASE, Duration::from_secs(60))),
    );
    assert!(added[4].1.starts_with("v1;"));
    added.push((headers::TEST_ARGUMENTS, r#"{"side":"buy"}"#.into()));
    let tampered = [changed, removed, added];
    for list in &tampered {
        assert_eq!(probe(&fx, list).await, "none", "{list:?}");
    }
    let messages = support::through_kafka(&fx.broker, &fx.kafka, &tampered).await;
    for (message, list) in messages.iter().zip(&tampered) {
        assert!(fx.client.accept_message(message).is_none(), "{list:?}");
    }
    let c = fx.client.counters();
    assert_eq!(counter(c, "contexts_rejected_bad_signature"), 6);
    assert_eq!(counter(c, "contexts_rejected"), 6);
    assert_eq!(c.contexts_rejected_unsigned(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_checks_the_stimulus_arguments_and_fails_when_the_service_changes_the_side() {
    // With signing on: the runner verifies the test record, whose v2 signature covers the
    // stimulus's arguments.
    let honest = order_case("/order", Side::Sell);
    let corrupt = order_case("/corrupt", Side::Sell);
    let fx = Fixture::new(vec![honest.clone()], Some(keys())).await;

    let report = fx.run_once(&honest).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.arguments, json!("sell"));
    let steps: Vec<_> = report.timeline.iter().map(|s| s.signal.as_str()).collect();
    assert_eq!(steps, ["side_seen", "arguments_at_consumer"]);

    // The gateway flips the side and calls maybe_trigger with its own view ("buy"): the
    // stimulus's "sell" is what the case checks, so the run fails.
    let report = fx.run_once(&corrupt).await;
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some("the service saw another side than the stimulus chose: expected Sell, got Buy")
    );
    assert_eq!(report.arguments, json!("sell"));
    assert_eq!(report.last_step.as_deref(), Some("side_seen"));
    assert_eq!(counter(fx.client.counters(), "contexts_rejected"), 0);
    assert_eq!(fx.runner.counters().tests_rejected_bad_signature(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stimulus_arguments_the_services_arguments_are_the_tests() {
    // A stimulus that gives no arguments (`Case::stimulus`): the service's trigger gives them,
    // as before, and the same corrupting gateway passes (what stimulus arguments fix).
    let case = Case::new(CASE)
        .timeout(Duration::from_secs(10))
        .stimulus(|app: Target| async move { app.get("/corrupt/sell").await.map(drop) })
        .expect(|run: Run, side: Side| async move {
            let seen = run.wait(&SIDE_SEEN).await?;
            ensure_eq!(seen, side, "the service saw another side");
            // The service's arguments came after a signature made without them: they are in
            // the test record, not in the headers of the next hop.
            let at_consumer = run.wait(&ARGUMENTS_AT_CONSUMER).await?;
            ensure_eq!(at_consumer, Value::Null, "the Kafka hop carried arguments");
            Ok(())
        });
    let fx = Fixture::new(vec![case.clone()], Some(keys())).await;
    assert_eq!(case.prepare_stimulus().unwrap().arguments(), &Value::Null);
    let report = fx.run_once(&case).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.arguments, json!("buy"));
    assert_eq!(counter(fx.client.counters(), "contexts_rejected"), 0);
}

/// The body of `/probe` (the arguments the service was scoped with), asked in `context`.
async fn probe_in(fx: &Fixture, context: TestContext) -> String {
    fx.client
        .scope(context, async {
            reqwest::Client::new()
                .get(fx.target.url("/probe"))
                .test_context()
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await
}
