//! The content-addressed component store: `<store>/<blake3 hex>.wasm`.
//! Bytes are checked against their digest on every read, before anything
//! else sees them.

use std::path::PathBuf;

use crate::{Entry, Error, Result, io, write_atomic};

/// `blake3:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> BlobStore {
        BlobStore { dir }
    }

    fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("blake3:").unwrap_or(digest);
        self.dir.join(format!("{hex}.wasm"))
    }

    /// Stores `bytes` (idempotent) and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let d = digest(bytes);
        let path = self.path(&d);
        if !path.is_file() {
            write_atomic(&path, bytes)?;
        }
        Ok(d)
    }

    /// The bytes of `entry`, whose digest must match the entry's.
    pub fn get(&self, entry: &Entry) -> Result<Vec<u8>> {
        let path = self.path(&entry.digest);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let found = digest(&bytes);
        if found != entry.digest {
            return Err(Error::DigestMismatch {
                name: entry.name.clone(),
                version: entry.version.to_string(),
                expected: entry.digest.clone(),
                found,
            });
        }
        Ok(bytes)
    }
}
