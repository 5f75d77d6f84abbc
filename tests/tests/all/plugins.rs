//! A plugin's manifest in the host: carried in the component (and so under
//! the registry's signature), its budgets enforced and capped by the host's,
//! a request for WASI capabilities refused, a forged manifest refused.

use std::time::Duration;

use elex_host::{AgentConfig, BudgetKind, Budgets, Error, Host, HostConfig};
use elex_registry::Manifest;
use elex_tests::component_path;

fn hostile_with(manifest: &str) -> Vec<u8> {
    let bytes = std::fs::read(component_path("testing-hostile")).unwrap();
    Manifest::from_toml(manifest).unwrap().embed(&bytes).unwrap()
}

fn config() -> AgentConfig {
    AgentConfig {
        agent_id: "hostile".into(),
        name: "hostile".into(),
        settings: vec![],
        document: String::new(),
    }
}

fn host(deadline: Duration, memory: u64) -> Host {
    Host::new(HostConfig {
        budgets: Budgets { call_deadline: deadline, memory_bytes: memory, ..Budgets::default() },
        max_memory_bytes: 64 << 20,
        ..HostConfig::default()
    })
    .unwrap()
}

#[test]
fn manifest_budgets_are_enforced_and_capped_by_the_hosts() {
    let bytes = hostile_with("id = \"tight\"\nname = \"Tight\"\n[budgets]\ntime-ms = 40\nmemory-mib = 8\n");
    let host = host(Duration::from_millis(400), 32 << 20);
    let loaded = host.load_unsigned_bytes("tight", &bytes).unwrap();
    assert_eq!(loaded.manifest.as_ref().map(|m| m.id.as_str()), Some("tight"));
    // Tighter than the host's: the plugin's own budgets hold.
    let mut agent = host.instantiate(&loaded, config()).unwrap();
    match agent.handle(&host.query("loop")).unwrap_err() {
        Error::Budget { kind: BudgetKind::Time, limit, .. } => assert_eq!(limit, 40),
        e => panic!("expected the manifest's 40 ms: {e}"),
    }
    let mut agent = host.instantiate(&loaded, config()).unwrap();
    match agent.handle(&host.query("bomb")).unwrap_err() {
        Error::Budget { kind: BudgetKind::Memory, limit, .. } => assert_eq!(limit, 8 << 20),
        e => panic!("expected the manifest's 8 MiB: {e}"),
    }
    // Asking for more than the host gives gets the host's.
    let greedy =
        hostile_with("id = \"greedy\"\nname = \"Greedy\"\n[budgets]\ntime-ms = 60000\nmemory-mib = 4096\n");
    let loaded = host.load_unsigned_bytes("greedy", &greedy).unwrap();
    let mut agent = host.instantiate(&loaded, config()).unwrap();
    match agent.handle(&host.query("loop")).unwrap_err() {
        Error::Budget { kind: BudgetKind::Time, limit, .. } => assert_eq!(limit, 400),
        e => panic!("expected the host's 400 ms: {e}"),
    }
    let mut agent = host.instantiate(&loaded, config()).unwrap();
    match agent.handle(&host.query("bomb")).unwrap_err() {
        Error::Budget { kind: BudgetKind::Memory, limit, .. } => assert_eq!(limit, 32 << 20),
        e => panic!("expected the host's 32 MiB: {e}"),
    }
}

#[test]
fn capabilities_are_granted_only_as_asked_and_forged_manifests_are_refused() {
    use elex_host::Grants;
    let host = host(Duration::from_millis(400), 32 << 20);
    // Asking is not getting: loaded, its instances get nothing until a
    // grant is decided.
    let asks =
        hostile_with("id = \"nosy\"\nname = \"Nosy\"\ncapabilities = [\"env:HOME\", \"read:/data\"]\n");
    let loaded = host.load_unsigned_bytes("nosy", &asks).unwrap();
    assert_eq!(*loaded.grants, Grants::default());
    let asked = loaded.manifest.as_ref().unwrap().capabilities().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = format!("read:/data={}", dir.path().display());
    // Every ask must be granted; nothing it did not ask for can be.
    let e = Grants::decide(&asked, &[String::from("env:HOME")]).unwrap_err();
    assert!(e.contains("--grant read:/data=/host/dir"), "{e}");
    let e = Grants::decide(&asked, &[String::from("env:HOME"), data.clone(), String::from("env:PATH")])
        .unwrap_err();
    assert!(e.contains("env:PATH") && e.contains("does not ask"), "{e}");
    let e = Grants::decide(&asked, &[String::from("env:HOME"), String::from("read:/data=/no/such/dir")])
        .unwrap_err();
    assert!(e.contains("not a directory"), "{e}");
    let grants = Grants::decide(&asked, &[String::from("env:HOME"), data]).unwrap();
    assert_eq!(grants.env, ["HOME"]);
    assert_eq!(grants.read, [(String::from("/data"), dir.path().to_path_buf())]);
    // A second manifest section appended by hand to a signed-looking file.
    let once = hostile_with("id = \"twice\"\nname = \"Twice\"\n");
    let plain = std::fs::read(component_path("testing-hostile")).unwrap();
    let mut twice = once.clone();
    twice.extend_from_slice(&once[plain.len()..]);
    let e = host.load_unsigned_bytes("twice", &twice).unwrap_err();
    assert!(matches!(e, Error::Manifest { .. }) && e.to_string().contains("2"), "{e}");
}

#[test]
fn a_signed_plugins_manifest_is_covered_by_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let key = elex_registry::KeyPair::generate().unwrap();
    let mut policy = elex_registry::Policy::default();
    policy.trust(key.public(), vec![String::from("*")]);
    let registry = elex_registry::Registry::open(dir.path(), policy);
    let version = semver::Version::new(1, 0, 0);
    let bytes = hostile_with("id = \"signed\"\nname = \"Signed\"\n[budgets]\ntime-ms = 40\n");
    let m = Manifest::of_component(&bytes).unwrap().unwrap();
    let world = elex_wit::World::Plugin.qualified_name();
    registry.publish("signed", &version, world, &bytes, &key, m.budgets()).unwrap();
    let host = host(Duration::from_millis(400), 32 << 20);
    let loaded = host.load_from_registry(&registry, "signed@^1").unwrap();
    assert_eq!(loaded.manifest, Some(m));
    assert_eq!(loaded.requested_budgets.call_deadline_ms, Some(40));
    // The manifest is in the signed bytes: changing it changes the digest,
    // which the stored entry no longer matches.
    let forged = hostile_with("id = \"signed\"\nname = \"Signed\"\n[budgets]\ntime-ms = 60000\n");
    let blob = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .unwrap();
    std::fs::write(&blob, &forged).unwrap();
    assert!(host.load_from_registry(&registry, "signed@^1").is_err());
}
