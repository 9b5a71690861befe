//! Central control end to end on the embedded broker: the `livecheck` service takes a
//! change of a case's probability through its authenticated API, publishes it on the
//! control topic, and two running instances of the example app sample with it within
//! seconds — 0, then 1, then 0.25, then 0 again — and say so on their heartbeats.

mod support;

use std::time::{Duration, Instant};

use example_app::RunningApp;
use livecheck_core::control::SettingsSource;
use livecheck_core::signing::SecretString;
use livecheck_harness::live::config::{LiveArgs, LiveConfig};
use livecheck_harness::live::service::LiveService;
use livecheck_tests::orders;
use serde_json::json;

const CASE: &str = "orders.place_order";
const TOKEN: &str = "central-control-token-0123456789";
/// Requests per instance after each change.
const REQUESTS: u64 = 200;

fn tests_triggered(app: &RunningApp) -> u64 {
    app.shared.livecheck.counters().tests_triggered()
}

/// The control version `app`'s trigger applies now, if it follows the control topic.
fn applied_version(app: &RunningApp) -> Option<u64> {
    match app.shared.trigger.effective(&app.shared.livecheck).source {
        SettingsSource::Control { version } => Some(version),
        SettingsSource::Local { .. } => None,
    }
}

/// Places `REQUESTS` orders on `app` (each of a fresh user, so sampling by user draws
/// afresh) and returns how many became tests.
async fn realized(app: &RunningApp) -> u64 {
    let before = tests_triggered(app);
    let http = reqwest::Client::new();
    for _ in 0..REQUESTS {
        let r = http
            .get(format!("{}/order/init/sell/?fake=1", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tests_triggered(app) - before
}

/// `PUT /api/cases/{case}` with `body`, authenticated with `token` if any; the status.
async fn put(base: &str, token: Option<&str>, body: serde_json::Value) -> u16 {
    let mut request = reqwest::Client::new()
        .put(format!("{base}/api/cases/{CASE}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// The version `/api/cases` says is published for the case.
async fn published_version(base: &str) -> u64 {
    let cases: serde_json::Value = reqwest::get(format!("{base}/api/cases"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let case = cases
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == CASE))
        .unwrap_or_else(|| panic!("no {CASE} in {cases}"));
    case["published"]["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no published version in {case}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_instances_follow_probability_changes_made_through_the_api() {
    // Both instances are compiled with probability 0.5: every figure below that differs
    // from it comes from the control topic.
    let (prefix, _broker, kafka, first) = support::broker_and_app('k', 0.5).await;
    let second = support::start_app(&prefix, &kafka, 0.5).await;
    let args = LiveArgs {
        brokers: Some(kafka.brokers.clone()),
        topic_prefix: Some(prefix.clone()),
        group_id: Some(format!("{prefix}runners")),
        http_port: Some(0),
        admin_token: Some(SecretString::new(TOKEN.to_owned())),
        summary_every: 3600,
        ..LiveArgs::default()
    };
    let mut config = LiveConfig::resolve(&args).unwrap();
    config.print_verdicts = false;
    let service = LiveService::start(config, vec![orders::place_order()])
        .await
        .unwrap();
    let base = format!("http://{}", service.http_addr);

    // Without the token nothing changes.
    assert_eq!(put(&base, None, json!({"probability": 1.0})).await, 401);
    assert_eq!(
        put(
            &base,
            Some("not-the-token-at-all"),
            json!({"probability": 1.0})
        )
        .await,
        401
    );

    for (probability, bounds) in [
        (0.0, 0..=0),
        (1.0, 200..=200),
        (0.25, 25..=75),
        (0.0, 0..=0),
    ] {
        assert_eq!(
            put(&base, Some(TOKEN), json!({"probability": probability})).await,
            200
        );
        let version = published_version(&base).await;
        let changed = Instant::now();
        for app in [&first, &second] {
            while applied_version(app) != Some(version) {
                assert!(
                    changed.elapsed() < Duration::from_secs(5),
                    "an instance did not apply version {version} within 5 s: {:?}",
                    app.shared.trigger.effective(&app.shared.livecheck)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let effective = app.shared.trigger.effective(&app.shared.livecheck);
            assert!((effective.probability - probability).abs() < 1e-9);
        }
        println!(
            "figure: probability {probability} applied by both instances {:.0} ms after the API answered",
            changed.elapsed().as_secs_f64() * 1000.0
        );
        // Bounds for 0.25 over 200: 50 ± 25 (more than 4 standard deviations).
        for (name, app) in [("first", &first), ("second", &second)] {
            let tests = realized(app).await;
            println!("figure: probability {probability}: {tests} of {REQUESTS} requests became tests on the {name} instance");
            assert!(
                bounds.contains(&tests),
                "probability {probability}: {tests} of {REQUESTS} on the {name} instance"
            );
        }
    }

    // The page's truth: both instances report, on their heartbeats, that they apply the
    // published version (probability 0).
    let version = published_version(&base).await;
    for app in [&first, &second] {
        app.shared.livecheck.heartbeat_now().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let cases: serde_json::Value = reqwest::get(format!("{base}/api/cases"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let instances = cases[0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let following = instances
            .iter()
            .filter(|i| {
                i["service"] == "example-app"
                    && i["following"] == "following"
                    && i["probability"] == 0.0
                    && i["source"]["version"] == version
            })
            .count();
        if following == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/api/cases does not show both instances following version {version}: {instances:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
