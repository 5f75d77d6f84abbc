//! Typed access to the library components (`vector`, `qlearning`, `hnsw`)
//! from the host side, for the tests and the benchmarks: wasmtime bindings of
//! their worlds and small wrappers that own a store and an instance.

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Engine, Store};

/// Bindings of `elex:vector/library`.
pub mod vector_bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "elex:vector/library", additional_derives: [PartialEq] });
}
/// Bindings of `elex:hnsw/library`.
pub mod hnsw_bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "elex:hnsw/library", additional_derives: [PartialEq] });
}
/// Bindings of `elex:qlearning/library`.
pub mod qlearning_bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "elex:qlearning/library", additional_derives: [PartialEq] });
}

use hnsw_bindings::exports::elex::hnsw::store::{Config as HnswConfig, HnswError};
use qlearning_bindings::exports::elex::qlearning::engine::{Config as QConfig, QError, Stats, Transition};
use vector_bindings::exports::elex::vector::kernels::Guest as Kernels;

/// A store whose epoch deadline never fires and whose fuel never runs out,
/// so the wrappers also work on engines with epoch interruption or fuel
/// metering on.
fn new_store(engine: &Engine) -> Store<()> {
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(u64::MAX);
    // Fails only when the engine meters no fuel, where nothing is needed.
    let _ = store.set_fuel(u64::MAX);
    store
}

/// An instance of the `vector` component.
pub struct Vector {
    pub store: Store<()>,
    pub lib: vector_bindings::Library,
}

impl Vector {
    pub fn new(engine: &Engine) -> Vector {
        let component = Component::new(engine, crate::component("vector")).expect("compile vector");
        let mut store = new_store(engine);
        let lib = vector_bindings::Library::instantiate(&mut store, &component, &Linker::new(engine))
            .expect("instantiate vector");
        Vector { store, lib }
    }

    /// The kernels and the store to call them with.
    pub fn split(&mut self) -> (&Kernels, &mut Store<()>) {
        (self.lib.elex_vector_kernels(), &mut self.store)
    }
}

/// An instance of the `hnsw` component. Every wrapper method panics on a
/// trap: the component must never trap.
pub struct Hnsw {
    pub store: Store<()>,
    pub lib: hnsw_bindings::Library,
}

impl Hnsw {
    pub fn new(engine: &Engine) -> Hnsw {
        let component = Component::new(engine, crate::component("hnsw")).expect("compile hnsw");
        let mut store = new_store(engine);
        let lib = hnsw_bindings::Library::instantiate(&mut store, &component, &Linker::new(engine))
            .expect("instantiate hnsw");
        Hnsw { store, lib }
    }

    pub fn create(&mut self, config: &HnswConfig) -> Result<ResourceAny, HnswError> {
        self.lib.elex_hnsw_store().index().call_create(&mut self.store, *config).expect("no trap")
    }

    pub fn insert(&mut self, ix: ResourceAny, id: u64, v: &[f32]) -> Result<(), HnswError> {
        self.lib.elex_hnsw_store().index().call_insert(&mut self.store, ix, id, v).expect("no trap")
    }

    pub fn insert_batch(&mut self, ix: ResourceAny, ids: &[u64], vs: &[f32]) -> Result<(), HnswError> {
        self.lib.elex_hnsw_store().index().call_insert_batch(&mut self.store, ix, ids, vs).expect("no trap")
    }

    pub fn search(
        &mut self,
        ix: ResourceAny,
        q: &[f32],
        k: u32,
        ef: u32,
    ) -> Result<Vec<(u64, f32)>, HnswError> {
        let hits = self
            .lib
            .elex_hnsw_store()
            .index()
            .call_search(&mut self.store, ix, q, k, ef)
            .expect("no trap")?;
        Ok(hits.into_iter().map(|h| (h.id, h.distance)).collect())
    }

    pub fn len(&mut self, ix: ResourceAny) -> u64 {
        self.lib.elex_hnsw_store().index().call_len(&mut self.store, ix).expect("no trap")
    }

    pub fn remove(&mut self, ix: ResourceAny, id: u64) -> bool {
        self.lib.elex_hnsw_store().index().call_remove(&mut self.store, ix, id).expect("no trap")
    }

