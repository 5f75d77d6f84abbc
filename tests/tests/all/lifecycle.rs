//! The swarm as the one runtime of live agents: eviction that loses
//! nothing, state that survives a new swarm, recycling after traps and
//! unhealthy reports, idle and memory-pressure eviction, and usage counted
//! across runs — each an event an embedder sees.

use std::sync::Arc;
use std::time::Duration;

use elex_host::snapshots::SnapshotStore;
use elex_host::{
    AgentState, Error, Event, EvictReason, Health, Host, HostConfig, LoadedComponent, Pressure, Swarm,
    SwarmConfig,
};
use elex_ran::Catalog;
use elex_tests::component_path;

use crate::{MSM, first_features};

struct Fixture {
    dir: tempfile::TempDir,
    host: Arc<Host>,
    agent: Arc<LoadedComponent>,
    hostile: Arc<LoadedComponent>,
}

fn fixture() -> Fixture {
    fixture_with(HostConfig::default())
}

fn fixture_with(config: HostConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(Host::new(config).unwrap());
    let agent = Arc::new(host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap());
    let hostile = Arc::new(host.load_unsigned_file(&component_path("testing-hostile")).unwrap());
    Fixture { dir, host, agent, hostile }
}

impl Fixture {
    fn store(&self) -> Arc<SnapshotStore> {
        Arc::new(SnapshotStore::open(&self.dir.path().join("agents.redb")).unwrap())
    }

    fn swarm(&self, component: &Arc<LoadedComponent>, catalog: Arc<Catalog>, config: SwarmConfig) -> Swarm {
        Swarm::start(
            self.host.clone(),
            component.clone(),
            crate::router(catalog),
            Some(self.store()),
            config,
            |_| {},
        )
        .unwrap()
    }
}

/// The lifecycle events received (queries answered and rewards left out).
fn events(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|e| !matches!(e, Event::QueryAnswered { .. } | Event::AgentRewarded { .. }))
        .collect()
}

const QUESTION: &str = "What is MIMO Sleep Mode?";

#[test]
fn an_evicted_agent_answers_as_it_did_before() {
    let f = fixture();
    let swarm = f.swarm(&f.agent, first_features(2), SwarmConfig::default());
    let ask = || swarm.ask(0, QUESTION).unwrap().response;
    let first = ask();
    swarm.feedback(0, &first.query_id, 1.0).unwrap();
    let learned = ask();
    assert!(
        learned.q_value > first.q_value,
        "feedback raised the value: {} -> {}",
        first.q_value,
        learned.q_value
    );

    let mut rx = f.host.subscribe();
    let before = swarm.memory_used();
    assert!(swarm.evict(0, EvictReason::Requested).unwrap());
    assert!(!swarm.evict(0, EvictReason::Requested).unwrap(), "nothing left to evict");
    let s = swarm.status(0).unwrap();
    assert_eq!((s.state, s.memory_bytes), (AgentState::Evicted, 0));
    assert!(swarm.memory_used() < before);

    // Its next call starts it again, restored: it answers as it did.
    let after = ask();
    assert_eq!(
        (after.action, after.q_value, &after.content),
        (learned.action, learned.q_value, &learned.content)
    );
    let s = swarm.status(0).unwrap();
    assert_eq!(s.state, AgentState::Running);
    assert_eq!((s.usage.calls, s.usage.evictions), (4, 1), "handle, feedback, handle, handle");
    assert_eq!(
        events(&mut rx),
        vec![
            Event::AgentEvicted { agent: MSM.into(), reason: EvictReason::Requested },
            Event::AgentSpawned { agent: MSM.into(), restored: true },
        ]
    );
    assert!(matches!(swarm.status(9), Err(Error::NoAgent(_))));
}

