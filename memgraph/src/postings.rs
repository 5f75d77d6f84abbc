//! The inverted index: for each term, its postings (engram id, term
//! frequency, document length) sorted by id, in blocks of at most
//! [`BLOCK`] entries keyed by (term, first id of the block).
//!
//! A transaction's changes to a term are applied together (`apply`):
//! each block they touch is read, merged and rewritten once (new engrams get
//! ever larger ids, so a batch of them fills the term's last block and adds
//! new ones). A search reads a term's blocks in order, or for a few
//! candidates looks each up with one range seek.
//!
//! Every stored block ends in its checksum (see `record`), checked whenever
//! a block is read from the file — including blocks a ranked search skips
//! by their header alone.

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use crate::record::{self, CHECKSUM_BYTES, Corruption, Fault, storage};

/// Most postings in a block.
pub const BLOCK: usize = 128;

/// Longest term indexed, in bytes; longer tokens are not searchable.
pub const MAX_TERM_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub id: u64,
    /// Occurrences of the term in the engram.
    pub tf: u32,
    /// Number of terms in the engram.
    pub len: u32,
}

type Postings<'t> = Table<'t, (&'static str, u64), &'static [u8]>;

/// A block is LEB128 varints: the count, the largest term frequency and the
/// shortest document length in the block (so a ranked search can skip a
/// block that cannot beat its current top k), the term's document frequency
/// (kept in the term's last block only; 0 in the others), then per posting
/// the id's delta from the previous id, the term frequency and the document
/// length. (The stored value is this followed by its checksum: see
/// `seal_block`.)
pub(crate) fn encode(block: &[Posting], df: u64) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::with_capacity(4 + block.len() * 5 + CHECKSUM_BYTES);
    put(&mut out, block.len() as u64);
    // The block's bound: no posting has a higher tf or a shorter document.
    put(&mut out, block.iter().map(|p| p.tf).max().unwrap_or(0) as u64);
    put(&mut out, block.iter().map(|p| p.len).min().unwrap_or(0) as u64);
    put(&mut out, df);
    let mut prev = 0;
    for p in block {
        put(&mut out, p.id - prev);
        put(&mut out, p.tf as u64);
        put(&mut out, p.len as u64);
        prev = p.id;
    }
    out
}

/// One LEB128 varint at `at`: one-byte values (most of them) inline, the
/// rest out of line.
#[inline(always)]
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, &'static str> {
    match bytes.get(*at) {
        Some(&b) if b < 0x80 => {
            *at += 1;
            Ok(b as u64)
        }
        _ => varint_long(bytes, at),
    }
}

#[cold]
#[inline(never)]
fn varint_long(bytes: &[u8], at: &mut usize) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("corrupt posting block: truncated")?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("corrupt posting block: varint too long")
}

/// Appends the postings of an encoded block (without its checksum) to
/// `out`.
pub(crate) fn decode_into(bytes: &[u8], out: &mut Vec<Posting>) -> Result<(), String> {
    let mut at = 0;
    let n = varint(bytes, &mut at)? as usize;
    if n > 4 * BLOCK {
        return Err(format!("corrupt posting block: {n} entries"));
    }
    varint(bytes, &mut at)?;
    varint(bytes, &mut at)?;
    varint(bytes, &mut at)?;
    out.reserve(n);
    let mut id = 0u64;
    for _ in 0..n {
        id = id.checked_add(varint(bytes, &mut at)?).ok_or("corrupt posting block: id overflow")?;
        let tf = u32::try_from(varint(bytes, &mut at)?).map_err(|_| "corrupt posting block: tf")?;
        let len = u32::try_from(varint(bytes, &mut at)?).map_err(|_| "corrupt posting block: len")?;
        out.push(Posting { id, tf, len });
    }
    if at != bytes.len() {
        return Err(format!("corrupt posting block: {} bytes after its postings", bytes.len() - at));
    }
    Ok(())
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Posting>, String> {
    let mut out = Vec::new();
    decode_into(bytes, &mut out)?;
    Ok(out)
}

/// The stored value of a block: its encoding and checksum.
pub(crate) fn seal_block(term: &str, first: u64, block: &[Posting], df: u64) -> Vec<u8> {
    record::seal(record::Table::Postings, &(term, first), encode(block, df))
}

fn corrupt(term: &str, first: u64, detail: impl Into<String>) -> Fault {
    Fault::Corrupt(Corruption::new(record::Table::Postings, &(term, first), detail))
}

/// The encoding of the block stored under (`term`, `first`), checksum
/// checked.
pub(crate) fn open_block<'v>(term: &str, first: u64, value: &'v [u8]) -> Result<&'v [u8], Fault> {
    Ok(record::open(record::Table::Postings, &(term, first), value)?)
}

