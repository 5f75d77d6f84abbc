//! Runs the `.wac` compositions in `composer/` with the wac crates
//! (parser → resolver → graph → encoder), the same pipeline as
//! `wac compose`, and checks the result against the world it must fit.
//!
//! The `.wac` files name packages (`elex:vector`, `elex:feature-agent`, …);
//! [`Composition::dep`] says which built component file each one is, like
//! `wac compose --dep elex:vector=path/to/vector.wasm`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use elex_wit::{FitError, Interfaces, World};
use wac_graph::EncodeOptions;
use wac_parser::Document;
use wac_resolver::FileSystemPackageResolver;

/// Why a composition failed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Wac { path: PathBuf, message: String },
    #[error("{path}: the composed component is wrong: {source}")]
    Fit { path: PathBuf, source: FitError },
}

/// One `.wac` document and the component files its packages resolve to.
pub struct Composition {
    wac: PathBuf,
    deps: HashMap<String, PathBuf>,
}

impl Composition {
    /// A composition read from `wac` (a `.wac` file).
    pub fn new(wac: impl Into<PathBuf>) -> Self {
        Composition { wac: wac.into(), deps: HashMap::new() }
    }

    /// Resolves package `name` (as written in the `.wac`, without version) to
    /// the component file at `path`.
    pub fn dep(mut self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.deps.insert(name.to_string(), path.into());
        self
    }

    /// Composes and encodes the component (validating it), then checks it
    /// fits `world`. Returns the bytes and the interfaces found.
    pub fn run(&self, world: World) -> Result<(Vec<u8>, Interfaces), ComposeError> {
        let bytes = self.encode()?;
        let found = elex_wit::check_fit(&bytes, world)
            .map_err(|source| ComposeError::Fit { path: self.wac.clone(), source })?;
        Ok((bytes, found))
    }

    fn wac_error(&self, e: impl std::fmt::Display) -> ComposeError {
        ComposeError::Wac { path: self.wac.clone(), message: e.to_string() }
    }

    fn encode(&self) -> Result<Vec<u8>, ComposeError> {
        let source = std::fs::read_to_string(&self.wac)
            .map_err(|source| ComposeError::Read { path: self.wac.clone(), source })?;
        let document = Document::parse(&source).map_err(|e| self.wac_error(e))?;
        let keys = wac_resolver::packages(&document).map_err(|e| self.wac_error(e))?;
        // Unknown packages are errors: every package must be given with `dep`.
        let root = self.wac.parent().unwrap_or(Path::new(".")).join("deps");
        let resolver = FileSystemPackageResolver::new(root, self.deps.clone(), true);
        let packages = resolver.resolve(&keys).map_err(|e| {
            // The resolver's own message names the package; its source says
            // what went wrong with the file.
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            self.wac_error(format!("{e}{cause}"))
        })?;
        let resolution = document.resolve(packages).map_err(|e| self.wac_error(e))?;
        resolution
            .encode(EncodeOptions { define_components: true, validate: true, ..Default::default() })
            .map_err(|e| self.wac_error(e))
    }
}
