//! Alerts: a suite-state [`Transition`] as each receiver wants it, and its delivery.
//!
//! Each webhook has a [`AlertFormat`]:
//!
//! | format | receiver | opens | closes |
//! |---|---|---|---|
//! | `json` | anything that reads JSON: the transition with `status`, `dedup_key`, links | `status: "firing"` | `status: "resolved"` |
//! | `alertmanager` | Alertmanager's webhook payload (version 4), for receivers written against it | `status: "firing"` | `status: "resolved"`, `endsAt` set |
//! | `slack` | a Slack incoming webhook (`text` and Block Kit `blocks`) | a message | a message |
//! | `pagerduty` | PagerDuty Events API v2 | `event_action: "trigger"` | `event_action: "resolve"` |
//!
//! Every payload names the case, the state, the reason, the failing run (for `FAIL`), the
//! LiveCheck group, profile and instance, and links to the run and the status page. The
//! dedup key is stable per group and case (`livecheck/{group}/{case}`), so a case's
//! recovery closes the incident its failure opened.
//!
//! Delivery: one queue and task per webhook (a slow receiver delays no other), four
//! attempts with backoff on network errors, 5xx and 429. Every outcome is counted
//! (`livecheck_alert_deliveries_total`); logs name the webhook and show its URL's scheme and
//! host only, never its path (a Slack token) or a PagerDuty routing key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use livecheck_core::signing::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::health::{Transition, LIVECHECK_BLIND};
use super::metrics::{DeliveryOutcome, Metrics};
use super::state::{Health, LiveState};

/// Where PagerDuty Events API v2 takes events (the default URL of a `pagerduty` webhook).
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty's limit on `payload.summary`, characters.
pub const PAGERDUTY_SUMMARY_MAX: usize = 1024;
/// Slack's limit on a section block's text, characters.
pub const SLACK_SECTION_MAX: usize = 3000;
/// Slack's limit on a header block's text, characters.
pub const SLACK_HEADER_MAX: usize = 150;
/// `alertname` of a case's alert (Alertmanager format).
pub const ALERTNAME_SUITE: &str = "LiveCheckSuiteState";
/// `alertname` of LiveCheck's own outage (Alertmanager format).
pub const ALERTNAME_BLIND: &str = "LiveCheckBlind";
/// Attempts per alert and webhook.
const ATTEMPTS: u32 = 4;
/// Alerts waiting per webhook before new ones are dropped (and counted).
const QUEUE: usize = 256;

/// What a webhook's receiver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// The transition as JSON, with `status`, `dedup_key` and links.
    #[default]
    Json,
    /// Alertmanager's webhook payload, version 4.
    Alertmanager,
    /// A Slack incoming webhook: `text` and Block Kit `blocks`.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
}

impl AlertFormat {
    /// `json`, `alertmanager`, `slack`, `pagerduty`: as in the settings and the `format`
    /// label of the deliveries counter.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertFormat::Json => "json",
            AlertFormat::Alertmanager => "alertmanager",
            AlertFormat::Slack => "slack",
            AlertFormat::Pagerduty => "pagerduty",
        }
    }
}

impl std::fmt::Display for AlertFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A receiver of alerts. `Debug` shows the URL's scheme and host only and never the
/// routing key.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    /// Its name in logs and metrics (`oncall`, `chat`).
    pub name: String,
    /// Where payloads are POSTed (its path may be a secret: a Slack token).
    pub url: String,
    /// The payload format.
    pub format: AlertFormat,
    /// PagerDuty's integration key (`pagerduty` only).
    pub routing_key: Option<SecretString>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &livecheck_core::redact::url(&self.url))
            .field("format", &self.format)
            .field("routing_key", &self.routing_key)
            .finish()
    }
}

/// Who sends the alerts and where the status page is: what every payload names and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSource {
    /// The runners' consumer group: one voice per group, one incident per group and case.
    pub group: String,
    /// The settings profile (`production`, `local`).
    pub profile: String,
    /// This instance (`host:pid`).
    pub instance: String,
    /// Base URL of the status page (no trailing slash).
    pub public_url: String,
}

/// One transition as an alert, whatever the format.
#[derive(Debug, Clone, Copy)]
pub struct Alert<'a> {
    /// The transition.
    pub transition: &'a Transition,
    /// Who sends.
    pub source: &'a AlertSource,
    /// When the incident this alert belongs to opened (a resolve's start; a trigger's own
    /// time otherwise).
    pub since: DateTime<Utc>,
}

