//! The balance store (a sidecar, as a database would be): `GET /add/{account}/{cents}`
//! adds to a balance and answers the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

/// The store's routes.
pub fn router() -> Router {
    let balances: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/add/{account}/{cents}",
            get(
                |State(balances): State<Arc<Mutex<HashMap<String, i64>>>>,
                 Path((account, cents)): Path<(String, i64)>| async move {
                    let mut balances = balances.lock().unwrap_or_else(|p| p.into_inner());
                    let balance = balances.entry(account).or_default();
                    *balance += cents;
                    Json(*balance)
                },
            ),
        )
        .with_state(balances)
}
