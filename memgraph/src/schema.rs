//! The tables of the database file. Keys are tuples so that every index is
//! a range scan; byte values are postcard records (posting blocks: see
//! `postings`), each followed by its checksum (see `record`).

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::QuotaUse;
use crate::owners;
use crate::packed::{self, Builder};
use crate::postings::{self, Posting};
use crate::record::{self, Corruption, Fault, RecordKey, Table};
use crate::segments::{self, Segments, is_segment_table};

/// Version of the layout below. Version 2 added a checksum to every byte
/// value; version 3 records the version of the terms the text index is
/// built from (`text_version`: [`elex_text::TEXT_VERSION`]); version 4
/// keys the text index and the reverse edge index by segment (see
/// `segments`); version 5 keeps the edges by source in segments too;
/// version 6 writes each posting block in columns (see `postings::encode`);
/// version 7 front-codes the packed chunks' keys, fills each chunk to its
/// page and spells ids in keys by their length (see `packed`), names each
/// relation once and keys edges by its number (`RELATIONS`), keeps the
/// metadata index packed (`METADATA`) and drops the owner index (an
/// engram's owner is the first field of its record); version 8 keeps each
/// engram's owner by number in a compact map by id (`OWNERS`, see
/// `owners`), which a search reads instead of the engrams' records. An
/// older file is migrated when opened, in one
/// transaction: its edges are read (from the segments of a version-5 or 6
/// file, from the one table of an older one), and both indexes and the
/// metadata index are rebuilt from the engrams and the edges. A file of any
/// other version is refused. A file whose text index was built from other
/// terms has it rebuilt from the engrams, in the same transaction.
pub const SCHEMA_VERSION: u64 = 8;

/// `schema_version`, `next_engram`, `next_context`, `engram_count`,
/// `total_terms` (sum of document lengths, for BM25).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// id → postcard `StoredEngram`.
pub(crate) const ENGRAMS: TableDefinition<u64, &[u8]> = TableDefinition::new("engrams");
/// (owner, id): files before schema version 7 indexed the engrams by owner
/// (dropped when such a file is opened).
pub(crate) const LEGACY_OWNED: TableDefinition<(&str, u64), ()> = TableDefinition::new("owned");
/// owner → postcard `QuotaUse`.
pub(crate) const QUOTA: TableDefinition<&str, &[u8]> = TableDefinition::new("quota");
/// Segment start → (table number, entries written to it). Segment `n`'s
/// tables (see `segments`) are `postings/<n>`, (term, first id of block) →
/// posting block (see `postings`); `edges_out/<n>`, (source, target,
/// relation) → postcard `StoredEdge`, the edges whose sources the segment
/// covers; and `edges_in/<n>`, (target, source, relation), the same edges
/// by target.
pub(crate) const SEGMENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("segments");
/// (key, value, id): the metadata index of files before schema version 7
/// (replaced by [`METADATA`] when such a file is opened).
pub(crate) const LEGACY_META_INDEX: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("metadata_index");
/// The metadata index: a packed map (see `packed`) of keys (the pair's
/// name, see [`metadata_pair`], then the engram's id) with empty values.
/// The engrams of one pair are one run of keys in id order, which front
/// coding stores in a few bytes each; new engrams append to their pairs'
/// runs.
pub(crate) const METADATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("metadata");

/// Relation number → checksummed postcard name: edge keys hold a relation's
/// number (see `segments::edge_key`), so a relation's name is stored once,
/// not in each edge twice (see [`Names`]).
pub(crate) const RELATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("relations");
/// Relation name → number: the reverse of [`RELATIONS`].
pub(crate) const RELATION_NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("relation_numbers");
/// The relations' numbers.
pub(crate) const RELATION_NUMBERING: Names =
    Names { by_number: RELATIONS, numbers: RELATION_NUMBERS, table: Table::Relations, what: "relation" };

/// Owner number → checksummed postcard name: the owner map (see `owners`)
/// holds an engram's owner by number.
pub(crate) const OWNERS_BY_NUMBER: TableDefinition<u64, &[u8]> = TableDefinition::new("owner_names");
/// Owner name → number: the reverse of [`OWNERS_BY_NUMBER`].
pub(crate) const OWNER_NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("owner_numbers");
/// The owners' numbers.
pub(crate) const OWNER_NUMBERING: Names =
    Names { by_number: OWNERS_BY_NUMBER, numbers: OWNER_NUMBERS, table: Table::OwnerNames, what: "owner" };
/// Who owns each stored engram, by number: a packed map with an entry per
/// block of ids (see `owners`).
pub(crate) const OWNERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("owners");

/// Names numbered so that other records hold a small number, not the name:
/// numbers are handed out from 0 in the order names are first used (a
/// migration that rebuilds them numbers them in order of name), never
/// 2^64-1, and kept. Two tables: number → name (a checksummed record) and name →
/// number, checked against the first on every lookup, so that a damaged
/// entry is an error, never another name.
#[derive(Clone, Copy)]
pub(crate) struct Names {
    pub by_number: TableDefinition<'static, u64, &'static [u8]>,
    pub numbers: TableDefinition<'static, &'static str, u64>,
    pub table: Table,
    /// What a name names, in errors.
    pub what: &'static str,
}

impl Names {
    /// The name of `number`; a number without one is corrupt.
    pub(crate) fn name(
        &self,
        t: &impl redb::ReadableTable<u64, &'static [u8]>,
        number: u64,
    ) -> Result<String, Fault> {
        let Some(v) = t.get(number).map_err(record::storage)? else {
            return Err(Fault::Corrupt(Corruption::new(
                self.table,
                &number,
                format!("no {} has this number", self.what),
            )));
        };
        Ok(record::decode::<String, _>(self.table, &number, v.value())?)
    }

    /// The number of `name`, if it has one.
    pub(crate) fn number(
        &self,
        numbers: &impl redb::ReadableTable<&'static str, u64>,
        by_number: &impl redb::ReadableTable<u64, &'static [u8]>,
        name: &str,
    ) -> Result<Option<u64>, Fault> {
        let Some(n) = numbers.get(name).map_err(record::storage)?.map(|v| v.value()) else { return Ok(None) };
        if self.name(by_number, n)? != name {
            return Err(Fault::Corrupt(Corruption::new(
                self.table,
                &n,
                format!("{} {name:?} is filed under the number of another", self.what),
            )));
        }
        Ok(Some(n))
    }

    /// The number of `name`, handed out if it has none.
    pub(crate) fn intern(
        &self,
        numbers: &mut redb::Table<'_, &'static str, u64>,
        by_number: &mut redb::Table<'_, u64, &'static [u8]>,
        name: &str,
    ) -> Result<u64, Fault> {
        if let Some(n) = self.number(numbers, by_number, name)? {
            return Ok(n);
        }
        let n = match by_number.last().map_err(record::storage)? {
            None => 0,
            Some((k, _)) => k.value().checked_add(1).filter(|&n| n < u64::MAX).ok_or_else(|| {
                Fault::Corrupt(Corruption::new(
                    self.table,
                    &k.value(),
                    format!("no {} number is left after this one", self.what),
                ))
            })?,
        };
        by_number
            .insert(n, record::encode(self.table, &n, &name, name.len() + 1)?.as_slice())
            .map_err(record::storage)?;
        numbers.insert(name, n).map_err(record::storage)?;
        Ok(n)
    }
}

