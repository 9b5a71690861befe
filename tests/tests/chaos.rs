//! Live mode under faults, with runner processes (the `livecheck-chaos` binary) in one
//! consumer group on the embedded broker: kill -9 with hundreds of tests in flight, runners
//! joining, leaving (SIGTERM) and crashing, and a report too large for the broker. The test
//! process plays the services; every test's one true verdict is known from its script
//! (`livecheck_tests::chaos::Script`), so each test must end with exactly that verdict —
//! reported once, or again with the same verdict (counted and printed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livecheck_core::{
    Case, EmbeddedBroker, KafkaConfig, LiveCheck, Report, Run, Signal, TestContext, Topics,
    Trigger, Verdict,
};
use livecheck_harness::live::config::{LiveArgs, LiveConfig};
use livecheck_harness::live::service::LiveService;
use livecheck_tests::chaos::{self, Posting, Script};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

/// One scenario at a time: each runs processes against timeouts of seconds, and two at once
/// on a small machine would make the steps sent in time late.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Reports = Arc<Mutex<HashMap<String, Vec<Report>>>>;

struct World {
    prefix: String,
    kafka: KafkaConfig,
    client: LiveCheck,
    reports: Reports,
    logs: PathBuf,
    broker: EmbeddedBroker,
}

impl World {
    async fn new() -> Self {
        let prefix = format!("c{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let topics = Topics::with_prefix(&prefix);
        let broker = EmbeddedBroker::with_topics(&topics, &[], PARTITIONS).unwrap();
        broker
            .create_topic(&topics.table(chaos::POSTINGS.name()), PARTITIONS)
            .unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0");
        let client = LiveCheck::new(kafka.clone(), topics.clone()).unwrap();
        let reports = read_reports(&kafka, &topics.reports);
        let logs = std::env::temp_dir().join(format!("livecheck-chaos-{prefix}"));
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            prefix,
            kafka,
            client,
            reports,
            logs,
            broker,
        }
    }

