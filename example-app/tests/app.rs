//! Integration tests of the example app on the embedded broker: orders flow through HTTP
//! and both consumers, the four signals carry the right values, each fault switch changes
//! exactly what it says, and bad input gets a clear error while the service keeps serving.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use example_app::model::{Cached, Delivered, Execution};
use example_app::{AppConfig, AppTopics, FaultConfig, Order, RunningApp, SellDecision, Side};
use livecheck_core::{KafkaConfig, SignalEvent};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn config(probability: f64, faults: FaultConfig) -> AppConfig {
    let mut config = AppConfig::new(KafkaConfig::new(""));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.topics = AppTopics::with_prefix(&format!("t{}-", uuid::Uuid::new_v4().simple()));
    config.group_prefix = format!("g{}-", uuid::Uuid::new_v4().simple());
    config.probability = probability;
    config.sell_limit_probability = probability;
    config.faults = faults;
    config
}

/// The app with its test hooks on (`/admin/faults`, `?fake=1`), as every test here but one
/// needs.
async fn start(probability: f64, faults: FaultConfig) -> RunningApp {
    let mut config = config(probability, faults);
    config.test_hooks = true;
    RunningApp::start_embedded(config).await.unwrap()
}

/// Reads signal events of the app's signals topic, from the beginning.
struct SignalReader {
    consumer: StreamConsumer,
    seen: Vec<SignalEvent>,
}

impl SignalReader {
    fn new(app: &RunningApp) -> Self {
        let consumer: StreamConsumer = KafkaConfig::new(app.brokers())
            .client_config(&[("group.id", "reader"), ("enable.auto.commit", "false")])
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..4 {
            list.add_partition_offset(
                &app.shared.config.topics.livecheck.signals,
                p,
                Offset::Beginning,
            )
            .unwrap();
        }
        consumer.assign(&list).unwrap();
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Signals of `test_id`, waiting until `count` came or `within` passed.
    async fn for_test(
        &mut self,
        test_id: &str,
        count: usize,
        within: Duration,
    ) -> Vec<SignalEvent> {
        self.matching(|e| e.test_id == test_id, count, within).await
    }

    /// Signals that `wanted` picks, in the order read, waiting until `count` came or
    /// `within` passed.
    async fn matching(
        &mut self,
        wanted: impl Fn(&SignalEvent) -> bool,
        count: usize,
        within: Duration,
    ) -> Vec<SignalEvent> {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<_> = self.seen.iter().filter(|e| wanted(e)).cloned().collect();
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            if let Ok(Ok(msg)) =
                tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()).await
            {
                // The signals topic also carries LiveCheck's own records: the services'
                // consumer positions (not signals) and the tests' hops (not steps).
                let payload = msg.payload().unwrap();
                if payload.starts_with(br#"{"kind":"positions""#) {
                    continue;
                }
                let event: SignalEvent = serde_json::from_slice(payload).unwrap();
                if event.signal != livecheck_core::hop::HOP_SIGNAL {
                    self.seen.push(event);
                }
            }
        }
    }
}

fn value<T: serde::de::DeserializeOwned>(events: &[SignalEvent], signal: &str) -> T {
    let event = events
        .iter()
        .find(|e| e.signal == signal)
        .unwrap_or_else(|| panic!("no {signal}"));
    serde_json::from_str(event.value.get()).unwrap()
}

