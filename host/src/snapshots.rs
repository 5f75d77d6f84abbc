//! Agent state in the embedded database (redb, one file, `agents.redb` in the
//! data dir): each agent's latest snapshot, so what it learned survives
//! eviction, recycling and restarts, its cumulative [`Usage`], and which
//! agent answered each query (for feedback). Every write is one committed
//! transaction: a crash leaves the previous state or the new one, never half
//! of either.
//!
//! Durability: the routine writes of answering a query — snapshots, usage,
//! who answered — are committed without waiting for the disk (redb's
//! `Durability::None`: visible at once, on disk with the next durable
//! commit), so a query does not pay an fsync. Everything else (an installed
//! plugin, an operator's correction, a quarantine, a reset) is durable when
//! its call returns, and so is everything written before it;
//! [`SnapshotStore::flush`] makes the routine writes durable (feedback does,
//! a service does every second, and dropping the store does). A crash of
//! the process (SIGKILL, power) loses at most the routine writes since the
//! last durable commit: what agents learned from queries in that window,
//! never a reward that was acknowledged.
//!
//! Snapshots are keyed by agent **and** component family
//! ([`LoadedComponent::family`](crate::LoadedComponent::family)): the bytes
//! one component wrote are never restored into another. Every stored value
//! carries a checksum over its key and bytes, checked on every read, so a
//! flipped byte or a value moved to another key is found, not trusted. A
//! snapshot that cannot be read or restored is moved aside (quarantined,
//! kept for inspection) and the agent starts fresh: one bad snapshot never
//! stops an agent from starting.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::instance::AgentInstance;
use crate::usage::Usage;

/// Schema version of the database file. Version 1 (snapshots keyed by agent
/// alone, values without checksums) is migrated on open.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `<family>/<agent>` → checked snapshot.
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots_v2");
/// `<family>/<agent>/<unix ms>` → checked snapshot that failed to restore.
const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantined_snapshots");
/// agent → checked usage.
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage_v2");
/// query id → checked `<family>/<agent>` that answered it.
const QUERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("queries_v2");
/// The order answers were recorded in: sequence number → query id, so the
/// oldest are forgotten first once there are [`MAX_ANSWERED`].
const ANSWER_ORDER: TableDefinition<u64, &str> = TableDefinition::new("answer_order_v1");
/// Example questions an operator said an agent should have answered:
/// `<agent>/<sequence>` → sealed postcard [`Example`].
const EXAMPLES: TableDefinition<&str, &[u8]> = TableDefinition::new("examples_v1");

/// Plugins an operator loaded next to the application's agents: plugin id →
/// sealed postcard [`InstalledPlugin`].
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins_v1");

/// A plugin an operator loaded (`elex load`): where its component comes
/// from, so every later start of the swarm runs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstalledPlugin {
    /// Its agent id (its manifest's `id`).
    pub id: String,
    /// Where its component is.
    pub source: PluginSource,
    /// blake3 of the component bytes, lower-case hex: a later start loads
    /// exactly these bytes, or refuses.
    pub digest: String,
    /// Its manifest as loaded (canonical JSON, see
    /// [`elex_registry::Manifest`]): what lists of agents show without
    /// loading the component. At every start the component's own manifest
    /// is read again.
    pub manifest: String,
    /// The capabilities the operator granted it (`env:NAME`,
    /// `read:/guest=/host/dir`, `connect:IP:PORT`; see
    /// [`Grants::decide`](crate::Grants::decide)).
    pub grants: Vec<String>,
    /// Who loaded it.
    pub operator: String,
    /// When, in milliseconds since the Unix epoch.
    pub millis: u64,
}

/// Where an installed plugin's component is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PluginSource {
    /// A signed registry entry, verified again at every start.
    Registry {
        /// Its registry name.
        name: String,
        /// The exact version loaded.
        version: String,
    },
    /// An unsigned component the operator allowed, kept by digest in the
    /// data dir's `plugins/` folder.
    Unsigned,
}

/// Most example questions kept per agent (the oldest go first).
pub const MAX_EXAMPLES_PER_AGENT: usize = 32;
/// Longest question text kept with a query or an example, in bytes.
pub const MAX_QUESTION_BYTES: usize = 2048;

