//! `livecheck-chaos`: the live service with the synthetic flow of
//! `livecheck_tests::chaos`, for the fault tests that kill and restart runner processes.
//! Same flags as `livecheck` (`--brokers`, `--topic-prefix`, `--group-id`, ...); no demo.

use std::process::ExitCode;

/// mimalloc: the runner's lanes allocate memory on one thread that another often frees, and
/// with the system allocator (glibc) about a quarter of the lanes' time went to allocating
/// and freeing (perf). Measured in the live bench (README, Performance). Off with
/// `--no-default-features`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    livecheck_harness::live::main(livecheck_tests::chaos::cases())
}
