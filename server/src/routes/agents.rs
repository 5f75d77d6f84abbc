//! Queries, feedback and the agents.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, AppState, Body, Caller, Operator, Reader, UrlPath};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// The question.
    #[schema(example = "What is FAJ 121 3094?")]
    pub(crate) text: String,
    /// Ask this agent (a FAJ code in any spelling, or a plugin id) instead
    /// of the one the router picks.
    #[serde(default)]
    pub(crate) agent: Option<String>,
    /// When several features are about as similar to the text, ask back
    /// which one is meant (the default: the answer's action is
    /// `request-clarification` and its content offers the closest five);
    /// `false`: answer with the most similar one's agent.
    #[serde(default = "yes")]
    pub(crate) clarify: bool,
}

impl QueryRequest {
    /// The agent the request is for: the one it names, else the router's
    /// choice (its best guess when asking back is off).
    pub(crate) fn route(&self, rt: &elex_ran::Runtime) -> elex_ran::Result<elex_ran::Routed> {
        match &self.agent {
            Some(agent) => rt.route_to(agent),
            None if !self.clarify => Ok(rt.route(&self.text)?.best_guess()),
            None => rt.route(&self.text),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackRequest {
    /// The answer's `query_id`.
    pub(crate) query_id: String,
    /// A reward in -1..1 for the agent that answered.
    #[serde(default)]
    pub(crate) reward: Option<f32>,
    /// The agent the question was meant for: a correction the router
    /// learns from.
    #[serde(default)]
    pub(crate) agent: Option<String>,
    /// Who gives the correction (default: the token's name).
    #[serde(default)]
    pub(crate) operator: Option<String>,
}

#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, description = "The process is up: `{\"status\": \"ok\"}`", body = serde_json::Value)))]
pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/ready", tag = "service", responses((status = 200, description = "The agents are live: `{\"status\": \"ready\", \"agents\": N}` (features and plugins)", body = serde_json::Value)))]
pub(crate) async fn ready(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ready", "agents": s.runtime.agents().slots().len() }))
}

#[utoipa::path(post, path = "/v1/query", tag = "agents", request_body = QueryRequest, security(("bearer" = [])), responses((status = 200, description = "The answer: the object `elex query --json` prints (query_id, agent, close_candidates, asked_back, action, content, confidence, q_value, sources, trace, timing_ms, …)", body = serde_json::Value), (status = 404, description = "No agent with that id", body = crate::openapi::ErrorBody), (status = 502, description = "The agent failed (trap, budget, error)", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn query(
    State(s): State<AppState>,
    _caller: Caller<Operator>,
    Body(req): Body<QueryRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(cluster) = &s.cluster {
        return crate::cluster::query(&s, cluster, req).await.map(Json);
    }
    let step = s
        .run(move |rt| {
            let routed = req.route(rt)?;
            let text = req.text;
            // A plugin's code may use its whole time budget, and its callers
            // take turns: it runs in the blocking pool, never holding a query
            // thread (see `workers`). A question back runs no agent.
            if routed.feature().plugin && !routed.is_close() {
                return Ok(Step::Plugin(routed, text));
            }
            let answer = rt.answer(routed, &text)?;
            Ok(Step::Answered(rt.answer_json(&answer)))
        })
        .await?;
    match step {
        Step::Answered(answer) => Ok(Json(answer)),
        Step::Plugin(routed, text) => {
            s.run_waiting(move |rt| {
                let answer = rt.answer(routed, &text)?;
                Ok(Json(rt.answer_json(&answer)))
            })
            .await
        }
    }
}

/// Where a query stands after its query thread.
enum Step {
    Answered(serde_json::Value),
    /// Routed to a plugin, to be asked in the blocking pool.
    Plugin(elex_ran::Routed, String),
}

#[utoipa::path(post, path = "/v1/feedback", tag = "agents", request_body = FeedbackRequest, security(("bearer" = [])), responses((status = 200, description = "Who was rewarded and/or corrected: `{\"query_id\", \"rewarded\"?: {\"agent\", \"reward\"}, \"corrected\"?: {\"agent\", \"operator\"}}`", body = serde_json::Value), (status = 404, description = "No agent with that id; in a cluster, `unknown_host`: the query id names a host that is not a member", body = crate::openapi::ErrorBody), (status = 409, description = "In a cluster: `agent_moved` (the host that answered is not the agent's primary now) or `stale_state` (another host wrote a newer state meanwhile); ask again and reward the new answer", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody), (status = 413, description = "`too_large`: the body is over --max-body-bytes", body = crate::openapi::ErrorBody), (status = 415, description = "`unsupported_media_type`: the body is not Content-Type: application/json", body = crate::openapi::ErrorBody), (status = 422, description = "`bad_request`: JSON of the wrong shape (a missing or unknown field, a wrong type)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn feedback(
    State(s): State<AppState>,
    Caller(who, _): Caller<Operator>,
    Body(req): Body<FeedbackRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if req.reward.is_none() && req.agent.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give a reward, an agent, or both",
        ));
    }
    let operator = req.operator.unwrap_or(who);
    if let Some(cluster) = &s.cluster {
        return crate::cluster::feedback(&s, cluster, req.query_id, req.reward, req.agent, operator)
            .await
            .map(Json);
    }
    s.run_write(move |rt| feedback_on(rt, &req.query_id, req.reward, req.agent.as_deref(), &operator))
        .await
        .map(Json)
}