impl Alert<'_> {
    /// Whether the alert opens (or updates) an incident; `false`: it resolves one.
    pub fn firing(&self) -> bool {
        self.transition.to != Health::Ok
    }

    /// `firing` or `resolved`.
    pub fn status(&self) -> &'static str {
        if self.firing() {
            "firing"
        } else {
            "resolved"
        }
    }

    fn blind(&self) -> bool {
        self.transition.kind == LIVECHECK_BLIND
    }

    /// Stable per group and case: a recovery closes what the failure opened.
    pub fn dedup_key(&self) -> String {
        dedup_key(&self.source.group, &self.transition.case)
    }

    /// The status page.
    pub fn page_url(&self) -> String {
        format!("{}/", self.source.public_url)
    }

    /// The failing run on the status page's API, when there is one.
    pub fn run_url(&self) -> Option<String> {
        self.transition
            .failing_run
            .as_deref()
            .map(|id| run_url(&self.source.public_url, id))
    }

    /// Where the alert points a person: the failing run, else the status page.
    pub fn link(&self) -> String {
        self.run_url().unwrap_or_else(|| self.page_url())
    }

    /// One line: what happened, where.
    pub fn summary(&self) -> String {
        let t = self.transition;
        let what = match (self.blind(), self.firing()) {
            (true, true) => format!("LiveCheck is blind, every case DOWN: {}", t.reason),
            (true, false) => format!("LiveCheck sees its inputs again: {}", t.reason),
            (false, true) => format!("{} is {}: {}", t.case, t.to, t.reason),
            (false, false) => format!("{} is OK again (was {}): {}", t.case, t.from, t.reason),
        };
        format!("[livecheck {}] {what}", self.source.profile)
    }

    /// PagerDuty's severity of the state entered.
    pub fn severity(&self) -> &'static str {
        match self.transition.to {
            Health::Fail => "critical",
            Health::Down => "error",
            Health::Stall => "warning",
            Health::Ok => "info",
        }
    }

    /// The labels that identify the alert (the same for its trigger and its resolve).
    fn identity(&self) -> serde_json::Map<String, Value> {
        let mut labels = serde_json::Map::new();
        let name = if self.blind() {
            ALERTNAME_BLIND
        } else {
            ALERTNAME_SUITE
        };
        labels.insert("alertname".into(), name.into());
        labels.insert("case".into(), self.transition.case.clone().into());
        labels.insert("livecheck_group".into(), self.source.group.clone().into());
        labels.insert("profile".into(), self.source.profile.clone().into());
        labels
    }

    /// Everything known, for a receiver's details view.
    fn details(&self) -> Value {
        let t = self.transition;
        let mut d = json!({
            "case": t.case,
            "state": t.to,
            "from": t.from,
            "reason": t.reason,
            "at": rfc3339(t.at),
            "group": self.source.group,
            "profile": self.source.profile,
            "instance": self.source.instance,
            "page_url": self.page_url(),
        });
        if let Some(id) = &t.failing_run {
            d["failing_run"] = id.clone().into();
        }
        if let Some(url) = self.run_url() {
            d["run_url"] = url.into();
        }
        if !t.cases.is_empty() {
            d["cases"] = t.cases.clone().into();
        }
        d
    }
}

/// `livecheck/{group}/{case}`.
pub fn dedup_key(group: &str, case: &str) -> String {
    format!("livecheck/{group}/{case}")
}

/// `{public_url}/api/runs/{id}`, the id escaped as one path segment.
pub fn run_url(public_url: &str, test_id: &str) -> String {
    let base = public_url.trim_end_matches('/');
    match reqwest::Url::parse(&format!("{base}/")) {
        Ok(mut url) => {
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty().extend(["api", "runs", test_id]);
            }
            url.to_string()
        }
        Err(_) => format!("{base}/api/runs/{test_id}"),
    }
}

/// The status page's base URL when `public_url` is not set: the bound address, or this
/// host's name when it binds every interface.
pub fn default_public_url(addr: std::net::SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return format!("http://{addr}");
    }
    let instance = livecheck_core::control::default_instance();
    let host = instance
        .rsplit_once(':')
        .map_or(instance.as_str(), |(h, _)| h);
    format!("http://{host}:{}", addr.port())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `text` cut to at most `max` characters (an ellipsis marks the cut).
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The payload of `alert` for `webhook`'s format.
pub fn payload(webhook: &Webhook, alert: &Alert<'_>) -> Value {
    match webhook.format {
        AlertFormat::Json => json_payload(alert),
        AlertFormat::Alertmanager => alertmanager_payload(&webhook.name, alert),
        AlertFormat::Slack => slack_payload(alert),
        AlertFormat::Pagerduty => pagerduty_payload(
            webhook.routing_key.as_ref().map_or("", |k| k.expose()),
            alert,
        ),
    }
}

/// The transition as published on the reports topic, with `status` (`firing`,
/// `resolved`), `dedup_key`, `summary`, the sender and the links.
pub fn json_payload(alert: &Alert<'_>) -> Value {
    let mut v = serde_json::to_value(alert.transition).unwrap_or_else(|_| json!({}));
    v["status"] = alert.status().into();
    v["dedup_key"] = alert.dedup_key().into();
    v["summary"] = alert.summary().into();
    v["group"] = alert.source.group.clone().into();
    v["profile"] = alert.source.profile.clone().into();
    v["instance"] = alert.source.instance.clone().into();
    v["page_url"] = alert.page_url().into();
    if let Some(url) = alert.run_url() {
        v["run_url"] = url.into();
    }
    v
}

