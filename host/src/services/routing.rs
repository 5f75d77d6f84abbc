//! `elex:host/routing`. Routing among linked instances arrives with the agent
//! swarm; until then every call answers `unavailable`, so a guest can tell
//! and fall back.

use crate::bindings::elex::agent::types::Response;
use crate::bindings::elex::host::routing::{Candidate, Host, Peer, RoutingError};
use crate::instance::InstanceState;

fn unavailable() -> RoutingError {
    RoutingError::Unavailable(String::from(
        "this host runs single agents; routing among agents is not available",
    ))
}

impl Host for InstanceState {
    fn route(&mut self, _query: String, _limit: u32) -> Result<Vec<Candidate>, RoutingError> {
        Err(unavailable())
    }

    fn consult(&mut self, _agent_id: String, _query: String) -> Result<Response, RoutingError> {
        Err(unavailable())
    }

    fn peers(&mut self) -> Result<Vec<Peer>, RoutingError> {
        Err(unavailable())
    }
}
