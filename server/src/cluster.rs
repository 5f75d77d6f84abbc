//! `elex serve --cluster`: the service's side of a cluster (see
//! [`elex_cluster`]). A query is routed here and answered by the agent's
//! primary host (the next holder when it does not answer); feedback goes to
//! the host that answered, which copies the agent's state to the cluster's
//! bucket before it acknowledges. Answers carry the host that gave them and
//! a cluster query id, `HOST:ID`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use elex_cluster::{Cluster, Reply, Request};
use elex_ran::Runtime;
use serde_json::{Value, json};

use crate::routes::agents::{QueryRequest, feedback_on};
use crate::{ApiError, AppState, Caller, Reader, Shared};

/// What this host does with the requests other hosts send it: answers
/// asks for the agents it holds, and feedback on its own answers.
pub struct Forwarded {
    runtime: Arc<Runtime>,
}

impl Forwarded {
    /// The handler for a cluster host serving `runtime`.
    pub fn handler(runtime: Arc<Runtime>) -> Arc<dyn elex_cluster::Handler> {
        Arc::new(Forwarded { runtime })
    }
}

impl elex_cluster::Handler for Forwarded {
    fn handle(&self, cluster: &Cluster, request: Request) -> Reply {
        let rt = &self.runtime;
        let done = match request {
            Request::Ask { agent, text } => cluster
                .catch_up_blocking(&agent)
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()))
                .and_then(|()| rt.ask(&agent, &text).map_err(ApiError::from))
                .map(|a| answer_json(rt, cluster, &a)),
            Request::Feedback { query_id, reward, agent, operator } => {
                feedback_here(rt, cluster, &query_id, reward, agent.as_deref(), &operator)
            }
        };
        match done {
            Ok(value) => Reply::Ok(value),
            Err(e) => Reply::refused(e.status().as_u16(), e.code(), e.message()),
        }
    }
}

/// The answer JSON (one schema with `elex query --json`), with the cluster
/// query id and the host that answered.
fn answer_json(rt: &Runtime, cluster: &Cluster, answer: &elex_ran::Answer) -> Value {
    let mut out = rt.answer_json(answer);
    out["query_id"] = json!(cluster.query_id(&answer.response.query_id));
    out["host"] = json!(cluster.host_id());
    out
}

/// Feedback on this host's answer `query_id` (its local id); the rewarded
/// agent's state is in the cluster's bucket before this returns.
fn feedback_here(
    rt: &Runtime,
    cluster: &Cluster,
    query_id: &str,
    reward: Option<f32>,
    agent: Option<&str>,
    operator: &str,
) -> Result<Value, ApiError> {
    // Only the agent's primary learns, from the bucket's latest state.
    if reward.is_some()
        && let Some(answered_by) = rt.answered_by(query_id)?
    {
        cluster
            .may_learn_blocking(&answered_by)
            .map_err(|refusal| refused(cluster, &answered_by, refusal))?;
    }
    let mut out = feedback_on(rt, query_id, reward, agent, operator)?;
    if let Some(rewarded) = out["rewarded"]["agent"].as_str() {
        cluster.publish_state_blocking(rewarded).map_err(|e| match e {
            elex_cluster::Error::Stale { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "stale_state",
                format!("{e}; the reward is lost: ask again and reward the new answer"),
            ),
            e => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_replicated",
                format!(
                    "the reward was applied and stored on host {}, but {rewarded}'s state could not be \
                     copied to the cluster: {e}",
                    cluster.host_id()
                ),
            ),
        })?;
    }
    // A correction is learned by every host.
    if let (Some(meant), Some(text)) = (out["corrected"]["agent"].as_str(), rt.question_of(query_id)?) {
        let example = elex_ran::host::snapshots::Example {
            text,
            operator: operator.to_string(),
            query_id: cluster.query_id(query_id),
            millis: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        cluster.share_correction_blocking(meant, &example).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_replicated",
                format!(
                    "the correction was learned on host {}, but the other hosts were not told: {e}",
                    cluster.host_id()
                ),
            )
        })?;
    }
    out["query_id"] = json!(cluster.query_id(query_id));
    Ok(out)
}

/// A query routed on this host: answered here, or for another host.
enum Routed {
    Answered(Value),
    Elsewhere(elex_ran::Routed, String),
}

/// Why this host may not learn for `agent`, as an error response.
fn refused(cluster: &Cluster, agent: &str, refusal: elex_cluster::Refusal) -> ApiError {
    use elex_cluster::Refusal as R;
    let me = cluster.host_id();
    match refusal {
        R::Moved { primary } => ApiError::new(
            StatusCode::CONFLICT,
            "agent_moved",
            format!(
                "host {me} answered for {agent} but is not its primary now (host {primary} is), so this \
                 answer cannot be learned from: ask again and reward the new answer"
            ),
        ),
        R::Unavailable(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why),
    }
}

