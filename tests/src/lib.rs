//! Shared helpers for the end-to-end tests: where the built components are.

use std::path::PathBuf;

/// `target/components/`, where `cargo xtask build` writes the components.
pub fn components_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/components")
}

/// The bytes of a built component (`vector`, `feature-agent.composed`, …).
///
/// Panics with instructions when the components have not been built: these
/// tests run after `cargo xtask build` (which `cargo xtask test` does first).
pub fn component(name: &str) -> Vec<u8> {
    let path = components_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; build the components with `cargo xtask build` (or run `cargo xtask test`)",
            path.display()
        )
    })
}

/// Path of a built component.
pub fn component_path(name: &str) -> PathBuf {
    components_dir().join(format!("{name}.wasm"))
}
