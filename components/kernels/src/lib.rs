//! The numeric kernels behind `elex:vector`.
//!
//! On `wasm32` with the `simd128` target feature the hot loops use
//! `core::arch::wasm32` intrinsics (four `f32x4` accumulators, 16 lanes per
//! step) with a scalar loop for the remainder; elsewhere they use fixed-width
//! lane arrays that LLVM vectorises for the host CPU. Both paths compute the
//! same sums in a different order than a plain left-to-right loop, so results
//! agree with a scalar reference to within rounding (see the property tests in
//! `tests/`).
//!
//! Semantics (documented for component authors in `wit/deps/vector`):
//! empty inputs give neutral results, mismatched lengths are errors, and
//! non-finite values follow IEEE 754.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::cmp::Ordering;

mod lanes;

/// Why a kernel refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// Two inputs that must have the same length differ.
    LengthMismatch { expected: usize, found: usize },
    /// A flat matrix's length is not a multiple of its dimension.
    BadShape { len: usize, dimension: usize },
    /// An argument outside its domain.
    InvalidArgument(&'static str),
}

impl core::fmt::Display for KernelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KernelError::LengthMismatch { expected, found } => {
                write!(f, "length mismatch: expected {expected} elements, found {found}")
            }
            KernelError::BadShape { len, dimension } => {
                write!(f, "matrix of {len} elements does not fit dimension {dimension}")
            }
            KernelError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
        }
    }
}

/// How two vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity, higher is closer.
    Cosine,
    /// Inner product, higher is closer.
    Dot,
    /// Squared Euclidean distance, lower is closer.
    SquaredL2,
}

impl Metric {
    /// Whether a higher score means closer.
    pub fn higher_is_closer(self) -> bool {
        !matches!(self, Metric::SquaredL2)
    }
}

fn same_len(a: &[f32], b: &[f32]) -> Result<(), KernelError> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch { expected: a.len(), found: b.len() })
    }
}

/// Inner product; 0 for empty inputs.
pub fn dot(a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
    same_len(a, b)?;
    Ok(lanes::dot(a, b))
}

/// Cosine similarity; 0 if either norm is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
    same_len(a, b)?;
    Ok(cosine_unchecked(a, b))
}

#[inline]
fn cosine_unchecked(a: &[f32], b: &[f32]) -> f32 {
    let (ab, aa, bb) = lanes::dot_norms(a, b);
    let denom = libm_sqrt(aa) * libm_sqrt(bb);
    if denom == 0.0 { 0.0 } else { ab / denom }
}

/// Squared Euclidean distance; 0 for empty inputs.
pub fn squared_l2(a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
    same_len(a, b)?;
    Ok(lanes::squared_l2(a, b))
}

/// Scales `v` to unit length in place; a zero vector is left unchanged.
pub fn normalize(v: &mut [f32]) {
    let norm = libm_sqrt(lanes::dot(v, v));
    if norm != 0.0 {
        lanes::scale(v, 1.0 / norm);
    }
}

/// Score of `a` against `b` under `metric`, lengths already checked.
#[inline]
pub fn score_unchecked(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine => cosine_unchecked(a, b),
        Metric::Dot => lanes::dot(a, b),
        Metric::SquaredL2 => lanes::squared_l2(a, b),
    }
}

/// `score_unchecked(metric, q, rows[j])` for four rows at once: the query is
/// read once, and the rows' memory loads overlap. Dot and squared L2 agree
/// with the one-row kernels up to summation order.
#[inline]
pub fn score4_unchecked(metric: Metric, q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    match metric {
        Metric::Cosine => rows.map(|r| cosine_unchecked(q, r)),
        Metric::Dot => lanes::x4::<false>(q, rows),
        Metric::SquaredL2 => lanes::x4::<true>(q, rows),
    }
}

fn rows_of(matrix: &[f32], dimension: usize) -> Result<usize, KernelError> {
    if dimension == 0 {
        return if matrix.is_empty() {
            Ok(0)
        } else {
            Err(KernelError::BadShape { len: matrix.len(), dimension })
        };
    }
    if matrix.len() % dimension != 0 {
        return Err(KernelError::BadShape { len: matrix.len(), dimension });
    }
    Ok(matrix.len() / dimension)
}

