//! Web surfaces of live mode: the status page for people, Prometheus metrics, a JSON API
//! and a liveness probe.
//!
//! | Route | What |
//! |---|---|
//! | `GET /` | status page: one self-contained HTML page that polls `/api/cases` every second |
//! | `GET /metrics` | Prometheus text exposition (format 0.0.4) |
//! | `GET /api/cases` | JSON array of [`CaseSnapshot`](super::state::CaseSnapshot): health and headline, runs, pass rates (5 min, 1 h, since the start), the last failures of each kind, transitions, the published settings, what each service instance applies, the roll-out |
//! | `PUT /api/cases/{case}` | changes a case's probability and active flag (bearer token; see [`super::admin`]) |
//! | `GET /api/runs/{id}` | the [`Report`](livecheck_core::Report) of a run (the last 2,000, and the failures the page lists), or 404 `{"error": ...}` |
//! | `GET /api/status` | JSON [`InputStatus`](super::state::InputStatus): Kafka reachable, partitions held, blind, who alerts |
//! | `GET /healthz` | liveness: `ok` while the process serves |
//! | `GET /readyz` | readiness: 200 `ready` when Kafka is reachable and partitions are held, else 503 with a JSON reason |

use std::fmt::{self, Write as _};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use livecheck_core::Verdict;
use serde::Serialize;

use super::admin::{self, AdminApi};
use super::fleet::Following;
use super::state::{Health, LiveState, LATENCY_BUCKETS, RUNS_KEPT};

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The page's content security policy: nothing is loaded from anywhere; the only requests
/// the page makes are its own `api/cases` and `api/status` polls.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The routes of the live-mode web server (see the [module docs](self)), the settings API
/// read-only.
pub fn router(state: Arc<LiveState>) -> Router {
    router_with(state, AdminApi::default())
}

/// The routes, with the settings API as `admin` says.
pub fn router_with(state: Arc<LiveState>, admin: AdminApi) -> Router {
    let settings = Router::new()
        .route("/api/cases/{case}", put(admin::put_case))
        .with_state(admin);
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/api/cases", get(api_cases))
        .route("/api/runs/{id}", get(api_run))
        .route("/api/status", get(api_status))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(settings)
}

async fn status_page(State(state): State<Arc<LiveState>>) -> Response {
    let mut response = render_page(&state).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn metrics(State(state): State<Arc<LiveState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, METRICS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render_metrics(&state),
    )
        .into_response()
}

async fn api_cases(State(state): State<Arc<LiveState>>) -> Response {
    no_store(Json(state.cases()).into_response())
}

async fn api_status(State(state): State<Arc<LiveState>>) -> Response {
    no_store(Json(state.input_status()).into_response())
}

async fn readyz(State(state): State<Arc<LiveState>>) -> Response {
    let status = state.input_status();
    let response = if status.ready {
        "ready".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "reason": status.reason,
                "kafka_reachable": status.kafka_reachable,
                "assigned_partitions": status.assigned_partitions,
            })),
        )
            .into_response()
    };
    no_store(response)
}

async fn api_run(State(state): State<Arc<LiveState>>, Path(id): Path<String>) -> Response {
    let response = match state.run(&id) {
        Some(report) => Json(&*report).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!(
                    "no run with test id {id:?} (the last {RUNS_KEPT} runs and the failures the page lists are kept)"
                ),
            })),
        )
            .into_response(),
    };
    no_store(response)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// A float as Prometheus writes it (`+Inf`, `-Inf`, `NaN`, shortest round-trip otherwise).
