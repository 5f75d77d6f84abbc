//! `elex:host/routing`: for an instance linked into a [`Swarm`](crate::Swarm)
//! `route` and `peers` are answered by the swarm's
//! [`Directory`](crate::swarm::Directory) and `consult` reaches its agents;
//! an instance started alone answers `unavailable`, so a guest can tell
//! and fall back. Its state is [`RoutingState`].

use std::sync::{Arc, Weak};

use crate::bindings::elex::agent::types::Response;
use crate::bindings::elex::host::routing::{Candidate, Host, Peer, RoutingError};
use crate::swarm::{ConsultError, Hop, Hub};

/// One instance's place in a swarm: the swarm (none when started alone),
/// and during a call the chain of agents that led to it and the consults
/// it made.
pub(crate) struct RoutingState {
    agent_id: String,
    swarm: Option<Weak<Hub>>,
    /// Agents on the current call chain, the root caller first, this agent
    /// last (empty outside a swarm query).
    pub(crate) chain: Vec<String>,
    /// Consult hops made during the current call (and by the agents it
    /// consulted).
    pub(crate) trace: Vec<Hop>,
}

impl RoutingState {
    pub(crate) fn new(agent_id: &str, swarm: Option<Weak<Hub>>) -> RoutingState {
        RoutingState { agent_id: agent_id.to_string(), swarm, chain: Vec::new(), trace: Vec::new() }
    }

    fn hub(&self) -> Result<Arc<Hub>, RoutingError> {
        self.swarm.as_ref().and_then(Weak::upgrade).ok_or_else(|| {
            RoutingError::Unavailable(String::from(
                "this agent runs alone; routing among agents needs a swarm",
            ))
        })
    }
}

impl Host for RoutingState {
    fn route(&mut self, query: String, limit: u32) -> Result<Vec<Candidate>, RoutingError> {
        self.hub()?.directory.route(&query, limit.min(64) as usize).ok_or_else(|| {
            RoutingError::Unavailable(String::from("this swarm has no router: consult agents by id"))
        })
    }

    fn consult(&mut self, agent_id: String, query: String) -> Result<Response, RoutingError> {
        let hub = self.hub()?;
        let chain = if self.chain.is_empty() { vec![self.agent_id.clone()] } else { self.chain.clone() };
        match hub.consult(&chain, &agent_id, &query) {
            Ok((response, hops)) => {
                self.trace.extend(hops);
                Ok(response)
            }
            Err(ConsultError::Unavailable(m)) => Err(RoutingError::Unavailable(m)),
            Err(ConsultError::UnknownAgent(a)) => Err(RoutingError::UnknownAgent(a)),
            Err(ConsultError::DepthExceeded(d)) => Err(RoutingError::DepthExceeded(d)),
            Err(ConsultError::Cycle(c)) => Err(RoutingError::Cycle(c)),
            Err(ConsultError::Busy(a, hop)) => {
                self.trace.push(*hop);
                Err(RoutingError::Busy(a))
            }
            Err(ConsultError::Failed(m, hop)) => {
                self.trace.push(*hop);
                Err(RoutingError::Failed(m))
            }
        }
    }

    fn peers(&mut self) -> Result<Vec<Peer>, RoutingError> {
        let hub = self.hub()?;
        let Some(me) = hub.directory.index_of(&self.agent_id) else {
            return Err(RoutingError::UnknownAgent(self.agent_id.clone()));
        };
        Ok(hub.directory.peers(me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_alone_is_told_routing_is_unavailable() {
        let mut alone = RoutingState::new("a", None);
        assert!(matches!(alone.route("x".into(), 3), Err(RoutingError::Unavailable(_))));
        assert!(matches!(alone.consult("b".into(), "x".into()), Err(RoutingError::Unavailable(_))));
        assert!(alone.trace.is_empty());
    }
}
