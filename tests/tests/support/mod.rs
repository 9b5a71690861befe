//! What the live-mode tests share: waiting for a condition, and an alert webhook receiver.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use example_app::{AppConfig, AppTopics, RunningApp};
use livecheck_core::{EmbeddedBroker, KafkaConfig};

/// Waits until `check` holds (polled every 100 ms); panics naming `what` after `within`.
/// Returns how long it took.
pub(crate) async fn eventually(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// An alert webhook on 127.0.0.1: its URL, and the JSON bodies POSTed to it.
pub(crate) async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let app = Router::new().route(
        "/alerts",
        post(move |Json(body): Json<serde_json::Value>| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// An embedded broker with the example app's topics (4 partitions each) under a fresh
/// prefix starting with `tag`, and the example app on it with its test hooks on (tests
/// switch faults over `POST /admin/faults`), triggering tests with `probability`.
pub(crate) async fn broker_and_app(
    tag: char,
    probability: f64,
) -> (String, EmbeddedBroker, KafkaConfig, RunningApp) {
    let prefix = format!("{tag}{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let topics = AppTopics::with_prefix(&prefix).with_tables(livecheck_tests::tables());
    let broker = EmbeddedBroker::start().unwrap();
    topics.create_embedded(&broker, 4).unwrap();
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    let app = start_app(&prefix, &kafka, probability).await;
    (prefix, broker, kafka, app)
}

/// An instance of the example app on the topics of `prefix` (created already), in the
/// consumer group of the others, its test hooks on, triggering with `probability` unless
/// the control topic says otherwise.
pub(crate) async fn start_app(prefix: &str, kafka: &KafkaConfig, probability: f64) -> RunningApp {
    let mut config = AppConfig::new(kafka.clone());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.topics = AppTopics::with_prefix(prefix);
    config.group_prefix = format!("{prefix}app-");
    config.probability = probability;
    // The services here run the order case only: no sell becomes a test of the sell limit.
    config.sell_limit_probability = 0.0;
    config.test_hooks = true;
    // Instances in one test process are told apart by a number.
    config.control = config.control.map(|c| {
        let n = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.instance(format!("test-instance-{n}"))
    });
    RunningApp::start(config).await.unwrap()
}

static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
