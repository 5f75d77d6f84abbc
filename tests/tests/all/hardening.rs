//! Issue #12's attacks, as tests: a forged or swapped precompiled artifact
//! never runs; one component's snapshot never reaches another's agent and a
//! bad snapshot never stops an agent; a component that cannot start stops
//! the swarm at once; failed calls and consults are counted; query ids are
//! unique across hosts started together.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use elex_host::cache::Origin;
use elex_host::snapshots::SnapshotStore;
use elex_host::{BudgetKind, Budgets, Event, Host, HostConfig, Swarm, SwarmConfig};
use elex_ran::Catalog;
use elex_tests::component_path;

use crate::{MSM, first_features};

fn host_with_cache(dir: &Path) -> Host {
    Host::new(HostConfig { cache_dir: Some(dir.to_path_buf()), ..HostConfig::default() }).unwrap()
}

fn artifact_of(dir: &Path, digest: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(digest))
        .expect("an artifact for the digest")
}

fn answers_as_feature_agent(host: &Host, loaded: &elex_host::LoadedComponent) {
    let config = Catalog::embedded().unwrap().by_faj(MSM).unwrap().agent_config();
    let mut agent = host.instantiate(loaded, config).unwrap();
    let r = agent.handle(&host.query("MIMO Sleep Mode counters")).unwrap();
    assert!(r.content.contains("MIMO Sleep Mode"), "{}", r.content);
}

#[test]
fn forged_swapped_and_hostile_artifacts_are_never_deserialised() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let agent = component_path("feature-agent.composed");
    let hostile = component_path("testing-hostile");
    {
        let host = host_with_cache(&cache);
        assert_eq!(host.load_unsigned_file(&agent).unwrap().origin, Origin::Compiled);
        assert_eq!(host.load_unsigned_file(&hostile).unwrap().origin, Origin::Compiled);
    }
    let host = host_with_cache(&cache);
    let digest = host.load_unsigned_file(&agent).unwrap().digest;
    let hostile_digest = host_with_cache(&cache).load_unsigned_file(&hostile).unwrap().digest;
    let target = artifact_of(&cache, &digest);
    let good = std::fs::read(&target).unwrap();

    // The hostile component's own (authentic) artifact under the feature
    // agent's name: bound to another digest, so refused and recompiled.
    std::fs::copy(artifact_of(&cache, &hostile_digest), &target).unwrap();
    let host = host_with_cache(&cache);
    let loaded = host.load_unsigned_file(&agent).unwrap();
    assert_eq!(loaded.origin, Origin::Compiled, "a swapped artifact is never used");
    answers_as_feature_agent(&host, &loaded);
    assert_eq!(std::fs::read(&target).unwrap(), good, "rewritten from the verified component");

    // The artifact made by another data dir's host (same engine, same
    // component, another key), as an attacker without the key would make it.
    let other = tempfile::tempdir().unwrap();
    let other_cache = other.path().join("cache");
    host_with_cache(&other_cache).load_unsigned_file(&agent).unwrap();
    std::fs::copy(artifact_of(&other_cache, &digest), &target).unwrap();
    assert_eq!(host_with_cache(&cache).load_unsigned_file(&agent).unwrap().origin, Origin::Compiled);

    // The old attack: a body with an unkeyed digest of itself, pointing code
    // at 0x414141414141. Refused before wasmtime sees it.
    let body = vec![0x41u8; 4096];
    let mut forged = blake3::hash(&body).as_bytes().to_vec();
    forged.extend_from_slice(&body);
    std::fs::write(&target, &forged).unwrap();
    assert_eq!(host_with_cache(&cache).load_unsigned_file(&agent).unwrap().origin, Origin::Compiled);

    // A FIFO (would block a reader forever) and a link to /dev/zero (would be
    // read without end) in its place: refused at once, recompiled.
    std::fs::remove_file(&target).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&target).status().unwrap().success());
    assert_eq!(host_with_cache(&cache).load_unsigned_file(&agent).unwrap().origin, Origin::Compiled);
    std::fs::remove_file(&target).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &target).unwrap();
    assert_eq!(host_with_cache(&cache).load_unsigned_file(&agent).unwrap().origin, Origin::Compiled);
    assert_eq!(std::fs::read(&target).unwrap(), good);
    assert_eq!(host_with_cache(&cache).load_unsigned_file(&agent).unwrap().origin, Origin::Disk);

    // A key others can read is not used: the disk cache is off.
    let key = dir.path().join("cache.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(host_with_cache(&cache).load_unsigned_file(&agent).unwrap().origin, Origin::Compiled);
}