/// The postings of the block stored under (`term`, `first`).
pub(crate) fn read_block(term: &str, first: u64, value: &[u8]) -> Result<Vec<Posting>, Fault> {
    decode(open_block(term, first, value)?).map_err(|e| corrupt(term, first, e))
}

/// The postings of the block stored under (`term`, `first`) and the
/// document frequency in its header.
pub(crate) fn read_block_df(term: &str, first: u64, value: &[u8]) -> Result<(Vec<Posting>, u64), Fault> {
    let block = open_block(term, first, value)?;
    let bad = |e: String| corrupt(term, first, e);
    Ok((decode(block).map_err(bad)?, header_df(block).map_err(bad)?))
}

/// The block that holds or would hold `id`: the last block starting at or
/// before it, else the term's first block.
fn block_for(t: &Postings<'_>, term: &str, id: u64) -> Result<Option<(u64, Vec<Posting>)>, Fault> {
    if let Some(row) = t.range((term, 0)..=(term, id)).map_err(storage)?.next_back() {
        let (k, v) = row.map_err(storage)?;
        let first = k.value().1;
        return Ok(Some((first, read_block(term, first, v.value())?)));
    }
    if let Some(row) = t.range((term, id)..=(term, u64::MAX)).map_err(storage)?.next() {
        let (k, v) = row.map_err(storage)?;
        let first = k.value().1;
        return Ok(Some((first, read_block(term, first, v.value())?)));
    }
    Ok(None)
}

/// First id of the block after the one starting at `key`.
fn next_block(t: &Postings<'_>, term: &str, key: u64) -> Result<Option<u64>, Fault> {
    if key == u64::MAX {
        return Ok(None);
    }
    match t.range((term, key + 1)..=(term, u64::MAX)).map_err(storage)?.next() {
        Some(row) => Ok(Some(row.map_err(storage)?.0.value().1)),
        None => Ok(None),
    }
}

/// A change to one term's postings: `Some` puts (adds or replaces) the
/// posting for the id, `None` removes it.
pub type Change = (u64, Option<Posting>);

