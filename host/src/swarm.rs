//! [`Swarm`]: every feature of a catalog as a live agent in one host, linked
//! through `elex:host/routing`.
//!
//! A query is routed ([`Router`]) to one agent and answered there; an agent
//! may `consult` another (a dependency peer, say) through the host. Consults
//! are held to a depth limit (the root agent plus two hops by default) and
//! refused when they would call an agent already on the call chain; each
//! callee runs under its own budget, and every hop is recorded in the
//! answer's trace. Agents are [`SharedAgent`]s: concurrent queries to one
//! agent queue (bounded), a consult that cannot get its callee within
//! `consult_wait` gets `busy` instead of waiting on a possible cycle across
//! threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::bindings::{Query, Response};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::load::LoadedComponent;
use crate::router::{Reason, Router};
use crate::shared::SharedAgent;
use crate::snapshots::SnapshotStore;
use crate::usage::Usage;

/// One consult between agents.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub from: String,
    pub to: String,
    /// 1 for a consult by the routed agent, 2 for one by its callee.
    pub depth: u32,
    pub millis: f64,
    /// `ok`, or why the consult failed.
    pub outcome: String,
}

/// An answered query.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Catalog index of the agent that answered.
    pub agent: usize,
    /// Why it was chosen.
    pub reason: String,
    pub response: Response,
    pub trace: Vec<Hop>,
    /// Time spent routing.
    pub routing: Duration,
    /// Time from the query to the answer.
    pub took: Duration,
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
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            max_depth: 2,
            consult_wait: Duration::from_millis(50),
            start_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// What the agents' routing calls reach.
pub(crate) struct Hub {
    pub(crate) host: Arc<Host>,
    component: Arc<LoadedComponent>,
    snapshots: Option<Arc<SnapshotStore>>,
    pub(crate) router: Router,
    pub(crate) agents: OnceLock<Vec<SharedAgent>>,
    pub(crate) config: SwarmConfig,
    /// For each agent, the agents that require it.
    pub(crate) required_by: Vec<Vec<usize>>,
    /// Each agent's use since the last [`Swarm::save`]: every call, failed
    /// ones and consults included.
    usage: Vec<Mutex<Usage>>,
}

/// Every feature of a catalog, live and linked.
pub struct Swarm {
    hub: Arc<Hub>,
}

