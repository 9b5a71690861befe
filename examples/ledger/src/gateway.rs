//! The gateway: `GET /transfer/{from}/{to}/{cents}` accepts a transfer and puts it on the
//! `transfers` topic. An incoming test context (HTTP headers) scopes the request; the
//! record carries it on.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use livecheck_core::http::TestContextLayer;
use livecheck_core::kafka::Producer;
use livecheck_core::{LiveCheck, Trigger};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::settings::Settings;
use crate::signals::{Transfer, ACCEPTED, TRANSFER};

#[derive(Clone)]
struct Gateway {
    client: LiveCheck,
    trigger: Trigger,
    producer: Producer,
    topic: String,
}

/// The gateway's routes on `settings`; `probability` of real transfers becoming tests.
pub fn router(settings: &Settings, probability: f64) -> anyhow::Result<Router> {
    let client = settings.client("gateway")?;
    let producer: FutureProducer = settings
        .kafka
        .producer_config()
        .set("linger.ms", "0")
        .create()?;
    let gateway = Gateway {
        producer: client.producer(producer),
        trigger: Trigger::new(TRANSFER).probability(probability),
        topic: settings.transfers_topic(),
        client: client.clone(),
    };
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/transfer/{from}/{to}/{cents}", get(transfer))
        .with_state(gateway)
        .layer(TestContextLayer::new(client)))
}

async fn transfer(
    State(gateway): State<Gateway>,
    Path((from, to, amount)): Path<(String, String, i64)>,
) -> Result<&'static str, (StatusCode, String)> {
    let transfer = Transfer { from, to, amount };
    let accept = async {
        ACCEPTED.send(&transfer).await;
        let payload = serde_json::to_vec(&transfer).map_err(|e| e.to_string())?;
        gateway
            .producer
            .send(
                FutureRecord::to(&gateway.topic)
                    .key(&transfer.from)
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e.to_string())?;
        Ok::<_, String>("accepted")
    };
    let accepted = match gateway.trigger.maybe_trigger(&gateway.client, &transfer) {
        Some(context) => gateway.client.scope(context, accept).await,
        None => accept.await,
    };
    accepted.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
}