/// A question an operator said agent `agent` should have answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// The question, as asked (at most [`MAX_QUESTION_BYTES`]).
    pub text: String,
    /// Who gave the correction.
    pub operator: String,
    /// The query it corrects.
    pub query_id: String,
    /// When, in milliseconds since the Unix epoch.
    pub millis: u64,
}

/// `text` cut to at most [`MAX_QUESTION_BYTES`] on a character boundary.
fn bounded(text: &str) -> &str {
    let mut end = text.len().min(MAX_QUESTION_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Tables of schema version 1, migrated and dropped on open.
const V1_SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_snapshots");
const V1_USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_usage");
const V1_QUERIES: TableDefinition<&str, &str> = TableDefinition::new("answered_queries");
/// The component family every version-1 snapshot was written by.
const V1_FAMILY: &str = "feature-agent";

/// The database file's name in a data dir.
pub const FILE_NAME: &str = "agents.redb";

/// Bytes of checksum in front of every stored value.
const SUM: usize = 8;

/// The checksum of a value stored under `key`: the first 8 bytes of
/// blake3(table ‖ key ‖ bytes), so a value copied under another key or into
/// another table fails too.
fn checksum(table: &str, key: &str, bytes: &[u8]) -> [u8; SUM] {
    let mut h = blake3::Hasher::new();
    h.update(&(table.len() as u32).to_le_bytes());
    h.update(table.as_bytes());
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key.as_bytes());
    h.update(bytes);
    let mut out = [0; SUM];
    out.copy_from_slice(&h.finalize().as_bytes()[..SUM]);
    out
}

fn seal(table: &str, key: &str, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SUM + bytes.len());
    v.extend_from_slice(&checksum(table, key, bytes));
    v.extend_from_slice(bytes);
    v
}

/// The bytes of a sealed value, if its checksum is right.
fn open_sealed<'a>(table: &str, key: &str, value: &'a [u8]) -> Option<&'a [u8]> {
    let (sum, bytes) = value.split_at_checked(SUM)?;
    (sum == checksum(table, key, bytes)).then_some(bytes)
}

/// The key of `agent`'s snapshot by component `family`.
fn snapshot_key(family: &str, agent: &str) -> String {
    format!("{family}/{agent}")
}

/// What happened to an agent's stored state when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// It had none: it starts fresh.
    Fresh,
    /// Its snapshot was restored.
    Restored,
    /// Its snapshot was unreadable or refused by the component; it was moved
    /// aside and the agent starts fresh.
    Quarantined {
        /// Why.
        reason: String,
    },
}

impl Restored {
    /// Whether a snapshot was restored.
    pub fn restored(&self) -> bool {
        matches!(self, Restored::Restored)
    }
}

/// Who answered a query: what [`SnapshotStore::put_answers`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The query's id.
    pub query_id: String,
    /// The answering agent's component family.
    pub family: String,
    /// The answering agent's id.
    pub agent: String,
    /// The question (kept up to [`MAX_QUESTION_BYTES`]).
    pub text: String,
}

/// The agents' database file.
pub struct SnapshotStore {
    db: Database,
    path: PathBuf,
    max_answered: u64,
}

/// redb's page cache for the agents' database (its default, 1 GiB, would
/// let a long-running service's memory grow with the file).
const CACHE_BYTES: usize = 32 << 20;

/// Answers remembered for feedback: beyond this many, the oldest is
/// forgotten as each new one is stored (feedback on it is then refused as
/// unknown), which bounds the database of a long-running service.
pub const MAX_ANSWERED: u64 = 500_000;

impl Drop for SnapshotStore {
    /// The routine writes become durable before the file closes.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "the last writes to the agents' database may be lost");
        }
    }
}

impl SnapshotStore {
    /// Opens (or creates) the database at `path`; a database of another
    /// schema version is refused.
    pub fn open(path: &Path) -> Result<SnapshotStore> {
        Self::open_waiting(path, Duration::ZERO)
    }

