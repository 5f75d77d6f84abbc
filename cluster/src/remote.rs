//! Consults across hosts: [`ClusterAgents`] tells the swarm which agents
//! answer on another host (those this host is not the primary of) and
//! sends a consult there with its call chain; the receiving host runs it
//! with [`Swarm::consult_here`](elex_ran::host::Swarm::consult_here). An
//! answer and its trace cross as JSON.

use std::sync::{Arc, Weak};

use elex_ran::host::{Action, Error as HostError, Hop, Query, RemoteAgents, Response};
use serde_json::{Value, json};

use crate::{Cluster, Reply, Wire};

/// The swarm's view of the other hosts of a cluster.
pub(crate) struct ClusterAgents {
    // Weak: the runtime (which holds this) must not keep the cluster alive.
    cluster: Weak<Cluster>,
}

impl ClusterAgents {
    pub(crate) fn new(cluster: &Arc<Cluster>) -> ClusterAgents {
        ClusterAgents { cluster: Arc::downgrade(cluster) }
    }
}

impl RemoteAgents for ClusterAgents {
    fn elsewhere(&self, agent: &str) -> bool {
        self.cluster.upgrade().is_some_and(|c| c.placed(agent) && !c.is_primary(agent))
    }

    fn consult(
        &self,
        chain: &[String],
        agent: &str,
        query: &Query,
    ) -> Option<Result<(Response, Vec<Hop>, String), HostError>> {
        let cluster = self.cluster.upgrade()?;
        let request = Wire::Consult {
            chain: chain.to_vec(),
            query_id: query.id.clone(),
            text: query.text.clone(),
            depth: query.depth,
        };
        let mut failures = Vec::new();
        for host in cluster.owners(agent) {
            if host == cluster.host_id() {
                // The primary did not answer and this host holds the agent.
                return None;
            }
            match cluster.tokio.block_on(cluster.send_wire(&host, &request, cluster.config.consult_timeout)) {
                Ok(Reply::Ok(value)) => {
                    return Some(
                        consulted_from_json(&value)
                            .map(|(response, trace)| (response, trace, host.clone()))
                            .ok_or_else(|| {
                                HostError::NoAgent(format!(
                                    "{agent}: host {host} answered the consult with something else"
                                ))
                            }),
                    );
                }
                Ok(Reply::Refused { status: 409, message, .. }) => failures.push(message),
                Ok(Reply::Refused { status: 503, message, .. }) => {
                    return Some(Err(HostError::Busy {
                        agent: format!("{agent} (on host {host}: {message})"),
                        queue_depth: 0,
                    }));
                }
                Ok(Reply::Refused { message, .. }) => {
                    return Some(Err(HostError::NoAgent(format!("{agent} on host {host}: {message}"))));
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Some(Err(HostError::Busy {
            agent: format!("{agent} (no host holding it answered: {})", failures.join("; ")),
            queue_depth: 0,
        }))
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::DirectAnswer => "direct-answer",
        Action::ContextAnswer => "context-answer",
        Action::ConsultPeer => "consult-peer",
        Action::RequestClarification => "request-clarification",
        Action::Escalate => "escalate",
    }
}

fn action_named(name: &str) -> Option<Action> {
    Some(match name {
        "direct-answer" => Action::DirectAnswer,
        "context-answer" => Action::ContextAnswer,
        "consult-peer" => Action::ConsultPeer,
        "request-clarification" => Action::RequestClarification,
        "escalate" => Action::Escalate,
        _ => return None,
    })
}

/// A consulted agent's answer and the consults it made, as JSON.
pub(crate) fn consulted_json(response: &Response, trace: &[Hop]) -> Value {
    json!({
        "response": {
            "query_id": response.query_id,
            "agent_id": response.agent_id,
            "action": action_name(response.action),
            "content": response.content,
            "confidence": response.confidence,
            "q_value": response.q_value,
            "sources": response.sources,
        },
        "trace": trace.iter().map(|h| json!({
            "from": h.from, "to": h.to, "depth": h.depth, "millis": h.millis, "outcome": h.outcome, "host": h.host,
        })).collect::<Vec<_>>(),
    })
}

fn consulted_from_json(value: &Value) -> Option<(Response, Vec<Hop>)> {
    let r = &value["response"];
    let text = |v: &Value| v.as_str().map(str::to_string);
    let response = Response {
        query_id: text(&r["query_id"])?,
        agent_id: text(&r["agent_id"])?,
        action: action_named(r["action"].as_str()?)?,
        content: text(&r["content"])?,
        confidence: r["confidence"].as_f64()? as f32,
        q_value: r["q_value"].as_f64()? as f32,
        sources: r["sources"].as_array()?.iter().map(text).collect::<Option<_>>()?,
    };
    let trace = value["trace"]
        .as_array()?
        .iter()
        .map(|h| {
            Some(Hop {
                from: text(&h["from"])?,
                to: text(&h["to"])?,
                depth: h["depth"].as_u64()? as u32,
                millis: h["millis"].as_f64()?,
                outcome: text(&h["outcome"])?,
                host: text(&h["host"]),
            })
        })
        .collect::<Option<_>>()?;
    Some((response, trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consulted_answer_crosses_as_json_unchanged() {
        let response = Response {
            query_id: "q1>FAJ 1".into(),
            agent_id: "FAJ 1".into(),
            action: Action::ConsultPeer,
            content: "text \"quoted\"\n".into(),
            confidence: 0.5,
            q_value: 0.25,
            sources: vec!["peer:FAJ 2".into()],
        };
        let trace = vec![Hop {
            from: "FAJ 1".into(),
            to: "FAJ 2".into(),
            depth: 2,
            millis: 1.5,
            outcome: "ok".into(),
            host: Some("b".into()),
        }];
        let (r, t) = consulted_from_json(&consulted_json(&response, &trace)).unwrap();
        assert_eq!(
            (r.query_id, r.action, r.content, r.sources),
            (response.query_id, response.action, response.content, response.sources)
        );
        assert_eq!(t, trace);
        for action in ["direct-answer", "context-answer", "consult-peer", "request-clarification", "escalate"]
        {
            assert_eq!(action_name(action_named(action).unwrap()), action);
        }
        assert!(consulted_from_json(&json!({"response": {}})).is_none());
    }
}
