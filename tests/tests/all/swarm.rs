//! Linked instances: `elex:host/routing` in a swarm. Consults reach the
//! callee, are held to the depth limit, refuse cycles and appear in the
//! trace; peers follow the catalog; an agent started alone is told routing
//! is unavailable. The swarm of real feature agents answers routed queries.

use std::sync::Arc;

use elex_host::{Host, HostConfig, Swarm, SwarmConfig};
use elex_ran::{Catalog, Reason, Router};
use elex_tests::component_path;

const A: &str = "FAJ 000 0001";
const B: &str = "FAJ 000 0002";
const C: &str = "FAJ 000 0003";
const D: &str = "FAJ 000 0004";

fn chain_catalog() -> Arc<Catalog> {
    let line = |faj: &str, name: &str, requires: &[&str]| {
        let requires: Vec<String> = requires.iter().map(|r| format!("{r:?}")).collect();
        format!(r#"{{"faj":"{faj}","name":"{name}","requires":[{}]}}"#, requires.join(","))
    };
    let text = [line(A, "Alpha", &[B]), line(B, "Beta", &[C]), line(C, "Gamma", &[D]), line(D, "Delta", &[])]
        .join("\n");
    Arc::new(Catalog::parse("test", &text).unwrap())
}

fn fixture_swarm() -> (Arc<Router>, Swarm) {
    let host = Arc::new(Host::new(HostConfig::default()).unwrap());
    let fixture = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let router = crate::router(chain_catalog());
    let swarm =
        Swarm::start(host, Arc::new(fixture), router.clone(), None, SwarmConfig::default(), |_| {}).unwrap();
    (router, swarm)
}

#[test]
fn consults_follow_the_chain_within_the_depth_limit() {
    let (router, swarm) = fixture_swarm();
    let a = router.index_of(A).unwrap();
    let ask = |text: &str| swarm.ask(a, text).unwrap();

    let two = ask(&format!("consult {B}|consult {C}|hello"));
    assert_eq!(two.response.content, format!("consulted {B}: consulted {C}: ok: hello"));
    let hops: Vec<(&str, &str, u32, &str)> =
        two.trace.iter().map(|h| (h.from.as_str(), h.to.as_str(), h.depth, h.outcome.as_str())).collect();
    assert_eq!(hops, [(A, B, 1, "ok"), (B, C, 2, "ok")]);

    let three = ask(&format!("consult {B}|consult {C}|consult {D}|hello"));
    assert!(three.response.content.contains("DepthExceeded(2)"), "{}", three.response.content);

    let cycle = ask(&format!("consult {B}|consult {A}|hello"));
    assert!(
        cycle.response.content.contains(&format!("Cycle([\"{A}\", \"{B}\", \"{A}\"])")),
        "{}",
        cycle.response.content
    );
    let unknown = ask("consult FAJ 999 9999|hello");
    assert!(unknown.response.content.contains("UnknownAgent"), "{}", unknown.response.content);

    let b = router.index_of(B).unwrap();
    let peers = swarm.ask(b, "peers").unwrap().response.content;
    assert_eq!(peers, format!("Relation::Requires:{C}, Relation::RequiredBy:{A}"));
}

#[test]
fn a_consult_into_a_failing_agent_is_an_error_not_a_crash() {
    let (router, swarm) = fixture_swarm();
    let a = router.index_of(A).unwrap();
    let r = swarm.ask(a, &format!("consult {B}|trap")).unwrap();
    assert!(r.response.content.contains("routing error: RoutingError::Failed"), "{}", r.response.content);
    assert!(r.response.content.contains("trapped"), "{}", r.response.content);
    assert!(r.trace[0].outcome.starts_with("failed"), "{:?}", r.trace);
    // The trapped callee was recycled: it answers the next consult.
    let again = swarm.ask(a, &format!("consult {B}|hello")).unwrap();
    assert_eq!(again.response.content, format!("consulted {B}: ok: hello"));
}

#[test]
fn an_agent_alone_is_told_routing_is_unavailable() {
    let host = Host::new(HostConfig::default()).unwrap();
    let fixture = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let mut alone = host.instantiate(&fixture, chain_catalog().features[0].agent_config()).unwrap();
    let r = alone.handle(&host.query(&format!("consult {B}|hi"))).unwrap();
    assert!(r.content.contains("Unavailable"), "{}", r.content);
}

#[test]
fn the_593_feature_agents_start_linked_and_answer_routed_queries() {
    let host = Arc::new(
        Host::new(HostConfig { max_instances: 700, max_memory_bytes: 16 << 20, ..HostConfig::default() })
            .unwrap(),
    );
    let agent = host.load_unsigned_file(&component_path("feature-agent.composed")).unwrap();
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let router = crate::router(catalog.clone());
    let started = std::sync::atomic::AtomicUsize::new(0);
    let swarm =
        Swarm::start(host.clone(), Arc::new(agent), router.clone(), None, SwarmConfig::default(), |n| {
            started.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(swarm.len(), 593);
    assert_eq!(started.into_inner(), 593);
    // Similarity routing in an hnsw component instance agrees with the
    // exact scan.
    let exact = Router::new(catalog.clone());
    let hnsw = std::fs::read(component_path("hnsw")).unwrap();
    router.attach_index(host.vector_index(&hnsw, &router.profile_rows(), 128).unwrap());
    assert!(router.has_index());
    for text in
        ["uplink interference in crowded cells", "energy saving at night", "handover between frequencies"]
    {
        let (Some((i, Reason::Similarity(s))), Some((j, Reason::Similarity(t)))) =
            (router.choose(text), exact.choose(text))
        else {
            panic!("{text}: routed by similarity")
        };
        assert!(i == j && (s - t).abs() < 1e-5, "{text}: {i} {s} vs {j} {t}");
        let (a, b) = (router.route(text, 5), exact.route(text, 5));
        assert_eq!(
            a.iter().map(|c| c.index).collect::<Vec<_>>(),
            b.iter().map(|c| c.index).collect::<Vec<_>>(),
            "{text}"
        );
    }
    assert!(matches!(host.vector_index(b"not a component", &[], 128), Err(elex_host::Error::Unfit { .. })));
    let query = |text: &str| {
        let (i, _) = router.choose(text).unwrap();
        (i, swarm.ask(i, text).unwrap())
    };
    let (i, a) = query("Which counters show the effect of MIMO Sleep Mode?");
    assert_eq!(catalog.features[i].faj, "FAJ 121 3094");
    assert!(a.response.content.contains("pmMimoSleep"), "{}", a.response.content);
    let (j, _) = query("What is FAJ 121 4219?");
    assert_eq!(catalog.features[j].faj, "FAJ 121 4219");
    // Feedback reaches the agent that answered.
    swarm.feedback(i, &a.response.query_id, 1.0).unwrap();
}
