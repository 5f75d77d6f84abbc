//! The inner loops, in two builds: `simd128` intrinsics on wasm32, portable
//! fixed-width lane arrays elsewhere (which LLVM vectorises for the host).

use super::{Aggregate, RangeVerdict};
use alloc::vec::Vec;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use simd::*;

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub use portable::*;

/// Scalar tail shared by both builds.
#[inline(always)]
fn verdict(v: f32, lo: f32, hi: f32) -> RangeVerdict {
    if v.is_nan() || lo.is_nan() || hi.is_nan() || lo > hi {
        RangeVerdict::Invalid
    } else if v < lo {
        RangeVerdict::Below
    } else if v > hi {
        RangeVerdict::Above
    } else {
        RangeVerdict::Within
    }
}

pub fn validate_ranges(values: &[f32], lo: &[f32], hi: &[f32], out: &mut Vec<RangeVerdict>) {
    // Branch-free per element; LLVM vectorises the comparisons.
    out.extend(values.iter().zip(lo).zip(hi).map(|((&v, &l), &h)| verdict(v, l, h)));
}

pub fn aggregate(values: &[f32], weights: &[f32], threshold: f32) -> Aggregate {
    let mut sum = 0.0f64;
    let mut weighted = 0.0f64;
    let mut max = f32::NEG_INFINITY;
    let mut min = f32::INFINITY;
    let mut above = 0u32;
    // f64 accumulation keeps large counter sums exact enough; the f32 lanes
    // below handle max/min/count, which are order-independent.
    for (&v, &w) in values.iter().zip(weights) {
        sum += v as f64;
        weighted += v as f64 * w as f64;
        if v > max {
            max = v;
        }
        if v < min {
            min = v;
        }
        above += (v > threshold) as u32;
    }
    Aggregate { count: values.len() as u32, sum, weighted_sum: weighted, max, min, count_above: above }
}