    pub fn snapshot(&mut self, ix: ResourceAny) -> Vec<u8> {
        self.lib.elex_hnsw_store().index().call_snapshot(&mut self.store, ix).expect("no trap")
    }

    pub fn restore(&mut self, bytes: &[u8]) -> Result<ResourceAny, HnswError> {
        self.lib.elex_hnsw_store().index().call_restore(&mut self.store, bytes).expect("no trap")
    }

    pub fn memory(&mut self, ix: ResourceAny) -> u64 {
        self.lib.elex_hnsw_store().index().call_memory_bytes(&mut self.store, ix).expect("no trap")
    }
}

/// An instance of the `qlearning` component linked to an instance of
/// `vector` (its import), the way the composition links them.
pub struct QLearning {
    pub store: Store<()>,
    pub lib: qlearning_bindings::Library,
}

impl QLearning {
    pub fn new(engine: &Engine) -> QLearning {
        let mut store = new_store(engine);
        let vcomp = Component::new(engine, crate::component("vector")).expect("compile vector");
        let vinst = Linker::new(engine).instantiate(&mut store, &vcomp).expect("instantiate vector");
        let mut linker = Linker::<()>::new(engine);
        let name = "elex:vector/kernels@0.1.0";
        let export = vinst.get_export_index(&mut store, None, name).expect("vector exports kernels");
        let mut inst = linker.instance(name).expect("linker instance");
        for f in [
            "dot",
            "cosine",
            "squared-l2",
            "normalize",
            "score-rows",
            "top-k",
            "validate-ranges",
            "aggregate",
            "q-update",
        ] {
            let idx = vinst.get_export_index(&mut store, Some(&export), f).expect("kernel function");
            let func = vinst.get_func(&mut store, idx).expect("kernel function");
            inst.func_new(f, move |mut store, _ty, params, results| func.call(&mut store, params, results))
                .expect("define kernel");
        }
        let qcomp = Component::new(engine, crate::component("qlearning")).expect("compile qlearning");
        let lib = qlearning_bindings::Library::instantiate(&mut store, &qcomp, &linker)
            .expect("instantiate qlearning");
        QLearning { store, lib }
    }

    pub fn create(&mut self, c: &QConfig) -> Result<ResourceAny, QError> {
        self.lib.elex_qlearning_engine().q_table().call_create(&mut self.store, c).expect("no trap")
    }
    pub fn select(&mut self, t: ResourceAny, s: &str) -> u32 {
        self.lib
            .elex_qlearning_engine()
            .q_table()
            .call_select(&mut self.store, t, s)
            .expect("no trap")
            .expect("select")
    }
    pub fn values(&mut self, t: ResourceAny, s: &str) -> Vec<f32> {
        self.lib.elex_qlearning_engine().q_table().call_values(&mut self.store, t, s).expect("no trap")
    }
    pub fn update(&mut self, t: ResourceAny, tr: &Transition) -> Result<f32, QError> {
        self.lib.elex_qlearning_engine().q_table().call_update(&mut self.store, t, tr).expect("no trap")
    }
    pub fn update_batch(&mut self, t: ResourceAny, trs: &[Transition]) -> Result<Vec<f32>, QError> {
        self.lib
            .elex_qlearning_engine()
            .q_table()
            .call_update_batch(&mut self.store, t, trs)
            .expect("no trap")
    }
    pub fn snapshot(&mut self, t: ResourceAny) -> Vec<u8> {
        self.lib.elex_qlearning_engine().q_table().call_snapshot(&mut self.store, t).expect("no trap")
    }
    pub fn restore(&mut self, b: &[u8]) -> Result<ResourceAny, QError> {
        self.lib.elex_qlearning_engine().q_table().call_restore(&mut self.store, b).expect("no trap")
    }
    pub fn merge(&mut self, t: ResourceAny, b: &[u8], w: f32) -> Result<(), QError> {
        self.lib.elex_qlearning_engine().q_table().call_merge(&mut self.store, t, b, w).expect("no trap")
    }
    pub fn stats(&mut self, t: ResourceAny) -> Stats {
        self.lib.elex_qlearning_engine().q_table().call_stats(&mut self.store, t).expect("no trap")
    }
}
