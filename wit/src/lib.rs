//! The elex WIT contract, embedded in Rust.
//!
//! The `.wit` files next to this crate are the public contract of elex (see
//! `wit/README.md`). This crate compiles them in, so the host, the composer
//! and the tests all check components against the same worlds:
//!
//! - [`inspect`] tells what a file is (not wasm, a core module, a component)
//!   and lists a component's imports and exports by interface name;
//! - [`check_fit`] says whether a component fits one of the elex [`World`]s,
//!   naming every unexpected import and missing export;
//! - [`print_wit`] renders a component's interface as WIT text, like
//!   `wasm-tools component wit`.

mod footprint;

pub use footprint::{Footprint, footprint};

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use wit_parser::{Resolve, WorldId, WorldItem, WorldKey};

/// The WIT sources, in dependency order (each file's package only uses
/// packages listed before it).
pub const SOURCES: &[(&str, &str)] = &[
    ("deps/vector/vector.wit", include_str!("../deps/vector/vector.wit")),
    ("deps/qlearning/qlearning.wit", include_str!("../deps/qlearning/qlearning.wit")),
    ("deps/hnsw/hnsw.wit", include_str!("../deps/hnsw/hnsw.wit")),
    ("deps/agent/agent.wit", include_str!("../deps/agent/agent.wit")),
    ("deps/host/host.wit", include_str!("../deps/host/host.wit")),
    ("worlds.wit", include_str!("../worlds.wit")),
];

/// Version of every elex WIT package.
pub const VERSION: &str = "0.1.0";

/// A world elex components are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// `elex:platform/plugin`: host interfaces in, agent out. What the host
    /// loads.
    Plugin,
    /// `elex:platform/feature-agent`: the plugin world plus the three library
    /// imports, before composition.
    FeatureAgent,
    /// `elex:vector/library`.
    Vector,
    /// `elex:qlearning/library`.
    QLearning,
    /// `elex:hnsw/library`.
    Hnsw,
}

impl World {
    /// Every world, for listings.
    pub const ALL: [World; 5] =
        [World::Plugin, World::FeatureAgent, World::Vector, World::QLearning, World::Hnsw];

    /// `package:name/world@version`.
    pub fn qualified_name(self) -> &'static str {
        match self {
            World::Plugin => "elex:platform/plugin@0.1.0",
            World::FeatureAgent => "elex:platform/feature-agent@0.1.0",
            World::Vector => "elex:vector/library@0.1.0",
            World::QLearning => "elex:qlearning/library@0.1.0",
            World::Hnsw => "elex:hnsw/library@0.1.0",
        }
    }

    /// Parses a qualified world name (with or without `@version`).
    pub fn from_name(name: &str) -> Option<World> {
        World::ALL
            .into_iter()
            .find(|w| w.qualified_name() == name || w.qualified_name().split('@').next() == Some(name))
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qualified_name())
    }
}

/// Why a file is not a component that fits a world.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("not a WebAssembly file: expected the `\\0asm` magic bytes, found {found}")]
    NotWasm { found: String },
    #[error(
        "this is a core WebAssembly module, not a component: expected a component (build for \
         wasm32-wasip2, or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("malformed component: {0}")]
    Malformed(String),
    #[error(
        "the component does not fit world `{world}`: it imports {unexpected}, which the world does \
         not provide (the world provides: {provided})",
        unexpected = list(unexpected),
        provided = list(provided)
    )]
    UnexpectedImports { world: World, unexpected: Vec<String>, provided: Vec<String> },
    #[error(
        "the component does not fit world `{world}`: it must export {missing}, but it exports {found}",
        missing = list(missing),
        found = if found.is_empty() { String::from("nothing") } else { list(found) }
    )]
    MissingExports { world: World, missing: Vec<String>, found: Vec<String> },
    #[error("the component's types do not match world `{world}`: {detail}")]
    TypeMismatch { world: World, detail: String },
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

/// The interface names a component imports and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    /// Imported interface (or bare item) names, sorted.
    pub imports: Vec<String>,
    /// Exported interface (or bare item) names, sorted.
    pub exports: Vec<String>,
}

struct Contract {
    resolve: Resolve,
    worlds: Vec<(World, WorldId)>,
}

fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let mut resolve = Resolve::default();
        let mut packages = Vec::new();
        for (path, text) in SOURCES {
            // The sources are compiled in and tested (`embedded_contract_parses`):
            // a failure here is a build defect, not bad input.
            packages.push(
                resolve
                    .push_str(path, text)
                    .unwrap_or_else(|e| panic!("embedded WIT {path} does not parse: {e:?}")),
            );
        }
        let worlds = World::ALL
            .into_iter()
            .map(|w| {
                let id = resolve
                    .select_world(&packages, Some(w.qualified_name()))
                    .unwrap_or_else(|e| panic!("embedded WIT lacks world {w}: {e:?}"));
                (w, id)
            })
            .collect();
        Contract { resolve, worlds }
    })
}

fn world_id(world: World) -> WorldId {
    contract().worlds.iter().find(|(w, _)| *w == world).map(|(_, id)| *id).expect("every World is resolved")
}

fn key_name(resolve: &Resolve, key: &WorldKey) -> String {
    resolve.name_world_key(key)
}

fn names<'a>(resolve: &Resolve, items: impl Iterator<Item = (&'a WorldKey, &'a WorldItem)>) -> Vec<String> {
    let set: BTreeSet<String> = items
        // Type-only items (a `use` at world level) are not imports of an
        // interface.
        .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
        .map(|(k, _)| key_name(resolve, k))
        .collect();
    set.into_iter().collect()
}

/// The imports and exports the elex world `world` declares.
pub fn world_interfaces(world: World) -> Interfaces {
    let c = contract();
    let w = &c.resolve.worlds[world_id(world)];
    Interfaces { imports: names(&c.resolve, w.imports.iter()), exports: names(&c.resolve, w.exports.iter()) }
}

fn classify(bytes: &[u8]) -> Result<(), FitError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let shown: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let found = if bytes.is_empty() {
            String::from("an empty file")
        } else {
            format!("bytes {}", shown.join(" "))
        };
        return Err(FitError::NotWasm { found });
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(FitError::CoreModule);
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(FitError::Malformed(String::from("unknown WebAssembly binary version or layer")));
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<(Resolve, WorldId), FitError> {
    classify(bytes)?;
    match wit_component::decode(bytes) {
        Ok(wit_component::DecodedWasm::Component(resolve, world)) => Ok((resolve, world)),
        Ok(wit_component::DecodedWasm::WitPackage(..)) => Err(FitError::Malformed(String::from(
            "this is a WIT package encoded as wasm, not a runnable component",
        ))),
        Err(e) => Err(FitError::Malformed(format!("{e:#}"))),
    }
}

/// What a file is and, for a component, its imports and exports.
pub fn inspect(bytes: &[u8]) -> Result<Interfaces, FitError> {
    let (resolve, world) = decode(bytes)?;
    let w = &resolve.worlds[world];
    Ok(Interfaces { imports: names(&resolve, w.imports.iter()), exports: names(&resolve, w.exports.iter()) })
}

/// The WASI packages a plugin may import, at any `0.2.x` version: the
/// interfaces wasmtime-wasi 0.2 provides, which the elex host links deny by
/// default (no files, sockets, environment; output into the host's log).
pub const WASI_PACKAGES: &[&str] =
    &["wasi:io", "wasi:clocks", "wasi:random", "wasi:cli", "wasi:filesystem", "wasi:sockets"];

/// Whether `import` (an interface name such as `wasi:cli/stdout@0.2.3`) is a
/// WASI 0.2 interface the `plugin` world admits.
pub fn is_wasi_import(import: &str) -> bool {
    let Some((package, rest)) = import.split_once('/') else { return false };
    let version = rest.split_once('@').map(|(_, v)| v);
    WASI_PACKAGES.contains(&package) && version.is_some_and(|v| v.starts_with("0.2."))
}