struct Float(f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v == f64::INFINITY {
            f.write_str("+Inf")
        } else if v == f64::NEG_INFINITY {
            f.write_str("-Inf")
        } else {
            write!(f, "{v}")
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A metric name made of `[a-zA-Z0-9_]` only (anything else becomes `_`).
fn metric_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes backslash and line feed.
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// The live state in the Prometheus text exposition format (0.0.4).
pub fn render_metrics(state: &LiveState) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let cases = state.cases();

    family(
        &mut out,
        "livecheck_runs_total",
        "counter",
        "Finished runs by case and verdict.",
    );
    for case in &cases {
        for verdict in Verdict::ALL {
            let n = case.verdicts.get(&verdict).copied().unwrap_or(0);
            sample(
                &mut out,
                "livecheck_runs_total",
                &[("case", &case.name), ("verdict", verdict.as_str())],
                n,
            );
        }
    }

    let latency = "livecheck_step_latency_seconds";
    family(
        &mut out,
        latency,
        "histogram",
        "Latency of each step of a run (since the previous step; the first step: since the test was issued), seconds.",
    );
    for (case, signal, histogram) in state.latencies() {
        let labels = [("case", case.as_str()), ("signal", signal.as_str())];
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += histogram.buckets.get(i).copied().unwrap_or(0);
            let le = Float(*bound).to_string();
            sample(
                &mut out,
                &format!("{latency}_bucket"),
                &[labels[0], labels[1], ("le", &le)],
                cumulative,
            );
        }
        sample(
            &mut out,
            &format!("{latency}_bucket"),
            &[labels[0], labels[1], ("le", "+Inf")],
            histogram.count,
        );
        sample(
            &mut out,
            &format!("{latency}_sum"),
            &labels,
            Float(histogram.sum),
        );
        sample(
            &mut out,
            &format!("{latency}_count"),
            &labels,
            histogram.count,
        );
    }

    family(
        &mut out,
        "livecheck_suite_state",
        "gauge",
        "Suite state of each case: 1 for the current state, 0 for the others.",
    );
    for case in &cases {
        for health in Health::ALL {
            sample(
                &mut out,
                "livecheck_suite_state",
                &[("case", &case.name), ("state", health.as_str())],
                u8::from(case.health == health),
            );
        }
    }

    family(
        &mut out,
        "livecheck_consecutive_failures",
        "gauge",
        "Runs in a row that did not pass, per case.",
    );
    for case in &cases {
        sample(
            &mut out,
            "livecheck_consecutive_failures",
            &[("case", &case.name)],
            case.consecutive_failures,
        );
    }

    family(
        &mut out,
        "livecheck_suite_transitions_total",
        "counter",
        "Suite-state transitions so far, by case and the state entered.",
    );
    for (case, to, n) in state.transition_counts() {
        sample(
            &mut out,
            "livecheck_suite_transitions_total",
            &[("case", &case), ("state", to.as_str())],
            n,
        );
    }

    family(
        &mut out,
        "livecheck_runs_in_flight",
        "gauge",
        "Runs in flight now.",
    );
    sample(
        &mut out,
        "livecheck_runs_in_flight",
        &[],
        state.runner.in_flight(),
    );
    family(
        &mut out,
        "livecheck_buffered_tests",
        "gauge",
        "Tests with early (buffered) signals now.",
    );
    sample(
        &mut out,
        "livecheck_buffered_tests",
        &[],
        state.runner.buffered_tests(),
    );

    for (prefix, what, counters) in [
        (
            "livecheck_runner",
            "Runner",
            state.runner.counters().snapshot(),
        ),
        (
            "livecheck_client",
            "Client",
            state.client.counters().snapshot(),
        ),
    ] {
        for (name, value) in counters {
            // A few of the client's figures are states, not counts.
            if livecheck_core::counters::ClientCounters::GAUGES.contains(&name) {
                let full = format!("{prefix}_{}", metric_name(name));
                family(&mut out, &full, "gauge", &format!("{what} gauge {name}."));
                sample(&mut out, &full, &[], value);
                continue;
            }
            let full = format!("{prefix}_{}_total", metric_name(name));
            family(
                &mut out,
                &full,
                "counter",
                &format!("{what} counter {name}."),
            );
            sample(&mut out, &full, &[], value);
        }
    }

    family(
        &mut out,
        "livecheck_consumer_lag",
        "gauge",
        "Consumer lag of the runner per topic partition, records.",
    );
    {
        let lag = state.lag.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition, records) in lag.iter() {
            sample(
                &mut out,
                "livecheck_consumer_lag",
                &[("topic", topic), ("partition", &partition.to_string())],
                records,
            );
        }
    }

    family(
        &mut out,
        "livecheck_control_probability",
        "gauge",
        "Probability of each case as published on the control topic.",
    );
    for case in &cases {
        if let Some(p) = &case.published {
            sample(
                &mut out,
                "livecheck_control_probability",
                &[("case", &case.name)],
                Float(p.probability),
            );
        }
    }
    family(
        &mut out,
        "livecheck_control_active",
        "gauge",
        "1 when the case is active as published on the control topic.",
    );
    family(
        &mut out,
        "livecheck_control_version",
        "gauge",
        "Version of each case's published settings (milliseconds since the epoch of the change).",
    );
    for case in &cases {
        if let Some(p) = &case.published {
            sample(
                &mut out,
                "livecheck_control_active",
                &[("case", &case.name)],
                u8::from(p.active),
            );
            sample(
                &mut out,
                "livecheck_control_version",
                &[("case", &case.name)],
                p.version,
            );
        }
    }
    family(
        &mut out,
        "livecheck_instance_probability",
        "gauge",
        "Probability each service instance samples with, per case (from its heartbeats).",
    );
    family(
        &mut out,
        "livecheck_instance_following",
        "gauge",
        "1 when a service instance applies the published settings of the case (0: stale or not following).",
    );
    for case in &cases {
        for i in &case.instances {
            let labels = [
                ("case", case.name.as_str()),
                ("service", i.service.as_str()),
                ("instance", i.instance.as_str()),
            ];
            sample(
                &mut out,
                "livecheck_instance_probability",
                &labels,
                Float(i.probability),
            );
            sample(
                &mut out,
                "livecheck_instance_following",
                &labels,
                u8::from(i.following == Following::Following),
            );
        }
    }
    family(
        &mut out,
        "livecheck_rollout_step",
        "gauge",
        "Current step (1-based) of each case's roll-out plan.",
    );
    for case in &cases {
        if let Some(r) = &case.rollout {
            sample(
                &mut out,
                "livecheck_rollout_step",
                &[("case", &case.name), ("state", r.state_text)],
                r.position.step + 1,
            );
        }
    }

    let input = state.input_status();
    family(
        &mut out,
        "livecheck_kafka_reachable",
        "gauge",
        "1 when LiveCheck's Kafka clients reach the brokers, 0 when they cannot.",
    );
    sample(
        &mut out,
        "livecheck_kafka_reachable",
        &[],
        u8::from(input.kafka_reachable),
    );
    family(
        &mut out,
        "livecheck_kafka_connectivity_transitions_total",
        "counter",
        "Changes between Kafka reachable and unreachable so far.",
    );
    sample(
        &mut out,
        "livecheck_kafka_connectivity_transitions_total",
        &[],
        state.runner.connectivity().transitions(),
    );
    family(
        &mut out,
        "livecheck_assigned_partitions",
        "gauge",
        "Partitions of the tests topic this instance's runner holds.",
    );
    sample(
        &mut out,
        "livecheck_assigned_partitions",
        &[],
        input.assigned_partitions,
    );
    let (tests_held, signals_held) = state.runner.uncommitted();
    family(
        &mut out,
        "livecheck_uncommitted_records",
        "gauge",
        "Records read and not committable yet, by topic: what a restart would read again.",
    );
    sample(
        &mut out,
        "livecheck_uncommitted_records",
        &[("topic", "tests")],
        tests_held,
    );
    sample(
        &mut out,
        "livecheck_uncommitted_records",
        &[("topic", "signals")],
        signals_held,
    );
    family(
        &mut out,
        "livecheck_paused_signal_partitions",
        "gauge",
        "Signals partitions paused until their tests partition catches up (flow control).",
    );
    sample(
        &mut out,
        "livecheck_paused_signal_partitions",
        &[],
        state.runner.paused_signal_partitions(),
    );
    family(
        &mut out,
        "livecheck_ready",
        "gauge",
        "1 when Kafka is reachable and partitions are held (as /readyz).",
    );
    sample(&mut out, "livecheck_ready", &[], u8::from(input.ready));
    family(
        &mut out,
        "livecheck_blind",
        "gauge",
        "1 while every case shows DOWN because LiveCheck cannot see its inputs.",
    );
    sample(
        &mut out,
        "livecheck_blind",
        &[],
        u8::from(input.blind.is_some()),
    );
    family(
        &mut out,
        "livecheck_alert_voice",
        "gauge",
        "1 on the instance that decides suite health for the group and sends the alerts.",
    );
    sample(
        &mut out,
        "livecheck_alert_voice",
        &[],
        u8::from(input.voice),
    );

    family(
        &mut out,
        "livecheck_start_time_seconds",
        "gauge",
        "When live mode started, seconds since the Unix epoch.",
    );
    sample(
        &mut out,
        "livecheck_start_time_seconds",
        &[],
        Float(state.started_at.timestamp_millis() as f64 / 1000.0),
    );
    out
}

