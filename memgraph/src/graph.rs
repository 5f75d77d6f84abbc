//! Reads: engrams, connections, contexts, bounded graph walks, and the
//! integrity check of every record and index.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::owners;
use crate::packed;
use crate::postings;
use crate::record::{Corruption, Fault};
use crate::schema::*;
use crate::segments::{self, Segments};
use crate::write::term_counts;
use crate::{
    Actor, Connection, Context, ContextId, Engram, EngramData, EngramId, GraphError, MemoryGraph, QuotaUse,
    Result,
};
use std::cell::OnceCell;
use std::sync::{Arc, OnceLock};

/// One read transaction and the tables reads open in it, shared by the reads
/// that start before the next write commits (see
/// [`MemoryGraph::snapshot`]): beginning the transaction and opening the
/// tables took about 4 µs of a 50 µs search.
pub(crate) struct Snapshot {
    tx: ReadTransaction,
    pub meta: ReadOnlyTable<&'static str, u64>,
    pub engrams: ReadOnlyTable<u64, &'static [u8]>,
    /// The segments of the text and edge indexes ...
    pub segs: Segments,
    /// ... their postings and edge tables, in segment order, opened when
    /// first needed.
    postings: OnceLock<Vec<ReadOnlyTable<&'static [u8], &'static [u8]>>>,
    edges_in: OnceLock<Vec<ReadOnlyTable<&'static [u8], &'static [u8]>>>,
    edges_out: OnceLock<Vec<ReadOnlyTable<&'static [u8], &'static [u8]>>>,
    /// The tables a read may not need at all, opened when first needed (an
    /// open is a lookup of its own).
    metadata: OnceLock<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    relations: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
    relation_numbers: OnceLock<ReadOnlyTable<&'static str, u64>>,
    owners: OnceLock<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    owners_by_number: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
    owner_numbers: OnceLock<ReadOnlyTable<&'static str, u64>>,
    contexts: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
    members: OnceLock<ReadOnlyTable<(u64, &'static str), ()>>,
    memberships: OnceLock<ReadOnlyTable<(&'static str, u64), ()>>,
    context_engrams: OnceLock<ReadOnlyTable<(u64, u64), ()>>,
    engram_contexts: OnceLock<ReadOnlyTable<(u64, u64), ()>>,
    /// The chunks of the owner map read so far.
    owner_lookup: owners::Lookup,
}

impl Snapshot {
    /// A read transaction of the last commit, with the tables every read
    /// needs.
    pub(crate) fn begin(graph: &MemoryGraph) -> Result<Snapshot> {
        let e = |e: redb::TableError| graph.storage(e);
        let tx: ReadTransaction = graph.db.begin_read().map_err(|x| graph.storage(x))?;
        Ok(Snapshot {
            meta: tx.open_table(META).map_err(e)?,
            engrams: tx.open_table(ENGRAMS).map_err(e)?,
            segs: Segments::load(&tx.open_table(SEGMENTS).map_err(e)?).map_err(|f| graph.fault(f))?,
            postings: OnceLock::new(),
            edges_in: OnceLock::new(),
            edges_out: OnceLock::new(),
            metadata: OnceLock::new(),
            relations: OnceLock::new(),
            relation_numbers: OnceLock::new(),
            owners: OnceLock::new(),
            owners_by_number: OnceLock::new(),
            owner_numbers: OnceLock::new(),
            contexts: OnceLock::new(),
            members: OnceLock::new(),
            memberships: OnceLock::new(),
            context_engrams: OnceLock::new(),
            engram_contexts: OnceLock::new(),
            owner_lookup: owners::Lookup::default(),
            tx,
        })
    }
}

/// A read: a snapshot, and who is reading.
pub(crate) struct Reader<'g> {
    pub graph: &'g MemoryGraph,
    pub actor: Actor,
    snapshot: Arc<Snapshot>,
    /// The actor's owner number (`None`: the actor owns no engram).
    my_number: OnceCell<Option<u64>>,
    /// Contexts the actor belongs to (empty for the operator, who sees all).
    my_contexts: OnceCell<HashSet<u64>>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl<'g> Reader<'g> {
    pub fn new(graph: &'g MemoryGraph, actor: &Actor) -> Result<Reader<'g>> {
        Ok(Reader {
            graph,
            actor: actor.clone(),
            snapshot: graph.snapshot()?,
            my_number: OnceCell::new(),
            my_contexts: OnceCell::new(),
        })
    }

    /// `def` opened once per snapshot, when first asked for.
    fn lazy<'s, K: redb::Key + 'static, V: redb::Value + 'static>(
        &'s self,
        cell: &'s OnceLock<ReadOnlyTable<K, V>>,
        def: TableDefinition<K, V>,
    ) -> Result<&'s ReadOnlyTable<K, V>> {
        if let Some(t) = cell.get() {
            return Ok(t);
        }
        let t = self.tx.open_table(def).map_err(|e| self.storage(e))?;
        Ok(cell.get_or_init(|| t))
    }

    /// The contexts the actor belongs to, read once.
    fn my_contexts(&self) -> Result<&HashSet<u64>> {
        if let Some(c) = self.my_contexts.get() {
            return Ok(c);
        }
        let mut mine = HashSet::new();
        if let Actor::Agent(a) = &self.actor {
            let memberships = self.lazy(&self.memberships, MEMBERSHIPS)?;
            for row in
                memberships.range((a.as_str(), 0)..=(a.as_str(), u64::MAX)).map_err(|x| self.storage(x))?
            {
                mine.insert(row.map_err(|x| self.storage(x))?.0.value().1);
            }
        }
        Ok(self.my_contexts.get_or_init(|| mine))
    }

    /// The metadata index (a packed map: see `schema::METADATA`).
    pub fn metadata(&self) -> Result<&ReadOnlyTable<&'static [u8], &'static [u8]>> {
        self.lazy(&self.metadata, METADATA)
    }

    pub fn contexts(&self) -> Result<&ReadOnlyTable<u64, &'static [u8]>> {
        self.lazy(&self.contexts, CONTEXTS)
    }

