//! The elex feature agent: one instance per RAN feature.
//!
//! `init` reads the feature's catalog entry (JSON, see [`knowledge`]) and
//! turns it into knowledge snippets with 128-d text embeddings. `handle`
//! embeds the question, finds the nearest snippets (see [`retrieval`]: an
//! exact scan with the SIMD kernels, or an `elex:hnsw` index for a feature
//! with many), and answers from the best ones, logging through the host.
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

mod agent;
mod knowledge;
mod retrieval;
mod state;

wit_bindgen::generate!({
    world: "elex:platform/feature-agent@0.1.0",
    path: "../../wit",
    std_feature,
    generate_all,
});

use agent::FeatureAgent;
export!(FeatureAgent);
