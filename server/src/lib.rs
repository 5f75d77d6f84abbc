//! `elex serve`: the [`Runtime`] as a long-running HTTP + JSON service.
//!
//! One runtime is started once and shared; every request that runs guest
//! code does so on tokio's blocking pool (a runtime call blocks its thread
//! for the length of a guest call, bounded by the agent's time budget).
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /health` | none | the process is up |
//! | `GET /ready` | none | the agents are live: their count |
//! | `POST /v1/query` | operator | `{"text", "agent"?}` → the object `elex query --json` prints |
//! | `POST /v1/feedback` | operator | `{"query_id", "reward"?, "agent"?, "operator"?}` |
//! | `GET /v1/agents` | read | every agent: features, then plugins |
//! | `GET /v1/agents/{id}` | read | one agent, with its use across runs |
//!
//! Access: bearer tokens from a file ([`Access::from_file`]), each with a
//! role (`read` < `operator` < `admin`); without a token a request has the
//! file's `anonymous` role, if any. Tokens are compared by their blake3
//! digests (constant time) and never logged.
//!
//! Limits ([`Limits`]): request body size (413), time per request (503 with
//! `Retry-After`; the guest call itself is held to its own budget), and a
//! bound on requests in flight (503 with `Retry-After` at once, never a
//! queue). Every error is JSON `{"code", "message"}` with its status.
//!
//! On the shutdown signal the server stops accepting, lets requests in
//! flight finish, then stores every agent's snapshot ([`serve`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use elex_ran::Runtime;
use serde::Deserialize;
use serde_json::json;

/// A role a token (or anonymous access) has; each includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Agents, health.
    Read,
    /// Queries and feedback, and what `read` may.
    Operator,
    /// Everything.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// Who may do what: bearer tokens with roles.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Each token's blake3 digest, its name (for logs) and role.
    tokens: Vec<(blake3::Hash, String, Role)>,
    /// The role of a request without a token (`None`: refused).
    anonymous: Option<Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    anonymous: Option<Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    role: Role,
}

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

/// Largest access file read.
const MAX_ACCESS_FILE: u64 = 1 << 20;
/// Shortest token accepted.
const MIN_TOKEN_CHARS: usize = 16;

impl Access {
    /// Everyone may do everything: for a loopback service without an access
    /// file.
    pub fn open() -> Access {
        Access { tokens: Vec::new(), anonymous: Some(Role::Admin) }
    }

    /// Reads an access file: JSON `{"tokens": [{"name", "token", "role"}],
    /// "anonymous": role?}`. It must be a regular file readable by its
    /// owner only (0600), as it holds secrets; each token at least 16
    /// characters, names and tokens unique.
    pub fn from_file(path: &Path) -> Result<Access, Error> {
        let fail = |detail: String| Error::Access { path: path.display().to_string(), detail };
        let meta = std::fs::symlink_metadata(path).map_err(|e| fail(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(fail(String::from("not a regular file")));
        }
        if meta.len() > MAX_ACCESS_FILE {
            return Err(fail(format!("{} bytes; at most {MAX_ACCESS_FILE}", meta.len())));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!("permissions {mode:o}: others can read its tokens; chmod 600 it")));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let file: AccessFile = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let mut tokens = Vec::new();
        for t in file.tokens {
            if t.token.chars().count() < MIN_TOKEN_CHARS {
                return Err(fail(format!("token {:?} is shorter than {MIN_TOKEN_CHARS} characters", t.name)));
            }
            let digest = blake3::hash(t.token.as_bytes());
            if tokens.iter().any(|(d, n, _)| *d == digest || *n == t.name) {
                return Err(fail(format!("token {:?}: its name or token is used twice", t.name)));
            }
            tokens.push((digest, t.name, t.role));
        }
        Ok(Access { tokens, anonymous: file.anonymous })
    }

    /// The role of a request with these headers, or why it has none.
    fn role(&self, headers: &HeaderMap) -> Result<(Role, String), ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return self.anonymous.map(|r| (r, String::from("anonymous"))).ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a bearer token is needed")
            });
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization must be `Bearer <token>`")
        })?;
        // blake3::Hash compares in constant time.
        let digest = blake3::hash(token.trim().as_bytes());
        self.tokens
            .iter()
            .find(|(d, _, _)| *d == digest)
            .map(|(_, name, role)| (*role, name.clone()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token"))
    }

    fn require(&self, headers: &HeaderMap, needed: Role) -> Result<String, ApiError> {
        let (role, who) = self.role(headers)?;
        if role < needed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {needed} role; {who} has {role}"),
            ));
        }
        Ok(who)
    }
}

/// The service's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub body_bytes: usize,
    /// Longest a request may take before a 503.
    pub request_timeout: Duration,
    /// Most requests running guest code at once; more get a 503 at once.
    pub in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { body_bytes: 64 * 1024, request_timeout: Duration::from_secs(10), in_flight: 64 }
    }
}

/// An error response: JSON `{"code", "message"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    fn busy(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({ "code": self.code, "message": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
            E::Host(h) => match h {
                elex_ran::host::Error::Busy { .. } | elex_ran::host::Error::Capacity { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy")
                }
                elex_ran::host::Error::NoAgent(_) => (StatusCode::NOT_FOUND, "no_agent"),
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

struct Shared {
    runtime: Arc<Runtime>,
    access: Access,
    limits: Limits,
    in_flight: Arc<tokio::sync::Semaphore>,
}

type AppState = Arc<Shared>;

impl Shared {
    /// Runs `f` on the runtime in the blocking pool, held to the in-flight
    /// bound and the request timeout.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = Arc::clone(&self.in_flight).try_acquire_owned().map_err(|_| {
            ApiError::busy(format!("{} requests are in flight; try again", self.limits.in_flight))
        })?;
        let runtime = Arc::clone(&self.runtime);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&runtime)
        });
        match tokio::time::timeout(self.limits.request_timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => {
                Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", join.to_string()))
            }
            Err(_) => Err(ApiError::busy(format!(
                "the request took longer than {} ms",
                self.limits.request_timeout.as_millis()
            ))),
        }
    }
}

