//! The host loads only what the registry verifies: digest, signature, trust
//! and world, each refused with its own error.

use elex_host::{Error, FitError, Host, HostConfig};
use elex_ran::Catalog;
use elex_registry::{Budgets, KeyPair, Policy, Registry};
use semver::Version;

const PLUGIN: &str = "elex:platform/plugin@0.1.0";

fn registry(dir: &std::path::Path, key: &KeyPair) -> Registry {
    let mut policy = Policy::default();
    policy.trust(key.public(), vec![String::from("*")]);
    Registry::open(dir, policy)
}

fn publish(r: &Registry, key: &KeyPair, name: &str, world: &str, component: &str) {
    let bytes = elex_tests::component(component);
    r.publish(name, &Version::new(0, 1, 0), world, &bytes, key, Budgets::default()).unwrap();
}

#[test]
fn a_signed_agent_loads_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let r = registry(dir.path(), &key);
    publish(&r, &key, "feature-agent", PLUGIN, "feature-agent.composed");
    let host = Host::new(HostConfig::default()).unwrap();
    let loaded = host.load_from_registry(&r, "feature-agent@^0.1").unwrap();
    assert_eq!(loaded.what, "feature-agent@0.1.0");
    let again = host.load_from_registry(&r, "feature-agent").unwrap();
    assert_eq!(again.digest, loaded.digest);
    let feature = Catalog::embedded().unwrap().by_faj("FAJ 121 3094").unwrap().agent_config();
    let mut agent = host.instantiate(&loaded, feature).unwrap();
    assert!(agent.handle(&host.query("What is FAJ 121 3094?")).unwrap().content.contains("MIMO Sleep Mode"));
}

#[test]
fn a_flipped_byte_in_the_stored_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let r = registry(dir.path(), &key);
    publish(&r, &key, "feature-agent", PLUGIN, "feature-agent.composed");
    let blob = std::fs::read_dir(dir.path().join("blobs")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&blob).unwrap();
    let i = bytes.len() / 3;
    bytes[i] ^= 0x80;
    std::fs::write(&blob, bytes).unwrap();
    let e = Host::new(HostConfig::default()).unwrap().load_from_registry(&r, "feature-agent").unwrap_err();
    assert!(matches!(e, Error::Registry(elex_registry::Error::DigestMismatch { .. })), "{e}");
}

#[test]
fn an_untrusted_signer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let r = registry(dir.path(), &key);
    publish(&r, &key, "feature-agent", PLUGIN, "feature-agent.composed");
    // The same registry folder read with a policy that does not trust the key.
    let stranger = Registry::open(dir.path(), Policy::default());
    let e =
        Host::new(HostConfig::default()).unwrap().load_from_registry(&stranger, "feature-agent").unwrap_err();
    assert!(matches!(e, Error::Registry(elex_registry::Error::UnknownKey { .. })), "{e}");
    assert!(e.to_string().contains("feature-agent@0.1.0"), "{e}");
}

#[test]
fn world_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let r = registry(dir.path(), &key);
    // Honestly published as a library: not a world the host loads.
    publish(&r, &key, "vector", "elex:vector/library@0.1.0", "vector");
    let host = Host::new(HostConfig::default()).unwrap();
    let e = host.load_from_registry(&r, "vector").unwrap_err();
    assert!(matches!(e, Error::WrongWorld { .. }), "{e}");
    // Signed as a plugin, but the bytes are not one.
    publish(&r, &key, "fake-agent", PLUGIN, "vector");
    let e = host.load_from_registry(&r, "fake-agent").unwrap_err();
    assert!(matches!(e, Error::Unfit { source: FitError::MissingExports { .. }, .. }), "{e}");
}

/// A trust folder trusting `key` for every name and revoking `revoked`
/// (written as given).
fn trust_folder(root: &std::path::Path, key: &KeyPair, revoked: &str) -> std::path::PathBuf {
    let dir = root.join("trust");
    let _ = std::fs::remove_dir_all(&dir);
    let mut p = Policy::default();
    p.trust(key.public(), vec![String::from("*")]);
    p.save(&dir).unwrap();
    let text = serde_json::json!({
        "format": 1,
        "trusted": [{ "key": key.public().id().to_string(), "names": ["*"] }],
        "revoked": if revoked.is_empty() { vec![] } else { vec![revoked] },
    });
    std::fs::write(dir.join("policy.json"), text.to_string()).unwrap();
    dir
}

#[test]
fn a_revocation_revokes_in_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    publish(&registry(dir.path(), &key), &key, "feature-agent", PLUGIN, "feature-agent.composed");
    let host = Host::new(HostConfig::default()).unwrap();
    let trust = trust_folder(dir.path(), &key, "");
    let r = Registry::open(dir.path(), Policy::load(&trust).unwrap());
    host.load_from_registry(&r, "feature-agent").unwrap();
    let id = key.public().id().to_string();
    let full = key.public().to_hex();
    for spelling in [
        id.to_uppercase(),
        format!("  {id}  "),
        format!(" {} \n", id.to_uppercase()),
        full.clone(),
        full.to_uppercase(),
        format!("\t{full} "),
    ] {
        let trust = trust_folder(dir.path(), &key, &spelling);
        let r = Registry::open(dir.path(), Policy::load(&trust).unwrap());
        // A fresh host: nothing verified earlier is remembered.
        let host = Host::new(HostConfig::default()).unwrap();
        let e = host.load_from_registry(&r, "feature-agent").unwrap_err();
        assert!(matches!(e, Error::Registry(elex_registry::Error::RevokedKey { .. })), "{spelling:?}: {e}");
        // A revocation in another folder wins over trust in this one.
        let mut trusting = Policy::default();
        trusting.trust(key.public(), vec![String::from("*")]);
        let r = Registry::open(dir.path(), trusting.merge(Policy::load(&trust).unwrap()));
        assert!(matches!(
            r.fetch("feature-agent", &semver::VersionReq::STAR),
            Err(elex_registry::Error::RevokedKey { .. })
        ));
    }
}

