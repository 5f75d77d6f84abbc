//! The JSON objects the CLI prints with `--json` and the service returns:
//! one schema, built here, for both.

use elex_memgraph::{Actor, ContextId, EngramId, MemoryGraph, SearchQuery};
use serde_json::{Value, json};

use crate::Result;
use crate::workflow::{Report, StepStatus};

/// Metadata as a JSON object: key to value, or to the list of its values
/// when a key is given more than once.
fn metadata(pairs: &[(String, String)]) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in pairs {
        match out.get_mut(k) {
            None => {
                out.insert(k.clone(), json!(v));
            }
            Some(Value::Array(list)) => list.push(json!(v)),
            Some(first) => *first = json!([first.take(), v]),
        }
    }
    Value::Object(out)
}

/// Engram `id` as `actor` sees it, with its connections.
pub fn engram(graph: &MemoryGraph, actor: &Actor, id: EngramId) -> Result<Value> {
    let e = graph.get(actor, id)?;
    let connections: Vec<Value> = graph
        .connections(actor, id)?
        .iter()
        .map(|c| json!({ "target": c.target, "relation": c.relation, "weight": c.weight }))
        .collect();
    Ok(json!({
        "id": e.id, "owner": e.owner, "content": e.data.content, "source": e.data.source,
        "confidence": e.data.confidence, "metadata": metadata(&e.data.metadata),
        "created_ms": e.created_ms, "updated_ms": e.updated_ms, "connections": connections,
    }))
}

/// The engrams `query` finds for `actor`, best first: id, score, owner,
/// content.
pub fn search(graph: &MemoryGraph, actor: &Actor, query: &SearchQuery) -> Result<Value> {
    let hits = graph.search(actor, query)?;
    let mut out = Vec::with_capacity(hits.len());
    for h in hits {
        let e = graph.get(actor, h.id)?;
        out.push(json!({ "id": e.id, "score": h.score, "owner": e.owner, "content": e.data.content }));
    }
    Ok(Value::Array(out))
}

/// Context `id` as `actor` sees it: its members and its first `limit`
/// engrams (oldest first).
pub fn context(graph: &MemoryGraph, actor: &Actor, id: ContextId, limit: u32) -> Result<Value> {
    let c = graph.context(actor, id)?;
    let mut engrams = Vec::new();
    for e in graph.context_engrams(actor, id, limit)? {
        let e = graph.get(actor, e)?;
        engrams.push(
            json!({ "id": e.id, "owner": e.owner, "content": e.data.content, "metadata": metadata(&e.data.metadata) }),
        );
    }
    Ok(json!({
        "id": c.id, "name": c.name, "creator": c.creator, "created_ms": c.created_ms,
        "members": c.members, "engram_count": c.engrams, "engrams": engrams,
    }))
}

/// A workflow run's report: each step's status, engram, answer or reason,
/// and time.
pub fn workflow_report(report: &Report, context: ContextId) -> Value {
    let steps: Vec<Value> = report
        .steps
        .iter()
        .map(|s| {
            let (status, engram, detail, answer) = match &s.status {
                StepStatus::Done { engram, output } => {
                    ("done", *engram, String::new(), Some(&output.content))
                }
                StepStatus::Failed(e) => ("failed", None, e.clone(), None),
                StepStatus::Skipped(why) => ("skipped", None, why.clone(), None),
                StepStatus::NotRun => ("not run", None, String::from("the workflow stopped first"), None),
            };
            json!({ "id": s.id, "agent": s.agent, "status": status, "engram": engram, "detail": detail,
                    "answer": answer, "ms": s.took.as_secs_f64() * 1e3 })
        })
        .collect();
    json!({ "workflow": report.workflow, "context": context, "succeeded": report.succeeded(),
            "ms": report.took.as_secs_f64() * 1e3, "steps": steps })
}

/// An answer's close candidates (other agents nearly as likely to be
/// meant), best first: `[{"faj", "name", "score", "reason"}]`.
pub fn close_candidates(catalog: &crate::Catalog, close: &[crate::router::Candidate]) -> Value {
    json!(
        close
            .iter()
            .map(|c| {
                let f = &catalog.features[c.index];
                json!({ "faj": f.faj, "name": f.name, "score": c.score, "reason": c.reason })
            })
            .collect::<Vec<_>>()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_is_an_object_and_keeps_repeated_keys() {
        let pairs = [("kind", "fact"), ("tag", "a"), ("tag", "b"), ("tag", "c")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(super::metadata(&pairs), serde_json::json!({ "kind": "fact", "tag": ["a", "b", "c"] }));
    }
}
