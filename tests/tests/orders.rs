//! The example app's check file: `cargo test` runs the order cases (`orders::place_order`,
//! `orders::sell_limit`) end to end against the environment chosen by `LIVECHECK_ENV` (`ci/test.sh` chooses containers; in-process
//! elsewhere), and beside it the fault tests (`faults::*`): the app broken on purpose, each
//! with its own environment, and the verdict the case must give.

use std::convert::Infallible;
use std::future::Future;
use std::process::ExitCode;

use livecheck_harness::Harness;

#[path = "orders/faults.rs"]
mod faults;

/// A fault test as a plain trial: it fails by panicking (its assertions).
async fn fault<F: Future<Output = ()>>(test: fn() -> F) -> Result<(), Infallible> {
    test().await;
    Ok(())
}

fn main() -> ExitCode {
    let environment = match livecheck_tests::environment() {
        Ok(environment) => environment,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    Harness::from_env("orders")
        .environment(environment)
        .cases(livecheck_tests::cases())
        .test("faults::no_fault_passes", || fault(faults::no_fault_passes))
        .test(
            "faults::side_flipped_is_a_fail_naming_the_assertion",
            || fault(faults::side_flipped_is_a_fail_naming_the_assertion),
        )
        .test(
            "faults::side_misread_at_the_front_is_a_fail_against_the_stimulus_side",
            || fault(faults::side_misread_at_the_front_is_a_fail_against_the_stimulus_side),
        )
        .test(
            "faults::the_stimulus_alternates_sides_and_both_pass",
            || fault(faults::the_stimulus_alternates_sides_and_both_pass),
        )
        .test(
            "faults::execution_skipped_is_a_timeout_naming_order_executed",
            || fault(faults::execution_skipped_is_a_timeout_naming_order_executed),
        )
        .test(
            "faults::an_order_executed_twice_is_a_fail_naming_the_step_and_the_count",
            || fault(faults::an_order_executed_twice_is_a_fail_naming_the_step_and_the_count),
        )
        .test(
            "faults::headers_dropped_is_a_timeout_at_the_hop_after_the_drop",
            || fault(faults::headers_dropped_is_a_timeout_at_the_hop_after_the_drop),
        )
        .test("faults::a_stopped_consumer_has_not_read_the_record", || {
            fault(faults::a_stopped_consumer_has_not_read_the_record)
        })
        .test(
            "faults::a_step_a_second_late_is_a_timeout_saying_how_late",
            || fault(faults::a_step_a_second_late_is_a_timeout_saying_how_late),
        )
        .test(
            "faults::a_step_delayed_past_the_timeout_is_a_timeout",
            || fault(faults::a_step_delayed_past_the_timeout_is_a_timeout),
        )
        .test("faults::http_503_is_an_error_naming_the_status", || {
            fault(faults::http_503_is_an_error_naming_the_status)
        })
        .test(
            "faults::sell_limit_kept_passes_and_the_refused_sell_passes_too",
            || fault(faults::sell_limit_kept_passes_and_the_refused_sell_passes_too),
        )
        .test(
            "faults::sell_limit_ignored_is_an_invariant_failure_naming_the_user_and_the_totals",
            || {
                fault(
                    faults::sell_limit_ignored_is_an_invariant_failure_naming_the_user_and_the_totals,
                )
            },
        )
        .test("faults::a_sell_refused_within_the_limit_is_a_fail", || {
            fault(faults::a_sell_refused_within_the_limit_is_a_fail)
        })
        .run()
}
