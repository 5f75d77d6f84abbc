//! The swarm's upkeep: each agent's status, health checks, and eviction
//! (idle agents, memory pressure) with the snapshot stored first, so an
//! evicted agent loses nothing and comes back on its next call.
//!
//! Health: the agent's `health()` export under its call budget; one failed
//! check makes it degraded, three in a row unhealthy, and an unhealthy
//! instance is recycled (restored from its last stored snapshot).
//! Memory pressure: the linear memory of live instances against
//! [`SwarmConfig::memory_limit_bytes`](super::SwarmConfig), at 70 / 85 /
//! 95 %; from 85 % agents are evicted, unhealthy ones first, then the least
//! recently used, until use is below 70 %.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent::{AgentState, Health};
use super::{Hub, Swarm};
use crate::bindings::HealthStatus;
use crate::error::{Error, Result};
use crate::events::{Event, EvictReason, Pressure};
use crate::usage::Usage;

/// One agent's status.
#[derive(Debug, Clone)]
pub struct AgentStatus {
    /// The agent's id.
    pub id: String,
    /// Whether it has a live instance, was evicted, or failed.
    pub state: AgentState,
    /// Its health as the health checks have found it.
    pub health: Health,
    /// Use since the swarm last saved it (the database holds the rest).
    pub usage: Usage,
    /// Linear memory of its live instance (0 while evicted).
    pub memory_bytes: u64,
    /// Time since its last call.
    pub idle: Duration,
    /// Callers running or waiting now.
    pub in_flight: u32,
}

/// What one round of [`Swarm::maintain`] found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Upkeep {
    /// Agents healthy, degraded and unhealthy after the health checks.
    pub health: (usize, usize, usize),
    /// The memory pressure found.
    pub pressure: Pressure,
    /// Catalog indices of the agents evicted, for idleness or pressure.
    pub evicted: Vec<usize>,
}

impl Swarm {
    /// The status of agent `i`.
    pub fn status(&self, i: usize) -> Result<AgentStatus> {
        let agent = self.hub.agent(i)?;
        let books = agent.books().clone();
        Ok(AgentStatus {
            id: agent.id().to_string(),
            state: books.state,
            health: books.health,
            usage: books.usage,
            memory_bytes: books.memory_bytes,
            idle: books.last_used.elapsed(),
            in_flight: agent.in_flight(),
        })
    }

    /// Linear memory held by the live agents now.
    pub fn memory_used(&self) -> u64 {
        self.hub.agents().map(|(_, a)| a.books().memory_bytes).sum()
    }

    /// Stores agent `i`'s snapshot and drops its instance; its next call
    /// starts and restores a new one. `false` when it had no instance.
    /// Refused without a snapshot database (it would lose what it learned).
    pub fn evict(&self, i: usize, reason: EvictReason) -> Result<bool> {
        self.hub.evict(i, reason)
    }

    /// Health checks, then eviction of idle agents and under memory
    /// pressure (see the module docs). Call it periodically; a service does.
    pub fn maintain(&self) -> Result<Upkeep> {
        let health = self.check_health()?;
        let mut evicted = self.evict_idle()?;
        let (pressure, more) = self.relieve_memory_pressure()?;
        evicted.extend(more);
        Ok(Upkeep { health, pressure, evicted })
    }