/// Alertmanager's webhook payload (version 4) with one alert. Its labels identify the
/// alert and stay the same from trigger to resolve (`alertname`, `case`,
/// `livecheck_group`, `profile`); the state, reason, instance and run are annotations.
pub fn alertmanager_payload(receiver: &str, alert: &Alert<'_>) -> Value {
    let t = alert.transition;
    let labels = Value::Object(alert.identity());
    let mut annotations = json!({
        "summary": alert.summary(),
        "description": t.reason,
        "state": t.to,
        "from": t.from,
        "instance": alert.source.instance,
        "page_url": alert.page_url(),
    });
    if let Some(id) = &t.failing_run {
        annotations["failing_run"] = id.clone().into();
    }
    if let Some(url) = alert.run_url() {
        annotations["run_url"] = url.into();
    }
    let ends_at = if alert.firing() {
        // Alertmanager's "no end yet".
        "0001-01-01T00:00:00Z".to_owned()
    } else {
        rfc3339(t.at)
    };
    let fingerprint = fingerprint(&alert.dedup_key());
    let group_labels = json!({ "alertname": labels["alertname"], "case": t.case });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}, case={:?}}}", labels["alertname"].as_str().unwrap_or_default(), t.case),
        "truncatedAlerts": 0,
        "status": alert.status(),
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": alert.source.public_url,
        "alerts": [{
            "status": alert.status(),
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(if alert.firing() { t.at } else { alert.since }),
            "endsAt": ends_at,
            "generatorURL": alert.link(),
            "fingerprint": fingerprint,
        }],
    })
}

/// 16 hex digits from the dedup key, as Alertmanager's fingerprints look.
fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Slack's mrkdwn escapes: `&`, `<`, `>`.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack message: `text` (the notification and fallback) and Block Kit `blocks` (a
/// header, a section with the reason and the facts, a context line, link buttons).
pub fn slack_payload(alert: &Alert<'_>) -> Value {
    let t = alert.transition;
    let icon = match (alert.firing(), t.to) {
        (false, _) => ":white_check_mark:",
        (true, Health::Fail) | (true, Health::Down) => ":rotating_light:",
        (true, _) => ":warning:",
    };
    let header = if alert.firing() {
        format!("{} {}", t.case, t.to)
    } else {
        format!("{} OK again", t.case)
    };
    let mut facts = vec![
        format!("*State*\n{} → {}", t.from, t.to),
        format!("*Profile*\n{}", slack_escape(&alert.source.profile)),
        format!("*Instance*\n{}", slack_escape(&alert.source.instance)),
        format!("*Group*\n{}", slack_escape(&alert.source.group)),
    ];
    if let Some(id) = &t.failing_run {
        facts.push(format!("*Failing run*\n`{}`", slack_escape(id)));
    }
    let fields: Vec<Value> = facts
        .into_iter()
        .map(|text| json!({"type": "mrkdwn", "text": truncate(&text, 2000)}))
        .collect();
    let mut buttons = Vec::new();
    if let Some(url) = alert.run_url() {
        buttons.push(json!({
            "type": "button",
            "text": {"type": "plain_text", "text": "Open the failing run"},
            "url": url,
        }));
    }
    buttons.push(json!({
        "type": "button",
        "text": {"type": "plain_text", "text": "Status page"},
        "url": alert.page_url(),
    }));
    let reason = format!("{icon} *{}*", slack_escape(&t.reason));
    json!({
        "text": truncate(&alert.summary(), SLACK_SECTION_MAX),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": truncate(&header, SLACK_HEADER_MAX), "emoji": true},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(&reason, SLACK_SECTION_MAX)},
                "fields": fields,
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": truncate(&format!("{} · dedup key `{}`", rfc3339(t.at), slack_escape(&alert.dedup_key())), SLACK_SECTION_MAX)}],
            },
            {"type": "actions", "elements": buttons},
        ],
    })
}

/// A PagerDuty Events API v2 event: `trigger` with the payload and links, or `resolve`
/// with the dedup key only (all PagerDuty reads of a resolve).
pub fn pagerduty_payload(routing_key: &str, alert: &Alert<'_>) -> Value {
    let t = alert.transition;
    if !alert.firing() {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert.dedup_key(),
        });
    }
    let mut links = Vec::new();
    if let Some(url) = alert.run_url() {
        links.push(json!({"href": url, "text": "The failing run"}));
    }
    links.push(json!({"href": alert.page_url(), "text": "LiveCheck status page"}));
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.dedup_key(),
        "client": "LiveCheck",
        "client_url": alert.page_url(),
        "payload": {
            "summary": truncate(&alert.summary(), PAGERDUTY_SUMMARY_MAX),
            "source": format!("livecheck/{}", alert.source.group),
            "severity": alert.severity(),
            "timestamp": rfc3339(t.at),
            "component": t.case,
            "group": alert.source.profile,
            "class": t.to,
            "custom_details": alert.details(),
        },
        "links": links,
    })
}

