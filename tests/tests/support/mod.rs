//! What the live-mode tests share: waiting for a condition, and an alert webhook receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};

/// Waits until `check` holds (polled every 100 ms); panics naming `what` after `within`.
/// Returns how long it took.
pub(crate) async fn eventually(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// An alert webhook on 127.0.0.1: its URL, and the JSON bodies POSTed to it.
pub(crate) async fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let app = Router::new().route(
        "/alerts",
        post(move |Json(body): Json<serde_json::Value>| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}
