//! Writes: every change is an [`Op`]; [`MemoryGraph::apply`] runs a list of
//! them in one redb write transaction, checking permissions, limits and
//! quotas as it goes, and commits only if all succeed.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Receiver;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::owners;
use crate::packed::{self, Builder, Chunks};
use crate::postings::{self, MAX_TERM_BYTES, Posting};
use crate::record::{Corruption, Fault};
use crate::schema::*;
use crate::segments::{self, EDGES_KIND, EDGES_OUT_KIND, Segments};
use crate::{
    Actor, Connection, ContextId, EngramData, EngramId, GraphError, MemoryGraph, QuotaUse, Result, now_ms,
};

/// One change to the graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A new engram owned by the actor (id from
    /// [`MemoryGraph::allocate_engram_id`]), optionally in a context.
    Create {
        id: EngramId,
        data: EngramData,
        context: Option<ContextId>,
    },
    /// Replaces content, source, confidence and metadata.
    Update {
        id: EngramId,
        data: EngramData,
    },
    /// Deletes an engram with all its connections and context links.
    Delete {
        id: EngramId,
    },
    /// Adds or replaces the edge (source, target, relation).
    Connect(Connection),
    /// Removes the edge (source, target, relation).
    Disconnect {
        source: EngramId,
        target: EngramId,
        relation: String,
    },
    /// A new context (id from [`MemoryGraph::allocate_context_id`]) with
    /// the actor as first member.
    CreateContext {
        id: ContextId,
        name: String,
    },
    AddToContext {
        context: ContextId,
        id: EngramId,
    },
    AddMember {
        context: ContextId,
        agent: String,
    },
}

/// The segment a transaction opens for its new engrams.
struct Fresh {
    start: u64,
    /// The reverse edges of its sources, (target, source, relation number),
    /// written at the end in key order (see `segments::edge_key`).
    edges: std::collections::BTreeSet<(u64, u64, u64)>,
    /// Its edges by source, (source, target, relation number) → stored edge.
    out: BTreeMap<(u64, u64, u64), Vec<u8>>,
}

/// The open tables of a set of [`Names`], and the numbers a transaction
/// looked up or handed out.
struct OpenNames<'t> {
    names: Names,
    numbers: Table<'t, &'static str, u64>,
    by_number: Table<'t, u64, &'static [u8]>,
    cache: HashMap<String, u64, foldhash::fast::RandomState>,
}

impl<'t> OpenNames<'t> {
    fn open(tx: &'t WriteTransaction, names: Names) -> Result<OpenNames<'t>, S> {
        Ok(OpenNames {
            names,
            numbers: tx.open_table(names.numbers).map_err(st)?,
            by_number: tx.open_table(names.by_number).map_err(st)?,
            cache: HashMap::default(),
        })
    }

    /// The number of `name`; handed out if it has none and `create`, else
    /// `None`.
    fn number(&mut self, name: &str, create: bool) -> R<Option<u64>> {
        if let Some(&n) = self.cache.get(name) {
            return Ok(Some(n));
        }
        let n = if create {
            Some(self.names.intern(&mut self.numbers, &mut self.by_number, name)?)
        } else {
            self.names.number(&self.numbers, &self.by_number, name)?
        };
        if let Some(n) = n {
            self.cache.insert(name.to_string(), n);
        }
        Ok(n)
    }
}

/// The open tables of one write transaction.
pub(crate) struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    engrams: Table<'t, u64, &'static [u8]>,
    quota: Table<'t, &'static str, &'static [u8]>,
    relations: OpenNames<'t>,
    owner_numbers: OpenNames<'t>,
    /// Changes to the owner map (see `owners`), by id: the owner number of
    /// an engram created, `None` for one deleted; written by `flush`.
    owner_changes: BTreeMap<u64, Option<u64>>,
    contexts: Table<'t, u64, &'static [u8]>,
    members: Table<'t, (u64, &'static str), ()>,
    memberships: Table<'t, (&'static str, u64), ()>,
    context_engrams: Table<'t, (u64, u64), ()>,
    engram_contexts: Table<'t, (u64, u64), ()>,
    /// Engrams this transaction created (and did not delete since): the
    /// actor's own, so visible without a lookup.
    created: std::collections::HashSet<EngramId>,
    /// The committed `next_engram`: every stored engram's id is below it.
    first_free_id: u64,
    tx: &'t WriteTransaction,
    /// The committed segments.
    segs: Segments,
    /// Where this transaction's new engrams (ids from `first_free_id` up)
    /// are indexed: a fresh segment starting there, when that is above the
    /// last segment's start (else the last segment, in place).
    fresh: Option<Fresh>,
    /// The segment tables this transaction opened, by table number.
    postings: HashMap<u64, Chunks<'t>>,
    edges_in: HashMap<u64, Chunks<'t>>,
    edges_out: HashMap<u64, Chunks<'t>>,
    /// The batch's new texts indexed on a second thread, when one does it
    /// (see `MemoryGraph::apply`): their changes and total length in terms,
    /// gathered at `flush`.
    indexed: Option<Receiver<(TermChanges, u64)>>,
    /// The index of the op being applied.
    op: u32,
    scratch: Scratch,
    /// Index changes of this transaction, written by `flush` in one pass
    /// per term.
    postings_changes: TermChanges,
    /// Metadata index changes of this transaction (key → put or removed,
    /// the last change of a key winning), written by `flush`.
    metadata_changes: BTreeMap<Vec<u8>, bool>,
    meta_delta: BTreeMap<&'static str, i64>,
    next_ids: BTreeMap<&'static str, u64>,
    /// Quota use of owners touched by this transaction, written by `flush`.
    quotas: BTreeMap<String, QuotaUse>,
    /// The time stamped on what this transaction creates or updates.
    now: u64,
}

