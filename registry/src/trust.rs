//! The trust policy: which keys may sign which component names, and which
//! keys are revoked.
//!
//! A policy folder holds `policy.json` and `keys/<id>.pub`:
//!
//! ```json
//! { "format": 1,
//!   "trusted": [ { "key": "3f2a…", "names": ["feature-agent", "elex-*"] } ],
//!   "revoked": [ "9c01…" ] }
//! ```
//!
//! Keys are named by [`KeyId::parse`]: a 16-hex-digit id or a 64-hex-digit
//! public key, in any case, white space around ignored. An entry that names
//! no key (empty, not hex, another length) or a malformed name pattern
//! refuses the whole file, with the file and entry named: a revocation is
//! never silently dropped. A trusted key's file is `keys/<id>.pub` with the
//! id in lower case.
//!
//! A name pattern is an exact name, `*` (any name) or a prefix ending in
//! `*`. Policies from several folders merge: trust adds up, revocation wins.
//!
//! `policy.json` is read as a regular file (a link to one is followed) of at
//! most [`MAX_POLICY_BYTES`]; key files as in [`crate::signing`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::files::{Links, read_regular_text};
use crate::signing::{KeyId, PublicKey, shown};
use crate::{Entry, Error, Result, io, write_atomic};

/// The policy file format this build reads and writes.
pub const FORMAT: u32 = 1;

/// The largest `policy.json` elex reads: 1 MiB.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// `policy.json` as written. Keys are text here; [`parse_policy`] reads
/// them with [`KeyId::parse`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub format: u32,
    #[serde(default)]
    pub trusted: Vec<Rule>,
    #[serde(default)]
    pub revoked: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub key: String,
    pub names: Vec<String>,
}

/// A checked `policy.json`: every key named, every pattern well formed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// Trusted keys with the name patterns each may sign, in file order.
    pub trusted: Vec<(KeyId, Vec<String>)>,
    pub revoked: Vec<KeyId>,
}

/// Parses and checks the text of a policy file; `file` names it in errors.
/// Refuses (with [`Error::Policy`] naming the entry) a key entry that names
/// no key and a name pattern that can match no component name.
pub fn parse_policy(file: &Path, text: &str) -> Result<PolicyRules> {
    let file_error =
        |detail: String| Error::Policy { file: file.to_path_buf(), entry: String::new(), detail };
    let raw: PolicyFile = serde_json::from_str(text).map_err(|e| file_error(e.to_string()))?;
    if raw.format != FORMAT {
        return Err(file_error(format!("format {} (this build reads {FORMAT})", raw.format)));
    }
    let entry_error =
        |entry: String, detail: String| Error::Policy { file: file.to_path_buf(), entry, detail };
    let mut rules = PolicyRules::default();
    for (i, rule) in raw.trusted.iter().enumerate() {
        let id = KeyId::parse_detail(&rule.key)
            .map_err(|d| entry_error(format!("trusted[{i}].key {}", shown(&rule.key)), d))?;
        for (j, pattern) in rule.names.iter().enumerate() {
            check_pattern(pattern)
                .map_err(|d| entry_error(format!("trusted[{i}].names[{j}] {}", shown(pattern)), d))?;
        }
        rules.trusted.push((id, rule.names.clone()));
    }
    for (i, key) in raw.revoked.iter().enumerate() {
        let id =
            KeyId::parse_detail(key).map_err(|d| entry_error(format!("revoked[{i}] {}", shown(key)), d))?;
        rules.revoked.push(id);
    }
    Ok(rules)
}

/// A name pattern: `*`, a component name, or the start of one followed by
/// `*`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let stem = pattern.strip_suffix('*').unwrap_or(pattern);
    let ok = pattern == "*"
        || (!stem.is_empty()
            && stem.len() <= 64
            && stem.starts_with(|c: char| c.is_ascii_lowercase())
            && stem.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    if ok {
        Ok(())
    } else {
        Err(String::from(
            "is not a name pattern: `*`, a component name (lower-case letters, digits, '-'), or its start followed by `*`",
        ))
    }
}

