//! [`Swarm`]: the one runtime of live agents — every agent a [`Directory`]
//! lists, live in one host and linked through `elex:host/routing`.
//!
//! The directory says who the agents are (their configurations and ids)
//! and answers their `route` and `peers` calls; the application supplies
//! it (the RAN feature catalog's router, in `elex-ran`). An agent may
//! `consult` another (a dependency peer, say) through the host. Consults
//! are held to a depth limit (the root agent plus two hops by default) and
//! refused when they would call an agent already on the call chain; each
//! callee runs under its own budget, and every hop is recorded in the
//! answer's trace. Concurrent calls to one agent queue (bounded); a consult
//! that cannot get its callee within `consult_wait` gets `busy` instead of
//! waiting on a possible cycle across threads.
//!
//! Every call to an agent, whoever makes it (a query, a consult, feedback,
//! a workflow step through [`Swarm::call`]), goes through one path: it
//! starts the agent if it was evicted (restored from its snapshot), counts
//! the call in the agent's [`Usage`](crate::usage::Usage) (failed calls included), recycles an
//! instance that trapped or broke a budget, and stores a checkpoint every
//! `checkpoint_every` calls. Upkeep ([`Swarm::maintain`]: health checks,
//! idle and memory-pressure eviction with the snapshot stored first) is in
//! `upkeep.rs`. Each of these is an [`Event`].

mod agent;
mod upkeep;

pub use agent::{AgentState, Health};
pub use upkeep::{AgentStatus, Upkeep};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::bindings::elex::host::routing::{Candidate, Peer};
use crate::bindings::{AgentConfig, Query, Response};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::host::Host;
use crate::instance::AgentInstance;
use crate::load::LoadedComponent;
use crate::snapshots::{Restored, SnapshotStore};

use agent::LiveAgent;

/// One consult between agents.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// The consulting agent's id.
    pub from: String,
    /// The consulted agent's id, as its configuration spells it.
    pub to: String,
    /// 1 for a consult by the routed agent, 2 for one by its callee.
    pub depth: u32,
    /// Time the consult took, waiting for the callee included, in ms.
    pub millis: f64,
    /// `ok`, or why the consult failed.
    pub outcome: String,
    /// The host the callee answered on, when not this one (a cluster's:
    /// see [`RemoteAgents`]).
    pub host: Option<String>,
}

/// An agent's answer to a query, with the consults it made.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The asked agent's answer.
    pub response: Response,
    /// The consults made while answering, in call order, each followed by
    /// its callee's own; consults refused before reaching a callee (unknown
    /// agent, cycle, too deep) are not recorded.
    pub trace: Vec<Hop>,
    /// Time from the query to the answer.
    pub took: Duration,
}

/// Who the agents of a [`Swarm`] are, and how they find each other: what
/// their `elex:host/routing` calls `route` and `peers` answer. Agent `i`
/// is the `i`-th of `len()`.
pub trait Directory: Send + Sync + 'static {
    /// How many agents there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Agent `i`'s configuration (its `agent_id` names it), asked each
    /// time an instance of it starts; `None` when the directory no longer
    /// lists it (an agent [retired](Swarm::retire)).
    fn config(&self, i: usize) -> Option<AgentConfig>;
    /// Agent `i`'s id: its configuration's `agent_id`, without building the
    /// whole configuration when the directory can say it more cheaply.
    fn agent_id(&self, i: usize) -> Option<String> {
        self.config(i).map(|c| c.agent_id)
    }
    /// The index of the agent a guest or an operator names.
    fn index_of(&self, agent_id: &str) -> Option<usize>;
    /// The best agents for `query`, best first, at most `limit`; `None`
    /// when this directory routes nothing (guests get `unavailable`).
    fn route(&self, query: &str, limit: usize) -> Option<Vec<Candidate>>;
    /// Agent `i`'s peers (dependencies, dependants, conflicts, related).
    fn peers(&self, i: usize) -> Vec<Peer>;
}

/// The simplest [`Directory`]: a list of agents that can consult each
/// other by id, with no router and no peers.
#[derive(Debug, Clone, Default)]
pub struct Roster(pub Vec<AgentConfig>);

