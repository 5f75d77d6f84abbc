//! The HNSW graph (Malkov & Yashunin, "Efficient and robust approximate
//! nearest neighbor search using Hierarchical Navigable Small World graphs",
//! 2016/2018), independent of the component bindings so it can be tested
//! and benchmarked natively.
//!
//! - Layer assignment: `floor(-ln(U) * mL)` with `mL = 1 / ln(M)`.
//! - Search: greedy descent through the upper layers, then a beam search of
//!   width `ef` on layer 0 (Algorithm 2), kept as one sorted array (see
//!   `search_layer`).
//! - Walk on codes, answer on the vectors: an f32 graph also keeps every
//!   vector as bytes on one 8-bit grid shared by all (`elex_kernels::Grid`).
//!   Searches and inserts walk the graph on those (an integer SIMD kernel,
//!   four vectors at a time, a quarter of the memory traffic), then compute
//!   the full vectors' distances of what they found: an insert of its whole
//!   beam (the neighbour heuristic sees full distances), a search of its
//!   best `RERANK * k`. On siftsmall this is as accurate as walking on the
//!   vectors (recall@10 equal at ef 16 to 128) and about 1.2x faster in
//!   wasm (the beam as one sorted array gave another 1.3x). A grid too
//!   coarse for the data (one element far wider than the others, which one
//!   step for all would leave most codes equal) is dropped, and the graph
//!   walks on the vectors. Known limits: grid distances above 2^24 (long
//!   vectors far apart) are compared as f32, so near ties may swap in the
//!   walk; a zero vector under cosine walks as if at cosine distance 0.5
//!   (it is at 1).
//! - Neighbour selection: the paper's heuristic (Algorithm 4): a candidate is
//!   kept only if it is closer to the new element than to every neighbour
//!   already kept; at most M per upper layer, M0 = 2M on layer 0. Overfull
//!   neighbour lists are shrunk with the same heuristic.
//! - Storage: all vectors in one contiguous `Vec<f32>` (and their grid
//!   codes in one `Vec<u8>`), layer-0 links in one contiguous `Vec<u32>`
//!   (fixed stride), upper-layer links per node.
//! - Removal: tombstones; removed nodes still route searches but are never
//!   returned.
#![no_std]

extern crate alloc;

use alloc::borrow::Cow;
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
    /// f32 storage: every vector's codes on one byte grid; walks use these,
    /// and their finds are re-ranked on the vectors. `None` for other
    /// graphs, and for one whose data the grid would cover too coarsely.
    /// Snapshots keep the grid ([`Graph::grid_state`]), not the codes.
    #[serde(skip)]
    grid: Option<GridCodes>,
    /// The query being walked, on the grid.
    #[serde(skip)]
    query_codes: Vec<i16>,
    #[serde(skip)]
    visited: Visited,
    /// Reused search buffers (no allocation per search).
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

/// A (distance, node) pair packed into one integer whose order is [`Near`]'s
/// (`total_cmp` on the distance, then the node): the beam compares one
/// `u64` instead of two fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key(u64);

impl Key {
    #[inline(always)]
    fn new(d: f32, node: u32) -> Key {
        // `total_cmp`'s order as an unsigned integer: negative values have
        // every bit flipped, the others only the sign bit.
        let b = d.to_bits();
        let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
        Key((ordered as u64) << 32 | node as u64)
    }

    #[inline(always)]
    fn near(self) -> Near {
        let o = (self.0 >> 32) as u32;
        let bits = if o >> 31 == 1 { o & 0x7fff_ffff } else { !o };
        Near(f32::from_bits(bits), self.0 as u32)
    }
}

/// Reused search buffers (no allocation per search).
#[derive(Default)]
struct Scratch {
    /// The beam: the best `ef` nodes found so far, closest first.
    beam: Vec<Key>,
    /// A node's neighbours not visited yet, scored four at a time, and
    /// their scores.
    fresh: Vec<u32>,
    scores: Vec<f32>,
}

