//! Reports on their way to the reports topic.
//!
//! Reports have a producer of their own so that the runner learns where each one landed:
//! its offset is the reports-topic position a new owner of the partition reads decided
//! tests from (see [`crate::ledger`]). A report is never dropped silently: one too large
//! for the broker is sent again with its arguments and long texts truncated and marked
//! (verdict, error head and timeline intact); one the broker refuses otherwise is retried
//! with back-off, and given up on only after a bounded time (counted, logged) so that its
//! partition's commit is not pinned for ever. In a group, one whose partition was given up
//! before it could be sent (again) is not sent: its test stays uncommitted, and the
//! partition's next owner decides it (counted in `runs_handed_back`). Enqueueing never
//! blocks a thread: a full local queue is waited out asynchronously.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use crate::client::KafkaConfig;
use crate::connectivity::Connectivity;
use crate::error::Error;
use crate::polled::Polled;
use crate::report::{Report, Truncation};

/// What a report decides, for the ledger (group mode).
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub(crate) partition: i32,
    /// The epoch of the partition's assignment it was decided in (`group::Ownership`): a
    /// report refused and sent again later goes only while that assignment lasts.
    pub(crate) epoch: u64,
    pub(crate) test_offset: i64,
    pub(crate) signals: Vec<i64>,
}

/// A report on its way, with what it decides.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) report: Arc<Report>,
    pub(crate) hold: Option<Hold>,
    pub(crate) attempts: u32,
    pub(crate) first_try: Instant,
    /// How hard to truncate: 0 = only when above the configured maximum size.
    pub(crate) shrink: u8,
    /// Whether the last enqueued copy was truncated.
    pub(crate) truncated: bool,
    /// Counts it among its partition's reports on their way until the broker has
    /// acknowledged or refused it (in a group).
    pub(crate) claim: Option<Claim>,
}

impl Outgoing {
    pub(crate) fn new(report: Arc<Report>, hold: Option<Hold>, claim: Option<Claim>) -> Box<Self> {
        Box::new(Self {
            report,
            hold,
            attempts: 0,
            first_try: Instant::now(),
            shrink: 0,
            truncated: false,
            claim,
        })
    }
}

/// The reports of each tests partition that may still reach the reports topic. Each is
/// counted ([`Unsettled::claim`]) from before its run leaves the registry until the broker
/// has acknowledged or refused it, and again while a refused one is sent again. A revoke
/// waits for its partitions' counts to reach 0 (`group::Reports::settle`): the partitions'
/// next owner learns which tests are decided from the reports topic, read to its end when
/// it takes them, and would run again a test whose report landed after that read.
#[derive(Debug, Default)]
pub(crate) struct Unsettled(Mutex<HashMap<i32, usize>>);

impl Unsettled {
    /// Counts one report of `partition` until the claim is dropped.
    pub(crate) fn claim(self: &Arc<Self>, partition: i32) -> Claim {
        *self.lock().entry(partition).or_default() += 1;
        Claim {
            unsettled: self.clone(),
            partition,
        }
    }

    /// The reports of `partitions` counted now.
    pub(crate) fn of(&self, partitions: &[i32]) -> usize {
        let counts = self.lock();
        partitions.iter().filter_map(|p| counts.get(p)).sum()
    }

