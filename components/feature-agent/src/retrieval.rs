//! Finding the knowledge snippets relevant to a question: through an
//! `elex:hnsw` index when the store is available, else by exact top-k over
//! the snippet embeddings with the `elex:vector` kernels.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::elex::hnsw::store::{Config, Distance, HnswError, Index, Storage};
use crate::elex::vector::kernels::{self, Metric};

/// Snippet embeddings and the way to search them.
pub enum Retrieval {
    Hnsw(Index),
    /// Row-major `rows x DIM` unit embeddings.
    Exact(Vec<f32>),
}

const DIM: u32 = elex_text::DIM as u32;

impl Retrieval {
    /// Builds the search over `embeddings` (row-major, unit length). Returns
    /// the retrieval and a note on which one is used.
    pub fn build(embeddings: Vec<f32>, seed: u64) -> Result<(Retrieval, &'static str), String> {
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
                let hits = kernels::top_k(query, matrix, DIM, k, Metric::Cosine)
                    .map_err(|e| format!("vector top-k failed: {e:?}"))?;
                Ok(hits.into_iter().map(|h| (h.index as usize, h.score)).collect())
            }
        }
    }
}
