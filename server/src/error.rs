//! The service's errors: why it cannot start ([`Error`]), and a request's
//! error response ([`ApiError`]).

use std::net::SocketAddr;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("access file {path}: {detail}")]
    Access { path: String, detail: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(
        "{0} is not a loopback address: the service listens on loopback unless told otherwise \
         (--allow-remote), and then only with an access file"
    )]
    NotLoopback(SocketAddr),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An error response: JSON `{"code", "message"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: std::borrow::Cow<'static, str>,
    message: String,
    /// Seconds to wait before trying again (`Retry-After`), for a 429 or 503.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        ApiError { status, code: code.into(), message: message.into(), retry_after }
    }

    /// 503: the service is too busy now; try again in a second.
    pub(crate) fn busy(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
    }

    /// 429: the client made more requests than its rate allows; it may make
    /// another after `wait`.
    pub(crate) fn rate_limited(client: &str, wait: std::time::Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited".into(),
            message: format!("{client} made more requests than its rate allows; try again in {seconds} s"),
            retry_after: Some(seconds.max(1)),
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code (`bad_request`, `no_agent`, `busy`, …).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// What went wrong, as the response body's `message` says it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An error another host of the cluster answered (status, code and
    /// message as it gave them).
    pub(crate) fn remote(status: u16, code: String, message: String) -> ApiError {
        // An error is 4xx or 5xx; anything else another host says is its fault.
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        ApiError { status, code: code.into(), message, retry_after }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({ "code": self.code, "message": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: say which scheme the service takes.
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<elex_ran::Error> for ApiError {
    fn from(e: elex_ran::Error) -> ApiError {
        use elex_ran::Error as E;
        let (status, code) = match &e {
            E::NoQuestion | E::Feedback(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            E::NoAgent(_) => (StatusCode::NOT_FOUND, "no_agent"),
            E::Plugin(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_plugin"),
            E::Workflow(_) => (StatusCode::BAD_REQUEST, "bad_workflow"),
            E::Host(elex_ran::host::Error::Graph(g)) => {
                use elex_ran::host::memgraph::GraphError as G;
                match g {
                    G::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                    G::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
                    G::Invalid(_) | G::LimitExceeded(_) => (StatusCode::BAD_REQUEST, "bad_request"),
                    G::QuotaExceeded(_) => (StatusCode::CONFLICT, "quota_exceeded"),
                    G::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                }
            }
            E::Host(h) if h.is_refused_input() => (StatusCode::BAD_REQUEST, "bad_request"),
            E::Host(h) => match h {
                elex_ran::host::Error::Busy { .. } | elex_ran::host::Error::Capacity { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy")
                }
                elex_ran::host::Error::NoAgent(_) => (StatusCode::NOT_FOUND, "no_agent"),
                elex_ran::host::Error::Unfit { .. }
                | elex_ran::host::Error::Compile { .. }
                | elex_ran::host::Error::Manifest { .. }
                | elex_ran::host::Error::TooLarge { .. }
                | elex_ran::host::Error::WrongWorld { .. }
                | elex_ran::host::Error::ReadComponent { .. }
                | elex_ran::host::Error::Registry(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_plugin"),
                elex_ran::host::Error::Budget { .. }
                | elex_ran::host::Error::Trap { .. }
                | elex_ran::host::Error::Agent { .. }
                | elex_ran::host::Error::Failed { .. } => (StatusCode::BAD_GATEWAY, "agent_failed"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
