//! [`AgentPool`]: the lifecycle of many agents over one [`Host`].
//!
//! States: `Starting → Running ⇄ Paused → Stopping → Stopped`, plus
//! `Failed` (a trap or budget breach; recycled from the last good snapshot)
//! and `Evicted` (instance dropped after a snapshot; re-created and restored
//! on its next call). One agent id maps to at most one live instance; a
//! critical agent is never evicted. Invalid transitions are errors.
//!
//! Snapshots (the agent's `snapshot()` export) go to the embedded database
//! ([`SnapshotStore`]) before every eviction or stop and every
//! `checkpoint_every` calls, so eviction loses nothing and a trapped agent
//! comes back with what it had learned by its last checkpoint.
//!
//! Health: the agent's `health()` export under its call budget; consecutive
//! failures make it degraded (1) then unhealthy (3), and an unhealthy agent
//! is recycled. Memory pressure: the sum of live instances' linear memory
//! against the pool's limit, at 70 / 85 / 95 %; from 85 % agents are evicted
//! (unhealthy first, then least recently used) until use is below 70 %.
//!
//! Every transition is a `tracing` event and an [`Event`] on a broadcast
//! channel ([`AgentPool::subscribe`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::{AgentConfig, HealthStatus, Query, Response};
use crate::error::{Error, Result};
pub use crate::events::{Event, EvictReason, Pressure};
use crate::host::Host;
use crate::instance::AgentInstance;
use crate::load::LoadedComponent;
use crate::snapshots::SnapshotStore;
pub use crate::usage::Usage;

/// Where an agent is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Paused,
    Stopping,
    Stopped,
    Failed,
    Evicted,
}

/// The agent's health as the pool sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Limits of the pool.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Linear memory all live agents may hold together.
    pub memory_bytes: u64,
    /// Agents unused this long are evicted by [`AgentPool::evict_idle`].
    pub idle_timeout: Duration,
    /// A snapshot is stored every this many calls of an agent (0: only on
    /// eviction and stop).
    pub checkpoint_every: u64,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits { memory_bytes: 2 << 30, idle_timeout: Duration::from_secs(600), checkpoint_every: 50 }
    }
}

/// A snapshot of one agent's status.
#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub id: String,
    pub state: State,
    pub health: Health,
    pub critical: bool,
    pub usage: Usage,
    pub idle: Duration,
}

struct Slot {
    config: AgentConfig,
    component: Arc<LoadedComponent>,
    instance: Option<AgentInstance>,
    state: State,
    health: Health,
    health_failures: u32,
    critical: bool,
    last_used: Instant,
    usage: Usage,
    since_checkpoint: u64,
}

/// Many agents over one host, with their lifecycle, health, eviction and
/// snapshots.
pub struct AgentPool {
    host: Arc<Host>,
    snapshots: Option<SnapshotStore>,
    limits: PoolLimits,
    slots: HashMap<String, Slot>,
}

impl AgentPool {
    /// A pool over `host`; snapshots go to `snapshots` (`None`: kept in no
    /// database, so eviction is refused rather than lossy).
    pub fn new(host: Arc<Host>, snapshots: Option<SnapshotStore>, limits: PoolLimits) -> AgentPool {
        AgentPool { host, snapshots, limits, slots: HashMap::new() }
    }

