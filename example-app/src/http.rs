//! The HTTP front.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use livecheck_core::connectivity::ConnectivityContext;
use livecheck_core::http::{RequestBuilderExt as _, TestContextLayer};
use livecheck_core::kafka;
use livecheck_core::Connectivity;
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::app::Shared;
use crate::faults::FaultConfig;
use crate::model::{ApiError, Order, SellDecision, SellOrder, Side};
use crate::signals::{ORDER_CASE, SELL_ACCEPTED, SELL_REFUSED};

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    producer: kafka::Producer<ConnectivityContext>,
}

/// The routes: `/order/init/{side}/` (`?user=NAME` names the user, `?quantity=N` the
/// quantity, 1 by default, `?fake=1` asks for a synthetic order; a sell above the user's
/// sell limit is refused with 409), `/order/create/`, `/healthz`, and `/admin/faults` when
/// the test hooks are on ([`crate::AppConfig::test_hooks`]; otherwise it answers 404).
pub fn router(shared: Arc<Shared>) -> Router {
    // Orders produced inside a test carry its context, and the hop is recorded.
    let producer = shared.livecheck.clone().with_service("order-api").producer(
        shared
            .config
            .kafka
            .producer_config()
            .create_with_context(Connectivity::new(shared.config.kafka.brokers.clone()).context())
            .expect("producer settings were accepted by the LiveCheck client already"),
    );
    let state = AppState {
        shared: shared.clone(),
        producer,
    };
    let mut router = Router::new()
        .route("/order/init/{side}/", get(init_order))
        .route("/order/init/{side}", get(init_order))
        .route("/order/create/", post(create_order))
        .route("/healthz", get(|| async { "ok" }));
    if shared.config.test_hooks {
        router = router.route("/admin/faults", get(get_faults).post(set_faults));
    }
    router
        .layer(TestContextLayer::new(shared.livecheck.clone()))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct InitQuery {
    #[serde(default)]
    fake: Option<String>,
    /// The user placing the order; a fresh one per order when absent.
    #[serde(default)]
    user: Option<String>,
    /// How many shares; 1 when absent.
    #[serde(default)]
    quantity: Option<String>,
}

/// The most shares one order may carry.
const MAX_QUANTITY: u64 = 1_000_000;

async fn init_order(
    State(state): State<AppState>,
    Path(side): Path<String>,
    Query(query): Query<InitQuery>,
) -> Response {
    let shared = &state.shared;
    if shared.faults.http_503() {
        warn!("fault http-503: refusing /order/init/");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable (fault http-503 is on)",
        );
    }
    let mut side: Side = match side.parse() {
        Ok(side) => side,
        Err(message) => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    if shared.faults.misread_side() {
        warn!("fault misread-side: reading the side as its opposite");
        side = side.flipped();
    }
    let asked_fake = matches!(query.fake.as_deref(), Some("1" | "true" | "yes"));
    if asked_fake && !shared.config.test_hooks {
        debug!("ignored ?fake=1: the test hooks are off");
    }
    let fake = asked_fake && shared.config.test_hooks;
    let user_id = match query.user {
        Some(user) if user.is_empty() || user.len() > 128 => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, "user must be 1 to 128 bytes");
        }
        Some(user) => user,
        None => format!("user-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    let quantity = match query.quantity.as_deref().map(str::parse::<u64>) {
        None => 1,
        Some(Ok(q)) if (1..=MAX_QUANTITY).contains(&q) => q,
        Some(_) => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                format!("quantity must be a whole number from 1 to {MAX_QUANTITY}"),
            );
        }
    };
    if side == Side::Sell {
        if let Err(refused) = check_sell_limit(shared, &user_id, quantity).await {
            shared
                .counters
                .sells_refused
                .fetch_add(1, Ordering::Relaxed);
            info!(user_id = %refused.user_id, quantity, sold = refused.sold, limit = refused.limit, "sell order refused: above the sell limit");
            return error(
                StatusCode::CONFLICT,
                format!(
                    "sell limit exceeded: user {} has sold {} of {}; {} more would make {}",
                    refused.user_id,
                    refused.sold,
                    refused.limit,
                    quantity,
                    refused.sold.saturating_add(quantity)
                ),
            );
        }
    }
    // A test context that came with the request names the order (the harness's test id).
    let order_id = livecheck_core::current_test()
        .filter(|c| c.case == ORDER_CASE)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |c| c.id.clone());
    let order = Order {
        id: order_id.clone(),
        user_id,
        side,
        fake,
        quantity,
    };
    // Sampled by user: every order of a sampled user is a test, and any other service
    // sampling this case by user decides the same. The test's arguments: the side this
    // service read, unless the request's test context came with the side its stimulus
    // chose (that one is kept).
    let test = shared.trigger.maybe_trigger_for_key_with_id(
        &shared.livecheck,
        &order.user_id,
        Some(&order_id),
        &side,
    );
    let post = async {
        shared
            .http
            .post(format!("{}/order/create/", shared.base_url))
            .json(&order)
            .test_context()
            .timeout(Duration::from_secs(30))
            .send()
            .await
    };
    let result = match test {
        Some(context) => shared.livecheck.scope(context, post).await,
        None => post.await,
    };
    match result {
        Ok(response) if response.status().is_success() => match response.json::<Order>().await {
            Ok(created) => Json(created).into_response(),
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                format!("/order/create/ answered an unreadable body: {e}"),
            ),
        },
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            error(
                StatusCode::BAD_GATEWAY,
                format!("/order/create/ answered {status}: {body}"),
            )
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("/order/create/ failed: {e}"),
        ),
    }
}

