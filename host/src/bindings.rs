//! Rust bindings of the `elex:platform/plugin` world, generated from the WIT in
//! `wit/` by wasmtime's `bindgen!`.

/// What `bindgen!` generates: the WIT's own doc comments become rustdoc, and
/// the items the WIT leaves undocumented are allowed to stay so.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "elex:platform/plugin",
    });
}

pub use generated::*;

pub use elex::agent::types::{
    Action, AgentConfig, AgentError, CounterSample, HealthReport, HealthStatus, KpiStatus, KpiValue,
    ParameterValue, Query, Response, Validation, Verdict,
};

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::DirectAnswer => "direct-answer",
            Action::ContextAnswer => "context-answer",
            Action::ConsultPeer => "consult-peer",
            Action::RequestClarification => "request-clarification",
            Action::Escalate => "escalate",
        })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::BelowMinimum => "below-minimum",
            Verdict::AboveMaximum => "above-maximum",
            Verdict::UnknownParameter => "unknown-parameter",
            Verdict::NoRange => "no-range",
            Verdict::NotANumber => "not-a-number",
        })
    }
}

impl std::fmt::Display for KpiStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KpiStatus::Ok => "ok",
            KpiStatus::Warning => "warning",
            KpiStatus::Breach => "breach",
            KpiStatus::NoData => "no-data",
        })
    }
}

/// A guest's own error as one line of text.
pub fn describe_agent_error(e: &AgentError) -> String {
    match e {
        AgentError::InvalidInput(s) => format!("invalid input: {s}"),
        AgentError::NotInitialized => String::from("not initialised"),
        AgentError::Unsupported(s) => format!("unsupported: {s}"),
        AgentError::CorruptState(s) => format!("corrupt state: {s}"),
        AgentError::Dependency(s) => format!("dependency failed: {s}"),
        AgentError::Internal(s) => format!("internal error: {s}"),
    }
}
