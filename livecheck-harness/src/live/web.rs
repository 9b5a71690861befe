//! Web surfaces of live mode: the status page for people, Prometheus metrics, a JSON API
//! and a liveness probe.
//!
//! | Route | What |
//! |---|---|
//! | `GET /` | status page: one self-contained HTML page that polls `/api/cases` every second |
//! | `GET /metrics` | Prometheus metrics: OpenMetrics when `Accept` asks for it, else the text format 0.0.4 (see [`super::metrics`]) |
//! | `GET /api/cases` | JSON array of [`CaseSnapshot`](super::state::CaseSnapshot): health, runs, the published settings, what each service instance applies, the roll-out |
//! | `PUT /api/cases/{case}` | changes a case's probability and active flag (bearer token; see [`super::admin`]) |
//! | `GET /api/runs/{id}` | the [`Report`](livecheck_core::Report) of a run, or 404 `{"error": ...}` |
//! | `GET /api/status` | JSON [`InputStatus`](super::state::InputStatus): Kafka reachable, partitions held, blind, who alerts |
//! | `GET /healthz` | liveness: `ok` while the process serves |
//! | `GET /readyz` | readiness: 200 `ready` when Kafka is reachable and partitions are held, else 503 with a JSON reason |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Serialize;

use super::admin::{self, AdminApi};
use super::metrics::{self, Exposition};
use super::state::{LiveState, RUNS_KEPT};

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

async fn metrics(State(state): State<Arc<LiveState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Exposition::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics::render(&state, format),
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
                    "no run with test id {id:?} (the last {RUNS_KEPT} runs are kept)"
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

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LiveCheck</title>
<style>
:root {
  --bg: #f6f7f9; --fg: #1c2430; --muted: #667085; --card: #ffffff; --line: #e3e6eb;
  --ok: #1a7f37; --fail: #cf222e; --stall: #bf8700; --down: #6e40c9; --error: #d1570b;
  --skip: #8c959f; --track: #eef0f3; --bar: #3b82f6;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --fg: #e6edf3; --muted: #8b949e; --card: #161b22; --line: #30363d;
    --ok: #3fb950; --fail: #f85149; --stall: #d29922; --down: #a371f7; --error: #f0883e;
    --skip: #8b949e; --track: #21262d; --bar: #58a6ff;
  }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header.top { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 6px 18px;
  align-items: baseline; padding: 10px 20px; background: var(--card); border-bottom: 1px solid var(--line); }
header.top h1 { font-size: 18px; margin: 0 8px 0 0; }
.summary { display: flex; flex-wrap: wrap; gap: 6px 14px; color: var(--muted); }
.summary b { color: var(--fg); }
#conn { margin-left: auto; color: var(--muted); font-size: 12px; }
#conn[data-state="error"] { color: var(--fail); font-weight: 600; }
.banner { margin: 0; padding: 8px 20px; font-weight: 600; border-bottom: 1px solid var(--line); }
.banner[hidden] { display: none; }
#stale { background: var(--fail); color: #fff; }
#blind { background: var(--down); color: #fff; }
#voice { background: var(--card); color: var(--muted); font-weight: 400; }
body[data-stale="true"] main { opacity: .45; filter: grayscale(1); }
main { padding: 16px 20px 40px; display: grid; gap: 16px; }
.empty { color: var(--muted); }
section.case { background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--skip);
  border-radius: 8px; padding: 12px 16px; }
section.case[data-health="OK"] { border-left-color: var(--ok); }
section.case[data-health="FAIL"] { border-left-color: var(--fail); }
section.case[data-health="STALL"] { border-left-color: var(--stall); }
section.case[data-health="DOWN"] { border-left-color: var(--down); }
.case-head { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 12px; }
.case-head h2 { font-size: 16px; margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 700; font-size: 12px;
  color: #fff; background: var(--skip); letter-spacing: .03em; }
.badge[data-health="OK"], .badge[data-verdict="PASS"] { background: var(--ok); }
.badge[data-health="FAIL"], .badge[data-verdict="FAIL"] { background: var(--fail); }
.badge[data-health="STALL"], .badge[data-verdict="TIMEOUT"] { background: var(--stall); }
.badge[data-health="DOWN"] { background: var(--down); }
.badge[data-verdict="ERROR"] { background: var(--error); }
.reason { color: var(--muted); overflow-wrap: anywhere; }
.tag { font-size: 12px; color: var(--muted); border: 1px solid var(--line); border-radius: 4px; padding: 0 5px; }
.stats { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 8px 0 6px; }
.stat .k { color: var(--muted); margin-right: 4px; }
.stat .v { font-weight: 600; font-variant-numeric: tabular-nums; }
.counts { display: inline-flex; gap: 8px; }
.count { font-variant-numeric: tabular-nums; }
.count::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  margin-right: 4px; background: var(--skip); }
.count[data-verdict-count="PASS"]::before { background: var(--ok); }
.count[data-verdict-count="FAIL"]::before { background: var(--fail); }
.count[data-verdict-count="ERROR"]::before { background: var(--error); }
.count[data-verdict-count="TIMEOUT"]::before { background: var(--stall); }
ol.runs { list-style: none; margin: 8px 0 0; padding: 0; display: grid; gap: 6px; }
li.run { border-top: 1px solid var(--line); padding-top: 6px; }
.run-head { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: baseline; }
.run-head a { color: inherit; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
  overflow-wrap: anywhere; }
