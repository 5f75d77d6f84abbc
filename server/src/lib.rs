//! `elex serve`: the [`Runtime`] as a long-running HTTP + JSON service.
//!
//! One runtime is started once and shared. A request that runs guest code
//! blocks its thread for the length of the call (bounded by the agent's
//! time budget), so none runs on tokio's workers: queries and reads run on
//! a few query threads (`workers`, `--query-threads`), writes and a cluster
//! host's queries in tokio's blocking pool.
//!
//! The routes, by concern, are in `routes/` (agents, plugins, memory,
//! observe); each with its role and answers in the OpenAPI document
//! ([`openapi_document`], served at `GET /v1/openapi.json`, committed as
//! `server/openapi.json`).
//!
//! Access: bearer tokens from a file ([`Access::from_file`]), each with a
//! role (`read` < `operator` < `admin`); without a token a request has the
//! file's `anonymous` role, if any. Tokens are compared by their blake3
//! digests (constant time) and never logged; the role is checked before a
//! body is read.
//!
//! Limits ([`Limits`]): request body size (413), uploads, time per query or
//! read (503 with `Retry-After`; a write runs to its end, its guest calls
//! held to their budgets), a bound on requests in flight, running or waiting
//! for a query thread (503 with `Retry-After` at once beyond it, never an
//! unbounded queue), requests per client per second
//! (429 with `Retry-After`), event streams open at once (64). Every error is
//! JSON `{"code", "message"}` with its status.
//!
//! What agents learn from queries is stored every second
//! ([`Runtime::save_changed`]). On the shutdown signal the server stops
//! accepting, ends the event streams, lets requests in flight finish (at
//! most 30 s), then stores every agent's snapshot ([`serve`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod access;
mod cluster;
mod error;
mod limits;
mod metrics;
mod openapi;
mod routes;
mod workers;

pub use access::{Access, Role};
pub use cluster::Forwarded;
pub use error::{ApiError, Error};
pub use limits::Limits;
pub use metrics::Metrics;
pub use openapi::document as openapi_document;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use elex_ran::Runtime;
use workers::Workers;

/// What every request handler reaches.
pub(crate) struct Shared {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) access: Access,
    pub(crate) limits: Limits,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The threads queries and reads run on.
    workers: Workers,
    pub(crate) metrics: Metrics,
    pub(crate) rate: Option<limits::RateLimiter>,
    /// Turns true when the service stops: event streams end.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// Event streams open at once (`GET /v1/events`), at most
    /// [`MAX_EVENT_STREAMS`].
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    /// The cluster this host is a member of, if any.
    pub(crate) cluster: Option<Arc<elex_cluster::Cluster>>,
}

/// Event streams a service keeps open at once; more get a 503.
pub(crate) const MAX_EVENT_STREAMS: usize = 64;

pub(crate) type AppState = Arc<Shared>;

impl Shared {
    /// Runs a query or a read `f` on the runtime on one of the [`Workers`],
    /// held to the in-flight bound and the request timeout (time waiting
    /// for a worker included).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.permit()?;
        let runtime = Arc::clone(&self.runtime);
        let task = self.workers.run(move || {
            let _permit = permit;
            f(&runtime)
        });
        self.in_time(task).await
    }

    /// [`Shared::run`] for a query that may wait — on other hosts (a cluster
    /// host's: forwarding, consulting, catching up), or on a plugin (its
    /// whole time budget, its other callers) — in tokio's blocking pool, so
    /// that it never holds a query thread.
    pub(crate) async fn run_waiting<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.in_time(self.in_blocking_pool(f)?).await
    }

    /// The result of `task` (`None`: it panicked) within the request
    /// timeout, else a 503.
    async fn in_time<T>(
        &self,
        task: impl std::future::Future<Output = Option<Result<T, ApiError>>>,
    ) -> Result<T, ApiError> {
        let timeout = self.limits.request_timeout;
        match tokio::time::timeout(timeout, task).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(panicked()),
            Err(_) => Err(ApiError::busy(format!("the request took longer than {} ms", timeout.as_millis()))),
        }
    }

    /// Runs a write (feedback, a plugin, an engram, a workflow) on the
    /// runtime in tokio's blocking pool, held to the in-flight bound but not
    /// to the request timeout: once started it runs to its end and says how
    /// it ended, so a 503 never hides a write that happened (its guest calls
    /// are each held to their budgets).
    pub(crate) async fn run_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.in_blocking_pool(f)?.await.unwrap_or_else(|| Err(panicked()))
    }

    /// Starts `f` on the runtime in tokio's blocking pool, holding a place
    /// in flight until it ends: its result (`None`: it panicked).
    fn in_blocking_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Option<Result<T, ApiError>>>, ApiError> {
        let permit = self.permit()?;
        let runtime = Arc::clone(&self.runtime);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&runtime)
        });
        Ok(async { task.await.ok() })
    }

    /// A place among the requests in flight, or a 503.
    fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.in_flight).try_acquire_owned().map_err(|_| {
            ApiError::busy(format!("{} requests are in flight; try again", self.limits.in_flight))
        })
    }
}

/// The error of a request whose handler panicked.
fn panicked() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request's handler panicked")
}

/// A request's caller, who has at least the role `R` needs — checked from
/// the headers before the body is read, so an unauthorised request gets 401
/// or 403 whatever its body. Holds the token's name (`anonymous` without
/// one).
pub(crate) struct Caller<R>(pub(crate) String, std::marker::PhantomData<R>);

