//! The `vector` component: exports `elex:vector/kernels` backed by
//! `elex-kernels` (simd128).
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

use alloc::vec::Vec;
use elex_kernels as k;

wit_bindgen::generate!({
    world: "elex:vector/library@0.1.0",
    path: "../../wit",
    std_feature,
});

use exports::elex::vector::kernels::{
    BadShape, Guest, LengthMismatch, Metric, RangeVerdict, Scored, Summary, VectorError,
};

struct Vector;

fn to_wit(e: k::KernelError) -> VectorError {
    // Lengths come from lists the component received, which fit in u32.
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    match e {
        k::KernelError::LengthMismatch { expected, found } => {
            VectorError::LengthMismatch(LengthMismatch { expected: n(expected), found: n(found) })
        }
        k::KernelError::BadShape { len, dimension } => {
            VectorError::BadShape(BadShape { len: n(len), dimension: n(dimension) })
        }
        k::KernelError::InvalidArgument(what) => VectorError::InvalidArgument(what.into()),
    }
}

fn metric(m: Metric) -> k::Metric {
    match m {
        Metric::Cosine => k::Metric::Cosine,
        Metric::Dot => k::Metric::Dot,
        Metric::SquaredL2 => k::Metric::SquaredL2,
    }
}

impl Guest for Vector {
    fn dot(a: Vec<f32>, b: Vec<f32>) -> Result<f32, VectorError> {
        k::dot(&a, &b).map_err(to_wit)
    }

    fn cosine(a: Vec<f32>, b: Vec<f32>) -> Result<f32, VectorError> {
        k::cosine(&a, &b).map_err(to_wit)
    }

    fn squared_l2(a: Vec<f32>, b: Vec<f32>) -> Result<f32, VectorError> {
        k::squared_l2(&a, &b).map_err(to_wit)
    }

    fn normalize(mut v: Vec<f32>) -> Vec<f32> {
        k::normalize(&mut v);
        v
    }

    fn score_rows(
        query: Vec<f32>,
        matrix: Vec<f32>,
        dimension: u32,
        m: Metric,
    ) -> Result<Vec<f32>, VectorError> {
        k::score_rows(&query, &matrix, dimension as usize, metric(m)).map_err(to_wit)
    }

    fn top_k(
        query: Vec<f32>,
        matrix: Vec<f32>,
        dimension: u32,
        count: u32,
        m: Metric,
    ) -> Result<Vec<Scored>, VectorError> {
        let hits =
            k::top_k(&query, &matrix, dimension as usize, count as usize, metric(m)).map_err(to_wit)?;
        Ok(hits.into_iter().map(|(index, score)| Scored { index, score }).collect())
    }

    fn validate_ranges(
        values: Vec<f32>,
        minimums: Vec<f32>,
        maximums: Vec<f32>,
    ) -> Result<Vec<RangeVerdict>, VectorError> {
        let verdicts = k::validate_ranges(&values, &minimums, &maximums).map_err(to_wit)?;
        Ok(verdicts
            .into_iter()
            .map(|v| match v {
                k::RangeVerdict::Within => RangeVerdict::Within,
                k::RangeVerdict::Below => RangeVerdict::Below,
                k::RangeVerdict::Above => RangeVerdict::Above,
                k::RangeVerdict::Invalid => RangeVerdict::Invalid,
            })
            .collect())
    }

    fn aggregate(values: Vec<f32>, weights: Vec<f32>, threshold: f32) -> Result<Summary, VectorError> {
        let a = k::aggregate(&values, &weights, threshold).map_err(to_wit)?;
        Ok(Summary {
            count: a.count,
            sum: a.sum,
            weighted_sum: a.weighted_sum,
            max: a.max,
            min: a.min,
            count_above: a.count_above,
        })
    }

    fn q_update(
        q: Vec<f32>,
        rewards: Vec<f32>,
        next_max: Vec<f32>,
        alpha: f32,
        gamma: f32,
    ) -> Result<Vec<f32>, VectorError> {
        k::q_update(&q, &rewards, &next_max, alpha, gamma).map_err(to_wit)
    }
}

export!(Vector);
