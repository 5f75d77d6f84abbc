//! The host interfaces agents import (`elex:host/*`), one module each and
//! each self-contained, like a Spin factor: its own state type implements
//! its generated `Host` trait, and [`add_to_linker`] links it with a
//! projection from the instance's store data ([`InstanceState`]), so no
//! interface sees another's state.
//!
//! | interface | state | without it configured |
//! |---|---|---|
//! | `elex:host/log` | [`log::LogState`]: the agent id | — |
//! | `elex:host/resources` | [`resources::ResourcesView`]: the instance's budgets and memory use | — |
//! | `elex:host/routing` | [`routing::RoutingState`]: the swarm, the call chain, the trace | `unavailable` (an agent alone) |
//! | `elex:host/memory-graph` | [`memory_graph::GraphState`]: the graph, the actor, the open transaction | `unavailable` (no graph) |
//! | `wasi:*@0.2` | [`wasi::WasiSlot`]: a deny-by-default WASI context, made on first use | — |

pub(crate) mod log;
pub(crate) mod memory_graph;
pub(crate) mod resources;
pub(crate) mod routing;
pub mod wasi;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::elex;
use crate::error::{Error, Result};
use crate::instance::InstanceState;

/// `elex:agent/types` has no functions; its generated trait is empty.
impl elex::agent::types::Host for InstanceState {}

/// Adds every host interface of the `plugin` world to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
    let linked = (|| -> wasmtime::Result<()> {
        elex::agent::types::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |s| s)?;
        elex::host::log::add_to_linker::<InstanceState, HasSelf<log::LogState>>(linker, |s| &mut s.log)?;
        elex::host::resources::add_to_linker::<InstanceState, resources::Resources>(linker, |s| {
            resources::ResourcesView { memory: &s.memory, budgets: &s.budgets }
        })?;
        elex::host::routing::add_to_linker::<InstanceState, HasSelf<routing::RoutingState>>(linker, |s| {
            &mut s.routing
        })?;
        elex::host::memory_graph::add_to_linker::<InstanceState, HasSelf<memory_graph::GraphState>>(
            linker,
            |s| &mut s.graph,
        )?;
        wasi::add_to_linker(linker)?;
        Ok(())
    })();
    linked.map_err(|e| Error::Config(format!("linking host interfaces: {e:#}")))
}
