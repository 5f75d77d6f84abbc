//! Scale-out on NATS: several `elex serve` hosts share one catalog's agents.
//!
//! # Design
//!
//! - **Membership.** Every host publishes a beat on `elex.<cluster>.beat`
//!   every [`ClusterConfig::beat`]; a host not heard from for
//!   [`ClusterConfig::dead_after`] is dropped, and one that stops cleanly
//!   says so in a last beat and is dropped at once. A joining host asks
//!   the others to beat at once (`elex.<cluster>.hello`), so it knows them
//!   before it takes a share. A second live host with the same id makes
//!   the join fail.
//! - **Placement.** Each agent of the catalog is held by
//!   [`ClusterConfig::replicas`] live hosts, chosen by rendezvous hashing
//!   ([`placement::owners`]); the first is its primary. Every host computes
//!   the same placement from the same members with no coordination, and a
//!   host leaving moves only its own agents. Every host runs the whole
//!   swarm's code, but keeps instances only of the agents it holds: the
//!   others are evicted (their instances dropped) when placed elsewhere.
//! - **One writer per agent.** A query is routed where it arrives (every
//!   host has the same catalog and router) and answered by the agent's
//!   primary; when the primary does not answer (no responders: it died or
//!   left; or the forward timeout), the next holder answers, from the state
//!   it follows. Only the primary learns: feedback on an answer is taken by
//!   the host that gave it only while that host is the agent's primary
//!   (otherwise 409: ask again and reward the new answer). Replicas do not share load
//!   for one agent: two instances learning from their own answers would
//!   diverge, and Q-tables cannot be merged. The load is shared across
//!   agents instead (each host is primary of its share).
//! - **Learned state.** An agent's state lives in the JetStream key-value
//!   bucket `elex-<cluster>-state`. Its primary catches up with the bucket
//!   before it takes feedback and copies the new state there before it
//!   acknowledges, by compare-and-set on the revision it last saw: a write
//!   from a host whose state is no longer the latest fails (409) instead of
//!   replacing a newer state. It also copies changed states periodically
//!   ([`ClusterConfig::publish_every`]), and before it hands an agent over
//!   or leaves. The other holders follow the bucket (a watch) and adopt
//!   each newer state; a host that gains an agent, or becomes its primary,
//!   adopts the bucket's state before it claims it.
//! - **Requests between hosts** go to `elex.<cluster>.host.<id>` (request
//!   and reply) rather than to a queue group per agent: the asking host
//!   picks the holder (primary first) and, on no responders or a timeout,
//!   retries the next one itself, so a retry never lands on the host that
//!   just failed. What a request does is the embedder's [`Handler`]
//!   (`elex serve` answers with its HTTP semantics).
//! - **Feedback** names a cluster query id, `HOST:ID`: it goes to the host
//!   that answered, which holds that answer's record.
//!
//! - **Consults** to an agent this host is not the primary of go to its
//!   primary with their call chain ([`ClusterConfig::consult_timeout`]);
//!   the depth limit and cycle refusal hold across hosts.
//! - **Trust.** Whoever can publish on the NATS server can ask and reward
//!   agents and write their state: secure the NATS server (accounts,
//!   credentials, TLS) as you would the hosts themselves.
//!
//! - **Plugins** loaded by name from the registry are shared: recorded in
//!   the bucket `elex-<cluster>-plugins`, loaded by every host, placed like
//!   features (see `plugins.rs`). An uploaded plugin stays on its host.
//!
//! - **Router corrections** are shared: recorded in the bucket
//!   `elex-<cluster>-corrections` and learned by every host (see
//!   `corrections.rs`).
//!
//! - **The memory graph** is one graph on every host: each write goes
//!   through the JetStream stream `elex-<cluster>-graph` and every host
//!   applies the stream in order to its own copy (see `graph.rs`). A write
//!   returns once the host it was made on applied it; the others follow
//!   within their distance to the stream's end (`graph_applied` in
//!   [`Status`]).
//!
//! Call [`Cluster::leave`] before dropping a cluster: its background tasks
//! run until then.

mod corrections;
mod error;
mod graph;
pub mod placement;
mod plugins;
mod remote;

pub use error::{Error, Result};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use elex_ran::Runtime;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// How a host joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server (`nats://127.0.0.1:4222`; several, comma-separated).
    pub url: String,
    /// This host's id: letters, digits, `-` and `_`, at most 64. A host
    /// restarted with the same id takes back the same share.
    pub host_id: String,
    /// The cluster's name (subjects and the state bucket are named after
    /// it): letters, digits, `-` and `_`.
    pub cluster: String,
    /// This host's HTTP address, as other hosts and operators see it.
    pub http: String,
    /// How many hosts hold each agent (its primary and standbys).
    pub replicas: usize,
    /// How often a host says it is alive.
    pub beat: Duration,
    /// How long a silent host stays a member.
    pub dead_after: Duration,
    /// How long a forwarded request waits for its reply.
    pub forward_timeout: Duration,
    /// How long a consult sent to another host waits for its answer: well
    /// within the consulting agent's own call deadline (500 ms by default),
    /// which keeps running meanwhile.
    pub consult_timeout: Duration,
    /// How often a primary copies the state of its agents that changed to
    /// the bucket (feedback copies at once).
    pub publish_every: Duration,
    /// Replicas of the state bucket in JetStream (3 on a three-server NATS
    /// cluster; 1 on a single server).
    pub state_replicas: usize,
    /// Forwarded requests this host runs at once; more are refused (busy).
    pub in_flight: usize,
}

impl ClusterConfig {
    /// The name of this cluster's JetStream store `kind`:
    /// `elex-<cluster>-<kind>` (the `state`, `plugins` and `corrections`
    /// buckets, the `graph` stream).
    pub(crate) fn store(&self, kind: &str) -> String {
        format!("elex-{}-{kind}", self.cluster)
    }

    /// A NATS subject of this cluster: `elex.<cluster>.<tail>`.
    pub(crate) fn subject(&self, tail: &str) -> String {
        format!("elex.{}.{tail}", self.cluster)
    }