impl Directory for Roster {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn config(&self, i: usize) -> Option<AgentConfig> {
        self.0.get(i).cloned()
    }
    fn index_of(&self, agent_id: &str) -> Option<usize> {
        self.0.iter().position(|c| c.agent_id == agent_id)
    }
    fn route(&self, _query: &str, _limit: usize) -> Option<Vec<Candidate>> {
        None
    }
    fn peers(&self, _i: usize) -> Vec<Peer> {
        Vec::new()
    }
}

/// Agents a swarm lists that answer on other hosts (a cluster's): a consult
/// to one of them goes there instead of to this host's instance, with its
/// call chain, so the depth limit and cycle refusal hold across hosts.
/// Set with [`Swarm::set_remote`]; called from guest calls, on the thread
/// that runs them (it may block).
pub trait RemoteAgents: Send + Sync + 'static {
    /// Whether agent `agent` (as its configuration names it) answers on
    /// another host now.
    fn elsewhere(&self, agent: &str) -> bool;
    /// Runs `query` on agent `agent` on another host as the end of call
    /// chain `chain` (which ends with `agent`): its answer, the consults it
    /// made, and the host that answered. `None`: no other host answered
    /// and this one may (it holds the agent too), so it runs here.
    fn consult(
        &self,
        chain: &[String],
        agent: &str,
        query: &Query,
    ) -> Option<Result<(Response, Vec<Hop>, String)>>;
}

/// Limits of a swarm.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Most consult hops below the routed agent.
    pub max_depth: u32,
    /// How long a consult waits for a busy callee.
    pub consult_wait: Duration,
    /// Threads that start the agents.
    pub start_threads: usize,
    /// Linear memory all live agents may hold together: from 85 % of it
    /// [`Swarm::maintain`] evicts agents (unhealthy first, then the least
    /// recently used) until use is below 70 %.
    pub memory_limit_bytes: u64,
    /// Agents unused this long are evicted by [`Swarm::maintain`] (`None`:
    /// never for idleness).
    pub idle_timeout: Option<Duration>,
    /// An agent's snapshot is stored every this many of its calls (0: only
    /// when it is saved, evicted or given feedback through a `Runtime`).
    pub checkpoint_every: u64,
    /// Agents that may be added while the swarm runs ([`Swarm::add`]); a
    /// retired agent's index is never reused, so this bounds additions,
    /// not agents alive at once (the host's pool bounds those).
    pub max_added: usize,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            max_depth: 2,
            consult_wait: Duration::from_millis(50),
            start_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_limit_bytes: 4 << 30,
            idle_timeout: None,
            checkpoint_every: 0,
            max_added: 256,
        }
    }
}

/// Which component each agent of a swarm runs: one for all, except the
/// agents given their own (plugins next to the feature agents).
#[derive(Debug, Clone)]
pub struct AgentComponents {
    default: Arc<LoadedComponent>,
    by_agent: std::collections::HashMap<String, Arc<LoadedComponent>>,
}

impl AgentComponents {
    /// Every agent runs `default`.
    pub fn new(default: Arc<LoadedComponent>) -> AgentComponents {
        AgentComponents { default, by_agent: Default::default() }
    }

    /// Agent `agent_id` runs `component` instead.
    pub fn with(mut self, agent_id: impl Into<String>, component: Arc<LoadedComponent>) -> AgentComponents {
        self.by_agent.insert(agent_id.into(), component);
        self
    }

    /// The component agent `agent_id` runs.
    pub fn of(&self, agent_id: &str) -> &Arc<LoadedComponent> {
        self.by_agent.get(agent_id).unwrap_or(&self.default)
    }
}

impl From<Arc<LoadedComponent>> for AgentComponents {
    fn from(default: Arc<LoadedComponent>) -> AgentComponents {
        AgentComponents::new(default)
    }
}

