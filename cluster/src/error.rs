//! The cluster's one error type.

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (a bad host id, say).
    #[error("{0}")]
    Config(String),
    /// The NATS server cannot be reached.
    #[error("cannot reach NATS at {url}: {detail}")]
    Connect {
        /// The server's address as given.
        url: String,
        /// Why.
        detail: String,
    },
    /// The JetStream key-value bucket of agent state failed.
    #[error("the agents' state bucket {bucket}: {detail}")]
    State {
        /// The bucket's name.
        bucket: String,
        /// What failed.
        detail: String,
    },
    /// A host did not answer a forwarded request (no one listens on its
    /// subject, or it took longer than the forward timeout): retryable.
    #[error("host {host} did not answer: {detail}")]
    Unreachable {
        /// The host's id.
        host: String,
        /// No responders, timed out, …
        detail: String,
    },
    /// Another host wrote a newer state of the agent since this host last
    /// saw it: this host's state was not written (the newer one was adopted).
    #[error("{agent}'s state changed on another host meanwhile: this host's state was not kept")]
    Stale {
        /// The agent.
        agent: String,
    },
    /// The memory graph's log (a JetStream stream) failed, or this host's
    /// graph cannot follow it.
    #[error("the memory-graph log {stream}: {detail}")]
    Graph {
        /// The stream's name.
        stream: String,
        /// What failed, and what to do.
        detail: String,
    },
    /// A NATS operation failed otherwise.
    #[error("NATS: {0}")]
    Nats(String),
    /// The runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] elex_ran::Error),
}

/// A cluster result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
