//! Routes on the embedded broker: a test started by a business key is keyed by that key in
//! every LiveCheck record (its test record, signals, hops and report), so every test of one
//! key lands on the key's partition of the co-partitioned topics; the route survives an HTTP
//! hop, and a stimulus routed by its case's rule is registered with its route by the
//! service's trigger. A bad or repeated route rejects the context, counted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use livecheck_core::http::{RequestBuilderExt as _, TestContextLayer};
use livecheck_core::murmur2::partition_for;
use livecheck_core::{
    ensure_eq, hop, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner,
    RunnerConfig, Signal, SignalEvent, Suite, Target, TestContext, Topics, Trigger, Verdict,
};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const KEY: &str = "user-7";

const CASE: &str = "routes.by_user";
static STEPPED: Signal<u32> = Signal::new(CASE, "stepped");

const HTTP_CASE: &str = "routes.over_http";
static AT_HTTP: Signal<String> = Signal::new(HTTP_CASE, "at_http");

/// One broker (4 partitions), one client and one runner per test, topics named for it.
struct Fixture {
    client: LiveCheck,
    runner: Runner,
    commands: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    // Last: clients must close before their broker goes.
    _broker: EmbeddedBroker,
}

impl Fixture {
    async fn new(cases: Vec<Case>) -> Self {
        let topics = Topics::with_prefix(&format!("r{}-", uuid::Uuid::new_v4().simple()));
        let commands = format!("{}commands", topics.tests);
        let broker = EmbeddedBroker::with_topics(&topics, &[&commands], PARTITIONS).unwrap();
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
            commands,
            _stop: stop,
            _broker: broker,
        }
    }

    async fn report(&self, rx: tokio::sync::oneshot::Receiver<Arc<Report>>) -> Arc<Report> {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("no report within 30 s")
            .expect("runner dropped the watcher")
    }

    /// Every record of `topic` from the beginning, read until `done` says so (at most 20 s),
    /// then for another half second, so that a record too many shows.
    async fn read_all(
        &self,
        topic: &str,
        done: impl Fn(&[OwnedMessage]) -> bool,
    ) -> Vec<OwnedMessage> {
        let group = format!("reader-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = self
            .client
            .kafka()
            .client_config(&[("group.id", &group), ("enable.auto.commit", "false")])
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        let mut messages = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&messages) {
            let message = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .unwrap_or_else(|_| panic!("{topic}: only {} records", messages.len()))
                .unwrap();
            messages.push(message.detach());
        }
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            messages.push(message.detach());
        }
        messages
    }
}

fn key_of(message: &OwnedMessage) -> &str {
    std::str::from_utf8(message.key().unwrap_or_default()).unwrap()
}