/// What the agents' routing calls reach.
pub(crate) struct Hub {
    pub(crate) host: Arc<Host>,
    snapshots: Option<Arc<SnapshotStore>>,
    pub(crate) directory: Arc<dyn Directory>,
    /// Agent `i` in slot `i`: those of the start, then those added
    /// ([`Swarm::add`]), up to the capacity fixed at the start. Slots fill
    /// in order and are never emptied (a retired agent stays, marked), so
    /// an index names one agent for the swarm's life and reading needs no
    /// lock.
    slots: Box<[OnceLock<LiveAgent>]>,
    /// Slots filled: agents `0..placed` exist.
    placed: AtomicUsize,
    /// Held while an agent is added.
    adding: std::sync::Mutex<()>,
    pub(crate) config: SwarmConfig,
    /// Where consults to agents on other hosts go, in a cluster.
    remote: OnceLock<Arc<dyn RemoteAgents>>,
}

/// Every agent of a [`Directory`], live and linked.
pub struct Swarm {
    hub: Arc<Hub>,
}

impl Swarm {
    /// Starts every agent of `directory` from its component (`components`:
    /// one for all, or some agents' own), restoring each
    /// from its snapshot in `snapshots` if it has one; `progress(n)` is
    /// called as agents come up (from the starting threads), and
    /// [`Event::SwarmStarted`] when all are. Without `snapshots` nothing an
    /// agent learns outlives the swarm, and eviction is refused (it would
    /// lose it).
    pub fn start(
        host: Arc<Host>,
        components: impl Into<AgentComponents>,
        directory: Arc<dyn Directory>,
        snapshots: Option<Arc<SnapshotStore>>,
        config: SwarmConfig,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Swarm> {
        let t = Instant::now();
        let n = directory.len();
        let components = components.into();
        let slots = (0..n.saturating_add(config.max_added)).map(|_| OnceLock::new()).collect();
        let hub = Arc::new(Hub {
            host,
            snapshots,
            directory,
            slots,
            placed: AtomicUsize::new(0),
            adding: std::sync::Mutex::new(()),
            config,
            remote: OnceLock::new(),
        });
        let next = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        // The first agent that cannot start stops the others: a component
        // whose start traps or spins would fail (or time out) for every
        // agent alike.
        let failed = std::sync::atomic::AtomicBool::new(false);
        type Started = Result<(AgentInstance, Arc<LoadedComponent>)>;
        let started_slots: Vec<OnceLock<Started>> = (0..n).map(|_| OnceLock::new()).collect();
        let threads = hub.config.start_threads.clamp(1, 64);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let result = hub.config_of(i).and_then(|config| {
                            let component = components.of(&config.agent_id).clone();
                            hub.start_agent(&component, config).map(|(a, _)| (a, component))
                        });
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        let _ = started_slots[i].set(result);
                        progress(started.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                });
            }
        });
        let mut agents = Vec::with_capacity(n);
        let mut first_error = None;
        for (i, slot) in started_slots.into_iter().enumerate() {
            match slot.into_inner() {
                Some(Ok((instance, component))) => agents.push(LiveAgent::new(instance, component)),
                Some(Err(e)) => {
                    first_error.get_or_insert((i, e));
                }
                None => {}
            }
        }
        if let Some((i, e)) = first_error {
            return Err(Error::Lifecycle {
                agent: hub.directory.agent_id(i).unwrap_or_else(|| format!("#{i}")),
                detail: format!(
                    "did not start: {e}; stopped starting the swarm ({} of {n} agents had started)",
                    agents.len()
                ),
            });
        }
        for (slot, agent) in hub.slots.iter().zip(agents) {
            let _ = slot.set(agent);
        }
        hub.placed.store(n, Ordering::Release);
        hub.emit(Event::SwarmStarted { agents: n, millis: t.elapsed().as_secs_f64() * 1e3 });
        Ok(Swarm { hub })
    }

    /// The directory the agents come from.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.hub.directory
    }

    /// Agent `i`'s id.
    pub fn agent_id(&self, i: usize) -> Result<&str> {
        self.hub.agent(i).map(LiveAgent::id)
    }

    /// The number of agents placed (running, evicted, failed or retired):
    /// agent indices are `0..len()`.
    pub fn len(&self) -> usize {
        self.hub.placed()
    }

    /// Whether the swarm has no agents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an agent to the running swarm: starts an instance of
    /// `component` with `config` (restored from its stored snapshot if it
    /// has one) and places it at the next index, which it returns. The
    /// other agents keep running. The directory must list it at that index
    /// from then on (its later instances — after an eviction or a trap —
    /// start from the directory's configuration); until it does, nothing
    /// routes or consults to it. Refused once [`SwarmConfig::max_added`]
    /// agents have been added.
    pub fn add(&self, component: Arc<LoadedComponent>, config: AgentConfig) -> Result<usize> {
        let hub = &self.hub;
        let _adding = hub.adding.lock().unwrap_or_else(|p| p.into_inner());
        let i = hub.placed();
        let Some(slot) = hub.slots.get(i) else {
            return Err(Error::Lifecycle {
                agent: config.agent_id,
                detail: format!(
                    "cannot be added: {} agents were added to this swarm since it started, its \
                     limit (SwarmConfig::max_added); a restart starts every installed agent afresh",
                    hub.config.max_added
                ),
            });
        };
        if let Some(j) = hub.directory.index_of(&config.agent_id)
            && hub.agent(j).is_ok_and(|a| !a.books().retired())
        {
            return Err(Error::Lifecycle {
                agent: config.agent_id,
                detail: format!("an agent with that id runs already (#{j})"),
            });
        }
        let agent_id = config.agent_id.clone();
        let (instance, restored) = hub.start_agent(&component, config)?;
        let _ = slot.set(LiveAgent::new(instance, component));
        hub.placed.store(i + 1, Ordering::Release);
        hub.emit(Event::AgentSpawned { agent: agent_id, restored });
        Ok(i)
    }

    /// Takes agent `i` out of the running swarm: waits for its call in
    /// flight, stores its snapshot (what it learned is kept; an agent added
    /// later with its id restores it) and drops its instance. Its index
    /// stays taken: later calls to it fail with [`Error::NoAgent`]. The
    /// directory should stop listing it first, so that nothing new routes
    /// to it.
    pub fn retire(&self, i: usize) -> Result<()> {
        self.take_out(i, true)
    }

    /// [`Swarm::retire`] without storing its snapshot: for an agent whose
    /// state was stored already and that another agent with its id has
    /// taken over (a plugin replaced by a new version), so that its last
    /// snapshot cannot overwrite what the new one has learned since.
    pub fn discard(&self, i: usize) -> Result<()> {
        self.take_out(i, false)
    }

    fn take_out(&self, i: usize, keep_state: bool) -> Result<()> {
        let hub = &self.hub;
        let agent = hub.agent(i)?;
        agent.enter_for_upkeep(|slot| {
            if let Some(instance) = slot
                && keep_state
                && hub.snapshots.is_some()
            {
                hub.store_snapshot(i, instance)?;
            }
            *slot = None;
            let mut books = agent.books();
            books.state = AgentState::Retired;
            books.memory_bytes = 0;
            Ok(())
        })?;
        hub.emit(Event::AgentRetired { agent: agent.id().to_string() });
        Ok(())
    }

    /// Asks agent `i` `text` (a fresh query id; its consults in the trace).
    pub fn ask(&self, i: usize, text: &str) -> Result<Reply> {
        let t = Instant::now();
        let query = self.hub.host.query(text);
        let chain = vec![self.hub.agent(i)?.id().to_string()];
        let (response, trace) = self.hub.call(i, None, |a| Hub::handle(a, &query, chain))?;
        let took = t.elapsed();
        self.hub.emit(Event::QueryAnswered {
            query_id: response.query_id.clone(),
            agent: self.hub.agent(i)?.id().to_string(),
            consults: trace.len(),
            millis: took.as_secs_f64() * 1e3,
        });
        Ok(Reply { response, trace, took })
    }

    /// Rewards agent `i`'s answer to `query_id`.
    pub fn feedback(&self, i: usize, query_id: &str, reward: f32) -> Result<()> {
        self.hub.call(i, None, |a| a.feedback(query_id, reward))?;
        self.hub.emit(Event::AgentRewarded {
            agent: self.hub.agent(i)?.id().to_string(),
            query_id: query_id.to_string(),
            reward,
        });
        Ok(())
    }

    /// Runs `f` on agent `i`'s instance, like every other call: it waits in
    /// the agent's bounded queue, starts the agent if it was evicted, is
    /// counted in its usage and recycles the instance if it traps or breaks
    /// a budget.
    pub fn call<T>(&self, i: usize, f: impl FnOnce(&mut AgentInstance) -> Result<T>) -> Result<T> {
        self.hub.call(i, None, f)
    }

    /// The component family agent `i`'s snapshots are stored under (its
    /// component's: see [`LoadedComponent::family`]).
    pub fn family_of(&self, i: usize) -> Result<&str> {
        Ok(&self.hub.agent(i)?.component().family)
    }

    /// The component agent `i` runs.
    pub fn component_of(&self, i: usize) -> Result<&Arc<LoadedComponent>> {
        Ok(self.hub.agent(i)?.component())
    }

    /// Sends consults to the agents `remote` says answer elsewhere to
    /// them (a cluster host's); `false` when one was set already.
    pub fn set_remote(&self, remote: Arc<dyn RemoteAgents>) -> bool {
        self.hub.remote.set(remote).is_ok()
    }

    /// Runs `query` on agent `i` where it answers now when that is another
    /// host (the [`RemoteAgents`] of [`Swarm::set_remote`] says it lives
    /// there): its answer and that host, as the first call of a chain.
    /// `None`: it answers here (call it as usual), also when no other host
    /// answered and this one holds it.
    pub fn ask_elsewhere(&self, i: usize, query: &Query) -> Option<Result<(Response, String)>> {
        let agent = match self.hub.agent(i) {
            Ok(agent) => agent,
            Err(e) => return Some(Err(e)),
        };
        let id = agent.id();
        let remote = self.hub.remote.get().filter(|r| r.elsewhere(id))?;
        remote
            .consult(&[id.to_string()], id, query)
            .map(|result| result.map(|(response, _, host)| (response, host)))
    }

    /// Runs a consult another host sent: `query` on the last agent of call
    /// chain `chain`, like a consult made here (the callee waits at most
    /// `consult_wait` for its turn; its own consults continue the chain).
    pub fn consult_here(&self, chain: Vec<String>, query: &Query) -> Result<(Response, Vec<Hop>)> {
        let agent = chain.last().ok_or_else(|| Error::NoAgent(String::from("(an empty call chain)")))?;
        let i = self.hub.directory.index_of(agent).ok_or_else(|| Error::NoAgent(agent.clone()))?;
        if chain[..chain.len() - 1].contains(agent) {
            return Err(Error::NoAgent(format!(
                "{agent}: a consult cycle ({}) is refused",
                chain.join(" -> ")
            )));
        }
        if chain.len() as u32 > self.hub.config.max_depth + 1 {
            return Err(Error::NoAgent(format!(
                "{agent}: a consult deeper than {} hops is refused",
                self.hub.config.max_depth
            )));
        }
        self.hub.call(i, Some(self.hub.config.consult_wait), |a| Hub::handle(a, query, chain))
    }

    /// Agent `i`'s state now, as snapshot bytes: its live instance's (taken
    /// in its turn), or the stored one while it has no instance; `None` when
    /// it has neither (never started here, no snapshot stored).
    pub fn snapshot(&self, i: usize) -> Result<Option<Vec<u8>>> {
        let hub = &self.hub;
        let agent = hub.agent(i)?;
        agent.enter_for_upkeep(|slot| match slot {
            Some(instance) => instance.snapshot().map(Some),
            None => match &hub.snapshots {
                Some(store) => store.get(&agent.component().family, agent.id()),
                None => Ok(None),
            },
        })
    }

    /// Makes `bytes` — agent `i`'s state taken elsewhere (another host of a
    /// cluster) — its state here: stored as its snapshot and its instance
    /// dropped, so its next call starts restored from it (checked like any
    /// stored snapshot: one that does not restore is quarantined and the
    /// agent starts fresh). What the dropped instance learned since its last
    /// snapshot is replaced, not merged. Needs a snapshot database.
    pub fn adopt(&self, i: usize, bytes: &[u8]) -> Result<()> {
        let hub = &self.hub;
        let agent = hub.agent(i)?;
        let store = hub.store()?;
        agent.enter_for_upkeep(|slot| {
            if agent.books().retired() {
                return Err(Error::NoAgent(format!("{}: it was taken out of the swarm", agent.id())));
            }
            // Durable with the next save: the cluster's bucket keeps it too.
            store.put(&agent.component().family, agent.id(), bytes)?;
            if slot.take().is_some() {
                let mut books = agent.books();
                books.state = AgentState::Evicted;
                books.memory_bytes = 0;
                books.since_checkpoint = 0;
            }
            Ok(())
        })
    }

    /// Stores the snapshot of every live agent called since its snapshot was
    /// last stored, and every agent's use since the last save: what a
    /// long-running embedder calls periodically. Returns how many snapshots
    /// it stored.
    pub fn save_changed(&self) -> Result<usize> {
        let changed: Vec<usize> = self
            .hub
            .agents()
            .filter(|(_, a)| {
                let books = a.books();
                books.since_checkpoint > 0 && books.state == AgentState::Running
            })
            .map(|(i, _)| i)
            .collect();
        let n = changed.len();
        self.save(changed)?;
        Ok(n)
    }

    /// Stores the snapshots of live agents `which` (swarm indices; an
    /// evicted agent's is stored already) and the use of every agent since
    /// the last save (added to what the database holds), then makes every
    /// write durable. An agent whose snapshot cannot be taken does not stop
    /// the others from being saved; the first such error is returned after.
    /// Without a snapshot database, an error.
    pub fn save(&self, which: impl IntoIterator<Item = usize>) -> Result<()> {
        let store = self.hub.store()?;
        let mut first_error = None;
        for i in which {
            if let Err(e) = self.hub.checkpoint(i) {
                tracing::warn!(agent = i, error = %e, "an agent's snapshot could not be stored");
                first_error.get_or_insert(e);
            }
        }
        // Use per agent id: an agent retired and added again has two slots.
        let mut deltas: std::collections::BTreeMap<String, crate::usage::Usage> = Default::default();
        for (_, agent) in self.hub.agents() {
            let delta = std::mem::take(&mut agent.books().usage);
            if delta.calls == 0 && delta.recycles == 0 && delta.evictions == 0 {
                continue;
            }
            deltas.entry(agent.id().to_string()).or_default().merge(&delta);
        }
        let mut rows = Vec::with_capacity(deltas.len());
        for (id, delta) in deltas {
            let mut total = store
                .usage(&id)
                .unwrap_or_else(|e| {
                    tracing::warn!(agent = %id, error = %e, "stored usage is unreadable; counting from zero");
                    None
                })
                .unwrap_or_default();
            total.merge(&delta);
            rows.push((id, total));
        }
        store.put_usage(rows.iter().map(|(id, u)| (id.as_str(), u)))?;
        store.flush()?;
        first_error.map_or(Ok(()), Err)
    }
}

