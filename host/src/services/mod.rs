//! The host interfaces agents import (`elex:host/*`), one module each, all
//! wired into the linker by [`add_to_linker`].
//!
//! Each module implements its interface's generated `Host` trait for
//! [`InstanceState`], the data of every instance's `Store`.

mod log;
mod memory_graph;
mod resources;
mod routing;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{Plugin, elex};
use crate::error::{Error, Result};
use crate::instance::InstanceState;

/// `elex:agent/types` has no functions; the generated trait is empty.
impl elex::agent::types::Host for InstanceState {}

/// Adds every host interface of the `plugin` world to `linker`.
pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
    Plugin::add_to_linker::<InstanceState, HasSelf<InstanceState>>(linker, |s| s)
        .map_err(|e| Error::Config(format!("linking host interfaces: {e:#}")))
}