/// A role a route needs (see [`Caller`]).
pub(crate) trait Needs {
    const ROLE: Role;
}

/// Needs `read`.
pub(crate) struct Reader;
/// Needs `operator`.
pub(crate) struct Operator;
/// Needs `admin`.
pub(crate) struct Admin;

impl Needs for Reader {
    const ROLE: Role = Role::Read;
}
impl Needs for Operator {
    const ROLE: Role = Role::Operator;
}
impl Needs for Admin {
    const ROLE: Role = Role::Admin;
}

impl<R: Needs> axum::extract::FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.access.require(&parts.headers, R::ROLE).map(|who| Caller(who, std::marker::PhantomData))
    }
}

/// A URL path parameter, with a JSON 400 for one that does not parse.
pub(crate) struct UrlPath<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S>
    for UrlPath<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| UrlPath(p.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text()))
    }
}

/// URL query parameters, with a JSON 400 for ones that do not parse.
pub(crate) struct UrlQuery<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S>
    for UrlQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| UrlQuery(q.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text()))
    }
}

/// A JSON body, with JSON errors for a malformed or oversized one.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let status = rejection.status();
                let (code, message) = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => (
                        "too_large",
                        format!(
                            "the body is larger than the service takes (--max-body-bytes {}; a plugin \
                             upload --max-upload-bytes {})",
                            state.limits.body_bytes, state.limits.upload_bytes
                        ),
                    ),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", rejection.body_text()),
                    _ => ("bad_request", rejection.body_text()),
                };
                Err(ApiError::new(status, code, message))
            }
        }
    }
}

/// The service's routes over `runtime`; event streams end when `stopping`
/// turns true.
fn app(
    runtime: Arc<Runtime>,
    access: Access,
    limits: Limits,
    cluster: Option<Arc<elex_cluster::Cluster>>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<Router, Error> {
    let body = limits.body_bytes;
    let upload = limits.upload_bytes;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.in_flight.max(1)));
    let metrics = Metrics::new(Arc::clone(&runtime));
    let rate = limits::RateLimiter::of(&limits);
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS));
    let workers = Workers::start(limits.query_threads, workers::SPILL_AFTER)?;
    let state = Arc::new(Shared {
        runtime,
        access,
        limits,
        in_flight,
        workers,
        metrics,
        rate,
        stopping,
        streams,
        cluster,
    });
    use routes::{agents, memory, observe, plugins};
    Ok(Router::new()
        .route("/health", get(agents::health))
        .route("/ready", get(agents::ready))
        .route("/metrics", get(observe::prometheus))
        .route("/v1/query", post(agents::query))
        .route("/v1/feedback", post(agents::feedback))
        .route("/v1/agents", get(agents::agents))
        .route("/v1/agents/{id}", get(agents::agent))
        .route(
            "/v1/plugins",
            get(plugins::plugins).post(plugins::load_plugin).layer(DefaultBodyLimit::max(upload.max(body))),
        )
        .route("/v1/plugins/{id}", axum::routing::delete(plugins::unload_plugin))
        .route("/v1/engrams", post(memory::create_engram))
        .route("/v1/engrams/{id}", get(memory::engram))
        .route("/v1/search", post(memory::search))
        .route("/v1/contexts", post(memory::create_context))
        .route("/v1/contexts/{id}", get(memory::context))
        .route("/v1/contexts/{id}/members", post(memory::add_to_context))
        .route("/v1/workflows", post(memory::run_workflow))
        .route("/v1/events", get(observe::events))
        .route("/v1/openapi.json", get(observe::openapi))
        .route("/v1/cluster", get(cluster::status))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), observe::observe))
        .fallback(observe::not_found)
        .method_not_allowed_fallback(observe::method_not_allowed)
        .layer(DefaultBodyLimit::max(body))
        .with_state(state))
}

/// How often what agents learned from queries is stored.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long requests in flight may take to finish once the service stops.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `runtime` on `listener` until `shutdown` completes; then stops
/// accepting, ends the event streams, lets the requests in flight finish
/// (for at most 30 s), leaves `cluster` (if this host is in one: see
/// [`elex_cluster::Cluster::leave`]) and stores every agent's snapshot.
pub async fn serve(
    runtime: Arc<Runtime>,
    listener: tokio::net::TcpListener,
    access: Access,
    limits: Limits,
    cluster: Option<Arc<elex_cluster::Cluster>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // What agents learn from queries is stored once a second (a crash loses
    // at most that second's learning from queries, never acknowledged
    // feedback: feedback is stored at once).
    let flusher = {
        let runtime = Arc::clone(&runtime);
        let mut stopped = stopping.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                let runtime = Arc::clone(&runtime);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || runtime.save_changed()).await {
                    tracing::error!(error = %e, "what the agents learned could not be stored");
                }
            }
        })
    };
    let app = app(Arc::clone(&runtime), access, limits, cluster.clone(), stopping.clone())?;
    let mut stopped = stopping.clone();
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        served = &mut server => served?,
        () = shutdown => {
            tracing::info!("stopping: no new connections; letting requests in flight finish");
            let _ = stop.send(true);
            if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
                tracing::warn!("requests still in flight after {} s are cut off", DRAIN.as_secs());
            }
        }
    }
    let _ = stop.send(true);
    let _ = flusher.await;
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    tracing::info!("stopped accepting; storing every agent's state");
    let saved =
        tokio::task::spawn_blocking(move || runtime.save_all().and_then(|()| runtime.save_changed())).await;
    match saved {
        Ok(Ok(_)) => Ok(()),
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