/// The packed map of [`METADATA`].
pub(crate) const METADATA_KIND: packed::Kind =
    packed::Kind { table: Table::Metadata, show: show_metadata_key };

/// The name of a metadata pair in its index: 16 bytes of the BLAKE3 hash of
/// its key and value (lengths first). Bounded whatever the pair's size,
/// and a pair a search filters by is one seek.
pub(crate) fn metadata_pair(key: &str, value: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(value.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The key of engram `id` under pair `pair` in the metadata index.
pub(crate) fn metadata_key(pair: &[u8; 16], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(pair);
    packed::push_id(&mut k, id);
    k
}

/// A metadata index key read back: (pair, id).
pub(crate) fn parse_metadata_key(k: &[u8]) -> Option<([u8; 16], u64)> {
    let (pair, rest) = k.split_first_chunk::<16>()?;
    match packed::read_id(rest)? {
        (id, []) => Some((*pair, id)),
        _ => None,
    }
}

fn show_metadata_key(k: &[u8]) -> String {
    match parse_metadata_key(k) {
        Some((pair, id)) => {
            format!("(pair {}, {id})", pair.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
        None => format!("{k:?}"),
    }
}
/// (source, target, relation) → checksummed postcard `StoredEdge`: where
/// files before schema version 5 kept the edges (moved into segments when
/// such a file is opened).
pub(crate) const LEGACY_EDGES_OUT: TableDefinition<(u64, u64, &str), &[u8]> =
    TableDefinition::new("edges_out");
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

impl StoredEngram {
    pub fn decode(id: u64, value: &[u8]) -> Result<StoredEngram, Corruption> {
        record::decode(Table::Engrams, &id, value)
    }

    pub fn encode(&self, id: u64) -> Result<Vec<u8>, Fault> {
        record::encode(Table::Engrams, &id, self, self.bytes() as usize + self.owner.len() + 32)
    }

    /// Just the owner (the record's first field), checksum checked.
    pub fn owner_of(id: u64, value: &[u8]) -> Result<String, Corruption> {
        #[derive(serde::Deserialize)]
        struct Owner {
            owner: String,
        }
        Ok(record::decode_prefix::<Owner, _>(Table::Engrams, &id, value)?.owner)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredEdge {
    pub weight: f32,
    pub metadata: Vec<(String, String)>,
}

impl StoredEdge {
    /// An edge as a segment's table of edges by source holds it (its chunk
    /// carries the checksum).
    pub fn decode(key: (u64, u64, &str), value: &[u8]) -> Result<StoredEdge, Corruption> {
        record::decode_payload(Table::EdgesOut, &key, value)
    }

    pub fn encode(&self, key: (u64, u64, &str)) -> Result<Vec<u8>, Fault> {
        postcard::to_allocvec(self).map_err(|e| {
            crate::record::storage(format!("edges_out record {} does not encode: {e}", key.show()))
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredContext {
    pub name: String,
    pub creator: String,
    pub created_ms: u64,
}

impl StoredContext {
    pub fn decode(id: u64, value: &[u8]) -> Result<StoredContext, Corruption> {
        record::decode(Table::Contexts, &id, value)
    }

    pub fn encode(&self, id: u64) -> Result<Vec<u8>, Fault> {
        record::encode(Table::Contexts, &id, self, self.name.len() + self.creator.len() + 16)
    }
}

pub(crate) fn decode_quota(owner: &str, value: &[u8]) -> Result<QuotaUse, Corruption> {
    record::decode(Table::Quota, owner, value)
}

pub(crate) fn encode_quota(owner: &str, q: &QuotaUse) -> Result<Vec<u8>, Fault> {
    record::encode(Table::Quota, owner, q, 8)
}

/// Creates the tables of a new file or checks the version of an existing
/// one; returns the next engram and context ids.
pub(crate) fn prepare(db: &Database) -> Result<(u64, u64), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    let ids = {
        let mut rebuild = false;
        // The edges of a file of an older layout, to be moved into segments.
        let mut edges: Option<Vec<Edge>> = None;
        let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
        let version = meta.get("schema_version").map_err(|e| e.to_string())?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION).map_err(|e| e.to_string())?;
                meta.insert("text_version", elex_text::TEXT_VERSION).map_err(|e| e.to_string())?;
                edges = Some(Vec::new());
                rebuild = true;
            }
            Some(SCHEMA_VERSION) => {}
            Some(7) => {
                rebuild_owners(&tx)
                    .map_err(|e| format!("migrating schema version 7 to {SCHEMA_VERSION}: {e}"))?;
                meta.insert("schema_version", SCHEMA_VERSION).map_err(|e| e.to_string())?;
            }
            Some(old @ 1..=6) => {
                let migrating =
                    |e: String| format!("migrating schema version {old} to {SCHEMA_VERSION}: {e}");
                if old == 1 {
                    seal_v1_values(&tx).map_err(migrating)?;
                }
                if old >= 5 {
                    // The edges, from segments of version-1 chunks (the
                    // segment tables are rebuilt below).
                    edges = Some(v6_segment_edges(&tx).map_err(migrating)?);
                } else {
                    // The old layouts of the indexes (rebuilt below), and
                    // the edges in one table (moved into segments below).
                    for name in ["postings", "edges_in"] {
                        let old: TableDefinition<&str, ()> = TableDefinition::new(name);
                        tx.delete_table(old).map_err(|e| e.to_string())?;
                    }
                    edges = Some(
                        legacy_edges(&tx)
                            .map_err(|e| migrating(format!("moving the edges into segments: {e}")))?,
                    );
                }
                tx.delete_table(LEGACY_OWNED).map_err(|e| e.to_string())?;
                tx.delete_table(LEGACY_META_INDEX).map_err(|e| e.to_string())?;
                meta.insert("schema_version", SCHEMA_VERSION).map_err(|e| e.to_string())?;
                rebuild = true;
            }
            Some(other) => {
                let by = if other > SCHEMA_VERSION { " (a newer elex wrote it)" } else { "" };
                return Err(format!(
                    "schema version {other}{by}; this build reads memory-graph schema version {SCHEMA_VERSION}"
                ));
            }
        }
        // Files before version 3 have no `text_version`: version 1 of the
        // terms.
        let text_version = meta.get("text_version").map_err(|e| e.to_string())?.map_or(1, |v| v.value());
        if rebuild || text_version != elex_text::TEXT_VERSION {
            drop(meta);
            let edges = match edges {
                Some(edges) => edges,
                None => segment_edges(&tx).map_err(|e| format!("reading the edges: {e}"))?,
            };
            let total_terms = rebuild_indexes(&tx, edges).map_err(|e| {
                format!(
                    "rebuilding the text and edge indexes (terms version {}): {e}",
                    elex_text::TEXT_VERSION
                )
            })?;
            if rebuild {
                let from = version.map_or(String::new(), |v| format!("migrating schema version {v}: "));
                rebuild_metadata(&tx).map_err(|e| format!("{from}rebuilding the metadata index: {e}"))?;
                rebuild_owners(&tx).map_err(|e| format!("{from}rebuilding the owner map: {e}"))?;
            }
            meta = tx.open_table(META).map_err(|e| e.to_string())?;
            meta.insert("total_terms", total_terms).map_err(|e| e.to_string())?;
            meta.insert("text_version", elex_text::TEXT_VERSION).map_err(|e| e.to_string())?;
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
        QUOTA,
        SEGMENTS,
        METADATA,
        RELATIONS,
        RELATION_NUMBERS,
        OWNERS,
        OWNERS_BY_NUMBER,
        OWNER_NUMBERS,
        CONTEXTS,
        MEMBERS,
        MEMBERSHIPS,
        CONTEXT_ENGRAMS,
        ENGRAM_CONTEXTS
    );
    tx.commit().map_err(|e| e.to_string())?;
    Ok(ids)
}

/// Version 1 → 2: every byte value gets its checksum. Runs inside the
/// opening transaction, so a crash leaves the file at version 1, whole.
/// A version-1 value that was already damaged is sealed as it is, and so is
/// still reported when it fails to decode.
fn seal_v1_values(tx: &WriteTransaction) -> Result<(), String> {
    rewrite_values(tx, &|table, key, payload| record::seal(table, key, payload))
}

/// An edge as a migration carries it: (source, target, relation) and the
/// stored `StoredEdge` (a value that failed its checksum is carried as it
/// was, so that it is still reported).
type Edge = ((u64, u64, String), Vec<u8>);

/// The edges of a file before schema version 5, taken out of their table
/// (which is dropped).
fn legacy_edges(tx: &WriteTransaction) -> Result<Vec<Edge>, String> {
    let e = |e: redb::Error| e.to_string();
    let mut out = Vec::new();
    {
        let t = tx.open_table(LEGACY_EDGES_OUT).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let (s, t, rel) = k.value();
            let value = match record::open(Table::EdgesOut, &(s, t, rel), v.value()) {
                Ok(payload) => payload.to_vec(),
                Err(_) => v.value().to_vec(),
            };
            out.push(((s, t, rel.to_string()), value));
        }
    }
    tx.delete_table(LEGACY_EDGES_OUT).map_err(|x| e(x.into()))?;
    Ok(out)
}

/// Every edge kept in segments, by source. A damaged chunk (or key) stops
/// this with its error rather than lose the edges it held.
fn segment_edges(tx: &WriteTransaction) -> Result<Vec<Edge>, String> {
    let e = |e: redb::Error| e.to_string();
    let segs =
        Segments::load(&tx.open_table(SEGMENTS).map_err(|x| e(x.into()))?).map_err(|f| f.to_string())?;
    let names = tx.open_table(RELATIONS).map_err(|x| e(x.into()))?;
    let mut numbered = Vec::new();
    for seg in segs.iter() {
        let t = segments::open_edges_out(tx, seg.table).map_err(|f| f.to_string())?;
        let mut bad_keys = 0;
        let faults = packed::scan(&t, segments::EDGES_OUT_KIND, |k, v| match segments::parse_edge_key(k) {
            Some(key) => numbered.push((key, v.to_vec())),
            None => bad_keys += 1,
        })
        .map_err(|f| f.to_string())?;
        if let Some(f) = faults.first() {
            return Err(f.to_string());
        }
        if bad_keys > 0 {
            return Err(format!("{bad_keys} edge keys of segment {} do not parse", seg.start));
        }
    }
    let mut out = Vec::with_capacity(numbered.len());
    let mut known: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    for ((s, t, n), value) in numbered {
        let name = match known.get(&n) {
            Some(name) => name.clone(),
            None => {
                let name = RELATION_NUMBERING.name(&names, n).map_err(|f| f.to_string())?;
                known.insert(n, name.clone());
                name
            }
        };
        out.push(((s, t, name), value));
    }
    Ok(out)
}

/// Every edge kept in the segments of a version-5 or 6 file (chunks of
/// the version-1 layout, ids 8 bytes each in keys). A damaged chunk (or
/// key) stops this with its error rather than lose the edges it held.
fn v6_segment_edges(tx: &WriteTransaction) -> Result<Vec<Edge>, String> {
    let e = |e: redb::Error| e.to_string();
    let segs =
        Segments::load(&tx.open_table(SEGMENTS).map_err(|x| e(x.into()))?).map_err(|f| f.to_string())?;
    let mut out = Vec::new();
    for seg in segs.iter() {
        let t = segments::open_edges_out(tx, seg.table).map_err(|f| f.to_string())?;
        let kind = packed::Kind { show: segments::show_v6_edge_key, ..segments::EDGES_OUT_KIND };
        for (k, v) in packed::v1::read_all(&t, kind).map_err(|f| f.to_string())? {
            let Some((s, t, rel)) = segments::parse_v6_edge_key(&k) else {
                return Err(format!("an edge key of segment {} does not parse", seg.start));
            };
            out.push(((s, t, rel.to_string()), v));
        }
    }
    Ok(out)
}

/// The metadata index written anew from the engrams (one that does not
/// decode is left out; the integrity check names it).
fn rebuild_metadata(tx: &WriteTransaction) -> Result<(), String> {
    let e = |e: redb::Error| e.to_string();
    let mut keys = Vec::new();
    for row in tx.open_table(ENGRAMS).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
        let (k, v) = row.map_err(|x| e(x.into()))?;
        let id = k.value();
        let Ok(engram) = StoredEngram::decode(id, v.value()) else { continue };
        for (mk, mv) in &engram.metadata {
            keys.push(metadata_key(&metadata_pair(mk, mv), id));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    tx.delete_table(METADATA).map_err(|x| e(x.into()))?;
    let mut t = tx.open_table(METADATA).map_err(|x| e(x.into()))?;
    let mut b = Builder::new(METADATA_KIND);
    for k in &keys {
        b.push(&mut t, k, &[]).map_err(|f| f.to_string())?;
    }
    b.finish(&mut t).map_err(|f| f.to_string())?;
    Ok(())
}

/// The owner map and the owners' numbers written anew from the engrams,
/// owners numbered in order of name (an engram that does not decode is
/// left out; the integrity check names it).
fn rebuild_owners(tx: &WriteTransaction) -> Result<(), String> {
    let e = |e: redb::Error| e.to_string();
    let mut owned: Vec<(u64, String)> = Vec::new();
    for row in tx.open_table(ENGRAMS).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
        let (k, v) = row.map_err(|x| e(x.into()))?;
        if let Ok(owner) = StoredEngram::owner_of(k.value(), v.value()) {
            owned.push((k.value(), owner));
        }
    }
    tx.delete_table(OWNERS).map_err(|x| e(x.into()))?;
    tx.delete_table(OWNERS_BY_NUMBER).map_err(|x| e(x.into()))?;
    tx.delete_table(OWNER_NUMBERS).map_err(|x| e(x.into()))?;
    let mut numbers = tx.open_table(OWNER_NUMBERS).map_err(|x| e(x.into()))?;
    let mut by_number = tx.open_table(OWNERS_BY_NUMBER).map_err(|x| e(x.into()))?;
    let mut names: Vec<&str> = owned.iter().map(|(_, o)| o.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut number = std::collections::HashMap::new();
    for name in names {
        number.insert(
            name,
            OWNER_NUMBERING.intern(&mut numbers, &mut by_number, name).map_err(|f| f.to_string())?,
        );
    }
    let mut t = tx.open_table(OWNERS).map_err(|x| e(x.into()))?;
    owners::write(&mut t, owned.iter().map(|(id, o)| (*id, number[o.as_str()]))).map_err(|f| f.to_string())
}

/// A text index being rebuilt: each term's postings, sorted by id.
type Index = std::collections::BTreeMap<String, Vec<Posting>>;

/// The postings of every engram that decodes (one that does not is left
/// out; the integrity check reports it), and the number of terms indexed.
fn index_engrams(tx: &WriteTransaction) -> Result<(Index, u64), String> {
    let e = |e: redb::Error| e.to_string();
    let mut want = Index::new();
    let mut total_terms = 0u64;
    let engrams = tx.open_table(ENGRAMS).map_err(|x| e(x.into()))?;
    for row in engrams.iter().map_err(|x| e(x.into()))? {
        let (k, v) = row.map_err(|x| e(x.into()))?;
        let id = k.value();
        let Ok(engram) = StoredEngram::decode(id, v.value()) else { continue };
        let (counts, len) = crate::write::term_counts(&engram.content);
        total_terms += len as u64;
        for (term, tf) in counts {
            want.entry(term).or_default().push(Posting { id, tf, len });
        }
    }
    Ok((want, total_terms))
}

/// Writes `index` as segment table `table`'s postings (a new table).
fn write_postings(tx: &WriteTransaction, table: u64, index: Index) -> Result<u64, String> {
    let fault = |f: crate::record::Fault| f.to_string();
    let mut t = segments::open_postings(tx, table).map_err(fault)?;
    let mut w = postings::NewSegment::new();
    let mut entries = 0u64;
    for (term, list) in index {
        // Engrams are read in id order: each term's postings are sorted.
        w.add(&mut t, &term, &list).map_err(fault)?;
        entries += list.len() as u64;
    }
    w.finish(&mut t).map_err(fault)?;
    Ok(entries)
}

/// Every segment table dropped, and segment 0 (table 0) written anew: the
/// text index from the engrams under today's
/// [`term_counts`](crate::write::term_counts), the relations numbered anew
/// in order of name, and `edges` by source and by target. Returns the new
/// total of document lengths. An engram that does not decode is left out of
/// the index (the integrity check names it).
fn rebuild_indexes(tx: &WriteTransaction, edges: Vec<Edge>) -> Result<u64, String> {
    let e = |e: redb::Error| e.to_string();
    let (want, total_terms) = index_engrams(tx)?;
    let names: Vec<String> = tx
        .list_tables()
        .map_err(|x| e(x.into()))?
        .map(|h| h.name().to_string())
        .filter(|n| is_segment_table(n) || n == SEGMENTS.name())
        .collect();
    for name in names {
        let old: TableDefinition<&str, ()> = TableDefinition::new(&name);
        tx.delete_table(old).map_err(|x| e(x.into()))?;
    }
    let mut entries = write_postings(tx, 0, want)?;
    let fault = |f: crate::record::Fault| f.to_string();
    // The relations numbered anew, in order of name.
    tx.delete_table(RELATIONS).map_err(|x| e(x.into()))?;
    tx.delete_table(RELATION_NUMBERS).map_err(|x| e(x.into()))?;
    let mut numbers = tx.open_table(RELATION_NUMBERS).map_err(|x| e(x.into()))?;
    let mut names = tx.open_table(RELATIONS).map_err(|x| e(x.into()))?;
    let mut relations: Vec<&str> = edges.iter().map(|((_, _, rel), _)| rel.as_str()).collect();
    relations.sort_unstable();
    relations.dedup();
    for rel in relations {
        RELATION_NUMBERING.intern(&mut numbers, &mut names, rel).map_err(fault)?;
    }
    let mut numbered = Vec::with_capacity(edges.len());
    for ((s, t, rel), value) in edges {
        let n = numbers.get(rel.as_str()).map_err(|x| e(x.into()))?.expect("numbered above").value();
        numbered.push(((s, t, n), value));
    }
    numbered.sort_unstable_by_key(|e| e.0);
    numbered.dedup_by(|a, b| a.0 == b.0);
    let mut table = segments::open_edges_out(tx, 0).map_err(fault)?;
    let mut b = Builder::new(segments::EDGES_OUT_KIND);
    for ((s, t, rel), value) in &numbered {
        b.push(&mut table, &segments::edge_key(*s, *t, *rel), value).map_err(fault)?;
    }
    b.finish(&mut table).map_err(fault)?;
    let mut keys: Vec<Vec<u8>> =
        numbered.iter().map(|((s, t, rel), _)| segments::edge_key(*t, *s, *rel)).collect();
    keys.sort_unstable();
    let mut table = segments::open_edges_in(tx, 0).map_err(fault)?;
    let mut b = Builder::new(segments::EDGES_KIND);
    for key in &keys {
        b.push(&mut table, key, &[]).map_err(fault)?;
    }
    b.finish(&mut table).map_err(fault)?;
    entries += 2 * keys.len() as u64;
    tx.open_table(SEGMENTS).map_err(|x| e(x.into()))?.insert(0, (0, entries)).map_err(|x| e(x.into()))?;
    tx.open_table(META).map_err(|x| e(x.into()))?.insert("next_segment_table", 1).map_err(|x| e(x.into()))?;
    Ok(total_terms)
}

/// The new value of a record of a checksummed table, from its table, key and
/// old value.
pub(crate) type Rewrite<'f> = &'f dyn Fn(Table, &dyn RecordKey, Vec<u8>) -> Vec<u8>;

/// Replaces every value of the checksummed tables of a version-1 file by
/// `f(table, key, value)` (the posting blocks excepted: a migration
/// rebuilds them).
pub(crate) fn rewrite_values(tx: &WriteTransaction, f: Rewrite<'_>) -> Result<(), String> {
    fn all<K: redb::Key + 'static, O>(
        t: &redb::Table<'_, K, &'static [u8]>,
        own: impl Fn(K::SelfType<'_>) -> O,
    ) -> Result<Vec<(O, Vec<u8>)>, String> {
        t.iter()
            .map_err(|e| e.to_string())?
            .map(|r| r.map(|(k, v)| (own(k.value()), v.value().to_vec())).map_err(|e| e.to_string()))
            .collect()
    }
    let e = |e: redb::Error| e.to_string();
    let mut engrams = tx.open_table(ENGRAMS).map_err(|x| e(x.into()))?;
    for (id, v) in all(&engrams, |k| k)? {
        engrams.insert(id, f(Table::Engrams, &id, v).as_slice()).map_err(|x| e(x.into()))?;
    }
    let mut contexts = tx.open_table(CONTEXTS).map_err(|x| e(x.into()))?;
    for (id, v) in all(&contexts, |k| k)? {
        contexts.insert(id, f(Table::Contexts, &id, v).as_slice()).map_err(|x| e(x.into()))?;
    }
    let mut quota = tx.open_table(QUOTA).map_err(|x| e(x.into()))?;
    for (owner, v) in all(&quota, |k| k.to_string())? {
        let owner = owner.as_str();
        quota.insert(owner, f(Table::Quota, &owner, v).as_slice()).map_err(|x| e(x.into()))?;
    }
    let mut edges = tx.open_table(LEGACY_EDGES_OUT).map_err(|x| e(x.into()))?;
    for ((s, t, rel), v) in all(&edges, |(s, t, rel)| (s, t, rel.to_string()))? {
        let key = (s, t, rel.as_str());
        edges.insert(key, f(Table::EdgesOut, &key, v).as_slice()).map_err(|x| e(x.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CHECKSUM_BYTES, seal};
    use crate::segments::Segments;
    use crate::{
        Actor, Connection, EngramData, GraphConfig, GraphError, MemoryGraph, Op, SearchQuery, postings,
    };
    use proptest::prelude::*;
    use redb::ReadableDatabase;

    fn data(content: &str, meta: &[(&str, &str)]) -> EngramData {
        EngramData {
            content: content.into(),
            source: "test".into(),
            confidence: 0.5,
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// A small graph with every kind of record: engrams of two owners,
    /// metadata, a context, edges.
    fn fill(g: &MemoryGraph) -> Vec<u64> {
        let a = Actor::agent("a");
        let c = g.create_context(&a, "review").unwrap();
        let mut ids = Vec::new();
        for (i, text) in
            ["MIMO sleep saves energy", "sleep mode at night", "carrier aggregation", "energy counters"]
                .iter()
                .enumerate()
        {
            let who = if i % 2 == 0 { a.clone() } else { Actor::Operator };
            let ctx = (i % 2 == 0).then_some(c);
            ids.push(g.create(&who, data(text, &[("kind", "fact")]), ctx).unwrap());
        }
        let edge = |s, t| {
            Op::Connect(Connection {
                source: s,
                target: t,
                relation: "supports".into(),
                weight: 0.5,
                metadata: vec![("why".into(), "test".into())],
            })
        };
        g.apply(&Actor::Operator, vec![edge(ids[0], ids[1]), edge(ids[1], ids[2])]).unwrap();
        ids
    }

    #[test]
    fn the_checksummed_tables_are_the_byte_valued_ones() {
        let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        // The segment tables are `postings/<n>`, `edges_out/<n>` and
        // `edges_in/<n>`.
        let postings = segments::postings_name(7);
        let edges_in = segments::edges_in_name(7);
        let segment = |name: &str| name.split('/').next().unwrap().to_string();
        assert_eq!(
            names,
            [
                ENGRAMS.name(),
                QUOTA.name(),
                &segment(&postings),
                &segment(&segments::edges_out_name(7)),
                CONTEXTS.name(),
                &segment(&edges_in),
                METADATA.name(),
                RELATIONS.name(),
                OWNERS.name(),
                OWNERS_BY_NUMBER.name(),
            ]
        );
    }

    /// A version-1 file (values without checksums) is migrated when opened:
    /// everything reads back the same and the integrity check is clean.
    #[test]
    fn a_version_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::FILE_NAME);
        let (ids, before, hits, conns, ctx) = {
            let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
            let ids = fill(&g);
            let before: Vec<_> = ids.iter().map(|&id| g.get(&Actor::Operator, id).unwrap()).collect();
            let q = SearchQuery { text: Some("sleep energy".into()), limit: 10, ..SearchQuery::default() };
            let hits = g.search(&Actor::Operator, &q).unwrap();
            let conns = g.connections(&Actor::Operator, ids[0]).unwrap();
            let ctx = g.context(&Actor::Operator, 1).unwrap();
            (ids, before, hits, conns, ctx)
        };
        // Make it a version-1 file: strip every checksum.
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            to_legacy_layout(&tx);
            rewrite_values(&tx, &|_, _, mut v| {
                v.truncate(v.len() - CHECKSUM_BYTES);
                v
            })
            .unwrap();
            tx.open_table(META).unwrap().insert("schema_version", 1).unwrap();
            tx.commit().unwrap();
        }
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
        let after: Vec<_> = ids.iter().map(|&id| g.get(&Actor::Operator, id).unwrap()).collect();
        assert_eq!(after, before);
        let q = SearchQuery { text: Some("sleep energy".into()), limit: 10, ..SearchQuery::default() };
        assert_eq!(g.search(&Actor::Operator, &q).unwrap(), hits);
        assert_eq!(g.connections(&Actor::Operator, ids[0]).unwrap(), conns);
        assert_eq!(g.context(&Actor::Operator, 1).unwrap(), ctx);
        assert_eq!(g.quota_use("a").unwrap().engrams, 2);
        let v =
            g.db.begin_read()
                .unwrap()
                .open_table(META)
                .unwrap()
                .get("schema_version")
                .unwrap()
                .unwrap()
                .value();
        assert_eq!(v, SCHEMA_VERSION);
        // And it keeps working.
        g.create(&Actor::agent("a"), data("after the migration", &[]), None).unwrap();
        assert!(g.check_integrity().unwrap().is_empty());
    }

    /// The layout before schema version 5, in place of the segments: the
    /// edges in one table, keyed (source, target, relation), each value
    /// checksummed; no segment tables.
    fn to_legacy_layout(tx: &WriteTransaction) {
        let edges = segment_edges(tx).unwrap();
        let names: Vec<String> = tx
            .list_tables()
            .unwrap()
            .map(|h| h.name().to_string())
            .filter(|n| is_segment_table(n) || n == SEGMENTS.name())
            .collect();
        for name in names {
            tx.delete_table(TableDefinition::<&str, ()>::new(&name)).unwrap();
        }
        let mut t = tx.open_table(LEGACY_EDGES_OUT).unwrap();
        for ((s, target, rel), payload) in edges {
            let key = (s, target, rel.as_str());
            t.insert(key, seal(Table::EdgesOut, &key, payload).as_slice()).unwrap();
        }
        tx.open_table(META).unwrap().remove("next_segment_table").unwrap();
    }

    /// A version-3 file (one B-tree each for the text index, keyed (term,
    /// first id), for the edges and for the reverse edges) is migrated when
    /// opened: its old index tables are dropped, its edges move into
    /// segments, both indexes are rebuilt there, and connections, search and
    /// neighbourhoods read as before.
    #[test]
    fn a_version_3_file_gets_segmented_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::FILE_NAME);
        let (ids, hits, around, conns) = {
            let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
            let ids = fill(&g);
            let q = SearchQuery { text: Some("sleep energy".into()), limit: 10, ..SearchQuery::default() };
            let hits = g.search(&Actor::Operator, &q).unwrap();
            let around = g.neighbourhood(&Actor::Operator, ids[1], 1, None, 10).unwrap();
            let conns = g.connections(&Actor::Operator, ids[0]).unwrap();
            (ids, hits, around, conns)
        };
        assert_eq!(around.len(), 2, "an edge in and an edge out");
        // Make it a version-3 file: the segment tables replaced by the old
        // layout's two tables (their content is rebuilt, not read).
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            to_legacy_layout(&tx);
            let old_postings: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("postings");
            tx.open_table(old_postings).unwrap().insert(("sleep", ids[0]), &b"old block"[..]).unwrap();
            let old_edges: TableDefinition<(u64, u64, &str), ()> = TableDefinition::new("edges_in");
            tx.open_table(old_edges).unwrap().insert((ids[1], ids[0], "supports"), ()).unwrap();
            tx.open_table(META).unwrap().insert("schema_version", 3).unwrap();
            tx.commit().unwrap();
        }
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
        let q = SearchQuery { text: Some("sleep energy".into()), limit: 10, ..SearchQuery::default() };
        assert_eq!(g.search(&Actor::Operator, &q).unwrap(), hits);
        assert_eq!(g.neighbourhood(&Actor::Operator, ids[1], 1, None, 10).unwrap(), around);
        assert_eq!(g.connections(&Actor::Operator, ids[0]).unwrap(), conns);
        assert_eq!(conns[0].metadata, [("why".to_string(), "test".to_string())], "weight and metadata moved");
        let tx = g.db.begin_read().unwrap();
        let names: Vec<String> = tx.list_tables().unwrap().map(|h| h.name().to_string()).collect();
        assert!(
            !names.iter().any(|n| ["postings", "edges_in", "edges_out"].contains(&n.as_str())),
            "{names:?}"
        );
        drop(tx);
        // And it keeps working.
        g.create(&Actor::agent("a"), data("after the migration", &[]), None).unwrap();
        assert!(g.check_integrity().unwrap().is_empty());
    }

    /// The layout of schema versions 5 and 6 in place of today's: chunks
    /// of the version-1 layout with ids of 8 bytes in keys, the metadata
    /// index keyed (key, value, id) and an index of engrams by owner.
    fn to_v6_layout(tx: &WriteTransaction) {
        let segs = Segments::load(&tx.open_table(SEGMENTS).unwrap()).unwrap();
        let v6_id = |k: &[u8]| {
            let (id, rest) = packed::read_id(k).unwrap();
            (id.to_be_bytes().to_vec(), rest.to_vec())
        };
        for seg in segs.iter() {
            let tables = [
                (segments::postings_name(seg.table), postings::KIND),
                (segments::edges_out_name(seg.table), segments::EDGES_OUT_KIND),
                (segments::edges_in_name(seg.table), segments::EDGES_KIND),
            ];
            for (name, kind) in tables {
                let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                let mut entries = Vec::new();
                let faults = packed::scan(&tx.open_table(def).unwrap(), kind, |k, v| {
                    let key = if name.starts_with("postings/") {
                        let zero = k.iter().position(|&b| b == 0).unwrap();
                        let mut key = k[..=zero].to_vec();
                        if zero + 1 < k.len() {
                            key.extend_from_slice(&packed::read_id(&k[zero + 1..]).unwrap().0.to_be_bytes());
                        }
                        key
                    } else {
                        let (a, rest) = v6_id(k);
                        let (b, rest) = v6_id(&rest);
                        let number = packed::read_id(&rest).unwrap().0;
                        let name =
                            RELATION_NUMBERING.name(&tx.open_table(RELATIONS).unwrap(), number).unwrap();
                        [a, b, name.into_bytes()].concat()
                    };
                    entries.push((key, v.to_vec()));
                })
                .unwrap();
                assert!(faults.is_empty());
                tx.delete_table(def).unwrap();
                let mut t = tx.open_table(def).unwrap();
                for chunk in entries.chunks(7) {
                    t.insert(chunk.last().unwrap().0.as_slice(), packed::v1::chunk(kind, chunk).as_slice())
                        .unwrap();
                }
            }
        }
        tx.delete_table(METADATA).unwrap();
        tx.delete_table(RELATIONS).unwrap();
        tx.delete_table(RELATION_NUMBERS).unwrap();
        let engrams: Vec<(u64, StoredEngram)> = tx
            .open_table(ENGRAMS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), StoredEngram::decode(k.value(), v.value()).unwrap())
            })
            .collect();
        let mut owned = tx.open_table(LEGACY_OWNED).unwrap();
        let mut meta = tx.open_table(LEGACY_META_INDEX).unwrap();
        for (id, e) in &engrams {
            owned.insert((e.owner.as_str(), *id), ()).unwrap();
            for (k, v) in &e.metadata {
                meta.insert((k.as_str(), v.as_str(), *id), ()).unwrap();
            }
        }
    }

    /// A file of schema version 5 or 6 (whole ids and whole keys in its
    /// chunks, a metadata index by (key, value, id), an owner index) is
    /// migrated when opened: its edges are read from the old chunks, every
    /// index is rebuilt in today's layout, the old tables are dropped, and
    /// search, metadata filters and connections read as before.
    #[test]
    fn a_version_5_or_6_file_is_migrated() {
        for version in [5, 6] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(crate::FILE_NAME);
            let text = SearchQuery { text: Some("sleep energy".into()), limit: 10, ..SearchQuery::default() };
            let filtered = SearchQuery { metadata: vec![("kind".into(), "fact".into())], ..text.clone() };
            let (ids, hits, only, conns, around) = {
                let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
                let ids = fill(&g);
                g.create(&Actor::Operator, data("sleep energy notes", &[("kind", "note")]), None).unwrap();
                (
                    ids.clone(),
                    g.search(&Actor::Operator, &text).unwrap(),
                    g.search(&Actor::Operator, &filtered).unwrap(),
                    g.connections(&Actor::Operator, ids[0]).unwrap(),
                    g.neighbourhood(&Actor::Operator, ids[1], 1, None, 10).unwrap(),
                )
            };
            assert!(!hits.is_empty() && !only.is_empty() && only.len() < hits.len(), "{hits:?} {only:?}");
            assert!(!conns.is_empty() && around.len() == 2);
            {
                let db = Database::create(&path).unwrap();
                let tx = db.begin_write().unwrap();
                to_v6_layout(&tx);
                tx.open_table(META).unwrap().insert("schema_version", version).unwrap();
                tx.commit().unwrap();
            }
            let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
            assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
            assert_eq!(g.search(&Actor::Operator, &text).unwrap(), hits);
            assert_eq!(g.search(&Actor::Operator, &filtered).unwrap(), only);
            assert_eq!(g.connections(&Actor::Operator, ids[0]).unwrap(), conns);
            assert_eq!(g.neighbourhood(&Actor::Operator, ids[1], 1, None, 10).unwrap(), around);
            // An agent still sees its own engrams, and only those.
            assert!(g.get(&Actor::agent("a"), ids[0]).is_ok());
            let tx = g.db.begin_read().unwrap();
            let names: Vec<String> = tx.list_tables().unwrap().map(|h| h.name().to_string()).collect();
            assert!(!names.iter().any(|n| n == "owned" || n == "metadata_index"), "{names:?}");
            drop(tx);
            g.create(&Actor::agent("a"), data("after the migration", &[("kind", "fact")]), None).unwrap();
            assert!(g.check_integrity().unwrap().is_empty());
        }
    }

    /// A version-7 file (no owner map) gets one when opened, from the
    /// engrams: searches see what they saw, agent by agent, and the
    /// integrity check is clean.
    #[test]
    fn a_version_7_file_gets_its_owner_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::FILE_NAME);
        let actors = [Actor::Operator, Actor::agent("a"), Actor::agent("b")];
        let q = SearchQuery { text: Some("energy".into()), limit: 10, ..SearchQuery::default() };
        let before: Vec<_> = {
            let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
            fill(&g);
            g.create(&Actor::agent("b"), data("energy of b", &[]), None).unwrap();
            actors.iter().map(|a| g.search(a, &q).unwrap()).collect()
        };
        assert_eq!(before.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1, 1], "{before:?}");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.delete_table(OWNERS).unwrap();
            tx.delete_table(OWNERS_BY_NUMBER).unwrap();
            tx.delete_table(OWNER_NUMBERS).unwrap();
            tx.open_table(META).unwrap().insert("schema_version", 7).unwrap();
            tx.commit().unwrap();
        }
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
        let after: Vec<_> = actors.iter().map(|a| g.search(a, &q).unwrap()).collect();
        assert_eq!(after, before);
        let tx = g.db.begin_read().unwrap();
        assert_eq!(
            tx.open_table(META).unwrap().get("schema_version").unwrap().unwrap().value(),
            SCHEMA_VERSION
        );
    }

    /// An owner map that disagrees with the engrams — an engram filed
    /// under another owner, or under a number no owner has — is named by
    /// the integrity check; a search goes by the map.
    #[test]
    fn the_integrity_check_finds_a_wrong_owner_map() {
        for (number, problem) in
            [(0, "disagrees with the engrams (first at engram"), (99, "which has no name")]
        {
            let dir = tempfile::tempdir().unwrap();
            let g = MemoryGraph::open(&dir.path().join(crate::FILE_NAME), GraphConfig::default()).unwrap();
            let ids = fill(&g);
            let b = g.create(&Actor::agent("b"), data("energy of b", &[]), None).unwrap();
            let q = SearchQuery { text: Some("energy".into()), limit: 10, ..SearchQuery::default() };
            assert_eq!(g.search(&Actor::agent("b"), &q).unwrap().len(), 1);
            {
                let tx = g.db.begin_write().unwrap();
                let a = OWNER_NUMBERING
                    .number(
                        &tx.open_table(OWNER_NUMBERS).unwrap(),
                        &tx.open_table(OWNERS_BY_NUMBER).unwrap(),
                        "a",
                    )
                    .unwrap();
                assert_eq!(a, Some(0), "a created the first engram");
                let wrong = std::collections::BTreeMap::from([(b, Some(number))]);
                owners::apply(&mut tx.open_table(OWNERS).unwrap(), &wrong).unwrap();
                tx.commit().unwrap();
                g.committed();
            }
            let problems = g.check_integrity().unwrap();
            assert!(problems.len() == 1 && problems[0].contains(problem), "{problems:?}");
            assert!(g.search(&Actor::agent("b"), &q).unwrap().is_empty());
            let a_sees = g.search(&Actor::agent("a"), &q).unwrap().len();
            assert_eq!(a_sees, if number == 0 { 2 } else { 1 }, "{ids:?}");
        }
    }

    /// A damaged chunk of the owner map: reads fall back to the engrams'
    /// records (so searches see what they saw), the integrity check names
    /// the chunk, and a write that must change it is refused, changing
    /// nothing.
    #[test]
    fn a_damaged_owner_map_chunk_is_named_and_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let g = MemoryGraph::open(&dir.path().join(crate::FILE_NAME), GraphConfig::default()).unwrap();
        fill(&g);
        g.create(&Actor::agent("b"), data("energy of b", &[]), None).unwrap();
        let q = SearchQuery { text: Some("energy".into()), limit: 10, ..SearchQuery::default() };
        let actors = [Actor::Operator, Actor::agent("a"), Actor::agent("b")];
        let before: Vec<_> = actors.iter().map(|a| g.search(a, &q).unwrap()).collect();
        {
            let tx = g.db.begin_write().unwrap();
            let mut t = tx.open_table(OWNERS).unwrap();
            let (k, mut v) = {
                let (k, v) = t.first().unwrap().unwrap();
                (k.value().to_vec(), v.value().to_vec())
            };
            let last = v.len() - 1;
            v[last] ^= 0x40;
            t.insert(k.as_slice(), v.as_slice()).unwrap();
            drop(t);
            tx.commit().unwrap();
            g.committed();
        }
        let after: Vec<_> = actors.iter().map(|a| g.search(a, &q).unwrap()).collect();
        assert_eq!(after, before);
        let problems = g.check_integrity().unwrap();
        assert!(problems.len() == 1 && problems[0].starts_with("owners record"), "{problems:?}");
        let e = g.create(&Actor::agent("b"), data("more energy", &[]), None).unwrap_err();
        assert!(matches!(e, GraphError::Corrupt { table: "owners", .. }), "{e}");
        assert_eq!(g.search(&Actor::Operator, &q).unwrap(), before[0]);
    }

    /// A damaged segment-table counter (pointing at tables a segment
    /// already has) does not make two segments share tables.
    #[test]
    fn a_damaged_table_counter_does_not_share_tables() {
        let dir = tempfile::tempdir().unwrap();
        let g = MemoryGraph::open(&dir.path().join(crate::FILE_NAME), GraphConfig::default()).unwrap();
        fill(&g);
        {
            let tx = g.db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert("next_segment_table", 0).unwrap();
            tx.commit().unwrap();
            g.committed();
        }
        for i in 0..6 {
            g.create(&Actor::agent("a"), data(&format!("more words {i}"), &[]), None).unwrap();
        }
        assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
        let q = SearchQuery { text: Some("more words".into()), limit: 10, ..SearchQuery::default() };
        assert_eq!(g.search(&Actor::Operator, &q).unwrap().len(), 6);
    }

    /// A version-2 file indexed text by the older tokenizer (`UEs` as `u`
    /// `es`): opened, its text index is rebuilt, so the index matches the
    /// engrams (a term of more than one block included) and searches by
    /// today's terms find them. So is a file whose `text_version` is not
    /// today's.
    #[test]
    fn a_text_index_of_older_terms_is_rebuilt() {
        for schema_2 in [true, false] {
            text_index_of_older_terms_is_rebuilt(schema_2);
        }
    }

    fn text_index_of_older_terms_is_rebuilt(schema_2: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::FILE_NAME);
        let id = {
            let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
            fill(&g);
            let many = (0..2 * postings::BLOCK + 5)
                .map(|i| Op::Create {
                    id: g.allocate_engram_id().unwrap(),
                    data: data(&format!("common words {i}"), &[]),
                    context: None,
                })
                .collect();
            g.apply(&Actor::Operator, many).unwrap();
            g.create(&Actor::Operator, data("eNB drops UEs at night", &[]), None).unwrap()
        };
        // Make it a version-2 file: the engram's terms as the older
        // tokenizer made them, and a wrong total.
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let seg = Segments::load(&tx.open_table(SEGMENTS).unwrap()).unwrap().covering(id);
                let mut t = segments::open_postings(&tx, seg.table).unwrap();
                let block = postings::Posting { id, tf: 1, len: 7 };
                for term in ["ue", "enb"] {
                    postings::apply(&mut t, term, &mut [(id, None)]).unwrap();
                }
                for term in ["u", "es", "e", "nb"] {
                    postings::apply(&mut t, term, &mut [(id, Some(block))]).unwrap();
                }
                let mut meta = tx.open_table(META).unwrap();
                if schema_2 {
                    meta.insert("schema_version", 2).unwrap();
                    meta.remove("text_version").unwrap();
                } else {
                    meta.insert("text_version", elex_text::TEXT_VERSION - 1).unwrap();
                }
                meta.insert("total_terms", 1).unwrap();
            }
            tx.commit().unwrap();
        }
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
        let q = SearchQuery { text: Some("UEs eNB".into()), limit: 10, ..SearchQuery::default() };
        let hits = g.search(&Actor::Operator, &q).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [id]);
        let q = SearchQuery { text: Some("es".into()), limit: 10, ..SearchQuery::default() };
        assert!(g.search(&Actor::Operator, &q).unwrap().is_empty());
        let q = SearchQuery { text: Some("common words".into()), limit: 1000, ..SearchQuery::default() };
        assert_eq!(g.search(&Actor::Operator, &q).unwrap().len(), 2 * postings::BLOCK + 5);
        // It keeps working: the engram can be deleted, which removes its
        // postings under today's terms.
        g.apply(&Actor::Operator, vec![Op::Delete { id }]).unwrap();
        assert!(g.check_integrity().unwrap().is_empty());
    }

    /// Damage written straight into the tables (as a stray write would) is
    /// a `Corrupt` error on every read path and a problem the integrity
    /// check names; the rest of the graph reads on.
    #[test]
    fn corrupt_quota_postings_and_moved_values_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let g = MemoryGraph::open(&dir.path().join(crate::FILE_NAME), GraphConfig::default()).unwrap();
        let ids = fill(&g);
        fn corrupt_table<T: std::fmt::Debug>(r: Result<T, GraphError>) -> &'static str {
            match r {
                Err(GraphError::Corrupt { table, .. }) => table,
                other => panic!("not a corrupt record: {other:?}"),
            }
        }
        {
            let tx = g.db.begin_write().unwrap();
            {
                // A flipped byte in agent a's quota use.
                let mut quota = tx.open_table(QUOTA).unwrap();
                let mut v = quota.get("a").unwrap().unwrap().value().to_vec();
                v[0] ^= 0x01;
                quota.insert("a", v.as_slice()).unwrap();
                // A flipped byte in the chunk that holds "carrier".
                let seg = Segments::load(&tx.open_table(SEGMENTS).unwrap()).unwrap().covering(ids[2]);
                let mut chunks = segments::open_postings(&tx, seg.table).unwrap();
                let key = chunks
                    .range(postings::block_key("carrier", ids[2]).as_slice()..)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .0
                    .value()
                    .to_vec();
                let mut v = chunks.get(key.as_slice()).unwrap().unwrap().value().to_vec();
                v[1] ^= 0x40;
                chunks.insert(key.as_slice(), v.as_slice()).unwrap();
            }
            tx.commit().unwrap();
            g.committed();
        }
        assert_eq!(corrupt_table(g.quota_use("a")), "quota");
        // The write path reads the quota: refused, nothing written.
        assert_eq!(corrupt_table(g.create(&Actor::agent("a"), data("more", &[]), None)), "quota");
        let q = |t: &str| SearchQuery { text: Some(t.into()), limit: 10, ..SearchQuery::default() };
        assert_eq!(corrupt_table(g.search(&Actor::Operator, &q("carrier"))), "postings");
        assert_eq!(
            g.get(&Actor::Operator, ids[2]).unwrap().data.content,
            "carrier aggregation",
            "engrams read on"
        );
        let problems = g.check_integrity().unwrap();
        assert!(
            problems.iter().any(|p| p.starts_with("quota record \"a\" is corrupt: checksum")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("postings record (\"") && p.contains(") is corrupt: checksum")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 2, "no knock-on reports: {problems:?}");

        // An intact value moved under another key does not verify there.
        {
            let tx = g.db.begin_write().unwrap();
            {
                let mut engrams = tx.open_table(ENGRAMS).unwrap();
                let v = engrams.get(ids[3]).unwrap().unwrap().value().to_vec();
                engrams.insert(ids[1], v.as_slice()).unwrap();
            }
            tx.commit().unwrap();
            g.committed();
        }
        match g.get(&Actor::Operator, ids[1]) {
            Err(GraphError::Corrupt { table: "engrams", key, detail, .. }) => {
                assert_eq!(key, ids[1].to_string());
                assert!(detail.contains("checksum mismatch"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.get(&Actor::Operator, ids[3]).unwrap().data.content, "energy counters");
        let problems = g.check_integrity().unwrap();
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("engrams record {} is corrupt", ids[1]))),
            "{problems:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Random bytes stored as a value: every record decoder refuses them
        /// (the checksum does not hold); with a valid checksum the payload
        /// decoders see them and may accept or refuse, but never panic.
        #[test]
        fn random_values_are_refused_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            id in any::<u64>(),
            name in "[a-z ]{1,12}",
        ) {
            let name = name.as_str();
            prop_assert!(StoredEngram::decode(id, &bytes).is_err());
            prop_assert!(StoredEngram::owner_of(id, &bytes).is_err());
            prop_assert!(StoredContext::decode(id, &bytes).is_err());
            prop_assert!(StoredEdge::decode((id, !id, name), &bytes).is_err());
            prop_assert!(decode_quota(name, &bytes).is_err());

            let _ = StoredEngram::decode(id, &seal(Table::Engrams, &id, bytes.clone()));
            let _ = StoredEngram::owner_of(id, &seal(Table::Engrams, &id, bytes.clone()));
            let _ = StoredContext::decode(id, &seal(Table::Contexts, &id, bytes.clone()));
            let _ = StoredEdge::decode((id, !id, name), &seal(Table::EdgesOut, &(id, !id, name), bytes.clone()));
            let _ = decode_quota(name, &seal(Table::Quota, name, bytes.clone()));
            let _ = postings::decode(&bytes);
        }

        /// A real engram record with any one byte changed is refused.
        #[test]
        fn a_changed_byte_of_an_engram_is_refused(
            content in "\\PC{1,200}",
            at in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let e = StoredEngram {
                owner: "agent".into(),
                content,
                source: "src".into(),
                confidence: 0.25,
                metadata: vec![("k".into(), "v".into())],
                created_ms: 1,
                updated_ms: 2,
            };
            let mut v = e.encode(9).map_err(|f| TestCaseError::fail(format!("{f:?}")))?;
            prop_assert!(StoredEngram::decode(9, &v).is_ok());
            let i = at.index(v.len());
            v[i] ^= flip;
            prop_assert!(StoredEngram::decode(9, &v).is_err());
        }
    }
}
