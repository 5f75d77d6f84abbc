//! Hostile guests: every misbehaviour ends that call with the right budget
//! error or trap within its limit, the instance is marked failed and can be
//! replaced, the host keeps running, and other instances keep answering
//! correctly while the attack runs.

use std::time::{Duration, Instant};

use elex_host::{
    AgentConfig, BudgetKind, Budgets, Error, Host, HostConfig, LoadedComponent, Swarm, SwarmConfig,
};
use elex_ran::Catalog;
use elex_tests::component_path;

const DEADLINE: Duration = Duration::from_millis(200);
const MEMORY: u64 = 32 << 20;

fn host() -> Host {
    Host::new(HostConfig {
        max_instances: 128,
        max_memory_bytes: 64 << 20,
        budgets: Budgets { call_deadline: DEADLINE, memory_bytes: MEMORY, ..Budgets::default() },
        ..HostConfig::default()
    })
    .unwrap()
}

fn hostile_config() -> AgentConfig {
    AgentConfig {
        agent_id: "hostile".into(),
        name: "hostile".into(),
        settings: vec![],
        document: String::new(),
    }
}

#[derive(Debug)]
enum Expect {
    Budget(BudgetKind),
    Trap,
}

fn attack(host: &Host, hostile: &LoadedComponent, text: &str, expect: Expect) {
    let mut agent = host.instantiate(hostile, hostile_config()).unwrap();
    let err = agent.handle(&host.query(text)).unwrap_err();
    match (&expect, &err) {
        (Expect::Budget(b), Error::Budget { kind, agent, call, limit, used }) => {
            assert_eq!(kind, b, "{text}: {err}");
            assert!(*kind != BudgetKind::Memory || used > limit, "{text}: {err}");
            assert_eq!((agent.as_str(), *call), ("hostile", "handle"));
        }
        (Expect::Trap, Error::Trap { .. }) => {}
        _ => panic!("{text}: expected {expect:?}, got {err}"),
    }
    // The broken instance refuses further calls ...
    let again = agent.handle(&host.query("hello")).unwrap_err();
    assert!(matches!(again, Error::Failed { .. }), "{text}: {again}");
    assert!(agent.failure().is_some());
    // ... and a fresh one in its place works.
    let mut fresh = host.instantiate(hostile, hostile_config()).unwrap();
    assert_eq!(fresh.handle(&host.query("hello")).unwrap().content, "ok: hello");
}

#[test]
fn every_misbehaviour_is_stopped_with_the_right_error() {
    let host = host();
    let hostile = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    attack(&host, &hostile, "loop", Expect::Budget(BudgetKind::Time));
    attack(&host, &hostile, "spam", Expect::Budget(BudgetKind::Time));
    attack(&host, &hostile, "bomb", Expect::Budget(BudgetKind::Memory));
    attack(&host, &hostile, "huge", Expect::Budget(BudgetKind::Memory));
    attack(&host, &hostile, "recurse", Expect::Trap);
    attack(&host, &hostile, "trap", Expect::Trap);
    attack(&host, &hostile, "panic", Expect::Trap);
}

#[test]
fn a_hundred_agents_keep_answering_during_attacks() {
    let host = host();
    let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap();
    let hostile = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let catalog = Catalog::embedded().unwrap();
    let mut agents: Vec<_> = catalog
        .features
        .iter()
        .take(100)
        .map(|f| host.instantiate(&agent, f.agent_config()).unwrap())
        .collect();
    let mut attackers: Vec<_> = ["loop", "bomb", "spam", "panic"]
        .iter()
        .map(|t| (t.to_string(), host.instantiate(&hostile, hostile_config()).unwrap()))
        .collect();
    std::thread::scope(|s| {
        let host = &host;
        let handles: Vec<_> = attackers
            .iter_mut()
            .map(|(text, a)| s.spawn(move || a.handle(&host.query(text)).unwrap_err()))
            .collect();
        // Keep every agent answering until every attack has been stopped.
        let mut round = 0;
        while round < 3 || handles.iter().any(|h| !h.is_finished()) {
            round += 1;
            for (i, a) in agents.iter_mut().enumerate() {
                let faj = &catalog.features[i].faj;
                let r = a.handle(&host.query(&format!("What is {faj}?"))).unwrap();
                assert_eq!(&r.agent_id, faj, "round {round}");
                assert!(r.content.contains(faj.as_str()), "round {round}: {}", r.content);
            }
        }
        for h in handles {
            let e = h.join().unwrap();
            assert!(matches!(e, Error::Budget { .. } | Error::Trap { .. }), "{e}");
        }
    });
}

