//! Back-pressure never blocks an async worker: with the client's local queue full (no
//! broker answers), `Signal::send` waits for room asynchronously and then drops the signal
//! (counted), and `send_now` drops at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livecheck_core::{KafkaConfig, LiveCheck, Signal, TestContext, Topics};

static STEP: Signal<u64> = Signal::new("bp.case", "step");

fn full_client() -> LiveCheck {
    // Nothing listens on port 1: every record stays queued; the queue holds one.
    let kafka = KafkaConfig::new("127.0.0.1:1")
        .set("queue.buffering.max.messages", "1")
        .set("message.timeout.ms", "600000");
    LiveCheck::new(kafka, Topics::with_prefix("bp-")).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_is_waited_out_without_blocking_the_worker_then_counted() {
    let client = full_client();
    let context = TestContext::with_id("bp-1", "bp.case", Duration::from_secs(60));
    // Another task on the same (single) worker thread: it only runs if sends yield.
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    client
        .scope(context.clone(), async {
            STEP.send(&1).await; // fills the queue
            STEP.send(&2).await; // waits for room (1 s), then is dropped
        })
        .await;
    let during = ticks.load(Ordering::Relaxed);
    client
        .scope(context, async {
            STEP.send_now(&3); // dropped at once
        })
        .await;
    ticker.abort();
    let counters = client.counters();
    assert_eq!(counters.signals_sent(), 1);
    assert_eq!(counters.signal_errors(), 2);
    assert!(
        during >= 20,
        "the worker was blocked while the signal waited for room ({during} ticks)"
    );
}