/// The score of `query` against every row of a flat row-major matrix.
pub fn score_rows(
    query: &[f32],
    matrix: &[f32],
    dimension: usize,
    metric: Metric,
) -> Result<Vec<f32>, KernelError> {
    let rows = rows_of(matrix, dimension)?;
    if query.len() != dimension {
        return Err(KernelError::LengthMismatch { expected: dimension, found: query.len() });
    }
    let mut out = Vec::with_capacity(rows);
    if dimension == 0 {
        return Ok(out);
    }
    match metric {
        // The query's norm once, not once per row.
        Metric::Cosine => {
            let qn = libm_sqrt(lanes::dot(query, query));
            out.extend(matrix.chunks_exact(dimension).map(|row| {
                let (ab, bb) = lanes::dot_and_norm(query, row);
                let denom = qn * libm_sqrt(bb);
                if denom == 0.0 { 0.0 } else { ab / denom }
            }));
        }
        Metric::Dot => dots_of_rows(query, matrix, dimension, |_, d| out.push(d)),
        _ => out.extend(matrix.chunks_exact(dimension).map(|row| score_unchecked(metric, query, row))),
    }
    Ok(out)
}

/// `sqrt(dot(row, row))` of every row.
pub fn row_norms(matrix: &[f32], dimension: usize) -> Result<Vec<f32>, KernelError> {
    rows_of(matrix, dimension)?;
    if dimension == 0 {
        return Ok(Vec::new());
    }
    Ok(matrix.chunks_exact(dimension).map(|r| libm_sqrt(lanes::dot(r, r))).collect())
}

/// [`score_rows`] with the rows' norms given (from [`row_norms`]): cosine
/// then costs one dot product per row. Agrees with [`score_rows`] to within
/// rounding.
pub fn score_rows_normed(
    query: &[f32],
    matrix: &[f32],
    dimension: usize,
    norms: &[f32],
    metric: Metric,
) -> Result<Vec<f32>, KernelError> {
    let rows = rows_of(matrix, dimension)?;
    if query.len() != dimension {
        return Err(KernelError::LengthMismatch { expected: dimension, found: query.len() });
    }
    if norms.len() != rows {
        return Err(KernelError::LengthMismatch { expected: rows, found: norms.len() });
    }
    if metric != Metric::Cosine || dimension == 0 {
        return score_rows(query, matrix, dimension, metric);
    }
    let qn = libm_sqrt(lanes::dot(query, query));
    let mut out = Vec::with_capacity(rows);
    dots_of_rows(query, matrix, dimension, |row, d| {
        let denom = qn * norms[row];
        out.push(if denom == 0.0 { 0.0 } else { d / denom });
    });
    Ok(out)
}

/// Calls `f(row, dot(query, row))` for every row in order, two rows per
/// step ([`lanes::dot2`]).
#[inline(always)]
fn dots_of_rows(query: &[f32], matrix: &[f32], dimension: usize, mut f: impl FnMut(usize, f32)) {
    let mut pairs = matrix.chunks_exact(2 * dimension);
    let mut row = 0;
    for pair in &mut pairs {
        let (r0, r1) = pair.split_at(dimension);
        let (d0, d1) = lanes::dot2(query, r0, r1);
        f(row, d0);
        f(row + 1, d1);
        row += 2;
    }
    let last = pairs.remainder();
    if !last.is_empty() {
        f(row, lanes::dot(query, last));
    }
}

/// The `k` best of `scores` under `metric`, best first, as (index, score).
pub fn top_k_of(scores: Vec<f32>, k: usize, metric: Metric) -> Result<Vec<(u32, f32)>, KernelError> {
    if scores.len() > u32::MAX as usize {
        return Err(KernelError::InvalidArgument("more than 2^32 rows"));
    }
    let mut ranked: Vec<(u32, f32)> = scores.into_iter().enumerate().map(|(i, s)| (i as u32, s)).collect();
    let k = k.min(ranked.len());
    let order = rank(metric);
    if k == 0 {
        return Ok(Vec::new());
    }
    if k < ranked.len() {
        ranked.select_nth_unstable_by(k - 1, &order);
        ranked.truncate(k);
    }
    ranked.sort_unstable_by(&order);
    Ok(ranked)
}