#[test]
fn fuel_budgets_stop_loops_too() {
    let host = Host::new(HostConfig {
        fuel: true,
        budgets: Budgets {
            fuel_per_call: Some(50_000_000),
            call_deadline: Duration::from_secs(30),
            ..Budgets::default()
        },
        ..HostConfig::default()
    })
    .unwrap();
    let hostile = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let mut agent = host.instantiate(&hostile, hostile_config()).unwrap();
    assert_eq!(agent.handle(&host.query("hello")).unwrap().content, "ok: hello", "fuel is refilled per call");
    let e = agent.handle(&host.query("loop")).unwrap_err();
    assert!(matches!(e, Error::Budget { kind: BudgetKind::Fuel, .. }), "{e}");
    // A fuel budget without fuel metering is a configuration error.
    let e = Host::new(HostConfig {
        budgets: Budgets { fuel_per_call: Some(1), ..Budgets::default() },
        ..HostConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[test]
fn callers_beyond_the_queue_get_busy_at_once() {
    let host = Host::new(HostConfig {
        budgets: Budgets { call_deadline: Duration::from_secs(2), queue_depth: 1, ..Budgets::default() },
        ..HostConfig::default()
    })
    .unwrap();
    let host = std::sync::Arc::new(host);
    let hostile = std::sync::Arc::new(host.load_unsigned_file(&component_path("testing-hostile")).unwrap());
    let swarm = Swarm::start(
        host,
        hostile,
        crate::router(crate::first_features(1)),
        None,
        SwarmConfig::default(),
        |_| {},
    )
    .unwrap();
    let in_flight = || swarm.status(0).unwrap().in_flight;
    let until = |n: u32| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_flight() < n {
            assert!(Instant::now() < deadline, "callers did not arrive");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let ask = |text: &str| swarm.ask(0, text);
    std::thread::scope(|s| {
        // One caller runs (a loop, stopped at its deadline), one waits ...
        let running = s.spawn(|| ask("loop"));
        until(1);
        let waiting = s.spawn(|| ask("hello"));
        until(2);
        // ... and the next is turned away at once.
        let e = ask("hello").unwrap_err();
        assert!(matches!(e, Error::Busy { queue_depth: 1, .. }), "{e}");
        assert_eq!(in_flight(), 2, "a refused caller does not stay queued");
        let first = running.join().unwrap().unwrap_err();
        assert!(matches!(first, Error::Budget { kind: BudgetKind::Time, .. }), "{first}");
        // The waiter ran after it, on the fresh instance that replaced the
        // one the loop broke.
        assert_eq!(waiting.join().unwrap().unwrap().response.content, "ok: hello");
    });
    assert_eq!(in_flight(), 0);
    assert_eq!(swarm.status(0).unwrap().usage.recycles, 1);
}

#[test]
fn a_full_instance_pool_is_named_not_called_a_trap() {
    let host = Host::new(HostConfig { max_instances: 2, ..HostConfig::default() }).unwrap();
    let hostile = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let _a = host.instantiate(&hostile, hostile_config()).unwrap();
    let _b = host.instantiate(&hostile, hostile_config()).unwrap();
    let e = host.instantiate(&hostile, hostile_config()).unwrap_err();
    assert!(matches!(e, Error::Capacity { .. }), "{e}");
    assert!(e.to_string().contains("max_instances"), "{e}");
}
