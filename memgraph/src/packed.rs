//! A sorted map of small entries (byte keys, byte values) packed into
//! chunks of about a page ([`chunk_bytes`]), each stored as one redb value under the
//! key of its last entry.
//!
//! Why: every redb insert is a B-tree descent and a leaf rewrite, about a
//! microsecond; a segment of the text index holds thousands of small
//! entries (most terms have one or two postings per segment). Written as
//! chunks, a fresh or merged segment costs one insert per few hundred
//! entries, and reading an entry is one seek plus a binary search in its
//! chunk. This is what SQLite's FTS5 does with its leaf pages.
//!
//! Layout of a chunk: the number of entries `n` (a varint), the offsets
//! of its restart points (u32 little-endian, relative to the entries: one
//! per [`RESTART`] entries, the first at 0), then the entries. Each entry
//! is front-coded against the one before it: the length of the prefix it
//! shares with the previous key, the length of the rest of its key and the
//! length of its value (three varints), then the rest of the key and the
//! value. An entry at a restart point shares nothing, so its key is whole
//! and a lookup binary-searches the restart points, then reads at most
//! [`RESTART`] entries. (This is LevelDB's block layout; the keys of a
//! segment — ids in order, a term's blocks, the edges of one engram — share
//! most of their bytes.) The stored value is that followed by a checksum
//! seeded by the table and the chunk's key (see `record`), checked on every
//! read before anything is parsed; every length is checked as it is read,
//! so a damaged chunk is a `Corruption`, never a wrong answer or a panic.
//!
//! Entries are written in key order by a [`Builder`] (fresh and merged
//! segments), read by a [`Cursor`] from a key on, and changed in place by
//! [`splice`] (changes to engrams of older segments, and each transaction's
//! changes to the metadata index, through [`update`]).

use redb::{ReadableTable, Table};

use crate::record::{self, Corruption, Fault, RecordKey, Seed, storage};

/// A redb page, and what a leaf page that holds one entry spends besides
/// the entry's key and value (a 4-byte header and the key's and value's end
/// offsets, 4 bytes each).
const PAGE_BYTES: usize = 4096;
const LEAF_OVERHEAD: usize = 12;

/// Most bytes of a chunk (its layout, entries and checksum) stored under a
/// key of `key_len` bytes: chunk and key fill one leaf page. (A value that
/// does not fit takes two pages, half empty.)
pub(crate) fn chunk_bytes(key_len: usize) -> usize {
    PAGE_BYTES - LEAF_OVERHEAD - key_len
}

/// Longest key an entry may have.
pub(crate) const MAX_KEY_BYTES: usize = 128;

/// An entry read in place: (key, value).
pub(crate) type Entry<'a> = (&'a [u8], &'a [u8]);
/// An entry and, when it is in the same chunk, the key of the entry after it.
pub(crate) type EntryAndNextKey<'a> = (Entry<'a>, Option<&'a [u8]>);

/// An entry copied out: (key, value).
pub(crate) type OwnedEntry = (Vec<u8>, Vec<u8>);

/// A change to an entry: its key, and its new value or `None` to remove it.
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>);

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