/// Trusted keys with the names each may sign, and revoked key ids.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: BTreeMap<KeyId, (PublicKey, Vec<String>)>,
    revoked: BTreeSet<KeyId>,
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Policy {
    /// Loads `dir/policy.json` and the public keys it trusts from
    /// `dir/keys/<id>.pub`; each key file must hold the key of its id.
    pub fn load(dir: &Path) -> Result<Policy> {
        let path = dir.join("policy.json");
        let text = read_regular_text(&path, MAX_POLICY_BYTES, Links::Follow).map_err(io(&path))?;
        let rules = parse_policy(&path, &text)?;
        let mut policy = Policy { revoked: rules.revoked.into_iter().collect(), ..Policy::default() };
        for (i, (id, names)) in rules.trusted.into_iter().enumerate() {
            let key_path = dir.join("keys").join(format!("{id}.pub"));
            let key = PublicKey::read(&key_path)?;
            if key.id() != id {
                return Err(Error::Policy {
                    file: path,
                    entry: format!("trusted[{i}].key"),
                    detail: format!("its key file {} holds key {}, not {id}", key_path.display(), key.id()),
                });
            }
            policy.keys.entry(id).or_insert((key, Vec::new())).1.extend(names);
        }
        Ok(policy)
    }

    /// Adds `other`'s trust and revocations to this policy.
    pub fn merge(mut self, other: Policy) -> Policy {
        for (id, (key, names)) in other.keys {
            self.keys.entry(id).or_insert((key, Vec::new())).1.extend(names);
        }
        self.revoked.extend(other.revoked);
        self
    }

    /// Trusts `key` for names matching `patterns`.
    pub fn trust(&mut self, key: PublicKey, patterns: Vec<String>) {
        self.keys.insert(key.id(), (key, patterns));
    }

    /// Revokes a key (see [`KeyId::parse`] for ids from text).
    pub fn revoke(&mut self, id: KeyId) {
        self.revoked.insert(id);
    }

    /// Whether `id` is revoked.
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }

    /// Writes this policy as a folder `load` reads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut file = PolicyFile {
            format: FORMAT,
            trusted: Vec::new(),
            revoked: self.revoked.iter().map(KeyId::to_string).collect(),
        };
        for (id, (key, names)) in &self.keys {
            write_atomic(&dir.join("keys").join(format!("{id}.pub")), key.to_file_text().as_bytes())?;
            file.trusted.push(Rule { key: id.to_string(), names: names.clone() });
        }
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::Invalid { what: String::from("trust policy"), detail: e.to_string() })?;
        write_atomic(&dir.join("policy.json"), format!("{text}\n").as_bytes())
    }

    /// Whether this policy lets key `signer` sign `name`: not revoked, known,
    /// and allowed for the name ([`Error::RevokedKey`], [`Error::UnknownKey`],
    /// [`Error::KeyNotAllowed`]; `version` is for the message). No signature
    /// is checked: this is what publishing asks before it signs.
    pub fn check_signer(&self, signer: &KeyId, name: &str, version: &semver::Version) -> Result<()> {
        let (_, patterns) = self.known(signer, name, version)?;
        self.allowed(patterns, signer, name, version)
    }

    fn known(
        &self,
        signer: &KeyId,
        name: &str,
        version: &semver::Version,
    ) -> Result<&(PublicKey, Vec<String>)> {
        let (n, v, key) = (name.to_string(), version.to_string(), signer.to_string());
        if self.revoked.contains(signer) {
            return Err(Error::RevokedKey { name: n, version: v, key });
        }
        self.keys.get(signer).ok_or(Error::UnknownKey { name: n, version: v, key })
    }

    fn allowed(
        &self,
        patterns: &[String],
        signer: &KeyId,
        name: &str,
        version: &semver::Version,
    ) -> Result<()> {
        if patterns.iter().any(|p| matches(p, name)) {
            return Ok(());
        }
        Err(Error::KeyNotAllowed {
            name: name.to_string(),
            version: version.to_string(),
            key: signer.to_string(),
            allowed: if patterns.is_empty() { String::from("no name") } else { patterns.join(", ") },
        })
    }

    /// Checks an entry: its signer is not revoked, is known, the signature
    /// covers this name, version, world, digest, size and budgets, and the
    /// key may sign the name.
    pub fn verify(&self, entry: &Entry) -> Result<()> {
        let (public, patterns) = self.known(&entry.signer, &entry.name, &entry.version)?;
        if !public.verifies(&entry.signed_message(), &entry.signature) {
            return Err(Error::BadSignature {
                name: entry.name.clone(),
                version: entry.version.to_string(),
                key: entry.signer.to_string(),
            });
        }
        self.allowed(patterns, &entry.signer, &entry.name, &entry.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyPair;

    #[test]
    fn patterns() {
        assert!(matches("*", "anything"));
        assert!(matches("elex-*", "elex-agent"));
        assert!(!matches("elex-*", "other"));
        assert!(matches("agent", "agent"));
        assert!(!matches("agent", "agents"));
        for ok in ["*", "agent", "elex-*", "a*", "feature-agent"] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["", "**", "Agent", "elex *", "*-agent", "-x", "a*b"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    /// A policy folder trusting `key` for every name, with `revoked` (raw
    /// JSON strings) revoked.
    fn folder(key: &PublicKey, revoked: &[String]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Policy::default();
        p.trust(key.clone(), vec![String::from("*")]);
        p.save(dir.path()).unwrap();
        let file = PolicyFile {
            format: FORMAT,
            trusted: vec![Rule { key: key.id().to_string(), names: vec![String::from("*")] }],
            revoked: revoked.to_vec(),
        };
        std::fs::write(dir.path().join("policy.json"), serde_json::to_string(&file).unwrap()).unwrap();
        dir
    }

    fn signed(key: &KeyPair) -> Entry {
        let mut e = Entry {
            format: crate::index::FORMAT,
            name: String::from("agent"),
            version: semver::Version::new(1, 0, 0),
            world: String::from("elex:platform/plugin@0.1.0"),
            digest: format!("blake3:{}", "a".repeat(64)),
            size: 10,
            signer: key.public().id(),
            signature: String::new(),
            budgets: crate::Budgets::default(),
        };
        e.signature = crate::hex(&key.sign(&e.signed_message()));
        e
    }

    #[test]
    fn a_revocation_wins_in_every_spelling() {
        let key = KeyPair::generate().unwrap();
        let entry = signed(&key);
        let id = key.public().id().to_string();
        let full = key.public().to_hex();
        Policy::load(folder(&key.public(), &[]).path()).unwrap().verify(&entry).unwrap();
        for spelling in [
            id.clone(),
            id.to_uppercase(),
            format!("  {id} "),
            format!("\t{}\n", id.to_uppercase()),
            full.clone(),
            full.to_uppercase(),
            format!(" {full}  "),
        ] {
            let dir = folder(&key.public(), std::slice::from_ref(&spelling));
            let policy = Policy::load(dir.path()).unwrap();
            let e = policy.verify(&entry).unwrap_err();
            assert!(matches!(e, Error::RevokedKey { .. }), "{spelling:?}: {e}");
            assert!(policy.is_revoked(&key.public().id()));
            // Merged with a policy that trusts the key, still revoked.
            let mut trusting = Policy::default();
            trusting.trust(key.public(), vec![String::from("*")]);
            let merged = trusting.merge(Policy::load(dir.path()).unwrap());
            assert!(matches!(merged.verify(&entry), Err(Error::RevokedKey { .. })), "{spelling:?}");
            assert!(matches!(
                merged.check_signer(&entry.signer, "agent", &entry.version),
                Err(Error::RevokedKey { .. })
            ));
        }
    }

    #[test]
    fn trusted_keys_are_read_in_every_spelling_from_the_file_named_by_id() {
        let key = KeyPair::generate().unwrap();
        let entry = signed(&key);
        for spelling in [key.public().id().to_string().to_uppercase(), format!(" {} ", key.public().to_hex())]
        {
            let dir = folder(&key.public(), &[]);
            let text = format!(r#"{{"format":1,"trusted":[{{"key":"{spelling}","names":["agent"]}}]}}"#);
            std::fs::write(dir.path().join("policy.json"), text).unwrap();
            Policy::load(dir.path()).unwrap().verify(&entry).unwrap();
        }
    }

    #[test]
    fn a_policy_entry_that_names_no_key_refuses_the_file() {
        let key = KeyPair::generate().unwrap();
        let id = key.public().id().to_string();
        for (bad, entry) in [
            (String::from(r#""revoked":[""]"#), "revoked[0]"),
            (format!(r#""revoked":["{id}","   "]"#), "revoked[1]"),
            (String::from(r#""revoked":["not a key"]"#), "revoked[0]"),
            (format!(r#""revoked":["{}"]"#, &id[..12]), "revoked[0]"),
            (format!(r#""revoked":["0x{id}"]"#), "revoked[0]"),
            (
                format!(r#""trusted":[{{"key":"{id}","names":["*"]}},{{"key":"","names":["*"]}}]"#),
                "trusted[1].key",
            ),
            (format!(r#""trusted":[{{"key":"{id}","names":["Agent"]}}]"#), "trusted[0].names[0]"),
        ] {
            let dir = folder(&key.public(), &[]);
            std::fs::write(dir.path().join("policy.json"), format!(r#"{{"format":1,{bad}}}"#)).unwrap();
            let e = Policy::load(dir.path()).unwrap_err();
            assert!(matches!(e, Error::Policy { .. }), "{bad}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("policy.json") && msg.contains(entry), "{bad}: {msg}");
        }
        // Not JSON, another format, unknown fields: refused, naming the file.
        for bad in
            ["", "{", r#"{"format":2}"#, r#"{"format":1,"revoke":[]}"#, r#"{"format":1,"revoked":[1]}"#]
        {
            let dir = folder(&key.public(), &[]);
            std::fs::write(dir.path().join("policy.json"), bad).unwrap();
            let msg = Policy::load(dir.path()).unwrap_err().to_string();
            assert!(msg.starts_with("trust policy ") && msg.contains("policy.json"), "{bad}: {msg}");
        }
    }

    #[test]
    fn a_key_file_must_hold_the_key_of_its_id() {
        let key = KeyPair::generate().unwrap();
        let dir = folder(&key.public(), &[]);
        let other = KeyPair::generate().unwrap();
        let file = dir.path().join("keys").join(format!("{}.pub", key.public().id()));
        std::fs::write(&file, other.public().to_file_text()).unwrap();
        let e = Policy::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("trusted[0].key") && e.contains(&other.public().id().to_string()), "{e}");
        std::fs::remove_file(&file).unwrap();
        assert!(Policy::load(dir.path()).is_err(), "a trusted key without its file");
    }

    #[cfg(unix)]
    #[test]
    fn policy_files_are_bounded_regular_files() {
        let key = KeyPair::generate().unwrap();
        let dir = folder(&key.public(), &[]);
        let path = dir.path().join("policy.json");
        std::fs::remove_file(&path).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        assert!(Policy::load(dir.path()).unwrap_err().to_string().contains("FIFO"));
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(Policy::load(dir.path()).unwrap_err().to_string().contains("device"));
        std::fs::remove_file(&path).unwrap();
        std::fs::File::create(&path).unwrap().set_len(MAX_POLICY_BYTES + 1).unwrap();
        assert!(Policy::load(dir.path()).unwrap_err().to_string().contains("limit of"));
    }

    #[test]
    fn check_signer_says_what_publishing_would_meet() {
        let key = KeyPair::generate().unwrap();
        let v = semver::Version::new(1, 0, 0);
        let id = key.public().id();
        let mut p = Policy::default();
        assert!(matches!(p.check_signer(&id, "agent", &v), Err(Error::UnknownKey { .. })));
        p.trust(key.public(), vec![String::from("agent*")]);
        p.check_signer(&id, "agent-x", &v).unwrap();
        assert!(matches!(p.check_signer(&id, "other", &v), Err(Error::KeyNotAllowed { .. })));
        p.revoke(id);
        assert!(matches!(p.check_signer(&id, "agent", &v), Err(Error::RevokedKey { .. })));
    }

    proptest::proptest! {
        #[test]
        fn no_policy_text_panics_the_parser(s in "\\PC*") {
            let _ = parse_policy(Path::new("policy.json"), &s);
        }

        #[test]
        fn no_bytes_panic_the_parser(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_policy(Path::new("policy.json"), &String::from_utf8_lossy(&b));
        }

        #[test]
        fn policies_with_any_keys_and_names_parse_or_err(
            keys in proptest::collection::vec("\\PC{0,70}", 0..4),
            names in proptest::collection::vec("\\PC{0,12}", 0..4),
            revoked in proptest::collection::vec("[0-9a-fA-F \\t]{0,70}", 0..4),
        ) {
            let file = serde_json::json!({
                "format": 1,
                "trusted": keys.iter().map(|k| serde_json::json!({ "key": k, "names": names })).collect::<Vec<_>>(),
                "revoked": revoked,
            });
            match parse_policy(Path::new("policy.json"), &file.to_string()) {
                // Every entry named a key: none was dropped.
                Ok(rules) => {
                    proptest::prop_assert_eq!(rules.trusted.len(), keys.len());
                    proptest::prop_assert_eq!(rules.revoked.len(), revoked.len());
                }
                Err(e) => {
                    let refused = matches!(e, Error::Policy { .. });
                    proptest::prop_assert!(refused, "{}", e);
                }
            }
        }
    }
}
