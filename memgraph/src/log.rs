//! A graph fed from a shared, ordered write log (several hosts, one graph).
//!
//! Hosts of a cluster each keep their own copy of the graph. None of them
//! writes it directly: every write is appended to one log that all of them
//! read, and each applies the log's entries in log order with
//! [`MemoryGraph::apply_logged`]. [`Op`]s are deterministic given the graph
//! they apply to and the time they carry, and ids come from blocks no other
//! writer uses ([`WriteLog::lease`]), so every copy goes through the same
//! states: the same engrams under the same ids, the same refusals. Each
//! copy records the log position it reached in the transaction that
//! reached it, so a crash never applies an entry twice or skips one.
//!
//! Once [`MemoryGraph::follow`] attaches a log, [`MemoryGraph::apply`]
//! appends to it and returns when this copy has applied the write (a host
//! reads its own writes at once; other hosts see them when they reach that
//! position). A copy that has followed a log refuses direct writes after a
//! restart without it: they would make it diverge.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use crate::schema::META;
use crate::{Actor, ContextId, EngramId, GraphError, MemoryGraph, Op, Result};

/// How many ids one [`WriteLog::lease`] hands out.
pub const LEASE: u64 = 1 << 20;

/// One write as the log carries it: who made it, its ops, and the time
/// (ms since the Unix epoch) every copy stamps on what it creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedWrite {
    pub actor: Actor,
    pub ops: Vec<Op>,
    pub time_ms: u64,
}

/// Where in which log a copy of the graph is: the log's identity (for
/// JetStream, the stream's creation time in ns) and the last position
/// applied. `seq == 0`: nothing applied yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub log: u64,
    pub seq: u64,
}

/// The shared log a graph's writes go through (implemented by the cluster).
pub trait WriteLog: Send + Sync {
    /// Appends `write`; returns, once this host's copy has applied it in
    /// log order, what applying it gave (the same on every copy).
    fn append(&self, write: LoggedWrite) -> Result<Vec<bool>>;
    /// A block of [`LEASE`] ids that no other writer of the log uses.
    fn lease(&self) -> Result<Range<u64>>;
}

/// The ids handed out from the current lease.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    next: u64,
    end: u64,
}

impl MemoryGraph {
    /// Sends every later write through `log` (see the module docs). The
    /// copy must have applied the log up to its end first.
    pub fn follow(&self, log: Arc<dyn WriteLog>) -> Result<()> {
        self.log
            .set(log)
            .map_err(|_| GraphError::Invalid(String::from("the memory graph already follows a write log")))
    }

    /// Whether writes go through a log.
    pub fn follows_log(&self) -> bool {
        self.log.get().is_some()
    }

    /// The log position this copy reached ([`LogPosition::default`] for a
    /// graph never fed from a log).
    pub fn log_position(&self) -> Result<LogPosition> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let meta = tx.open_table(META).map_err(|e| self.storage(e))?;
        let get = |k: &str| -> Result<u64> {
            Ok(meta.get(k).map_err(|e| self.storage(e))?.map_or(0, |v| v.value()))
        };
        Ok(LogPosition { log: get("log_id")?, seq: get("log_seq")? })
    }

    /// Whether the graph holds nothing: no engram and no context.
    pub fn is_blank(&self) -> Result<bool> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let contexts = tx.open_table(crate::schema::CONTEXTS).map_err(|e| self.storage(e))?;
        let no_context = redb::ReadableTable::first(&contexts).map_err(|e| self.storage(e))?.is_none();
        Ok(no_context && self.is_empty()?)
    }

    /// Applies the log entry at `at` to this copy, in the same transaction
    /// as recording `at`. An entry refused here (denied, invalid, over a
    /// quota…) is refused on every copy: its position is recorded and the
    /// refusal returned. A storage failure records nothing; the caller
    /// retries the same entry (skipping it would make this copy diverge).
    /// `write: None` is an entry that changes nothing (an id lease).
    pub fn apply_logged(&self, at: LogPosition, write: Option<&LoggedWrite>) -> Result<Vec<bool>> {
        let here = self.log_position()?;
        if here.seq != 0 && here.log != at.log {
            return Err(GraphError::Invalid(format!(
                "entry {} is from another write log than the one this graph follows",
                at.seq
            )));
        }
        if at.seq <= here.seq {
            return Err(GraphError::Invalid(format!(
                "entry {} is already applied (this graph is at {})",
                at.seq, here.seq
            )));
        }
        self.replica.store(true, Ordering::Relaxed);
        let outcome = match write {
            Some(w) => self.apply_at(&w.actor, w.ops.clone(), w.time_ms, Some(at)),
            None => Ok(Vec::new()),
        };
        match outcome {
            Err(GraphError::Storage { .. } | GraphError::Corrupt { .. }) => outcome,
            Ok(_) if write.is_some() => outcome,
            refused_or_empty => {
                self.record_position(at)?;
                refused_or_empty
            }
        }
    }

    fn record_position(&self, at: LogPosition) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.storage(e))?;
            meta.insert("log_id", at.log).map_err(|e| self.storage(e))?;
            meta.insert("log_seq", at.seq).map_err(|e| self.storage(e))?;
        }
        let commit = tx.commit();
        self.committed();
        commit.map_err(|e| self.storage(e))
    }

    /// A fresh engram id: never reused, even if the op that takes it is
    /// rolled back; on a graph that follows a log, unique across the log's
    /// writers.
    pub fn allocate_engram_id(&self) -> Result<EngramId> {
        match self.log.get() {
            Some(log) => self.leased(log.as_ref()),
            None => Ok(self.next_engram.fetch_add(1, Ordering::Relaxed)),
        }
    }

    /// A fresh context id (see [`MemoryGraph::allocate_engram_id`]).
    pub fn allocate_context_id(&self) -> Result<ContextId> {
        match self.log.get() {
            Some(log) => self.leased(log.as_ref()),
            None => Ok(self.next_context.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn leased(&self, log: &dyn WriteLog) -> Result<u64> {
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if lease.next >= lease.end {
            let block = log.lease()?;
            *lease = Lease { next: block.start, end: block.end };
        }
        lease.next += 1;
        Ok(lease.next - 1)
    }
}
