//! Property tests of the `vector` component (simd128 inside wasm) against a
//! plain scalar reference computed here in f64, through the real component
//! boundary.
//!
//! Tolerance: the kernels sum in a different order than the reference
//! (16 lanes, then a horizontal sum), so sums may differ by rounding. Every
//! comparison allows `1e-5 * sum(|terms|) + 1e-6`, far above f32 reassociation
//! error for these lengths and far below any real bug.
//!
//! Non-finite inputs: the classification of a result (NaN, +inf, -inf,
//! finite) does not depend on summation order, so it must match the
//! reference exactly. Finite inputs are bounded (|x| <= 1000) so no partial
//! sum overflows.

use std::cell::RefCell;

use proptest::prelude::*;
use wasmtime::{Engine, Store};

use elex_tests::guests::Vector;
use elex_tests::guests::vector_bindings::exports::elex::vector::kernels::{
    Guest, LengthMismatch, Metric, RangeVerdict, VectorError,
};

thread_local! {
    static VECTOR: RefCell<Vector> = RefCell::new(Vector::new(&Engine::default()));
}

fn with<T>(f: impl FnOnce(&Guest, &mut Store<()>) -> T) -> T {
    VECTOR.with(|v| {
        let mut v = v.borrow_mut();
        let (k, s) = v.split();
        f(k, s)
    })
}

// ---------- scalar reference ----------

fn ref_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    let terms = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64);
    (terms.clone().sum(), terms.map(f64::abs).sum())
}

fn ref_l2(a: &[f32], b: &[f32]) -> (f64, f64) {
    let s: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    (s, s.abs())
}

fn ref_cosine(a: &[f32], b: &[f32]) -> f64 {
    let (ab, _) = ref_dot(a, b);
    let (aa, _) = ref_dot(a, a);
    let (bb, _) = ref_dot(b, b);
    let denom = aa.sqrt() * bb.sqrt();
    if denom == 0.0 { 0.0 } else { ab / denom }
}

#[derive(Debug, PartialEq)]
enum Class {
    Nan,
    PosInf,
    NegInf,
    Finite,
}

fn class(x: f64) -> Class {
    if x.is_nan() {
        Class::Nan
    } else if x == f64::INFINITY {
        Class::PosInf
    } else if x == f64::NEG_INFINITY {
        Class::NegInf
    } else {
        Class::Finite
    }
}

fn close(got: f32, want: f64, scale: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(class(got as f64), class(want), "got {} want {}", got, want);
    if want.is_finite() {
        let tol = 1e-5 * scale + 1e-6;
        prop_assert!((got as f64 - want).abs() <= tol, "got {} want {} (tol {})", got, want, tol);
    }
    Ok(())
}

// ---------- strategies ----------

fn value() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        20 => -1000.0f32..1000.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
    ]
}

fn finite() -> impl Strategy<Value = f32> {
    -1000.0f32..1000.0
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1), Just(3), Just(4), Just(16), Just(128), Just(129), 0usize..300]
}

