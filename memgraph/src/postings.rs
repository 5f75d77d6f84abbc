//! The inverted index: for each term, its postings (engram id, term
//! frequency, document length) sorted by id, in blocks of at most
//! [`BLOCK`] entries keyed by (term, first id of the block).
//!
//! New engrams get ever larger ids, so indexing one appends to the last
//! block of each of its terms (a new block when that one is full); an
//! update or delete rewrites the one block holding the id. A search reads a
//! term's blocks in order, or for a few candidates looks each up with one
//! range seek.

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

/// Most postings in a block written by appends; an insert into the middle
/// may grow a block to twice this before it is split.
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

/// Ids are stored as deltas from the previous one (varints).
pub(crate) fn encode(block: &[Posting]) -> Vec<u8> {
    let mut prev = 0;
    let deltas: Vec<(u64, u32, u32)> = block
        .iter()
        .map(|p| {
            let d = (p.id - prev, p.tf, p.len);
            prev = p.id;
            d
        })
        .collect();
    postcard::to_allocvec(&deltas).expect("postings always encode")
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Posting>, String> {
    let deltas: Vec<(u64, u32, u32)> =
        postcard::from_bytes(bytes).map_err(|e| format!("corrupt posting block: {e}"))?;
    let mut id = 0u64;
    let mut out = Vec::with_capacity(deltas.len());
    for (d, tf, len) in deltas {
        id = id.checked_add(d).ok_or("corrupt posting block: id overflow")?;
        out.push(Posting { id, tf, len });
    }
    Ok(out)
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The block that holds or would hold `id`: the last block starting at or
/// before it, else the term's first block.
fn block_for(t: &Postings<'_>, term: &str, id: u64) -> Result<Option<(u64, Vec<Posting>)>, String> {
    if let Some(row) = t.range((term, 0)..=(term, id)).map_err(s)?.next_back() {
        let (k, v) = row.map_err(s)?;
        return Ok(Some((k.value().1, decode(v.value())?)));
    }
    if let Some(row) = t.range((term, id)..=(term, u64::MAX)).map_err(s)?.next() {
        let (k, v) = row.map_err(s)?;
        return Ok(Some((k.value().1, decode(v.value())?)));
    }
    Ok(None)
}

fn store(t: &mut Postings<'_>, term: &str, old_key: Option<u64>, block: &[Posting]) -> Result<(), String> {
    if let Some(k) = old_key
        && block.first().map(|p| p.id) != Some(k)
    {
        t.remove((term, k)).map_err(s)?;
    }
    if block.len() > 2 * BLOCK {
        let (a, b) = block.split_at(block.len() / 2);
        t.insert((term, a[0].id), encode(a).as_slice()).map_err(s)?;
        t.insert((term, b[0].id), encode(b).as_slice()).map_err(s)?;
    } else if let Some(first) = block.first() {
        t.insert((term, first.id), encode(block).as_slice()).map_err(s)?;
    }
    Ok(())
}

/// Adds (or replaces) `term`'s posting for `p.id`.
pub(crate) fn insert(t: &mut Postings<'_>, term: &str, p: Posting) -> Result<(), String> {
    match block_for(t, term, p.id)? {
        None => t.insert((term, p.id), encode(&[p]).as_slice()).map(|_| ()).map_err(s),
        Some((key, mut block)) => {
            let at_end = block.last().is_some_and(|last| last.id < p.id);
            if at_end && block.len() >= BLOCK {
                // Appending to a full block: start the next one.
                return t.insert((term, p.id), encode(&[p]).as_slice()).map(|_| ()).map_err(s);
            }
            match block.binary_search_by_key(&p.id, |q| q.id) {
                Ok(i) => block[i] = p,
                Err(i) => block.insert(i, p),
            }
            store(t, term, Some(key), &block)
        }
    }
}

/// Removes `term`'s posting for `id`; returns whether it was there.
pub(crate) fn remove(t: &mut Postings<'_>, term: &str, id: u64) -> Result<bool, String> {
    let Some((key, mut block)) = block_for(t, term, id)? else {
        return Ok(false);
    };
    let Ok(i) = block.binary_search_by_key(&id, |q| q.id) else {
        return Ok(false);
    };
    block.remove(i);
    if block.is_empty() {
        t.remove((term, key)).map_err(s)?;
    } else {
        store(t, term, Some(key), &block)?;
    }
    Ok(true)
}

/// Every posting of `term`, by id.
pub(crate) fn read_all(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &str,
) -> Result<Vec<Posting>, String> {
    let mut out = Vec::new();
    for row in t.range((term, 0)..=(term, u64::MAX)).map_err(s)? {
        let (_, v) = row.map_err(s)?;
        out.extend(decode(v.value())?);
    }
    Ok(out)
}

/// `term`'s posting for `id`, if any: one range seek.
pub(crate) fn lookup(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    term: &str,
    id: u64,
) -> Result<Option<Posting>, String> {
    let Some(row) = t.range((term, 0)..=(term, id)).map_err(s)?.next_back() else {
        return Ok(None);
    };
    let (_, v) = row.map_err(s)?;
    let block = decode(v.value())?;
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
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// Any sequence of inserts and removes leaves the blocks equal to a
        /// plain sorted map, every block sorted, non-empty, keyed by its
        /// first id and within size.
        #[test]
        fn blocks_match_a_sorted_map(ops in proptest::collection::vec((any::<bool>(), 0u64..2_000, 1u32..5), 1..1_500)) {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::create(dir.path().join("p.redb")).unwrap();
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                for (add, id, tf) in ops {
                    if add {
                        insert(&mut t, "w", Posting { id, tf, len: 7 }).unwrap();
                        model.insert(id, tf);
                    } else {
                        let was = remove(&mut t, "w", id).unwrap();
                        prop_assert_eq!(was, model.remove(&id).is_some());
                    }
                }
                // Other terms are untouched neighbours in key order.
                insert(&mut t, "v", Posting { id: 5, tf: 1, len: 1 }).unwrap();
                insert(&mut t, "x", Posting { id: 5, tf: 1, len: 1 }).unwrap();
            }
            tx.commit().unwrap();
            let rx = db.begin_read().unwrap();
            let t = rx.open_table(T).unwrap();
            let all = read_all(&t, "w").unwrap();
            let want: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(all.iter().map(|p| (p.id, p.tf)).collect::<Vec<_>>(), want);
            for row in t.range(("w", 0)..=("w", u64::MAX)).unwrap() {
                let (k, v) = row.unwrap();
                let block = decode(v.value()).unwrap();
                prop_assert!(!block.is_empty() && block.len() <= 2 * BLOCK);
                prop_assert_eq!(k.value().1, block[0].id);
                prop_assert!(block.windows(2).all(|w| w[0].id < w[1].id));
            }
            for id in [0u64, 1, 999, 1_999] {
                prop_assert_eq!(lookup(&t, "w", id).unwrap().map(|p| p.tf), model.get(&id).copied());
            }
        }
    }

    #[test]
    fn appends_fill_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("p.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for id in 1..=1000 {
                insert(&mut t, "w", Posting { id, tf: 1, len: 3 }).unwrap();
            }
            assert_eq!(t.len().unwrap(), 1000u64.div_ceil(BLOCK as u64));
        }
        tx.commit().unwrap();
        assert!(decode(b"\xff\xff").is_err());
    }
}
