//! Search: text (all words, ranked by BM25 from the posting blocks alone),
//! metadata key/values and context, combined with AND.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::graph::Reader;
use crate::packed;
use crate::postings::{self, Posting, TermPostings, Visit};
use crate::schema::{METADATA_KIND, metadata_pair, parse_metadata_key};
use crate::write::term_counts;
use crate::{GraphError, MemoryGraph, Result, SearchHit, SearchQuery};

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// One candidate looked up in a term's blocks (a seek, a chunk check and a
/// block decode) costs about as much as streaming this many of the term's
/// postings past the candidates (blocks that hold none are passed
/// undecoded). Measured: with 128, a common word and a word of a few
/// hundred engrams took twice as long.
const LOOKUP_COST: u64 = 1024;
/// Finding one candidate in a block by binary search costs about as much as
/// this many steps of merging the block with the candidates.
const SEARCH_COST: usize = 8;
/// BM25's length normalisation is tabulated for tf below this ...
const NORM_TF: usize = 8;
/// ... and document lengths below this.
const NORM_LEN: usize = 64;

impl MemoryGraph {
    /// Engrams matching every criterion of `query` that `actor` may see,
    /// best first: by BM25 when text is given, else newest first (score =
    /// confidence).
    pub fn search(&self, actor: &crate::Actor, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        let r = Reader::new(self, actor)?;
        if query.limit > self.config.max_results {
            return Err(GraphError::LimitExceeded(format!(
                "limit {} is above the host's limit of {}",
                query.limit, self.config.max_results
            )));
        }
        let text = query.text.as_deref().filter(|t| !t.trim().is_empty());
        if text.is_none() && query.metadata.is_empty() && query.context.is_none() {
            return Err(GraphError::Invalid(String::from("give text, metadata or a context to search by")));
        }
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        // Sorted candidate ids from the filters (None: no filter given).
        let mut filter: Option<Vec<u64>> = None;
        let mut narrow = |ids: Vec<u64>| {
            filter = Some(match filter.take() {
                None => ids,
                Some(have) => intersect(&have, &ids),
            });
        };
        if let Some(c) = query.context {
            r.require_member(c)?;
            let mut ids = Vec::new();
            for row in r.context_engrams()?.range((c, 0)..=(c, u64::MAX)).map_err(|e| r.storage(e))? {
                ids.push(row.map_err(|e| r.storage(e))?.0.value().1);
            }
            narrow(ids);
        }
        for (k, v) in &query.metadata {
            let pair = metadata_pair(k, v);
            let mut ids = Vec::new();
            let mut c = packed::Cursor::seek(r.metadata()?, METADATA_KIND, &pair).map_err(|f| r.fault(f))?;
            while let Some(key) = c.next(|key, _| key.to_vec()).map_err(|f| r.fault(f))? {
                if !key.starts_with(&pair) {
                    break;
                }
                match parse_metadata_key(&key) {
                    Some((_, id)) => ids.push(id),
                    None => {
                        return Err(r.fault(packed::corrupt(
                            METADATA_KIND,
                            &key,
                            "a key that does not parse",
                        )));
                    }
                }
            }
            narrow(ids);
        }

        let limit = query.limit as usize;
        let Some(text) = text else {
            // Newest first; the score is the confidence.
            let ids = filter.unwrap_or_default();
            return self.visible_hits(&r, ids.into_iter().rev().map(|id| (id, f32::NAN)), limit);
        };
        let (counts, _) = term_counts(text);
        if counts.is_empty() {
            return Err(GraphError::Invalid(format!("{text:?} has no searchable words")));
        }
        let terms: Vec<String> = counts.into_iter().map(|(t, _)| t).collect();
        // First keep only the best few candidates (a bounded heap while the
        // last term streams); rank everything only if the caller cannot see
        // enough of those.
        let head = limit.saturating_mul(4).max(64);
        for keep in [Some(head), None] {
            let (mut scored, truncated) = rank_text(&r, &terms, filter.as_deref(), keep)?;
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let hits = self.visible_hits(&r, scored.into_iter(), limit)?;
            if hits.len() >= limit || !truncated {
                return Ok(hits);
            }
        }
        unreachable!("the second pass ranks every candidate")
    }

