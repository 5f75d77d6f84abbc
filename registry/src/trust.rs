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
//! A name pattern is an exact name, `*` (any name) or a prefix ending in
//! `*`. Policies from several folders merge: trust adds up, revocation wins.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::signing::{PublicKey, message};
use crate::{Entry, Error, Result, io, write_atomic};

/// The policy file format this build reads and writes.
pub const FORMAT: u32 = 1;

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

/// Trusted keys with the names each may sign, and revoked key ids.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: BTreeMap<String, (PublicKey, Vec<String>)>,
    revoked: Vec<String>,
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Policy {
    /// Loads `dir/policy.json` and the public keys it names from `dir/keys/`.
    pub fn load(dir: &Path) -> Result<Policy> {
        let path = dir.join("policy.json");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let file: PolicyFile = serde_json::from_str(&text).map_err(|e| Error::Invalid {
            what: format!("trust policy {}", path.display()),
            detail: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(Error::Invalid {
                what: format!("trust policy {}", path.display()),
                detail: format!("format {} (this build reads {FORMAT})", file.format),
            });
        }
        let mut policy = Policy { revoked: file.revoked, ..Policy::default() };
        for rule in file.trusted {
            let key_path = dir.join("keys").join(format!("{}.pub", rule.key));
            let key = PublicKey::read(&key_path)?;
            if key.id() != rule.key {
                return Err(Error::Invalid {
                    what: format!("public key {}", key_path.display()),
                    detail: format!("its id is {}, not {}", key.id(), rule.key),
                });
            }
            policy.keys.insert(rule.key, (key, rule.names));
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

    /// Revokes a key id.
    pub fn revoke(&mut self, id: &str) {
        self.revoked.push(id.to_string());
    }

    /// Writes this policy as a folder `load` reads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut file = PolicyFile { format: FORMAT, trusted: Vec::new(), revoked: self.revoked.clone() };
        for (id, (key, names)) in &self.keys {
            write_atomic(&dir.join("keys").join(format!("{id}.pub")), key.to_file_text().as_bytes())?;
            file.trusted.push(Rule { key: id.clone(), names: names.clone() });
        }
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::Invalid { what: String::from("trust policy"), detail: e.to_string() })?;
        write_atomic(&dir.join("policy.json"), format!("{text}\n").as_bytes())
    }

    /// Checks an entry: its signer is known, not revoked, allowed to sign the
    /// name, and the signature covers this name, version, world and digest.
    pub fn verify(&self, entry: &Entry) -> Result<()> {
        let (name, version, key) = (entry.name.clone(), entry.version.to_string(), entry.signer.clone());
        if self.revoked.contains(&entry.signer) {
            return Err(Error::RevokedKey { name, version, key });
        }
        let Some((public, patterns)) = self.keys.get(&entry.signer) else {
            return Err(Error::UnknownKey { name, version, key });
        };
        let m = message(&entry.name, &entry.version, &entry.world, &entry.digest);
        if !public.verifies(&m, &entry.signature) {
            return Err(Error::BadSignature { name, version, key });
        }
        if !patterns.iter().any(|p| matches(p, &entry.name)) {
            return Err(Error::KeyNotAllowed { name, version, key, allowed: patterns.join(", ") });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(matches("*", "anything"));
        assert!(matches("elex-*", "elex-agent"));
        assert!(!matches("elex-*", "other"));
        assert!(matches("agent", "agent"));
        assert!(!matches("agent", "agents"));
    }
}