    pub fn members(&self) -> Result<&ReadOnlyTable<(u64, &'static str), ()>> {
        self.lazy(&self.members, MEMBERS)
    }

    pub fn context_engrams(&self) -> Result<&ReadOnlyTable<(u64, u64), ()>> {
        self.lazy(&self.context_engrams, CONTEXT_ENGRAMS)
    }

    pub fn engram_contexts(&self) -> Result<&ReadOnlyTable<(u64, u64), ()>> {
        self.lazy(&self.engram_contexts, ENGRAM_CONTEXTS)
    }

    /// Each segment's table named by `name(table number)`, in segment
    /// order, opened once.
    fn segment_tables<'s>(
        &'s self,
        cell: &'s OnceLock<Vec<ReadOnlyTable<&'static [u8], &'static [u8]>>>,
        name: fn(u64) -> String,
    ) -> Result<&'s [ReadOnlyTable<&'static [u8], &'static [u8]>]> {
        if cell.get().is_none() {
            let mut tables = Vec::new();
            for s in self.segs.iter() {
                tables.push(
                    self.tx.open_table(TableDefinition::new(&name(s.table))).map_err(|e| self.storage(e))?,
                );
            }
            let _ = cell.set(tables);
        }
        Ok(cell.get().expect("set above"))
    }

    /// Each segment's postings table, in segment order.
    pub fn postings(&self) -> Result<&[ReadOnlyTable<&'static [u8], &'static [u8]>]> {
        self.segment_tables(&self.postings, segments::postings_name)
    }

    /// Each segment's reverse edge table, in segment order.
    pub fn edges_in(&self) -> Result<&[ReadOnlyTable<&'static [u8], &'static [u8]>]> {
        self.segment_tables(&self.edges_in, segments::edges_in_name)
    }

    /// Each segment's table of edges by source, in segment order.
    pub fn edges_out(&self) -> Result<&[ReadOnlyTable<&'static [u8], &'static [u8]>]> {
        self.segment_tables(&self.edges_out, segments::edges_out_name)
    }

    /// The name of relation `number`.
    pub fn relation_name(&self, number: u64) -> Result<String> {
        RELATION_NUMBERING.name(self.lazy(&self.relations, RELATIONS)?, number).map_err(|f| self.fault(f))
    }

    /// The number of relation `name`, if any edge ever had it.
    pub fn relation_number(&self, name: &str) -> Result<Option<u64>> {
        let numbers = self.lazy(&self.relation_numbers, RELATION_NUMBERS)?;
        RELATION_NUMBERING
            .number(numbers, self.lazy(&self.relations, RELATIONS)?, name)
            .map_err(|f| self.fault(f))
    }

    /// The owner map (see `owners`).
    pub fn owners(&self) -> Result<&ReadOnlyTable<&'static [u8], &'static [u8]>> {
        self.lazy(&self.owners, OWNERS)
    }

    /// The actor's owner number, looked up once; `None` if the actor owns
    /// no engram (has never created one).
    fn my_number(&self) -> Result<Option<u64>> {
        if let Some(&n) = self.my_number.get() {
            return Ok(n);
        }
        let numbers = self.lazy(&self.owner_numbers, OWNER_NUMBERS)?;
        let by_number = self.lazy(&self.owners_by_number, OWNERS_BY_NUMBER)?;
        let n = OWNER_NUMBERING.number(numbers, by_number, self.actor.name()).map_err(|f| self.fault(f))?;
        Ok(*self.my_number.get_or_init(|| n))
    }

    /// The edges leaving `id`: (target, relation number, stored edge).
    pub fn outgoing(&self, id: EngramId) -> Result<Vec<(u64, u64, Vec<u8>)>> {
        let t = &self.edges_out()?[self.segs.index_covering(id)];
        segments::outgoing(t, id).map_err(|f| self.fault(f))
    }

    pub fn storage(&self, e: impl std::fmt::Display) -> GraphError {
        self.graph.storage(e)
    }

    pub fn fault(&self, f: Fault) -> GraphError {
        self.graph.fault(f)
    }

    pub fn corrupt(&self, c: Corruption) -> GraphError {
        self.graph.corrupt(c)
    }

    /// For the integrity check: a corrupt record goes on the list of
    /// problems; any other failure stops the check.
    fn note(&self, problems: &mut Vec<String>, f: Fault) -> Result<()> {
        match f {
            Fault::Corrupt(c) => {
                problems.push(c.to_string());
                Ok(())
            }
            Fault::Storage(e) => Err(self.storage(e)),
        }
    }

    pub fn meta(&self, key: &str) -> Result<u64> {
        Ok(self.meta.get(key).map_err(|e| self.storage(e))?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn stored(&self, id: EngramId) -> Result<Option<StoredEngram>> {
        match self.engrams.get(id).map_err(|e| self.storage(e))? {
            None => Ok(None),
            Some(v) => StoredEngram::decode(id, v.value()).map(Some).map_err(|c| self.corrupt(c)),
        }
    }

    /// Whether engram `id` is stored (without reading it).
    fn exists(&self, id: EngramId) -> Result<bool> {
        Ok(self.engrams.get(id).map_err(|e| self.storage(e))?.is_some())
    }

    /// Whether the actor may see engram `id` owned by `owner`.
    pub fn can_see(&self, id: EngramId, owner: &str) -> Result<bool> {
        self.may_see(id, || Ok(owner == self.actor.name()))
    }

    /// The rule of who sees what: the operator sees every engram, an agent
    /// those it owns (`owns`, asked only of an agent) and those of its
    /// contexts.
    fn may_see(&self, id: EngramId, owns: impl FnOnce() -> Result<bool>) -> Result<bool> {
        match self.actor {
            Actor::Operator => Ok(true),
            Actor::Agent(_) => Ok(owns()? || self.shares_context(id)?),
        }
    }

    /// Whether engram `id` is in a context the actor belongs to.
    fn shares_context(&self, id: EngramId) -> Result<bool> {
        let mine = self.my_contexts()?;
        if mine.is_empty() {
            return Ok(false);
        }
        for row in self.engram_contexts()?.range((id, 0)..=(id, u64::MAX)).map_err(|e| self.storage(e))? {
            let c = row.map_err(|e| self.storage(e))?.0.value().1;
            if mine.contains(&c) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The engram, or `NotFound` / `Denied`.
    pub fn visible(&self, id: EngramId) -> Result<StoredEngram> {
        let e = self.stored(id)?.ok_or(GraphError::NotFound(id))?;
        if self.can_see(id, &e.owner)? {
            Ok(e)
        } else {
            Err(GraphError::Denied(format!(
                "engram {id} belongs to {} and is in no context {} belongs to",
                e.owner,
                self.actor.name()
            )))
        }
    }

    /// Whether engram `id` exists and is visible (no error for either).
    /// Reads the owner map, not the engram; if the map's chunk is damaged,
    /// the engram's record (the integrity check names the chunk).
    pub fn sees(&self, id: EngramId) -> Result<bool> {
        let owner = match self.owner_lookup.owner(self.owners()?, id) {
            Ok(Some(owner)) => owner,
            Ok(None) => return Ok(false),
            Err(Fault::Corrupt(_)) => {
                let owner = match self.engrams.get(id).map_err(|e| self.storage(e))? {
                    Some(v) => StoredEngram::owner_of(id, v.value()).map_err(|c| self.corrupt(c))?,
                    None => return Ok(false),
                };
                return self.can_see(id, &owner);
            }
            Err(f) => return Err(self.fault(f)),
        };
        self.may_see(id, || Ok(Some(owner) == self.my_number()?))
    }

    /// For the integrity check: each of `names`' records decodes, each name
    /// has one number, and the numbers by name mirror them. Returns the
    /// names by number if every record decodes.
    fn check_names(&self, names: Names, problems: &mut Vec<String>) -> Result<Option<BTreeMap<u64, String>>> {
        let se = |e: &dyn std::fmt::Display| self.storage(e);
        let what = names.what;
        let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_number: BTreeMap<u64, String> = BTreeMap::new();
        let mut whole = true;
        let t = self.tx.open_table(names.by_number).map_err(|e| se(&e))?;
        for row in t.iter().map_err(|e| se(&e))? {
            let (k, _) = row.map_err(|e| se(&e))?;
            match names.name(&t, k.value()) {
                Ok(name) => {
                    if let Some(other) = by_name.insert(name.clone(), k.value()) {
                        problems.push(format!("{what} {name:?} has two numbers, {other} and {}", k.value()));
                    }
                    by_number.insert(k.value(), name);
                }
                Err(f) => {
                    whole = false;
                    self.note(problems, f)?;
                }
            }
        }
        let mut numbers: BTreeMap<String, u64> = BTreeMap::new();
        for row in self.tx.open_table(names.numbers).map_err(|e| se(&e))?.iter().map_err(|e| se(&e))? {
            let (k, v) = row.map_err(|e| se(&e))?;
            numbers.insert(k.value().to_string(), v.value());
        }
        if whole && numbers != by_name {
            problems.push(format!("the {what} numbers disagree with the {what} names"));
        }
        Ok(whole.then_some(by_number))
    }

    pub fn require_member(&self, context: ContextId) -> Result<()> {
        if self.contexts()?.get(context).map_err(|e| self.storage(e))?.is_none() {
            return Err(GraphError::NotFound(context));
        }
        match &self.actor {
            Actor::Operator => Ok(()),
            Actor::Agent(_) if self.my_contexts()?.contains(&context) => Ok(()),
            Actor::Agent(a) => Err(GraphError::Denied(format!("{a} is not a member of context {context}"))),
        }
    }

    fn check_limit(&self, what: &str, asked: u32, max: u32) -> Result<()> {
        if asked > max {
            return Err(GraphError::LimitExceeded(format!(
                "{what} {asked} is above the host's limit of {max}"
            )));
        }
        Ok(())
    }

    /// Neighbours of `id` along edges in both directions (relation filter:
    /// its number).
    fn adjacent(&self, id: EngramId, relation: Option<u64>, out: &mut Vec<EngramId>) -> Result<()> {
        for (t, r, _) in self.outgoing(id)? {
            if relation.is_none_or(|want| want == r) {
                out.push(t);
            }
        }
        for t in self.edges_in()? {
            for (s, r) in segments::incoming(t, id).map_err(|f| self.fault(f))? {
                if relation.is_none_or(|want| want == r) {
                    out.push(s);
                }
            }
        }
        Ok(())
    }

    fn successors(&self, id: EngramId, out: &mut Vec<EngramId>) -> Result<()> {
        out.extend(self.outgoing(id)?.into_iter().map(|(t, _, _)| t));
        Ok(())
    }
}

fn engram_of(id: EngramId, e: StoredEngram) -> Engram {
    Engram {
        id,
        owner: e.owner,
        data: EngramData {
            content: e.content,
            source: e.source,
            confidence: e.confidence,
            metadata: e.metadata,
        },
        created_ms: e.created_ms,
        updated_ms: e.updated_ms,
    }
}

impl MemoryGraph {
    /// Marks `m` visited by a graph walk: whether it is new and visible to
    /// the reader; `limit-exceeded` once the walk has visited more than
    /// `max_visited` engrams.
    fn first_visible_visit(
        &self,
        r: &Reader<'_>,
        seen: &mut HashSet<EngramId>,
        m: EngramId,
        walk: &str,
    ) -> Result<bool> {
        if !seen.insert(m) {
            return Ok(false);
        }
        if seen.len() > self.config.max_visited {
            return Err(GraphError::LimitExceeded(format!(
                "{walk} visited more than {} engrams",
                self.config.max_visited
            )));
        }
        r.sees(m)
    }

    /// The engram, if `actor` may see it.
    pub fn get(&self, actor: &Actor, id: EngramId) -> Result<Engram> {
        let r = Reader::new(self, actor)?;
        Ok(engram_of(id, r.visible(id)?))
    }

    /// Edges leaving `id` whose targets `actor` may see.
    pub fn connections(&self, actor: &Actor, id: EngramId) -> Result<Vec<Connection>> {
        let r = Reader::new(self, actor)?;
        r.visible(id)?;
        let mut out = Vec::new();
        let mut names: HashMap<u64, String> = HashMap::new();
        for (target, number, value) in r.outgoing(id)? {
            if !r.sees(target)? {
                continue;
            }
            let relation = match names.get(&number) {
                Some(name) => name.clone(),
                None => names.entry(number).or_insert(r.relation_name(number)?).clone(),
            };
            let edge = StoredEdge::decode((id, target, &relation), &value).map_err(|c| r.corrupt(c))?;
            out.push(Connection {
                source: id,
                target,
                relation,
                weight: edge.weight,
                metadata: edge.metadata,
            });
        }
        Ok(out)
    }

    /// A shortest directed path from `source` to `target` of at most
    /// `max_depth` edges through engrams `actor` may see (both ends
    /// included); `None` if there is none.
    pub fn path(
        &self,
        actor: &Actor,
        source: EngramId,
        target: EngramId,
        max_depth: u32,
    ) -> Result<Option<Vec<EngramId>>> {
        let r = Reader::new(self, actor)?;
        r.check_limit("depth", max_depth, self.config.max_depth)?;
        r.visible(source)?;
        r.visible(target)?;
        if source == target {
            return Ok(Some(vec![source]));
        }
        let mut parent: HashMap<EngramId, EngramId> = HashMap::new();
        let mut frontier = vec![source];
        let mut seen: HashSet<EngramId> = HashSet::from([source]);
        let mut next = Vec::new();
        for _ in 0..max_depth {
            let mut layer = Vec::new();
            for &n in &frontier {
                next.clear();
                r.successors(n, &mut next)?;
                for &m in &next {
                    if !self.first_visible_visit(&r, &mut seen, m, "the path search")? {
                        continue;
                    }
                    parent.insert(m, n);
                    if m == target {
                        let mut path = vec![target];
                        let mut at = target;
                        while let Some(&p) = parent.get(&at) {
                            path.push(p);
                            at = p;
                        }
                        path.reverse();
                        return Ok(Some(path));
                    }
                    layer.push(m);
                }
            }
            if layer.is_empty() {
                break;
            }
            frontier = layer;
        }
        Ok(None)
    }

    /// Engrams within `depth` edges of `id` (either direction; only
    /// `relation` edges if given) that `actor` may see, nearest first, at
    /// most `limit`; `id` itself is not included.
    pub fn neighbourhood(
        &self,
        actor: &Actor,
        id: EngramId,
        depth: u32,
        relation: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EngramId>> {
        let r = Reader::new(self, actor)?;
        r.check_limit("depth", depth, self.config.max_depth)?;
        r.check_limit("limit", limit, self.config.max_results)?;
        r.visible(id)?;
        let mut out = Vec::new();
        // A relation no edge ever had: no neighbours.
        let relation = match relation {
            Some(name) => match r.relation_number(name)? {
                Some(n) => Some(n),
                None => return Ok(out),
            },
            None => None,
        };
        if limit == 0 {
            return Ok(out);
        }
        let mut seen: HashSet<EngramId> = HashSet::from([id]);
        let mut queue = VecDeque::from([(id, 0u32)]);
        let mut next = Vec::new();
        while let Some((n, d)) = queue.pop_front() {
            if d == depth {
                continue;
            }
            next.clear();
            r.adjacent(n, relation, &mut next)?;
            for &m in &next {
                if !self.first_visible_visit(&r, &mut seen, m, "the neighbourhood walk")? {
                    continue;
                }
                out.push(m);
                if out.len() >= limit as usize {
                    return Ok(out);
                }
                queue.push_back((m, d + 1));
            }
        }
        Ok(out)
    }

    /// The engrams of a context, oldest first, at most `limit`.
    pub fn context_engrams(&self, actor: &Actor, context: ContextId, limit: u32) -> Result<Vec<EngramId>> {
        let r = Reader::new(self, actor)?;
        r.check_limit("limit", limit, self.config.max_results)?;
        r.require_member(context)?;
        let mut out = Vec::new();
        for row in r.context_engrams()?.range((context, 0)..=(context, u64::MAX)).map_err(|e| r.storage(e))? {
            if out.len() >= limit as usize {
                break;
            }
            out.push(row.map_err(|e| r.storage(e))?.0.value().1);
        }
        Ok(out)
    }

    /// A context's name, creator, members and size.
    pub fn context(&self, actor: &Actor, context: ContextId) -> Result<Context> {
        let r = Reader::new(self, actor)?;
        r.require_member(context)?;
        let raw =
            r.contexts()?.get(context).map_err(|e| r.storage(e))?.ok_or(GraphError::NotFound(context))?;
        let c = StoredContext::decode(context, raw.value()).map_err(|c| r.corrupt(c))?;
        let mut members = Vec::new();
        for row in r.members()?.range((context, "")..=(context, "\u{10ffff}")).map_err(|e| r.storage(e))? {
            members.push(row.map_err(|e| r.storage(e))?.0.value().1.to_string());
        }
        let mut engrams = 0;
        for row in r.context_engrams()?.range((context, 0)..=(context, u64::MAX)).map_err(|e| r.storage(e))? {
            row.map_err(|e| r.storage(e))?;
            engrams += 1;
        }
        Ok(Context {
            id: context,
            name: c.name,
            creator: c.creator,
            created_ms: c.created_ms,
            members,
            engrams,
        })
    }

    /// Every record's checksum, and every index checked against the engrams
    /// themselves; an empty list means the database is consistent. A
    /// corrupt record is listed (table, key and why) and the check goes
    /// on; index entries of engrams that do not decode are not compared
    /// (nor, then, the totals over all engrams).
    pub fn check_integrity(&self) -> Result<Vec<String>> {
        let r = Reader::new(self, &Actor::Operator)?;
        let se = |e: &dyn std::fmt::Display| r.storage(e);
        let mut problems = Vec::new();
        let mut postings_want: BTreeMap<String, Vec<postings::Posting>> = BTreeMap::new();
        let mut meta_want: BTreeSet<([u8; 16], u64)> = BTreeSet::new();
        let mut quota_want: BTreeMap<String, QuotaUse> = BTreeMap::new();
        let mut owners_want: BTreeMap<u64, String> = BTreeMap::new();
        // Engrams stored but not decodable: their index entries are unknown.
        let mut corrupt_ids: BTreeSet<u64> = BTreeSet::new();
        let (mut count, mut total_terms, mut max_id) = (0u64, 0u64, 0u64);
        for row in r.engrams.iter().map_err(|e| se(&e))? {
            let (k, v) = row.map_err(|e| se(&e))?;
            let id = k.value();
            count += 1;
            max_id = max_id.max(id);
            let e = match StoredEngram::decode(id, v.value()) {
                Ok(e) => e,
                Err(c) => {
                    r.note(&mut problems, c.into())?;
                    corrupt_ids.insert(id);
                    continue;
                }
            };
            let (counts, len) = term_counts(&e.content);
            total_terms += len as u64;
            for (t, tf) in counts {
                postings_want.entry(t).or_default().push(postings::Posting { id, tf, len });
            }
            for (mk, mv) in &e.metadata {
                meta_want.insert((metadata_pair(mk, mv), id));
            }
            owners_want.insert(id, e.owner.clone());
            let q = quota_want.entry(e.owner.clone()).or_default();
            q.engrams += 1;
            q.bytes += e.bytes();
        }
        let whole = corrupt_ids.is_empty();
        if r.meta("engram_count")? != count {
            problems.push(format!("engram_count {} but {count} engrams", r.meta("engram_count")?));
        }
        if whole && r.meta("total_terms")? != total_terms {
            problems
                .push(format!("total_terms {} but the engrams hold {total_terms}", r.meta("total_terms")?));
        }
        let next = self.next_engram.load(std::sync::atomic::Ordering::Relaxed);
        if count > 0 && r.meta("next_engram")? <= max_id {
            problems.push(format!(
                "next_engram {} is not above the largest id {max_id} ({next} in memory)",
                r.meta("next_engram")?
            ));
        }
        // Posting blocks: each within the ids its segment covers, and each
        // term's document frequency in a segment (its header there) against
        // the postings it holds.
        let mut postings_have: BTreeMap<String, Vec<postings::Posting>> = BTreeMap::new();
        let segs: Vec<segments::Segment> = r.segs.iter().copied().collect();
        // (segment, term) → (postings held, document frequency in the header)
        let mut df_have: BTreeMap<(u64, String), (u64, Option<u64>)> = BTreeMap::new();
        let mut index_whole = true;
        for (seg, t) in segs.iter().zip(r.postings()?) {
            let faults = postings::scan(t, |term, entry| match entry {
                postings::Entry::Header(df) => {
                    df_have.entry((seg.start, term.to_string())).or_default().1 = Some(df);
                }
                postings::Entry::Block(block) => {
                    if block.iter().any(|p| r.segs.covering(p.id).start != seg.start) {
                        problems.push(format!(
                            "posting block ({term:?}, {}) of segment {} holds ids outside it",
                            block[0].id, seg.start
                        ));
                    }
                    df_have.entry((seg.start, term.to_string())).or_default().0 += block.len() as u64;
                    postings_have
                        .entry(term.to_string())
                        .or_default()
                        .extend(block.into_iter().filter(|p| !corrupt_ids.contains(&p.id)));
                }
            })
            .map_err(|f| r.fault(f))?;
            // The entries of a corrupt chunk are unknown: the index is not
            // compared with the engrams then.
            index_whole &= faults.is_empty();
            for f in faults {
                r.note(&mut problems, f)?;
            }
        }
        // Tables of no segment (left by a bug: a merge drops its inputs).
        let mut known: BTreeSet<String> = BTreeSet::new();
        for seg in &segs {
            known.insert(segments::postings_name(seg.table));
            known.insert(segments::edges_in_name(seg.table));
            known.insert(segments::edges_out_name(seg.table));
        }
        for handle in r.tx.list_tables().map_err(|e| se(&e))? {
            let name = handle.name();
            if segments::is_segment_table(name) && !known.contains(name) {
                problems.push(format!("table {name} belongs to no segment"));
            }
        }
        postings_have.retain(|_, p| !p.is_empty());
        if !index_whole {
            postings_have.clear();
            postings_want.clear();
            df_have.clear();
        }
        if postings_have != postings_want {
            let diff = postings_want
                .keys()
                .chain(postings_have.keys())
                .find(|t| postings_want.get(*t) != postings_have.get(*t))
                .cloned()
                .unwrap_or_default();
            problems.push(format!("the inverted index disagrees with the engrams (first term: {diff:?})"));
        }
        for ((seg, term), (held, df)) in &df_have {
            if *df != Some(*held) {
                let df = df.map_or(String::from("missing"), |d| d.to_string());
                problems.push(format!(
                    "document frequency of {term:?} in segment {seg} is {df} but {held} engrams hold it"
                ));
            }
        }
        // Metadata index, quotas.
        let mut meta_have = BTreeSet::new();
        let mut meta_keys_whole = true;
        let faults = packed::scan(r.metadata()?, METADATA_KIND, |k, _| match parse_metadata_key(k) {
            Some((pair, id)) => {
                if !corrupt_ids.contains(&id) {
                    meta_have.insert((pair, id));
                }
            }
            None => meta_keys_whole = false,
        })
        .map_err(|f| r.fault(f))?;
        let meta_whole = faults.is_empty();
        for f in faults {
            r.note(&mut problems, f)?;
        }
        if !meta_keys_whole {
            problems.push(String::from("a key of the metadata index does not parse"));
        }
        if meta_whole && meta_have != meta_want {
            problems.push(String::from("the metadata index disagrees with the engrams"));
        }
        // (Every table from the one snapshot, so that a write meanwhile
        // cannot make two of them disagree.)
        let quota = r.tx.open_table(QUOTA).map_err(|e| se(&e))?;
        let mut quota_have = BTreeMap::new();
        let mut quota_whole = true;
        for row in quota.iter().map_err(|e| se(&e))? {
            let (k, v) = row.map_err(|e| se(&e))?;
            match decode_quota(k.value(), v.value()) {
                Ok(q) => {
                    quota_have.insert(k.value().to_string(), q);
                }
                Err(c) => {
                    r.note(&mut problems, c.into())?;
                    quota_whole = false;
                }
            }
        }
        if whole && quota_whole && quota_have != quota_want {
            problems.push(String::from("quota use disagrees with the engrams"));
        }
        // Edges decode, mirror each other and join existing engrams.
        let mut out_edges = BTreeSet::new();
        let mut edges_whole = true;
        for (seg, table) in segs.iter().zip(r.edges_out()?) {
            let mut found = Vec::new();
            let faults =
                packed::scan(table, segments::EDGES_OUT_KIND, |k, v| match segments::parse_edge_key(k) {
                    Some((s, t, rel)) => found.push((s, t, rel, v.to_vec())),
                    None => problems.push(format!("an edge key of segment {} does not parse", seg.start)),
                })
                .map_err(|f| r.fault(f))?;
            edges_whole &= faults.is_empty();
            for f in faults {
                r.note(&mut problems, f)?;
            }
            for (s, t, number, value) in found {
                let rel = match r.relation_name(number) {
                    Ok(name) => name,
                    Err(e) => {
                        problems.push(format!("edge {s} -> {t}: {e}"));
                        format!("#{number}")
                    }
                };
                if r.segs.covering(s).start != seg.start {
                    problems.push(format!("edge {s} -{rel}-> {t} is filed under segment {}", seg.start));
                }
                if let Err(c) = StoredEdge::decode((s, t, &rel), &value) {
                    r.note(&mut problems, c.into())?;
                }
                if !r.exists(s)? || !r.exists(t)? {
                    problems.push(format!("edge {s} -{rel}-> {t} joins a missing engram"));
                }
                out_edges.insert((s, t, number));
            }
        }
        let mut in_edges = BTreeSet::new();
        for (seg, table) in segs.iter().zip(r.edges_in()?) {
            let faults =
                packed::scan(table, segments::EDGES_KIND, |k, _| match segments::parse_edge_key(k) {
                    Some((t, s, rel)) => {
                        if r.segs.covering(s).start != seg.start {
                            problems.push(format!(
                                "reverse edge {s} -#{rel}-> {t} is filed under segment {}",
                                seg.start
                            ));
                        }
                        in_edges.insert((s, t, rel));
                    }
                    None => {
                        problems.push(format!("a reverse edge key of segment {} does not parse", seg.start))
                    }
                })
                .map_err(|f| r.fault(f))?;
            edges_whole &= faults.is_empty();
            for f in faults {
                r.note(&mut problems, f)?;
            }
        }
        if edges_whole && in_edges != out_edges {
            problems.push(String::from("incoming and outgoing edge tables disagree"));
        }
        r.check_names(RELATION_NUMBERING, &mut problems)?;
        // The owner map against the engrams' owners.
        let owner_names = r.check_names(OWNER_NUMBERING, &mut problems)?;
        let mut owners_have: BTreeMap<u64, u64> = BTreeMap::new();
        let faults = owners::scan(r.owners()?, |id, n| {
            owners_have.insert(id, n);
        })
        .map_err(|f| r.fault(f))?;
        let owners_whole = faults.is_empty();
        for f in faults {
            r.note(&mut problems, f)?;
        }
        if let (true, Some(names)) = (owners_whole, owner_names) {
            // (id → owner name) by the map and by the engrams, leaving out
            // the engrams that do not decode and the ids the map files under
            // a number without a name (each reported once).
            let mut have: BTreeMap<u64, &str> = BTreeMap::new();
            let mut want: BTreeMap<u64, &str> = owners_want.iter().map(|(&id, o)| (id, o.as_str())).collect();
            for (id, n) in owners_have {
                match names.get(&n) {
                    Some(name) if !corrupt_ids.contains(&id) => {
                        have.insert(id, name);
                    }
                    Some(_) => {}
                    None => {
                        want.remove(&id);
                        problems.push(format!(
                            "the owner map gives engram {id} owner number {n}, which has no name"
                        ));
                    }
                }
            }
            if let Some(id) = want.keys().chain(have.keys()).find(|id| want.get(id) != have.get(id)) {
                problems.push(format!("the owner map disagrees with the engrams (first at engram {id})"));
            }
        }
        // Contexts decode; context links and memberships mirror each other.
        for row in r.contexts()?.iter().map_err(|e| se(&e))? {
            let (k, v) = row.map_err(|e| se(&e))?;
            if let Err(c) = StoredContext::decode(k.value(), v.value()) {
                r.note(&mut problems, c.into())?;
            }
        }
        let mut ce = BTreeSet::new();
        for row in r.context_engrams()?.iter().map_err(|e| se(&e))? {
            let (k, _) = row.map_err(|e| se(&e))?;
            let (c, id) = k.value();
            if !r.exists(id)? || r.contexts()?.get(c).map_err(|e| se(&e))?.is_none() {
                problems.push(format!("context {c} lists missing engram {id} (or is missing itself)"));
            }
            ce.insert((c, id));
        }
        let mut ec = BTreeSet::new();
        for row in r.engram_contexts()?.iter().map_err(|e| se(&e))? {
            let (k, _) = row.map_err(|e| se(&e))?;
            ec.insert((k.value().1, k.value().0));
        }
        if ce != ec {
            problems.push(String::from("context/engram link tables disagree"));
        }
        let memberships = r.lazy(&r.memberships, MEMBERSHIPS)?;
        let mut m1 = BTreeSet::new();
        for row in r.members()?.iter().map_err(|e| se(&e))? {
            let (k, _) = row.map_err(|e| se(&e))?;
            m1.insert((k.value().0, k.value().1.to_string()));
        }
        let mut m2 = BTreeSet::new();
        for row in memberships.iter().map_err(|e| se(&e))? {
            let (k, _) = row.map_err(|e| se(&e))?;
            m2.insert((k.value().1, k.value().0.to_string()));
        }
        if m1 != m2 {
            problems.push(String::from("member tables disagree"));
        }
        Ok(problems)
    }
}
