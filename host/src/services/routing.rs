//! `elex:host/routing`: for an instance linked into a [`Swarm`](crate::Swarm)
//! the calls reach the swarm's router and agents; an instance started alone
//! answers `unavailable`, so a guest can tell and fall back.

use crate::bindings::elex::agent::types::Response;
use crate::bindings::elex::host::routing::{Candidate, Host, Peer, Relation, RoutingError};
use crate::instance::InstanceState;
use crate::swarm::{ConsultError, Hub};

impl InstanceState {
    fn hub(&self) -> Result<std::sync::Arc<Hub>, RoutingError> {
        self.swarm.as_ref().and_then(|w| w.upgrade()).ok_or_else(|| {
            RoutingError::Unavailable(String::from(
                "this agent runs alone; routing among agents needs a swarm",
            ))
        })
    }
}

impl Host for InstanceState {
    fn route(&mut self, query: String, limit: u32) -> Result<Vec<Candidate>, RoutingError> {
        let hub = self.hub()?;
        let features = &hub.router.catalog().features;
        Ok(hub
            .router
            .route(&query, limit.min(64) as usize)
            .into_iter()
            .map(|c| Candidate { agent_id: features[c.index].faj.clone(), score: c.score, reason: c.reason })
            .collect())
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
                self.trace.push(hop);
                Err(RoutingError::Busy(a))
            }
            Err(ConsultError::Failed(m, hop)) => {
                self.trace.push(hop);
                Err(RoutingError::Failed(m))
            }
        }
    }

    fn peers(&mut self) -> Result<Vec<Peer>, RoutingError> {
        let hub = self.hub()?;
        let Some(me) = hub.router.index_of(&self.agent_id) else {
            return Err(RoutingError::UnknownAgent(self.agent_id.clone()));
        };
        let features = &hub.router.catalog().features;
        let f = &features[me];
        let known = |codes: &[String], relation: Relation| -> Vec<Peer> {
            codes
                .iter()
                .filter(|c| hub.router.index_of(c).is_some())
                .map(|c| Peer { agent_id: c.clone(), relation })
                .collect()
        };
        let mut out = known(&f.requires, Relation::Requires);
        out.extend(
            hub.required_by[me]
                .iter()
                .map(|&i| Peer { agent_id: features[i].faj.clone(), relation: Relation::RequiredBy }),
        );
        out.extend(known(&f.conflicts, Relation::Conflicts));
        out.extend(known(&f.related, Relation::Enhances));
        Ok(out)
    }
}
