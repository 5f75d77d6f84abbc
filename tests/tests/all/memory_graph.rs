//! Agents using the host's memory graph through `elex:host/memory-graph`
//! (driven by the testing fixture's `graph-*` commands): transactions commit
//! atomically, a trap or a call that returns with a transaction open rolls
//! it back, and one agent cannot read another's engrams.

use std::sync::Arc;

use elex_host::{AgentConfig, Host, HostConfig};
use elex_memgraph::{Actor, GraphConfig, MemoryGraph, SearchQuery};
use elex_tests::component_path;

fn config(id: &str) -> AgentConfig {
    AgentConfig { agent_id: id.into(), name: id.into(), settings: vec![], document: String::new() }
}

fn text(q: &str) -> SearchQuery {
    SearchQuery { text: Some(q.into()), limit: 10, ..SearchQuery::default() }
}

#[test]
fn agents_write_atomically_and_half_done_transactions_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let graph = Arc::new(MemoryGraph::open(&dir.path().join("memory.redb"), GraphConfig::default()).unwrap());
    let host = Host::new(HostConfig::default()).unwrap().with_memory_graph(graph.clone());
    let fixture = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let mut a = host.instantiate(&fixture, config("agent-a")).unwrap();
    let ask = |i: &mut elex_host::AgentInstance, q: &str| i.handle(&host.query(q)).map(|r| r.content);

    let ids = ask(&mut a, "graph-tx-commit committed words").unwrap();
    let ids: Vec<u64> = ids.split(' ').map(|x| x.parse().unwrap()).collect();
    let op = Actor::Operator;
    assert_eq!(graph.get(&op, ids[0]).unwrap().owner, "agent-a");
    assert_eq!(graph.connections(&op, ids[0]).unwrap()[0].target, ids[1]);
    assert_eq!(ask(&mut a, &format!("graph-get {}", ids[1])).unwrap(), "committed words (second)");
    assert_eq!(ask(&mut a, "graph-search committed").unwrap().split(' ').count(), 2);

    // A trap with a transaction open: nothing of it is stored.
    assert!(ask(&mut a, "graph-tx-trap vanishing words").is_err());
    assert!(graph.search(&op, &text("vanishing")).unwrap().is_empty());
    // Returning with a transaction open: rolled back too.
    let mut a2 = host.instantiate(&fixture, config("agent-a")).unwrap();
    let reply = ask(&mut a2, "graph-tx-open dangling words").unwrap();
    assert!(reply.starts_with("left open"), "{reply}");
    assert!(graph.search(&op, &text("dangling")).unwrap().is_empty());
    // And the next call may begin a new one.
    assert!(ask(&mut a2, "graph-tx-commit later words").unwrap().contains(' '));

    // Another agent cannot read agent-a's engrams.
    let mut b = host.instantiate(&fixture, config("agent-b")).unwrap();
    let denied = ask(&mut b, &format!("graph-get {}", ids[0])).unwrap();
    assert!(denied.contains("Denied") && denied.contains("agent-a"), "{denied}");
    assert_eq!(ask(&mut b, "graph-search committed").unwrap(), "");
    assert!(graph.check_integrity().unwrap().is_empty());
}

#[test]
fn without_a_graph_agents_are_told_it_is_unavailable() {
    let host = Host::new(HostConfig::default()).unwrap();
    let fixture = host.load_unsigned_file(&component_path("testing-hostile")).unwrap();
    let mut a = host.instantiate(&fixture, config("a")).unwrap();
    let reply = a.handle(&host.query("graph-get 1")).unwrap().content;
    assert!(reply.contains("Unavailable"), "{reply}");
}
