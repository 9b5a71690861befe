//! The demo `cargo run --bin livecheck` runs with no configuration: the embedded broker,
//! the example app (half of its users' orders become tests) and traffic to it, as the
//! tutorial's visits to `/order/init/sell/` would make: buys by fresh users, and sells of
//! 15 by ten users at a time, each selling eight times (about every 4 s) before a fresh one
//! takes its place, so that every user's seventh and eighth sells go past the sell limit
//! and are refused.

use std::time::Duration;

use example_app::{AppConfig, AppTopics, RunningApp};
use livecheck_core::{EmbeddedBroker, KafkaConfig};
use livecheck_harness::live::LocalSystem;
use tracing::warn;

/// Aborts the traffic task when dropped.
struct Traffic(tokio::task::JoinHandle<()>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Users selling at a time in the demo's traffic.
const SELLERS: u64 = 10;
/// Sells per user before a fresh one takes its place.
const SELLS_PER_SELLER: u64 = 8;
/// The quantity of each sell: the seventh sell of a user goes past the sell limit
/// (7 × 15 = 105 > 100).
const SELL_QUANTITY: u64 = 15;

/// Orders per second the demo places (`LIVECHECK_DEMO_RATE`, default 5).
fn rate() -> f64 {
    std::env::var("LIVECHECK_DEMO_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| *r > 0.0 && r.is_finite())
        .unwrap_or(5.0)
}

/// Starts the demo for `prefix`: the system `livecheck` watches when no brokers are
/// configured (see `Livecheck::local_system`).
pub async fn start(prefix: String) -> anyhow::Result<LocalSystem> {
    let topics = AppTopics::with_prefix(&prefix).with_tables(crate::tables());
    let broker = EmbeddedBroker::start()?;
    topics.create_embedded(&broker, 4)?;
    let kafka = KafkaConfig::new(broker.bootstrap_servers());
    println!(
        "embedded Kafka broker (librdkafka mock cluster) at {}",
        kafka.brokers
    );
    let mut config = AppConfig::new(kafka.clone());
    config.listen = "127.0.0.1:0".parse()?;
    config.topics = topics;
    config.probability = 0.5;
    config.sell_limit_probability = 0.5;
    // The demo's checks place fake orders (`?fake=1`).
    config.test_hooks = true;
    let app = RunningApp::start(config).await?;
    println!(
        "example app at {} (half of its orders become tests)",
        app.base_url
    );
    let url = app.base_url.clone();
    let every = Duration::from_secs_f64(1.0 / rate());
    let demo = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let traffic = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(every);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let path = if n % 2 == 0 {
                "/order/init/buy/".to_owned()
            } else {
                let sell = n / 2;
                let (slot, generation) = (sell % SELLERS, sell / (SELLERS * SELLS_PER_SELLER));
                format!("/order/init/sell/?user=demo-{demo}-{slot}-{generation}&quantity={SELL_QUANTITY}")
            };
            // A refused sell (409) is an answer like any other.
            if let Err(err) = http.get(format!("{url}{path}")).send().await {
                warn!(error = %err, "demo traffic: order not placed");
            }
        }
    });
    let app_url = app.base_url.clone();
    // Dropped in order: traffic, app, then the broker.
    Ok(LocalSystem::new(kafka, (Traffic(traffic), app, broker)).app_url(app_url))
}
