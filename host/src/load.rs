//! The load path: bytes → digest → world check → compile → `InstancePre`.
//! Each step fails with its own error; nothing is kept from a failed load.

use std::path::Path;
use std::time::{Duration, Instant};

use elex_wit::{Interfaces, World};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::PluginPre;
use crate::error::{Error, Result};
use crate::instance::InstanceState;

/// A component checked, compiled and linked, ready to instantiate many times.
pub struct LoadedComponent {
    /// What was loaded (a file path or a name), for messages.
    pub what: String,
    /// blake3 digest of the bytes, lower-case hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// Time spent compiling.
    pub compile_time: Duration,
    /// Its imports and exports.
    pub interfaces: Interfaces,
    pub(crate) pre: PluginPre<InstanceState>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("what", &self.what)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadComponent { path: path.to_path_buf(), source })
}

/// Checks `bytes` against the `plugin` world, compiles and links them.
pub(crate) fn load(
    engine: &Engine,
    linker: &Linker<InstanceState>,
    what: &str,
    bytes: &[u8],
) -> Result<LoadedComponent> {
    let span = tracing::info_span!("load", component = what);
    let _enter = span.enter();
    let digest = blake3::hash(bytes).to_hex().to_string();
    let interfaces = elex_wit::check_fit(bytes, World::Plugin)
        .map_err(|source| Error::Unfit { what: what.to_string(), source })?;
    let started = Instant::now();
    let component = Component::new(engine, bytes)
        .map_err(|e| Error::Compile { what: what.to_string(), detail: format!("{e:#}") })?;
    let compile_time = started.elapsed();
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|e| Error::Compile { what: what.to_string(), detail: format!("{e:#}") })?;
    let pre = PluginPre::new(instance_pre)
        .map_err(|e| Error::Compile { what: what.to_string(), detail: format!("{e:#}") })?;
    tracing::info!(digest = %digest, size = bytes.len(), compile_ms = compile_time.as_secs_f64() * 1e3, "component loaded");
    Ok(LoadedComponent { what: what.to_string(), digest, size: bytes.len(), compile_time, interfaces, pre })
}
