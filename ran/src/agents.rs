//! Which agents a running [`Runtime`](crate::Runtime) has: its catalog
//! (features, then plugins), the [`Router`] over it, and where each agent
//! lives in the [`Swarm`](elex_host::Swarm) — one [`Agents`] value, swapped
//! whole when a plugin is loaded or unloaded while the runtime runs.
//!
//! A catalog index names a feature of one `Agents` value; the swarm's index
//! (its slot) names a live agent for the swarm's whole life: slots are
//! appended for added agents and never reused, while a new catalog is
//! compact (an unloaded plugin leaves no hole). A request takes the current
//! value once ([`AgentDirectory::current`]) and uses it throughout, so it
//! routes, asks and reports in one consistent view even while a plugin
//! comes or goes; a call to an agent retired meanwhile fails with
//! `NoAgent`, never reaches another agent.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use elex_host::types::{Candidate as RoutingCandidate, Peer};
use elex_host::{AgentConfig, Directory};

use crate::catalog::{Catalog, Feature};
use crate::error::{Error, Result};
use crate::router::Router;

/// The agents of a runtime at one moment. See the module docs.
pub struct Agents {
    router: Arc<Router>,
    /// Catalog index → swarm slot.
    slots: Vec<usize>,
    /// Swarm slot → catalog index, for the slots listed.
    by_slot: HashMap<usize, usize>,
}

impl Agents {
    /// The agents of `router`'s catalog, feature `i` in swarm slot
    /// `slots[i]`.
    pub(crate) fn new(router: Arc<Router>, slots: Vec<usize>) -> Agents {
        debug_assert_eq!(slots.len(), router.catalog().features.len());
        let by_slot = slots.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        Agents { router, slots, by_slot }
    }

    /// The catalog: features, then plugins.
    pub fn catalog(&self) -> &Arc<Catalog> {
        self.router.catalog_arc()
    }

    /// The router over the catalog.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Catalog entry `i`.
    pub fn feature(&self, i: usize) -> &Feature {
        &self.catalog().features[i]
    }

    /// The swarm slot of catalog entry `i`.
    pub fn slot(&self, i: usize) -> Result<usize> {
        self.slots.get(i).copied().ok_or_else(|| Error::NoAgent(format!("#{i}")))
    }

    /// The swarm slot of the agent `agent` names (a FAJ code in any
    /// spelling, or a plugin id).
    pub fn slot_of(&self, agent: &str) -> Result<usize> {
        self.slot(self.catalog().index_of(agent)?)
    }

    /// Every catalog entry's swarm slot, in catalog order.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    /// The catalog index of the agent in swarm slot `slot`, if listed.
    pub fn index_of_slot(&self, slot: usize) -> Option<usize> {
        self.by_slot.get(&slot).copied()
    }
}

/// The runtime's agents as the swarm sees them (its [`Directory`], in swarm
/// slots), swapped whole on a change.
pub struct AgentDirectory {
    current: RwLock<Arc<Agents>>,
}

impl AgentDirectory {
    pub(crate) fn new(agents: Agents) -> AgentDirectory {
        AgentDirectory { current: RwLock::new(Arc::new(agents)) }
    }

    /// The agents now; hold it for the length of one request.
    pub fn current(&self) -> Arc<Agents> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on, `agents`.
    pub(crate) fn replace(&self, agents: Agents) {
        self.restore(Arc::new(agents));
    }

    /// From now on, `agents` again (an earlier value).
    pub(crate) fn restore(&self, agents: Arc<Agents>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = agents;
    }
}

impl Directory for AgentDirectory {
    fn len(&self) -> usize {
        self.current().slots.len()
    }

    fn config(&self, slot: usize) -> Option<AgentConfig> {
        let agents = self.current();
        agents.index_of_slot(slot).map(|i| agents.feature(i).agent_config())
    }

    fn agent_id(&self, slot: usize) -> Option<String> {
        let agents = self.current();
        agents.index_of_slot(slot).map(|i| agents.feature(i).faj.clone())
    }

    fn index_of(&self, agent_id: &str) -> Option<usize> {
        let agents = self.current();
        agents.router.index_of(agent_id).and_then(|i| agents.slots.get(i).copied())
    }

    fn route(&self, query: &str, limit: usize) -> Option<Vec<RoutingCandidate>> {
        Directory::route(&**self.current().router(), query, limit)
    }

    fn peers(&self, slot: usize) -> Vec<Peer> {
        let agents = self.current();
        agents.index_of_slot(slot).map(|i| agents.router.peers(i)).unwrap_or_default()
    }
}
