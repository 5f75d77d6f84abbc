//! `elex`: the command-line front of `elex-host`. Every command is a thin
//! layer over the library; one module per command group.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod agents;
mod answer;
mod memory;
mod output;
mod plugin;
mod remote;
mod workflow;

use output::{clean, outln};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use elex_host::snapshots::{self, SnapshotStore};
use elex_host::{HostConfig, World};
use elex_ran::Runtime;
use elex_registry::{KeyPair, Registry};

#[derive(Parser)]
#[command(name = "elex", version, about = "elex: a WebAssembly component host for RAN feature agents")]
#[command(long_about = "elex loads wasm components of the elex:platform/plugin world into a \
wasmtime host, gives each instance its own budget, and asks them questions.\n\n\
Logging: -v (info), -vv (debug), -vvv (trace) on stderr; RUST_LOG overrides (e.g. RUST_LOG=elex=debug).")]
struct Cli {
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Folder for elex's data: the precompiled-component cache
    /// (<DATA_DIR>/cache), the agents' snapshots and usage
    /// (<DATA_DIR>/agents.redb) and the memory graph
    /// (<DATA_DIR>/memory.redb) [default: $ELEX_DATA_DIR, else
    /// $XDG_DATA_HOME/elex, else ~/.local/share/elex].
    #[arg(long, global = true, value_name = "DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Registry folder (index/, blobs/, trust/) [default: $ELEX_REGISTRY,
    /// else target/registry next to this binary, else ./target/registry].
    #[arg(long, global = true, value_name = "DIR")]
    registry: Option<PathBuf>,
    /// Extra trust-policy folder (policy.json + keys/), added to the
    /// registry's own trust/ folder; repeatable.
    #[arg(long, global = true, value_name = "DIR")]
    trust: Vec<PathBuf>,
    /// Send the command to a running `elex serve` at this URL
    /// (http://HOST:PORT) instead of starting the agents here: query,
    /// feedback, agents list|show, load, unload, engram add|get|search,
    /// context create|add|show, workflow run.
    #[arg(long, global = true, value_name = "URL", env = "ELEX_SERVER")]
    server: Option<String>,
    /// The bearer token for --server (its access file's); prefer
    /// ELEX_TOKEN, which other users cannot see in the process list.
    #[arg(long, global = true, value_name = "TOKEN", env = "ELEX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the feature agents a question and print the answer.
    ///
    /// All 593 feature agents are started, linked (an agent may consult a
    /// dependency peer; the consult trace is printed), each from what it
    /// learned in earlier runs (<DATA_DIR>/agents.redb). The agent is chosen
    /// from the text: a FAJ code, a feature name, a parameter or counter a
    /// feature owns, an acronym, or else the most similar feature; when
    /// several features are about as similar, it asks back which one is
    /// meant (offering the closest five) instead of answering (see
    /// --best-guess). The state of the agents that took part is stored again
    /// afterwards, with the query id for `elex feedback`.
    Query {
        /// The question.
        text: String,
        /// Run this component file instead of the registry's signed
        /// feature-agent; an unsigned file needs --allow-unsigned.
        #[arg(long, value_name = "FILE")]
        component: Option<PathBuf>,
        /// Load --component without a signature (development only; loudly
        /// warned about).
        #[arg(long, requires = "component")]
        allow_unsigned: bool,
        /// Ask this agent instead of routing: a feature's FAJ code, or a
        /// plugin's id.
        #[arg(long, value_name = "FAJ")]
        agent: Option<String>,
        /// Answer with the most similar feature's agent even when other
        /// features are about as similar (instead of asking back).
        #[arg(long, conflicts_with = "agent")]
        best_guess: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reward (or punish) the answer to a query, by its query id (printed by
    /// `elex query`): the agent that gave it learns from the reward, and
    /// keeps what it learned in <DATA_DIR>/agents.redb. With --agent, say
    /// which feature the question was meant for: the router keeps it as an
    /// example of that feature and routes questions like it there.
    #[command(arg_required_else_help = true)]
    Feedback {
        /// The query id, e.g. q3f9a0c2d71b4e856-1.
        query_id: String,
        /// The reward, from -1 (wrong) to 1 (right).
        #[arg(allow_negative_numbers = true, required_unless_present = "agent")]
        reward: Option<f32>,
        /// The agent the question was meant for: a FAJ code, or a plugin's id.
        #[arg(long, value_name = "FAJ")]
        agent: Option<String>,
        /// Who gives the correction [default: $USER].
        #[arg(long, value_name = "NAME", requires = "agent")]
        operator: Option<String>,
    },
    /// Create an ed25519 signing key: the private key (permissions 0600) and
    /// its public key file <id>.pub.
    Keygen {
        /// Folder for the key files [default: <DATA_DIR>/keys].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Sign a component and publish it to the registry (same as `index add`).
    Sign(PublishArgs),
    /// Check a published component: digest, signature, trust and world.
    Verify {
        /// name@version-requirement, e.g. feature-agent@^0.1.
        spec: String,
    },
    /// Work with the registry index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Engrams in the memory graph (<DATA_DIR>/memory.redb).
    #[command(subcommand)]
    Engram(memory::EngramCommand),
    /// Contexts: groups of agents and engrams in the memory graph.
    #[command(subcommand)]
    Context(memory::ContextCommand),
    /// Run workflows of agent steps.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// What the agents have done: usage across runs.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Add a plugin to the agents, for every later run on this data dir: the
    /// router picks it for questions like its manifest (description,
    /// keywords, examples), `--agent <id>` asks it, feedback reaches it.
    /// From the registry by name (signed, verified), or a local file with
    /// --allow-unsigned. It is loaded, checked and started once before it is
    /// recorded; a plugin with the same id is replaced.
    #[command(arg_required_else_help = true)]
    Load {
        /// name[@version-requirement] in the registry, e.g. weather-words@^0.1;
        /// with --allow-unsigned, a component file (from `elex build`).
        spec: String,
        /// Load a component file without a signature (development only;
        /// loudly warned about).
        #[arg(long)]
        allow_unsigned: bool,
        /// Grant a WASI capability its manifest asks for (repeatable; every
        /// one it asks for must be granted): env:NAME (read that
        /// environment variable), read:/guest/path=/host/dir (that host
        /// directory, read only), connect:IP:PORT (TCP to that address).
        /// Without any, a plugin gets clocks, random and its output in the
        /// log; no environment, files or network.
        #[arg(long, value_name = "CAPABILITY")]
        grant: Vec<String>,
        /// Who loads it [default: $USER].
        #[arg(long, value_name = "NAME")]
        operator: Option<String>,
    },
    /// Remove a plugin loaded with `elex load` (what it learned stays stored).
    #[command(arg_required_else_help = true)]
    Unload {
        /// The plugin's id.
        id: String,
    },
    /// Write a new plugin project: the manifest (plugin.toml), the source, a
    /// README and the WIT, ready for `elex build`.
    #[command(arg_required_else_help = true)]
    New {
        /// The plugin's id (a-z, 0-9, '-'; starting with a letter).
        id: String,
        /// Its language.
        #[arg(long, value_enum)]
        lang: plugin::Lang,
        /// Folder to create [default: ./<id>].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build the plugin project in DIR (Rust: cargo for wasm32-wasip2;
    /// Python: componentize-py; JavaScript: componentize-qjs --sync) and
    /// embed its plugin.toml: writes DIR/build/<id>.wasm.
    Build {
        /// The project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print the WIT contract a plugin implements (world
    /// elex:platform/plugin), or write it as a folder for wit-bindgen,
    /// componentize-py or componentize-qjs.
    Wit {
        /// Write the folder here instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Serve the agents over HTTP + JSON until SIGTERM or SIGINT: starts them
    /// once, prints the address it listens on, and on the signal stops
    /// accepting, ends event streams, lets requests in flight finish and
    /// stores every agent's state. Routes: queries and feedback, agents,
    /// plugins loaded and unloaded live, the memory graph and workflows,
    /// GET /metrics (Prometheus), GET /v1/events (SSE), GET /health, GET
    /// /ready; every route in GET /v1/openapi.json, with the roles in the
    /// README. Errors are JSON {"code", "message"}. It always runs here:
    /// --server and ELEX_SERVER do not apply to it.
    Serve {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: std::net::SocketAddr,
        /// Bearer tokens and their roles (read, operator, admin), JSON,
        /// permissions 0600: {"tokens": [{"name", "token", "role"}],
        /// "anonymous": role?}. Without it, a loopback service lets anyone
        /// on this machine do everything.
        #[arg(long, value_name = "FILE")]
        access: Option<PathBuf>,
        /// Listen on a non-loopback address (needs --access).
        #[arg(long)]
        allow_remote: bool,
        /// Most requests running agent code, or waiting for a query thread,
        /// at once; more get 503 at once.
        #[arg(long, default_value_t = 64)]
        max_in_flight: usize,
        /// Threads that run queries and reads (default: twice the cores);
        /// more queries wait in line, at most 20 ms before they run beside
        /// them. Writes (feedback, plugins, the memory graph, workflows) run
        /// beside them from the start.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        query_threads: Option<u16>,
        /// Largest request body, in bytes (larger: 413).
        #[arg(long, default_value_t = 65536)]
        max_body_bytes: usize,
        /// Longest a request may take, in ms (longer: 503).
        #[arg(long, default_value_t = 10_000)]
        request_timeout_ms: u64,
        /// Take uploaded plugin components (POST /v1/plugins with
        /// Content-Type: application/wasm), which are UNSIGNED: they run
        /// without a signature check. Without it, plugins load only signed,
        /// by name from the registry.
        #[arg(long)]
        allow_unsigned: bool,
        /// Largest uploaded plugin component, in bytes.
        #[arg(long, default_value_t = 32 << 20)]
        max_upload_bytes: usize,
        /// Requests per second each client may make (a token's name, or the
        /// address of a request without a valid token); beyond it, 429 with
        /// Retry-After. 0: no limit.
        #[arg(long, default_value_t = 0.0, value_name = "PER_SECOND")]
        rate_limit: f64,
        /// Requests a client may make at once before --rate-limit applies.
        #[arg(long, default_value_t = 100)]
        rate_burst: u32,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print a component's imports and exports as WIT, or say why the file is
    /// not a component.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Also check that it fits this world (e.g. elex:platform/plugin); for
        /// elex:platform/plugin, also load it as `elex query`'s host would
        /// (its per-instance limits, compile, link) and say what it declares.
        #[arg(long, value_name = "WORLD")]
        world: Option<String>,
    },
}

#[derive(clap::Args)]
struct PublishArgs {
    /// The component file.
    file: PathBuf,
    /// Registry name (lower-case letters, digits, '-').
    #[arg(long)]
    name: String,
    /// Semantic version, e.g. 0.1.0.
    #[arg(long)]
    version: semver::Version,
    /// Private key file (from `elex keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// World the component must fit [default: elex:platform/plugin].
    #[arg(long, value_name = "WORLD")]
    world: Option<String>,
    /// Publish even if the registry's trust policy (its trust/ folder and
    /// every --trust) does not accept the key for this name: unknown,
    /// revoked, or not allowed to sign the name. Without it such a key is
    /// refused; with it the entry is written with a warning on stderr, and
    /// nothing loads it until a trust policy trusts the key for the name.
    #[arg(long)]
    untrusted: bool,
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Sign a component and add it to the index (same as `sign`).
    Add(PublishArgs),
    /// List every entry.
    List,
    /// Verify every entry: line format, digest of the stored bytes,
    /// signature and trust. Exits 1 if any fails.
    Verify,
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn default_registry() -> PathBuf {
    if let Some(p) = std::env::var_os("ELEX_REGISTRY") {
        return PathBuf::from(p);
    }
    let beside_binary =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("../registry")));
    match beside_binary {
        Some(p) if p.is_dir() => p,
        _ => PathBuf::from("target/registry"),
    }
}

/// Where and whom to trust, from the global options.
pub struct Places {
    pub data_dir: PathBuf,
    registry: PathBuf,
    trust: Vec<PathBuf>,
    /// The registry with its trust policy, read once per command.
    opened: std::cell::OnceCell<Registry>,
}

impl Places {
    /// The registry with its own `trust/` policy (if any) and every --trust.
    fn open(&self) -> anyhow::Result<&Registry> {
        if let Some(r) = self.opened.get() {
            return Ok(r);
        }
        let registry = Registry::open_trusting(&self.registry, &self.trust)?;
        Ok(self.opened.get_or_init(|| registry))
    }

    /// The data dir, created if missing; an error naming it when it cannot
    /// be one.
    pub fn data_dir(&self) -> anyhow::Result<&Path> {
        elex_ran::runtime::check_data_dir(self.data_dir.clone())?;
        Ok(&self.data_dir)
    }

    /// The agents' database (snapshots and usage).
    pub fn agent_store(&self) -> anyhow::Result<SnapshotStore> {
        let path = self.data_dir()?.join(snapshots::FILE_NAME);
        // Another elex on the same data dir holds the file for the length of
        // its command; wait for it rather than fail.
        SnapshotStore::open_waiting(&path, std::time::Duration::from_secs(30))
            .with_context(|| format!("opening the agents' database in {}", self.data_dir.display()))
    }
}

/// The runtime over the data dir and registry of the global options; with
/// `component`, that (unsigned) file is every feature's agent. A progress
/// bar appears when starting takes longer than a blink.
/// The runtime builder over the data dir and registry of the global options.
pub(crate) fn builder(places: &Places) -> anyhow::Result<elex_ran::RuntimeBuilder> {
    let mut builder = Runtime::builder(places.data_dir()?).registry(&places.registry);
    for dir in &places.trust {
        builder = builder.trust(dir);
    }
    Ok(builder)
}

fn runtime(places: &Places, component: Option<&Path>) -> anyhow::Result<Runtime> {
    let mut builder = builder(places)?;
    if let Some(path) = component {
        tracing::warn!(component = %path.display(), "loading an UNSIGNED component (--allow-unsigned)");
        eprintln!("warning: loading UNSIGNED component {} (--allow-unsigned)", path.display());
        builder = builder.unsigned_agent(path);
    }
    let started = Instant::now();
    let bar = std::sync::OnceLock::new();
    let runtime = builder.start_with_progress(|done, total| {
        if started.elapsed() > std::time::Duration::from_millis(150) {
            let bar = bar.get_or_init(|| {
                let b = indicatif::ProgressBar::new(total as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template("starting agents {bar:40} {pos}/{len}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
            bar.set_position(done as u64);
        }
    });
    if let Some(b) = bar.get() {
        b.finish_and_clear();
    }
    let runtime = runtime?;
    for (id, problem) in runtime.plugin_problems() {
        eprintln!("warning: plugin {id} is left out of this run: {problem}");
    }
    Ok(runtime)
}

fn query(
    places: &Places,
    text: &str,
    component: Option<PathBuf>,
    allow_unsigned: bool,
    agent: Option<String>,
    best_guess: bool,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(path) = &component {
        if !path.exists() {
            return Err(anyhow!("component {} not found", path.display()));
        }
        if !allow_unsigned {
            return Err(anyhow!(
                "refusing to load unsigned component {}: publish it with `elex sign`, or pass \
                 --allow-unsigned for development",
                path.display()
            ));
        }
    }
    // Arguments are checked before anything starts.
    if text.trim().is_empty() {
        return Err(elex_ran::Error::NoQuestion.into());
    }
    if let Some(faj) = &agent {
        builder(places)?.agents()?.index_of(faj)?;
    }
    let runtime = runtime(places, component.as_deref())?;
    let answer = match &agent {
        Some(faj) => runtime.ask(faj, text),
        None if best_guess => runtime.route(text).and_then(|r| runtime.answer(r.best_guess(), text)),
        None => runtime.query(text),
    }?;
    answer::print(&runtime.answer_json(&answer), json)
}

/// `elex serve --cluster`: joining a cluster of hosts over NATS.
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Join the cluster on this NATS server (nats://HOST:PORT, or several,
    /// comma-separated, of one NATS cluster): the hosts share the agents,
    /// forward queries to the host holding each, and keep what the agents
    /// learn in a JetStream bucket (needs JetStream: run nats-server with
    /// -js).
    #[arg(long, value_name = "NATS_URL", requires = "host_id")]
    cluster: Option<String>,
    /// This host's id in the cluster (1 to 64 letters, digits, '-', '_');
    /// a host restarted with the same id takes back the same agents.
    #[arg(long, value_name = "ID", requires = "cluster")]
    host_id: Option<String>,
    /// The cluster's name: hosts with the same name and NATS server form
    /// one cluster.
    #[arg(long, default_value = "elex", value_name = "NAME", requires = "cluster")]
    cluster_name: String,
    /// Hosts holding each agent (1 to 16, the same on every host): its
    /// primary, which answers, and standbys that follow its state and
    /// answer when it does not.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16), requires = "cluster")]
    replicas: u32,
    /// How long a silent host stays a member, in ms (1500 to 600000).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1500..=600_000), requires = "cluster")]
    dead_after_ms: u64,
    /// How long a query forwarded to another host waits for its answer, in
    /// ms; a query in flight when its host dies waits this long, then goes
    /// to the next holder.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000), requires = "cluster")]
    forward_timeout_ms: u64,
    /// How long a consult sent to another host waits for its answer, in ms
    /// (the consulting agent's own call deadline keeps running meanwhile).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000), requires = "cluster")]
    consult_timeout_ms: u64,
    /// Replicas of the agents' state bucket in JetStream (1 to 5; 3 on a
    /// three-server NATS cluster).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5), requires = "cluster")]
    state_replicas: u32,
}

impl ClusterArgs {
    /// The cluster configuration, if --cluster was given; `http` is this
    /// host's address.
    fn config(&self, http: std::net::SocketAddr) -> Option<elex_cluster::ClusterConfig> {
        let url = self.cluster.clone()?;
        let mut config = elex_cluster::ClusterConfig::new(url, self.host_id.clone().unwrap_or_default());
        config.cluster = self.cluster_name.clone();
        config.http = format!("http://{http}");
        config.replicas = self.replicas as usize;
        config.dead_after = std::time::Duration::from_millis(self.dead_after_ms);
        config.forward_timeout = std::time::Duration::from_millis(self.forward_timeout_ms);
        config.consult_timeout = std::time::Duration::from_millis(self.consult_timeout_ms);
        config.state_replicas = self.state_replicas as usize;
        Some(config)
    }
}

/// `elex serve`: the runtime as a service until SIGTERM/SIGINT.
fn serve(
    places: &Places,
    listen: std::net::SocketAddr,
    access: Option<PathBuf>,
    allow_remote: bool,
    limits: elex_server::Limits,
    cluster: ClusterArgs,
) -> anyhow::Result<()> {
    let access = match &access {
        Some(path) => elex_server::Access::from_file(path)?,
        None if allow_remote || !listen.ip().is_loopback() => {
            return Err(anyhow!("a service on a non-loopback address needs --access FILE (bearer tokens)"));
        }
        None => elex_server::Access::open(),
    };
    if let Some(config) = cluster.config(listen) {
        // Before the agents start: a bad id is refused at once.
        config.check()?;
    }
    let runtime = std::sync::Arc::new(runtime(places, None)?);
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async move {
        let listener = elex_server::bind(listen, allow_remote).await?;
        let address = listener.local_addr()?;
        let cluster = match cluster.config(address) {
            Some(config) => {
                let (url, host) = (config.url.clone(), config.host_id.clone());
                let handler = elex_server::Forwarded::handler(std::sync::Arc::clone(&runtime));
                let joined =
                    elex_cluster::Cluster::join(std::sync::Arc::clone(&runtime), config, handler).await?;
                outln!("joined cluster {} at {url} as host {host}", joined.status().cluster)?;
                Some(joined)
            }
            None => None,
        };
        outln!("listening on http://{address}")?;
        elex_server::serve(runtime, listener, access, limits, cluster, elex_server::shutdown_signal())
            .await?;
        outln!("stopped; every agent's state is stored")?;
        anyhow::Ok(())
    })
}

/// `elex feedback`: rewards the agent that answered a query (in this or an
/// earlier run); what it learns is stored.
fn feedback(
    places: &Places,
    query_id: &str,
    reward: Option<f32>,
    agent: Option<&str>,
    operator: Option<String>,
) -> anyhow::Result<()> {
    // Everything is checked before anything starts.
    if let Some(reward) = reward
        && (!reward.is_finite() || !(-1.0..=1.0).contains(&reward))
    {
        return Err(anyhow!("reward {reward} is outside -1..1"));
    }
    if let Some(agent) = agent {
        builder(places)?.agents()?.index_of(agent)?;
    }
    let operator = operator.or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    if agent.is_some() && operator.trim().is_empty() {
        return Err(anyhow!("who gives the correction? pass --operator NAME"));
    }
    if places.agent_store()?.query_agent(query_id)?.is_none() {
        return Err(anyhow!("no answered query {query_id:?} in {}", places.data_dir.display()));
    }
    let runtime = runtime(places, None)?;
    if let Some(reward) = reward {
        let feature = runtime.feedback(query_id, reward)?;
        outln!("{} ({}) rewarded {reward:+.2} for {query_id}", feature.faj, feature.name)?;
    }
    if let Some(agent) = agent {
        let feature = runtime.correct(query_id, agent, &operator)?;
        outln!(
            "{query_id} was meant for {} ({}): kept as its example, on {}'s word",
            feature.faj,
            feature.name,
            operator.trim()
        )?;
    }
    Ok(())
}

fn keygen(places: &Places, out: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = out.unwrap_or_else(|| places.data_dir.join("keys"));
    let key = KeyPair::generate()?;
    let id = key.public().id();
    let private = dir.join(format!("{id}.key"));
    let public = dir.join(format!("{id}.pub"));
    key.write_private(&private)?;
    std::fs::write(&public, key.public().to_file_text())
        .with_context(|| format!("writing {}", public.display()))?;
    outln!("key id      {id}")?;
    outln!("private key {} (permissions 0600; keep it out of version control)", private.display())?;
    outln!("public key  {}", public.display())?;
    outln!(
        "trust it: copy {id}.pub into a policy's keys/ folder and add {{\"key\": \"{id}\", \"names\": [...]}} to its policy.json"
    )?;
    Ok(())
}

fn parse_world(name: Option<&str>) -> anyhow::Result<World> {
    let name = name.unwrap_or(World::Plugin.qualified_name());
    World::from_name(name).with_context(|| {
        let known: Vec<_> = World::ALL.iter().map(|w| w.qualified_name()).collect();
        format!("unknown world {name:?}; known worlds: {}", known.join(", "))
    })
}

/// `elex sign` / `elex index add`: checks the file fits the world, then
/// signs and publishes it; a key the registry's trust policy does not accept
/// for the name is refused unless --untrusted (then warned about).
fn publish(places: &Places, args: PublishArgs) -> anyhow::Result<()> {
    let world = parse_world(args.world.as_deref())?;
    let bytes = read_component_file(&args.file)?;
    elex_wit::check_fit(&bytes, world).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let key = KeyPair::read_private(&args.key)?;
    let registry = places.open()?;
    elex_registry::index::check_name(&args.name)?;
    let id = key.public().id();
    // A plugin's budgets are its manifest's (the signature covers both).
    let budgets = elex_registry::Manifest::of_component(&bytes)
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?
        .map(|m| m.budgets())
        .unwrap_or_default();
    let (name, version, world) = (&args.name, &args.version, world.qualified_name());
    let entry = match registry.policy.check_signer(&id, name, version) {
        Ok(()) => registry.publish(name, version, world, &bytes, &key, budgets)?,
        Err(why) if args.untrusted => {
            eprintln!(
                "warning: {why}\nwarning: publishing anyway (--untrusted): nothing loads {name}@{version} \
                 until a trust policy trusts key {id} for {name}"
            );
            registry.publish_untrusted(name, version, world, &bytes, &key, budgets)?
        }
        Err(why) => {
            return Err(anyhow!(
                "{why}\nrefusing to publish with key {id}, which the trust policy of registry {} \
                 does not accept for {name}: trust it in {} (or a --trust folder), or pass \
                 --untrusted to publish anyway",
                places.registry.display(),
                places.registry.join("trust").display()
            ));
        }
    };
    outln!(
        "published {}@{} ({}, {} bytes) signed by {}",
        entry.name,
        entry.version,
        entry.digest,
        entry.size,
        entry.signer
    )?;
    outln!("index     {}", registry.index.dir().join(&entry.name).display())?;
    Ok(())
}

fn verify(places: &Places, spec: &str) -> anyhow::Result<()> {
    let registry = places.open()?;
    let (name, req) = elex_registry::parse_spec(spec)?;
    let t = Instant::now();
    let fetched = registry.fetch(&name, &req)?;
    let world = parse_world(Some(&fetched.entry.world))?;
    elex_wit::check_fit(&fetched.bytes, world)
        .map_err(|e| anyhow!("{}@{}: {e}", fetched.entry.name, fetched.entry.version))?;
    outln!(
        "ok  {}@{}  {}  {} bytes  signed by {}  fits {}  ({:.2} ms)",
        fetched.entry.name,
        fetched.entry.version,
        fetched.entry.digest,
        fetched.entry.size,
        fetched.entry.signer,
        fetched.entry.world,
        t.elapsed().as_secs_f64() * 1e3
    )?;
    Ok(())
}

/// `elex index list` / `elex index verify`: every index file is read on its
/// own; an unreadable file or a bad line is reported and the rest go on.
fn index(places: &Places, command: IndexCommand) -> anyhow::Result<()> {
    let registry = places.open()?;
    match command {
        IndexCommand::Add(args) => publish(places, args),
        IndexCommand::List => {
            let scan = registry.index.scan()?;
            outln!(
                "{:<20} {:<10} {:<36} {:>9}  {:<16} digest",
                "name",
                "version",
                "world",
                "bytes",
                "signer"
            )?;
            for e in &scan.entries {
                outln!(
                    "{:<20} {:<10} {:<36} {:>9}  {:<16} {}",
                    e.name,
                    e.version.to_string(),
                    clean(&e.world),
                    e.size,
                    e.signer,
                    e.digest
                )?;
            }
            for problem in &scan.problems {
                eprintln!("warning: skipped {}", clean(&problem.to_string()));
            }
            Ok(())
        }
        IndexCommand::Verify => {
            let scan = registry.index.scan()?;
            let mut failures = 0;
            for problem in &scan.problems {
                outln!("FAIL {}", clean(&problem.to_string()))?;
                failures += 1;
            }
            for e in &scan.entries {
                // The signature first: it covers the size that bounds the read.
                let result = registry.verify_entry(e).and_then(|()| registry.store.get(e).map(|_| ()));
                match result {
                    Ok(()) => outln!("ok   {}@{}", e.name, e.version)?,
                    Err(err) => {
                        outln!("FAIL {}", clean(&err.to_string()))?;
                        failures += 1;
                    }
                }
            }
            if failures > 0 {
                return Err(anyhow!(
                    "{failures} index entr{} or file{} failed verification",
                    if failures == 1 { "y" } else { "ies" },
                    if failures == 1 { "" } else { "s" }
                ));
            }
            Ok(())
        }
    }
}

/// A component file named on the command line: a regular file (symlinks
/// followed; FIFOs and devices refused) within the registry's size limit.
pub(crate) fn read_component_file(file: &Path) -> anyhow::Result<Vec<u8>> {
    use elex_registry::files::{Links, read_regular};
    read_regular(file, elex_registry::store::MAX_COMPONENT_BYTES, Links::Follow)
        .with_context(|| format!("cannot read {}", file.display()))
}

fn inspect(file: &Path, world: Option<String>) -> anyhow::Result<()> {
    let bytes = read_component_file(file)?;
    let wit = elex_wit::print_wit(&bytes).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    outln!("{}", wit.trim_end_matches('\n'))?;
    if let Some(name) = world {
        let w = parse_world(Some(&name))?;
        elex_wit::check_fit(&bytes, w).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        eprintln!("{} fits {w}", file.display());
        if w != World::Plugin {
            return Ok(());
        }
        // What the host will say: the whole load path (limits, compile,
        // link) in a host configured as `elex query`'s.
        let config = HostConfig::for_swarm(593);
        let loaded = elex_host::Host::new(config.clone())?
            .load_unsigned_bytes(&file.display().to_string(), &bytes)
            .map_err(|e| anyhow!("the host refuses it: {e}"))?;
        let f = loaded.footprint;
        eprintln!(
            "the host loads it: one instance declares {} core instances, {} memories, {} tables (the host \
             allows {}, {}, {})",
            f.core_instances,
            f.memories,
            f.tables,
            config.core_instances_per_instance,
            config.memories_per_instance,
            config.tables_per_instance
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let places = Places {
        data_dir: cli.data_dir.unwrap_or_else(HostConfig::default_data_dir),
        registry: cli.registry.unwrap_or_else(default_registry),
        trust: cli.trust,
        opened: std::cell::OnceCell::new(),
    };
    let result = match &cli.server {
        Some(url) if cli.command.uses_agents() => {
            remote::Remote::new(url, cli.token.clone()).and_then(|server| over_server(&server, cli.command))
        }
        _ => local(&places, cli.command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `elex … | head -1`: the reader has what it wanted.
        Err(e) if output::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command run here, on the data dir.
fn local(places: &Places, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Query { text, component, allow_unsigned, agent, best_guess, json } => {
            query(places, &text, component, allow_unsigned, agent, best_guess, json)
        }
        Command::Feedback { query_id, reward, agent, operator } => {
            feedback(places, &query_id, reward, agent.as_deref(), operator)
        }
        Command::Keygen { out } => keygen(places, out),
        Command::Sign(args) => publish(places, args),
        Command::Verify { spec } => verify(places, &spec),
        Command::Index(command) => index(places, command),
        Command::Inspect { file, world } => inspect(&file, world),
        Command::Load { spec, allow_unsigned, grant, operator } => {
            plugin::load(places, &spec, allow_unsigned, &grant, operator)
        }
        Command::Unload { id } => plugin::unload(places, &id),
        Command::New { id, lang, dir } => plugin::new(&id, lang, dir),
        Command::Build { dir } => plugin::build(&dir).map(|_| ()),
        Command::Wit { out } => plugin::wit(out),
        Command::Serve {
            listen,
            access,
            allow_remote,
            max_in_flight,
            query_threads,
            max_body_bytes,
            request_timeout_ms,
            allow_unsigned,
            max_upload_bytes,
            rate_limit,
            rate_burst,
            cluster,
        } => {
            if !(rate_limit >= 0.0 && rate_limit.is_finite()) {
                return Err(anyhow!("--rate-limit must be a number of requests per second, 0 or more"));
            }
            let limits = elex_server::Limits {
                body_bytes: max_body_bytes,
                request_timeout: std::time::Duration::from_millis(request_timeout_ms),
                in_flight: max_in_flight,
                query_threads: query_threads
                    .map_or(elex_server::Limits::default().query_threads, usize::from),
                upload_bytes: max_upload_bytes,
                allow_unsigned,
                rate_per_second: rate_limit,
                rate_burst,
            };
            serve(places, listen, access, allow_remote, limits, cluster)
        }
        Command::Agents(command) => agents::run(places, command),
        Command::Engram(command) => memory::engram(places, command),
        Command::Context(command) => memory::context(places, command),
        Command::Workflow(command) => workflow::run(places, command),
    }
}

impl Command {
    /// Whether the command uses the agents or their data (and so goes to
    /// the service under --server); the others (keys, signing, the
    /// registry index, inspect, plugin authoring) run here either way.
    fn uses_agents(&self) -> bool {
        matches!(
            self,
            Command::Query { .. }
                | Command::Feedback { .. }
                | Command::Load { .. }
                | Command::Unload { .. }
                | Command::Agents(_)
                | Command::Engram(_)
                | Command::Context(_)
                | Command::Workflow(_)
        )
    }
}

/// A command sent to a running `elex serve` (see [`remote`]).
fn over_server(server: &remote::Remote, command: Command) -> anyhow::Result<()> {
    use agents::AgentsCommand;
    use memory::{ContextCommand, EngramCommand};
    let here = |what: &str| {
        Err(anyhow!(
            "`elex {what}` runs where the data dir is, not over --server: run it without --server (and \
             without ELEX_SERVER)"
        ))
    };
    let not_as = |actor: &memory::As| match &actor.agent {
        Some(_) => Err(anyhow!("--as is not available over --server: the service acts as the operator")),
        None => Ok(()),
    };
    match command {
        Command::Query { text, component, agent, best_guess, json, .. } => {
            if component.is_some() {
                return Err(anyhow!("--component is not available over --server: the service runs its own"));
            }
            remote::query(server, &text, agent, best_guess, json)
        }
        Command::Feedback { query_id, reward, agent, operator } => {
            remote::feedback(server, &query_id, reward, agent.as_deref(), operator)
        }
        Command::Load { spec, allow_unsigned, grant, operator } => {
            if operator.is_some() {
                return Err(anyhow!(
                    "--operator is not available over --server: the service records the token's name"
                ));
            }
            remote::load(server, &spec, allow_unsigned, &grant)
        }
        Command::Unload { id } => remote::unload(server, &id),
        Command::Agents(AgentsCommand::List { category, .. }) => {
            let mut agents = server.call("GET", "/v1/agents", None)?;
            if let (Some(category), Some(list)) = (category, agents.as_array_mut()) {
                let want = category.to_lowercase();
                list.retain(|a| a["category"].as_str().is_some_and(|c| c.to_lowercase().contains(&want)));
            }
            remote::print(&agents)
        }
        Command::Agents(AgentsCommand::Show { faj: agent, .. }) => {
            remote::print(&server.call("GET", &remote::agent_path(&agent), None)?)
        }
        Command::Engram(EngramCommand::Add { content, source, confidence, metadata, context, actor }) => {
            not_as(&actor)?;
            let metadata: serde_json::Map<String, serde_json::Value> =
                metadata.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            let body = serde_json::json!({ "content": content, "source": source, "confidence": confidence,
                                           "metadata": metadata, "context": context });
            outln!("{}", server.post("/v1/engrams", &body)?["id"])?;
            Ok(())
        }
        Command::Engram(EngramCommand::Get { id, actor, .. }) => {
            not_as(&actor)?;
            remote::print(&server.call("GET", &format!("/v1/engrams/{id}"), None)?)
        }
        Command::Engram(EngramCommand::Search { text, metadata, context, limit, actor, .. }) => {
            not_as(&actor)?;
            let metadata: serde_json::Map<String, serde_json::Value> =
                metadata.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            let body =
                serde_json::json!({ "text": text, "metadata": metadata, "context": context, "limit": limit });
            remote::print(&server.post("/v1/search", &body)?)
        }
        Command::Context(ContextCommand::Create { name, actor }) => {
            not_as(&actor)?;
            outln!("{}", server.post("/v1/contexts", &serde_json::json!({ "name": name }))?["id"])?;
            Ok(())
        }
        Command::Context(ContextCommand::Add { context, engrams, agents, actor }) => {
            not_as(&actor)?;
            let body = serde_json::json!({ "engrams": engrams, "agents": agents });
            let out = server.post(&format!("/v1/contexts/{context}/members"), &body)?;
            eprintln!("context {context}: {} added", out["added"]);
            Ok(())
        }
        Command::Context(ContextCommand::Show { context, limit, actor, .. }) => {
            not_as(&actor)?;
            remote::print(&server.call("GET", &format!("/v1/contexts/{context}?limit={limit}"), None)?)
        }
        Command::Workflow(workflow::WorkflowCommand::Run { file, context, component, .. }) => {
            if component.is_some() {
                return Err(anyhow!("--component is not available over --server: the service runs its own"));
            }
            // Checked here as a local run checks it (bounded, well-formed),
            // then sent as JSON (YAML is read as the JSON it stands for).
            elex_ran::workflow::Workflow::load(&file)?;
            let text = std::fs::read_to_string(&file)?;
            let workflow: serde_json::Value = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("reading {} as JSON or YAML", file.display()))?;
            let body = serde_json::json!({ "context": context, "workflow": workflow });
            let report = server.post("/v1/workflows", &body)?;
            remote::print(&report)?;
            if report["succeeded"].as_bool() == Some(true) {
                Ok(())
            } else {
                Err(anyhow!("workflow {:?} did not complete", report["workflow"]))
            }
        }
        Command::Agents(AgentsCommand::Stats { .. }) => here("agents stats"),
        Command::Agents(AgentsCommand::Reset { .. }) => here("agents reset"),
        Command::Agents(AgentsCommand::Check) => here("agents check"),
        Command::Engram(EngramCommand::Check) => here("engram check"),
        // `uses_agents` sends no other command here.
        _ => Err(anyhow!("this command runs here, not over --server")),
    }
}
