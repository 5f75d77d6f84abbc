//! `elex-host`: the elex WebAssembly component host.
//!
//! A [`Host`] owns one wasmtime engine (component model, pooling allocator,
//! epoch interruption) with the elex host interfaces linked. It loads
//! components of the `elex:platform/plugin` world ([`Host::load_unsigned_file`]),
//! refusing anything that is not a component of that world with an error that
//! says what was expected and what was found, and creates instances
//! ([`Host::instantiate`]), each with its own store and budgets.
//!
//! ```no_run
//! use elex_host::{Catalog, Host, HostConfig};
//! # fn main() -> elex_host::Result<()> {
//! let host = Host::new(HostConfig::default())?;
//! // A development build; signed components load with `Host::load_from_registry`.
//! let agent = host.load_unsigned_file("target/components/feature-agent.composed.wasm".as_ref())?;
//! let catalog = Catalog::embedded()?;
//! let feature = catalog.by_faj("FAJ 121 3094").expect("in the catalog");
//! let mut instance = host.instantiate(&agent, feature.agent_config())?;
//! let answer = instance.handle(&host.query("Which parameters control MIMO Sleep Mode?"))?;
//! println!("{}: {}", answer.action, answer.content);
//! # Ok(()) }
//! ```
//!
//! Where things live: the load path is [`load`](crate::Host::load_unsigned_bytes)
//! (`src/load.rs`), budgets are `src/budget.rs` and `src/config.rs`, the host
//! interfaces are `src/services/`, and query routing is [`router`].

pub mod agent_index;
pub mod bindings;
pub mod budget;
pub mod cache;
pub mod catalog;
pub mod config;
mod engine;
pub mod error;
pub mod events;
mod host;
mod instance;
mod load;
pub mod router;
pub mod runtime;
mod services;
pub mod snapshots;
pub mod swarm;
pub mod usage;
pub mod workflow;

pub use bindings::{Action, AgentConfig, Query, Response};
pub use catalog::{Catalog, Feature};
pub use config::{Budgets, HostConfig};
pub use elex_wit::{FitError, Interfaces, World};
pub use error::{Error, Result};
pub use events::{Event, EvictReason, Pressure};
pub use host::Host;
pub use instance::{AgentInstance, InstanceState};
pub use load::LoadedComponent;
pub use runtime::{Runtime, RuntimeBuilder};
pub use swarm::{AgentState, AgentStatus, Answer, Health, Hop, Swarm, SwarmConfig, Upkeep};
