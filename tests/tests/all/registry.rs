//! The host loads only what the registry verifies: digest, signature, trust
//! and world, each refused with its own error.

use elex_host::{Catalog, Error, FitError, Host, HostConfig};
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
