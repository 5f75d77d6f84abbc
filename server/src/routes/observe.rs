//! Watching the service: metrics, the event stream, every request
//! counted (and held to its client's rate), and the JSON 404 and 405.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::{ApiError, AppState, Caller, Reader, metrics};

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "service", security(("bearer" = [])), responses((status = 200, description = "Prometheus text (format 0.0.4): requests by route and status, agents' calls, errors, latency, fuel, memory, evictions, recycles", content_type = "text/plain", body = String), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn prometheus(
    State(s): State<AppState>,
    _caller: Caller<Reader>,
) -> Result<Response, ApiError> {
    let shared = Arc::clone(&s);
    let text = s
        .run(move |_| {
            shared.metrics.render().map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("metrics: {e}"))
            })
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// `GET /v1/events`: the runtime's events as Server-Sent Events, each a
/// JSON object named by its `event` (`query_answered`, `agent_rewarded`,
/// `agent_spawned`, …); `lagged` with the count of events a slow reader
/// missed. The stream ends when the service stops.
#[utoipa::path(get, path = "/v1/events", tag = "service", security(("bearer" = [])), responses((status = 200, description = "Server-Sent Events: each a JSON object named by its `event` (query_answered, agent_rewarded, agent_spawned, agent_evicted, agent_recycled, agent_retired, …); `lagged` with the count a slow reader missed", content_type = "text/event-stream", body = String), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn events(State(s): State<AppState>, _caller: Caller<Reader>) -> Result<Response, ApiError> {
    let open = Arc::clone(&s.streams).try_acquire_owned().map_err(|_| {
        ApiError::busy(format!("{} event streams are open; try again later", crate::MAX_EVENT_STREAMS))
    })?;
    let mut stopping = s.stopping.clone();
    let stream = tokio_stream::wrappers::BroadcastStream::new(s.runtime.subscribe())
        .map(move |item| {
            // The stream's place among those open, given back when it ends.
            let _open = &open;
            let event = match item {
                Ok(event) => {
                    let data = serde_json::to_value(&event).unwrap_or_default();
                    let name = data["event"].as_str().unwrap_or("event").to_string();
                    sse::Event::default().event(name).json_data(&data).unwrap_or_default()
                }
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    sse::Event::default().event("lagged").data(n.to_string())
                }
            };
            Ok::<_, std::convert::Infallible>(event)
        })
        .take_until(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
    Ok(Sse::new(stream).keep_alive(sse::KeepAlive::default()).into_response())
}

/// Around every routed request: the rate limit, then the request counted
/// in the metrics by its route template, method and status.
pub(crate) async fn observe(
    State(s): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route =
        request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let limited =
        s.rate.as_ref().filter(|_| !matches!(route.as_str(), "/health" | "/ready")).and_then(|rate| {
            let client = match s.access.client(request.headers()) {
                Some(name) => format!("token {name}"),
                None => match request.extensions().get::<ConnectInfo<SocketAddr>>() {
                    Some(ConnectInfo(addr)) => format!("address {}", addr.ip()),
                    None => String::from("anonymous"),
                },
            };
            rate.take(&client).err().map(|wait| ApiError::rate_limited(&client, wait))
        });
    let response = match limited {
        Some(e) => e.into_response(),
        None => next.run(request).await,
    };
    s.metrics.record(method.as_str(), &route, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /v1/openapi.json`: this service's OpenAPI document (open to all:
/// it holds no data).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service", responses((status = 200, description = "This document", body = serde_json::Value)))]
pub(crate) async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOCUMENT.get_or_init(crate::openapi::document).clone();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see the README's service section")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