/// Sends transitions to the reports topic and to every webhook, never blocking the runner.
/// Returns when the queue closes (the webhooks' queues are drained first).
pub async fn deliver_alerts(
    mut rx: mpsc::Receiver<Transition>,
    state: Arc<LiveState>,
    webhooks: Vec<Webhook>,
    source: AlertSource,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let source = Arc::new(source);
    let mut queues = Vec::new();
    let mut tasks = Vec::new();
    for webhook in webhooks {
        let (tx, rx) = mpsc::channel(QUEUE);
        info!(webhook = %webhook.name, format = %webhook.format, url = %livecheck_core::redact::url(&webhook.url), "alerts go to this webhook");
        tasks.push(tokio::spawn(webhook_task(
            rx,
            webhook.clone(),
            http.clone(),
            state.metrics.clone(),
        )));
        queues.push((webhook, tx));
    }
    // When each open incident started: a resolve says how long it lasted.
    let mut open: HashMap<String, DateTime<Utc>> = HashMap::new();
    while let Some(t) = rx.recv().await {
        let client = &state.client;
        if let Err(err) = client.publish_json(&client.topics().reports, &t.case, &t) {
            warn!(case = %t.case, "suite-state record {err}");
        }
        let key = dedup_key(&source.group, &t.case);
        let since = if t.to == Health::Ok {
            open.remove(&key).unwrap_or(t.at)
        } else {
            *open.entry(key).or_insert(t.at)
        };
        let t = Arc::new(t);
        for (webhook, tx) in &queues {
            if tx.try_send((t.clone(), source.clone(), since)).is_err() {
                state.metrics.alert_dropped();
                warn!(webhook = %webhook.name, case = %t.case, to = %t.to, "alert dropped: the webhook's queue is full (its receiver is slow or down)");
            }
        }
    }
    drop(queues);
    for task in tasks {
        let _ = task.await;
    }
}

type Queued = (Arc<Transition>, Arc<AlertSource>, DateTime<Utc>);

async fn webhook_task(
    mut rx: mpsc::Receiver<Queued>,
    webhook: Webhook,
    http: reqwest::Client,
    metrics: Metrics,
) {
    while let Some((t, source, since)) = rx.recv().await {
        let alert = Alert {
            transition: &t,
            source: &source,
            since,
        };
        let body = payload(&webhook, &alert);
        let outcome = deliver(&http, &webhook, &body, &t).await;
        metrics.alert_delivery(&webhook.name, webhook.format.as_str(), outcome);
    }
}

