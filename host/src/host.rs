//! [`Host`]: the embedding API's entry point.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::bindings::{AgentConfig, Query};
use crate::cache::ComponentCache;
use crate::config::HostConfig;
use crate::engine::{self, EpochTicker};
use crate::error::Result;
use crate::instance::{AgentInstance, InstanceState};
use crate::load::{self, LoadedComponent};
use crate::services;

/// A wasmtime engine with the elex host interfaces linked. Cheap to share by
/// reference; everything it creates is independent of everything else.
pub struct Host {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: ComponentCache,
    config: HostConfig,
    next_query: AtomicU64,
    _ticker: EpochTicker,
}

impl Host {
    /// A host with the given configuration.
    pub fn new(config: HostConfig) -> Result<Host> {
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        services::add_to_linker(&mut linker)?;
        let ticker = EpochTicker::start(&engine, config.epoch_tick)?;
        let cache = ComponentCache::new(&engine, config.cache_dir.clone(), config.memory_cache_entries);
        Ok(Host { engine, linker, cache, config, next_query: AtomicU64::new(1), _ticker: ticker })
    }

    /// The configuration the host was built with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Reads, checks, compiles and links a component file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent> {
        let bytes = load::read(path)?;
        self.load_bytes(&path.display().to_string(), &bytes)
    }

    /// Checks, compiles and links component bytes; `what` names them in
    /// messages. Compiled code is cached by digest (memory, and disk when
    /// `HostConfig::cache_dir` is set).
    pub fn load_bytes(&self, what: &str, bytes: &[u8]) -> Result<LoadedComponent> {
        load::load(&self.engine, &self.linker, &self.cache, what, bytes)
    }

    /// A new instance of `component`, initialised with `config`.
    pub fn instantiate(&self, component: &LoadedComponent, config: AgentConfig) -> Result<AgentInstance> {
        AgentInstance::start(
            &self.engine,
            component,
            config,
            self.config.budgets.clone(),
            self.config.epoch_tick,
        )
    }

    /// A query with a fresh host-unique id.
    pub fn query(&self, text: &str) -> Query {
        let n = self.next_query.fetch_add(1, Ordering::Relaxed);
        Query { id: format!("q{n}"), text: text.to_string(), context: None, depth: 0 }
    }
}
