//! Plugins next to the feature agents.
//!
//! A plugin is a component of the `elex:platform/plugin` world that carries
//! a manifest ([`Manifest`]: id, name, description, keywords, example
//! questions, budgets). An operator installs it into a data dir
//! ([`RuntimeBuilder::install_plugin`], `elex load`); from then on every
//! runtime started on that data dir runs it as one more agent, after the
//! 593 features: the router picks it by its manifest like any feature
//! (its name, description and keywords in its profile, its examples as
//! example questions), `--agent <id>` asks it, feedback reaches it, and its
//! learned state is stored under its id and its component. Until
//! [`RuntimeBuilder::uninstall_plugin`] (`elex unload`).
//!
//! Where its component comes from is kept in the agents' database: a
//! signed registry entry (name and exact version, verified again at every
//! start), or, for an unsigned component the operator allowed, a copy of
//! its bytes in `<data dir>/plugins/<blake3>.wasm` (read without following
//! links, its digest checked at every start). A plugin that no longer
//! loads (its entry revoked, its file changed) is left out of the swarm
//! with a warning ([`Runtime::plugin_problems`](crate::Runtime::plugin_problems));
//! the feature agents start regardless.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use elex_host::registry::files::{Links, read_regular};
use elex_host::registry::store::MAX_COMPONENT_BYTES;
use elex_host::registry::{Manifest, Registry};
use elex_host::snapshots::{InstalledPlugin, PluginSource, SnapshotStore};
use elex_host::{Grants, Host, LoadedComponent};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::runtime::{Runtime, RuntimeBuilder, check_data_dir};

/// The data dir's folder of unsigned plugin components.
pub const FOLDER: &str = "plugins";

/// What to install.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginSpec {
    /// `name[@version-requirement]` in the registry: signed, verified.
    Registry(String),
    /// A component file, loaded **without a signature check**: only when
    /// the operator says so (`--allow-unsigned`).
    Unsigned(PathBuf),
}

/// An installed plugin and its manifest.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The record in the agents' database.
    pub installed: InstalledPlugin,
    /// Its manifest.
    pub manifest: Manifest,
}

fn plugin_error(id: &str, detail: impl std::fmt::Display) -> Error {
    Error::Plugin(format!("{id}: {detail}"))
}

/// The manifest of a loaded plugin component, or why it is not a plugin.
fn manifest_of(component: &LoadedComponent) -> Result<Manifest> {
    component.manifest.clone().ok_or_else(|| {
        plugin_error(
            &component.what,
            format!(
                "carries no plugin manifest (an `{}` section): build it with `elex build`, which \
                 embeds its plugin.toml",
                elex_host::registry::manifest::SECTION
            ),
        )
    })
}