#[test]
fn an_agent_added_to_a_running_swarm_answers_and_a_retired_one_is_refused() {
    let f = fixture();
    let running = first_features(2);
    let swarm = f.swarm(&f.agent, running.clone(), SwarmConfig { max_added: 2, ..SwarmConfig::default() });
    let extra = Catalog::embedded()
        .unwrap()
        .features
        .into_iter()
        .find(|x| running.features.iter().all(|r| r.faj != x.faj))
        .unwrap();
    let mut rx = f.host.subscribe();
    // Added while the others run: the next index, answering at once.
    let i = swarm.add(f.agent.clone(), extra.agent_config()).unwrap();
    assert_eq!((i, swarm.len()), (2, 3));
    let first = swarm.ask(i, "What is it?").unwrap().response;
    swarm.feedback(i, &first.query_id, 1.0).unwrap();
    let learned = swarm.ask(i, "What is it?").unwrap().response;
    assert!(learned.q_value > first.q_value);
    assert!(swarm.ask(0, QUESTION).is_ok(), "the others answer as before");
    // Retired: its state stored, its index refused from then on.
    swarm.retire(i).unwrap();
    assert!(matches!(swarm.ask(i, "What is it?"), Err(Error::NoAgent(_))));
    assert_eq!(swarm.status(i).unwrap().state, AgentState::Retired);
    assert_eq!(swarm.maintain().unwrap().health, (2, 0, 0), "a retired agent is not checked");
    // Added again, it takes a new index (never the old one) and restores
    // what it learned.
    let again = swarm.add(f.agent.clone(), extra.agent_config()).unwrap();
    assert_eq!(again, 3);
    let after = swarm.ask(again, "What is it?").unwrap().response;
    assert_eq!(after.q_value, learned.q_value);
    // Discarded (its state not stored again), it is refused like a retired one.
    swarm.discard(again).unwrap();
    assert_eq!(swarm.status(again).unwrap().state, AgentState::Retired);
    assert!(matches!(swarm.ask(again, "What is it?"), Err(Error::NoAgent(_))));
    let seen = events(&mut rx);
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, Event::AgentSpawned { .. } | Event::AgentRetired { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        vec![
            Event::AgentSpawned { agent: extra.faj.clone(), restored: false },
            Event::AgentRetired { agent: extra.faj.clone() },
            Event::AgentSpawned { agent: extra.faj.clone(), restored: true },
            Event::AgentRetired { agent: extra.faj.clone() },
        ]
    );
    // max_added bounds additions, retired or not.
    let e = swarm.add(f.agent.clone(), extra.agent_config()).unwrap_err();
    assert!(e.to_string().contains("max_added"), "{e}");
    // An id the directory lists and that runs is not added twice.
    drop(swarm);
    let swarm = f.swarm(&f.agent, first_features(2), SwarmConfig::default());
    let msm = first_features(1).features[0].agent_config();
    let e = swarm.add(f.agent.clone(), msm).unwrap_err();
    assert!(e.to_string().contains("runs already"), "{e}");
}

#[test]
fn without_a_database_eviction_is_refused_rather_than_lossy() {
    let f = fixture();
    let swarm = Swarm::start(
        f.host.clone(),
        f.agent.clone(),
        crate::router(first_features(1)),
        None,
        SwarmConfig::default(),
        |_| {},
    )
    .unwrap();
    let e = swarm.evict(0, EvictReason::Requested).unwrap_err();
    assert!(matches!(e, Error::Lifecycle { .. }) && e.to_string().contains("snapshot database"), "{e}");
    assert!(swarm.save([0]).is_err());
    assert_eq!(swarm.status(0).unwrap().state, AgentState::Running);
}

#[test]
fn what_an_agent_learned_survives_a_new_swarm() {
    let f = fixture();
    let learned = {
        let swarm = f.swarm(&f.agent, first_features(1), SwarmConfig::default());
        let q = swarm.ask(0, QUESTION).unwrap().response;
        swarm.feedback(0, &q.query_id, 1.0).unwrap();
        let v = swarm.ask(0, QUESTION).unwrap().response.q_value;
        swarm.save([0]).unwrap();
        v
    };
    let swarm = f.swarm(&f.agent, first_features(1), SwarmConfig::default());
    assert_eq!(swarm.ask(0, QUESTION).unwrap().response.q_value, learned);
    assert!(learned > 0.0);
}

#[test]
fn periodic_checkpoints_store_what_was_learned_without_a_save() {
    let f = fixture();
    let config = SwarmConfig { checkpoint_every: 2, ..SwarmConfig::default() };
    let learned = {
        let swarm = f.swarm(&f.agent, first_features(1), config.clone());
        let q = swarm.ask(0, QUESTION).unwrap().response;
        swarm.feedback(0, &q.query_id, 1.0).unwrap(); // the second call: a checkpoint
        swarm.ask(0, QUESTION).unwrap().response.q_value
    };
    let swarm = f.swarm(&f.agent, first_features(1), config);
    assert_eq!(swarm.ask(0, QUESTION).unwrap().response.q_value, learned);
}

#[test]
fn a_trapped_agent_is_recycled_and_answers_again() {
    let f = fixture();
    let swarm = f.swarm(&f.hostile, first_features(1), SwarmConfig::default());
    let mut rx = f.host.subscribe();
    let e = swarm.ask(0, "trap").unwrap_err();
    assert!(matches!(e, Error::Trap { .. }), "{e}");
    let seen = events(&mut rx);
    assert!(
        seen.iter().any(|e| matches!(e, Event::ExecutionFailed { agent, .. } if agent == MSM)),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, Event::AgentRecycled { agent, .. } if agent == MSM)), "{seen:?}");
    assert_eq!(swarm.ask(0, "hello").unwrap().response.content, "ok: hello");
    let s = swarm.status(0).unwrap();
    assert_eq!((s.state, s.usage.recycles, s.usage.errors, s.usage.calls), (AgentState::Running, 1, 1, 2));
}

