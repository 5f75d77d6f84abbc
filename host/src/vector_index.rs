//! [`VectorIndex`]: vectors held by an instance of the `elex:hnsw` component,
//! run by the host's engine (epoch deadline, pooling limits) like any other
//! guest. The RAN router searches its agents' profile embeddings in one, so
//! routing runs in the same HNSW store the agents use.

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Engine, Store};

use crate::error::{Error, Result};

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "elex:hnsw/library" });
}

use bindings::exports::elex::hnsw::store::{Config, Distance, Storage};

/// Epoch ticks one call into the index may take before it is stopped.
const DEADLINE_TICKS: u64 = 1_000;

/// Unit vectors in an HNSW index inside an `elex:hnsw` component instance
/// (cosine distance); made by [`Host::vector_index`](crate::Host::vector_index).
pub struct VectorIndex {
    store: Store<()>,
    lib: bindings::Library,
    index: ResourceAny,
}

fn guest(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::VectorIndex { call: what, detail: e.to_string() }
}

impl VectorIndex {
    /// An index of `rows` (unit vectors of `dimension`), row `i` under id `i`.
    pub(crate) fn build(
        engine: &Engine,
        component: &Component,
        rows: &[f32],
        dimension: usize,
    ) -> Result<VectorIndex> {
        let mut store = Store::new(engine, ());
        store.set_epoch_deadline(DEADLINE_TICKS);
        // The index is the host's own code path, bounded by the epoch
        // deadline; when the engine meters fuel, it must not start with none
        // (fails only when fuel metering is off, where there is nothing to
        // set).
        let _ = store.set_fuel(u64::MAX);
        let lib = bindings::Library::instantiate(&mut store, component, &Linker::new(engine))
            .map_err(|e| guest("instantiate", format!("{e:#}")))?;
        let config = Config {
            dimension: dimension as u32,
            distance: Distance::Cosine,
            storage: Storage::Full,
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            seed: 0x5eed,
        };
        let index = lib
            .elex_hnsw_store()
            .index()
            .call_create(&mut store, config)
            .map_err(|e| guest("create", format!("{e:#}")))?
            .map_err(|e| guest("create", format!("{e:?}")))?;
        let n = rows.len() / dimension.max(1);
        let ids: Vec<u64> = (0..n as u64).collect();
        store.set_epoch_deadline(DEADLINE_TICKS * 10);
        lib.elex_hnsw_store()
            .index()
            .call_insert_batch(&mut store, index, &ids, rows)
            .map_err(|e| guest("insert", format!("{e:#}")))?
            .map_err(|e| guest("insert", format!("{e:?}")))?;
        Ok(VectorIndex { store, lib, index })
    }

    /// The `k` rows most similar to `query`, as (row, cosine similarity),
    /// best first.
    pub fn search(&mut self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        self.store.set_epoch_deadline(DEADLINE_TICKS);
        let hits = self
            .lib
            .elex_hnsw_store()
            .index()
            .call_search(&mut self.store, self.index, query, k as u32, (k as u32).max(64))
            .map_err(|e| guest("search", format!("{e:#}")))?
            .map_err(|e| guest("search", format!("{e:?}")))?;
        Ok(hits.into_iter().map(|h| (h.id as usize, 1.0 - h.distance)).collect())
    }
}