impl Hub {
    /// Agents `0..placed` exist.
    fn placed(&self) -> usize {
        self.placed.load(Ordering::Acquire)
    }

    /// Every agent placed, retired ones included, with its index.
    fn agents(&self) -> impl Iterator<Item = (usize, &LiveAgent)> {
        self.slots[..self.placed()].iter().enumerate().filter_map(|(i, s)| s.get().map(|a| (i, a)))
    }

    fn agent(&self, i: usize) -> Result<&LiveAgent> {
        let placed = self.placed();
        self.slots
            .get(i)
            .filter(|_| i < placed)
            .and_then(OnceLock::get)
            .ok_or_else(|| Error::NoAgent(format!("#{i}: the swarm has {placed}")))
    }

    /// Agent `i`'s configuration, as the directory gives it now.
    fn config_of(&self, i: usize) -> Result<AgentConfig> {
        self.directory
            .config(i)
            .ok_or_else(|| Error::NoAgent(format!("#{i}: the directory no longer lists it")))
    }

    fn store(&self) -> Result<&SnapshotStore> {
        self.snapshots.as_deref().ok_or_else(|| Error::Lifecycle {
            agent: String::from("swarm"),
            detail: String::from("the swarm has no snapshot database: its agents' state is kept nowhere"),
        })
    }