#[test]
fn unhealthy_agents_are_recycled() {
    let f = fixture();
    let swarm = f.swarm(&f.hostile, first_features(2), SwarmConfig::default());
    swarm.ask(0, "sicken").unwrap();
    assert_eq!(swarm.check_health().unwrap(), (1, 1, 0));
    assert_eq!(swarm.status(0).unwrap().health, Health::Degraded);
    swarm.check_health().unwrap();
    // The third failure in a row: unhealthy, recycled into a fresh instance.
    let mut rx = f.host.subscribe();
    swarm.check_health().unwrap();
    let seen = events(&mut rx);
    assert!(seen.iter().any(|e| matches!(e, Event::AgentRecycled { agent, .. } if agent == MSM)), "{seen:?}");
    assert!(seen.iter().any(|e| matches!(e, Event::HealthChecked { .. })), "{seen:?}");
    let s = swarm.status(0).unwrap();
    assert_eq!((s.state, s.health, s.usage.recycles), (AgentState::Running, Health::Healthy, 1));
    assert_eq!(swarm.check_health().unwrap(), (2, 0, 0));
}

#[test]
fn memory_pressure_evicts_the_least_recently_used_and_idle_agents_go_too() {
    let f = fixture();
    let catalog = first_features(6);
    let one = {
        let probe = f.swarm(&f.agent, catalog.clone(), SwarmConfig::default());
        probe.memory_used() / 6
    };
    assert!(one > 0);
    // Room for five agents; six are live.
    let config = SwarmConfig { memory_limit_bytes: one * 5, ..SwarmConfig::default() };
    let swarm = f.swarm(&f.agent, catalog.clone(), config);
    for i in 0..6 {
        swarm.ask(i, "what is it?").unwrap();
    }
    let mut rx = f.host.subscribe();
    let upkeep = swarm.maintain().unwrap();
    assert!(upkeep.pressure >= Pressure::High, "{upkeep:?}");
    assert_eq!(upkeep.evicted.first(), Some(&0), "least recently used first: {upkeep:?}");
    assert!(swarm.memory_used() < one * 5 * 70 / 100, "{upkeep:?}");
    let seen = events(&mut rx);
    assert!(seen.iter().any(|e| matches!(e, Event::MemoryPressure { .. })), "{seen:?}");
    let evictions = seen.iter().filter(|e| matches!(e, Event::AgentEvicted { .. })).count();
    assert_eq!(evictions, upkeep.evicted.len());
    // An evicted agent comes back on its next call.
    let r = swarm.ask(0, "what is it?").unwrap();
    assert_eq!(r.response.agent_id, MSM);
    drop(swarm);

    // Idle eviction (timeout zero here) takes every running agent.
    let config = SwarmConfig { idle_timeout: Some(Duration::ZERO), ..SwarmConfig::default() };
    let swarm = f.swarm(&f.agent, catalog, config);
    assert_eq!(swarm.maintain().unwrap().evicted, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(swarm.memory_used(), 0);
    assert_eq!(swarm.status(3).unwrap().state, AgentState::Evicted);
}

#[test]
fn usage_counts_calls_latency_and_fuel_across_runs_and_loads_are_events() {
    let config = HostConfig {
        fuel: true,
        budgets: elex_host::Budgets { fuel_per_call: Some(5_000_000_000), ..elex_host::Budgets::default() },
        ..HostConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(Host::new(config).unwrap());
    let mut rx = host.subscribe();
    let agent = Arc::new(host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap());
    match rx.try_recv().unwrap() {
        Event::ModuleLoaded { digest, size, millis, .. } => {
            assert_eq!((digest.as_str(), size), (agent.digest.as_str(), agent.size));
            assert!(millis > 0.0);
        }
        other => panic!("expected ModuleLoaded, got {other:?}"),
    }
    let store = Arc::new(SnapshotStore::open(&dir.path().join("agents.redb")).unwrap());
    let start = || {
        Swarm::start(
            host.clone(),
            agent.clone(),
            crate::router(first_features(1)),
            Some(store.clone()),
            SwarmConfig::default(),
            |_| {},
        )
        .unwrap()
    };
    {
        let swarm = start();
        for _ in 0..3 {
            swarm.ask(0, "Which parameters control MIMO Sleep Mode?").unwrap();
        }
        let u = swarm.status(0).unwrap().usage;
        assert_eq!((u.calls, u.errors, u.latency.count()), (3, 0, 3));
        assert!(u.fuel_used > 0, "fuel is metered: {u:?}");
        assert!(u.latency.quantile(0.5).unwrap() <= u.latency.quantile(0.99).unwrap());
        assert!(u.memory_peak_bytes > 0);
        swarm.save([]).unwrap();
    }
    assert_eq!(store.usage(MSM).unwrap().expect("stored").calls, 3);
    let swarm = start();
    swarm.ask(0, QUESTION).unwrap();
    swarm.save([]).unwrap();
    assert_eq!(store.usage(MSM).unwrap().unwrap().calls, 4, "use is cumulative across runs");
}