/// Applies `changes` (in order; the last change of an id wins) to `term`'s
/// postings, rewriting each touched block once, and keeps the term's
/// document frequency in its last block. Returns the change in document
/// frequency.
///
/// The common case, postings of new engrams (ids above all the term's ids),
/// costs one seek to the last block and one write per block written.
///
/// `known_last` is the term's last block (key, encoded) if the caller knows
/// it (see `TailCache`): it spares the seek. Also returns the term's last
/// block after the change, when there is one.
pub(crate) fn apply(
    t: &mut Postings<'_>,
    term: &str,
    changes: &mut [Change],
    known_last: Option<&Tail>,
) -> Result<(i64, Option<Tail>), Fault> {
    if changes.is_empty() {
        return Ok((0, None));
    }
    changes.sort_by_key(|c| c.0); // stable: order within an id is kept
    // A block and its document frequency; `payload` checked already.
    let parse = |first: u64, payload: &[u8]| -> Result<(u64, Vec<Posting>, u64), Fault> {
        let bad = |e: String| corrupt(term, first, e);
        Ok((first, decode(payload).map_err(bad)?, header_df(payload).map_err(bad)?))
    };
    let last = match known_last {
        // Sealed by this process and kept in memory: not read from the file.
        Some((k, bytes)) => Some(parse(*k, record::payload_of(bytes))?),
        None => match t.range((term, 0)..=(term, u64::MAX)).map_err(storage)?.next_back() {
            Some(row) => {
                let (k, v) = row.map_err(storage)?;
                let first = k.value().1;
                Some(parse(first, open_block(term, first, v.value())?)?)
            }
            None => None,
        },
    };
    let old_df = last.as_ref().map_or(0, |l| l.2);
    // Appends only: merge into the last block.
    let beyond = match &last {
        Some((_, block, _)) => block.last().is_none_or(|p| changes[0].0 > p.id),
        None => true,
    };
    if beyond {
        let (key, mut block) = match last {
            Some((k, b, _)) => (Some(k), b),
            None => (None, Vec::new()),
        };
        let mut added = 0i64;
        let mut c = 0;
        while c < changes.len() {
            let id = changes[c].0;
            let mut end = c;
            while end + 1 < changes.len() && changes[end + 1].0 == id {
                end += 1;
            }
            if let Some(p) = changes[end].1 {
                block.push(Posting { id, ..p });
                added += 1;
            }
            c = end + 1;
        }
        if added == 0 {
            return Ok((0, None));
        }
        let tail = write_run(t, term, key, &block, old_df.saturating_add_signed(added))?;
        return Ok((added, tail));
    }
    let mut delta = 0i64;
    let mut ci = 0;
    while ci < changes.len() {
        let (key, block) = match block_for(t, term, changes[ci].0)? {
            Some((k, b)) => (Some(k), b),
            None => (None, Vec::new()),
        };
        // The changes that land in this block: those before the next one.
        let bound = match key {
            Some(k) => next_block(t, term, k)?,
            None => None,
        };
        let end = ci + changes[ci..].partition_point(|c| bound.is_none_or(|b| c.0 < b));
        let mut out = Vec::with_capacity(block.len() + (end - ci));
        let mut i = 0;
        let mut c = ci;
        while c < end {
            let id = changes[c].0;
            let mut last = c;
            while last + 1 < end && changes[last + 1].0 == id {
                last += 1;
            }
            while i < block.len() && block[i].id < id {
                out.push(block[i]);
                i += 1;
            }
            let existed = i < block.len() && block[i].id == id;
            if existed {
                i += 1;
            }
            match (existed, changes[last].1) {
                (false, Some(p)) => {
                    out.push(Posting { id, ..p });
                    delta += 1;
                }
                (true, Some(p)) => out.push(Posting { id, ..p }),
                (true, None) => delta -= 1,
                (false, None) => {}
            }
            c = last + 1;
        }
        out.extend_from_slice(&block[i..]);
        write_run(t, term, key, &out, 0)?;
        ci = end;
    }
    // Record the new document frequency in whatever block is last now.
    let last = match t.range((term, 0)..=(term, u64::MAX)).map_err(storage)?.next_back() {
        Some(row) => {
            let (k, v) = row.map_err(storage)?;
            let first = k.value().1;
            Some((first, read_block(term, first, v.value())?))
        }
        None => None,
    };
    let Some((k, block)) = last else { return Ok((delta, None)) };
    let bytes = seal_block(term, k, &block, old_df.saturating_add_signed(delta));
    t.insert((term, k), bytes.as_slice()).map_err(storage)?;
    Ok((delta, Some((k, bytes))))
}

/// A term's last block: its key (first id) and its stored value (encoding
/// and checksum).
pub(crate) type Tail = (u64, Vec<u8>);

/// The last block of recently written terms, kept by the graph so that
/// appending new engrams' postings to a term needs no seek. Only what a
/// committed transaction wrote goes in (redb lets one process and one writer
/// at a time change the file, so nothing changes it behind the cache's
/// back). Bounded in bytes; when full it starts over.
#[derive(Default)]
pub(crate) struct TailCache {
    map: std::collections::HashMap<String, Tail>,
    bytes: usize,
}

impl TailCache {
    const MAX_BYTES: usize = 8 << 20;

    pub(crate) fn get(&self, term: &str) -> Option<&Tail> {
        self.map.get(term)
    }

    /// Records what a committed transaction left as each term's last block
    /// (`None`: not known, forget it).
    pub(crate) fn update(&mut self, written: Vec<(String, Option<Tail>)>) {
        let size = |term: &str, tail: &Tail| term.len() + tail.1.len() + 64;
        for (term, tail) in written {
            match tail {
                Some(tail) => {
                    let term_len = term.len();
                    self.bytes += size(&term, &tail);
                    if let Some(old) = self.map.insert(term, tail) {
                        self.bytes = self.bytes.saturating_sub(term_len + old.1.len() + 64);
                    }
                }
                None => {
                    if let Some(old) = self.map.remove(&term) {
                        self.bytes = self.bytes.saturating_sub(size(&term, &old));
                    }
                }
            }
        }
        if self.bytes > Self::MAX_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
    }
}

/// Writes `postings` (sorted) in place of the block at `key` as blocks of
/// at most [`BLOCK`]; the last of them carries `df` and is returned.
fn write_run(
    t: &mut Postings<'_>,
    term: &str,
    key: Option<u64>,
    postings: &[Posting],
    df: u64,
) -> Result<Option<Tail>, Fault> {
    // Inserting under the same key replaces the block; remove it only when
    // its first id changes (or it empties).
    if let Some(k) = key
        && postings.first().map(|p| p.id) != Some(k)
    {
        t.remove((term, k)).map_err(storage)?;
    }
    let chunks = postings.chunks(BLOCK).count();
    let mut tail = None;
    for (i, chunk) in postings.chunks(BLOCK).enumerate() {
        let df = if i + 1 == chunks { df } else { 0 };
        let bytes = seal_block(term, chunk[0].id, chunk, df);
        t.insert((term, chunk[0].id), bytes.as_slice()).map_err(storage)?;
        tail = Some((chunk[0].id, bytes));
    }
    Ok(tail)
}

