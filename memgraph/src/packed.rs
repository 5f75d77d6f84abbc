//! A sorted map of small entries (byte keys, byte values) packed into
//! chunks of about [`CHUNK_BYTES`], each stored as one redb value under the
//! key of its last entry.
//!
//! Why: every redb insert is a B-tree descent and a leaf rewrite, about a
//! microsecond; a segment of the text index holds thousands of small
//! entries (most terms have one or two postings per segment). Written as
//! chunks, a fresh or merged segment costs one insert per few hundred
//! entries, and reading an entry is one seek plus a binary search in its
//! chunk. This is what SQLite's FTS5 does with its leaf pages.
//!
//! Layout of a chunk: the number of entries `n` (u32), `n` end offsets
//! (u32, relative to the entries), then the entries, each a key length
//! (u16), the key and the value; all little-endian. The stored value is
//! that followed by a checksum seeded by the table and the chunk's key (see
//! `record`), checked on every read before anything is parsed, so a damaged
//! chunk is a `Corruption`, never a wrong answer.
//!
//! Entries are written in key order by a [`Builder`] (fresh and merged
//! segments), read by a [`Cursor`] from a key on, and changed in place by
//! [`splice`] (rare: changes to engrams of older segments).

use redb::{ReadableTable, Table};

use crate::record::{self, Corruption, Fault, RecordKey, Seed, storage};

/// Most bytes of a chunk (its layout, entries and checksum): with its key
/// ([`MAX_KEY_BYTES`] at most) and redb's own bookkeeping it fills one
/// 4 KiB page. (A value that does not fit takes two pages, half empty.)
pub(crate) const CHUNK_BYTES: usize = 3_800;

/// Longest key an entry may have.
pub(crate) const MAX_KEY_BYTES: usize = 128;

/// An entry read in place: (key, value).
pub(crate) type Entry<'a> = (&'a [u8], &'a [u8]);
/// An entry and, when it is in the same chunk, the key of the entry after it.
pub(crate) type EntryAndNextKey<'a> = (Entry<'a>, Option<&'a [u8]>);

/// An entry copied out: (key, value).
pub(crate) type OwnedEntry = (Vec<u8>, Vec<u8>);

/// A table of chunks: last entry's key → chunk.
pub(crate) type Chunks<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// Read access to a table of chunks.
pub(crate) trait Readable: ReadableTable<&'static [u8], &'static [u8]> {}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> Readable for T {}

/// What a packed table holds: the table named in errors and mixed into
/// checksums, and how its keys read in an error.
#[derive(Clone, Copy)]
pub(crate) struct Kind {
    pub table: record::Table,
    pub show: fn(&[u8]) -> String,
}

/// A chunk's key as the checksum and errors see it.
struct ChunkKey<'a> {
    key: &'a [u8],
    show: fn(&[u8]) -> String,
}

impl RecordKey for ChunkKey<'_> {
    fn feed(&self, s: &mut Seed) {
        self.key.feed(s);
    }
    fn show(&self) -> String {
        (self.show)(self.key)
    }
}

pub(crate) fn corrupt(kind: Kind, key: &[u8], detail: impl Into<String>) -> Fault {
    Fault::Corrupt(Corruption::new(kind.table, &ChunkKey { key, show: kind.show }, detail))
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// A chunk's payload, parsed just enough to reach any entry.
struct Parsed<'v> {
    bytes: &'v [u8],
    n: usize,
    /// Where the entries start.
    base: usize,
}

