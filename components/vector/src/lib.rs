//! The `vector` component: exports `elex:vector/kernels` backed by
//! `elex-kernels` (simd128).
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

use alloc::vec::Vec;
use core::cell::RefCell;
use elex_kernels as k;

wit_bindgen::generate!({
    world: "elex:vector/library@0.1.0",
    path: "../../wit",
    std_feature,
});

use exports::elex::vector::kernels::{
    BadShape, Guest, GuestMatrix, LengthMismatch, Matrix, Metric, RangeVerdict, Scored, Summary, VectorError,
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

/// The `matrix` resource: rows and their norms, kept in this instance.
struct Rows {
    dimension: usize,
    data: RefCell<(Vec<f32>, Vec<f32>)>,
}

fn scored(hits: Vec<(u32, f32)>) -> Vec<Scored> {
    hits.into_iter().map(|(index, score)| Scored { index, score }).collect()
}

impl GuestMatrix for Rows {
    fn create(rows: Vec<f32>, dimension: u32) -> Result<Matrix, VectorError> {
        if dimension == 0 {
            return Err(VectorError::InvalidArgument("dimension must be at least 1".into()));
        }
        let norms = k::row_norms(&rows, dimension as usize).map_err(to_wit)?;
        Ok(Matrix::new(Rows { dimension: dimension as usize, data: RefCell::new((rows, norms)) }))
    }

    fn append(&self, rows: Vec<f32>) -> Result<(), VectorError> {
        let norms = k::row_norms(&rows, self.dimension).map_err(to_wit)?;
        let mut data = self.data.borrow_mut();
        data.0.extend_from_slice(&rows);
        data.1.extend_from_slice(&norms);
        Ok(())
    }

    fn len(&self) -> u32 {
        self.data.borrow().1.len() as u32
    }

    fn dimension(&self) -> u32 {
        self.dimension as u32
    }

    fn score(&self, query: Vec<f32>, m: Metric) -> Result<Vec<f32>, VectorError> {
        let data = self.data.borrow();
        k::score_rows_normed(&query, &data.0, self.dimension, &data.1, metric(m)).map_err(to_wit)
    }

    fn top_k(&self, query: Vec<f32>, count: u32, m: Metric) -> Result<Vec<Scored>, VectorError> {
        let scores = self.score(query, m)?;
        Ok(scored(k::top_k_of(scores, count as usize, metric(m)).map_err(to_wit)?))
    }
}

impl Guest for Vector {
    type Matrix = Rows;

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