// ---------------------------------------------------------------------------------------
// Status page
// ---------------------------------------------------------------------------------------

/// JSON that is safe inside a `<script>` element (no `<`, `>` or `&`, even in strings).
fn script_safe_json(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".to_owned())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The status page, with the current cases embedded (the script renders them at once,
/// then polls `api/cases`).
pub fn render_page(state: &LiveState) -> String {
    PAGE.replace("__LIVECHECK_INITIAL__", &script_safe_json(&state.cases()))
}

/// The page: HTML, CSS and script in one asset file; `__LIVECHECK_INITIAL__` is replaced by
/// the cases.
const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use chrono::{TimeDelta, Utc};
    use livecheck_core::{
        Case, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig, Step, Suite, Topics,
    };

    use super::*;

    fn state_with(names: &[&str]) -> Arc<LiveState> {
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

    fn report(case: &str, id: &str, verdict: Verdict, steps: &[(&str, f64)]) -> Report {
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
            finished_at: Utc::now(),
            arguments: serde_json::Value::Null,
            waits: Vec::new(),
            truncated: None,
            hops: Vec::new(),
            trace_id: None,
        }
    }

    /// A sample line: name, labels (unescaped), value.
    type Sample = (String, Vec<(String, String)>, String);

    /// A small parser of the text format: checks every sample belongs to a family whose
    /// HELP and TYPE came first, and unescapes label values.
    fn parse(text: &str) -> Vec<Sample> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps = std::collections::HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("help name");
                assert!(helps.insert(name.to_owned()), "HELP twice for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().expect("type name").to_owned();
                let kind = parts.next().expect("type kind").to_owned();
                assert!(helps.contains(&name), "TYPE before HELP for {name}");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind.as_str()),
                    "{kind}"
                );
                assert!(
                    types.insert(name.clone(), kind).is_none(),
                    "TYPE twice for {name}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let name_end = line.find(['{', ' ']).expect("sample name");
            let name = &line[..name_end];
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad metric name {name:?}"
            );
            let mut labels = Vec::new();
            let mut rest = &line[name_end..];
            if let Some(after) = rest.strip_prefix('{') {
                let mut chars = after.char_indices().peekable();
                let end;
                loop {
                    let (start, c) = chars.next().expect("label or }");
                    if c == '}' {
                        end = start + 1;
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let eq = after[start..].find('=').expect("=") + start;
                    let key = after[start..eq].to_owned();
                    while let Some((i, _)) = chars.peek() {
                        if *i > eq {
                            break;
                        }
                        chars.next();
                    }
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "quote in {line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value").1 {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                other => panic!("bad escape \\{other} in {line:?}"),
                            },
                            '\n' => panic!("raw newline in {line:?}"),
                            c => value.push(c),
                        }
                    }
                    labels.push((key, value));
                }
                rest = &after[end..];
            }
            let value = rest.strip_prefix(' ').expect("space before value");
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "bad value {value:?} in {line:?}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before TYPE: {line:?}");
            samples.push((name.to_owned(), labels, value.to_owned()));
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a str {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v.as_str())
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("line\nnext"), "line\\nnext");
        assert_eq!(escape_label_value("plain.case-1"), "plain.case-1");

        let weird = "we\"ird\\case\nname";
        let state = state_with(&[weird, "plain"]);
        state.record(Arc::new(report(
            weird,
            "t1",
            Verdict::Fail,
            &[("a\"b", 3.0)],
        )));
        state
            .lag
            .lock()
            .unwrap()
            .push(("topic\\with\"quote\n".to_owned(), 3, 42));
        let text = render_metrics(&state);
        assert!(
            text.contains(r#"livecheck_runs_total{case="we\"ird\\case\nname",verdict="FAIL"} 1"#),
            "{text}"
        );
        // Every line is one sample or comment; escaped values read back as the originals.
        let samples = parse(&text);
        assert_eq!(
            find(
                &samples,
                "livecheck_runs_total",
                &[("case", weird), ("verdict", "FAIL")]
            ),
            "1"
        );
        assert_eq!(
            find(
                &samples,
                "livecheck_step_latency_seconds_count",
                &[("case", weird), ("signal", "a\"b")]
            ),
            "1"
        );
        assert_eq!(
            find(
                &samples,
                "livecheck_consumer_lag",
                &[("topic", "topic\\with\"quote\n"), ("partition", "3")]
            ),
            "42"
        );
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let state = state_with(&["orders.place_order"]);
        // Latencies of step "saved": 0.5 ms, 3 ms, 3 ms, 20 s; of step "shipped": 0.2 s.
        state.record(Arc::new(report(
            "orders.place_order",
            "t1",
            Verdict::Pass,
            &[("saved", 0.5), ("shipped", 200.0)],
        )));
        state.record(Arc::new(report(
            "orders.place_order",
            "t2",
            Verdict::Pass,
            &[("saved", 3.0)],
        )));
        state.record(Arc::new(report(
            "orders.place_order",
            "t3",
            Verdict::Fail,
            &[("saved", 3.0)],
        )));
        state.record(Arc::new(report(
            "orders.place_order",
            "t4",
            Verdict::Timeout,
            &[("saved", 20_000.0)],
        )));
        let samples = parse(&render_metrics(&state));
        let bucket = |signal: &str, le: &str| -> u64 {
            find(
                &samples,
                "livecheck_step_latency_seconds_bucket",
                &[
                    ("case", "orders.place_order"),
                    ("signal", signal),
                    ("le", le),
                ],
            )
            .parse()
            .expect("count")
        };
        let expected = [
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 3),
            ("0.01", 3),
            ("0.025", 3),
            ("0.05", 3),
            ("0.1", 3),
            ("0.25", 3),
            ("0.5", 3),
            ("1", 3),
            ("2.5", 3),
            ("10", 3),
            ("+Inf", 4),
        ];
        assert_eq!(expected.len(), LATENCY_BUCKETS.len() + 1);
        for (le, n) in expected {
            assert_eq!(bucket("saved", le), n, "le={le}");
        }
        // Every bucket series is non-decreasing and ends at _count.
        let mut previous = 0;
        for bound in LATENCY_BUCKETS {
            let n = bucket("shipped", &Float(bound).to_string());
            assert!(n >= previous);
            previous = n;
        }
        assert_eq!(bucket("shipped", "0.1"), 0);
        assert_eq!(bucket("shipped", "0.25"), 1);
        assert_eq!(bucket("shipped", "+Inf"), 1);
        let count = |signal: &str| {
            find(
                &samples,
                "livecheck_step_latency_seconds_count",
                &[("case", "orders.place_order"), ("signal", signal)],
            )
        };
        assert_eq!(count("saved"), "4");
        let sum: f64 = find(
            &samples,
            "livecheck_step_latency_seconds_sum",
            &[("case", "orders.place_order"), ("signal", "saved")],
        )
        .parse()
        .expect("sum");
        assert!((sum - 20.0065).abs() < 1e-9, "{sum}");

        // Runs by verdict (zeros included), suite state, gauges and counters.
        let runs = |v: &str| {
            find(
                &samples,
                "livecheck_runs_total",
                &[("case", "orders.place_order"), ("verdict", v)],
            )
        };
        assert_eq!(
            [
                runs("PASS"),
                runs("FAIL"),
                runs("ERROR"),
                runs("TIMEOUT"),
                runs("SKIP")
            ],
            ["2", "1", "0", "1", "0"]
        );
        for (health, v) in [("OK", "1"), ("FAIL", "0"), ("STALL", "0"), ("DOWN", "0")] {
            assert_eq!(
                find(
                    &samples,
                    "livecheck_suite_state",
                    &[("case", "orders.place_order"), ("state", health)]
                ),
                v
            );
        }
        assert_eq!(find(&samples, "livecheck_runs_in_flight", &[]), "0");
        assert_eq!(find(&samples, "livecheck_buffered_tests", &[]), "0");
        assert_eq!(
            find(
                &samples,
                "livecheck_consecutive_failures",
                &[("case", "orders.place_order")]
            ),
            "2"
        );
        for (name, _) in state.runner.counters().snapshot() {
            find(&samples, &format!("livecheck_runner_{name}_total"), &[]);
        }
        for (name, _) in state.client.counters().snapshot() {
            if livecheck_core::counters::ClientCounters::GAUGES.contains(&name) {
                find(&samples, &format!("livecheck_client_{name}"), &[]);
            } else {
                find(&samples, &format!("livecheck_client_{name}_total"), &[]);
            }
        }
        assert!(
            render_metrics(&state).contains("# TYPE livecheck_client_control_following gauge\n")
        );
        assert!(render_metrics(&state)
            .contains("# TYPE livecheck_runner_tests_received_total counter\n"));
    }

    #[test]
    fn floats_render_like_prometheus() {
        assert_eq!(Float(1.0).to_string(), "1");
        assert_eq!(Float(0.0025).to_string(), "0.0025");
        assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Float(f64::NAN).to_string(), "NaN");
    }

    #[test]
    fn the_page_embeds_the_cases_without_breaking_out_of_the_script() {
        let state = state_with(&["x.y"]);
        let mut r = report("x.y", "t1", Verdict::Fail, &[("saved", 1.0)]);
        r.error = Some("</script><script>alert(1)</script> & more".to_owned());
        state.record(Arc::new(r));
        let page = render_page(&state);
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "only the page's own script ends"
        );
        assert!(page.contains(r"\u003c/script\u003e\u003cscript\u003ealert(1)"));
        // Self-contained: nothing is loaded from elsewhere.
        for external in ["http://", "https://", "src=", "<link", "@import"] {
            assert!(!page.contains(external), "page contains {external}");
        }
        // The embedded JSON is the cases.
        let start =
            page.find(r#"id="initial-data">"#).expect("data") + r#"id="initial-data">"#.len();
        let end = start + page[start..].find("</script>").expect("end");
        let cases: serde_json::Value = serde_json::from_str(&page[start..end]).expect("json");
        assert_eq!(cases[0]["name"], "x.y");
        assert_eq!(
            cases[0]["recent"][0]["error"],
            "</script><script>alert(1)</script> & more"
        );
    }

    async fn serve(state: Arc<LiveState>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn routes() {
        let state = state_with(&["x.y"]);
        state.record(Arc::new(report(
            "x.y",
            "t-1",
            Verdict::Pass,
            &[("saved", 2.0)],
        )));
        let base = serve(state).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");

        let r = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.expect("body"), "ok");

        let r = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = r.text().await.expect("body");
        assert!(text.contains("livecheck_runs_total{case=\"x.y\",verdict=\"PASS\"} 1\n"));
        parse(&text);

        let r = http
            .get(format!("{base}/api/cases"))
            .send()
            .await
            .expect("cases");
        assert_eq!(r.status(), 200);
        let cases: serde_json::Value = r.json().await.expect("json");
        assert_eq!(cases[0]["name"], "x.y");
        assert_eq!(cases[0]["health"], "OK");
        assert_eq!(cases[0]["verdicts"]["PASS"], 1);
        assert_eq!(cases[0]["recent"][0]["test_id"], "t-1");

        let r = http
            .get(format!("{base}/api/runs/t-1"))
            .send()
            .await
            .expect("run");
        assert_eq!(r.status(), 200);
        let run: Report = r.json().await.expect("report");
        assert_eq!(run.test_id, "t-1");
        assert_eq!(run.verdict, Verdict::Pass);

        let r = http
            .get(format!("{base}/api/runs/nope"))
            .send()
            .await
            .expect("404");
        assert_eq!(r.status(), 404);
        let error: serde_json::Value = r.json().await.expect("json");
        assert!(
            error["error"].as_str().expect("error").contains("nope"),
            "{error}"
        );

        let r = http.get(format!("{base}/")).send().await.expect("page");
        assert_eq!(r.status(), 200);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/html"));
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let page = r.text().await.expect("body");
        assert!(page.contains(r#"id="runs-total""#));
        assert!(page.contains("\"t-1\""));
    }
}
