//! The example app with execution as a background job (`--execution job`): the order check
//! passes as it does with execution on the Kafka consumer, and a broken execution gives the
//! same verdict and message in both modes. The environment is `LIVECHECK_ENV`'s (the
//! embedded broker outside CI), as for the other check tests.

mod support;

use std::time::Duration;

use example_app::app::AppCounters;
use example_app::{AppConfig, Execution, RunningApp};
use livecheck_core::{KafkaConfig, Report, Verdict};
use livecheck_harness::Session;
use livecheck_tests::{environment, orders, EXECUTION_ENV, SHORT_TIMEOUT};

/// One run of the order check on an app executing orders in `mode`, with the app settings
/// `settings` (fault switches).
async fn run_in(mode: &str, settings: &[(&str, &str)]) -> Report {
    let mut config = environment().unwrap().app_env(EXECUTION_ENV, mode);
    for (key, value) in settings {
        config = config.app_env(*key, *value);
    }
    let case = orders::place_order().timeout(SHORT_TIMEOUT);
    let session = Session::start(&config, vec![case.clone()]).await.unwrap();
    let report = session.run_once(&case).await;
    session.close().await;
    report
}

/// `error` with each word that holds a digit masked as `#`: the parts that differ from run to
/// run (topic and group prefixes, partitions, offsets, times), so that two runs' messages
/// compare by what they say.
fn masked(error: &Option<String>) -> Option<String> {
    let error = error.as_deref()?;
    let mut out = String::with_capacity(error.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.bytes().any(|b| b.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in error.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_check_passes_with_execution_as_a_background_job() {
    let report = run_in("job", &[]).await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    let steps: Vec<_> = report.timeline.iter().map(|s| s.signal.as_str()).collect();
    // The timeline is in the order the app sent the steps. `order_executed` can come before
    // `order_sent_to_kafka` and `order_cached`: the job may execute the order before the
    // producer's acknowledgement reaches the service that sent it (seen once in a full run).
    let without_execution: Vec<_> = steps
        .iter()
        .copied()
        .filter(|s| *s != "order_executed")
        .collect();
    assert_eq!(
        without_execution,
        ["order_sent_to_db", "order_sent_to_kafka", "order_cached"],
        "{steps:?}"
    );
    assert_eq!(
        steps
            .iter()
            .position(|s| *s == "order_executed")
            .map(|at| at > 0),
        Some(true),
        "order_executed once, after order_sent_to_db: {steps:?}"
    );
    assert_eq!(steps.len(), 4, "{steps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_skipped_gives_the_same_verdict_in_job_mode_as_in_kafka_mode() {
    let skip = [("EXAMPLE_FAULT_SKIP_EXECUTION", "1")];
    let on_kafka = run_in("kafka", &skip).await;
    let in_job = run_in("job", &skip).await;
    assert_eq!(in_job.verdict, Verdict::Timeout, "{}", in_job.render());
    assert_eq!(in_job.verdict, on_kafka.verdict, "{}", on_kafka.render());
    assert_eq!(in_job.missing_step.as_deref(), Some("order_executed"));
    assert_eq!(in_job.missing_step, on_kafka.missing_step);
    assert_eq!(in_job.last_step, on_kafka.last_step);
    assert_eq!(masked(&in_job.error), masked(&on_kafka.error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_executed_twice_in_one_job_fails_as_on_kafka() {
    let twice = [("EXAMPLE_FAULT_EXECUTE_TWICE", "1")];
    let on_kafka = run_in("kafka", &twice).await;
    let in_job = run_in("job", &twice).await;
    assert_eq!(in_job.verdict, Verdict::Fail, "{}", in_job.render());
    assert_eq!(
        in_job.error.as_deref(),
        Some("step `order_executed` happened 2 times, expected once")
    );
    assert_eq!(in_job.verdict, on_kafka.verdict, "{}", on_kafka.render());
    assert_eq!(masked(&in_job.error), masked(&on_kafka.error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_job_mode_orders_are_executed_by_jobs() {
    let mut config = AppConfig::new(KafkaConfig::new(""));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.control = None;
    config.execution = Execution::Job;
    let app = RunningApp::start_embedded(config).await.unwrap();
    let response = reqwest::get(format!("{}/order/init/buy/", app.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let shared = app.shared.clone();
    support::eventually("the order executed", Duration::from_secs(20), || {
        AppCounters::get(&shared.counters.orders_executed) == 1
    })
    .await;
    let jobs = shared
        .execution_jobs
        .as_ref()
        .expect("job mode has a queue");
    assert_eq!(jobs.enqueued(), 1);
    app.stop().await;
}
