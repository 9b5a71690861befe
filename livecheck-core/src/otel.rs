//! OpenTelemetry spans for the steps of a run (feature `otel`).
//!
//! With the feature on, a runner exports one span per step of each run it reports, through
//! OpenTelemetry's global tracer provider (tracer [`TRACER`]; set one up with
//! `opentelemetry::global::set_tracer_provider`, or nothing is exported). Each span is a
//! child of the test's trace ([`crate::TestContext::traceparent`]): a test without a trace
//! exports nothing, and the sampling decision is the provider's (with the default
//! parent-based sampler, the trace's sampled flag).
//!
//! A step's span starts when the previous step was sent (the first: when the test was
//! issued) and ends when this one was sent: its length is the step's latency in the report.
//! Its name is `<case> <signal>`, its attributes the test id, case, signal, item, whether a
//! wait took it, the verdict and where the signal was read (`messaging.*`). For a
//! `TIMEOUT`, the step that never came gets a span too, from the last step to the verdict,
//! with an error status and the report's message.

use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{global, Context, KeyValue};

use crate::context::TestContext;
use crate::report::{Report, Verdict};

/// The name of the tracer the spans are made with.
pub const TRACER: &str = "livecheck";

/// Exports the spans of `report`'s steps as children of `context`'s trace, if it has one.
pub(crate) fn export_steps(context: &TestContext, report: &Report) {
    let Some(parent) = context
        .traceparent
        .as_deref()
        .and_then(crate::baggage::span_context)
    else {
        return;
    };
    let parent = Context::new().with_remote_span_context(parent);
    let tracer = global::tracer(TRACER);
    let common = [
        KeyValue::new("livecheck.test_id", report.test_id.clone()),
        KeyValue::new("livecheck.case", report.case.clone()),
        KeyValue::new("livecheck.verdict", report.verdict.as_str()),
    ];
    let mut last = report.issued_at;
    for step in &report.timeline {
        // As the report's latency: from the latest send before this one.
        let start = last.min(step.sent_at);
        let mut attributes = common.to_vec();
        attributes.extend([
            KeyValue::new("livecheck.signal", step.signal.clone()),
            KeyValue::new("livecheck.awaited", step.awaited),
            KeyValue::new("livecheck.lag_ms", step.lag_ms),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", step.topic.clone()),
            KeyValue::new(
                "messaging.destination.partition.id",
                step.partition.to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", step.offset),
        ]);
        if let Some(item) = &step.item {
            attributes.push(KeyValue::new("livecheck.item", item.clone()));
        }
        let mut span = tracer
            .span_builder(format!("{} {}", report.case, step.signal))
            .with_kind(SpanKind::Internal)
            .with_start_time(SystemTime::from(start))
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        span.end_with_timestamp(SystemTime::from(step.sent_at));
        last = last.max(step.sent_at);
    }
    if let (Verdict::Timeout, Some(missing)) = (report.verdict, &report.missing_step) {
        let mut attributes = common.to_vec();
        attributes.push(KeyValue::new("livecheck.signal", missing.clone()));
        let mut span = tracer
            .span_builder(format!("{} {missing}", report.case))
            .with_kind(SpanKind::Internal)
            .with_start_time(SystemTime::from(last))
            .with_attributes(attributes)
            .with_status(Status::error(report.error.clone().unwrap_or_default()))
            .start_with_context(&tracer, &parent);
        span.end_with_timestamp(SystemTime::from(report.finished_at.max(last)));
    }
}
