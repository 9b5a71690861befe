//! `/metrics`: the live state encoded by `prometheus-client`, in OpenMetrics when the
//! scraper asks for it (Prometheus does), else in the Prometheus text format 0.0.4 (curl,
//! `promtool check metrics`).
//!
//! Two kinds of series:
//! - recorded as things happen, in [`Metrics`]: the end-to-end run duration per case
//!   (`livecheck_run_duration_seconds`), alert deliveries per webhook and outcome
//!   (`livecheck_alert_deliveries_total`), alerts dropped before delivery, build info;
//! - read from the live state at scrape time by a [`Collector`]: runs by verdict, invariant
//!   failures by case and rule, step latencies, suite states and transitions, the runner's
//!   and the client's counters, Kafka and partition state, table entries held, control and
//!   roll-out state.
//!
//! Every family has one help text that says what it counts. The runner's `verdict_*` and
//! `invariant_failures` counters are not exported: `livecheck_runs_total{case,verdict}` and
//! `livecheck_invariant_failures_total{case,rule}` count the same runs.

use std::fmt;
use std::sync::Arc;

use livecheck_core::counters::{ClientCounters, RunnerCounters};
use livecheck_core::{Report, Verdict};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::fleet::Following;
use super::state::{CaseSnapshot, Health, LiveState, LATENCY_BUCKETS};

/// Content type of the OpenMetrics text exposition (it ends with `# EOF`).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text exposition, format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The two text formats `/metrics` speaks; a scraper asks by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0.0: what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for anything that does not ask for OpenMetrics
    /// (curl, `promtool check metrics`, older scrapers).
    Text,
}

impl Exposition {
    /// OpenMetrics when `accept` lists `application/openmetrics-text` (with a non-zero
    /// quality), else the text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.unwrap_or_default().split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let quality = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            media.eq_ignore_ascii_case("application/openmetrics-text") && quality > 0.0
        });
        if wants_openmetrics {
            Exposition::OpenMetrics
        } else {
            Exposition::Text
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Exposition::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// Upper bounds (seconds) of the run-duration buckets: from a few milliseconds (a run on
/// a fast path) to minutes (a run that waits for its signals' timeouts).
pub const RUN_DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Whether a runner counter is left out because another series counts the same runs
/// (`livecheck_runs_total`, `livecheck_invariant_failures_total`).
fn duplicated_runner_counter(name: &str) -> bool {
    name.starts_with("verdict_") || name == "invariant_failures"
}

/// Labels of a run-duration series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct RunLabels {
    case: String,
    verdict: &'static str,
}

/// Labels of an alert-delivery series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct DeliveryLabels {
    webhook: String,
    format: &'static str,
    outcome: &'static str,
}

/// How an alert's delivery to one webhook ended (after its retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver answered, but not 2xx, on the last attempt.
    Refused,
    /// The receiver could not be reached (connection, TLS, timeout) on the last attempt.
    Unreachable,
}

impl DeliveryOutcome {
    /// `delivered`, `refused`, `unreachable`: the `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Refused => "refused",
            DeliveryOutcome::Unreachable => "unreachable",
        }
    }
}

/// The series recorded as things happen (cheap to clone: the clones share the series).
#[derive(Debug, Clone)]
pub struct Metrics {
    run_duration: Family<RunLabels, Histogram, fn() -> Histogram>,
    alert_deliveries: Family<DeliveryLabels, Counter>,
    alerts_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            run_duration: Family::new_with_constructor(|| Histogram::new(RUN_DURATION_BUCKETS)),
            alert_deliveries: Family::default(),
            alerts_dropped: Counter::default(),
        }
    }
}

impl Metrics {
    /// Records a finished run's end-to-end duration: from the test's issue to its verdict
    /// (skipped runs were not run and are not recorded).
    pub fn observe_run(&self, report: &Report) {
        if report.verdict == Verdict::Skip {
            return;
        }
        let ms = (report.finished_at - report.issued_at).num_milliseconds();
        // The issue time is the service's clock: a skewed one must not make it negative.
        let seconds = ms.max(0) as f64 / 1000.0;
        self.run_duration
            .get_or_create(&RunLabels {
                case: report.case.clone(),
                verdict: report.verdict.as_str(),
            })
            .observe(seconds);
    }