    /// [`SnapshotStore::open`], waiting up to `wait` while another process
    /// holds the file (redb allows one writer process), so concurrent `elex`
    /// runs take turns instead of failing.
    pub fn open_waiting(path: &Path, wait: Duration) -> Result<SnapshotStore> {
        let err =
            |e: &dyn std::fmt::Display| Error::Storage { path: path.to_path_buf(), detail: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
        {
            return Err(err(&"not a regular file"));
        }
        let deadline = Instant::now() + wait;
        let mut said = false;
        let db = loop {
            match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    if !said {
                        said = true;
                        tracing::warn!(
                            path = %path.display(),
                            "another process (an elex serve?) holds this data dir's database; waiting up to {} s for it",
                            wait.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err(&e)),
            }
        };
        let tx = db.begin_write().map_err(|e| err(&e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| err(&e))?;
            let found = meta.get("schema_version").map_err(|e| err(&e))?.map(|v| v.value());
            match found {
                None | Some(1) => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(|e| err(&e))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(err(&format!(
                        "schema version {other}; this build reads version {SCHEMA_VERSION}"
                    )));
                }
            }
            tx.open_table(SNAPSHOTS).map_err(|e| err(&e))?;
            tx.open_table(QUARANTINE).map_err(|e| err(&e))?;
            tx.open_table(USAGE).map_err(|e| err(&e))?;
            tx.open_table(QUERIES).map_err(|e| err(&e))?;
            tx.open_table(EXAMPLES).map_err(|e| err(&e))?;
            tx.open_table(PLUGINS).map_err(|e| err(&e))?;
            tx.open_table(ANSWER_ORDER).map_err(|e| err(&e))?;
        }
        migrate_v1(&tx).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(SnapshotStore { db, path: path.to_path_buf(), max_answered: MAX_ANSWERED })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Storage { path: self.path.clone(), detail: e.to_string() }
    }

