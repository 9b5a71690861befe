//! Test the tester (plain tests of the orders check file): the example app broken on purpose, one fault at a time, and the exact
//! verdict and message the order check must give.

use livecheck_core::{HopKind, Report, Verdict};
use livecheck_harness::Session;
use livecheck_tests::{environment, orders, SELL_LIMIT_ENV, SHORT_TIMEOUT};

/// Asserts that `actual` reads as `pattern`, where each `{}` stands for any text (names
/// and numbers that differ between runs and environments: topic prefixes, offsets, times).
fn assert_reads_as(actual: Option<&str>, pattern: &str) {
    let actual = actual.unwrap_or_else(|| panic!("no message; expected {pattern:?}"));
    let parts: Vec<&str> = pattern.split("{}").collect();
    let mut rest = actual;
    let fits = parts.iter().enumerate().all(|(i, part)| {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
            true
        } else if i == parts.len() - 1 {
            rest.ends_with(part)
        } else {
            match rest.find(part) {
                Some(at) => {
                    rest = &rest[at + part.len()..];
                    true
                }
                None => false,
            }
        }
    });
    assert!(fits, "message\n  {actual}\ndoes not read as\n  {pattern}");
}

/// What the order check says of a step `order_executed` that did not come.
const NO_EXECUTION: &str =
    "signal `order_executed` did not arrive within 3s of the previous step `order_cached`";

async fn run_with_fault(key: &str, value: &str) -> Report {
    let config = environment().unwrap().app_env(key, value);
    let case = orders::place_order().timeout(SHORT_TIMEOUT);
    let session = Session::start(&config, vec![case.clone()]).await.unwrap();
    let report = session.run_once(&case).await;
    session.close().await;
    report
}

