//! [`Footprint`]: what one instance of a component declares it creates —
//! core instances, linear memories and tables — counted through nested
//! components, so a host can refuse a component that cannot fit its
//! pooling limits before compiling it, naming the numbers.
//!
//! It is a lower bound of what wasmtime counts: when components are
//! composed, wasmtime adds adapter modules of its own for the calls between
//! them (a composed feature agent declares 12 core instances and runs 14),
//! which only compiling reveals.

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind, ComponentTypeRef,
    Instance, Parser, Payload,
};

use crate::FitError;

/// What one instance of a component declares it creates (a lower bound:
/// see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Core module instances (a composed agent: one per composed module plus
    /// shims; a componentize-py guest: ~40).
    pub core_instances: u32,
    /// Linear memories its modules define (imported ones are shared, not new).
    pub memories: u32,
    /// Tables its modules define.
    pub tables: u32,
}

impl Footprint {
    fn add(&mut self, other: Footprint) {
        self.core_instances = self.core_instances.saturating_add(other.core_instances);
        self.memories = self.memories.saturating_add(other.memories);
        self.tables = self.tables.saturating_add(other.tables);
    }
}

/// The footprint of a core module or component definition, as it enters an
/// index space (`None`: imported or aliased from an instance, so nothing is
/// known of it and instantiating it creates nothing of this component's).
type Definition = Option<Footprint>;

/// One component (or module) being read, outermost first.
enum Frame {
    Module(Footprint),
    Component { modules: Vec<Definition>, components: Vec<Definition>, total: Footprint },
}

/// Counts what one instance of the component in `bytes` declares it
/// creates.
pub fn footprint(bytes: &[u8]) -> Result<Footprint, FitError> {
    crate::classify(bytes)?;
    let bad = |e: wasmparser::BinaryReaderError| FitError::Malformed(e.to_string());
    let mut stack: Vec<Frame> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(bad)? {
            Payload::Version { encoding, .. } => stack.push(match encoding {
                wasmparser::Encoding::Module => Frame::Module(Footprint::default()),
                wasmparser::Encoding::Component => Frame::Component {
                    modules: Vec::new(),
                    components: Vec::new(),
                    total: Footprint::default(),
                },
            }),
            Payload::MemorySection(r) => {
                if let Some(Frame::Module(f)) = stack.last_mut() {
                    f.memories = f.memories.saturating_add(r.count());
                }
            }
            Payload::TableSection(r) => {
                if let Some(Frame::Module(f)) = stack.last_mut() {
                    f.tables = f.tables.saturating_add(r.count());
                }
            }
            Payload::ComponentImportSection(r) => {
                for import in r {
                    match import.map_err(bad)?.ty {
                        ComponentTypeRef::Module(_) => push_module(&mut stack, None),
                        ComponentTypeRef::Component(_) => push_component(&mut stack, None),
                        _ => {}
                    }
                }
            }
            Payload::ComponentExportSection(r) => {
                for export in r {
                    match export.map_err(bad)?.kind {
                        ComponentExternalKind::Module => push_module(&mut stack, None),
                        ComponentExternalKind::Component => push_component(&mut stack, None),
                        _ => {}
                    }
                }
            }
            Payload::ComponentAliasSection(r) => {
                for alias in r {
                    match alias.map_err(bad)? {
                        ComponentAlias::Outer { kind, count, index } => {
                            let outer =
                                stack.len().checked_sub(1 + count as usize).and_then(|d| stack.get(d));
                            let Some(Frame::Component { modules, components, .. }) = outer else {
                                // Aliasing out of a module, or past the
                                // outermost component: nothing known.
                                match kind {
                                    ComponentOuterAliasKind::CoreModule => push_module(&mut stack, None),
                                    ComponentOuterAliasKind::Component => push_component(&mut stack, None),
                                    _ => {}
                                }
                                continue;
                            };
                            let at = |defs: &[Definition]| defs.get(index as usize).copied().flatten();
                            match kind {
                                ComponentOuterAliasKind::CoreModule => {
                                    let def = at(modules);
                                    push_module(&mut stack, def);
                                }
                                ComponentOuterAliasKind::Component => {
                                    let def = at(components);
                                    push_component(&mut stack, def);
                                }
                                _ => {}
                            }
                        }
                        ComponentAlias::InstanceExport { kind: ComponentExternalKind::Module, .. } => {
                            push_module(&mut stack, None)
                        }
                        ComponentAlias::InstanceExport { kind: ComponentExternalKind::Component, .. } => {
                            push_component(&mut stack, None)
                        }
                        _ => {}
                    }
                }
            }
            Payload::InstanceSection(r) => {
                for instance in r {
                    if let Instance::Instantiate { module_index, .. } = instance.map_err(bad)?
                        && let Some(Frame::Component { modules, total, .. }) = stack.last_mut()
                    {
                        let module =
                            modules.get(module_index as usize).copied().flatten().unwrap_or_default();
                        total.add(Footprint { core_instances: 1, ..module });
                    }
                }
            }
            Payload::ComponentInstanceSection(r) => {
                for instance in r {
                    if let ComponentInstance::Instantiate { component_index, .. } = instance.map_err(bad)?
                        && let Some(Frame::Component { components, total, .. }) = stack.last_mut()
                    {
                        total.add(
                            components.get(component_index as usize).copied().flatten().unwrap_or_default(),
                        );
                    }
                }
            }
            Payload::End(_) => match stack.pop() {
                Some(Frame::Module(f)) => push_module(&mut stack, Some(f)),
                Some(Frame::Component { total, .. }) if stack.is_empty() => return Ok(total),
                Some(Frame::Component { total, .. }) => push_component(&mut stack, Some(total)),
                None => break,
            },
            _ => {}
        }
    }
    Err(FitError::Malformed(String::from("the component ends early")))
}

fn push_module(stack: &mut [Frame], def: Definition) {
    if let Some(Frame::Component { modules, .. }) = stack.last_mut() {
        modules.push(def);
    }
}

fn push_component(stack: &mut [Frame], def: Definition) {
    if let Some(Frame::Component { components, .. }) = stack.last_mut() {
        components.push(def);
    }
}
