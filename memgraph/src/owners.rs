//! The owner map: who owns each stored engram, by owner number (see
//! `schema::OWNER_NUMBERING`), in a packed map (see `packed`) small enough to
//! stay in memory.
//!
//! Why: a search must drop the hits its actor may not see, and the owner
//! was the first field of the engram's record — a B-tree descent into the
//! largest table per hit, about a microsecond each (a fifth of a two-word
//! search). Engrams are mostly created in runs of ids by one owner, so the
//! map of 100K engrams is a few KB: a lookup is a seek in pages that are
//! already in cache.
//!
//! One entry per block of [`BLOCK_IDS`] consecutive ids that holds at least
//! one stored engram: the key is the block's number (id / `BLOCK_IDS`,
//! spelled as keys spell ids, see [`packed::push_id`]), the value its slots
//! run-length coded, as pairs of varints (tag, count): tag 0 for ids that
//! hold no engram, n + 1 for owner n; the counts are positive, add up to
//! `BLOCK_IDS`, and neighbouring runs have different tags. The map changes
//! in the transaction that creates or deletes the engram, so every snapshot
//! holds its own engrams' owners.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::packed::{self, Builder, Chunks, Kind, Readable};
use crate::record::{self, Fault};

/// Ids per block of the map.
pub(crate) const BLOCK_IDS: u64 = 128;

/// The packed map of `schema::OWNERS`.
pub(crate) const KIND: Kind = Kind { table: record::Table::Owners, show: show_key };

/// An engram's owner number, or `None` for an id with no engram.
pub(crate) type Slot = Option<u64>;

fn block_key(block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    packed::push_id(&mut k, block);
    k
}

fn parse_key(key: &[u8]) -> Option<u64> {
    match packed::read_id(key)? {
        (block, []) if block <= u64::MAX / BLOCK_IDS => Some(block),
        _ => None,
    }
}

fn show_key(key: &[u8]) -> String {
    match parse_key(key) {
        Some(block) => format!("ids {} to {}", block * BLOCK_IDS, block * BLOCK_IDS + BLOCK_IDS - 1),
        None => format!("{key:?}"),
    }
}

fn corrupt(key: &[u8], detail: impl Into<String>) -> Fault {
    packed::corrupt(KIND, key, detail)
}

/// Calls `f(slot, count)` with each of a block's runs, in id order,
/// checking them all.
fn for_each_run(key: &[u8], value: &[u8], mut f: impl FnMut(Slot, u64)) -> Result<(), Fault> {
    let bad = |what: &str| corrupt(key, format!("owner runs: {what}"));
    let (mut at, mut total, mut prev, mut owned) = (0, 0u64, None, false);
    while at < value.len() {
        let (Some(tag), Some(count)) =
            (packed::read_varint(value, &mut at), packed::read_varint(value, &mut at))
        else {
            return Err(bad("cut short"));
        };
        let (slot, count) = ((tag as u64).checked_sub(1), count as u64);
        if count == 0 || count > BLOCK_IDS - total {
            return Err(bad("counts that do not add up to the block"));
        }
        if prev == Some(slot) {
            return Err(bad("two neighbouring runs of one owner"));
        }
        f(slot, count);
        (total, prev, owned) = (total + count, Some(slot), owned || slot.is_some());
    }
    if total != BLOCK_IDS {
        return Err(bad("counts that do not add up to the block"));
    }
    if !owned {
        return Err(bad("no engram"));
    }
    Ok(())
}

/// A block's slots, from its runs.
fn slots(key: &[u8], value: &[u8]) -> Result<Vec<Slot>, Fault> {
    let mut out = Vec::with_capacity(BLOCK_IDS as usize);
    for_each_run(key, value, |slot, count| out.resize(out.len() + count as usize, slot))?;
    Ok(out)
}

/// Lookups of owners in one snapshot (shared by the reads until the next
/// commit), keeping the last chunks of the map read: a search looks up
/// about ten ids, and the map of 100K engrams of a few owners is one or
/// two chunks. A chunk is read outside the lock.
#[derive(Default)]
pub(crate) struct Lookup {
    held: Mutex<Vec<packed::Held>>,
}

/// Chunks a [`Lookup`] keeps.
const HELD_CHUNKS: usize = 8;

