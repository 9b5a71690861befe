//! Central control, client side, on the embedded broker: a client that follows the control
//! topic samples with the published settings within seconds of a change (exactly none at
//! 0, all at 1, a share within statistical bounds at 0.25), keeps the highest version,
//! counts malformed records, falls back to the local settings (and says so) while the
//! control topic cannot be read, and reports what it applies on heartbeats.

use std::time::{Duration, Instant};

use chrono::Utc;
use livecheck_core::control::{CaseControl, Heartbeat, SamplingName, NO_CONTROL_RECORD};
use livecheck_core::{
    ControlOptions, EmbeddedBroker, KafkaConfig, LiveCheck, SettingsSource, TestContext, Topics,
    Trigger,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const CASE: &str = "orders.place_order";

/// Requests per measurement.
const N: usize = 1_000;

/// How soon a change must apply.
const WITHIN: Duration = Duration::from_secs(5);

/// A broker with fresh LiveCheck topics, a client following them as `svc`/`i1` (probes
/// every 200 ms, not following after `stale_after` without one, heartbeats only on demand
/// unless `heartbeat_every` says otherwise), and a plain producer to publish control
/// records with.
struct Fixture {
    broker: EmbeddedBroker,
    topics: Topics,
    client: LiveCheck,
    producer: BaseProducer,
}

impl Fixture {
    fn new(stale_after: Duration, heartbeat_every: Duration) -> Self {
        let prefix = format!("c{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let topics = Topics::with_prefix(&prefix);
        let broker = EmbeddedBroker::with_topics(&topics, &[], 1).unwrap();
        let client = following_client(&broker, &topics, stale_after, heartbeat_every);
        let producer = KafkaConfig::new(broker.bootstrap_servers())
            .client_config(&[("linger.ms", "0")])
            .create()
            .unwrap();
        Self {
            broker,
            topics,
            client,
            producer,
        }
    }

    fn publish_raw(&self, key: &str, value: Option<&[u8]>) {
        let mut record = BaseRecord::<str, [u8]>::to(&self.topics.control).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer.send(record).map_err(|(e, _)| e).unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    fn publish(&self, control: &CaseControl) {
        self.publish_raw(&control.case, Some(&serde_json::to_vec(control).unwrap()));
    }

    /// Publishes `control` and waits until `trigger` applies it; returns how long that took.
    fn change(&self, trigger: &Trigger, control: &CaseControl) -> Duration {
        let published = Instant::now();
        self.publish(control);
        let want = SettingsSource::Control {
            version: control.version,
        };
        wait_until(WITHIN, || trigger.effective(&self.client).source == want).unwrap_or_else(
            |()| {
                panic!(
                    "version {} not applied within {WITHIN:?}: {:?}",
                    control.version,
                    trigger.effective(&self.client)
                )
            },
        );
        published.elapsed()
    }
}

fn following_client(
    broker: &EmbeddedBroker,
    topics: &Topics,
    stale_after: Duration,
    heartbeat_every: Duration,
) -> LiveCheck {
    let client =
        LiveCheck::new(KafkaConfig::new(broker.bootstrap_servers()), topics.clone()).unwrap();
    client
        .follow_control_with(
            ControlOptions::new("svc")
                .instance("i1")
                .probe_every(Duration::from_millis(200))
                .stale_after(stale_after)
                .heartbeat_every(heartbeat_every),
        )
        .unwrap();
    client
}

fn control(version: u64, probability: f64, active: bool) -> CaseControl {
    CaseControl {
        case: CASE.to_owned(),
        probability,
        active,
        sampling: SamplingName::Random,
        test_expires_secs: None,
        version,
        changed_by: "test".to_owned(),
        changed_at: Utc::now(),
        rollout: None,
    }
}

/// Polls `ready` every 20 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tests `trigger` starts out of `n` requests.
fn realized(trigger: &Trigger, client: &LiveCheck, n: usize) -> usize {
    (0..n)
        .filter_map(|i| trigger.maybe_trigger(client, &i))
        .count()
}

fn counter(client: &LiveCheck, name: &str) -> u64 {
    client
        .counters()
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Whether `count` of `n` is within 4 standard deviations of a binomial with `p`.
fn within_bounds(count: usize, n: usize, p: f64) -> (bool, f64, f64) {
    let (n, count) = (n as f64, count as f64);
    let (expected, bound) = (n * p, 4.0 * (n * p * (1.0 - p)).sqrt());
    ((count - expected).abs() <= bound, expected, bound)
}

#[test]
fn a_following_trigger_samples_with_the_published_probability() {
    let fx = Fixture::new(Duration::from_secs(10), Duration::from_secs(3600));
    // Local default 0.5: every measurement below would fail if it were used.
    let trigger = Trigger::new(CASE).probability(0.5);
    wait_until(WITHIN, || fx.client.control_status().following).expect("following");
    assert_eq!(
        trigger.effective(&fx.client).source,
        SettingsSource::Local {
            reason: NO_CONTROL_RECORD.to_owned()
        }
    );
    assert_eq!(counter(&fx.client, "control_following"), 1);

    let took = fx.change(&trigger, &control(1, 0.0, true));
    let count = realized(&trigger, &fx.client, N);
    println!("p = 0: applied after {took:?}, {count} of {N}");
    assert_eq!(count, 0, "p = 0");

    let took = fx.change(&trigger, &control(2, 1.0, true));
    let count = realized(&trigger, &fx.client, N);
    println!("p = 1: applied after {took:?}, {count} of {N}");
    assert_eq!(count, N, "p = 1");

    let took = fx.change(&trigger, &control(3, 0.25, true));
    let count = realized(&trigger, &fx.client, N);
    let (ok, expected, bound) = within_bounds(count, N, 0.25);
    println!(
        "p = 0.25: applied after {took:?}, {count} of {N} (expected {expected} +- {bound:.1})"
    );
    assert!(
        ok,
        "p = 0.25: {count} of {N}, expected {expected} +- {bound:.1}"
    );
    let effective = trigger.effective(&fx.client);
    assert_eq!(effective.probability, 0.25);
    assert!(effective.active);

    // Inactive: nothing, whatever the probability; a test already started elsewhere is
    // still continued.
    fx.change(&trigger, &control(4, 1.0, false));
    assert_eq!(realized(&trigger, &fx.client, N), 0, "inactive");
    let came_in = TestContext::with_id("order-1", CASE, Duration::from_secs(60));
    let continued = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fx.client.scope(came_in, async {
            trigger.maybe_trigger(&fx.client, &"sell")
        }))
        .expect("the context that came in is registered");
    assert_eq!(continued.id, "order-1");

    // Keyed sampling applies the published probability too.
    fx.change(&trigger, &control(5, 0.0, true));
    assert!((0..N).all(|i| trigger
        .maybe_trigger_for_key(&fx.client, &format!("account-{i}"), &"sell")
        .is_none()));
    fx.change(&trigger, &control(6, 1.0, true));
    assert!((0..N).all(|i| trigger
        .maybe_trigger_for_key(&fx.client, &format!("account-{i}"), &"sell")
        .is_some()));
    assert!(trigger.samples_key_with(&fx.client, "account-1"));
    assert!(trigger.sample_with(&fx.client, "order-2"));

    // A trigger of a client that does not follow keeps its local settings.
    let other = LiveCheck::new(
        KafkaConfig::new(fx.broker.bootstrap_servers()),
        fx.topics.clone(),
    )
    .unwrap();
    assert!(matches!(
        trigger.effective(&other).source,
        SettingsSource::Local { .. }
    ));
    assert_eq!(trigger.effective(&other).probability, 0.5);
}

#[test]
fn the_highest_version_wins_and_malformed_records_are_counted() {
    let fx = Fixture::new(Duration::from_secs(10), Duration::from_secs(3600));
    let trigger = Trigger::new(CASE).probability(0.5);
    fx.change(&trigger, &control(5, 1.0, true));

    // Lower and equal versions are ignored.
    fx.publish(&control(3, 0.0, true));
    fx.publish(&control(5, 0.0, true));
    wait_until(WITHIN, || counter(&fx.client, "control_ignored") == 2).expect("two ignored");
    let effective = trigger.effective(&fx.client);
    assert_eq!(effective.source, SettingsSource::Control { version: 5 });
    assert_eq!(effective.probability, 1.0);
    assert_eq!(realized(&trigger, &fx.client, 200), 200);

    // Malformed: not JSON, a key that is not the case, a probability out of range.
    fx.publish_raw(CASE, Some(b"not json"));
    let mut mismatched = control(9, 0.0, true);
    mismatched.case = "billing.invoice".into();
    fx.publish_raw(CASE, Some(&serde_json::to_vec(&mismatched).unwrap()));
    fx.publish(&control(9, 2.0, true));
    wait_until(WITHIN, || counter(&fx.client, "control_malformed") == 3).expect("three malformed");
    assert_eq!(
        trigger.effective(&fx.client).source,
        SettingsSource::Control { version: 5 }
    );

    // A higher version replaces it.
    fx.change(&trigger, &control(6, 0.0, true));
    assert_eq!(realized(&trigger, &fx.client, 200), 0);
    assert!(fx.client.control_status().following);

    // A tombstone hands the case back to its local settings.
    fx.publish_raw(CASE, None);
    wait_until(WITHIN, || {
        trigger.effective(&fx.client).source
            == SettingsSource::Local {
                reason: NO_CONTROL_RECORD.to_owned(),
            }
    })
    .expect("the tombstone applies");
    assert_eq!(trigger.effective(&fx.client).probability, 0.5);
}

#[test]
fn an_unreachable_control_topic_means_local_settings_said_so_until_it_is_back() {
    let stale_after = Duration::from_secs(2);
    let fx = Fixture::new(stale_after, Duration::from_secs(3600));
    let trigger = Trigger::new(CASE).probability(0.0);
    fx.change(&trigger, &control(1, 1.0, true));
    assert_eq!(realized(&trigger, &fx.client, 200), 200);

    fx.broker.set_brokers_down(true).unwrap();
    let down = Instant::now();
    wait_until(stale_after + WITHIN, || {
        !fx.client.control_status().following
    })
    .expect("not following while the broker is down");
    println!(
        "not following {:?} after the broker went down",
        down.elapsed()
    );
    let effective = trigger.effective(&fx.client);
    let SettingsSource::Local { reason } = &effective.source else {
        panic!("expected local settings, got {effective:?}");
    };
    println!("reason: {reason}");
    assert!(reason.contains("cannot read the control topic"), "{reason}");
    assert_eq!(effective.probability, 0.0);
    assert_eq!(counter(&fx.client, "control_following"), 0);
    assert_eq!(counter(&fx.client, "control_episodes"), 1);
    assert_eq!(
        fx.client.control_status().reason.as_deref(),
        Some(reason.as_str())
    );
    assert_eq!(realized(&trigger, &fx.client, 200), 0, "the local default");

    fx.broker.set_brokers_down(false).unwrap();
    let up = Instant::now();
    wait_until(Duration::from_secs(30), || {
        fx.client.control_status().following
    })
    .expect("following again once the broker is back");
    println!(
        "following again {:?} after the broker came back",
        up.elapsed()
    );
    assert_eq!(
        trigger.effective(&fx.client).source,
        SettingsSource::Control { version: 1 }
    );
    assert_eq!(counter(&fx.client, "control_following"), 1);
    assert_eq!(realized(&trigger, &fx.client, 200), 200);
}

#[test]
fn a_missing_control_topic_means_local_settings_until_it_exists() {
    let prefix = format!("m{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let topics = Topics::with_prefix(&prefix);
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic(&topics.tests, 1).unwrap();
    let client = following_client(
        &broker,
        &topics,
        Duration::from_secs(2),
        Duration::from_secs(3600),
    );
    let trigger = Trigger::new(CASE).probability(0.0);
    std::thread::sleep(Duration::from_secs(3));
    let status = client.control_status();
    println!("{status:?}");
    assert!(!status.following);
    let reason = status.reason.unwrap();
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(matches!(
        trigger.effective(&client).source,
        SettingsSource::Local { .. }
    ));
    assert_eq!(realized(&trigger, &client, 200), 0);

    broker.create_topic(&topics.control, 1).unwrap();
    let created = Instant::now();
    wait_until(Duration::from_secs(30), || {
        client.control_status().following
    })
    .expect("following once the topic exists");
    println!(
        "following {:?} after the topic was created",
        created.elapsed()
    );
}

/// Every heartbeat on the topic so far, by key.
fn heartbeats(fx: &Fixture) -> Vec<(String, Heartbeat)> {
    let consumer: BaseConsumer = KafkaConfig::new(fx.broker.bootstrap_servers())
        .client_config(&[
            ("group.id", "heartbeat-reader"),
            ("enable.partition.eof", "true"),
        ])
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&fx.topics.heartbeats, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let beat: Heartbeat = serde_json::from_slice(message.payload().unwrap()).unwrap();
                found.push((key, beat));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(err)) => panic!("{err}"),
            None => {}
        }
    }
    found
}

#[test]
fn heartbeats_report_what_is_applied() {
    let fx = Fixture::new(Duration::from_secs(10), Duration::from_millis(300));
    let trigger = Trigger::new(CASE).probability(0.0);
    let idle = Trigger::new("billing.invoice").probability(0.125);
    idle.announce(&fx.client);
    fx.change(&trigger, &control(7, 0.25, true));
    let count = realized(&trigger, &fx.client, N);
    let (ok, expected, bound) = within_bounds(count, N, 0.25);
    assert!(ok, "{count} of {N}, expected {expected} +- {bound:.1}");
    assert_eq!(fx.client.heartbeat_now().unwrap(), 2);
    fx.client.flush(Duration::from_secs(10)).unwrap();

    let beats = heartbeats(&fx);
    let last = |key: &str| {
        beats
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no heartbeat {key} in {beats:?}"))
    };
    let beat = last(&format!("svc/i1/{CASE}"));
    println!("{}", serde_json::to_string(&beat).unwrap());
    assert_eq!(beat.service, "svc");
    assert_eq!(beat.instance, "i1");
    assert_eq!(beat.case, CASE);
    assert_eq!(beat.probability, 0.25);
    assert!(beat.active);
    assert_eq!(beat.source, SettingsSource::Control { version: 7 });
    assert_eq!(beat.requests, N as u64);
    assert_eq!(beat.tests_triggered, count as u64);
    assert_eq!(beat.every_ms, 300);

    let beat = last("svc/i1/billing.invoice");
    assert_eq!(beat.probability, 0.125);
    assert_eq!(
        beat.source,
        SettingsSource::Local {
            reason: NO_CONTROL_RECORD.to_owned()
        }
    );
    assert_eq!((beat.requests, beat.tests_triggered), (0, 0));

    // The follower sends them on its own, every 300 ms.
    assert!(
        beats.iter().filter(|(k, _)| k.ends_with(CASE)).count() >= 2,
        "periodic heartbeats: {beats:?}"
    );
    assert!(fx.client.counters().heartbeats_sent() >= 4);
    assert_eq!(counter(&fx.client, "heartbeat_errors"), 0);
}

#[test]
fn following_twice_or_with_bad_names_is_refused() {
    let fx = Fixture::new(Duration::from_secs(10), Duration::from_secs(3600));
    assert!(fx.client.follow_control("svc").is_err());
    let other = LiveCheck::new(
        KafkaConfig::new(fx.broker.bootstrap_servers()),
        fx.topics.clone(),
    )
    .unwrap();
    assert!(other.heartbeat_now().is_err(), "not following");
    assert!(other.follow_control("a/b").is_err());
    assert!(other.follow_control("").is_err());
    assert!(other
        .follow_control_with(ControlOptions::new("svc").instance("x/y"))
        .is_err());
    assert_eq!(
        fx.client.control_options().unwrap().instance.as_deref(),
        Some("i1")
    );
}
