//! The live-mode status page in a real headless Chromium, driven over the W3C WebDriver
//! protocol (chromedriver): the page shows the cases, and a run recorded after the page
//! loaded appears without a reload.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`ci/test.sh` installs them);
//! without them the test fails (it does not skip).

mod support;

use support::wait_for;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use livecheck_core::{
    Case, Invariant, KafkaConfig, LiveCheck, Report, Run, Runner, RunnerConfig, Step, Suite, Table,
    Topics, Verdict,
};
use livecheck_harness::live::health::{HealthMonitor, HealthRules};
use livecheck_harness::live::state::LiveState;
use livecheck_harness::live::web;
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ORDERS: &str = "orders.place_order";
const REFUNDS: &str = "payments.refund";
/// W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Open sell quantity per user: a partitioned table of the orders case.
static EXPOSURE: Table<String, u64> = Table::new("sell_exposure");
/// Limits per user: a global table of the refunds case.
static LIMITS: Table<String, u64> = Table::global("limits");
/// The business rule the orders case checks.
const RULE: &str = "open sell exposure <= limit";

fn report(
    case: &str,
    id: &str,
    verdict: Verdict,
    steps: &[(&str, f64)],
    error: Option<&str>,
    missing: Option<&str>,
) -> Report {
    let issued_at = Utc::now() - TimeDelta::milliseconds(200);
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
        error: error.map(str::to_owned),
        missing_step: missing.map(str::to_owned),
        last_step: steps.last().map(|(s, _)| (*s).to_owned()),
        unawaited: Vec::new(),
        timeline,
        issued_at,
        finished_at: Utc::now(),
        arguments: Value::Null,
        waits: Vec::new(),
        truncated: None,
        hops: Vec::new(),
        trace_id: None,
        invariant: None,
        route: None,
    }
}

/// `report` as if it had finished at `at` (every time in it moved alike).
fn finished_at(mut r: Report, at: DateTime<Utc>) -> Report {
    let shift = at - r.finished_at;
    r.issued_at += shift;
    r.finished_at = at;
    for step in &mut r.timeline {
        step.sent_at += shift;
        step.arrived_at += shift;
        step.event_at = step.event_at.map(|t| t + shift);
    }
    r
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------
// chromedriver process
// ---------------------------------------------------------------------------------------

/// A chromedriver child process and its scratch directory. Dropping it ends the browser
/// session (if one is open), kills chromedriver and any browser process it left behind
/// (by pid), and removes the directory — also when the test panics.
struct Chromedriver {
    child: Child,
    port: u16,
    dir: PathBuf,
    session: Option<String>,
}

impl Chromedriver {
    fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: install the Debian packages \
             `chromium chromium-driver` (ci/test.sh installs them) to run the status-page \
             browser test"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "livecheck-status-page-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("profile")).expect("scratch directory");
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("log file");
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        Self {
            child,
            port,
            dir,
            session: None,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn profile(&self) -> PathBuf {
        self.dir.join("profile")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Ends the session with a plain blocking HTTP request (usable from `Drop`).
    fn delete_session_blocking(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
        }
    }
}

/// The pids of every process below `root` (from `/proc`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may contain spaces and parentheses.
            let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chromedriver log ({}):\n{}",
                self.dir.join("chromedriver.log").display(),
                self.log_tail()
            );
        }
        self.delete_session_blocking();
        // Whatever the browser left running below chromedriver, then chromedriver itself.
        let leftovers = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in leftovers {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// A minimal W3C WebDriver client
// ---------------------------------------------------------------------------------------

struct Browser {
    http: reqwest::Client,
    url: String,
}

impl Browser {
    /// Waits for chromedriver, then opens a headless Chromium session.
    async fn open(driver: &mut Chromedriver) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = driver.base();
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let (http, base) = (&http, &base);
            async move {
                let status: Value = http
                    .get(format!("{base}/status"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if status["value"]["ready"] == true {
                    Ok(())
                } else {
                    Err(status.to_string())
                }
            }
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", driver.profile().display()),
                ],
            },
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("POST /session")
            .json()
            .await
            .expect("session response");
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"))
            .to_owned();
        driver.session = Some(session.clone());
        Self {
            http,
            url: format!("{base}/session/{session}"),
        }
    }

    /// One command; `Err` is the WebDriver error (`{"error": ..., "message": ...}`).
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| json!({"error": "transport", "message": e.to_string()}))?;
        let ok = response.status().is_success();
        let value: Value = response
            .json()
            .await
            .map_err(|e| json!({"error": "decode", "message": e.to_string()}))?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(value)
        }
    }

    async fn navigate(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
    }

    /// The first element matching a CSS selector, if any.
    async fn find(&self, selector: &str) -> Option<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        match found {
            Ok(element) => Some(element[ELEMENT].as_str().expect("element id").to_owned()),
            Err(e) if e["error"] == "no such element" => None,
            Err(e) => panic!("finding {selector}: {e}"),
        }
    }

    async fn find_all(&self, selector: &str) -> Vec<String> {
        self.command(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        )
        .await
        .unwrap_or_else(|e| panic!("finding all {selector}: {e}"))
        .as_array()
        .expect("element list")
        .iter()
        .map(|e| e[ELEMENT].as_str().expect("element id").to_owned())
        .collect()
    }

    async fn text(&self, element: &str) -> String {
        let text = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("text of {element}: {e}"));
        text.as_str().unwrap_or_default().to_owned()
    }

    async fn attribute(&self, element: &str, name: &str) -> Option<String> {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{element}/attribute/{name}"),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("attribute {name} of {element}: {e}"))
        .as_str()
        .map(str::to_owned)
    }

    async fn click(&self, element: &str) {
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("clicking {element}: {e}"));
    }

    async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `selector` (panics if there is none).
    async fn text_of(&self, selector: &str) -> String {
        let element = self
            .find(selector)
            .await
            .unwrap_or_else(|| panic!("no element {selector}"));
        self.text(&element).await
    }

    async fn quit(self, driver: &mut Chromedriver) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
        driver.session = None;
    }
}

