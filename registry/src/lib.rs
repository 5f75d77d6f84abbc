//! The elex component registry.
//!
//! - [`files`]: bounded reads of regular files from folders others may write;
//! - [`index`]: the text index, one file per component name and one JSON line
//!   per version (format in `registry-index/README.md`);
//! - [`store`]: component bytes in a content-addressed store
//!   (`<store>/blobs/<blake3>.wasm`), checked on every read;
//! - [`signing`]: ed25519 keys, key ids ([`KeyId::parse`], the one parser of
//!   key references from outside) and the canonical signed message (domain
//!   separator, name, version, world, digest, size, budgets);
//! - [`trust`]: which keys may sign which names, and revoked keys;
//! - [`manifest`]: a plugin's manifest (`plugin.toml`), carried in the
//!   component as a custom section that the signed digest covers.
//!
//! [`Registry`] ties them together: `publish` signs and stores a component
//! (with a key the registry's policy trusts for the name), `fetch` resolves
//! `name@req`, verifies the entry's signature and trust, and reads the bytes
//! (bounded by the signed size, digest checked) before returning anything.
//!
//! Everything read from a registry or trust folder goes through
//! [`files::read_regular`] with a bound: blobs by their entry's size (at most
//! [`store::MAX_COMPONENT_BYTES`]), index files by
//! [`index::MAX_INDEX_FILE_BYTES`], `policy.json` by
//! [`trust::MAX_POLICY_BYTES`], key files by [`signing::MAX_KEY_FILE_BYTES`].

pub mod files;
pub mod index;
pub mod manifest;
pub mod signing;
pub mod store;
pub mod trust;

use std::path::{Path, PathBuf};

pub use index::{Budgets, Entry, Index, Scan};
pub use manifest::{Manifest, ManifestError};
pub use signing::{KeyId, KeyPair, PublicKey};
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
    /// An index file that cannot be read (not a regular file, a link, too
    /// large, not UTF-8, …); the other index files are not affected.
    #[error("index file {file}: {source}")]
    IndexFile { file: PathBuf, source: std::io::Error },
    /// A trust policy file, or one of its entries (`trusted[2].key`,
    /// `revoked[0]`, …), that is refused.
    #[error("trust policy {file}{}: {detail}", entry_part(.entry))]
    Policy { file: PathBuf, entry: String, detail: String },
    /// The stored component cannot be read (not a regular file, a link, …).
    #[error("{name}@{version}: the stored component {path}: {source}")]
    Blob { name: String, version: String, path: PathBuf, source: std::io::Error },
    #[error("{name}@{version}: the stored component is {found} bytes, the index says {expected}")]
    SizeMismatch { name: String, version: String, expected: u64, found: u64 },
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
        "{name}@{version}: the signature by key {key} is not valid for this name, version, world, digest, size and budgets"
    )]
    BadSignature { name: String, version: String, key: String },
    #[error("{name}@{version}: key {key} may not sign `{name}` (it may sign: {allowed})")]
    KeyNotAllowed { name: String, version: String, key: String, allowed: String },
    #[error("{name}@{version} is already in the index (digest {digest}); publish a new version")]
    Exists { name: String, version: String, digest: String },
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error(
        "the registry {path} {}: `cargo xtask build` publishes the components there; or pass \
         --registry DIR (or set ELEX_REGISTRY)",
        if *exists { "is not a folder" } else { "does not exist" }
    )]
    NoRegistry { path: PathBuf, exists: bool },
}