    /// Counts an alert's delivery to a webhook.
    pub fn alert_delivery(&self, webhook: &str, format: &'static str, outcome: DeliveryOutcome) {
        self.alert_deliveries
            .get_or_create(&DeliveryLabels {
                webhook: webhook.to_owned(),
                format,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts an alert dropped before delivery (the alert queue was full).
    pub fn alert_dropped(&self) {
        self.alerts_dropped.inc();
    }

    /// Deliveries counted so far to `webhook` with `outcome`.
    pub fn alert_deliveries(
        &self,
        webhook: &str,
        format: &'static str,
        outcome: DeliveryOutcome,
    ) -> u64 {
        self.alert_deliveries
            .get(&DeliveryLabels {
                webhook: webhook.to_owned(),
                format,
                outcome: outcome.as_str(),
            })
            .map_or(0, |c| c.get())
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "livecheck_build",
            "Build of this livecheck binary (the value is always 1)",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Names carry their unit; no `# UNIT` line (optional in OpenMetrics, and not every
        // parser takes one on a histogram). The registry ends each help text with a period.
        registry.register(
            "livecheck_run_duration_seconds",
            "End-to-end duration of each run, from the test's issue (the service's trigger) to its verdict, by case and verdict (skipped runs excluded)",
            self.run_duration.clone(),
        );
        registry.register(
            "livecheck_alert_deliveries",
            "Alerts sent to each webhook, by webhook name, payload format and outcome (delivered, refused: a non-2xx answer, unreachable), counted once per alert after its retries",
            self.alert_deliveries.clone(),
        );
        registry.register(
            "livecheck_alerts_dropped",
            "Suite-state alerts dropped before delivery because the alert queue was full",
            self.alerts_dropped.clone(),
        );
    }
}

/// The live state in the OpenMetrics text format, `# EOF` included.
pub fn render_metrics(state: &Arc<LiveState>) -> String {
    render(state, Exposition::OpenMetrics)
}

/// The live state in `format`.
pub fn render(state: &Arc<LiveState>, format: Exposition) -> String {
    let mut registry = Registry::default();
    state.metrics.register(&mut registry);
    registry.register_collector(Box::new(StateCollector(state.clone())));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; an encoder error would be a bug in a label set.
    let encoded = match format {
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Exposition::Text => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    };
    if let Err(err) = encoded {
        tracing::error!(error = %err, "cannot encode the metrics");
    }
    out
}

/// Reads the live state at scrape time.
#[derive(Debug)]
struct StateCollector(Arc<LiveState>);

/// A family of gauges; nothing when it has no series (as the registry does).
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// A family of counters (`_total` is appended to `name`); nothing when it has no series.
fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// A gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter without labels (`_total` is appended to `name`).
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let state = &self.0;
        let cases = state.cases();
        let case = |c: &CaseSnapshot| [("case", c.name.clone())];

        counters(
            &mut e,
            "livecheck_runs",
            "Finished runs by case and verdict.",
            cases.iter().flat_map(|c| {
                Verdict::ALL.map(|verdict| {
                    (
                        [
                            ("case", c.name.clone()),
                            ("verdict", verdict.as_str().to_owned()),
                        ],
                        c.verdicts.get(&verdict).copied().unwrap_or(0),
                    )
                })
            }),
        )?;

        counters(
            &mut e,
            "livecheck_invariant_failures",
            "Runs that failed because a business invariant was broken (FAIL runs, also counted in livecheck_runs_total), by case and rule.",
            cases.iter().flat_map(|c| {
                c.invariant_failures_by_rule.iter().map(|r| {
                    (
                        [("case", c.name.clone()), ("rule", r.rule.clone())],
                        r.count,
                    )
                })
            }),
        )?;

        let latencies = state.latencies();
        if !latencies.is_empty() {
            let mut f = e.encode_descriptor(
                "livecheck_step_latency_seconds",
                "Latency of each awaited step of a run: since the previous step, or since the test was issued for the first step.",
                None,
                MetricType::Histogram,
            )?;
            for (case, signal, h) in latencies {
                let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .enumerate()
                    .map(|(i, bound)| (*bound, h.buckets.get(i).copied().unwrap_or(0)))
                    .collect();
                buckets.push((
                    f64::INFINITY,
                    h.buckets.get(LATENCY_BUCKETS.len()).copied().unwrap_or(0),
                ));
                f.encode_family(&[("case", case.as_str()), ("signal", signal.as_str())])?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
            }
        }

        gauges(
            &mut e,
            "livecheck_suite_state",
            "Suite state of each case: 1 for the current state, 0 for the others.",
            cases.iter().flat_map(|c| {
                Health::ALL.map(|health| {
                    (
                        [
                            ("case", c.name.clone()),
                            ("state", health.as_str().to_owned()),
                        ],
                        u32::from(c.health == health),
                    )
                })
            }),
        )?;
        gauges(
            &mut e,
            "livecheck_consecutive_failures",
            "Runs in a row that did not pass, per case.",
            cases.iter().map(|c| (case(c), c.consecutive_failures)),
        )?;
        counters(
            &mut e,
            "livecheck_suite_transitions",
            "Suite-state transitions decided by this instance, by case and the state entered (case *: LiveCheck blind, or seeing again).",
            state
                .transition_counts()
                .into_iter()
                .map(|(case, to, n)| ([("case", case), ("state", to.as_str().to_owned())], n)),
        )?;

        gauge(
            &mut e,
            "livecheck_runs_in_flight",
            "Runs in flight now.",
            state.runner.in_flight() as u64,
        )?;
        gauge(
            &mut e,
            "livecheck_runs_parked",
            "Runs in flight that wait for their test's first step without a task (cases that start on their first step), now.",
            state.runner.parked_runs() as u64,
        )?;
        gauge(
            &mut e,
            "livecheck_buffered_tests",
            "Tests whose signals arrived before their test record, buffered now.",
            state.runner.buffered_tests() as u64,
        )?;

        for (name, value) in state.runner.counters().snapshot() {
            if duplicated_runner_counter(name) {
                continue;
            }
            let help = help_text(&RunnerCounters::help(name).unwrap_or_default());
            counter(&mut e, &format!("livecheck_runner_{name}"), &help, value)?;
        }
        for (name, value) in state.client.counters().snapshot() {
            let help = help_text(&ClientCounters::help(name).unwrap_or_default());
            let full = format!("livecheck_client_{name}");
            // A few of the client's figures are states, not counts.
            if ClientCounters::GAUGES.contains(&name) {
                gauge(&mut e, &full, &help, value)?;
            } else {
                counter(&mut e, &full, &help, value)?;
            }
        }

        counters(
            &mut e,
            "livecheck_records_without_context",
            "Records the services' consumer groups read through LiveCheck's Kafka helpers without a test context, as they report it, by group and topic.",
            state
                .runner
                .records_without_context()
                .into_iter()
                .map(|(group, topic, n)| ([("group", group), ("topic", topic)], n)),
        )?;

        let lag = state.lag();
        gauges(
            &mut e,
            "livecheck_consumer_lag",
            "Consumer lag of the runner's group per topic partition, records.",
            lag.into_iter().map(|(topic, partition, records)| {
                (
                    [("topic", topic), ("partition", partition.to_string())],
                    records,
                )
            }),
        )?;

        let published = || {
            cases
                .iter()
                .filter_map(|c| c.published.as_ref().map(|p| (case(c), p)))
        };
        gauges(
            &mut e,
            "livecheck_control_probability",
            "Probability of each case as published on the control topic.",
            published().map(|(labels, p)| (labels, p.probability)),
        )?;
        gauges(
            &mut e,
            "livecheck_control_active",
            "1 when the case is active as published on the control topic.",
            published().map(|(labels, p)| (labels, u32::from(p.active))),
        )?;
        gauges(
            &mut e,
            "livecheck_control_version",
            "Version of each case's published settings (milliseconds since the epoch of the change).",
            published().map(|(labels, p)| (labels, p.version)),
        )?;
        let instances = || {
            cases.iter().flat_map(|c| {
                c.instances.iter().map(|i| {
                    (
                        [
                            ("case", c.name.clone()),
                            ("service", i.service.clone()),
                            ("instance", i.instance.clone()),
                        ],
                        i,
                    )
                })
            })
        };
        gauges(
            &mut e,
            "livecheck_instance_probability",
            "Probability each service instance samples with, per case (from its heartbeats).",
            instances().map(|(labels, i)| (labels, i.probability)),
        )?;
        gauges(
            &mut e,
            "livecheck_instance_following",
            "1 when a service instance applies the published settings of the case (0: stale or not following).",
            instances().map(|(labels, i)| (labels, u32::from(i.following == Following::Following))),
        )?;
        gauges(
            &mut e,
            "livecheck_rollout_step",
            "Current step (1-based) of each case's roll-out plan, with the plan's state.",
            cases.iter().filter_map(|c| {
                c.rollout.as_ref().map(|r| {
                    (
                        [("case", c.name.clone()), ("state", r.state_text.to_owned())],
                        (r.position.step + 1) as u64,
                    )
                })
            }),
        )?;

        let input = state.input_status();
        gauge(
            &mut e,
            "livecheck_kafka_reachable",
            "1 when LiveCheck's Kafka clients reach the brokers, 0 when they cannot.",
            u32::from(input.kafka_reachable),
        )?;
        counter(
            &mut e,
            "livecheck_kafka_connectivity_transitions",
            "Changes between Kafka reachable and unreachable so far.",
            state.runner.connectivity().transitions(),
        )?;
        gauge(
            &mut e,
            "livecheck_assigned_partitions",
            "Partitions of the tests topic this instance's runner holds.",
            input.assigned_partitions as u64,
        )?;
        gauges(
            &mut e,
            "livecheck_table_entries",
            "Entries of each table this instance's runner holds (of the partitions it owns; all of a global table).",
            state
                .tables()
                .into_iter()
                .map(|t| ([("table", t.name)], t.entries as u64)),
        )?;
        let (tests_held, signals_held) = state.runner.uncommitted();
        gauges(
            &mut e,
            "livecheck_uncommitted_records",
            "Records read and not committable yet, by topic: what a restart would read again.",
            [
                ([("topic", "tests")], tests_held as u64),
                ([("topic", "signals")], signals_held as u64),
            ],
        )?;
        gauge(
            &mut e,
            "livecheck_paused_signal_partitions",
            "Signals partitions paused until their tests partition catches up (flow control).",
            state.runner.paused_signal_partitions() as u64,
        )?;
        gauge(
            &mut e,
            "livecheck_ready",
            "1 when Kafka is reachable and partitions are held (as /readyz).",
            u32::from(input.ready),
        )?;
        gauge(
            &mut e,
            "livecheck_blind",
            "1 while every case shows DOWN because LiveCheck cannot see its inputs.",
            u32::from(input.blind.is_some()),
        )?;
        gauge(
            &mut e,
            "livecheck_alert_voice",
            "1 on the instance that decides suite health for the group and sends the alerts.",
            u32::from(input.voice),
        )?;
        gauge(
            &mut e,
            "livecheck_start_time_seconds",
            "When live mode started, seconds since the Unix epoch.",
            state.started_at.timestamp_millis() as f64 / 1000.0,
        )
    }
}

/// A doc comment as a help text: one line, without Markdown backticks, escaped as
/// OpenMetrics wants (backslash, double quote).
fn help_text(doc: &str) -> String {
    doc.replace('`', "")
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};
    use openmetrics_parser::{MetricFamily, MetricsExposition, OpenMetricsType, OpenMetricsValue};

    use super::*;
    use crate::live::fixtures::{report, state_with};
    use crate::live::health::{Transition, SUITE_STATE};

    type Scrape = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

    /// Per user, as a case keeps it.
    static EXPOSURE: livecheck_core::Table<String, u64> =
        livecheck_core::Table::new("sell_exposure");
    /// Reference data.
    static LIMITS: livecheck_core::Table<String, u64> = livecheck_core::Table::global("limits");
    const RULE: &str = "open sell exposure <= limit";

    /// A state for `case`, which declares the two tables above.
    fn state_with_tables(case: &str) -> Arc<LiveState> {
        use livecheck_core::{Case, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig, Suite};

        let client = LiveCheck::new(
            KafkaConfig::new("127.0.0.1:1"),
            livecheck_core::Topics::default(),
        )
        .expect("client");
        let case = Case::new(case)
            .table(&EXPOSURE)
            .table(&LIMITS)
            .expect(|_: Run, (): ()| async { Ok(()) });
        let runner = Runner::new(
            Suite::new([case]).expect("suite"),
            client.clone(),
            RunnerConfig::default(),
        );
        Arc::new(LiveState::new(runner, client))
    }

    /// A FAIL of `case` that broke `rule` for `key`.
    fn broken(case: &str, id: &str, rule: &str, key: &str) -> Report {
        let invariant = livecheck_core::Invariant {
            rule: rule.to_owned(),
            key: key.to_owned(),
            values: [
                ("open".to_owned(), 120.into()),
                ("limit".to_owned(), 100.into()),
            ]
            .into_iter()
            .collect(),
        };
        let mut r = report(case, id, Verdict::Fail, &[]);
        r.error = Some(invariant.to_string());
        r.invariant = Some(invariant);
        r
    }

    /// The exposition as a real OpenMetrics parser reads it (it refuses a malformed one:
    /// a sample outside its family, a family twice, a bad escape, no `# EOF`).
    fn scrape(state: &Arc<LiveState>) -> Scrape {
        let text = render_metrics(state);
        assert!(text.ends_with("# EOF\n"), "{text}");
        openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("not OpenMetrics: {e:?}\n{text}"))
    }

