//! `livecheck`: the example app's check files on live traffic. With no settings it runs
//! the demo on the embedded broker; with `--profile staging|production` it attaches to
//! the real streams (see `livecheck.toml`).

use std::process::ExitCode;

fn main() -> ExitCode {
    livecheck_harness::live::main(
        livecheck_tests::cases(),
        Some(livecheck_tests::demo::demo()),
    )
}