/// Entries from one restart point to the next (see the module docs).
pub(crate) const RESTART: usize = 16;

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`put_varint`] writes for `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The varint at `*at`, moving `*at` past it; `None` if it is cut short or
/// does not fit a `usize`.
pub(crate) fn read_varint(b: &[u8], at: &mut usize) -> Option<usize> {
    // Most lengths are below 128: one byte.
    let first = *b.get(*at)?;
    *at += 1;
    if first < 0x80 {
        return Some(usize::from(first));
    }
    let mut v = u64::from(first & 0x7f);
    for shift in (7..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return usize::try_from(v).ok();
        }
    }
    None
}

/// Appends `id` to a key so that keys sort as the ids do: its length in
/// bytes (0 to 8), then its big-endian bytes without leading zeros. (An id
/// below 2^24 takes 4 bytes, not 8; the length makes it self-delimiting.)
pub(crate) fn push_id(key: &mut Vec<u8>, id: u64) {
    let n = 8 - id.leading_zeros() as usize / 8;
    key.push(n as u8);
    key.extend_from_slice(&id.to_be_bytes()[8 - n..]);
}

/// The id [`push_id`] wrote at the start of `b`, and the bytes after it;
/// `None` unless it is one (a leading zero byte is not: each id has one
/// spelling, so equal keys are equal ids).
pub(crate) fn read_id(b: &[u8]) -> Option<(u64, &[u8])> {
    let (&n, rest) = b.split_first()?;
    let n = usize::from(n);
    if n > 8 || rest.len() < n || (n > 0 && rest[0] == 0) {
        return None;
    }
    let (digits, rest) = rest.split_at(n);
    Some((digits.iter().fold(0u64, |v, &d| v << 8 | u64::from(d)), rest))
}

/// One entry decoded: its value's place in the entries, and where the next
/// entry starts. (The key is in the buffer `step` was given.)
#[derive(Clone, Copy, Default)]
struct Step {
    value: (usize, usize),
    next: usize,
}

/// Decodes the entry at `at` of `entries` over `key` (which holds the key
/// before it: the entry keeps a prefix of it and appends the rest).
fn step(entries: &[u8], at: usize, key: &mut Vec<u8>) -> Result<Step, String> {
    let mut p = at;
    let bad = || format!("the entry at {at} is cut short");
    let shared = read_varint(entries, &mut p).ok_or_else(bad)?;
    let rest = read_varint(entries, &mut p).ok_or_else(bad)?;
    let value = read_varint(entries, &mut p).ok_or_else(bad)?;
    if shared > key.len() {
        return Err(format!("the entry at {at} shares {shared} bytes of a {}-byte key", key.len()));
    }
    let key_end = p.checked_add(rest).filter(|&e| e <= entries.len()).ok_or_else(bad)?;
    let end = key_end.checked_add(value).filter(|&e| e <= entries.len()).ok_or_else(bad)?;
    key.truncate(shared);
    key.extend_from_slice(&entries[p..key_end]);
    Ok(Step { value: (key_end, end), next: end })
}

/// A chunk's payload, parsed just enough to reach any entry.
#[derive(Clone, Copy)]
struct Parsed<'v> {
    /// The restart offsets, 4 bytes each.
    restarts: &'v [u8],
    entries: &'v [u8],
    n: usize,
}

impl<'v> Parsed<'v> {
    fn new(bytes: &'v [u8]) -> Result<Parsed<'v>, String> {
        let mut at = 0;
        let n = read_varint(bytes, &mut at).ok_or("truncated chunk")?;
        if n == 0 {
            return Err(String::from("empty chunk"));
        }
        // Every entry takes at least 3 bytes: a forged count cannot make
        // the restart table larger than the chunk.
        if n > bytes.len() {
            return Err(format!("chunk of {n} entries in {} bytes", bytes.len()));
        }
        let r = n.div_ceil(RESTART);
        let base = at + 4 * r;
        if base > bytes.len() {
            return Err(format!("chunk of {n} entries in {} bytes", bytes.len()));
        }
        let p = Parsed { restarts: &bytes[at..base], entries: &bytes[base..], n };
        let mut prev = None;
        for j in 0..r {
            let o = p.restart(j);
            if prev.is_some_and(|prev| o <= prev) || o >= p.entries.len() || (j == 0 && o != 0) {
                return Err(format!("restart point {j} at {o} is out of order or out of the chunk"));
            }
            prev = Some(o);
        }
        Ok(p)
    }

    /// Where restart point `j` (entry `j * RESTART`) starts.
    fn restart(&self, j: usize) -> usize {
        u32::from_le_bytes(self.restarts[4 * j..4 * j + 4].try_into().expect("4 bytes")) as usize
    }

    /// The position of restart point `j`.
    fn at_restart(&self, j: usize) -> Pos {
        Pos { i: j * RESTART, at: self.restart(j), key: Vec::new() }
    }

    /// The entries in order.
    fn entries(&self) -> Entries<'v> {
        Entries { p: *self, pos: self.at_restart(0) }
    }

    /// The key of restart point `j` (whole: it shares nothing).
    fn restart_key(&self, j: usize) -> Result<&'v [u8], String> {
        let at = self.restart(j);
        let mut p = at;
        let bad = || format!("restart point {j} is cut short");
        let shared = read_varint(self.entries, &mut p).ok_or_else(bad)?;
        let rest = read_varint(self.entries, &mut p).ok_or_else(bad)?;
        read_varint(self.entries, &mut p).ok_or_else(bad)?;
        if shared != 0 {
            return Err(format!("restart point {j} shares {shared} bytes"));
        }
        self.entries.get(p..p.checked_add(rest).ok_or_else(bad)?).ok_or_else(bad)
    }

    /// The position of the first entry whose key is at least `key`, and
    /// that entry decoded (`None`: every key is below `key`).
    fn lower_bound(&self, key: &[u8]) -> Result<(Pos, Option<Step>), String> {
        // The last restart point whose key is below `key`, if any.
        let (mut lo, mut hi) = (0, self.n.div_ceil(RESTART));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.restart_key(mid)? < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut pos = self.at_restart(lo.saturating_sub(1));
        while pos.i < self.n {
            let s = pos.decode(self)?;
            if pos.key.as_slice() >= key {
                return Ok((pos, Some(s)));
            }
            pos.pass(self, s)?;
        }
        Ok((pos, None))
    }

    /// The last entry whose key is at most `key`, if any: (key, value).
    fn last_at_most(&self, key: &[u8]) -> Result<Option<KeyCopyAndValue<'v>>, String> {
        // The restart points whose keys are at most `key`: the answer is
        // from the last of them on.
        let (mut lo, mut hi) = (0, self.n.div_ceil(RESTART));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.restart_key(mid)? <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let mut pos = self.at_restart(lo - 1);
        let (mut best_key, mut best) = (Vec::new(), None);
        while pos.i < self.n {
            let s = pos.decode(self)?;
            if pos.key.as_slice() > key {
                break;
            }
            best_key.clear();
            best_key.extend_from_slice(&pos.key);
            best = Some(s);
            pos.pass(self, s)?;
        }
        Ok(best.map(|s| (best_key, self.value(s))))
    }

    /// The last entry: (key, value).
    fn last(&self) -> Result<KeyCopyAndValue<'v>, String> {
        let mut pos = self.at_restart((self.n - 1) / RESTART);
        let mut last = Step::default();
        while pos.i < self.n {
            last = pos.decode(self)?;
            pos.pass(self, last)?;
        }
        Ok((pos.key, self.value(last)))
    }

    fn value(&self, s: Step) -> &'v [u8] {
        &self.entries[s.value.0..s.value.1]
    }
}

/// A place in a chunk's entries: the index of an entry, where it starts,
/// and the key before it (or, once decoded, its own).
#[derive(Clone, Default)]
struct Pos {
    i: usize,
    at: usize,
    key: Vec<u8>,
}

impl Pos {
    /// Decodes the entry here into `key`.
    fn decode(&mut self, p: &Parsed<'_>) -> Result<Step, String> {
        if self.i.is_multiple_of(RESTART) {
            if self.at != p.restart(self.i / RESTART) {
                return Err(format!("entry {} is not at its restart point", self.i));
            }
            self.key.clear();
        }
        step(p.entries, self.at, &mut self.key)
    }

    /// Moves past the entry here, decoded as `s`.
    fn pass(&mut self, p: &Parsed<'_>, s: Step) -> Result<(), String> {
        self.i += 1;
        self.at = s.next;
        if self.i == p.n && self.at != p.entries.len() {
            return Err(format!("{} bytes after the last entry", p.entries.len() - self.at));
        }
        Ok(())
    }
}

/// An entry of a chunk as [`Entries`] decodes it: its key (in the
/// decoder's buffer) and its value (in the chunk).
type KeyAndValue<'k, 'v> = (&'k [u8], &'v [u8]);

/// An entry of a chunk with its key copied out: (key, value in the chunk).
type KeyCopyAndValue<'v> = (Vec<u8>, &'v [u8]);

/// The entries of a chunk in order from a point on.
struct Entries<'v> {
    p: Parsed<'v>,
    pos: Pos,
}

impl<'v> Entries<'v> {
    /// The next entry, moving past it.
    fn next(&mut self) -> Result<Option<KeyAndValue<'_, 'v>>, String> {
        if self.pos.i >= self.p.n {
            return Ok(None);
        }
        let s = self.pos.decode(&self.p)?;
        self.pos.pass(&self.p, s)?;
        Ok(Some((&self.pos.key, self.p.value(s))))
    }
}

/// Checks a stored chunk (checksum and header) and returns its payload
/// parsed. Its entries are checked as they are read. (A chunk whose entries
/// are out of order or whose key is not its last entry's passes its
/// checksum only if forged; it gives wrong lookups, not a panic, and
/// [`scan`] reports it. Writing such entries is refused by
/// `Builder::push`.)
fn open<'v>(kind: Kind, key: &[u8], value: &'v [u8]) -> Result<Parsed<'v>, Fault> {
    let payload = record::open(kind.table, &ChunkKey { key, show: kind.show }, value)?;
    Parsed::new(payload).map_err(|e| corrupt(kind, key, e))
}

/// One chunk read and checked once, kept for lookups of the keys in its
/// range: for a reader that looks up several keys of a small map (the
/// owner map), where most fall in the same chunk.
pub(crate) struct Held {
    kind: Kind,
    /// The chunk's first key and its last (the chunk's key): every key of
    /// the table from `first` to `last` is in this chunk, if anywhere.
    first: Vec<u8>,
    last: Vec<u8>,
    payload: Vec<u8>,
    restarts: std::ops::Range<usize>,
    n: usize,
}

impl Held {
    /// The chunk of `t` that would hold `key`, read and checked; `None` if
    /// every key of the table is below `key`.
    pub(crate) fn load(t: &impl Readable, kind: Kind, key: &[u8]) -> Result<Option<Held>, Fault> {
        let Some(row) = t.range(key..).map_err(storage)?.next() else { return Ok(None) };
        let (k, v) = row.map_err(storage)?;
        let payload = record::open(kind.table, &ChunkKey { key: k.value(), show: kind.show }, v.value())?;
        let p = Parsed::new(payload).map_err(|e| corrupt(kind, k.value(), e))?;
        let first = match p.entries().next() {
            Ok(Some((first, _))) => first.to_vec(),
            Ok(None) => return Err(corrupt(kind, k.value(), "empty chunk")),
            Err(e) => return Err(corrupt(kind, k.value(), e)),
        };
        // (The entries follow the restart offsets.)
        let restarts_at = p.restarts.as_ptr() as usize - payload.as_ptr() as usize;
        Ok(Some(Held {
            kind,
            first,
            last: k.value().to_vec(),
            restarts: restarts_at..restarts_at + p.restarts.len(),
            n: p.n,
            payload: payload.to_vec(),
        }))
    }

    /// Whether `key` is in this chunk's range: [`Held::get`] answers for the
    /// whole table then.
    pub(crate) fn covers(&self, key: &[u8]) -> bool {
        self.first.as_slice() <= key && key <= self.last.as_slice()
    }

    /// The value of `key` in this chunk.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, Fault> {
        let p = Parsed {
            restarts: &self.payload[self.restarts.clone()],
            entries: &self.payload[self.restarts.end..],
            n: self.n,
        };
        let (pos, here) = p.lower_bound(key).map_err(|e| corrupt(self.kind, &self.last, e))?;
        Ok(here.filter(|_| pos.key == key).map(|s| p.value(s)))
    }
}

/// Builds chunks from entries given in ascending key order and inserts
/// them.
pub(crate) struct Builder {
    kind: Kind,
    n: usize,
    restarts: Vec<u32>,
    entries: Vec<u8>,
    last: Vec<u8>,
    /// Chunks written.
    pub chunks: u64,
}

impl Builder {
    pub(crate) fn new(kind: Kind) -> Builder {
        Builder {
            kind,
            n: 0,
            restarts: Vec::new(),
            entries: Vec::with_capacity(PAGE_BYTES),
            last: Vec::new(),
            chunks: 0,
        }
    }

    /// Adds an entry; its key must be above every key added before (a key
    /// out of order, which only damaged input can give, is `Corrupt`).
    pub(crate) fn push(&mut self, t: &mut Chunks<'_>, key: &[u8], value: &[u8]) -> Result<(), Fault> {
        if (self.chunks > 0 || self.n > 0) && key <= self.last.as_slice() {
            return Err(corrupt(self.kind, key, "entries out of order"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(storage(format!("a key of {} bytes is over {MAX_KEY_BYTES}", key.len())));
        }
        let entry = |shared: usize| {
            let rest = key.len() - shared;
            varint_len(shared as u64)
                + varint_len(rest as u64)
                + varint_len(value.len() as u64)
                + rest
                + value.len()
        };
        let shared = |n: usize, last: &[u8]| {
            if n.is_multiple_of(RESTART) {
                0
            } else {
                last.iter().zip(key).take_while(|(a, b)| a == b).count()
            }
        };
        let size = |n: usize, entries: usize| {
            varint_len(n as u64) + 4 * n.div_ceil(RESTART) + entries + record::CHECKSUM_BYTES
        };
        if self.n > 0
            && size(self.n + 1, self.entries.len() + entry(shared(self.n, &self.last)))
                > chunk_bytes(key.len())
        {
            self.emit(t)?;
        }
        let shared = shared(self.n, &self.last);
        if self.n.is_multiple_of(RESTART) {
            self.restarts.push(self.entries.len() as u32);
        }
        put_varint(&mut self.entries, shared as u64);
        put_varint(&mut self.entries, (key.len() - shared) as u64);
        put_varint(&mut self.entries, value.len() as u64);
        self.entries.extend_from_slice(&key[shared..]);
        self.entries.extend_from_slice(value);
        self.n += 1;
        self.last.clear();
        self.last.extend_from_slice(key);
        Ok(())
    }

    fn emit(&mut self, t: &mut Chunks<'_>) -> Result<(), Fault> {
        let mut payload = Vec::with_capacity(10 + 4 * self.restarts.len() + self.entries.len() + 4);
        put_varint(&mut payload, self.n as u64);
        for o in &self.restarts {
            payload.extend_from_slice(&o.to_le_bytes());
        }
        payload.extend_from_slice(&self.entries);
        let value =
            record::seal(self.kind.table, &ChunkKey { key: &self.last, show: self.kind.show }, payload);
        t.insert(self.last.as_slice(), value.as_slice()).map_err(storage)?;
        self.n = 0;
        self.restarts.clear();
        self.entries.clear();
        self.chunks += 1;
        Ok(())
    }

    /// Writes the last, partly filled chunk.
    pub(crate) fn finish(mut self, t: &mut Chunks<'_>) -> Result<u64, Fault> {
        if self.n > 0 {
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
    /// The current chunk (checked) and its key.
    chunk: Option<redb::AccessGuard<'t, &'static [u8]>>,
    chunk_key: Vec<u8>,
    /// Where the chunk's restart table and its entries start in its value,
    /// and its number of entries.
    restarts_at: usize,
    entries_at: usize,
    n: usize,
    /// The entry at the cursor (`pos.key` its key) and where its value is,
    /// once decoded; `pos.i == n` at the end of the chunk.
    pos: Pos,
    here: Step,
    /// The key of the entry after it, for `peek_with_next_key`.
    next_key: Vec<u8>,
    /// A damaged entry met while moving on: reported by the next read.
    fault: Option<String>,
}

impl<'t> Cursor<'t> {
    /// A cursor at the first entry whose key is at least `from`.
    pub(crate) fn seek(t: &'t impl Readable, kind: Kind, from: &[u8]) -> Result<Cursor<'t>, Fault> {
        let rows = t.range(from..).map_err(storage)?;
        let mut c = Cursor {
            kind,
            rows,
            chunk: None,
            chunk_key: Vec::new(),
            restarts_at: 0,
            entries_at: 0,
            n: 0,
            pos: Pos::default(),
            here: Step::default(),
            next_key: Vec::new(),
            fault: None,
        };
        if c.load()? {
            let (pos, here) = c.parsed().lower_bound(from).map_err(|e| corrupt(kind, &c.chunk_key, e))?;
            c.pos = pos;
            c.here = here.unwrap_or_default();
        }
        Ok(c)
    }

    /// Loads the next chunk, at its first entry; false at the end.
    fn load(&mut self) -> Result<bool, Fault> {
        let Some(row) = self.rows.next() else {
            self.n = 0;
            self.pos = Pos::default();
            return Ok(false);
        };
        let (k, v) = row.map_err(storage)?;
        let p = open(self.kind, k.value(), v.value())?;
        let (restarts_at, entries_at, n) = (
            p.restarts.as_ptr() as usize - v.value().as_ptr() as usize,
            p.entries.as_ptr() as usize - v.value().as_ptr() as usize,
            p.n,
        );
        let mut pos = Pos { i: 0, at: 0, key: std::mem::take(&mut self.pos.key) };
        let here = match pos.decode(&p) {
            Ok(here) => here,
            Err(e) => {
                // The cursor stays broken: every later read reports it.
                self.fault = Some(e.clone());
                return Err(corrupt(self.kind, k.value(), e));
            }
        };
        self.chunk_key.clear();
        self.chunk_key.extend_from_slice(k.value());
        self.chunk = Some(v);
        (self.restarts_at, self.entries_at, self.n) = (restarts_at, entries_at, n);
        self.pos = pos;
        self.here = here;
        Ok(true)
    }

    /// The current chunk, parsed (it was checked when loaded).
    fn parsed(&self) -> Parsed<'_> {
        let value = self.chunk.as_ref().map_or(&[][..], |c| c.value());
        let end = value.len().saturating_sub(record::CHECKSUM_BYTES);
        Parsed {
            restarts: &value[self.restarts_at..self.entries_at],
            entries: &value[self.entries_at..end],
            n: self.n,
        }
    }

    /// Loads the next chunk if the current one is done; false at the end.
    fn fill(&mut self) -> Result<bool, Fault> {
        if let Some(e) = &self.fault {
            return Err(corrupt(self.kind, &self.chunk_key, e.clone()));
        }
        while self.pos.i >= self.n {
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
        if let Some(e) = &self.fault {
            return Err(corrupt(self.kind, &self.chunk_key, e.clone()));
        }
        if self.pos.i >= self.n {
            return Ok(None);
        }
        Ok(Some((&self.pos.key, self.parsed().value(self.here))))
    }

    /// [`Cursor::peek`], with the key of the entry after it when that is in
    /// the same chunk (`None` if it is in a later chunk or there is none).
    pub(crate) fn peek_with_next_key(&mut self) -> Result<Option<EntryAndNextKey<'_>>, Fault> {
        if !self.fill()? {
            return Ok(None);
        }
        let has_next = self.pos.i + 1 < self.n;
        if has_next {
            let key = std::mem::take(&mut self.next_key);
            let mut next = Pos { i: self.pos.i + 1, at: self.here.next, key };
            let p = self.parsed();
            next.key.clear();
            next.key.extend_from_slice(&self.pos.key);
            let decoded = next.decode(&p).map_err(|e| corrupt(self.kind, &self.chunk_key, e));
            self.next_key = next.key;
            decoded?;
        }
        let value = self.parsed().value(self.here);
        Ok(Some(((&self.pos.key, value), has_next.then_some(self.next_key.as_slice()))))
    }

    /// Moves past the entry at the cursor.
    pub(crate) fn advance(&mut self) {
        if self.fault.is_some() || self.pos.i >= self.n {
            return;
        }
        let mut pos = std::mem::take(&mut self.pos);
        let parsed = self.parsed();
        let moved = pos
            .pass(&parsed, self.here)
            .and_then(|()| if pos.i < parsed.n { pos.decode(&parsed).map(Some) } else { Ok(None) });
        match moved {
            Ok(here) => self.here = here.unwrap_or_default(),
            Err(e) => self.fault = Some(e),
        }
        self.pos = pos;
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
        let p = open(kind, k.value(), v.value())?;
        if let Some((ek, ev)) = p.last_at_most(key).map_err(|e| corrupt(kind, k.value(), e))? {
            return Ok(Some((ek, ev.to_vec())));
        }
    }
    let before = t.range(..key).map_err(storage)?.next_back();
    match before {
        Some(row) => {
            let (k, v) = row.map_err(storage)?;
            let p = open(kind, k.value(), v.value())?;
            let (ek, ev) = p.last().map_err(|e| corrupt(kind, k.value(), e))?;
            Ok(Some((ek, ev.to_vec())))
        }
        None => Ok(None),
    }
}

/// The value stored under exactly `key`, if any.
pub(crate) fn get(t: &impl Readable, kind: Kind, key: &[u8]) -> Result<Option<Vec<u8>>, Fault> {
    let Some(row) = t.range(key..).map_err(storage)?.next() else { return Ok(None) };
    let (k, v) = row.map_err(storage)?;
    let p = open(kind, k.value(), v.value())?;
    let (pos, here) = p.lower_bound(key).map_err(|e| corrupt(kind, k.value(), e))?;
    Ok(here.filter(|_| pos.key == key).map(|s| p.value(s).to_vec()))
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
        let p = open(kind, k, guard.value())?;
        let mut e = p.entries();
        while let Some((ek, ev)) = e.next().map_err(|e| corrupt(kind, k, e))? {
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

/// Puts (`Some` value) and removes (`None`) entries, given in ascending key
/// order: one [`splice`] for the changes that fall in the same chunk, so a
/// run of new keys at the end of a range (ids in order) rewrites one or two
/// chunks.
pub(crate) fn update(t: &mut Chunks<'_>, kind: Kind, changes: &[Change]) -> Result<(), Fault> {
    let mut i = 0;
    while i < changes.len() {
        // The chunk the first change falls in, and the changes that do too.
        let lo = changes[i].0.as_slice();
        let chunk = t.range(lo..).map_err(storage)?.next().map(|r| r.map(|(k, _)| k.value().to_vec()));
        let chunk = chunk.transpose().map_err(storage)?;
        let end = match &chunk {
            Some(k) => i + changes[i..].partition_point(|c| c.0.as_slice() <= k.as_slice()),
            None => changes.len(),
        };
        let hi = changes[end - 1].0.as_slice();
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::collections::BTreeMap::new();
        {
            let mut c = Cursor::seek(&*t, kind, lo)?;
            while let Some((k, v)) = c.peek()? {
                if k > hi {
                    break;
                }
                merged.insert(k.to_vec(), v.to_vec());
                c.advance();
            }
        }
        for (k, v) in &changes[i..end] {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        splice(t, kind, lo, hi, merged.into_iter().collect())?;
        i = end;
    }
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
        let p = match open(kind, k.value(), v.value()) {
            Ok(p) => p,
            Err(fault) => {
                faults.push(fault);
                continue;
            }
        };
        let mut e = p.entries();
        let mut last_key = None;
        loop {
            match e.next() {
                Ok(Some((ek, ev))) => {
                    last_key = Some(ek.to_vec());
                    if prev.as_deref().is_some_and(|p| p >= ek) {
                        faults.push(corrupt(kind, k.value(), "entries out of order"));
                    }
                    prev = Some(ek.to_vec());
                    f(ek, ev);
                }
                Ok(None) => {
                    if last_key.as_deref() != Some(k.value()) {
                        faults.push(corrupt(kind, k.value(), "the chunk's last entry is not its key"));
                    }
                    break;
                }
                Err(err) => {
                    faults.push(corrupt(kind, k.value(), err));
                    break;
                }
            }
        }
    }
    Ok(faults)
}

/// The chunk layout before schema version 7 (the count, an end offset per
/// entry, then each entry as a key length, key and value; keys whole):
/// read once, when such a file is migrated.
pub(crate) mod v1 {
    use super::{Kind, OwnedEntry, Readable, corrupt, storage};
    use crate::record::{self, Fault};

    fn u32_at(b: &[u8], at: usize) -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    }

    /// The entries of a chunk's payload.
    fn entries(b: &[u8]) -> Result<Vec<OwnedEntry>, String> {
        let n = u32_at(b, 0).ok_or("truncated chunk")?;
        let base = n.checked_mul(4).and_then(|x| x.checked_add(4)).filter(|&x| x <= b.len());
        let base = base.ok_or_else(|| format!("chunk of {n} entries in {} bytes", b.len()))?;
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        for i in 0..n {
            let end = u32_at(b, 4 + 4 * i).ok_or("truncated chunk")?;
            let e = b.get(base + start..base + end).filter(|e| e.len() >= 2 && end >= start);
            let e = e.ok_or_else(|| format!("entry {i} is out of the chunk"))?;
            let klen = u16::from_le_bytes([e[0], e[1]]) as usize;
            if 2 + klen > e.len() {
                return Err(format!("entry {i}: key of {klen} bytes in {} bytes", e.len()));
            }
            out.push((e[2..2 + klen].to_vec(), e[2 + klen..].to_vec()));
            start = end;
        }
        Ok(out)
    }

    /// Every entry of a table of version-1 chunks, in order; a damaged
    /// chunk stops it with its error.
    pub(crate) fn read_all(t: &impl Readable, kind: Kind) -> Result<Vec<OwnedEntry>, Fault> {
        let mut out = Vec::new();
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let key = super::ChunkKey { key: k.value(), show: kind.show };
            let payload = record::open(kind.table, &key, v.value())?;
            out.extend(entries(payload).map_err(|e| corrupt(kind, k.value(), e))?);
        }
        Ok(out)
    }

    /// A version-1 chunk of `entries`, sealed under its last key: for the
    /// tests that make files of older versions.
    #[cfg(test)]
    pub(crate) fn chunk(kind: Kind, entries: &[OwnedEntry]) -> Vec<u8> {
        let mut offsets = Vec::new();
        let mut body = Vec::new();
        for (k, v) in entries {
            body.extend_from_slice(&(k.len() as u16).to_le_bytes());
            body.extend_from_slice(k);
            body.extend_from_slice(v);
            offsets.push(body.len() as u32);
        }
        let mut payload = (entries.len() as u32).to_le_bytes().to_vec();
        offsets.iter().for_each(|o| payload.extend_from_slice(&o.to_le_bytes()));
        payload.extend_from_slice(&body);
        let last = &entries.last().expect("entries").0;
        record::seal(kind.table, &super::ChunkKey { key: last, show: kind.show }, payload)
    }
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

    /// Writes `entries` (in order) to the empty table `t`.
    fn build(t: &mut Chunks<'_>, entries: &BTreeMap<Vec<u8>, Vec<u8>>) {
        let mut b = Builder::new(KIND);
        for (k, v) in entries {
            b.push(t, k, v).unwrap();
        }
        b.finish(t).unwrap();
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
                build(&mut t, &initial);
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Batches of puts and removes (`update`, as the metadata index is
        /// written) leave the table the sorted map a model says, whatever
        /// chunks the changes fall in.
        #[test]
        fn updates_leave_a_sorted_map(
            initial in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..10), proptest::collection::vec(any::<u8>(), 0..200), 0..300),
            batches in proptest::collection::vec(proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..10), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..60), 1..6),
        ) {
            let db = memory_db();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = initial.clone();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(T).unwrap();
                build(&mut t, &initial);
                for batch in batches {
                    for (k, v) in &batch {
                        match v {
                            Some(v) => model.insert(k.clone(), v.clone()),
                            None => model.remove(k),
                        };
                    }
                    let changes: Vec<Change> = batch.into_iter().collect();
                    update(&mut t, KIND, &changes).unwrap();
                    let want: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
                    prop_assert_eq!(all(&t), want);
                }
            }
        }
    }

    proptest! {
        /// Ids in keys sort as numbers, read back, and have one spelling.
        #[test]
        fn ids_in_keys_sort_as_numbers(a in any::<u64>(), b in any::<u64>(), shift in 0u32..64) {
            let (a, b) = (a >> shift, b >> (63 - shift));
            let (mut ka, mut kb) = (Vec::new(), Vec::new());
            push_id(&mut ka, a);
            push_id(&mut kb, b);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            ka.push(7);
            prop_assert_eq!(read_id(&ka), Some((a, &[7u8][..])));
            // A leading zero byte is not an id.
            let mut padded = vec![kb[0] + 1, 0];
            padded.extend_from_slice(&kb[1..]);
            prop_assert_eq!(read_id(&padded), None);
        }

        /// Any bytes as a chunk's payload: an error or entries, never a
        /// panic, from every reader.
        #[test]
        fn random_chunks_are_refused_or_read_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            probe in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            if let Ok(p) = Parsed::new(&bytes) {
                let mut e = p.entries();
                while let Ok(Some(_)) = e.next() {}
                let _ = p.lower_bound(&probe);
                let _ = p.last();
            }
        }
    }

    /// Keys that share prefixes (ids in order, a term's blocks) are stored
    /// front-coded: 10,000 entries of 20-byte keys take a fraction of the
    /// bytes the keys would whole.
    #[test]
    fn shared_prefixes_are_stored_once() {
        let db = memory_db();
        let tx = db.begin_write().unwrap();
        let mut t = tx.open_table(T).unwrap();
        let mut b = Builder::new(KIND);
        let mut key = Vec::new();
        for i in 0u64..10_000 {
            key.clear();
            key.extend_from_slice(b"a-common-prefix:");
            push_id(&mut key, 1_000_000 + i);
            b.push(&mut t, &key, b"").unwrap();
        }
        let chunks = b.finish(&mut t).unwrap();
        // Whole, the keys are 210 KB, 56 chunks; front-coded, an entry
        // takes 5 bytes (and a restart point 24 every 16).
        assert!(chunks <= 20, "{chunks} chunks");
        let mut c = Cursor::seek(&t, KIND, b"a-common-prefix:").unwrap();
        let mut n = 0;
        while c.next(|_, _| ()).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 10_000);
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
