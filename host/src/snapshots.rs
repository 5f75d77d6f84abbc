//! Agent state in the embedded database (redb, one file, `agents.redb` in the
//! data dir): each agent's latest snapshot, so what it learned survives
//! eviction, recycling and restarts, and its cumulative [`Usage`]. Every
//! write is one committed transaction: a crash leaves the previous state or
//! the new one, never half of either.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::usage::Usage;

/// Schema version of the database file.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_snapshots");
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_usage");
/// query id → the agent that answered it (for `elex feedback`).
const QUERIES: TableDefinition<&str, &str> = TableDefinition::new("answered_queries");

/// The database file's name in a data dir.
pub const FILE_NAME: &str = "agents.redb";

/// The snapshot table of one database file.
pub struct SnapshotStore {
    db: Database,
    path: PathBuf,
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
        let deadline = Instant::now() + wait;
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
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
                None => {
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
            tx.open_table(USAGE).map_err(|e| err(&e))?;
            tx.open_table(QUERIES).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(SnapshotStore { db, path: path.to_path_buf() })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Storage { path: self.path.clone(), detail: e.to_string() }
    }

    /// Stores `bytes` as `agent`'s snapshot (replacing the previous one).
    pub fn put(&self, agent: &str, bytes: &[u8]) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            t.insert(agent, bytes).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Stores `agent`'s snapshot and usage together, in one transaction.
    pub fn put_with_usage(&self, agent: &str, snapshot: &[u8], usage: &Usage) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            t.insert(agent, snapshot).map_err(|e| self.err(e))?;
            let mut u = tx.open_table(USAGE).map_err(|e| self.err(e))?;
            u.insert(agent, usage.to_bytes().as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Stores the usage of many agents in one transaction.
    pub fn put_usage<'a>(&self, usage: impl IntoIterator<Item = (&'a str, &'a Usage)>) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut u = tx.open_table(USAGE).map_err(|e| self.err(e))?;
            for (agent, usage) in usage {
                u.insert(agent, usage.to_bytes().as_slice()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// `agent`'s stored usage; `None` if none (or of an older layout).
    pub fn usage(&self, agent: &str) -> Result<Option<Usage>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(USAGE).map_err(|e| self.err(e))?;
        Ok(t.get(agent).map_err(|e| self.err(e))?.and_then(|v| Usage::from_bytes(v.value())))
    }

    /// Every agent's stored usage, sorted by agent id.
    pub fn all_usage(&self) -> Result<Vec<(String, Usage)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(USAGE).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            if let Some(u) = Usage::from_bytes(v.value()) {
                out.push((k.value().to_string(), u));
            }
        }
        Ok(out)
    }

    /// Remembers that `agent` answered `query_id`.
    pub fn put_query(&self, query_id: &str, agent: &str) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(QUERIES).map_err(|e| self.err(e))?;
            t.insert(query_id, agent).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The agent that answered `query_id`, if it is known.
    pub fn query_agent(&self, query_id: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(QUERIES).map_err(|e| self.err(e))?;
        Ok(t.get(query_id).map_err(|e| self.err(e))?.map(|v| v.value().to_string()))
    }

    /// `agent`'s latest snapshot, if any.
    pub fn get(&self, agent: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        Ok(t.get(agent).map_err(|e| self.err(e))?.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_persist_and_unknown_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("elex.redb");
        {
            let s = SnapshotStore::open(&path).unwrap();
            assert_eq!(s.get("a").unwrap(), None);
            s.put("a", b"one").unwrap();
            s.put("a", b"two").unwrap();
        }
        let s = SnapshotStore::open(&path).unwrap();
        assert_eq!(s.get("a").unwrap().as_deref(), Some(&b"two"[..]));
        let u = Usage { calls: 7, ..Usage::default() };
        s.put_with_usage("b", b"three", &u).unwrap();
        s.put_usage([("c", &u)]).unwrap();
        assert_eq!(s.usage("b").unwrap(), Some(u.clone()));
        assert_eq!(s.all_usage().unwrap().iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b", "c"]);
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
}
