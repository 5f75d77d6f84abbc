//! [`Host`]: the embedding API's entry point.

use std::path::Path;
use std::sync::Arc;

use elex_memgraph::MemoryGraph;
use std::sync::atomic::{AtomicU64, Ordering};

use elex_registry::Registry;

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::bindings::{AgentConfig, Query};
use crate::cache::ComponentCache;
use crate::config::HostConfig;
use crate::engine::{self, EpochTicker};
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::instance::{AgentInstance, InstanceState};
use crate::interfaces;
use crate::load::{self, LoadedComponent};
use crate::vector_index::VectorIndex;

/// A wasmtime engine with the elex host interfaces linked. Cheap to share by
/// reference; everything it creates is independent of everything else.
pub struct Host {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: ComponentCache,
    config: HostConfig,
    next_query: AtomicU64,
    /// Makes query ids unique across hosts, processes and runs: 64 random
    /// bits drawn when the host starts.
    query_prefix: String,
    events: Events,
    graph: Option<Arc<MemoryGraph>>,
    _ticker: EpochTicker,
}

impl Host {
    /// A host with the given configuration.
    pub fn new(config: HostConfig) -> Result<Host> {
        if config.budgets.fuel_per_call.is_some() && !config.fuel {
            return Err(Error::Config(String::from(
                "budgets.fuel_per_call is set but fuel metering is off: set HostConfig::fuel = true",
            )));
        }
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        interfaces::add_to_linker(&mut linker)?;
        let ticker = EpochTicker::start(&engine, config.epoch_tick)?;
        let cache = ComponentCache::new(&engine, config.cache_dir.clone(), config.memory_cache_entries);
        Ok(Host {
            engine,
            linker,
            cache,
            config,
            next_query: AtomicU64::new(1),
            query_prefix: random_prefix()?,
            events: Events::new(1024),
            graph: None,
            _ticker: ticker,
        })
    }

    /// The host emitting into `events` (made and subscribed to before the
    /// host, to see its start) instead of its own channel.
    pub fn with_events(mut self, events: Events) -> Host {
        self.events = events;
        self
    }

    /// The host with a memory graph: agents' `elex:host/memory-graph` calls
    /// go to `graph` (without one they answer `unavailable`).
    pub fn with_memory_graph(mut self, graph: Arc<MemoryGraph>) -> Host {
        self.graph = Some(graph);
        self
    }

    /// The memory graph agents use, if any.
    pub fn memory_graph(&self) -> Option<&Arc<MemoryGraph>> {
        self.graph.as_ref()
    }

