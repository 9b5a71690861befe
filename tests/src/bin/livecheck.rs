//! `livecheck`: the example app's check files on live traffic. With no settings it runs
//! the demo on the embedded broker; with `--profile staging|production` it attaches to
//! the real streams (see `livecheck.toml`).

use std::process::ExitCode;

use livecheck_harness::live::Livecheck;

/// mimalloc: the runner's lanes allocate memory on one thread that another often frees, and
/// with the system allocator (glibc) about a quarter of the lanes' time went to allocating
/// and freeing (perf). Measured in the live bench (README, Performance). Off with
/// `--no-default-features`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    Livecheck::new(livecheck_tests::cases())
        .local_system(livecheck_tests::demo::start)
        .main()
}