    /// The first `limit` of `ranked` the reader may see (at most
    /// `max_visited` looked at); a NaN score is replaced by the confidence
    /// (only then is the whole engram decoded).
    fn visible_hits(
        &self,
        r: &Reader<'_>,
        ranked: impl Iterator<Item = (u64, f32)>,
        limit: usize,
    ) -> Result<Vec<SearchHit>> {
        let mut hits = Vec::new();
        for (id, score) in ranked.take(self.config.max_visited) {
            if hits.len() >= limit {
                break;
            }
            if !score.is_nan() {
                if r.sees(id)? {
                    hits.push(SearchHit { id, score });
                }
                continue;
            }
            let Some(e) = r.stored(id)? else { continue };
            if r.can_see(id, &e.owner)? {
                hits.push(SearchHit { id, score: e.confidence });
            }
        }
        Ok(hits)
    }
}

/// A candidate ordered worst-first in a `BinaryHeap<Reverse<_>>`... i.e.
/// better = greater: higher score, then smaller id.
#[derive(PartialEq)]
struct Ranked(f32, u64);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Engrams holding every term, with BM25 scores, restricted to `filter`.
/// Terms are taken rarest first; once the candidates are few compared with
/// a term's postings, that term is looked up per candidate instead of read
/// whole.
fn rank_text(
    r: &Reader<'_>,
    terms: &[String],
    filter: Option<&[u64]>,
    keep: Option<usize>,
) -> Result<(Vec<(u64, f32)>, bool)> {
    let n = r.meta("engram_count")?.max(1) as f32;
    let avg_len = (r.meta("total_terms")? as f32 / n).max(1.0);
    let mut with_df = Vec::with_capacity(terms.len());
    for t in terms {
        let opened = TermPostings::open(r.postings()?, t).map_err(|f| r.fault(f))?;
        if opened.df() == 0 {
            return Ok((Vec::new(), false));
        }
        with_df.push((opened.df(), t.as_str(), opened));
    }
    with_df.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // BM25 with the term's idf computed once.
    let norm_of = |tf: u32, len: u32| {
        let tf = tf as f32;
        tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len as f32 / avg_len))
    };
    // The common (tf, length) pairs looked up rather than divided for.
    let table: Vec<f32> =
        (0..NORM_TF * NORM_LEN).map(|i| norm_of((i / NORM_LEN) as u32, (i % NORM_LEN) as u32)).collect();
    let norm = |p: &Posting| {
        if (p.tf as usize) < NORM_TF && (p.len as usize) < NORM_LEN {
            table[p.tf as usize * NORM_LEN + p.len as usize]
        } else {
            norm_of(p.tf, p.len)
        }
    };
    let idf = |df: u64| (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
    let mut cands: Option<Vec<(u64, f32)>> = filter.map(|ids| ids.iter().map(|&id| (id, 0.0)).collect());
    let last = with_df.len() - 1;
    for (i, (df, term, opened)) in with_df.into_iter().enumerate() {
        let w = idf(df);
        if i == last
            && let Some(k) = keep
        {
            // The last term: stream the survivors through a bounded heap.
            let heap: RefCell<BinaryHeap<Reverse<Ranked>>> = RefCell::new(BinaryHeap::with_capacity(k + 1));
            let mut seen = 0usize;
            let mut skipped = false;
            // The k-th best score once the heap is full: anything below it
            // is turned away without touching the heap.
            let mut floor = f32::NEG_INFINITY;
            let mut offer = |id: u64, score: f32| {
                seen += 1;
                if score < floor {
                    return;
                }
                let candidate = Ranked(score, id);
                let mut heap = heap.borrow_mut();
                if heap.len() < k {
                    heap.push(Reverse(candidate));
                } else if heap.peek().is_some_and(|Reverse(worst)| candidate > *worst) {
                    heap.pop();
                    heap.push(Reverse(candidate));
                }
                if heap.len() >= k {
                    floor = heap.peek().map_or(floor, |Reverse(worst)| worst.0);
                }
            };
            // A block whose best possible score (its largest tf, shortest
            // document, plus the best score carried in) cannot beat the
            // k-th best so far is skipped undecoded.
            let carried = cands.as_ref().map_or(0.0, |c| c.iter().map(|x| x.1).fold(0.0, f32::max));
            let mut skip = |max_tf: u32, min_len: u32| {
                let heap = heap.borrow();
                let beaten = heap.len() >= k
                    && heap
                        .peek()
                        .is_some_and(|Reverse(worst)| carried + w * norm_of(max_tf, min_len) < worst.0);
                skipped |= beaten;
                beaten
            };
            score_term(r, term, opened, cands.as_deref(), &mut skip, &mut |id, s| offer(id, s), &|p| {
                w * norm(p)
            })?;
            let out = heap.into_inner().into_iter().map(|Reverse(Ranked(s, id))| (id, s)).collect();
            return Ok((out, seen > k || skipped));
        }
        let mut next = Vec::with_capacity(cands.as_ref().map_or(df as usize, |c| c.len().min(df as usize)));
        score_term(
            r,
            term,
            opened,
            cands.as_deref(),
            &mut |_, _| false,
            &mut |id, s| next.push((id, s)),
            &|p| w * norm(p),
        )?;
        cands = Some(next);
        if cands.as_ref().is_some_and(Vec::is_empty) {
            break;
        }
    }
    Ok((cands.unwrap_or_default(), false))
}

