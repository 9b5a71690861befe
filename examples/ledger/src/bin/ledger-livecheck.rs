//! `ledger-livecheck`: the ledger's checks on live traffic, the whole `livecheck` command
//! in one call. Built without the harness's `containers` feature.

use std::process::ExitCode;

fn main() -> ExitCode {
    livecheck_harness::live::main(ledger::cases())
}