/// Rewards and/or corrects the answer `query_id` (this runtime's): what
/// `POST /v1/feedback` does, here or on the cluster host that answered.
pub(crate) fn feedback_on(
    rt: &elex_ran::Runtime,
    query_id: &str,
    reward: Option<f32>,
    agent: Option<&str>,
    operator: &str,
) -> Result<serde_json::Value, ApiError> {
    let mut out = json!({ "query_id": query_id });
    if let Some(reward) = reward {
        let rewarded = rt.feedback(query_id, reward)?;
        out["rewarded"] = json!({ "agent": rewarded.faj, "reward": reward });
    }
    if let Some(agent) = agent {
        let meant = rt.correct(query_id, agent, operator)?;
        out["corrected"] = json!({ "agent": meant.faj, "operator": operator });
    }
    Ok(out)
}

fn agent_json(f: &elex_ran::Feature) -> serde_json::Value {
    json!({ "id": f.faj, "name": f.name, "acronym": f.acronym, "category": f.category, "plugin": f.plugin })
}

#[utoipa::path(get, path = "/v1/agents", tag = "agents", security(("bearer" = [])), responses((status = 200, description = "Every agent (features, then plugins): `[{\"id\", \"name\", \"acronym\", \"category\", \"plugin\"}]`", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn agents(
    State(s): State<AppState>,
    _caller: Caller<Reader>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.runtime.catalog().features.iter().map(agent_json).collect::<Vec<_>>())))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "A FAJ code in any spelling, or a plugin id")), security(("bearer" = [])), responses((status = 200, description = "One agent with its relations, `about` (a plugin's description and keywords; a feature's keywords, elex's own words for routing) and its use across runs", body = serde_json::Value), (status = 404, description = "No agent with that id", body = crate::openapi::ErrorBody), (status = 400, description = "Malformed request", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody), (status = 503, description = "Too many requests in flight, or one took too long (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn agent(
    State(s): State<AppState>,
    _caller: Caller<Reader>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.run(move |rt| {
        // One view of the catalog: a plugin may be unloaded meanwhile.
        let catalog = rt.catalog();
        let f = catalog.feature(&id)?;
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
        out["about"] = json!(f.about);
        out["parameters"] = json!(f.parameters.len());
        out["counters"] = json!(f.counters.len());
        out["usage"] = json!(usage);
        Ok(Json(out))
    })
    .await
}
