//! The load path: bytes → digest → (cache) → world check → compile →
//! `InstancePre`. Each step fails with its own error; nothing is kept from a
//! failed load.
//!
//! A component's world is checked before it is first compiled; compiled
//! artifacts are cached (memory and disk, see `cache.rs`) only after that
//! check passed, so a cache hit skips both.

use std::path::Path;
use std::time::{Duration, Instant};

use elex_wit::{Interfaces, World};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::PluginPre;
use crate::cache::{ComponentCache, Origin};
use crate::config::HostConfig;
use crate::error::{Error, Result};
use crate::instance::InstanceState;

/// A component checked, compiled and linked, ready to instantiate many times.
pub struct LoadedComponent {
    /// What was loaded (a file path or a name), for messages.
    pub what: String,
    /// blake3 digest of the bytes, lower-case hex.
    pub digest: String,
    /// The component's identity for stored state: its registry name for a
    /// signed component (so a new version keeps what the old one learned),
    /// `unsigned-<digest prefix>` for bytes loaded without a signature.
    /// Snapshots are keyed by agent and family: one component's state is
    /// never restored into another.
    pub family: String,
    /// The budgets the component asks for: its signed registry entry's, else
    /// its manifest's (none without either); each instance runs under the
    /// host's budgets tightened by these
    /// ([`Budgets::tightened_by`](crate::Budgets::tightened_by)).
    pub requested_budgets: elex_registry::Budgets,
    /// The plugin manifest the component carries (see
    /// [`elex_registry::manifest`]), if any.
    pub manifest: Option<elex_registry::Manifest>,
    /// The WASI capabilities its instances get beyond the defaults: none
    /// unless the loader sets them ([`Grants::decide`](crate::Grants::decide)
    /// from what the manifest asks and the operator grants).
    pub grants: std::sync::Arc<crate::Grants>,
    /// Size of the component in bytes.
    pub size: usize,
    /// Where the compiled code came from.
    pub origin: Origin,
    /// Time spent compiling (zero on a cache hit).
    pub compile_time: Duration,
    /// Time the whole load took.
    pub load_time: Duration,
    /// Its imports and exports.
    pub interfaces: Interfaces,
    /// What one of its instances creates (core instances, memories, tables).
    pub footprint: elex_wit::Footprint,
    pub(crate) pre: PluginPre<InstanceState>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("what", &self.what)
            .field("digest", &self.digest)
            .field("family", &self.family)
            .field("size", &self.size)
            .field("origin", &self.origin)
            .field("load_time", &self.load_time)
            .finish_non_exhaustive()
    }
}

/// Reads a component file: a regular file (a symlink is followed; a FIFO or
/// device is refused without blocking) of at most
/// [`MAX_COMPONENT_BYTES`](elex_registry::store::MAX_COMPONENT_BYTES).
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    use elex_registry::files::{Links, read_regular};
    read_regular(path, elex_registry::store::MAX_COMPONENT_BYTES, Links::Follow)
        .map_err(|source| Error::ReadComponent { path: path.to_path_buf(), source })
}

/// The manifest `bytes` carry, checked (the capabilities it asks for are
/// granted, or not, by whoever loads it: [`LoadedComponent::grants`]).
fn manifest_of(what: &str, bytes: &[u8]) -> Result<Option<elex_registry::Manifest>> {
    elex_registry::Manifest::of_component(bytes)
        .map_err(|e| Error::Manifest { what: what.to_string(), detail: e.to_string() })
}

/// A compile error in words, with what to do about the one guest toolchains
/// cause most: component-model async, which this host does not run.
fn explain_compile_error(e: wasmtime::Error) -> String {
    let detail = format!("{e:#}");
    if detail.contains("component model async") {
        return format!(
            "{detail}; this host runs the synchronous component ABI only (for componentize-qjs, \
             build with --sync)"
        );
    }
    detail
}

/// Interface names from a compiled component's type.
fn interfaces_of(engine: &Engine, component: &Component) -> Interfaces {
    let ty = component.component_type();
    let mut imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let mut exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    imports.sort();
    exports.sort();
    Interfaces { imports, exports }
}

/// The blake3 digest of component bytes, lower-case hex: the cache key.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Checks `bytes` (whose blake3 hex digest is `digest`) against the `plugin`
/// world, compiles (or takes from the cache) and links them.
/// What loading needs of the host.
pub(crate) struct Loader<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) config: &'a HostConfig,
    pub(crate) linker: &'a Linker<InstanceState>,
    pub(crate) cache: &'a ComponentCache,
}

pub(crate) fn load(
    loader: Loader<'_>,
    what: &str,
    family: String,
    bytes: &[u8],
    digest: String,
) -> Result<LoadedComponent> {
    let Loader { engine, config, linker, cache } = loader;
    let span = tracing::info_span!("load", component = what);
    let _enter = span.enter();
    let started = Instant::now();
    // What one instance creates, against the host's limits: refused here
    // with the number and the setting, not as a trap at the first start.
    let footprint =
        elex_wit::footprint(bytes).map_err(|source| Error::Unfit { what: what.to_string(), source })?;
    config.admit(what, &footprint)?;
    let manifest = manifest_of(what, bytes)?;
    let (component, origin, compile_time, interfaces) = match cache.get(engine, &digest) {
        Some((c, origin)) => {
            let interfaces = interfaces_of(engine, &c);
            (c, origin, Duration::ZERO, interfaces)
        }
        None => {
            let interfaces = elex_wit::check_fit(bytes, World::Plugin)
                .map_err(|source| Error::Unfit { what: what.to_string(), source })?;
            let t = Instant::now();
            let c = Component::new(engine, bytes)
                .map_err(|e| Error::Compile { what: what.to_string(), detail: explain_compile_error(e) })?;
            let took = t.elapsed();
            cache.insert(&digest, &c);
            (c, Origin::Compiled, took, interfaces)
        }
    };
    let link_error = |e: wasmtime::Error| Error::Compile { what: what.to_string(), detail: format!("{e:#}") };
    let pre = PluginPre::new(linker.instantiate_pre(&component).map_err(link_error)?).map_err(link_error)?;
    let load_time = started.elapsed();
    tracing::info!(
        digest = %digest,
        size = bytes.len(),
        origin = %origin,
        load_ms = load_time.as_secs_f64() * 1e3,
        "component loaded"
    );
    Ok(LoadedComponent {
        what: what.to_string(),
        digest,
        family,
        requested_budgets: manifest.as_ref().map(elex_registry::Manifest::budgets).unwrap_or_default(),
        manifest,
        grants: Default::default(),
        size: bytes.len(),
        origin,
        compile_time,
        load_time,
        interfaces,
        footprint,
        pre,
    })
}
