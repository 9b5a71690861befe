//! Web surfaces of live mode: the status page for people, Prometheus metrics, a JSON API
//! and a liveness probe.
//!
//! | Route | What |
//! |---|---|
//! | `GET /` | status page: one self-contained HTML page that polls `/api/cases` every second |
//! | `GET /metrics` | Prometheus metrics: OpenMetrics when `Accept` asks for it, else the text format 0.0.4 (see [`super::metrics`]) |
//! | `GET /api/cases` | JSON array of [`CaseSnapshot`](super::state::CaseSnapshot): health and headline, runs, pass rates (5 min, 1 h, since the start), invariant failures (since the start by rule, and per window), the last failures of each kind (a broken invariant's kind is its rule; its runs carry the key and values), transitions, the published settings, what each service instance applies, the roll-out |
//! | `PUT /api/cases/{case}` | changes a case's probability and active flag (bearer token; see [`super::admin`]) |
//! | `GET /api/runs/{id}` | the [`Report`](livecheck_core::Report) of a run (the last 2,000, and the failures the page lists), or 404 `{"error": ...}` |
//! | `GET /api/status` | JSON [`InputStatus`](super::state::InputStatus): Kafka reachable, partitions held, the suite's tables and the entries held of each, blind, who alerts |
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
    use std::time::Duration;

    use livecheck_core::{Report, Verdict};

    use super::*;
    use crate::live::fixtures::{report, state_with};

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
