//! Finding the knowledge snippets relevant to a question: by an exact scan
//! of the snippet embeddings for a feature with few snippets (most have a
//! few dozen: a scan of those is exact and several times cheaper than a
//! graph search), else through an `elex:hnsw` index — or by the same scan
//! when the host's store does not implement HNSW.
//!
//! The scan runs the SIMD kernels (`elex-kernels`, the code the
//! `elex:vector` component exports) inside the agent: handing the snippet
//! matrix to the vector component would copy it across the component
//! boundary on every question, which cost more than the scan itself (13 %
//! against 4 % of a query's time in a profile of `cargo xtask bench swarm`).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use elex_kernels::Metric;

use crate::elex::hnsw::store::{Config, Distance, HnswError, Index, Storage};

/// Snippet embeddings and the way to search them.
pub enum Retrieval {
    Hnsw(Index),
    /// Row-major `rows x DIM` unit embeddings, scanned.
    Exact(Vec<f32>),
}

const DIM: u32 = elex_text::DIM as u32;

/// Up to this many snippets a feature's knowledge is scanned, not indexed:
/// a scan finds the exact nearest and needs no index. Below `ef` (32) rows
/// a graph search visits them all anyway; the bound is a judgement, not a
/// measured crossover (the swarm bench's features mostly have a few dozen
/// snippets; 90 % of the catalog's have at most 84).
pub const SCAN_UP_TO: usize = 128;

impl Retrieval {
    /// Builds the search over `embeddings` (row-major, unit length). Returns
    /// the retrieval and a note on which one is used.
    pub fn build(embeddings: Vec<f32>, seed: u64) -> Result<(Retrieval, &'static str), String> {
        if embeddings.len() / elex_text::DIM <= SCAN_UP_TO {
            return Ok((Retrieval::Exact(embeddings), "exact top-k"));
        }
        let config = Config {
            dimension: DIM,
            distance: Distance::Cosine,
            storage: Storage::Full,
            m: 8,
            ef_construction: 16,
            ef_search: 32,
            seed,
        };
        match Index::create(config) {
            Ok(index) => {
                let rows = embeddings.len() / elex_text::DIM;
                let ids: Vec<u64> = (0..rows as u64).collect();
                index.insert_batch(&ids, &embeddings).map_err(|e| format!("hnsw insert failed: {e:?}"))?;
                Ok((Retrieval::Hnsw(index), "hnsw"))
            }
            // A host composed with a store that does not implement HNSW:
            // exact search is correct, only slower for large sets.
            Err(HnswError::NotImplemented(_)) => Ok((Retrieval::Exact(embeddings), "exact top-k")),
            Err(e) => Err(format!("hnsw index could not be created: {e:?}")),
        }
    }

    /// The `k` most similar snippets as (row, cosine similarity), best first.
    pub fn search(&self, query: &[f32], k: u32) -> Result<Vec<(usize, f32)>, String> {
        match self {
            Retrieval::Hnsw(index) => {
                let hits = index.search(query, k, 0).map_err(|e| format!("hnsw search failed: {e:?}"))?;
                // Cosine distance is 1 - similarity.
                Ok(hits.into_iter().map(|h| (h.id as usize, 1.0 - h.distance)).collect())
            }
            Retrieval::Exact(matrix) => {
                // Unit rows: their dot product with the query is its cosine.
                let hits = elex_kernels::top_k(query, matrix, elex_text::DIM, k as usize, Metric::Dot)
                    .map_err(|e| format!("exact top-k failed: {e:?}"))?;
                Ok(hits.into_iter().map(|(row, score)| (row as usize, score)).collect())
            }
        }
    }
}