#[test]
fn one_components_snapshot_never_reaches_another_and_a_bad_one_never_stops_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SnapshotStore::open(&dir.path().join("agents.redb")).unwrap());
    let host = Arc::new(Host::new(HostConfig::default()).unwrap());
    let agent = Arc::new(host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap());
    let hostile = Arc::new(host.load_unsigned_file(&component_path("testing-hostile")).unwrap());
    assert_ne!(agent.family, hostile.family);
    let catalog = first_features(4);

    // The hostile component runs as the feature's agent and saves its state.
    let swarm = Swarm::start(
        host.clone(),
        hostile.clone(),
        crate::router(catalog.clone()),
        Some(store.clone()),
        SwarmConfig::default(),
        |_| {},
    )
    .unwrap();
    swarm.save([0]).unwrap();
    drop(swarm);
    assert!(store.get(&hostile.family, MSM).unwrap().is_some());
    assert_eq!(store.get(&agent.family, MSM).unwrap(), None, "kept under its own component");

    // Bytes the feature agent cannot restore, under its own key: kept aside,
    // the agent starts fresh and says so.
    store.put(&agent.family, MSM, b"not a snapshot of this component").unwrap();
    let mut events = host.subscribe();
    let swarm = Swarm::start(
        host.clone(),
        agent.clone(),
        crate::router(catalog.clone()),
        Some(store.clone()),
        SwarmConfig::default(),
        |_| {},
    )
    .unwrap();
    let seen: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        seen.iter().any(|e| matches!(e, Event::SnapshotQuarantined { agent, .. } if agent == MSM)),
        "{seen:?}"
    );
    let answer = swarm.ask(0, "Which counters show the effect of MIMO Sleep Mode?");
    assert!(answer.unwrap().response.content.contains("MIMO Sleep Mode"));
    assert_eq!(store.get(&agent.family, MSM).unwrap(), None, "moved aside");
    assert!(store.check().unwrap().is_empty());

    // What it learns now is stored and restored as before.
    swarm.save([0]).unwrap();
    drop(swarm);
    let mut events = host.subscribe();
    Swarm::start(
        host.clone(),
        agent,
        crate::router(catalog),
        Some(store.clone()),
        SwarmConfig::default(),
        |_| {},
    )
    .unwrap();
    let seen: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(!seen.iter().any(|e| matches!(e, Event::SnapshotQuarantined { .. })), "{seen:?}");
}

#[test]
fn a_component_that_cannot_start_stops_the_swarm_at_the_first_failure() {
    let config = HostConfig {
        budgets: Budgets { call_deadline: std::time::Duration::from_millis(20), ..Budgets::default() },
        ..HostConfig::default()
    };
    let host = Arc::new(Host::new(config).unwrap());
    let hostile = Arc::new(host.load_unsigned_file(&component_path("testing-hostile")).unwrap());
    let mut catalog = (*first_features(40)).clone();
    for f in &mut catalog.features {
        f.name.push_str(" [spin-at-init]");
    }
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let threads = 2;
    let swarm_config = SwarmConfig { start_threads: threads, ..SwarmConfig::default() };
    let result = Swarm::start(host, hostile, crate::router(Arc::new(catalog)), None, swarm_config, |_| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let err = result.err().expect("no agent can start").to_string();
    assert!(err.contains("did not start") && err.contains("time budget"), "{err}");
    let tried = tried.into_inner();
    assert!(tried <= 2 * threads, "stopped after {tried} of 40 attempts, not all of them");
}

#[test]
fn failed_calls_and_consults_are_counted_in_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SnapshotStore::open(&dir.path().join("agents.redb")).unwrap());
    let host = Arc::new(Host::new(HostConfig::default()).unwrap());
    let hostile = Arc::new(host.load_unsigned_file(&component_path("testing-hostile")).unwrap());
    let catalog = first_features(3);
    let (a, b) = (catalog.features[0].faj.clone(), catalog.features[1].faj.clone());
    let mut events = host.subscribe();
    let swarm = Swarm::start(
        host,
        hostile,
        crate::router(catalog),
        Some(store.clone()),
        SwarmConfig::default(),
        |_| {},
    )
    .unwrap();
    let ask = |text: &str| swarm.ask(0, text);
    assert!(ask("trap").is_err());
    assert!(ask("hello").is_ok(), "recycled after the trap");
    let consulted = ask(&format!("consult {b}|panic")).unwrap();
    assert!(consulted.response.content.contains("routing error"), "{}", consulted.response.content);
    swarm.save([]).unwrap();
    let ua = store.usage(&a).unwrap().unwrap();
    let ub = store.usage(&b).unwrap().unwrap();
    assert_eq!((ua.calls, ua.errors, ua.recycles), (3, 1, 1));
    assert_eq!((ub.calls, ub.errors, ub.recycles), (1, 1, 1), "the failed consult counts for its callee");
    // Each failure and recycle is an event an embedder sees.
    let seen: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    for agent in [&a, &b] {
        let failed =
            seen.iter().filter(|e| matches!(e, Event::ExecutionFailed { agent: x, .. } if x == agent));
        let recycled =
            seen.iter().filter(|e| matches!(e, Event::AgentRecycled { agent: x, .. } if x == agent));
        assert_eq!((failed.count(), recycled.count()), (1, 1), "{agent}: {seen:?}");
    }
    // Saving again adds only what happened since.
    assert!(ask("hello").is_ok());
    swarm.save([]).unwrap();
    assert_eq!(store.usage(&a).unwrap().unwrap().calls, 4);
    assert_eq!(store.usage(&b).unwrap().unwrap().calls, 1);
}

