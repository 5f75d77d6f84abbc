//! Compiled components, cached in memory (moka, keyed by the blake3 digest
//! of the component bytes) and on disk as precompiled artifacts.
//!
//! `Component::deserialize` runs native code from the artifact and is
//! memory-unsafe on bytes the host did not write. So the host deserialises
//! only artifacts it can prove it wrote, for exactly this component and this
//! engine: each artifact starts with a header binding the component digest,
//! the engine fingerprint and the body length, and ends the header with a
//! MAC over all of it and the body — keyed blake3 under a secret key of this
//! cache (`<cache dir>.key`, 32 random bytes, created 0600, outside the
//! cache folder). The MAC is checked before anything else reads the body.
//! Someone who can write the cache folder but cannot read the key can
//! neither forge an artifact nor move one to another component's name: any
//! artifact that fails the check is deleted and the component recompiled
//! from its verified bytes, with a warning.
//!
//! The key file is used only when it is a regular file owned by this user
//! and readable by nobody else; otherwise the disk cache is off (with a
//! warning) and components are compiled every time. Files are read with a
//! size bound and without following links or blocking on FIFOs, and written
//! to a temporary name and renamed, so a crash never leaves half an artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use elex_registry::files::{Links, read_regular};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Largest artifact the cache reads (a composed agent's is a few MiB).
pub const MAX_ARTIFACT_BYTES: u64 = 256 << 20;

/// Artifact header: magic, component digest, engine fingerprint, body
/// length, MAC.
const MAGIC: &[u8; 16] = b"elex-artifact-2\0";
const HEADER_LEN: usize = 16 + 32 + 32 + 8 + 32;
const KEY_HEADER: &str = "elex-cache-key v1";

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Compiled from the wasm bytes now.
    Compiled,
    /// Deserialised from the disk cache.
    Disk,
    /// Already in this host's memory.
    Memory,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Compiled => "compiled",
            Origin::Disk => "disk cache",
            Origin::Memory => "memory cache",
        })
    }
}

