//! Segments: how the tables that every write touches all over — the
//! inverted index (`postings`) and the edges, by source and by target —
//! stay append-only.
//!
//! The engram id space is cut into segments: a segment covers the ids from
//! its start up to the next segment's start (the first starts at 0). Each
//! segment has three tables of its own, named by its table number: the
//! postings of the engrams it covers (`postings/<n>`), and the edges whose
//! *source* it covers, by target (`edges_in/<n>`) and by source
//! (`edges_out/<n>`, with each edge's weight and metadata). A
//! transaction that creates engrams above every stored id opens a fresh
//! segment at the first free id, so their postings and edges go into new
//! tables, written in key order, without reading or copying any page
//! written before. Updating an older engram changes its segment in place.
//!
//! Without merging, a term would be spread over one segment per
//! transaction. So after each transaction the last [`FAN_IN`] segments
//! merge into one while they are of like size (the oldest holds at most
//! [`SIZE_RATIO`] times the entries of the newest): a few segments per
//! size tier remain (about 3 × log₄(transactions)), and each entry is
//! rewritten about log₄(transactions) times over its life — each time in
//! one sequential pass into new tables (most posting blocks, and every
//! chunk of edges by source, copied as they are), after which the old
//! tables are dropped whole. The merge runs inside the transaction that
//! triggered it, so a crash leaves either the old segments or the merged
//! one, never half; the price is that the commit which lines up four large
//! segments takes as long as rewriting them (at 100K engrams, a few tenths
//! of a second), where FTS5 spreads that work over later commits.
//!
//! This is SQLite FTS5's segment layout (and an LSM tree's), on redb: a
//! B-tree that copies every page it changes makes in-place updates of
//! postings scattered over the whole index cost a page per term per
//! transaction; appends and whole-table merges cost only the pages of the
//! data they write.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::packed::{self, Chunks, Cursor, Kind, Readable};
use crate::postings;
use crate::record::{self, Fault, storage};
use crate::schema::{META, SEGMENTS};

/// The packed map of a segment's reverse edges: keys (target, source,
/// relation) as bytes that sort so — target and source big-endian, then the
/// relation (see [`edge_key`]) — and empty values.
pub(crate) const EDGES_KIND: Kind = Kind { table: record::Table::EdgesIn, show: show_edge_key };

/// The packed map of a segment's edges, by source: keys (source, target,
/// relation) laid out as [`edge_key`] lays out (target, source, relation),
/// values the edge's weight and metadata (`schema::StoredEdge`).
pub(crate) const EDGES_OUT_KIND: Kind = Kind { table: record::Table::EdgesOut, show: show_edge_key };

/// The name of segment table `n`'s postings.
pub(crate) fn postings_name(n: u64) -> String {
    format!("postings/{n}")
}

/// The name of segment table `n`'s reverse edges.
pub(crate) fn edges_in_name(n: u64) -> String {
    format!("edges_in/{n}")
}

/// The name of segment table `n`'s edges by source.
pub(crate) fn edges_out_name(n: u64) -> String {
    format!("edges_out/{n}")
}

/// Whether a table name is one of the segment tables.
pub(crate) fn is_segment_table(name: &str) -> bool {
    name.starts_with("postings/") || name.starts_with("edges_in/") || name.starts_with("edges_out/")
}

/// An edge key: two engram ids and the relation's number (see
/// `schema::RELATIONS`), each as keys spell ids (see [`packed::push_id`]:
/// they sort as numbers). The reverse edge index keys (target, source,
/// relation); the edges by source, (source, target, relation).
pub(crate) fn edge_key(a: u64, b: u64, relation: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(27);
    edge_key_into(&mut k, a, b, relation);
    k
}

/// [`edge_key`] written over `buf` (reused from key to key).
pub(crate) fn edge_key_into(buf: &mut Vec<u8>, a: u64, b: u64, relation: u64) {
    buf.clear();
    packed::push_id(buf, a);
    packed::push_id(buf, b);
    packed::push_id(buf, relation);
}

/// An edge key read back: (a, b, relation number).
pub(crate) fn parse_edge_key(k: &[u8]) -> Option<(u64, u64, u64)> {
    let (a, k) = packed::read_id(k)?;
    let (b, k) = packed::read_id(k)?;
    match packed::read_id(k)? {
        (relation, []) => Some((a, b, relation)),
        _ => None,
    }
}

/// An edge key as files before schema version 7 spelled it: both ids as 8
/// bytes big-endian, then the relation (read once, when such a file is
/// migrated).
pub(crate) fn parse_v6_edge_key(k: &[u8]) -> Option<(u64, u64, &str)> {
    let a = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    let b = u64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
    Some((a, b, std::str::from_utf8(&k[16..]).ok()?))
}