/// Offers `nodes` at `scores` to `beam` (sorted, at most `ef` long) in
/// order; returns the lowest position one entered at (`usize::MAX` if none
/// did). Not inlined: in one function with the search, a wasm compiler's
/// registers run short.
#[inline(never)]
fn admit(beam: &mut Vec<Key>, ef: usize, nodes: &[u32], scores: &[f32]) -> usize {
    let mut lowest = usize::MAX;
    for (&nb, &d) in nodes.iter().zip(scores) {
        let key = Key::new(d, nb);
        if beam.len() == ef {
            if key >= beam[ef - 1] {
                continue;
            }
            beam.pop();
        }
        let at = beam.partition_point(|k| *k < key);
        beam.insert(at, key);
        lowest = lowest.min(at);
    }
    lowest
}

/// Distances from one query to stored vectors.
enum Scorer<'a> {
    Full {
        q: &'a [f32],
        vectors: &'a [f32],
        metric: Metric,
    },
    Int8 {
        q: &'a [f32],
        codes: &'a [u8],
        ranges: &'a [(f32, f32)],
        metric: Metric,
    },
    /// Squared distances on the grid (in grid steps²), for walking.
    Grid {
        q: &'a [i16],
        codes: &'a [u8],
    },
}

impl Scorer<'_> {
    #[inline(always)]
    fn one(&self, n: u32) -> f32 {
        match *self {
            Scorer::Full { q, vectors, metric } => {
                let at = n as usize * q.len();
                let v = &vectors[at..at + q.len()];
                match metric {
                    Metric::Cosine => 1.0 - elex_kernels::score_unchecked(elex_kernels::Metric::Dot, q, v),
                    Metric::SquaredL2 => elex_kernels::score_unchecked(elex_kernels::Metric::SquaredL2, q, v),
                }
            }
            Scorer::Grid { .. } => self.four([n; 4])[0],
            Scorer::Int8 { q, codes, ranges, metric } => {
                let at = n as usize * q.len();
                let (offset, scale) = ranges[n as usize];
                let b = elex_kernels::Quantized { codes: &codes[at..at + q.len()], offset, scale };
                match metric {
                    Metric::Cosine => 1.0 - elex_kernels::dot_quantized(q, b),
                    Metric::SquaredL2 => elex_kernels::squared_l2_quantized(q, b),
                }
            }
        }
    }

    /// [`Scorer::four`] of the `len` (1 to 4) nodes `node(0..len)`; the
    /// last repeats to fill four (its scores past `len` are to be ignored).
    #[inline(always)]
    fn up_to_four(&self, len: usize, node: impl Fn(usize) -> u32) -> [f32; 4] {
        self.four(core::array::from_fn(|i| node(i.min(len - 1))))
    }

    /// `one` of four nodes; f32 vectors are read side by side.
    #[inline(always)]
    fn four(&self, n: [u32; 4]) -> [f32; 4] {
        match *self {
            Scorer::Full { q, vectors, metric } => {
                let d = q.len();
                let rows = n.map(|n| &vectors[n as usize * d..n as usize * d + d]);
                match metric {
                    Metric::Cosine => {
                        elex_kernels::score4_unchecked(elex_kernels::Metric::Dot, q, rows).map(|s| 1.0 - s)
                    }
                    Metric::SquaredL2 => {
                        elex_kernels::score4_unchecked(elex_kernels::Metric::SquaredL2, q, rows)
                    }
                }
            }
            Scorer::Grid { q, codes } => {
                let d = q.len();
                let rows = n.map(|n| &codes[n as usize * d..n as usize * d + d]);
                elex_kernels::grid_l2_x4(q, rows).map(|s| s as f32)
            }
            Scorer::Int8 { .. } => n.map(|n| self.one(n)),
        }
    }
}

/// Vector storage.
#[derive(Serialize, Deserialize)]
pub enum Vectors {
    Full(Vec<f32>),
    Int8 { codes: Vec<u8>, ranges: Vec<(f32, f32)> },
}

/// What a snapshot keeps of an f32 graph's walk grid: the grid itself (the
/// codes follow from it and the vectors). A graph restored with it walks
/// exactly as the one saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridState {
    pub lo: Vec<f32>,
    pub inv_step: f32,
    /// Vectors encoded since the grid was last fitted.
    pub since_fit: u64,
}

