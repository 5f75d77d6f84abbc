//! `elex:host/memory-graph` on the host's [`MemoryGraph`]: every call acts
//! as the calling agent, so the graph's permissions and quotas apply. Its
//! state is [`GraphState`]; without a graph every call answers
//! `unavailable`.
//!
//! Writes made between `begin` and `commit` are collected and applied in one
//! database transaction at `commit`; reads inside a transaction see committed
//! data. A transaction lives within one call into the agent: the instance
//! rolls it back if the call returns, traps or breaks a budget with it open.

use std::sync::Arc;

use elex_memgraph::{self as mg, Actor, MemoryGraph, Op};

use crate::bindings::elex::host::memory_graph::{
    Connection, ContextId, Engram, EngramData, EngramId, GraphError, Host, SearchHit, SearchQuery,
};

fn convert(e: mg::GraphError) -> GraphError {
    match e {
        mg::GraphError::NotFound(id) => GraphError::NotFound(id),
        mg::GraphError::Denied(m) => GraphError::Denied(m),
        mg::GraphError::QuotaExceeded(m) => GraphError::QuotaExceeded(m),
        mg::GraphError::LimitExceeded(m) => GraphError::LimitExceeded(m),
        mg::GraphError::Invalid(m) => GraphError::Invalid(m),
        mg::GraphError::NoTransaction => GraphError::NoTransaction,
        mg::GraphError::Unavailable(m) => GraphError::Unavailable(m),
        e @ (mg::GraphError::Storage { .. } | mg::GraphError::Corrupt { .. }) => {
            tracing::error!(error = %e, "memory graph storage failure");
            GraphError::Unavailable(e.to_string())
        }
    }
}

fn data(d: EngramData) -> mg::EngramData {
    mg::EngramData { content: d.content, source: d.source, confidence: d.confidence, metadata: d.metadata }
}

/// One instance's view of the memory graph: the graph (if the host has
/// one), who the calls act as, and the transaction open in the current call.
pub(crate) struct GraphState {
    graph: Option<Arc<MemoryGraph>>,
    actor: Actor,
    /// The ops of the open transaction, applied at `commit`.
    transaction: Option<Vec<Op>>,
}

impl GraphState {
    /// Calls acting as `agent_id` on `graph`.
    pub(crate) fn new(graph: Option<Arc<MemoryGraph>>, agent_id: &str) -> GraphState {
        GraphState { graph, actor: Actor::agent(agent_id.to_string()), transaction: None }
    }

    /// Rolls back a transaction left open at the end of a call; returns how
    /// many operations it held.
    pub(crate) fn end_call(&mut self) -> Option<usize> {
        self.transaction.take().map(|ops| ops.len())
    }

    fn graph(&self) -> Result<(Arc<MemoryGraph>, Actor), GraphError> {
        match &self.graph {
            Some(g) => Ok((g.clone(), self.actor.clone())),
            None => Err(GraphError::Unavailable(String::from("this host has no memory graph configured"))),
        }
    }

    /// Applies `op` now, or adds it to the open transaction.
    fn write(&mut self, op: Op) -> Result<bool, GraphError> {
        let (graph, actor) = self.graph()?;
        let limit = graph.config().max_ops_per_transaction;
        if let Some(ops) = &mut self.transaction {
            if ops.len() >= limit {
                return Err(GraphError::LimitExceeded(format!(
                    "a transaction holds at most {limit} operations"
                )));
            }
            ops.push(op);
            return Ok(true);
        }
        graph.apply(&actor, vec![op]).map(|c| c[0]).map_err(convert)
    }
}

impl Host for GraphState {
    fn create(&mut self, d: EngramData, context: Option<ContextId>) -> Result<EngramId, GraphError> {
        let (graph, _) = self.graph()?;
        let id = graph.allocate_engram_id().map_err(convert)?;
        self.write(Op::Create { id, data: data(d), context })?;
        Ok(id)
    }

    fn get(&mut self, id: EngramId) -> Result<Engram, GraphError> {
        let (graph, actor) = self.graph()?;
        let e = graph.get(&actor, id).map_err(convert)?;
        Ok(Engram {
            id: e.id,
            owner: e.owner,
            content: e.data.content,
            source: e.data.source,
            confidence: e.data.confidence,
            metadata: e.data.metadata,
            created_ms: e.created_ms,
            updated_ms: e.updated_ms,
        })
    }

    fn update(&mut self, id: EngramId, d: EngramData) -> Result<(), GraphError> {
        self.write(Op::Update { id, data: data(d) }).map(|_| ())
    }

    fn delete(&mut self, id: EngramId) -> Result<(), GraphError> {
        self.write(Op::Delete { id }).map(|_| ())
    }

    fn connect(&mut self, edge: Connection) -> Result<(), GraphError> {
        self.write(Op::Connect(mg::Connection {
            source: edge.source,
            target: edge.target,
            relation: edge.relation,
            weight: edge.weight,
            metadata: edge.metadata,
        }))
        .map(|_| ())
    }

