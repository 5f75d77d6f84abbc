//! `elex-host`: the elex WebAssembly component host.
//!
//! A [`Host`] owns one wasmtime engine (component model, pooling allocator,
//! epoch interruption) with the elex host interfaces linked. It loads
//! components of the `elex:platform/plugin` world ([`Host::load_unsigned_file`]),
//! refusing anything that is not a component of that world with an error that
//! says what was expected and what was found, and creates instances
//! ([`Host::instantiate`]), each with its own store and budgets.
//!
//! ```
//! use elex_host::{AgentConfig, Host, HostConfig};
//! # fn main() -> elex_host::Result<()> {
//! let host = Host::new(HostConfig::default())?;
//! // A development build (the test fixture, which echoes); signed
//! // components load with `Host::load_from_registry`.
//! let agent = host.load_unsigned_file("../target/components/testing-hostile.wasm".as_ref())?;
//! let config = AgentConfig {
//!     agent_id: String::from("echo"),
//!     name: String::from("echo"),
//!     settings: Vec::new(),
//!     document: String::new(),
//! };
//! let mut instance = host.instantiate(&agent, config)?;
//! let answer = instance.handle(&host.query("hello"))?;
//! assert_eq!(answer.content, "ok: hello");
//! # Ok(()) }
//! ```
//!
//! Many agents run in a [`Swarm`]: every one live and linked through
//! `elex:host/routing`, each call queued, counted, recycled after a trap,
//! checkpointed; the application says who the agents are with a
//! [`Directory`] (the RAN application, `elex-ran`, gives its router).
//!
//! Where things live: the load path is `src/load.rs`
//! ([`Host::load_from_registry`], [`Host::load_unsigned_bytes`]), budgets
//! are `src/budget.rs` and `src/config.rs`, the host interfaces are
//! `src/interfaces/` (one module and one state type each), the swarm is
//! `src/swarm/`.

#![warn(missing_docs)]

mod bindings;
pub mod budget;
pub mod cache;
pub mod config;
mod engine;
pub mod error;
pub mod events;
mod host;
mod instance;
mod interfaces;
pub use interfaces::wasi::Grants;
mod load;
pub mod snapshots;
pub mod swarm;
pub mod usage;
mod vector_index;

/// The WIT types of the `elex:platform/plugin` world that the host's API
/// speaks: what agents are given and answer.
pub mod types {
    pub use crate::bindings::elex::host::routing::{Candidate, Peer, Relation};
    pub use crate::bindings::{
        Action, AgentConfig, CounterSample, HealthReport, HealthStatus, KpiStatus, KpiValue, ParameterValue,
        Query, Response, Validation, Verdict,
    };
}

pub use config::{Budgets, HostConfig};
pub use elex_memgraph as memgraph;
pub use elex_registry as registry;
pub use elex_wit::{FitError, Footprint, Interfaces, World};
pub use error::{BudgetKind, Error, Result};
pub use events::{Event, EvictReason, Pressure};
pub use host::Host;
pub use instance::AgentInstance;
pub use load::LoadedComponent;
pub use swarm::{
    AgentComponents, AgentState, AgentStatus, Directory, Health, Hop, RemoteAgents, Reply, Roster, Swarm,
    SwarmConfig, Upkeep,
};
pub use types::{Action, AgentConfig, Query, Response};
pub use vector_index::VectorIndex;