async fn place(app: &RunningApp, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{}{path}", app.base_url))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn place_order(app: &RunningApp, side: &str) -> Order {
    let (status, body) = place(app, &format!("/order/init/{side}/")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const NAMES: [&str; 4] = [
    "order_sent_to_db",
    "order_sent_to_kafka",
    "order_cached",
    "order_executed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_over_http_reaches_the_execution_consumer() {
    let app = start(0.0, FaultConfig::default()).await;
    let order = place_order(&app, "buy").await;
    assert_eq!(order.side, Side::Buy);
    let counters = &app.shared.counters;
    eventually("execution", || {
        counters.orders_executed.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(app.shared.store.get(&order.id), Some(order));
    // Probability 0: no test, no signal.
    assert_eq!(app.shared.livecheck.counters().signals_sent(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_order_publishes_the_four_signals_in_order_with_the_right_values() {
    let app = start(1.0, FaultConfig::default()).await;
    let mut reader = SignalReader::new(&app);
    let order = place_order(&app, "sell").await;
    let events = reader.for_test(&order.id, 4, Duration::from_secs(20)).await;
    // Stored first; the execution may be signalled before the forward's own signals (the
    // execute consumer can handle the record before the forward's delivery is acknowledged).
    let mut names: Vec<_> = events.iter().map(|e| e.signal.as_str()).collect();
    assert_eq!(names[0], NAMES[0], "{names:?}");
    names.sort_unstable();
    let mut expected = NAMES;
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(events.iter().all(|e| e.case == "orders.place_order"));
    let stored: Order = value(&events, "order_sent_to_db");
    assert_eq!(stored, order);
    let delivered: Delivered = value(&events, "order_sent_to_kafka");
    assert_eq!(delivered.order_id, order.id);
    assert_eq!(delivered.topic, app.shared.config.topics.execution);
    let cached: Cached = value(&events, "order_cached");
    assert_eq!(
        (
            cached.order_id.as_str(),
            cached.user_id.as_str(),
            cached.user_orders
        ),
        (order.id.as_str(), order.user_id.as_str(), 1)
    );
    let executed: Execution = value(&events, "order_executed");
    assert_eq!(executed.order_id, order.id);
    assert!(executed.execution_id.is_some());
    // A fake order goes through every step but is not executed.
    let (_, body) = place(&app, "/order/init/buy/?fake=1").await;
    let fake: Order = serde_json::from_value(body).unwrap();
    assert!(fake.fake);
    let events = reader.for_test(&fake.id, 4, Duration::from_secs(20)).await;
    let executed: Execution = value(&events, "order_executed");
    assert_eq!(executed.execution_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_switch_changes_exactly_what_it_says() {
    let app = start(1.0, FaultConfig::default()).await;
    let mut reader = SignalReader::new(&app);
    let http = reqwest::Client::new();
    let set = |faults: FaultConfig| {
        let http = http.clone();
        let url = format!("{}/admin/faults", app.base_url);
        async move {
            let r = http.post(url).json(&faults).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let quiet = Duration::from_millis(1500);

    // flip-side: the stored order has the other side; every step still happens.
    set(FaultConfig {
        flip_side: true,
        ..Default::default()
    })
    .await;
    let order = place_order(&app, "sell").await;
    let events = reader.for_test(&order.id, 4, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 4);
    assert_eq!(value::<Order>(&events, "order_sent_to_db").side, Side::Buy);

    // misread-side: the front reads the other side, so the order has it from the start;
    // every step still happens.
    set(FaultConfig {
        misread_side: true,
        ..Default::default()
    })
    .await;
    let order = place_order(&app, "sell").await;
    assert_eq!(order.side, Side::Buy);
    let events = reader.for_test(&order.id, 4, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 4);
    assert_eq!(value::<Order>(&events, "order_sent_to_db").side, Side::Buy);

    // skip-execution: the first three steps, never order_executed.
    set(FaultConfig {
        skip_execution: true,
        ..Default::default()
    })
    .await;
    let order = place_order(&app, "sell").await;
    let events = reader.for_test(&order.id, 4, Duration::from_secs(5)).await;
    let names: Vec<_> = events.iter().map(|e| e.signal.as_str()).collect();
    assert_eq!(names, &NAMES[..3]);
    assert_eq!(value::<Order>(&events, "order_sent_to_db").side, Side::Sell);

    // drop-headers: the execution still happens, but outside the test (no signal).
    set(FaultConfig {
        drop_headers: true,
        ..Default::default()
    })
    .await;
    let executed_before = app.shared.counters.orders_executed.load(Ordering::Relaxed);
    let order = place_order(&app, "sell").await;
    eventually("execution", || {
        app.shared.counters.orders_executed.load(Ordering::Relaxed) > executed_before
    })
    .await;
    let events = reader.for_test(&order.id, 4, quiet).await;
    let names: Vec<_> = events.iter().map(|e| e.signal.as_str()).collect();
    assert_eq!(names, &NAMES[..3]);

    // delay: order_executed comes, at least the delay after order_cached.
    set(FaultConfig {
        delay_ms: 800,
        ..Default::default()
    })
    .await;
    let order = place_order(&app, "sell").await;
    let events = reader.for_test(&order.id, 4, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 4);
    let gap = events[3].sent_at - events[2].sent_at;
    assert!(gap >= chrono::Duration::milliseconds(750), "gap {gap}");

    // http-503: the front refuses, nothing is created.
    set(FaultConfig {
        http_503: true,
        ..Default::default()
    })
    .await;
    let created = app.shared.counters.orders_created.load(Ordering::Relaxed);
    let (status, body) = place(&app, "/order/init/sell/").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "service unavailable (fault http-503 is on)");
    assert_eq!(
        app.shared.counters.orders_created.load(Ordering::Relaxed),
        created
    );

    // All off: healthy again.
    set(FaultConfig::default()).await;
    let order = place_order(&app, "sell").await;
    assert_eq!(
        reader
            .for_test(&order.id, 4, Duration::from_secs(20))
            .await
            .len(),
        4
    );
}

/// Orders are sampled by user: at probability 0.5, every order of a sampled user is a
/// test (each with its own id, the order's), none of an unsampled user's is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_of_a_sampled_user_is_a_test_and_none_of_another() {
    let app = start(0.5, FaultConfig::default()).await;
    let trigger = &app.shared.trigger;
    // Users whose sells are no tests of the sell-limit case: only the order case's count.
    let user = |sampled: bool| {
        (0..)
            .map(|i| format!("user-{i}"))
            .find(|u| {
                trigger.samples_key(u) == sampled && !app.shared.sell_limit_trigger.samples_key(u)
            })
            .unwrap()
    };
    let (sampled, skipped) = (user(true), user(false));
    let triggered = || app.shared.livecheck.counters().tests_triggered();
    let mut reader = SignalReader::new(&app);
    let mut tests = Vec::new();
    for i in 0..5 {
        let side = if i % 2 == 0 { "buy" } else { "sell" };
        let (status, body) = place(&app, &format!("/order/init/{side}/?user={sampled}")).await;
        assert_eq!(status, 200, "{body}");
        let order: Order = serde_json::from_value(body).unwrap();
        assert_eq!(order.user_id, sampled);
        tests.push(order);
        let (status, body) = place(&app, &format!("/order/init/{side}/?user={skipped}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        triggered(),
        5,
        "tests of {sampled} (sampled) and {skipped} (not)"
    );
    for order in &tests {
        let events = reader.for_test(&order.id, 1, Duration::from_secs(20)).await;
        let stored: Order = value(&events, "order_sent_to_db");
        assert_eq!(stored.user_id, sampled);
    }
    let (status, body) = place(&app, "/order/init/buy/?user=").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "user must be 1 to 128 bytes")
    );
}

/// The sell limit: a user's sells are accepted up to the limit (100) in total, the one that
/// would go past it is refused with 409, buys are not limited, and each sell is a test of
/// `orders.sell_limit` with its decision as its one step. Fault `ignore-sell-limit`,
/// switched on at run time, accepts every sell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sell_past_the_limit_is_refused_and_each_decision_is_signalled() {
    let app = start(1.0, FaultConfig::default()).await;
    assert_eq!(
        app.shared.config.sell_limit,
        example_app::DEFAULT_SELL_LIMIT
    );
    let mut reader = SignalReader::new(&app);
    let user = format!("seller-{}", uuid::Uuid::new_v4().simple());
    let sell = |quantity: u64| format!("/order/init/sell/?user={user}&quantity={quantity}");
    let (status, body) = place(&app, &sell(60)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quantity"], 60);
    assert_eq!(place(&app, &sell(40)).await.0, 200);
    let (status, body) = place(&app, &sell(1)).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (
            409,
            format!("sell limit exceeded: user {user} has sold 100 of 100; 1 more would make 101")
                .as_str()
        )
    );
    assert_eq!(app.shared.counters.sells_refused.load(Ordering::Relaxed), 1);
    // Buys are not limited.
    let (status, body) = place(&app, &format!("/order/init/buy/?user={user}&quantity=500")).await;
    assert_eq!(status, 200, "{body}");
    for bad in ["0", "-1", "x", "1000001"] {
        let (status, body) = place(&app, &format!("/order/init/sell/?quantity={bad}")).await;
        assert_eq!(
            (status, body["error"].as_str().unwrap()),
            (400, "quantity must be a whole number from 1 to 1000000"),
            "quantity={bad}"
        );
    }

    // The fault, at run time: the next sell is accepted past the limit.
    let http = reqwest::Client::new();
    let faults = http
        .post(format!("{}/admin/faults", app.base_url))
        .json(&serde_json::json!({ "ignore_sell_limit": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.status(), 200);
    assert!(app.shared.faults.ignore_sell_limit());
    assert_eq!(place(&app, &sell(1)).await.0, 200);

    let mut decisions = reader
        .matching(
            |e| e.case == "orders.sell_limit",
            4,
            Duration::from_secs(20),
        )
        .await;
    // In the order sent (one user's signals share a partition only once tests are routed).
    decisions.sort_by_key(|e| e.sent_at);
    let seen: Vec<(&str, SellDecision)> = decisions
        .iter()
        .map(|e| {
            (
                e.signal.as_str(),
                serde_json::from_str(e.value.get()).unwrap(),
            )
        })
        .collect();
    let decision = |quantity, sold| SellDecision {
        user_id: user.clone(),
        quantity,
        sold,
        limit: 100,
    };
    assert_eq!(
        seen,
        [
            ("sell_accepted", decision(60, 60)),
            ("sell_accepted", decision(40, 100)),
            ("sell_refused", decision(1, 100)),
            ("sell_accepted", decision(1, 101)),
        ]
    );
    // One test per sell, each its own.
    let mut tests: Vec<_> = decisions.iter().map(|e| e.test_id.as_str()).collect();
    tests.dedup();
    assert_eq!(tests.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_service_keeps_serving() {
    let app = start(1.0, FaultConfig::default()).await;
    let (status, body) = place(&app, "/order/init/hold/").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "side must be `buy` or `sell`, not \"hold\"")
    );

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/order/create/", app.base_url))
        .header("content-type", "application/json")
        .body("{\"id\": 12")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed order:"),
        "{body}"
    );

    // A test context that does not belong to the order is refused.
    let context = livecheck_core::TestContext::new("orders.place_order", Duration::from_secs(60));
    let mut headers = http::HeaderMap::new();
    livecheck_core::http::inject(&mut headers, &context);
    let order = Order {
        id: "another".into(),
        user_id: "u".into(),
        side: Side::Buy,
        fake: false,
        quantity: 1,
    };
    let response = http
        .post(format!("{}/order/create/", app.base_url))
        .headers(headers)
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["error"],
        format!(
            "test context {} does not belong to order another",
            context.id
        )
    );

    // Malformed records on the orders topic are counted and skipped.
    let producer: FutureProducer = KafkaConfig::new(app.brokers())
        .producer_config()
        .create()
        .unwrap();
    for payload in [&b"not json"[..], b"{\"id\":1}"] {
        producer
            .send(
                FutureRecord::to(&app.shared.config.topics.orders)
                    .key("k")
                    .payload(payload)
                    .headers(OwnedHeaders::new()),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let counters = &app.shared.counters;
    eventually("malformed records", || {
        counters.malformed_records.load(Ordering::Relaxed) == 2
    })
    .await;

    // And the next good order goes all the way.
    let mut reader = SignalReader::new(&app);
    let order = place_order(&app, "buy").await;
    assert_eq!(
        reader
            .for_test(&order.id, 4, Duration::from_secs(20))
            .await
            .len(),
        4
    );
    let health = reqwest::get(format!("{}/healthz", app.base_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_test_hooks_admin_faults_is_404_fake_is_ignored_and_signing_keys_apply() {
    let mut config = config(0.0, FaultConfig::default());
    assert!(!config.test_hooks, "test hooks must be off by default");
    let keys = livecheck_core::signing::SigningKeys::new("k1", "example-app-test-secret").unwrap();
    config.signing_keys = Some(keys.clone());
    let app = RunningApp::start_embedded(config).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/admin/faults", app.base_url);
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = http
        .post(&url)
        .json(&FaultConfig {
            http_503: true,
            ..FaultConfig::default()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(!app.shared.faults.http_503());

    // ?fake=1 is ignored: the order is real and executed.
    let (status, body) = place(&app, "/order/init/buy/?fake=1").await;
    assert_eq!(status, 200, "{body}");
    let order: Order = serde_json::from_value(body).unwrap();
    assert!(!order.fake);

    // With signing keys an unsigned context is not a test: the order gets its own id.
    let livecheck = &app.shared.livecheck;
    let forged = livecheck_core::TestContext::new("orders.place_order", Duration::from_secs(60));
    let mut headers = http::HeaderMap::new();
    livecheck_core::http::inject(&mut headers, &forged);
    let response = http
        .get(format!("{}/order/init/sell/", app.base_url))
        .headers(headers.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let order: Order = response.json().await.unwrap();
    assert_ne!(order.id, forged.id);
    let rejected = |c: u64| c;
    assert_eq!(
        rejected(livecheck.counters().contexts_rejected_unsigned()),
        1
    );
    // A signed one is a test of that id.
    let signed = livecheck.sign(forged.clone());
    let mut headers = http::HeaderMap::new();
    livecheck_core::http::inject(&mut headers, &signed);
    let response = http
        .get(format!("{}/order/init/sell/", app.base_url))
        .headers(headers)
        .send()
        .await
        .unwrap();
    let order: Order = response.json().await.unwrap();
    assert_eq!(order.id, signed.id);
    assert_eq!(rejected(livecheck.counters().contexts_rejected()), 1);
}

/// The app follows LiveCheck's control topic as `example-app`: its trigger samples with the
/// published probability (exactly none at 0, all at 1, a share within 4 standard deviations
/// at 0.25, over 200 orders of fresh users each) within 5 s of each change, whatever its
/// own setting (0.5), and its heartbeat says what it applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_follows_the_control_topic() {
    use livecheck_core::control::{CaseControl, SamplingName};
    use livecheck_core::SettingsSource;
    use rdkafka::producer::BaseProducer;

    const ORDERS: usize = 200;
    let app = start(0.5, FaultConfig::default()).await;
    let livecheck = &app.shared.livecheck;
    let options = livecheck.control_options().expect("the app follows");
    assert_eq!(options.service, "example-app");
    let producer: BaseProducer = KafkaConfig::new(app.brokers())
        .client_config(&[("linger.ms", "0")])
        .create()
        .unwrap();
    let triggered = || livecheck.counters().tests_triggered();
    for (version, probability) in [(1, 0.0), (2, 1.0), (3, 0.25)] {
        let control = CaseControl {
            case: "orders.place_order".into(),
            probability,
            active: true,
            sampling: SamplingName::Key,
            test_expires_secs: None,
            version,
            changed_by: "test".into(),
            changed_at: chrono::Utc::now(),
            rollout: None,
        };
        let published = Instant::now();
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&app.shared.config.topics.livecheck.control)
                    .key(&control.case)
                    .payload(&serde_json::to_vec(&control).unwrap()),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
        let want = SettingsSource::Control { version };
        while app.shared.trigger.effective(livecheck).source != want {
            assert!(
                published.elapsed() < Duration::from_secs(5),
                "version {version} not applied within 5 s: {:?}",
                app.shared.trigger.effective(livecheck)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let applied_after = published.elapsed();
        let before = triggered();
        let app = &app;
        // Buys: a sell is also a test of `orders.sell_limit` (the counter counts both).
        for _ in 0..ORDERS / 20 {
            let orders = (0..20).map(|_| async move {
                let (status, body) = place(app, "/order/init/buy/?fake=1").await;
                assert_eq!(status, 200, "{body}");
            });
            futures::future::join_all(orders).await;
        }
        let count = (triggered() - before) as f64;
        let n = ORDERS as f64;
        let (expected, bound) = (
            n * probability,
            4.0 * (n * probability * (1.0 - probability)).sqrt(),
        );
        println!("p = {probability}: applied after {applied_after:?}, {count} of {ORDERS} orders were tests (expected {expected} +- {bound:.1})");
        assert!(
            (count - expected).abs() <= bound,
            "p = {probability}: {count} of {ORDERS} orders were tests, expected {expected} +- {bound:.1}"
        );
    }
    // One per case the app triggers: orders.place_order and orders.sell_limit.
    assert_eq!(livecheck.heartbeat_now().unwrap(), 2);
}
