//! The tables of the database file. Keys are tuples so that every index is
//! a range scan; values are postcard records.

use redb::{Database, ReadableTable, TableDefinition};

/// Version of the layout below. A file of another version is refused.
pub const SCHEMA_VERSION: u64 = 1;

/// `schema_version`, `next_engram`, `next_context`, `engram_count`,
/// `total_terms` (sum of document lengths, for BM25).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// id → postcard `StoredEngram`.
pub(crate) const ENGRAMS: TableDefinition<u64, &[u8]> = TableDefinition::new("engrams");
/// (owner, id).
pub(crate) const OWNED: TableDefinition<(&str, u64), ()> = TableDefinition::new("owned");
/// owner → postcard `QuotaUse`.
pub(crate) const QUOTA: TableDefinition<&str, &[u8]> = TableDefinition::new("quota");
/// (term, first id of block) → posting block (see `postings`).
pub(crate) const POSTINGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("postings");
/// (key, value, id).
pub(crate) const META_INDEX: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("metadata_index");
/// (source, target, relation) → postcard `StoredEdge`.
pub(crate) const EDGES_OUT: TableDefinition<(u64, u64, &str), &[u8]> = TableDefinition::new("edges_out");
/// (target, source, relation): the reverse of `EDGES_OUT`.
pub(crate) const EDGES_IN: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("edges_in");
/// id → postcard `StoredContext`.
pub(crate) const CONTEXTS: TableDefinition<u64, &[u8]> = TableDefinition::new("contexts");
/// (context, agent).
pub(crate) const MEMBERS: TableDefinition<(u64, &str), ()> = TableDefinition::new("context_members");
/// (agent, context): the reverse of `MEMBERS`.
pub(crate) const MEMBERSHIPS: TableDefinition<(&str, u64), ()> = TableDefinition::new("agent_contexts");
/// (context, engram).
pub(crate) const CONTEXT_ENGRAMS: TableDefinition<(u64, u64), ()> = TableDefinition::new("context_engrams");
/// (engram, context): the reverse of `CONTEXT_ENGRAMS`.
pub(crate) const ENGRAM_CONTEXTS: TableDefinition<(u64, u64), ()> = TableDefinition::new("engram_contexts");

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredEngram {
    pub owner: String,
    pub content: String,
    pub source: String,
    pub confidence: f32,
    pub metadata: Vec<(String, String)>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl StoredEngram {
    /// What the engram counts against its owner's byte quota.
    pub fn bytes(&self) -> u64 {
        (self.content.len()
            + self.source.len()
            + self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()) as u64
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredEdge {
    pub weight: f32,
    pub metadata: Vec<(String, String)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredContext {
    pub name: String,
    pub creator: String,
    pub created_ms: u64,
}

/// Creates the tables of a new file or checks the version of an existing
/// one; returns the next engram and context ids.
pub(crate) fn prepare(db: &Database) -> Result<(u64, u64), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    let ids = {
        let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
        let version = meta.get("schema_version").map_err(|e| e.to_string())?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION).map_err(|e| e.to_string())?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "schema version {other}; this build reads memory-graph schema version {SCHEMA_VERSION}"
                ));
            }
        }
        let get = |k: &str| -> Result<u64, String> {
            Ok(meta.get(k).map_err(|e| e.to_string())?.map(|v| v.value()).unwrap_or(1))
        };
        (get("next_engram")?, get("next_context")?)
    };
    macro_rules! create {
        ($($t:ident),*) => { $( tx.open_table($t).map_err(|e| e.to_string())?; )* };
    }
    create!(
        ENGRAMS,
        OWNED,
        QUOTA,
        POSTINGS,
        META_INDEX,
        EDGES_OUT,
        EDGES_IN,
        CONTEXTS,
        MEMBERS,
        MEMBERSHIPS,
        CONTEXT_ENGRAMS,
        ENGRAM_CONTEXTS
    );
    tx.commit().map_err(|e| e.to_string())?;
    Ok(ids)
}