impl Lookup {
    /// The owner number of engram `id`, or `None` if no engram has that id.
    pub(crate) fn owner(&self, t: &impl Readable, id: u64) -> Result<Slot, Fault> {
        let key = block_key(id / BLOCK_IDS);
        {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = held.iter().find(|h| h.covers(&key)) {
                return slot_in(h, &key, id);
            }
        }
        let Some(h) = packed::Held::load(t, KIND, &key)? else { return Ok(None) };
        if !h.covers(&key) {
            // The key falls between two chunks: no entry (chunks do not
            // overlap), and nothing worth keeping.
            return Ok(None);
        }
        let slot = slot_in(&h, &key, id)?;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.iter().any(|k| k.covers(&key)) {
            if held.len() == HELD_CHUNKS {
                held.remove(0);
            }
            held.push(h);
        }
        Ok(slot)
    }
}

/// Engram `id`'s slot, from the chunk that holds its block's `key`.
fn slot_in(h: &packed::Held, key: &[u8], id: u64) -> Result<Slot, Fault> {
    let Some(value) = h.get(key)? else { return Ok(None) };
    let (mut at, mut found) = (id % BLOCK_IDS, None);
    for_each_run(key, value, |slot, count| {
        if found.is_none() && at < count {
            found = Some(slot);
        }
        at = at.saturating_sub(count);
    })?;
    Ok(found.expect("the runs add up to the block"))
}

/// A block's value from its slots; `None` if none holds an engram.
fn encode(key: &[u8], slots: &[Slot]) -> Result<Option<Vec<u8>>, Fault> {
    if slots.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let n = slots[i..].iter().take_while(|&&s| s == slots[i]).count();
        let tag = match slots[i] {
            None => 0,
            Some(o) => o.checked_add(1).ok_or_else(|| corrupt(key, "owner number 2^64-1"))?,
        };
        packed::put_varint(&mut out, tag);
        packed::put_varint(&mut out, n as u64);
        i += n;
    }
    Ok(Some(out))
}

/// Sets the slots of `changes` (by id: the owner number of an engram
/// created, `None` for one deleted), reading and rewriting only their
/// blocks.
pub(crate) fn apply(t: &mut Chunks<'_>, changes: &BTreeMap<u64, Slot>) -> Result<(), Fault> {
    let mut out: Vec<packed::Change> = Vec::new();
    let mut changes = changes.iter().peekable();
    while let Some(&(&id, _)) = changes.peek() {
        let block = id / BLOCK_IDS;
        let key = block_key(block);
        let mut slots = vec![None; BLOCK_IDS as usize];
        if let Some(value) = packed::get(&*t, KIND, &key)? {
            slots = self::slots(&key, &value)?;
        }
        while let Some((&id, &slot)) = changes.next_if(|&(&id, _)| id / BLOCK_IDS == block) {
            slots[(id % BLOCK_IDS) as usize] = slot;
        }
        let value = encode(&key, &slots)?;
        out.push((key, value));
    }
    packed::update(t, KIND, &out)
}

/// Writes the map of `owners` ((id, owner number), ascending ids) into an
/// empty table.
pub(crate) fn write(t: &mut Chunks<'_>, owners: impl IntoIterator<Item = (u64, u64)>) -> Result<(), Fault> {
    let mut b = Builder::new(KIND);
    let mut owners = owners.into_iter().peekable();
    while let Some(&(id, _)) = owners.peek() {
        let block = id / BLOCK_IDS;
        let mut slots = vec![None; BLOCK_IDS as usize];
        while let Some((id, owner)) = owners.next_if(|&(id, _)| id / BLOCK_IDS == block) {
            slots[(id % BLOCK_IDS) as usize] = Some(owner);
        }
        let key = block_key(block);
        let value = encode(&key, &slots)?.expect("the block holds an engram");
        b.push(t, &key, &value)?;
    }
    b.finish(t)?;
    Ok(())
}

