//! One live agent instance: its own `Store`, budgets and bindings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use elex_memgraph::MemoryGraph;

use wasmtime::{Store, Trap};

use crate::bindings::{
    AgentConfig, AgentError, CounterSample, HealthReport, KpiValue, ParameterValue, Plugin, Query, Response,
    Validation, describe_agent_error,
};
use crate::budget::MemoryBudget;
use crate::config::Budgets;
use crate::error::{BudgetKind, Error, Result};
use crate::interfaces::log::LogState;
use crate::interfaces::memory_graph::GraphState;
use crate::interfaces::routing::RoutingState;
use crate::interfaces::wasi::WasiSlot;
use crate::load::LoadedComponent;

/// The data of an instance's `Store`: who it is, what it may use, and the
/// state of each host interface (see [`crate::interfaces`]).
pub struct InstanceState {
    pub(crate) agent_id: String,
    /// The store's resource limiter.
    pub(crate) memory: MemoryBudget,
    pub(crate) budgets: Budgets,
    pub(crate) log: LogState,
    pub(crate) graph: GraphState,
    pub(crate) routing: RoutingState,
    pub(crate) wasi: WasiSlot,
}

/// A live agent. Calls run on the caller's thread; each is held to the
/// instance's CPU deadline and memory budget. After a trap or a budget breach
/// the instance refuses further calls ([`Error::Failed`]).
pub struct AgentInstance {
    store: Store<InstanceState>,
    plugin: Plugin,
    epoch_tick: Duration,
    failed: Option<String>,
    /// Fuel consumed by all calls so far (0 unless fuel is metered).
    fuel_used: u64,
}

impl std::fmt::Debug for AgentInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentInstance")
            .field("agent", &self.id())
            .field("memory", self.memory())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl AgentInstance {
    /// Instantiates `component` and calls the agent's `init` with `config`.
    pub(crate) fn start(
        engine: &wasmtime::Engine,
        component: &LoadedComponent,
        config: AgentConfig,
        budgets: Budgets,
        epoch_tick: Duration,
        graph: Option<Arc<MemoryGraph>>,
        swarm: Option<std::sync::Weak<crate::swarm::Hub>>,
    ) -> Result<AgentInstance> {
        let span = tracing::info_span!("instantiate", agent = %config.agent_id);
        let _enter = span.enter();
        let id = config.agent_id.as_str();
        let state = InstanceState {
            agent_id: id.to_string(),
            memory: MemoryBudget::new(budgets.memory_bytes, budgets.table_elements),
            budgets,
            log: LogState { agent_id: id.to_string() },
            graph: GraphState::new(graph, id),
            routing: RoutingState::new(id, swarm),
            wasi: WasiSlot::new(component.grants.clone()),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        arm_deadline(&mut store, epoch_tick);
        let started = Instant::now();
        let plugin = component
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, &config.agent_id, "instantiate", started, e))?;
        let mut instance = AgentInstance { store, plugin, epoch_tick, failed: None, fuel_used: 0 };
        instance.call("init", |p, s| p.elex_agent_agent().call_init(s, &config))?;
        Ok(instance)
    }

    /// Its place in a swarm: the call chain and trace of swarm queries.
    pub(crate) fn routing_mut(&mut self) -> &mut RoutingState {
        &mut self.store.data_mut().routing
    }

    /// The agent id this instance serves.
    pub fn id(&self) -> &str {
        &self.store.data().agent_id
    }

    /// Memory use against the budget.
    pub fn memory(&self) -> &MemoryBudget {
        &self.store.data().memory
    }

    /// The budgets this instance runs under.
    pub fn budgets(&self) -> &Budgets {
        &self.store.data().budgets
    }

    /// Fuel consumed by this instance's calls so far (0 unless the host
    /// meters fuel).
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// Why the instance is unusable, if it is.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Runs one guest call under the instance's budgets and turns every kind
    /// of failure into an [`Error`] naming the agent and the call.
    fn call<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&Plugin, &mut Store<InstanceState>) -> wasmtime::Result<Result<T, AgentError>>,
    ) -> Result<T> {
        if let Some(reason) = &self.failed {
            return Err(Error::Failed { agent: self.id().to_string(), reason: reason.clone() });
        }
        let span = tracing::debug_span!("call", agent = %self.store.data().agent_id, call);
        let _enter = span.enter();
        arm_deadline(&mut self.store, self.epoch_tick);
        self.store.data_mut().memory.refused = None;
        let started = Instant::now();
        let outcome = f(&self.plugin, &mut self.store);
        // A memory-graph transaction lives within one call: returning,
        // trapping or breaking a budget with it open rolls it back.
        if let Some(operations) = self.store.data_mut().graph.end_call() {
            tracing::warn!(
                agent = %self.store.data().agent_id,
                call,
                operations,
                "memory-graph transaction left open at the end of the call: rolled back"
            );
        }
        if let Some(allowance) = self.store.data().budgets.fuel_per_call {
            let left = self.store.get_fuel().unwrap_or(0);
            self.fuel_used += allowance.saturating_sub(left);
        }
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                Err(Error::Agent { agent: self.id().to_string(), call, detail: describe_agent_error(&e) })
            }
            Err(e) => {
                let agent = self.id().to_string();
                let err = classify(&self.store, &agent, call, started, e);
                tracing::warn!(agent = %agent, call, error = %err, "guest call failed; instance marked failed");
                self.failed = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Answers a query.
    pub fn handle(&mut self, query: &Query) -> Result<Response> {
        self.call("handle", |p, s| p.elex_agent_agent().call_handle(s, query))
    }

    /// Gives a reward for an earlier answer.
    pub fn feedback(&mut self, query_id: &str, reward: f32) -> Result<()> {
        self.call("feedback", |p, s| p.elex_agent_agent().call_feedback(s, query_id, reward))
    }

    /// Checks parameter values.
    pub fn validate(&mut self, parameters: &[ParameterValue]) -> Result<Vec<Validation>> {
        self.call("validate", |p, s| p.elex_agent_agent().call_validate(s, parameters))
    }

    /// Computes KPIs from counter samples.
    pub fn kpis(&mut self, samples: &[CounterSample]) -> Result<Vec<KpiValue>> {
        self.call("kpis", |p, s| p.elex_agent_agent().call_kpis(s, samples))
    }

    /// The agent's learned state.
    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.call("snapshot", |p, s| p.elex_agent_agent().call_snapshot(s))
    }

    /// Restores learned state from [`snapshot`](Self::snapshot) bytes.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.call("restore", |p, s| p.elex_agent_agent().call_restore(s, bytes))
    }

    /// The agent's own health report.
    pub fn health(&mut self) -> Result<HealthReport> {
        self.call("health", |p, s| p.elex_agent_agent().call_health(s).map(Ok))
    }
}