type S = String;

fn st(e: impl std::fmt::Display) -> S {
    e.to_string()
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<Tables<'t>, S> {
        let meta = tx.open_table(META).map_err(st)?;
        let first_free_id = meta.get("next_engram").map_err(st)?.map_or(1, |v| v.value());
        let segs = Segments::load(&tx.open_table(SEGMENTS).map_err(st)?).map_err(|f| f.to_string())?;
        Ok(Tables {
            created: std::collections::HashSet::new(),
            first_free_id,
            fresh: (first_free_id > segs.last().start).then_some(Fresh {
                start: first_free_id,
                edges: Default::default(),
                out: Default::default(),
            }),
            segs,
            tx,
            postings: HashMap::new(),
            edges_in: HashMap::new(),
            edges_out: HashMap::new(),
            meta,
            engrams: tx.open_table(ENGRAMS).map_err(st)?,
            quota: tx.open_table(QUOTA).map_err(st)?,
            relations: OpenNames::open(tx, RELATION_NUMBERING)?,
            owner_numbers: OpenNames::open(tx, OWNER_NUMBERING)?,
            owner_changes: BTreeMap::new(),
            contexts: tx.open_table(CONTEXTS).map_err(st)?,
            members: tx.open_table(MEMBERS).map_err(st)?,
            memberships: tx.open_table(MEMBERSHIPS).map_err(st)?,
            context_engrams: tx.open_table(CONTEXT_ENGRAMS).map_err(st)?,
            engram_contexts: tx.open_table(ENGRAM_CONTEXTS).map_err(st)?,
            indexed: None,
            op: 0,
            scratch: Scratch::default(),
            postings_changes: HashMap::default(),
            metadata_changes: BTreeMap::new(),
            meta_delta: BTreeMap::new(),
            next_ids: BTreeMap::new(),
            quotas: BTreeMap::new(),
            now: 0,
        })
    }
}

/// A graph error (refuse the op), a storage error or a corrupt record.
enum Fail {
    Graph(GraphError),
    Storage(S),
    Corrupt(Corruption),
}

impl From<Fault> for Fail {
    fn from(f: Fault) -> Fail {
        match f {
            Fault::Storage(e) => Fail::Storage(e),
            Fault::Corrupt(c) => Fail::Corrupt(c),
        }
    }
}

impl From<Corruption> for Fail {
    fn from(c: Corruption) -> Fail {
        Fail::Corrupt(c)
    }
}

impl From<GraphError> for Fail {
    fn from(e: GraphError) -> Fail {
        Fail::Graph(e)
    }
}

impl From<S> for Fail {
    fn from(e: S) -> Fail {
        Fail::Storage(e)
    }
}

type R<T> = std::result::Result<T, Fail>;

fn sf(e: impl std::fmt::Display) -> Fail {
    Fail::Storage(e.to_string())
}

/// Batches with at least this many new texts have them indexed by term on
/// a second thread.
const PARALLEL_INDEX: usize = 64;

/// A transaction's changes to the text index, by term: (engram id, order,
/// the posting put or `None` for one removed). The order (twice the op's
/// index, plus one for what the op indexes) settles which change of an id
/// wins when its changes are gathered from two threads.
pub(crate) type TermChanges = HashMap<String, ChangeList, foldhash::fast::RandomState>;

/// One term's changes in a transaction (see [`TermChanges`]).
pub(crate) type ChangeList = Vec<(u64, u32, Option<Posting>)>;

/// The postings `text` of engram `id` puts, added to `changes` in order
/// `order`; returns its length in terms.
fn index_text(changes: &mut TermChanges, scratch: &mut Scratch, id: EngramId, order: u32, text: &str) -> u32 {
    let len = count_terms(text, scratch);
    for (term, tf) in scratch.counts() {
        let change = (id, order, Some(Posting { id, tf, len }));
        match changes.get_mut(term) {
            Some(list) => list.push(change),
            None => {
                changes.insert(term.to_string(), vec![change]);
            }
        }
    }
    len
}

/// Terms with their frequencies (sorted by term), and the document length.
pub(crate) type TermCounts = (Vec<(String, u32)>, u32);

