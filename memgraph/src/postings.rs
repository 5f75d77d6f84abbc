//! The inverted index of one segment (see `segments`), stored as a packed
//! sorted map (see `packed`). For each term the segment holds, a header
//! entry with the term's document frequency in the segment, then the
//! postings (engram id, term frequency, document length) of the segment's
//! engrams that hold it, sorted by id, in blocks of at most [`BLOCK`],
//! each an entry keyed by (term, first id of the block). Segments cover
//! disjoint, ascending id ranges, so a term's blocks read segment after
//! segment are its postings in id order.
//!
//! A fresh segment is written in term order without reading anything
//! (`NewSegment`); segments merge into one in one sequential pass that
//! copies most blocks as they are (`merge`). A change to an engram of
//! an older segment is applied in place (`apply`): each block it touches is
//! read, merged and rewritten. A search reads a term's blocks segment by
//! segment, or for a few candidates looks each up with one seek in the
//! segment that covers it.
//!
//! Keys are bytes that sort like (term, first id): the term, a zero byte,
//! then the first id as keys spell ids (`packed::push_id`; the header: the
//! term and the zero byte alone, so it sorts first). Terms never hold a zero byte (see
//! `write::term_counts`).

use serde::{Deserialize, Serialize};

use crate::packed::{self, Builder, Chunks, Cursor, Kind, Readable};
use crate::record::{self, Fault};
use crate::segments::Segments;

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

/// The packed map of a segment's postings.
pub(crate) const KIND: Kind = Kind { table: record::Table::Postings, show: show_key };

/// The key of `term`'s header.
pub(crate) fn header_key(term: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(term.len() + 1);
    k.extend_from_slice(term.as_bytes());
    k.push(0);
    k
}

/// The key of `term`'s block starting at `first`.
pub(crate) fn block_key(term: &str, first: u64) -> Vec<u8> {
    let mut k = header_key(term);
    packed::push_id(&mut k, first);
    k
}

/// A key read back: the term and, for a block, its first id.
pub(crate) fn parse_key(key: &[u8]) -> Option<(&str, Option<u64>)> {
    let zero = key.iter().position(|&b| b == 0)?;
    let term = std::str::from_utf8(&key[..zero]).ok()?;
    match &key[zero + 1..] {
        [] => Some((term, None)),
        rest => match packed::read_id(rest)? {
            (first, []) => Some((term, Some(first))),
            _ => None,
        },
    }
}

fn show_key(key: &[u8]) -> String {
    match parse_key(key) {
        Some((term, Some(first))) => format!("({term:?}, {first})"),
        Some((term, None)) => format!("({term:?})"),
        None => format!("{:?}", String::from_utf8_lossy(key)),
    }
}

/// A bad entry of the postings map.
fn corrupt(key: &[u8], detail: impl Into<String>) -> Fault {
    Fault::Corrupt(record::Corruption::new(record::Table::Postings, &ShowKey(key), detail))
}

struct ShowKey<'a>(&'a [u8]);

impl record::RecordKey for ShowKey<'_> {
    fn feed(&self, s: &mut record::Seed) {
        self.0.feed(s);
    }
    fn show(&self) -> String {
        show_key(self.0)
    }
}

/// A block, in columns so that a search can read the ids alone and fetch
/// the rest only for the postings it keeps:
/// - LEB128 varints: the count, the largest term frequency and the shortest
///   document length in the block (so a ranked search can skip a block that
///   cannot beat its current top k);
/// - each id's delta from the previous id (LEB128);
/// - one byte: the width in bytes (1, 2 or 4) of each term frequency (low
///   four bits) and of each document length (high four bits);
/// - the term frequencies, then the document lengths, little-endian, at
///   that width.
pub(crate) fn encode(block: &[Posting]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + block.len() * 4);
    encode_into(block, &mut out);
    out
}

/// [`encode`] appended to `out`.
fn encode_into(block: &[Posting], out: &mut Vec<u8>) {
    let out = &mut *out;
    put(out, block.len() as u64);
    // The block's bound: no posting has a higher tf or a shorter document.
    let max_tf = block.iter().map(|p| p.tf).max().unwrap_or(0);
    put(out, max_tf as u64);
    put(out, block.iter().map(|p| p.len).min().unwrap_or(0) as u64);
    let mut prev = 0;
    for p in block {
        put(out, p.id - prev);
        prev = p.id;
    }
    let width = |v: u32| {
        if v < 1 << 8 {
            1
        } else if v < 1 << 16 {
            2
        } else {
            4
        }
    };
    let (tf_width, len_width) = (width(max_tf), width(block.iter().map(|p| p.len).max().unwrap_or(0)));
    out.push(tf_width as u8 | (len_width as u8) << 4);
    for p in block {
        out.extend_from_slice(&p.tf.to_le_bytes()[..tf_width]);
    }
    for p in block {
        out.extend_from_slice(&p.len.to_le_bytes()[..len_width]);
    }
}

