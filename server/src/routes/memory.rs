//! The memory graph and workflows, as the operator: engrams, search,
//! contexts, and workflow runs whose results become engrams.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use elex_ran::host::memgraph::{Actor, EngramData, Op, SearchQuery};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState, Body, Caller, Operator, UrlPath, UrlQuery};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEngram {
    /// The text.
    content: String,
    /// Where it came from (default `service`).
    #[serde(default = "default_source")]
    source: String,
    /// Confidence in 0..1 (default 1).
    #[serde(default = "default_confidence")]
    confidence: f32,
    /// Key-value metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// A context to put it in.
    #[serde(default)]
    context: Option<u64>,
}

fn default_source() -> String {
    String::from("service")
}

fn default_confidence() -> f32 {
    1.0
}

/// `POST /v1/engrams`: stores an engram (in a context, if given); its id.
#[utoipa::path(post, path = "/v1/engrams", tag = "memory", request_body = NewEngram, security(("bearer" = [])), responses((status = 201, description = "`{\"id\"}`", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn create_engram(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    Body(req): Body<NewEngram>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    s.run_write(move |rt| {
        let data = EngramData {
            content: req.content,
            source: req.source,
            confidence: req.confidence,
            metadata: req.metadata.into_iter().collect(),
        };
        let id =
            rt.memory_graph().create(&Actor::Operator, data, req.context).map_err(elex_ran::Error::from)?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
    })
    .await
}

/// `GET /v1/engrams/{id}`: one engram with its connections.
#[utoipa::path(get, path = "/v1/engrams/{id}", tag = "memory", params(("id" = u64, Path, description = "The engram id")), security(("bearer" = [])), responses((status = 200, description = "The engram (as `elex engram get --json`)", body = serde_json::Value), (status = 404, description = "No such engram", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn engram(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    UrlPath(id): UrlPath<u64>,
) -> Result<Json<Value>, ApiError> {
    s.run(move |rt| Ok(Json(elex_ran::json::engram(rt.memory_graph(), &Actor::Operator, id)?))).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Search {
    /// Words that must all occur (ranked by BM25).
    #[serde(default)]
    text: Option<String>,
    /// Metadata every hit has.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Only engrams of this context.
    #[serde(default)]
    context: Option<u64>,
    /// Most hits (default 10).
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    10
}

/// `POST /v1/search`: engrams with every word (ranked by BM25), metadata
/// and context.
#[utoipa::path(post, path = "/v1/search", tag = "memory", request_body = Search, security(("bearer" = [])), responses((status = 200, description = "Hits, best first: `[{\"id\", \"score\", \"owner\", \"content\"}]`", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn search(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    Body(req): Body<Search>,
) -> Result<Json<Value>, ApiError> {
    s.run(move |rt| {
        let query = SearchQuery {
            text: req.text,
            metadata: req.metadata.into_iter().collect(),
            context: req.context,
            limit: req.limit,
        };
        Ok(Json(elex_ran::json::search(rt.memory_graph(), &Actor::Operator, &query)?))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewContext {
    /// Its name.
    name: String,
}

/// `POST /v1/contexts`: creates a context; its id.
#[utoipa::path(post, path = "/v1/contexts", tag = "memory", request_body = NewContext, security(("bearer" = [])), responses((status = 201, description = "`{\"id\"}`", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn create_context(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    Body(req): Body<NewContext>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    s.run_write(move |rt| {
        let id =
            rt.memory_graph().create_context(&Actor::Operator, &req.name).map_err(elex_ran::Error::from)?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContextQuery {
    #[serde(default = "default_context_limit")]
    limit: u32,
}

fn default_context_limit() -> u32 {
    20
}

/// `GET /v1/contexts/{id}?limit=`: a context, its members and first
/// engrams.
#[utoipa::path(get, path = "/v1/contexts/{id}", tag = "memory", params(("id" = u64, Path, description = "The context id"), ("limit" = Option<u32>, Query, description = "Engrams shown (default 20)")), security(("bearer" = [])), responses((status = 200, description = "The context (as `elex context show --json`)", body = serde_json::Value), (status = 404, description = "No such context", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn context(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    UrlPath(id): UrlPath<u64>,
    UrlQuery(q): UrlQuery<ContextQuery>,
) -> Result<Json<Value>, ApiError> {
    s.run(move |rt| Ok(Json(elex_ran::json::context(rt.memory_graph(), &Actor::Operator, id, q.limit)?)))
        .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Members {
    /// Engrams to add.
    #[serde(default)]
    engrams: Vec<u64>,
    /// Agents to let in (their ids).
    #[serde(default)]
    agents: Vec<String>,
}

/// `POST /v1/contexts/{id}/members`: adds engrams and agents to a context.
#[utoipa::path(post, path = "/v1/contexts/{id}/members", tag = "memory", params(("id" = u64, Path, description = "The context id")), request_body = Members, security(("bearer" = [])), responses((status = 200, description = "`{\"context\", \"added\"}`", body = serde_json::Value), (status = 404, description = "No such context or engram", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn add_to_context(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    UrlPath(context): UrlPath<u64>,
    Body(req): Body<Members>,
) -> Result<Json<Value>, ApiError> {
    if req.engrams.is_empty() && req.agents.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "give engrams, agents or both"));
    }
    s.run_write(move |rt| {
        let ops: Vec<Op> = req
            .engrams
            .iter()
            .map(|&id| Op::AddToContext { context, id })
            .chain(req.agents.iter().map(|agent| Op::AddMember { context, agent: agent.clone() }))
            .collect();
        let n = ops.len();
        rt.memory_graph().apply(&Actor::Operator, ops).map_err(elex_ran::Error::from)?;
        Ok(Json(json!({ "context": context, "added": n })))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunWorkflow {
    /// The context that receives the results.
    context: u64,
    /// The workflow, as its JSON file has it (see the README).
    #[schema(value_type = Object)]
    workflow: Value,
}

/// `POST /v1/workflows`: runs a workflow (the JSON of a workflow file) on
/// the live agents, its results stored as engrams of `context`; the report
/// (as `elex workflow run --json`), whether or not every step succeeded.
#[utoipa::path(post, path = "/v1/workflows", tag = "memory", request_body = RunWorkflow, security(("bearer" = [])), responses((status = 200, description = "The report (as `elex workflow run --json`), `succeeded` false when a step failed", body = serde_json::Value), (status = 400, description = "A malformed workflow, an unknown agent or dependency, a cycle (`bad_workflow`)", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn run_workflow(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    Body(req): Body<RunWorkflow>,
) -> Result<Json<Value>, ApiError> {
    let mut workflow =
        elex_ran::workflow::Workflow::parse(&req.workflow.to_string(), elex_ran::workflow::Format::Json)?;
    s.run_write(move |rt| {
        let report = rt.run_workflow(&mut workflow, req.context)?;
        Ok(Json(elex_ran::json::workflow_report(&report, req.context)))
    })
    .await
}