    /// Calls every live agent's `health()`: one failure makes it degraded,
    /// three in a row unhealthy, and an unhealthy instance is recycled.
    /// Evicted agents are not woken for it. Returns (healthy, degraded,
    /// unhealthy) after the round.
    pub fn check_health(&self) -> Result<(usize, usize, usize)> {
        let hub = &self.hub;
        for (i, agent) in hub.agents() {
            let checked = agent.enter_for_upkeep(|slot| {
                let Some(instance) = slot else { return Ok(None) };
                let ok = matches!(instance.health(), Ok(r) if r.status == HealthStatus::Healthy);
                let unhealthy = {
                    let mut books = agent.books();
                    books.health_failures = if ok { 0 } else { books.health_failures + 1 };
                    books.health = match books.health_failures {
                        0 => Health::Healthy,
                        1 | 2 => Health::Degraded,
                        _ => Health::Unhealthy,
                    };
                    books.health == Health::Unhealthy
                };
                if unhealthy || instance.failure().is_some() {
                    let why = instance.failure().unwrap_or("three failed health checks in a row").to_string();
                    hub.recycle(i, slot, why);
                }
                Ok(Some(ok))
            });
            if let Err(e) = checked {
                tracing::warn!(agent = %agent.id(), error = %e, "health check skipped");
            }
        }
        let mut counts = (0, 0, 0);
        for (_, agent) in hub.agents() {
            let books = agent.books();
            if books.retired() {
                continue;
            }
            match books.health {
                Health::Healthy => counts.0 += 1,
                Health::Degraded => counts.1 += 1,
                Health::Unhealthy => counts.2 += 1,
            }
        }
        hub.emit(Event::HealthChecked { healthy: counts.0, degraded: counts.1, unhealthy: counts.2 });
        Ok(counts)
    }

    /// Evicts every running agent unused for longer than
    /// [`SwarmConfig::idle_timeout`](super::SwarmConfig). Returns their
    /// catalog indices.
    pub fn evict_idle(&self) -> Result<Vec<usize>> {
        let Some(timeout) = self.hub.config.idle_timeout else { return Ok(Vec::new()) };
        let now = Instant::now();
        let idle: Vec<usize> = self
            .hub
            .agents()
            .filter(|(_, a)| {
                let books = a.books();
                books.state == AgentState::Running && now.duration_since(books.last_used) >= timeout
            })
            .map(|(i, _)| i)
            .collect();
        let mut evicted = Vec::new();
        for i in idle {
            if self.hub.evict(i, EvictReason::Idle)? {
                evicted.push(i);
            }
        }
        Ok(evicted)
    }

    /// Checks memory pressure; from `High` evicts unhealthy agents first,
    /// then the least recently used, until use is below 70 % of the limit.
    /// Returns the level found and the catalog indices evicted.
    pub fn relieve_memory_pressure(&self) -> Result<(Pressure, Vec<usize>)> {
        let limit = self.hub.config.memory_limit_bytes.max(1);
        let used = self.memory_used();
        let level = Pressure::of(used, limit);
        let mut evicted = Vec::new();
        if level == Pressure::Normal {
            return Ok((level, evicted));
        }
        self.hub.emit(Event::MemoryPressure { level, used_bytes: used, limit_bytes: limit });
        if level < Pressure::High {
            return Ok((level, evicted));
        }
        let mut candidates: Vec<(bool, Instant, usize)> = self
            .hub
            .agents()
            .filter_map(|(i, a)| {
                let books = a.books();
                (books.state == AgentState::Running).then_some((
                    books.health != Health::Unhealthy,
                    books.last_used,
                    i,
                ))
            })
            .collect();
        // Unhealthy (false) first, then the oldest use.
        candidates.sort();
        // Divide first: a limit near u64::MAX must not overflow.
        let target = limit / 100 * 70;
        for (_, _, i) in candidates {
            if self.memory_used() < target {
                break;
            }
            if self.hub.evict(i, EvictReason::MemoryPressure(level))? {
                evicted.push(i);
            }
        }
        Ok((level, evicted))
    }
}

impl Hub {
    fn evict(self: &Arc<Self>, i: usize, reason: EvictReason) -> Result<bool> {
        let agent = self.agent(i)?;
        if self.snapshots.is_none() {
            return Err(Error::Lifecycle {
                agent: agent.id().to_string(),
                detail: String::from(
                    "cannot be evicted: the swarm has no snapshot database to keep its state",
                ),
            });
        }
        agent.enter_for_upkeep(|slot| {
            let Some(instance) = slot else { return Ok(false) };
            // The snapshot first, on disk: if it cannot be stored, the agent
            // stays.
            self.store_snapshot(i, instance)?;
            self.store()?.flush()?;
            *slot = None;
            {
                let mut books = agent.books();
                books.state = AgentState::Evicted;
                books.memory_bytes = 0;
                books.usage.evictions += 1;
            }
            self.emit(Event::AgentEvicted { agent: agent.id().to_string(), reason });
            Ok(true)
        })
    }
}