    /// The reports of every partition counted now.
    pub(crate) fn total(&self) -> usize {
        self.lock().values().sum()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One report counted in [`Unsettled`] until this is dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    unsettled: Arc<Unsettled>,
    partition: i32,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Entry::Occupied(mut count) = self.unsettled.lock().entry(self.partition) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

/// What became of a report.
#[derive(Debug)]
pub(crate) enum SinkEvent {
    /// Acknowledged at `offset` of the reports topic's `partition`.
    Delivered {
        outgoing: Box<Outgoing>,
        partition: i32,
        offset: i64,
    },
    /// Refused (by the broker, or by the local producer at enqueue).
    Failed {
        outgoing: Box<Outgoing>,
        error: KafkaError,
    },
}

/// Whether `error` says the record is too large for the producer or the broker.
pub(crate) fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

struct SinkContext {
    events: mpsc::UnboundedSender<SinkEvent>,
    connectivity: Connectivity,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connectivity.on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.connectivity.on_error(&error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Outgoing>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut outgoing: Self::DeliveryOpaque) {
        // Acknowledged or refused: no longer on its way (a refused one sent again is
        // claimed again).
        outgoing.claim = None;
        let event = match result {
            Ok(msg) => {
                self.connectivity.mark_reachable();
                SinkEvent::Delivered {
                    outgoing,
                    partition: msg.partition(),
                    offset: msg.offset(),
                }
            }
            Err((error, _)) => SinkEvent::Failed {
                outgoing,
                error: error.clone(),
            },
        };
        // The receiver goes only when the runner has stopped: nothing left to tell.
        let _ = self.events.send(event);
    }
}

/// The reports producer.
pub(crate) struct ReportSink {
    producer: Polled<SinkContext>,
    events: mpsc::UnboundedSender<SinkEvent>,
    topic: String,
    max_bytes: usize,
}

impl std::fmt::Debug for ReportSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSink")
            .field("topic", &self.topic)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The largest single record a report may be before it is truncated, by default: below
/// Kafka's default `message.max.bytes` (1,000,012) with room for the record overhead.
pub(crate) const DEFAULT_MAX_REPORT_BYTES: usize = 900_000;

impl ReportSink {
    pub(crate) fn new(
        kafka: &KafkaConfig,
        topic: String,
        max_bytes: usize,
        connectivity: Connectivity,
    ) -> Result<(Self, mpsc::UnboundedReceiver<SinkEvent>), Error> {
        let (events, rx) = mpsc::unbounded_channel();
        let producer = Polled::new(
            &kafka.producer_config(),
            SinkContext {
                events: events.clone(),
                connectivity,
            },
        )
        .map_err(Error::kafka("creating the reports producer"))?;
        Ok((
            Self {
                producer,
                events,
                topic,
                max_bytes,
            },
            rx,
        ))
    }

    /// Enqueues a report. A full local queue is waited out (asynchronously, up to
    /// `queue_wait`); any other refusal is handed back for the runner to retry.
    pub(crate) async fn send(
        &self,
        mut outgoing: Box<Outgoing>,
        queue_wait: Duration,
    ) -> Result<(), (Box<Outgoing>, KafkaError)> {
        let deadline = tokio::time::Instant::now() + queue_wait;
        let mut pause = Duration::from_millis(1);
        loop {
            outgoing.attempts += 1;
            let (payload, truncation) = encode(&outgoing.report, self.max_bytes, outgoing.shrink);
            outgoing.truncated = truncation.is_some();
            if let Some(truncation) = truncation {
                tracing::warn!(
                    test_id = %outgoing.report.test_id,
                    original_bytes = truncation.original_bytes,
                    fields = ?truncation.fields,
                    "report too large: publishing it truncated (verdict, error head and timeline kept)"
                );
            }
            // The test's partition key: the report lands beside its test and signals.
            // (A reference count, not a copy of the key.)
            let report = outgoing.report.clone();
            let key = report.route.as_deref().unwrap_or(&report.test_id);
            let record = BaseRecord::with_opaque_to(&self.topic, outgoing)
                .key(key)
                .payload(&payload);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((error, record)) => {
                    outgoing = record.delivery_opaque;
                    let queue_full = matches!(
                        error,
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    );
                    if !queue_full || tokio::time::Instant::now() >= deadline {
                        return Err((outgoing, error));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// Hands a report refused at enqueue to the runner's retry handling, like a refusal
    /// by the broker.
    pub(crate) fn fail(&self, mut outgoing: Box<Outgoing>, error: KafkaError) {
        outgoing.claim = None;
        let _ = self.events.send(SinkEvent::Failed { outgoing, error });
    }

    /// Waits (blocking: call off the async workers) until every enqueued report is
    /// acknowledged or `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// How many times a report refused as too large is sent again, smaller each time; the last
/// keeps only what identifies it and its verdict.
pub(crate) const MAX_SHRINK: u8 = 4;
const ERROR_KEEP: [usize; 4] = [4096, 1024, 256, 128];
const UNAWAITED_KEEP: [usize; 4] = [64, 16, 0, 0];
/// The buffer a report is encoded into, to begin with: a four-step report with its hops is
/// about 2.5 KiB.
const ENCODE_CAPACITY: usize = 4096;

/// The report as JSON, truncated when it exceeds `max_bytes` or when `shrink` > 0 (the
/// broker refused it as too large): arguments replaced, the error and the unawaited list
/// cut, each marked in the report's `truncated` field. Never fails: a report that does not
/// serialize is replaced by a minimal one that says so.
pub(crate) fn encode(
    report: &Report,
    max_bytes: usize,
    shrink: u8,
) -> (Vec<u8>, Option<Truncation>) {
    // Sized for a typical report up front: growing from serde_json's 128 bytes cost a
    // fifth of the encoding (perf, live bench).
    let mut full = Vec::with_capacity(ENCODE_CAPACITY);
    if serde_json::to_writer(&mut full, report).is_err() {
        full.clear();
    }
    if shrink == 0 && !full.is_empty() && full.len() <= max_bytes {
        return (full, None);
    }
    let level = usize::from(shrink.saturating_sub(1)).min(ERROR_KEEP.len() - 1);
    let mut cut = report.clone();
    let mut fields = Vec::new();
    if !cut.arguments.is_null() {
        cut.arguments = serde_json::Value::Null;
        fields.push("arguments".to_owned());
    }
    if let Some(error) = &mut cut.error {
        if cut_text(error, ERROR_KEEP[level]) {
            fields.push("error".to_owned());
        }
    }
    if cut.unawaited.len() > UNAWAITED_KEEP[level] {
        cut.unawaited.truncate(UNAWAITED_KEEP[level]);
        fields.push("unawaited".to_owned());
    }
    if shrink >= 3 && cut.timeline.len() > 64 {
        cut.timeline.truncate(64);
        fields.push("timeline".to_owned());
    }
    if shrink >= MAX_SHRINK && !cut.timeline.is_empty() {
        cut.timeline.clear();
        if !fields.iter().any(|f| f == "timeline") {
            fields.push("timeline".to_owned());
        }
    }
    let truncation = Truncation {
        original_bytes: full.len(),
        fields,
    };
    cut.truncated = Some(truncation.clone());
    (
        serde_json::to_vec(&cut).unwrap_or_default(),
        Some(truncation),
    )
}

/// Cuts `text` to at most `keep` bytes (on a character boundary) with a note of how much
/// went; whether anything was cut.
fn cut_text(text: &mut String, keep: usize) -> bool {
    if text.len() <= keep {
        return false;
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({cut} bytes cut)"));
    true
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::report::{Step, Verdict};

    fn report(arguments: serde_json::Value, error: String) -> Report {
        Report {
            test_id: "t".into(),
            case: "c".into(),
            verdict: Verdict::Fail,
            error: Some(error),
            missing_step: None,
            last_step: Some("a".into()),
            unawaited: Vec::new(),
            timeline: vec![Step {
                signal: "a".into(),
                item: None,
                awaited: true,
                sent_at: Utc::now(),
                arrived_at: Utc::now(),
                event_at: None,
                latency_ms: 1.0,
                lag_ms: 0.0,
                topic: "s".into(),
                partition: 0,
                offset: 1,
            }],
            issued_at: Utc::now(),
            finished_at: Utc::now(),
            arguments,
            waits: Vec::new(),
            truncated: None,
            hops: Vec::new(),
            trace_id: None,
            invariant: None,
            route: None,
        }
    }

    #[test]
    fn a_small_report_is_sent_as_it_is() {
        let r = report(serde_json::json!({"side": "sell"}), "boom".into());
        let (bytes, truncation) = encode(&r, 10_000, 0);
        assert!(truncation.is_none());
        let back: Report = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_large_report_keeps_verdict_error_head_and_timeline() {
        let r = report(
            serde_json::json!({"blob": "x".repeat(50_000)}),
            "é".repeat(10_000),
        );
        let (bytes, truncation) = encode(&r, 10_000, 0);
        assert!(bytes.len() < 10_000, "{} bytes", bytes.len());
        let back: Report = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.verdict, Verdict::Fail);
        assert_eq!(back.timeline, r.timeline);
        assert!(back.arguments.is_null());
        assert!(back.error.as_deref().unwrap().ends_with("bytes cut)"));
        let t = back.truncated.unwrap();
        assert_eq!(Some(&t), truncation.as_ref());
        assert_eq!(t.fields, vec!["arguments".to_owned(), "error".to_owned()]);
        assert!(t.original_bytes > 60_000);
    }

    #[test]
    fn a_refused_report_shrinks_further_each_time() {
        let r = report(serde_json::Value::Null, "e".repeat(5000));
        let sizes: Vec<usize> = (1..=MAX_SHRINK)
            .map(|s| encode(&r, usize::MAX, s).0.len())
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
        let last: Report = serde_json::from_slice(&encode(&r, usize::MAX, MAX_SHRINK).0).unwrap();
        assert_eq!((last.verdict, last.timeline.len()), (Verdict::Fail, 0));
    }
}