/// Feeds `Hash` output into blake3, to fingerprint the engine.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let out = self.0.finalize();
        u64::from_le_bytes(out.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A fingerprint of everything that makes a precompiled artifact valid for
/// this engine: the host's version and the engine's compilation settings.
fn engine_fingerprint(engine: &Engine) -> [u8; 32] {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    // elex-host's version: a new release may check components differently.
    env!("CARGO_PKG_VERSION").hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    *h.0.finalize().as_bytes()
}

/// The disk half of the cache: a folder and the key that authenticates it.
struct Disk {
    dir: PathBuf,
    key: [u8; 32],
}

/// Compiled components in memory and (optionally) on disk.
pub struct ComponentCache {
    memory: moka::sync::Cache<String, Component>,
    disk: Option<Disk>,
    fingerprint: [u8; 32],
}

impl ComponentCache {
    /// A cache holding `capacity` components in memory and, when `dir` is
    /// given and its key (`<dir>.key`) can be used, artifacts in `dir`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>, capacity: u64) -> ComponentCache {
        let disk = dir.and_then(|dir| {
            let key_path = key_path(&dir);
            match load_or_create_key(&key_path) {
                Ok(key) => Some(Disk { dir, key }),
                Err(why) => {
                    tracing::warn!(
                        key = %key_path.display(),
                        why,
                        "the precompiled-component cache is off: components are compiled on every run"
                    );
                    None
                }
            }
        });
        ComponentCache {
            memory: moka::sync::Cache::new(capacity),
            disk,
            fingerprint: engine_fingerprint(engine),
        }
    }

    /// Whether compiled artifacts are kept on disk.
    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }

    fn artifact_path(&self, disk: &Disk, digest: &str) -> PathBuf {
        let engine = blake3::Hash::from(self.fingerprint).to_hex();
        disk.dir.join(format!("{digest}-{}.cwasm", &engine[..16]))
    }

    /// A compiled component for `digest` (blake3 hex of the component
    /// bytes) from memory or disk, if cached.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<(Component, Origin)> {
        if let Some(c) = self.memory.get(digest) {
            return Some((c, Origin::Memory));
        }
        let disk = self.disk.as_ref()?;
        let c = self.read_artifact(engine, disk, digest)?;
        self.memory.insert(digest.to_string(), c.clone());
        Some((c, Origin::Disk))
    }

    /// Remembers a freshly compiled component in memory and on disk.
    pub fn insert(&self, digest: &str, component: &Component) {
        if let Some(disk) = &self.disk {
            let path = self.artifact_path(disk, digest);
            if let Err(e) = self.write_artifact(disk, digest, component, &path) {
                // The cache is an optimisation: a read-only or full disk
                // costs speed, not correctness.
                tracing::warn!(path = %path.display(), error = %e, "cannot write precompiled artifact");
            }
        }
        self.memory.insert(digest.to_string(), component.clone());
    }

    /// The MAC of an artifact: keyed blake3 over its header fields and body.
    fn mac(&self, disk: &Disk, digest: &[u8; 32], body: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&disk.key);
        h.update(MAGIC);
        h.update(digest);
        h.update(&self.fingerprint);
        h.update(&(body.len() as u64).to_le_bytes());
        h.update(body);
        h.finalize()
    }

    /// Reads and authenticates an artifact; `None` (after removing a bad
    /// file) when it is missing, forged, of another component or engine, or
    /// refused by wasmtime.
    fn read_artifact(&self, engine: &Engine, disk: &Disk, digest: &str) -> Option<Component> {
        let path = self.artifact_path(disk, digest);
        let data = match read_regular(&path, MAX_ARTIFACT_BYTES, Links::Refuse) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return discard(&path, &e.to_string()),
        };
        let want = blake3::Hash::from_hex(digest).ok()?;
        match self.check(disk, want.as_bytes(), &data) {
            // SAFETY: the body is exactly what `Component::serialize` wrote
            // in this host for this component digest and this engine: its
            // MAC under this cache's secret key checked out, and it binds
            // digest, engine fingerprint and length. wasmtime checks the
            // engine compatibility of the header again.
            Ok(body) => match unsafe { Component::deserialize(engine, body) } {
                Ok(c) => Some(c),
                Err(_) => discard(&path, "refused by this engine"),
            },
            Err(why) => discard(&path, why),
        }
    }

    /// The body of `data` if its header is for `digest` and this engine and
    /// its MAC is right.
    fn check<'a>(&self, disk: &Disk, digest: &[u8; 32], data: &'a [u8]) -> Result<&'a [u8], &'static str> {
        if data.len() < HEADER_LEN {
            return Err("truncated");
        }
        let (header, body) = data.split_at(HEADER_LEN);
        if &header[..16] != MAGIC {
            return Err("not an elex artifact of this format");
        }
        if &header[16..48] != digest {
            return Err("made for another component");
        }
        if header[48..80] != self.fingerprint {
            return Err("made by another engine or host version");
        }
        if header[80..88] != (body.len() as u64).to_le_bytes() {
            return Err("truncated or extended");
        }
        let mac = <[u8; 32]>::try_from(&header[88..120]).map_err(|_| "truncated")?;
        // `blake3::Hash` compares in constant time.
        if self.mac(disk, digest, body) != blake3::Hash::from(mac) {
            return Err("its MAC does not match: not written by this host, or altered");
        }
        Ok(body)
    }

    fn write_artifact(
        &self,
        disk: &Disk,
        digest: &str,
        component: &Component,
        path: &Path,
    ) -> std::io::Result<()> {
        let digest = blake3::Hash::from_hex(digest).map_err(std::io::Error::other)?;
        let body = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(digest.as_bytes());
        header.extend_from_slice(&self.fingerprint);
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(self.mac(disk, digest.as_bytes(), &body).as_bytes());
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, &header)?;
        std::io::Write::write_all(&mut tmp, &body)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn discard<T>(path: &Path, why: &str) -> Option<T> {
    tracing::warn!(path = %path.display(), why, "discarding precompiled artifact; recompiling");
    let _ = std::fs::remove_file(path);
    None
}

