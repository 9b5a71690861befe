//! Live mode end to end on the embedded broker: sampled traffic, suite health and alerts,
//! several runners in one group, and a restart mid-stream.

mod support;

use support::{eventually, webhook};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use example_app::{FaultConfig, RunningApp};
use livecheck_core::{Case, EmbeddedBroker, KafkaConfig, Report, Verdict};
use livecheck_harness::live::config::{LiveArgs, LiveConfig};
use livecheck_harness::live::service::LiveService;
use livecheck_harness::live::state::Health;
use livecheck_tests::orders;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

struct World {
    /// The order case's probability: the app's own, and the one the `livecheck` service
    /// publishes on the control topic (which the app follows).
    probability: f64,
    prefix: String,
    kafka: KafkaConfig,
    app: Option<RunningApp>,
    _broker: EmbeddedBroker,
}

impl World {
    async fn new(probability: f64) -> Self {
        let (prefix, broker, kafka, app) = support::broker_and_app('l', probability).await;
        Self {
            probability,
            prefix,
            kafka,
            app: Some(app),
            _broker: broker,
        }
    }

    fn app(&self) -> &RunningApp {
        self.app.as_ref().unwrap()
    }

    fn config(&self, group: &str) -> LiveConfig {
        let args = LiveArgs {
            brokers: Some(self.kafka.brokers.clone()),
            topic_prefix: Some(self.prefix.clone()),
            group_id: Some(format!("{}{group}", self.prefix)),
            http_port: Some(0),
            app_url: Some(self.app().base_url.clone()),
            summary_every: 3600,
            ..LiveArgs::default()
        };
        let mut config = LiveConfig::resolve(&args).unwrap();
        config.print_verdicts = false;
        config.hold_down = Duration::from_millis(500);
        config
    }