/// The [`TermCounts`] of `content`. (A term never holds a zero byte: the
/// text index's keys rely on it.)
pub(crate) fn term_counts(content: &str) -> TermCounts {
    let mut scratch = Scratch::default();
    let len = count_terms(content, &mut scratch);
    (scratch.counts().map(|(t, n)| (t.to_string(), n)).collect(), len)
}

/// The buffers [`count_terms`] reuses from text to text: the terms one
/// after the other, and each one's span, sorted by term.
#[derive(Default)]
pub(crate) struct Scratch {
    text: String,
    spans: Vec<(u32, u32)>,
}

impl Scratch {
    /// The distinct terms of the last text counted, in order, with their
    /// frequencies.
    fn counts(&self) -> impl Iterator<Item = (&str, u32)> {
        let term = |s: (u32, u32)| &self.text[s.0 as usize..s.1 as usize];
        let mut i = 0;
        std::iter::from_fn(move || {
            let first = *self.spans.get(i)?;
            let n = self.spans[i..].iter().take_while(|&&s| term(s) == term(first)).count();
            i += n;
            Some((term(first), n as u32))
        })
    }
}

/// Counts the terms of `content` into `scratch` (see [`Scratch::counts`])
/// without a string per term; returns the number of terms.
fn count_terms(content: &str, scratch: &mut Scratch) -> u32 {
    let Scratch { text, spans } = scratch;
    text.clear();
    spans.clear();
    elex_text::for_each_term(content, |t| {
        if t.len() <= MAX_TERM_BYTES && !t.contains('\0') {
            let start = text.len() as u32;
            text.push_str(t);
            spans.push((start, text.len() as u32));
        }
    });
    let term = |s: &(u32, u32)| &text[s.0 as usize..s.1 as usize];
    spans.sort_unstable_by(|a, b| term(a).cmp(term(b)));
    spans.len() as u32
}

fn check_data(graph: &MemoryGraph, data: &EngramData) -> Result<()> {
    if !(0.0..=1.0).contains(&data.confidence) {
        return Err(GraphError::Invalid(format!("confidence {} is not in [0, 1]", data.confidence)));
    }
    if data.content.trim().is_empty() {
        return Err(GraphError::Invalid(String::from("content is empty")));
    }
    if data.content.len() > graph.config.max_content_bytes {
        return Err(GraphError::Invalid(format!(
            "content is {} bytes; the limit is {}",
            data.content.len(),
            graph.config.max_content_bytes
        )));
    }
    if let Some((k, _)) = data.metadata.iter().find(|(k, _)| k.is_empty()) {
        return Err(GraphError::Invalid(format!("metadata key {k:?} is empty")));
    }
    Ok(())
}

impl<'t> Tables<'t> {
    fn meta_add(&mut self, key: &'static str, delta: i64) {
        *self.meta_delta.entry(key).or_insert(0) += delta;
    }

    fn raise_next(&mut self, key: &'static str, id: u64) {
        let n = self.next_ids.entry(key).or_insert(0);
        *n = (*n).max(id + 1);
    }

    /// Whether engram `id` is indexed in this transaction's fresh segment.
    fn in_fresh(&self, id: EngramId) -> bool {
        self.fresh.as_ref().is_some_and(|f| id >= f.start)
    }

