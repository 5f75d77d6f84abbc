//! The host loads the real composed agent and refuses everything that is not
//! a component of the plugin world, with errors that say what was expected
//! and what was found.

use elex_host::{Action, Error, FitError, Host, HostConfig};
use elex_ran::Catalog;
use elex_tests::{component, component_path};

fn host() -> Host {
    Host::new(HostConfig::default()).expect("host")
}

#[test]
fn composed_agent_answers_from_its_feature_data() {
    let host = host();
    let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).expect("load");
    assert_eq!(agent.digest.len(), 64);
    let catalog = Catalog::embedded().unwrap();
    let feature = catalog.by_faj("FAJ 121 3094").unwrap();
    let mut instance = host.instantiate(&agent, feature.agent_config()).expect("instantiate");

    let q = host.query("Which counters show the effect of MIMO Sleep Mode?");
    let r = instance.handle(&q).expect("handle");
    assert_eq!(r.query_id, q.id);
    assert_eq!(r.agent_id, "FAJ 121 3094");
    assert_eq!(r.action, Action::DirectAnswer);
    assert!(r.content.starts_with("MIMO Sleep Mode (MSM, FAJ 121 3094)"), "{}", r.content);
    assert!(r.confidence > 0.0 && r.confidence <= 1.0);
    // Every cited source is a real fact of this feature.
    assert!(!r.sources.is_empty());
    let entry = &feature.document;
    for s in &r.sources {
        assert!(
            s == "overview" || s == "prerequisites" || s == "conflicts" || entry.contains(s.as_str()),
            "{s}"
        );
    }
    assert!(r.sources.iter().any(|s| s.contains(".pm")), "a counter is cited: {:?}", r.sources);

    // Feedback is accepted for the query just answered, refused otherwise.
    instance.feedback(&q.id, 1.0).expect("feedback");
    let e = instance.feedback("no-such-query", 1.0).unwrap_err();
    assert!(matches!(e, Error::Agent { .. }), "{e}");
}

#[test]
fn unrelated_question_asks_for_clarification() {
    let host = host();
    let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let mut instance = host.instantiate(&agent, catalog.features[0].agent_config()).unwrap();
    let r = instance.handle(&host.query("zzz qqq")).unwrap();
    assert_eq!(r.action, Action::RequestClarification);
    assert!(r.sources.is_empty());
}

#[test]
fn snapshot_restores_into_a_fresh_instance() {
    let host = host();
    let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let config = catalog.by_faj("FAJ 121 3094").unwrap().agent_config();
    let mut a = host.instantiate(&agent, config.clone()).unwrap();
    for _ in 0..3 {
        a.handle(&host.query("MIMO sleep mode parameters")).unwrap();
    }
    let snap = a.snapshot().unwrap();
    let mut b = host.instantiate(&agent, config).unwrap();
    b.restore(&snap).unwrap();
    assert_eq!(b.snapshot().unwrap(), snap);
    assert!(b.health().unwrap().detail.contains("answered 3 queries"));
    // Corrupt bytes are the agent's error, not a trap: the instance lives on.
    let e = b.restore(b"garbage").unwrap_err();
    assert!(matches!(e, Error::Agent { .. }), "{e}");
    b.handle(&host.query("MIMO sleep mode")).unwrap();
}

#[test]
fn calls_before_init_data_is_valid_json_are_refused_cleanly() {
    let host = host();
    let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap();
    let mut config = Catalog::embedded().unwrap().features[0].agent_config();
    config.document = String::from("{not json");
    let e = host.instantiate(&agent, config).unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
}

#[test]
fn refuses_a_file_that_is_not_wasm() {
    let e = host().load_unsigned_bytes("notes.txt", b"hello, I am text").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unfit { source: FitError::NotWasm { .. }, .. }), "{msg}");
    assert!(msg.contains("notes.txt") && msg.contains("\\0asm"), "{msg}");
}

#[test]
fn refuses_a_core_module() {
    // A valid core module with one exported function.
    let module = [
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
        0x03, 0x02, 0x01, 0x00, // function section
        0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f"
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: empty body
    ];
    let e = host().load_unsigned_bytes("module.wasm", &module).unwrap_err();
    assert!(matches!(e, Error::Unfit { source: FitError::CoreModule, .. }), "{e}");
    assert!(e.to_string().contains("not a component"), "{e}");
}

#[test]
fn refuses_a_component_of_another_world() {
    // The vector library is a real component, of the wrong world.
    let e = host().load_unsigned_bytes("vector.wasm", &component("vector")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unfit { source: FitError::MissingExports { .. }, .. }), "{msg}");
    assert!(msg.contains("elex:agent/agent@0.1.0") && msg.contains("elex:vector/kernels@0.1.0"), "{msg}");

    // The uncomposed agent imports the libraries, which the host does not
    // provide.
    let e = host().load_unsigned_bytes("feature-agent.wasm", &component("feature-agent")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unfit { source: FitError::UnexpectedImports { .. }, .. }), "{msg}");
    assert!(msg.contains("elex:vector/kernels@0.1.0"), "{msg}");
}

#[test]
fn refuses_a_truncated_component() {
    let bytes = component("feature-agent.composed");
    let e = host().load_unsigned_bytes("cut.wasm", &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(e, Error::Unfit { source: FitError::Malformed(_), .. }), "{e}");
}

#[test]
fn composed_agent_imports_only_host_interfaces() {
    let found = elex_wit::inspect(&component("feature-agent.composed")).unwrap();
    assert_eq!(found.exports, ["elex:agent/agent@0.1.0"]);
    for i in &found.imports {
        assert!(i.starts_with("elex:host/") || i == "elex:agent/types@0.1.0", "unexpected import {i}");
    }
    assert!(found.imports.iter().any(|i| i == "elex:host/log@0.1.0"));
}

#[test]
fn a_component_larger_than_the_hosts_limits_is_refused_at_load_with_the_number() {
    let bytes = component("feature-agent.composed");
    let needs = elex_wit::footprint(&bytes).unwrap();
    // vector, qlearning, hnsw and the agent, each with its shims.
    assert!(needs.core_instances >= 8 && needs.memories >= 4, "{needs:?}");
    let agent = host().load_unsigned_bytes("agent", &bytes).unwrap();
    assert_eq!(agent.footprint, needs);
    // Fewer than it declares: refused at load, before compiling, naming the
    // resource, both numbers and the setting.
    let short = HostConfig { core_instances_per_instance: needs.core_instances - 1, ..HostConfig::default() };
    match Host::new(short).unwrap().load_unsigned_bytes("agent", &bytes).unwrap_err() {
        Error::TooLarge { resource, needs: n, limit, setting, .. } => {
            assert_eq!(
                (resource, n, limit),
                ("core instances", needs.core_instances, needs.core_instances - 1)
            );
            assert_eq!(setting, "core_instances_per_instance");
        }
        e => panic!("{e}"),
    }
    // What it declares is a lower bound: wasmtime adds adapter instances
    // between the composed components, and says so when compiling.
    let declared = HostConfig { core_instances_per_instance: needs.core_instances, ..HostConfig::default() };
    let e = Host::new(declared).unwrap().load_unsigned_bytes("agent", &bytes).unwrap_err().to_string();
    assert!(e.contains("core module instances") && e.contains("pooling allocator"), "{e}");
}