    /// Whether this configuration can work: the names' characters, a
    /// membership that outlives two beats.
    pub fn check(&self) -> Result<()> {
        check_name("the host id", &self.host_id)?;
        check_name("the cluster name", &self.cluster)?;
        if self.dead_after <= self.beat * 2 {
            return Err(Error::Config(String::from(
                "a host must stay a member for more than two beats (dead-after > 2 x beat)",
            )));
        }
        Ok(())
    }

    /// The defaults for host `host_id` on the NATS server at `url`.
    pub fn new(url: impl Into<String>, host_id: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            host_id: host_id.into(),
            cluster: String::from("elex"),
            http: String::new(),
            replicas: 2,
            beat: Duration::from_millis(500),
            dead_after: Duration::from_secs(3),
            forward_timeout: Duration::from_secs(2),
            consult_timeout: Duration::from_millis(200),
            publish_every: Duration::from_secs(5),
            state_replicas: 1,
            in_flight: 64,
        }
    }
}

/// A request one host sends another.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Ask agent `agent`, which the receiver holds, `text`.
    Ask {
        /// The agent's id (a FAJ code).
        agent: String,
        /// The question.
        text: String,
    },
    /// Feedback on the receiver's answer `query_id` (its own, local id): a
    /// reward, a correction (the agent meant), or both.
    Feedback {
        /// The answer's local query id.
        query_id: String,
        /// The reward, -1..1.
        reward: Option<f32>,
        /// The agent that was meant.
        agent: Option<String>,
        /// Who gave the correction.
        operator: String,
    },
}

/// The longest a host waits for another to run a write it forwarded.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What crosses between hosts: a [`Request`] for the embedder's
/// [`Handler`], or a consult, which the cluster runs itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Wire {
    Handled(Request),
    /// A consult between agents: `text` for the last agent of `chain`
    /// (which the receiver holds), the chain that led to it kept for the
    /// depth limit and cycle refusal.
    Consult {
        /// The agents from the routed one to the callee.
        chain: Vec<String>,
        /// The consult's query id.
        query_id: String,
        /// The question.
        text: String,
        /// Its depth (1 for a consult by the routed agent).
        depth: u32,
    },
}

/// A host's reply to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done: the answer or the feedback's outcome, as JSON.
    Ok(serde_json::Value),
    /// Refused or failed, as an HTTP status, an error code and a message.
    Refused {
        /// The HTTP status it means.
        status: u16,
        /// The error code.
        code: String,
        /// What happened.
        message: String,
    },
}

impl Reply {
    /// A refusal.
    pub fn refused(status: u16, code: impl Into<String>, message: impl Into<String>) -> Reply {
        Reply::Refused { status, code: code.into(), message: message.into() }
    }
}

/// Why a host may not learn for an agent now ([`Cluster::may_learn_blocking`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This host is not the agent's primary now; `primary` is. (It gave the
    /// answer as a standby while the primary did not answer, or as the
    /// primary before the agent moved.)
    Moved {
        /// The agent's primary now.
        primary: String,
    },
    /// The bucket could not be read.
    Unavailable(String),
}

/// What a host does with the requests other hosts send it. It runs in the
/// blocking pool (it may call agents), at most
/// [`ClusterConfig::in_flight`] at once.
pub trait Handler: Send + Sync + 'static {
    /// Runs `request` (an [`Request::Ask`] only for an agent this host
    /// holds) and says how it went.
    fn handle(&self, cluster: &Cluster, request: Request) -> Reply;
}

/// One host's view of the cluster, as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This host's id.
    pub host: String,
    /// The cluster's name.
    pub cluster: String,
    /// Hosts holding each agent.
    pub replicas: usize,
    /// The live hosts this host's placement is computed from.
    pub hosts: Vec<Member>,
    /// Agents this host is primary of.
    pub primary_of: usize,
    /// Agents this host holds (primary or standby).
    pub holds: usize,
    /// Queries this host sent to another host.
    pub forwarded: u64,
    /// Requests other hosts sent this host that it ran.
    pub served: u64,
    /// Agent states taken from the bucket (written by another host).
    pub adopted: u64,
    /// Agent states this host copied to the bucket.
    pub published: u64,
    /// Hosts dropped because they said they left.
    pub left: u64,
    /// Hosts dropped because they went silent.
    pub timed_out: u64,
    /// The last entry of the memory-graph log this host applied (equal on
    /// every host once they caught up with each other).
    pub graph_applied: u64,
    /// Why this host stopped following the memory-graph log, if it did
    /// (an entry missing or unreadable; see `graph.rs`): its graph stays
    /// as it was, and writes through it fail with this reason.
    pub graph_error: Option<String>,
    /// Whether this host is connected to NATS now (`connected`,
    /// `disconnected`, `pending`): while it is not, forwarded requests and
    /// state copies fail (503) and its view of the members is frozen.
    pub nats: String,
}

/// A member host.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Its id.
    pub host: String,
    /// Its HTTP address.
    pub http: String,
    /// Since its last beat, in ms (0 for this host).
    pub seen_ms_ago: u64,
}

/// A host's beat.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Beat {
    host: String,
    http: String,
    /// Random per process: two processes with one id are told apart.
    incarnation: u64,
    /// Its `--replicas`: hosts that place with another count disagree on
    /// every agent's holders.
    replicas: usize,
    leaving: bool,
}

/// What heads a state in the bucket: who wrote it, of which agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateHeader {
    host: String,
    /// The writing process (a host restarted with the same id adopts what
    /// its previous run wrote).
    incarnation: u64,
    family: String,
    agent: String,
}

#[derive(Debug, Clone)]
struct Seen {
    http: String,
    incarnation: u64,
    at: Instant,
}

/// The members a host's placement is computed from, once applied.
#[derive(Debug, Clone, Default)]
struct View {
    hosts: BTreeSet<String>,
    /// False until the first placement was applied: until then the host
    /// holds nothing.
    applied: bool,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    served: AtomicU64,
    adopted: AtomicU64,
    published: AtomicU64,
    left: AtomicU64,
    timed_out: AtomicU64,
}

