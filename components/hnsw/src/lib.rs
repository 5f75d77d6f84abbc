//! The `hnsw` component: exports `elex:hnsw/store`.
//!
//! This build exposes the contract only: `create` and `restore` return
//! `hnsw-error::not-implemented`, so no caller can receive a fabricated
//! result. The HNSW graph is implemented in the "library components" work.
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

use alloc::string::String;
use alloc::vec::Vec;

wit_bindgen::generate!({
    world: "elex:hnsw/library@0.1.0",
    path: "../../wit",
    std_feature,
});

use exports::elex::hnsw::store::{Config, Guest, GuestIndex, Hit, HnswError, Index};

fn not_implemented() -> HnswError {
    HnswError::NotImplemented(String::from("the HNSW store is not implemented in this build"))
}

struct Store;

/// Never constructed: `create` and `restore` refuse before an index exists.
struct Graph;

impl Guest for Store {
    type Index = Graph;
}

impl GuestIndex for Graph {
    fn create(_config: Config) -> Result<Index, HnswError> {
        Err(not_implemented())
    }
    fn insert(&self, _id: u64, _vector: Vec<f32>) -> Result<(), HnswError> {
        Err(not_implemented())
    }
    fn insert_batch(&self, _ids: Vec<u64>, _vectors: Vec<f32>) -> Result<(), HnswError> {
        Err(not_implemented())
    }
    fn search(&self, _query: Vec<f32>, _k: u32, _ef: u32) -> Result<Vec<Hit>, HnswError> {
        Err(not_implemented())
    }
    fn remove(&self, _id: u64) -> bool {
        unreachable!("an index cannot be created in this build")
    }
    fn len(&self) -> u64 {
        unreachable!("an index cannot be created in this build")
    }
    fn memory_bytes(&self) -> u64 {
        unreachable!("an index cannot be created in this build")
    }
    fn snapshot(&self) -> Vec<u8> {
        unreachable!("an index cannot be created in this build")
    }
    fn restore(_bytes: Vec<u8>) -> Result<Index, HnswError> {
        Err(not_implemented())
    }
}

export!(Store);
