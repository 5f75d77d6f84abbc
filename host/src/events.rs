//! Domain events: every one is a `tracing` event and goes to a broadcast
//! channel an embedder subscribes to with [`Host::subscribe`](crate::Host::subscribe).
//! A slow subscriber misses events (it sees `RecvError::Lagged`); it never
//! slows the host down.

use tokio::sync::broadcast;

use crate::cache::Origin;

/// Memory pressure of a swarm: its live agents' linear memory against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    Normal,
    /// ≥ 70 %.
    Elevated,
    /// ≥ 85 %: agents are evicted.
    High,
    /// ≥ 95 %.
    Critical,
}

impl Pressure {
    /// The level of `used` bytes against `limit`: 70 / 85 / 95 %.
    pub fn of(used: u64, limit: u64) -> Pressure {
        let pct = used as f64 * 100.0 / limit.max(1) as f64;
        match pct {
            p if p >= 95.0 => Pressure::Critical,
            p if p >= 85.0 => Pressure::High,
            p if p >= 70.0 => Pressure::Elevated,
            _ => Pressure::Normal,
        }
    }
}

/// Why an agent was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    Idle,
    MemoryPressure(Pressure),
    Requested,
}

/// What happened in the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A component was loaded: compiled, or found in the memory or disk cache.
    ModuleLoaded {
        what: String,
        digest: String,
        size: usize,
        origin: Origin,
        millis: f64,
    },
    /// A swarm's agents are all live (`millis`: the time it took).
    SwarmStarted {
        agents: usize,
        millis: f64,
    },
    AgentSpawned {
        agent: String,
        restored: bool,
    },
    AgentEvicted {
        agent: String,
        reason: EvictReason,
    },
    AgentRecycled {
        agent: String,
        restored: bool,
    },
    MemoryPressure {
        level: Pressure,
        used_bytes: u64,
        limit_bytes: u64,
    },
    /// An agent's stored snapshot could not be read or restored: it was
    /// moved aside and the agent started fresh.
    SnapshotQuarantined {
        agent: String,
        component: String,
        reason: String,
    },
    /// A call trapped or broke a budget; `error` names which.
    ExecutionFailed {
        agent: String,
        error: String,
    },
    HealthChecked {
        healthy: usize,
        degraded: usize,
        unhealthy: usize,
    },
}

/// A host's event channel. Anyone may make one and subscribe to it, then
/// give it to [`Host::with_events`](crate::Host::with_events) to see every
/// event from the host's start on; only the host emits into it, so an
/// embedder cannot forge events.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("subscribers", &self.sender.receiver_count()).finish()
    }
}

impl Events {
    /// A channel that keeps the last `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Events {
        Events { sender: broadcast::channel(capacity.max(1)).0 }
    }

    /// Receives every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Sends `event` to every subscriber (and to tracing). Only the host
    /// emits.
    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::ExecutionFailed { .. }
            | Event::MemoryPressure { .. }
            | Event::SnapshotQuarantined { .. } => {
                tracing::warn!(event = ?event, "elex event")
            }
            _ => tracing::info!(event = ?event, "elex event"),
        }
        // No subscriber is not an error.
        let _ = self.sender.send(event);
    }
}