    /// A write transaction for a routine write, committed without waiting
    /// for the disk (see the module docs).
    fn routine(&self) -> Result<WriteTransaction> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(Durability::None).map_err(|e| self.err(e))?;
        Ok(tx)
    }

    /// Remembers at most `n` answers for feedback (default [`MAX_ANSWERED`]).
    pub fn with_max_answered(mut self, n: u64) -> SnapshotStore {
        self.max_answered = n.max(1);
        self
    }

    /// Makes every write so far durable: one commit that waits for the disk.
    pub fn flush(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn corrupt(&self, table: &str, key: &str) -> Error {
        self.err(format!("the stored value of {key:?} in table {table} fails its checksum (corrupted)"))
    }

    /// Stores `bytes` as `agent`'s snapshot from component `family`
    /// (replacing the previous one).
    pub fn put(&self, family: &str, agent: &str, bytes: &[u8]) -> Result<()> {
        let tx = self.routine()?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let key = snapshot_key(family, agent);
            t.insert(key.as_str(), seal(SNAPSHOTS.name(), &key, bytes).as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Stores `agent`'s snapshot (from component `family`) and usage
    /// together, in one transaction.
    pub fn put_with_usage(&self, family: &str, agent: &str, snapshot: &[u8], usage: &Usage) -> Result<()> {
        let tx = self.routine()?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let key = snapshot_key(family, agent);
            t.insert(key.as_str(), seal(SNAPSHOTS.name(), &key, snapshot).as_slice())
                .map_err(|e| self.err(e))?;
            let mut u = tx.open_table(USAGE).map_err(|e| self.err(e))?;
            u.insert(agent, seal(USAGE.name(), agent, &usage.to_bytes()).as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Stores the usage of many agents in one transaction.
    pub fn put_usage<'a>(&self, usage: impl IntoIterator<Item = (&'a str, &'a Usage)>) -> Result<()> {
        let tx = self.routine()?;
        {
            let mut u = tx.open_table(USAGE).map_err(|e| self.err(e))?;
            for (agent, usage) in usage {
                u.insert(agent, seal(USAGE.name(), agent, &usage.to_bytes()).as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// `agent`'s stored usage; `None` if none. A corrupt record is an error.
    pub fn usage(&self, agent: &str) -> Result<Option<Usage>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(USAGE).map_err(|e| self.err(e))?;
        let Some(v) = t.get(agent).map_err(|e| self.err(e))? else { return Ok(None) };
        let usage = open_sealed(USAGE.name(), agent, v.value()).and_then(Usage::from_bytes);
        usage.map(Some).ok_or_else(|| self.corrupt(USAGE.name(), agent))
    }

    /// Every agent's stored usage, sorted by agent id. Corrupt records are
    /// left out (and reported by [`SnapshotStore::check`]).
    pub fn all_usage(&self) -> Result<Vec<(String, Usage)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(USAGE).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            match open_sealed(USAGE.name(), k.value(), v.value()).and_then(Usage::from_bytes) {
                Some(u) => out.push((k.value().to_string(), u)),
                None => tracing::warn!(agent = k.value(), "skipping a corrupt usage record"),
            }
        }
        Ok(out)
    }

    /// Remembers that `agent` of component `family` answered `query_id`.
    pub fn put_query(&self, query_id: &str, family: &str, agent: &str) -> Result<()> {
        self.put_asked(query_id, family, agent, "")
    }

    /// Records that `agent` of component `family` answered `query_id`,
    /// asked as `text` (kept up to [`MAX_QUESTION_BYTES`], so an operator
    /// can later say which agent it was meant for). Beyond the latest
    /// [`MAX_ANSWERED`] answers, the oldest is forgotten.
    pub fn put_asked(&self, query_id: &str, family: &str, agent: &str, text: &str) -> Result<()> {
        self.put_answers(&[Answered {
            query_id: query_id.to_string(),
            family: family.to_string(),
            agent: agent.to_string(),
            text: text.to_string(),
        }])
    }

    /// [`SnapshotStore::put_asked`] for many answers, in one transaction.
    pub fn put_answers(&self, answers: &[Answered]) -> Result<()> {
        if answers.is_empty() {
            return Ok(());
        }
        let tx = self.routine()?;
        {
            let mut t = tx.open_table(QUERIES).map_err(|e| self.err(e))?;
            let mut order = tx.open_table(ANSWER_ORDER).map_err(|e| self.err(e))?;
            let first = order.last().map_err(|e| self.err(e))?.map_or(0, |(k, _)| k.value() + 1);
            for (next, a) in (first..).zip(answers) {
                let mut who = snapshot_key(&a.family, &a.agent);
                if !a.text.is_empty() {
                    who.push('\n');
                    who.push_str(bounded(&a.text));
                }
                t.insert(a.query_id.as_str(), seal(QUERIES.name(), &a.query_id, who.as_bytes()).as_slice())
                    .map_err(|e| self.err(e))?;
                order.insert(next, a.query_id.as_str()).map_err(|e| self.err(e))?;
            }
            while order.len().map_err(|e| self.err(e))? > self.max_answered {
                let Some((_, oldest)) = order.pop_first().map_err(|e| self.err(e))? else { break };
                let oldest = oldest.value().to_string();
                t.remove(oldest.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The component family and agent that answered `query_id`, if known.
    pub fn query_agent(&self, query_id: &str) -> Result<Option<(String, String)>> {
        Ok(self.asked(query_id)?.map(|(family, agent, _)| (family, agent)))
    }

    /// The component family and agent that answered `query_id`, and the
    /// question (empty when it was not kept), if known.
    pub fn asked(&self, query_id: &str) -> Result<Option<(String, String, String)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(QUERIES).map_err(|e| self.err(e))?;
        let Some(v) = t.get(query_id).map_err(|e| self.err(e))? else { return Ok(None) };
        let who = open_sealed(QUERIES.name(), query_id, v.value())
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| {
                let (who, text) = s.split_once('\n').unwrap_or((s, ""));
                let (f, a) = who.split_once('/')?;
                Some((f.to_string(), a.to_string(), text.to_string()))
            });
        who.map(Some).ok_or_else(|| self.corrupt(QUERIES.name(), query_id))
    }

    /// Keeps `example` as a question `agent` should answer; an agent keeps
    /// its latest [`MAX_EXAMPLES_PER_AGENT`].
    pub fn put_example(&self, agent: &str, example: &Example) -> Result<()> {
        let example = Example { text: bounded(&example.text).to_string(), ..example.clone() };
        let bytes = postcard::to_allocvec(&example).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(EXAMPLES).map_err(|e| self.err(e))?;
            let prefix = format!("{agent}/");
            let mut keys: Vec<String> = Vec::new();
            for row in t.range(prefix.as_str()..).map_err(|e| self.err(e))? {
                let key = row.map_err(|e| self.err(e))?.0.value().to_string();
                if !key.starts_with(&prefix) {
                    break;
                }
                keys.push(key);
            }
            // Sequence numbers are zero-padded: keys sort oldest first.
            let next = keys.last().and_then(|k| k[prefix.len()..].parse::<u64>().ok()).map_or(0, |n| n + 1);
            let key = format!("{prefix}{next:020}");
            t.insert(key.as_str(), seal(EXAMPLES.name(), &key, &bytes).as_slice())
                .map_err(|e| self.err(e))?;
            let over = (keys.len() + 1).saturating_sub(MAX_EXAMPLES_PER_AGENT);
            for old in &keys[..over] {
                t.remove(old.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records (or replaces) an installed plugin.
    pub fn put_plugin(&self, plugin: &InstalledPlugin) -> Result<()> {
        let bytes = postcard::to_allocvec(plugin).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(PLUGINS).map_err(|e| self.err(e))?;
            t.insert(plugin.id.as_str(), seal(PLUGINS.name(), &plugin.id, &bytes).as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets installed plugin `id`; whether it was installed.
    pub fn remove_plugin(&self, id: &str) -> Result<bool> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let removed =
            tx.open_table(PLUGINS).map_err(|e| self.err(e))?.remove(id).map_err(|e| self.err(e))?.is_some();
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Every installed plugin, by id. A record that fails its checksum is
    /// an error naming it (a plugin silently missing would route its
    /// questions elsewhere); remove it with [`SnapshotStore::remove_plugin`].
    pub fn plugins(&self) -> Result<Vec<InstalledPlugin>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(PLUGINS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let plugin = open_sealed(PLUGINS.name(), k.value(), v.value())
                .and_then(|b| postcard::from_bytes::<InstalledPlugin>(b).ok())
                .filter(|p| p.id == k.value())
                .ok_or_else(|| self.corrupt(PLUGINS.name(), k.value()))?;
            out.push(plugin);
        }
        Ok(out)
    }

    /// Every kept example, by agent; a corrupt record is skipped with a
    /// warning (it is only a hint for routing).
    pub fn examples(&self) -> Result<Vec<(String, Example)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(EXAMPLES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let key = k.value();
            let example = open_sealed(EXAMPLES.name(), key, v.value())
                .and_then(|b| postcard::from_bytes::<Example>(b).ok());
            match (example, key.rsplit_once('/')) {
                (Some(e), Some((agent, _))) => out.push((agent.to_string(), e)),
                _ => tracing::warn!(key, "an example record fails its checksum; skipped"),
            }
        }
        Ok(out)
    }

    /// `agent`'s latest snapshot from component `family`, if any; a corrupt
    /// record is an error.
    pub fn get(&self, family: &str, agent: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let key = snapshot_key(family, agent);
        let Some(v) = t.get(key.as_str()).map_err(|e| self.err(e))? else { return Ok(None) };
        match open_sealed(SNAPSHOTS.name(), &key, v.value()) {
            Some(bytes) => Ok(Some(bytes.to_vec())),
            None => Err(self.corrupt(SNAPSHOTS.name(), &key)),
        }
    }

    /// Moves `agent`'s snapshot from `family` aside (to the quarantine
    /// table, under the time it was moved), so the agent starts fresh and
    /// the bytes are kept for inspection.
    pub fn quarantine(&self, family: &str, agent: &str) -> Result<()> {
        let key = snapshot_key(family, agent);
        let ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let aside = format!("{key}/{ms}");
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let old = t.remove(key.as_str()).map_err(|e| self.err(e))?.map(|v| v.value().to_vec());
            if let Some(old) = old {
                // Kept as found (its checksum may be what is wrong), resealed
                // under its new key.
                let mut q = tx.open_table(QUARANTINE).map_err(|e| self.err(e))?;
                q.insert(aside.as_str(), seal(QUARANTINE.name(), &aside, &old).as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets what `agent` learned: removes its snapshots of every
    /// component family (usage history is kept). Returns how many were
    /// removed.
    pub fn reset(&self, agent: &str) -> Result<usize> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let removed;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let keys: Vec<String> = t
                .iter()
                .map_err(|e| self.err(e))?
                .filter_map(|row| row.ok().map(|(k, _)| k.value().to_string()))
                .filter(|k| k.split_once('/').is_some_and(|(_, a)| a == agent))
                .collect();
            for k in &keys {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
            removed = keys.len();
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Every snapshot key (`<family>/<agent>`) stored, sorted.
    pub fn snapshot_keys(&self) -> Result<Vec<String>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            out.push(row.map_err(|e| self.err(e))?.0.value().to_string());
        }
        Ok(out)
    }

    /// Checks every stored value against its checksum; returns one line per
    /// corrupt record (empty when all are sound).
    pub fn check(&self) -> Result<Vec<String>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut problems = Vec::new();
        for def in [SNAPSHOTS, QUARANTINE, USAGE, QUERIES, EXAMPLES, PLUGINS] {
            let t = tx.open_table(def).map_err(|e| self.err(e))?;
            for row in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let sound = match open_sealed(def.name(), k.value(), v.value()) {
                    None => false,
                    Some(bytes) if def.name() == USAGE.name() => Usage::from_bytes(bytes).is_some(),
                    Some(_) => true,
                };
                if !sound {
                    problems.push(format!("table {}: {:?} fails its checksum", def.name(), k.value()));
                }
            }
        }
        Ok(problems)
    }

    /// An agent instance with its stored state: `start()` makes a fresh
    /// instance, which is restored from the snapshot of `family`/`agent` if
    /// there is one. A snapshot that fails its checksum or that the
    /// component refuses (or traps on) is quarantined, and the agent starts
    /// from a new fresh instance; the outcome says which happened.
    pub fn start_restored(
        &self,
        family: &str,
        agent: &str,
        start: impl Fn() -> Result<AgentInstance>,
    ) -> Result<(AgentInstance, Restored)> {
        let mut instance = start()?;
        let failure = match self.get(family, agent) {
            Ok(None) => return Ok((instance, Restored::Fresh)),
            Ok(Some(bytes)) => match instance.restore(&bytes) {
                Ok(()) => return Ok((instance, Restored::Restored)),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            agent,
            component = family,
            reason = %failure,
            "the stored snapshot cannot be restored; it is kept aside and the agent starts fresh"
        );
        self.quarantine(family, agent)?;
        // The failed restore may have left the instance half-updated or
        // trapped: start again from a clean one.
        instance = start()?;
        Ok((instance, Restored::Quarantined { reason: failure }))
    }
}

/// Moves the tables of schema version 1 into version 2 (sealed values,
/// snapshots under the `feature-agent` family) and drops them.
fn migrate_v1(tx: &redb::WriteTransaction) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let names: Vec<String> = tx.list_tables().map_err(|x| e(&x))?.map(|t| t.name().to_string()).collect();
    let has = |t: &str| names.iter().any(|n| n == t);
    if has(V1_SNAPSHOTS.name()) {
        let old = tx.open_table(V1_SNAPSHOTS).map_err(|x| e(&x))?;
        let mut new = tx.open_table(SNAPSHOTS).map_err(|x| e(&x))?;
        for row in old.iter().map_err(|x| e(&x))? {
            let (k, v) = row.map_err(|x| e(&x))?;
            let key = snapshot_key(V1_FAMILY, k.value());
            new.insert(key.as_str(), seal(SNAPSHOTS.name(), &key, v.value()).as_slice())
                .map_err(|x| e(&x))?;
        }
    }
    if has(V1_USAGE.name()) {
        let old = tx.open_table(V1_USAGE).map_err(|x| e(&x))?;
        let mut new = tx.open_table(USAGE).map_err(|x| e(&x))?;
        for row in old.iter().map_err(|x| e(&x))? {
            let (k, v) = row.map_err(|x| e(&x))?;
            new.insert(k.value(), seal(USAGE.name(), k.value(), v.value()).as_slice()).map_err(|x| e(&x))?;
        }
    }
    if has(V1_QUERIES.name()) {
        let old = tx.open_table(V1_QUERIES).map_err(|x| e(&x))?;
        let mut new = tx.open_table(QUERIES).map_err(|x| e(&x))?;
        for row in old.iter().map_err(|x| e(&x))? {
            let (k, v) = row.map_err(|x| e(&x))?;
            let who = snapshot_key(V1_FAMILY, v.value());
            new.insert(k.value(), seal(QUERIES.name(), k.value(), who.as_bytes()).as_slice())
                .map_err(|x| e(&x))?;
        }
    }
    for t in [V1_SNAPSHOTS.name(), V1_USAGE.name()] {
        if has(t) {
            tx.delete_table(redb::TableDefinition::<&str, &[u8]>::new(t)).map_err(|x| e(&x))?;
        }
    }
    if has(V1_QUERIES.name()) {
        tx.delete_table(V1_QUERIES).map_err(|x| e(&x))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_answers_are_forgotten_beyond_the_bound_and_routine_writes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("elex.redb");
        let s = SnapshotStore::open(&path).unwrap().with_max_answered(3);
        for n in 0..5 {
            s.put_asked(&format!("q{n}"), "fam", "FAJ 1", "why?").unwrap();
        }
        let known: Vec<bool> = (0..5).map(|n| s.asked(&format!("q{n}")).unwrap().is_some()).collect();
        assert_eq!(known, [false, false, true, true, true]);
        s.put("fam", "FAJ 1", b"state").unwrap();
        // Routine writes are committed without an fsync; closing the store
        // makes them durable.
        drop(s);
        let s = SnapshotStore::open(&path).unwrap();
        assert_eq!(s.get("fam", "FAJ 1").unwrap().as_deref(), Some(&b"state"[..]));
        assert!(s.asked("q4").unwrap().is_some());
    }

    #[test]
    fn questions_and_examples_are_kept_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(&dir.path().join("elex.redb")).unwrap();
        // A query recorded without its text (as earlier versions did) and
        // one with it; an overlong text is cut on a character boundary.
        s.put_query("q1", "fam", "FAJ 121 3094").unwrap();
        assert_eq!(s.asked("q1").unwrap(), Some(("fam".into(), "FAJ 121 3094".into(), String::new())));
        let long = "é".repeat(MAX_QUESTION_BYTES);
        s.put_asked("q2", "fam", "FAJ 121 3094", &long).unwrap();
        let (_, _, kept) = s.asked("q2").unwrap().unwrap();
        assert!(kept.len() <= MAX_QUESTION_BYTES && long.starts_with(&kept));
        assert_eq!(s.query_agent("q2").unwrap(), Some(("fam".into(), "FAJ 121 3094".into())));

        let example = |n: usize| Example {
            text: format!("question {n}"),
            operator: "ana".into(),
            query_id: format!("q{n}"),
            millis: 0,
        };
        for n in 0..MAX_EXAMPLES_PER_AGENT + 8 {
            s.put_example("FAJ 121 3094", &example(n)).unwrap();
        }
        s.put_example("FAJ 121 4219", &example(99)).unwrap();
        let all = s.examples().unwrap();
        let msm: Vec<&Example> = all.iter().filter(|(a, _)| a == "FAJ 121 3094").map(|(_, e)| e).collect();
        assert_eq!(msm.len(), MAX_EXAMPLES_PER_AGENT, "the oldest go first");
        assert_eq!(msm[0].text, "question 8");
        assert_eq!(msm.last().unwrap().text, format!("question {}", MAX_EXAMPLES_PER_AGENT + 7));
        assert!(all.iter().any(|(a, e)| a == "FAJ 121 4219" && e.text == "question 99"));
    }

    #[test]
    fn snapshots_persist_and_unknown_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("elex.redb");
        {
            let s = SnapshotStore::open(&path).unwrap();
            assert_eq!(s.get("f", "a").unwrap(), None);
            s.put("f", "a", b"one").unwrap();
            s.put("f", "a", b"two").unwrap();
        }
        let s = SnapshotStore::open(&path).unwrap();
        assert_eq!(s.get("f", "a").unwrap().as_deref(), Some(&b"two"[..]));
        // Another component family never sees it.
        assert_eq!(s.get("g", "a").unwrap(), None);
        let u = Usage { calls: 7, ..Usage::default() };
        s.put_with_usage("f", "b", b"three", &u).unwrap();
        s.put_usage([("c", &u)]).unwrap();
        assert_eq!(s.usage("b").unwrap(), Some(u.clone()));
        assert_eq!(s.all_usage().unwrap().iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        s.put_query("q1", "f", "FAJ 1").unwrap();
        assert_eq!(s.query_agent("q1").unwrap(), Some((String::from("f"), String::from("FAJ 1"))));
        assert!(s.check().unwrap().is_empty());
        {
            let tx = s.db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert("schema_version", 99).unwrap();
            tx.commit().unwrap();
        }
        drop(s);
        let e = SnapshotStore::open(&path).err().unwrap();
        assert!(e.to_string().contains("schema version 99"), "{e}");
        // Not a database at all.
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, b"this is not a redb file at all, just text").unwrap();
        assert!(SnapshotStore::open(&junk).is_err());
    }

    #[test]
    fn flipped_or_moved_values_are_found_by_reads_and_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(&dir.path().join("a.redb")).unwrap();
        s.put("f", "a", b"learned state").unwrap();
        s.put_usage([("a", &Usage { calls: 3, ..Usage::default() })]).unwrap();
        s.put_query("q1", "f", "a").unwrap();
        // Flip one byte of every stored value, and copy a sound snapshot
        // under another agent's key.
        {
            let tx = s.db.begin_write().unwrap();
            for def in [SNAPSHOTS, USAGE, QUERIES] {
                let mut t = tx.open_table(def).unwrap();
                let rows: Vec<(String, Vec<u8>)> = t
                    .iter()
                    .unwrap()
                    .map(|r| r.unwrap())
                    .map(|(k, v)| (k.value().to_string(), v.value().to_vec()))
                    .collect();
                for (k, mut v) in rows {
                    if def.name() == SNAPSHOTS.name() {
                        t.insert("f/b", v.as_slice()).unwrap();
                    }
                    let last = v.len() - 1;
                    v[last] ^= 0x20;
                    t.insert(k.as_str(), v.as_slice()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        assert!(s.get("f", "a").unwrap_err().to_string().contains("checksum"));
        assert!(s.get("f", "b").is_err(), "a value moved to another key is refused");
        assert!(s.usage("a").is_err());
        assert!(s.query_agent("q1").is_err());
        assert!(s.all_usage().unwrap().is_empty());
        let problems = s.check().unwrap();
        assert_eq!(problems.len(), 4, "{problems:?}");
        // Quarantine moves it aside; reset forgets.
        s.quarantine("f", "a").unwrap();
        assert_eq!(s.get("f", "a").unwrap(), None);
        assert_eq!(s.reset("b").unwrap(), 1);
        assert_eq!(s.snapshot_keys().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn installed_plugins_are_kept_replaced_removed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(&dir.path().join("a.redb")).unwrap();
        assert!(s.plugins().unwrap().is_empty());
        let mut p = InstalledPlugin {
            id: String::from("weather"),
            source: PluginSource::Unsigned,
            digest: String::from("ab"),
            manifest: String::from("{}"),
            grants: vec![String::from("env:TZ")],
            operator: String::from("ops"),
            millis: 1,
        };
        s.put_plugin(&p).unwrap();
        p.source = PluginSource::Registry { name: String::from("weather"), version: String::from("1.0.0") };
        s.put_plugin(&p).unwrap();
        assert_eq!(s.plugins().unwrap(), vec![p.clone()]);
        // A flipped record is an error naming it, not a plugin silently gone.
        {
            let tx = s.db.begin_write().unwrap();
            let mut t = tx.open_table(PLUGINS).unwrap();
            let mut v = t.get("weather").unwrap().unwrap().value().to_vec();
            let last = v.len() - 1;
            v[last] ^= 1;
            t.insert("weather", v.as_slice()).unwrap();
            drop(t);
            tx.commit().unwrap();
        }
        let e = s.plugins().unwrap_err().to_string();
        assert!(e.contains("weather") && e.contains("checksum"), "{e}");
        assert_eq!(s.check().unwrap().len(), 1);
        assert!(s.remove_plugin("weather").unwrap());
        assert!(!s.remove_plugin("weather").unwrap());
        assert!(s.plugins().unwrap().is_empty());
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert("schema_version", 1).unwrap();
            tx.open_table(V1_SNAPSHOTS).unwrap().insert("FAJ 1", &b"state"[..]).unwrap();
            let u = Usage { calls: 2, ..Usage::default() }.to_bytes();
            tx.open_table(V1_USAGE).unwrap().insert("FAJ 1", u.as_slice()).unwrap();
            tx.open_table(V1_QUERIES).unwrap().insert("q9", "FAJ 1").unwrap();
            tx.commit().unwrap();
        }
        let s = SnapshotStore::open(&path).unwrap();
        assert_eq!(s.get(V1_FAMILY, "FAJ 1").unwrap().as_deref(), Some(&b"state"[..]));
        assert_eq!(s.usage("FAJ 1").unwrap().unwrap().calls, 2);
        assert_eq!(s.query_agent("q9").unwrap(), Some((V1_FAMILY.to_string(), String::from("FAJ 1"))));
        assert!(s.check().unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn stored_values_of_any_bytes_never_panic_a_read(value in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = open_sealed("t", "k", &value).map(Usage::from_bytes);
        }
    }
}
