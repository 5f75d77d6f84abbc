//! [`SharedAgent`]: one agent instance callable from many threads, with a
//! bounded queue.
//!
//! A store runs one call at a time, so an instance's concurrency is one
//! call; further callers wait, at most `queue_depth` of them. A caller
//! beyond that gets [`Error::Busy`] at once instead of joining an unbounded
//! queue.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::instance::AgentInstance;

pub struct SharedAgent {
    id: String,
    instance: Mutex<AgentInstance>,
    /// Callers inside `call`: the one running plus those waiting.
    in_flight: AtomicU32,
    queue_depth: u32,
}

/// Leaves `in_flight` on every exit path, panics included.
struct Leave<'a>(&'a AtomicU32);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SharedAgent {
    /// Shares `instance` with the queue depth of its budgets.
    pub fn new(instance: AgentInstance) -> SharedAgent {
        let queue_depth = instance.budgets().queue_depth;
        SharedAgent {
            id: instance.id().to_string(),
            instance: Mutex::new(instance),
            in_flight: AtomicU32::new(0),
            queue_depth,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Callers running or waiting now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Runs `f` on the instance when it is free; `Error::Busy` when
    /// `queue_depth` callers are already waiting.
    pub fn call<T>(&self, f: impl FnOnce(&mut AgentInstance) -> Result<T>) -> Result<T> {
        self.enter(None, f)
    }

    /// Like [`SharedAgent::call`], but waits at most `wait` for the
    /// instance: a consult between agents must not wait forever on an agent
    /// that may itself be waiting on the caller.
    pub fn call_within<T>(
        &self,
        wait: std::time::Duration,
        f: impl FnOnce(&mut AgentInstance) -> Result<T>,
    ) -> Result<T> {
        self.enter(Some(wait), f)
    }

    /// Joins the queue (refused beyond `queue_depth`), then takes the
    /// instance: blocking, or for at most `wait`.
    fn enter<T>(
        &self,
        wait: Option<std::time::Duration>,
        f: impl FnOnce(&mut AgentInstance) -> Result<T>,
    ) -> Result<T> {
        let ahead = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.in_flight);
        let busy = || Error::Busy { agent: self.id.clone(), queue_depth: self.queue_depth };
        // `ahead` counts the running caller and the waiting ones.
        if ahead > self.queue_depth {
            return Err(busy());
        }
        // A panic inside `f` cannot leave the instance half-updated in a way
        // the host trusts: a failed guest call marks it failed itself.
        let Some(wait) = wait else {
            let mut instance = self.instance.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            return f(&mut instance);
        };
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.instance.try_lock() {
                Ok(mut instance) => return f(&mut instance),
                Err(std::sync::TryLockError::Poisoned(p)) => return f(&mut p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                Err(std::sync::TryLockError::WouldBlock) => return Err(busy()),
            }
        }
    }

    /// The instance back, once no caller holds it.
    pub fn into_inner(self) -> AgentInstance {
        self.instance.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