impl<'v> Parsed<'v> {
    fn new(bytes: &'v [u8]) -> Result<Parsed<'v>, String> {
        let n = u32_at(bytes, 0).ok_or("truncated chunk")?;
        let base = n.checked_mul(4).and_then(|x| x.checked_add(4)).filter(|&b| b <= bytes.len());
        let base = base.ok_or_else(|| format!("chunk of {n} entries in {} bytes", bytes.len()))?;
        if n == 0 {
            return Err(String::from("empty chunk"));
        }
        let mut prev = 0;
        for i in 0..n {
            let end = u32_at(bytes, 4 + 4 * i).ok_or("truncated chunk")?;
            if end < prev + 2 || base + end > bytes.len() {
                return Err(format!("entry {i} ends at {end}, out of order or out of the chunk"));
            }
            prev = end;
        }
        if base + prev != bytes.len() {
            return Err(format!("{} bytes after the last entry", bytes.len() - base - prev));
        }
        Ok(Parsed { bytes, n, base })
    }

    /// Entry `i`: (key, value).
    fn entry(&self, i: usize) -> Result<(&'v [u8], &'v [u8]), String> {
        let start = if i == 0 { 0 } else { u32_at(self.bytes, 4 * i).ok_or("truncated")? };
        let end = u32_at(self.bytes, 4 + 4 * i).ok_or("truncated")?;
        let e = &self.bytes[self.base + start..self.base + end];
        let klen = u16::from_le_bytes([e[0], e[1]]) as usize;
        if 2 + klen > e.len() {
            return Err(format!("entry {i}: key of {klen} bytes in {} bytes", e.len()));
        }
        Ok((&e[2..2 + klen], &e[2 + klen..]))
    }

    /// The first entry whose key is at least `key` (`n` if none).
    fn lower_bound(&self, key: &[u8]) -> Result<usize, String> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid)?.0 < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Checks a stored chunk (checksum, layout, and its key its last entry's)
/// and returns its payload. (Entries out of order within a checksummed
/// chunk, which only a forger can make, give wrong lookups, not a panic;
/// writing them anywhere is refused by `Builder::push`.)
fn open<'v>(kind: Kind, key: &[u8], value: &'v [u8]) -> Result<&'v [u8], Fault> {
    let payload = record::open(kind.table, &ChunkKey { key, show: kind.show }, value)?;
    let p = Parsed::new(payload).map_err(|e| corrupt(kind, key, e))?;
    let last = p.entry(p.n - 1).map_err(|e| corrupt(kind, key, e))?.0;
    if last != key {
        return Err(corrupt(kind, key, "the chunk's last entry is not its key"));
    }
    Ok(payload)
}

/// Builds chunks from entries given in ascending key order and inserts
/// them.
pub(crate) struct Builder {
    kind: Kind,
    offsets: Vec<u32>,
    entries: Vec<u8>,
    last: Vec<u8>,
    /// Chunks written.
    pub chunks: u64,
}

impl Builder {
    pub(crate) fn new(kind: Kind) -> Builder {
        Builder {
            kind,
            offsets: Vec::new(),
            entries: Vec::with_capacity(CHUNK_BYTES * 2),
            last: Vec::new(),
            chunks: 0,
        }
    }

    /// Adds an entry; its key must be above every key added before (a key
    /// out of order, which only damaged input can give, is `Corrupt`).
    pub(crate) fn push(&mut self, t: &mut Chunks<'_>, key: &[u8], value: &[u8]) -> Result<(), Fault> {
        if (self.chunks > 0 || !self.offsets.is_empty()) && key <= self.last.as_slice() {
            return Err(corrupt(self.kind, key, "entries out of order"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(storage(format!("a key of {} bytes is over {MAX_KEY_BYTES}", key.len())));
        }
        let size = |entries: usize, n: usize| 4 + 4 * n + entries + record::CHECKSUM_BYTES;
        if !self.offsets.is_empty()
            && size(self.entries.len() + 2 + key.len() + value.len(), self.offsets.len() + 1) > CHUNK_BYTES
        {
            self.emit(t)?;
        }
        self.entries.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.entries.extend_from_slice(key);
        self.entries.extend_from_slice(value);
        self.offsets.push(self.entries.len() as u32);
        self.last.clear();
        self.last.extend_from_slice(key);
        Ok(())
    }

    fn emit(&mut self, t: &mut Chunks<'_>) -> Result<(), Fault> {
        let mut payload = Vec::with_capacity(4 + 4 * self.offsets.len() + self.entries.len() + 4);
        payload.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        for o in &self.offsets {
            payload.extend_from_slice(&o.to_le_bytes());
        }
        payload.extend_from_slice(&self.entries);
        let value =
            record::seal(self.kind.table, &ChunkKey { key: &self.last, show: self.kind.show }, payload);
        t.insert(self.last.as_slice(), value.as_slice()).map_err(storage)?;
        self.offsets.clear();
        self.entries.clear();
        self.chunks += 1;
        Ok(())
    }

    /// Writes the last, partly filled chunk.
    pub(crate) fn finish(mut self, t: &mut Chunks<'_>) -> Result<u64, Fault> {
        if !self.offsets.is_empty() {
            self.emit(t)?;
        }
        Ok(self.chunks)
    }
}

/// Entries in key order from a given key on, across chunks. Each chunk is
/// checked when reached and read where redb holds it (not copied).
pub(crate) struct Cursor<'t> {
    kind: Kind,
    rows: redb::Range<'t, &'static [u8], &'static [u8]>,
    /// The current chunk (checked), its key, its number of entries, and
    /// the next entry's index.
    chunk: Option<redb::AccessGuard<'t, &'static [u8]>>,
    key: Vec<u8>,
    n: usize,
    pos: usize,
}

impl<'t> Cursor<'t> {
    /// A cursor at the first entry whose key is at least `from`.
    pub(crate) fn seek(t: &'t impl Readable, kind: Kind, from: &[u8]) -> Result<Cursor<'t>, Fault> {
        let rows = t.range(from..).map_err(storage)?;
        let mut c = Cursor { kind, rows, chunk: None, key: Vec::new(), n: 0, pos: 0 };
        if c.load()? {
            c.pos = c.parsed().lower_bound(from).map_err(|e| corrupt(kind, &c.key, e))?;
        }
        Ok(c)
    }

    /// Loads the next chunk; false at the end.
    fn load(&mut self) -> Result<bool, Fault> {
        let Some(row) = self.rows.next() else {
            self.n = 0;
            self.pos = 0;
            return Ok(false);
        };
        let (k, v) = row.map_err(storage)?;
        let n = Parsed::new(open(self.kind, k.value(), v.value())?)
            .map_err(|e| corrupt(self.kind, k.value(), e))?
            .n;
        self.key.clear();
        self.key.extend_from_slice(k.value());
        self.chunk = Some(v);
        self.n = n;
        self.pos = 0;
        Ok(true)
    }

    /// The current chunk, parsed (it was checked when loaded).
    fn parsed(&self) -> Parsed<'_> {
        let value = self.chunk.as_ref().map_or(&[][..], |c| c.value());
        let bytes = &value[..value.len().saturating_sub(record::CHECKSUM_BYTES)];
        Parsed { bytes, n: self.n, base: 4 + 4 * self.n }
    }