/// What `granted` grants a plugin with `manifest`, or why not.
fn decide(manifest: &Manifest, granted: &[String]) -> Result<Grants> {
    let asked = manifest.capabilities().map_err(|e| plugin_error(&manifest.id, e))?;
    Grants::decide(&asked, granted).map_err(|e| plugin_error(&manifest.id, e))
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes `bytes` to `path` through a temporary file in the same folder,
/// so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A plugin component loaded and checked (signature and trust for a
/// registry entry, world, footprint, manifest, grants), not yet recorded.
struct Prepared {
    component: Arc<LoadedComponent>,
    manifest: Manifest,
    source: PluginSource,
    /// An unsigned component's bytes, to keep in the data dir.
    unsigned: Option<Vec<u8>>,
}

/// Loads `spec` on `host` as a runtime would, granted `grants`, and checks
/// that it starts (its `init` must succeed: one that traps or refuses is
/// found now, not at every later start) and that its id is not taken in
/// `catalog` by anything but an earlier version of itself.
fn prepare(
    host: &Host,
    registry: &Path,
    trust: &[PathBuf],
    spec: &PluginSpec,
    grants: &[String],
    catalog: &Catalog,
) -> Result<Prepared> {
    let (mut component, source, unsigned) = match spec {
        PluginSpec::Registry(spec) => {
            let registry = Registry::open_trusting(registry, trust)?;
            // The exact version is what later starts load.
            let (name, req) = elex_host::registry::parse_spec(spec)?;
            let version = registry.index.resolve(&name, &req)?.version.to_string();
            let component = host.load_from_registry(&registry, &format!("{name}@={version}"))?;
            (component, PluginSource::Registry { name, version }, None)
        }
        PluginSpec::Unsigned(file) => {
            let bytes = read_regular(file, MAX_COMPONENT_BYTES, Links::Follow)
                .map_err(|e| plugin_error(&file.display().to_string(), e))?;
            let component = host.load_unsigned_bytes(&file.display().to_string(), &bytes)?;
            (component, PluginSource::Unsigned, Some(bytes))
        }
    };
    let manifest = manifest_of(&component)?;
    component.grants = Arc::new(decide(&manifest, grants)?);
    catalog.without_plugin(&manifest.id).add_plugin(&manifest)?;
    host.instantiate(&component, plugin_config(&manifest))?;
    Ok(Prepared { component: Arc::new(component), manifest, source, unsigned })
}

/// Records `plugin` as installed in `data_dir` (its database `store`), by
/// `operator`, replacing a plugin with its id.
fn record(
    store: &SnapshotStore,
    data_dir: &Path,
    plugin: &Prepared,
    operator: &str,
    grants: &[String],
) -> Result<Plugin> {
    let manifest = &plugin.manifest;
    if let Some(bytes) = &plugin.unsigned {
        let path = data_dir.join(FOLDER).join(format!("{}.wasm", plugin.component.digest));
        write_atomically(&path, bytes).map_err(|e| plugin_error(&manifest.id, e))?;
    }
    let installed = InstalledPlugin {
        id: manifest.id.clone(),
        source: plugin.source.clone(),
        digest: plugin.component.digest.clone(),
        manifest: manifest.to_json(),
        grants: grants.to_vec(),
        operator: operator.to_string(),
        millis: now_millis(),
    };
    let replaced = store.plugins()?.into_iter().find(|p| p.id == installed.id);
    store.put_plugin(&installed)?;
    // A replaced upload's bytes go, unless a plugin still uses them.
    if let Some(old) = replaced
        && old.source == PluginSource::Unsigned
        && !store.plugins()?.iter().any(|p| p.digest == old.digest && p.source == PluginSource::Unsigned)
    {
        remove_kept_file(data_dir, &old.digest);
    }
    Ok(Plugin { installed, manifest: manifest.clone() })
}

/// Removes plugin `id`'s record (and its kept bytes, unless another
/// plugin has the same); whether it was installed.
fn unrecord(store: &SnapshotStore, data_dir: &Path, id: &str) -> Result<bool> {
    let Some(plugin) = store.plugins()?.into_iter().find(|p| p.id == id) else {
        return Ok(false);
    };
    store.remove_plugin(id)?;
    if plugin.source == PluginSource::Unsigned
        && !store.plugins()?.iter().any(|p| p.digest == plugin.digest && p.source == PluginSource::Unsigned)
    {
        remove_kept_file(data_dir, &plugin.digest);
    }
    Ok(true)
}

/// Removes the kept bytes of an unsigned plugin with `digest`.
fn remove_kept_file(data_dir: &Path, digest: &str) {
    let path = data_dir.join(FOLDER).join(format!("{digest}.wasm"));
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a plugin's kept file");
    }
}

impl RuntimeBuilder {
    /// Installs a plugin into the data dir, by `operator`, who grants it
    /// `grants` (each a capability its manifest asks for; every one it asks
    /// for must be granted: see [`Grants::decide`]): loads it as a runtime
    /// would (signature and trust for a registry entry, world, footprint,
    /// manifest), starts one instance of it (its `init` must succeed) and
    /// records it; a plugin with the same id is replaced. Every runtime
    /// started on the data dir afterwards runs it. (A running runtime loads
    /// one without a restart: [`Runtime::load_plugin`].)
    pub fn install_plugin(&self, spec: &PluginSpec, operator: &str, grants: &[String]) -> Result<Plugin> {
        let data_dir = check_data_dir(self.data_dir.clone())?;
        let host = Host::new(self.host_config_for(&data_dir))?;
        let prepared = prepare(&host, &self.registry, &self.trust, spec, grants, &Catalog::embedded()?)?;
        record(&self.open_store(&data_dir)?, &data_dir, &prepared, operator, grants)
    }