/// A block's ids decoded, the rest read where it lies when asked for.
pub(crate) struct Block<'b> {
    ids: Vec<u64>,
    bytes: &'b [u8],
    /// Where the term frequencies and the lengths start, and their widths.
    tf_at: usize,
    len_at: usize,
    tf_width: usize,
    len_width: usize,
}

impl<'b> Block<'b> {
    /// Decodes the ids of `bytes` (into a buffer reused from `ids`) and
    /// checks the block's shape; the ids ascend from the first.
    pub(crate) fn open(bytes: &'b [u8], mut ids: Vec<u64>) -> Result<Block<'b>, String> {
        ids.clear();
        let mut at = 0;
        let n = varint(bytes, &mut at)? as usize;
        if n == 0 || n > BLOCK {
            return Err(format!("corrupt posting block: {n} entries"));
        }
        varint(bytes, &mut at)?;
        varint(bytes, &mut at)?;
        // Written over, not pushed: no capacity check per id. The checks
        // (ids ascend, no overflow) are gathered per id and tested once per
        // block.
        ids.resize(n, 0);
        let mut id = varint(bytes, &mut at)?;
        ids[0] = id;
        let mut bad = false;
        for slot in &mut ids[1..] {
            let delta = varint(bytes, &mut at)?;
            let next = id.wrapping_add(delta);
            bad |= next <= id;
            id = next;
            *slot = id;
        }
        if bad {
            return Err(String::from("corrupt posting block: ids out of order or overflowing"));
        }
        let widths = *bytes.get(at).ok_or("corrupt posting block: truncated")?;
        let (tf_width, len_width) = ((widths & 0x0f) as usize, (widths >> 4) as usize);
        if ![1, 2, 4].contains(&tf_width) || ![1, 2, 4].contains(&len_width) {
            return Err(format!("corrupt posting block: widths {widths:#04x}"));
        }
        let (tf_at, len_at) = (at + 1, at + 1 + n * tf_width);
        if len_at + n * len_width != bytes.len() {
            return Err(format!(
                "corrupt posting block: {} bytes for {n} postings of widths {tf_width} and {len_width}",
                bytes.len() - tf_at
            ));
        }
        Ok(Block { ids, bytes, tf_at, len_at, tf_width, len_width })
    }

    /// The ids, ascending.
    pub(crate) fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The `i`th posting.
    #[inline]
    pub(crate) fn posting(&self, i: usize) -> Posting {
        Posting {
            id: self.ids[i],
            tf: self.column(self.tf_at, self.tf_width, i),
            len: self.column(self.len_at, self.len_width, i),
        }
    }

    #[inline(always)]
    fn column(&self, at: usize, width: usize, i: usize) -> u32 {
        let b = self.bytes;
        match width {
            1 => b[at + i] as u32,
            2 => u16::from_le_bytes([b[at + 2 * i], b[at + 2 * i + 1]]) as u32,
            _ => u32::from_le_bytes([b[at + 4 * i], b[at + 4 * i + 1], b[at + 4 * i + 2], b[at + 4 * i + 3]]),
        }
    }

    /// Calls `f` with every posting, in id order.
    #[inline]
    pub(crate) fn for_each(&self, mut f: impl FnMut(Posting)) {
        if (self.tf_width, self.len_width) == (1, 1) {
            // The usual widths: the three columns side by side.
            let n = self.ids.len();
            let tfs = &self.bytes[self.tf_at..self.tf_at + n];
            let lens = &self.bytes[self.len_at..self.len_at + n];
            for ((&id, &tf), &len) in self.ids.iter().zip(tfs).zip(lens) {
                f(Posting { id, tf: tf as u32, len: len as u32 });
            }
        } else {
            (0..self.ids.len()).for_each(|i| f(self.posting(i)));
        }
    }

    /// The buffer of ids, for the next block.
    pub(crate) fn into_buffer(self) -> Vec<u64> {
        self.ids
    }
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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

/// The postings of an encoded block.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Posting>, String> {
    let block = Block::open(bytes, Vec::new())?;
    let mut out = Vec::with_capacity(block.ids().len());
    block.for_each(|p| out.push(p));
    Ok(out)
}

/// The block stored under `key`, whose first posting must be `first`.
fn read_block(key: &[u8], first: u64, value: &[u8]) -> Result<Vec<Posting>, Fault> {
    let block = decode(value).map_err(|e| corrupt(key, e))?;
    // (`Block::open` has checked that the ids ascend.)
    if block[0].id != first {
        return Err(corrupt(key, "the block's first id is not its key's"));
    }
    Ok(block)
}

/// A header's document frequency.
fn read_df(key: &[u8], value: &[u8]) -> Result<u64, Fault> {
    let mut at = 0;
    let df = varint(value, &mut at).map_err(|e| corrupt(key, e))?;
    if at != value.len() {
        return Err(corrupt(key, "bytes after the document frequency"));
    }
    Ok(df)
}

fn df_value(df: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(3);
    put(&mut v, df);
    v
}

/// A change to one term's postings: `Some` puts (adds or replaces) the
/// posting for the id, `None` removes it.
pub type Change = (u64, Option<Posting>);

/// A segment's postings being written in term order, with buffers reused
/// from entry to entry.
pub(crate) struct NewSegment {
    b: Builder,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl NewSegment {
    pub(crate) fn new() -> NewSegment {
        NewSegment { b: Builder::new(KIND), key: Vec::new(), value: Vec::new() }
    }

    /// Adds `term` with `postings` (sorted, not empty; terms in order).
    pub(crate) fn add(&mut self, t: &mut Chunks<'_>, term: &str, postings: &[Posting]) -> Result<(), Fault> {
        self.key.clear();
        self.key.extend_from_slice(term.as_bytes());
        self.key.push(0);
        self.value.clear();
        put(&mut self.value, postings.len() as u64);
        self.b.push(t, &self.key, &self.value)?;
        let prefix = self.key.len();
        for chunk in postings.chunks(BLOCK) {
            self.key.truncate(prefix);
            packed::push_id(&mut self.key, chunk[0].id);
            self.value.clear();
            encode_into(chunk, &mut self.value);
            self.b.push(t, &self.key, &self.value)?;
        }
        Ok(())
    }

    pub(crate) fn finish(self, t: &mut Chunks<'_>) -> Result<u64, Fault> {
        self.b.finish(t)
    }
}

/// The block of `term` that holds or would hold `id` (the last starting at
/// or before it, else the term's first): its first id and postings.
fn block_for(t: &Chunks<'_>, term: &str, id: u64) -> Result<Option<(u64, Vec<Posting>)>, Fault> {
    if let Some((k, v)) = packed::last_at_most(t, KIND, &block_key(term, id))?
        && let Some((kt, Some(first))) = parse_key(&k)
        && kt == term
    {
        return Ok(Some((first, read_block(&k, first, &v)?)));
    }
    next_block(t, term, 0)
}

/// The first block of `term` starting at or after `from`.
fn next_block(t: &Chunks<'_>, term: &str, from: u64) -> Result<Option<(u64, Vec<Posting>)>, Fault> {
    let mut c = Cursor::seek(t, KIND, &block_key(term, from))?;
    let found = c.next(|k, v| match parse_key(k) {
        Some((kt, Some(first))) if kt == term => Some((k.to_vec(), first, v.to_vec())),
        _ => None,
    })?;
    match found.flatten() {
        Some((k, first, v)) => Ok(Some((first, read_block(&k, first, &v)?))),
        None => Ok(None),
    }
}

/// Applies `changes` (in order; the last change of an id wins) to `term`'s
/// postings in a segment, rewriting each touched block, and keeps the
/// term's header. Returns the change in document frequency.
pub(crate) fn apply(t: &mut Chunks<'_>, term: &str, changes: &mut [Change]) -> Result<i64, Fault> {
    if changes.is_empty() {
        return Ok(0);
    }
    changes.sort_by_key(|c| c.0); // stable: order within an id is kept
    let mut delta = 0i64;
    let mut ci = 0;
    while ci < changes.len() {
        let found = block_for(t, term, changes[ci].0)?;
        let (old_first, block) = match found {
            Some((f, b)) => (Some(f), b),
            None => (None, Vec::new()),
        };
        // The changes that land in this block: those before the next one.
        let bound = match old_first {
            Some(f) if f < u64::MAX => next_block(t, term, f + 1)?.map(|(n, _)| n),
            _ => None,
        };
        let end = ci + changes[ci..].partition_point(|c| bound.is_none_or(|b| c.0 < b));
        if end == ci {
            // The next block starts at or below the change: blocks out of
            // order, which only forged chunks give (else this never ends).
            return Err(corrupt(&block_key(term, changes[ci].0), "posting blocks out of order"));
        }
        let lo = old_first.map_or(changes[ci].0, |f| f.min(changes[ci].0));
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
        // Every key from `lo` up to the next block is this block's.
        let hi = block_key(term, bound.map_or(u64::MAX, |b| b - 1));
        let new = out.chunks(BLOCK).map(|c| (block_key(term, c[0].id), encode(c))).collect();
        packed::splice(t, KIND, &block_key(term, lo), &hi, new)?;
        ci = end;
    }
    if delta != 0 {
        let key = header_key(term);
        let old = match packed::get(t, KIND, &key)? {
            Some(v) => read_df(&key, &v)?,
            None => 0,
        };
        let df = old.saturating_add_signed(delta);
        let new = if df == 0 { Vec::new() } else { vec![(key.clone(), df_value(df))] };
        packed::splice(t, KIND, &key, &key, new)?;
    }
    Ok(delta)
}

/// Writes into `out` (empty) the postings of `inputs`, adjacent segments
/// in id order, in one pass in key order. Blocks are copied as they are
/// stored, but a term's headers are summed into one, and two consecutive
/// blocks of a term that fit in one block are joined (so the last block of
/// a term in one segment takes in its first in the next). Returns the
/// chunks written.
pub(crate) fn merge(inputs: Vec<Cursor<'_>>, out: &mut Chunks<'_>) -> Result<u64, Fault> {
    struct Postings;
    impl packed::Merging for Postings {
        fn combine(&mut self, key: &[u8], values: &[Vec<u8>]) -> Result<Vec<u8>, Fault> {
            if !matches!(parse_key(key), Some((_, None))) {
                return Err(corrupt(key, "a posting block in two segments"));
            }
            let mut df = 0u64;
            for v in values {
                df = df
                    .checked_add(read_df(key, v)?)
                    .ok_or_else(|| corrupt(key, "document frequencies overflow"))?;
            }
            Ok(df_value(df))
        }

        fn join(
            &mut self,
            key: &[u8],
            value: &[u8],
            next_key: &[u8],
            next_value: &[u8],
        ) -> Result<Option<Vec<u8>>, Fault> {
            let (Some((term, Some(first))), Some((next_term, Some(next_first)))) =
                (parse_key(key), parse_key(next_key))
            else {
                return Ok(None);
            };
            let count = |v: &[u8], k: &[u8]| varint(v, &mut 0).map_err(|e| corrupt(k, e));
            if term != next_term || count(value, key)? + count(next_value, next_key)? > BLOCK as u64 {
                return Ok(None);
            }
            let mut block = read_block(key, first, value)?;
            let next = read_block(next_key, next_first, next_value)?;
            if block.last().is_some_and(|p| p.id >= next_first) {
                return Err(corrupt(next_key, "a block whose ids overlap the block before"));
            }
            block.extend(next);
            Ok(Some(encode(&block)))
        }
    }
    packed::merge(KIND, inputs, out, &mut Postings)
}

/// Reads the whole of each of `tables` from the start.
pub(crate) fn cursors<'t, T: Readable>(tables: &'t [T]) -> Result<Vec<Cursor<'t>>, Fault> {
    tables.iter().map(|t| Cursor::seek(t, KIND, &[])).collect()
}