/// `POST /v1/query` on a cluster host.
pub(crate) async fn query(s: &Shared, cluster: &Arc<Cluster>, req: QueryRequest) -> Result<Value, ApiError> {
    // Routed here, and answered in the same blocking call when this host is
    // the agent's primary (or the agent is not placed: a plugin uploaded
    // here runs only here).
    let here = Arc::clone(cluster);
    let (routed, text) = match s
        .run_waiting(move |rt| {
            let routed = req.route(rt)?;
            let text = req.text;
            let feature = routed.feature();
            // A question back needs no agent: asked where it arrives.
            if routed.is_close() || !here.placed(&feature.faj) || here.is_primary(&feature.faj) {
                let answer = rt.answer(routed, &text)?;
                return Ok(Routed::Answered(answer_json(rt, &here, &answer)));
            }
            Ok(Routed::Elsewhere(routed, text))
        })
        .await?
    {
        Routed::Elsewhere(routed, text) => (routed, text),
        Routed::Answered(answer) => return Ok(answer),
    };
    let feature = routed.feature();
    let me = cluster.host_id();
    let mut failures = Vec::new();
    for host in cluster.owners(&feature.faj) {
        if host == me {
            // The primary did not answer; this host holds the agent too.
            let cluster = Arc::clone(cluster);
            return s
                .run_waiting(move |rt| {
                    let faj = routed.feature().faj.clone();
                    cluster.catch_up_blocking(&faj).map_err(|e| {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
                    })?;
                    let answer = rt.answer(routed, &text)?;
                    Ok(answer_json(rt, &cluster, &answer))
                })
                .await;
        }
        let ask = Request::Ask { agent: feature.faj.clone(), text: text.clone() };
        match cluster.send(&host, &ask).await {
            Ok(Reply::Ok(mut answer)) => {
                // Routed here: say how.
                answer["agent"]["chosen_by"] = json!(routed.reason.to_string());
                answer["close_candidates"] =
                    elex_ran::json::close_candidates(routed.catalog(), &routed.close);
                answer["timing_ms"]["routing"] = json!(routed.took.as_secs_f64() * 1e3);
                return Ok(answer);
            }
            // Not held there (the hosts' views differ for a moment) or busy:
            // the next holder.
            Ok(Reply::Refused { status: 409 | 503, message, .. }) => {
                failures.push(format!("{host}: {message}"))
            }
            Ok(Reply::Refused { status, code, message }) => {
                return Err(ApiError::remote(status, code, message));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("no host holding {} answered ({}); try again", feature.faj, failures.join("; ")),
    ))
}

/// `POST /v1/feedback` on a cluster host: to the host that answered.
pub(crate) async fn feedback(
    s: &Shared,
    cluster: &Arc<Cluster>,
    query_id: String,
    reward: Option<f32>,
    agent: Option<String>,
    operator: String,
) -> Result<Value, ApiError> {
    let me = cluster.host_id().to_string();
    let (host, local) = match Cluster::split_query_id(&query_id) {
        Some((host, local)) => (host.to_string(), local.to_string()),
        None => (me.clone(), query_id.clone()),
    };
    if !cluster.is_member(&host) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_host",
            format!(
                "{query_id} names host {host}, which is not in the cluster now (it may have left or died)"
            ),
        ));
    }
    if host == me {
        let cluster = Arc::clone(cluster);
        return s
            .run_write(move |rt| feedback_here(rt, &cluster, &local, reward, agent.as_deref(), &operator))
            .await;
    }
    match cluster.send(&host, &Request::Feedback { query_id: local, reward, agent, operator }).await {
        Ok(Reply::Ok(out)) => Ok(out),
        Ok(Reply::Refused { status, code, message }) => Err(ApiError::remote(status, code, message)),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{query_id} was answered by host {host}, which keeps its record, and it did not take the feedback: {e}"
            ),
        )),
    }
}

#[utoipa::path(get, path = "/v1/cluster", tag = "service", security(("bearer" = [])), responses((status = 200, description = "This host's view of its cluster: `{\"host\", \"cluster\", \"replicas\", \"hosts\": [{\"host\", \"http\", \"seen_ms_ago\"}], \"primary_of\", \"holds\", \"forwarded\", \"served\", \"adopted\", \"published\", \"left\", \"timed_out\", \"graph_applied\", \"graph_error\", \"nats\"}`", body = serde_json::Value), (status = 404, description = "This service is not in a cluster", body = crate::openapi::ErrorBody), (status = 401, description = "No or an unknown token", body = crate::openapi::ErrorBody), (status = 403, description = "The token's role is too low", body = crate::openapi::ErrorBody), (status = 429, description = "Over the client's rate (see Retry-After)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn status(
    State(s): State<AppState>,
    _caller: Caller<Reader>,
) -> Result<Json<Value>, ApiError> {
    match &s.cluster {
        Some(cluster) => Ok(Json(json!(cluster.status()))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this service runs alone (elex serve without --cluster)",
        )),
    }
}