/// This host's membership of a cluster. See the crate docs.
pub struct Cluster {
    config: ClusterConfig,
    runtime: Arc<Runtime>,
    /// This host's end of the memory-graph log.
    graph: Arc<graph::GraphLog>,
    client: async_nats::Client,
    state: kv::Store,
    bucket: String,
    /// The plugins the cluster shares (see `plugins.rs`).
    plugins: kv::Store,
    /// The router corrections the cluster shares (see `corrections.rs`).
    corrections: kv::Store,
    /// Their ids.
    shared: RwLock<HashSet<String>>,
    incarnation: u64,
    tokio: tokio::runtime::Handle,
    members: Mutex<BTreeMap<String, Seen>>,
    view: RwLock<Arc<View>>,
    /// Serialises placement changes.
    placing: tokio::sync::Mutex<()>,
    changed: tokio::sync::Notify,
    /// Per agent, the hash of the state last copied to or taken from the
    /// bucket: a state is copied only when it changed.
    published: Mutex<HashMap<String, blake3::Hash>>,
    /// Per agent, the bucket revision of the state last adopted or written
    /// here: a write expects it (compare-and-set), an adoption must be newer.
    revisions: Mutex<HashMap<String, u64>>,
    /// Per agent, held while its state moves to or from the bucket, so its
    /// moves happen one at a time and never go back to an older state.
    moving: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    in_flight: Arc<tokio::sync::Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    counters: Counters,
    handler: Arc<dyn Handler>,
    /// Hosts heard with another `--replicas` (not members), with theirs.
    mismatched: Mutex<BTreeMap<String, usize>>,
}

/// Opens JetStream key-value bucket `name` (keeping the latest value per
/// key), creating it with `replicas` replicas if it does not exist.
async fn open_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: name.to_string(),
            description: description.to_string(),
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another host created it meanwhile.
        Err(e) => js.get_key_value(name).await.map_err(|_| Error::State {
            bucket: name.to_string(),
            detail: format!("{e} (is JetStream on? start nats-server with -js)"),
        }),
    }
}

/// Letters, digits, `-` and `_`, 1 to 64 of them.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{what} {name:?} must be 1 to 64 letters, digits, '-' or '_'")))
    }
}

/// A bucket key token for `s`: letters, digits and `-` kept, every other
/// byte `_` and two hex digits (one-to-one, so keys never collide).
fn key_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The bucket key of `agent`'s state from component `family`.
fn state_key(family: &str, agent: &str) -> String {
    format!("{}.{}", key_token(family), key_token(agent))
}

