//! A hostile `elex:platform/plugin` guest for the host's budget tests.
//! `handle` misbehaves according to the query text:
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

impl Guest for Hostile {
    fn init(_config: AgentConfig) -> Result<(), AgentError> {
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
            other => alloc::format!("ok: {other}"),
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