    fn emit(&self, event: Event) {
        self.host.events().emit(event);
    }

    /// A new instance of `component` configured with `config`, linked,
    /// restored from its stored snapshot if there is one (`true` when it
    /// was).
    fn start_agent(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        config: AgentConfig,
    ) -> Result<(AgentInstance, bool)> {
        let start = || self.host.instantiate_linked(component, config.clone(), Some(Arc::downgrade(self)));
        let Some(store) = &self.snapshots else { return start().map(|a| (a, false)) };
        let (instance, restored) = store.start_restored(&component.family, &config.agent_id, start)?;
        if let Restored::Quarantined { reason } = &restored {
            self.emit(Event::SnapshotQuarantined {
                agent: config.agent_id.clone(),
                component: component.family.clone(),
                reason: reason.clone(),
            });
        }
        Ok((instance, restored.restored()))
    }

    /// The one path of every call to agent `i` (see the module docs):
    /// queue, start if evicted, count, recycle on failure, checkpoint.
    fn call<T>(
        self: &Arc<Self>,
        i: usize,
        wait: Option<Duration>,
        f: impl FnOnce(&mut AgentInstance) -> Result<T>,
    ) -> Result<T> {
        let agent = self.agent(i)?;
        agent.enter(wait, |slot| {
            let instance = match slot {
                Some(instance) => instance,
                None => {
                    if agent.books().retired() {
                        return Err(Error::NoAgent(format!("{}: it was taken out of the swarm", agent.id())));
                    }
                    let (instance, restored) = self.start_agent(agent.component(), self.config_of(i)?)?;
                    let mut books = agent.books();
                    books.state = AgentState::Running;
                    books.memory_bytes = instance.memory().used_bytes;
                    self.emit(Event::AgentSpawned { agent: agent.id().to_string(), restored });
                    slot.insert(instance)
                }
            };
            let fuel_before = instance.fuel_used();
            let started = Instant::now();
            let result = f(instance);
            let took = started.elapsed();
            let checkpoint_due = {
                let memory = instance.memory();
                let mut books = agent.books();
                books.usage.record_call(
                    took,
                    result.is_err(),
                    instance.fuel_used().saturating_sub(fuel_before),
                    memory.used_bytes,
                    memory.peak_bytes,
                );
                books.last_used = Instant::now();
                books.memory_bytes = memory.used_bytes;
                books.since_checkpoint += 1;
                self.config.checkpoint_every > 0 && books.since_checkpoint >= self.config.checkpoint_every
            };
            if let Some(reason) = instance.failure() {
                let reason = reason.to_string();
                self.recycle(i, slot, reason);
            } else if checkpoint_due
                && self.snapshots.is_some()
                && let Err(e) = self.store_snapshot(i, instance)
            {
                tracing::warn!(agent = %agent.id(), error = %e, "periodic checkpoint failed");
            }
            result
        })
    }

