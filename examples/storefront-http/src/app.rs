//! The HTTP surface (an axum `Router`):
//!
//! - `POST /checkout` with `{"lines": [{"sku": "sku-1", "qty": 2}]}`:
//!   201 `{"order": 17}`; 409 `{"error": "out of stock", "sku": ...}`;
//!   503 (with `Retry-After`) when the SKUs stay locked past the timeout or
//!   the shop is shutting down; 400 for anything that is not such an order.
//! - `GET /orders/{id}`: 200 `{"order": 17, "status": "pending" | "paid" |
//!   "failed"}`, or 404.
//! - `GET /metrics`: the counters, stock and lock statistics, as JSON.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::checkout::{CheckoutRequest, Outcome, checkout};
use crate::shop::Shop;

/// Largest request body accepted (a full order is a few hundred bytes).
const BODY_BYTES_MAX: usize = 16 * 1024;

/// The shop's routes.
pub fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/checkout", post(post_checkout))
        .route("/orders/{id}", get(get_order))
        .route("/metrics", get(get_metrics))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(shop)
}

/// `POST /checkout`. The body is parsed here rather than by axum's `Json`
/// extractor so that every malformed body is a 400 (the extractor answers
/// 415 or 422 for some).
async fn post_checkout(State(shop): State<Arc<Shop>>, body: Bytes) -> Response {
    let request: CheckoutRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            shop.counters.bad_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": error.to_string() }))).into_response();
        }
    };
    match checkout(&shop, request).await {
        Outcome::Placed(order) => (StatusCode::CREATED, Json(json!({ "order": order }))).into_response(),
        Outcome::OutOfStock(sku) => {
            (StatusCode::CONFLICT, Json(json!({ "error": "out of stock", "sku": sku }))).into_response()
        }
        Outcome::Unavailable(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], Json(json!({ "error": reason })))
                .into_response()
        }
        Outcome::Invalid(reason) => (StatusCode::BAD_REQUEST, Json(json!({ "error": reason }))).into_response(),
    }
}

/// `GET /orders/{id}`: a malformed id is axum's 400.
async fn get_order(State(shop): State<Arc<Shop>>, Path(order): Path<u64>) -> Response {
    let status = shop.statuses.lock().expect("no panics under this lock").get(&order).copied();
    match status {
        Some(status) => Json(json!({ "order": order, "status": status })).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": "no such order" }))).into_response(),
    }
}

/// `GET /metrics`.
async fn get_metrics(State(shop): State<Arc<Shop>>) -> Response {
    Json(shop.metrics()).into_response()
}
