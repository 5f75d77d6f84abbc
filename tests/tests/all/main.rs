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
mod qlearning_engine;
mod registry;
mod swarm;
mod vector_kernels;
