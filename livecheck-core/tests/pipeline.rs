//! Integration tests of the core on the embedded broker: a request followed through an HTTP
//! hop and a Kafka hop to a verdict, and every way a run can end.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use livecheck_core::http::{RequestBuilderExt as _, TestContextLayer};
use livecheck_core::signing::SigningKeys;
use livecheck_core::{
    ensure_eq, headers, kafka, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner,
    RunnerConfig, Signal, Suite, TestContext, Topics, Trigger, Verdict,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const CASE: &str = "pipeline.two_hops";
static AT_HTTP: Signal<String> = Signal::new(CASE, "at_http");
static AT_CONSUMER: Signal<String> = Signal::new(CASE, "at_consumer");
static NEVER: Signal<()> = Signal::new(CASE, "never_sent");

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
        Self::with_keys(cases, None).await
    }

    /// A fixture whose client (and so its runner) verifies and signs with `keys`.
    async fn with_keys(cases: Vec<Case>, keys: Option<SigningKeys>) -> Self {
        let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
        let topics = Topics::with_prefix(&prefix);
        let orders_topic = format!("{prefix}orders");
        let broker = EmbeddedBroker::with_topics(&topics, &[&orders_topic], 4).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let mut client = LiveCheck::new(kafka, topics).unwrap();
        if let Some(keys) = keys {
            client = client.with_signing(keys);
        }
        let runner = Runner::new(
            Suite::new(cases).unwrap(),
            client.clone(),
            RunnerConfig::default(),
        );
        let stop = support::start_runner(&runner).await;
        Self {
            _broker: broker,
            client,
            runner,
            orders_topic,
            stop: Some(stop),
        }
    }

    fn producer(&self) -> FutureProducer {
        self.client.kafka().producer_config().create().unwrap()
    }

    async fn produce_raw(&self, topic: &str, key: &str, payload: &[u8], headers: OwnedHeaders) {
        self.producer()
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }

    async fn report(&self, rx: tokio::sync::oneshot::Receiver<Arc<Report>>) -> Arc<Report> {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("no report within 30 s")
            .expect("runner dropped the watcher")
    }

    fn consumer(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = self
            .client
            .kafka()
            .client_config(&[("group.id", "test-reader"), ("enable.auto.commit", "false")])
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..4 {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        consumer
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits (at most 5 s) until `counter` reads `expected`, then asserts it does.
async fn reaches(counter: impl Fn() -> u64, expected: u64) {
    for _ in 0..200 {
        if counter() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(counter(), expected);
}

fn two_hop_case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(10))
        .expect(|run: Run, side: String| async move {
            let at_http = run.wait(&AT_HTTP).await?;
            ensure_eq!(at_http, side, "the HTTP hop saw another side");
            let at_consumer = run.wait(&AT_CONSUMER).await?;
            ensure_eq!(
                at_consumer,
                format!("{side}@{}", run.test_id()),
                "the consumer saw another order"
            );
            Ok(())
        })
}

/// Service A: an axum handler that signals and produces to Kafka with the context.
async fn start_http_service(fx: &Fixture) -> String {
    let producer = fx.producer();
    let topic = fx.orders_topic.clone();
    let app = Router::new()
        .route(
            "/order/{side}",
            get(
                move |axum::extract::Path(side): axum::extract::Path<String>| {
                    let producer = producer.clone();
                    let topic = topic.clone();
                    async move {
                        AT_HTTP.send(&side).await;
                        let id = livecheck_core::current_test()
                            .map(|c| c.id.clone())
                            .unwrap_or_default();
                        let record_headers = kafka::inject(OwnedHeaders::new());
                        producer
                            .send(
                                FutureRecord::to(&topic)
                                    .key(&id)
                                    .payload(&side)
                                    .headers(record_headers),
                                Duration::from_secs(5),
                            )
                            .await
                            .map_err(|(e, _)| e.to_string())
                            .unwrap();
                        "ok"
                    }
                },
            ),
        )
        .layer(TestContextLayer::new(fx.client.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Service B: a Kafka consumer that restores the context and signals.
fn start_consumer_service(fx: &Fixture) {
    let consumer = fx.consumer(&fx.orders_topic);
    let client = fx.client.clone();
    tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                continue;
            };
            let side = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
            client
                .scope_message(&msg, async {
                    let id = livecheck_core::current_test()
                        .map(|c| c.id.clone())
                        .unwrap_or_default();
                    AT_CONSUMER.send(&format!("{side}@{id}")).await;
                })
                .await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_survives_http_and_kafka_hops_and_the_run_passes() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    let base = start_http_service(&fx).await;
    start_consumer_service(&fx);

    let trigger = Trigger::new(CASE);
    let context = trigger
        .maybe_trigger(&fx.client, &"sell")
        .expect("probability 1 samples");
    let report = fx.runner.report_for(&context.id);
    let http = reqwest::Client::new();
    let response = fx
        .client
        .scope(context.clone(), async {
            // Inside the scope: the builder reads the current context.
            http.get(format!("{base}/order/sell"))
                .test_context()
                .send()
                .await
        })
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    let steps: Vec<_> = report.timeline.iter().map(|s| s.signal.as_str()).collect();
    assert_eq!(steps, ["at_http", "at_consumer"]);
    // Both signals were keyed by the test id: same partition, as the Java client would pick.
    let expected = livecheck_core::murmur2::partition_for(context.id.as_bytes(), 4);
    assert!(
        report.timeline.iter().all(|s| s.partition == expected),
        "{report:?}"
    );

    // Exactly one report on the reports topic, keyed by the test id.
    let reports = fx.consumer(&fx.client.topics().reports);
    let msg = tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.key(), Some(context.id.as_bytes()));
    assert_eq!(msg.partition(), expected);
    let published: Report = serde_json::from_slice(msg.payload().unwrap()).unwrap();
    assert_eq!(published.verdict, Verdict::Pass);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), reports.recv())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violated_contract_is_a_fail_with_the_message() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    let context = Trigger::new(CASE)
        .maybe_trigger(&fx.client, &"sell")
        .unwrap();
    let report = fx.runner.report_for(&context.id);
    fx.client
        .scope(context, AT_HTTP.send(&"buy".to_owned()))
        .await;
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(
        report.error.as_deref(),
        Some("the HTTP hop saw another side: expected \"sell\", got \"buy\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assert_panic_is_a_fail_with_its_message() {
    let case = Case::new(CASE).expect(|run: Run, (): ()| async move {
        let side = run.wait(&AT_HTTP).await?;
        assert_eq!(side, "sell", "side flipped");
        Ok(())
    });
    let fx = Fixture::new(vec![case]).await;
    let context = Trigger::new(CASE).maybe_trigger(&fx.client, &()).unwrap();
    let report = fx.runner.report_for(&context.id);
    fx.client
        .scope(context, AT_HTTP.send(&"buy".to_owned()))
        .await;
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Fail);
    let error = report.error.as_deref().unwrap();
    assert!(
        error.starts_with("the check panicked: assertion `left == right` failed: side flipped"),
        "{error}"
    );
}

/// The case's closure runs on the runner's loop, where it builds the run's future: a panic
/// there (before any future) fails that run alone, with its message, and the runner goes
/// on to run the next test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_before_the_check_has_a_future_fails_that_run_alone() {
    let case = Case::new(CASE).expect(|run: Run, side: String| {
        assert_ne!(side, "boom", "no future for this side");
        async move {
            run.wait(&AT_HTTP).await?;
            Ok(())
        }
    });
    let fx = Fixture::new(vec![case]).await;
    // Watched first: the run fails as soon as it starts.
    let id = uuid::Uuid::new_v4().to_string();
    let report = fx.runner.report_for(&id);
    Trigger::new(CASE)
        .maybe_trigger_with_id(&fx.client, Some(&id), &"boom")
        .unwrap();
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Fail);
    let error = report.error.as_deref().unwrap();
    assert!(
        error.starts_with(
            "the check panicked: assertion `left != right` failed: no future for this side"
        ),
        "{error}"
    );
    // The next test runs as usual.
    let context = Trigger::new(CASE)
        .maybe_trigger(&fx.client, &"sell")
        .unwrap();
    let report = fx.runner.report_for(&context.id);
    fx.client
        .scope(context, AT_HTTP.send(&"sell".to_owned()))
        .await;
    assert_eq!(fx.report(report).await.verdict, Verdict::Pass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_step_is_a_timeout_naming_it_and_the_last_step() {
    let case =
        Case::new(CASE)
            .timeout(Duration::from_millis(700))
            .expect(|run: Run, (): ()| async move {
                run.wait(&AT_HTTP).await?;
                run.wait(&NEVER).await?;
                Ok(())
            });
    let fx = Fixture::new(vec![case]).await;
    let context = Trigger::new(CASE).maybe_trigger(&fx.client, &()).unwrap();
    let report = fx.runner.report_for(&context.id);
    fx.client
        .scope(context, AT_HTTP.send(&"x".to_owned()))
        .await;
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(report.missing_step.as_deref(), Some("never_sent"));
    assert_eq!(report.last_step.as_deref(), Some("at_http"));
    assert_eq!(
        report.error.as_deref(),
        Some("signal `never_sent` did not arrive within 700ms of the previous step `at_http`")
    );
    assert!(report.render().contains("✗ never_sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_before_the_test_record_are_buffered_and_the_run_passes() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    let context =
        TestContext::new(CASE, Duration::from_secs(60)).arguments(serde_json::json!("sell"));
    let report = fx.runner.report_for(&context.id);
    let id = context.id.clone();
    fx.client
        .scope(context.clone(), async {
            AT_HTTP.send(&"sell".to_owned()).await;
            AT_CONSUMER.send(&format!("sell@{id}")).await;
        })
        .await;
    // Wait until both are buffered, then publish the test record.
    reaches(|| fx.runner.counters().signals_buffered(), 2).await;
    // One test has early signals.
    reaches(|| fx.runner.buffered_tests() as u64, 1).await;
    assert_eq!(fx.runner.buffered_tests(), 1);
    fx.client.register_test(&context).unwrap();
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(fx.runner.buffered_tests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_records_give_one_report() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    let mut all_reports = fx.runner.subscribe();
    let context = Trigger::new(CASE)
        .maybe_trigger(&fx.client, &"sell")
        .unwrap();
    fx.client.register_test(&context).unwrap(); // the test record twice
    let report = fx.runner.report_for(&context.id);
    // Each send delivered twice by the transport (a producer's retry): the same send id.
    let signals = fx.client.topics().signals.clone();
    let sent_at = chrono::Utc::now();
    for (signal, value) in [
        ("at_http", "sell".to_owned()),
        ("at_consumer", format!("sell@{}", context.id)),
    ] {
        let event = serde_json::json!({
            "signal": signal, "case": CASE, "test_id": context.id, "sent_at": sent_at,
            "value": value, "send_id": format!("{signal}-1"),
        });
        for _ in 0..2 {
            fx.produce_raw(
                &signals,
                &context.id,
                event.to_string().as_bytes(),
                OwnedHeaders::new(),
            )
            .await;
        }
    }
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.timeline.len(), 2, "one occurrence per send");
    // Records sent after the verdict are late, not a second run.
    fx.client.register_test(&context).unwrap();
    fx.client
        .scope(context.clone(), AT_HTTP.send(&"buy".to_owned()))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let first = all_reports.recv().await.unwrap();
    assert_eq!(first.test_id, context.id);
    assert!(
        all_reports.try_recv().is_err(),
        "a second report was published"
    );
    let c = fx.runner.counters();
    assert_eq!(c.reports_published(), 1);
    assert_eq!(c.duplicate_tests(), 2);
    assert!(c.duplicate_signals() + c.late_signals() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_and_headers_are_counted_and_the_next_good_record_is_processed() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    let topics = fx.client.topics().clone();
    // Garbage on the tests and signals topics, a test of an unknown case, a tombstone-like empty payload.
    fx.produce_raw(&topics.tests, "k", b"{not json", OwnedHeaders::new())
        .await;
    fx.produce_raw(&topics.signals, "k", b"\xff\xfe", OwnedHeaders::new())
        .await;
    let unknown = TestContext::new("no.such.case", Duration::from_secs(60));
    fx.produce_raw(
        &topics.tests,
        &unknown.id,
        &serde_json::to_vec(&unknown).unwrap(),
        OwnedHeaders::new(),
    )
    .await;

    // A malformed context on the HTTP hop and on the Kafka hop: the work goes on untested.
    let base = start_http_service(&fx).await;
    start_consumer_service(&fx);
    let response = reqwest::Client::new()
        .get(format!("{base}/order/sell"))
        .header(headers::TEST_ID, "abc")
        .header(headers::TEST_NAME, CASE)
        .header(headers::TEST_TIMESTAMP, "not-a-time")
        .header(headers::TEST_EXPIRES, "2100-01-01T00:00:00Z")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bad_headers = OwnedHeaders::new().insert(Header {
        key: headers::TEST_ID,
        value: Some("only-the-id".as_bytes()),
    });
    fx.produce_raw(&fx.orders_topic, "k", b"sell", bad_headers)
        .await;

    // Then a good test runs to PASS.
    let context = Trigger::new(CASE)
        .maybe_trigger(&fx.client, &"sell")
        .unwrap();
    let report = fx.runner.report_for(&context.id);
    fx.client
        .scope(context.clone(), async {
            reqwest::Client::new()
                .get(format!("{base}/order/sell"))
                .test_context()
                .send()
                .await
        })
        .await
        .unwrap();
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());

    let c = fx.runner.counters();
    assert_eq!(c.records_malformed(), 2);
    assert_eq!(c.unknown_case(), 1);
    // One from HTTP, one from Kafka.
    reaches(|| fx.client.counters().contexts_rejected(), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_test_is_skipped() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    let mut context =
        TestContext::new(CASE, Duration::from_secs(60)).arguments(serde_json::json!("sell"));
    context.issued_at -= chrono::Duration::minutes(10);
    context.expires_at = context.issued_at + chrono::Duration::minutes(1);
    let report = fx.runner.report_for(&context.id);
    fx.client.register_test(&context).unwrap();
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Skip);
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .starts_with("test expired at"),
        "{:?}",
        report.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_case_is_skipped_and_bad_arguments_are_an_error() {
    let inactive = Case::new("pipeline.inactive")
        .active(false)
        .expect(|_: Run, (): ()| async { Ok(()) });
    let fx = Fixture::new(vec![inactive, two_hop_case()]).await;
    // Watched first: both are decided as soon as their records are read.
    let (skipped, bad_args) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let skipped_report = fx.runner.report_for(&skipped);
    let bad_report = fx.runner.report_for(&bad_args);
    Trigger::new("pipeline.inactive")
        .maybe_trigger_with_id(&fx.client, Some(&skipped), &())
        .unwrap();
    Trigger::new(CASE)
        .maybe_trigger_with_id(&fx.client, Some(&bad_args), &42)
        .unwrap();
    let skipped = fx.report(skipped_report).await;
    assert_eq!(skipped.verdict, Verdict::Skip);
    assert_eq!(
        skipped.error.as_deref(),
        Some("case pipeline.inactive is inactive")
    );
    let bad = fx.report(bad_report).await;
    assert_eq!(bad.verdict, Verdict::Error);
    assert!(
        bad.error
            .as_deref()
            .unwrap()
            .starts_with("test arguments 42 do not decode as alloc::string::String"),
        "{:?}",
        bad.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_outside_a_test_publishes_nothing() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    AT_HTTP.send(&"sell".to_owned()).await;
    assert_eq!(fx.client.counters().signals_sent(), 0);
    // A spawned task keeps the context only with livecheck_core::spawn.
    let context = TestContext::new(CASE, Duration::from_secs(60));
    let (kept, lost) = fx
        .client
        .scope(context, async {
            let kept = livecheck_core::spawn(async { livecheck_core::in_test() })
                .await
                .unwrap();
            let lost = tokio::spawn(async { livecheck_core::in_test() })
                .await
                .unwrap();
            (kept, lost)
        })
        .await;
    assert!(kept);
    assert!(!lost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signing_keys_the_runner_runs_only_signed_untampered_tests() {
    const SECRET: &str = "the-runner-test-shared-secret";
    let keys = SigningKeys::new("k1", SECRET).unwrap();
    let fx = Fixture::with_keys(vec![two_hop_case()], Some(keys)).await;
    let unsigned_client =
        LiveCheck::new(fx.client.kafka().clone(), fx.client.topics().clone()).unwrap();
    let trigger = Trigger::new(CASE).probability(1.0);
    // Unsigned: a service without keys registered it.
    let unsigned = trigger.maybe_trigger(&unsigned_client, &"sell").unwrap();
    // Forged: signed with a guessed secret.
    let forger = unsigned_client
        .clone()
        .with_signing(SigningKeys::new("k1", "a-guessed-secret-0000").unwrap());
    let forged = trigger.maybe_trigger(&forger, &"sell").unwrap();
    // Tampered: signed, then its expiry pushed out.
    let mut tampered = fx
        .client
        .sign(TestContext::new(CASE, Duration::from_secs(60)).arguments(serde_json::json!("sell")));
    tampered.expires_at += chrono::Duration::hours(1);
    unsigned_client.register_test(&tampered).unwrap();
    // Signed and intact: runs.
    let good = trigger.maybe_trigger(&fx.client, &"sell").unwrap();
    assert!(good.signature.is_some(), "a trigger with keys signs");
    let watchers: Vec<_> = [&unsigned, &forged, &tampered]
        .iter()
        .map(|c| fx.runner.report_for(&c.id))
        .collect();
    let report = fx.runner.report_for(&good.id);
    for context in [&unsigned, &forged, &tampered, &good] {
        fx.client
            .scope(context.clone(), async {
                AT_HTTP.send(&"sell".to_owned()).await;
                AT_CONSUMER.send(&format!("sell@{}", context.id)).await;
            })
            .await;
    }
    let report = fx.report(report).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    let c = fx.runner.counters();
    reaches(|| c.tests_rejected_unsigned(), 1).await;
    reaches(|| c.tests_rejected_bad_signature(), 2).await;
    for mut rx in watchers {
        assert!(rx.try_recv().is_err(), "an untrusted test got a report");
    }
    assert_eq!(c.verdict_pass(), 1);
}

/// `LiveCheck::connect` looks the tests and signals topics up through the producer (so a
/// service's first records are not held while it does); with no broker it says which one
/// it tried, and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_looks_the_topics_up_and_names_the_brokers_when_none_answers() {
    let fx = Fixture::new(vec![two_hop_case()]).await;
    fx.client
        .connect(Duration::from_secs(10))
        .await
        .expect("the embedded broker answers");
    let nowhere = LiveCheck::new(KafkaConfig::new("127.0.0.1:9"), Topics::default()).unwrap();
    let err = nowhere
        .connect(Duration::from_millis(300))
        .await
        .expect_err("no broker at 127.0.0.1:9")
        .to_string();
    assert!(
        err.contains("looking up topic livecheck-tests through brokers 127.0.0.1:9"),
        "{err}"
    );
}