/// Every (id, owner number) of the map, in id order: for the integrity
/// check. Returns the corrupt chunks and entries (skipped).
pub(crate) fn scan(t: &impl Readable, mut f: impl FnMut(u64, u64)) -> Result<Vec<Fault>, Fault> {
    let mut faults = Vec::new();
    let mut chunk_faults = packed::scan(t, KIND, |k, v| {
        let Some(block) = parse_key(k) else {
            faults.push(corrupt(k, "a key that is not a block number"));
            return;
        };
        match slots(k, v) {
            // (Offsets within the block: the last block ends at 2^64-1.)
            Ok(slots) => slots.iter().zip(0..).for_each(|(slot, i)| {
                if let Some(owner) = *slot {
                    f(block * BLOCK_IDS + i, owner)
                }
            }),
            Err(e) => faults.push(e),
        }
    })?;
    chunk_faults.append(&mut faults);
    Ok(chunk_faults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, TableDefinition};

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("owners");

    fn all(db: &Database) -> BTreeMap<u64, u64> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        let mut out = BTreeMap::new();
        assert!(scan(&t, |id, o| assert!(out.insert(id, o).is_none())).unwrap().is_empty());
        out
    }

    proptest! {
        /// After any sequence of batches of creates and deletes, the map
        /// holds exactly the engrams alive, each with its owner, and a
        /// lookup of any id (alive, deleted or never used) agrees.
        #[test]
        fn the_map_follows_creates_and_deletes(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u64..1_000, proptest::option::of(0u64..4)), 0..60),
                1..6,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::create(dir.path().join("o.redb")).unwrap();
            let mut want: BTreeMap<u64, u64> = BTreeMap::new();
            for batch in batches {
                let changes: BTreeMap<u64, Slot> = batch.into_iter().collect();
                for (&id, &slot) in &changes {
                    match slot {
                        Some(o) => want.insert(id, o),
                        None => want.remove(&id),
                    };
                }
                let tx = db.begin_write().unwrap();
                apply(&mut tx.open_table(T).unwrap(), &changes).unwrap();
                tx.commit().unwrap();
            }
            prop_assert_eq!(&all(&db), &want);
            let tx = db.begin_read().unwrap();
            let t = tx.open_table(T).unwrap();
            let lookup = Lookup::default();
            for id in 0..1_100 {
                prop_assert_eq!(lookup.owner(&t, id).unwrap(), want.get(&id).copied(), "id {}", id);
            }
        }
    }

    #[test]
    fn a_map_written_whole_reads_as_one_built_by_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("o.redb")).unwrap();
        // Runs of one owner across blocks, a gap, interleaved owners, one
        // id near the top of the id space.
        let want: BTreeMap<u64, u64> = (1..300)
            .map(|id| (id, 0))
            .chain((500..700).map(|id| (id, id % 3)))
            .chain([(u64::MAX - 1, 7)])
            .collect();
        let tx = db.begin_write().unwrap();
        write(&mut tx.open_table(T).unwrap(), want.iter().map(|(&i, &o)| (i, o))).unwrap();
        tx.commit().unwrap();
        assert_eq!(all(&db), want);
        // The same map built by changes, in two batches, holds the same
        // entries, byte for byte.
        let by_changes = Database::create(dir.path().join("c.redb")).unwrap();
        for half in [0, 1] {
            let changes: BTreeMap<u64, Slot> = want
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == half)
                .map(|(_, (&id, &o))| (id, Some(o)))
                .collect();
            let tx = by_changes.begin_write().unwrap();
            apply(&mut tx.open_table(T).unwrap(), &changes).unwrap();
            tx.commit().unwrap();
        }
        let entries = |db: &Database| {
            let tx = db.begin_read().unwrap();
            let mut out = Vec::new();
            packed::scan(&tx.open_table(T).unwrap(), KIND, |k, v| out.push((k.to_vec(), v.to_vec())))
                .unwrap();
            out
        };
        assert_eq!(entries(&by_changes), entries(&db));
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        let lookup = Lookup::default();
        let owner = |id| lookup.owner(&t, id);
        assert_eq!(owner(u64::MAX - 1).unwrap(), Some(7));
        assert_eq!(owner(u64::MAX).unwrap(), None);
        assert_eq!(owner(0).unwrap(), None);
        assert_eq!(owner(299).unwrap(), Some(0));
        assert_eq!(owner(300).unwrap(), None);
    }

    #[test]
    fn bad_runs_are_corrupt() {
        let key = block_key(0);
        let value = |pairs: &[(u64, u64)]| {
            let mut v = Vec::new();
            for &(tag, count) in pairs {
                packed::put_varint(&mut v, tag);
                packed::put_varint(&mut v, count);
            }
            v
        };
        assert_eq!(slots(&key, &value(&[(1, 128)])).unwrap(), [Some(0); 128]);
        let mixed = slots(&key, &value(&[(0, 27), (3, 100), (0, 1)])).unwrap();
        assert_eq!((mixed[26], mixed[27], mixed[126], mixed[127]), (None, Some(2), Some(2), None));
        for (pairs, why) in [
            (&[(1, 127)][..], "add up"),
            (&[(1, 100), (2, 29)], "add up"),
            (&[(1, 0), (1, 128)], "add up"),
            (&[(1, 28), (1, 100)], "neighbouring"),
            (&[(0, 128)], "no engram"),
            (&[], "add up"),
        ] {
            let e = slots(&key, &value(pairs)).unwrap_err().to_string();
            assert!(e.contains(why), "{pairs:?}: {e}");
            assert!(e.contains("owners"), "{e}");
        }
        let cut = &value(&[(1, 128)])[..1];
        assert!(slots(&key, cut).unwrap_err().to_string().contains("cut short"));
    }
}