    /// Runs `query` on instance `a` as the end of call chain `chain`;
    /// returns the answer and the consults it made.
    fn handle(a: &mut AgentInstance, query: &Query, chain: Vec<String>) -> Result<(Response, Vec<Hop>)> {
        let routing = a.routing_mut();
        routing.chain = chain;
        routing.trace.clear();
        let r = a.handle(query);
        let trace = std::mem::take(&mut a.routing_mut().trace);
        r.map(|r| (r, trace))
    }

    /// Stores instance `a` (agent `i`'s) snapshot now.
    fn store_snapshot(&self, i: usize, a: &mut AgentInstance) -> Result<()> {
        let store = self.store()?;
        let bytes = a.snapshot()?;
        store.put(&self.agent(i)?.component().family, a.id(), &bytes)?;
        self.agent(i)?.books().since_checkpoint = 0;
        Ok(())
    }

    /// Stores live agent `i`'s snapshot (an evicted one's is stored already).
    fn checkpoint(&self, i: usize) -> Result<()> {
        self.agent(i)?.enter_for_upkeep(|slot| match slot {
            Some(a) => self.store_snapshot(i, a),
            None => Ok(()),
        })
    }

    /// Replaces agent `i`'s trapped, budget-broken or unhealthy instance in
    /// `slot` (whose lock the caller holds) with a fresh one, restored from
    /// the stored snapshot if any. If none can start, the slot is emptied
    /// and the agent marked failed; its next call tries again.
    fn recycle(self: &Arc<Self>, i: usize, slot: &mut Option<AgentInstance>, reason: String) {
        let Ok(agent) = self.agent(i) else { return };
        self.emit(Event::ExecutionFailed { agent: agent.id().to_string(), error: reason });
        match self.config_of(i).and_then(|config| self.start_agent(agent.component(), config)) {
            Ok((fresh, restored)) => {
                {
                    let mut books = agent.books();
                    books.usage.recycles += 1;
                    books.state = AgentState::Running;
                    books.health = Health::Healthy;
                    books.health_failures = 0;
                    books.memory_bytes = fresh.memory().used_bytes;
                }
                *slot = Some(fresh);
                self.emit(Event::AgentRecycled { agent: agent.id().to_string(), restored });
            }
            Err(e) => {
                tracing::error!(agent = %agent.id(), error = %e, "recycling failed; the agent stays failed");
                *slot = None;
                let mut books = agent.books();
                books.state = AgentState::Failed;
                books.memory_bytes = 0;
            }
        }
    }