/// Sets the CPU budgets for the next guest entry: the epoch deadline, and
/// the fuel allowance when fuel metering is on.
fn arm_deadline(store: &mut Store<InstanceState>, tick: Duration) {
    let deadline = store.data().budgets.call_deadline;
    // WASI sleeps end here (see `interfaces::wasi`).
    store.data_mut().wasi.start_call(Instant::now() + deadline);
    let ticks = deadline.as_nanos().div_ceil(tick.as_nanos().max(1)).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    store.epoch_deadline_trap();
    if let Some(fuel) = store.data().budgets.fuel_per_call {
        // Fails only when the engine meters no fuel, which `Host::new`
        // refuses for a configuration with a fuel budget.
        let _ = store.set_fuel(fuel);
    }
}

/// Names the budget a failed call broke, or describes the trap.
fn classify(
    store: &Store<InstanceState>,
    agent: &str,
    call: &'static str,
    started: Instant,
    e: wasmtime::Error,
) -> Error {
    let state = store.data();
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return Error::timeout(agent, call, state.budgets.call_deadline, started.elapsed());
        }
        Some(Trap::OutOfFuel) => {
            let limit = state.budgets.fuel_per_call.unwrap_or(0);
            return Error::Budget {
                agent: agent.to_string(),
                call,
                kind: BudgetKind::Fuel,
                limit,
                used: limit,
            };
        }
        _ => {}
    }
    if let Some((requested, limit)) = state.memory.refused {
        return Error::Budget {
            agent: agent.to_string(),
            call,
            kind: BudgetKind::Memory,
            limit,
            used: requested,
        };
    }
    if let Some(full) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Error::Capacity { agent: agent.to_string(), detail: full.to_string() };
    }
    Error::Trap { agent: agent.to_string(), call, detail: format!("{e:#}") }
}
