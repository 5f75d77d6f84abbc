//! [`LiveAgent`]: one agent of a swarm — its instance (none while evicted),
//! the bounded queue of callers waiting for it, and what the swarm keeps
//! of it between calls ([`Books`]).
//!
//! A store runs one call at a time, so an instance's concurrency is one
//! call; further callers wait, at most `queue_depth` of them. A caller
//! beyond that gets [`Error::Busy`] at once instead of joining an unbounded
//! queue.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::instance::AgentInstance;
use crate::load::LoadedComponent;
use crate::usage::Usage;

/// Where an agent of the swarm is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentState {
    /// It has a live instance.
    Running,
    /// Its instance was dropped after its snapshot was stored; its next call
    /// starts and restores a new one.
    Evicted,
    /// It trapped or broke a budget and no new instance could be started;
    /// its next call tries again.
    Failed,
    /// It was taken out of the swarm ([`Swarm::retire`](crate::Swarm::retire)):
    /// no instance, and calls to it fail.
    Retired,
}

/// The agent's health as its `health()` reports have shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// No failed health check since the last passed one (a new or recycled
    /// instance starts here).
    Healthy,
    /// One or two failed health checks in a row.
    Degraded,
    /// Three or more: the instance is recycled.
    Unhealthy,
}

/// What the swarm keeps of an agent between calls.
#[derive(Debug, Clone)]
pub(crate) struct Books {
    pub(crate) state: AgentState,
    pub(crate) health: Health,
    pub(crate) health_failures: u32,
    pub(crate) last_used: Instant,
    /// Use since the last save (failed calls and consults included).
    pub(crate) usage: Usage,
    /// Linear memory of the live instance (0 while evicted).
    pub(crate) memory_bytes: u64,
    /// Calls since its snapshot was last stored.
    pub(crate) since_checkpoint: u64,
}

impl Books {
    /// Whether the agent was taken out of the swarm.
    pub(crate) fn retired(&self) -> bool {
        self.state == AgentState::Retired
    }
}

pub(crate) struct LiveAgent {
    id: String,
    /// The component its instances are made from.
    component: Arc<LoadedComponent>,
    instance: Mutex<Option<AgentInstance>>,
    /// Callers inside `enter`: the one running plus those waiting.
    in_flight: AtomicU32,
    queue_depth: u32,
    books: Mutex<Books>,
}

/// Leaves `in_flight` on every exit path, panics included.
struct Leave<'a>(&'a AtomicU32);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveAgent {
    /// Holds `instance` (made from `component`), with the queue depth of
    /// its budgets.
    pub(crate) fn new(instance: AgentInstance, component: Arc<LoadedComponent>) -> LiveAgent {
        let books = Books {
            state: AgentState::Running,
            health: Health::Healthy,
            health_failures: 0,
            last_used: Instant::now(),
            usage: Usage::default(),
            memory_bytes: instance.memory().used_bytes,
            since_checkpoint: 0,
        };
        LiveAgent {
            id: instance.id().to_string(),
            component,
            queue_depth: instance.budgets().queue_depth,
            instance: Mutex::new(Some(instance)),
            in_flight: AtomicU32::new(0),
            books: Mutex::new(books),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn component(&self) -> &Arc<LoadedComponent> {
        &self.component
    }

    /// Callers running or waiting now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the queue (refused beyond `queue_depth`), then takes the
    /// instance slot: blocking, or for at most `wait` (a consult must not
    /// wait forever on an agent that may itself be waiting on the caller).
    pub(crate) fn enter<T>(
        &self,
        wait: Option<Duration>,
        f: impl FnOnce(&mut Option<AgentInstance>) -> Result<T>,
    ) -> Result<T> {
        self.enter_queue(true, wait, f)
    }

    /// Takes the instance slot for the swarm's own work (a checkpoint, an
    /// eviction, retiring the agent, a health check): it waits its turn like
    /// any caller but is never refused for a full queue — a busy agent must
    /// still be saved.
    pub(crate) fn enter_for_upkeep<T>(
        &self,
        f: impl FnOnce(&mut Option<AgentInstance>) -> Result<T>,
    ) -> Result<T> {
        self.enter_queue(false, None, f)
    }

    fn enter_queue<T>(
        &self,
        bounded: bool,
        wait: Option<Duration>,
        f: impl FnOnce(&mut Option<AgentInstance>) -> Result<T>,
    ) -> Result<T> {
        let ahead = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.in_flight);
        let busy = || Error::Busy { agent: self.id.clone(), queue_depth: self.queue_depth };
        // `ahead` counts the running caller and the waiting ones.
        if bounded && ahead > self.queue_depth {
            return Err(busy());
        }
        // A panic inside `f` cannot leave the instance half-updated in a way
        // the host trusts: a failed guest call marks it failed itself.
        let Some(wait) = wait else {
            let mut slot = self.instance.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            return f(&mut slot);
        };
        let deadline = Instant::now() + wait;
        loop {
            match self.instance.try_lock() {
                Ok(mut slot) => return f(&mut slot),
                Err(std::sync::TryLockError::Poisoned(p)) => return f(&mut p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(std::sync::TryLockError::WouldBlock) => return Err(busy()),
            }
        }
    }
}