    fn postings_of(&mut self, table: u64) -> R<&mut Chunks<'t>> {
        if !self.postings.contains_key(&table) {
            let t = segments::open_postings(self.tx, table)?;
            self.postings.insert(table, t);
        }
        Ok(self.postings.get_mut(&table).expect("inserted above"))
    }

    fn edges_in_of(&mut self, table: u64) -> R<&mut Chunks<'t>> {
        if !self.edges_in.contains_key(&table) {
            let t = segments::open_edges_in(self.tx, table)?;
            self.edges_in.insert(table, t);
        }
        Ok(self.edges_in.get_mut(&table).expect("inserted above"))
    }

    fn edges_out_of(&mut self, table: u64) -> R<&mut Chunks<'t>> {
        if !self.edges_out.contains_key(&table) {
            let t = segments::open_edges_out(self.tx, table)?;
            self.edges_out.insert(table, t);
        }
        Ok(self.edges_out.get_mut(&table).expect("inserted above"))
    }

    /// Puts (adds or replaces) the edge `source` -`relation`-> `target`
    /// with its stored value, by source and by target.
    fn edge_put(&mut self, source: EngramId, target: EngramId, relation: u64, value: Vec<u8>) -> R<()> {
        if self.in_fresh(source) {
            let fresh = self.fresh.as_mut().expect("in_fresh");
            fresh.out.insert((source, target, relation), value);
            fresh.edges.insert((target, source, relation));
            return Ok(());
        }
        let table = self.segs.covering(source).table;
        let key = segments::edge_key(source, target, relation);
        packed::splice(self.edges_out_of(table)?, EDGES_OUT_KIND, &key, &key, vec![(key.clone(), value)])?;
        self.edge_in_insert(source, target, relation)
    }

    /// Removes the edge `source` -`relation`-> `target`; whether it was
    /// there.
    fn edge_remove(&mut self, source: EngramId, target: EngramId, relation: u64) -> R<bool> {
        if self.in_fresh(source) {
            let fresh = self.fresh.as_mut().expect("in_fresh");
            fresh.edges.remove(&(target, source, relation));
            return Ok(fresh.out.remove(&(source, target, relation)).is_some());
        }
        let table = self.segs.covering(source).table;
        let key = segments::edge_key(source, target, relation);
        let t = self.edges_out_of(table)?;
        let existed = packed::get(t, EDGES_OUT_KIND, &key)?.is_some();
        if existed {
            packed::splice(t, EDGES_OUT_KIND, &key, &key, Vec::new())?;
        }
        self.edge_in_remove(source, target, relation)?;
        Ok(existed)
    }

    /// The edges leaving `source`: (target, relation number).
    fn edges_from(&mut self, source: EngramId) -> R<Vec<(u64, u64)>> {
        if let Some(fresh) = &self.fresh
            && source >= fresh.start
        {
            return Ok(fresh
                .out
                .range((source, 0, 0)..)
                .take_while(|e| e.0.0 == source)
                .map(|e| (e.0.1, e.0.2))
                .collect());
        }
        let table = self.segs.covering(source).table;
        Ok(segments::outgoing(self.edges_out_of(table)?, source)?
            .into_iter()
            .map(|(t, r, _)| (t, r))
            .collect())
    }

    /// Files the reverse entry of the edge `source` -`relation`-> `target`
    /// under the source's segment.
    fn edge_in_insert(&mut self, source: EngramId, target: EngramId, relation: u64) -> R<()> {
        if self.in_fresh(source) {
            self.fresh.as_mut().expect("in_fresh").edges.insert((target, source, relation));
            return Ok(());
        }
        let key = segments::edge_key(target, source, relation);
        let table = self.segs.covering(source).table;
        packed::splice(self.edges_in_of(table)?, EDGES_KIND, &key, &key, vec![(key.clone(), Vec::new())])?;
        Ok(())
    }

    fn edge_in_remove(&mut self, source: EngramId, target: EngramId, relation: u64) -> R<()> {
        if self.in_fresh(source) {
            self.fresh.as_mut().expect("in_fresh").edges.remove(&(target, source, relation));
            return Ok(());
        }
        let key = segments::edge_key(target, source, relation);
        let table = self.segs.covering(source).table;
        packed::splice(self.edges_in_of(table)?, EDGES_KIND, &key, &key, Vec::new())?;
        Ok(())
    }

    /// The edges into `target`: (source, relation number), from every
    /// segment.
    fn edges_into(&mut self, target: EngramId) -> R<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let tables: Vec<u64> = self.segs.iter().map(|s| s.table).collect();
        for table in tables {
            out.extend(segments::incoming(self.edges_in_of(table)?, target)?);
        }
        if let Some(fresh) = &self.fresh {
            for (_, source, relation) in fresh.edges.range((target, 0, 0)..).take_while(|e| e.0 == target) {
                out.push((*source, *relation));
            }
        }
        Ok(out)
    }

    /// Writes the accumulated index, document-frequency and counter changes,
    /// and the fresh segment, if any. (`segments::settle` runs once these
    /// tables are closed.)
    fn flush(&mut self) -> R<()> {
        let mut changes = std::mem::take(&mut self.postings_changes);
        if let Some(indexed) = self.indexed.take() {
            let (theirs, len) =
                indexed.recv().map_err(|_| Fail::Storage(String::from("the indexing thread stopped")))?;
            if changes.is_empty() {
                changes = theirs;
            } else {
                for (term, mut list) in theirs {
                    match changes.get_mut(term.as_str()) {
                        Some(have) => have.append(&mut list),
                        None => {
                            changes.insert(term, list);
                        }
                    }
                }
            }
            self.meta_add("total_terms", len as i64);
        }
        let mut terms: Vec<(String, ChangeList)> = changes.into_iter().collect();
        terms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let fresh = self.fresh.take();
        let fresh_start = fresh.as_ref().map(|f| f.start);
        // The fresh segment: its table number and postings, once it has any.
        let mut new_segment: Option<(u64, Chunks<'t>, postings::NewSegment)> = None;
        let mut entries = 0u64;
        let mut list: Vec<Posting> = Vec::new();
        for (term, mut changes) in terms {
            changes.sort_unstable_by_key(|c| (c.0, c.1));
            let split = fresh_start.map_or(changes.len(), |f| changes.partition_point(|c| c.0 < f));
            let (old, new) = changes.split_at(split);
            // Changes to older engrams: in place, segment by segment.
            let mut old: Vec<postings::Change> = old.iter().map(|&(id, _, p)| (id, p)).collect();
            let mut i = 0;
            while i < old.len() {
                let seg = self.segs.covering(old[i].0);
                let end = i + old[i..].partition_point(|c| self.segs.covering(c.0).start == seg.start);
                postings::apply(self.postings_of(seg.table)?, &term, &mut old[i..end])?;
                i = end;
            }
            // New engrams' postings: the last change of each id.
            list.clear();
            for (k, c) in new.iter().enumerate() {
                if let (Some(p), true) = (c.2, new.get(k + 1).is_none_or(|n| n.0 != c.0)) {
                    list.push(p);
                }
            }
            if list.is_empty() {
                continue;
            }
            if new_segment.is_none() {
                let table = segments::next_table(self.tx, &mut self.meta)?;
                new_segment =
                    Some((table, segments::open_postings(self.tx, table)?, postings::NewSegment::new()));
            }
            let (_, t, w) = new_segment.as_mut().expect("opened above");
            w.add(t, &term, &list)?;
            entries += list.len() as u64;
        }
        let table = match new_segment {
            Some((table, mut t, w)) => {
                w.finish(&mut t)?;
                Some(table)
            }
            None => None,
        };
        if let Some(fresh) = fresh
            && (table.is_some() || !fresh.edges.is_empty())
        {
            let table = match table {
                Some(table) => table,
                None => {
                    // Edges but no postings: the segment has all three
                    // tables all the same (readers open each).
                    let table = segments::next_table(self.tx, &mut self.meta)?;
                    segments::open_postings(self.tx, table)?;
                    table
                }
            };
            entries += 2 * fresh.edges.len() as u64;
            let mut t = segments::open_edges_in(self.tx, table)?;
            let mut b = Builder::new(EDGES_KIND);
            let mut key = Vec::new();
            for (target, source, relation) in &fresh.edges {
                segments::edge_key_into(&mut key, *target, *source, *relation);
                b.push(&mut t, &key, &[])?;
            }
            b.finish(&mut t)?;
            let mut t = segments::open_edges_out(self.tx, table)?;
            let mut b = Builder::new(EDGES_OUT_KIND);
            for ((source, target, relation), value) in &fresh.out {
                segments::edge_key_into(&mut key, *source, *target, *relation);
                b.push(&mut t, &key, value)?;
            }
            b.finish(&mut t)?;
            self.tx.open_table(SEGMENTS).map_err(sf)?.insert(fresh.start, (table, entries)).map_err(sf)?;
        }
        let owners = std::mem::take(&mut self.owner_changes);
        if !owners.is_empty() {
            owners::apply(&mut self.tx.open_table(OWNERS).map_err(sf)?, &owners)?;
        }
        let metadata = std::mem::take(&mut self.metadata_changes);
        if !metadata.is_empty() {
            let changes: Vec<packed::Change> =
                metadata.into_iter().map(|(k, put)| (k, put.then(Vec::new))).collect();
            packed::update(&mut self.tx.open_table(METADATA).map_err(sf)?, METADATA_KIND, &changes)?;
        }
        for (key, delta) in std::mem::take(&mut self.meta_delta) {
            let v = self.meta.get(key).map_err(sf)?.map(|v| v.value()).unwrap_or(0);
            self.meta.insert(key, v.saturating_add_signed(delta)).map_err(sf)?;
        }
        for (owner, q) in std::mem::take(&mut self.quotas) {
            if q == QuotaUse::default() {
                self.quota.remove(owner.as_str()).map_err(sf)?;
            } else {
                self.quota.insert(owner.as_str(), encode_quota(&owner, &q)?.as_slice()).map_err(sf)?;
            }
        }
        for (key, next) in std::mem::take(&mut self.next_ids) {
            let v = self.meta.get(key).map_err(sf)?.map(|v| v.value()).unwrap_or(1);
            if next > v {
                self.meta.insert(key, next).map_err(sf)?;
            }
        }
        Ok(())
    }

    fn engram(&self, id: EngramId) -> R<Option<StoredEngram>> {
        match self.engrams.get(id).map_err(sf)? {
            None => Ok(None),
            Some(v) => Ok(Some(StoredEngram::decode(id, v.value())?)),
        }
    }

    fn is_member(&self, actor: &Actor, context: ContextId) -> R<bool> {
        if self.contexts.get(context).map_err(sf)?.is_none() {
            return Err(GraphError::NotFound(context).into());
        }
        Ok(match actor {
            Actor::Operator => true,
            Actor::Agent(a) => self.members.get((context, a.as_str())).map_err(sf)?.is_some(),
        })
    }

    fn require_member(&self, actor: &Actor, context: ContextId) -> R<()> {
        if self.is_member(actor, context)? {
            Ok(())
        } else {
            Err(GraphError::Denied(format!("{} is not a member of context {context}", actor.name())).into())
        }
    }

    /// The engram if `actor` may see (and so change) it.
    fn visible(&self, actor: &Actor, id: EngramId) -> R<StoredEngram> {
        let Some(e) = self.engram(id)? else {
            return Err(GraphError::NotFound(id).into());
        };
        self.may_see(actor, id, &e.owner)?;
        Ok(e)
    }

    /// `visible` without decoding more of the engram than its owner (and
    /// for an agent's own engram, without reading it at all).
    fn check_visible(&self, actor: &Actor, id: EngramId) -> R<()> {
        if self.created.contains(&id) {
            return Ok(());
        }
        match actor {
            Actor::Operator if self.engrams.get(id).map_err(sf)?.is_some() => return Ok(()),
            _ => {}
        }
        let Some(v) = self.engrams.get(id).map_err(sf)? else {
            return Err(GraphError::NotFound(id).into());
        };
        let owner = StoredEngram::owner_of(id, v.value())?;
        drop(v);
        self.may_see(actor, id, &owner)
    }

    fn may_see(&self, actor: &Actor, id: EngramId, owner: &str) -> R<()> {
        let Actor::Agent(a) = actor else { return Ok(()) };
        if owner == a {
            return Ok(());
        }
        for row in self.engram_contexts.range((id, 0)..=(id, u64::MAX)).map_err(sf)? {
            let (k, _) = row.map_err(sf)?;
            if self.members.get((k.value().1, a.as_str())).map_err(sf)?.is_some() {
                return Ok(());
            }
        }
        Err(GraphError::Denied(format!("engram {id} belongs to {owner} and is in no context {a} belongs to"))
            .into())
    }

    fn quota_of(&self, owner: &str) -> R<QuotaUse> {
        if let Some(q) = self.quotas.get(owner) {
            return Ok(*q);
        }
        match self.quota.get(owner).map_err(sf)? {
            Some(v) => Ok(decode_quota(owner, v.value())?),
            None => Ok(QuotaUse::default()),
        }
    }

    fn set_quota(&mut self, owner: &str, q: QuotaUse) {
        self.quotas.insert(owner.to_string(), q);
    }

    fn index(&mut self, id: EngramId, e: &StoredEngram) -> R<()> {
        // With a second thread, it indexed the text already.
        if self.indexed.is_none() {
            let len =
                index_text(&mut self.postings_changes, &mut self.scratch, id, 2 * self.op + 1, &e.content);
            self.meta_add("total_terms", len as i64);
        }
        for (k, v) in &e.metadata {
            self.metadata_changes.insert(metadata_key(&metadata_pair(k, v), id), true);
        }
        Ok(())
    }

    fn unindex(&mut self, id: EngramId, e: &StoredEngram) -> R<()> {
        let (counts, len) = term_counts(&e.content);
        for (term, _) in counts {
            self.postings_changes.entry(term).or_default().push((id, 2 * self.op, None));
        }
        self.meta_add("total_terms", -(len as i64));
        for (k, v) in &e.metadata {
            self.metadata_changes.insert(metadata_key(&metadata_pair(k, v), id), false);
        }
        Ok(())
    }

    fn put_engram(&mut self, id: EngramId, e: &StoredEngram) -> R<()> {
        self.engrams.insert(id, e.encode(id)?.as_slice()).map_err(sf)?;
        Ok(())
    }
}