fn entry_part(entry: &str) -> String {
    if entry.is_empty() { String::new() } else { format!(", {entry}") }
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

    /// The registry folder `root`, trusting its own policy (`root/trust`,
    /// when it has one) merged with the policy folders `extra_trust`. A
    /// policy file that is there but cannot be read is an error, never
    /// skipped with its revocations; a missing `root` is
    /// [`Error::NoRegistry`].
    pub fn open_trusting(root: &Path, extra_trust: &[PathBuf]) -> Result<Registry> {
        if !root.is_dir() {
            return Err(Error::NoRegistry { path: root.to_path_buf(), exists: root.exists() });
        }
        let mut policy = Policy::default();
        let own = root.join("trust");
        if own.join("policy.json").symlink_metadata().is_ok() {
            policy = policy.merge(Policy::load(&own)?);
        }
        for dir in extra_trust {
            policy = policy.merge(Policy::load(dir)?);
        }
        Ok(Registry::open(root, policy))
    }

    /// Signs `bytes` as `name@version` of `world` with `key`, stores them and
    /// adds the index entry. Publishing the same bytes again is a no-op;
    /// other bytes under an existing version are refused. A key this
    /// registry's policy would refuse for `name` (revoked, unknown, not
    /// allowed for the name) is refused before anything is written: see
    /// [`Registry::publish_untrusted`].
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
        self.policy.check_signer(&key.public().id(), name, version)?;
        self.publish_untrusted(name, version, world, bytes, key, budgets)
    }

    /// [`Registry::publish`] without asking the trust policy: for publishing
    /// with a key that a policy elsewhere trusts. Nothing loads the entry
    /// until a policy trusts the key for the name.
    pub fn publish_untrusted(
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
        let mut entry = Entry {
            format: index::FORMAT,
            name: name.to_string(),
            version: version.clone(),
            world: world.to_string(),
            digest,
            size: bytes.len() as u64,
            signer: key.public().id(),
            signature: String::new(),
            budgets,
        };
        entry.signature = hex(&key.sign(&entry.signed_message()));
        self.index.add(&entry)?;
        Ok(entry)
    }

    /// Verifies one entry's signature and the trust policy (not the bytes).
    pub fn verify_entry(&self, entry: &Entry) -> Result<()> {
        self.policy.verify(entry)
    }

    /// Resolves `name` at the highest version matching `req`, verifies the
    /// entry's signature and trust (so the size that bounds the read is one
    /// the signer stated), then reads its bytes: exactly `size` of them from
    /// a regular file, digest checked before anything else reads them.
    pub fn fetch(&self, name: &str, req: &semver::VersionReq) -> Result<Fetched> {
        let entry = self.index.resolve(name, req)?;
        self.policy.verify(&entry)?;
        let bytes = self.store.get(&entry)?;
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

    fn trusting(key: &KeyPair) -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let mut policy = Policy::default();
        policy.trust(key.public(), vec![String::from("agent")]);
        let r = Registry::open(dir.path(), policy);
        (dir, r)
    }

    /// Rewrites the one line of `index/agent` with `f`.
    fn tamper(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join("index/agent");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, format!("{v}\n")).unwrap();
    }

    #[test]
    fn size_and_budgets_are_signed() {
        let key = KeyPair::generate().unwrap();
        let v = semver::Version::new(1, 0, 0);
        let budgets =
            Budgets { memory_bytes: Some(1 << 20), call_deadline_ms: Some(50), fuel_per_call: None };
        type Tamper = fn(&mut serde_json::Value);
        let tampers: [(&str, Tamper); 6] = [
            ("size", |v| v["size"] = (v["size"].as_u64().unwrap() + 1).into()),
            ("size", |v| v["size"] = 0.into()),
            ("memory", |v| v["budgets"]["memory_bytes"] = (1u64 << 30).into()),
            ("deadline", |v| v["budgets"]["call_deadline_ms"] = serde_json::Value::Null),
            ("fuel", |v| v["budgets"]["fuel_per_call"] = 1_000_000_000u64.into()),
            ("all", |v| v["budgets"] = serde_json::json!({})),
        ];
        for (what, f) in tampers {
            let (dir, r) = trusting(&key);
            let e = r.publish("agent", &v, "w:x/y@1.0.0", b"bytes", &key, budgets.clone()).unwrap();
            assert_eq!(r.fetch("agent", &semver::VersionReq::STAR).unwrap().entry, e);
            tamper(dir.path(), f);
            let entry = r.index.resolve("agent", &semver::VersionReq::STAR).unwrap();
            let err = r.verify_entry(&entry).unwrap_err();
            assert!(matches!(err, Error::BadSignature { .. }), "{what}: {err}");
            assert!(err.to_string().contains("size and budgets"), "{err}");
            let err = r.fetch("agent", &semver::VersionReq::STAR).err().unwrap();
            assert!(matches!(err, Error::BadSignature { .. }), "{what}: {err}");
        }
    }

    #[test]
    fn publishing_asks_the_policy_first() {
        let key = KeyPair::generate().unwrap();
        let v = semver::Version::new(1, 0, 0);
        let (dir, mut r) = trusting(&key);
        let stranger = KeyPair::generate().unwrap();
        let e = r.publish("agent", &v, "w", b"x", &stranger, Budgets::default()).unwrap_err();
        assert!(matches!(e, Error::UnknownKey { .. }), "{e}");
        let e = r.publish("other", &v, "w", b"x", &key, Budgets::default()).unwrap_err();
        assert!(matches!(e, Error::KeyNotAllowed { .. }), "{e}");
        r.policy.revoke(key.public().id());
        let e = r.publish("agent", &v, "w", b"x", &key, Budgets::default()).unwrap_err();
        assert!(matches!(e, Error::RevokedKey { .. }), "{e}");
        // Nothing was written.
        assert!(!dir.path().join("index").exists() && !dir.path().join("blobs").exists());
        // Untrusted publishing writes the entry; fetching refuses it.
        r.publish_untrusted("agent", &v, "w", b"x", &stranger, Budgets::default()).unwrap();
        let e = r.fetch("agent", &semver::VersionReq::STAR).err().unwrap();
        assert!(matches!(e, Error::UnknownKey { .. }), "{e}");
    }

    #[test]
    fn policy_errors_name_file_and_entry() {
        let e = Error::Policy {
            file: PathBuf::from("t/policy.json"),
            entry: String::from("revoked[1]"),
            detail: String::from("x"),
        };
        assert_eq!(e.to_string(), "trust policy t/policy.json, revoked[1]: x");
        let e = Error::Policy {
            file: PathBuf::from("t/policy.json"),
            entry: String::new(),
            detail: String::from("x"),
        };
        assert_eq!(e.to_string(), "trust policy t/policy.json: x");
    }
}
