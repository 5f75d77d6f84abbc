//! Domain events: every one is a `tracing` event and goes to a broadcast
//! channel an embedder subscribes to with [`Host::subscribe`](crate::Host::subscribe).
//! A slow subscriber misses events (it sees `RecvError::Lagged`); it never
//! slows the host down.

use tokio::sync::broadcast;

use crate::cache::Origin;

/// Memory pressure of a swarm: its live agents' linear memory against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pressure {
    /// Below 70 %: no event, no eviction.
    Normal,
    /// ≥ 70 %: an event, no eviction.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictReason {
    /// It was unused for at least
    /// [`SwarmConfig::idle_timeout`](crate::SwarmConfig::idle_timeout).
    Idle,
    /// The swarm's memory pressure was at this level (`High` or above) and
    /// it was among the agents evicted to bring use below 70 %.
    MemoryPressure(Pressure),
    /// An embedder or operator asked for it with
    /// [`Swarm::evict`](crate::Swarm::evict).
    Requested,
}

/// What happened in the host. As JSON (for a service's event stream), an
/// object whose `event` names the variant in snake case, with its fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A component was loaded: compiled, or found in the memory or disk cache.
    ModuleLoaded {
        /// What was loaded, as messages name it (a file path or
        /// `name@version`).
        what: String,
        /// blake3 digest of the component's bytes, lower-case hex.
        digest: String,
        /// Size of the component in bytes.
        size: usize,
        /// Where the compiled code came from.
        origin: Origin,
        /// Time the whole load took, in ms.
        millis: f64,
    },
    /// A swarm's agents are all live (`millis`: the time it took).
    SwarmStarted {
        /// Agents started.
        agents: usize,
        /// Time starting them all took, in ms.
        millis: f64,
    },
    /// An agent without an instance (evicted, or failed to recycle) got a
    /// new one for its next call.
    AgentSpawned {
        /// The agent's id.
        agent: String,
        /// Whether its stored snapshot was restored into the new instance.
        restored: bool,
    },
    /// An agent of a swarm answered a query ([`Swarm::ask`](crate::Swarm::ask)).
    QueryAnswered {
        /// The query's id (what feedback names).
        query_id: String,
        /// The agent's id.
        agent: String,
        /// Consults between agents it took.
        consults: usize,
        /// Time from the query to the answer, in ms.
        millis: f64,
    },
    /// An agent was given a reward for an answer
    /// ([`Swarm::feedback`](crate::Swarm::feedback)).
    AgentRewarded {
        /// The agent's id.
        agent: String,
        /// The rewarded answer's query id.
        query_id: String,
        /// The reward, in -1..1.
        reward: f32,
    },
    /// An agent was taken out of its swarm
    /// ([`Swarm::retire`](crate::Swarm::retire)): its snapshot stored, its
    /// instance dropped, its index never reused.
    AgentRetired {
        /// The agent's id.
        agent: String,
    },
    /// An agent's snapshot was stored and its instance dropped; its next
    /// call starts a new one.
    AgentEvicted {
        /// The agent's id.
        agent: String,
        /// Why it was evicted.
        reason: EvictReason,
    },
    /// An agent's trapped, budget-broken or unhealthy instance was replaced
    /// by a fresh one (after [`Event::ExecutionFailed`]).
    AgentRecycled {
        /// The agent's id.
        agent: String,
        /// Whether the fresh instance was restored from the stored snapshot.
        restored: bool,
    },
    /// A swarm's live agents hold 70 % or more of its memory limit, found
    /// by [`Swarm::relieve_memory_pressure`](crate::Swarm::relieve_memory_pressure)
    /// (part of `maintain`) before it evicts any.
    MemoryPressure {
        /// The pressure level found (`Elevated` or above).
        level: Pressure,
        /// Linear memory the live agents hold together, in bytes.
        used_bytes: u64,
        /// The swarm's limit
        /// ([`SwarmConfig::memory_limit_bytes`](crate::SwarmConfig::memory_limit_bytes)),
        /// in bytes.
        limit_bytes: u64,
    },
    /// An agent's stored snapshot could not be read or restored: it was
    /// moved aside and the agent started fresh.
    SnapshotQuarantined {
        /// The agent's id.
        agent: String,
        /// The component family the snapshot was stored under.
        component: String,
        /// Why it could not be read or restored.
        reason: String,
    },
    /// An agent's instance failed and is being recycled: a call trapped or
    /// broke a budget, or three health checks in a row failed; `error`
    /// says which.
    ExecutionFailed {
        /// The agent's id.
        agent: String,
        /// The error that failed the instance, or `three failed health
        /// checks in a row`.
        error: String,
    },
    /// A round of health checks ended: the swarm's agents by health (an
    /// evicted agent counts with its health when it was evicted).
    HealthChecked {
        /// Agents with no failed check since their last passed one (a
        /// recycled instance starts healthy).
        healthy: usize,
        /// Agents with one or two failed checks in a row.
        degraded: usize,
        /// Agents with three or more failed checks in a row that recycling
        /// has not replaced.
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
            // One per query: too many for the info level.
            Event::QueryAnswered { .. } | Event::AgentRewarded { .. } => {
                tracing::debug!(event = ?event, "elex event")
            }
            _ => tracing::info!(event = ?event, "elex event"),
        }
        // No subscriber is not an error.
        let _ = self.sender.send(event);
    }
}
