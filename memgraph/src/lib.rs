//! `elex-memgraph`: the memory graph behind `elex:host/memory-graph`.
//!
//! Engrams (units of memory: content, source, confidence, metadata), typed
//! weighted directed connections between them, and contexts that agents
//! share, in one redb database file. Every write is one redb transaction:
//! the engram, its inverted-index postings, metadata index, owner quota,
//! connections and context links change together or not at all, so a crash
//! at any instant leaves a database whose indexes agree with its engrams
//! ([`MemoryGraph::check_integrity`]).
//!
//! Every stored value carries a checksum of its table, key and bytes,
//! checked on every read: a damaged record is [`GraphError::Corrupt`], never
//! data, and the integrity check lists each one.
//!
//! Callers act as an [`Actor`]: an agent sees and changes its own engrams
//! and those of the contexts it belongs to; anything else is
//! [`GraphError::Denied`]. The operator (the CLI) sees everything.
//!
//! Writes are [`Op`]s applied by [`MemoryGraph::apply`]: one op is an
//! auto-committed call; a guest transaction is the list of ops it made
//! between `begin` and `commit`, applied atomically at `commit` (ids of
//! engrams and contexts it creates are handed out at once, so later ops of
//! the same transaction can use them).
//!
//! Text search uses an inverted index of [`elex_text::terms`] (the same
//! tokenizer the router uses) kept in posting blocks of up to
//! [`postings::BLOCK`] entries with term frequency and document length, so
//! a search reads a few blocks per term and ranks with BM25 without touching
//! the engrams; graph walks are bounded by [`GraphConfig`].
//!
//! The inverted index and the edges (by source and by target) are cut into
//! segments by engram id (see `segments`): a transaction writes its new
//! engrams' entries into a fresh segment, in order, packed into page-sized
//! chunks (see `packed`), and segments of like size merge in one sequential
//! pass — the layout of SQLite FTS5, which keeps writes from touching pages
//! all over the index.

mod graph;
mod log;
mod owners;
mod packed;
pub mod postings;
mod record;
mod schema;
mod search;
mod segments;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

pub use log::{LEASE, LogPosition, LoggedWrite, WriteLog};
pub use schema::SCHEMA_VERSION;
use schema::*;
pub use write::Op;

/// The database file's name in a data dir.
pub const FILE_NAME: &str = "memory.redb";

pub type EngramId = u64;
pub type ContextId = u64;

/// Why a memory-graph call failed. The first seven mirror the WIT
/// `graph-error`; `Storage` is a failure of the database itself, `Corrupt`
/// a stored record that fails its checksum or does not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("engram or context {0} not found (or not visible to the caller)")]
    NotFound(u64),
    #[error("denied: {0}")]
    Denied(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("no transaction is open (or one is already open)")]
    NoTransaction,
    /// The graph cannot take the write now (its cluster write log is
    /// unreachable); retrying later may succeed.
    #[error("memory graph unavailable: {0}")]
    Unavailable(String),
    #[error("memory graph database {path}: {detail}")]
    Storage { path: PathBuf, detail: String },
    /// The record under `key` (as the error shows it) in table `table`
    /// fails its checksum or does not decode: the file was damaged.
    #[error("memory graph database {path}: {table} record {key} is corrupt: {detail}")]
    Corrupt { path: PathBuf, table: &'static str, key: String, detail: String },
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// An agent, by id: sees its own engrams and its contexts' engrams.
    Agent(String),
    /// The operator: sees and changes everything; owns what it creates as
    /// `"operator"`.
    Operator,
}

impl Actor {
    pub fn agent(id: impl Into<String>) -> Actor {
        Actor::Agent(id.into())
    }

    /// The owner name of what this actor creates.
    pub fn name(&self) -> &str {
        match self {
            Actor::Agent(id) => id,
            Actor::Operator => "operator",
        }
    }
}

/// Fields of a new engram or of an update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngramData {
    pub content: String,
    pub source: String,
    /// In [0, 1].
    pub confidence: f32,
    pub metadata: Vec<(String, String)>,
}