/// The largest tf and shortest length in a block, from its header.
fn bound(bytes: &[u8]) -> Result<(u32, u32), String> {
    let mut at = 0;
    varint(bytes, &mut at)?;
    let max_tf = varint(bytes, &mut at)? as u32;
    let min_len = varint(bytes, &mut at)? as u32;
    Ok((max_tf, min_len))
}

/// A term's postings opened for a search: its document frequency (the sum
/// of its headers), and a cursor at its first block in each segment that
/// holds it — one seek per segment for both.
pub(crate) struct TermPostings<'t> {
    term: String,
    df: u64,
    cursors: Vec<Cursor<'t>>,
}

impl<'t> TermPostings<'t> {
    /// `term` in `tables` (in segment order).
    pub(crate) fn open<T: Readable>(tables: &'t [T], term: &str) -> Result<TermPostings<'t>, Fault> {
        let key = header_key(term);
        let mut out = TermPostings { term: term.to_string(), df: 0, cursors: Vec::new() };
        for t in tables {
            let mut c = Cursor::seek(t, KIND, &key)?;
            let df = match c.peek()? {
                Some((k, v)) if k == key.as_slice() => read_df(k, v)?,
                _ => continue,
            };
            c.advance();
            out.df = out.df.checked_add(df).ok_or_else(|| corrupt(&key, "document frequencies overflow"))?;
            out.cursors.push(c);
        }
        Ok(out)
    }

    /// The number of engrams holding the term.
    pub(crate) fn df(&self) -> u64 {
        self.df
    }

    /// Calls `f` with each of the term's blocks in id order (segment after
    /// segment) until it returns false, skipping (undecoded) those for
    /// which `visit(&header)` says so; one buffer is reused for all blocks.
    pub(crate) fn for_each_block(
        self,
        mut visit: impl FnMut(&BlockHeader) -> Visit,
        mut f: impl FnMut(&Block<'_>) -> bool,
    ) -> Result<(), Fault> {
        let mut buf = Vec::with_capacity(BLOCK);
        let term = self.term.as_bytes();
        // A block of the term: the term, a zero byte, an id.
        let first_of = |k: &[u8]| match k.strip_prefix(term)?.strip_prefix(&[0])? {
            [] => None,
            id => match packed::read_id(id)? {
                (first, []) => Some(first),
                _ => None,
            },
        };
        for mut c in self.cursors {
            while let Some(((k, v), next)) = c.peek_with_next_key()? {
                let end = next.map(|k| first_of(k).unwrap_or(u64::MAX));
                let Some(first) = first_of(k) else { break };
                let (max_tf, min_len) = bound(v).map_err(|e| corrupt(k, e))?;
                let visit = visit(&BlockHeader { first, end, max_tf, min_len });
                if visit == Visit::Stop {
                    return Ok(());
                }
                if visit == Visit::Decode {
                    let block = Block::open(v, std::mem::take(&mut buf)).map_err(|e| corrupt(k, e))?;
                    let ids = block.ids();
                    if ids[0] != first || end.is_some_and(|end| ids[ids.len() - 1] >= end) {
                        return Err(corrupt(k, "the block's ids are not within its key's range"));
                    }
                    let more = f(&block);
                    buf = block.into_buffer();
                    if !more {
                        return Ok(());
                    }
                }
                c.advance();
            }
        }
        Ok(())
    }
}

/// What to do with a block, from its header.
#[derive(PartialEq, Eq)]
pub(crate) enum Visit {
    Decode,
    Skip,
    /// Skip it and every block after it.
    Stop,
}

/// What a block's key and header tell about it before it is decoded.
pub(crate) struct BlockHeader {
    /// Its first id ...
    pub first: u64,
    /// ... and an id above its last, when the next entry is in the same
    /// chunk (the next block's first id, or `u64::MAX` after the term's
    /// last block in the segment).
    pub end: Option<u64>,
    /// Its largest term frequency and shortest document.
    pub max_tf: u32,
    pub min_len: u32,
}

/// Every posting of `term`, by id.
#[cfg(test)]
pub(crate) fn read_all(tables: &[impl Readable], term: &str) -> Result<Vec<Posting>, Fault> {
    let mut out = Vec::new();
    TermPostings::open(tables, term)?.for_each_block(
        |_| Visit::Decode,
        |b| {
            b.for_each(|p| out.push(p));
            true
        },
    )?;
    Ok(out)
}

/// `term`'s posting for `id`, if any: one seek in the table of the segment
/// that covers it (`tables` in the order of `segs`).
pub(crate) fn lookup(
    segs: &Segments,
    tables: &[impl Readable],
    term: &str,
    id: u64,
) -> Result<Option<Posting>, Fault> {
    let t = &tables[segs.index_covering(id)];
    let Some((k, v)) = packed::last_at_most(t, KIND, &block_key(term, id))? else { return Ok(None) };
    let Some((kt, Some(first))) = parse_key(&k) else { return Ok(None) };
    if kt != term {
        return Ok(None);
    }
    let block = read_block(&k, first, &v)?;
    Ok(block.binary_search_by_key(&id, |q| q.id).ok().map(|i| block[i]))
}

/// An entry of a segment's postings, as the integrity check reads it.
pub(crate) enum Entry {
    /// The term's document frequency in the segment.
    Header(u64),
    /// A block (not empty, ids ascending from its key's first id).
    Block(Vec<Posting>),
}

/// Every entry of a segment's postings, in order: `f(term, entry)`.
/// Returns the corrupt chunks and entries (skipped).
pub(crate) fn scan(t: &impl Readable, mut f: impl FnMut(&str, Entry)) -> Result<Vec<Fault>, Fault> {
    let mut faults = Vec::new();
    let mut chunk_faults = packed::scan(t, KIND, |k, v| match parse_key(k) {
        Some((term, None)) => match read_df(k, v) {
            Ok(df) => f(term, Entry::Header(df)),
            Err(e) => faults.push(e),
        },
        Some((term, Some(first))) => match read_block(k, first, v) {
            Ok(block) => f(term, Entry::Block(block)),
            Err(e) => faults.push(e),
        },
        None => faults.push(corrupt(k, "a key that is neither a header nor a block")),
    })?;
    chunk_faults.append(&mut faults);
    Ok(chunk_faults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{ReadableDatabase, TableDefinition};
    use std::collections::BTreeMap;

    fn table(n: u64) -> String {
        format!("p{n}")
    }

    /// The blocks of `term` in one table: each within size, sorted, keyed by
    /// its first id, no two neighbours left apart that fit in one; with the
    /// header's document frequency.
    fn check_blocks(t: &impl Readable, term: &str) -> (Vec<Posting>, u64) {
        let df = packed::get(t, KIND, &header_key(term)).unwrap().map_or(0, |v| read_df(b"", &v).unwrap());
        let mut all = Vec::new();
        let mut prev_len: Option<usize> = None;
        let mut c = Cursor::seek(t, KIND, &block_key(term, 0)).unwrap();
        while let Some((k, v)) = c.next(|k, v| (k.to_vec(), v.to_vec())).unwrap() {
            let Some((kt, Some(first))) = parse_key(&k) else { break };
            if kt != term {
                break;
            }
            let block = read_block(&k, first, &v).unwrap();
            assert!(!block.is_empty() && block.len() <= BLOCK);
            prev_len = Some(block.len());
            all.extend(block);
        }
        let _ = prev_len;
        (all, df)
    }

    /// Whether two neighbouring blocks of `term` would fit in one.
    fn joinable_neighbours(t: &impl Readable, term: &str) -> bool {
        let mut lens = Vec::new();
        let mut c = Cursor::seek(t, KIND, &block_key(term, 0)).unwrap();
        while let Some((k, v)) = c.next(|k, v| (k.to_vec(), v.to_vec())).unwrap() {
            match parse_key(&k) {
                Some((kt, Some(first))) if kt == term => lens.push(read_block(&k, first, &v).unwrap().len()),
                _ => break,
            }
        }
        lens.windows(2).any(|w| w[0] + w[1] <= BLOCK)
    }

    fn segs(starts: &[(u64, u64)]) -> Segments {
        let db = crate::packed::tests::memory_db();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(crate::schema::SEGMENTS).unwrap();
            for &(start, table) in starts {
                t.insert(start, (table, 1)).unwrap();
            }
        }
        tx.commit().unwrap();
        let rx = db.begin_read().unwrap();
        Segments::load(&rx.open_table(crate::schema::SEGMENTS).unwrap()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Any sequence of change batches applied in place leaves a term's
        /// blocks equal to a plain sorted map, in sorted blocks within size,
        /// its header's document frequency the map's size and the returned
        /// deltas summing to it; neighbouring terms untouched.
        #[test]
        fn changes_in_place_match_a_sorted_map(batches in proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), 0u64..3_000, 1u32..5), 0..400), 1..8)) {
            let db = crate::packed::tests::memory_db();
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new("p");
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let mut df = 0i64;
            for batch in batches {
                let tx = db.begin_write().unwrap();
                {
                    let mut t = tx.open_table(def).unwrap();
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
                    df += apply(&mut t, "w", &mut changes).unwrap();
                    for term in ["v", "x", "w2"] {
                        apply(&mut t, term, &mut [(5, Some(Posting { id: 5, tf: 1, len: 1 }))]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            prop_assert_eq!(df, model.len() as i64);
            let rx = db.begin_read().unwrap();
            let t = rx.open_table(def).unwrap();
            let (all, stored_df) = check_blocks(&t, "w");
            prop_assert_eq!(stored_df, model.len() as u64);
            let want: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(all.iter().map(|p| (p.id, p.tf)).collect::<Vec<_>>(), want);
            let tables = [t];
            let one = segs(&[(0, 0)]);
            prop_assert_eq!(TermPostings::open(&tables, "w").unwrap().df(), model.len() as u64);
            for id in [0u64, 1, 999, 2_999] {
                prop_assert_eq!(lookup(&one, &tables, "w", id).unwrap().map(|p| p.tf), model.get(&id).copied());
            }
            for term in ["v", "x", "w2"] {
                prop_assert_eq!(read_all(&tables, term).unwrap().len(), 1);
            }
        }

        /// Segments written fresh and merged, any number at once, read as
        /// one sorted list per term with the document frequency summed, and
        /// no two neighbouring blocks left apart that fit in one.
        #[test]
        fn merged_segments_read_as_one(sizes in proptest::collection::vec(1usize..300, 2..7)) {
            let db = crate::packed::tests::memory_db();
            let tx = db.begin_write().unwrap();
            let mut want: BTreeMap<&str, Vec<Posting>> = BTreeMap::new();
            let mut id = 1;
            for (n, size) in sizes.iter().enumerate() {
                let mut t = tx.open_table(TableDefinition::<&[u8], &[u8]>::new(&table(n as u64))).unwrap();
                let mut w = NewSegment::new();
                for term in ["a", "b", "c"] {
                    // "a" in every engram, "b" in every third, "c" in the first only.
                    let list: Vec<Posting> = (id..id + *size as u64)
                        .filter(|i| term == "a" || (term == "b" && i % 3 == 0) || (term == "c" && *i == 1))
                        .map(|i| Posting { id: i, tf: 1 + (i % 4) as u32, len: 9 })
                        .collect();
                    if !list.is_empty() {
                        w.add(&mut t, term, &list).unwrap();
                        want.entry(term).or_default().extend(list);
                    }
                }
                w.finish(&mut t).unwrap();
                id += *size as u64;
            }
            {
                let inputs: Vec<Chunks<'_>> = (0..sizes.len())
                    .map(|n| tx.open_table(TableDefinition::new(&table(n as u64))).unwrap())
                    .collect();
                let mut out = tx.open_table(TableDefinition::<&[u8], &[u8]>::new("merged")).unwrap();
                merge(cursors(&inputs).unwrap(), &mut out).unwrap();
            }
            tx.commit().unwrap();
            let rx = db.begin_read().unwrap();
            let t = rx.open_table(TableDefinition::<&[u8], &[u8]>::new("merged")).unwrap();
            for (term, list) in &want {
                let (all, df) = check_blocks(&t, term);
                prop_assert_eq!(&all, list);
                prop_assert_eq!(df, list.len() as u64);
                prop_assert!(!joinable_neighbours(&t, term), "{term}: blocks that fit in one were left apart");
            }
        }
    }

    /// Blocks out of order across chunks (each chunk in order, so only a
    /// forger makes them): a change among them is refused as corrupt, not
    /// applied for ever.
    #[test]
    fn forged_blocks_out_of_order_are_refused_not_looped_over() {
        let db = crate::packed::tests::memory_db();
        let tx = db.begin_write().unwrap();
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new("forged");
        let mut t = tx.open_table(def).unwrap();
        let p = |id| Posting { id, tf: 1, len: 1 };
        // A chunk keyed by the block at 5, then one keyed by the block at 30
        // that also holds the block at 1.
        let mut b = Builder::new(KIND);
        b.push(&mut t, &block_key("w", 5), &encode(&[p(5)])).unwrap();
        b.finish(&mut t).unwrap();
        let mut b = Builder::new(KIND);
        b.push(&mut t, &block_key("w", 1), &encode(&[p(1)])).unwrap();
        b.push(&mut t, &block_key("w", 30), &encode(&[p(30)])).unwrap();
        b.finish(&mut t).unwrap();
        let e = apply(&mut t, "w", &mut [(10, Some(p(10)))]).unwrap_err();
        assert!(matches!(e, Fault::Corrupt(_)), "{e}");
    }

    #[test]
    fn a_term_reads_across_segments_in_id_order() {
        let db = crate::packed::tests::memory_db();
        let tx = db.begin_write().unwrap();
        let p = |id| Posting { id, tf: 1, len: 3 };
        let segments: [Vec<(&str, Vec<Posting>)>; 3] = [
            vec![("w", (1..=200).map(p).collect())],
            vec![("w", vec![p(500), p(700)])],
            vec![("w", vec![p(950)]), ("z", vec![p(901)])],
        ];
        for (n, terms) in segments.iter().enumerate() {
            let mut t = tx.open_table(TableDefinition::<&[u8], &[u8]>::new(&table(n as u64))).unwrap();
            let mut w = NewSegment::new();
            for (term, list) in terms {
                w.add(&mut t, term, list).unwrap();
            }
            w.finish(&mut t).unwrap();
        }
        tx.commit().unwrap();
        let rx = db.begin_read().unwrap();
        let tables: Vec<_> =
            (0..3).map(|n| rx.open_table(TableDefinition::<&[u8], &[u8]>::new(&table(n))).unwrap()).collect();
        let s = segs(&[(0, 0), (500, 1), (900, 2)]);
        let ids: Vec<u64> = read_all(&tables, "w").unwrap().iter().map(|p| p.id).collect();
        assert_eq!(ids, (1..=200).chain([500, 700, 950]).collect::<Vec<_>>());
        assert_eq!(TermPostings::open(&tables, "w").unwrap().df(), 203);
        assert_eq!(TermPostings::open(&tables, "z").unwrap().df(), 1);
        assert_eq!(TermPostings::open(&tables, "y").unwrap().df(), 0);
        assert_eq!(lookup(&s, &tables, "w", 700).unwrap().map(|p| p.id), Some(700));
        assert_eq!(lookup(&s, &tables, "w", 701).unwrap(), None);
        assert_eq!(lookup(&s, &tables, "w", 150).unwrap().map(|p| p.id), Some(150));
        assert_eq!(lookup(&s, &tables, "z", 150).unwrap(), None);
        // Stopping early stops across segments too.
        let mut seen = 0;
        TermPostings::open(&tables, "w")
            .unwrap()
            .for_each_block(
                |_| Visit::Decode,
                |_| {
                    seen += 1;
                    false
                },
            )
            .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn keys_sort_like_term_then_id_and_read_back() {
        let keys = vec![
            header_key("ab"),
            block_key("ab", 7),
            block_key("ab", 300),
            header_key("abc"),
            block_key("b", 0),
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(parse_key(&block_key("ab", 300)), Some(("ab", Some(300))));
        assert_eq!(parse_key(&header_key("ab")), Some(("ab", None)));
        assert_eq!(parse_key(b"ab\x00\x01"), None, "a block key with a short id");
        assert_eq!(show_key(&block_key("ab", 3)), "(\"ab\", 3)");
    }

    #[test]
    fn blocks_decode_what_they_encode() {
        assert!(decode(b"\xff\xff").is_err());
        assert!(decode(b"\x02\x01\x01\x01\x01\x01").is_err(), "truncated");
        assert!(decode(b"\x00\x00\x00").is_err(), "empty");
        let block = [Posting { id: 3, tf: 2, len: 9 }, Posting { id: 300_000, tf: 1, len: 70_000 }];
        assert_eq!(decode(&encode(&block)).unwrap(), block);
        // Every width of the frequency and length columns, and one posting
        // read on its own.
        for (tf, len) in [(1, 1), (255, 255), (256, 65_535), (65_536, 300), (u32::MAX, u32::MAX)] {
            let block: Vec<Posting> = (0..BLOCK as u64)
                .map(|i| Posting {
                    id: 10 + i * 131,
                    tf: if i == 70 { tf } else { 1 },
                    len: len - (i % 2) as u32,
                })
                .collect();
            let bytes = encode(&block);
            assert_eq!(decode(&bytes).unwrap(), block, "tf {tf}, len {len}");
            let b = Block::open(&bytes, Vec::new()).unwrap();
            assert_eq!(b.ids(), block.iter().map(|p| p.id).collect::<Vec<_>>());
            assert_eq!(b.posting(70), block[70]);
            // A column cut short or a byte too many is refused.
            assert!(decode(&bytes[..bytes.len() - 1]).is_err());
            assert!(decode(&[&bytes[..], &[0]].concat()).is_err());
        }
        // Ids that do not ascend, and widths that are not 1, 2 or 4.
        let mut bad = Vec::new();
        put(&mut bad, 2);
        bad.extend_from_slice(&[1, 1, 5, 0, 0x11, 1, 1, 1, 1]);
        assert!(decode(&bad).unwrap_err().contains("out of order"));
        // Ids that pass 2^64.
        let mut bad = Vec::new();
        for v in [2, 1, 1, u64::MAX - 1, 2] {
            put(&mut bad, v);
        }
        bad.extend_from_slice(&[0x11, 1, 1, 1, 1]);
        assert!(decode(&bad).unwrap_err().contains("overflowing"));
        let mut bad = Vec::new();
        put(&mut bad, 1);
        bad.extend_from_slice(&[1, 1, 5, 0x13, 1, 1, 1, 1]);
        assert!(decode(&bad).unwrap_err().contains("widths"));
    }
}