fn quota_check(graph: &MemoryGraph, owner: &str, q: QuotaUse, is_agent: bool) -> Result<()> {
    if !is_agent {
        return Ok(());
    }
    let limit = graph.config.quota;
    if q.engrams > limit.max_engrams {
        return Err(GraphError::QuotaExceeded(format!(
            "engrams of {owner}: limit {}, use would be {}",
            limit.max_engrams, q.engrams
        )));
    }
    if q.bytes > limit.max_bytes {
        return Err(GraphError::QuotaExceeded(format!(
            "bytes of {owner}: limit {}, use would be {}",
            limit.max_bytes, q.bytes
        )));
    }
    Ok(())
}

impl MemoryGraph {
    /// Applies `ops` atomically as `actor`: all of them, or (on the first
    /// refusal or storage failure) none. Returns, per op, whether it changed
    /// something (for `Disconnect`: whether the edge existed). On a graph
    /// that follows a write log, the ops go through the log (see
    /// [`MemoryGraph::follow`]).
    pub fn apply(&self, actor: &Actor, ops: Vec<Op>) -> Result<Vec<bool>> {
        self.check_size(&ops)?;
        if let Some(log) = self.log.get() {
            return log.append(crate::LoggedWrite { actor: actor.clone(), ops, time_ms: now_ms() });
        }
        if self.replica.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(GraphError::Denied(format!(
                "{} is a cluster host's copy of the memory graph, written only from the cluster's log: \
                 write through a host of the cluster",
                self.path.display()
            )));
        }
        self.apply_at(actor, ops, now_ms(), None)
    }

    fn check_size(&self, ops: &[Op]) -> Result<()> {
        if ops.len() > self.config.max_ops_per_transaction {
            return Err(GraphError::LimitExceeded(format!(
                "a transaction holds at most {} operations; this one has {}",
                self.config.max_ops_per_transaction,
                ops.len()
            )));
        }
        Ok(())
    }

    /// Applies `ops` stamped with `time_ms`, recording the log position
    /// `at` (if any) in the same transaction.
    pub(crate) fn apply_at(
        &self,
        actor: &Actor,
        ops: Vec<Op>,
        time_ms: u64,
        at: Option<crate::LogPosition>,
    ) -> Result<Vec<bool>> {
        self.check_size(&ops)?;
        let tx = self.db.begin_write().map_err(|e| self.storage(e))?;
        let many = ops.iter().filter(|op| matches!(op, Op::Create { .. } | Op::Update { .. })).count()
            >= PARALLEL_INDEX;
        std::thread::scope(|scope| {
            // A large batch has its new texts indexed on a second thread
            // while this one writes. (An op that fails fails the batch, so
            // indexing every Create and Update text ahead is what applying
            // them indexes.)
            let indexed = many
                .then(|| {
                    let texts: Vec<(u64, u32, String)> = ops
                        .iter()
                        .enumerate()
                        .filter_map(|(i, op)| match op {
                            Op::Create { id, data, .. } | Op::Update { id, data } => {
                                Some((*id, 2 * i as u32 + 1, data.content.clone()))
                            }
                            _ => None,
                        })
                        .collect();
                    let (send, receive) = std::sync::mpsc::sync_channel(1);
                    std::thread::Builder::new()
                        .name(String::from("elex-memgraph-index"))
                        .spawn_scoped(scope, move || {
                            let mut changes = TermChanges::default();
                            let mut scratch = Scratch::default();
                            let mut len = 0u64;
                            for (id, order, text) in texts {
                                len += index_text(&mut changes, &mut scratch, id, order, &text) as u64;
                            }
                            let _ = send.send((changes, len)); // fails only if the batch did
                        })
                        .ok()
                        .map(|_| receive)
                })
                .flatten();
            self.apply_in(tx, actor, ops, indexed, time_ms, at)
        })
    }

    fn apply_in(
        &self,
        tx: redb::WriteTransaction,
        actor: &Actor,
        ops: Vec<Op>,
        indexed: Option<Receiver<(TermChanges, u64)>>,
        time_ms: u64,
        at: Option<crate::LogPosition>,
    ) -> Result<Vec<bool>> {
        let outcome = {
            let mut t = Tables::open(&tx).map_err(|e| self.storage(e))?;
            t.indexed = indexed;
            t.now = time_ms;
            let mut changed = Vec::with_capacity(ops.len());
            let mut result = Ok(());
            for (i, op) in ops.into_iter().enumerate() {
                t.op = i as u32;
                match self.apply_one(&mut t, actor, op) {
                    Ok(c) => changed.push(c),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            result.and_then(|()| t.flush()).and_then(|()| {
                if let Some(at) = at {
                    t.meta.insert("log_id", at.log).map_err(sf)?;
                    t.meta.insert("log_seq", at.seq).map_err(sf)?;
                }
                Ok(changed)
            })
        }
        // With every table closed, merge segments as the policy says.
        .and_then(|changed| Ok((changed, segments::settle(&tx)?)));
        match outcome {
            Ok((changed, merges)) => {
                let commit = tx.commit();
                self.committed();
                commit.map_err(|e| self.storage(e))?;
                if merges > 0 {
                    self.merged.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(changed)
            }
            Err(fail) => {
                // Dropping would abort too; say so explicitly.
                let _ = tx.abort();
                Err(match fail {
                    Fail::Graph(e) => e,
                    Fail::Storage(e) => self.storage(e),
                    Fail::Corrupt(c) => self.corrupt(c),
                })
            }
        }
    }

    fn apply_one(&self, t: &mut Tables<'_>, actor: &Actor, op: Op) -> R<bool> {
        let is_agent = matches!(actor, Actor::Agent(_));
        match op {
            Op::Create { id, data, context } => {
                check_data(self, &data)?;
                if id == u64::MAX {
                    return Err(
                        GraphError::Invalid(String::from("engram id 2^64-1 is never handed out")).into()
                    );
                }
                let taken = t.created.contains(&id)
                    || (id < t.first_free_id && t.engrams.get(id).map_err(sf)?.is_some());
                if taken {
                    return Err(GraphError::Invalid(format!("engram id {id} is taken")).into());
                }
                if let Some(c) = context {
                    t.require_member(actor, c)?;
                }
                let now = t.now;
                let owner = actor.name().to_string();
                let e = StoredEngram {
                    owner: owner.clone(),
                    content: data.content,
                    source: data.source,
                    confidence: data.confidence,
                    metadata: data.metadata,
                    created_ms: now,
                    updated_ms: now,
                };
                let mut q = t.quota_of(&owner)?;
                q.engrams += 1;
                q.bytes += e.bytes();
                quota_check(self, &owner, q, is_agent)?;
                t.set_quota(&owner, q);
                t.put_engram(id, &e)?;
                t.index(id, &e)?;
                let number = t.owner_numbers.number(&owner, true)?.expect("handed out");
                t.owner_changes.insert(id, Some(number));
                if let Some(c) = context {
                    t.context_engrams.insert((c, id), ()).map_err(sf)?;
                    t.engram_contexts.insert((id, c), ()).map_err(sf)?;
                }
                t.meta_add("engram_count", 1);
                t.raise_next("next_engram", id);
                t.created.insert(id);
                Ok(true)
            }
            Op::Update { id, data } => {
                check_data(self, &data)?;
                let old = t.visible(actor, id)?;
                let new = StoredEngram {
                    owner: old.owner.clone(),
                    content: data.content,
                    source: data.source,
                    confidence: data.confidence,
                    metadata: data.metadata,
                    created_ms: old.created_ms,
                    updated_ms: t.now.max(old.created_ms),
                };
                let mut q = t.quota_of(&old.owner)?;
                q.bytes = q.bytes.saturating_sub(old.bytes()) + new.bytes();
                // The owner's quota, whoever edits.
                quota_check(self, &old.owner, q, old.owner != "operator")?;
                t.set_quota(&old.owner, q);
                t.unindex(id, &old)?;
                t.index(id, &new)?;
                t.put_engram(id, &new)?;
                Ok(true)
            }
            Op::Delete { id } => {
                let old = t.visible(actor, id)?;
                t.created.remove(&id);
                t.unindex(id, &old)?;
                for (target, rel) in t.edges_from(id)? {
                    t.edge_remove(id, target, rel)?;
                }
                for (source, rel) in t.edges_into(id)? {
                    t.edge_remove(source, id, rel)?;
                }
                let ctxs: Vec<u64> = t
                    .engram_contexts
                    .range((id, 0)..=(id, u64::MAX))
                    .map_err(sf)?
                    .map(|r| r.map(|(k, _)| k.value().1))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(sf)?;
                for c in ctxs {
                    t.engram_contexts.remove((id, c)).map_err(sf)?;
                    t.context_engrams.remove((c, id)).map_err(sf)?;
                }
                let mut q = t.quota_of(&old.owner)?;
                q.engrams = q.engrams.saturating_sub(1);
                q.bytes = q.bytes.saturating_sub(old.bytes());
                t.set_quota(&old.owner, q);
                t.engrams.remove(id).map_err(sf)?;
                t.owner_changes.insert(id, None);
                t.meta_add("engram_count", -1);
                Ok(true)
            }
            Op::Connect(c) => {
                if c.relation.is_empty() || c.relation.len() > 64 {
                    return Err(GraphError::Invalid(String::from("relation must be 1 to 64 bytes")).into());
                }
                if !(0.0..=1.0).contains(&c.weight) {
                    return Err(GraphError::Invalid(format!("weight {} is not in [0, 1]", c.weight)).into());
                }
                t.check_visible(actor, c.source)?;
                t.check_visible(actor, c.target)?;
                let edge = StoredEdge { weight: c.weight, metadata: c.metadata };
                let value = edge.encode((c.source, c.target, &c.relation))?;
                let relation = t.relations.number(&c.relation, true)?.expect("handed out");
                t.edge_put(c.source, c.target, relation, value)?;
                Ok(true)
            }
            Op::Disconnect { source, target, relation } => {
                t.check_visible(actor, source)?;
                match t.relations.number(&relation, false)? {
                    Some(relation) => Ok(t.edge_remove(source, target, relation)?),
                    None => Ok(false),
                }
            }
            Op::CreateContext { id, name } => {
                if id == u64::MAX {
                    return Err(
                        GraphError::Invalid(String::from("context id 2^64-1 is never handed out")).into()
                    );
                }
                if name.trim().is_empty() {
                    return Err(GraphError::Invalid(String::from("context name is empty")).into());
                }
                if t.contexts.get(id).map_err(sf)?.is_some() {
                    return Err(GraphError::Invalid(format!("context id {id} is taken")).into());
                }
                let c = StoredContext { name, creator: actor.name().to_string(), created_ms: t.now };
                t.contexts.insert(id, c.encode(id)?.as_slice()).map_err(sf)?;
                t.members.insert((id, actor.name()), ()).map_err(sf)?;
                t.memberships.insert((actor.name(), id), ()).map_err(sf)?;
                t.raise_next("next_context", id);
                Ok(true)
            }
            Op::AddToContext { context, id } => {
                t.require_member(actor, context)?;
                t.check_visible(actor, id)?;
                let new = t.context_engrams.insert((context, id), ()).map_err(sf)?.is_none();
                t.engram_contexts.insert((id, context), ()).map_err(sf)?;
                Ok(new)
            }
            Op::AddMember { context, agent } => {
                if agent.trim().is_empty() {
                    return Err(GraphError::Invalid(String::from("agent id is empty")).into());
                }
                t.require_member(actor, context)?;
                let new = t.members.insert((context, agent.as_str()), ()).map_err(sf)?.is_none();
                t.memberships.insert((agent.as_str(), context), ()).map_err(sf)?;
                Ok(new)
            }
        }
    }
}
