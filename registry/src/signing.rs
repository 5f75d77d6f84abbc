//! ed25519 keys and the canonical signed message.
//!
//! The signature covers [`message`]: a domain separator and the
//! length-prefixed name, version, world and digest — never the bare digest —
//! so a signature for `a@1.0.0` cannot be replayed onto `b@1.0.0`,
//! `a@1.0.1`, another world or other bytes.
//!
//! Key files:
//! - private: `elex-ed25519-private-key v1` then the 32-byte seed in hex,
//!   written with permissions 0600; never commit one (`*.key` is ignored);
//! - public: `elex-ed25519-public-key v1` then the 32-byte key in hex, in a
//!   file named `<id>.pub`, where the id is the first 16 hex digits of the
//!   key's blake3 hash.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{Error, Result, hex, io, unhex};

/// Domain separator of elex component signatures.
pub const DOMAIN: &[u8] = b"elex component signature v1\0";

const PRIVATE_HEADER: &str = "elex-ed25519-private-key v1";
const PUBLIC_HEADER: &str = "elex-ed25519-public-key v1";

/// The bytes a signature covers.
pub fn message(name: &str, version: &semver::Version, world: &str, digest: &str) -> Vec<u8> {
    let mut m = Vec::from(DOMAIN);
    for part in [name, &version.to_string(), world, digest] {
        m.extend_from_slice(&(part.len() as u32).to_le_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    m
}

/// A public key that verifies signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key id: first 16 hex digits of blake3(key bytes).
    pub fn id(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex()[..16].to_string()
    }

    /// Whether `signature` (hex) is a valid signature of `message`.
    pub fn verifies(&self, message: &[u8], signature_hex: &str) -> bool {
        let Some(bytes) = unhex(signature_hex) else { return false };
        let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else { return false };
        self.0.verify_strict(message, &Signature::from_bytes(&arr)).is_ok()
    }

    /// The public key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_HEADER}\n{}\n", hex(self.0.as_bytes()))
    }

    /// Parses a public key file's text; `what` names it in errors.
    pub fn from_file_text(what: &str, text: &str) -> Result<PublicKey> {
        let invalid =
            |detail: &str| Error::Invalid { what: format!("public key {what}"), detail: detail.to_string() };
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(PUBLIC_HEADER) {
            return Err(invalid("missing the `elex-ed25519-public-key v1` header"));
        }
        let bytes = lines.next().and_then(|l| unhex(l.trim())).ok_or_else(|| invalid("key is not hex"))?;
        let arr = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| invalid("key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&arr).map(PublicKey).map_err(|_| invalid("not a valid ed25519 point"))
    }

    pub fn read(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        PublicKey::from_file_text(&path.display().to_string(), &text)
    }
}

/// A signing key.
pub struct KeyPair(SigningKey);

impl std::fmt::Debug for KeyPair {
    /// Shows the public half only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public().id())
    }
}

impl KeyPair {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<KeyPair> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Invalid { what: String::from("random source"), detail: e.to_string() })?;
        Ok(KeyPair(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Writes the private key to `path` with permissions 0600 (the file must
    /// not exist: keys are never overwritten).
    pub fn write_private(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(path).map_err(io(path))?;
        f.write_all(format!("{PRIVATE_HEADER}\n{}\n", hex(self.0.as_bytes())).as_bytes())
            .map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }

    /// Reads a private key file; refuses one readable by others.
    pub fn read_private(path: &Path) -> Result<KeyPair> {
        let invalid =
            |detail: String| Error::Invalid { what: format!("private key {}", path.display()), detail };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(invalid(format!(
                    "permissions {:o} let others read it; run chmod 600",
                    mode & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(PRIVATE_HEADER) {
            return Err(invalid(String::from("missing the `elex-ed25519-private-key v1` header")));
        }
        let bytes = lines
            .next()
            .and_then(|l| unhex(l.trim()))
            .ok_or_else(|| invalid(String::from("seed is not hex")))?;
        let seed = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| invalid(String::from("seed is not 32 bytes")))?;
        Ok(KeyPair(SigningKey::from_bytes(&seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_differ_for_every_field() {
        let v = semver::Version::new(1, 0, 0);
        let base = message("a", &v, "w", "blake3:00");
        assert_ne!(base, message("b", &v, "w", "blake3:00"));
        assert_ne!(base, message("a", &semver::Version::new(1, 0, 1), "w", "blake3:00"));
        assert_ne!(base, message("a", &v, "x", "blake3:00"));
        assert_ne!(base, message("a", &v, "w", "blake3:01"));
        // Length prefixes: moving a character between fields changes the message.
        assert_ne!(message("ab", &v, "c", "d"), message("a", &v, "bc", "d"));
    }

    #[test]
    fn sign_verify_and_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let k = KeyPair::generate().unwrap();
        let sig = hex(&k.sign(b"hello"));
        assert!(k.public().verifies(b"hello", &sig));
        assert!(!k.public().verifies(b"hellO", &sig));
        assert!(!k.public().verifies(b"hello", "zz"));
        assert!(!KeyPair::generate().unwrap().public().verifies(b"hello", &sig));

        let path = dir.path().join("k.key");
        k.write_private(&path).unwrap();
        assert!(k.write_private(&path).is_err(), "never overwritten");
        let back = KeyPair::read_private(&path).unwrap();
        assert_eq!(back.public(), k.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(KeyPair::read_private(&path).unwrap_err().to_string().contains("chmod 600"));
        }
        let text = k.public().to_file_text();
        assert_eq!(PublicKey::from_file_text("t", &text).unwrap(), k.public());
        assert!(PublicKey::from_file_text("t", "garbage").is_err());
        assert_eq!(k.public().id().len(), 16);
    }

    proptest::proptest! {
        #[test]
        fn signature_decoding_never_panics(s in "\\PC{0,200}") {
            let k = KeyPair(SigningKey::from_bytes(&[7; 32]));
            let _ = k.public().verifies(b"m", &s);
            let _ = PublicKey::from_file_text("p", &s);
            let _ = PublicKey::from_file_text("p", &format!("{PUBLIC_HEADER}\n{s}"));
        }
    }
}
