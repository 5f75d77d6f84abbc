//! Compiled components, cached in memory (moka, keyed by the blake3 digest
//! of the component bytes) and on disk as precompiled artifacts keyed by
//! digest + engine fingerprint.
//!
//! A disk artifact is `blake3(body) ‖ body`, where `body` is
//! `Component::serialize` output. It is deserialised only after its own
//! digest checks out, so a truncated, corrupt or foreign file is detected,
//! deleted and recompiled, never trusted. Files are written to a temporary
//! name and renamed, so a crash never leaves half an artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled from the wasm bytes now.
    Compiled,
    /// Deserialised from the disk cache.
    Disk,
    /// Already in this host's memory.
    Memory,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Compiled => "compiled",
            Origin::Disk => "disk cache",
            Origin::Memory => "memory cache",
        })
    }
}

/// Feeds `Hash` output into blake3, to fingerprint the engine.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let out = self.0.finalize();
        u64::from_le_bytes(out.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A fingerprint of everything that makes a precompiled artifact valid for
/// this engine: the wasmtime version and the engine's compilation settings.
pub fn engine_fingerprint(engine: &Engine) -> String {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    // elex-host's version: a new release may check components differently.
    env!("CARGO_PKG_VERSION").hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    h.0.finalize().to_hex()[..16].to_string()
}

pub struct ComponentCache {
    memory: moka::sync::Cache<String, Component>,
    dir: Option<PathBuf>,
    fingerprint: String,
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>, capacity: u64) -> ComponentCache {
        ComponentCache {
            memory: moka::sync::Cache::new(capacity),
            dir,
            fingerprint: engine_fingerprint(engine),
        }
    }

    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{digest}-{}.cwasm", self.fingerprint)))
    }

    /// A compiled component for `digest` from memory or disk, if cached.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<(Component, Origin)> {
        if let Some(c) = self.memory.get(digest) {
            return Some((c, Origin::Memory));
        }
        let c = read_artifact(engine, &self.artifact_path(digest)?)?;
        self.memory.insert(digest.to_string(), c.clone());
        Some((c, Origin::Disk))
    }

    /// Remembers a freshly compiled component in memory and on disk.
    pub fn insert(&self, digest: &str, component: &Component) {
        if let Some(path) = self.artifact_path(digest)
            && let Err(e) = write_artifact(component, &path)
        {
            // The cache is an optimisation: a read-only or full disk
            // costs speed, not correctness.
            tracing::warn!(path = %path.display(), error = %e, "cannot write precompiled artifact");
        }
        self.memory.insert(digest.to_string(), component.clone());
    }
}

/// Reads and checks an artifact; `None` (after removing a bad file) when it
/// is missing, corrupt or incompatible.
fn read_artifact(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let discard = |why: &str| {
        tracing::warn!(path = %path.display(), why, "discarding precompiled artifact; recompiling");
        let _ = std::fs::remove_file(path);
        None
    };
    if data.len() < 32 {
        return discard("truncated");
    }
    let (sum, body) = data.split_at(32);
    if blake3::hash(body).as_bytes() != sum {
        return discard("digest mismatch");
    }
    // SAFETY: `body` is exactly what `Component::serialize` wrote for an
    // engine with this fingerprint (its digest matched); wasmtime checks the
    // header's engine compatibility again and fails cleanly if it differs.
    match unsafe { Component::deserialize(engine, body) } {
        Ok(c) => Some(c),
        Err(_) => discard("incompatible with this engine"),
    }
}

fn write_artifact(component: &Component, path: &Path) -> std::io::Result<()> {
    let body = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, blake3::hash(&body).as_bytes())?;
    std::io::Write::write_all(&mut tmp, &body)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