/// The document frequency recorded in a block's header (of its encoding,
/// checksum checked or not needed).
pub(crate) fn header_df(bytes: &[u8]) -> Result<u64, String> {
    let mut at = 0;
    for _ in 0..3 {
        varint(bytes, &mut at)?;
    }
    Ok(varint(bytes, &mut at)?)
}

/// The number of engrams holding `term`: one seek to its last block.
pub(crate) fn doc_freq(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &str,
) -> Result<u64, Fault> {
    match t.range((term, 0)..=(term, u64::MAX)).map_err(storage)?.next_back() {
        Some(row) => {
            let (k, v) = row.map_err(storage)?;
            let first = k.value().1;
            header_df(open_block(term, first, v.value())?).map_err(|e| corrupt(term, first, e))
        }
        None => Ok(0),
    }
}

/// The largest tf and shortest length in a block, from its header.
fn bound(bytes: &[u8]) -> Result<(u32, u32), String> {
    let mut at = 0;
    varint(bytes, &mut at)?;
    let max_tf = varint(bytes, &mut at)? as u32;
    let min_len = varint(bytes, &mut at)? as u32;
    Ok((max_tf, min_len))
}

/// Calls `f` with each of `term`'s blocks in id order until it returns
/// false, skipping (undecoded) those for which `skip(max_tf, min_len)` of
/// the block's header is true; one buffer is reused for all blocks.
pub(crate) fn for_each_block(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &str,
    mut skip: impl FnMut(u32, u32) -> bool,
    mut f: impl FnMut(&[Posting]) -> bool,
) -> Result<(), Fault> {
    let mut buf = Vec::with_capacity(BLOCK);
    for row in t.range((term, 0)..=(term, u64::MAX)).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let first = k.value().1;
        let block = open_block(term, first, v.value())?;
        let (max_tf, min_len) = bound(block).map_err(|e| corrupt(term, first, e))?;
        if skip(max_tf, min_len) {
            continue;
        }
        buf.clear();
        decode_into(block, &mut buf).map_err(|e| corrupt(term, first, e))?;
        if !f(&buf) {
            break;
        }
    }
    Ok(())
}

/// Every posting of `term`, by id.
#[cfg(test)]
pub(crate) fn read_all(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &str,
) -> Result<Vec<Posting>, Fault> {
    let mut out = Vec::new();
    for row in t.range((term, 0)..=(term, u64::MAX)).map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        out.extend(read_block(term, k.value().1, v.value())?);
    }
    Ok(out)
}

