//! The HNSW graph (Malkov & Yashunin, "Efficient and robust approximate
//! nearest neighbor search using Hierarchical Navigable Small World graphs",
//! 2016/2018), independent of the component bindings so it can be tested
//! and benchmarked natively.
//!
//! - Layer assignment: `floor(-ln(U) * mL)` with `mL = 1 / ln(M)`.
//! - Search: greedy descent through the upper layers, then a beam search of
//!   width `ef` on layer 0 (Algorithm 2).
//! - Neighbour selection: the paper's heuristic (Algorithm 4): a candidate is
//!   kept only if it is closer to the new element than to every neighbour
//!   already kept; at most M per upper layer, M0 = 2M on layer 0. Overfull
//!   neighbour lists are shrunk with the same heuristic.
//! - Storage: all vectors in one contiguous `Vec<f32>`, layer-0 links in one
//!   contiguous `Vec<u32>` (fixed stride), upper-layer links per node.
//! - Removal: tombstones; removed nodes still route searches but are never
//!   returned.
#![no_std]

extern crate alloc;

use alloc::borrow::Cow;
use alloc::collections::BinaryHeap;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::hash::BuildHasher;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// Distance between stored vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// `1 - cos`, on vectors normalised at insert.
    Cosine,
    SquaredL2,
}

/// How vectors are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Storage {
    /// 4 bytes per element.
    Full,
    /// One byte per element plus an (offset, scale) pair per vector; each
    /// vector is quantized over its own min..max range.
    Int8,
}

/// Validated index settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub dimension: usize,
    pub metric: Metric,
    pub storage: Storage,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub seed: u64,
}

/// Why the graph refused a request.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphError {
    Dimension { expected: usize, found: usize },
    Duplicate(u64),
    NonFinite(u64),
    Config(&'static str),
}

impl Params {
    pub fn check(&self) -> Result<(), GraphError> {
        if self.dimension == 0 {
            return Err(GraphError::Config("dimension must be at least 1"));
        }
        if self.m < 2 || self.m > 256 {
            return Err(GraphError::Config("m must be in [2, 256]"));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(GraphError::Config("ef-construction and ef-search must be at least 1"));
        }
        Ok(())
    }
}

/// A (distance, node) pair ordered by distance, then node (total order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Near(pub f32, pub u32);

impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The index.
#[derive(Serialize, Deserialize)]
pub struct Graph {
    pub params: Params,
    /// Node → external id.
    pub ids: Vec<u64>,
    /// The vectors, `len * dimension` elements.
    pub vectors: Vectors,
    /// Node → top layer.
    pub levels: Vec<u8>,
    /// Layer-0 links: node `n` owns `links0[n * (m0 + 1)..]`, first the
    /// count, then up to `m0` neighbours.
    pub links0: Vec<u32>,
    /// Upper-layer links: `upper[n][l - 1]` for layers 1..=levels[n] (a
    /// boxed slice: most nodes have none, and its header is smaller).
    pub upper: Vec<alloc::boxed::Box<[Vec<u32>]>>,
    pub removed: Vec<bool>,
    pub live: usize,
    pub entry: Option<u32>,
    pub rng: u64,
    /// External id → node, kept as node numbers only (the ids are in
    /// `ids`): a third of a map's memory.
    #[serde(skip)]
    index: IdIndex,
    #[serde(skip)]
    visited: Visited,
    /// Reused search heaps (no allocation per search).
    #[serde(skip)]
    scratch: Scratch,
}

/// A hash table of node numbers keyed by their external ids.
#[derive(Default)]
struct IdIndex {
    nodes: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl IdIndex {
    fn get(&self, ids: &[u64], id: u64) -> Option<u32> {
        self.nodes.find(self.hasher.hash_one(id), |&n| ids[n as usize] == id).copied()
    }

    fn insert(&mut self, ids: &[u64], node: u32) {
        let hasher = &self.hasher;
        self.nodes
            .insert_unique(hasher.hash_one(ids[node as usize]), node, |&n| hasher.hash_one(ids[n as usize]));
    }

    fn bytes(&self) -> usize {
        // A bucket and its control byte.
        self.nodes.capacity() * (core::mem::size_of::<u32>() + 1)
    }
}

#[derive(Default)]
struct Scratch {
    candidates: BinaryHeap<core::cmp::Reverse<Near>>,
    results: BinaryHeap<Near>,
}

/// Vector storage.
#[derive(Serialize, Deserialize)]
pub enum Vectors {
    Full(Vec<f32>),
    Int8 { codes: Vec<u8>, ranges: Vec<(f32, f32)> },
}

/// Single inserts grow the storage by `len / GROWTH` nodes at a time.
const GROWTH: usize = 8;

/// Generation-stamped visited set: clearing is O(1).
#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    stamp: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.stamp = 1;
        }
    }
    /// Marks `i`; true if it was not marked yet.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let slot = &mut self.marks[i as usize];
        if *slot == self.stamp {
            false
        } else {
            *slot = self.stamp;
            true
        }
    }
}