/// POSTs `body` to the webhook, retrying network errors, 5xx and 429 with backoff.
pub async fn deliver(
    http: &reqwest::Client,
    webhook: &Webhook,
    body: &Value,
    t: &Transition,
) -> DeliveryOutcome {
    // The URL's path may be a token (Slack): logs show scheme and host only, and the
    // body (a PagerDuty routing key) is never logged.
    let shown = livecheck_core::redact::url(&webhook.url);
    let mut delay = Duration::from_millis(250);
    let mut outcome = DeliveryOutcome::Unreachable;
    for attempt in 1..=ATTEMPTS {
        let retry = match http.post(&webhook.url).json(body).send().await {
            Ok(r) if r.status().is_success() => return DeliveryOutcome::Delivered,
            Ok(r) => {
                let status = r.status();
                outcome = DeliveryOutcome::Refused;
                warn!(webhook = %webhook.name, format = %webhook.format, url = %shown, %status, attempt, case = %t.case, "alert webhook refused the alert");
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            Err(e) => {
                outcome = DeliveryOutcome::Unreachable;
                warn!(webhook = %webhook.name, format = %webhook.format, url = %shown, error = %error_chain(e), attempt, case = %t.case, "alert webhook unreachable");
                true
            }
        };
        if !retry || attempt == ATTEMPTS {
            break;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    warn!(webhook = %webhook.name, url = %shown, case = %t.case, to = %t.to, outcome = outcome.as_str(), "alert not delivered");
    outcome
}

/// An HTTP client error and its causes, without the URL.
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use livecheck_core::{Case, KafkaConfig, LiveCheck, Run, Runner, RunnerConfig, Suite, Topics};

    use super::*;
    use crate::live::health::{EVERY_CASE, SUITE_STATE};

    const CASE: &str = "orders.place_order";
    const RUN: &str = "6f1c2d3e-0000-4000-8000-000000000001";

    fn source() -> AlertSource {
        AlertSource {
            group: "livecheck-production".into(),
            profile: "production".into(),
            instance: "host-1:42".into(),
            public_url: "https://livecheck.example.com".into(),
        }
    }

    fn transition(from: Health, to: Health, reason: &str) -> Transition {
        Transition {
            kind: SUITE_STATE,
            case: CASE.into(),
            from,
            to,
            reason: reason.into(),
            at: Utc::now(),
            cases: Vec::new(),
            failing_run: (to == Health::Fail).then(|| RUN.to_owned()),
        }
    }

    fn fail() -> Transition {
        transition(Health::Ok, Health::Fail, "3 runs in a row did not pass")
    }

    fn ok() -> Transition {
        transition(Health::Fail, Health::Ok, "runs pass")
    }

    fn alert<'a>(t: &'a Transition, source: &'a AlertSource) -> Alert<'a> {
        Alert {
            transition: t,
            source,
            since: t.at - chrono::Duration::minutes(5),
        }
    }

    fn webhook(name: &str, url: &str, format: AlertFormat) -> Webhook {
        Webhook {
            name: name.into(),
            url: url.into(),
            format,
            routing_key: (format == AlertFormat::Pagerduty)
                .then(|| SecretString::new("R0UTING-KEY-SENTINEL")),
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    fn is_rfc3339(v: &Value) -> bool {
        v.as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok())
    }

    /// PagerDuty Events API v2: a trigger carries `routing_key`, `event_action`,
    /// `dedup_key` and a `payload` with `summary` (≤ 1024), `source`, `severity` (critical,
    /// error, warning, info), `timestamp`; `links` are `{href, text}`; a resolve needs the
    /// routing key, the action and the dedup key.
    #[test]
    fn pagerduty_events_have_the_events_v2_shape_and_a_resolve_closes_the_trigger() {
        let s = source();
        let mut t = fail();
        t.reason = "x".repeat(5000);
        let v = pagerduty_payload("R0UTING-KEY", &alert(&t, &s));
        assert_eq!(
            keys(&v),
            [
                "client",
                "client_url",
                "dedup_key",
                "event_action",
                "links",
                "payload",
                "routing_key"
            ]
        );
        assert_eq!(v["routing_key"], "R0UTING-KEY");
        assert_eq!(v["event_action"], "trigger");
        assert_eq!(
            v["dedup_key"],
            "livecheck/livecheck-production/orders.place_order"
        );
        let p = &v["payload"];
        let summary = p["summary"].as_str().expect("summary");
        assert!(
            summary.chars().count() <= PAGERDUTY_SUMMARY_MAX,
            "{}",
            summary.len()
        );
        assert!(summary.starts_with("[livecheck production] orders.place_order is FAIL: xxx"));
        assert!(!p["source"].as_str().expect("source").is_empty());
        assert_eq!(p["severity"], "critical");
        assert!(is_rfc3339(&p["timestamp"]), "{}", p["timestamp"]);
        assert_eq!(p["component"], CASE);
        let d = &p["custom_details"];
        assert_eq!(
            (&d["case"], &d["state"], &d["from"], &d["failing_run"]),
            (&json!(CASE), &json!("FAIL"), &json!("OK"), &json!(RUN))
        );
        assert_eq!(
            (&d["instance"], &d["profile"]),
            (&json!("host-1:42"), &json!("production"))
        );
        let links = v["links"].as_array().expect("links");
        for link in links {
            assert_eq!(keys(link), ["href", "text"]);
        }
        assert_eq!(
            links[0]["href"],
            format!("https://livecheck.example.com/api/runs/{RUN}")
        );
        assert_eq!(links[1]["href"], "https://livecheck.example.com/");

        let severities = [(Health::Down, "error"), (Health::Stall, "warning")];
        for (to, severity) in severities {
            let t = transition(Health::Ok, to, "why");
            let v = pagerduty_payload("k", &alert(&t, &s));
            assert_eq!(v["payload"]["severity"], severity);
            assert_eq!(
                v["links"].as_array().map(Vec::len),
                Some(1),
                "no run to link"
            );
        }

        let t = ok();
        let r = pagerduty_payload("R0UTING-KEY", &alert(&t, &s));
        assert_eq!(
            r,
            json!({
                "routing_key": "R0UTING-KEY",
                "event_action": "resolve",
                "dedup_key": v["dedup_key"],
            })
        );
    }

    /// A Slack incoming webhook takes `text` (the notification, and the fallback) and
    /// `blocks` of Block Kit types; a section's text is at most 3000 characters, a
    /// header's 150 (plain text), a field's 2000, at most 10 fields; buttons have
    /// plain-text labels of at most 75 characters and URLs.
    #[test]
    fn slack_messages_have_text_and_valid_blocks_within_the_limits() {
        let s = source();
        let check = |v: &Value| {
            assert_eq!(keys(v), ["blocks", "text"]);
            assert!(!v["text"].as_str().expect("text").is_empty());
            let blocks = v["blocks"].as_array().expect("blocks");
            assert!(!blocks.is_empty() && blocks.len() <= 50);
            for b in blocks {
                let kind = b["type"].as_str().expect("type");
                match kind {
                    "header" => {
                        assert_eq!(b["text"]["type"], "plain_text");
                        let text = b["text"]["text"].as_str().expect("header text");
                        assert!(text.chars().count() <= SLACK_HEADER_MAX);
                    }
                    "section" => {
                        assert_eq!(b["text"]["type"], "mrkdwn");
                        let text = b["text"]["text"].as_str().expect("section text");
                        assert!(text.chars().count() <= SLACK_SECTION_MAX, "{}", text.len());
                        let fields = b["fields"].as_array().expect("fields");
                        assert!(fields.len() <= 10);
                        for f in fields {
                            assert_eq!(f["type"], "mrkdwn");
                            assert!(f["text"].as_str().expect("field").chars().count() <= 2000);
                        }
                    }
                    "context" => {
                        let elements = b["elements"].as_array().expect("elements");
                        assert!(!elements.is_empty() && elements.len() <= 10);
                    }
                    "actions" => {
                        let elements = b["elements"].as_array().expect("elements");
                        assert!(!elements.is_empty() && elements.len() <= 25);
                        for e in elements {
                            assert_eq!(e["type"], "button");
                            assert_eq!(e["text"]["type"], "plain_text");
                            let label = e["text"]["text"].as_str().expect("label");
                            assert!(label.chars().count() <= 75);
                            let url = e["url"].as_str().expect("url");
                            assert!(url.starts_with("https://") && url.len() <= 3000);
                        }
                    }
                    other => panic!("not a Block Kit block for messages: {other}"),
                }
            }
        };
        let mut t = fail();
        t.reason = format!("<script> & {}", "y".repeat(4000));
        let v = slack_payload(&alert(&t, &s));
        check(&v);
        let text = serde_json::to_string(&v).expect("json");
        assert!(text.contains("&lt;script&gt; &amp; yyy"), "mrkdwn escaped");
        assert!(text.contains(RUN) && text.contains("host-1:42") && text.contains("production"));
        assert_eq!(v["blocks"][0]["text"]["text"], "orders.place_order FAIL");
        assert_eq!(
            v["blocks"][3]["elements"][0]["url"],
            format!("https://livecheck.example.com/api/runs/{RUN}")
        );

        let t = ok();
        let v = slack_payload(&alert(&t, &s));
        check(&v);
        assert_eq!(
            v["blocks"][0]["text"]["text"],
            "orders.place_order OK again"
        );
        assert!(v["text"]
            .as_str()
            .expect("text")
            .contains("orders.place_order is OK again (was FAIL): runs pass"));
        assert_eq!(
            v["blocks"][3]["elements"].as_array().map(Vec::len),
            Some(1),
            "no failing run to open"
        );
    }

    /// Alertmanager's webhook payload, version 4: `version`, `groupKey`,
    /// `truncatedAlerts`, `status` (firing, resolved), `receiver`, `groupLabels`,
    /// `commonLabels`, `commonAnnotations`, `externalURL`, `alerts` with `status`,
    /// `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`, `fingerprint`.
    #[test]
    fn alertmanager_payloads_have_the_webhook_v4_shape_and_the_resolve_matches_the_alert() {
        let s = source();
        let t = fail();
        let v = alertmanager_payload("oncall", &alert(&t, &s));
        assert_eq!(
            keys(&v),
            [
                "alerts",
                "commonAnnotations",
                "commonLabels",
                "externalURL",
                "groupKey",
                "groupLabels",
                "receiver",
                "status",
                "truncatedAlerts",
                "version"
            ]
        );
        assert_eq!(
            (&v["version"], &v["status"], &v["receiver"]),
            (&json!("4"), &json!("firing"), &json!("oncall"))
        );
        assert!(v["groupKey"].as_str().is_some_and(|k| !k.is_empty()));
        assert_eq!(v["externalURL"], "https://livecheck.example.com");
        let a = &v["alerts"][0];
        assert_eq!(
            keys(a),
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
        assert_eq!(a["status"], "firing");
        assert_eq!(
            a["labels"],
            json!({
                "alertname": ALERTNAME_SUITE,
                "case": CASE,
                "livecheck_group": "livecheck-production",
                "profile": "production",
            })
        );
        assert_eq!(v["commonLabels"], a["labels"]);
        let n = &a["annotations"];
        assert_eq!(
            (
                &n["state"],
                &n["description"],
                &n["failing_run"],
                &n["instance"]
            ),
            (
                &json!("FAIL"),
                &json!("3 runs in a row did not pass"),
                &json!(RUN),
                &json!("host-1:42")
            )
        );
        assert!(is_rfc3339(&a["startsAt"]));
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            a["generatorURL"],
            format!("https://livecheck.example.com/api/runs/{RUN}")
        );
        let fp = a["fingerprint"].as_str().expect("fingerprint");
        assert!(
            fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()),
            "{fp}"
        );

        let t = ok();
        let resolved = alert(&t, &s);
        let r = alertmanager_payload("oncall", &resolved);
        let ra = &r["alerts"][0];
        assert_eq!(
            (&r["status"], &ra["status"]),
            (&json!("resolved"), &json!("resolved"))
        );
        assert_eq!(ra["labels"], a["labels"], "the same alert");
        assert_eq!(ra["fingerprint"], a["fingerprint"]);
        assert_eq!(r["groupKey"], v["groupKey"]);
        assert_eq!(ra["startsAt"], rfc3339(resolved.since));
        assert_eq!(ra["endsAt"], rfc3339(t.at));
        assert_eq!(ra["generatorURL"], "https://livecheck.example.com/");

        // LiveCheck's own outage is another alert.
        let mut blind = transition(Health::Ok, Health::Down, "livecheck cannot reach Kafka");
        blind.kind = LIVECHECK_BLIND;
        blind.case = EVERY_CASE.into();
        let b = alertmanager_payload("oncall", &alert(&blind, &s));
        assert_eq!(b["alerts"][0]["labels"]["alertname"], ALERTNAME_BLIND);
        assert_ne!(b["alerts"][0]["fingerprint"], a["fingerprint"]);
    }

    #[test]
    fn the_json_payload_is_the_transition_with_status_dedup_key_and_links() {
        let s = source();
        let t = fail();
        let v = json_payload(&alert(&t, &s));
        for (key, value) in [
            ("kind", json!("suite_state")),
            ("case", json!(CASE)),
            ("from", json!("OK")),
            ("to", json!("FAIL")),
            ("reason", json!("3 runs in a row did not pass")),
            ("failing_run", json!(RUN)),
            ("status", json!("firing")),
            (
                "dedup_key",
                json!("livecheck/livecheck-production/orders.place_order"),
            ),
            ("profile", json!("production")),
            ("group", json!("livecheck-production")),
            ("instance", json!("host-1:42")),
            ("page_url", json!("https://livecheck.example.com/")),
            (
                "run_url",
                json!(format!("https://livecheck.example.com/api/runs/{RUN}")),
            ),
        ] {
            assert_eq!(v[key], value, "{key}");
        }
        assert!(is_rfc3339(&v["at"]));
        let t = ok();
        let r = json_payload(&alert(&t, &s));
        assert_eq!(
            (&r["status"], &r["dedup_key"]),
            (&json!("resolved"), &v["dedup_key"])
        );
        assert!(r.get("failing_run").is_none() && r.get("run_url").is_none());
    }

    #[test]
    fn run_links_escape_the_test_id_and_keep_the_base_path() {
        assert_eq!(
            run_url("http://127.0.0.1:8099", "a/b c?d"),
            "http://127.0.0.1:8099/api/runs/a%2Fb%20c%3Fd"
        );
        assert_eq!(
            run_url("https://ops.example.com/livecheck/", "t-1"),
            "https://ops.example.com/livecheck/api/runs/t-1"
        );
        assert_eq!(
            default_public_url("127.0.0.1:8099".parse().expect("addr")),
            "http://127.0.0.1:8099"
        );
        assert!(default_public_url("0.0.0.0:8099".parse().expect("addr")).ends_with(":8099"));
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    fn live_state() -> Arc<LiveState> {
        let client =
            LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
        let case = Case::new(CASE).expect(|_: Run, (): ()| async { Ok(()) });
        let runner = Runner::new(
            Suite::new([case]).expect("suite"),
            client.clone(),
            RunnerConfig::default(),
        );
        Arc::new(LiveState::new(runner, client))
    }

    type Received = Arc<Mutex<Vec<(String, Value)>>>;

    /// A receiver on 127.0.0.1: records what each path gets; `/status/{code}/...` answers
    /// with that status.
    async fn receiver() -> (String, Received) {
        async fn record(
            State(got): State<Received>,
            Path(path): Path<String>,
            Json(body): Json<Value>,
        ) -> StatusCode {
            got.lock().expect("lock").push((path.clone(), body));
            match path.strip_prefix("status/") {
                Some(rest) => rest
                    .split('/')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::OK),
                None => StatusCode::OK,
            }
        }
        let got = Received::default();
        let app = Router::new()
            .route("/{*path}", post(record))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), got)
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn every_format_reaches_a_real_receiver_and_each_delivery_is_counted() {
        let (base, got) = receiver().await;
        let webhooks = vec![
            webhook("generic", &format!("{base}/json"), AlertFormat::Json),
            webhook("am", &format!("{base}/am"), AlertFormat::Alertmanager),
            webhook(
                "chat",
                &format!("{base}/services/T0/B0/X"),
                AlertFormat::Slack,
            ),
            webhook(
                "oncall",
                &format!("{base}/v2/enqueue"),
                AlertFormat::Pagerduty,
            ),
        ];
        let state = live_state();
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(deliver_alerts(rx, state.clone(), webhooks, source()));
        tx.send(fail()).await.expect("send");
        tx.send(ok()).await.expect("send");
        eventually("8 deliveries", || got.lock().expect("lock").len() == 8).await;
        drop(tx);
        task.await.expect("delivery task");

        let got = got.lock().expect("lock").clone();
        let bodies = |path: &str| -> Vec<&Value> {
            got.iter()
                .filter(|(p, _)| p == path)
                .map(|(_, b)| b)
                .collect()
        };
        let json = bodies("json");
        assert_eq!(
            (&json[0]["status"], &json[1]["status"]),
            (&json!("firing"), &json!("resolved"))
        );
        assert_eq!(json[0]["dedup_key"], json[1]["dedup_key"]);
        let am = bodies("am");
        assert_eq!(
            (&am[0]["version"], &am[1]["status"]),
            (&json!("4"), &json!("resolved"))
        );
        assert_eq!(am[0]["receiver"], "am");
        let slack = bodies("services/T0/B0/X");
        assert!(slack[0]["text"].as_str().expect("text").contains("is FAIL"));
        assert!(slack[1]["text"]
            .as_str()
            .expect("text")
            .contains("OK again"));
        let pd = bodies("v2/enqueue");
        assert_eq!(
            (&pd[0]["event_action"], &pd[1]["event_action"]),
            (&json!("trigger"), &json!("resolve"))
        );
        assert_eq!(pd[0]["routing_key"], "R0UTING-KEY-SENTINEL");
        assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
        // The resolve's Alertmanager alert started when the trigger did.
        assert_eq!(
            am[1]["alerts"][0]["startsAt"],
            am[0]["alerts"][0]["startsAt"]
        );

        for (name, format) in [
            ("generic", "json"),
            ("am", "alertmanager"),
            ("chat", "slack"),
            ("oncall", "pagerduty"),
        ] {
            assert_eq!(
                state
                    .metrics
                    .alert_deliveries(name, format, DeliveryOutcome::Delivered),
                2,
                "{name}"
            );
        }
    }

    /// A `Write` that keeps everything in a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_delivery_logs_neither_the_url_path_nor_the_routing_key() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let (base, got) = receiver().await;
        // A port nothing listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let state = live_state();
        let metrics = state.metrics.clone();
        let http = reqwest::Client::new();
        let t = fail();
        let cases = [
            (
                webhook(
                    "chat",
                    &format!("http://127.0.0.1:{closed}/services/T0/B0/SLACK-SECRET-PATH"),
                    AlertFormat::Slack,
                ),
                DeliveryOutcome::Unreachable,
            ),
            (
                webhook(
                    "oncall",
                    &format!("{base}/status/503/PD-SECRET-PATH?token=QUERY-SECRET"),
                    AlertFormat::Pagerduty,
                ),
                DeliveryOutcome::Refused,
            ),
            (
                webhook(
                    "am",
                    &format!(
                        "http://user:PASSWORD-SECRET@{}/status/400/AM-SECRET",
                        &base[7..]
                    ),
                    AlertFormat::Alertmanager,
                ),
                DeliveryOutcome::Refused,
            ),
        ];
        let s = source();
        for (w, expected) in &cases {
            let body = payload(w, &alert(&t, &s));
            let outcome = deliver(&http, w, &body, &t).await;
            metrics.alert_delivery(&w.name, w.format.as_str(), outcome);
            assert_eq!(outcome, *expected, "{}", w.name);
        }
        // 5xx is retried, 4xx is not.
        let got = got.lock().expect("lock").clone();
        let attempts = |p: &str| got.iter().filter(|(path, _)| path.starts_with(p)).count();
        assert_eq!(
            (attempts("status/503"), attempts("status/400")),
            (ATTEMPTS as usize, 1)
        );
        assert_eq!(
            metrics.alert_deliveries("chat", "slack", DeliveryOutcome::Unreachable),
            1
        );
        assert_eq!(
            metrics.alert_deliveries("oncall", "pagerduty", DeliveryOutcome::Refused),
            1
        );

        let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
        for secret in [
            "SLACK-SECRET-PATH",
            "PD-SECRET-PATH",
            "QUERY-SECRET",
            "PASSWORD-SECRET",
            "AM-SECRET",
            "R0UTING-KEY-SENTINEL",
            "/services/",
        ] {
            assert!(!text.contains(secret), "{secret} logged:\n{text}");
        }
        // What the logs do say: which webhook, where, what went wrong.
        for said in [
            "webhook=chat",
            "webhook=oncall",
            "url=http://127.0.0.1:",
            "503",
            "alert webhook unreachable",
            "alert not delivered",
        ] {
            assert!(text.contains(said), "{said} not in:\n{text}");
        }
    }
}
