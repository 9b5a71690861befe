//! Central control on the embedded broker: the `livecheck` service publishes each case's
//! settings to the control topic and follows it back; the settings API refuses changes
//! without the right token; heartbeats show what each service instance applies and go
//! stale; a reload (file change or SIGHUP) publishes what the file changed; a roll-out plan
//! advances on PASS and rolls back on failures.
//!
//! Each test has its own broker, topics and group; the control topic is read back with a
//! plain consumer, heartbeats and reports are published with a plain producer.

mod support;

use support::wait_for;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use livecheck_core::control::{CaseControl, Heartbeat, SettingsSource};
use livecheck_core::{Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Topics, Verdict};
use livecheck_harness::live::config::{LiveArgs, LiveConfig};
use livecheck_harness::live::control::CONFIG_HEADER;
use livecheck_harness::live::service::LiveService;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const ORDERS: &str = "orders.place_order";
const REFUNDS: &str = "payments.refund";
const TOKEN: &str = "test-admin-token-0123456789";

/// A broker with the LiveCheck topics under a fresh prefix, and a profile file.
struct World {
    prefix: String,
    kafka: KafkaConfig,
    topics: Topics,
    file: PathBuf,
    _broker: EmbeddedBroker,
}

impl World {
    fn new(profile_body: &str) -> Self {
        let prefix = format!("c{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let topics = Topics::with_prefix(&prefix);
        let broker = EmbeddedBroker::start().expect("broker");
        for t in topics.all() {
            broker.create_topic(t, 2).expect("topic");
        }
        for t in topics.settings_topics() {
            broker.create_topic(t, 1).expect("settings topic");
        }
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let file = std::env::temp_dir().join(format!("livecheck-control-{prefix}.toml"));
        let world = Self {
            prefix,
            kafka,
            topics,
            file,
            _broker: broker,
        };
        world.write_profile(profile_body);
        world
    }

    /// Writes `[profiles.t]` with the broker and `body` (more keys and case tables).
    fn write_profile(&self, body: &str) {
        let text = format!(
            "[profiles.t]\nbrokers = \"{}\"\ntopic_prefix = \"{}\"\ngroup_id = \"{}runners\"\nhttp_port = 0\n{body}",
            self.kafka.brokers, self.prefix, self.prefix
        );
        std::fs::write(&self.file, text).expect("profile file");
    }

    fn config(&self) -> LiveConfig {
        let args = LiveArgs {
            profile: Some("t".into()),
            config: self.file.clone(),
            summary_every: 3600,
            ..LiveArgs::default()
        };
        let mut config = LiveConfig::resolve(&args).expect("config");
        config.print_verdicts = false;
        config.hold_down = Duration::from_millis(500);
        config.watch_every = Duration::ZERO;
        config
    }

    fn origin(&self) -> String {
        self.file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    }

    /// Every record of the control topic, oldest first, with its configuration header.
    async fn control_records(&self) -> Vec<(CaseControl, Option<Value>)> {
        let (kafka, topic) = (self.kafka.clone(), self.topics.control.clone());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = kafka
                .client_config(&[
                    ("group.id", "control-reader"),
                    ("enable.auto.commit", "false"),
                ])
                .create()
                .expect("consumer");
            let timeout = Duration::from_secs(10);
            let (low, high) = consumer
                .fetch_watermarks(&topic, 0, timeout)
                .expect("watermarks");
            let mut out = Vec::new();
            if high <= low {
                return out;
            }
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&topic, 0, Offset::Beginning)
                .expect("partition");
            consumer.assign(&list).expect("assign");
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let record: CaseControl =
                    serde_json::from_slice(m.payload().expect("payload")).expect("CaseControl");
                let header = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == CONFIG_HEADER)
                        .and_then(|h| h.value)
                        .map(|v| serde_json::from_slice::<Value>(v).expect("json header"))
                });
                out.push((record, header));
                if m.offset() + 1 >= high {
                    break;
                }
            }
            out
        })
        .await
        .expect("reader")
    }

    async fn producer(&self) -> FutureProducer {
        self.kafka
            .client_config(&[("linger.ms", "0")])
            .create()
            .expect("producer")
    }

    async fn publish(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        value: &impl serde::Serialize,
    ) {
        let payload = serde_json::to_vec(value).expect("json");
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case::new(ORDERS).expect(|_: Run, (): ()| async { Ok(()) }),
        Case::new(REFUNDS)
            .probability(0.5)
            .expect(|_: Run, (): ()| async { Ok(()) }),
    ]
}