/// Orders (index, score) best first: NaN last, ties by index.
fn rank(metric: Metric) -> impl Fn(&(u32, f32), &(u32, f32)) -> Ordering {
    let higher = metric.higher_is_closer();
    move |a, b| {
        let by_score = match (a.1.is_nan(), b.1.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let ord = a.1.partial_cmp(&b.1).unwrap_or(Ordering::Equal);
                if higher { ord.reverse() } else { ord }
            }
        };
        by_score.then(a.0.cmp(&b.0))
    }
}

/// The `k` rows closest to `query`, best first, as (row index, score).
pub fn top_k(
    query: &[f32],
    matrix: &[f32],
    dimension: usize,
    k: usize,
    metric: Metric,
) -> Result<Vec<(u32, f32)>, KernelError> {
    top_k_of(score_rows(query, matrix, dimension, metric)?, k, metric)
}

/// Where a value lies relative to its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeVerdict {
    Within,
    Below,
    Above,
    Invalid,
}

/// Checks `values[i]` against `[minimums[i], maximums[i]]`.
pub fn validate_ranges(
    values: &[f32],
    minimums: &[f32],
    maximums: &[f32],
) -> Result<Vec<RangeVerdict>, KernelError> {
    same_len(values, minimums)?;
    same_len(values, maximums)?;
    let mut out = Vec::with_capacity(values.len());
    lanes::validate_ranges(values, minimums, maximums, &mut out);
    Ok(out)
}

/// Summary statistics of counter values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    pub count: u32,
    pub sum: f64,
    pub weighted_sum: f64,
    pub max: f32,
    pub min: f32,
    pub count_above: u32,
}

/// Aggregates counter values with weights.
pub fn aggregate(values: &[f32], weights: &[f32], threshold: f32) -> Result<Aggregate, KernelError> {
    same_len(values, weights)?;
    if values.len() > u32::MAX as usize {
        return Err(KernelError::InvalidArgument("more than 2^32 values"));
    }
    Ok(lanes::aggregate(values, weights, threshold))
}

/// Element-wise `q + alpha * (r + gamma * next_max - q)`.
pub fn q_update(
    q: &[f32],
    rewards: &[f32],
    next_max: &[f32],
    alpha: f32,
    gamma: f32,
) -> Result<Vec<f32>, KernelError> {
    same_len(q, rewards)?;
    same_len(q, next_max)?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(KernelError::InvalidArgument("alpha must be in [0, 1]"));
    }
    if !(0.0..=1.0).contains(&gamma) {
        return Err(KernelError::InvalidArgument("gamma must be in [0, 1]"));
    }
    let mut out = Vec::with_capacity(q.len());
    lanes::q_update(q, rewards, next_max, alpha, gamma, &mut out);
    Ok(out)
}

/// A vector stored as one byte per element: element `i` is
/// `offset + scale * codes[i]`.
#[derive(Debug, Clone, Copy)]
pub struct Quantized<'a> {
    pub codes: &'a [u8],
    pub offset: f32,
    pub scale: f32,
}

impl Quantized<'_> {
    /// Quantizes `v` with its own min/max range: returns (offset, scale) and
    /// writes one code per element to `out`. A constant vector gets scale 0.
    pub fn encode(v: &[f32], out: &mut Vec<u8>) -> (f32, f32) {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in v {
            lo = lo.min(x);
            hi = hi.max(x);
        }
        if v.is_empty() {
            return (0.0, 0.0);
        }
        let scale = (hi - lo) / 255.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        // Round to nearest: +0.5 then truncate (all values are >= 0 here).
        out.extend(v.iter().map(|&x| (((x - lo) * inv) + 0.5).clamp(0.0, 255.0) as u8));
        (lo, scale)
    }

    /// The element values as f32.
    pub fn decode(&self, out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.codes.iter().map(|&c| self.offset + self.scale * c as f32));
    }
}