/// A state as the bucket keeps it: a JSON header line, then the bytes.
fn seal_state(header: &StateHeader, snapshot: &[u8]) -> Bytes {
    let mut out = serde_json::to_vec(header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(snapshot);
    Bytes::from(out)
}

fn open_state(value: &[u8]) -> Option<(StateHeader, &[u8])> {
    let end = value.iter().position(|&b| b == b'\n')?;
    let header = serde_json::from_slice(&value[..end]).ok()?;
    Some((header, &value[end + 1..]))
}

/// The next entry of `watch` on `bucket` (one that fails is logged and
/// skipped); `None` once the watch ends.
async fn next_entry(watch: &mut kv::Watch, bucket: &str) -> Option<kv::Entry> {
    loop {
        match watch.next().await? {
            Ok(entry) => return Some(entry),
            Err(e) => tracing::warn!(error = %e, bucket, "watching a bucket"),
        }
    }
}

fn nats(e: impl std::fmt::Display) -> Error {
    Error::Nats(e.to_string())
}

impl Cluster {
    /// Joins the cluster `config` names with `runtime`'s agents: connects,
    /// opens (or creates) the state bucket, learns the other members, takes
    /// this host's share (adopting each gained agent's state from the
    /// bucket, evicting the agents held elsewhere) and starts answering
    /// other hosts through `handler`. Needs a Tokio runtime.
    pub async fn join(
        runtime: Arc<Runtime>,
        config: ClusterConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Arc<Cluster>> {
        config.check()?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("elex {}", config.host_id))
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::error!(
                            "lost the NATS connection: forwarding and state copies fail until it is back"
                        )
                    }
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    other => tracing::warn!(event = %other, "NATS"),
                }
            })
            .connect(config.url.split(',').map(str::trim).collect::<Vec<_>>())
            .await
            .map_err(|e| Error::Connect { url: config.url.clone(), detail: e.to_string() })?;
        let js = async_nats::jetstream::new(client.clone());
        let bucket = config.store("state");
        let state = open_bucket(
            &js,
            &bucket,
            "elex: each agent's learned state, by component family and agent id",
            config.state_replicas,
        )
        .await?;
        let plugins = open_bucket(
            &js,
            &config.store("plugins"),
            "elex: the plugins every host of the cluster loads, by plugin id",
            config.state_replicas,
        )
        .await?;
        let corrections = open_bucket(
            &js,
            &config.store("corrections"),
            "elex: router corrections every host learns, by corrected query id",
            config.state_replicas,
        )
        .await?;
        let mut incarnation = [0u8; 8];
        getrandom::fill(&mut incarnation).map_err(|e| Error::Config(format!("no random source: {e}")))?;
        let incarnation = u64::from_le_bytes(incarnation);
        // Before saying hello: catching up with a long log must not make
        // the others take this host for dead.
        let graph =
            graph::GraphLog::attach(&client, &config, incarnation, Arc::clone(runtime.memory_graph()))
                .await?;
        let cluster = Arc::new(Cluster {
            runtime,
            client,
            state,
            bucket,
            plugins,
            corrections,
            shared: RwLock::new(HashSet::new()),
            incarnation,
            graph,
            tokio: tokio::runtime::Handle::current(),
            members: Mutex::new(BTreeMap::new()),
            view: RwLock::new(Arc::new(View::default())),
            placing: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            published: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
            moving: Mutex::new(HashMap::new()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.in_flight.max(1))),
            tasks: Mutex::new(Vec::new()),
            counters: Counters::default(),
            handler,
            mismatched: Mutex::new(BTreeMap::new()),
            config,
        });
        if let Err(e) = cluster.start().await {
            cluster.graph.close();
            return Err(e);
        }
        Ok(cluster)
    }

    fn subject(&self, tail: &str) -> String {
        self.config.subject(tail)
    }

    fn host_subject(&self, host: &str) -> String {
        self.subject(&format!("host.{host}"))
    }

    fn beat(&self, leaving: bool) -> Bytes {
        let beat = Beat {
            host: self.config.host_id.clone(),
            http: self.config.http.clone(),
            incarnation: self.incarnation,
            replicas: self.config.replicas,
            leaving,
        };
        Bytes::from(serde_json::to_vec(&beat).unwrap_or_default())
    }

    async fn start(self: &Arc<Self>) -> Result<()> {
        let me = self.config.host_id.clone();
        self.members.lock().unwrap_or_else(|p| p.into_inner()).insert(
            me.clone(),
            Seen { http: self.config.http.clone(), incarnation: self.incarnation, at: Instant::now() },
        );
        let beats = self.client.subscribe(self.subject("beat")).await.map_err(nats)?;
        let hellos = self.client.subscribe(self.subject("hello")).await.map_err(nats)?;
        let requests = self.client.subscribe(self.host_subject(&me)).await.map_err(nats)?;
        let watch = self.state.watch_all().await.map_err(|e| Error::State {
            bucket: self.bucket.clone(),
            detail: format!("cannot watch it: {e}"),
        })?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(Arc::clone(self).membership(beats, hellos)));
        self.client.publish(self.subject("hello"), self.beat(false)).await.map_err(nats)?;
        self.client.flush().await.map_err(nats)?;
        // The others beat at once when they hear hello; two beats is ample.
        tokio::time::sleep(self.config.beat * 2).await;
        {
            let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            if members.get(&me).is_some_and(|m| m.incarnation != self.incarnation) {
                for t in tasks {
                    t.abort();
                }
                return Err(Error::Config(format!("another live host already has the id {me}")));
            }
            let mismatched = self.mismatched.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((host, replicas)) = mismatched.iter().next() {
                let message = format!(
                    "host {host} of this cluster places each agent on {replicas} hosts, this one on {}: \
                     start every host with the same --replicas",
                    self.config.replicas
                );
                drop(mismatched);
                for t in tasks {
                    t.abort();
                }
                return Err(Error::Config(message));
            }
        }
        if let Err(e) = self.place().await {
            for t in tasks {
                t.abort();
            }
            return Err(e);
        }
        self.runtime.swarm().set_remote(Arc::new(remote::ClusterAgents::new(self)));
        tasks.push(tokio::spawn(Arc::clone(self).beating()));
        tasks.push(tokio::spawn(Arc::clone(self).placing_loop()));
        tasks.push(tokio::spawn(Arc::clone(self).following(watch)));
        tasks.push(tokio::spawn(Arc::clone(self).serving(requests)));
        tasks.push(tokio::spawn(Arc::clone(self).publishing()));
        let watches =
            (self.plugins.watch_with_history(">").await, self.corrections.watch_with_history(">").await);
        match watches {
            (Ok(plugins), Ok(corrections)) => {
                tasks.push(tokio::spawn(Arc::clone(self).following_plugins(plugins)));
                tasks.push(tokio::spawn(Arc::clone(self).following_corrections(corrections)));
            }
            (Err(e), _) | (_, Err(e)) => {
                for t in tasks {
                    t.abort();
                }
                return Err(Error::Nats(format!("cannot watch the plugins and corrections buckets: {e}")));
            }
        }
        *self.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        tracing::info!(host = %me, hosts = ?self.view().hosts, "joined the cluster");
        Ok(())
    }

    /// Publishes this host's beat every [`ClusterConfig::beat`].
    async fn beating(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.beat);
        loop {
            every.tick().await;
            if let Err(e) = self.client.publish(self.subject("beat"), self.beat(false)).await {
                tracing::warn!(error = %e, "cannot publish this host's beat");
            }
        }
    }

    /// Keeps the members: beats in, hellos answered, silent hosts dropped.
    async fn membership(
        self: Arc<Self>,
        mut beats: async_nats::Subscriber,
        mut hellos: async_nats::Subscriber,
    ) {
        let mut reap = tokio::time::interval(self.config.beat / 2);
        loop {
            let changed = tokio::select! {
                Some(m) = beats.next() => self.heard(&m.payload),
                Some(m) = hellos.next() => {
                    let changed = self.heard(&m.payload);
                    let _ = self.client.publish(self.subject("beat"), self.beat(false)).await;
                    changed
                }
                _ = reap.tick() => self.reap(),
                else => break,
            };
            if changed {
                self.changed.notify_one();
            }
        }
    }

    /// Takes in a beat; whether the members changed.
    fn heard(&self, payload: &[u8]) -> bool {
        let Ok(beat) = serde_json::from_slice::<Beat>(payload) else {
            tracing::warn!("a malformed beat was ignored");
            return false;
        };
        if check_name("host id", &beat.host).is_err() {
            return false;
        }
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if beat.host == self.config.host_id {
            if beat.incarnation != self.incarnation {
                tracing::error!(host = %beat.host, "another process beats with this host's id");
                members.entry(beat.host).and_modify(|m| m.incarnation = beat.incarnation);
            }
            return false;
        }
        if beat.replicas != self.config.replicas {
            // Its placement would differ from this host's on every agent.
            tracing::error!(
                host = %beat.host,
                its = beat.replicas,
                ours = self.config.replicas,
                "a host with another --replicas is not taken as a member"
            );
            self.mismatched.lock().unwrap_or_else(|p| p.into_inner()).insert(beat.host, beat.replicas);
            return false;
        }
        if beat.leaving {
            // Only the process that beat: a late last beat of an earlier run
            // must not drop a host that restarted.
            if members.get(&beat.host).is_some_and(|m| m.incarnation == beat.incarnation) {
                members.remove(&beat.host);
                self.counters.left.fetch_add(1, Ordering::Relaxed);
                tracing::info!(host = %beat.host, "a host left the cluster");
                return true;
            }
            return false;
        }
        let seen = Seen { http: beat.http, incarnation: beat.incarnation, at: Instant::now() };
        let host = beat.host.clone();
        let new = members.insert(beat.host, seen).is_none();
        if new {
            tracing::info!(host = %host, "a host joined the cluster");
        }
        new
    }

    /// Drops the members silent for longer than `dead_after`.
    fn reap(&self) -> bool {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let before = members.len();
        let me = &self.config.host_id;
        let mut dropped = Vec::new();
        members.retain(|host, seen| {
            let keep = host == me || seen.at.elapsed() <= self.config.dead_after;
            if !keep {
                dropped.push(host.clone());
            }
            keep
        });
        if !dropped.is_empty() {
            self.counters.timed_out.fetch_add(dropped.len() as u64, Ordering::Relaxed);
            tracing::warn!(dropped = ?dropped, remaining = ?members.keys().collect::<Vec<_>>(), "a host went silent and was dropped");
        }
        members.len() != before
    }

    async fn placing_loop(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            if let Err(e) = self.place().await {
                tracing::error!(error = %e, "the new placement could not be applied; retrying");
                tokio::time::sleep(self.config.beat).await;
                self.changed.notify_one();
            }
        }
    }

    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The agents that are placed: the catalog's features and the plugins
    /// the cluster shares (an uploaded plugin stays on its host).
    fn placed_agents(&self) -> Vec<String> {
        self.runtime
            .catalog()
            .features
            .iter()
            .filter(|f| !f.plugin || self.is_shared(&f.faj))
            .map(|f| f.faj.clone())
            .collect()
    }

    /// Whether `agent` runs here and is placed on hosts (a feature, or a
    /// plugin the cluster shares), rather than answered only here.
    pub fn placed(&self, agent: &str) -> bool {
        let catalog = self.runtime.catalog();
        catalog
            .index_of(agent)
            .is_ok_and(|i| !catalog.features[i].plugin || self.is_shared(&catalog.features[i].faj))
    }

    fn held_in(&self, view: &View, agent: &str) -> bool {
        view.applied
            && placement::owners(&view.hosts, agent, self.config.replicas)
                .contains(&self.config.host_id.as_str())
    }

    /// Whether this host is `agent`'s primary in `view`.
    fn primary_in(&self, view: &View, agent: &str) -> bool {
        view.applied
            && placement::owners(&view.hosts, agent, self.config.replicas).first()
                == Some(&self.config.host_id.as_str())
    }

    /// Applies the placement of the current members: copies the state of
    /// every agent this host hands over as primary to the bucket, adopts
    /// the bucket's state of every agent it gains or becomes primary of
    /// (before claiming it), claims the new share, then evicts the agents
    /// now held elsewhere.
    async fn place(self: &Arc<Self>) -> Result<()> {
        let _placing = self.placing.lock().await;
        let hosts: BTreeSet<String> =
            self.members.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        let old = self.view();
        if old.applied && old.hosts == hosts {
            return Ok(());
        }
        let new = View { hosts, applied: true };
        let (mut handed_over, mut gained, mut lost) = (Vec::new(), Vec::new(), Vec::new());
        for agent in self.placed_agents() {
            let (held, primary) = (self.held_in(&new, &agent), self.primary_in(&new, &agent));
            // Before the first placement every agent runs here.
            let (was_held, was_primary) = if old.applied {
                (self.held_in(&old, &agent), self.primary_in(&old, &agent))
            } else {
                (!held, false)
            };
            if was_primary && !primary {
                handed_over.push(agent.clone());
            }
            if (held && !was_held) || (primary && !was_primary) {
                gained.push(agent.clone());
            }
            if was_held && !held {
                lost.push(agent);
            }
        }
        let first = !old.applied;
        for agent in &handed_over {
            if let Err(e) = self.publish_state(agent).await {
                tracing::warn!(agent = %agent, error = %e, "the state of an agent handed over could not be copied");
            }
        }
        for agent in &gained {
            self.adopt_from_bucket(agent, first).await?;
        }
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new.clone());
        // A state written while the view changed was not followed (the
        // agents were not held yet): read them once more (only a newer
        // revision is adopted).
        for agent in &gained {
            self.adopt_from_bucket(agent, false).await?;
        }
        let n_lost = lost.len();
        let runtime = Arc::clone(&self.runtime);
        tokio::task::spawn_blocking(move || {
            let agents = runtime.agents();
            for agent in lost {
                let evicted = agents.slot_of(&agent).and_then(|slot| {
                    Ok(runtime.swarm().evict(slot, elex_ran::host::events::EvictReason::Requested)?)
                });
                if let Err(e) = evicted {
                    tracing::warn!(agent = %agent, error = %e, "an agent held elsewhere now could not be evicted");
                }
            }
        })
        .await
        .map_err(|e| Error::Nats(format!("evicting agents held elsewhere: {e}")))?;
        tracing::info!(
            hosts = ?new.hosts,
            gained = gained.len(),
            handed_over = handed_over.len(),
            lost = n_lost,
            first,
            "placement applied"
        );
        Ok(())
    }

    /// The lock held while `agent`'s state moves to or from the bucket.
    fn moving(&self, agent: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut moving = self.moving.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(moving.entry(agent.to_string()).or_default())
    }

    fn revision(&self, agent: &str) -> Option<u64> {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner()).get(agent).copied()
    }

    fn set_revision(&self, agent: &str, revision: u64) {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner()).insert(agent.to_string(), revision);
    }

    /// Takes `agent`'s state from the bucket if another host wrote it;
    /// with `baseline`, when the bucket has none, remembers the state here
    /// as the one a later change is measured against.
    async fn adopt_from_bucket(&self, agent: &str, baseline: bool) -> Result<()> {
        let Some(family) = self.family_of(agent) else { return Ok(()) };
        let key = state_key(&family, agent);
        let entry = self.state.entry(key.as_str()).await.map_err(|e| Error::State {
            bucket: self.bucket.clone(),
            detail: format!("cannot read {key}: {e}"),
        })?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                self.adopt(&entry.key, &entry.value, entry.revision).await
            }
            // Nothing learned anywhere yet: what runs here is the baseline a
            // later change is measured against.
            _ if baseline => self.remember_state(agent).await,
            _ => {}
        }
        Ok(())
    }

    /// `agent`'s component family here and its state now (see
    /// [`Swarm::snapshot`](elex_ran::host::Swarm::snapshot)), taken in the
    /// blocking pool.
    async fn snapshot_of(&self, agent: &str) -> Result<(String, Option<Vec<u8>>)> {
        let runtime = Arc::clone(&self.runtime);
        let name = agent.to_string();
        tokio::task::spawn_blocking(move || {
            let slot = runtime.agents().slot_of(&name)?;
            let family = runtime.swarm().family_of(slot)?.to_string();
            Ok::<_, elex_ran::Error>((family, runtime.swarm().snapshot(slot)?))
        })
        .await
        .map_err(nats)?
        .map_err(Error::from)
    }

    /// Records the hash of `agent`'s state here as already published.
    async fn remember_state(&self, agent: &str) {
        if let Ok((_, Some(snapshot))) = self.snapshot_of(agent).await {
            self.published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(agent.to_string(), blake3::hash(&snapshot));
        }
    }

    /// The component family `agent` runs here, if it runs here.
    fn family_of(&self, agent: &str) -> Option<String> {
        let slot = self.runtime.agents().slot_of(agent).ok()?;
        self.runtime.swarm().family_of(slot).ok().map(str::to_string)
    }

    /// Makes a state from the bucket (key `key`, at `revision`) its
    /// agent's state here, unless this process wrote it, it is not newer
    /// than what this host has, it is not the state its key names, or the
    /// agent runs another component here.
    async fn adopt(&self, key: &str, value: &Bytes, revision: u64) {
        let Some((header, snapshot)) = open_state(value) else {
            tracing::warn!(key, "a malformed state in the bucket was ignored");
            return;
        };
        if state_key(&header.family, &header.agent) != key {
            tracing::warn!(key, agent = %header.agent, "a state under another agent's key was ignored");
            return;
        }
        if header.host == self.config.host_id && header.incarnation == self.incarnation {
            return;
        }
        if self.family_of(&header.agent).as_deref() != Some(header.family.as_str()) {
            tracing::warn!(agent = %header.agent, family = %header.family, "a state of another component was not adopted");
            return;
        }
        let moving = self.moving(&header.agent);
        let _turn = moving.lock().await;
        if self.revision(&header.agent).is_some_and(|r| r >= revision) {
            return;
        }
        let hash = blake3::hash(snapshot);
        let runtime = Arc::clone(&self.runtime);
        let snapshot = snapshot.to_vec();
        let agent = header.agent.clone();
        let adopted = tokio::task::spawn_blocking(move || {
            let slot = runtime.agents().slot_of(&agent)?;
            Ok::<_, elex_ran::Error>(runtime.swarm().adopt(slot, &snapshot)?)
        })
        .await;
        match adopted {
            Ok(Ok(())) => {
                self.set_revision(&header.agent, revision);
                self.published.lock().unwrap_or_else(|p| p.into_inner()).insert(header.agent.clone(), hash);
                self.counters.adopted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = %header.agent, from = %header.host, revision, "adopted a state from the bucket");
            }
            Ok(Err(e)) => {
                tracing::warn!(agent = %header.agent, error = %e, "a state from the bucket was not adopted")
            }
            Err(e) => tracing::warn!(agent = %header.agent, error = %e, "adopting a state panicked"),
        }
    }

    /// Follows the bucket: adopts the states other hosts write of agents
    /// this host holds.
    async fn following(self: Arc<Self>, mut watch: kv::Watch) {
        while let Some(entry) = next_entry(&mut watch, &self.bucket).await {
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let held = open_state(&entry.value).is_some_and(|(h, _)| self.held_in(&self.view(), &h.agent));
            if held {
                self.adopt(&entry.key, &entry.value, entry.revision).await;
            }
        }
        tracing::error!(
            "the state bucket's watch ended: states written by other hosts are no longer followed"
        );
    }

    /// Answers the requests other hosts send this host.
    async fn serving(self: Arc<Self>, mut requests: async_nats::Subscriber) {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else { continue };
            let permit = Arc::clone(&self.in_flight).try_acquire_owned();
            let cluster = Arc::clone(&self);
            tokio::spawn(async move {
                let reply = match (permit, serde_json::from_slice::<Wire>(&message.payload)) {
                    (Err(_), _) => Reply::refused(
                        503,
                        "busy",
                        format!(
                            "host {} runs {} forwarded requests already",
                            cluster.config.host_id, cluster.config.in_flight
                        ),
                    ),
                    (_, Err(e)) => Reply::refused(400, "bad_request", format!("not a cluster request: {e}")),
                    (Ok(_), Ok(Wire::Handled(Request::Ask { agent, .. }))) if !cluster.answers(&agent) => {
                        Reply::refused(
                            409,
                            "not_held",
                            format!("host {} does not hold {agent} now", cluster.config.host_id),
                        )
                    }
                    (Ok(_), Ok(Wire::Consult { chain, .. }))
                        if !chain.last().is_some_and(|agent| cluster.answers(agent)) =>
                    {
                        Reply::refused(
                            409,
                            "not_held",
                            format!("host {} does not hold {chain:?}'s callee now", cluster.config.host_id),
                        )
                    }
                    (Ok(permit), Ok(Wire::Consult { chain, query_id, text, depth })) => {
                        let runtime = Arc::clone(&cluster.runtime);
                        cluster.counters.served.fetch_add(1, Ordering::Relaxed);
                        tokio::task::spawn_blocking(move || {
                            let _permit = permit;
                            let query = elex_ran::host::Query { id: query_id, text, context: None, depth };
                            match runtime.swarm().consult_here(chain, &query) {
                                Ok((response, trace)) => Reply::Ok(remote::consulted_json(&response, &trace)),
                                Err(e @ elex_ran::host::Error::Busy { .. }) => {
                                    Reply::refused(503, "busy", e.to_string())
                                }
                                Err(e) => Reply::refused(502, "agent_failed", e.to_string()),
                            }
                        })
                        .await
                        .unwrap_or_else(|e| Reply::refused(500, "internal", e.to_string()))
                    }
                    (Ok(permit), Ok(Wire::Handled(request))) => {
                        let handler_cluster = Arc::clone(&cluster);
                        let handler = Arc::clone(&cluster.handler);
                        tokio::task::spawn_blocking(move || {
                            let _permit = permit;
                            handler_cluster.counters.served.fetch_add(1, Ordering::Relaxed);
                            handler.handle(&handler_cluster, request)
                        })
                        .await
                        .unwrap_or_else(|e| Reply::refused(500, "internal", e.to_string()))
                    }
                };
                let body = Bytes::from(serde_json::to_vec(&reply).unwrap_or_default());
                if let Err(e) = cluster.client.publish(reply_to, body).await {
                    tracing::warn!(error = %e, "a reply to another host could not be sent");
                }
            });
        }
    }

    /// Copies the changed state of every agent this host is primary of to
    /// the bucket, every [`ClusterConfig::publish_every`].
    async fn publishing(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.publish_every);
        every.tick().await;
        loop {
            every.tick().await;
            self.publish_primaries().await;
        }
    }

    async fn publish_primaries(&self) {
        for agent in self.placed_agents() {
            if self.is_primary(&agent)
                && let Err(e) = self.publish_state(&agent).await
            {
                tracing::warn!(agent = %agent, error = %e, "an agent's state could not be copied to the bucket");
            }
        }
    }

    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.config.host_id
    }

    /// The hosts that hold `agent` now, primary first.
    pub fn owners(&self, agent: &str) -> Vec<String> {
        let view = self.view();
        placement::owners(&view.hosts, agent, self.config.replicas).into_iter().map(str::to_string).collect()
    }

    /// Whether this host holds `agent` (as its primary or a standby).
    pub fn holds(&self, agent: &str) -> bool {
        self.held_in(&self.view(), agent)
    }

    /// Whether this host answers for `agent` when asked: it holds it and
    /// runs it (a shared plugin may still be loading here).
    fn answers(&self, agent: &str) -> bool {
        self.holds(agent) && self.placed(agent)
    }

    /// Whether this host is `agent`'s primary.
    pub fn is_primary(&self, agent: &str) -> bool {
        self.primary_in(&self.view(), agent)
    }

    /// This host's NATS connection: `connected`, `disconnected` or `pending`.
    pub fn nats_state(&self) -> &'static str {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "pending",
        }
    }

    /// Whether `host` is a member now (as this host sees it).
    pub fn is_member(&self, host: &str) -> bool {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).contains_key(host)
    }

    /// The id other hosts and clients use for this host's answer `local`:
    /// `HOST:ID`.
    pub fn query_id(&self, local: &str) -> String {
        format!("{}:{local}", self.config.host_id)
    }

    /// A cluster query id's host and local id; `None` for an id without a
    /// host (a single service's).
    pub fn split_query_id(id: &str) -> Option<(&str, &str)> {
        id.split_once(':').filter(|(host, _)| check_name("host", host).is_ok())
    }

    /// Sends `request` to host `host` and waits for its reply, at most
    /// [`ClusterConfig::forward_timeout`].
    /// A query waits at most [`ClusterConfig::forward_timeout`]; feedback,
    /// a write, runs to its end ([`WRITE_TIMEOUT`] at most), so a timeout
    /// never hides a reward that was given.
    pub async fn send(&self, host: &str, request: &Request) -> Result<Reply> {
        let timeout = match request {
            Request::Ask { .. } => self.config.forward_timeout,
            Request::Feedback { .. } => WRITE_TIMEOUT,
        };
        self.send_wire(host, &Wire::Handled(request.clone()), timeout).await
    }

    async fn send_wire(&self, host: &str, wire: &Wire, timeout: Duration) -> Result<Reply> {
        let payload = serde_json::to_vec(wire).map_err(nats)?;
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .client
            .send_request(
                self.host_subject(host),
                async_nats::Request::new().payload(payload.into()).timeout(Some(timeout)),
            )
            .await;
        match sent {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map_err(|e| Error::Nats(format!("host {host} replied with something else: {e}"))),
            Err(e) => {
                use async_nats::RequestErrorKind as K;
                let detail = match e.kind() {
                    K::NoResponders => String::from("no one listens on its subject (it left or died)"),
                    K::TimedOut => format!("no reply within {} ms", timeout.as_millis()),
                    _ => e.to_string(),
                };
                Err(Error::Unreachable { host: host.to_string(), detail })
            }
        }
    }

    /// Copies `agent`'s state to the bucket if it changed since it was
    /// last copied or adopted; whether it was copied. Returns once the
    /// bucket has it (JetStream acknowledged). The write expects the bucket
    /// to hold the revision this host last saw: when another host wrote
    /// since, nothing is written, the newer state is adopted, and the
    /// answer is [`Error::Stale`].
    pub async fn publish_state(&self, agent: &str) -> Result<bool> {
        let moving = self.moving(agent);
        let turn = moving.lock().await;
        let (family, Some(snapshot)) = self.snapshot_of(agent).await? else { return Ok(false) };
        let hash = blake3::hash(&snapshot);
        if self.published.lock().unwrap_or_else(|p| p.into_inner()).get(agent) == Some(&hash) {
            return Ok(false);
        }
        let header = StateHeader {
            host: self.config.host_id.clone(),
            incarnation: self.incarnation,
            family: family.clone(),
            agent: agent.to_string(),
        };
        let key = state_key(&family, agent);
        let sealed = seal_state(&header, &snapshot);
        let limit = self.client.server_info().max_payload;
        if limit > 0 && sealed.len() + key.len() + 256 > limit {
            return Err(Error::State {
                bucket: self.bucket.clone(),
                detail: format!(
                    "{agent}'s state is {} bytes, more than the NATS server's max_payload ({limit}): raise it",
                    sealed.len()
                ),
            });
        }
        let written = match self.revision(agent) {
            Some(seen) => self.state.update(key.as_str(), sealed, seen).await.map_err(|e| {
                let stale = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                (stale, e.to_string())
            }),
            None => self.state.create(key.as_str(), sealed).await.map_err(|e| {
                let stale = e.kind() == kv::CreateErrorKind::AlreadyExists;
                (stale, e.to_string())
            }),
        };
        match written {
            Ok(revision) => {
                self.set_revision(agent, revision);
                self.published.lock().unwrap_or_else(|p| p.into_inner()).insert(agent.to_string(), hash);
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err((true, _)) => {
                drop(turn);
                // Another host wrote a newer state: take it instead.
                if let Err(e) = self.adopt_from_bucket(agent, false).await {
                    tracing::warn!(agent, error = %e, "the newer state could not be adopted");
                }
                Err(Error::Stale { agent: agent.to_string() })
            }
            Err((false, detail)) => Err(Error::State {
                bucket: self.bucket.clone(),
                detail: format!("cannot write {key}: {detail}"),
            }),
        }
    }

    /// [`Cluster::publish_state`] from a blocking thread (a [`Handler`], or
    /// a service's blocking pool).
    pub fn publish_state_blocking(&self, agent: &str) -> Result<bool> {
        self.tokio.block_on(self.publish_state(agent))
    }

    /// Brings this host's state of `agent` up to the bucket's when this host
    /// is not its primary (a standby about to answer for a primary that did
    /// not): the answer then rests on everything acknowledged. From a
    /// blocking thread.
    pub fn catch_up_blocking(&self, agent: &str) -> Result<()> {
        if self.placed(agent) && !self.is_primary(agent) {
            self.tokio.block_on(self.adopt_from_bucket(agent, false))?;
        }
        Ok(())
    }

    /// Whether this host may learn for `agent` (take feedback on an answer
    /// it gave) now, after catching up with the bucket: only its primary
    /// may. Plugins (not placed) always may. From a blocking thread.
    pub fn may_learn_blocking(&self, agent: &str) -> std::result::Result<(), Refusal> {
        if !self.placed(agent) {
            return Ok(());
        }
        if !self.is_primary(agent) {
            return Err(Refusal::Moved {
                primary: self.owners(agent).into_iter().next().unwrap_or_default(),
            });
        }
        self.tokio
            .block_on(self.adopt_from_bucket(agent, false))
            .map_err(|e| Refusal::Unavailable(e.to_string()))
    }

    /// This host's view of the cluster.
    pub fn status(&self) -> Status {
        let view = self.view();
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let hosts = view
            .hosts
            .iter()
            .map(|h| {
                let seen = members.get(h);
                Member {
                    host: h.clone(),
                    http: seen.map(|s| s.http.clone()).unwrap_or_default(),
                    seen_ms_ago: if *h == self.config.host_id {
                        0
                    } else {
                        seen.map_or(0, |s| s.at.elapsed().as_millis() as u64)
                    },
                }
            })
            .collect();
        let agents = self.placed_agents();
        Status {
            host: self.config.host_id.clone(),
            cluster: self.config.cluster.clone(),
            replicas: self.config.replicas,
            hosts,
            primary_of: agents.iter().filter(|a| self.is_primary(a)).count(),
            holds: agents.iter().filter(|a| self.held_in(&view, a)).count(),
            forwarded: self.counters.forwarded.load(Ordering::Relaxed),
            served: self.counters.served.load(Ordering::Relaxed),
            adopted: self.counters.adopted.load(Ordering::Relaxed),
            published: self.counters.published.load(Ordering::Relaxed),
            left: self.counters.left.load(Ordering::Relaxed),
            timed_out: self.counters.timed_out.load(Ordering::Relaxed),
            graph_applied: self.graph.applied(),
            graph_error: self.graph.error(),
            nats: self.nats_state().to_string(),
        }
    }

    /// Leaves the cluster cleanly: copies the changed state of this host's
    /// primaries to the bucket while it still answers, says it leaves (the
    /// others take its share at once), then stops answering other hosts.
    pub async fn leave(&self) {
        self.publish_primaries().await;
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        if let Err(e) = self.client.publish(self.subject("beat"), self.beat(true)).await {
            tracing::warn!(error = %e, "could not say this host leaves; the others drop it when its beats stop");
        }
        self.graph.close();
        let _ = self.client.flush().await;
        let _ = self.client.drain().await;
        tracing::info!(host = %self.config.host_id, "left the cluster");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_one_and_valid() {
        assert_eq!(state_key("feature-agent", "FAJ 121 3094"), "feature-agent.FAJ_20121_203094");
        assert_ne!(key_token("a_b"), key_token("a b"));
        assert_ne!(key_token("a.b"), key_token("a_2eb"));
        for k in [state_key("x", "a.b/c*>"), state_key("fam", "ü")] {
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
                "{k}"
            );
        }
    }

    #[test]
    fn states_seal_and_open() {
        let header =
            StateHeader { host: "h1".into(), incarnation: 7, family: "f".into(), agent: "FAJ 1".into() };
        let sealed = seal_state(&header, b"\n\x00bytes");
        let (h, bytes) = open_state(&sealed).unwrap();
        assert_eq!((h.host.as_str(), h.agent.as_str(), bytes), ("h1", "FAJ 1", &b"\n\x00bytes"[..]));
        assert!(open_state(b"no header").is_none());
    }

    #[test]
    fn names_and_query_ids() {
        assert!(check_name("h", "host-1_a").is_ok());
        for bad in ["", "a.b", "a b", "a:b", &"x".repeat(65)] {
            assert!(check_name("h", bad).is_err(), "{bad:?}");
        }
        assert_eq!(Cluster::split_query_id("h2:q0123-4"), Some(("h2", "q0123-4")));
        assert_eq!(Cluster::split_query_id("q0123-4"), None);
        assert_eq!(Cluster::split_query_id("a b:q"), None);
    }
}