    fn args(&self, group: &str) -> Vec<String> {
        [
            "--brokers",
            &self.kafka.brokers,
            "--topic-prefix",
            &self.prefix,
            "--group-id",
            &format!("{}{group}", self.prefix),
            "--http-port",
            "0",
            "--summary-every",
            "3600",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts a runner process in `group`.
    fn runner(&self, group: &str, name: &str) -> RunnerProcess {
        let log = self.logs.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_livecheck-chaos"))
            .args(self.args(group))
            // `LIVECHECK_CHAOS_LOG` replaces the runners' log filter (e.g. to debug a failure).
            .env(
                "RUST_LOG",
                std::env::var("LIVECHECK_CHAOS_LOG")
                    .unwrap_or_else(|_| "warn,livecheck_core=info,livecheck_harness=info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        RunnerProcess {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Starts test `n`: registers it and sends its first step.
    async fn start(&self, n: u64) -> (u64, TestContext) {
        (n, chaos::start_test(&self.client, n).await)
    }

    /// Sends the second step of `tests` as their scripts say (`late`: the late ones).
    async fn send_b(&self, tests: &[(u64, TestContext)], late: bool) {
        for (n, context) in tests {
            chaos::send_b(&self.client, context, *n, late).await;
        }
    }

    fn reported(&self, tests: &[(u64, TestContext)]) -> usize {
        let reports = self.reports.lock().unwrap();
        tests
            .iter()
            .filter(|(_, c)| reports.contains_key(&c.id))
            .count()
    }

    /// Waits until every test of `tests` has a report (or `within`).
    async fn all_reported(&self, tests: &[(u64, TestContext)], within: Duration) -> Duration {
        let start = Instant::now();
        while self.reported(tests) < tests.len() && start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A duplicate, if any, comes within moments of the first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        start.elapsed()
    }

    /// Checks every test's reports against its script: none lost, none conflicting, each
    /// the verdict a run without faults gives. Returns the number of tests reported twice
    /// or more.
    fn check(&self, tests: &[(u64, TestContext)], runners: &[&RunnerProcess]) -> usize {
        let reports = self.reports.lock().unwrap();
        let mut problems = Vec::new();
        let mut duplicated = 0;
        for (n, context) in tests {
            let expected = Script::of(*n).verdict();
            match reports.get(&context.id) {
                None => problems.push(format!("test {n} ({:?}) got no report", Script::of(*n))),
                Some(r) => {
                    duplicated += usize::from(r.len() > 1);
                    for report in r {
                        if report.verdict != expected {
                            problems.push(format!(
                                "test {n} ({:?}): {} instead of {expected} ({} reports)\n{}",
                                Script::of(*n),
                                report.verdict,
                                r.len(),
                                report.render()
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            for runner in runners {
                runner.print_log();
            }
            panic!(
                "{} of {} tests are wrong:\n{}",
                problems.len(),
                tests.len(),
                problems[..problems.len().min(10)].join("\n")
            );
        }
        duplicated
    }

    /// Starts a Quick test and waits for its report: the group is up and reading.
    async fn warm_up(&self, n: u64, runners: &[&RunnerProcess]) {
        let test = [self.start(n).await];
        let waited = self.all_reported(&test, Duration::from_secs(60)).await;
        if self.reported(&test) == 0 {
            for runner in runners {
                runner.print_log();
            }
            panic!("the runners did not report a warm-up test within {waited:?}");
        }
    }
}

/// A consumer of every partition of `topic` from its beginning, in a group of its own,
/// committing nothing, with one setting more.
fn reader(kafka: &KafkaConfig, topic: &str, setting: (&str, &str)) -> StreamConsumer {
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &format!("reader-{}", uuid::Uuid::new_v4())),
            ("enable.auto.commit", "false"),
            setting,
        ])
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    consumer
}

/// Every report on the reports topic, collected as it comes.
fn read_reports(kafka: &KafkaConfig, topic: &str) -> Reports {
    let consumer = reader(kafka, topic, ("fetch.wait.max.ms", "20"));
    let reports: Reports = Arc::default();
    let r = reports.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(msg) = consumer.recv().await {
                if let Ok(report) =
                    serde_json::from_slice::<Report>(msg.payload().unwrap_or_default())
                {
                    r.lock()
                        .unwrap()
                        .entry(report.test_id.clone())
                        .or_default()
                        .push(report);
                }
            }
        }
    });
    reports
}

struct RunnerProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl RunnerProcess {
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < within,
                "{} did not exit within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn print_log(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        // Its warnings and errors first (the last lines alone may not say what went wrong),
        // then how it ended.
        let warnings: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        eprintln!(
            "--- warnings and errors of {} (the first 40 of {}) ---\n{}",
            self.name,
            warnings.len(),
            warnings[..warnings.len().min(40)].join("\n")
        );
        eprintln!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_hundreds_of_tests_in_flight_then_restart_gives_each_test_its_one_true_verdict()
{
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let mut first = w.runner("g", "first");
    w.warm_up(1_000_000, &[&first]).await;

    let mut tests = Vec::new();
    for n in 0..600 {
        tests.push(w.start(n).await);
    }
    // The first runner has read them: the quick ones are decided.
    let quick = tests
        .iter()
        .filter(|(n, _)| Script::of(*n) == Script::Quick)
        .count();
    let start = Instant::now();
    while w.reported(&tests) < quick / 2 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let decided_before = w.reported(&tests);
    first.kill9();
    let killed = Instant::now();
    let in_flight = tests.len() - decided_before;
    // While no runner runs: second steps in time, then the late ones.
    w.send_b(&tests, false).await;
    tokio::time::sleep(chaos::TIMEOUT + Duration::from_millis(1500)).await;
    w.send_b(&tests, true).await;
    let second = w.runner("g", "second");
    let waited = w.all_reported(&tests, Duration::from_secs(90)).await;
    let duplicated = w.check(&tests, &[&first, &second]);
    println!(
        "kill -9: {} tests, {decided_before} decided before the kill, {in_flight} in flight; \
         {duplicated} reported twice; all verdicts {:.1} s after the kill ({:.1} s after the restart)",
        tests.len(),
        killed.elapsed().as_secs_f64(),
        waited.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_joining_leaving_and_crashing_lose_nothing_and_never_conflict() {
    let _serial = SERIAL.lock().await;
    let w = Arc::new(World::new().await);
    let mut a = w.runner("g", "a");
    let mut b = w.runner("g", "b");
    w.warm_up(1_000_000, &[&a, &b]).await;

    let mut tests = Vec::new();
    let mut c = None;
    let mut senders = Vec::new();
    for wave in 0..12u64 {
        let mut batch = Vec::new();
        for i in 0..40 {
            batch.push(w.start(wave * 100 + i).await);
        }
        tests.extend(batch.iter().cloned());
        let world = w.clone();
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            world.send_b(&batch, false).await;
            tokio::time::sleep(chaos::TIMEOUT + Duration::from_millis(1500)).await;
            world.send_b(&batch, true).await;
        }));
        match wave {
            2 => c = Some(w.runner("g", "c")),
            5 => a.terminate(),
            8 => b.kill9(),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let exit = a.wait_exit(Duration::from_secs(40));
    assert!(exit.success(), "a SIGTERM ends the runner with 0: {exit:?}");
    for s in senders {
        s.await.unwrap();
    }
    let c = c.unwrap();
    let waited = w.all_reported(&tests, Duration::from_secs(90)).await;
    let duplicated = w.check(&tests, &[&a, &b, &c]);
    println!(
        "join, leave (SIGTERM), crash (kill -9): {} tests, {duplicated} reported twice \
         ({:.2} % over 3 rebalances), all verdicts {:.1} s after the last test",
        tests.len(),
        100.0 * duplicated as f64 / tests.len() as f64,
        waited.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_sent_in_time_during_a_broker_outage_are_in_time_and_late_ones_are_late() {
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let runner = w.runner("g", "runner");
    w.warm_up(1_000_000, &[&runner]).await;
    let mut tests = Vec::new();
    for n in 0..200 {
        tests.push(w.start(n).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.broker.set_brokers_down(true).unwrap();
    let down = Instant::now();
    // The services send while no broker answers: their producers hold the records, with
    // the timestamps of when they were sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.send_b(&tests, false).await;
    tokio::time::sleep(chaos::TIMEOUT + Duration::from_millis(1000)).await;
    w.send_b(&tests, true).await;
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(down.elapsed())).await;
    w.broker.set_brokers_down(false).unwrap();
    let back = Instant::now();
    let waited = w.all_reported(&tests, Duration::from_secs(90)).await;
    let duplicated = w.check(&tests, &[&runner]);
    println!(
        "brokers down {:.1} s: {} tests with steps sent during the outage, each its one true \
         verdict; {duplicated} reported twice; all verdicts {:.1} s after the brokers were back",
        (back - down).as_secs_f64(),
        tests.len(),
        waited.as_secs_f64()
    );
}

static BIG_STEP: Signal<u64> = Signal::new("big.flow", "step");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_too_large_for_the_broker_is_published_truncated_and_commits_move_on() {
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let case = || {
        Case::new("big.flow")
            .timeout(Duration::from_secs(3))
            .expect(|run: Run, _args: serde_json::Value| async move {
                run.wait(&BIG_STEP).await?;
                Ok(())
            })
    };
    let config = || {
        let mut args = LiveArgs {
            brokers: Some(w.kafka.brokers.clone()),
            topic_prefix: Some(w.prefix.clone()),
            group_id: Some(format!("{}big", w.prefix)),
            http_port: Some(0),
            summary_every: 3600,
            ..LiveArgs::default()
        };
        // The broker limit, as the runner's producer sees it.
        args.kafka = vec!["message.max.bytes=20000".into()];
        let mut config = LiveConfig::resolve(&args).unwrap();
        config.print_verdicts = false;
        config
    };
    let trigger = Trigger::new("big.flow").probability(1.0);
    let send = |big: bool| {
        let args = if big {
            serde_json::json!({ "blob": "x".repeat(50_000) })
        } else {
            serde_json::json!({ "n": 1 })
        };
        let context = trigger.maybe_trigger(&w.client, &args).unwrap();
        let client = w.client.clone();
        async move {
            client.scope(context.clone(), BIG_STEP.send(&1)).await;
            (0, context)
        }
    };
    let service = LiveService::start(config(), vec![case()]).await.unwrap();
    let mut tests = Vec::new();
    for i in 0..20 {
        tests.push(send(i == 10).await);
    }
    w.all_reported(&tests, Duration::from_secs(30)).await;
    service.shutdown().await.unwrap();
    // A graceful restart: nothing is run again.
    let service = LiveService::start(config(), vec![case()]).await.unwrap();
    for _ in 0..5 {
        tests.push(send(false).await);
    }
    w.all_reported(&tests, Duration::from_secs(30)).await;
    let counters = service.state.runner.counters();
    let truncated = counters.reports_truncated();
    // Nothing is left uncommittable: the operator's gauge says so.
    let metrics_url = format!("http://{}/metrics", service.http_addr);
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("livecheck_uncommitted_records{topic=\"tests\"} 0\n")
            && metrics.contains("livecheck_uncommitted_records{topic=\"signals\"} 0\n")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("livecheck_uncommitted_records{topic=\"tests\"} 0\n")
            && metrics.contains("livecheck_uncommitted_records{topic=\"signals\"} 0\n")
            && metrics.contains("livecheck_paused_signal_partitions 0\n"),
        "{metrics}"
    );
    service.shutdown().await.unwrap();

    let reports = w.reports.lock().unwrap();
    for (i, (_, context)) in tests.iter().enumerate() {
        let r = reports
            .get(&context.id)
            .unwrap_or_else(|| panic!("test {i} got no report"));
        assert_eq!(r.len(), 1, "test {i} reported {} times", r.len());
        assert_eq!(r[0].verdict, Verdict::Pass, "{}", r[0].render());
        if i == 10 {
            let t = r[0]
                .truncated
                .as_ref()
                .expect("the big report is marked truncated");
            assert_eq!(t.fields, vec!["arguments".to_owned()]);
            assert!(t.original_bytes > 50_000, "{t:?}");
            assert!(r[0].arguments.is_null());
            assert_eq!(r[0].timeline.len(), 1, "the timeline is kept");
        } else {
            assert!(r[0].truncated.is_none());
        }
    }
    assert_eq!(
        truncated, 0,
        "the second runner published nothing truncated"
    );

    // The group's commit moved past every test record.
    let consumer: StreamConsumer = w
        .kafka
        .client_config(&[("group.id", &format!("{}big", w.prefix))])
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    let tests_topic = format!("{}livecheck-tests", w.prefix);
    for p in 0..PARTITIONS {
        list.add_partition(&tests_topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    let mut committed_total = 0;
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(&tests_topic, p, Duration::from_secs(10))
            .unwrap();
        let at = match committed.find_partition(&tests_topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {p} has no commit: {other:?}"),
        };
        assert_eq!(at, high, "partition {p}: committed {at}, end {high}");
        committed_total += at;
    }
    assert_eq!(committed_total, tests.len() as i64);
}

/// The last value per key of a table's changelog, read to its end.
async fn table_values(kafka: &KafkaConfig, topic: &str) -> HashMap<String, u64> {
    let consumer = reader(kafka, topic, ("enable.partition.eof", "true"));
    let mut values = HashMap::new();
    let mut at_end = std::collections::HashSet::new();
    while at_end.len() < PARTITIONS as usize {
        match tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .expect("the changelog is read within 10 s")
        {
            Ok(msg) => {
                let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
                let value: serde_json::Value =
                    serde_json::from_slice(msg.payload().unwrap()).unwrap();
                // Fences (each owner's, on each partition) are not entries.
                if value.get("fence").is_none() {
                    values.insert(key, value["v"].as_u64().unwrap());
                }
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
            }
            Err(err) => panic!("reading the changelog: {err}"),
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_counts_each_test_once_across_a_kill_a_rebalance_of_three_runners_and_a_restart() {
    let _serial = SERIAL.lock().await;
    let w = World::new().await;
    let changelog = w.client.topics().table(chaos::POSTINGS.name());
    let mut a = w.runner("t", "a");
    let mut b = w.runner("t", "b");
    let mut c = w.runner("t", "c");
    w.warm_up(1_000_000, &[&a, &b, &c]).await;

    const ACCOUNTS: u64 = 8;
    const PER_ACCOUNT: u64 = 25;
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct-{i}")).collect();
    let mut tests = Vec::new();
    for round in 0..PER_ACCOUNT {
        for account in &accounts {
            let posting = Posting {
                account: account.clone(),
                tests: PER_ACCOUNT,
                exactly: None,
            };
            tests.push((round, chaos::start_posting(&w.client, &posting)));
        }
    }
    // Every test posted (one changelog record each) and waits for `posted`: all in flight.
    let posted = || {
        let consumer: StreamConsumer = w
            .kafka
            .client_config(&[("group.id", "watermarks")])
            .create()
            .unwrap();
        (0..PARTITIONS)
            .map(|p| {
                consumer
                    .fetch_watermarks(&changelog, p, Duration::from_secs(5))
                    .unwrap()
                    .1
            })
            .sum::<i64>()
    };
    let start = Instant::now();
    while posted() < tests.len() as i64 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {} postings written within 60 s",
            posted(),
            tests.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One runner dies with its tests in flight; their partitions move to the other two,
    // which run those tests again from their records.
    a.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (_, context) in &tests {
        w.client
            .scope(context.clone(), chaos::POSTED.send(&()))
            .await;
    }
    w.all_reported(&tests, Duration::from_secs(90)).await;
    let check = |tests: &[(u64, TestContext)], runners: &[&RunnerProcess]| {
        let reports = w.reports.lock().unwrap();
        let wrong: Vec<String> = tests
            .iter()
            .filter_map(|(_, context)| match reports.get(&context.id) {
                None => Some(format!("{} got no report", context.id)),
                Some(r) if r.iter().all(|r| r.verdict == Verdict::Pass) => None,
                Some(r) => Some(r[0].render()),
            })
            .collect();
        if !wrong.is_empty() {
            for runner in runners {
                runner.print_log();
            }
            panic!(
                "{} of {} postings are wrong:\n{}",
                wrong.len(),
                tests.len(),
                wrong[..wrong.len().min(5)].join("\n")
            );
        }
    };
    check(&tests, &[&a, &b, &c]);
    let values = table_values(&w.kafka, &changelog).await;
    for account in &accounts {
        assert_eq!(
            values.get(account),
            Some(&PER_ACCOUNT),
            "the postings of {account}: {values:?}"
        );
    }

    // Every runner stops; a new one restores the table and counts on from it.
    b.terminate();
    c.terminate();
    assert!(b.wait_exit(Duration::from_secs(40)).success());
    assert!(c.wait_exit(Duration::from_secs(40)).success());
    let d = w.runner("t", "d");
    let mut more = Vec::new();
    for account in &accounts {
        let posting = Posting {
            account: account.clone(),
            tests: PER_ACCOUNT + 1,
            exactly: Some(PER_ACCOUNT + 1),
        };
        let context = chaos::start_posting(&w.client, &posting);
        w.client
            .scope(context.clone(), chaos::POSTED.send(&()))
            .await;
        more.push((PER_ACCOUNT, context));
    }
    w.all_reported(&more, Duration::from_secs(60)).await;
    check(&more, &[&d]);
    let values = table_values(&w.kafka, &changelog).await;
    for account in &accounts {
        assert_eq!(
            values.get(account),
            Some(&(PER_ACCOUNT + 1)),
            "after the restart: {values:?}"
        );
    }
    println!(
        "table across kill -9, rebalance of 3 runners and a restart: {} postings on {ACCOUNTS} accounts, each counted once",
        tests.len() + more.len()
    );
}
