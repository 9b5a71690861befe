//! Feature `otel`: a runner exports one OpenTelemetry span per step of a run, children of
//! the test's trace, checked with the SDK's in-memory exporter behind the global tracer
//! provider. (One test in this binary: the provider is global.)

mod support;

use std::time::Duration;

use livecheck_core::{
    EmbeddedBroker, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig, Signal, Suite, TestContext,
    Topics, Verdict,
};
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

const CASE: &str = "otel.steps";
static SAVED: Signal<u32> = Signal::new(CASE, "saved");
static EXECUTED: Signal<u32> = Signal::new(CASE, "executed");
static NEVER: Signal<()> = Signal::new(CASE, "never_sent");

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_exports_one_span_per_step_in_the_tests_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let topics = Topics::with_prefix(&format!("t{}-", uuid::Uuid::new_v4().simple()));
    let broker = EmbeddedBroker::with_topics(&topics, &[], 2).unwrap();
    let client = LiveCheck::new(
        KafkaConfig::new(broker.bootstrap_servers()).set("linger.ms", "0"),
        topics,
    )
    .unwrap();
    let case = livecheck_core::Case::new(CASE)
        .timeout(Duration::from_secs(2))
        .expect(|run: Run, wait_for_more: bool| async move {
            run.wait(&SAVED).await?;
            run.wait(&EXECUTED).await?;
            if wait_for_more {
                run.wait(&NEVER).await?;
            }
            Ok(())
        });
    let runner = Runner::new(
        Suite::new([case]).unwrap(),
        client.clone(),
        RunnerConfig::default(),
    );
    let _stop = support::start_runner(&runner).await;

    // A passing run in a trace, a timeout in the same trace, and a run without a trace.
    let mut ids = Vec::new();
    for (traceparent, wait_for_more) in [
        (Some(TRACEPARENT), false),
        (Some(TRACEPARENT), true),
        (None, false),
    ] {
        let mut context =
            TestContext::new(CASE, Duration::from_secs(60)).arguments(wait_for_more.into());
        if let Some(traceparent) = traceparent {
            context = context.traceparent(traceparent);
        }
        let report = runner.report_for(&context.id);
        client.register_test(&context).unwrap();
        client
            .scope(context.clone(), async {
                SAVED.send(&1).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                EXECUTED.send(&2).await;
            })
            .await;
        let report = tokio::time::timeout(Duration::from_secs(30), report)
            .await
            .unwrap()
            .unwrap();
        let verdict = if wait_for_more {
            Verdict::Timeout
        } else {
            Verdict::Pass
        };
        assert_eq!(report.verdict, verdict, "{}", report.render());
        ids.push(context.id);
    }
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let of = |id: &str| -> Vec<&SpanData> {
        let mut of: Vec<_> = spans
            .iter()
            .filter(|s| attribute(s, "livecheck.test_id") == Some(&Value::from(id.to_owned())))
            .collect();
        of.sort_by_key(|s| s.start_time);
        of
    };

    let trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let parent = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let passed = of(&ids[0]);
    let names: Vec<_> = passed.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["otel.steps saved", "otel.steps executed"]);
    for span in &passed {
        assert_eq!(span.span_context.trace_id(), trace);
        assert_eq!(span.parent_span_id, parent);
        assert!(span.parent_span_is_remote);
        assert!(span.start_time <= span.end_time);
        assert_eq!(
            attribute(span, "livecheck.verdict"),
            Some(&Value::from("PASS"))
        );
        assert_eq!(
            attribute(span, "livecheck.awaited"),
            Some(&Value::from(true))
        );
    }
    // The second step's span lasts from the first send to the second (about 20 ms).
    assert_eq!(passed[1].start_time, passed[0].end_time);
    assert!(
        passed[1]
            .end_time
            .duration_since(passed[1].start_time)
            .unwrap()
            >= Duration::from_millis(20)
    );

    // A timeout: its two steps and the step that never came, with an error status.
    let timed_out = of(&ids[1]);
    let names: Vec<_> = timed_out.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "otel.steps saved",
            "otel.steps executed",
            "otel.steps never_sent"
        ]
    );
    assert!(
        matches!(&timed_out[2].status, Status::Error { description } if description.contains("never_sent")),
        "{:?}",
        timed_out[2].status
    );
    assert!(timed_out.iter().all(|s| s.span_context.trace_id() == trace));

    // No trace, no spans.
    assert!(of(&ids[2]).is_empty());
    assert_eq!(spans.len(), 5);
}