/// A stored engram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engram {
    pub id: EngramId,
    pub owner: String,
    pub data: EngramData,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A directed, typed, weighted edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub source: EngramId,
    pub target: EngramId,
    pub relation: String,
    /// In [0, 1].
    pub weight: f32,
    pub metadata: Vec<(String, String)>,
}

/// Criteria of a search; all given criteria must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchQuery {
    /// Words that must all occur in the content; ranked by BM25.
    pub text: Option<String>,
    /// Key/value pairs that must all be in the metadata.
    pub metadata: Vec<(String, String)>,
    pub context: Option<ContextId>,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchHit {
    pub id: EngramId,
    pub score: f32,
}

/// A context: a named group of agents and engrams.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub id: ContextId,
    pub name: String,
    pub creator: String,
    pub created_ms: u64,
    pub members: Vec<String>,
    pub engrams: u64,
}

/// Per-owner storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes of content, source and metadata all of an owner's engrams may
    /// hold together.
    pub max_bytes: u64,
    pub max_engrams: u64,
}

/// What an owner holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    pub bytes: u64,
    pub engrams: u64,
}

/// Limits that keep one caller from making the host do unbounded work.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Deepest `path` / `neighbourhood` a caller may ask for.
    pub max_depth: u32,
    /// Most engrams one graph walk may visit.
    pub max_visited: usize,
    /// Largest `limit` of a search, neighbourhood or context listing.
    pub max_results: u32,
    /// Largest engram content, in bytes.
    pub max_content_bytes: usize,
    /// Most ops in one transaction.
    pub max_ops_per_transaction: usize,
    /// Quota of each agent (the operator has none).
    pub quota: Quota,
    /// How long `open` waits while another process holds the file.
    pub open_wait: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            max_depth: 6,
            max_visited: 50_000,
            max_results: 1_000,
            max_content_bytes: 1 << 20,
            max_ops_per_transaction: 100_000,
            quota: Quota { max_bytes: 64 << 20, max_engrams: 200_000 },
            open_wait: Duration::ZERO,
        }
    }
}

/// The memory graph in one database file.
pub struct MemoryGraph {
    db: Database,
    path: PathBuf,
    config: GraphConfig,
    next_engram: AtomicU64,
    next_context: AtomicU64,
    /// The write log every write goes through, once attached (see `log`).
    log: std::sync::OnceLock<std::sync::Arc<dyn WriteLog>>,
    /// Ids leased from the log.
    lease: std::sync::Mutex<log::Lease>,
    /// The graph has applied log entries: direct writes would diverge.
    replica: std::sync::atomic::AtomicBool,
    /// Segments merged through this handle, so pages were freed (see
    /// `compact_if_sparse`).
    merged: std::sync::atomic::AtomicBool,
    /// The snapshot reads share until the next commit (see
    /// [`MemoryGraph::snapshot`]).
    snapshot: std::sync::Mutex<Option<std::sync::Arc<graph::Snapshot>>>,
}

/// Segment merges leave freed pages behind, and redb reuses them but never
/// gives them back by itself. When a graph that merged segments closes and
/// more than a ninth of its file (and at least 1 MiB) is free, the pages in
/// use are moved to the front and the file shrinks (at 100K engrams: 67 to
/// 51 MB, in tens of milliseconds). It needs the database to itself, which
/// a graph has when it closes; a handle that merged nothing (a reader, a
/// small write) closes without even measuring. Compaction is a sequence of
/// durable commits: a process killed during it loses no data (the next
/// open repairs the file, as after any crash), and one killed before it
/// leaves the file as it was until the next close that merges. It is only
/// housekeeping: a failure leaves the file as it was and is not reported.
fn compact_if_sparse(db: &mut Database, path: &Path) {
    if std::thread::panicking() {
        return;
    }
    let in_use = (|| -> std::result::Result<u64, Box<dyn std::error::Error>> {
        let tx = db.begin_write()?;
        let stats = tx.stats()?;
        tx.abort()?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    })();
    let (Ok(in_use), Ok(file)) = (in_use, std::fs::metadata(path).map(|m| m.len())) else { return };
    let free = file.saturating_sub(in_use);
    if free > (in_use / 8).max(1 << 20) {
        let _ = db.compact();
    }
}