    fn family<'a>(
        exposition: &'a Scrape,
        name: &str,
    ) -> &'a MetricFamily<OpenMetricsType, OpenMetricsValue> {
        exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The value of the series of `name` with exactly `labels`.
    fn value(exposition: &Scrape, name: &str, labels: &[(&str, &str)]) -> OpenMetricsValue {
        let f = family(exposition, name);
        let names = f.get_label_names();
        assert_eq!(names.len(), labels.len(), "labels of {name}: {names:?}");
        let values: Vec<String> = names
            .iter()
            .map(|n| {
                labels
                    .iter()
                    .find(|(k, _)| k == n)
                    .unwrap_or_else(|| panic!("{name} has label {n}"))
                    .1
                    .to_owned()
            })
            .collect();
        f.get_sample_by_label_values(&values)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
            .value
            .clone()
    }

    /// A counter's or gauge's value.
    fn number(exposition: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        match value(exposition, name, labels) {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => g.as_f64(),
            other => panic!("{name} is not a number: {other:?}"),
        }
    }

    /// A histogram's cumulative bucket counts by upper bound, its count and its sum.
    fn histogram(
        exposition: &Scrape,
        name: &str,
        labels: &[(&str, &str)],
    ) -> (Vec<(f64, f64)>, u64, f64) {
        match value(exposition, name, labels) {
            OpenMetricsValue::Histogram(h) => (
                h.buckets
                    .iter()
                    .map(|b| (b.upper_bound, b.count.as_f64()))
                    .collect(),
                h.count.unwrap_or_default(),
                h.sum.map_or(0.0, |s| s.as_f64()),
            ),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    #[test]
    fn label_values_are_escaped_and_read_back_as_the_originals() {
        let weird = "we\"ird\\case\nname";
        let state = state_with(&[weird, "plain"]);
        state.record(Arc::new(report(
            weird,
            "t1",
            Verdict::Fail,
            &[("a\"b", 3.0)],
        )));
        state.set_lag(vec![("topic\\with\"quote\n".to_owned(), 3, 42)]);
        let text = render_metrics(&state);
        assert!(
            text.contains(r#"livecheck_runs_total{case="we\"ird\\case\nname",verdict="FAIL"} 1"#),
            "{text}"
        );
        let m = scrape(&state);
        assert_eq!(
            number(
                &m,
                "livecheck_runs",
                &[("case", weird), ("verdict", "FAIL")]
            ),
            1.0
        );
        let (_, count, _) = histogram(
            &m,
            "livecheck_step_latency_seconds",
            &[("case", weird), ("signal", "a\"b")],
        );
        assert_eq!(count, 1);
        assert_eq!(
            number(
                &m,
                "livecheck_consumer_lag",
                &[("topic", "topic\\with\"quote\n"), ("partition", "3")]
            ),
            42.0
        );
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let state = state_with(&["orders.place_order"]);
        // Latencies of step "saved": 0.5 ms, 3 ms, 3 ms, 20 s; of step "shipped": 0.2 s.
        for (id, verdict, steps) in [
            (
                "t1",
                Verdict::Pass,
                &[("saved", 0.5), ("shipped", 200.0)][..],
            ),
            ("t2", Verdict::Pass, &[("saved", 3.0)][..]),
            ("t3", Verdict::Fail, &[("saved", 3.0)][..]),
            ("t4", Verdict::Timeout, &[("saved", 20_000.0)][..]),
        ] {
            state.record(Arc::new(report("orders.place_order", id, verdict, steps)));
        }
        let m = scrape(&state);
        let latency = |signal: &str| {
            histogram(
                &m,
                "livecheck_step_latency_seconds",
                &[("case", "orders.place_order"), ("signal", signal)],
            )
        };
        let (buckets, count, sum) = latency("saved");
        let expected = [
            (0.001, 1.0),
            (0.0025, 1.0),
            (0.005, 3.0),
            (0.01, 3.0),
            (0.025, 3.0),
            (0.05, 3.0),
            (0.1, 3.0),
            (0.25, 3.0),
            (0.5, 3.0),
            (1.0, 3.0),
            (2.5, 3.0),
            (10.0, 3.0),
            (f64::INFINITY, 4.0),
        ];
        assert_eq!(expected.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(buckets, expected);
        assert_eq!(count, 4);
        assert!((sum - 20.0065).abs() < 1e-9, "{sum}");
        let (buckets, count, _) = latency("shipped");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        assert_eq!(buckets[6], (0.1, 0.0));
        assert_eq!(buckets[7], (0.25, 1.0));
        assert_eq!(count, 1);

        // Runs by verdict (zeros included), suite state, gauges.
        let runs = |v: &str| {
            number(
                &m,
                "livecheck_runs",
                &[("case", "orders.place_order"), ("verdict", v)],
            )
        };
        assert_eq!(
            Verdict::ALL.map(|v| runs(v.as_str())),
            [2.0, 1.0, 0.0, 1.0, 0.0]
        );
        for (health, v) in [("OK", 1.0), ("FAIL", 0.0), ("STALL", 0.0), ("DOWN", 0.0)] {
            assert_eq!(
                number(
                    &m,
                    "livecheck_suite_state",
                    &[("case", "orders.place_order"), ("state", health)]
                ),
                v
            );
        }
        assert_eq!(number(&m, "livecheck_runs_in_flight", &[]), 0.0);
        assert_eq!(number(&m, "livecheck_runs_parked", &[]), 0.0);
        assert_eq!(number(&m, "livecheck_buffered_tests", &[]), 0.0);
        assert_eq!(
            number(
                &m,
                "livecheck_consecutive_failures",
                &[("case", "orders.place_order")]
            ),
            2.0
        );
    }

    #[test]
    fn no_series_twice_and_every_family_says_what_it_counts() {
        let state = state_with(&["orders.place_order"]);
        state.record(Arc::new(report(
            "orders.place_order",
            "t1",
            Verdict::Pass,
            &[],
        )));
        let m = scrape(&state);
        // The runner's verdict counters would repeat livecheck_runs_total.
        for name in m.families.keys() {
            assert!(!name.starts_with("livecheck_runner_verdict"), "{name}");
        }
        for f in m.families.values() {
            assert!(
                f.help.len() > 15 && !f.help.contains("counter ") && !f.help.contains('`'),
                "{}: {:?}",
                f.family_name,
                f.help
            );
        }
        assert_eq!(
            family(&m, "livecheck_runner_tests_received").help,
            "Test records received."
        );
        for (name, _) in state.runner.counters().snapshot() {
            let exported = m.families.get(&format!("livecheck_runner_{name}"));
            if duplicated_runner_counter(name) {
                assert!(exported.is_none(), "{name} is counted by another series");
                continue;
            }
            let f = exported.unwrap_or_else(|| panic!("no family for the runner's {name}"));
            assert_eq!(f.family_type, OpenMetricsType::Counter, "{name}");
            // The counter's doc comment is its help text.
            let doc = RunnerCounters::help(name).unwrap_or_default();
            assert_eq!(f.help, doc.replace('`', ""), "{name}");
        }
        // The tables' counters among them.
        assert_eq!(
            family(&m, "livecheck_runner_table_writes").help,
            "Table writes applied by runs (each one a changelog record)."
        );
        assert_eq!(
            family(&m, "livecheck_runner_table_records_malformed").help,
            "Changelog records that did not decode (skipped, logged with topic, partition and offset)."
        );
        assert!(family(&m, "livecheck_runner_table_writes_lost")
            .help
            .contains("report_retry_for"));
        for (name, _) in state.client.counters().snapshot() {
            let f = family(&m, &format!("livecheck_client_{name}"));
            let kind = if ClientCounters::GAUGES.contains(&name) {
                OpenMetricsType::Gauge
            } else {
                OpenMetricsType::Counter
            };
            assert_eq!(f.family_type, kind, "{name}");
        }
        // Build info.
        let build = family(&m, "livecheck_build");
        assert_eq!(build.family_type, OpenMetricsType::Info);
        assert!(render_metrics(&state).contains(&format!(
            "livecheck_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn invariant_failures_are_counted_per_case_and_rule_and_table_entries_per_table() {
        let state = state_with_tables("orders.exposure");
        for (id, rule, key) in [
            ("t1", RULE, "u1"),
            ("t2", RULE, "u2"),
            ("t3", "at most 5 orders per minute", "u1"),
        ] {
            state.record(Arc::new(broken("orders.exposure", id, rule, key)));
        }
        state.record(Arc::new(report(
            "orders.exposure",
            "t4",
            Verdict::Fail,
            &[],
        )));
        let m = scrape(&state);
        let f = family(&m, "livecheck_invariant_failures");
        assert_eq!(f.family_type, OpenMetricsType::Counter);
        assert!(f.help.contains("business invariant"), "{}", f.help);
        let n = |rule| {
            number(
                &m,
                "livecheck_invariant_failures",
                &[("case", "orders.exposure"), ("rule", rule)],
            )
        };
        assert_eq!(n(RULE), 2.0);
        assert_eq!(n("at most 5 orders per minute"), 1.0);
        // Every one of them is a FAIL too.
        assert_eq!(
            number(
                &m,
                "livecheck_runs",
                &[("case", "orders.exposure"), ("verdict", "FAIL")]
            ),
            4.0
        );
        // The runner holds no entry yet (it has not run): one series per table.
        let f = family(&m, "livecheck_table_entries");
        assert_eq!(f.family_type, OpenMetricsType::Gauge);
        for table in ["sell_exposure", "limits"] {
            assert_eq!(
                number(&m, "livecheck_table_entries", &[("table", table)]),
                0.0
            );
        }
        // A suite without invariant failures or tables has neither family.
        let plain = scrape(&state_with(&["a"]));
        assert!(!plain.families.contains_key("livecheck_invariant_failures"));
        assert!(!plain.families.contains_key("livecheck_table_entries"));
    }

    #[test]
    fn transitions_are_counted_per_case_and_state() {
        let state = state_with(&["a", "b"]);
        let t = |case: &str, to: Health| Transition {
            kind: SUITE_STATE,
            case: case.to_owned(),
            from: Health::Ok,
            to,
            reason: "why".to_owned(),
            at: Utc::now(),
            cases: Vec::new(),
            failing_run: None,
        };
        state.record_transition(&t("a", Health::Fail));
        state.record_transition(&t("a", Health::Ok));
        state.record_transition(&t("a", Health::Fail));
        state.record_transition(&t("b", Health::Stall));
        let m = scrape(&state);
        let n = |case, to| {
            number(
                &m,
                "livecheck_suite_transitions",
                &[("case", case), ("state", to)],
            )
        };
        assert_eq!(
            [n("a", "FAIL"), n("a", "OK"), n("b", "STALL")],
            [2.0, 1.0, 1.0]
        );
    }

    #[test]
    fn run_duration_is_from_issue_to_verdict_per_case_and_verdict() {
        let state = state_with(&["a"]);
        let mut r = report("a", "t1", Verdict::Pass, &[("saved", 1.0)]);
        r.finished_at = r.issued_at + TimeDelta::milliseconds(1_500);
        state.record(Arc::new(r));
        let mut r = report("a", "t2", Verdict::Timeout, &[]);
        r.finished_at = r.issued_at + TimeDelta::seconds(31);
        state.record(Arc::new(r));
        // A skipped run was not run; a skewed clock does not make a negative duration.
        state.record(Arc::new(report("a", "t3", Verdict::Skip, &[])));
        let mut r = report("a", "t4", Verdict::Pass, &[]);
        r.finished_at = r.issued_at - TimeDelta::seconds(2);
        state.record(Arc::new(r));
        let m = scrape(&state);
        let f = family(&m, "livecheck_run_duration_seconds");
        assert_eq!(f.family_type, OpenMetricsType::Histogram);
        let (buckets, count, sum) = histogram(
            &m,
            "livecheck_run_duration_seconds",
            &[("case", "a"), ("verdict", "PASS")],
        );
        assert_eq!((count, sum), (2, 1.5));
        assert_eq!(buckets[0], (0.005, 1.0), "the skewed one counts as 0 s");
        assert_eq!(buckets[7], (1.0, 1.0));
        assert_eq!(buckets[8], (2.5, 2.0));
        let (_, count, sum) = histogram(
            &m,
            "livecheck_run_duration_seconds",
            &[("case", "a"), ("verdict", "TIMEOUT")],
        );
        assert_eq!((count, sum), (1, 31.0));
        assert!(f
            .iter_samples()
            .all(|s| !format!("{:?}", s).contains("SKIP")));
    }

    #[test]
    fn openmetrics_only_for_a_scraper_that_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("application/openmetrics-text; q=0, text/plain"),
        ] {
            assert_eq!(
                Exposition::negotiate(accept),
                Exposition::Text,
                "{accept:?}"
            );
        }
        assert_eq!(
            Exposition::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            Exposition::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }

    /// The text format 0.0.4 carries the same series, read by a parser of that format,
    /// and `promtool check metrics` (Prometheus' own linter) accepts it (the test fails
    /// without promtool: Debian package `prometheus`).
    #[test]
    fn the_text_format_has_the_same_series_and_passes_promtool() {
        use openmetrics_parser::{PrometheusType, PrometheusValue};

        let state = state_with_tables("orders.place_order");
        state.record(Arc::new(report(
            "orders.place_order",
            "t1",
            Verdict::Fail,
            &[("saved", 3.0)],
        )));
        // A rule with characters a label value must escape.
        state.record(Arc::new(broken(
            "orders.place_order",
            "t2",
            r#"open "sell" exposure <= limit \ per user"#,
            "u1",
        )));
        state
            .metrics
            .alert_delivery("oncall", "pagerduty", DeliveryOutcome::Refused);
        let text = render(&state, Exposition::Text);
        assert!(!text.contains("# EOF"), "{text}");
        let m = openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("not the text format: {e:?}\n{text}"));
        let runs = m.families.get("livecheck_runs_total").expect("runs");
        assert_eq!(runs.family_type, PrometheusType::Counter);
        let fail = runs
            .get_sample_by_label_values(&["orders.place_order".to_owned(), "FAIL".to_owned()])
            .expect("FAIL series");
        // The plain FAIL and the broken invariant.
        match &fail.value {
            PrometheusValue::Counter(c) => assert_eq!(c.value.as_f64(), 2.0),
            other => panic!("{other:?}"),
        }
        let broken = m
            .families
            .get("livecheck_invariant_failures_total")
            .expect("invariant failures");
        assert_eq!(broken.family_type, PrometheusType::Counter);
        let rule = broken
            .get_sample_by_label_values(&[
                "orders.place_order".to_owned(),
                r#"open "sell" exposure <= limit \ per user"#.to_owned(),
            ])
            .expect("the rule's series, its label read back as the original");
        match &rule.value {
            PrometheusValue::Counter(c) => assert_eq!(c.value.as_f64(), 1.0),
            other => panic!("{other:?}"),
        }
        for family in [
            "livecheck_build_info",
            "livecheck_run_duration_seconds",
            "livecheck_step_latency_seconds",
            "livecheck_alert_deliveries_total",
            "livecheck_runner_tests_received_total",
            "livecheck_runner_table_reads_total",
            "livecheck_invariant_failures_total",
            "livecheck_table_entries",
            "livecheck_kafka_reachable",
        ] {
            assert!(m.families.contains_key(family), "{family} in\n{text}");
        }
        // The same families as the OpenMetrics exposition (whose counter families are
        // named without `_total`, its info family without `_info`).
        let open: std::collections::BTreeSet<String> = scrape(&state)
            .families
            .into_values()
            .map(|f| match f.family_type {
                OpenMetricsType::Counter => format!("{}_total", f.family_name),
                OpenMetricsType::Info => format!("{}_info", f.family_name),
                _ => f.family_name,
            })
            .collect();
        let plain: std::collections::BTreeSet<String> = m.families.into_keys().collect();
        assert_eq!(open, plain);

        let promtool = std::process::Command::new("promtool")
            .arg("check")
            .arg("metrics")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut promtool = promtool.unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (ci/test.sh does) to lint /metrics"
            )
        });
        use std::io::Write as _;
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = promtool.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn alert_deliveries_are_counted_by_webhook_format_and_outcome() {
        let state = state_with(&["a"]);
        state
            .metrics
            .alert_delivery("oncall", "pagerduty", DeliveryOutcome::Delivered);
        state
            .metrics
            .alert_delivery("oncall", "pagerduty", DeliveryOutcome::Delivered);
        state
            .metrics
            .alert_delivery("chat", "slack", DeliveryOutcome::Unreachable);
        state.metrics.alert_dropped();
        let m = scrape(&state);
        let n = |webhook, format, outcome| {
            number(
                &m,
                "livecheck_alert_deliveries",
                &[
                    ("webhook", webhook),
                    ("format", format),
                    ("outcome", outcome),
                ],
            )
        };
        assert_eq!(n("oncall", "pagerduty", "delivered"), 2.0);
        assert_eq!(n("chat", "slack", "unreachable"), 1.0);
        assert_eq!(number(&m, "livecheck_alerts_dropped", &[]), 1.0);
    }
}
