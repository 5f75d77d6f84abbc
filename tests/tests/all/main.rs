//! The end-to-end tests, one binary (as wasmtime's `tests/all`): each module
//! tests one part of the host with the real built components. Run them with
//! `cargo xtask test`, which builds the components first.

mod cache;
mod feature_agent;
mod hardening;
mod hnsw_store;
mod hostile;
mod lifecycle;
mod loading;
mod memory_graph;
mod plugins;
mod qlearning_engine;
mod registry;
mod swarm;
mod vector_kernels;
mod wasi;

use std::sync::Arc;

/// MIMO Sleep Mode, the feature most tests ask about.
pub const MSM: &str = "FAJ 121 3094";

/// A small catalog: MIMO Sleep Mode and the first `n - 1` other real
/// features, with no requirements between them.
pub fn first_features(n: usize) -> Arc<elex_ran::Catalog> {
    let mut catalog = elex_ran::Catalog::embedded().unwrap();
    let msm = catalog.features.iter().position(|f| f.faj == MSM).unwrap();
    catalog.features.swap(0, msm);
    catalog.features.truncate(n);
    for f in &mut catalog.features {
        f.requires.clear();
    }
    Arc::new(catalog)
}

/// The router of `catalog`: the directory of a swarm of its feature agents.
pub fn router(catalog: Arc<elex_ran::Catalog>) -> Arc<elex_ran::Router> {
    Arc::new(elex_ran::Router::new(catalog))
}