    fn disconnect(
        &mut self,
        source: EngramId,
        target: EngramId,
        relation: String,
    ) -> Result<bool, GraphError> {
        if self.transaction.is_some() {
            // Known only at commit; report whether it exists now.
            let (graph, actor) = self.graph()?;
            let exists = graph
                .connections(&actor, source)
                .map_err(convert)?
                .iter()
                .any(|c| c.target == target && c.relation == relation);
            self.write(Op::Disconnect { source, target, relation })?;
            return Ok(exists);
        }
        self.write(Op::Disconnect { source, target, relation })
    }

    fn connections(&mut self, id: EngramId) -> Result<Vec<Connection>, GraphError> {
        let (graph, actor) = self.graph()?;
        Ok(graph
            .connections(&actor, id)
            .map_err(convert)?
            .into_iter()
            .map(|c| Connection {
                source: c.source,
                target: c.target,
                relation: c.relation,
                weight: c.weight,
                metadata: c.metadata,
            })
            .collect())
    }

    fn search(&mut self, q: SearchQuery) -> Result<Vec<SearchHit>, GraphError> {
        let (graph, actor) = self.graph()?;
        let q = mg::SearchQuery { text: q.text, metadata: q.metadata, context: q.context, limit: q.limit };
        Ok(graph
            .search(&actor, &q)
            .map_err(convert)?
            .into_iter()
            .map(|h| SearchHit { id: h.id, score: h.score })
            .collect())
    }

    fn path(
        &mut self,
        source: EngramId,
        target: EngramId,
        max_depth: u32,
    ) -> Result<Option<Vec<EngramId>>, GraphError> {
        let (graph, actor) = self.graph()?;
        graph.path(&actor, source, target, max_depth).map_err(convert)
    }

    fn neighbourhood(
        &mut self,
        id: EngramId,
        depth: u32,
        relation: Option<String>,
        limit: u32,
    ) -> Result<Vec<EngramId>, GraphError> {
        let (graph, actor) = self.graph()?;
        graph.neighbourhood(&actor, id, depth, relation.as_deref(), limit).map_err(convert)
    }

    fn create_context(&mut self, name: String) -> Result<ContextId, GraphError> {
        let (graph, _) = self.graph()?;
        let id = graph.allocate_context_id().map_err(convert)?;
        self.write(Op::CreateContext { id, name })?;
        Ok(id)
    }

    fn add_to_context(&mut self, context: ContextId, id: EngramId) -> Result<(), GraphError> {
        self.write(Op::AddToContext { context, id }).map(|_| ())
    }

    fn add_member(&mut self, context: ContextId, agent_id: String) -> Result<(), GraphError> {
        self.write(Op::AddMember { context, agent: agent_id }).map(|_| ())
    }

    fn context_engrams(&mut self, context: ContextId, limit: u32) -> Result<Vec<EngramId>, GraphError> {
        let (graph, actor) = self.graph()?;
        graph.context_engrams(&actor, context, limit).map_err(convert)
    }

    fn begin(&mut self) -> Result<(), GraphError> {
        self.graph()?;
        if self.transaction.is_some() {
            return Err(GraphError::NoTransaction);
        }
        self.transaction = Some(Vec::new());
        Ok(())
    }

    fn commit(&mut self) -> Result<(), GraphError> {
        let (graph, actor) = self.graph()?;
        let Some(ops) = self.transaction.take() else {
            return Err(GraphError::NoTransaction);
        };
        graph.apply(&actor, ops).map(|_| ()).map_err(convert)
    }

    fn rollback(&mut self) -> Result<(), GraphError> {
        self.graph()?;
        match self.transaction.take() {
            Some(_) => Ok(()),
            None => Err(GraphError::NoTransaction),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engram(content: &str) -> EngramData {
        EngramData { content: content.into(), source: "test".into(), confidence: 0.5, metadata: vec![] }
    }

    #[test]
    fn without_a_graph_every_call_is_unavailable() {
        let mut state = GraphState::new(None, "a");
        assert!(matches!(state.create(engram("x"), None), Err(GraphError::Unavailable(_))));
        assert!(matches!(state.begin(), Err(GraphError::Unavailable(_))));
    }

    #[test]
    fn writes_in_a_transaction_land_at_commit_and_a_call_end_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let graph =
            Arc::new(MemoryGraph::open(&dir.path().join("g.redb"), mg::GraphConfig::default()).unwrap());
        let mut state = GraphState::new(Some(graph.clone()), "agent-a");

        // Outside a transaction a write lands at once, owned by the agent.
        let first = state.create(engram("now"), None).unwrap();
        assert_eq!(state.get(first).unwrap().owner, "agent-a");

        // Inside one, nothing lands before `commit`.
        state.begin().unwrap();
        assert!(matches!(state.begin(), Err(GraphError::NoTransaction)), "no nesting");
        let later = state.create(engram("at commit"), None).unwrap();
        assert!(matches!(state.get(later), Err(GraphError::NotFound(_))));
        state.commit().unwrap();
        assert_eq!(state.get(later).unwrap().content, "at commit");

        // A transaction left open when the call ends is rolled back.
        state.begin().unwrap();
        let lost = state.create(engram("lost"), None).unwrap();
        assert_eq!(state.end_call(), Some(1));
        assert!(matches!(state.commit(), Err(GraphError::NoTransaction)));
        assert!(matches!(state.get(lost), Err(GraphError::NotFound(_))));
    }
}