/// The traversal grid and every vector's codes on it.
struct GridCodes {
    grid: elex_kernels::Grid,
    codes: Vec<u8>,
    /// Vectors encoded since the grid was last fitted.
    since_fit: usize,
}

/// A refitted grid leaves this share of each element's range spare on both
/// sides, so that later vectors rarely fall off it.
const GRID_MARGIN: f64 = 0.25;

/// Below this many vectors a grid is kept however coarse: the ranges of a
/// few vectors say little about the data's.
const GRID_JUDGED_FROM: usize = 64;

/// A search on the grid re-ranks this many times `k` of its best on the
/// full vectors.
const RERANK: usize = 2;

impl GridCodes {
    /// The grid fitted to `vectors` and `extra` (both flat, `d` wide), with
    /// `vectors` encoded; `None` if it is too coarse to walk on.
    /// (`codes` is a buffer to reuse.)
    fn fit(vectors: &[f32], extra: &[f32], d: usize, codes: Vec<u8>) -> Option<GridCodes> {
        let n = (vectors.len() + extra.len()) / d.max(1);
        let coarse = if n < GRID_JUDGED_FROM { 0.0 } else { elex_kernels::MIN_MEDIAN_STEPS };
        let grid = elex_kernels::Grid::fit(&[vectors, extra], d, GRID_MARGIN, coarse)?;
        Some(GridCodes::on(grid, vectors, d, 0, codes))
    }

    /// `vectors` encoded on `grid`, into `codes` (a buffer to reuse: its
    /// capacity is kept).
    fn on(
        grid: elex_kernels::Grid,
        vectors: &[f32],
        d: usize,
        since_fit: usize,
        mut codes: Vec<u8>,
    ) -> GridCodes {
        codes.clear();
        codes.reserve_exact(vectors.len());
        for v in vectors.chunks_exact(d) {
            grid.encode(v, &mut codes);
        }
        GridCodes { grid, codes, since_fit }
    }

    /// Appends `v`'s codes, `vectors` holding every vector before it. When
    /// `v` falls off the grid, the grid is refitted, unless it was fitted
    /// less than an eighth of the graph ago: then `v` is clamped onto it.
    /// Inserts stay O(d) amortised; a clamped vector only walks less well
    /// until the next refit (results are re-ranked on the full vectors).
    /// False if the refitted grid would be too coarse to walk on.
    fn push(&mut self, vectors: &[f32], v: &[f32], d: usize) -> bool {
        let len = vectors.len() / d;
        if !self.grid.holds(v) && self.since_fit >= len / GROWTH {
            match GridCodes::fit(vectors, v, d, core::mem::take(&mut self.codes)) {
                Some(fitted) => *self = fitted,
                None => return false,
            }
        }
        self.grid.encode(v, &mut self.codes);
        self.since_fit += 1;
        true
    }
}

/// Single inserts grow the storage by `len / GROWTH` nodes at a time.
const GROWTH: usize = 8;