async fn api_cases(service: &LiveService) -> Value {
    reqwest::get(format!("http://{}/api/cases", service.http_addr))
        .await
        .expect("GET /api/cases")
        .json()
        .await
        .expect("json")
}

fn case<'a>(cases: &'a Value, name: &str) -> &'a Value {
    cases
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in {cases}"))
}

async fn put(
    service: &LiveService,
    case: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .put(format!("http://{}/api/cases/{case}", service.http_addr))
        .header("content-type", "application/json")
        .header("x-livecheck-actor", "tester")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.expect("PUT");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

fn report(case: &str, verdict: Verdict) -> Report {
    let now = Utc::now();
    Report {
        test_id: uuid::Uuid::new_v4().to_string(),
        case: case.to_owned(),
        verdict,
        error: (verdict != Verdict::Pass).then(|| "broken on purpose".to_owned()),
        missing_step: None,
        last_step: None,
        unawaited: Vec::new(),
        timeline: Vec::new(),
        waits: Vec::new(),
        issued_at: now,
        finished_at: now,
        arguments: Value::Null,
        truncated: None,
        hops: Vec::new(),
        trace_id: None,
        invariant: None,
        route: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_changes_without_the_right_token_and_publishes_with_it() {
    let world = World::new(&format!("admin_token = \"{TOKEN}\"\n"));
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("service");

    // On start: one record per case, by the profile file, remembering the configuration.
    let records = world.control_records().await;
    assert_eq!(records.len(), 2, "{records:?}");
    for (r, header) in &records {
        assert_eq!(r.changed_by, world.origin());
        assert!(header.is_some(), "{CONFIG_HEADER} header on {r:?}");
    }
    let initial = records
        .iter()
        .find(|(r, _)| r.case == REFUNDS)
        .map(|(r, _)| r.clone())
        .expect("refunds record");
    assert_eq!((initial.probability, initial.active), (0.5, true));

    // Without a token, with a wrong one: 401, nothing published.
    let (status, body, headers) = put(&service, REFUNDS, None, r#"{"probability": 0.01}"#).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"livecheck\"");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    let (status, body, _) = put(
        &service,
        REFUNDS,
        Some("test-admin-token-0123456780"),
        r#"{"probability": 0.01}"#,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // Unknown case, bad bodies: 404, 400 with a message; nothing published either.
    let (status, body, _) = put(&service, "nope", Some(TOKEN), r#"{"probability": 0.01}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no case named \"nope\""),
        "{body}"
    );
    for (bad, says) in [
        (
            r#"{"probability": 1.5}"#,
            "probability 1.5 is not between 0 and 1",
        ),
        (r#"{"probabilty": 0.5}"#, "unknown field `probabilty`"),
        (r#"{"active": "yes"}"#, "invalid type"),
        ("not json", "the body is not a valid change"),
        ("{}", "nothing to change"),
    ] {
        let (status, body, _) = put(&service, REFUNDS, Some(TOKEN), bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(says),
            "{bad}: {body}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        world.control_records().await.len(),
        2,
        "a refused change published something"
    );
    assert_eq!(
        case(&api_cases(&service).await, REFUNDS)["published"]["version"],
        initial.version
    );

    // The right token: published, read back, shown, applied by the runner.
    let (status, body, _) = put(
        &service,
        REFUNDS,
        Some(TOKEN),
        r#"{"probability": 0.01, "active": false}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["changed"].as_bool(), body["read_back"].as_bool()),
        (Some(true), Some(true)),
        "{body}"
    );
    let records = world.control_records().await;
    assert_eq!(records.len(), 3);
    let (last, header) = records.last().expect("record");
    assert_eq!(last.case, REFUNDS);
    assert_eq!((last.probability, last.active), (0.01, false));
    assert_eq!(last.changed_by, "api:tester");
    assert!(last.version > initial.version);
    assert_eq!(
        header.as_ref().map(|h| h["probability"].clone()),
        Some(json!(0.5)),
        "the configuration it was made with"
    );
    let shown = api_cases(&service).await;
    let refunds = case(&shown, REFUNDS);
    assert_eq!(refunds["published"]["version"], last.version);
    assert_eq!(refunds["published"]["changed_by"], "api:tester");
    assert_eq!(
        (refunds["probability"].as_f64(), refunds["active"].as_bool()),
        (Some(0.01), Some(false))
    );
    let refunds_case = service
        .state
        .runner
        .suite()
        .get(REFUNDS)
        .expect("case")
        .clone();
    assert!(
        !service.state.runner.suite().is_active(&refunds_case),
        "the runner follows"
    );
    // The same values again: nothing published.
    let (status, body, _) = put(&service, REFUNDS, Some(TOKEN), r#"{"active": false}"#).await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(false)),
        "{body}"
    );

    // The runner skips a test of the case the topic made inactive.
    let client = LiveCheck::new(world.kafka.clone(), world.topics.clone()).expect("client");
    let context = client.new_context(REFUNDS, Duration::from_secs(60));
    let verdict = service.state.runner.report_for(&context.id);
    client.register_test(&context).expect("test record");
    let report = tokio::time::timeout(Duration::from_secs(30), verdict)
        .await
        .expect("a verdict")
        .expect("report");
    assert_eq!(report.verdict, Verdict::Skip);
    assert_eq!(
        report.error.as_deref(),
        Some("case payments.refund is inactive")
    );

    // A restart: the API's change survives (the file did not change that case) ...
    service.shutdown().await.expect("shutdown");
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("restart");
    assert_eq!(
        world.control_records().await.len(),
        3,
        "nothing published on restart"
    );
    let refunds = case(&api_cases(&service).await, REFUNDS).clone();
    assert_eq!(
        (
            refunds["probability"].as_f64(),
            refunds["published"]["changed_by"].as_str()
        ),
        (Some(0.01), Some("api:tester"))
    );
    // ... until the file changes that setting: its probability wins, the API's active stays.
    service.shutdown().await.expect("shutdown");
    world.write_profile(&format!(
        "admin_token = \"{TOKEN}\"\n[profiles.t.cases.\"{REFUNDS}\"]\nprobability = 0.2\n"
    ));
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("restart");
    let records = world.control_records().await;
    assert_eq!(records.len(), 4);
    let (last, _) = records.last().expect("record");
    assert_eq!(
        (last.case.as_str(), last.probability, last.active),
        (REFUNDS, 0.2, false)
    );
    assert_eq!(last.changed_by, world.origin());
    service.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_api_is_read_only() {
    let world = World::new("");
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("service");
    let (status, body, _) = put(&service, REFUNDS, Some(TOKEN), r#"{"probability": 0.01}"#).await;
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the settings API is read-only"),
        "{error}"
    );
    assert!(
        error.contains("LIVECHECK_ADMIN_TOKEN") && error.contains("--admin-token"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.control_records().await.len(), 2);
    service.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_show_what_each_instance_applies_and_go_stale() {
    let world = World::new("");
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("service");
    let published = case(&api_cases(&service).await, REFUNDS)["published"].clone();
    let version = published["version"].as_u64().expect("version");
    let producer = world.producer().await;
    let beat = |instance: &str, source: SettingsSource, probability: f64| Heartbeat {
        service: "orders-api".into(),
        instance: instance.into(),
        case: REFUNDS.into(),
        probability,
        active: true,
        source,
        requests: 400,
        tests_triggered: 200,
        at: Utc::now(),
        every_ms: 500,
    };
    let a = beat("a-1", SettingsSource::Control { version }, 0.5);
    let b = beat(
        "b-1",
        SettingsSource::Local {
            reason: "the control topic cannot be read".into(),
        },
        1.0,
    );
    for hb in [&a, &b] {
        let key = format!("{}/{}/{}", hb.service, hb.instance, hb.case);
        world
            .publish(&producer, &world.topics.heartbeats, &key, hb)
            .await;
    }
    let instances = wait_for(
        "both instances on /api/cases",
        Duration::from_secs(10),
        || async {
            let cases = api_cases(&service).await;
            let list = case(&cases, REFUNDS)["instances"].clone();
            (list.as_array().map(Vec::len) == Some(2))
                .then_some(list)
                .ok_or(cases.to_string())
        },
    )
    .await;
    let a_seen = &instances[0];
    assert_eq!(a_seen["instance"], "a-1");
    assert_eq!(a_seen["probability"], 0.5);
    assert_eq!(
        a_seen["source"],
        json!({"kind": "control", "version": version})
    );
    assert_eq!(a_seen["following"], "following", "{a_seen}");
    assert_eq!(a_seen["tests_triggered"], 200);
    let b_seen = &instances[1];
    assert_eq!(b_seen["following"], "not_following", "{b_seen}");
    assert!(
        b_seen["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("local defaults (the control topic cannot be read)"),
        "{b_seen}"
    );
    assert!(case(&api_cases(&service).await, ORDERS)["instances"]
        .as_array()
        .is_some_and(Vec::is_empty));
    // No more heartbeats: stale after 3 × 500 ms.
    let stale = wait_for("a-1 stale", Duration::from_secs(5), || async {
        let cases = api_cases(&service).await;
        let a = case(&cases, REFUNDS)["instances"][0].clone();
        (a["following"] == "stale")
            .then_some(a.clone())
            .ok_or(a.to_string())
    })
    .await;
    assert!(
        stale["age_ms"].as_i64().unwrap_or_default() > 1500,
        "{stale}"
    );
    assert!(
        stale["problem"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no heartbeat for"),
        "{stale}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", service.http_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains(&format!("livecheck_instance_probability{{case=\"{REFUNDS}\",service=\"orders-api\",instance=\"a-1\"}} 0.5")), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "livecheck_control_probability{{case=\"{REFUNDS}\"}} 0.5"
        )),
        "{metrics}"
    );
    service.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_published_and_an_invalid_one_changes_nothing() {
    let world = World::new("");
    let mut config = world.config();
    config.watch_every = Duration::from_millis(200);
    let service = LiveService::start(config, cases()).await.expect("service");
    assert_eq!(world.control_records().await.len(), 2);
    world.write_profile(&format!(
        "[profiles.t.cases.\"{ORDERS}\"]\nprobability = 0.25\nactive = false\n"
    ));
    let last = wait_for(
        "the file's change on the control topic",
        Duration::from_secs(10),
        || async {
            let records = world.control_records().await;
            (records.len() == 3)
                .then(|| records[2].0.clone())
                .ok_or(format!("{records:?}"))
        },
    )
    .await;
    assert_eq!(
        (last.case.as_str(), last.probability, last.active),
        (ORDERS, 0.25, false)
    );
    assert_eq!(last.changed_by, world.origin());
    // An invalid file (a probability out of range, then a key that does not exist, then a
    // case the check files do not define): refused, nothing published.
    for bad in [
        format!("[profiles.t.cases.\"{ORDERS}\"]\nprobability = 7.0\n"),
        format!("[profiles.t.cases.\"{ORDERS}\"]\nprobabilty = 0.1\n"),
        "[profiles.t.cases.\"orders.unknown\"]\nprobability = 0.1\n".to_owned(),
    ] {
        world.write_profile(&bad);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(
        world.control_records().await.len(),
        3,
        "an invalid file published something"
    );
    assert_eq!(
        case(&api_cases(&service).await, ORDERS)["probability"],
        0.25
    );
    service.shutdown().await.expect("shutdown");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_profile() {
    let world = World::new("");
    // No file watch: only SIGHUP reloads.
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("service");
    world.write_profile(&format!(
        "[profiles.t.cases.\"{REFUNDS}\"]\nprobability = 0.75\n"
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        world.control_records().await.len(),
        2,
        "no reload without SIGHUP"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let last = wait_for("the reload's record", Duration::from_secs(10), || async {
        let records = world.control_records().await;
        (records.len() == 3)
            .then(|| records[2].0.clone())
            .ok_or(format!("{records:?}"))
    })
    .await;
    assert_eq!((last.case.as_str(), last.probability), (REFUNDS, 0.75));
    assert_eq!(last.changed_by, world.origin());
    service.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_advances_on_pass_and_rolls_back_on_failures() {
    let plan = "steps = [0.1, 0.5, 1.0]\nevery = \"1s\"\nmin_runs = 3\nmax_failure_rate = 0.2\n";
    let world = World::new(&format!(
        "[profiles.t.cases.\"{ORDERS}\".rollout]\n{plan}[profiles.t.cases.\"{REFUNDS}\".rollout]\n{plan}"
    ));
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("service");
    for (r, _) in world.control_records().await {
        assert_eq!(r.probability, 0.1, "{r:?}");
        assert_eq!(
            r.rollout.as_ref().map(|p| p["step"].clone()),
            Some(json!(0)),
            "{r:?}"
        );
    }
    wait_for("the group's voice", Duration::from_secs(20), || async {
        service
            .health
            .is_voice()
            .then_some(())
            .ok_or_else(|| "not the voice yet".to_owned())
    })
    .await;
    let producer = world.producer().await;
    let step_of = |cases: &Value, name: &str| {
        let c = case(cases, name);
        (
            c["rollout"]["step"].as_u64(),
            c["rollout"]["state"].as_str().map(str::to_owned),
        )
    };
    // Orders passes every step: 0.1 → 0.5 → 1.0, then completed. Refunds passes the first
    // step, then fails on the second: back to the first, and stopped.
    let started = Instant::now();
    let mut refund_failing = false;
    let end = loop {
        let cases = api_cases(&service).await;
        let (orders, refunds) = (step_of(&cases, ORDERS), step_of(&cases, REFUNDS));
        if orders == (Some(2), Some("completed".into()))
            && refunds == (Some(0), Some("rolled_back".into()))
        {
            break cases;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "orders {orders:?}, refunds {refunds:?}: {cases}"
        );
        if orders.1.as_deref() == Some("running") {
            let r = report(ORDERS, Verdict::Pass);
            world
                .publish(&producer, &world.topics.reports, &r.test_id, &r)
                .await;
        }
        if refunds.0 == Some(1) {
            refund_failing = true;
        }
        if refunds.1.as_deref() == Some("running") {
            let r = report(
                REFUNDS,
                if refund_failing {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
            );
            world
                .publish(&producer, &world.topics.reports, &r.test_id, &r)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let refunds = case(&end, REFUNDS);
    assert_eq!(refunds["probability"], 0.1);
    let reason = refunds["rollout"]["reason"].as_str().unwrap_or_default();
    // (A passing test issued just after the step began, before the page showed it, may
    // count in it.)
    assert!(
        reason.starts_with("rolled back: step 2 of 3 (50%) failed with ")
            && reason.ends_with("at most 20% allowed); back to step 1 (10%) and stopped"),
        "{reason}"
    );
    assert_eq!(case(&end, ORDERS)["probability"], 1.0);
    // Every step change is on the control topic, by the roll-out.
    let records = world.control_records().await;
    let by_rollout = |name: &str| {
        records
            .iter()
            .filter(|(r, _)| r.case == name && r.changed_by == "rollout")
            .map(|(r, _)| {
                (
                    r.probability,
                    r.rollout
                        .as_ref()
                        .and_then(|p| p["state"].as_str().map(str::to_owned)),
                )
            })
            .collect::<Vec<_>>()
    };
    let running = Some("running".to_owned());
    assert_eq!(
        by_rollout(ORDERS),
        [
            (0.5, running.clone()),
            (1.0, running.clone()),
            (1.0, Some("completed".into()))
        ]
    );
    assert_eq!(
        by_rollout(REFUNDS),
        [(0.5, running), (0.1, Some("rolled_back".into()))]
    );
    // Restarted, the plans stay where they are (the plan did not change in the file).
    service.shutdown().await.expect("shutdown");
    let service = LiveService::start(world.config(), cases())
        .await
        .expect("restart");
    let cases = api_cases(&service).await;
    assert_eq!(
        step_of(&cases, REFUNDS),
        (Some(0), Some("rolled_back".into()))
    );
    assert_eq!(step_of(&cases, ORDERS), (Some(2), Some("completed".into())));
    assert_eq!(world.control_records().await.len(), records.len());
    service.shutdown().await.expect("shutdown");
}
