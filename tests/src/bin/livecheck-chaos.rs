//! `livecheck-chaos`: the live service with the synthetic flow of
//! `livecheck_tests::chaos`, for the fault tests that kill and restart runner processes.
//! Same flags as `livecheck` (`--brokers`, `--topic-prefix`, `--group-id`, ...); no demo.

use std::process::ExitCode;

fn main() -> ExitCode {
    livecheck_harness::live::main(livecheck_tests::chaos::cases())
}