    /// Runs a consult from the agent whose call chain is `chain` to `to`.
    pub(crate) fn consult(
        self: &Arc<Self>,
        chain: &[String],
        to: &str,
        text: &str,
    ) -> std::result::Result<(Response, Vec<Hop>), ConsultError> {
        if self.placed() == 0 {
            return Err(ConsultError::Unavailable(String::from("the swarm is still starting")));
        }
        let Some((i, callee)) = self.directory.index_of(to).and_then(|i| self.agent(i).ok().map(|a| (i, a)))
        else {
            return Err(ConsultError::UnknownAgent(to.to_string()));
        };
        // The callee's own id, however the caller spelled it.
        let to = callee.id();
        if chain.iter().any(|c| c == to) {
            let mut cycle = chain.to_vec();
            cycle.push(to.to_string());
            return Err(ConsultError::Cycle(cycle));
        }
        let depth = chain.len() as u32; // the root is depth 0
        if depth > self.config.max_depth {
            return Err(ConsultError::DepthExceeded(self.config.max_depth));
        }
        let from = chain.last().cloned().unwrap_or_default();
        let started = Instant::now();
        let query = Query {
            id: format!("{}>{}", self.host.query("").id, to),
            text: text.to_string(),
            context: None,
            depth,
        };
        let mut callee_chain = chain.to_vec();
        callee_chain.push(to.to_string());
        let mut answered_on = None;
        let remote = self.remote.get().filter(|r| r.elsewhere(to));
        let result = match remote.and_then(|r| r.consult(&callee_chain, to, &query)) {
            Some(result) => result.map(|(response, sub, host)| {
                answered_on = Some(host);
                (response, sub)
            }),
            None => self.call(i, Some(self.config.consult_wait), |a| Hub::handle(a, &query, callee_chain)),
        };
        let millis = started.elapsed().as_secs_f64() * 1e3;
        let hop = |outcome: String| Hop {
            from: from.clone(),
            to: to.to_string(),
            depth,
            millis,
            outcome,
            host: answered_on.clone(),
        };
        match result {
            Ok((response, sub)) => {
                let mut trace = vec![hop(String::from("ok"))];
                trace.extend(sub);
                Ok((response, trace))
            }
            Err(Error::Busy { .. }) => {
                Err(ConsultError::Busy(to.to_string(), Box::new(hop(String::from("busy")))))
            }
            Err(e) => Err(ConsultError::Failed(e.to_string(), Box::new(hop(format!("failed: {e}"))))),
        }
    }
}

/// Why a consult failed (mapped onto the WIT `routing-error`).
pub(crate) enum ConsultError {
    Unavailable(String),
    UnknownAgent(String),
    DepthExceeded(u32),
    Cycle(Vec<String>),
    Busy(String, Box<Hop>),
    Failed(String, Box<Hop>),
}
