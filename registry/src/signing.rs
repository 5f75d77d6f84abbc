//! ed25519 keys, key ids and the canonical signed message.
//!
//! The signature covers [`message`]: a domain separator and the
//! length-prefixed name, version, world, digest, size and budgets of an
//! index entry — every field the host acts on, never the bare digest — so a
//! signature for `a@1.0.0` cannot be replayed onto `b@1.0.0`, `a@1.0.1`,
//! another world, other bytes, another size or other budgets.
//!
//! Key files:
//! - private: `elex-ed25519-private-key v1` then the 32-byte seed in hex,
//!   written with permissions 0600; never commit one (`*.key` is ignored);
//! - public: `elex-ed25519-public-key v1` then the 32-byte key in hex, in a
//!   file named `<id>.pub`, where the id is the first 16 hex digits (lower
//!   case) of the key's blake3 hash.
//!
//! Both are at most [`MAX_KEY_FILE_BYTES`] and read as regular files
//! ([`crate::files`]). Key ids from outside (policy files, index entries,
//! the command line) are read by the one parser [`KeyId::parse`].

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::files::{Links, read_regular_text};
use crate::{Budgets, Error, Result, hex, io, unhex};

/// Domain separator of elex component signatures (index format 2).
pub const DOMAIN: &[u8] = b"elex component signature v2\0";

/// The largest key file (public or private) elex reads.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

const PRIVATE_HEADER: &str = "elex-ed25519-private-key v1";
const PUBLIC_HEADER: &str = "elex-ed25519-public-key v1";

/// The bytes a signature covers: [`DOMAIN`], then name, version, world,
/// digest, size and the three budgets, each as a little-endian u32 length
/// followed by its bytes. Strings are UTF-8; the size is 8 bytes
/// little-endian; a budget is empty when absent, else 8 bytes little-endian.
pub fn message(
    name: &str,
    version: &semver::Version,
    world: &str,
    digest: &str,
    size: u64,
    budgets: &Budgets,
) -> Vec<u8> {
    fn field(m: &mut Vec<u8>, bytes: &[u8]) {
        m.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        m.extend_from_slice(bytes);
    }
    let mut m = Vec::from(DOMAIN);
    for part in [name, &version.to_string(), world, digest] {
        field(&mut m, part.as_bytes());
    }
    field(&mut m, &size.to_le_bytes());
    for budget in [budgets.memory_bytes, budgets.call_deadline_ms, budgets.fuel_per_call] {
        match budget {
            Some(v) => field(&mut m, &v.to_le_bytes()),
            None => field(&mut m, &[]),
        }
    }
    m
}

/// A key id: the first 8 bytes of blake3(public key), written as 16
/// lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &PublicKey) -> KeyId {
        KeyId::of_key_bytes(key.0.as_bytes())
    }

    fn of_key_bytes(bytes: &[u8; 32]) -> KeyId {
        let mut id = [0u8; 8];
        id.copy_from_slice(&blake3::hash(bytes).as_bytes()[..8]);
        KeyId(id)
    }

    /// The one parser of key references from outside (policy `trusted[].key`
    /// and `revoked[]`, index `signer`, the command line): surrounding white
    /// space is ignored; either 16 hex digits (a key id, any case) or 64 hex
    /// digits (a full ed25519 public key, any case), which stands for its id.
    /// Anything else names no key and is an error.
    pub fn parse(text: &str) -> Result<KeyId> {
        KeyId::parse_detail(text)
            .map_err(|detail| Error::Invalid { what: format!("key id {}", shown(text)), detail })
    }

    /// [`KeyId::parse`] with the reason as bare text, for callers that name
    /// the file and entry themselves.
    pub(crate) fn parse_detail(text: &str) -> Result<KeyId, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err(String::from("names no key (it is empty)"));
        }
        if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(String::from(
                "is not hex: a key is named by its 16-hex-digit id or its 64-hex-digit public key",
            ));
        }
        let bytes = unhex(t).unwrap_or_default();
        match t.len() {
            16 => Ok(KeyId(<[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| String::from("is not hex"))?)),
            64 => {
                let arr = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| String::from("is not hex"))?;
                VerifyingKey::from_bytes(&arr)
                    .map_err(|_| String::from("is 64 hex digits but not an ed25519 public key"))?;
                Ok(KeyId::of_key_bytes(&arr))
            }
            n => Err(format!("is {n} hex digits: a key id has 16 (e.g. 3f2a9c01d4e5b6a7), a public key 64")),
        }
    }
}