/// The first index from `from` on at which `before` is false (it must be
/// true, then false, along `items`), found by steps that double from
/// `from`: the answer is usually near.
fn gallop<T>(items: &[T], from: usize, before: impl Fn(&T) -> bool) -> usize {
    let (mut lo, mut step) = (from, 1);
    while lo + step < items.len() && before(&items[lo + step]) {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step + 1).min(items.len());
    lo + items[lo..hi].partition_point(before)
}

/// Calls `emit(id, score)` for every engram holding `term` — among `cands`
/// (with their scores so far added) if given, else all — with the term's
/// contribution `weight(posting)`. Few candidates are looked up one by one;
/// otherwise the term's blocks stream past the sorted candidates, skipping
/// undecoded the blocks that hold no candidate and those for which
/// `skip(max_tf, min_len)` says they cannot matter.
///
/// Generic rather than `dyn` so that the per-posting closures are inlined.
fn score_term(
    r: &Reader<'_>,
    term: &str,
    opened: TermPostings<'_>,
    cands: Option<&[(u64, f32)]>,
    skip: &mut impl FnMut(u32, u32) -> bool,
    emit: &mut impl FnMut(u64, f32),
    weight: &impl Fn(&Posting) -> f32,
) -> Result<()> {
    let se = |f: crate::record::Fault| r.fault(f);
    let df = opened.df();
    match cands {
        Some(c) if (c.len() as u64).saturating_mul(LOOKUP_COST) < df => {
            for &(id, s) in c {
                if let Some(p) = postings::lookup(&r.segs, r.postings()?, term, id).map_err(se)? {
                    emit(id, s + weight(&p));
                }
            }
        }
        Some(c) => {
            // The first candidate not yet passed by the blocks.
            let at = std::cell::Cell::new(0);
            let visit = |b: &postings::BlockHeader| {
                let ci = gallop(c, at.get(), |x| x.0 < b.first);
                at.set(ci);
                match c.get(ci) {
                    None => Visit::Stop,
                    Some(x) if b.end.is_some_and(|end| x.0 >= end) => Visit::Skip,
                    Some(_) if skip(b.max_tf, b.min_len) => Visit::Skip,
                    Some(_) => Visit::Decode,
                }
            };
            opened
                .for_each_block(visit, |block| {
                    let ids = block.ids();
                    let ci = at.get();
                    let last = ids[ids.len() - 1];
                    let end = gallop(c, ci, |x| x.0 <= last);
                    let (within, mut j) = (&c[ci..end], 0);
                    if within.len() * SEARCH_COST < ids.len() {
                        // Few candidates in the block: search for each.
                        for &(want, s) in within {
                            j += ids[j..].partition_point(|&id| id < want);
                            if ids.get(j) == Some(&want) {
                                emit(want, s + weight(&block.posting(j)));
                            }
                        }
                    } else {
                        // A merge whose steps are not branches: which list
                        // moves on next is as good as random, and a
                        // mispredicted branch per posting costs more than
                        // the rest of the step.
                        let mut k = 0;
                        while j < ids.len() && k < within.len() {
                            let (want, have) = (within[k].0, ids[j]);
                            if want == have {
                                emit(have, within[k].1 + weight(&block.posting(j)));
                            }
                            k += usize::from(want <= have);
                            j += usize::from(have <= want);
                        }
                    }
                    at.set(end);
                    end < c.len()
                })
                .map_err(se)?;
        }
        None => opened
            .for_each_block(
                |b| if skip(b.max_tf, b.min_len) { Visit::Skip } else { Visit::Decode },
                |block| {
                    block.for_each(|p| emit(p.id, weight(&p)));
                    true
                },
            )
            .map_err(se)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::gallop;

    #[test]
    fn gallop_finds_what_a_binary_search_finds() {
        for n in 0..40usize {
            let items: Vec<usize> = (0..n).map(|i| i * 3).collect();
            for from in 0..=n {
                for x in 0..3 * n + 2 {
                    let want = items.partition_point(|&v| v < x).max(from);
                    assert_eq!(gallop(&items, from, |&v| v < x), want, "n {n} from {from} x {x}");
                }
            }
        }
    }
}
