//! The example app's check file: `cargo test` runs the order case end to end against the
//! environment chosen by `LIVECHECK_ENV` (containers under CI, in-process elsewhere).

use std::process::ExitCode;

use livecheck_harness::Harness;

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
        .run()
}
