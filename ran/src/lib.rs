//! `elex-ran`: the RAN feature agents on the elex host — the catalog of 593
//! LTE/NR features ([`Catalog`]), the [`Router`] that picks a feature's agent
//! for a question, workflows ([`workflow`]), and [`Runtime`], the embedding
//! API: one builder that starts every feature's agent restored from a data
//! dir, and the calls the `elex` CLI makes (query, feedback, workflows,
//! events, usage).
//!
//! ```no_run
//! # fn main() -> elex_ran::Result<()> {
//! let runtime = elex_ran::Runtime::builder("/tmp/elex-data").registry("target/registry").start()?;
//! let answer = runtime.query("Which parameters control MIMO Sleep Mode?")?;
//! let feature = answer.feature();
//! println!("{} answered: {}", feature.faj, answer.response.content);
//! runtime.feedback(&answer.response.query_id, 1.0)?;
//! # Ok(()) }
//! ```
//!
//! The platform under it — engine, loading, budgets, the swarm of live
//! agents, the host interfaces — is `elex-host`, re-exported as
//! [`host`]; this crate adds what is RAN-specific.

#![warn(missing_docs)]

pub mod agents;
pub mod catalog;
pub mod error;
pub mod json;
pub mod plugins;
pub mod router;
pub mod runtime;
pub mod workflow;

pub use agents::Agents;
pub use catalog::{Catalog, Feature};
pub use elex_host as host;
pub use error::{Error, Result};
pub use plugins::{Plugin, PluginSpec};
pub use router::{Reason, Router};
pub use runtime::{Answer, Routed, Runtime, RuntimeBuilder};