/// Natural log for level assignment (`x` in (0, 1]): exponent from the bits,
/// then `2 atanh((m-1)/(m+1))` on the mantissa; error below 1e-9.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let y = (m - 1.0) / (m + 1.0);
    let y2 = y * y;
    let mut term = y;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= y2;
        k += 2.0;
    }
    2.0 * sum + exp as f64 * core::f64::consts::LN_2
}

impl Graph {
    pub fn new(params: Params) -> Result<Graph, GraphError> {
        params.check()?;
        let rng = params.seed ^ 0x2545_f491_4f6c_dd1d;
        let vectors = match params.storage {
            Storage::Full => Vectors::Full(Vec::new()),
            Storage::Int8 => Vectors::Int8 { codes: Vec::new(), ranges: Vec::new() },
        };
        Ok(Graph {
            params,
            ids: Vec::new(),
            vectors,
            levels: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            removed: Vec::new(),
            live: 0,
            entry: None,
            rng,
            index: IdIndex::default(),
            visited: Visited::default(),
            scratch: Scratch::default(),
        })
    }

    fn m0(&self) -> usize {
        2 * self.params.m
    }

    fn stride0(&self) -> usize {
        self.m0() + 1
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether a vector with external id `id` is stored (removed or not).
    pub fn contains(&self, id: u64) -> bool {
        self.index.get(&self.ids, id).is_some()
    }

    /// Rebuilds what snapshots do not store.
    pub fn reindex(&mut self) {
        let mut index = IdIndex::default();
        index.nodes.reserve(self.ids.len(), |&n| index.hasher.hash_one(self.ids[n as usize]));
        for node in 0..self.ids.len() as u32 {
            index.insert(&self.ids, node);
        }
        self.index = index;
    }

    /// Node `n`'s vector as f32 (decoded for int8 storage).
    fn stored(&self, n: u32) -> Cow<'_, [f32]> {
        let d = self.params.dimension;
        let at = n as usize * d;
        match &self.vectors {
            Vectors::Full(v) => Cow::Borrowed(&v[at..at + d]),
            Vectors::Int8 { codes, ranges } => {
                let (offset, scale) = ranges[n as usize];
                let q = elex_kernels::Quantized { codes: &codes[at..at + d], offset, scale };
                let mut out = Vec::with_capacity(d);
                q.decode(&mut out);
                Cow::Owned(out)
            }
        }
    }

    #[inline]
    fn dist(&self, q: &[f32], n: u32) -> f32 {
        let d = self.params.dimension;
        let at = n as usize * d;
        match &self.vectors {
            Vectors::Full(v) => {
                let v = &v[at..at + d];
                match self.params.metric {
                    Metric::Cosine => 1.0 - elex_kernels::score_unchecked(elex_kernels::Metric::Dot, q, v),
                    Metric::SquaredL2 => elex_kernels::score_unchecked(elex_kernels::Metric::SquaredL2, q, v),
                }
            }
            Vectors::Int8 { codes, ranges } => {
                let (offset, scale) = ranges[n as usize];
                let b = elex_kernels::Quantized { codes: &codes[at..at + d], offset, scale };
                match self.params.metric {
                    Metric::Cosine => 1.0 - elex_kernels::dot_quantized(q, b),
                    Metric::SquaredL2 => elex_kernels::squared_l2_quantized(q, b),
                }
            }
        }
    }

    fn push_vector(&mut self, v: &[f32]) {
        match &mut self.vectors {
            Vectors::Full(all) => all.extend_from_slice(v),
            Vectors::Int8 { codes, ranges } => ranges.push(elex_kernels::Quantized::encode(v, codes)),
        }
    }

