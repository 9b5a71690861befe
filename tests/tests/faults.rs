//! Test the tester: the example app broken on purpose, one fault at a time, and the exact
//! verdict and message the order check must give.

use livecheck_core::{Report, Verdict};
use livecheck_harness::Session;
use livecheck_tests::{environment, orders, SHORT_TIMEOUT};

async fn run_with_fault(key: &str, value: &str) -> Report {
    let config = environment().unwrap().app_env(key, value);
    let case = orders::place_order().timeout(SHORT_TIMEOUT);
    let session = Session::start(&config, vec![case.clone()]).await.unwrap();
    let report = session.run_once(&case).await;
    session.close().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fault_passes() {
    let report = run_with_fault("EXAMPLE_FAULT_FLIP_SIDE", "0").await;
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    let steps: Vec<_> = report.timeline.iter().map(|s| s.signal.as_str()).collect();
    assert_eq!(
        steps,
        [
            "order_sent_to_db",
            "order_sent_to_kafka",
            "order_cached",
            "order_executed"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_flipped_is_a_fail_naming_the_assertion() {
    let report = run_with_fault("EXAMPLE_FAULT_FLIP_SIDE", "1").await;
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some("the side of the stored order is not the test's argument: expected Sell, got Buy")
    );
    assert_eq!(report.last_step.as_deref(), Some("order_sent_to_db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_misread_at_the_front_is_a_fail_against_the_stimulus_side() {
    // The front reads "sell" as buy and says so everywhere, its test arguments included:
    // only the side the stimulus chose shows the fault.
    let report = run_with_fault("EXAMPLE_FAULT_MISREAD_SIDE", "1").await;
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some("the side of the stored order is not the test's argument: expected Sell, got Buy")
    );
    assert_eq!(report.arguments, serde_json::json!("sell"));
    assert_eq!(report.last_step.as_deref(), Some("order_sent_to_db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stimulus_alternates_sides_and_both_pass() {
    let config = environment().unwrap();
    let case = orders::place_order().timeout(SHORT_TIMEOUT);
    let session = Session::start(&config, vec![case.clone()]).await.unwrap();
    let reports = session.run_case(&case, 2).await;
    session.close().await;
    for report in &reports {
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
    let sides: Vec<_> = reports.iter().map(|r| r.arguments.clone()).collect();
    assert_eq!(sides, [serde_json::json!("sell"), serde_json::json!("buy")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_skipped_is_a_timeout_naming_order_executed() {
    let report = run_with_fault("EXAMPLE_FAULT_SKIP_EXECUTION", "1").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
    assert_eq!(
        report.error.as_deref(),
        Some(
            "signal `order_executed` did not arrive within 3s of the previous step `order_cached`"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_executed_twice_is_a_fail_naming_the_step_and_the_count() {
    let report = run_with_fault("EXAMPLE_FAULT_EXECUTE_TWICE", "1").await;
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some("step `order_executed` happened 2 times, expected once")
    );
    let executed = report
        .timeline
        .iter()
        .filter(|s| s.signal == "order_executed")
        .collect::<Vec<_>>();
    assert_eq!(executed.len(), 2, "both executions are in the report");
    assert_eq!(executed.iter().filter(|s| s.awaited).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_dropped_is_a_timeout_at_the_hop_after_the_drop() {
    let report = run_with_fault("EXAMPLE_FAULT_DROP_HEADERS", "1").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    // The drop is between the create-order and execute-order hops: every step before it came.
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
    assert_eq!(report.last_step.as_deref(), Some("order_cached"));
    assert_eq!(report.timeline.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_delayed_past_the_timeout_is_a_timeout() {
    let report = run_with_fault("EXAMPLE_FAULT_DELAY_MS", "6000").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_is_an_error_naming_the_status() {
    let report = run_with_fault("EXAMPLE_FAULT_HTTP_503", "1").await;
    assert_eq!(report.verdict, Verdict::Error, "{}", report.render());
    let error = report.error.as_deref().unwrap();
    assert!(
        error.starts_with("stimulus failed: http://127.0.0.1:"),
        "{error}"
    );
    assert!(
        error.contains("/order/init/sell/?fake=1 answered HTTP 503 Service Unavailable: {\"error\":\"service unavailable (fault http-503 is on)\"}"),
        "{error}"
    );
}