    /// Loads the next chunk if the current one is done; false at the end.
    fn fill(&mut self) -> Result<bool, Fault> {
        while self.pos >= self.n {
            if !self.load()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The entry at the cursor (key, value), if any, without moving on.
    pub(crate) fn peek(&mut self) -> Result<Option<Entry<'_>>, Fault> {
        self.fill()?;
        self.current()
    }

    /// The entry at the cursor once `peek` has loaded its chunk.
    fn current(&self) -> Result<Option<Entry<'_>>, Fault> {
        if self.pos >= self.n {
            return Ok(None);
        }
        match self.parsed().entry(self.pos) {
            Ok(e) => Ok(Some(e)),
            Err(e) => Err(corrupt(self.kind, &self.key, e)),
        }
    }

    /// [`Cursor::peek`], with the key of the entry after it when that is in
    /// the same chunk (`None` if it is in a later chunk or there is none).
    pub(crate) fn peek_with_next_key(&mut self) -> Result<Option<EntryAndNextKey<'_>>, Fault> {
        if !self.fill()? {
            return Ok(None);
        }
        let parsed = self.parsed();
        let next = if self.pos + 1 < self.n {
            Some(parsed.entry(self.pos + 1).map_err(|e| corrupt(self.kind, &self.key, e))?.0)
        } else {
            None
        };
        match parsed.entry(self.pos) {
            Ok(e) => Ok(Some((e, next))),
            Err(e) => Err(corrupt(self.kind, &self.key, e)),
        }
    }

    /// Moves past the entry at the cursor.
    pub(crate) fn advance(&mut self) {
        self.pos += 1;
    }

    /// The next entry (key, value), if any; `f` sees it while it is in the
    /// buffer and its answer is returned.
    pub(crate) fn next<R>(&mut self, f: impl FnOnce(&[u8], &[u8]) -> R) -> Result<Option<R>, Fault> {
        let r = self.peek()?.map(|(k, v)| f(k, v));
        if r.is_some() {
            self.advance();
        }
        Ok(r)
    }
}

/// How [`merge`] treats entries.
pub(crate) trait Merging {
    /// The value written for a key that several inputs hold.
    fn combine(&mut self, key: &[u8], values: &[Vec<u8>]) -> Result<Vec<u8>, Fault>;
    /// Whether two consecutive entries are written as one: the joined
    /// value, under the first key.
    fn join(
        &mut self,
        key: &[u8],
        value: &[u8],
        next_key: &[u8],
        next_value: &[u8],
    ) -> Result<Option<Vec<u8>>, Fault>;
}

