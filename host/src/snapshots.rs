//! Agent snapshots in the embedded database (redb, one file): what an agent
//! has learned survives eviction, recycling and restarts. Every write is one
//! committed transaction: a crash leaves the previous snapshot or the new
//! one, never half of either.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};

/// Schema version of the database file.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_snapshots");

/// The snapshot table of one database file.
pub struct SnapshotStore {
    db: Database,
    path: PathBuf,
}

impl SnapshotStore {
    /// Opens (or creates) the database at `path`; a database of another
    /// schema version is refused.
    pub fn open(path: &Path) -> Result<SnapshotStore> {
        let err =
            |e: &dyn std::fmt::Display| Error::Storage { path: path.to_path_buf(), detail: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let db = Database::create(path).map_err(|e| err(&e))?;
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