#[test]
fn query_ids_are_unique_across_hosts_started_at_once() {
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let host = Host::new(HostConfig { pooling: false, ..HostConfig::default() }).unwrap();
                    host.query("x").id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 16, "{ids:?}");
}

#[test]
fn the_budgets_a_signed_entry_asks_for_are_enforced_and_capped_by_the_host() {
    use elex_registry::{Budgets as Asked, KeyPair, Policy, Registry};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut policy = Policy::default();
    policy.trust(key.public(), vec![String::from("*")]);
    let registry = Registry::open(dir.path(), policy);
    let bytes = std::fs::read(component_path("testing-hostile")).unwrap();
    let world = elex_host::World::Plugin.qualified_name();
    let v = |s: &str| semver::Version::parse(s).unwrap();
    let tight = Asked { call_deadline_ms: Some(20), memory_bytes: Some(8 << 20), fuel_per_call: None };
    registry.publish("tight", &v("0.1.0"), world, &bytes, &key, tight).unwrap();
    let greedy = Asked { call_deadline_ms: Some(60_000), memory_bytes: Some(1 << 40), fuel_per_call: None };
    registry.publish("greedy", &v("0.1.0"), world, &bytes, &key, greedy).unwrap();

    let host = Host::new(HostConfig::default()).unwrap();
    let config = || elex_host::AgentConfig {
        agent_id: String::from("h"),
        name: String::from("h"),
        settings: vec![],
        document: String::new(),
    };
    let limit_of = |spec: &str, text: &str| {
        let loaded = host.load_from_registry(&registry, spec).unwrap();
        let mut agent = host.instantiate(&loaded, config()).unwrap();
        match agent.handle(&host.query(text)).unwrap_err() {
            elex_host::Error::Budget { kind, limit, .. } => (kind, limit),
            e => panic!("{spec} {text}: {e}"),
        }
    };
    assert_eq!(limit_of("tight@0.1", "loop"), (BudgetKind::Time, 20));
    assert_eq!(limit_of("tight@0.1", "bomb"), (BudgetKind::Memory, 8 << 20));
    // Asking for more than the host gives gets the host's budgets.
    let defaults = Budgets::default();
    assert_eq!(limit_of("greedy@0.1", "loop").1, defaults.call_deadline.as_millis() as u64);
}

#[test]
fn with_fuel_metering_the_swarm_still_routes_through_the_hnsw_component() {
    let host = Arc::new(
        Host::new(HostConfig {
            fuel: true,
            budgets: Budgets { fuel_per_call: Some(500_000_000), ..Budgets::default() },
            ..HostConfig::default()
        })
        .unwrap(),
    );
    let agent = Arc::new(host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap());
    let router = crate::router(first_features(8));
    let swarm =
        Swarm::start(host.clone(), agent, router.clone(), None, SwarmConfig::default(), |_| {}).unwrap();
    let hnsw = std::fs::read(component_path("hnsw")).unwrap();
    router.attach_index(host.vector_index(&hnsw, &router.profile_rows(), 128).unwrap());
    let text = "Which counters show the effect of MIMO Sleep Mode?";
    let (i, _) = router.choose(text).unwrap();
    assert_eq!(router.catalog().features[i].faj, MSM);
    assert!(swarm.ask(i, text).unwrap().response.content.contains("MIMO Sleep Mode"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever bytes a stored snapshot holds, restoring them into a feature
    /// agent is an error or a success, never a trap that breaks the
    /// instance, and the agent answers afterwards.
    #[test]
    fn any_snapshot_bytes_are_refused_or_restored_cleanly(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        keep_magic in proptest::bool::ANY,
    ) {
        use std::sync::OnceLock;
        static FIXTURE: OnceLock<(Host, elex_host::LoadedComponent, Vec<u8>)> = OnceLock::new();
        let (host, agent, good) = FIXTURE.get_or_init(|| {
            let host = Host::new(HostConfig::default()).unwrap();
            let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap();
            let config = Catalog::embedded().unwrap().by_faj(MSM).unwrap().agent_config();
            let good = host.instantiate(&agent, config).unwrap().snapshot().unwrap();
            (host, agent, good)
        });
        // Half the cases start like a real snapshot, to get past its header.
        let mut input = bytes;
        if keep_magic {
            let n = good.len().min(16);
            input.splice(0..0, good[..n].iter().copied());
        }
        let config = Catalog::embedded().unwrap().by_faj(MSM).unwrap().agent_config();
        let mut instance = host.instantiate(agent, config).unwrap();
        let restored = instance.restore(&input);
        if let Err(e) = &restored {
            proptest::prop_assert!(matches!(e, elex_host::Error::Agent { .. }), "{e}");
        }
        proptest::prop_assert!(instance.failure().is_none());
        let answer = instance.handle(&host.query("What is MIMO Sleep Mode?")).unwrap();
        proptest::prop_assert!(answer.content.contains("MIMO Sleep Mode"));
    }
}
