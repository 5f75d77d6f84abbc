//! The one error type of `elex-host`.

use std::path::PathBuf;
use std::time::Duration;

/// Which budget a call broke, and the unit of its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BudgetKind {
    /// CPU time per call, in milliseconds (the epoch deadline).
    Time,
    /// Linear memory of the instance, in bytes.
    Memory,
    /// Fuel per call, in fuel units.
    Fuel,
}

impl BudgetKind {
    /// `time`, `memory` or `fuel`.
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::Time => "time",
            BudgetKind::Memory => "memory",
            BudgetKind::Fuel => "fuel",
        }
    }

    /// The unit of the budget's numbers.
    pub fn unit(self) -> &'static str {
        match self {
            BudgetKind::Time => "ms",
            BudgetKind::Memory => "bytes",
            BudgetKind::Fuel => "fuel units",
        }
    }
}

impl std::fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in the host. Each variant says what failed
/// and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A component file could not be read.
    #[error("cannot read component {path}: {source}")]
    ReadComponent {
        /// The component file.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },

    /// The component's plugin manifest (its `elex:plugin-manifest` section)
    /// is malformed, or asks for what this host does not grant.
    #[error("{what}: {detail}")]
    Manifest {
        /// The component (a file path or `name@version`).
        what: String,
        /// What is wrong with the manifest.
        detail: String,
    },
    /// The bytes are not a component of the expected world.
    #[error("{what} cannot be loaded: {source}")]
    Unfit {
        /// What was being loaded, as messages name it: a file path,
        /// `name@version`, or the caller's name for the bytes.
        what: String,
        /// How the bytes differ from a component of the expected world.
        source: elex_wit::FitError,
    },

    /// wasmtime refused to compile or link the component.
    #[error("{what} cannot be compiled or linked: {detail}")]
    Compile {
        /// What was being loaded, as messages name it: a file path,
        /// `name@version`, or the caller's name for the bytes.
        what: String,
        /// wasmtime's error, with its causes.
        detail: String,
    },

    /// One instance of the component would create more core instances,
    /// memories or tables than the host's pooling allocator allows each.
    #[error("{what} needs {needs} {resource} per instance; this host allows {limit} (HostConfig::{setting})")]
    TooLarge {
        /// The component (a file path or `name@version`).
        what: String,
        /// `core instances`, `linear memories` or `tables`.
        resource: &'static str,
        /// How many one instance creates.
        needs: u32,
        /// How many the host allows each instance.
        limit: u32,
        /// The `HostConfig` field that sets the limit.
        setting: &'static str,
    },

    /// The host's pooling allocator has no free slot for another instance
    /// (or its memories or tables): more agents are live than
    /// `HostConfig::max_instances` allows.
    #[error(
        "agent {agent} cannot start: {detail}; the host holds at most HostConfig::max_instances live \
         instances (HostConfig::for_swarm(n) sizes it for n agents), or evict agents to free slots"
    )]
    Capacity {
        /// The agent that could not start.
        agent: String,
        /// wasmtime's words: which pool is full and its limit.
        detail: String,
    },

    /// The engine could not be set up from the configuration.
    #[error("invalid host configuration: {0}")]
    Config(String),

    /// A guest call was stopped because it exceeded one of its budgets;
    /// `limit` and `used` are in the kind's [unit](BudgetKind::unit) (for
    /// memory, `used` is what the call asked to hold).
    #[error("agent {agent}: call `{call}` exceeded its {kind} budget (limit {limit} {unit}, used {used} {unit})", unit = kind.unit())]
    Budget {
        /// The agent's id (its `agent_id`).
        agent: String,
        /// The guest export called: `init`, `handle`, `feedback`,
        /// `validate`, `kpis`, `snapshot`, `restore` or `health`.
        call: &'static str,
        /// Which budget the call broke.
        kind: BudgetKind,
        /// The budget, in the kind's unit.
        limit: u64,
        /// What the call used, in the kind's unit: the time it ran (ms), the
        /// total linear memory it asked to hold (bytes), or the whole fuel
        /// allowance (fuel units).
        used: u64,
    },

    /// The agent already has as many callers waiting as its queue allows,
    /// or a consult waited [`SwarmConfig::consult_wait`](crate::SwarmConfig::consult_wait)
    /// for it in vain.
    #[error("agent {agent} is busy: {queue_depth} callers are already waiting for it; retry later")]
    Busy {
        /// The agent's id (its `agent_id`).
        agent: String,
        /// Callers that may wait for the agent besides the one running
        /// ([`Budgets::queue_depth`](crate::Budgets::queue_depth)).
        queue_depth: u32,
    },

    /// The guest trapped (a panic, `unreachable`, out-of-bounds access, …).
    /// The instance must be recycled before it is called again.
    #[error("agent {agent}: call `{call}` trapped: {detail}")]
    Trap {
        /// The agent's id (its `agent_id`).
        agent: String,
        /// The guest export called: `init`, `handle`, `feedback`,
        /// `validate`, `kpis`, `snapshot`, `restore` or `health`.
        call: &'static str,
        /// wasmtime's description of the trap, with its causes.
        detail: String,
    },

    /// The guest returned its own error.
    #[error("agent {agent}: call `{call}` failed: {detail}")]
    Agent {
        /// The agent's id (its `agent_id`).
        agent: String,
        /// The guest export called: `init`, `handle`, `feedback`,
        /// `validate`, `kpis`, `snapshot`, `restore` or `health`.
        call: &'static str,
        /// The guest's `agent-error` as one line, e.g. `invalid input: …`.
        detail: String,
    },

    /// The instance failed earlier and has not been recycled.
    #[error("agent {agent} is failed (last error: {reason}); recycle it before calling it again")]
    Failed {
        /// The agent's id (its `agent_id`).
        agent: String,
        /// The message of the error that failed the instance (a trap or a
        /// broken budget).
        reason: String,
    },

    /// The registry refused the component: not found, digest mismatch,
    /// unknown or revoked key, bad signature, key not allowed for the name.
    #[error(transparent)]
    Registry(#[from] elex_registry::Error),

    /// A registry entry declares a world the host does not load.
    #[error("{name}@{version} is published for world `{world}`; the host loads `{expected}`")]
    WrongWorld {
        /// The component's registry name.
        name: String,
        /// The version the spec resolved to.
        version: String,
        /// The world the registry entry declares.
        world: String,
        /// The world the host loads, with its version
        /// (`elex:platform/plugin@0.1.0`).
        expected: &'static str,
    },

    /// An agent is not in a state that allows the request, or the swarm
    /// cannot do what was asked (evict without a snapshot database, …).
    #[error("agent {agent}: {detail}")]
    Lifecycle {
        /// The agent's id, or `swarm` when the request concerns the whole
        /// swarm.
        agent: String,
        /// What could not be done, and why.
        detail: String,
    },

    /// The memory graph refused a call or failed.
    #[error("memory graph: {0}")]
    Graph(#[from] elex_memgraph::GraphError),

    /// The embedded database failed or has an unknown schema.
    #[error("database {path}: {detail}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// The database's own error, or what is wrong with the file or a
        /// stored value.
        detail: String,
    },

    /// A vector index (an `elex:hnsw` component instance) failed a call.
    #[error("vector index (hnsw component): {call}: {detail}")]
    VectorIndex {
        /// The step that failed: `instantiate`, `create`, `insert` or
        /// `search`.
        call: &'static str,
        /// The error wasmtime or the component gave.
        detail: String,
    },

    /// No agent has the id or index a request gave.
    #[error("no agent {0}")]
    NoAgent(String),
}

impl Error {
    /// Whether the agent refused the caller's input (its `agent-error` was
    /// `invalid-input` or `unsupported`, which `detail` starts with): the
    /// caller's mistake — a second reward for one answer, say — not the
    /// agent's failure.
    pub fn is_refused_input(&self) -> bool {
        matches!(self, Error::Agent { detail, .. }
            if detail.starts_with("invalid input:") || detail.starts_with("unsupported:"))
    }

    pub(crate) fn timeout(agent: &str, call: &'static str, limit: Duration, used: Duration) -> Error {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Error::Budget {
            agent: agent.to_string(),
            call,
            kind: BudgetKind::Time,
            limit: ms(limit),
            used: ms(used),
        }
    }
}

/// `Result` with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