/// How a key of [`parse_v6_edge_key`]'s layout reads in an error.
pub(crate) fn show_v6_edge_key(k: &[u8]) -> String {
    match parse_v6_edge_key(k) {
        Some((a, b, r)) => format!("({a}, {b}, {r:?})"),
        None => format!("{k:?}"),
    }
}

fn show_edge_key(k: &[u8]) -> String {
    match parse_edge_key(k) {
        Some((a, b, r)) => format!("({a}, {b}, relation #{r})"),
        None => format!("{:?}", String::from_utf8_lossy(k)),
    }
}

/// The edges leaving `source` in its segment's table of edges by source:
/// (target, relation number, stored edge).
pub(crate) fn outgoing(t: &impl Readable, source: u64) -> Result<Vec<(u64, u64, Vec<u8>)>, Fault> {
    edges_of(t, EDGES_OUT_KIND, source)
}

/// The edges into `target` filed in one segment's reverse edge table:
/// (source, relation number).
pub(crate) fn incoming(t: &impl Readable, target: u64) -> Result<Vec<(u64, u64)>, Fault> {
    Ok(edges_of(t, EDGES_KIND, target)?.into_iter().map(|(s, r, _)| (s, r)).collect())
}

/// The entries of an edge table whose keys start with `id`: (the other
/// engram, relation number, value).
fn edges_of(t: &impl Readable, kind: Kind, id: u64) -> Result<Vec<(u64, u64, Vec<u8>)>, Fault> {
    let mut prefix = Vec::with_capacity(9);
    packed::push_id(&mut prefix, id);
    let mut c = Cursor::seek(t, kind, &prefix)?;
    let mut out = Vec::new();
    while let Some((k, v)) = c.peek()? {
        if !k.starts_with(&prefix) {
            break;
        }
        let Some((_, other, relation)) = parse_edge_key(k) else {
            return Err(packed::corrupt(kind, k, "an edge key that does not parse"));
        };
        out.push((other, relation, v.to_vec()));
        c.advance();
    }
    Ok(out)
}

/// One segment: the first id it covers, the number of its tables, and how
/// many entries were written to it (postings, and each edge twice: by
/// source and by target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub start: u64,
    pub table: u64,
    pub entries: u64,
}

/// The segments of one snapshot, by start; the first starts at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segments(Vec<Segment>);

impl Segments {
    /// The segments recorded in the `segments` table (start → (table,
    /// entries)). A file always has segment 0 (see `schema::prepare`).
    pub(crate) fn load(t: &impl ReadableTable<u64, (u64, u64)>) -> Result<Segments, Fault> {
        let mut list = Vec::new();
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let (table, entries) = v.value();
            list.push(Segment { start: k.value(), table, entries });
        }
        if list.first().is_none_or(|s| s.start != 0) {
            return Err(storage("the segments table has no segment 0"));
        }
        Ok(Segments(list))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.0.iter()
    }

    /// The position of the segment covering `id`.
    pub(crate) fn index_covering(&self, id: u64) -> usize {
        self.0.partition_point(|s| s.start <= id).saturating_sub(1)
    }

    /// The segment covering `id`.
    pub(crate) fn covering(&self, id: u64) -> Segment {
        self.0[self.index_covering(id)]
    }

    /// The last segment.
    pub(crate) fn last(&self) -> Segment {
        *self.0.last().expect("segment 0 is always there")
    }
}

/// Opens (creating if need be) a segment table's postings in a write
/// transaction.
pub(crate) fn open_postings(tx: &WriteTransaction, table: u64) -> Result<Chunks<'_>, Fault> {
    tx.open_table(TableDefinition::new(&postings_name(table))).map_err(storage)
}

/// Opens (creating if need be) a segment table's reverse edges in a write
/// transaction.
pub(crate) fn open_edges_in(tx: &WriteTransaction, table: u64) -> Result<Chunks<'_>, Fault> {
    tx.open_table(TableDefinition::new(&edges_in_name(table))).map_err(storage)
}

/// Opens (creating if need be) a segment table's edges by source in a
/// write transaction.
pub(crate) fn open_edges_out(tx: &WriteTransaction, table: u64) -> Result<Chunks<'_>, Fault> {
    tx.open_table(TableDefinition::new(&edges_out_name(table))).map_err(storage)
}