/// Writes the entries of `inputs` to `out` (empty) in key order, in one
/// pass: a key several inputs hold is written once (`Merging::combine`),
/// and consecutive entries may be joined (`Merging::join`). Returns the
/// chunks written.
pub(crate) fn merge(
    kind: Kind,
    mut inputs: Vec<Cursor<'_>>,
    out: &mut Chunks<'_>,
    how: &mut impl Merging,
) -> Result<u64, Fault> {
    let mut b = Builder::new(kind);
    // The last entry, held back in case the next one joins it.
    let (mut held_key, mut held_value, mut holding) = (Vec::new(), Vec::new(), false);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut values: Vec<Vec<u8>> = Vec::new();
    loop {
        // The smallest key at any input, and which inputs hold it (a bit
        // each).
        let mut best: Option<(usize, &[u8], &[u8])> = None;
        let mut holders = 0u64;
        for c in inputs.iter_mut() {
            c.fill()?;
        }
        for (i, c) in inputs.iter().enumerate() {
            let Some((k, v)) = c.current()? else { continue };
            match best {
                Some((_, b, _)) if k > b => {}
                Some((_, b, _)) if k == b => holders |= 1 << i,
                _ => {
                    best = Some((i, k, v));
                    holders = 1 << i;
                }
            }
        }
        let Some((m, k, v)) = best else { break };
        key.clear();
        key.extend_from_slice(k);
        if holders.count_ones() == 1 {
            value.clear();
            value.extend_from_slice(v);
            inputs[m].advance();
        } else {
            values.clear();
            for (i, c) in inputs.iter_mut().enumerate() {
                if holders & (1 << i) != 0 {
                    values.push(c.current()?.expect("holds the key").1.to_vec());
                    c.advance();
                }
            }
            value = how.combine(&key, &values)?;
        }
        if holding {
            if let Some(joined) = how.join(&held_key, &held_value, &key, &value)? {
                held_value = joined;
                continue;
            }
            b.push(out, &held_key, &held_value)?;
        }
        std::mem::swap(&mut held_key, &mut key);
        std::mem::swap(&mut held_value, &mut value);
        holding = true;
    }
    if holding {
        b.push(out, &held_key, &held_value)?;
    }
    b.finish(out)
}

/// Writes the chunks of `inputs` — whose keys are in order from one input
/// to the next: every key of an input below every key of the next — to
/// `out` as they are (a chunk's checksum covers its table and key, not
/// where it sits). Returns the chunks written.
pub(crate) fn concat(inputs: &[impl Readable], out: &mut Chunks<'_>) -> Result<u64, Fault> {
    let mut n = 0;
    let mut last: Option<Vec<u8>> = None;
    for t in inputs {
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if last.as_deref().is_some_and(|l| l >= k.value()) {
                return Err(storage("tables concatenated out of key order"));
            }
            out.insert(k.value(), v.value()).map_err(storage)?;
            last = Some(k.value().to_vec());
            n += 1;
        }
    }
    Ok(n)
}

/// The last entry whose key is at most `key`, as (key, value), if any.
pub(crate) fn last_at_most(t: &impl Readable, kind: Kind, key: &[u8]) -> Result<Option<OwnedEntry>, Fault> {
    // The chunk that holds the first entry above `key` may hold the answer
    // before it; else the answer ends the chunk before.
    let above = t.range(key..).map_err(storage)?.next();
    if let Some(row) = above {
        let (k, v) = row.map_err(storage)?;
        let payload = open(kind, k.value(), v.value())?;
        let p = Parsed::new(payload).map_err(|e| corrupt(kind, k.value(), e))?;
        let bad = |e: String| corrupt(kind, k.value(), e);
        let mut i = p.lower_bound(key).map_err(bad)?;
        if i < p.n && p.entry(i).map_err(bad)?.0 == key {
            i += 1;
        }
        if i > 0 {
            let (ek, ev) = p.entry(i - 1).map_err(bad)?;
            return Ok(Some((ek.to_vec(), ev.to_vec())));
        }
    }
    let before = t.range(..key).map_err(storage)?.next_back();
    match before {
        Some(row) => {
            let (k, v) = row.map_err(storage)?;
            let payload = open(kind, k.value(), v.value())?;
            let p = Parsed::new(payload).map_err(|e| corrupt(kind, k.value(), e))?;
            let (ek, ev) = p.entry(p.n - 1).map_err(|e| corrupt(kind, k.value(), e))?;
            Ok(Some((ek.to_vec(), ev.to_vec())))
        }
        None => Ok(None),
    }
}