/// Vectors as bytes on one grid shared by all of them: element `i` of a
/// vector is about `lo[i] + code / inv_step`. With one step for every
/// element, the squared distance of two vectors is `step²` times that of
/// their codes, an integer sum that SIMD computes 16 elements at a time
/// (`i32x4.dot_i16x8_s`, see [`grid_l2_x4`]); a search walks a graph on
/// those and re-ranks its final candidates on the full vectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grid {
    /// Per element: the value of code 0.
    pub lo: Vec<f32>,
    /// `1 / step`: a value's code is `(x - lo[i]) * inv_step`, rounded.
    pub inv_step: f32,
}

/// How far a query's codes may fall outside the grid (0..=255): squares of
/// differences up to 767 summed over pairs still fit in i32 lanes.
const QUERY_CODE_RANGE: (f64, f64) = (-512.0, 767.0);

/// A fitted grid is too coarse to walk on when the data of its median
/// element spans fewer steps than this (one element far wider than the
/// rest, an outlier: most codes would then be equal).
pub const MIN_MEDIAN_STEPS: f64 = 16.0;

impl Grid {
    /// Most elements a vector on a grid may have: up to this length no
    /// sum of [`grid_l2_x4`] can overflow.
    pub const MAX_DIMENSION: usize = 4096;

    /// The grid that holds every vector of `sets` (each flat, `dimension`
    /// wide) with `margin` of each element's range to spare on both sides;
    /// `None` if the data of its median element would span fewer than
    /// `min_median_steps` steps (pass [`MIN_MEDIAN_STEPS`], or 0 to take
    /// any). Computed in f64: ranges of huge f32 values do not overflow.
    pub fn fit(sets: &[&[f32]], dimension: usize, margin: f64, min_median_steps: f64) -> Option<Grid> {
        let (mut lo, mut hi) =
            (alloc::vec![f64::INFINITY; dimension], alloc::vec![f64::NEG_INFINITY; dimension]);
        for row in sets.iter().flat_map(|s| s.chunks_exact(dimension.max(1))) {
            for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                *l = l.min(x as f64);
                *h = h.max(x as f64);
            }
        }
        let mut spans: Vec<f64> = lo.iter().zip(&hi).map(|(l, h)| if l > h { 0.0 } else { h - l }).collect();
        let widest = spans.iter().fold(0.0f64, |w, s| w.max(*s)) * (1.0 + 2.0 * margin);
        // No spread to cover: the finest step, so that the grid holds
        // nothing but the values it was fitted to.
        let inv_step = if widest > 0.0 { 255.0 / widest } else { f32::MAX as f64 };
        spans.sort_by(f64::total_cmp);
        let median = spans.get(dimension / 2).copied().unwrap_or(0.0);
        if widest > 0.0 && median * inv_step < min_median_steps {
            return None;
        }
        let lo = lo
            .iter()
            .zip(&hi)
            .map(|(&l, &h)| {
                if l > h {
                    0.0
                } else {
                    (l - (h - l) * margin).clamp(f32::MIN as f64, f32::MAX as f64) as f32
                }
            })
            .collect();
        Some(Grid { lo, inv_step: inv_step as f32 })
    }

    /// Whether every element of `v` is on the grid (codes 0 to 255).
    pub fn holds(&self, v: &[f32]) -> bool {
        let inv = self.inv_step as f64;
        v.len() == self.lo.len()
            && v.iter().zip(&self.lo).all(|(&x, &l)| (-0.5..255.5).contains(&((x as f64 - l as f64) * inv)))
    }

    /// Appends `v`'s codes (elements off the grid are clamped).
    pub fn encode(&self, v: &[f32], out: &mut Vec<u8>) {
        let inv = self.inv_step as f64;
        out.extend(
            v.iter()
                .zip(&self.lo)
                .map(|(&x, &l)| ((x as f64 - l as f64) * inv + 0.5).clamp(0.0, 255.0) as u8),
        );
    }

    /// A query's codes, kept to 16 bits and allowed off the grid by up to
    /// twice its width.
    pub fn encode_query(&self, q: &[f32], out: &mut Vec<i16>) {
        // Shifted to be positive, `as` rounds half up.
        let ((min, max), inv) = (QUERY_CODE_RANGE, self.inv_step as f64);
        out.clear();
        out.extend(q.iter().zip(&self.lo).map(|(&x, &l)| {
            (((x as f64 - l as f64) * inv - min + 0.5).clamp(0.0, max - min) as i32 + min as i32) as i16
        }));
    }
}