/// `<dir>.key`: beside the cache folder, not in it.
fn key_path(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

enum KeyProblem {
    Missing,
    /// Not ours to use or to replace: the disk cache stays off.
    Refused(String),
    /// Ours, but unreadable as a key: replaced with a new one.
    Malformed,
}

/// This cache's secret key, created on first use.
fn load_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    for _ in 0..2 {
        match read_key(path) {
            Ok(key) => return Ok(key),
            Err(KeyProblem::Refused(why)) => return Err(why),
            Err(KeyProblem::Malformed) => {
                tracing::warn!(key = %path.display(), "the cache key is malformed; making a new one");
                std::fs::remove_file(path).map_err(|e| format!("cannot replace it: {e}"))?;
            }
            Err(KeyProblem::Missing) => {}
        }
        match create_key(path) {
            Ok(key) => return Ok(key),
            // Another process made it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create it: {e}")),
        }
    }
    read_key(path).map_err(|_| String::from("it keeps changing under this process"))
}

fn read_key(path: &Path) -> Result<[u8; 32], KeyProblem> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyProblem::Missing),
        Err(e) => return Err(KeyProblem::Refused(e.to_string())),
    };
    if !meta.file_type().is_file() {
        return Err(KeyProblem::Refused(String::from("it is not a regular file")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(KeyProblem::Refused(format!(
                "it is owned by uid {}, not this user ({me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(KeyProblem::Refused(format!(
                "its permissions {:o} let others read or write it (chmod 600)",
                meta.mode() & 0o777
            )));
        }
    }
    let bytes = read_regular(path, 256, Links::Refuse).map_err(|e| KeyProblem::Refused(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyProblem::Malformed)?;
    let mut lines = text.lines();
    if lines.next() != Some(KEY_HEADER) {
        return Err(KeyProblem::Malformed);
    }
    let hex = lines.next().ok_or(KeyProblem::Malformed)?;
    blake3::Hash::from_hex(hex.trim()).map(|h| *h.as_bytes()).map_err(|_| KeyProblem::Malformed)
}

/// Writes a new random key to `path` (0600), never over an existing file.
fn create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // NamedTempFile is created 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let text = format!("{KEY_HEADER}\n{}\n", blake3::Hash::from(key).to_hex());
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.key");
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load_or_create_key(&path).unwrap_err().contains("chmod 600"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A garbled key of ours is replaced, not trusted.
        std::fs::write(&path, "elex-cache-key v1\nnot hex\n").unwrap();
        let c = load_or_create_key(&path).unwrap();
        assert_ne!(c, a);
        assert_eq!(key_path(Path::new("/d/cache")), Path::new("/d/cache.key"));
    }

    /// A cache with a disk half, shared by the property tests.
    fn fixture() -> &'static ComponentCache {
        static CACHE: std::sync::OnceLock<(tempfile::TempDir, ComponentCache)> = std::sync::OnceLock::new();
        let (_, cache) = CACHE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let cache = ComponentCache::new(&Engine::default(), Some(dir.path().join("cache")), 1);
            assert!(cache.on_disk());
            (dir, cache)
        });
        cache
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_pass_as_an_artifact(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let cache = fixture();
            let disk = cache.disk.as_ref().unwrap();
            proptest::prop_assert!(cache.check(disk, &[7; 32], &data).is_err());
        }

        #[test]
        fn a_right_header_with_a_guessed_mac_never_passes(mac in proptest::array::uniform32(proptest::num::u8::ANY), body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let cache = fixture();
            let disk = cache.disk.as_ref().unwrap();
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&[7; 32]);
            data.extend_from_slice(&cache.fingerprint);
            data.extend_from_slice(&(body.len() as u64).to_le_bytes());
            data.extend_from_slice(&mac);
            data.extend_from_slice(&body);
            let err = cache.check(disk, &[7; 32], &data).unwrap_err();
            proptest::prop_assert!(err.contains("MAC"));
            // The host's own MAC over the same bytes passes.
            let right = cache.mac(disk, &[7; 32], &body);
            data[88..120].copy_from_slice(right.as_bytes());
            proptest::prop_assert_eq!(cache.check(disk, &[7; 32], &data).unwrap(), &body[..]);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_key_that_is_a_link_or_fifo_turns_the_disk_cache_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.key");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(load_or_create_key(&path).unwrap_err().contains("not a regular file"));
        std::fs::remove_file(&path).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        assert!(load_or_create_key(&path).unwrap_err().contains("not a regular file"));
    }
}
