//! A hostile `elex:platform/plugin` guest for the host's budget tests.
//! `init` spins forever when the agent's name contains `[spin-at-init]` (an
//! agent that can never start). `handle` misbehaves according to the query
//! text:
//!
//! | text | behaviour | the host must answer |
//! |---|---|---|
//! | `loop` | spins forever | time budget |
//! | `bomb` | allocates 1 MiB blocks until refused | memory budget |
//! | `recurse` | unbounded recursion | trap (stack overflow) |
//! | `trap` | executes `unreachable` | trap |
//! | `panic` | panics | trap |
//! | `huge` | builds a 256 MiB answer | memory budget |
//! | `spam` | calls the host's `log` in a tight loop forever | time budget |
//! | `sicken` | answers, but `health()` reports unhealthy from then on | recycling |
//! | `graph-tx-trap <text>` | begins a memory-graph transaction, creates an engram, traps | roll the transaction back |
//! | `graph-tx-open <text>` | begins a transaction, creates an engram, returns without commit | roll it back |
//! | `graph-tx-commit <text>` | in one transaction: two engrams, an edge between them; commits | both, connected |
//! | `graph-get <id>` | reads engram `<id>` | its content, or the error |
//! | `graph-search <words>` | searches its visible engrams | the ids found |
//! | `consult <agent>\|<text>` | asks `<agent>` `<text>` through `elex:host/routing` | the answer, or the routing error |
//! | `peers` | lists its dependency peers | `relation:agent` pairs |
//!
//! Anything else gets a normal answer, so a recycled instance can be seen to
//! work again.
#![no_std]

extern crate alloc;
use elex_guest_rt as _;

use alloc::string::String;
use alloc::vec::Vec;

wit_bindgen::generate!({
    world: "elex:platform/plugin@0.1.0",
    path: "../../../wit",
    std_feature,
    generate_all,
});

use elex::agent::types::{
    Action, AgentConfig, AgentError, CounterSample, HealthReport, HealthStatus, KpiValue, ParameterValue,
    Query, Response, Validation,
};
use elex::host::memory_graph::{self as graph_api, Connection, EngramData, GraphError, SearchQuery};
use exports::elex::agent::agent::Guest;

struct Hostile;

/// Set by `sicken`; a new instance starts healthy.
static SICK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    // The black boxes keep the frame and the recursion from being optimised
    // into a loop.
    let local = [n; 16];
    core::hint::black_box(&local);
    recurse(core::hint::black_box(n + 1)) + local[3]
}

fn engram(text: &str) -> EngramData {
    EngramData {
        content: String::from(text),
        source: String::from("hostile"),
        confidence: 0.5,
        metadata: Vec::new(),
    }
}

/// The memory-graph commands; errors are answered as text.
fn graph(command: &str, arg: &str) -> String {
    let result: Result<String, GraphError> = (|| match command {
        "graph-tx-trap" => {
            graph_api::begin()?;
            graph_api::create(&engram(arg), None)?;
            core::arch::wasm32::unreachable()
        }
        "graph-tx-open" => {
            graph_api::begin()?;
            let id = graph_api::create(&engram(arg), None)?;
            Ok(alloc::format!("left open after creating {id}"))
        }
        "graph-tx-commit" => {
            graph_api::begin()?;
            let a = graph_api::create(&engram(arg), None)?;
            let b = graph_api::create(&engram(&alloc::format!("{arg} (second)")), None)?;
            graph_api::connect(&Connection {
                source: a,
                target: b,
                relation: String::from("follows"),
                weight: 1.0,
                metadata: Vec::new(),
            })?;
            graph_api::commit()?;
            Ok(alloc::format!("{a} {b}"))
        }
        "graph-get" => {
            let id: u64 = arg.parse().map_err(|_| GraphError::Invalid(String::from("not an id")))?;
            Ok(graph_api::get(id)?.content)
        }
        "graph-search" => {
            let hits = graph_api::search(&SearchQuery {
                text: Some(String::from(arg)),
                metadata: Vec::new(),
                context: None,
                limit: 10,
            })?;
            Ok(hits.iter().map(|h| alloc::format!("{}", h.id)).collect::<Vec<_>>().join(" "))
        }
        other => Ok(alloc::format!("unknown graph command {other}")),
    })();
    result.unwrap_or_else(|e| alloc::format!("graph error: {e:?}"))
}

impl Guest for Hostile {
    fn init(config: AgentConfig) -> Result<(), AgentError> {
        // An agent that cannot start: its init spins.
        if config.name.contains("[spin-at-init]") {
            let mut i = 0u64;
            loop {
                i = core::hint::black_box(i.wrapping_add(1));
            }
        }
        Ok(())
    }

    fn handle(query: Query) -> Result<Response, AgentError> {
        let content = match query.text.as_str() {
            "loop" => {
                let mut i = 0u64;
                loop {
                    i = core::hint::black_box(i.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = alloc::vec![1u8; 1 << 20];
                    block[0] = hoard.len() as u8;
                    hoard.push(core::hint::black_box(block));
                }
            }
            "recurse" => alloc::format!("{}", recurse(0)),
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("hostile guest panics on request"),
            "huge" => {
                let mut s = String::new();
                for _ in 0..(256 << 20) / 64 {
                    s.push_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
                }
                s
            }
            "sicken" => {
                SICK.store(true, core::sync::atomic::Ordering::Relaxed);
                String::from("feeling unwell")
            }
            "spam" => loop {
                elex::host::log::log(elex::host::log::Level::Trace, "spam", &[]);
            },
            "peers" => match elex::host::routing::peers() {
                Ok(peers) => peers
                    .iter()
                    .map(|p| alloc::format!("{:?}:{}", p.relation, p.agent_id))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => alloc::format!("routing error: {e:?}"),
            },
            other if other.starts_with("consult ") => {
                let (agent, text) =
                    other["consult ".len()..].split_once('|').unwrap_or((&other["consult ".len()..], ""));
                match elex::host::routing::consult(agent, text) {
                    Ok(r) => alloc::format!("consulted {agent}: {}", r.content),
                    Err(e) => alloc::format!("routing error: {e:?}"),
                }
            }
            other => match other.split_once(' ') {
                Some((command, arg)) if command.starts_with("graph-") => graph(command, arg),
                _ => alloc::format!("ok: {other}"),
            },
        };
        Ok(Response {
            query_id: query.id,
            agent_id: String::from("hostile"),
            action: Action::DirectAnswer,
            content,
            confidence: 1.0,
            q_value: 0.0,
            sources: Vec::new(),
        })
    }

    fn feedback(_query_id: String, _reward: f32) -> Result<(), AgentError> {
        Ok(())
    }

    fn validate(_parameters: Vec<ParameterValue>) -> Result<Vec<Validation>, AgentError> {
        Ok(Vec::new())
    }

    fn kpis(_samples: Vec<CounterSample>) -> Result<Vec<KpiValue>, AgentError> {
        Ok(Vec::new())
    }

    fn snapshot() -> Result<Vec<u8>, AgentError> {
        Ok(Vec::new())
    }

    fn restore(_bytes: Vec<u8>) -> Result<(), AgentError> {
        Ok(())
    }

    fn health() -> HealthReport {
        if SICK.load(core::sync::atomic::Ordering::Relaxed) {
            HealthReport { status: HealthStatus::Unhealthy, detail: String::from("sickened on request") }
        } else {
            HealthReport {
                status: HealthStatus::Healthy,
                detail: String::from("hostile, but healthy until asked"),
            }
        }
    }
}

export!(Hostile);