impl Swarm {
    /// Starts one agent per catalog feature from `component`, restoring each
    /// from its snapshot in `snapshots` if it has one; `progress(n)` is
    /// called as agents come up (from the starting threads).
    pub fn start(
        host: Arc<Host>,
        component: Arc<LoadedComponent>,
        catalog: Arc<Catalog>,
        snapshots: Option<Arc<SnapshotStore>>,
        config: SwarmConfig,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Swarm> {
        let router = Router::new(catalog.clone());
        let mut required_by = vec![Vec::new(); catalog.features.len()];
        for (i, f) in catalog.features.iter().enumerate() {
            for r in &f.requires {
                if let Some(j) = router.index_of(r) {
                    required_by[j].push(i);
                }
            }
        }
        let hub = Arc::new(Hub {
            host,
            component,
            snapshots,
            router,
            agents: OnceLock::new(),
            config,
            required_by,
            usage: (0..catalog.features.len()).map(|_| Mutex::new(Usage::default())).collect(),
        });
        let n = catalog.features.len();
        let next = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        // The first agent that cannot start stops the others: a component
        // whose start traps or spins would fail (or time out) for every
        // agent alike.
        let failed = std::sync::atomic::AtomicBool::new(false);
        let slots: Vec<OnceLock<Result<crate::instance::AgentInstance>>> =
            (0..n).map(|_| OnceLock::new()).collect();
        let threads = hub.config.start_threads.clamp(1, 64);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let result = hub.start_agent(&catalog.features[i]);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        let _ = slots[i].set(result);
                        progress(started.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                });
            }
        });
        let mut agents = Vec::with_capacity(n);
        let mut first_error = None;
        for (i, slot) in slots.into_iter().enumerate() {
            match slot.into_inner() {
                Some(Ok(instance)) => agents.push(SharedAgent::new(instance)),
                Some(Err(e)) => {
                    first_error.get_or_insert((i, e));
                }
                None => {}
            }
        }
        if let Some((i, e)) = first_error {
            return Err(Error::Lifecycle {
                agent: catalog.features[i].faj.clone(),
                detail: format!(
                    "did not start: {e}; stopped starting the swarm ({} of {n} agents had started)",
                    agents.len()
                ),
            });
        }
        let _ = hub.agents.set(agents);
        Ok(Swarm { hub })
    }

    /// Moves the router's similarity search into an instance of the `hnsw`
    /// component (`bytes`: an `elex:hnsw/library` component) holding every
    /// agent's profile embedding.
    pub fn attach_hnsw(&self, bytes: &[u8]) -> Result<()> {
        let component = self.hub.host.load_hnsw(bytes)?;
        let index = self.hub.host.agent_index(&component, &self.hub.router.profile_rows(), elex_text::DIM)?;
        self.hub.router.attach_index(index);
        Ok(())
    }

    pub fn router(&self) -> &Router {
        &self.hub.router
    }

    pub fn catalog(&self) -> &Catalog {
        self.hub.router.catalog()
    }

    pub fn len(&self) -> usize {
        self.agents().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn agents(&self) -> &[SharedAgent] {
        self.hub.agents.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The live agent at catalog index `i`.
    pub fn agent(&self, i: usize) -> Result<&SharedAgent> {
        self.agents().get(i).ok_or_else(|| Error::Lifecycle {
            agent: format!("#{i}"),
            detail: format!("no such agent: the swarm has {}", self.len()),
        })
    }

    /// Routes `text` and asks the chosen agent.
    pub fn query(&self, text: &str) -> Result<Answer> {
        let t = Instant::now();
        let (i, reason) = self.hub.router.choose(text).ok_or_else(|| Error::Lifecycle {
            agent: String::from("swarm"),
            detail: String::from("the catalog is empty"),
        })?;
        let routing = t.elapsed();
        let mut answer = self.ask(i, text, reason)?;
        answer.routing = routing;
        answer.took = t.elapsed();
        Ok(answer)
    }

    /// Asks agent `i` directly (`reason` says why it was chosen).
    pub fn ask(&self, i: usize, text: &str, reason: Reason) -> Result<Answer> {
        let t = Instant::now();
        let query = self.hub.host.query(text);
        let agent = self.agent(i)?;
        let chain = vec![agent.id().to_string()];
        let (response, trace) = agent.call(|a| {
            let (r, trace) = self.hub.handle(i, a, &query, chain);
            r.map(|r| (r, trace))
        })?;
        Ok(Answer {
            agent: i,
            reason: reason.to_string(),
            response,
            trace,
            routing: Duration::ZERO,
            took: t.elapsed(),
        })
    }

    /// Rewards agent `i`'s answer to `query_id`.
    pub fn feedback(&self, i: usize, query_id: &str, reward: f32) -> Result<()> {
        self.agent(i)?.call(|a| a.feedback(query_id, reward))
    }

    /// The component family the agents' snapshots are stored under.
    pub fn family(&self) -> &str {
        &self.hub.component.family
    }

    /// Stores the snapshots of agents `which` (catalog indices), and the use
    /// of every agent since the last save (added to what `store` holds).
    pub fn save(&self, store: &SnapshotStore, which: impl IntoIterator<Item = usize>) -> Result<()> {
        for i in which {
            let agent = self.agent(i)?;
            let bytes = agent.call(|a| a.snapshot())?;
            store.put(&self.hub.component.family, agent.id(), &bytes)?;
        }
        let mut rows = Vec::new();
        for (i, delta) in self.hub.usage.iter().enumerate() {
            let delta = std::mem::take(&mut *delta.lock().unwrap_or_else(|p| p.into_inner()));
            if delta.calls == 0 && delta.recycles == 0 {
                continue;
            }
            let id = self.agent(i)?.id().to_string();
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
        store.put_usage(rows.iter().map(|(id, u)| (id.as_str(), u)))
    }
}

impl Hub {
    /// A new instance of `feature`'s agent, linked, restored from its stored
    /// snapshot if there is one.
    fn start_agent(
        self: &Arc<Self>,
        feature: &crate::catalog::Feature,
    ) -> Result<crate::instance::AgentInstance> {
        let start = || {
            self.host.instantiate_linked(&self.component, feature.agent_config(), Some(Arc::downgrade(self)))
        };
        let Some(store) = &self.snapshots else { return start() };
        let (instance, restored) = store.start_restored(&self.component.family, &feature.faj, start)?;
        if let crate::snapshots::Restored::Quarantined { reason } = restored {
            self.host.events().emit(crate::events::Event::SnapshotQuarantined {
                agent: feature.faj.clone(),
                component: self.component.family.clone(),
                reason,
            });
        }
        Ok(instance)
    }

    /// Runs `query` on agent `i`'s instance `a` (whose lock the caller
    /// holds) as the end of call chain `chain`: counts the call in the
    /// agent's usage, failed or not, and recycles the instance if it trapped
    /// or broke a budget. Returns the answer and the consults it made.
    fn handle(
        self: &Arc<Self>,
        i: usize,
        a: &mut crate::instance::AgentInstance,
        query: &Query,
        chain: Vec<String>,
    ) -> (Result<Response>, Vec<Hop>) {
        let state = a.state_mut();
        state.chain = chain;
        state.trace.clear();
        let fuel_before = a.fuel_used();
        let started = Instant::now();
        let r = a.handle(query);
        let took = started.elapsed();
        let trace = std::mem::take(&mut a.state_mut().trace);
        {
            let memory = a.memory();
            let mut usage = self.usage[i].lock().unwrap_or_else(|p| p.into_inner());
            usage.record_call(
                took,
                r.is_err(),
                a.fuel_used().saturating_sub(fuel_before),
                memory.used_bytes,
                memory.peak_bytes,
            );
        }
        self.recycle_if_failed(i, a);
        (r, trace)
    }

    /// Replaces a trapped or budget-broken instance with a fresh one
    /// (restored from the stored snapshot, if any). Called with the agent's
    /// lock held.
    fn recycle_if_failed(self: &Arc<Self>, i: usize, instance: &mut crate::instance::AgentInstance) {
        let Some(reason) = instance.failure() else { return };
        let feature = &self.router.catalog().features[i];
        self.host.events().emit(crate::events::Event::ExecutionFailed {
            agent: feature.faj.clone(),
            error: reason.to_string(),
        });
        match self.start_agent(feature) {
            Ok(fresh) => {
                *instance = fresh;
                self.usage[i].lock().unwrap_or_else(|p| p.into_inner()).recycles += 1;
                self.host.events().emit(crate::events::Event::AgentRecycled {
                    agent: feature.faj.clone(),
                    restored: self.snapshots.is_some(),
                });
            }
            Err(e) => {
                tracing::error!(agent = %feature.faj, error = %e, "recycling failed; the agent stays failed")
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
        let Some(agents) = self.agents.get() else {
            return Err(ConsultError::Unavailable(String::from("the swarm is still starting")));
        };
        let Some(i) = self.router.index_of(to) else {
            return Err(ConsultError::UnknownAgent(to.to_string()));
        };
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
        let result =
            agents[i].call_within(self.config.consult_wait, |a| Ok(self.handle(i, a, &query, callee_chain)));
        let millis = started.elapsed().as_secs_f64() * 1e3;
        let hop = |outcome: String| Hop { from: from.clone(), to: to.to_string(), depth, millis, outcome };
        match result {
            Ok((Ok(response), sub)) => {
                let mut trace = vec![hop(String::from("ok"))];
                trace.extend(sub);
                Ok((response, trace))
            }
            Ok((Err(e), _)) => Err(ConsultError::Failed(e.to_string(), hop(format!("failed: {e}")))),
            Err(Error::Busy { .. }) => Err(ConsultError::Busy(to.to_string(), hop(String::from("busy")))),
            Err(e) => Err(ConsultError::Failed(e.to_string(), hop(format!("failed: {e}")))),
        }
    }
}

/// Why a consult failed (mapped onto the WIT `routing-error`).
pub(crate) enum ConsultError {
    Unavailable(String),
    UnknownAgent(String),
    DepthExceeded(u32),
    Cycle(Vec<String>),
    Busy(String, Hop),
    Failed(String, Hop),
}