/// Checks that a component fits `world`: it imports nothing the world does
/// not provide, exports everything the world requires (extra exports are
/// allowed: language runtimes add some), and its types match.
///
/// The `plugin` world also admits WASI 0.2 imports ([`is_wasi_import`]), as
/// ordinary guest toolchains add them. Their types are not in this contract:
/// for such a component the type check is left to the host's linker, which
/// checks every import and export against what it provides when the
/// component is linked — a mismatch fails the load there.
pub fn check_fit(bytes: &[u8], world: World) -> Result<Interfaces, FitError> {
    let found = inspect(bytes)?;
    let expected = world_interfaces(world);
    let admitted = |i: &String| expected.imports.contains(i) || (world == World::Plugin && is_wasi_import(i));
    let unexpected: Vec<String> = found.imports.iter().filter(|i| !admitted(i)).cloned().collect();
    if !unexpected.is_empty() {
        let mut provided = expected.imports;
        if world == World::Plugin {
            provided.push(String::from("WASI 0.2 (wasi:io, clocks, random, cli, filesystem, sockets)"));
        }
        return Err(FitError::UnexpectedImports { world, unexpected, provided });
    }
    let missing: Vec<String> =
        expected.exports.iter().filter(|e| !found.exports.contains(e)).cloned().collect();
    if !missing.is_empty() {
        return Err(FitError::MissingExports { world, missing, found: found.exports });
    }
    if found.imports.iter().any(|i| is_wasi_import(i)) {
        return Ok(found);
    }
    let c = contract();
    wit_component::targets(&c.resolve, world_id(world), bytes)
        .map_err(|e| FitError::TypeMismatch { world, detail: format!("{e:#}") })?;
    Ok(found)
}

/// A component's interface as WIT text: its world, then every package it
/// refers to.
pub fn print_wit(bytes: &[u8]) -> Result<String, FitError> {
    let (resolve, world) = decode(bytes)?;
    let main = resolve.worlds[world]
        .package
        .ok_or_else(|| FitError::Malformed(String::from("decoded world has no package")))?;
    let others: Vec<_> = resolve.packages.iter().map(|(id, _)| id).filter(|id| *id != main).collect();
    let mut printer = wit_component::WitPrinter::default();
    printer.print(&resolve, main, &others).map_err(|e| FitError::Malformed(format!("{e:#}")))?;
    Ok(printer.output.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_contract_parses_and_has_every_world() {
        for w in World::ALL {
            let i = world_interfaces(w);
            assert!(!i.exports.is_empty(), "{w} exports nothing");
        }
        let plugin = world_interfaces(World::Plugin);
        assert_eq!(plugin.exports, ["elex:agent/agent@0.1.0"]);
        assert!(plugin.imports.contains(&String::from("elex:host/log@0.1.0")));
        assert!(!plugin.imports.iter().any(|i| i.starts_with("elex:vector")));
        let fa = world_interfaces(World::FeatureAgent);
        assert!(fa.imports.contains(&String::from("elex:vector/kernels@0.1.0")));
    }

    #[test]
    fn wasi_0_2_imports_are_recognised_by_package_and_version() {
        for yes in ["wasi:cli/stdout@0.2.0", "wasi:io/poll@0.2.6", "wasi:sockets/tcp@0.2.3"] {
            assert!(is_wasi_import(yes), "{yes}");
        }
        for no in ["wasi:http/types@0.2.0", "wasi:cli/stdout@0.3.0", "wasi:cli/stdout", "elex:host/log@0.1.0"]
        {
            assert!(!is_wasi_import(no), "{no}");
        }
    }

    #[test]
    fn world_names_round_trip() {
        for w in World::ALL {
            assert_eq!(World::from_name(w.qualified_name()), Some(w));
        }
        assert_eq!(World::from_name("elex:platform/plugin"), Some(World::Plugin));
        assert_eq!(World::from_name("nope:x/y"), None);
    }

    #[test]
    fn refuses_what_is_not_a_component() {
        assert!(matches!(inspect(b""), Err(FitError::NotWasm { .. })));
        assert!(matches!(inspect(b"hello world, not wasm"), Err(FitError::NotWasm { .. })));
        // The smallest core module: magic + version 1.
        assert!(matches!(inspect(b"\0asm\x01\0\0\0"), Err(FitError::CoreModule)));
        // A component header followed by garbage.
        assert!(matches!(inspect(b"\0asm\x0d\0\x01\0\xff\xff"), Err(FitError::Malformed(_))));
    }
}