fn pair(v: impl Strategy<Value = f32> + Clone) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    length()
        .prop_flat_map(move |n| (prop::collection::vec(v.clone(), n), prop::collection::vec(v.clone(), n)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn dot_matches_reference((a, b) in pair(value())) {
        let got = with(|k, s| k.call_dot(s, &a, &b)).unwrap().unwrap();
        let (want, scale) = ref_dot(&a, &b);
        close(got, want, scale)?;
    }

    #[test]
    fn squared_l2_matches_reference((a, b) in pair(value())) {
        let got = with(|k, s| k.call_squared_l2(s, &a, &b)).unwrap().unwrap();
        let (want, scale) = ref_l2(&a, &b);
        close(got, want, scale)?;
    }

    #[test]
    fn cosine_matches_reference((a, b) in pair(value())) {
        let got = with(|k, s| k.call_cosine(s, &a, &b)).unwrap().unwrap();
        let any_non_finite = a.iter().chain(&b).any(|x| !x.is_finite());
        if any_non_finite {
            // Documented: any non-finite input gives NaN.
            prop_assert!(got.is_nan(), "got {}", got);
        } else {
            let want = ref_cosine(&a, &b);
            prop_assert!((got as f64 - want).abs() <= 1e-4, "got {} want {}", got, want);
        }
    }

    #[test]
    fn normalize_gives_unit_or_zero(v in length().prop_flat_map(|n| prop::collection::vec(finite(), n))) {
        let got = with(|k, s| k.call_normalize(s, &v)).unwrap();
        prop_assert_eq!(got.len(), v.len());
        let norm = ref_dot(&v, &v).0.sqrt();
        for (g, x) in got.iter().zip(&v) {
            let want = if norm == 0.0 { *x as f64 } else { *x as f64 / norm };
            prop_assert!((*g as f64 - want).abs() <= 1e-5, "got {} want {}", g, want);
        }
    }

    #[test]
    fn mismatched_lengths_are_errors(n in 0usize..200, extra in 1usize..20) {
        let a = vec![1.0f32; n];
        let b = vec![1.0f32; n + extra];
        let want = VectorError::LengthMismatch(LengthMismatch { expected: n as u32, found: (n + extra) as u32 });
        prop_assert_eq!(with(|k, s| k.call_dot(s, &a, &b)).unwrap(), Err(want.clone()));
        prop_assert_eq!(with(|k, s| k.call_cosine(s, &a, &b)).unwrap(), Err(want.clone()));
        prop_assert_eq!(with(|k, s| k.call_squared_l2(s, &a, &b)).unwrap(), Err(want));
    }

    #[test]
    fn top_k_returns_the_best_rows(
        dim in prop_oneof![Just(1usize), Just(3), Just(8), Just(129)],
        rows in 0usize..60,
        k in 0u32..10,
        metric in prop_oneof![Just(Metric::Cosine), Just(Metric::Dot), Just(Metric::SquaredL2)],
        seed in any::<u64>(),
    ) {
        // Deterministic pseudo-random data from the seed.
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ((x >> 40) as f32 / (1u64 << 24) as f32) * 20.0 - 10.0 };
        let query: Vec<f32> = (0..dim).map(|_| next()).collect();
        let matrix: Vec<f32> = (0..dim * rows).map(|_| next()).collect();
        let hits = with(|kk, s| kk.call_top_k(s, &query, &matrix, dim as u32, k, metric)).unwrap().unwrap();
        prop_assert_eq!(hits.len(), (k as usize).min(rows));

        let reference: Vec<f64> = matrix.chunks(dim).map(|row| match metric {
            Metric::Cosine => ref_cosine(&query, row),
            Metric::Dot => ref_dot(&query, row).0,
            Metric::SquaredL2 => ref_l2(&query, row).0,
        }).collect();
        let higher = metric != Metric::SquaredL2;
        let better = |a: f64, b: f64| if higher { a > b } else { a < b };
        let tol = |x: f64| 1e-4 * x.abs().max(1.0);
        for w in hits.windows(2) {
            prop_assert!(!better(w[1].score as f64, w[0].score as f64 + if higher { tol(w[0].score as f64) } else { -tol(w[0].score as f64) }),
                "not sorted best first: {:?}", hits);
        }
        for h in &hits {
            let want = reference[h.index as usize];
            prop_assert!((h.score as f64 - want).abs() <= tol(want), "row {} score {} want {}", h.index, h.score, want);
        }
        if let Some(worst) = hits.last() {
            let worst = reference[worst.index as usize];
            for (i, r) in reference.iter().enumerate() {
                if !hits.iter().any(|h| h.index as usize == i) {
                    prop_assert!(!better(*r, worst + if higher { tol(worst) } else { -tol(worst) }),
                        "row {} ({}) beats the worst returned ({})", i, r, worst);
                }
            }
        }
    }

    #[test]
    fn validate_ranges_matches_reference(
        triples in prop::collection::vec((value(), value(), value()), 0..300)
    ) {
        let values: Vec<f32> = triples.iter().map(|t| t.0).collect();
        let lo: Vec<f32> = triples.iter().map(|t| t.1.min(t.2)).collect();
        let hi: Vec<f32> = triples.iter().map(|t| t.1.max(t.2)).collect();
        let got = with(|k, s| k.call_validate_ranges(s, &values, &lo, &hi)).unwrap().unwrap();
        for (i, g) in got.iter().enumerate() {
            let (v, l, h) = (values[i], lo[i], hi[i]);
            let want = if v.is_nan() || l.is_nan() || h.is_nan() || l > h { RangeVerdict::Invalid }
                else if v < l { RangeVerdict::Below } else if v > h { RangeVerdict::Above } else { RangeVerdict::Within };
            prop_assert_eq!(*g, want, "value {} in [{}, {}]", v, l, h);
        }
    }

    #[test]
    fn aggregate_matches_reference(
        pairs in prop::collection::vec((finite(), 0.0f32..2.0), 0..600),
        threshold in -500.0f32..500.0,
    ) {
        let values: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let weights: Vec<f32> = pairs.iter().map(|p| p.1).collect();
        let a = with(|k, s| k.call_aggregate(s, &values, &weights, threshold)).unwrap().unwrap();
        prop_assert_eq!(a.count as usize, values.len());
        let sum: f64 = values.iter().map(|v| *v as f64).sum();
        let wsum: f64 = values.iter().zip(&weights).map(|(v, w)| *v as f64 * *w as f64).sum();
        prop_assert!((a.sum - sum).abs() <= 1e-6 * values.len() as f64 * 1000.0);
        prop_assert!((a.weighted_sum - wsum).abs() <= 1e-6 * values.len() as f64 * 2000.0);
        prop_assert_eq!(a.max, values.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        prop_assert_eq!(a.min, values.iter().cloned().fold(f32::INFINITY, f32::min));
        prop_assert_eq!(a.count_above as usize, values.iter().filter(|v| **v > threshold).count());
    }

    #[test]
    fn q_update_matches_reference(
        rows in prop::collection::vec((finite(), -1.0f32..1.0, finite()), 0..200),
        alpha in 0.0f32..=1.0,
        gamma in 0.0f32..=1.0,
    ) {
        let q: Vec<f32> = rows.iter().map(|r| r.0).collect();
        let r: Vec<f32> = rows.iter().map(|r| r.1).collect();
        let n: Vec<f32> = rows.iter().map(|r| r.2).collect();
        let got = with(|k, s| k.call_q_update(s, &q, &r, &n, alpha, gamma)).unwrap().unwrap();
        for i in 0..q.len() {
            let want = q[i] as f64 + alpha as f64 * (r[i] as f64 + gamma as f64 * n[i] as f64 - q[i] as f64);
            prop_assert!((got[i] as f64 - want).abs() <= 1e-3, "got {} want {}", got[i], want);
        }
    }
}

#[test]
fn q_update_refuses_out_of_range_rates() {
    let e = with(|k, s| k.call_q_update(s, &[0.0], &[0.0], &[0.0], 1.5, 0.9)).unwrap().unwrap_err();
    assert!(matches!(e, VectorError::InvalidArgument(ref m) if m.contains("alpha")), "{e:?}");
    let e = with(|k, s| k.call_q_update(s, &[0.0], &[0.0], &[0.0], 0.5, f32::NAN)).unwrap().unwrap_err();
    assert!(matches!(e, VectorError::InvalidArgument(ref m) if m.contains("gamma")), "{e:?}");
}

#[test]
fn shapes_are_checked() {
    let e =
        with(|k, s| k.call_top_k(s, &[1.0, 2.0], &[1.0, 2.0, 3.0], 2, 1, Metric::Dot)).unwrap().unwrap_err();
    assert!(matches!(e, VectorError::BadShape(_)), "{e:?}");
    let e = with(|k, s| k.call_score_rows(s, &[1.0], &[1.0, 2.0], 2, Metric::Dot)).unwrap().unwrap_err();
    assert!(matches!(e, VectorError::LengthMismatch(_)), "{e:?}");
    let empty = with(|k, s| k.call_top_k(s, &[], &[], 0, 5, Metric::Cosine)).unwrap().unwrap();
    assert!(empty.is_empty());
}

#[test]
fn top_k_ranks_nan_last() {
    let matrix = [f32::NAN, 1.0, 2.0];
    let hits = with(|k, s| k.call_top_k(s, &[1.0], &matrix, 1, 3, Metric::Dot)).unwrap().unwrap();
    let order: Vec<u32> = hits.iter().map(|h| h.index).collect();
    assert_eq!(order, [2, 1, 0]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The kept `matrix` resource scores like the free functions and the
    /// scalar reference.
    #[test]
    fn matrix_resource_matches_free_functions(
        dim in prop_oneof![Just(1usize), Just(3), Just(16), Just(129)],
        rows in 0usize..40,
        extra in 0usize..10,
        k in 0u32..8,
        seed in any::<u64>(),
    ) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ((x >> 40) as f32 / (1u64 << 24) as f32) * 20.0 - 10.0 };
        let query: Vec<f32> = (0..dim).map(|_| next()).collect();
        let first: Vec<f32> = (0..dim * rows).map(|_| next()).collect();
        let more: Vec<f32> = (0..dim * extra).map(|_| next()).collect();
        let all: Vec<f32> = first.iter().chain(&more).copied().collect();
        with(|kk, s| -> Result<(), TestCaseError> {
            let m = kk.matrix().call_create(&mut *s, &first, dim as u32).unwrap().unwrap();
            kk.matrix().call_append(&mut *s, m, &more).unwrap().unwrap();
            prop_assert_eq!(kk.matrix().call_len(&mut *s, m).unwrap() as usize, rows + extra);
            for metric in [Metric::Cosine, Metric::Dot, Metric::SquaredL2] {
                let kept = kk.matrix().call_score(&mut *s, m, &query, metric).unwrap().unwrap();
                prop_assert_eq!(kept.len(), rows + extra);
                for (i, row) in all.chunks(dim).enumerate() {
                    let want = match metric {
                        Metric::Cosine => ref_cosine(&query, row),
                        Metric::Dot => ref_dot(&query, row).0,
                        Metric::SquaredL2 => ref_l2(&query, row).0,
                    };
                    prop_assert!((kept[i] as f64 - want).abs() <= 1e-4 * want.abs().max(1.0), "row {} {:?}: {} vs {}", i, metric, kept[i], want);
                }
                let top = kk.matrix().call_top_k(&mut *s, m, &query, k, metric).unwrap().unwrap();
                prop_assert_eq!(top.len(), (k as usize).min(rows + extra));
                prop_assert!(top.iter().all(|h| (h.score - kept[h.index as usize]).abs() <= 1e-6 * h.score.abs().max(1.0)));
            }
            let bad = kk.matrix().call_append(&mut *s, m, &vec![1.0; dim + 1]).unwrap();
            if dim > 1 { prop_assert!(matches!(bad, Err(VectorError::BadShape(_)))); }
            prop_assert!(matches!(kk.matrix().call_score(&mut *s, m, &vec![0.0; dim + 1], Metric::Dot).unwrap(), Err(VectorError::LengthMismatch(_))));
            m.resource_drop(&mut *s).unwrap();
            Ok(())
        })?;
    }
}

#[test]
fn a_matrix_needs_a_dimension() {
    let e = with(|k, s| k.matrix().call_create(s, &[], 0)).unwrap().unwrap_err();
    assert!(matches!(e, VectorError::InvalidArgument(_)), "{e:?}");
}
