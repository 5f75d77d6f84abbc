//! Search: text (all words, ranked by BM25 from the posting blocks alone),
//! metadata key/values and context, combined with AND.

use std::collections::HashSet;

use crate::graph::Reader;
use crate::postings::{self, Posting};
use crate::write::term_counts;
use crate::{GraphError, MemoryGraph, Result, SearchHit, SearchQuery};

const K1: f32 = 1.2;
const B: f32 = 0.75;

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
            for row in r.context_engrams.range((c, 0)..=(c, u64::MAX)).map_err(|e| r.storage(e))? {
                ids.push(row.map_err(|e| r.storage(e))?.0.value().1);
            }
            narrow(ids);
        }
        for (k, v) in &query.metadata {
            let mut ids = Vec::new();
            for row in r
                .meta_index
                .range((k.as_str(), v.as_str(), 0)..=(k.as_str(), v.as_str(), u64::MAX))
                .map_err(|e| r.storage(e))?
            {
                ids.push(row.map_err(|e| r.storage(e))?.0.value().2);
            }
            narrow(ids);
        }

        let mut scored: Vec<(u64, f32)> = match text {
            Some(text) => {
                let (counts, _) = term_counts(text);
                if counts.is_empty() {
                    return Err(GraphError::Invalid(format!("{text:?} has no searchable words")));
                }
                rank_text(&r, counts.into_keys().collect(), filter.as_deref())?
            }
            None => filter.unwrap_or_default().into_iter().rev().map(|id| (id, f32::NAN)).collect(),
        };
        if text.is_some() {
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let mut hits = Vec::new();
        for (checked, (id, score)) in scored.into_iter().enumerate() {
            if hits.len() >= query.limit as usize || checked >= self.config.max_visited {
                break;
            }
            let Some(e) = r.stored(id)? else { continue };
            if !r.can_see(id, &e.owner)? {
                continue;
            }
            hits.push(SearchHit { id, score: if score.is_nan() { e.confidence } else { score } });
        }
        Ok(hits)
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
fn rank_text(r: &Reader<'_>, terms: Vec<String>, filter: Option<&[u64]>) -> Result<Vec<(u64, f32)>> {
    let n = r.meta("engram_count")?.max(1) as f32;
    let avg_len = (r.meta("total_terms")? as f32 / n).max(1.0);
    let mut with_df = Vec::with_capacity(terms.len());
    for t in terms {
        let df = r.doc_freq.get(t.as_str()).map_err(|e| r.storage(e))?.map(|v| v.value()).unwrap_or(0);
        if df == 0 {
            return Ok(Vec::new());
        }
        with_df.push((df, t));
    }
    with_df.sort();
    let bm25 = |p: &Posting, df: u64| {
        let idf = (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
        let tf = p.tf as f32;
        idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * p.len as f32 / avg_len))
    };
    let mut cands: Option<Vec<(u64, f32)>> = filter.map(|ids| ids.iter().map(|&id| (id, 0.0)).collect());
    let lookups_cheaper = |cands: usize, df: u64| (cands as u64).saturating_mul(16) < df;
    for (df, term) in &with_df {
        cands = Some(match cands {
            Some(c) if lookups_cheaper(c.len(), *df) => {
                let mut next = Vec::with_capacity(c.len());
                for (id, s) in c {
                    if let Some(p) = postings::lookup(&r.postings, term, id).map_err(|e| r.storage(e))? {
                        next.push((id, s + bm25(&p, *df)));
                    }
                }
                next
            }
            Some(c) => {
                let all = postings::read_all(&r.postings, term).map_err(|e| r.storage(e))?;
                let (mut i, mut out) = (0, Vec::with_capacity(c.len().min(all.len())));
                for (id, s) in c {
                    while i < all.len() && all[i].id < id {
                        i += 1;
                    }
                    if i < all.len() && all[i].id == id {
                        out.push((id, s + bm25(&all[i], *df)));
                    }
                }
                out
            }
            None => postings::read_all(&r.postings, term)
                .map_err(|e| r.storage(e))?
                .iter()
                .map(|p| (p.id, bm25(p, *df)))
                .collect(),
        });
        if cands.as_ref().is_some_and(Vec::is_empty) {
            break;
        }
    }
    let out = cands.unwrap_or_default();
    debug_assert!(out.iter().map(|c| c.0).collect::<HashSet<_>>().len() == out.len());
    Ok(out)
}
