//! The content-addressed component store: `<store>/<blake3 hex>.wasm`.
//! Bytes are checked against the entry's size and digest on every read,
//! before anything else sees them; a blob is read as a regular file (never a
//! link, FIFO or device) and never past the size the entry states.

use std::path::PathBuf;

use crate::files::{Links, read_regular};
use crate::{Entry, Error, Result, write_atomic};

/// The largest component the registry stores or reads: 256 MiB.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// `blake3:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> BlobStore {
        BlobStore { dir }
    }

    /// The file of `digest`, which must be `blake3:` and 64 lower-case hex
    /// digits (never a path of its own).
    fn path(&self, digest: &str) -> Result<PathBuf> {
        if !crate::index::is_digest(digest) {
            return Err(Error::Invalid {
                what: format!("digest {}", crate::signing::shown(digest)),
                detail: String::from("not blake3:<64 lower-case hex digits>"),
            });
        }
        Ok(self.dir.join(format!("{}.wasm", &digest["blake3:".len()..])))
    }

    /// Stores `bytes` (idempotent) and returns their digest. A file already
    /// at the digest's path is kept only when it is a regular file holding
    /// exactly these bytes; anything else there is replaced.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        if bytes.len() as u64 > MAX_COMPONENT_BYTES {
            return Err(Error::Invalid {
                what: String::from("component"),
                detail: format!("{} bytes is above the limit of {MAX_COMPONENT_BYTES} bytes", bytes.len()),
            });
        }
        let d = digest(bytes);
        let path = self.path(&d)?;
        let present = read_regular(&path, bytes.len() as u64, Links::Refuse).is_ok_and(|b| b == bytes);
        if !present {
            write_atomic(&path, bytes)?;
        }
        Ok(d)
    }

    /// The bytes of `entry`: a regular file of exactly `entry.size` bytes
    /// (never read further) whose digest is the entry's.
    pub fn get(&self, entry: &Entry) -> Result<Vec<u8>> {
        let path = self.path(&entry.digest)?;
        let blob = |source: std::io::Error| Error::Blob {
            name: entry.name.clone(),
            version: entry.version.to_string(),
            path: path.clone(),
            source,
        };
        if entry.size > MAX_COMPONENT_BYTES {
            return Err(blob(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the index says {} bytes, above the limit of {MAX_COMPONENT_BYTES}", entry.size),
            )));
        }
        let size_mismatch = |found: u64| Error::SizeMismatch {
            name: entry.name.clone(),
            version: entry.version.to_string(),
            expected: entry.size,
            found,
        };
        let bytes = match read_regular(&path, entry.size, Links::Refuse) {
            Ok(b) => b,
            // Only the size bound gives InvalidData: the file is larger.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let found = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(entry.size + 1);
                return Err(size_mismatch(found.max(entry.size + 1)));
            }
            Err(e) => return Err(blob(e)),
        };
        if bytes.len() as u64 != entry.size {
            return Err(size_mismatch(bytes.len() as u64));
        }
        let found = digest(&bytes);
        if found != entry.digest {
            return Err(Error::DigestMismatch {
                name: entry.name.clone(),
                version: entry.version.to_string(),
                expected: entry.digest.clone(),
                found,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(bytes: &[u8]) -> (tempfile::TempDir, BlobStore, Entry, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs"));
        let d = store.put(bytes).unwrap();
        let entry = Entry {
            format: crate::index::FORMAT,
            name: String::from("agent"),
            version: semver::Version::new(1, 0, 0),
            world: String::from("w"),
            digest: d.clone(),
            size: bytes.len() as u64,
            signer: crate::KeyId::parse("3f2a9c01d4e5b6a7").unwrap(),
            signature: "0".repeat(128),
            budgets: crate::Budgets::default(),
        };
        let path = store.path(&d).unwrap();
        (dir, store, entry, path)
    }

    #[test]
    fn the_stored_size_must_be_the_entry_size() {
        let (_dir, store, entry, path) = stored(b"component bytes");
        assert_eq!(store.get(&entry).unwrap(), b"component bytes");
        let mut longer = entry.clone();
        longer.size += 1;
        let e = store.get(&longer).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { expected: 16, found: 15, .. }), "{e}");
        let mut shorter = entry.clone();
        shorter.size -= 1;
        let e = store.get(&shorter).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { expected: 14, found: 15, .. }), "{e}");
        // A blob grown on disk is never read past the entry's size.
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let e = store.get(&entry).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { found: 1048576, .. }), "{e}");
        let mut huge = entry.clone();
        huge.size = MAX_COMPONENT_BYTES + 1;
        assert!(store.get(&huge).unwrap_err().to_string().contains("above the limit"));
    }

    #[test]
    fn digests_are_never_paths() {
        let (_dir, store, mut entry, _) = stored(b"x");
        for bad in ["blake3:../../etc/passwd", "blake3:", &format!("blake3:{}", "A".repeat(64)), "x"] {
            entry.digest = bad.to_string();
            assert!(matches!(store.get(&entry), Err(Error::Invalid { .. })), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn fifo_and_device_links_are_refused_without_blocking() {
        let (_dir, store, entry, path) = stored(b"component bytes");
        std::fs::remove_file(&path).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        let e = store.get(&entry).unwrap_err();
        assert!(matches!(e, Error::Blob { .. }), "{e}");
        assert!(e.to_string().starts_with("agent@1.0.0: the stored component"), "{e}");
        assert!(e.to_string().contains("FIFO"), "{e}");
        // Publishing the bytes again replaces what is not a regular file.
        store.put(b"component bytes").unwrap();
        assert_eq!(store.get(&entry).unwrap(), b"component bytes");

        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = store.get(&entry).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        store.put(b"component bytes").unwrap();
        assert_eq!(store.get(&entry).unwrap(), b"component bytes");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    }
}
