//! Publishing and fetching through a registry folder: everything that must
//! be refused is refused with its own error.

use elex_registry::{Budgets, Error, KeyPair, Policy, Registry};
use semver::{Version, VersionReq};

const WORLD: &str = "elex:platform/plugin@0.1.0";

struct Setup {
    _dir: tempfile::TempDir,
    registry: Registry,
    key: KeyPair,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut policy = Policy::default();
    policy.trust(key.public(), vec![String::from("agent*")]);
    let registry = Registry::open(dir.path(), policy);
    Setup { _dir: dir, registry, key }
}

fn any() -> VersionReq {
    VersionReq::STAR
}

#[test]
fn a_published_component_fetches_verified() {
    let s = setup();
    let bytes = b"component bytes".to_vec();
    let e = s
        .registry
        .publish("agent", &Version::new(1, 0, 0), WORLD, &bytes, &s.key, Budgets::default())
        .unwrap();
    assert_eq!(e.size, bytes.len() as u64);
    let f = s.registry.fetch("agent", &any()).unwrap();
    assert_eq!(f.bytes, bytes);
    assert_eq!(f.entry, e);
    // Publishing the same bytes again is a no-op; other bytes are refused.
    s.registry.publish("agent", &Version::new(1, 0, 0), WORLD, &bytes, &s.key, Budgets::default()).unwrap();
    let e = s.registry.publish("agent", &Version::new(1, 0, 0), WORLD, b"other", &s.key, Budgets::default());
    assert!(matches!(e, Err(Error::Exists { .. })));
}

#[test]
fn semver_requirements_pick_the_highest_match() {
    let s = setup();
    for v in ["0.1.0", "0.1.3", "0.2.0", "1.0.0"] {
        let v = Version::parse(v).unwrap();
        s.registry.publish("agent", &v, WORLD, v.to_string().as_bytes(), &s.key, Budgets::default()).unwrap();
    }
    let pick = |req: &str| {
        s.registry.fetch("agent", &VersionReq::parse(req).unwrap()).unwrap().entry.version.to_string()
    };
    assert_eq!(pick("^0.1"), "0.1.3");
    assert_eq!(pick("*"), "1.0.0");
    assert_eq!(pick("=0.2.0"), "0.2.0");
    let e = s.registry.fetch("agent", &VersionReq::parse("^3").unwrap()).err().unwrap();
    assert!(e.to_string().contains("available: 0.1.0, 0.1.3, 0.2.0, 1.0.0"), "{e}");
}

#[test]
fn a_flipped_byte_is_refused_by_digest() {
    let s = setup();
    let e = s
        .registry
        .publish("agent", &Version::new(1, 0, 0), WORLD, b"good bytes", &s.key, Budgets::default())
        .unwrap();
    let hex = e.digest.strip_prefix("blake3:").unwrap();
    let path = s._dir.path().join("blobs").join(format!("{hex}.wasm"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(s.registry.fetch("agent", &any()), Err(Error::DigestMismatch { .. })));
}

fn tamper(s: &Setup, f: impl FnOnce(&mut serde_json::Value)) {
    let path = s._dir.path().join("index").join("agent");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, format!("{v}\n")).unwrap();
}

#[test]
fn a_signature_from_another_key_is_refused() {
    let s = setup();
    s.registry.publish("agent", &Version::new(1, 0, 0), WORLD, b"x", &s.key, Budgets::default()).unwrap();
    // Re-sign with an untrusted key: unknown signer.
    let other = KeyPair::generate().unwrap();
    tamper(&s, |v| v["signer"] = other.public().id().to_string().into());
    assert!(matches!(s.registry.fetch("agent", &any()), Err(Error::UnknownKey { .. })));
    // The trusted key's id with a signature made by another key: bad signature.
    tamper(&s, |v| {
        v["signer"] = s.key.public().id().to_string().into();
        let m = elex_registry::signing::message(
            "agent",
            &Version::new(1, 0, 0),
            WORLD,
            v["digest"].as_str().unwrap(),
            1,
            &Budgets::default(),
        );
        v["signature"] = other.sign(&m).iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    });
    assert!(matches!(s.registry.fetch("agent", &any()), Err(Error::BadSignature { .. })));
}

#[test]
fn a_revoked_key_is_refused() {
    let mut s = setup();
    s.registry.publish("agent", &Version::new(1, 0, 0), WORLD, b"x", &s.key, Budgets::default()).unwrap();
    s.registry.policy.revoke(s.key.public().id());
    assert!(matches!(s.registry.fetch("agent", &any()), Err(Error::RevokedKey { .. })));
}

#[test]
fn a_key_may_sign_only_its_names() {
    let s = setup();
    // Publishing refuses a key its own policy does not allow for the name ...
    let e = s.registry.publish("other", &Version::new(1, 0, 0), WORLD, b"x", &s.key, Budgets::default());
    assert!(matches!(e, Err(Error::KeyNotAllowed { .. })), "{e:?}");
    // ... and fetching refuses such an entry published anyway.
    s.registry
        .publish_untrusted("other", &Version::new(1, 0, 0), WORLD, b"x", &s.key, Budgets::default())
        .unwrap();
    let e = s.registry.fetch("other", &any()).err().unwrap();
    assert!(matches!(e, Error::KeyNotAllowed { .. }), "{e}");
    assert!(e.to_string().contains("agent*"), "{e}");
}

#[test]
fn signatures_cannot_be_replayed_onto_another_name_version_or_world() {
    let s = setup();
    s.registry.publish("agent-a", &Version::new(1, 0, 0), WORLD, b"x", &s.key, Budgets::default()).unwrap();
    let line = std::fs::read_to_string(s._dir.path().join("index/agent-a")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    // Same signature claimed for agent-b@1.0.0 ...
    let mut b = entry.clone();
    b["name"] = "agent-b".into();
    std::fs::write(s._dir.path().join("index/agent-b"), format!("{b}\n")).unwrap();
    assert!(matches!(s.registry.fetch("agent-b", &any()), Err(Error::BadSignature { .. })));
    // ... for agent-a@1.0.1 ...
    let mut v = entry.clone();
    v["version"] = "1.0.1".into();
    std::fs::write(s._dir.path().join("index/agent-a"), format!("{v}\n")).unwrap();
    assert!(matches!(s.registry.fetch("agent-a", &any()), Err(Error::BadSignature { .. })));
    // ... or for another world.
    let mut w = entry;
    w["world"] = "elex:vector/library@0.1.0".into();
    std::fs::write(s._dir.path().join("index/agent-a"), format!("{w}\n")).unwrap();
    assert!(matches!(s.registry.fetch("agent-a", &any()), Err(Error::BadSignature { .. })));
}

#[test]
fn policies_save_load_and_merge() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let mut p = Policy::default();
    p.trust(s.key.public(), vec![String::from("agent")]);
    p.save(dir.path()).unwrap();
    let loaded = Policy::load(dir.path()).unwrap();
    let e =
        s.registry.publish("agent", &Version::new(1, 0, 0), WORLD, b"x", &s.key, Budgets::default()).unwrap();
    loaded.verify(&e).unwrap();
    let mut revoking = Policy::default();
    revoking.revoke(s.key.public().id());
    assert!(matches!(loaded.merge(revoking).verify(&e), Err(Error::RevokedKey { .. })));
    // A key file whose id does not match its name is refused.
    let keys = dir.path().join("keys");
    let id = s.key.public().id();
    let other = KeyPair::generate().unwrap();
    std::fs::write(keys.join(format!("{id}.pub")), other.public().to_file_text()).unwrap();
    assert!(Policy::load(dir.path()).is_err());
}