/// The value stored under exactly `key`, if any.
pub(crate) fn get(t: &impl Readable, kind: Kind, key: &[u8]) -> Result<Option<Vec<u8>>, Fault> {
    let Some(row) = t.range(key..).map_err(storage)?.next() else { return Ok(None) };
    let (k, v) = row.map_err(storage)?;
    let payload = open(kind, k.value(), v.value())?;
    let p = Parsed::new(payload).map_err(|e| corrupt(kind, k.value(), e))?;
    let bad = |e: String| corrupt(kind, k.value(), e);
    let i = p.lower_bound(key).map_err(bad)?;
    if i < p.n {
        let (ek, ev) = p.entry(i).map_err(bad)?;
        if ek == key {
            return Ok(Some(ev.to_vec()));
        }
    }
    Ok(None)
}

/// Replaces the entries with keys in `lo..=hi` by `new` (sorted, keys in
/// `lo..=hi`), rewriting only the chunks that hold or border them.
pub(crate) fn splice(
    t: &mut Chunks<'_>,
    kind: Kind,
    lo: &[u8],
    hi: &[u8],
    new: Vec<OwnedEntry>,
) -> Result<(), Fault> {
    // The chunks that overlap lo..=hi: from the first whose key is at least
    // `lo` through the first whose key is at least `hi`; or, when every key
    // is below `lo`, the last chunk (the new entries go at its end).
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for row in t.range(lo..).map_err(storage)? {
        let (k, _) = row.map_err(storage)?;
        keys.push(k.value().to_vec());
        if k.value() >= hi {
            break;
        }
    }
    if keys.is_empty()
        && let Some(row) = t.last().map_err(storage)?
    {
        keys.push(row.0.value().to_vec());
    }
    let mut entries: Vec<OwnedEntry> = Vec::new();
    for k in &keys {
        let guard = t.get(k.as_slice()).map_err(storage)?.ok_or_else(|| storage("a chunk vanished"))?;
        let payload = open(kind, k, guard.value())?;
        let p = Parsed::new(payload).map_err(|e| corrupt(kind, k, e))?;
        for i in 0..p.n {
            let (ek, ev) = p.entry(i).map_err(|e| corrupt(kind, k, e))?;
            if ek < lo || ek > hi {
                entries.push((ek.to_vec(), ev.to_vec()));
            }
        }
    }
    for k in &keys {
        t.remove(k.as_slice()).map_err(storage)?;
    }
    let at = entries.partition_point(|e| e.0.as_slice() < lo);
    entries.splice(at..at, new);
    let mut b = Builder::new(kind);
    for (k, v) in &entries {
        b.push(t, k, v)?;
    }
    b.finish(t)?;
    Ok(())
}