/// Holds a sell order against the user's sell limit (unless fault `ignore-sell-limit` is
/// on): the user's new total when accepted, the decision when refused. Sell orders are the
/// tests of case `orders.sell_limit`, sampled by user (a test context of the case that came
/// with the request is kept, with its arguments); `sell_accepted` or `sell_refused` is sent
/// before the next sell is decided, so a user's signals leave in the order of the decisions.
async fn check_sell_limit(
    shared: &Shared,
    user: &str,
    quantity: u64,
) -> Result<SellDecision, SellDecision> {
    let arguments = SellOrder {
        user: user.to_owned(),
        quantity,
    };
    let test = shared
        .sell_limit_trigger
        .maybe_trigger_for_key(&shared.livecheck, user, &arguments);
    let enforce = !shared.faults.ignore_sell_limit();
    let announce = |decision: &Result<SellDecision, SellDecision>| {
        let decision = decision.clone();
        let send = async move {
            match &decision {
                Ok(accepted) => SELL_ACCEPTED.send(accepted).await,
                Err(refused) => SELL_REFUSED.send(refused).await,
            }
        };
        let livecheck = shared.livecheck.clone();
        async move {
            match test {
                Some(context) => livecheck.scope(context, send).await,
                None => send.await,
            }
        }
    };
    shared
        .sold
        .sell(user, quantity, shared.config.sell_limit, enforce, announce)
        .await
}

async fn create_order(
    State(state): State<AppState>,
    body: Result<Json<Order>, JsonRejection>,
) -> Response {
    let shared = &state.shared;
    if shared.faults.http_503() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable (fault http-503 is on)",
        );
    }
    let mut order = match body {
        Ok(Json(order)) => order,
        Err(rejection) => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed order: {}", rejection.body_text()),
            );
        }
    };
    if order.fake && !shared.config.test_hooks {
        // Only the test hooks make fake orders; without them every order is real.
        order.fake = false;
    }
    if order.id.is_empty() || order.id.len() > 128 {
        shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::BAD_REQUEST, "order id must be 1 to 128 bytes");
    }
    if let Some(context) = livecheck_core::current_test() {
        if context.case == ORDER_CASE && context.id != order.id {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "test context {} does not belong to order {}",
                    context.id, order.id
                ),
            );
        }
    }
    if shared.faults.flip_side() {
        warn!(order_id = %order.id, "fault flip-side: flipping the order side");
        order.side = order.side.flipped();
    }
    let payload = match serde_json::to_vec(&order) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("order does not serialize: {e}"),
            )
        }
    };
    let record = FutureRecord::to(&shared.config.topics.orders)
        .key(&order.id)
        .payload(&payload);
    match state.producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => {
            shared
                .counters
                .orders_created
                .fetch_add(1, Ordering::Relaxed);
            info!(order_id = %order.id, side = order.side.as_str(), "order created");
            Json(order).into_response()
        }
        Err((e, _)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not write the order to Kafka: {e}"),
        ),
    }
}

async fn get_faults(State(state): State<AppState>) -> Json<FaultConfig> {
    Json(state.shared.faults.get())
}

async fn set_faults(
    State(state): State<AppState>,
    body: Result<Json<FaultConfig>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(config)) => {
            state.shared.faults.set(&config);
            Json(state.shared.faults.get()).into_response()
        }
        Err(rejection) => error(
            StatusCode::BAD_REQUEST,
            format!("malformed fault switches: {}", rejection.body_text()),
        ),
    }
}
