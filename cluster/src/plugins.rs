//! Plugins across a cluster. A plugin an operator loads on one host by name
//! from the registry is recorded in the key-value bucket
//! `elex-<cluster>-plugins`; every host follows the bucket and loads the
//! same plugin from its own registry (or unloads it when its record goes),
//! so every host routes to it and its agent is placed like a feature's —
//! one primary learning, its state in the state bucket. A host that joins
//! later loads the recorded plugins. An uploaded (unsigned) component stays
//! on the host that took it: it is answered there only, not placed.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Cluster, Error, Result, key_token};

/// A plugin shared by the cluster, as its bucket keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedPlugin {
    /// Its agent id.
    id: String,
    /// `name@=version` in the registry: the exact version the recording
    /// host loaded.
    name: String,
    /// The capabilities granted to it.
    grants: Vec<String>,
    /// Who loaded it.
    operator: String,
    /// The host that loaded it, and that host's process.
    host: String,
    incarnation: u64,
}

/// The id a bucket key names (the inverse of [`key_token`]).
fn key_id(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Cluster {
    /// Records plugin `id`, which this host loaded from the registry as
    /// `name`, so that every host loads it (and places its agent).
    pub async fn share_plugin(&self, id: &str, name: &str, grants: &[String], operator: &str) -> Result<()> {
        let record = SharedPlugin {
            id: id.to_string(),
            name: name.to_string(),
            grants: grants.to_vec(),
            operator: operator.to_string(),
            host: self.config.host_id.clone(),
            incarnation: self.incarnation,
        };
        let value = Bytes::from(serde_json::to_vec(&record).map_err(|e| Error::Nats(e.to_string()))?);
        self.plugins.put(key_token(id), value).await.map_err(|e| Error::State {
            bucket: self.plugins_bucket(),
            detail: format!("cannot record plugin {id}: {e}"),
        })?;
        self.shared.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
        Ok(())
    }

    /// Removes plugin `id`'s record: every host unloads it. Whether it was
    /// shared.
    pub async fn unshare_plugin(&self, id: &str) -> Result<bool> {
        let was = self.shared.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        if was {
            self.plugins.delete(key_token(id)).await.map_err(|e| Error::State {
                bucket: self.plugins_bucket(),
                detail: format!("cannot remove plugin {id}'s record: {e}"),
            })?;
        }
        Ok(was)
    }

    /// [`Cluster::share_plugin`] from a blocking thread.
    pub fn share_plugin_blocking(
        &self,
        id: &str,
        name: &str,
        grants: &[String],
        operator: &str,
    ) -> Result<()> {
        self.tokio.block_on(self.share_plugin(id, name, grants, operator))
    }

    /// [`Cluster::unshare_plugin`] from a blocking thread.
    pub fn unshare_plugin_blocking(&self, id: &str) -> Result<bool> {
        self.tokio.block_on(self.unshare_plugin(id))
    }

    /// Whether plugin `id` is shared by the cluster (placed like a feature).
    pub(crate) fn is_shared(&self, id: &str) -> bool {
        self.shared.read().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    pub(crate) fn plugins_bucket(&self) -> String {
        self.config.store("plugins")
    }

    /// Follows the plugins bucket (the recorded plugins first): loads each
    /// plugin another host recorded, unloads each whose record went.
    pub(crate) async fn following_plugins(self: Arc<Self>, mut watch: kv::Watch) {
        let bucket = self.plugins_bucket();
        while let Some(entry) = crate::next_entry(&mut watch, &bucket).await {
            match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<SharedPlugin>(&entry.value) {
                    Ok(plugin) if key_token(&plugin.id) == entry.key => self.take_plugin(plugin).await,
                    _ => tracing::warn!(key = %entry.key, "a malformed plugin record was ignored"),
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    if let Some(id) = key_id(&entry.key) {
                        self.drop_plugin(id).await;
                    }
                }
            }
        }
        tracing::error!("the plugins bucket's watch ended: plugins loaded elsewhere are no longer followed");
    }

    async fn take_plugin(&self, plugin: SharedPlugin) {
        self.shared.write().unwrap_or_else(|p| p.into_inner()).insert(plugin.id.clone());
        if plugin.host == self.config.host_id && plugin.incarnation == self.incarnation {
            return;
        }
        let runtime = Arc::clone(&self.runtime);
        let record = plugin.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            // Already running this registry entry and version (a restart):
            // nothing to do.
            let running = runtime.plugins()?.into_iter().any(|p| {
                p.installed.id == record.id
                    && matches!(&p.installed.source, elex_ran::host::snapshots::PluginSource::Registry { name, version }
                        if record.name == format!("{name}@={version}"))
                    && runtime.catalog().index_of(&record.id).is_ok()
            });
            if running {
                return Ok(false);
            }
            let spec = elex_ran::PluginSpec::Registry(record.name.clone());
            runtime.load_plugin(&spec, &record.operator, &record.grants).map(|_| true)
        })
        .await;
        match loaded {
            Ok(Ok(true)) => {
                tracing::info!(plugin = %plugin.id, from = %plugin.host, "loaded a plugin the cluster shares");
                if self.holds(&plugin.id)
                    && let Err(e) = self.adopt_from_bucket(&plugin.id, true).await
                {
                    tracing::warn!(plugin = %plugin.id, error = %e, "its state could not be read");
                }
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(
                plugin = %plugin.id,
                name = %plugin.name,
                error = %e,
                "a plugin the cluster shares could not be loaded here; this host will not answer it"
            ),
            Err(e) => tracing::error!(plugin = %plugin.id, error = %e, "loading a shared plugin panicked"),
        }
    }

    async fn drop_plugin(&self, id: String) {
        self.shared.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let runtime = Arc::clone(&self.runtime);
        let name = id.clone();
        match tokio::task::spawn_blocking(move || runtime.unload_plugin(&name)).await {
            Ok(Ok(true)) => tracing::info!(plugin = %id, "unloaded a plugin the cluster no longer shares"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(plugin = %id, error = %e, "a plugin the cluster dropped could not be unloaded")
            }
            Err(e) => tracing::error!(plugin = %id, error = %e, "unloading a plugin panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_ids() {
        for id in ["hot-moon", "a.b c_d", "ü", ""] {
            assert_eq!(key_id(&key_token(id)).as_deref(), Some(id));
        }
        assert_eq!(key_id("bad_z"), None);
        assert_eq!(key_id("bad_"), None);
    }
}
