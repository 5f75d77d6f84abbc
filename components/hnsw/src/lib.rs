//! The `hnsw` component: exports `elex:hnsw/store`, an HNSW index resource
//! (see `elex-ann` for the algorithm). Distances use the `elex-kernels`
//! simd128 code compiled in.
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use elex_ann::{Graph, GraphError, GridState, Metric, Params};

wit_bindgen::generate!({
    world: "elex:hnsw/library@0.1.0",
    path: "../../wit",
    std_feature,
});

use exports::elex::hnsw::store::{
    Config, DimensionMismatch, Distance, Guest, GuestIndex, Hit, HnswError, Index, Storage,
};

const MAGIC: &[u8; 4] = b"EXHN";
/// Snapshot format written by this build: the graph, then its walk grid
/// (version 1, still read, had no grid: one is fitted on restore).
const VERSION: u16 = 2;

fn to_wit(e: GraphError) -> HnswError {
    match e {
        GraphError::Dimension { expected, found } => {
            HnswError::DimensionMismatch(DimensionMismatch { expected: expected as u32, found: found as u32 })
        }
        GraphError::Duplicate(id) => HnswError::DuplicateId(id),
        GraphError::NonFinite(id) => HnswError::NonFinite(id),
        GraphError::Config(what) => HnswError::InvalidConfig(String::from(what)),
    }
}

struct Store;

/// The `index` resource.
struct HnswIndex(RefCell<Graph>);

impl Guest for Store {
    type Index = HnswIndex;
}

impl GuestIndex for HnswIndex {
    fn create(config: Config) -> Result<Index, HnswError> {
        let params = Params {
            dimension: config.dimension as usize,
            metric: match config.distance {
                Distance::Cosine => Metric::Cosine,
                Distance::SquaredL2 => Metric::SquaredL2,
            },
            storage: match config.storage {
                Storage::Full => elex_ann::Storage::Full,
                Storage::Int8 => elex_ann::Storage::Int8,
            },
            m: config.m as usize,
            ef_construction: config.ef_construction as usize,
            ef_search: config.ef_search as usize,
            seed: config.seed,
        };
        let graph = Graph::new(params).map_err(to_wit)?;
        Ok(Index::new(HnswIndex(RefCell::new(graph))))
    }

    fn insert(&self, id: u64, vector: Vec<f32>) -> Result<(), HnswError> {
        self.0.borrow_mut().insert(id, &vector).map_err(to_wit)
    }

    fn insert_batch(&self, ids: Vec<u64>, vectors: Vec<f32>) -> Result<(), HnswError> {
        let mut g = self.0.borrow_mut();
        let d = g.params.dimension;
        if vectors.len() != ids.len() * d {
            return Err(HnswError::DimensionMismatch(DimensionMismatch {
                expected: (ids.len() * d) as u32,
                found: vectors.len() as u32,
            }));
        }
        g.reserve(ids.len());
        // Validate everything first: all-or-nothing.
        let mut seen = hashbrown::HashSet::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            g.check_vector(*id, &vectors[i * d..i * d + d]).map_err(to_wit)?;
            if g.contains(*id) || !seen.insert(*id) {
                return Err(HnswError::DuplicateId(*id));
            }
        }
        for (i, id) in ids.iter().enumerate() {
            g.insert(*id, &vectors[i * d..i * d + d]).map_err(to_wit)?;
        }
        Ok(())
    }

    fn search(&self, query: Vec<f32>, k: u32, ef: u32) -> Result<Vec<Hit>, HnswError> {
        let mut g = self.0.borrow_mut();
        let ef = if ef == 0 { g.params.ef_search } else { ef as usize };
        let hits = g.search(&query, k as usize, ef).map_err(to_wit)?;
        Ok(hits.into_iter().map(|(id, distance)| Hit { id, distance }).collect())
    }

    fn remove(&self, id: u64) -> bool {
        self.0.borrow_mut().remove(id)
    }

    fn len(&self) -> u64 {
        self.0.borrow().live as u64
    }

    fn memory_bytes(&self) -> u64 {
        self.0.borrow().memory_bytes() as u64
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&VERSION.to_le_bytes());
        // Serialising plain vectors into a Vec cannot fail.
        let g = self.0.borrow();
        out.extend_from_slice(&postcard::to_allocvec(&*g).unwrap_or_default());
        out.extend_from_slice(&postcard::to_allocvec(&g.grid_state()).unwrap_or_default());
        out
    }

    fn restore(bytes: Vec<u8>) -> Result<Index, HnswError> {
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(HnswError::CorruptSnapshot(String::from("not an HNSW snapshot (bad magic)")));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != 1 && version != VERSION {
            return Err(HnswError::UnsupportedVersion(version as u32));
        }
        let corrupt = |e: postcard::Error| HnswError::CorruptSnapshot(format!("{e}"));
        let (mut g, rest): (Graph, &[u8]) = postcard::take_from_bytes(&bytes[6..]).map_err(corrupt)?;
        let (grid, rest): (Option<GridState>, &[u8]) =
            if version == 1 { (None, rest) } else { postcard::take_from_bytes(rest).map_err(corrupt)? };
        if !rest.is_empty() {
            return Err(HnswError::CorruptSnapshot(format!("{} bytes after the index", rest.len())));
        }
        g.validate().map_err(|e| HnswError::CorruptSnapshot(String::from(e)))?;
        g.reindex(grid).map_err(|e| HnswError::CorruptSnapshot(String::from(e)))?;
        Ok(Index::new(HnswIndex(RefCell::new(g))))
    }
}

export!(Store);