/// What the page shows of a case, read in one script.
const OBSERVE: &str = r#"
const [name, testId] = arguments;
const block = [...document.querySelectorAll("[data-case]")]
  .find((e) => e.getAttribute("data-case") === name);
const row = block && [...block.querySelectorAll("[data-test-id]")]
  .find((e) => e.getAttribute("data-test-id") === testId);
const badge = block && block.querySelector(".case-head [data-health]");
return {
  found: !!block,
  health: block ? block.getAttribute("data-health") : null,
  badge: badge ? badge.textContent : null,
  runsTotal: document.getElementById("runs-total").textContent,
  row: !!row,
  verdict: row ? row.getAttribute("data-verdict") : null,
  conn: document.getElementById("conn").getAttribute("data-state"),
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_updates_live_in_a_real_browser() {
    // A live state without Kafka: the client is never used to send.
    let client =
        LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
    let cases = [
        Case::new(ORDERS)
            .max_consecutive_failures(1)
            .table(&EXPOSURE)
            .expect(|_: Run, (): ()| async { Ok(()) }),
        Case::new(REFUNDS)
            .table(&LIMITS)
            .expect(|_: Run, (): ()| async { Ok(()) }),
    ];
    let runner = Runner::new(
        Suite::new(cases).expect("suite"),
        client.clone(),
        RunnerConfig::default(),
    );
    let state = Arc::new(LiveState::new(runner, client));
    let (alerts, _alerts_rx) = tokio::sync::mpsc::channel(16);
    let health = HealthMonitor::new(state.clone(), HealthRules::default(), alerts);
    let record = |r: Report| {
        let r = Arc::new(r);
        state.record(r.clone());
        health.on_report(&r);
    };
    record(report(
        ORDERS,
        "t-pass-1",
        Verdict::Pass,
        &[("order_received", 5.0), ("order_saved", 20.0)],
        None,
        None,
    ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = web::router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let page = format!("http://{addr}/");

    let mut driver = Chromedriver::start();
    let browser = Browser::open(&mut driver).await;
    browser.navigate(&page).await;

    // The page shows both cases, healthy, and the first run with its timeline.
    let orders = format!(r#"[data-case="{ORDERS}"]"#);
    let badge = wait_for("the orders case block", Duration::from_secs(10), || async {
        browser
            .find(&format!("{orders} .case-head [data-health]"))
            .await
            .ok_or_else(|| "no case block yet".to_owned())
    })
    .await;
    assert_eq!(
        browser.attribute(&badge, "data-health").await.as_deref(),
        Some("OK")
    );
    assert_eq!(browser.text(&badge).await, "OK");
    assert!(
        browser
            .find(&format!(r#"[data-case="{REFUNDS}"][data-health="OK"]"#))
            .await
            .is_some(),
        "the refunds case is shown"
    );
    assert_eq!(browser.text_of("#runs-total").await, "1");
    let pass_row = browser
        .find(r#"[data-recent] [data-test-id="t-pass-1"]"#)
        .await
        .expect("the first run's row");
    assert_eq!(
        browser
            .attribute(&pass_row, "data-verdict")
            .await
            .as_deref(),
        Some("PASS")
    );
    assert_eq!(
        browser
            .find_all(r#"[data-recent] [data-test-id="t-pass-1"] [data-step]"#)
            .await
            .len(),
        2
    );
    assert_eq!(
        browser
            .text_of(&format!("{orders} [data-consecutive-failures]"))
            .await,
        "0"
    );
    // The poll is running (the page reports itself live).
    wait_for("the first poll", Duration::from_secs(10), || async {
        let seen = browser.execute(OBSERVE, json!([ORDERS, "t-pass-1"])).await;
        (seen["conn"] == "live")
            .then_some(())
            .ok_or(seen.to_string())
    })
    .await;

    // Mark this page load: a reload would lose the mark.
    browser
        .execute("window.__livecheckLoad = 'first'; return null;", json!([]))
        .await;

    // A failing run arrives (its error text is untrusted, HTML-looking text), then a
    // timeout with a missing step.
    let error = r#"<b id="injected">reserved</b> & "quoted": expected 3, got 4"#;
    record(report(
        ORDERS,
        "t-fail-1",
        Verdict::Fail,
        &[("order_received", 10.0), ("stock_reserved", 40.0)],
        Some(error),
        None,
    ));
    record(report(
        ORDERS,
        "t-timeout-1",
        Verdict::Timeout,
        &[("order_received", 8.0)],
        Some("order_shipped did not arrive within 5s"),
        Some("order_shipped"),
    ));

    let seen = wait_for(
        "the failing run to appear without a reload",
        Duration::from_secs(10),
        || async {
            let seen = browser.execute(OBSERVE, json!([ORDERS, "t-fail-1"])).await;
            if seen["row"] == true && seen["verdict"] == "FAIL" && seen["health"] == "FAIL" {
                Ok(seen)
            } else {
                Err(seen.to_string())
            }
        },
    )
    .await;
    assert_eq!(seen["badge"], "FAIL", "{seen}");
    assert_eq!(seen["runsTotal"], "3", "{seen}");
    assert_eq!(
        browser
            .execute("return window.__livecheckLoad || null;", json!([]))
            .await,
        "first",
        "the page was reloaded"
    );

    // Health, counters and the new rows, read through WebDriver.
    let badge = browser
        .find(&format!("{orders} .case-head [data-health]"))
        .await
        .expect("badge");
    assert_eq!(
        browser.attribute(&badge, "data-health").await.as_deref(),
        Some("FAIL")
    );
    assert_eq!(browser.text(&badge).await, "FAIL");
    assert_eq!(browser.text_of("#runs-total").await, "3");
    assert_eq!(
        browser
            .text_of(&format!("{orders} [data-consecutive-failures]"))
            .await,
        "2"
    );
    assert_eq!(
        browser
            .text_of(&format!(r#"{orders} [data-verdict-count="FAIL"]"#))
            .await,
        "FAIL 1"
    );
    assert_eq!(
        browser.text_of(&format!("{orders} [data-pass-rate]")).await,
        "33.3%"
    );
    let fail_row = browser
        .find(r#"[data-recent] [data-test-id="t-fail-1"]"#)
        .await
        .expect("the failing run's row");
    assert_eq!(
        browser
            .attribute(&fail_row, "data-verdict")
            .await
            .as_deref(),
        Some("FAIL")
    );
    // The error is shown as text, not markup.
    assert_eq!(
        browser
            .text_of(r#"[data-recent] [data-test-id="t-fail-1"] [data-error]"#)
            .await,
        error
    );
    assert!(
        browser.find("#injected").await.is_none(),
        "the error text was parsed as HTML"
    );
    // Bars are proportional to the step latencies (10 ms and 40 ms).
    let widths = browser
        .execute(
            r#"return [...document.querySelectorAll('[data-recent] [data-test-id="t-fail-1"] [data-step] .bar')]
                 .map((b) => b.getBoundingClientRect().width);"#,
            json!([]),
        )
        .await;
    let widths: Vec<f64> = widths
        .as_array()
        .expect("widths")
        .iter()
        .map(|w| w.as_f64().expect("width"))
        .collect();
    assert_eq!(widths.len(), 2, "{widths:?}");
    let ratio = widths[1] / widths[0];
    assert!((3.5..=4.5).contains(&ratio), "bar widths {widths:?}");
    assert!(browser
        .text_of(r#"[data-recent] [data-test-id="t-fail-1"] [data-step="stock_reserved"] .step-ms"#)
        .await
        .contains("40.0 ms"));
    // The timeout shows its missing step.
    let timeout_row = browser
        .find(r#"[data-recent] [data-test-id="t-timeout-1"][data-verdict="TIMEOUT"]"#)
        .await
        .expect("the timeout's row");
    assert!(browser.text(&timeout_row).await.contains("never arrived"));
    assert!(
        browser
            .find(
                r#"[data-recent] [data-test-id="t-timeout-1"] [data-missing-step="order_shipped"]"#
            )
            .await
            .is_some(),
        "the missing step is marked"
    );
    // The other case is unaffected.
    assert!(browser
        .find(&format!(r#"[data-case="{REFUNDS}"][data-health="OK"]"#))
        .await
        .is_some());

    // A step that happened twice: the repeat is shown, marked as not awaited, with the
    // runner's lag apart from the step's latency.
    let mut repeat = report(
        ORDERS,
        "t-repeat-1",
        Verdict::Fail,
        &[
            ("order_received", 10.0),
            ("stock_reserved", 40.0),
            ("stock_reserved", 5.0),
        ],
        Some("step `stock_reserved` happened 2 times, expected once"),
        None,
    );
    repeat.timeline[2].awaited = false;
    repeat.timeline[1].lag_ms = 7.5;
    repeat.unawaited = vec!["stock_reserved".to_owned()];
    record(repeat);
    let repeated = wait_for("the repeated step", Duration::from_secs(10), || async {
        browser
            .find(r#"[data-recent] [data-test-id="t-repeat-1"] [data-step][data-awaited="0"]"#)
            .await
            .ok_or_else(|| "no repeated step yet".to_owned())
    })
    .await;
    assert_eq!(
        browser
            .text(&repeated)
            .await
            .lines()
            .next()
            .unwrap_or_default(),
        "· stock_reserved (not awaited)"
    );
    assert_eq!(
        browser
            .find_all(r#"[data-recent] [data-test-id="t-repeat-1"] [data-step][data-awaited="1"]"#)
            .await
            .len(),
        2
    );
    assert!(browser
        .find(r#"[data-recent] [data-test-id="t-repeat-1"] [data-step][data-lag-ms="7.5"]"#)
        .await
        .is_some());

    // A business rule broken twice, for two users: the case counts its invariant failures,
    // the two runs are one kind (the rule), and the kind shows the newest run's rule, key
    // and values.
    for (id, user, open) in [
        ("t-invariant-1", "u-41", 110),
        ("t-invariant-2", "u-42", 120),
    ] {
        let invariant = Invariant {
            rule: RULE.to_owned(),
            key: user.to_owned(),
            values: [
                ("limit".to_owned(), json!(100)),
                ("open".to_owned(), json!(open)),
            ]
            .into_iter()
            .collect(),
        };
        let mut broken = report(
            ORDERS,
            id,
            Verdict::Fail,
            &[("order_received", 3.0)],
            Some(&invariant.to_string()),
            None,
        );
        broken.invariant = Some(invariant);
        record(broken);
    }
    let count = wait_for(
        "the invariant failures on the case",
        Duration::from_secs(10),
        || async {
            let count = browser
                .find(&format!("{orders} [data-invariant-failures]"))
                .await
                .ok_or_else(|| "no invariant failures shown yet".to_owned())?;
            let text = browser.text(&count).await;
            (text == "2").then_some(text).ok_or("not 2 yet".to_owned())
        },
    )
    .await;
    assert_eq!(count, "2");
    assert_eq!(
        browser
            .text_of(&format!(r#"{orders} [data-verdict-count="FAIL"]"#))
            .await,
        "FAIL 4",
        "a broken invariant is a FAIL"
    );
    assert_eq!(
        browser
            .text_of(&format!("{orders} [data-invariant-rules]"))
            .await,
        format!("broken rules since the start: {RULE} (2)")
    );
    let kind = format!(r#"{orders} [data-failure-kind="invariant: {RULE}"]"#);
    assert_eq!(
        browser
            .attribute(
                &browser
                    .find(&format!("{kind} [data-failure-count]"))
                    .await
                    .expect("the rule's kind"),
                "data-failure-count"
            )
            .await
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        browser
            .text_of(&format!("{kind} [data-invariant-rule]"))
            .await,
        RULE
    );
    assert_eq!(
        browser
            .text_of(&format!("{kind} [data-invariant-key]"))
            .await,
        "u-42"
    );
    assert_eq!(
        browser
            .text_of(&format!("{kind} [data-invariant-values]"))
            .await,
        "limit=100, open=120"
    );
    assert!(browser
        .text_of(&format!(
            r#"{kind} [data-test-id="t-invariant-2"] [data-error]"#
        ))
        .await
        .contains(r#"for key "u-42""#));
    // The refunds case broke nothing: no count shown.
    assert!(browser
        .find(&format!(
            r#"[data-case="{REFUNDS}"] [data-invariant-failures]"#
        ))
        .await
        .is_none());

    // The suite's tables, from api/status: kind and entries held by this instance.
    let exposure = wait_for("the tables section", Duration::from_secs(10), || async {
        browser
            .find(r#"#tables [data-table="sell_exposure"]"#)
            .await
            .ok_or_else(|| "no tables yet".to_owned())
    })
    .await;
    assert_eq!(
        browser.attribute(&exposure, "data-table").await.as_deref(),
        Some("sell_exposure")
    );
    assert_eq!(
        browser
            .text_of(r#"#tables [data-table="sell_exposure"] [data-table-kind]"#)
            .await,
        "partitioned"
    );
    assert_eq!(
        browser
            .text_of(r#"#tables [data-table="sell_exposure"] [data-table-entries]"#)
            .await,
        "0"
    );
    assert_eq!(
        browser
            .text_of(r#"#tables [data-table="limits"] [data-table-kind]"#)
            .await,
        "global"
    );

    browser.quit(&mut driver).await;
    drop(driver);
    server.abort();
}

/// What the page shows of a case's central control, read in one script.
const OBSERVE_CONTROL: &str = r#"
const [name] = arguments;
const block = [...document.querySelectorAll("[data-case]")]
  .find((e) => e.getAttribute("data-case") === name);
if (!block) return { found: false };
const text = (sel) => { const e = block.querySelector(sel); return e ? e.textContent : null; };
const attr = (sel, a) => { const e = block.querySelector(sel); return e ? e.getAttribute(a) : null; };
return {
  found: true,
  tag: text("[data-probability-tag]"),
  published: attr("[data-published]", "data-published"),
  publishedProbability: text("[data-published-probability]"),
  changedBy: attr("[data-changed-by]", "data-changed-by"),
  instances: [...block.querySelectorAll("tr[data-instance]")].map((r) => ({
    key: r.getAttribute("data-instance"),
    following: r.getAttribute("data-following"),
    applied: r.querySelector("[data-applied-probability]").textContent,
    source: r.querySelector("[data-source]").textContent,
    realized: r.querySelector("[data-realized]").textContent,
    badge: r.querySelector(".badge").textContent,
  })),
  problems: [...block.querySelectorAll("[data-instance-problem]")].map((r) => r.textContent),
  rolloutState: attr("[data-rollout]", "data-rollout-state"),
  rolloutCurrent: attr(".step-chip.current", "data-rollout-step"),
  rolloutChips: [...block.querySelectorAll(".step-chip")].map((c) => c.textContent),
  rolloutReason: text("[data-rollout-reason]"),
  rolloutBadge: text("[data-rollout-state-badge]"),
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_published_and_applied_settings_in_a_real_browser() {
    use livecheck_core::control::{CaseControl, Heartbeat, SettingsSource};
    use livecheck_harness::live::rollout::RolloutPlan;

    let client =
        LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
    let cases = [
        Case::new(ORDERS).expect(|_: Run, (): ()| async { Ok(()) }),
        Case::new(REFUNDS).expect(|_: Run, (): ()| async { Ok(()) }),
    ];
    let runner = Runner::new(
        Suite::new(cases).expect("suite"),
        client.clone(),
        RunnerConfig::default(),
    );
    let state = Arc::new(LiveState::new(runner, client));
    let now = Utc::now();
    let record = |case: &str, probability: f64, version: u64, by: &str| CaseControl {
        case: case.to_owned(),
        probability,
        active: true,
        sampling: Default::default(),
        test_expires_secs: Some(3600.0),
        version,
        changed_by: by.to_owned(),
        changed_at: now - TimeDelta::seconds(30),
        rollout: None,
    };
    state
        .control
        .apply(record(REFUNDS, 0.25, 1_000, "api:alice"), None);
    // Orders: a roll-out that went to step 3 (10%), then failed there and rolled back.
    let plan = RolloutPlan::new(
        vec![0.001, 0.01, 0.1, 1.0],
        Duration::from_secs(600),
        0.05,
        20,
    );
    let passed = livecheck_harness::live::rollout::StepCounts {
        runs: 20,
        failures: 0,
    };
    let step2 = plan
        .start(now - TimeDelta::minutes(22))
        .decide(passed, now - TimeDelta::minutes(12))
        .and_then(|p| p.decide(passed, now - TimeDelta::minutes(2)))
        .expect("two steps up");
    let back = step2
        .decide(
            livecheck_harness::live::rollout::StepCounts {
                runs: 20,
                failures: 5,
            },
            now,
        )
        .expect("roll back");
    let mut orders = record(ORDERS, back.probability(), 2_000, "rollout");
    orders.rollout = Some(back.to_json());
    state.control.apply(orders, None);
    let beat =
        |instance: &str, source: SettingsSource, probability: f64, every_ms: u64| Heartbeat {
            service: "orders-api".into(),
            instance: instance.into(),
            case: REFUNDS.into(),
            probability,
            active: true,
            source,
            requests: 400,
            tests_triggered: 100,
            at: Utc::now(),
            every_ms,
        };
    state.fleet.observe(beat(
        "a-1",
        SettingsSource::Control { version: 1_000 },
        0.25,
        60_000,
    ));
    // The second one is realized from its first heartbeat on: 100 more requests, 25 tests.
    let mut b = beat(
        "b-1",
        SettingsSource::Local {
            reason: "the control topic cannot be read".into(),
        },
        1.0,
        60_000,
    );
    state.fleet.observe(b.clone());
    b.requests += 100;
    b.tests_triggered += 25;
    state.fleet.observe(b);
    // A third one beats every 400 ms and then stops: stale after 1.2 s.
    state.fleet.observe(beat(
        "c-1",
        SettingsSource::Control { version: 1_000 },
        0.25,
        400,
    ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = web::router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let mut driver = Chromedriver::start();
    let browser = Browser::open(&mut driver).await;
    browser.navigate(&format!("http://{addr}/")).await;

    let refunds = wait_for("the refunds block", Duration::from_secs(10), || async {
        let seen = browser.execute(OBSERVE_CONTROL, json!([REFUNDS])).await;
        (seen["found"] == true && seen["instances"].as_array().map(Vec::len) == Some(3))
            .then_some(seen.clone())
            .ok_or(seen.to_string())
    })
    .await;
    assert_eq!(refunds["tag"], "published 25%", "{refunds}");
    assert_eq!(refunds["published"], "1000");
    assert_eq!(refunds["publishedProbability"], "probability 25%");
    assert_eq!(refunds["changedBy"], "api:alice");
    let a = &refunds["instances"][0];
    assert_eq!(a["key"], "orders-api/a-1");
    assert_eq!(a["following"], "following");
    assert_eq!(a["applied"], "25%");
    assert_eq!(a["source"], "control v1000");
    assert_eq!(a["badge"], "following");
    let b = &refunds["instances"][1];
    assert_eq!(b["following"], "not_following", "{b}");
    assert_eq!(b["applied"], "100%");
    assert_eq!(b["source"], "local (the control topic cannot be read)");
    assert_eq!(b["realized"], "25% of 100");
    assert!(
        refunds["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p.as_str().unwrap_or_default().contains(
                "applies its local defaults (the control topic cannot be read) while version 1000 is published"
            )),
        "{refunds}"
    );
    // The third instance goes stale without a reload.
    browser
        .execute(
            "window.__livecheckLoad = 'control'; return null;",
            json!([]),
        )
        .await;
    wait_for("c-1 stale", Duration::from_secs(10), || async {
        let seen = browser.execute(OBSERVE_CONTROL, json!([REFUNDS])).await;
        (seen["instances"][2]["following"] == "stale")
            .then_some(())
            .ok_or(seen.to_string())
    })
    .await;

    // The roll-out: its plan, where it stands, why.
    let orders = browser.execute(OBSERVE_CONTROL, json!([ORDERS])).await;
    assert_eq!(orders["rolloutState"], "rolled_back", "{orders}");
    assert_eq!(orders["rolloutBadge"], "rolled back");
    assert_eq!(orders["rolloutCurrent"], "1");
    assert_eq!(orders["rolloutChips"], json!(["0.1%", "1%", "10%", "100%"]));
    assert!(
        orders["rolloutReason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("rolled back: step 3 of 4 (10%) failed with 20 runs, 5 failed"),
        "{orders}"
    );
    assert_eq!(orders["tag"], "published 1%");

    // A change published after the page loaded shows up without a reload.
    state
        .control
        .apply(record(REFUNDS, 0.5, 1_001, "api:bob"), None);
    let seen = wait_for("version 1001", Duration::from_secs(10), || async {
        let seen = browser.execute(OBSERVE_CONTROL, json!([REFUNDS])).await;
        (seen["published"] == "1001")
            .then_some(seen.clone())
            .ok_or(seen.to_string())
    })
    .await;
    assert_eq!(seen["changedBy"], "api:bob");
    assert_eq!(seen["publishedProbability"], "probability 50%");
    // a-1 still applies version 1000, and beats every minute: catching up for 3 minutes.
    assert_eq!(seen["instances"][0]["following"], "catching_up", "{seen}");
    assert_eq!(seen["instances"][0]["badge"], "catching up");
    assert_eq!(
        browser
            .execute("return window.__livecheckLoad || null;", json!([]))
            .await,
        "control",
        "the page was reloaded"
    );

    browser.quit(&mut driver).await;
    drop(driver);
    server.abort();
}

/// What the page shows of a case's history, read in one script.
const OBSERVE_HISTORY: &str = r#"
const [name] = arguments;
const block = [...document.querySelectorAll("[data-case]")]
  .find((e) => e.getAttribute("data-case") === name);
if (!block) return { found: false };
const text = (e, sel) => { const x = sel ? e.querySelector(sel) : e; return x ? x.textContent : null; };
const shown = (e) => e.getClientRects().length > 0;
const stale = document.getElementById("stale");
return {
  found: true,
  health: block.getAttribute("data-health"),
  headline: text(block, "[data-health-reason]"),
  enteredBecause: block.querySelector("[data-health-reason]").getAttribute("title"),
  consecutive: text(block, "[data-consecutive-failures]"),
  rate5m: text(block, '[data-pass-rate-window="5m"]'),
  rate1h: text(block, '[data-pass-rate-window="1h"]'),
  rateSinceStart: text(block, "[data-pass-rate]"),
  failureKinds: [...block.querySelectorAll("[data-failure-kind]")].map((k) => ({
    verdict: k.getAttribute("data-failure-verdict"),
    kind: k.getAttribute("data-failure-kind"),
    count: k.querySelector("[data-failure-count]").getAttribute("data-failure-count"),
    runs: [...k.querySelectorAll("li.run")].map((r) => ({
      id: r.getAttribute("data-test-id"),
      error: text(r, "[data-error]"),
      shown: shown(r),
    })),
  })),
  transitions: [...block.querySelectorAll("tr[data-transition-to]")].map((t) => ({
    from: t.getAttribute("data-transition-from"),
    to: t.getAttribute("data-transition-to"),
    reason: text(t, "[data-transition-reason]"),
  })),
  recent: [...block.querySelectorAll("[data-recent] li.run")].map((r) => ({
    id: r.getAttribute("data-test-id"),
    verdict: r.getAttribute("data-verdict"),
    shown: shown(r),
  })),
  hiddenNote: (() => { const n = block.querySelector("[data-hidden-passing]"); return n && shown(n) ? n.textContent : null; })(),
  failuresKept: document.getElementById("failures-kept").textContent,
  stale: document.body.getAttribute("data-stale"),
  staleBanner: stale.hidden ? null : stale.textContent,
  conn: document.getElementById("conn").getAttribute("data-state"),
};
"#;

/// The on-call view: a failure stays listed after a minute and more than 20 runs of
/// passing traffic, with the transition to FAIL and back; the failures-only filter; pass
/// rates over 5 minutes apart from since the start; stale data marked when the API fails.
/// Report times are set in the past (a minute is replayed, not waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_keeps_a_failure_and_its_transitions_after_a_minute_of_passing_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::response::IntoResponse as _;

    let client =
        LiveCheck::new(KafkaConfig::new("127.0.0.1:1"), Topics::default()).expect("client");
    let cases = [
        Case::new(ORDERS)
            .max_consecutive_failures(3)
            .expect(|_: Run, (): ()| async { Ok(()) }),
        Case::new(REFUNDS).expect(|_: Run, (): ()| async { Ok(()) }),
    ];
    let runner = Runner::new(
        Suite::new(cases).expect("suite"),
        client.clone(),
        RunnerConfig::default(),
    );
    let state = Arc::new(LiveState::new(runner, client));
    let (alerts, _alerts_rx) = tokio::sync::mpsc::channel(64);
    let rules = HealthRules {
        hold_down: Duration::ZERO,
        recovery_passes: 2,
        ..HealthRules::default()
    };
    let health = HealthMonitor::new(state.clone(), rules, alerts);
    let record = |r: Report| {
        let r = Arc::new(r);
        state.record(r.clone());
        health.on_report(&r);
    };
    let now = Utc::now();
    let ago = |secs: i64| now - TimeDelta::seconds(secs);
    let pass = |id: &str, at: DateTime<Utc>| {
        finished_at(
            report(
                ORDERS,
                id,
                Verdict::Pass,
                &[("order_saved", 4.0)],
                None,
                None,
            ),
            at,
        )
    };
    let error = "order 1001 has side BUY, expected SELL";
    let fail = |id: &str, at: DateTime<Utc>| {
        finished_at(
            report(
                ORDERS,
                id,
                Verdict::Fail,
                &[("order_saved", 6.0)],
                Some(error),
                None,
            ),
            at,
        )
    };
    // Ten minutes ago, 20 passes: in the hour and since the start, not in 5 minutes.
    for i in 0..20 {
        record(pass(&format!("t-old-{i}"), ago(600)));
    }
    // 75 s ago, three failures: FAIL.
    for i in 1..=3 {
        record(fail(&format!("t-fail-{i}"), ago(76 - i)));
    }

    // The API can be made to fail (503), as if LiveCheck were gone.
    let api_down = Arc::new(AtomicBool::new(false));
    let down = api_down.clone();
    let router = web::router(state.clone()).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let down = down.load(Ordering::SeqCst);
            async move {
                if down && request.uri().path().starts_with("/api/") {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                } else {
                    next.run(request).await
                }
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let mut driver = Chromedriver::start();
    let browser = Browser::open(&mut driver).await;
    browser.navigate(&format!("http://{addr}/")).await;
    let observe = || async { browser.execute(OBSERVE_HISTORY, json!([ORDERS])).await };

    // FAIL, and the headline says as many failures in a row as the count shown, also
    // after more failures than the threshold came.
    let seen = wait_for("FAIL with 3 in a row", Duration::from_secs(10), || async {
        let seen = observe().await;
        (seen["health"] == "FAIL" && seen["consecutive"] == "3")
            .then_some(seen.clone())
            .ok_or(seen.to_string())
    })
    .await;
    assert_eq!(
        seen["headline"], "3 runs in a row did not pass (FAIL at 3)",
        "{seen}"
    );
    record(fail("t-fail-4", ago(72)));
    record(fail("t-fail-5", ago(71)));
    let seen = wait_for("5 in a row", Duration::from_secs(10), || async {
        let seen = observe().await;
        (seen["consecutive"] == "5")
            .then_some(seen.clone())
            .ok_or(seen.to_string())
    })
    .await;
    assert_eq!(
        seen["headline"], "5 runs in a row did not pass (FAIL at 3)",
        "{seen}"
    );
    assert_eq!(
        seen["enteredBecause"],
        "entered because: 3 runs in a row did not pass"
    );

    // Then a minute of passing traffic, 30 runs (more than the 20 recent runs kept).
    for i in 0..30 {
        record(pass(&format!("t-pass-{i}"), ago(60 - 2 * i)));
    }
    let seen = wait_for("OK again", Duration::from_secs(10), || async {
        let seen = observe().await;
        (seen["health"] == "OK" && seen["recent"][0]["id"] == "t-pass-29")
            .then_some(seen.clone())
            .ok_or(seen.to_string())
    })
    .await;

    // (a) The failure is still listed, with its test id and message, though no recent run
    // shows it any more.
    let recent = seen["recent"].as_array().expect("recent");
    assert_eq!(recent.len(), 20, "{seen}");
    assert!(recent.iter().all(|r| r["verdict"] == "PASS"), "{seen}");
    let kinds = seen["failureKinds"].as_array().expect("kinds");
    assert_eq!(kinds.len(), 1, "{seen}");
    assert_eq!(kinds[0]["verdict"], "FAIL");
    assert_eq!(kinds[0]["kind"], "order # has side BUY, expected SELL");
    assert_eq!(kinds[0]["count"], "5");
    assert_eq!(kinds[0]["runs"][0]["id"], "t-fail-5", "{seen}");
    assert_eq!(kinds[0]["runs"][0]["error"], error);
    assert_eq!(kinds[0]["runs"].as_array().map(Vec::len), Some(5));
    assert_eq!(seen["failuresKept"], "5");
    // Its report is still served, though 30 runs came after it.
    let link = browser
        .find(r#"[data-failure-kind] [data-test-id="t-fail-5"] a"#)
        .await
        .expect("the failure's link");
    assert_eq!(
        browser.attribute(&link, "href").await.as_deref(),
        Some("api/runs/t-fail-5")
    );
    let run: Value = reqwest::get(format!("http://{addr}/api/runs/t-fail-1"))
        .await
        .expect("run")
        .json()
        .await
        .expect("json");
    assert_eq!(run["verdict"], "FAIL", "{run}");

    // (b) The transitions, newest first, with their reasons.
    assert_eq!(
        seen["transitions"],
        json!([
            {"from": "FAIL", "to": "OK", "reason": "runs pass"},
            {"from": "OK", "to": "FAIL", "reason": "3 runs in a row did not pass"},
        ]),
        "{seen}"
    );
    assert_eq!(seen["headline"], "runs pass");
    assert_eq!(seen["consecutive"], "0");

    // (d) Over 5 minutes: 30 of 35 passed; in the hour and since the start: 50 of 55.
    assert_eq!(seen["rate5m"], "85.7%", "{seen}");
    assert_eq!(seen["rate1h"], "90.9%", "{seen}");
    assert_eq!(seen["rateSinceStart"], "90.9%", "{seen}");

    // (c) Failures only: the passing runs are hidden, the failures are not.
    let filter = browser.find("#failures-only").await.expect("the filter");
    browser.click(&filter).await;
    let seen = observe().await;
    assert!(
        seen["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .all(|r| r["shown"] == false),
        "{seen}"
    );
    assert_eq!(seen["failureKinds"][0]["runs"][0]["shown"], true, "{seen}");
    assert_eq!(
        seen["hiddenNote"], "20 passing or skipped runs hidden (failures only)",
        "{seen}"
    );
    assert_eq!(
        browser.execute("return location.hash;", json!([])).await,
        "#failures-only"
    );
    browser.click(&filter).await;
    let seen = observe().await;
    assert!(
        seen["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .all(|r| r["shown"] == true),
        "{seen}"
    );

    // (e) The API fails: the page says since when its data is stale, and keeps it.
    assert!(seen["staleBanner"].is_null(), "{seen}");
    api_down.store(true, Ordering::SeqCst);
    let seen = wait_for("the stale banner", Duration::from_secs(15), || async {
        let seen = observe().await;
        (seen["stale"] == "true")
            .then_some(seen.clone())
            .ok_or(seen.to_string())
    })
    .await;
    let banner = seen["staleBanner"].as_str().unwrap_or_default();
    assert!(banner.starts_with("STALE since "), "{banner}");
    assert!(banner.contains("HTTP 503"), "{banner}");
    assert_eq!(seen["conn"], "error");
    assert_eq!(
        seen["failureKinds"][0]["runs"][0]["id"], "t-fail-5",
        "{seen}"
    );
    assert_eq!(seen["recent"].as_array().map(Vec::len), Some(20));
    // And back.
    api_down.store(false, Ordering::SeqCst);
    wait_for("live again", Duration::from_secs(15), || async {
        let seen = observe().await;
        (seen["stale"].is_null() && seen["staleBanner"].is_null() && seen["conn"] == "live")
            .then_some(())
            .ok_or(seen.to_string())
    })
    .await;

    browser.quit(&mut driver).await;
    drop(driver);
    server.abort();
}