pub fn q_update(q: &[f32], r: &[f32], next: &[f32], alpha: f32, gamma: f32, out: &mut Vec<f32>) {
    out.extend(q.iter().zip(r).zip(next).map(|((&q, &r), &n)| q + alpha * (r + gamma * n - q)));
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> v128 {
        // `v128.load` has no alignment requirement in wasm.
        unsafe { v128_load(p as *const v128) }
    }

    #[inline(always)]
    fn hsum(v: v128) -> f32 {
        (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
            + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
    }

    #[inline(always)]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [f32x4_splat(0.0); 4];
        let mut i = 0;
        // SAFETY: every load reads 4 floats at offset i + 4k < n.
        unsafe {
            // Two 16-lane steps per back-edge: the same sums in the same
            // order, but half the loop-header checks (epoch, fuel) a host
            // inserts.
            while i + 32 <= n {
                for step in [i, i + 16] {
                    for (k, a) in acc.iter_mut().enumerate() {
                        let o = step + 4 * k;
                        *a = f32x4_add(*a, f32x4_mul(load(pa.add(o)), load(pb.add(o))));
                    }
                }
                i += 32;
            }
            while i + 16 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let o = i + 4 * k;
                    *a = f32x4_add(*a, f32x4_mul(load(pa.add(o)), load(pb.add(o))));
                }
                i += 16;
            }
            while i + 4 <= n {
                acc[0] = f32x4_add(acc[0], f32x4_mul(load(pa.add(i)), load(pb.add(i))));
                i += 4;
            }
        }
        let mut s = hsum(f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3])));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// `(dot(q, r0), dot(q, r1))`, each summed in exactly `dot`'s order,
    /// with the query loaded once for both rows: half the loop-header checks
    /// and query loads per row when scoring a matrix.
    #[inline(always)]
    pub fn dot2(q: &[f32], r0: &[f32], r1: &[f32]) -> (f32, f32) {
        let n = q.len().min(r0.len()).min(r1.len());
        let (pq, p0, p1) = (q.as_ptr(), r0.as_ptr(), r1.as_ptr());
        let mut a0 = [f32x4_splat(0.0); 4];
        let mut a1 = [f32x4_splat(0.0); 4];
        let mut i = 0;
        // SAFETY: every load reads 4 floats at offset i + 4k < n.
        unsafe {
            // 32 lanes per back-edge (two 16-lane steps, same order).
            while i + 32 <= n {
                for step in [i, i + 16] {
                    for k in 0..4 {
                        let o = step + 4 * k;
                        let x = load(pq.add(o));
                        a0[k] = f32x4_add(a0[k], f32x4_mul(x, load(p0.add(o))));
                        a1[k] = f32x4_add(a1[k], f32x4_mul(x, load(p1.add(o))));
                    }
                }
                i += 32;
            }
            while i + 16 <= n {
                for k in 0..4 {
                    let o = i + 4 * k;
                    let x = load(pq.add(o));
                    a0[k] = f32x4_add(a0[k], f32x4_mul(x, load(p0.add(o))));
                    a1[k] = f32x4_add(a1[k], f32x4_mul(x, load(p1.add(o))));
                }
                i += 16;
            }
            while i + 4 <= n {
                let x = load(pq.add(i));
                a0[0] = f32x4_add(a0[0], f32x4_mul(x, load(p0.add(i))));
                a1[0] = f32x4_add(a1[0], f32x4_mul(x, load(p1.add(i))));
                i += 4;
            }
        }
        let mut s0 = hsum(f32x4_add(f32x4_add(a0[0], a0[1]), f32x4_add(a0[2], a0[3])));
        let mut s1 = hsum(f32x4_add(f32x4_add(a1[0], a1[1]), f32x4_add(a1[2], a1[3])));
        while i < n {
            s0 += q[i] * r0[i];
            s1 += q[i] * r1[i];
            i += 1;
        }
        (s0, s1)
    }

    pub fn dot_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let z = f32x4_splat(0.0);
        let (mut ab0, mut aa0, mut bb0) = (z, z, z);
        let (mut ab1, mut aa1, mut bb1) = (z, z, z);
        let mut i = 0;
        // SAFETY: loads stay below n.
        unsafe {
            while i + 8 <= n {
                let (x0, y0) = (load(pa.add(i)), load(pb.add(i)));
                let (x1, y1) = (load(pa.add(i + 4)), load(pb.add(i + 4)));
                ab0 = f32x4_add(ab0, f32x4_mul(x0, y0));
                aa0 = f32x4_add(aa0, f32x4_mul(x0, x0));
                bb0 = f32x4_add(bb0, f32x4_mul(y0, y0));
                ab1 = f32x4_add(ab1, f32x4_mul(x1, y1));
                aa1 = f32x4_add(aa1, f32x4_mul(x1, x1));
                bb1 = f32x4_add(bb1, f32x4_mul(y1, y1));
                i += 8;
            }
            while i + 4 <= n {
                let (x, y) = (load(pa.add(i)), load(pb.add(i)));
                ab0 = f32x4_add(ab0, f32x4_mul(x, y));
                aa0 = f32x4_add(aa0, f32x4_mul(x, x));
                bb0 = f32x4_add(bb0, f32x4_mul(y, y));
                i += 4;
            }
        }
        let (mut ab, mut aa, mut bb) =
            (hsum(f32x4_add(ab0, ab1)), hsum(f32x4_add(aa0, aa1)), hsum(f32x4_add(bb0, bb1)));
        while i < n {
            ab += a[i] * b[i];
            aa += a[i] * a[i];
            bb += b[i] * b[i];
            i += 1;
        }
        (ab, aa, bb)
    }

    /// `(dot(a, b), dot(b, b))` in one pass.
    pub fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let z = f32x4_splat(0.0);
        let (mut ab0, mut bb0, mut ab1, mut bb1) = (z, z, z, z);
        let mut i = 0;
        // SAFETY: loads stay below n.
        unsafe {
            while i + 8 <= n {
                let (x0, y0) = (load(pa.add(i)), load(pb.add(i)));
                let (x1, y1) = (load(pa.add(i + 4)), load(pb.add(i + 4)));
                ab0 = f32x4_add(ab0, f32x4_mul(x0, y0));
                bb0 = f32x4_add(bb0, f32x4_mul(y0, y0));
                ab1 = f32x4_add(ab1, f32x4_mul(x1, y1));
                bb1 = f32x4_add(bb1, f32x4_mul(y1, y1));
                i += 8;
            }
            while i + 4 <= n {
                let (x, y) = (load(pa.add(i)), load(pb.add(i)));
                ab0 = f32x4_add(ab0, f32x4_mul(x, y));
                bb0 = f32x4_add(bb0, f32x4_mul(y, y));
                i += 4;
            }
        }
        let (mut ab, mut bb) = (hsum(f32x4_add(ab0, ab1)), hsum(f32x4_add(bb0, bb1)));
        while i < n {
            ab += a[i] * b[i];
            bb += b[i] * b[i];
            i += 1;
        }
        (ab, bb)
    }

    pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [f32x4_splat(0.0); 4];
        let mut i = 0;
        // SAFETY: loads stay below n.
        unsafe {
            // Two 16-lane steps per back-edge, as in `dot`.
            while i + 32 <= n {
                for step in [i, i + 16] {
                    for (k, a) in acc.iter_mut().enumerate() {
                        let o = step + 4 * k;
                        let d = f32x4_sub(load(pa.add(o)), load(pb.add(o)));
                        *a = f32x4_add(*a, f32x4_mul(d, d));
                    }
                }
                i += 32;
            }
            while i + 16 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let o = i + 4 * k;
                    let d = f32x4_sub(load(pa.add(o)), load(pb.add(o)));
                    *a = f32x4_add(*a, f32x4_mul(d, d));
                }
                i += 16;
            }
            while i + 4 <= n {
                let d = f32x4_sub(load(pa.add(i)), load(pb.add(i)));
                acc[0] = f32x4_add(acc[0], f32x4_mul(d, d));
                i += 4;
            }
        }
        let mut s = hsum(f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3])));
        while i < n {
            let d = a[i] - b[i];
            s += d * d;
            i += 1;
        }
        s
    }

    /// `op(q, rows[j])` for four rows at once, `op` one of `dot` and
    /// `squared_l2` (`L2`): the query is loaded once for all four, and the
    /// four rows' loads are independent, so their cache misses overlap.
    /// Each row sums in two lane groups (not `dot`'s four): eight
    /// accumulators in all. 32 lanes per back-edge. Never inlined: inside
    /// a caller as large as a graph search, Cranelift runs out of
    /// registers.
    #[inline(never)]
    pub fn x4<const L2: bool>(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let pq = q.as_ptr();
        let p = rows.map(|r| r.as_ptr());
        let mut acc = [[f32x4_splat(0.0); 2]; 4];
        let mut i = 0;
        #[inline(always)]
        fn step<const L2: bool>(acc: &mut [v128; 2], x: [v128; 2], y: [v128; 2]) {
            for k in 0..2 {
                acc[k] = if L2 {
                    let d = f32x4_sub(x[k], y[k]);
                    f32x4_add(acc[k], f32x4_mul(d, d))
                } else {
                    f32x4_add(acc[k], f32x4_mul(x[k], y[k]))
                };
            }
        }
        // SAFETY: every load reads 4 floats at an offset below n - 3.
        unsafe {
            while i + 32 <= n {
                for o in [i, i + 8, i + 16, i + 24] {
                    let x = [load(pq.add(o)), load(pq.add(o + 4))];
                    for (acc, p) in acc.iter_mut().zip(p) {
                        step::<L2>(acc, x, [load(p.add(o)), load(p.add(o + 4))]);
                    }
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = [load(pq.add(i)), load(pq.add(i + 4))];
                for (acc, p) in acc.iter_mut().zip(p) {
                    step::<L2>(acc, x, [load(p.add(i)), load(p.add(i + 4))]);
                }
                i += 8;
            }
        }
        let mut out = acc.map(|a| hsum(f32x4_add(a[0], a[1])));
        for (s, r) in out.iter_mut().zip(rows) {
            for j in i..n {
                *s += if L2 { (q[j] - r[j]) * (q[j] - r[j]) } else { q[j] * r[j] };
            }
        }
        out
    }

    /// `Σ (q[i] - codes[r][i])²` for four rows of byte codes against a
    /// query on the same grid as 16-bit values (see `crate::grid_l2_x4`).
    /// Up to 128 elements per back-edge: a 128-wide vector in one pass.
    /// Values live across a back-edge are spilled around the host's epoch
    /// check (a call that may clobber every vector register), so fewer
    /// back-edges, fewer spills.
    pub fn grid_l2_x4(q: &[i16], rows: [&[u8]; 4]) -> [u32; 4] {
        const STEP: usize = 128;
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let pq = q.as_ptr();
        let p = rows.map(|r| r.as_ptr());
        let mut acc = [i32x4_splat(0); 4];
        let mut i = 0;
        // SAFETY: 16 codes and 16 query values from i < n - 15.
        unsafe {
            #[inline(always)]
            unsafe fn step(acc: &mut [v128; 4], pq: *const i16, p: [*const u8; 4], i: usize) {
                // SAFETY: the caller's bounds.
                unsafe {
                    let (q0, q1) =
                        (v128_load(pq.add(i) as *const v128), v128_load(pq.add(i + 8) as *const v128));
                    for (acc, p) in acc.iter_mut().zip(p) {
                        let c = v128_load(p.add(i) as *const v128);
                        let d0 = i16x8_sub(q0, u16x8_extend_low_u8x16(c));
                        let d1 = i16x8_sub(q1, u16x8_extend_high_u8x16(c));
                        *acc = i32x4_add(*acc, i32x4_add(i32x4_dot_i16x8(d0, d0), i32x4_dot_i16x8(d1, d1)));
                    }
                }
            }
            while i + STEP <= n {
                for k in 0..STEP / 16 {
                    step(&mut acc, pq, p, i + 16 * k);
                }
                i += STEP;
            }
            while i + 16 <= n {
                step(&mut acc, pq, p, i);
                i += 16;
            }
        }
        let mut out = acc.map(|a| {
            (i32x4_extract_lane::<0>(a) as u32)
                .wrapping_add(i32x4_extract_lane::<1>(a) as u32)
                .wrapping_add(i32x4_extract_lane::<2>(a) as u32)
                .wrapping_add(i32x4_extract_lane::<3>(a) as u32)
        });
        for (s, r) in out.iter_mut().zip(rows) {
            for j in i..n {
                // As the lanes compute it: a 16-bit difference, squared.
                let d = q[j].wrapping_sub(r[j] as i16) as i32;
                *s = s.wrapping_add((d * d) as u32);
            }
        }
        out
    }

    /// Loads 4 bytes at `p` as four f32 lanes.
    #[inline(always)]
    unsafe fn load_u8x4(p: *const u8) -> v128 {
        // SAFETY: the caller guarantees 4 readable bytes.
        let word = unsafe { core::ptr::read_unaligned(p as *const u32) };
        let bytes = u32x4_splat(0);
        let v = u32x4_replace_lane::<0>(bytes, word);
        // u8x16 -> u16x8 -> u32x4 (low halves), then to f32.
        f32x4_convert_u32x4(u32x4_extend_low_u16x8(u16x8_extend_low_u8x16(v)))
    }

    pub fn squared_l2_q(a: &[f32], codes: &[u8], offset: f32, scale: f32) -> f32 {
        let n = a.len().min(codes.len());
        let (pa, pc) = (a.as_ptr(), codes.as_ptr());
        let (o, s) = (f32x4_splat(offset), f32x4_splat(scale));
        let mut acc = [f32x4_splat(0.0); 2];
        let mut i = 0;
        // SAFETY: loads stay below n.
        unsafe {
            while i + 8 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o4 = i + 4 * k;
                    let b = f32x4_add(o, f32x4_mul(s, load_u8x4(pc.add(o4))));
                    let d = f32x4_sub(load(pa.add(o4)), b);
                    *acc = f32x4_add(*acc, f32x4_mul(d, d));
                }
                i += 8;
            }
        }
        let mut sum = hsum(f32x4_add(acc[0], acc[1]));
        while i < n {
            let d = a[i] - (offset + scale * codes[i] as f32);
            sum += d * d;
            i += 1;
        }
        sum
    }

    pub fn dot_q(a: &[f32], codes: &[u8], offset: f32, scale: f32) -> f32 {
        let n = a.len().min(codes.len());
        let (pa, pc) = (a.as_ptr(), codes.as_ptr());
        let (o, s) = (f32x4_splat(offset), f32x4_splat(scale));
        let mut acc = [f32x4_splat(0.0); 2];
        let mut i = 0;
        // SAFETY: loads stay below n.
        unsafe {
            while i + 8 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o4 = i + 4 * k;
                    let b = f32x4_add(o, f32x4_mul(s, load_u8x4(pc.add(o4))));
                    *acc = f32x4_add(*acc, f32x4_mul(load(pa.add(o4)), b));
                }
                i += 8;
            }
        }
        let mut sum = hsum(f32x4_add(acc[0], acc[1]));
        while i < n {
            sum += a[i] * (offset + scale * codes[i] as f32);
            i += 1;
        }
        sum
    }

    pub fn scale(v: &mut [f32], factor: f32) {
        let n = v.len();
        let p = v.as_mut_ptr();
        let f = f32x4_splat(factor);
        let mut i = 0;
        // SAFETY: loads and stores stay below n.
        unsafe {
            while i + 4 <= n {
                let x = load(p.add(i));
                v128_store(p.add(i) as *mut v128, f32x4_mul(x, f));
                i += 4;
            }
        }
        for x in &mut v[i..] {
            *x *= factor;
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod portable {
    const W: usize = 8;

    #[inline(always)]
    fn sum(acc: [f32; W]) -> f32 {
        acc.iter().sum()
    }

    /// `(dot(q, r0), dot(q, r1))`.
    pub fn dot2(q: &[f32], r0: &[f32], r1: &[f32]) -> (f32, f32) {
        (dot(q, r0), dot(q, r1))
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; W];
        let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..W {
                acc[k] += x[k] * y[k];
            }
        }
        sum(acc) + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
    }

    pub fn dot_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let (mut ab, mut aa, mut bb) = ([0.0f32; W], [0.0f32; W], [0.0f32; W]);
        let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..W {
                ab[k] += x[k] * y[k];
                aa[k] += x[k] * x[k];
                bb[k] += y[k] * y[k];
            }
        }
        let (mut s_ab, mut s_aa, mut s_bb) = (sum(ab), sum(aa), sum(bb));
        for (x, y) in ra.iter().zip(rb) {
            s_ab += x * y;
            s_aa += x * x;
            s_bb += y * y;
        }
        (s_ab, s_aa, s_bb)
    }

    /// `(dot(a, b), dot(b, b))` in one pass.
    pub fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
        let (mut ab, mut bb) = ([0.0f32; W], [0.0f32; W]);
        let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..W {
                ab[k] += x[k] * y[k];
                bb[k] += y[k] * y[k];
            }
        }
        let (mut s_ab, mut s_bb) = (sum(ab), sum(bb));
        for (x, y) in ra.iter().zip(rb) {
            s_ab += x * y;
            s_bb += y * y;
        }
        (s_ab, s_bb)
    }

    pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; W];
        let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..W {
                let d = x[k] - y[k];
                acc[k] += d * d;
            }
        }
        sum(acc) + ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum::<f32>()
    }

    /// `op(q, rows[j])` for four rows at once, each summed exactly as the
    /// one-row kernel sums it; the rows' loads interleave.
    pub fn x4<const L2: bool>(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let mut acc = [[0.0f32; W]; 4];
        let whole = n - n % W;
        for at in (0..whole).step_by(W) {
            let x = &q[at..at + W];
            for (acc, r) in acc.iter_mut().zip(rows) {
                let y = &r[at..at + W];
                for k in 0..W {
                    acc[k] += if L2 { (x[k] - y[k]) * (x[k] - y[k]) } else { x[k] * y[k] };
                }
            }
        }
        let mut out = [0.0f32; 4];
        for ((o, acc), r) in out.iter_mut().zip(acc).zip(rows) {
            let tail = q[whole..n].iter().zip(&r[whole..n]);
            *o = sum(acc) + tail.map(|(x, y)| if L2 { (x - y) * (x - y) } else { x * y }).sum::<f32>();
        }
        out
    }

    /// `Σ (q[i] - codes[r][i])²` for four rows of byte codes.
    pub fn grid_l2_x4(q: &[i16], rows: [&[u8]; 4]) -> [u32; 4] {
        // |q - code| <= 767 fits i16, its square i32; a lane sums at most
        // 2^8 squares (2^12 elements / 16 lanes), so i32 holds it too.
        let sq = |a: i16, b: u8| {
            let d = a.wrapping_sub(b as i16) as i32;
            d * d
        };
        rows.map(|r| {
            let n = q.len().min(r.len());
            let mut acc = [0i32; 16];
            let (cq, cr) = (q[..n].chunks_exact(16), r[..n].chunks_exact(16));
            let tail = cq
                .remainder()
                .iter()
                .zip(cr.remainder())
                .fold(0u32, |s, (&a, &b)| s.wrapping_add(sq(a, b) as u32));
            for (x, y) in cq.zip(cr) {
                for k in 0..16 {
                    acc[k] = acc[k].wrapping_add(sq(x[k], y[k]));
                }
            }
            acc.iter().fold(tail, |s, &a| s.wrapping_add(a as u32))
        })
    }

    pub fn squared_l2_q(a: &[f32], codes: &[u8], offset: f32, scale: f32) -> f32 {
        let mut acc = [0.0f32; W];
        let (ca, cb) = (a.chunks_exact(W), codes.chunks_exact(W));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, c) in ca.zip(cb) {
            for k in 0..W {
                let d = x[k] - (offset + scale * c[k] as f32);
                acc[k] += d * d;
            }
        }
        let tail: f32 = ra
            .iter()
            .zip(rb)
            .map(|(x, c)| {
                let d = x - (offset + scale * *c as f32);
                d * d
            })
            .sum();
        sum(acc) + tail
    }

    pub fn dot_q(a: &[f32], codes: &[u8], offset: f32, scale: f32) -> f32 {
        let mut acc = [0.0f32; W];
        let (ca, cb) = (a.chunks_exact(W), codes.chunks_exact(W));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, c) in ca.zip(cb) {
            for k in 0..W {
                acc[k] += x[k] * (offset + scale * c[k] as f32);
            }
        }
        sum(acc) + ra.iter().zip(rb).map(|(x, c)| x * (offset + scale * *c as f32)).sum::<f32>()
    }

    pub fn scale(v: &mut [f32], factor: f32) {
        for x in v {
            *x *= factor;
        }
    }
}