    async fn order(&self, side: &str) -> String {
        let r = reqwest::get(format!("{}/order/init/{side}/", self.app().base_url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let order: serde_json::Value = r.json().await.unwrap();
        order["id"].as_str().unwrap().to_owned()
    }

    async fn faults(&self, faults: FaultConfig) {
        let r = reqwest::Client::new()
            .post(format!("{}/admin/faults", self.app().base_url))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    fn triggered(&self) -> u64 {
        self.app().shared.livecheck.counters().tests_triggered()
    }

    /// Every run report on the reports topic (suite-state records left out), by test id.
    async fn reports(&self, expected: usize) -> HashMap<String, Vec<Report>> {
        let consumer: StreamConsumer = self
            .kafka
            .client_config(&[
                ("group.id", "report-reader"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..4 {
            list.add_partition_offset(
                &format!("{}livecheck-reports", self.prefix),
                p,
                Offset::Beginning,
            )
            .unwrap();
        }
        consumer.assign(&list).unwrap();
        let mut by_id: HashMap<String, Vec<Report>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut total = 0;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(1500), consumer.recv()).await {
                Ok(Ok(msg)) => {
                    if let Ok(report) =
                        serde_json::from_slice::<Report>(msg.payload().unwrap_or_default())
                    {
                        total += 1;
                        by_id
                            .entry(report.test_id.clone())
                            .or_default()
                            .push(report);
                    }
                }
                _ if total >= expected => break,
                _ => {}
            }
        }
        by_id
    }
}

/// The service's `/metrics` text.
async fn scrape(service: &LiveService) -> String {
    reqwest::get(format!("http://{}/metrics", service.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn total_runs(service: &LiveService) -> u64 {
    service
        .state
        .cases()
        .iter()
        .flat_map(|c| c.verdicts.values())
        .sum()
}

fn health(service: &LiveService) -> Health {
    service.state.cases()[0].health
}

impl World {
    /// The order case with the world's probability and no synthetic traffic unless a test
    /// asks for it.
    fn case(&self) -> Case {
        orders::place_order()
            .probability(self.probability)
            .frequency(Duration::from_secs(3600))
    }

    fn cases(&self) -> Vec<Case> {
        vec![self.case()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_traffic_becomes_about_half_tests_each_with_one_report() {
    let world = World::new(0.5).await;
    let service = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    let orders = 80;
    for i in 0..orders {
        world.order(if i % 2 == 0 { "sell" } else { "buy" }).await;
    }
    let triggered = world.triggered();
    println!("{orders} orders, {triggered} became tests");
    assert!(
        (20..=60).contains(&triggered),
        "{triggered} of {orders} orders became tests at probability 0.5"
    );
    eventually("every test's verdict", Duration::from_secs(30), || {
        total_runs(&service) == triggered
    })
    .await;
    let reports = world.reports(triggered as usize).await;
    assert_eq!(reports.len() as u64, triggered);
    for (id, r) in &reports {
        assert_eq!(r.len(), 1, "test {id} has {} reports", r.len());
        assert_eq!(r[0].verdict, Verdict::Pass, "{}", r[0].render());
    }
    // The operator surfaces show it: runs by verdict and the group's consumer lag.
    eventually("the consumer lag", Duration::from_secs(15), || {
        !service.state.lag().is_empty()
    })
    .await;
    let metrics = scrape(&service).await;
    assert!(
        metrics.contains(&format!(
            "livecheck_runs_total{{case=\"orders.place_order\",verdict=\"PASS\"}} {triggered}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("livecheck_consumer_lag{topic="),
        "{metrics}"
    );
    // The orders that did not become tests were read without a context: the app's consumer
    // groups report it, and the runner shows it per group and topic.
    let untested = orders - triggered;
    let create_order = format!("{}create-order", world.app().shared.config.group_prefix);
    eventually(
        "records read without a context",
        Duration::from_secs(15),
        || {
            service
                .state
                .runner
                .records_without_context()
                .iter()
                .any(|(group, topic, n)| {
                    *group == create_order && topic.ends_with("orders") && *n == untested
                })
        },
    )
    .await;
    let metrics = scrape(&service).await;
    assert!(
        metrics.contains(&format!(
            "livecheck_records_without_context_total{{group=\"{create_order}\",topic=\"{}orders\"}} {untested}",
            world.prefix
        )),
        "{metrics}"
    );
    let api: serde_json::Value = reqwest::get(format!("http://{}/api/cases", service.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api[0]["health"], "OK");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_turns_the_suite_fail_with_one_alert_and_recovery_sends_one_more() {
    let world = World::new(1.0).await;
    let (url, alerts) = webhook().await;
    let mut config = world.config("runners");
    config.alert_webhook = Some(url);
    let service = LiveService::start(config, world.cases()).await.unwrap();

    world
        .faults(FaultConfig {
            flip_side: true,
            ..FaultConfig::default()
        })
        .await;
    for _ in 0..5 {
        world.order("sell").await;
    }
    eventually("suite FAIL", Duration::from_secs(20), || {
        health(&service) == Health::Fail
    })
    .await;
    eventually("the FAIL alert", Duration::from_secs(10), || {
        alerts.lock().unwrap().len() == 1
    })
    .await;
    {
        let alerts = alerts.lock().unwrap();
        assert_eq!(alerts[0]["case"], "orders.place_order");
        assert_eq!(
            (alerts[0]["from"].as_str(), alerts[0]["to"].as_str()),
            (Some("OK"), Some("FAIL"))
        );
        assert_eq!(alerts[0]["reason"], "3 runs in a row did not pass");
    }

    world.faults(FaultConfig::default()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&service) != Health::Ok {
        assert!(Instant::now() < deadline, "no recovery");
        world.order("sell").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually("the recovery alert", Duration::from_secs(10), || {
        alerts.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alerts = alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(
        (alerts[1]["from"].as_str(), alerts[1]["to"].as_str()),
        (Some("FAIL"), Some("OK"))
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_is_a_stall() {
    let world = World::new(1.0).await;
    let cases = vec![world.case().warn_stalled_after(Duration::from_secs(2))];
    let service = LiveService::start(world.config("runners"), cases)
        .await
        .unwrap();
    eventually("STALL", Duration::from_secs(10), || {
        health(&service) == Health::Stall
    })
    .await;
    assert!(service.state.cases()[0]
        .health_reason
        .starts_with("no run since"));
    // Traffic again: back to OK after the hold-down.
    world.order("sell").await;
    eventually("OK", Duration::from_secs(10), || {
        health(&service) == Health::Ok
    })
    .await;
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_stopped_is_down_and_synthetic_runs_pass_while_it_is_up() {
    let mut world = World::new(0.0).await;
    let cases = vec![world.case().frequency(Duration::from_millis(700))];
    let service = LiveService::start(world.config("runners"), cases)
        .await
        .unwrap();
    // Synthetic traffic alone (probability 0) produces passing runs.
    eventually("a synthetic run", Duration::from_secs(20), || {
        total_runs(&service) >= 1
    })
    .await;
    assert_eq!(
        service.state.cases()[0].verdicts.get(&Verdict::Pass),
        Some(&total_runs(&service))
    );
    world.app.take().unwrap().stop().await;
    eventually("DOWN", Duration::from_secs(20), || {
        health(&service) == Health::Down
    })
    .await;
    let reason = service.state.cases()[0].health_reason.clone();
    assert!(
        reason.starts_with("synthetic request failed 3 times: request to http://127.0.0.1:"),
        "{reason}"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_in_one_group_give_every_test_exactly_one_report() {
    let world = World::new(1.0).await;
    let a = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    let b = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    // Let the group settle with both members.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(world.order(if i % 2 == 0 { "sell" } else { "buy" }).await);
    }
    eventually("40 verdicts", Duration::from_secs(30), || {
        total_runs(&a) + total_runs(&b) >= 40
    })
    .await;
    let reports = world.reports(40).await;
    for id in &ids {
        let r = reports.get(id).map_or(0, Vec::len);
        assert_eq!(r, 1, "test {id} has {r} reports");
    }
    println!(
        "runner a ran {}, runner b ran {}",
        total_runs(&a),
        total_runs(&b)
    );
    assert!(
        total_runs(&a) > 0 && total_runs(&b) > 0,
        "both runners share the work"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_mid_stream_loses_no_test_after_restart() {
    let world = Arc::new(World::new(1.0).await);
    let first = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    // Slow executions keep runs in flight when the shutdown comes.
    world
        .faults(FaultConfig {
            delay_ms: 1500,
            ..FaultConfig::default()
        })
        .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(world.order("sell").await);
    }
    first.shutdown().await.unwrap();
    for _ in 0..10 {
        ids.push(world.order("sell").await);
    }
    world.faults(FaultConfig::default()).await;
    let second = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    for _ in 0..5 {
        ids.push(world.order("sell").await);
    }
    let reports = world.reports(ids.len()).await;
    let missing: Vec<_> = ids.iter().filter(|id| !reports.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} tests got no report: {missing:?}",
        missing.len(),
        ids.len()
    );
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_joining_mid_stream_loses_no_test_and_gives_no_wrong_verdict() {
    let world = World::new(1.0).await;
    let a = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..15 {
        ids.push(world.order("sell").await);
    }
    // A second instance joins while tests are in flight: partitions move (eager rebalance),
    // runs in flight on revoked partitions are handed back and run by the new owner.
    let b = LiveService::start(world.config("runners"), world.cases())
        .await
        .unwrap();
    for _ in 0..15 {
        ids.push(world.order("buy").await);
    }
    let reports = world.reports(ids.len()).await;
    let mut duplicated = 0;
    for id in &ids {
        let r = reports.get(id).map(Vec::as_slice).unwrap_or_default();
        assert!(!r.is_empty(), "test {id} got no report");
        assert!(
            r.iter().all(|r| r.verdict == Verdict::Pass),
            "{}",
            r[0].render()
        );
        duplicated += usize::from(r.len() > 1);
    }
    let published = |s: &LiveService| s.state.runner.counters().reports_published();
    println!(
        "{} tests, {duplicated} reported twice (at-least-once around the rebalance); published by a {}, by b {}",
        ids.len(),
        published(&a),
        published(&b)
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
