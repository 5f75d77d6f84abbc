//! The one error type of `elex-ran`.

/// Everything that can go wrong in the RAN runtime: its own failures, and
/// the host's (a budget breach, a trap, a registry refusal, …) as
/// [`Error::Host`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host failed: loading, a guest call, the registry, the memory
    /// graph or the agents' database.
    #[error(transparent)]
    Host(#[from] elex_host::Error),

    /// The catalog data is malformed.
    #[error("catalog {source_name}, line {line}: {detail}")]
    Catalog {
        /// The catalog source, as the caller of
        /// [`Catalog::parse`](crate::Catalog::parse) named it.
        source_name: String,
        /// The malformed line, counted from 1.
        line: usize,
        /// What is wrong with it: the JSON error, or a duplicate FAJ code.
        detail: String,
    },

    /// No feature has the FAJ code a request gave.
    #[error("no agent {0}")]
    NoAgent(String),

    /// A workflow file is malformed, names unknown steps or agents, or has a
    /// cycle.
    #[error("workflow: {0}")]
    Workflow(String),

    /// A question was empty or blank.
    #[error("the question is empty: ask something, e.g. \"What is FAJ 121 3094?\"")]
    NoQuestion,

    /// Feedback could not be given: unknown query, reward out of range,
    /// answered by another component.
    #[error("feedback: {0}")]
    Feedback(String),

    /// A plugin cannot be installed or loaded: it carries no manifest, its
    /// id is taken, its kept component changed, …
    #[error("plugin {0}")]
    Plugin(String),

    /// The data dir cannot be used.
    #[error("the data dir {} {problem}", path.display())]
    DataDir {
        /// The data dir.
        path: std::path::PathBuf,
        /// What is wrong with it, as the end of the message: it is not a
        /// folder, or it cannot be created or used (with the OS error).
        problem: String,
    },
}

impl From<elex_registry::Error> for Error {
    fn from(e: elex_registry::Error) -> Error {
        Error::Host(e.into())
    }
}

impl From<elex_memgraph::GraphError> for Error {
    fn from(e: elex_memgraph::GraphError) -> Error {
        Error::Host(e.into())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
