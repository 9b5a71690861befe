//! Verdict accuracy under sustained load: a runner of the real order case, fed tests whose
//! four signals all arrive well within their 10 s timeout, must pass every one of them. A
//! single `TIMEOUT` (or any other non-PASS verdict) here is a false verdict, the very
//! failure the product exists to avoid. This asserts correctness, never timing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use example_app::Side;
use livecheck_core::{
    EmbeddedBroker, KafkaConfig, LiveCheck, Report, Runner, RunnerConfig, Suite, Topics, Verdict,
};
use livecheck_tests::load::publish_order_test;
use livecheck_tests::orders::place_order;
use livecheck_tests::RunningRunner;
use tokio::sync::broadcast::error::RecvError;

/// Tests per second (4 signals each); debug builds are slower, so they get less.
const RATE: u64 = if cfg!(debug_assertions) { 300 } else { 1_000 };
/// How long the load lasts.
const LOAD_FOR: Duration = Duration::from_secs(5);
/// How often the generator produces the tests that are due (a small burst per tick).
const TICK: Duration = Duration::from_millis(10);
/// Longest wait for every report once the load is over.
const REPORTS_DEADLINE: Duration = Duration::from_secs(60);
/// Partitions of each LiveCheck topic.
const PARTITIONS: i32 = 4;

/// What the report subscriber saw.
#[derive(Debug, Default)]
struct Tally {
    /// Reports per verdict, in the order of [`Verdict::ALL`].
    verdicts: [u64; 5],
    /// Reports the subscriber missed because it lagged behind.
    lagged: u64,
    /// The first few non-PASS reports, for the failure message.
    non_pass: Vec<Arc<Report>>,
}

impl Tally {
    fn seen(&self) -> u64 {
        self.verdicts.iter().sum::<u64>() + self.lagged
    }

    fn describe(&self) -> String {
        Verdict::ALL
            .iter()
            .zip(self.verdicts)
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_verdicts_under_sustained_load() {
    let prefix = format!("acc{}-", uuid::Uuid::new_v4().simple());
    let topics = Topics::with_prefix(&prefix);
    let broker = EmbeddedBroker::with_topics(&topics, &[], PARTITIONS).expect("embedded broker");
    let client = LiveCheck::new(KafkaConfig::new(broker.bootstrap_servers()), topics)
        .expect("LiveCheck client");
    let runner = Runner::new(
        Suite::new([place_order()]).expect("suite"),
        client.clone(),
        RunnerConfig::default(),
    );

    // Drain every report as it is published, counting verdicts (a receiver that is not
    // drained lags and loses reports).
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut reports = runner.subscribe();
    let drain = tokio::spawn({
        let tally = tally.clone();
        async move {
            loop {
                match reports.recv().await {
                    Ok(report) => {
                        let mut tally = tally.lock().unwrap();
                        let i = Verdict::ALL
                            .iter()
                            .position(|v| *v == report.verdict)
                            .expect("a known verdict");
                        tally.verdicts[i] += 1;
                        if report.verdict != Verdict::Pass && tally.non_pass.len() < 5 {
                            tally.non_pass.push(report);
                        }
                    }
                    Err(RecvError::Lagged(n)) => tally.lock().unwrap().lagged += n,
                    Err(RecvError::Closed) => break,
                }
            }
        }
    });

    let running = RunningRunner::start(&runner);
    runner.ready().await;

    // Sustained load: at each tick, produce the tests due by now.
    let total = RATE * LOAD_FOR.as_secs();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        ticks.tick().await;
        let due = ((start.elapsed().as_secs_f64() * RATE as f64) as u64 + 1).min(total);
        while sent < due {
            let side = if sent % 2 == 0 { Side::Buy } else { Side::Sell };
            publish_order_test(&client, side)
                .await
                .expect("test registered");
            sent += 1;
        }
    }
    let load_time = start.elapsed();
    let achieved = sent as f64 / load_time.as_secs_f64();

    // Every test gets its report, within a bound.
    let counters = runner.counters();
    let waited = Instant::now();
    while counters.reports_published() < sent || tally.lock().unwrap().seen() < sent {
        assert!(
            waited.elapsed() < REPORTS_DEADLINE && !running.is_finished(),
            "{} reports of {sent} tests {:.0} s after the load ended (runner {}); counters: {:?}",
            counters.reports_published(),
            waited.elapsed().as_secs_f64(),
            if running.is_finished() {
                "stopped"
            } else {
                "running"
            },
            nonzero(counters.snapshot())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settle = waited.elapsed();
    running.stop().await;
    drain.abort();

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let counted_non_pass = counters.verdict_fail()
        + counters.verdict_error()
        + counters.verdict_timeout()
        + counters.verdict_skip();
    let seen_non_pass = tally.verdicts[1..].iter().sum::<u64>();
    println!(
        "accuracy: {sent} tests ({} signals) in {:.2} s = {achieved:.0} tests/s (target {RATE}/s); last report {:.2} s after the load ended",
        sent * 4,
        load_time.as_secs_f64(),
        settle.as_secs_f64()
    );
    println!(
        "accuracy: non-PASS verdicts: {counted_non_pass} (runner counters); reports seen: {} ({} lagged)",
        tally.describe(),
        tally.lagged
    );
    println!(
        "accuracy: runner counters: {:?}",
        nonzero(counters.snapshot())
    );
    for report in &tally.non_pass {
        println!("{}", report.render());
    }

    assert_eq!(counters.reports_published(), sent, "one report per test");
    assert_eq!(
        (counted_non_pass, seen_non_pass),
        (0, 0),
        "false verdicts under load: every signal was sent right after its test, well within the 10 s timeout ({})",
        tally.describe()
    );
    assert_eq!(
        counters.verdict_pass(),
        sent,
        "every test passes exactly once"
    );
    assert_eq!(
        counters.buffer_evictions(),
        0,
        "early signals were evicted from the runner's buffer"
    );
    assert_eq!(
        (counters.tests_received(), counters.signals_received()),
        (sent, sent * 4),
        "the runner read each record once"
    );
    drop(client);
    drop(broker);
}

fn nonzero(snapshot: Vec<(&'static str, u64)>) -> Vec<(&'static str, u64)> {
    snapshot.into_iter().filter(|(_, n)| *n != 0).collect()
}
