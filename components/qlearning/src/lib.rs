//! The `qlearning` component: exports `elex:qlearning/engine`, a tabular
//! Q-learning `q-table` resource. Batch updates run through the imported
//! `elex:vector` kernels.
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

mod snapshot;
mod table;

wit_bindgen::generate!({
    world: "elex:qlearning/library@0.1.0",
    path: "../../wit",
    std_feature,
    generate_all,
});

struct Engine;

impl exports::elex::qlearning::engine::Guest for Engine {
    type QTable = table::QTable;
}

export!(Engine);
