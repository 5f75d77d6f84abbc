//! The one error type of `elex-host`.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the host. Each variant says what failed
/// and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A component file could not be read.
    #[error("cannot read component {path}: {source}")]
    ReadComponent { path: PathBuf, source: std::io::Error },

    /// The bytes are not a component of the expected world.
    #[error("{what} cannot be loaded: {source}")]
    Unfit { what: String, source: elex_wit::FitError },

    /// wasmtime refused to compile or link the component.
    #[error("{what} cannot be compiled or linked: {detail}")]
    Compile { what: String, detail: String },

    /// The engine could not be set up from the configuration.
    #[error("invalid host configuration: {0}")]
    Config(String),

    /// A guest call was stopped because it exceeded one of its budgets.
    #[error("agent {agent}: call `{call}` exceeded its {budget} budget (limit {limit}, used {used})")]
    Budget { agent: String, call: &'static str, budget: &'static str, limit: String, used: String },

    /// The agent already has as many callers waiting as its queue allows.
    #[error("agent {agent} is busy: {queue_depth} callers are already waiting for it; retry later")]
    Busy { agent: String, queue_depth: u32 },

    /// The guest trapped (a panic, `unreachable`, out-of-bounds access, …).
    /// The instance must be recycled before it is called again.
    #[error("agent {agent}: call `{call}` trapped: {detail}")]
    Trap { agent: String, call: &'static str, detail: String },

    /// The guest returned its own error.
    #[error("agent {agent}: call `{call}` failed: {detail}")]
    Agent { agent: String, call: &'static str, detail: String },

    /// The instance failed earlier and has not been recycled.
    #[error("agent {agent} is failed (last error: {reason}); recycle it before calling it again")]
    Failed { agent: String, reason: String },

    /// The registry refused the component: not found, digest mismatch,
    /// unknown or revoked key, bad signature, key not allowed for the name.
    #[error(transparent)]
    Registry(#[from] elex_registry::Error),

    /// A registry entry declares a world the host does not load.
    #[error("{name}@{version} is published for world `{world}`; the host loads `{expected}`")]
    WrongWorld { name: String, version: String, world: String, expected: &'static str },

    /// An agent is not in a state that allows the request (invalid lifecycle
    /// transition, unknown agent, duplicate id, critical agent evicted).
    #[error("agent {agent}: {detail}")]
    Lifecycle { agent: String, detail: String },

    /// A workflow file is malformed, names unknown steps or has a cycle.
    #[error("workflow: {0}")]
    Workflow(String),

    /// The memory graph refused a call or failed.
    #[error("memory graph: {0}")]
    Graph(#[from] elex_memgraph::GraphError),

    /// The embedded database failed or has an unknown schema.
    #[error("database {path}: {detail}")]
    Storage { path: PathBuf, detail: String },

    /// The catalog data is malformed.
    #[error("catalog {source_name}, line {line}: {detail}")]
    Catalog { source_name: String, line: usize, detail: String },

    /// A question was empty or blank.
    #[error("the question is empty: ask something, e.g. \"What is FAJ 121 3094?\"")]
    NoQuestion,

    /// Feedback could not be given: unknown query, reward out of range,
    /// answered by another component.
    #[error("feedback: {0}")]
    Feedback(String),

    /// No agent has the id or name a request gave.
    #[error("no agent {0}")]
    NoAgent(String),
}

impl Error {
    pub(crate) fn timeout(agent: &str, call: &'static str, limit: Duration, used: Duration) -> Error {
        Error::Budget {
            agent: agent.to_string(),
            call,
            budget: "time",
            limit: format!("{} ms", limit.as_millis()),
            used: format!("{} ms", used.as_millis()),
        }
    }
}

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
