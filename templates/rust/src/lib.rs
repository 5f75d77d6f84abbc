//! {{name}}: an elex plugin in Rust. It implements `elex:agent/agent` of the
//! `elex:platform/plugin` world (the WIT in `wit/`). Build it with
//! `elex build`; load it with `elex load`.

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "elex:platform/plugin@0.1.0",
    path: "wit",
    generate_all,
});

use elex::agent::types::{
    Action, AgentConfig, AgentError, CounterSample, HealthReport, HealthStatus, KpiValue, ParameterValue,
    Query, Response, Validation,
};
use elex::host::log::{self, Level};
use exports::elex::agent::agent::Guest;

/// What the agent keeps between calls (one instance serves one agent).
#[derive(Default)]
struct State {
    agent_id: String,
    name: String,
    answered: u64,
    rewards: Vec<f32>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: AgentConfig) -> Result<(), AgentError> {
        STATE.with_borrow_mut(|s| {
            s.agent_id = config.agent_id;
            s.name = config.name;
            log::log(Level::Info, &format!("{} ready", s.name), &[]);
        });
        Ok(())
    }

    fn handle(query: Query) -> Result<Response, AgentError> {
        if query.text.trim().is_empty() {
            return Err(AgentError::InvalidInput(String::from("the question is empty")));
        }
        STATE.with_borrow_mut(|s| {
            s.answered += 1;
            println!("answering {}", query.id);
            let q_value = if s.rewards.is_empty() { 0.0 } else { s.rewards.iter().sum::<f32>() / s.rewards.len() as f32 };
            Ok(Response {
                query_id: query.id,
                agent_id: s.agent_id.clone(),
                action: Action::DirectAnswer,
                content: format!("{} (rust) heard: {}", s.name, query.text),
                confidence: 0.5,
                q_value,
                sources: Vec::new(),
            })
        })
    }

    fn feedback(_query_id: String, reward: f32) -> Result<(), AgentError> {
        if !(-1.0..=1.0).contains(&reward) {
            return Err(AgentError::InvalidInput(String::from("reward must be in [-1, 1]")));
        }
        STATE.with_borrow_mut(|s| s.rewards.push(reward));
        Ok(())
    }

    fn validate(_parameters: Vec<ParameterValue>) -> Result<Vec<Validation>, AgentError> {
        Ok(Vec::new())
    }

    fn kpis(_samples: Vec<CounterSample>) -> Result<Vec<KpiValue>, AgentError> {
        Ok(Vec::new())
    }

    /// The learned state: the answer count, then each reward (little-endian).
    fn snapshot() -> Result<Vec<u8>, AgentError> {
        Ok(STATE.with_borrow(|s| {
            let mut bytes = s.answered.to_le_bytes().to_vec();
            s.rewards.iter().for_each(|r| bytes.extend_from_slice(&r.to_le_bytes()));
            bytes
        }))
    }

    fn restore(bytes: Vec<u8>) -> Result<(), AgentError> {
        let corrupt = || AgentError::CorruptState(String::from("not a snapshot of this plugin"));
        let (count, rewards) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
        if rewards.len() % 4 != 0 {
            return Err(corrupt());
        }
        STATE.with_borrow_mut(|s| {
            s.answered = u64::from_le_bytes(count.try_into().unwrap_or_default());
            s.rewards = rewards.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        });
        Ok(())
    }

    fn health() -> HealthReport {
        let answered = STATE.with_borrow(|s| s.answered);
        HealthReport { status: HealthStatus::Healthy, detail: format!("{answered} answered") }
    }
}

export!(Plugin);