/// `Σ (q[i] - rows[j][i])²` over grid codes for four rows, exact in
/// integers: for rows as long as `q`, at most [`Grid::MAX_DIMENSION`]
/// elements, and query codes as [`Grid::encode_query`] makes them (-512 to
/// 767), no sum can overflow.
#[inline]
pub fn grid_l2_x4(q: &[i16], rows: [&[u8]; 4]) -> [u32; 4] {
    debug_assert!(q.len() <= Grid::MAX_DIMENSION && rows.iter().all(|r| r.len() == q.len()));
    lanes::grid_l2_x4(q, rows)
}

/// Squared L2 distance between `a` and a quantized vector (lengths checked by
/// the caller).
pub fn squared_l2_quantized(a: &[f32], b: Quantized<'_>) -> f32 {
    lanes::squared_l2_q(a, b.codes, b.offset, b.scale)
}

/// Inner product of `a` and a quantized vector (lengths checked by the
/// caller).
pub fn dot_quantized(a: &[f32], b: Quantized<'_>) -> f32 {
    lanes::dot_q(a, b.codes, b.offset, b.scale)
}

/// `sqrt` without `std` (`f32::sqrt` lives in `std`; the kernels are
/// `no_std`): the wasm `f32x4.sqrt` instruction on one lane, or Newton steps.
#[inline(always)]
fn libm_sqrt(x: f32) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::{f32x4_extract_lane, f32x4_splat, f32x4_sqrt};
        f32x4_extract_lane::<0>(f32x4_sqrt(f32x4_splat(x)))
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        sqrt_portable(x)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn sqrt_portable(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 || x.is_infinite() {
        return x;
    }
    // Double-precision Newton iteration from a bit-trick estimate, then round:
    // converges to the correctly rounded f32 result in three steps.
    let xd = x as f64;
    let mut y = f64::from_bits((xd.to_bits() >> 1) + (1023u64 << 51));
    y = 0.5 * (y + xd / y);
    y = 0.5 * (y + xd / y);
    y = 0.5 * (y + xd / y);
    y = 0.5 * (y + xd / y);
    y as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn rows(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn four_row_kernels_agree_with_the_one_row_kernels() {
        for d in [1usize, 7, 8, 31, 32, 33, 128, 129] {
            let q = rows(1, d);
            let m = rows(2, 4 * d);
            let r: [&[f32]; 4] = core::array::from_fn(|i| &m[i * d..i * d + d]);
            let l2 = score4_unchecked(Metric::SquaredL2, &q, r);
            let dot = score4_unchecked(Metric::Dot, &q, r);
            for i in 0..4 {
                let (a, b) = (lanes::squared_l2(&q, r[i]), lanes::dot(&q, r[i]));
                assert!((l2[i] - a).abs() <= 1e-5 * a.abs().max(1.0), "d={d} row {i}: {} vs {a}", l2[i]);
                assert!((dot[i] - b).abs() <= 1e-5 * b.abs().max(1.0), "d={d} row {i}: {} vs {b}", dot[i]);
            }
        }
    }

    #[test]
    fn grid_distances_are_exact_integer_sums_even_at_the_extremes() {
        let reference = |q: &[i16], c: &[u8]| {
            q.iter().zip(c).map(|(&a, &b)| (a as i64 - b as i64).pow(2)).sum::<i64>() as u32
        };
        for d in [1usize, 15, 16, 17, 64, 100, 128] {
            let v = rows(3, 5 * d);
            let codes: Vec<u8> = v[d..].iter().map(|x| ((x + 2.0) * 63.0) as u8).collect();
            let q: Vec<i16> = v[..d].iter().map(|x| (x * 300.0) as i16).collect();
            let r: [&[u8]; 4] = core::array::from_fn(|i| &codes[i * d..i * d + d]);
            assert_eq!(grid_l2_x4(&q, r), r.map(|r| reference(&q, r)), "d={d}");
        }
        // The largest sums the grid allows: 4096 elements, every difference
        // the widest a query may be off the grid.
        let (lo, hi) = (vec![-512i16; 4096], vec![767i16; 4096]);
        let (zeros, full) = (vec![0u8; 4096], vec![255u8; 4096]);
        let got = grid_l2_x4(&lo, [&full, &zeros, &full, &zeros]);
        assert_eq!(got, [4096 * 767 * 767, 4096 * 512 * 512, 4096 * 767 * 767, 4096 * 512 * 512]);
        assert_eq!(grid_l2_x4(&hi, [&zeros; 4])[0], 4096 * 767 * 767);
    }

    #[test]
    fn a_grid_holds_what_it_was_fitted_to_and_codes_queries_off_it() {
        let v = [0.0f32, 10.0, 5.0, -10.0, 1.0, 0.0];
        let g = Grid::fit(&[&v[..4], &v[4..]], 2, 0.0, 0.0).unwrap();
        // One step for all elements: the widest range (20) over 255.
        assert_eq!((g.lo.clone(), g.inv_step), (vec![0.0, -10.0], 255.0 / 20.0));
        assert!(g.holds(&[2.0, 0.0]) && !g.holds(&[21.0, 0.0]) && !g.holds(&[1.0]));
        // Element 0 spans 5 of the 20 the codes cover: 6 is still on the grid.
        assert!(g.holds(&[6.0, 0.0]));
        let mut codes = Vec::new();
        g.encode(&[5.0, 10.0], &mut codes);
        g.encode(&[99.0, -99.0], &mut codes);
        assert_eq!(codes, [64, 255, 255, 0]);
        let mut q = Vec::new();
        g.encode_query(&[5.0, 30.0], &mut q);
        assert_eq!(q, [64, 510]);
        g.encode_query(&[1e30, f32::MIN], &mut q);
        assert_eq!(q, [767, -512]);
        // A margin widens each range on both sides, and the step with it.
        let wide = Grid::fit(&[&v[..4]], 2, 0.5, 0.0).unwrap();
        assert_eq!((wide.lo[0], wide.inv_step), (-2.5, 255.0 / 40.0));
        // Nothing to fit, or all equal: a valid grid that holds only that.
        let empty = Grid::fit(&[], 3, 0.25, MIN_MEDIAN_STEPS).unwrap();
        assert_eq!((empty.lo.clone(), empty.inv_step), (vec![0.0; 3], f32::MAX));
        assert!(empty.holds(&[0.0; 3]) && !empty.holds(&[0.0, 1e-30, 0.0]));
        let same = Grid::fit(&[&[2.0, 2.0, 2.0, 2.0]], 2, 0.25, MIN_MEDIAN_STEPS).unwrap();
        assert!(same.holds(&[2.0, 2.0]) && !same.holds(&[2.0, 2.5]));
    }

    #[test]
    fn grids_of_huge_values_stay_finite_and_coarse_ones_are_refused() {
        let v = [3e38f32, -3e38, -3e38, 3e38];
        let g = Grid::fit(&[&v], 2, 0.25, 0.0).unwrap();
        assert!(g.lo.iter().all(|l| l.is_finite()) && g.inv_step.is_finite() && g.inv_step > 0.0);
        assert!(g.holds(&v[..2]) && g.holds(&v[2..]));
        let mut codes = Vec::new();
        g.encode(&v[..2], &mut codes);
        g.encode(&v[2..], &mut codes);
        // The lowest code at f32::MIN (the margin below -3e38 is not an
        // f32), the step a 255th of 9e38 (the range with its margins).
        assert_eq!(codes, [181, 11, 11, 181]);
        // One element a million times wider than the rest: its steps are
        // too wide for the others, whose data spans under one step.
        let mut outlier: Vec<f32> = (0..64).map(|i| (i % 7) as f32 / 7.0).collect();
        outlier.extend([1e6, 0.5, 0.5, 0.5]);
        assert_eq!(Grid::fit(&[&outlier], 4, 0.25, MIN_MEDIAN_STEPS), None);
        assert!(Grid::fit(&[&outlier], 4, 0.25, 0.0).is_some());
        assert!(Grid::fit(&[&outlier[..64]], 4, 0.25, MIN_MEDIAN_STEPS).is_some());
    }
}