    /// Removes plugin `id` from the data dir: runtimes started afterwards no
    /// longer run it. What it learned stays stored (installing it again
    /// restores it; `elex agents reset` forgets it). Whether it was
    /// installed.
    pub fn uninstall_plugin(&self, id: &str) -> Result<bool> {
        let data_dir = check_data_dir(self.data_dir.clone())?;
        unrecord(&self.open_store(&data_dir)?, &data_dir, id)
    }

    /// The plugins installed in the data dir, with their manifests as
    /// installed.
    pub fn installed_plugins(&self) -> Result<Vec<Plugin>> {
        let data_dir = check_data_dir(self.data_dir.clone())?;
        let installed = self.open_store(&data_dir)?.plugins()?;
        installed.into_iter().map(with_manifest).collect()
    }

    /// The agents a runtime on this data dir would run, without starting
    /// it: the feature catalog, then the installed plugins (as installed).
    pub fn agents(&self) -> Result<Catalog> {
        let mut catalog = Catalog::embedded()?;
        for plugin in self.installed_plugins()? {
            catalog.add_plugin(&plugin.manifest)?;
        }
        Ok(catalog)
    }
}

/// An installed plugin with the manifest it was installed with.
fn with_manifest(installed: InstalledPlugin) -> Result<Plugin> {
    let manifest: Manifest = serde_json::from_str(&installed.manifest)
        .map_err(|e| plugin_error(&installed.id, format!("its kept manifest is unreadable: {e}")))?;
    Ok(Plugin { installed, manifest })
}

/// The configuration a plugin's agent starts with: its id and name, its
/// manifest as the document.
pub(crate) fn plugin_config(manifest: &Manifest) -> elex_host::AgentConfig {
    elex_host::AgentConfig {
        agent_id: manifest.id.clone(),
        name: manifest.name.clone(),
        settings: Vec::new(),
        document: manifest.to_json(),
    }
}

/// Loads installed plugin `plugin` for a runtime on `data_dir`: the exact
/// registry version (verified) or the kept unsigned bytes (digest checked),
/// with a manifest of the same id.
pub(crate) fn load_installed(
    host: &Host,
    registry: &Registry,
    data_dir: &Path,
    plugin: &InstalledPlugin,
) -> Result<(Arc<LoadedComponent>, Manifest)> {
    let mut component = match &plugin.source {
        PluginSource::Registry { name, version } => {
            host.load_from_registry(registry, &format!("{name}@={version}"))?
        }
        PluginSource::Unsigned => {
            let path = data_dir.join(FOLDER).join(format!("{}.wasm", plugin.digest));
            let bytes = read_regular(&path, MAX_COMPONENT_BYTES, Links::Refuse)
                .map_err(|e| plugin_error(&plugin.id, format!("{}: {e}", path.display())))?;
            let found = blake3::hash(&bytes).to_hex().to_string();
            if found != plugin.digest {
                return Err(plugin_error(
                    &plugin.id,
                    format!("{} has digest {found}, not the loaded {}", path.display(), plugin.digest),
                ));
            }
            tracing::warn!(plugin = %plugin.id, "running an UNSIGNED plugin (loaded with --allow-unsigned)");
            host.load_unsigned_bytes(&format!("plugin {}", plugin.id), &bytes)?
        }
    };
    if component.digest != plugin.digest {
        return Err(plugin_error(
            &plugin.id,
            format!(
                "the registry's component has digest {}, not the loaded {}",
                component.digest, plugin.digest
            ),
        ));
    }
    let manifest = manifest_of(&component)?;
    if manifest.id != plugin.id {
        return Err(plugin_error(&plugin.id, format!("its manifest now names it {:?}", manifest.id)));
    }
    component.grants = Arc::new(decide(&manifest, &plugin.grants)?);
    Ok((Arc::new(component), manifest))
}

impl RuntimeBuilder {
    fn open_store(&self, data_dir: &Path) -> Result<SnapshotStore> {
        Ok(SnapshotStore::open_waiting(
            &data_dir.join(elex_host::snapshots::FILE_NAME),
            crate::runtime::OPEN_WAIT,
        )?)
    }
}