    /// The configuration the host was built with.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Receives every [`Event`] of this host and its swarms from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The host's event channel (swarms emit into it; embedders
    /// subscribe with [`Host::subscribe`]).
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    fn loader(&self) -> load::Loader<'_> {
        load::Loader { engine: &self.engine, config: &self.config, linker: &self.linker, cache: &self.cache }
    }

    fn loaded(&self, component: LoadedComponent) -> LoadedComponent {
        self.events.emit(Event::ModuleLoaded {
            what: component.what.clone(),
            digest: component.digest.clone(),
            size: component.size,
            origin: component.origin,
            millis: component.load_time.as_secs_f64() * 1e3,
        });
        component
    }

    /// Reads, checks, compiles and links a component file **without any
    /// signature check**: for development and tests. Production loads go
    /// through [`Host::load_from_registry`], which verifies the signature
    /// and trust first. The name is the opt-in: nothing unsigned loads by a
    /// call that does not say so.
    pub fn load_unsigned_file(&self, path: &Path) -> Result<LoadedComponent> {
        let bytes = load::read(path)?;
        self.load_unsigned_bytes(&path.display().to_string(), &bytes)
    }

    /// Checks, compiles and links component bytes **without any signature
    /// check** (see [`Host::load_unsigned_file`]); `what` names them in
    /// messages. Compiled code is cached by digest (memory, and disk when
    /// `HostConfig::cache_dir` is set). The component's
    /// [`family`](LoadedComponent::family) is `unsigned-<digest prefix>`,
    /// so its stored state is its own.
    pub fn load_unsigned_bytes(&self, what: &str, bytes: &[u8]) -> Result<LoadedComponent> {
        tracing::info!(component = what, "loading an unsigned component");
        let digest = load::digest_of(bytes);
        let family = format!("unsigned-{}", &digest[..16]);
        load::load(self.loader(), what, family, bytes, digest).map(|c| self.loaded(c))
    }

    /// Loads `spec` (`name@version-requirement`) from a registry: resolves the
    /// highest matching version, verifies its ed25519 signature against the
    /// registry's trust policy, reads its bytes from the content-addressed
    /// store (size and digest checked before anything parses them), checks
    /// the declared world, then loads it like [`Host::load_unsigned_bytes`]
    /// (its family is the registry name; its entry's budgets apply).
    pub fn load_from_registry(&self, registry: &Registry, spec: &str) -> Result<LoadedComponent> {
        let (name, req) = elex_registry::parse_spec(spec)?;
        let entry = registry.index.resolve(&name, &req)?;
        // The signature (over name, version, world, digest, size and
        // budgets) is checked against this registry's policy on every load
        // (one ed25519 verification, ~50 µs), before the bytes are read, so
        // the size that bounds the read is one the signer stated.
        registry.verify_entry(&entry)?;
        let bytes = registry.store.get(&entry)?;
        let expected = elex_wit::World::Plugin.qualified_name();
        if entry.world != expected {
            return Err(Error::WrongWorld {
                name: entry.name,
                version: entry.version.to_string(),
                world: entry.world,
                expected,
            });
        }
        // The store checked the bytes against this digest already: reuse it
        // as the cache key instead of hashing them again.
        let digest = entry.digest.strip_prefix("blake3:").unwrap_or(&entry.digest).to_string();
        let what = format!("{}@{}", entry.name, entry.version);
        let mut loaded = load::load(self.loader(), &what, entry.name.clone(), &bytes, digest)?;
        if entry.budgets.fuel_per_call.is_some() && !self.config.fuel {
            tracing::warn!(component = %what, "its entry asks for a fuel budget, but this host meters no fuel");
        }
        // The signed entry's budgets rule; without any, the manifest's (the
        // digest the entry signs covers it too).
        if entry.budgets != elex_registry::Budgets::default() {
            loaded.requested_budgets = entry.budgets;
        }
        Ok(self.loaded(loaded))
    }

    /// A new instance of `component`, initialised with `config`.
    pub fn instantiate(&self, component: &LoadedComponent, config: AgentConfig) -> Result<AgentInstance> {
        self.instantiate_linked(component, config, None)
    }

    /// An instance linked into a swarm (its routing calls reach the swarm).
    pub(crate) fn instantiate_linked(
        &self,
        component: &LoadedComponent,
        config: AgentConfig,
        swarm: Option<std::sync::Weak<crate::swarm::Hub>>,
    ) -> Result<AgentInstance> {
        AgentInstance::start(
            &self.engine,
            component,
            config,
            self.config.budgets.tightened_by(&component.requested_budgets, self.config.fuel),
            self.config.epoch_tick,
            self.graph.clone(),
            swarm,
        )
    }

    /// A [`VectorIndex`] of `rows` (unit vectors of `dimension`, row-major;
    /// row `i` under id `i`) in a new instance of `hnsw`, an
    /// `elex:hnsw/library` component checked against that world and compiled
    /// (or taken from the cache). The bytes are the caller's to verify: the
    /// RAN runtime fetches them signed from the registry.
    pub fn vector_index(&self, hnsw: &[u8], rows: &[f32], dimension: usize) -> Result<VectorIndex> {
        let what = "the hnsw component";
        elex_wit::check_fit(hnsw, elex_wit::World::Hnsw)
            .map_err(|source| Error::Unfit { what: what.to_string(), source })?;
        let digest = load::digest_of(hnsw);
        let component = match self.cache.get(&self.engine, &digest) {
            Some((c, _)) => c,
            None => {
                let c = wasmtime::component::Component::new(&self.engine, hnsw)
                    .map_err(|e| Error::Compile { what: what.to_string(), detail: format!("{e:#}") })?;
                self.cache.insert(&digest, &c);
                c
            }
        };
        VectorIndex::build(&self.engine, &component, rows, dimension)
    }

    /// A query with a fresh id, unique across hosts, processes and runs
    /// (`q<16 random hex digits>-<n>`).
    pub fn query(&self, text: &str) -> Query {
        let n = self.next_query.fetch_add(1, Ordering::Relaxed);
        Query { id: format!("q{}-{n}", self.query_prefix), text: text.to_string(), context: None, depth: 0 }
    }
}

/// 64 random bits from the operating system, as 16 hex digits.
fn random_prefix() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Error::Config(format!("no random source for query ids: {e}")))?;
    Ok(format!("{:016x}", u64::from_le_bytes(bytes)))
}