/// Every entry of the table, in order, each chunk checked: for the
/// integrity check. Calls `f(key, value)`; returns the corrupt chunks
/// (skipped) and any entries out of order.
pub(crate) fn scan(
    t: &impl Readable,
    kind: Kind,
    mut f: impl FnMut(&[u8], &[u8]),
) -> Result<Vec<Fault>, Fault> {
    let mut faults = Vec::new();
    let mut prev: Option<Vec<u8>> = None;
    for row in t.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        let parsed = open(kind, k.value(), v.value())
            .and_then(|payload| Parsed::new(payload).map_err(|e| corrupt(kind, k.value(), e)));
        let p = match parsed {
            Ok(p) => p,
            Err(fault) => {
                faults.push(fault);
                continue;
            }
        };
        for i in 0..p.n {
            let Ok((ek, ev)) = p.entry(i) else {
                faults.push(corrupt(kind, k.value(), format!("entry {i} does not parse")));
                break;
            };
            if prev.as_deref().is_some_and(|p| p >= ek) {
                faults.push(corrupt(kind, k.value(), "entries out of order"));
            }
            prev = Some(ek.to_vec());
            f(ek, ev);
        }
    }
    Ok(faults)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, TableDefinition};
    use std::collections::BTreeMap;

    /// A database in memory, for tests of the packed tables.
    pub(crate) fn memory_db() -> Database {
        Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap()
    }

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("packed");
    const KIND: Kind = Kind { table: record::Table::Postings, show: |k| format!("{k:?}") };

    fn all(t: &impl Readable) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let faults = scan(t, KIND, |k, v| out.push((k.to_vec(), v.to_vec()))).unwrap();
        assert!(faults.is_empty());
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Built, then spliced any number of times, the table reads back as
        /// a plain sorted map: by a full scan, by a cursor from any key, and
        /// by `last_at_most`.
        #[test]
        fn a_packed_table_is_a_sorted_map(
            initial in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..300), 0..200),
            splices in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..20)), 0..12),
            probes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..20),
        ) {
            let db = memory_db();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = initial.clone();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                let mut b = Builder::new(KIND);
                for (k, v) in &initial {
                    b.push(&mut t, k, v).unwrap();
                }
                b.finish(&mut t).unwrap();
                for (a, z, keys) in splices {
                    let (lo, hi) = if a <= z { (a, z) } else { (z, a) };
                    let new: BTreeMap<Vec<u8>, Vec<u8>> = keys
                        .into_iter()
                        .filter(|k| *k >= lo && *k <= hi)
                        .map(|k| { let v = k.repeat(3); (k, v) })
                        .collect();
                    model.retain(|k, _| *k < lo || *k > hi);
                    model.extend(new.clone());
                    splice(&mut t, KIND, &lo, &hi, new.into_iter().collect()).unwrap();
                }
            }
            tx.commit().unwrap();
            let rx = db.begin_read().unwrap();
            let t = rx.open_table(T).unwrap();
            let want: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
            prop_assert_eq!(all(&t), want);
            for p in probes {
                let mut c = Cursor::seek(&t, KIND, &p).unwrap();
                let mut got = Vec::new();
                while let Some(e) = c.next(|k, v| (k.to_vec(), v.to_vec())).unwrap() {
                    got.push(e);
                }
                let want: Vec<(Vec<u8>, Vec<u8>)> = model.range(p.clone()..).map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(got, want);
                let want = model.range(..=p.clone()).next_back().map(|(k, v)| (k.clone(), v.clone()));
                prop_assert_eq!(last_at_most(&t, KIND, &p).unwrap(), want);
            }
        }
    }

    #[test]
    fn keys_out_of_order_are_refused_not_written() {
        let db = memory_db();
        let tx = db.begin_write().unwrap();
        let mut t = tx.open_table(T).unwrap();
        let mut b = Builder::new(KIND);
        b.push(&mut t, b"b", b"1").unwrap();
        assert!(matches!(b.push(&mut t, b"a", b"2"), Err(Fault::Corrupt(_))));
        assert!(matches!(b.push(&mut t, b"b", b"2"), Err(Fault::Corrupt(_))), "a key twice");
        // Across a chunk boundary too.
        for i in 0u32..2000 {
            b.push(&mut t, &[b"c".as_slice(), &i.to_be_bytes()].concat(), b"value").unwrap();
        }
        assert!(b.chunks > 0);
        assert!(matches!(b.push(&mut t, b"b", b"3"), Err(Fault::Corrupt(_))));
    }

    #[test]
    fn a_damaged_chunk_is_corrupt_never_data() {
        let db = memory_db();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            let mut b = Builder::new(KIND);
            for i in 0u32..2000 {
                b.push(&mut t, &i.to_be_bytes(), b"value").unwrap();
            }
            assert!(b.finish(&mut t).unwrap() > 2, "several chunks");
            let key = t.first().unwrap().unwrap().0.value().to_vec();
            let mut v = t.get(key.as_slice()).unwrap().unwrap().value().to_vec();
            v[7] ^= 1;
            t.insert(key.as_slice(), v.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let rx = db.begin_read().unwrap();
        let t = rx.open_table(T).unwrap();
        assert!(matches!(Cursor::seek(&t, KIND, &0u32.to_be_bytes()), Err(Fault::Corrupt(_))));
        assert!(matches!(last_at_most(&t, KIND, &1u32.to_be_bytes()), Err(Fault::Corrupt(_))));
        let mut seen = 0;
        let faults = scan(&t, KIND, |_, _| seen += 1).unwrap();
        assert_eq!(faults.len(), 1);
        assert!(seen > 0 && seen < 2000, "the rest reads on");
        for junk in
            [&b""[..], b"\x05\x00\x00\x00", b"\x01\x00\x00\x00\x09\x00\x00\x00ab", b"\x00\x00\x00\x00"]
        {
            assert!(Parsed::new(junk).is_err(), "{junk:?}");
        }
    }
}
