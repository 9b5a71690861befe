//! A synthetic two-step flow for fault tests of live mode: the test process plays the
//! services (it registers tests and sends their signals), runner processes in a consumer
//! group check them, and every test's verdict is known in advance from what was sent.
//!
//! The `livecheck-chaos` binary runs the live service with [`cases`]; the fault tests
//! (`tests/chaos.rs`) kill, stop and start such processes mid-stream.

use std::time::Duration;

use livecheck_core::{
    ensure_eq, ensure_invariant, Case, LiveCheck, Run, Signal, Table, TestContext, Trigger, Verdict,
};

/// The case name.
pub const CASE: &str = "chaos.flow";
/// The first step: carries the test's number.
pub static STEP_A: Signal<u64> = Signal::new(CASE, "a");
/// The second step: carries twice the test's number.
pub static STEP_B: Signal<u64> = Signal::new(CASE, "b");
/// Each step's timeout.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The flow: `a` = n, then `b` = 2n, each within [`TIMEOUT`] of the previous step.
pub fn flow() -> Case {
    Case::new(CASE)
        .timeout(TIMEOUT)
        .expect(|run: Run, n: u64| async move {
            let a = run.wait(&STEP_A).await?;
            ensure_eq!(a, n, "step a carries the test's number");
            let b = run.wait(&STEP_B).await?;
            ensure_eq!(b, 2 * n, "step b carries twice the test's number");
            Ok(())
        })
}

/// The ledger case: every test posts once to its account's count, in a table.
pub const LEDGER_CASE: &str = "chaos.ledger";
/// Sent by the services when a posting's test may finish (until then it stays in flight).
pub static POSTED: Signal<()> = Signal::new(LEDGER_CASE, "posted");
/// Postings per account.
pub static POSTINGS: Table<String, u64> = Table::new("chaos_postings");
/// How long a posting's test waits for [`POSTED`]: longer than a crashed runner's
/// partitions take to move (its session timeout).
pub const POSTED_TIMEOUT: Duration = Duration::from_secs(60);

/// A posting test's arguments.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Posting {
    /// The account (the tests' route and the table's key).
    pub account: String,
    /// How many tests the account has in all: more postings is a double count.
    pub tests: u64,
    /// The count this test must see, when known (one test of the account at a time).
    pub exactly: Option<u64>,
}

/// Posts to the account's count, checks that the count never exceeds the account's tests
/// (the invariant a double count breaks), then waits for [`POSTED`].
pub fn ledger() -> Case {
    Case::new(LEDGER_CASE)
        .timeout(POSTED_TIMEOUT)
        .route_by(|p: &Posting| p.account.clone())
        .table(&POSTINGS)
        .expect(|run: Run, p: Posting| async move {
            let postings = run
                .table(&POSTINGS)
                .update(p.account.clone(), |n| n.unwrap_or(0) + 1)?;
            ensure_invariant!(
                postings <= p.tests,
                "postings per account <= its tests",
                key = p.account,
                postings = postings,
                tests = p.tests
            );
            if let Some(exactly) = p.exactly {
                ensure_eq!(postings, exactly, "the postings of {}", p.account);
            }
            run.wait(&POSTED).await?;
            Ok(())
        })
}

/// The services' side of a posting: triggers it, routed by its account.
pub fn start_posting(client: &LiveCheck, posting: &Posting) -> TestContext {
    Trigger::new(LEDGER_CASE)
        .probability(1.0)
        .maybe_trigger_for_key(client, &posting.account, posting)
        .expect("a posting registers")
}

/// The cases of the chaos runner.
pub fn cases() -> Vec<Case> {
    vec![flow(), ledger()]
}

/// What a test of the flow is made to do, and so the one true verdict it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `a` and `b` right away: decided before any fault.
    Quick,
    /// `a` now, `b` (right) later, within the timeout.
    Pass,
    /// `a` now, `b` with a wrong value later.
    WrongB,
    /// `a` now, never `b`.
    NoB,
    /// `a` now, `b` after the timeout: late by event time, whenever it is read.
    LateB,
}

impl Script {
    /// The script of test number `n`: a fixed mix (1 in 10 quick, 5 pass, 1 wrong, 1 missing,
    /// 1 late, 1 more pass).
    pub fn of(n: u64) -> Self {
        match n % 10 {
            0 => Script::Quick,
            7 => Script::WrongB,
            8 => Script::NoB,
            9 => Script::LateB,
            _ => Script::Pass,
        }
    }

    /// The verdict a run without faults gives.
    pub fn verdict(self) -> Verdict {
        match self {
            Script::Quick | Script::Pass => Verdict::Pass,
            Script::WrongB => Verdict::Fail,
            Script::NoB | Script::LateB => Verdict::Timeout,
        }
    }
}

/// The services' side: registers test `n` and sends its first step (and for
/// [`Script::Quick`] its second); returns its context for [`send_b`].
pub async fn start_test(client: &LiveCheck, n: u64) -> TestContext {
    let id = format!("chaos-{n:06}-{}", uuid::Uuid::new_v4().simple());
    let context = Trigger::new(CASE)
        .probability(1.0)
        .maybe_trigger_with_id(client, Some(&id), &n)
        .expect("a test registers");
    client
        .scope(context.clone(), async {
            STEP_A.send(&n).await;
            if Script::of(n) == Script::Quick {
                STEP_B.send(&(2 * n)).await;
            }
        })
        .await;
    context
}

/// The services' side: sends test `n`'s second step as its script says, in the round
/// (`late` or not) the script sends it in (nothing for scripts without one).
pub async fn send_b(client: &LiveCheck, context: &TestContext, n: u64, late: bool) {
    // Each step is sent once: in the first round, or (a late step) in the second.
    let value = match (Script::of(n), late) {
        (Script::Pass, false) => 2 * n,
        (Script::WrongB, false) => 2 * n + 1,
        (Script::LateB, true) => 2 * n,
        _ => return,
    };
    client.scope(context.clone(), STEP_B.send(&value)).await;
}