/// Generation-stamped marks, cleared in O(1): in the current search a
/// node's mark is `stamp` once visited and `stamp + 1` once expanded; marks
/// of earlier searches are below `stamp`.
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
        self.stamp = self.stamp.wrapping_add(2);
        if self.stamp == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.stamp = 2;
        }
    }

    #[inline(always)]
    fn expand(&mut self, i: u32) {
        self.marks[i as usize] = self.stamp + 1;
    }

    #[inline(always)]
    fn expanded(&self, i: u32) -> bool {
        self.marks[i as usize] == self.stamp + 1
    }
    /// Marks each of `nodes` and appends those not marked before to
    /// `out`, in order. Four at a time: a guest's host checks its time
    /// budget at every loop back-edge, and this loop is the search's
    /// busiest.
    #[inline(always)]
    fn fresh(&mut self, nodes: &[u32], out: &mut Vec<u32>) {
        let mut quads = nodes.chunks_exact(4);
        for quad in &mut quads {
            for &nb in quad {
                if self.insert(nb) {
                    out.push(nb);
                }
            }
        }
        for &nb in quads.remainder() {
            if self.insert(nb) {
                out.push(nb);
            }
        }
    }

    /// Marks `i`; true if it was not marked yet.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let slot = &mut self.marks[i as usize];
        if *slot >= self.stamp {
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
        let mut g = Graph {
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
            grid: None,
            query_codes: Vec::new(),
            visited: Visited::default(),
            scratch: Scratch::default(),
        };
        g.reset_grid();
        Ok(g)
    }

    /// Fits the traversal grid to the vectors (f32 storage of at most
    /// `Grid::MAX_DIMENSION` elements; other graphs walk without one).
    fn reset_grid(&mut self) {
        let d = self.params.dimension;
        self.grid = match &self.vectors {
            Vectors::Full(v) if d <= elex_kernels::Grid::MAX_DIMENSION => {
                GridCodes::fit(v, &[], d, Vec::new())
            }
            _ => None,
        };
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

    /// Rebuilds what snapshots do not store: the id index, and the walk
    /// grid's codes, on `grid` as saved ([`Graph::grid_state`]) or, if
    /// `None` (a snapshot from before grids, or of a graph without one), on
    /// a grid fitted anew.
    pub fn reindex(&mut self, grid: Option<GridState>) -> Result<(), &'static str> {
        let mut index = IdIndex::default();
        index.nodes.reserve(self.ids.len(), |&n| index.hasher.hash_one(self.ids[n as usize]));
        for node in 0..self.ids.len() as u32 {
            index.insert(&self.ids, node);
        }
        self.index = index;
        let Some(state) = grid else {
            self.reset_grid();
            return Ok(());
        };
        let d = self.params.dimension;
        let Vectors::Full(vectors) = &self.vectors else {
            return Err("a walk grid for int8 vectors");
        };
        if d > elex_kernels::Grid::MAX_DIMENSION {
            return Err("a walk grid for vectors too long to have one");
        }
        if state.lo.len() != d || !state.lo.iter().all(|l| l.is_finite()) {
            return Err("walk grid offsets do not fit the vectors");
        }
        if !(state.inv_step.is_finite() && state.inv_step > 0.0) {
            return Err("walk grid step is not a positive number");
        }
        if state.since_fit > self.ids.len() as u64 {
            return Err("walk grid fitted before the first vector");
        }
        let grid = elex_kernels::Grid { lo: state.lo, inv_step: state.inv_step };
        self.grid = Some(GridCodes::on(grid, vectors, d, state.since_fit as usize, Vec::new()));
        Ok(())
    }

    /// The walk grid, for a snapshot (`None`: the graph walks without one).
    pub fn grid_state(&self) -> Option<GridState> {
        self.grid.as_ref().map(|g| GridState {
            lo: g.grid.lo.clone(),
            inv_step: g.grid.inv_step,
            since_fit: g.since_fit as u64,
        })
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

    fn scorer<'a>(&'a self, q: &'a [f32]) -> Scorer<'a> {
        let metric = self.params.metric;
        match &self.vectors {
            Vectors::Full(vectors) => Scorer::Full { q, vectors, metric },
            Vectors::Int8 { codes, ranges } => Scorer::Int8 { q, codes, ranges, metric },
        }
    }

    #[inline]
    fn dist(&self, q: &[f32], n: u32) -> f32 {
        self.scorer(q).one(n)
    }

    fn push_vector(&mut self, v: &[f32]) {
        match &mut self.vectors {
            Vectors::Full(all) => {
                if let Some(grid) = &mut self.grid
                    && !grid.push(all, v, self.params.dimension)
                {
                    // Too coarse to walk on from now on (until a restore
                    // fits one anew): walks use the vectors.
                    self.grid = None;
                }
                all.extend_from_slice(v);
            }
            Vectors::Int8 { codes, ranges } => ranges.push(elex_kernels::Quantized::encode(v, codes)),
        }
    }

    /// Makes room for `additional` more vectors without over-allocating.
    pub fn reserve(&mut self, additional: usize) {
        let d = self.params.dimension;
        let stride = self.stride0();
        match &mut self.vectors {
            Vectors::Full(all) => {
                all.reserve_exact(additional * d);
                if let Some(grid) = &mut self.grid {
                    grid.codes.reserve_exact(additional * d);
                }
            }
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

    #[inline]
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

    /// Sets the query the next walks ([`Graph::walker`]) are for.
    fn prepare_walk(&mut self, q: &[f32]) {
        if let Some(grid) = &self.grid {
            grid.grid.encode_query(q, &mut self.query_codes);
        }
    }

    /// How the graph is walked for `q` (prepared with
    /// [`Graph::prepare_walk`]): on the grid if there is one, else on the
    /// vectors.
    fn walker<'a>(&'a self, q: &'a [f32]) -> Scorer<'a> {
        match &self.grid {
            Some(grid) => Scorer::Grid { q: &self.query_codes, codes: &grid.codes },
            None => self.scorer(q),
        }
    }

    /// Greedy walk to the closest node on one layer.
    fn greedy(&self, q: &[f32], mut cur: u32, layer: usize) -> u32 {
        let walk = self.walker(q);
        let mut d = walk.one(cur);
        loop {
            let mut moved = false;
            for quad in self.links(cur, layer).chunks(4) {
                let near = walk.up_to_four(quad.len(), |i| quad[i]);
                for (&n, &dn) in quad.iter().zip(&near) {
                    if dn < d {
                        d = dn;
                        cur = n;
                        moved = true;
                    }
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Beam search on one layer (Algorithm 2). Returns up to `ef` nodes
    /// sorted by distance, removed nodes included (they still route).
    ///
    /// The paper's two heaps (candidates and results) are one sorted array
    /// of the best `ef` nodes found, each marked once expanded: Algorithm 2
    /// expands exactly the closest unexpanded node of its results, and
    /// stops when the closest candidate is worse than every result, that
    /// is, when every result is expanded. A node enters with one binary
    /// search and one move (`memory.copy` in wasm) instead of three heap
    /// walks, each a loop. A node's unvisited neighbours are scored first,
    /// four at a time, then offered in order: the vectors' loads no longer
    /// wait on the beam's branches.
    fn search_layer(&mut self, q: &[f32], entry: u32, ef: usize, layer: usize) -> Vec<Near> {
        let n = self.len();
        let mut visited = core::mem::take(&mut self.visited);
        visited.reset(n);
        visited.insert(entry);
        let Scratch { mut beam, mut fresh, mut scores } = core::mem::take(&mut self.scratch);
        beam.clear();
        let scorer = self.walker(q);
        beam.push(Key::new(scorer.one(entry), entry));
        // Every node before `next` is expanded.
        let mut next = 0;
        while next < beam.len() {
            let node = beam[next].near().1;
            visited.expand(node);
            fresh.clear();
            visited.fresh(self.links(node, layer), &mut fresh);
            scores.clear();
            for quad in fresh.chunks(4) {
                scores.extend(&scorer.up_to_four(quad.len(), |i| quad[i])[..quad.len()]);
            }
            next = admit(&mut beam, ef, &fresh, &scores).min(next + 1);
            while next < beam.len() && visited.expanded(beam[next].near().1) {
                next += 1;
            }
        }
        self.visited = visited;
        let out = beam.iter().map(|k| k.near()).collect();
        self.scratch = Scratch { beam, fresh, scores };
        out
    }

    /// Replaces `found`'s distances with those of the full vectors and
    /// sorts it by them: with a grid, [`Graph::search_layer`] ranks by
    /// distances on the grid.
    fn rerank_full(&self, q: &[f32], found: &mut [Near]) {
        if self.grid.is_none() {
            return;
        }
        let exact = self.scorer(q);
        for quad in found.chunks_mut(4) {
            let d = exact.up_to_four(quad.len(), |i| quad[i].1);
            for (near, d) in quad.iter_mut().zip(d) {
                near.0 = d;
            }
        }
        found.sort_unstable();
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
        self.prepare_walk(&v);
        for layer in (level + 1..=top).rev() {
            cur = self.greedy(&v, cur, layer);
        }
        let m = self.params.m;
        for layer in (0..=level.min(top)).rev() {
            let mut found = self.search_layer(&v, cur, self.params.ef_construction, layer);
            self.rerank_full(&v, &mut found);
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
        self.prepare_walk(&q);
        for layer in (1..=self.levels[entry as usize] as usize).rev() {
            cur = self.greedy(&q, cur, layer);
        }
        let mut found = self.search_layer(&q, cur, ef, 0);
        found.retain(|n| !self.removed[n.1 as usize]);
        found.truncate(RERANK.saturating_mul(k));
        self.rerank_full(&q, &mut found);
        Ok(found.into_iter().take(k).map(|n| (self.ids[n.1 as usize], n.0)).collect())
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
            + self.grid.as_ref().map_or(0, |g| g.codes.capacity() + g.grid.lo.capacity() * 4)
            + self.query_codes.capacity() * 2
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

    fn params(d: usize, storage: Storage) -> Params {
        Params {
            dimension: d,
            metric: Metric::SquaredL2,
            storage,
            m: 12,
            ef_construction: 100,
            ef_search: 64,
            seed: 1,
        }
    }

    fn exact_l2(a: &[f32], b: &[f32]) -> f32 {
        elex_kernels::squared_l2(a, b).unwrap()
    }

    #[test]
    fn beam_keys_order_as_distance_then_node() {
        let values = [-f32::INFINITY, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 7e12, f32::INFINITY];
        for &a in &values {
            for &b in &values {
                for (na, nb) in [(1u32, 2u32), (2, 1), (u32::MAX, 0), (5, 5)] {
                    let (x, y) = (Near(a, na), Near(b, nb));
                    assert_eq!(Key::new(a, na).cmp(&Key::new(b, nb)), x.cmp(&y), "{x:?} vs {y:?}");
                    let back = Key::new(a, na).near();
                    assert_eq!((back.0.to_bits(), back.1), (a.to_bits(), na));
                }
            }
        }
    }

    #[test]
    fn a_walk_on_the_grid_returns_exact_distances_of_the_true_neighbours() {
        let (n, d) = (2000usize, 24usize);
        let mut seed = 5;
        // Elements on different scales: the grid has one step for all.
        let data: Vec<f32> = (0..n * d).map(|i| lcg(&mut seed) * (1 + i % d) as f32).collect();
        let mut g = Graph::new(params(d, Storage::Full)).unwrap();
        for i in 0..n {
            g.insert(i as u64, &data[i * d..i * d + d]).unwrap();
        }
        assert!(g.grid.as_ref().is_some_and(|grid| grid.codes.len() == n * d));
        let mut hits = 0;
        for _ in 0..40 {
            let q: Vec<f32> = (0..d).map(|j| lcg(&mut seed) * (1 + j) as f32).collect();
            let found = g.search(&q, 10, 48).unwrap();
            assert_eq!(found.len(), 10);
            for w in found.windows(2) {
                assert!(w[0].1 <= w[1].1, "not sorted: {found:?}");
            }
            for &(id, dist) in &found {
                let row = &data[id as usize * d..id as usize * d + d];
                assert_eq!(dist, exact_l2(&q, row), "the distance of {id} is not exact");
            }
            let mut truth: Vec<(f32, u64)> =
                (0..n).map(|i| (exact_l2(&q, &data[i * d..i * d + d]), i as u64)).collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            hits += found.iter().filter(|(id, _)| truth[..10].iter().any(|t| t.1 == *id)).count();
        }
        let recall = hits as f64 / 400.0;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // A restored graph (reindex) walks the same grid.
        let q: Vec<f32> = (0..d).map(|j| j as f32 * 0.5).collect();
        let before = g.search(&q, 10, 48).unwrap();
        let saved = g.grid_state();
        g.reindex(saved.clone()).unwrap();
        assert_eq!(g.search(&q, 10, 48).unwrap(), before);
        assert_eq!(g.grid_state(), saved);
        // A snapshot from before grids gets one fitted to all its vectors.
        g.reindex(None).unwrap();
        assert!(g.grid.as_ref().is_some_and(|c| c.codes.len() == n * d && c.since_fit == 0));
        assert_eq!(g.search(&q, 10, 48).unwrap().len(), 10);
        // A grid that does not fit the vectors is refused.
        let saved = saved.unwrap();
        let bad = [
            GridState { lo: saved.lo[1..].to_vec(), ..saved.clone() },
            GridState { lo: vec![f32::INFINITY; d], ..saved.clone() },
            GridState { inv_step: 0.0, ..saved.clone() },
            GridState { inv_step: f32::NAN, ..saved.clone() },
            GridState { since_fit: n as u64 + 1, ..saved.clone() },
        ];
        for state in bad {
            assert!(g.reindex(Some(state.clone())).is_err(), "{state:?}");
        }
        g.reindex(Some(saved)).unwrap();
        assert_eq!(g.search(&q, 10, 48).unwrap(), before);
    }

    #[test]
    fn empty_and_huge_valued_graphs_keep_a_grid_a_restore_accepts() {
        let mut empty = Graph::new(params(3, Storage::Full)).unwrap();
        let state = empty.grid_state();
        assert!(state.is_some());
        empty.reindex(state).unwrap();
        assert_eq!(empty.search(&[1.0, 2.0, 3.0], 5, 8).unwrap(), vec![]);
        let mut huge = Graph::new(params(2, Storage::Full)).unwrap();
        let points = [[3e38f32, -3e38], [-3e38, 3e38], [0.0, 0.0], [1e38, 1e38]];
        for (i, p) in points.iter().enumerate() {
            huge.insert(i as u64, p).unwrap();
        }
        let state = huge.grid_state();
        assert!(state.as_ref().is_some_and(|s| s.lo.iter().all(|l| l.is_finite())));
        huge.reindex(state).unwrap();
        for (i, p) in points.iter().enumerate() {
            assert_eq!(huge.search(p, 1, 8).unwrap()[0].0, i as u64);
        }
    }

    #[test]
    fn an_outlier_that_would_make_the_grid_too_coarse_turns_it_off() {
        let d = 8;
        let mut g = Graph::new(params(d, Storage::Full)).unwrap();
        let mut seed = 21;
        let mut data: Vec<f32> = (0..300 * d).map(|_| lcg(&mut seed)).collect();
        for i in 0..300 {
            g.insert(i as u64, &data[i * d..i * d + d]).unwrap();
        }
        assert!(g.grid.is_some());
        // One element a million times wider: on one step for all, the
        // others would span a fraction of a step.
        let mut outlier = vec![0.5f32; d];
        outlier[3] = 1e6;
        g.insert(300, &outlier).unwrap();
        data.extend(&outlier);
        assert!(g.grid.is_none() && g.grid_state().is_none());
        // Walks use the vectors: neighbours are still found.
        let mut hits = 0;
        for _ in 0..20 {
            let q: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
            let mut truth: Vec<(f32, u64)> =
                (0..301).map(|i| (exact_l2(&q, &data[i * d..i * d + d]), i as u64)).collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            let found = g.search(&q, 10, 32).unwrap();
            hits += found.iter().filter(|(id, _)| truth[..10].iter().any(|t| t.1 == *id)).count();
        }
        assert!(hits >= 190, "{hits} of 200");
        // A restore fits anew and comes to the same.
        g.reindex(None).unwrap();
        assert!(g.grid.is_none());
    }

    /// Algorithm 2 as the paper writes it, with its two heaps.
    fn two_heap_search(g: &Graph, q: &[f32], entry: u32, ef: usize) -> Vec<Near> {
        use alloc::collections::BinaryHeap;
        use core::cmp::Reverse;
        let mut visited = std::collections::HashSet::from([entry]);
        let first = Near(g.dist(q, entry), entry);
        let (mut candidates, mut results) = (BinaryHeap::from([Reverse(first)]), BinaryHeap::from([first]));
        while let Some(Reverse(c)) = candidates.pop() {
            if c > *results.peek().unwrap() && results.len() >= ef {
                break;
            }
            for &nb in g.links(c.1, 0) {
                if visited.insert(nb) {
                    let near = Near(g.dist(q, nb), nb);
                    if results.len() < ef || near < *results.peek().unwrap() {
                        candidates.push(Reverse(near));
                        results.push(near);
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    #[test]
    fn the_beam_finds_what_the_papers_two_heaps_find() {
        let (n, d) = (1500usize, 12usize);
        let mut seed = 77;
        let mut g = Graph::new(params(d, Storage::Full)).unwrap();
        for i in 0..n {
            let v: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
            g.insert(i as u64, &v).unwrap();
        }
        g.grid = None; // walk on the vectors, as the reference does
        for ef in [1usize, 4, 16, 64] {
            for _ in 0..20 {
                let q: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
                let entry = (lcg(&mut seed) * n as f32) as u32;
                g.prepare_walk(&q);
                assert_eq!(g.search_layer(&q, entry, ef, 0), two_heap_search(&g, &q, entry, ef), "ef {ef}");
            }
        }
    }

    #[test]
    fn the_grid_is_refitted_when_vectors_leave_it_and_clamps_between_refits() {
        let d = 4;
        let mut g = Graph::new(params(d, Storage::Full)).unwrap();
        g.reserve(300);
        let mut seed = 11;
        for i in 0..200u64 {
            let v: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
            g.insert(i, &v).unwrap();
        }
        let holds = |g: &Graph, v: &[f32]| g.grid.as_ref().unwrap().grid.holds(v);
        let (right, below, above) = ([2.0, 0.5, 0.5, 0.5], [0.5, -3.0, 0.5, 0.5], [0.5, 0.5, 4.0, 0.5]);
        assert!(!holds(&g, &right));
        // Off the grid, long after the last fit: refitted to hold it.
        g.insert(1000, &right).unwrap();
        assert!(holds(&g, &right));
        assert_eq!(g.grid.as_ref().unwrap().since_fit, 1);
        // Off again right after: clamped onto the grid, not refitted.
        g.insert(1001, &below).unwrap();
        assert!(!holds(&g, &below), "refitted too soon");
        // Still found, at its exact distance.
        assert_eq!(g.search(&below, 1, 32).unwrap(), vec![(1001, 0.0)]);
        // An eighth of the graph later, the next vector off the grid refits it.
        for i in 0..30u64 {
            let v: Vec<f32> = (0..d).map(|_| lcg(&mut seed)).collect();
            g.insert(2000 + i, &v).unwrap();
        }
        g.insert(3000, &above).unwrap();
        assert!(holds(&g, &right) && holds(&g, &below) && holds(&g, &above));
        let codes = &g.grid.as_ref().unwrap().codes;
        assert_eq!(codes.len(), g.len() * d);
        // Refits reuse the codes' buffer: the reserved room, no more.
        assert_eq!(codes.capacity(), 300 * d);
    }

    #[test]
    fn only_f32_graphs_of_at_most_4096_elements_walk_on_a_grid() {
        let mut int8 = Graph::new(params(8, Storage::Int8)).unwrap();
        assert!(int8.grid.is_none() && int8.grid_state().is_none());
        let foreign = GridState { lo: vec![0.0; 8], inv_step: 1.0, since_fit: 0 };
        assert!(int8.reindex(Some(foreign)).is_err());
        assert!(int8.reindex(None).is_ok());
        let mut wide = Graph::new(params(elex_kernels::Grid::MAX_DIMENSION + 1, Storage::Full)).unwrap();
        assert!(wide.grid.is_none());
        let v: Vec<f32> = (0..elex_kernels::Grid::MAX_DIMENSION + 1).map(|i| i as f32).collect();
        wide.insert(1, &v).unwrap();
        wide.insert(2, &vec![0.0; elex_kernels::Grid::MAX_DIMENSION + 1]).unwrap();
        assert_eq!(wide.search(&v, 2, 8).unwrap()[0], (1, 0.0));
        assert!(Graph::new(params(elex_kernels::Grid::MAX_DIMENSION, Storage::Full)).unwrap().grid.is_some());
    }

    #[test]
    fn visited_marks_survive_the_stamp_wrapping_around() {
        let mut v = Visited::default();
        v.reset(4);
        assert!(v.insert(1) && !v.insert(1));
        v.expand(1);
        assert!(v.expanded(1) && !v.expanded(2));
        v.stamp = u32::MAX - 1;
        v.marks[2] = u32::MAX;
        v.reset(4);
        assert_eq!((v.stamp, v.marks.iter().all(|m| *m == 0)), (2, true));
        assert!(v.insert(2) && v.insert(1) && !v.expanded(1));
    }
}