    /// Receives every [`Event`] of the pool's host from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.host.subscribe()
    }

    fn emit(&self, event: Event) {
        self.host.events().emit(event);
    }

    fn lifecycle(agent: &str, detail: impl Into<String>) -> Error {
        Error::Lifecycle { agent: agent.to_string(), detail: detail.into() }
    }

    fn slot(&mut self, id: &str) -> Result<&mut Slot> {
        self.slots.get_mut(id).ok_or_else(|| Self::lifecycle(id, "no such agent in the pool"))
    }

    /// Instantiates `config.agent_id` and restores its stored snapshot, if any.
    fn start_instance(
        &self,
        component: &LoadedComponent,
        config: &AgentConfig,
    ) -> Result<(AgentInstance, bool)> {
        let start = || self.host.instantiate(component, config.clone());
        let Some(store) = &self.snapshots else { return Ok((start()?, false)) };
        let (instance, restored) = store.start_restored(&component.family, &config.agent_id, start)?;
        if let crate::snapshots::Restored::Quarantined { reason } = &restored {
            self.emit(Event::SnapshotQuarantined {
                agent: config.agent_id.clone(),
                component: component.family.clone(),
                reason: reason.clone(),
            });
        }
        Ok((instance, restored.restored()))
    }

    /// Starts an agent. Its stored snapshot, if any, is restored: what it
    /// learned in an earlier run is kept.
    pub fn spawn(
        &mut self,
        component: Arc<LoadedComponent>,
        config: AgentConfig,
        critical: bool,
    ) -> Result<()> {
        let id = config.agent_id.clone();
        if self.slots.contains_key(&id) {
            return Err(Self::lifecycle(&id, "already in the pool (one live instance per agent id)"));
        }
        let (instance, restored) = self.start_instance(&component, &config)?;
        // Use is cumulative across runs when the pool has a database.
        let usage = match &self.snapshots {
            Some(store) => store.usage(&id)?.unwrap_or_default(),
            None => Usage::default(),
        };
        let usage = Usage { memory_bytes: instance.memory().used_bytes, ..usage };
        self.slots.insert(
            id.clone(),
            Slot {
                config,
                component,
                instance: Some(instance),
                state: State::Running,
                health: Health::Healthy,
                health_failures: 0,
                critical,
                last_used: Instant::now(),
                usage,
                since_checkpoint: 0,
            },
        );
        self.emit(Event::AgentSpawned { agent: id, restored });
        Ok(())
    }

    /// Stores the agent's snapshot now.
    pub fn checkpoint(&mut self, id: &str) -> Result<()> {
        let store_missing = self.snapshots.is_none();
        let slot = self.slot(id)?;
        let Some(instance) = slot.instance.as_mut() else {
            return Err(Self::lifecycle(id, format!("cannot checkpoint a {:?} agent", slot.state)));
        };
        if store_missing {
            return Err(Self::lifecycle(id, "the pool has no snapshot database"));
        }
        let bytes = instance.snapshot()?;
        slot.since_checkpoint = 0;
        let usage = slot.usage.clone();
        let family = slot.component.family.clone();
        if let Some(store) = &self.snapshots {
            store.put_with_usage(&family, id, &bytes, &usage)?;
        }
        Ok(())
    }

    /// Writes every agent's usage to the database (one transaction), so
    /// `elex agents stats` sees it; a no-op without a database.
    pub fn save_usage(&self) -> Result<()> {
        match &self.snapshots {
            Some(store) => store.put_usage(self.slots.iter().map(|(id, s)| (id.as_str(), &s.usage))),
            None => Ok(()),
        }
    }

    /// Brings an evicted or failed agent back, restored from its snapshot.
    fn revive(&mut self, id: &str) -> Result<()> {
        let (component, config, state) = {
            let s = self.slot(id)?;
            (s.component.clone(), s.config.clone(), s.state)
        };
        let (instance, restored) = self.start_instance(&component, &config)?;
        let slot = self.slot(id)?;
        slot.instance = Some(instance);
        slot.state = State::Running;
        slot.health = Health::Healthy;
        slot.health_failures = 0;
        if state == State::Failed {
            slot.usage.recycles += 1;
            self.emit(Event::AgentRecycled { agent: id.to_string(), restored });
        }
        Ok(())
    }

    /// Runs one call on a live agent: revives it if evicted or failed,
    /// counts use, checkpoints periodically, and marks it failed (then
    /// recycles it) when the call traps or breaks a budget.
    fn call<T>(&mut self, id: &str, f: impl FnOnce(&mut AgentInstance) -> Result<T>) -> Result<T> {
        let state = self.slot(id)?.state;
        match state {
            State::Running => {}
            State::Evicted | State::Failed => self.revive(id)?,
            other => {
                return Err(Self::lifecycle(id, format!("is {other:?}; only running agents take calls")));
            }
        }
        let slot = self.slot(id)?;
        let Some(instance) = slot.instance.as_mut() else {
            return Err(Self::lifecycle(id, "running without an instance"));
        };
        let started = Instant::now();
        let fuel_before = instance.fuel_used();
        let result = f(instance);
        let took = started.elapsed();
        slot.last_used = Instant::now();
        let memory = instance.memory();
        slot.usage.record_call(
            took,
            result.is_err(),
            instance.fuel_used() - fuel_before,
            memory.used_bytes,
            memory.peak_bytes,
        );
        slot.since_checkpoint += 1;
        if instance.failure().is_some() {
            slot.state = State::Failed;
            slot.instance = None;
            let error = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
            self.emit(Event::ExecutionFailed { agent: id.to_string(), error });
            // Recycle now, so the next caller finds it running.
            if let Err(e) = self.revive(id) {
                tracing::warn!(agent = id, error = %e, "recycling failed; the agent stays failed");
            }
        } else if self.limits.checkpoint_every > 0
            && self.snapshots.is_some()
            && self.slots.get(id).is_some_and(|s| s.since_checkpoint >= self.limits.checkpoint_every)
        {
            self.checkpoint(id)?;
        }
        result
    }

    /// Asks agent `id` a query.
    pub fn handle(&mut self, id: &str, query: &Query) -> Result<Response> {
        self.call(id, |a| a.handle(query))
    }

    /// Rewards an earlier answer of agent `id`.
    pub fn feedback(&mut self, id: &str, query_id: &str, reward: f32) -> Result<()> {
        self.call(id, |a| a.feedback(query_id, reward))
    }

    /// Running → Paused: calls are refused until resumed.
    pub fn pause(&mut self, id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        match slot.state {
            State::Running => {
                slot.state = State::Paused;
                Ok(())
            }
            other => Err(Self::lifecycle(id, format!("cannot pause a {other:?} agent"))),
        }
    }

    /// Paused → Running.
    pub fn resume(&mut self, id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        match slot.state {
            State::Paused => {
                slot.state = State::Running;
                Ok(())
            }
            other => Err(Self::lifecycle(id, format!("cannot resume a {other:?} agent"))),
        }
    }

    /// Running or Paused → Stopping → Stopped, snapshotting first.
    pub fn stop(&mut self, id: &str) -> Result<()> {
        let state = self.slot(id)?.state;
        if !matches!(state, State::Running | State::Paused) {
            return Err(Self::lifecycle(id, format!("cannot stop a {state:?} agent")));
        }
        self.slot(id)?.state = State::Stopping;
        if self.snapshots.is_some()
            && let Err(e) = self.checkpoint(id)
        {
            self.slot(id)?.state = state;
            return Err(e);
        }
        let slot = self.slot(id)?;
        slot.instance = None;
        slot.state = State::Stopped;
        Ok(())
    }

    /// Snapshots the agent to the database and drops its instance; its next
    /// call re-creates and restores it. Critical agents are never evicted.
    pub fn evict(&mut self, id: &str, reason: EvictReason) -> Result<()> {
        let slot = self.slot(id)?;
        if slot.critical {
            return Err(Self::lifecycle(id, "is critical and is never evicted"));
        }
        if slot.state != State::Running {
            return Err(Self::lifecycle(id, format!("cannot evict a {:?} agent", slot.state)));
        }
        self.checkpoint(id)?;
        let slot = self.slot(id)?;
        slot.instance = None;
        slot.state = State::Evicted;
        slot.usage.evictions += 1;
        slot.usage.memory_bytes = 0;
        self.emit(Event::AgentEvicted { agent: id.to_string(), reason });
        Ok(())
    }

    /// Evicts every non-critical running agent idle longer than the limit.
    /// Returns the ids evicted.
    pub fn evict_idle(&mut self) -> Result<Vec<String>> {
        let now = Instant::now();
        let idle: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.state == State::Running
                    && !s.critical
                    && now.duration_since(s.last_used) >= self.limits.idle_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            self.evict(id, EvictReason::Idle)?;
        }
        Ok(idle)
    }

    /// Linear memory held by live agents now.
    pub fn memory_used(&self) -> u64 {
        self.slots.values().filter_map(|s| s.instance.as_ref()).map(|i| i.memory().used_bytes).sum()
    }

    fn pressure_of(&self, used: u64) -> Pressure {
        let pct = used as f64 * 100.0 / self.limits.memory_bytes.max(1) as f64;
        match pct {
            p if p >= 95.0 => Pressure::Critical,
            p if p >= 85.0 => Pressure::High,
            p if p >= 70.0 => Pressure::Elevated,
            _ => Pressure::Normal,
        }
    }

    /// Checks memory pressure; from `High` evicts unhealthy agents first,
    /// then the least recently used, until use is below 70 %. Returns the
    /// level found and the ids evicted.
    pub fn relieve_memory_pressure(&mut self) -> Result<(Pressure, Vec<String>)> {
        let used = self.memory_used();
        let level = self.pressure_of(used);
        let mut evicted = Vec::new();
        if level == Pressure::Normal {
            return Ok((level, evicted));
        }
        self.emit(Event::MemoryPressure { level, used_bytes: used, limit_bytes: self.limits.memory_bytes });
        if level < Pressure::High {
            return Ok((level, evicted));
        }
        let mut candidates: Vec<(bool, Instant, String)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.state == State::Running && !s.critical)
            .map(|(id, s)| (s.health != Health::Unhealthy, s.last_used, id.clone()))
            .collect();
        // Unhealthy (false) first, then oldest use.
        candidates.sort();
        // Divide first: a limit near u64::MAX must not overflow.
        let target = self.limits.memory_bytes / 100 * 70;
        for (_, _, id) in candidates {
            if self.memory_used() < target {
                break;
            }
            self.evict(&id, EvictReason::MemoryPressure(level))?;
            evicted.push(id);
        }
        Ok((level, evicted))
    }

    /// Calls every running agent's `health()`; one failure makes an agent
    /// degraded, three in a row unhealthy, and unhealthy agents are recycled.
    pub fn check_health(&mut self) -> Result<(usize, usize, usize)> {
        let ids: Vec<String> =
            self.slots.iter().filter(|(_, s)| s.state == State::Running).map(|(id, _)| id.clone()).collect();
        for id in &ids {
            let report = self.call(id, |a| a.health());
            let slot = self.slot(id)?;
            let ok = matches!(&report, Ok(r) if r.status == HealthStatus::Healthy);
            slot.health_failures = if ok { 0 } else { slot.health_failures + 1 };
            slot.health = match slot.health_failures {
                0 => Health::Healthy,
                1 | 2 => Health::Degraded,
                _ => Health::Unhealthy,
            };
            if slot.health == Health::Unhealthy && slot.state == State::Running {
                slot.state = State::Failed;
                slot.instance = None;
                self.revive(id)?;
            }
        }
        let count = |h: Health| self.slots.values().filter(|s| s.health == h).count();
        let counts = (count(Health::Healthy), count(Health::Degraded), count(Health::Unhealthy));
        self.emit(Event::HealthChecked { healthy: counts.0, degraded: counts.1, unhealthy: counts.2 });
        Ok(counts)
    }

    /// Status of one agent.
    pub fn status(&self, id: &str) -> Option<AgentStatus> {
        self.slots.get(id).map(|s| AgentStatus {
            id: id.to_string(),
            state: s.state,
            health: s.health,
            critical: s.critical,
            usage: s.usage.clone(),
            idle: s.last_used.elapsed(),
        })
    }

    /// Status of every agent, sorted by id.
    pub fn list(&self) -> Vec<AgentStatus> {
        let mut ids: Vec<&String> = self.slots.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.status(id)).collect()
    }
}