pub(crate) async fn no_fault_passes() {
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

pub(crate) async fn side_flipped_is_a_fail_naming_the_assertion() {
    let report = run_with_fault("EXAMPLE_FAULT_FLIP_SIDE", "1").await;
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(
        report.error.as_deref(),
        Some("the side of the stored order is not the test's argument: expected Sell, got Buy")
    );
    assert_eq!(report.last_step.as_deref(), Some("order_sent_to_db"));
}

pub(crate) async fn side_misread_at_the_front_is_a_fail_against_the_stimulus_side() {
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

pub(crate) async fn the_stimulus_alternates_sides_and_both_pass() {
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

pub(crate) async fn execution_skipped_is_a_timeout_naming_order_executed() {
    let report = run_with_fault("EXAMPLE_FAULT_SKIP_EXECUTION", "1").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
    // The hops say why: the execute-order service had the record, with its context.
    assert_reads_as(
        report.error.as_deref(),
        &format!("{NO_EXECUTION}; execute-order (group {{}}execute-order) received the record {{}}order-execution[{{}}]@{{}} at {{}} with the test context and did not send `order_executed`"),
    );
    let kinds: Vec<(HopKind, &str)> = report
        .hops
        .iter()
        .map(|h| (h.kind, h.service.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (HopKind::Produced, "order-api"),
            (HopKind::Consumed, "create-order"),
            (HopKind::Produced, "create-order"),
            (HopKind::Consumed, "execute-order"),
        ],
        "{}",
        report.render()
    );
}

pub(crate) async fn an_order_executed_twice_is_a_fail_naming_the_step_and_the_count() {
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

pub(crate) async fn headers_dropped_is_a_timeout_at_the_hop_after_the_drop() {
    let report = run_with_fault("EXAMPLE_FAULT_DROP_HEADERS", "1").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    // The drop is between the create-order and execute-order hops: every step before it came.
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
    assert_eq!(report.last_step.as_deref(), Some("order_cached"));
    assert_eq!(report.timeline.len(), 3);
    // The record left create-order in the test, and execute-order read it without the
    // context (as its consumer positions say).
    assert_reads_as(
        report.error.as_deref(),
        &format!("{NO_EXECUTION}; the test context was lost between create-order and group {{}}execute-order at {{}}order-execution[{{}}]@{{}}: the group has read past the record and no hop of it came (its context dropped or rejected on the way, or the record not handled through LiveCheck's consume)"),
    );
}

pub(crate) async fn a_stopped_consumer_has_not_read_the_record() {
    let config = environment().unwrap();
    let case = orders::place_order().timeout(SHORT_TIMEOUT);
    let session = Session::start(&config, vec![case.clone()]).await.unwrap();
    // The execute-order group reads (and reports its positions) before it stops.
    for _ in 0..4 {
        let report = session.run_once(&case).await;
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
    let app = &session.environment().app_url;
    let set = |on: bool| {
        reqwest::Client::new()
            .post(format!("{app}/admin/faults"))
            .json(&serde_json::json!({ "stop_execute_consumer": on }))
            .send()
    };
    assert!(set(true).await.unwrap().status().is_success());
    let report = session.run_once(&case).await;
    assert!(set(false).await.unwrap().status().is_success());
    session.close().await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
    // Behind on the record's partition, or (a partition it had not read yet) no report of it.
    let error = report.error.as_deref().unwrap_or_default();
    let pattern = if error.contains("records behind") {
        format!("{NO_EXECUTION}; group {{}}execute-order is {{}} records behind on {{}}order-execution[{{}}] (at offset {{}} since {{}}); the record of this test ({{}}order-execution[{{}}]@{{}}) has not been read")
    } else {
        format!("{NO_EXECUTION}; group {{}}execute-order has not reported reading {{}}order-execution[{{}}]; the record of this test ({{}}order-execution[{{}}]@{{}}) has not been read")
    };
    assert_reads_as(Some(error), &pattern);
}

pub(crate) async fn a_step_a_second_late_is_a_timeout_saying_how_late() {
    // 4 s after the previous step, with a 3 s timeout: read before the runner gives up on
    // it (2 s of clock slack), so it is known to be late, not missing.
    let report = run_with_fault("EXAMPLE_FAULT_DELAY_MS", "4000").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_reads_as(
        report.error.as_deref(),
        "signal `order_executed` came {}s late: more than 3s after the previous step `order_cached`",
    );
}

pub(crate) async fn a_step_delayed_past_the_timeout_is_a_timeout() {
    let report = run_with_fault("EXAMPLE_FAULT_DELAY_MS", "6000").await;
    assert_eq!(report.verdict, Verdict::Timeout, "{}", report.render());
    assert_eq!(report.missing_step.as_deref(), Some("order_executed"));
    // Still being handled when the runner gave up: received, no step yet.
    assert_reads_as(
        report.error.as_deref(),
        &format!("{NO_EXECUTION}; execute-order (group {{}}execute-order) received the record {{}} at {{}} with the test context and did not send `order_executed`"),
    );
}

pub(crate) async fn http_503_is_an_error_naming_the_status() {
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

/// Three sells of one user (40 each, limit 100) through `orders.sell_limit`, on the app with
/// `setting` (an app setting such as a fault switch, or none): their reports, in order.
async fn three_sells_of_one_user(setting: Option<(&str, &str)>) -> Vec<Report> {
    let mut config = environment().unwrap();
    if let Some((key, value)) = setting {
        config = config.app_env(key, value);
    }
    let case = orders::sell_limit().timeout(SHORT_TIMEOUT);
    let session = Session::start(&config, vec![case.clone()]).await.unwrap();
    let reports = session.run_case(&case, orders::SELLS_PER_USER).await;
    session.close().await;
    let users: Vec<_> = reports
        .iter()
        .map(|r| r.arguments["user"].clone())
        .collect();
    assert!(
        users.iter().all(|u| *u == users[0]),
        "one user for the three sells: {users:?}"
    );
    reports
}

/// The step each run saw: `sell_accepted` or `sell_refused`.
fn decision(report: &Report) -> &str {
    report.timeline.first().map_or("", |s| s.signal.as_str())
}

pub(crate) async fn sell_limit_kept_passes_and_the_refused_sell_passes_too() {
    let reports = three_sells_of_one_user(None).await;
    for report in &reports {
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
    let decisions: Vec<_> = reports.iter().map(decision).collect();
    assert_eq!(
        decisions,
        ["sell_accepted", "sell_accepted", "sell_refused"]
    );
}

pub(crate) async fn sell_limit_ignored_is_an_invariant_failure_naming_the_user_and_the_totals() {
    let reports = three_sells_of_one_user(Some(("EXAMPLE_FAULT_IGNORE_SELL_LIMIT", "1"))).await;
    for report in &reports[..2] {
        assert_eq!(report.verdict, Verdict::Pass, "{}", report.render());
    }
    let report = &reports[2];
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(report.failure_kind(), "invariant");
    assert_eq!(decision(report), "sell_accepted");
    let user = report.arguments["user"].as_str().unwrap();
    assert_eq!(
        report.error.as_deref(),
        Some(
            format!(
                "invariant broken: sold quantity per user <= sell limit, for key \"{user}\" (limit=100, sold=120)"
            )
            .as_str()
        )
    );
    let invariant = report.invariant.as_ref().unwrap();
    assert_eq!(invariant.rule, "sold quantity per user <= sell limit");
    assert_eq!(invariant.key, user);
}

pub(crate) async fn a_sell_refused_within_the_limit_is_a_fail() {
    // The app refuses past 50; the check holds it to 100: the second sell (80) is refused
    // although it fits.
    let reports = three_sells_of_one_user(Some((SELL_LIMIT_ENV, "50"))).await;
    assert_eq!(reports[0].verdict, Verdict::Pass, "{}", reports[0].render());
    let report = &reports[1];
    assert_eq!(report.verdict, Verdict::Fail, "{}", report.render());
    assert_eq!(report.failure_kind(), "fail");
    assert_eq!(decision(report), "sell_refused");
    assert_eq!(
        report.error.as_deref(),
        Some("refused although within the limit: sold 40 + 40 <= 100")
    );
}