impl Runtime {
    /// Loads a plugin into this running runtime, by `operator`, granting it
    /// `grants` — checked as [`RuntimeBuilder::install_plugin`] checks it and
    /// recorded the same way (later runtimes on the data dir run it too) —
    /// and adds its agent to the live swarm, without a restart of the other
    /// agents. A running plugin with its id is replaced: the new one is
    /// started first (restoring the old one's state when its component
    /// family is the same), then routing moves to it and the old one is
    /// retired. If anything fails before routing moves, nothing changed.
    pub fn load_plugin(&self, spec: &PluginSpec, operator: &str, grants: &[String]) -> Result<Plugin> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let sources = self.sources();
        let before = self.agents();
        let prepared =
            prepare(self.host(), &sources.registry, &sources.trust, spec, grants, before.catalog())?;
        let id = prepared.manifest.id.clone();
        // The old one (if any) leaves routing, not the swarm, so that the new
        // one may take its id; it comes back if the new one fails.
        let old = before.catalog().features.iter().position(|f| f.plugin && f.faj == id);
        let old_slot = old.map(|i| before.slot(i)).transpose()?;
        let mut slots = before.slots().to_vec();
        if let Some(i) = old {
            slots.remove(i);
        }
        let catalog = before.catalog().without_plugin(&id);
        // The catalog with the new one, made before anything changes: its
        // check (the id is not a feature's) cannot fail half-way through.
        let mut with_new = catalog.clone();
        with_new.add_plugin(&prepared.manifest)?;
        if let Some(old) = old_slot {
            self.replace_agents(catalog, slots.clone())?;
            // Its latest state, for the new one to restore (same family).
            if let Err(e) = self.swarm().save([old]) {
                self.restore_agents(before.clone());
                return Err(e.into());
            }
        }
        let undo = |slot: Option<usize>| {
            if let Some(slot) = slot
                && let Err(e) = self.swarm().retire(slot)
            {
                tracing::warn!(plugin = %id, error = %e, "a plugin that failed to load could not be retired");
            }
            self.restore_agents(before.clone());
        };
        let config = plugin_config(&prepared.manifest);
        let component = prepared.component.clone();
        let slot = match self.swarm().add(component, config) {
            Ok(slot) => slot,
            Err(e) => {
                undo(None);
                return Err(e.into());
            }
        };
        let plugin = match record(self.store(), &sources.data_dir, &prepared, operator, grants) {
            Ok(plugin) => plugin,
            Err(e) => {
                undo(Some(slot));
                return Err(e);
            }
        };
        slots.push(slot);
        if let Err(e) = self.replace_agents(with_new, slots) {
            undo(Some(slot));
            return Err(e);
        }
        // Its state was stored before the new one started; storing it again
        // now could overwrite what the new one has learned since.
        if let Some(old) = old_slot
            && let Err(e) = self.swarm().discard(old)
        {
            tracing::warn!(plugin = %id, error = %e, "the replaced plugin could not be retired");
        }
        tracing::info!(plugin = %id, operator, slot, "plugin loaded into the running swarm");
        Ok(plugin)
    }

    /// Unloads plugin `id` from this running runtime and from the data dir
    /// (as [`RuntimeBuilder::uninstall_plugin`]): it leaves routing at once,
    /// its call in flight finishes, its state is stored and its instance
    /// dropped, then its record goes. Whether it was installed or running.
    pub fn unload_plugin(&self, id: &str) -> Result<bool> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.take_out(id)?;
        let installed = unrecord(self.store(), &self.sources().data_dir, id)?;
        if installed || running {
            tracing::info!(plugin = %id, "plugin unloaded from the running swarm");
        }
        Ok(installed || running)
    }

    /// The plugins installed in the data dir (running, or left out with a
    /// [problem](Runtime::plugin_problems)).
    pub fn plugins(&self) -> Result<Vec<Plugin>> {
        self.store().plugins()?.into_iter().map(with_manifest).collect()
    }

    /// Takes running plugin `id` (if any) out of routing, then out of the
    /// swarm; whether it was running. The caller holds `changing`.
    fn take_out(&self, id: &str) -> Result<bool> {
        let current = self.agents();
        let Some(i) = current.catalog().features.iter().position(|f| f.plugin && f.faj == id) else {
            return Ok(false);
        };
        let slot = current.slot(i)?;
        let mut slots = current.slots().to_vec();
        slots.remove(i);
        self.replace_agents(current.catalog().without_plugin(id), slots)?;
        self.swarm().retire(slot)?;
        Ok(true)
    }
}
