//! The elex component registry.
//!
//! - [`index`]: the text index, one file per component name and one JSON line
//!   per version (format in `registry-index/README.md`);
//! - [`store`]: component bytes in a content-addressed store
//!   (`<store>/blobs/<blake3>.wasm`), checked on every read;
//! - [`signing`]: ed25519 keys and the canonical signed message (domain
//!   separator, name, version, world, digest);
//! - [`trust`]: which keys may sign which names, and revoked keys.
//!
//! [`Registry`] ties them together: `publish` signs and stores a component,
//! `fetch` resolves `name@req`, reads the bytes and verifies digest and
//! signature before returning anything.

pub mod index;
pub mod signing;
pub mod store;
pub mod trust;

use std::path::{Path, PathBuf};

pub use index::{Budgets, Entry, Index};
pub use signing::{KeyPair, PublicKey};
pub use store::BlobStore;
pub use trust::Policy;

/// The one error type of the registry. Every variant names the component or
/// file it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}, line {line}: {detail}")]
    IndexLine { file: PathBuf, line: usize, detail: String },
    #[error("no component {name} matches version {req} in the index{available}")]
    NotFound { name: String, req: String, available: String },
    #[error("{name}@{version}: the stored bytes have digest {found}, the index says {expected}")]
    DigestMismatch { name: String, version: String, expected: String, found: String },
    #[error(
        "{name}@{version}: signed by unknown key {key}; trust it with a key file in the policy's keys folder"
    )]
    UnknownKey { name: String, version: String, key: String },
    #[error("{name}@{version}: signed by revoked key {key}")]
    RevokedKey { name: String, version: String, key: String },
    #[error(
        "{name}@{version}: the signature by key {key} is not valid for this name, version, world and digest"
    )]
    BadSignature { name: String, version: String, key: String },
    #[error("{name}@{version}: key {key} may not sign `{name}` (it may sign: {allowed})")]
    KeyNotAllowed { name: String, version: String, key: String, allowed: String },
    #[error("{name}@{version} is already in the index (digest {digest}); publish a new version")]
    Exists { name: String, version: String, digest: String },
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from lower- or upper-case hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.error })?;
    Ok(())
}

/// A registry folder: `index/`, `blobs/`, and a trust policy.
pub struct Registry {
    pub index: Index,
    pub store: BlobStore,
    pub policy: Policy,
}

/// A component fetched and verified.
pub struct Fetched {
    pub entry: Entry,
    pub bytes: Vec<u8>,
}

impl Registry {
    /// The registry in `root` (`root/index`, `root/blobs`), trusting `policy`.
    pub fn open(root: &Path, policy: Policy) -> Registry {
        Registry { index: Index::new(root.join("index")), store: BlobStore::new(root.join("blobs")), policy }
    }

    /// Signs `bytes` as `name@version` of `world` with `key`, stores them and
    /// adds the index entry. Publishing the same bytes again is a no-op;
    /// other bytes under an existing version are refused.
    pub fn publish(
        &self,
        name: &str,
        version: &semver::Version,
        world: &str,
        bytes: &[u8],
        key: &KeyPair,
        budgets: Budgets,
    ) -> Result<Entry> {
        index::check_name(name)?;
        let digest = store::digest(bytes);
        if let Some(existing) = self.index.entries(name)?.into_iter().find(|e| &e.version == version) {
            if existing.digest == digest {
                return Ok(existing);
            }
            return Err(Error::Exists {
                name: name.into(),
                version: version.to_string(),
                digest: existing.digest,
            });
        }
        self.store.put(bytes)?;
        let message = signing::message(name, version, world, &digest);
        let entry = Entry {
            format: index::FORMAT,
            name: name.to_string(),
            version: version.clone(),
            world: world.to_string(),
            digest,
            size: bytes.len() as u64,
            signer: key.public().id(),
            signature: hex(&key.sign(&message)),
            budgets,
        };
        self.index.add(&entry)?;
        Ok(entry)
    }

    /// Verifies one entry's signature and the trust policy (not the bytes).
    pub fn verify_entry(&self, entry: &Entry) -> Result<()> {
        self.policy.verify(entry)
    }

    /// Resolves `name` at the highest version matching `req`, reads its bytes
    /// (digest checked before anything else reads them) and verifies the
    /// signature against the trust policy.
    pub fn fetch(&self, name: &str, req: &semver::VersionReq) -> Result<Fetched> {
        let entry = self.index.resolve(name, req)?;
        let bytes = self.store.get(&entry)?;
        self.policy.verify(&entry)?;
        Ok(Fetched { entry, bytes })
    }
}

/// Splits `name@req` (the requirement defaults to `*`).
pub fn parse_spec(spec: &str) -> Result<(String, semver::VersionReq)> {
    let (name, req) = match spec.split_once('@') {
        Some((n, r)) => (n, r),
        None => (spec, "*"),
    };
    index::check_name(name)?;
    let req = semver::VersionReq::parse(req).map_err(|e| Error::Invalid {
        what: format!("version requirement {req:?}"),
        detail: e.to_string(),
    })?;
    Ok((name.to_string(), req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("é1"), None);
    }

    #[test]
    fn specs_parse() {
        let (n, r) = parse_spec("feature-agent@^0.1").unwrap();
        assert_eq!(n, "feature-agent");
        assert!(r.matches(&semver::Version::new(0, 1, 7)));
        assert!(parse_spec("feature-agent").unwrap().1.matches(&semver::Version::new(9, 0, 0)));
        assert!(parse_spec("Bad Name@1").is_err());
        assert!(parse_spec("ok@not-a-version").is_err());
    }
}