    /// Makes room for `additional` more vectors without over-allocating.
    pub fn reserve(&mut self, additional: usize) {
        let d = self.params.dimension;
        let stride = self.stride0();
        match &mut self.vectors {
            Vectors::Full(all) => all.reserve_exact(additional * d),
            Vectors::Int8 { codes, ranges } => {
                codes.reserve_exact(additional * d);
                ranges.reserve_exact(additional);
            }
        }
        self.ids.reserve_exact(additional);
        self.levels.reserve_exact(additional);
        self.links0.reserve_exact(additional * stride);
        self.upper.reserve_exact(additional);
        self.removed.reserve_exact(additional);
    }

    fn links(&self, n: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            let s = n as usize * self.stride0();
            let count = self.links0[s] as usize;
            &self.links0[s + 1..s + 1 + count]
        } else {
            &self.upper[n as usize][layer - 1]
        }
    }

    fn set_links(&mut self, n: u32, layer: usize, list: &[u32]) {
        if layer == 0 {
            let s = n as usize * self.stride0();
            self.links0[s] = list.len() as u32;
            self.links0[s + 1..s + 1 + list.len()].copy_from_slice(list);
        } else {
            let l = &mut self.upper[n as usize][layer - 1];
            l.clear();
            l.extend_from_slice(list);
        }
    }

    fn random_level(&mut self) -> usize {
        // SplitMix64 → uniform in (0, 1].
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / ln(self.params.m as f64);
        let level = (-ln(u) * ml) as usize;
        level.min(32)
    }

    /// Greedy walk to the closest node on one layer.
    fn greedy(&self, q: &[f32], mut cur: u32, layer: usize) -> u32 {
        let mut d = self.dist(q, cur);
        loop {
            let mut moved = false;
            for &n in self.links(cur, layer) {
                let dn = self.dist(q, n);
                if dn < d {
                    d = dn;
                    cur = n;
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Beam search on one layer (Algorithm 2). Returns up to `ef` nodes
    /// sorted by distance, removed nodes included (they still route).
    fn search_layer(&mut self, q: &[f32], entry: u32, ef: usize, layer: usize) -> Vec<Near> {
        let n = self.len();
        let mut visited = core::mem::take(&mut self.visited);
        visited.reset(n);
        visited.insert(entry);
        let d0 = self.dist(q, entry);
        let Scratch { mut candidates, mut results } = core::mem::take(&mut self.scratch);
        candidates.clear();
        results.clear();
        candidates.push(core::cmp::Reverse(Near(d0, entry)));
        results.push(Near(d0, entry));
        while let Some(core::cmp::Reverse(c)) = candidates.pop() {
            let worst = results.peek().map(|r| r.0).unwrap_or(f32::INFINITY);
            if c.0 > worst && results.len() >= ef {
                break;
            }
            for &nb in self.links(c.1, layer) {
                if !visited.insert(nb) {
                    continue;
                }
                let d = self.dist(q, nb);
                let worst = results.peek().map(|r| r.0).unwrap_or(f32::INFINITY);
                if results.len() < ef || d < worst {
                    candidates.push(core::cmp::Reverse(Near(d, nb)));
                    results.push(Near(d, nb));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        self.visited = visited;
        let mut out: Vec<Near> = results.drain().collect();
        out.sort_unstable();
        self.scratch = Scratch { candidates, results };
        out
    }

    /// Algorithm 4: keep a candidate only if it is closer to the base than to
    /// every neighbour kept so far. `candidates` sorted by distance to base.
    fn select(&self, candidates: &[Near], max: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for c in candidates {
            if kept.len() >= max {
                break;
            }
            let cv = self.stored(c.1);
            let diverse = kept.iter().all(|&k| self.dist(&cv, k) > c.0);
            if diverse {
                kept.push(c.1);
            }
        }
        kept
    }

    /// `v` as stored: unit length for cosine, as given for L2.
    fn normalized<'v>(&self, v: &'v [f32]) -> Cow<'v, [f32]> {
        if self.params.metric == Metric::Cosine {
            let mut owned = Vec::from(v);
            elex_kernels::normalize(&mut owned);
            Cow::Owned(owned)
        } else {
            Cow::Borrowed(v)
        }
    }

    pub fn check_vector(&self, id: u64, v: &[f32]) -> Result<(), GraphError> {
        if v.len() != self.params.dimension {
            return Err(GraphError::Dimension { expected: self.params.dimension, found: v.len() });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(GraphError::NonFinite(id));
        }
        Ok(())
    }

    /// Inserts one vector (already checked with [`check_vector`]).
    pub fn insert(&mut self, id: u64, v: &[f32]) -> Result<(), GraphError> {
        self.check_vector(id, v)?;
        if self.contains(id) {
            return Err(GraphError::Duplicate(id));
        }
        let v = self.normalized(v);
        let node = self.len() as u32;
        let level = self.random_level();
        if self.ids.len() == self.ids.capacity() {
            // Grow by an eighth, not by doubling: one insert past a
            // reserved batch must not double the vectors' memory.
            self.reserve((self.len() / GROWTH).max(16));
        }
        self.ids.push(id);
        self.index.insert(&self.ids, node);
        self.push_vector(&v);
        self.levels.push(level as u8);
        let stride = self.stride0();
        self.links0.resize(self.links0.len() + stride, 0);
        self.upper.push(vec![Vec::new(); level].into_boxed_slice());
        self.removed.push(false);
        self.live += 1;

        let Some(entry) = self.entry else {
            self.entry = Some(node);
            return Ok(());
        };
        let top = self.levels[entry as usize] as usize;
        let mut cur = entry;
        for layer in (level + 1..=top).rev() {
            cur = self.greedy(&v, cur, layer);
        }
        let m = self.params.m;
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(&v, cur, self.params.ef_construction, layer);
            cur = found[0].1;
            let neighbours = self.select(&found, m);
            self.set_links(node, layer, &neighbours);
            let cap = if layer == 0 { self.m0() } else { m };
            for &nb in &neighbours {
                let mut list: Vec<u32> = Vec::from(self.links(nb, layer));
                if list.len() < cap {
                    list.push(node);
                } else {
                    let nbv = self.stored(nb);
                    let mut cands: Vec<Near> = list
                        .iter()
                        .chain(core::iter::once(&node))
                        .map(|&x| Near(self.dist(&nbv, x), x))
                        .collect();
                    drop(nbv);
                    cands.sort_unstable();
                    list = self.select(&cands, cap);
                }
                self.set_links(nb, layer, &list);
            }
        }
        if level > top {
            self.entry = Some(node);
        }
        Ok(())
    }

    /// The `k` nearest live vectors, closest first, as (id, distance).
    pub fn search(&mut self, q: &[f32], k: usize, ef: usize) -> Result<Vec<(u64, f32)>, GraphError> {
        self.check_vector(u64::MAX, q)?;
        let Some(entry) = self.entry else {
            return Ok(Vec::new());
        };
        let q = self.normalized(q);
        let ef = ef.max(k).max(1);
        let mut cur = entry;
        for layer in (1..=self.levels[entry as usize] as usize).rev() {
            cur = self.greedy(&q, cur, layer);
        }
        let found = self.search_layer(&q, cur, ef, 0);
        Ok(found
            .into_iter()
            .filter(|n| !self.removed[n.1 as usize])
            .take(k)
            .map(|n| (self.ids[n.1 as usize], n.0))
            .collect())
    }

    /// Tombstones `id`; true if it was live.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.index.get(&self.ids, id) {
            Some(n) if !self.removed[n as usize] => {
                self.removed[n as usize] = true;
                self.live -= 1;
                true
            }
            _ => false,
        }
    }

    /// Bytes held by vectors, links and bookkeeping.
    pub fn memory_bytes(&self) -> usize {
        use core::mem::size_of;
        let upper: usize = self
            .upper
            .iter()
            .map(|u| u.len() * size_of::<Vec<u32>>() + u.iter().map(|l| l.capacity() * 4).sum::<usize>())
            .sum();
        let vectors = match &self.vectors {
            Vectors::Full(v) => v.capacity() * 4,
            Vectors::Int8 { codes, ranges } => codes.capacity() + ranges.capacity() * 8,
        };
        vectors
            + self.links0.capacity() * 4
            + self.ids.capacity() * 8
            + self.levels.capacity()
            + self.removed.capacity()
            + self.upper.capacity() * size_of::<alloc::boxed::Box<[Vec<u32>]>>()
            + upper
            + self.index.bytes()
            + self.visited.marks.capacity() * 4
    }

    /// Checks a restored graph's invariants.
    pub fn validate(&self) -> Result<(), &'static str> {
        let n = self.len();
        let d = self.params.dimension;
        if self.params.check().is_err() {
            return Err("settings out of range");
        }
        let vectors_ok = match &self.vectors {
            Vectors::Full(v) => v.len() == n * d && v.iter().all(|x| x.is_finite()),
            Vectors::Int8 { codes, ranges } => {
                codes.len() == n * d
                    && ranges.len() == n
                    && ranges.iter().all(|(o, s)| o.is_finite() && s.is_finite())
            }
        };
        let storage_ok = matches!(
            (&self.vectors, self.params.storage),
            (Vectors::Full(_), Storage::Full) | (Vectors::Int8 { .. }, Storage::Int8)
        );
        if !vectors_ok || !storage_ok {
            return Err("vector storage does not match the settings, or holds non-finite values");
        }
        if self.levels.len() != n
            || self.upper.len() != n
            || self.removed.len() != n
            || self.links0.len() != n * self.stride0()
        {
            return Err("array lengths do not match the number of vectors");
        }
        if self.live != self.removed.iter().filter(|r| !**r).count() {
            return Err("live count does not match the tombstones");
        }
        match self.entry {
            None if n > 0 => return Err("no entry point"),
            Some(e) if e as usize >= n => return Err("entry point out of range"),
            _ => {}
        }
        for node in 0..n {
            if self.upper[node].len() != self.levels[node] as usize {
                return Err("upper layers do not match the node level");
            }
            let s = node * self.stride0();
            let count = self.links0[s] as usize;
            if count > self.m0() {
                return Err("too many layer-0 links");
            }
            let all = self.links0[s + 1..s + 1 + count].iter().chain(self.upper[node].iter().flatten());
            for &l in all {
                if l as usize >= n {
                    return Err("link to a missing node");
                }
            }
            for (layer, list) in self.upper[node].iter().enumerate() {
                if list.iter().any(|&l| (self.levels[l as usize] as usize) < layer + 1) {
                    return Err("upper link to a node without that layer");
                }
            }
        }
        let mut seen = HashMap::with_capacity(n);
        for id in &self.ids {
            if seen.insert(*id, ()).is_some() {
                return Err("duplicate id");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32) / (1u64 << 24) as f32
    }

    #[test]
    fn finds_the_exact_neighbours_of_random_points_with_high_recall() {
        let (n, d) = (2000usize, 16usize);
        let mut seed = 9;
        let data: Vec<f32> = (0..n * d).map(|_| lcg(&mut seed)).collect();
        let params = Params {
            dimension: d,
            metric: Metric::SquaredL2,
            storage: Storage::Full,
            m: 12,
            ef_construction: 100,
            ef_search: 64,
            seed: 1,
        };
        let mut g = Graph::new(params).unwrap();
        for i in 0..n {
            g.insert(i as u64, &data[i * d..i * d + d]).unwrap();
        }
        g.validate().unwrap();
        let mut hits = 0;
        for qi in 0..50 {
            let q: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
            let mut exact: Vec<(f32, u64)> = (0..n)
                .map(|i| {
                    (q.iter().zip(&data[i * d..i * d + d]).map(|(a, b)| (a - b) * (a - b)).sum(), i as u64)
                })
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let found = g.search(&q, 10, 64).unwrap();
            let truth: Vec<u64> = exact.iter().take(10).map(|e| e.1).collect();
            hits += found.iter().filter(|(id, _)| truth.contains(id)).count();
            assert!(found.windows(2).all(|w| w[0].1 <= w[1].1), "query {qi} not sorted");
        }
        let recall = hits as f64 / 500.0;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    #[test]
    fn layer_assignment_follows_ml() {
        let params = Params {
            dimension: 1,
            metric: Metric::SquaredL2,
            storage: Storage::Full,
            m: 16,
            ef_construction: 8,
            ef_search: 8,
            seed: 3,
        };
        let mut g = Graph::new(params).unwrap();
        let levels: Vec<usize> = (0..20000).map(|_| g.random_level()).collect();
        // P(level >= 1) = 1/M.
        let above = levels.iter().filter(|l| **l >= 1).count() as f64 / levels.len() as f64;
        assert!((above - 1.0 / 16.0).abs() < 0.01, "{above}");
        assert!((ln(0.5) + core::f64::consts::LN_2).abs() < 1e-9);
        assert!((ln(1e-6) - (-13.815510557964274)).abs() < 1e-8);
    }
}
