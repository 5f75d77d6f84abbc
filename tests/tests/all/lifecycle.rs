//! The agent pool: lifecycle transitions, eviction that loses nothing,
//! recycling after traps, health, memory pressure and persistence across
//! runs.

use std::sync::Arc;
use std::time::Duration;

use elex_host::pool::{AgentPool, Event, EvictReason, Health, PoolLimits, Pressure, State};
use elex_host::snapshots::SnapshotStore;
use elex_host::{AgentConfig, Catalog, Error, Host, HostConfig, LoadedComponent};
use elex_tests::component_path;

struct Fixture {
    dir: tempfile::TempDir,
    host: Arc<Host>,
    agent: Arc<LoadedComponent>,
    hostile: Arc<LoadedComponent>,
    catalog: Catalog,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(Host::new(HostConfig::default()).unwrap());
    let agent = Arc::new(host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap());
    let hostile = Arc::new(host.load_unsigned_file(&component_path("testing-hostile")).unwrap());
    Fixture { dir, host, agent, hostile, catalog: Catalog::embedded().unwrap() }
}

impl Fixture {
    fn pool(&self, limits: PoolLimits) -> AgentPool {
        let store = SnapshotStore::open(&self.dir.path().join("elex.redb")).unwrap();
        AgentPool::new(self.host.clone(), Some(store), limits)
    }
    fn config(&self, faj: &str) -> AgentConfig {
        self.catalog.by_faj(faj).unwrap().agent_config()
    }
}

const MSM: &str = "FAJ 121 3094";

#[test]
fn an_evicted_agent_answers_as_it_did_before() {
    let f = fixture();
    let mut pool = f.pool(PoolLimits::default());
    pool.spawn(f.agent.clone(), f.config(MSM), false).unwrap();
    let q = f.host.query("What is MIMO Sleep Mode?");
    let first = pool.handle(MSM, &q).unwrap();
    pool.feedback(MSM, &q.id, 1.0).unwrap();
    let learned = pool.handle(MSM, &f.host.query("What is MIMO Sleep Mode?")).unwrap();
    assert!(
        learned.q_value > first.q_value,
        "feedback raised the value: {} -> {}",
        first.q_value,
        learned.q_value
    );

    pool.evict(MSM, EvictReason::Requested).unwrap();
    assert_eq!(pool.status(MSM).unwrap().state, State::Evicted);
    let after = pool.handle(MSM, &f.host.query("What is MIMO Sleep Mode?")).unwrap();
    assert_eq!(pool.status(MSM).unwrap().state, State::Running);
    assert_eq!(
        (after.action, after.q_value, &after.content),
        (learned.action, learned.q_value, &learned.content)
    );
    let status = pool.status(MSM).unwrap();
    assert_eq!(status.usage.evictions, 1);
    assert_eq!(status.usage.calls, 4);
}

#[test]
fn what_an_agent_learned_survives_a_new_pool() {
    let f = fixture();
    let learned_q = {
        let mut pool = f.pool(PoolLimits::default());
        pool.spawn(f.agent.clone(), f.config(MSM), false).unwrap();
        let q = f.host.query("What is MIMO Sleep Mode?");
        pool.handle(MSM, &q).unwrap();
        pool.feedback(MSM, &q.id, 1.0).unwrap();
        let v = pool.handle(MSM, &f.host.query("What is MIMO Sleep Mode?")).unwrap().q_value;
        pool.stop(MSM).unwrap();
        assert_eq!(pool.status(MSM).unwrap().state, State::Stopped);
        v
    };
    let mut pool = f.pool(PoolLimits::default());
    let mut events = pool.subscribe();
    pool.spawn(f.agent.clone(), f.config(MSM), false).unwrap();
    assert_eq!(events.try_recv().unwrap(), Event::AgentSpawned { agent: MSM.into(), restored: true });
    let again = pool.handle(MSM, &f.host.query("What is MIMO Sleep Mode?")).unwrap();
    assert_eq!(again.q_value, learned_q);
    assert!(learned_q > 0.0);
}

#[test]
fn invalid_transitions_are_errors() {
    let f = fixture();
    let mut pool = f.pool(PoolLimits::default());
    pool.spawn(f.agent.clone(), f.config(MSM), true).unwrap();
    let lifecycle = |r: Result<(), Error>| matches!(r, Err(Error::Lifecycle { .. }));
    assert!(lifecycle(pool.spawn(f.agent.clone(), f.config(MSM), false)), "one instance per id");
    assert!(lifecycle(pool.resume(MSM)), "resume a running agent");
    pool.pause(MSM).unwrap();
    assert!(lifecycle(pool.pause(MSM)));
    assert!(
        matches!(pool.handle(MSM, &f.host.query("x")), Err(Error::Lifecycle { .. })),
        "paused refuses calls"
    );
    pool.resume(MSM).unwrap();
    assert!(lifecycle(pool.evict(MSM, EvictReason::Requested)), "critical agents are never evicted");
    pool.stop(MSM).unwrap();
    assert!(lifecycle(pool.stop(MSM)));
    assert!(matches!(pool.handle(MSM, &f.host.query("x")), Err(Error::Lifecycle { .. })));
    assert!(matches!(pool.handle("FAJ 000 0000", &f.host.query("x")), Err(Error::Lifecycle { .. })));
}

fn hostile_config(id: &str) -> AgentConfig {
    AgentConfig { agent_id: id.into(), name: id.into(), settings: vec![], document: String::new() }
}