.muted { color: var(--muted); font-size: 12px; }
.error-text { margin: 4px 0 2px; padding: 4px 8px; border-radius: 4px; white-space: pre-wrap;
  overflow-wrap: anywhere; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
  background: color-mix(in srgb, var(--fail) 10%, transparent); }
.timeline { display: grid; grid-template-columns: minmax(90px, max-content) 1fr minmax(80px, max-content); gap: 2px 10px;
  align-items: center; margin-top: 4px; }
.step { display: contents; }
.step-name { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
  overflow-wrap: anywhere; }
.track { position: relative; height: 12px; background: var(--track); border-radius: 3px; overflow: hidden; }
.bar { position: absolute; top: 0; bottom: 0; min-width: 2px; background: var(--bar); border-radius: 3px; }
.step-ms { font-size: 12px; text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.step.missing .step-name, .step.missing .step-ms { color: var(--fail); font-weight: 600; }
.step.unawaited .step-name { color: var(--fail); }
.bar.missing { background: repeating-linear-gradient(45deg, var(--fail) 0 4px, transparent 4px 8px);
  border: 1px solid var(--fail); }
.note { font-size: 12px; color: var(--muted); margin-top: 2px; overflow-wrap: anywhere; }
.control { margin: 6px 0 2px; display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: baseline; }
.control .k { color: var(--muted); }
table.instances { border-collapse: collapse; margin: 6px 0; font-size: 12px; width: 100%; }
table.instances th { text-align: left; color: var(--muted); font-weight: 500; padding: 2px 8px 2px 0; }
table.instances td { padding: 2px 8px 2px 0; border-top: 1px solid var(--line); font-variant-numeric: tabular-nums;
  overflow-wrap: anywhere; }
.badge[data-following="following"] { background: var(--ok); }
.badge[data-following="catching_up"] { background: var(--stall); }
.badge[data-following="not_following"] { background: var(--fail); }
.badge[data-following="stale"] { background: var(--down); }
.badge[data-rollout-state-badge="running"] { background: var(--bar); }
.badge[data-rollout-state-badge="completed"] { background: var(--ok); }
.badge[data-rollout-state-badge="rolled_back"] { background: var(--fail); }
.badge[data-rollout-state-badge="stopped"] { background: var(--stall); }
tr[data-following="stale"] td, tr[data-following="not_following"] td { color: var(--fail); }
.rollout { margin: 6px 0; }
.steps { display: inline-flex; gap: 4px; flex-wrap: wrap; }
.step-chip { border: 1px solid var(--line); border-radius: 4px; padding: 0 6px; font-size: 12px;
  font-variant-numeric: tabular-nums; color: var(--muted); }
.step-chip.done { color: var(--fg); }
.step-chip.current { background: var(--bar); border-color: var(--bar); color: #fff; font-weight: 700; }
.rollout[data-rollout-state="rolled_back"] .step-chip.current { background: var(--fail); border-color: var(--fail); }
</style>
</head>
<body>
<header class="top">
  <h1>LiveCheck</h1>
  <div class="summary">
    <span><b id="cases-total">0</b> cases</span>
    <span id="health-summary"></span>
    <span><b id="runs-total">0</b> runs</span>
    <span><b id="runs-shown">0</b> recent runs shown</span>
  </div>
  <span id="conn" data-state="init">loading…</span>
</header>
<p id="stale" class="banner" role="alert" hidden></p>
<p id="blind" class="banner" role="alert" hidden></p>
<p id="voice" class="banner" hidden></p>
<p id="control-problem" class="banner" role="alert" hidden></p>
<main id="cases"></main>
<noscript><p>This page needs JavaScript to render; the data is at <a href="api/cases">api/cases</a>.</p></noscript>
<script type="application/json" id="initial-data">__LIVECHECK_INITIAL__</script>
<script>
(function () {
  "use strict";
  var VERDICTS = ["PASS", "FAIL", "ERROR", "TIMEOUT", "SKIP"];
  var HEALTHS = ["OK", "FAIL", "STALL", "DOWN"];
  var POLL_MS = 1000, TIMEOUT_MS = 5000;
  var container = document.getElementById("cases");
  var rendered = new Map(); // case name -> { key, el }

  // Builds an element with DOM APIs only: text is always set as text, never parsed.
  function h(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") e.textContent = String(v);
        else if (k === "class") e.className = v;
        else if (k === "style") Object.keys(v).forEach(function (p) { e.style[p] = v[p]; });
        else e.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(e, arguments[i]);
    return e;
  }
  function append(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(parent, c); }); return; }
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function ms(v) {
    if (typeof v !== "number" || !isFinite(v)) return "–";
    if (v < 10) return v.toFixed(2) + " ms";
    if (v < 1000) return v.toFixed(1) + " ms";
    return Math.round(v) + " ms";
  }
  function time(iso) {
    if (!iso) return "–";
    var d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  }
  function ago(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) return "";
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function agoEl(iso) { return h("span", { class: "muted", "data-ago": iso || "", text: iso ? "(" + ago(iso) + ")" : "" }); }
  function runSpanMs(r) {
    var steps = (r.timeline || []).reduce(function (s, st) { return s + (st.latency_ms || 0); }, 0);
    var wall = Date.parse(r.finished_at) - Date.parse(r.issued_at);
    return Math.max(steps, isNaN(wall) ? 0 : wall);
  }
  function stat(label, value, attr) {
    var v = h("span", { class: "v", text: value });
    if (attr) v.setAttribute(attr[0], attr[1]);
    return h("span", { class: "stat" }, h("span", { class: "k", text: label }), v);
  }

  function renderRun(r, scale) {
    var li = h("li", { class: "run", "data-test-id": r.test_id, "data-verdict": r.verdict });
    var total = runSpanMs(r);
    li.appendChild(h("div", { class: "run-head" },
      h("span", { class: "badge", "data-verdict": r.verdict, text: r.verdict }),
      h("a", { href: "api/runs/" + encodeURIComponent(r.test_id), title: "the report as JSON", text: r.test_id }),
      h("span", { class: "muted", title: r.finished_at, text: "finished " + time(r.finished_at) }),
      agoEl(r.finished_at),
      h("span", { class: "muted", text: "took " + ms(total) })));
    if (r.error) li.appendChild(h("div", { class: "error-text", "data-error": "", text: r.error }));
    var tl = h("div", { class: "timeline" });
    var offset = 0;
    (r.timeline || []).forEach(function (st) {
      var lat = Math.max(0, st.latency_ms || 0);
      var awaited = st.awaited !== false;
      var name = st.signal + (st.item ? "[" + st.item + "]" : "");
      var where = "sent " + st.sent_at + "; runner lag " + ms(Math.max(0, st.lag_ms || 0)) +
        "; " + st.topic + "[" + st.partition + "]@" + st.offset;
      var row = h("div", { class: "step" + (awaited ? "" : " unawaited"), "data-step": st.signal,
          "data-latency-ms": lat, "data-lag-ms": st.lag_ms || 0, "data-awaited": awaited ? "1" : "0" },
        h("span", { class: "step-name", title: where,
          text: (awaited ? "✓ " : "· ") + name + (awaited ? "" : " (not awaited)") }),
        h("span", { class: "track" }, h("span", { class: "bar", style: {
          left: (offset / scale * 100) + "%", width: (lat / scale * 100) + "%" } })),
        h("span", { class: "step-ms", text: "+" + ms(lat) }));
      tl.appendChild(row);
      offset += lat;
    });
    if (r.missing_step) {
      var left = Math.min(offset, scale);
      tl.appendChild(h("div", { class: "step missing", "data-missing-step": r.missing_step },
        h("span", { class: "step-name", text: "✗ " + r.missing_step }),
        h("span", { class: "track" }, h("span", { class: "bar missing", style: {
          left: (left / scale * 100) + "%", width: Math.max(0, (total - left) / scale * 100) + "%" } })),
        h("span", { class: "step-ms", text: "never arrived" })));
    }
    if (tl.childNodes.length) li.appendChild(tl);
    if (r.waits && r.waits.length) {
      li.appendChild(h("div", { class: "note", "data-waits": "", text: "waits: " + r.waits.join("; ") }));
    }
    if (r.unawaited && r.unawaited.length) {
      li.appendChild(h("div", { class: "note", text: "arrived but not awaited: " + r.unawaited.join(", ") }));
    }
    if (r.arguments !== null && r.arguments !== undefined) {
      li.appendChild(h("div", { class: "note", text: "arguments: " + JSON.stringify(r.arguments) }));
    }
    return li;
  }

  function pct(p) {
    if (typeof p !== "number" || !isFinite(p)) return "–";
    var v = Math.round(p * 100000) / 1000;
    return v + "%";
  }

  // What the control topic says about the case: the truth every service should apply.
  function renderControl(c) {
    var p = c.published;
    if (!p) {
      return h("div", { class: "control", "data-published": "none" },
        h("span", { class: "k", text: "published settings" }),
        h("span", { text: "nothing published yet: services apply their local defaults" }));
    }
    return h("div", { class: "control", "data-published": p.version },
      h("span", { class: "k", text: "published" }),
      h("span", { "data-published-probability": p.probability, text: "probability " + pct(p.probability) }),
      h("span", { "data-published-active": p.active ? "true" : "false", text: p.active ? "active" : "inactive" }),
      h("span", { class: "muted", text: "sampling " + (p.sampling || "random") }),
      h("span", { class: "muted", "data-published-version": p.version, text: "version " + p.version }),
      h("span", { class: "muted", "data-changed-by": p.changed_by, title: p.changed_at,
        text: "by " + p.changed_by + " at " + time(p.changed_at) }),
      agoEl(p.changed_at));
  }

  function sourceText(s) {
    if (!s) return "–";
    if (s.kind === "control") return "control v" + s.version;
    return "local (" + (s.reason || "no reason given") + ")";
  }

  // Per service instance: what it applies, from its heartbeats (never a guess).
  function renderInstances(c) {
    var list = c.instances || [];
    if (!list.length) {
      return h("div", { class: "note", "data-instances": "0",
        text: "no service has reported what it applies (no heartbeat in the last hour)" });
    }
    var FOLLOW = { following: "following", catching_up: "catching up", not_following: "not following", stale: "stale" };
    var table = h("table", { class: "instances", "data-instances": list.length },
      h("tr", null, ["service", "instance", "applies", "source", "requests", "tests", "realized", "last heartbeat", ""].map(
        function (t) { return h("th", { text: t }); })));
    list.forEach(function (i) {
      var key = i.service + "/" + i.instance;
      table.appendChild(h("tr", { "data-instance": key, "data-following": i.following },
        h("td", { text: i.service }),
        h("td", { text: i.instance }),
        h("td", { "data-applied-probability": i.probability,
          text: pct(i.probability) + (i.active ? "" : " (inactive)") }),
        h("td", { "data-source": i.source ? i.source.kind : "", text: sourceText(i.source) }),
        h("td", { "data-requests": i.requests, text: i.requests }),
        h("td", { "data-tests": i.tests_triggered, text: i.tests_triggered }),
        h("td", { "data-realized": i.realized_fraction === null ? "" : i.realized_fraction,
          title: "tests / requests since its settings last changed",
          text: i.realized_fraction === null ? "–" :
            pct(i.realized_fraction) + " of " + i.requests_at_settings }),
        h("td", { title: i.last_heartbeat_at }, agoEl(i.last_heartbeat_at)),
        h("td", null, h("span", { class: "badge", "data-following": i.following, text: FOLLOW[i.following] || i.following }))));
      if (i.problem) {
        table.appendChild(h("tr", { "data-instance-problem": key, "data-following": i.following },
          h("td", { colspan: 9, text: "↳ " + i.problem })));
      }
    });
    return table;
  }

  function renderRollout(r) {
    var state = String(r.state || "");
    var steps = (r.plan && r.plan.steps) || [];
    var div = h("div", { class: "rollout", "data-rollout": r.step, "data-rollout-state": state });
    var chips = h("span", { class: "steps" });
    steps.forEach(function (p, i) {
      chips.appendChild(h("span", { class: "step-chip" + (i < r.step ? " done" : "") + (i === r.step ? " current" : ""),
        "data-rollout-step": i, text: pct(p) }));
    });
    var head = h("div", { class: "control" },
      h("span", { class: "k", text: "roll-out" }), chips,
      h("span", { class: "badge", "data-rollout-state-badge": state, text: r.state_text || state }),
      h("span", { class: "muted", text: "step " + (r.step + 1) + " of " + steps.length + " since " + time(r.step_started_at) }),
      r.next_decision_at ? h("span", { class: "muted", text: "judged from " + time(r.next_decision_at) }) : null);
    div.appendChild(head);
    var rule = "a step lasts " + Math.round((r.plan ? r.plan.every_ms : 0) / 100) / 10 + " s, needs " +
      (r.plan ? r.plan.min_runs : "?") + " runs, at most " + pct(r.plan ? r.plan.max_failure_rate : 0) + " failed";
    div.appendChild(h("div", { class: "note", text: rule }));
    if (r.live) {
      div.appendChild(h("div", { class: "note", "data-rollout-live": r.live.counts.runs,
        text: "this step so far: " + r.live.counts.runs + " runs, " + r.live.counts.failures + " failed" }));
    } else if (state === "running" && !r.driven_here) {
      div.appendChild(h("div", { class: "note", text: "driven by the group's voice (the owner of partition 0)" }));
    }
    if (r.reason) div.appendChild(h("div", { class: "note", "data-rollout-reason": "", text: r.reason }));
    return div;
  }

  function renderCase(c) {
    var runs = VERDICTS.reduce(function (s, v) { return s + ((c.verdicts || {})[v] || 0); }, 0);
    var recent = c.recent || [];
    var scale = recent.reduce(function (m, r) { return Math.max(m, runSpanMs(r)); }, 0) || 1;
    var sec = h("section", { class: "case", "data-case": c.name, "data-health": c.health });
    sec.appendChild(h("div", { class: "case-head" },
      h("h2", { text: c.name }),
      h("span", { class: "badge", "data-health": c.health, text: c.health }),
      h("span", { class: "muted", title: c.health_since, text: "since " + time(c.health_since) }),
      agoEl(c.health_since),
      h("span", { class: "reason", "data-health-reason": "", text: c.health_reason }),
      c.active ? null : h("span", { class: "tag", text: "inactive" }),
      h("span", { class: "tag", "data-probability-tag": "",
        text: (c.published ? "published " : "configured ") + pct(c.probability) +
          (c.published ? "" : " (not published yet)") })));
    sec.appendChild(renderControl(c));
    if (c.rollout) sec.appendChild(renderRollout(c.rollout));
    sec.appendChild(renderInstances(c));
    var counts = h("span", { class: "counts" });
    VERDICTS.forEach(function (v) {
      counts.appendChild(h("span", { class: "count", title: v, "data-verdict-count": v,
        text: v + " " + ((c.verdicts || {})[v] || 0) }));
    });
    sec.appendChild(h("div", { class: "stats" },
      stat("pass rate", c.pass_rate === null || c.pass_rate === undefined ? "–" :
        (Math.round(c.pass_rate * 1000) / 10) + "%", ["data-pass-rate", c.pass_rate === null ? "" : c.pass_rate]),
      stat("runs", runs, ["data-runs", runs]),
      h("span", { class: "stat" }, counts),
      stat("consecutive failures", c.consecutive_failures, ["data-consecutive-failures", c.consecutive_failures]),
      h("span", { class: "stat" }, h("span", { class: "k", text: "last run" }),
        h("span", { class: "v", text: time(c.last_run_at) }), " ", c.last_run_at ? agoEl(c.last_run_at) : null)));
    if (recent.length) {
      sec.appendChild(h("ol", { class: "runs" }, recent.map(function (r) { return renderRun(r, scale); })));
    } else {
      sec.appendChild(h("div", { class: "note", text: "no runs yet" }));
    }
    return sec;
  }

  function render(cases) {
    if (!Array.isArray(cases)) return;
    var seen = new Set(), runsTotal = 0, shown = 0, byHealth = {};
    cases.forEach(function (c) {
      seen.add(c.name);
      runsTotal += VERDICTS.reduce(function (s, v) { return s + ((c.verdicts || {})[v] || 0); }, 0);
      shown += (c.recent || []).length;
      byHealth[c.health] = (byHealth[c.health] || 0) + 1;
      var key = JSON.stringify(c);
      var old = rendered.get(c.name);
      var el = old && old.key === key ? old.el : renderCase(c);
      if (old && old.el !== el) old.el.replaceWith(el);
      rendered.set(c.name, { key: key, el: el });
      container.appendChild(el); // appends new blocks, keeps the order of existing ones
    });
    rendered.forEach(function (v, name) { if (!seen.has(name)) { v.el.remove(); rendered.delete(name); } });
    var empty = document.getElementById("no-cases");
    if (!cases.length && !empty) container.appendChild(h("p", { id: "no-cases", class: "empty", text: "No cases." }));
    if (cases.length && empty) empty.remove();
    document.getElementById("cases-total").textContent = cases.length;
    document.getElementById("runs-total").textContent = runsTotal;
    document.getElementById("runs-shown").textContent = shown;
    var summary = document.getElementById("health-summary");
    summary.textContent = "";
    HEALTHS.forEach(function (s) {
      if (byHealth[s]) append(summary, [h("span", { class: "badge", "data-health": s, text: byHealth[s] + " " + s }), " "]);
    });
    var worst = ["DOWN", "FAIL", "STALL"].find(function (s) { return byHealth[s]; });
    document.title = (worst ? worst + " · " : "") + "LiveCheck";
    refreshAgo();
  }

  function refreshAgo() {
    document.querySelectorAll("[data-ago]").forEach(function (e) {
      var iso = e.getAttribute("data-ago");
      if (iso) e.textContent = "(" + ago(iso) + ")";
    });
  }

  function setConn(state, text) {
    var c = document.getElementById("conn");
    c.setAttribute("data-state", state);
    c.textContent = text;
  }

  var lastOk = Date.now();
  function setStale(error) {
    var banner = document.getElementById("stale");
    if (error === null) {
      lastOk = Date.now();
      document.body.removeAttribute("data-stale");
      banner.hidden = true;
      banner.textContent = "";
      return;
    }
    document.body.setAttribute("data-stale", "true");
    banner.hidden = false;
    banner.textContent = "STALE: this page cannot reach LiveCheck (" + error + "); the data below is from " +
      new Date(lastOk).toLocaleTimeString([], { hour12: false }) + " (" +
      Math.round((Date.now() - lastOk) / 1000) + " s ago) and may be wrong.";
  }
  function showStatus(st) {
    var blind = document.getElementById("blind"), voice = document.getElementById("voice");
    blind.hidden = !st.blind;
    blind.textContent = st.blind ? "LiveCheck is blind: " + st.blind : "";
    voice.hidden = !st.alerts;
    voice.textContent = st.alerts ? st.alerts + (st.voice ? "" : "; this page shows this instance's runs only") : "";
    var cp = document.getElementById("control-problem");
    var problems = [st.control_problem, st.heartbeats_problem].filter(function (x) { return !!x; });
    cp.hidden = !problems.length;
    cp.textContent = problems.length ? "Central control: " + problems.join("; ") : "";
  }

  function poll() {
    var ctrl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = setTimeout(function () { if (ctrl) ctrl.abort(); }, TIMEOUT_MS);
    function get(path) {
      return fetch(path, { cache: "no-store", signal: ctrl ? ctrl.signal : undefined })
        .then(function (r) {
          if (!r.ok) throw new Error(path + ": HTTP " + r.status);
          return r.json();
        });
    }
    Promise.all([get("api/cases"), get("api/status")])
      .then(function (both) {
        render(both[0]);
        showStatus(both[1] || {});
        setStale(null);
        setConn("live", "live · updated " + new Date().toLocaleTimeString([], { hour12: false }));
      })
      .catch(function (e) {
        var why = e && e.message ? e.message : String(e);
        setStale(why);
        setConn("error", "update failed (" + why + "); retrying");
      })
      .then(function () {
        clearTimeout(timer);
        setTimeout(poll, POLL_MS);
      });
  }

  try {
    render(JSON.parse(document.getElementById("initial-data").textContent));
    setConn("init", "connecting…");
  } catch (e) {
    setConn("error", "could not read the initial data");
  }
  poll();
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeDelta, Utc};
    use livecheck_core::{
        Case, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig, Step, Suite, Topics,
        Verdict,
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
        }
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
        // What Prometheus asks for.
        let r = http
            .get(format!("{base}/metrics"))
            .header(
                header::ACCEPT,
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )
            .send()
            .await
            .expect("metrics");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let text = r.text().await.expect("body");
        assert!(text.contains("livecheck_runs_total{case=\"x.y\",verdict=\"PASS\"} 1\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");

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