/// Drops segment table `n`'s tables.
fn drop_tables(tx: &WriteTransaction, n: u64) -> Result<(), Fault> {
    for name in [postings_name(n), edges_in_name(n), edges_out_name(n)] {
        let def: TableDefinition<&str, ()> = TableDefinition::new(&name);
        tx.delete_table(def).map_err(storage)?;
    }
    Ok(())
}

/// A fresh table number (counted in `meta`), whose tables do not exist yet
/// (the counter is not checksummed: a damaged one must not make two
/// segments share tables).
pub(crate) fn next_table(
    tx: &WriteTransaction,
    meta: &mut Table<'_, &'static str, u64>,
) -> Result<u64, Fault> {
    let mut n = meta.get("next_segment_table").map_err(storage)?.map_or(1, |v| v.value());
    let taken: std::collections::HashSet<String> =
        tx.list_tables().map_err(storage)?.map(|h| redb::TableHandle::name(&h).to_string()).collect();
    while [postings_name(n), edges_in_name(n), edges_out_name(n)].iter().any(|name| taken.contains(name)) {
        n = n.checked_add(1).ok_or_else(|| storage("no segment table number left"))?;
    }
    meta.insert("next_segment_table", n + 1).map_err(storage)?;
    Ok(n)
}

/// How many segments merge at once ...
const FAN_IN: usize = 4;
/// ... once the oldest of them holds at most this many times the entries of
/// the newest.
const SIZE_RATIO: u64 = 2;

/// Merges the last [`FAN_IN`] segments into one while they are of like size
/// (the oldest at most [`SIZE_RATIO`] times the newest); returns how many
/// merges ran. No segment table may be open.
pub(crate) fn settle(tx: &WriteTransaction) -> Result<usize, Fault> {
    let mut merges = 0;
    loop {
        let mut segments = tx.open_table(SEGMENTS).map_err(storage)?;
        let segs = Segments::load(&segments)?;
        let n = segs.0.len();
        if n < FAN_IN {
            return Ok(merges);
        }
        let tail = &segs.0[n - FAN_IN..];
        if tail[0].entries > tail[FAN_IN - 1].entries.saturating_mul(SIZE_RATIO) {
            return Ok(merges);
        }
        let table = next_table(tx, &mut tx.open_table(META).map_err(storage)?)?;
        {
            let inputs: Vec<Chunks<'_>> =
                tail.iter().map(|s| open_postings(tx, s.table)).collect::<Result<_, _>>()?;
            postings::merge(postings::cursors(&inputs)?, &mut open_postings(tx, table)?)?;
        }
        {
            let inputs: Vec<Chunks<'_>> =
                tail.iter().map(|s| open_edges_in(tx, s.table)).collect::<Result<_, _>>()?;
            let cursors =
                inputs.iter().map(|t| Cursor::seek(t, EDGES_KIND, &[])).collect::<Result<_, _>>()?;
            packed::merge(EDGES_KIND, cursors, &mut open_edges_in(tx, table)?, &mut Edges)?;
        }
        {
            // Keyed by source, the segments' edges are already in order
            // one after the other: their chunks are copied as they are.
            let inputs: Vec<Chunks<'_>> =
                tail.iter().map(|s| open_edges_out(tx, s.table)).collect::<Result<_, _>>()?;
            packed::concat(&inputs, &mut open_edges_out(tx, table)?)?;
        }
        for s in tail {
            drop_tables(tx, s.table)?;
            segments.remove(s.start).map_err(storage)?;
        }
        let entries = tail.iter().fold(0u64, |sum, s| sum.saturating_add(s.entries));
        segments.insert(tail[0].start, (table, entries)).map_err(storage)?;
        merges += 1;
    }
}

/// Reverse edge tables merge as they are: an edge is filed under its
/// source's segment only.
struct Edges;

impl packed::Merging for Edges {
    fn combine(&mut self, key: &[u8], _: &[Vec<u8>]) -> Result<Vec<u8>, Fault> {
        Err(storage(format!("edge {} is filed in two segments", show_edge_key(key))))
    }

    fn join(&mut self, _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>, Fault> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_covers_ids_from_its_start_to_the_next() {
        let seg = |start| Segment { start, table: start + 1, entries: 1 };
        let s = Segments(vec![seg(0), seg(10), seg(20)]);
        assert_eq!([0, 9, 10, 19, 20, u64::MAX].map(|id| s.covering(id).start), [0, 0, 10, 10, 20, 20]);
        assert_eq!([0, 9, 10, 20].map(|id| s.index_covering(id)), [0, 0, 1, 2]);
        assert_eq!(s.last().start, 20);
    }
}