/// Text from outside as shown in an error: quoted, at most 80 characters.
pub(crate) fn shown(text: &str) -> String {
    if text.chars().count() <= 80 {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(80).collect();
        format!("{head:?}…")
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&hex(&self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", hex(&self.0))
    }
}

impl std::str::FromStr for KeyId {
    type Err = Error;
    fn from_str(s: &str) -> Result<KeyId> {
        KeyId::parse(s)
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<KeyId, D::Error> {
        let text = String::deserialize(d)?;
        KeyId::parse_detail(&text)
            .map_err(|detail| serde::de::Error::custom(format!("key id {}: {detail}", shown(&text))))
    }
}

/// A public key that verifies signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key id: first 16 hex digits of blake3(key bytes).
    pub fn id(&self) -> KeyId {
        KeyId::of(self)
    }

    /// The 32-byte key in lower-case hex (64 digits).
    pub fn to_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// Whether `signature` (hex) is a valid signature of `message`.
    pub fn verifies(&self, message: &[u8], signature_hex: &str) -> bool {
        let Some(bytes) = unhex(signature_hex) else { return false };
        let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else { return false };
        self.0.verify_strict(message, &Signature::from_bytes(&arr)).is_ok()
    }

    /// The public key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_HEADER}\n{}\n", self.to_hex())
    }

    /// Parses a public key file's text; `what` names it in errors. The file
    /// is the header line, the key in hex, and nothing else but blank lines.
    pub fn from_file_text(what: &str, text: &str) -> Result<PublicKey> {
        let invalid =
            |detail: &str| Error::Invalid { what: format!("public key {what}"), detail: detail.to_string() };
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(PUBLIC_HEADER) {
            return Err(invalid("missing the `elex-ed25519-public-key v1` header"));
        }
        let bytes = lines.next().and_then(|l| unhex(l.trim())).ok_or_else(|| invalid("key is not hex"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(invalid("text after the key"));
        }
        let arr = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| invalid("key is not 32 bytes"))?;
        VerifyingKey::from_bytes(&arr).map(PublicKey).map_err(|_| invalid("not a valid ed25519 point"))
    }

    /// Reads a public key file: a regular file (a link to one is followed)
    /// of at most [`MAX_KEY_FILE_BYTES`].
    pub fn read(path: &Path) -> Result<PublicKey> {
        let text = read_regular_text(path, MAX_KEY_FILE_BYTES, Links::Follow).map_err(io(path))?;
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

    /// Reads a private key file (a regular file of at most
    /// [`MAX_KEY_FILE_BYTES`]; a link to one is followed); refuses one
    /// readable by others.
    pub fn read_private(path: &Path) -> Result<KeyPair> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::Invalid {
                    what: format!("private key {}", path.display()),
                    detail: format!("permissions {:o} let others read it; run chmod 600", mode & 0o777),
                });
            }
        }
        let text = read_regular_text(path, MAX_KEY_FILE_BYTES, Links::Follow).map_err(io(path))?;
        KeyPair::from_file_text(&path.display().to_string(), &text)
    }

    /// Parses a private key file's text; `what` names it in errors.
    pub fn from_file_text(what: &str, text: &str) -> Result<KeyPair> {
        let invalid =
            |detail: &str| Error::Invalid { what: format!("private key {what}"), detail: detail.to_string() };
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(PRIVATE_HEADER) {
            return Err(invalid("missing the `elex-ed25519-private-key v1` header"));
        }
        let bytes = lines.next().and_then(|l| unhex(l.trim())).ok_or_else(|| invalid("seed is not hex"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(invalid("text after the seed"));
        }
        let seed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| invalid("seed is not 32 bytes"))?;
        Ok(KeyPair(SigningKey::from_bytes(&seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(name: &str, version: (u64, u64, u64), world: &str, digest: &str) -> Vec<u8> {
        let v = semver::Version::new(version.0, version.1, version.2);
        message(name, &v, world, digest, 10, &Budgets::default())
    }

    #[test]
    fn messages_differ_for_every_field() {
        let v = semver::Version::new(1, 0, 0);
        let base = msg("a", (1, 0, 0), "w", "blake3:00");
        assert!(base.starts_with(b"elex component signature v2\0"));
        assert_ne!(base, msg("b", (1, 0, 0), "w", "blake3:00"));
        assert_ne!(base, msg("a", (1, 0, 1), "w", "blake3:00"));
        assert_ne!(base, msg("a", (1, 0, 0), "x", "blake3:00"));
        assert_ne!(base, msg("a", (1, 0, 0), "w", "blake3:01"));
        assert_ne!(base, message("a", &v, "w", "blake3:00", 11, &Budgets::default()));
        // Length prefixes: moving a character between fields changes the message.
        assert_ne!(msg("ab", (1, 0, 0), "c", "d"), msg("a", (1, 0, 0), "bc", "d"));
        // Every budget counts, and an absent budget differs from any value.
        let with = |b: Budgets| message("a", &v, "w", "blake3:00", 10, &b);
        let all = [
            with(Budgets::default()),
            with(Budgets { memory_bytes: Some(0), ..Budgets::default() }),
            with(Budgets { memory_bytes: Some(1), ..Budgets::default() }),
            with(Budgets { call_deadline_ms: Some(1), ..Budgets::default() }),
            with(Budgets { fuel_per_call: Some(1), ..Budgets::default() }),
            with(Budgets { memory_bytes: Some(1), call_deadline_ms: Some(1), fuel_per_call: Some(1) }),
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "budgets {i} and {j}");
            }
        }
    }

    #[test]
    fn key_ids_parse_in_every_spelling_and_nothing_else() {
        let k = KeyPair(SigningKey::from_bytes(&[7; 32])).public();
        let id = k.id();
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text, text.to_lowercase());
        for spelling in [
            text.clone(),
            text.to_uppercase(),
            format!("  {text}\n"),
            format!("\t{}  ", text.to_uppercase()),
            k.to_hex(),
            k.to_hex().to_uppercase(),
            format!(" {} ", k.to_hex()),
        ] {
            assert_eq!(KeyId::parse(&spelling).unwrap(), id, "{spelling:?}");
        }
        for bad in
            ["", "   ", "xyz", &text[..15], &format!("{text}0"), &format!("0x{text}"), "é", "3f2a 9c01"]
        {
            let e = KeyId::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid key id"), "{bad:?}: {e}");
        }
        // 64 hex digits that are not a key (not a curve point) name no key.
        let not_a_point = (0..=255u8)
            .map(|b| hex(&[b; 32]))
            .find(|h| VerifyingKey::from_bytes(&<[u8; 32]>::try_from(unhex(h).unwrap()).unwrap()).is_err())
            .unwrap();
        assert!(KeyId::parse(&not_a_point).unwrap_err().to_string().contains("not an ed25519 public key"));
        assert_eq!(format!("[{id:<20}]"), format!("[{text}    ]"));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        let back: KeyId = serde_json::from_str(&format!("\" {} \"", text.to_uppercase())).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<KeyId>("\"nope\"").is_err());
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
        assert_eq!(PublicKey::from_file_text("t", &format!("{text}\n\n")).unwrap(), k.public());
        assert!(PublicKey::from_file_text("t", &format!("{text}more")).is_err());
        assert!(PublicKey::from_file_text("t", "garbage").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_bounded_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let k = KeyPair::generate().unwrap();
        let big = dir.path().join("big.pub");
        std::fs::write(&big, format!("{}{}", k.public().to_file_text(), "\n".repeat(5000))).unwrap();
        assert!(PublicKey::read(&big).unwrap_err().to_string().contains("limit of 4096 bytes"));
        let fifo = dir.path().join("fifo.pub");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(PublicKey::read(&fifo).unwrap_err().to_string().contains("FIFO"));
        let zero = dir.path().join("zero.pub");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(PublicKey::read(&zero).unwrap_err().to_string().contains("device"));
    }

    proptest::proptest! {
        #[test]
        fn key_text_parsers_never_panic(s in "\\PC{0,200}") {
            let k = KeyPair(SigningKey::from_bytes(&[7; 32]));
            let _ = k.public().verifies(b"m", &s);
            let _ = PublicKey::from_file_text("p", &s);
            let _ = PublicKey::from_file_text("p", &format!("{PUBLIC_HEADER}\n{s}"));
            let _ = KeyPair::from_file_text("p", &s);
            let _ = KeyPair::from_file_text("p", &format!("{PRIVATE_HEADER}\n{s}"));
            let _ = KeyId::parse(&s);
        }

        #[test]
        fn key_id_parser_never_panics_on_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let s = String::from_utf8_lossy(&b);
            let _ = KeyId::parse(&s);
            let _ = PublicKey::from_file_text("p", &s);
        }

        #[test]
        fn hex_strings_of_key_lengths_parse_or_err(s in "[0-9a-fA-F ]{0,70}") {
            match KeyId::parse(&s) {
                Ok(id) => {
                    let n = s.trim().len();
                    proptest::prop_assert!(n == 16 || n == 64);
                    if n == 16 {
                        proptest::prop_assert_eq!(id.to_string(), s.trim().to_lowercase());
                    }
                }
                Err(e) => proptest::prop_assert!(e.to_string().starts_with("invalid key id")),
            }
        }
    }
}