fn by_user_case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(10))
        .expect(|run: Run, n: u32| async move {
            let stepped = run.wait(&STEPPED).await?;
            ensure_eq!(stepped, n, "the step carried another number");
            Ok(())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_of_the_tests_of_one_key_lands_on_the_keys_partition() {
    const N: u32 = 8;
    let fx = Fixture::new(vec![by_user_case()]).await;
    let expected = partition_for(KEY.as_bytes(), PARTITIONS);
    let trigger = Trigger::new(CASE);
    let producer: FutureProducer = fx.client.kafka().producer_config().create().unwrap();
    let producer = fx.client.producer(producer);
    let mut ids = BTreeSet::new();
    let mut watchers = Vec::new();
    for n in 0..N {
        let context = trigger
            .maybe_trigger_for_key(&fx.client, KEY, &n)
            .expect("probability 1 samples");
        assert_eq!(context.route.as_deref(), Some(KEY));
        assert_eq!(context.partition_key(), KEY);
        ids.insert(context.id.clone());
        watchers.push(fx.runner.report_for(&context.id));
        fx.client
            .scope(context, async {
                // A Kafka hop (recorded as a signal of the test), then the step.
                producer
                    .send(
                        FutureRecord::<str, str>::to(&fx.commands)
                            .key("command")
                            .payload("go"),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                STEPPED.send(&n).await;
            })
            .await;
    }
    // Keyed by their ids, the tests would have spread over the partitions.
    assert!(
        ids.iter()
            .any(|id| partition_for(id.as_bytes(), PARTITIONS) != expected),
        "every test id hashes to the key's partition: {ids:?}"
    );

    for watcher in watchers {
        let report = fx.report(watcher).await;
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
        assert_eq!(report.route.as_deref(), Some(KEY));
        assert_eq!(report.hops.len(), 1, "{}", report.render());
        assert!(
            report.timeline.iter().all(|s| s.partition == expected),
            "{}",
            report.render()
        );
    }
    assert_eq!(fx.runner.counters().verdict_pass(), u64::from(N));

    let topics = fx.client.topics().clone();
    // Test records: one per test, each keyed by the key, on its partition.
    let tests = fx.read_all(&topics.tests, |m| m.len() >= N as usize).await;
    assert_eq!(tests.len(), N as usize);
    let mut registered = BTreeSet::new();
    for message in &tests {
        assert_eq!(key_of(message), KEY);
        assert_eq!(message.partition(), expected);
        let context: TestContext = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(context.route.as_deref(), Some(KEY));
        registered.insert(context.id);
    }
    assert_eq!(registered, ids);

    // Signals and hops: one step and one hop per test, all keyed by the key.
    let ours = |m: &OwnedMessage| key_of(m) != "livecheck.positions";
    let signals = fx
        .read_all(&topics.signals, |all| {
            all.iter().filter(|m| ours(m)).count() >= 2 * N as usize
        })
        .await;
    let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for message in signals.iter().filter(|m| ours(m)) {
        assert_eq!(key_of(message), KEY);
        assert_eq!(message.partition(), expected);
        let event: SignalEvent = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert!(
            kinds
                .entry(event.signal)
                .or_default()
                .insert(event.test_id.clone()),
            "a second record of one kind for {}",
            event.test_id
        );
    }
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds["stepped"], ids);
    assert_eq!(kinds[hop::HOP_SIGNAL], ids);

    // Reports: exactly one per test, keyed by the key.
    let reports = fx
        .read_all(&topics.reports, |m| m.len() >= N as usize)
        .await;
    assert_eq!(reports.len(), N as usize);
    let mut reported = BTreeSet::new();
    for message in &reports {
        assert_eq!(key_of(message), KEY);
        assert_eq!(message.partition(), expected);
        let report: Report = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(report.verdict, Verdict::Pass);
        assert_eq!(report.route.as_deref(), Some(KEY));
        reported.insert(report.test_id);
    }
    assert_eq!(reported, ids);
}

/// A case whose step, sent behind an HTTP hop, carries the route the service saw.
fn over_http_case() -> Case {
    Case::new(HTTP_CASE)
        .timeout(Duration::from_secs(10))
        .route_by(|user: &String| user.clone())
        .stimulus_with(
            || KEY.to_owned(),
            |app: Target, user: String| async move {
                app.get(&format!("/order/{user}")).await.map(drop)
            },
        )
        .expect(|run: Run, user: String| async move {
            let seen = run.wait(&AT_HTTP).await?;
            ensure_eq!(seen, user, "the service saw another route");
            Ok(())
        })
}

/// The service: `/start/{user}` starts a test routed by the user and calls `/order/{user}`
/// over HTTP in its scope; `/order/{user}` (scoped by the layer) triggers by the user — which
/// continues a test that came in — and sends the route it sees.
async fn start_service(client: &LiveCheck) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let trigger = Trigger::new(HTTP_CASE);
    let order = {
        let (client, trigger) = (client.clone(), trigger.clone());
        move |axum::extract::Path(user): axum::extract::Path<String>| {
            let (client, trigger) = (client.clone(), trigger.clone());
            async move {
                // A test that came in is kept as it came, its route included.
                let Some(context) = trigger.maybe_trigger_for_key(&client, &user, &user) else {
                    return "no test".to_owned();
                };
                let route = context.route.clone().unwrap_or_default();
                client.scope(context, AT_HTTP.send(&route)).await;
                route
            }
        }
    };
    let start = {
        let (client, base) = (client.clone(), base.clone());
        move |axum::extract::Path(user): axum::extract::Path<String>| {
            let (client, trigger, base) = (client.clone(), trigger.clone(), base.clone());
            async move {
                let context = trigger
                    .maybe_trigger_for_key(&client, &user, &user)
                    .expect("probability 1 samples");
                let id = context.id.clone();
                client
                    .scope(context, async {
                        reqwest::Client::new()
                            .get(format!("{base}/order/{user}"))
                            .test_context()
                            .send()
                            .await
                            .unwrap()
                            .error_for_status()
                            .unwrap();
                    })
                    .await;
                id
            }
        }
    };
    let app = Router::new()
        .route("/start/{user}", get(start))
        .route("/order/{user}", get(order))
        .layer(TestContextLayer::new(client.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_routed_by_key_keeps_its_route_across_an_http_hop() {
    let case = over_http_case();
    let fx = Fixture::new(vec![case.clone()]).await;
    let expected = partition_for(KEY.as_bytes(), PARTITIONS);
    let base = start_service(&fx.client).await;

    // Started by the service's trigger, carried to the next handler over HTTP.
    let mut reports = fx.runner.subscribe();
    let id = reqwest::get(format!("{base}/start/{KEY}"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let report = reports.recv().await.unwrap();
            if report.test_id == id {
                return report;
            }
        }
    })
    .await
    .expect("no report within 30 s");
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.route.as_deref(), Some(KEY));
    assert_eq!(report.timeline.len(), 1);
    assert_eq!(report.timeline[0].partition, expected);

    // Started by a stimulus, as the harness does: the case's rule gives the route, the
    // service's trigger registers the context as it came.
    let stimulus = case.prepare_stimulus().unwrap();
    assert_eq!(stimulus.route(), Some(KEY));
    let mut context = TestContext::new(case.name(), case.settings().test_expires)
        .arguments(stimulus.arguments().clone());
    context.route = stimulus.route().map(str::to_owned);
    let context = fx.client.sign(context);
    let watcher = fx.runner.report_for(&context.id);
    fx.client
        .scope(context, stimulus.send(Target::new(base)))
        .await
        .unwrap();
    let report = fx.report(watcher).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    assert_eq!(report.route.as_deref(), Some(KEY));
    assert_eq!(report.timeline[0].partition, expected);
}

#[test]
fn a_bad_or_repeated_route_rejects_the_context_and_is_counted() {
    use livecheck_core::headers::{self, ContextError};
    use rdkafka::message::{Header, OwnedHeaders};

    // No broker needed: nothing is published.
    let client = LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).unwrap();
    let counters = client.counters();
    let context = TestContext::new(CASE, Duration::from_secs(60)).route(KEY);

    // HTTP: a good route is accepted, a bad one rejects the context.
    let mut map = http::HeaderMap::new();
    livecheck_core::http::inject(&mut map, &context);
    let accepted = client.accept(livecheck_core::http::extract(&map), "/good");
    assert_eq!(accepted.and_then(|c| c.route).as_deref(), Some(KEY));
    map.insert(
        headers::TEST_ROUTE,
        http::HeaderValue::from_static("user 7"),
    );
    assert!(client
        .accept(livecheck_core::http::extract(&map), "/bad")
        .is_none());
    assert_eq!(
        (
            counters.contexts_rejected(),
            counters.contexts_rejected_bad_route()
        ),
        (1, 1)
    );
    map.insert(headers::TEST_ROUTE, http::HeaderValue::from_static(KEY));
    map.append(
        headers::TEST_ROUTE,
        http::HeaderValue::from_static("user-8"),
    );
    assert_eq!(
        livecheck_core::http::extract(&map),
        Err(ContextError::DuplicateHeader {
            header: headers::TEST_ROUTE,
            count: 2
        })
    );

    // Kafka: the same, names compared case-insensitively.
    let message = |extra: &[(&str, &[u8])]| {
        let mut record_headers =
            livecheck_core::kafka::inject_context(OwnedHeaders::new(), &context);
        for (key, value) in extra {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        OwnedMessage::new(
            None,
            None,
            "orders".to_owned(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            Some(record_headers),
        )
    };
    let routed = client.accept_message(&message(&[])).unwrap();
    assert_eq!(routed.route.as_deref(), Some(KEY));
    assert!(client
        .accept_message(&message(&[("livecheck-test-route", b"user-8")]))
        .is_none());
    assert_eq!(counters.contexts_rejected_duplicate_header(), 1);
    // A bad route alone in the headers (none injected): rejected as a bad route.
    let plain = TestContext::new(CASE, Duration::from_secs(60));
    let record_headers =
        livecheck_core::kafka::inject_context(OwnedHeaders::new(), &plain).insert(Header {
            key: headers::TEST_ROUTE,
            value: Some(b"caf\xc3\xa9"),
        });
    let bad = OwnedMessage::new(
        None,
        None,
        "orders".to_owned(),
        rdkafka::Timestamp::NotAvailable,
        0,
        0,
        Some(record_headers),
    );
    assert_eq!(
        livecheck_core::kafka::extract(&bad).unwrap_err().reason(),
        "bad_route"
    );
    assert!(client.accept_message(&bad).is_none());
    assert_eq!(
        (
            counters.contexts_rejected(),
            counters.contexts_rejected_bad_route()
        ),
        (3, 2)
    );
}
