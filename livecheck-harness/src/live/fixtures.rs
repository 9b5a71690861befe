//! What the live surfaces' unit tests share: a state with some cases, and a run report.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use livecheck_core::{
    Case, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig, Step, Suite, Topics, Verdict,
};

use super::state::LiveState;

/// A state for a suite of `names` (each case passes at once).
pub(crate) fn state_with(names: &[&str]) -> Arc<LiveState> {
    let client =
        LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
    let cases = names
        .iter()
        .map(|name| Case::new(*name).expect(|_: Run, (): ()| async { Ok(()) }));
    let runner = Runner::new(
        Suite::new(cases).expect("suite"),
        client.clone(),
        RunnerConfig::default(),
    );
    Arc::new(LiveState::new(runner, client))
}

/// A run of `case` whose awaited steps took `steps` (signal, milliseconds each), issued
/// 100 ms before it finished.
pub(crate) fn report(case: &str, id: &str, verdict: Verdict, steps: &[(&str, f64)]) -> Report {
    let issued_at = Utc::now() - TimeDelta::milliseconds(100);
    let mut at = issued_at;
    let timeline = steps
        .iter()
        .enumerate()
        .map(|(i, (signal, latency_ms))| {
            at += TimeDelta::microseconds((latency_ms * 1000.0) as i64);
            Step {
                signal: (*signal).to_owned(),
                item: None,
                awaited: true,
                sent_at: at,
                arrived_at: at,
                event_at: Some(at),
                latency_ms: *latency_ms,
                lag_ms: 0.0,
                topic: "livecheck.signals".to_owned(),
                partition: 0,
                offset: i as i64,
            }
        })
        .collect();
    Report {
        test_id: id.to_owned(),
        case: case.to_owned(),
        verdict,
        error: (verdict != Verdict::Pass).then(|| format!("{verdict} in {id}")),
        missing_step: None,
        last_step: steps.last().map(|(s, _)| (*s).to_owned()),
        unawaited: Vec::new(),
        timeline,
        issued_at,
        finished_at: issued_at + TimeDelta::milliseconds(100),
        arguments: serde_json::Value::Null,
        waits: Vec::new(),
        truncated: None,
        hops: Vec::new(),
        trace_id: None,
        invariant: None,
        route: None,
    }
}
