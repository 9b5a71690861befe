//! Live mode with every broker down for 15 s mid-stream (librdkafka mock-cluster fault
//! injection): the outage shows on every case within 10 s with the Kafka reason, one alert
//! goes out for it and one for its end, `/readyz` says 503 meanwhile while `/healthz` stays
//! 200, and no verdict is invented. Prints the figures measured.

mod support;

use support::{eventually, webhook};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use example_app::{FaultConfig, RunningApp};
use livecheck_core::{Report, Verdict};
use livecheck_harness::live::config::{LiveArgs, LiveConfig};
use livecheck_harness::live::service::LiveService;
use livecheck_harness::live::state::Health;
use livecheck_tests::orders;

const OUTAGE: Duration = Duration::from_secs(15);

async fn status(url: String) -> u16 {
    match reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn order(app: &RunningApp, side: &str) -> String {
    let r = reqwest::get(format!("{}/order/init/{side}/", app.base_url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let order: serde_json::Value = r.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

fn blind_alerts(alerts: &[serde_json::Value], to: &str) -> usize {
    alerts
        .iter()
        .filter(|a| a["kind"] == "livecheck_blind" && a["to"] == to)
        .count()
}

struct Outcome {
    reports: HashMap<String, Report>,
    never_came: Vec<String>,
    in_time: Vec<String>,
}

/// The scenario; asserts what live mode must show and returns the verdicts.
async fn outage_scenario() -> Outcome {
    // The service's log, shown for a failing test (`RUST_LOG` sets the level; warn otherwise).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let (prefix, broker, kafka, app) = support::broker_and_app('o', 1.0).await;

    let (url, alerts) = webhook().await;
    let args = LiveArgs {
        brokers: Some(kafka.brokers.clone()),
        topic_prefix: Some(prefix.clone()),
        group_id: Some(format!("{prefix}runners")),
        http_port: Some(0),
        alert_webhook: Some(url),
        summary_every: 3600,
        ..LiveArgs::default()
    };
    let mut config = LiveConfig::resolve(&args).unwrap();
    config.print_verdicts = false;
    config.hold_down = Duration::from_secs(2);
    // The probability the app samples with (the service publishes it on the control topic).
    let cases = vec![orders::place_order()
        .probability(1.0)
        .frequency(Duration::from_secs(3600))];
    let service = LiveService::start(config, cases).await.unwrap();
    let base = format!("http://{}", service.http_addr);
    let reports = Arc::new(Mutex::new(HashMap::new()));
    {
        let mut feed = service.state.runner.subscribe();
        let reports = reports.clone();
        tokio::spawn(async move {
            while let Ok(r) = feed.recv().await {
                reports
                    .lock()
                    .unwrap()
                    .insert(r.test_id.clone(), (*r).clone());
            }
        });
    }
    eventually("the group's voice", Duration::from_secs(30), || {
        service.health.is_voice() && !service.health.warming_up()
    })
    .await;
    assert_eq!(status(format!("{base}/readyz")).await, 200);

    // Tests whose later signals never come (the context is dropped between Kafka hops).
    let faults = |f: FaultConfig| {
        let url = format!("{}/admin/faults", app.base_url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&f)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    faults(FaultConfig {
        drop_headers: true,
        ..FaultConfig::default()
    })
    .await;
    let mut never_came = Vec::new();
    for _ in 0..2 {
        never_came.push(order(&app, "sell").await);
    }
    // The fault applies when the app's consumer forwards the order: let it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    faults(FaultConfig::default()).await;
    // Tests whose signals are all produced before the brokers go down.
    let mut in_time = Vec::new();
    for i in 0..6 {
        in_time.push(order(&app, if i % 2 == 0 { "sell" } else { "buy" }).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The outage.
    broker.set_brokers_down(true).unwrap();
    let down_at = Instant::now();
    let to_down = eventually(
        "every case DOWN with the Kafka reason",
        Duration::from_secs(10),
        || {
            service.state.cases().iter().all(|c| {
                c.health == Health::Down && c.health_reason.contains("livecheck cannot reach Kafka")
            })
        },
    )
    .await;
    println!(
        "figure: {:.1} s from brokers down to every case DOWN",
        to_down.as_secs_f64()
    );
    let reason = service.state.cases()[0].health_reason.clone();
    assert!(reason.contains(&kafka.brokers), "{reason}");
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach Kafka"),
        "{body}"
    );
    assert_eq!(status(format!("{base}/healthz")).await, 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nlivecheck_kafka_reachable 0\n"),
        "{metrics}"
    );
    eventually("the outage alert", Duration::from_secs(5), || {
        blind_alerts(&alerts.lock().unwrap(), "DOWN") == 1
    })
    .await;
    while down_at.elapsed() < OUTAGE {
        assert_eq!(status(format!("{base}/healthz")).await, 200, "liveness");
        assert_eq!(status(format!("{base}/readyz")).await, 503, "readiness");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    broker.set_brokers_down(false).unwrap();
    let to_ok = eventually("every case OK again", Duration::from_secs(45), || {
        service.state.cases().iter().all(|c| c.health == Health::Ok)
    })
    .await;
    println!(
        "figure: {:.1} s from brokers back to OK (hold-down 2 s)",
        to_ok.as_secs_f64()
    );
    // The runner's group session lapsed during the outage: the voice (the owner of
    // partition 0) speaks again after rejoining and its warm-up.
    eventually("the recovery alert", Duration::from_secs(20), || {
        blind_alerts(&alerts.lock().unwrap(), "OK") == 1
    })
    .await;
    eventually("/readyz 200 again", Duration::from_secs(10), || {
        service.state.input_status().ready
    })
    .await;
    assert_eq!(status(format!("{base}/readyz")).await, 200);

    // Every test gets its verdict; no second outage alert came meanwhile.
    let all: Vec<String> = never_came.iter().chain(&in_time).cloned().collect();
    let waiting = Instant::now();
    loop {
        let missing: Vec<&String> = {
            let r = reports.lock().unwrap();
            all.iter().filter(|id| !r.contains_key(*id)).collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "no verdict within 30 s of the recovery for {} of {} tests: {missing:?} (run with RUST_LOG=info for the service's log)",
            missing.len(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alerts = alerts.lock().unwrap().clone();
    assert_eq!(blind_alerts(&alerts, "DOWN"), 1, "{alerts:#?}");
    assert_eq!(blind_alerts(&alerts, "OK"), 1, "{alerts:#?}");
    let reports = reports.lock().unwrap().clone();
    service.shutdown().await.unwrap();
    app.stop().await;
    Outcome {
        reports,
        never_came,
        in_time,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_show_on_every_case_with_one_alert_and_recovery() {
    let outcome = outage_scenario().await;
    for id in &outcome.never_came {
        let r = &outcome.reports[id];
        assert_ne!(
            r.verdict,
            Verdict::Pass,
            "a test whose signal never came passed:\n{}",
            r.render()
        );
    }
    // Signals produced within the timeout are in time, whenever the runner reads them.
    let timeouts = outcome
        .in_time
        .iter()
        .filter(|id| outcome.reports[*id].verdict == Verdict::Timeout)
        .count();
    println!(
        "figure: {timeouts} of {} tests with every signal produced before the outage ended TIMEOUT",
        outcome.in_time.len()
    );
    for id in &outcome.in_time {
        let r = &outcome.reports[id];
        assert_ne!(
            r.verdict,
            Verdict::Timeout,
            "signals produced within the timeout, yet:\n{}",
            r.render()
        );
    }
}
