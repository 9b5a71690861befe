//! `livecheck`: the example app's check files on live traffic. With no settings it runs
//! the demo on the embedded broker; with `--profile staging|production` it attaches to
//! the real streams (see `livecheck.toml`).

use std::process::ExitCode;

use livecheck_harness::live::Livecheck;

fn main() -> ExitCode {
    Livecheck::new(livecheck_tests::cases())
        .local_system(livecheck_tests::demo::start)
        .main()
}