/// `term`'s posting for `id`, if any: one range seek.
pub(crate) fn lookup(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &str,
    id: u64,
) -> Result<Option<Posting>, Fault> {
    let Some(row) = t.range((term, 0)..=(term, id)).map_err(storage)?.next_back() else {
        return Ok(None);
    };
    let (k, v) = row.map_err(storage)?;
    let block = read_block(term, k.value().1, v.value())?;
    Ok(block.binary_search_by_key(&id, |q| q.id).ok().map(|i| block[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
    use std::collections::BTreeMap;

    const T: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("p");

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Any sequence of change batches leaves the blocks equal to a plain
        /// sorted map, every block sorted, non-empty, keyed by its first id
        /// and within size, and the returned document-frequency deltas sum
        /// to the map's size.
        #[test]
        fn blocks_match_a_sorted_map(batches in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), 0u64..3_000, 1u32..5), 0..400), 1..8)) {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::create(dir.path().join("p.redb")).unwrap();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let mut df = 0i64;
            // The last block as `apply` reported it, passed back in on every
            // other batch (as the write path's tail cache does).
            let mut tail: Option<Tail> = None;
            for (b, batch) in batches.into_iter().enumerate() {
                let tx = db.begin_write().unwrap();
                {
                    let mut t = tx.open_table(T).unwrap();
                    let mut changes: Vec<Change> = Vec::new();
                    for (add, id, tf) in batch {
                        if add {
                            changes.push((id, Some(Posting { id, tf, len: 7 })));
                            model.insert(id, tf);
                        } else {
                            changes.push((id, None));
                            model.remove(&id);
                        }
                    }
                    let known = if b % 2 == 1 { tail.as_ref() } else { None };
                    let (delta, new_tail) = apply(&mut t, "w", &mut changes, known).unwrap();
                    df += delta;
                    let actual = t
                        .range(("w", 0)..=("w", u64::MAX))
                        .unwrap()
                        .next_back()
                        .map(|r| r.unwrap())
                        .map(|(k, v)| (k.value().1, v.value().to_vec()));
                    if new_tail.is_some() {
                        prop_assert_eq!(&new_tail, &actual, "the reported last block is the stored one");
                    }
                    tail = actual;
                    // Neighbouring terms in key order are untouched.
                    apply(&mut t, "v", &mut [(5, Some(Posting { id: 5, tf: 1, len: 1 }))], None).unwrap();
                    apply(&mut t, "x", &mut [(5, Some(Posting { id: 5, tf: 1, len: 1 }))], None).unwrap();
                }
                tx.commit().unwrap();
            }
            prop_assert_eq!(df, model.len() as i64);
            {
                let rx = db.begin_read().unwrap();
                let t = rx.open_table(T).unwrap();
                prop_assert_eq!(doc_freq(&t, "w").unwrap(), model.len() as u64);
                prop_assert_eq!(doc_freq(&t, "v").unwrap(), 1);
            }
            let rx = db.begin_read().unwrap();
            let t = rx.open_table(T).unwrap();
            let all = read_all(&t, "w").unwrap();
            let want: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(all.iter().map(|p| (p.id, p.tf)).collect::<Vec<_>>(), want);
            for row in t.range(("w", 0)..=("w", u64::MAX)).unwrap() {
                let (k, v) = row.unwrap();
                let block = read_block("w", k.value().1, v.value()).unwrap();
                prop_assert!(!block.is_empty() && block.len() <= BLOCK);
                prop_assert_eq!(k.value().1, block[0].id);
                prop_assert!(block.windows(2).all(|w| w[0].id < w[1].id));
            }
            for id in [0u64, 1, 999, 2_999] {
                prop_assert_eq!(lookup(&t, "w", id).unwrap().map(|p| p.tf), model.get(&id).copied());
            }
            prop_assert_eq!(read_all(&t, "v").unwrap().len(), 1);
        }
    }

    #[test]
    fn the_tail_cache_counts_its_bytes_and_starts_over_when_full() {
        let mut c = TailCache::default();
        c.update(vec![
            (String::from("a"), Some((1, vec![0; 10]))),
            (String::from("b"), Some((2, vec![0; 20]))),
        ]);
        assert_eq!(c.get("a"), Some(&(1, vec![0; 10])));
        c.update(vec![(String::from("a"), Some((5, vec![0; 30]))), (String::from("b"), None)]);
        assert_eq!(c.get("a"), Some(&(5, vec![0; 30])));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.bytes, 1 + 30 + 64);
        c.update(vec![(String::from("a"), None)]);
        assert_eq!(c.bytes, 0);
        let big: Vec<(String, Option<Tail>)> = (0..(TailCache::MAX_BYTES / 1000 + 1))
            .map(|i| (format!("t{i}"), Some((1, vec![0; 1000]))))
            .collect();
        c.update(big);
        assert_eq!((c.bytes, c.get("t0")), (0, None), "over the bound it starts over");
    }

    #[test]
    fn appends_fill_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("p.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for id in 1..=1000 {
                apply(&mut t, "w", &mut [(id, Some(Posting { id, tf: 1, len: 3 }))], None).unwrap();
            }
            assert_eq!(t.len().unwrap(), 1000u64.div_ceil(BLOCK as u64));
            let mut batch: Vec<Change> =
                (1001..=3000).map(|id| (id, Some(Posting { id, tf: 1, len: 3 }))).collect();
            assert_eq!(apply(&mut t, "w", &mut batch, None).unwrap().0, 2000);
            assert_eq!(t.len().unwrap(), 3000u64.div_ceil(BLOCK as u64));
        }
        tx.commit().unwrap();
        assert!(decode(b"\xff\xff").is_err());
        assert!(decode(b"\x02\x01\x01\x01\x01\x01").is_err(), "truncated");
        let block = [Posting { id: 3, tf: 2, len: 9 }, Posting { id: 300_000, tf: 1, len: 70_000 }];
        assert_eq!(decode(&encode(&block, 7)).unwrap(), block);
        assert_eq!(header_df(&encode(&block, 7)).unwrap(), 7);
    }
}