impl Drop for MemoryGraph {
    fn drop(&mut self) {
        // Compaction needs every read transaction closed.
        *self.snapshot.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        if *self.merged.get_mut() {
            compact_if_sparse(&mut self.db, &self.path);
        }
    }
}

impl std::fmt::Debug for MemoryGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGraph").field("path", &self.path).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryGraph {
    /// Opens (or creates) the graph at `path`. A file of another schema
    /// version, or not a database, is a clear error.
    pub fn open(path: &Path, config: GraphConfig) -> Result<MemoryGraph> {
        let storage = |e: &dyn std::fmt::Display| GraphError::Storage {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        }
        let deadline = std::time::Instant::now() + config.open_wait;
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(storage(&"the file is in use by another process"));
                }
                Err(e) => return Err(storage(&e)),
            }
        };
        let (next_engram, next_context) = schema::prepare(&db).map_err(|e| storage(&e))?;
        Ok(MemoryGraph {
            db,
            path: path.to_path_buf(),
            config,
            next_engram: AtomicU64::new(next_engram),
            next_context: AtomicU64::new(next_context),
            log: std::sync::OnceLock::new(),
            lease: Default::default(),
            replica: std::sync::atomic::AtomicBool::new(false),
            merged: std::sync::atomic::AtomicBool::new(false),
            snapshot: std::sync::Mutex::new(None),
        })
        .and_then(|graph| {
            let replica = graph.log_position()?.seq > 0;
            graph.replica.store(replica, Ordering::Relaxed);
            Ok(graph)
        })
    }

    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    pub fn file(&self) -> &Path {
        &self.path
    }

    /// The snapshot of the last commit that reads share: begun by the first
    /// read after a commit, dropped by the next commit. Reads that overlap
    /// a write may see the graph before it, as they would with their own
    /// transaction; a read that starts after a write returned sees it
    /// (the snapshot is begun under the lock that the write takes, after
    /// its commit, to drop it). Holding it between reads keeps no more
    /// pages from reuse than a read in progress would: a commit drops it.
    fn snapshot(&self) -> Result<std::sync::Arc<graph::Snapshot>> {
        let mut slot = self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = std::sync::Arc::new(graph::Snapshot::begin(self)?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// After a commit (or a failed one): the next read begins a snapshot
    /// that holds it.
    fn committed(&self) {
        *self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn storage(&self, e: impl std::fmt::Display) -> GraphError {
        GraphError::Storage { path: self.path.clone(), detail: e.to_string() }
    }

    fn corrupt(&self, c: record::Corruption) -> GraphError {
        GraphError::Corrupt { path: self.path.clone(), table: c.table, key: c.key, detail: c.detail }
    }

    fn fault(&self, f: record::Fault) -> GraphError {
        match f {
            record::Fault::Storage(e) => self.storage(e),
            record::Fault::Corrupt(c) => self.corrupt(c),
        }
    }

    /// Creates an engram now (one transaction); returns its id.
    pub fn create(&self, actor: &Actor, data: EngramData, context: Option<ContextId>) -> Result<EngramId> {
        let id = self.allocate_engram_id()?;
        self.apply(actor, vec![Op::Create { id, data, context }])?;
        Ok(id)
    }

    /// Creates a context now with `actor` as its first member.
    pub fn create_context(&self, actor: &Actor, name: &str) -> Result<ContextId> {
        let id = self.allocate_context_id()?;
        self.apply(actor, vec![Op::CreateContext { id, name: name.to_string() }])?;
        Ok(id)
    }

    /// An owner's quota use.
    pub fn quota_use(&self, owner: &str) -> Result<QuotaUse> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = tx.open_table(QUOTA).map_err(|e| self.storage(e))?;
        match t.get(owner).map_err(|e| self.storage(e))? {
            Some(v) => decode_quota(owner, v.value()).map_err(|c| self.corrupt(c)),
            None => Ok(QuotaUse::default()),
        }
    }

    /// Number of engrams stored.
    pub fn len(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = tx.open_table(ENGRAMS).map_err(|e| self.storage(e))?;
        t.len().map_err(|e| self.storage(e))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