#[test]
fn a_policy_entry_naming_no_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    for garbage in ["\"\"", "\"  \"", "\"zz-not-hex\"", "\"0123456789abcde\""] {
        let trust = trust_folder(dir.path(), &key, "");
        let text = format!(
            r#"{{"format": 1, "trusted": [{{"key": "{}", "names": ["*"]}}], "revoked": [{garbage}]}}"#,
            key.public().id()
        );
        std::fs::write(trust.join("policy.json"), text).unwrap();
        let e = Policy::load(&trust).unwrap_err();
        assert!(matches!(e, elex_registry::Error::Policy { .. }), "{garbage}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("policy.json") && msg.contains("revoked[0]"), "{msg}");
    }
}

/// Rewrites the one line of `index/<name>` with `f`.
fn tamper(dir: &std::path::Path, name: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("index").join(name);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, format!("{v}\n")).unwrap();
}

#[test]
fn a_tampered_size_or_budgets_fails_verification() {
    let key = KeyPair::generate().unwrap();
    let bytes = elex_tests::component("feature-agent.composed");
    let budgets = Budgets { memory_bytes: Some(64 << 20), call_deadline_ms: Some(500), fuel_per_call: None };
    type Tamper = fn(&mut serde_json::Value);
    let tampers: [(&str, Tamper); 4] = [
        ("size", |v| v["size"] = (v["size"].as_u64().unwrap() * 2).into()),
        ("memory", |v| v["budgets"]["memory_bytes"] = (4u64 << 30).into()),
        ("deadline", |v| v["budgets"]["call_deadline_ms"] = 3_600_000.into()),
        ("fuel", |v| v["budgets"]["fuel_per_call"] = 1.into()),
    ];
    for (what, f) in tampers {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path(), &key);
        r.publish("feature-agent", &Version::new(0, 1, 0), PLUGIN, &bytes, &key, budgets.clone()).unwrap();
        tamper(dir.path(), "feature-agent", f);
        let entry = r.index.resolve("feature-agent", &semver::VersionReq::STAR).unwrap();
        let e = r.verify_entry(&entry).unwrap_err();
        assert!(matches!(e, elex_registry::Error::BadSignature { .. }), "{what}: {e}");
        let e = r.fetch("feature-agent", &semver::VersionReq::STAR).err().unwrap();
        assert!(matches!(e, elex_registry::Error::BadSignature { .. }), "{what}: {e}");
        // The host refuses it too: by signature, or (size) by the stored size.
        let e =
            Host::new(HostConfig::default()).unwrap().load_from_registry(&r, "feature-agent").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Registry(
                    elex_registry::Error::BadSignature { .. } | elex_registry::Error::SizeMismatch { .. }
                )
            ),
            "{what}: {e}"
        );
    }
}

#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A FIFO or a link to /dev/zero in place of a blob or an index file is an
/// error, at once: nothing blocks and nothing reads without limit.
#[cfg(unix)]
#[test]
fn fifo_and_dev_zero_blobs_and_index_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let r = registry(dir.path(), &key);
    publish(&r, &key, "feature-agent", PLUGIN, "feature-agent.composed");
    publish(&r, &key, "vector", "elex:vector/library@0.1.0", "vector");
    let entry = r.index.resolve("feature-agent", &semver::VersionReq::STAR).unwrap();
    let blob =
        dir.path().join("blobs").join(format!("{}.wasm", entry.digest.strip_prefix("blake3:").unwrap()));
    let good = std::fs::read(&blob).unwrap();
    let host = Host::new(HostConfig::default()).unwrap();

    std::fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    let e = host.load_from_registry(&r, "feature-agent").unwrap_err();
    assert!(matches!(e, Error::Registry(elex_registry::Error::Blob { .. })), "{e}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    assert!(r.fetch("feature-agent", &semver::VersionReq::STAR).is_err());

    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let e = host.load_from_registry(&r, "feature-agent").unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");

    // Larger than the index says: never read past the size.
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, [good.as_slice(), &vec![0u8; 1 << 20]].concat()).unwrap();
    let e = host.load_from_registry(&r, "feature-agent").unwrap_err();
    assert!(matches!(e, Error::Registry(elex_registry::Error::SizeMismatch { .. })), "{e}");
    std::fs::write(&blob, &good).unwrap();
    host.load_from_registry(&r, "feature-agent").unwrap();

    // The index file of one name: refused, and the other names unaffected.
    let index = dir.path().join("index/feature-agent");
    let line = std::fs::read(&index).unwrap();
    for bad in ["fifo", "zero"] {
        std::fs::remove_file(&index).unwrap();
        if bad == "fifo" {
            mkfifo(&index);
        } else {
            std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
        }
        let host = Host::new(HostConfig::default()).unwrap();
        let e = host.load_from_registry(&r, "feature-agent").unwrap_err();
        assert!(matches!(e, Error::Registry(elex_registry::Error::IndexFile { .. })), "{bad}: {e}");
        let scan = r.index.scan().unwrap();
        assert_eq!(scan.entries.len(), 1, "{bad}");
        assert_eq!(scan.entries[0].name, "vector");
        assert_eq!(scan.problems.len(), 1, "{bad}: {:?}", scan.problems);
        assert!(r.fetch("vector", &semver::VersionReq::STAR).is_ok());
    }
    std::fs::remove_file(&index).unwrap();
    std::fs::write(&index, line).unwrap();
    assert!(r.index.check().unwrap().is_empty());
}