/// A JSON body, with JSON errors for a malformed or oversized one.
struct Body<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "bad_request" };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    text: String,
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    query_id: String,
    #[serde(default)]
    reward: Option<f32>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    operator: Option<String>,
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ready", "agents": s.runtime.swarm().len() }))
}

async fn query(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<QueryRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.access.require(&headers, Role::Operator)?;
    s.run(move |rt| {
        let answer = match &req.agent {
            Some(agent) => rt.ask(agent, &req.text),
            None => rt.query(&req.text),
        }?;
        Ok(Json(rt.answer_json(&answer)))
    })
    .await
}

async fn feedback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<FeedbackRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = s.access.require(&headers, Role::Operator)?;
    if req.reward.is_none() && req.agent.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give a reward, an agent, or both",
        ));
    }
    s.run(move |rt| {
        let mut out = json!({ "query_id": req.query_id });
        if let Some(reward) = req.reward {
            let i = rt.feedback(&req.query_id, reward)?;
            out["rewarded"] = json!({ "agent": rt.catalog().features[i].faj, "reward": reward });
        }
        if let Some(agent) = &req.agent {
            let operator = req.operator.unwrap_or(who);
            let i = rt.correct(&req.query_id, agent, &operator)?;
            out["corrected"] = json!({ "agent": rt.catalog().features[i].faj, "operator": operator });
        }
        Ok(Json(out))
    })
    .await
}

fn agent_json(f: &elex_ran::Feature) -> serde_json::Value {
    json!({ "id": f.faj, "name": f.name, "acronym": f.acronym, "category": f.category, "plugin": f.plugin })
}

async fn agents(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    s.access.require(&headers, Role::Read)?;
    Ok(Json(json!(s.runtime.catalog().features.iter().map(agent_json).collect::<Vec<_>>())))
}

async fn agent(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.access.require(&headers, Role::Read)?;
    s.run(move |rt| {
        let i = rt.catalog().index_of(&id)?;
        let f = &rt.catalog().features[i];
        let usage = rt.usage_of(&f.faj)?.map(|u| {
            json!({
                "calls": u.calls,
                "errors": u.errors,
                "latency_p50_us": u.latency.quantile(0.5).map(|d| d.as_secs_f64() * 1e6),
                "latency_p99_us": u.latency.quantile(0.99).map(|d| d.as_secs_f64() * 1e6),
                "recycles": u.recycles,
                "evictions": u.evictions,
            })
        });
        let mut out = agent_json(f);
        out["requires"] = json!(f.requires);
        out["conflicts"] = json!(f.conflicts);
        out["related"] = json!(f.related);
        out["parameters"] = json!(f.parameters.len());
        out["counters"] = json!(f.counters.len());
        out["usage"] = json!(usage);
        Ok(Json(out))
    })
    .await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see the README's service section")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The service's routes over `runtime`.
pub fn router(runtime: Arc<Runtime>, access: Access, limits: Limits) -> Router {
    let body = limits.body_bytes;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.in_flight.max(1)));
    let state = Arc::new(Shared { runtime, access, limits, in_flight });
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/query", post(query))
        .route("/v1/feedback", post(feedback))
        .route("/v1/agents", get(agents))
        .route("/v1/agents/{id}", get(agent))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body))
        .with_state(state)
}

/// Serves `runtime` on `listener` until `shutdown` completes; then lets the
/// requests in flight finish and stores every agent's snapshot.
pub async fn serve(
    runtime: Arc<Runtime>,
    listener: tokio::net::TcpListener,
    access: Access,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let app = router(Arc::clone(&runtime), access, limits);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    tracing::info!("stopped accepting; storing every agent's state");
    let saved = tokio::task::spawn_blocking(move || runtime.save_all()).await;
    match saved {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Io(std::io::Error::other(e.to_string()))),
        Err(e) => Err(Error::Io(std::io::Error::other(e.to_string()))),
    }
}

/// Binds `addr`, refusing a non-loopback address unless `allow_remote`.
pub async fn bind(addr: SocketAddr, allow_remote: bool) -> Result<tokio::net::TcpListener, Error> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(Error::NotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_files_must_be_private_well_formed_and_tokens_strong() {
        let dir = std::env::temp_dir().join(format!("elex-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("access.json");
        let write = |text: &str, mode: u32| {
            std::fs::write(&file, text).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        };
        let good = r#"{"tokens": [{"name": "ops", "token": "0123456789abcdef-ops", "role": "operator"}], "anonymous": "read"}"#;
        write(good, 0o600);
        let access = Access::from_file(&file).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(access.role(&headers).unwrap().0, Role::Read);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer 0123456789abcdef-ops"));
        assert_eq!(access.role(&headers).unwrap(), (Role::Operator, String::from("ops")));
        assert!(access.require(&headers, Role::Admin).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer wrong-token-0123456789"));
        assert!(access.role(&headers).is_err());
        #[cfg(unix)]
        {
            write(good, 0o644);
            assert!(Access::from_file(&file).unwrap_err().to_string().contains("chmod 600"));
        }
        write(r#"{"tokens": [{"name": "a", "token": "short", "role": "read"}]}"#, 0o600);
        assert!(Access::from_file(&file).unwrap_err().to_string().contains("shorter"));
        write(r#"{"tokens": [], "extra": 1}"#, 0o600);
        assert!(Access::from_file(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