#[test]
fn a_trapped_agent_is_recycled_and_answers_again() {
    let f = fixture();
    let mut pool = f.pool(PoolLimits::default());
    let mut events = pool.subscribe();
    pool.spawn(f.hostile.clone(), hostile_config("h"), false).unwrap();
    assert!(matches!(pool.handle("h", &f.host.query("trap")), Err(Error::Trap { .. })));
    let seen: Vec<Event> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(
        seen.iter().any(|e| matches!(e, Event::ExecutionFailed { agent, .. } if agent == "h")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, Event::AgentRecycled { agent, .. } if agent == "h")), "{seen:?}");
    assert_eq!(pool.handle("h", &f.host.query("hello")).unwrap().content, "ok: hello");
    let s = pool.status("h").unwrap();
    assert_eq!((s.state, s.usage.recycles, s.usage.errors), (State::Running, 1, 1));
}

#[test]
fn unhealthy_agents_are_recycled() {
    let f = fixture();
    let mut pool = f.pool(PoolLimits::default());
    pool.spawn(f.hostile.clone(), hostile_config("h"), false).unwrap();
    pool.spawn(f.agent.clone(), f.config(MSM), false).unwrap();
    pool.handle("h", &f.host.query("sicken")).unwrap();
    assert_eq!(pool.check_health().unwrap(), (1, 1, 0));
    assert_eq!(pool.status("h").unwrap().health, Health::Degraded);
    pool.check_health().unwrap();
    // Third failure: unhealthy, recycled into a fresh, healthy instance.
    pool.check_health().unwrap();
    let s = pool.status("h").unwrap();
    assert_eq!((s.state, s.usage.recycles), (State::Running, 1));
    assert_eq!(pool.check_health().unwrap(), (2, 0, 0));
}

#[test]
fn idle_and_memory_pressure_evict_least_recently_used_never_critical() {
    let f = fixture();
    let ids: Vec<String> = f.catalog.features.iter().take(6).map(|x| x.faj.clone()).collect();
    // Measure one agent's memory, then give the pool room for about four.
    let mut probe = f.pool(PoolLimits::default());
    probe.spawn(f.agent.clone(), f.config(&ids[0]), false).unwrap();
    let one = probe.memory_used();
    drop(probe);
    let mut pool =
        f.pool(PoolLimits { memory_bytes: one * 5, idle_timeout: Duration::ZERO, checkpoint_every: 0 });
    pool.spawn(f.agent.clone(), f.config(&ids[0]), true).unwrap(); // critical, and least recently used
    for id in &ids[1..] {
        pool.spawn(f.agent.clone(), f.config(id), false).unwrap();
    }
    let (level, evicted) = pool.relieve_memory_pressure().unwrap();
    assert!(level >= Pressure::High, "{level:?}");
    assert!(!evicted.contains(&ids[0]), "critical agents stay");
    assert_eq!(evicted.first(), Some(&ids[1]), "least recently used first: {evicted:?}");
    assert!(pool.memory_used() < one * 5 * 70 / 100);
    // Evicted agents come back on their next call.
    let r = pool.handle(&ids[1], &f.host.query("what is it?")).unwrap();
    assert_eq!(r.agent_id, ids[1]);
    // Idle eviction (timeout zero here) takes every running non-critical agent.
    let idle = pool.evict_idle().unwrap();
    assert!(idle.contains(&ids[1]) && !idle.contains(&ids[0]), "{idle:?}");
    assert_eq!(pool.status(&ids[0]).unwrap().state, State::Running);
}

#[test]
fn usage_counts_calls_latency_and_fuel_across_runs_and_loads_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        fuel: true,
        budgets: elex_host::Budgets { fuel_per_call: Some(5_000_000_000), ..elex_host::Budgets::default() },
        ..HostConfig::default()
    };
    let host = Arc::new(Host::new(config).unwrap());
    let mut events = host.subscribe();
    let agent = Arc::new(host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap());
    match events.try_recv().unwrap() {
        Event::ModuleLoaded { digest, size, millis, .. } => {
            assert_eq!((digest.as_str(), size), (agent.digest.as_str(), agent.size));
            assert!(millis > 0.0);
        }
        other => panic!("expected ModuleLoaded, got {other:?}"),
    }
    let catalog = Catalog::embedded().unwrap();
    let db = dir.path().join("agents.redb");
    {
        let mut pool =
            AgentPool::new(host.clone(), Some(SnapshotStore::open(&db).unwrap()), PoolLimits::default());
        pool.spawn(agent.clone(), catalog.by_faj(MSM).unwrap().agent_config(), false).unwrap();
        for _ in 0..3 {
            pool.handle(MSM, &host.query("Which parameters control MIMO Sleep Mode?")).unwrap();
        }
        let u = pool.status(MSM).unwrap().usage;
        assert_eq!((u.calls, u.errors, u.latency.count()), (3, 0, 3));
        assert!(u.fuel_used > 0, "fuel is metered: {u:?}");
        assert!(u.latency.quantile(0.5).unwrap() <= u.latency.quantile(0.99).unwrap());
        assert!(u.memory_peak_bytes > 0);
        pool.save_usage().unwrap();
    }
    let stored = SnapshotStore::open(&db).unwrap().usage(MSM).unwrap().expect("stored");
    assert_eq!(stored.calls, 3);
    let mut pool =
        AgentPool::new(host.clone(), Some(SnapshotStore::open(&db).unwrap()), PoolLimits::default());
    pool.spawn(agent, catalog.by_faj(MSM).unwrap().agent_config(), false).unwrap();
    pool.handle(MSM, &host.query("What is MIMO Sleep Mode?")).unwrap();
    assert_eq!(pool.status(MSM).unwrap().usage.calls, 4, "use is cumulative across runs");
}
