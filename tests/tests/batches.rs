//! A runner that resumes inside a record batch still runs every test after its commit, once.
//!
//! A restart or a rebalance resumes each partition at its committed offset, and that offset
//! can fall inside a record batch. tansu 0.6 (the container environment's broker) answers a
//! fetch from inside a batch with the batches after it: a gap. When there is no later batch,
//! it answers with nothing: a stall. The runner notices both. It sees a record past the next
//! offset, or none for 3 s although the broker holds some. It then reads the partition again
//! from an earlier offset and drops what it had read before. The embedded broker serves the
//! whole batch, so there the same test passes without a rewind. The runner's last commit
//! holds each topic's position.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livecheck_core::{
    ensure_eq, Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig,
    Signal, Suite, TestContext, Topics, Trigger, Verdict,
};
use livecheck_harness::{create_topics, EnvironmentKind};
use livecheck_tests::RunningRunner;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const CASE: &str = "batches.flow";
static STEP: Signal<u64> = Signal::new(CASE, "a");

/// One step carrying the test's number.
fn case() -> Case {
    Case::new(CASE)
        .timeout(Duration::from_secs(30))
        .expect(|run: Run, n: u64| async move {
            let a = run.wait(&STEP).await?;
            ensure_eq!(a, n, "step a carries the test's number");
            Ok(())
        })
}

fn trigger(client: &LiveCheck, n: u64) -> (u64, TestContext) {
    let id = format!("batches-{n:03}-{}", uuid::Uuid::new_v4().simple());
    let context = Trigger::new(CASE)
        .probability(1.0)
        .maybe_trigger_with_id(client, Some(&id), &n)
        .expect("a test registers");
    (n, context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_resuming_inside_record_batches_runs_every_test_after_its_commit_once_and_commits_past_them(
) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    // Topics of this test's own: no service writes to them.
    let topics = Topics::with_prefix(&format!(
        "b{}-",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ));
    // The environment as every test of the run has it (a container environment is shared
    // by the run's tests: its own topics keep their settings).
    let config = livecheck_tests::environment().unwrap();
    let kind = config.kind_of();
    let (kafka, _broker) = if kind == EnvironmentKind::Embedded {
        let broker = EmbeddedBroker::with_topics(&topics, &[], 1).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        (kafka, Box::new(broker) as Box<dyn std::any::Any>)
    } else {
        // The environment's broker (it starts the example app too, unused here).
        let env = config.start().await.unwrap();
        create_topics(&env.kafka, &topics, &[], &[], 1)
            .await
            .unwrap();
        (env.kafka.clone(), Box::new(env) as Box<dyn std::any::Any>)
    };
    // Everything sent within a second goes in one batch.
    let kafka = kafka.set("linger.ms", "1000");
    let client = LiveCheck::new(kafka.clone(), topics.clone()).unwrap();
    let flush = |c: &LiveCheck| c.flush(Duration::from_secs(20)).unwrap();

    // The tests topic: tests 0..200 in one batch, 200..210 in a second one. The signals
    // topic: every test's step in one batch, in the tests' order.
    let mut tests = Vec::new();
    for batch in [0..200, 200..210] {
        tests.extend(batch.map(|n| trigger(&client, n)));
        flush(&client);
    }
    for (n, context) in &tests {
        client
            .scope(context.clone(), async { STEP.send_now(n) })
            .await;
    }
    flush(&client);

    // The group's commit: tests and signals from offset 100, inside the first batch of each.
    let group = format!("batches-{}", uuid::Uuid::new_v4().simple());
    let committer: BaseConsumer = kafka
        .client_config(&[("group.id", &group), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    // The signals position is in the tests commit's metadata; tansu 0.6 does not keep
    // metadata, and the runner then takes the signals topic's own commit.
    let mut list = TopicPartitionList::new();
    let mut e = list.add_partition(&topics.tests, 0);
    e.set_offset(Offset::Offset(100)).unwrap();
    e.set_metadata("livecheck/1 signals=100 reports=0");
    list.add_partition_offset(&topics.signals, 0, Offset::Offset(100))
        .unwrap();
    committer.commit(&list, CommitMode::Sync).unwrap();
    drop(committer);

    let runner = Runner::new(
        Suite::new([case()]).unwrap(),
        client.clone(),
        RunnerConfig {
            group_id: Some(group.clone()),
            ..RunnerConfig::default()
        },
    );
    let mut reports = runner.subscribe();
    let running = RunningRunner::start(&runner);
    let expected: HashMap<String, u64> = tests
        .iter()
        .filter(|(n, _)| *n >= 100)
        .map(|(n, c)| (c.id.clone(), *n))
        .collect();
    let mut got: HashMap<String, Vec<Report>> = HashMap::new();
    let start = Instant::now();
    let mut deadline = start + Duration::from_secs(60);
    let mut all_in = None;
    while let Ok(Ok(report)) = tokio::time::timeout_at(deadline.into(), reports.recv()).await {
        got.entry(report.test_id.clone())
            .or_default()
            .push((*report).clone());
        if all_in.is_none() && expected.keys().all(|id| got.contains_key(id)) {
            all_in = Some(start.elapsed());
            // A duplicate, if any, comes within moments.
            deadline = Instant::now() + Duration::from_secs(2);
        }
    }
    let counters = runner.counters();
    let rewinds = counters.partition_rewinds();
    println!(
        "{kind:?} environment: {} of {} tests reported in {all_in:?}; {rewinds} rewinds, {} test and {} signal offsets skipped, {} stalls",
        got.len(),
        expected.len(),
        counters.tests_skipped_by_broker(),
        counters.signals_skipped_by_broker(),
        counters.partitions_stalled(),
    );
    running.stop().await;
    // The runner's last commit: every position past the end, each as its own topic's commit
    // too (tansu keeps no commit metadata).
    let reader: BaseConsumer = kafka
        .client_config(&[("group.id", &group), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for topic in [&topics.tests, &topics.signals, &topics.reports] {
        wanted.add_partition(topic, 0);
    }
    let committed = reader
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    let at = |topic: &str| committed.find_partition(topic, 0).unwrap().offset();
    assert_eq!(
        [at(&topics.tests), at(&topics.signals), at(&topics.reports)],
        [
            Offset::Offset(210),
            Offset::Offset(210),
            Offset::Offset(110)
        ]
    );

    let mut problems = Vec::new();
    for (id, reports) in &got {
        match expected.get(id) {
            None => problems.push(format!("{id}: run although committed before the resume")),
            Some(n) if reports.len() != 1 || reports[0].verdict != Verdict::Pass => {
                problems.push(format!(
                    "test {n}: {} reports, first:\n{}",
                    reports.len(),
                    reports[0].render()
                ))
            }
            Some(_) => {}
        }
    }
    let missing = expected.keys().filter(|id| !got.contains_key(*id)).count();
    if missing > 0 {
        problems.push(format!("{missing} tests after the commit have no report"));
    }
    assert!(
        problems.is_empty(),
        "{}",
        problems[..problems.len().min(10)].join("\n")
    );
    assert_eq!(counters.tests_skipped_by_broker(), 0);
    assert_eq!(counters.signals_skipped_by_broker(), 0);
    assert_eq!(counters.partitions_stalled(), 0);
    // tansu: the tests partition's gap and the signals partition's stall, one rewind each.
    match kind {
        EnvironmentKind::Container => assert_eq!(rewinds, 2),
        EnvironmentKind::Embedded => assert_eq!(rewinds, 0),
        EnvironmentKind::External => {}
    }
}
