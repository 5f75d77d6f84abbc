//! [`Runtime`]: the feature agents as one running service an application
//! embeds — what `elex query` and `elex feedback` do, as a library.
//!
//! A runtime owns a [`Host`] (engine, cache in `<data dir>/cache`), the
//! signed feature-agent component from a registry, the agents' database
//! (`<data dir>/agents.redb`), the memory graph (`<data dir>/memory.redb`),
//! the [`Router`] of the catalog and the [`Swarm`] of every catalog feature
//! (its directory is the router's view of the agents, [`crate::agents`]),
//! restored from what it learned before.
//!
//! Storing what agents learn: who answered each query (for feedback), what
//! the agents learned from queries and their use (failed calls included)
//! are kept in memory and stored by [`Runtime::save_changed`] — which a
//! service calls every second and dropping the runtime calls (answers are
//! also written every 32,768) — so a query does not pay for a database
//! write. Feedback and corrections are stored, durably, before
//! their call returns. A crash loses at most the learning from queries
//! since the last save, never an acknowledged reward.
//!
//! It is `Send + Sync`: share it in an `Arc`. Its calls run guest code on
//! the calling thread and block it (a query takes ~0.1–2 ms, starting ~0.1–
//! 0.4 s); from async code call them inside `tokio::task::spawn_blocking`.
//! See `ran/examples/embed.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use elex_host::events::Events;
use elex_host::snapshots::SnapshotStore;
use elex_host::usage::Usage;
use elex_host::{
    AgentComponents, Event, Hop, Host, HostConfig, LoadedComponent, Response, Swarm, SwarmConfig,
};
use elex_memgraph::{Actor, GraphConfig, MemoryGraph, Op};
use elex_registry::Registry;

use crate::agents::{AgentDirectory, Agents};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::router::{Reason, Router};
use crate::workflow::{Report, Workflow};

/// An answered query.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Index of the agent that answered in `catalog`.
    pub agent: usize,
    /// The catalog the question was answered under (the runtime's may have
    /// changed since: a plugin loaded or unloaded).
    pub catalog: Arc<Catalog>,
    /// Why it was chosen.
    pub reason: Reason,
    /// The agent's answer; its `query_id` is what [`Runtime::feedback`]
    /// takes.
    pub response: Response,
    /// The consults between agents it took.
    pub trace: Vec<Hop>,
    /// Other agents nearly as likely to be meant, best first (empty when the
    /// choice was clear; see [`Router::choose_with_rivals`]): the answer may be
    /// the wrong feature's, and `--agent` or a correction
    /// ([`Runtime::correct`]) says which was meant. For a question back
    /// ([`Answer::asked_back`]): the features it offers.
    pub close: Vec<crate::router::Candidate>,
    /// Time spent routing.
    pub routing: Duration,
    /// Time from the question to the answer.
    pub took: Duration,
    /// The router asked back which feature was meant instead of asking an
    /// agent (see [`Runtime::answer`]): there is nothing to reward, only a
    /// correction to give.
    pub asked_back: bool,
}

/// A question routed to an agent and not asked yet ([`Runtime::route`]).
#[derive(Clone)]
pub struct Routed {
    agents: Arc<Agents>,
    /// Index of the chosen agent in [`Routed::catalog`].
    pub index: usize,
    /// Why it was chosen.
    pub reason: Reason,
    /// Other agents nearly as likely to be meant (see [`Answer::close`]).
    pub close: Vec<crate::router::Candidate>,
    /// Time spent routing.
    pub took: Duration,
    /// Whether a close choice asks back (see [`Routed::is_close`]).
    clarify: bool,
}

/// Most features a clarification offers.
pub const CLARIFY_OFFERS: usize = 5;

/// The component family recorded for a clarification (no agent answered).
const CLARIFIED: &str = "(clarification)";

impl Routed {
    /// Whether the router's choice is uncertain: made by text similarity,
    /// with other features within [`CLOSE_MARGIN`](crate::router::CLOSE_MARGIN)
    /// of it. [`Runtime::answer`] then asks back which feature is meant
    /// instead of answering what may be the wrong one, unless
    /// [`Routed::best_guess`] said not to.
    pub fn is_close(&self) -> bool {
        self.clarify && matches!(self.reason, Reason::Similarity(_)) && !self.close.is_empty()
    }

    /// Answers with the router's best guess even when the choice is close.
    pub fn best_guess(mut self) -> Routed {
        self.clarify = false;
        self
    }

    /// The catalog the agent was chosen from.
    pub fn catalog(&self) -> &Arc<Catalog> {
        self.agents.catalog()
    }

    /// The chosen agent's feature (or plugin).
    pub fn feature(&self) -> &crate::Feature {
        &self.catalog().features[self.index]
    }
}

impl Answer {
    /// The feature (or plugin) whose agent answered.
    pub fn feature(&self) -> &crate::Feature {
        &self.catalog.features[self.agent]
    }
}

/// The registry name and version requirement of the feature agent.
pub const AGENT_COMPONENT: &str = "feature-agent@^0.1";
/// The registry name and version requirement of the HNSW store the router
/// uses for similarity search.
const HNSW_COMPONENT: (&str, &str) = ("hnsw", "^0.1");

/// Answers recorded in memory before they are written to the database
/// whether or not [`Runtime::save_changed`] came first.
const MAX_PENDING_ANSWERS: usize = 32_768;

/// How long opening the agents' database or memory graph waits for another
/// process that holds it.
pub(crate) const OPEN_WAIT: Duration = Duration::from_secs(30);

/// Where the agents' component comes from.
#[derive(Debug, Clone)]
enum AgentSource {
    Registry(String),
    Unsigned(PathBuf),
}

/// Builds a [`Runtime`]: `Runtime::builder(data_dir).registry(dir).start()`.
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    pub(crate) data_dir: PathBuf,
    pub(crate) registry: PathBuf,
    pub(crate) trust: Vec<PathBuf>,
    host: HostConfig,
    swarm: SwarmConfig,
    agent: AgentSource,
    events: Events,
}

impl RuntimeBuilder {
    /// The registry folder (`index/`, `blobs/`, `trust/`) [default:
    /// `target/registry`].
    pub fn registry(mut self, dir: impl Into<PathBuf>) -> Self {
        self.registry = dir.into();
        self
    }

    /// A trust-policy folder added to the registry's own (repeatable).
    pub fn trust(mut self, dir: impl Into<PathBuf>) -> Self {
        self.trust.push(dir.into());
        self
    }

    /// Changes the host configuration [default:
    /// [`HostConfig::for_swarm`]`(593)`, with the cache in the data dir].
    pub fn host_config(mut self, change: impl FnOnce(&mut HostConfig)) -> Self {
        change(&mut self.host);
        self
    }

    /// The swarm's limits (consult depth, wait, start threads).
    pub fn swarm_config(mut self, config: SwarmConfig) -> Self {
        self.swarm = config;
        self
    }

    /// Runs this component file as every feature's agent instead of the
    /// registry's signed `feature-agent` — **without a signature check**,
    /// for development. Its state is kept apart from the signed agent's.
    pub fn unsigned_agent(mut self, file: impl Into<PathBuf>) -> Self {
        self.agent = AgentSource::Unsigned(file.into());
        self
    }

    /// Receives every [`Event`] of the runtime from its start on (the
    /// component's load, a snapshot quarantined while restoring, the
    /// swarm started, …); [`Runtime::subscribe`] receives them from the
    /// moment it is called.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The host configuration for a runtime on `data_dir`: its compiled
    /// code cached there.
    pub(crate) fn host_config_for(&self, data_dir: &std::path::Path) -> HostConfig {
        HostConfig { cache_dir: Some(data_dir.join("cache")), ..self.host.clone() }
    }

    /// Starts the runtime: every agent live and restored.
    pub fn start(self) -> Result<Runtime> {
        self.start_with_progress(|_, _| {})
    }

    /// [`RuntimeBuilder::start`], calling `progress(started, total)` as
    /// agents come up (from the starting threads).
    pub fn start_with_progress(self, progress: impl Fn(usize, usize) + Sync) -> Result<Runtime> {
        let data_dir = check_data_dir(self.data_dir.clone())?;
        let registry = Registry::open_trusting(&self.registry, &self.trust)?;
        let mut catalog = Catalog::embedded()?;
        let graph = MemoryGraph::open(
            &data_dir.join(elex_memgraph::FILE_NAME),
            GraphConfig { open_wait: OPEN_WAIT, ..GraphConfig::default() },
        )?;
        let store = Arc::new(SnapshotStore::open_waiting(
            &data_dir.join(elex_host::snapshots::FILE_NAME),
            OPEN_WAIT,
        )?);
        let installed = store.plugins()?;
        let mut host_config = self.host_config_for(&data_dir);
        // A pooling slot for every agent, plugins included.
        let agents = u32::try_from(catalog.features.len() + installed.len()).unwrap_or(u32::MAX);
        host_config.max_instances =
            host_config.max_instances.max(HostConfig::for_swarm(agents).max_instances);
        let graph = Arc::new(graph);
        let host =
            Arc::new(Host::new(host_config)?.with_events(self.events).with_memory_graph(graph.clone()));

        let t = Instant::now();
        let agent = Arc::new(match &self.agent {
            AgentSource::Registry(spec) => host.load_from_registry(&registry, spec)?,
            AgentSource::Unsigned(file) => host.load_unsigned_file(file)?,
        });
        // Installed plugins, after the features; one that no longer loads is
        // left out, with the reason kept for the caller.
        let mut components = AgentComponents::new(agent.clone());
        let mut plugin_problems = Vec::new();
        for plugin in &installed {
            let added = crate::plugins::load_installed(&host, &registry, &data_dir, plugin)
                .and_then(|(component, manifest)| Ok((catalog.add_plugin(&manifest)?, component, manifest)));
            match added {
                Ok((_, component, manifest)) => components = components.with(manifest.id.clone(), component),
                Err(e) => {
                    tracing::warn!(plugin = %plugin.id, error = %e, "an installed plugin is left out");
                    plugin_problems.push((plugin.id.clone(), e.to_string()));
                }
            }
        }
        let load_time = t.elapsed();

        let t = Instant::now();
        // Similarity routing runs in the signed hnsw component when the
        // registry has it; else the router scans the embeddings itself.
        let (name, req) = HNSW_COMPONENT;
        let req = semver::VersionReq::parse(req).unwrap_or(semver::VersionReq::STAR);
        let hnsw = match registry.fetch(name, &req) {
            Ok(f) => Some(Hnsw { bytes: f.bytes, version: f.entry.version.to_string() }),
            Err(e) => {
                tracing::warn!(error = %e, "routing by exact scan: no signed hnsw component");
                None
            }
        };
        let routing = Routing { host: host.clone(), store: store.clone(), hnsw };
        let total = catalog.features.len();
        let (router, similarity) = routing.router(Arc::new(catalog))?;
        let directory = Arc::new(AgentDirectory::new(Agents::new(Arc::new(router), (0..total).collect())));
        let swarm = Swarm::start(
            host.clone(),
            components,
            directory.clone(),
            Some(store.clone()),
            self.swarm,
            |n| progress(n, total),
        )?;
        let start_time = t.elapsed();
        Ok(Runtime {
            host,
            graph,
            agents: directory,
            routing,
            agent,
            store,
            answers: Default::default(),
            saving: std::sync::Mutex::new(()),
            swarm,
            similarity: std::sync::Mutex::new(similarity),
            sources: Sources { data_dir, registry: self.registry, trust: self.trust },
            changing: std::sync::Mutex::new(()),
            load_time,
            start_time,
            plugin_problems,
        })
    }
}

/// The signed hnsw component routing searches in.
struct Hnsw {
    bytes: Vec<u8>,
    version: String,
}

/// What builds a [`Router`] for a catalog: at the start, and again when a
/// plugin comes or goes.
struct Routing {
    host: Arc<Host>,
    store: Arc<SnapshotStore>,
    hnsw: Option<Hnsw>,
}

impl Routing {
    /// The router of `catalog`, with the plugins' example questions and
    /// every correction operators gave (kept in the agents' database), its
    /// similarity search in an hnsw instance when there is the component;
    /// and how similarity runs (`hnsw@<version> component` or `exact scan`).
    fn router(&self, catalog: Arc<Catalog>) -> Result<(Router, String)> {
        let router = Router::new(catalog.clone());
        for (i, f) in catalog.features.iter().enumerate() {
            for example in &f.examples {
                router.add_example(example, i);
            }
        }
        // In the order they were given: a later correction of the same
        // question supersedes an earlier one.
        let mut examples = self.store.examples()?;
        examples.sort_by_key(|(_, e)| e.millis);
        for (agent, example) in examples {
            match catalog.index_of(&agent) {
                Ok(i) => router.learn(&example.text, i),
                Err(_) => {
                    tracing::debug!(agent, "an example question names no agent running here; kept, unused")
                }
            }
        }
        let similarity = match &self.hnsw {
            None => String::from("exact scan"),
            Some(h) => match self.host.vector_index(&h.bytes, &router.profile_rows(), elex_text::DIM) {
                Ok(index) => {
                    router.attach_index(index);
                    format!("hnsw@{} component", h.version)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "routing by exact scan: the hnsw component failed");
                    String::from("exact scan")
                }
            },
        };
        Ok((router, similarity))
    }
}

/// Where a runtime's components come from, for plugins loaded while it runs.
pub(crate) struct Sources {
    pub(crate) data_dir: PathBuf,
    pub(crate) registry: PathBuf,
    pub(crate) trust: Vec<PathBuf>,
}

/// The data dir, created if missing; an error naming it when it is not a
/// folder or cannot be created.
pub fn check_data_dir(dir: PathBuf) -> Result<PathBuf> {
    let problem = |problem: String| Error::DataDir { path: dir.clone(), problem };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(problem(String::from(
            "is not a folder: pass --data-dir DIR (or set ELEX_DATA_DIR) to a folder",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&dir).map_err(|e| problem(format!("cannot be created: {e}")))?;
            Ok(dir)
        }
        Err(e) => Err(problem(format!("cannot be used: {e}"))),
    }
}

/// The feature agents, live, with their stored state. See the module docs.
pub struct Runtime {
    host: Arc<Host>,
    graph: Arc<MemoryGraph>,
    /// The agents now (catalog, router, swarm slots): swapped whole when a
    /// plugin comes or goes.
    agents: Arc<AgentDirectory>,
    routing: Routing,
    agent: Arc<LoadedComponent>,
    store: Arc<SnapshotStore>,
    /// Held while agents' use moves from the swarm to the database.
    saving: std::sync::Mutex<()>,
    /// Who answered each query since the answers were last stored.
    answers: std::sync::Mutex<std::collections::HashMap<String, elex_host::snapshots::Answered>>,
    swarm: Swarm,
    similarity: std::sync::Mutex<String>,
    sources: Sources,
    /// Held while the set of agents changes (and while a correction is
    /// learned, which a new router must not miss).
    pub(crate) changing: std::sync::Mutex<()>,
    load_time: Duration,
    start_time: Duration,
    plugin_problems: Vec<(String, String)>,
}

impl Runtime {
    /// A builder for a runtime keeping its data in `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> RuntimeBuilder {
        RuntimeBuilder {
            data_dir: data_dir.into(),
            registry: PathBuf::from("target/registry"),
            trust: Vec::new(),
            host: HostConfig::for_swarm(593),
            swarm: SwarmConfig::default(),
            agent: AgentSource::Registry(String::from(AGENT_COMPONENT)),
            events: Events::new(4096),
        }
    }

    /// Routes `text` to an agent and answers it: [`Runtime::route`], then
    /// [`Runtime::answer`].
    pub fn query(&self, text: &str) -> Result<Answer> {
        let routed = self.route(text)?;
        self.answer(routed, text)
    }

    /// The agent the router chooses for `text`, why, and its close rivals,
    /// without asking it (a cluster host routes, then asks the agent
    /// wherever it lives).
    pub fn route(&self, text: &str) -> Result<Routed> {
        let text = check_question(text)?;
        let agents = self.agents.current();
        let t = Instant::now();
        let (index, reason, close) = agents
            .router()
            .choose_with_rivals(text)
            .ok_or_else(|| Error::NoAgent(String::from("(the catalog is empty)")))?;
        Ok(Routed { agents, index, reason, close, took: t.elapsed(), clarify: true })
    }

    /// Asks the agent `routed` chose (in the agents it was chosen from);
    /// when the choice is close ([`Routed::is_close`]), asks back instead:
    /// the answer's action is `request-clarification`, its content offers
    /// the [`CLARIFY_OFFERS`] features most like the question, and a
    /// correction naming the one meant ([`Runtime::correct`]) teaches the
    /// router. No agent runs, so there is nothing to reward.
    pub fn answer(&self, routed: Routed, text: &str) -> Result<Answer> {
        let t = Instant::now();
        let close_call = routed.is_close();
        let Routed { agents, index, reason, close, took: routing, .. } = routed;
        let asked = check_question(text).and_then(|text| {
            let answer = if close_call {
                self.clarification(&agents, index, text, reason)
            } else {
                self.ask_agent(&agents, index, text, reason)
            };
            answer.map(|a| Answer {
                routing,
                took: routing + t.elapsed(),
                close: if close_call { a.close } else { close },
                ..a
            })
        });
        self.answered(&agents, text, asked)
    }

    /// The question back when `text`'s best features are close.
    fn clarification(&self, agents: &Arc<Agents>, i: usize, text: &str, reason: Reason) -> Result<Answer> {
        let catalog = agents.catalog();
        let offers = agents.router().most_like(text, CLARIFY_OFFERS);
        let mut content =
            String::from("Several features match this question about as well; which one do you mean?");
        for c in &offers {
            let f = &catalog.features[c.index];
            content.push_str(&format!("\n- {} ({}): {}", f.name, f.faj, c.reason));
        }
        content.push_str(
            "\nAsk again with its name, acronym or FAJ code, or name it in feedback on this answer \
             (`elex feedback QUERY_ID --agent FAJ`): the router then sends questions like this one there.",
        );
        let query = self.host.query(text);
        Ok(Answer {
            agent: i,
            catalog: catalog.clone(),
            reason,
            response: Response {
                query_id: query.id,
                agent_id: catalog.features[i].faj.clone(),
                action: elex_host::Action::RequestClarification,
                content,
                confidence: 0.0,
                q_value: 0.0,
                sources: offers.iter().map(|c| catalog.features[c.index].faj.clone()).collect(),
            },
            trace: Vec::new(),
            close: offers,
            routing: Duration::ZERO,
            took: Duration::ZERO,
            asked_back: true,
        })
    }

    /// Asks the agent of feature `agent` (a FAJ code in any spelling, or a
    /// plugin's id).
    pub fn ask(&self, agent: &str, text: &str) -> Result<Answer> {
        let routed = self.route_to(agent)?;
        self.answer(routed, text)
    }

    /// The agent of feature `agent` (a FAJ code in any spelling, or a
    /// plugin's id), as if routed there by name.
    pub fn route_to(&self, agent: &str) -> Result<Routed> {
        let agents = self.agents.current();
        let index = agents.catalog().index_of(agent)?;
        Ok(Routed {
            agents,
            index,
            reason: Reason::Named,
            close: Vec::new(),
            took: Duration::ZERO,
            clarify: false,
        })
    }

    fn ask_agent(&self, agents: &Arc<Agents>, i: usize, text: &str, reason: Reason) -> Result<Answer> {
        let reply = self.swarm.ask(agents.slot(i)?, text)?;
        Ok(Answer {
            agent: i,
            catalog: agents.catalog().clone(),
            reason,
            response: reply.response,
            trace: reply.trace,
            close: Vec::new(),
            routing: Duration::ZERO,
            took: reply.took,
            asked_back: false,
        })
    }

    /// Records who answered (for [`Runtime::feedback`]; a question back
    /// is recorded as no agent's). What the agents
    /// learned and their use are stored by [`Runtime::save_changed`] (see
    /// the module docs).
    fn answered(&self, agents: &Agents, text: &str, answer: Result<Answer>) -> Result<Answer> {
        let answer = answer?;
        let faj = &agents.feature(answer.agent).faj;
        let family =
            if answer.asked_back { CLARIFIED } else { self.swarm.family_of(agents.slot(answer.agent)?)? };
        let answered = elex_host::snapshots::Answered {
            query_id: answer.response.query_id.clone(),
            family: family.to_string(),
            agent: faj.clone(),
            text: text.to_string(),
        };
        let full = {
            let mut pending = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            pending.insert(answered.query_id.clone(), answered);
            pending.len() >= MAX_PENDING_ANSWERS
        };
        if full {
            self.store_answers()?;
        }
        Ok(answer)
    }

    /// Rewards (`reward` in -1..1) the agent that gave the answer with id
    /// `query_id`, in this run or an earlier one; what it learns is stored
    /// (durably) before it returns. Returns that agent's feature (or
    /// plugin).
    pub fn feedback(&self, query_id: &str, reward: f32) -> Result<crate::Feature> {
        if !reward.is_finite() || !(-1.0..=1.0).contains(&reward) {
            return Err(Error::Feedback(format!("reward {reward} is outside -1..1")));
        }
        let Some((family, faj, _)) = self.asked(query_id)? else {
            return Err(Error::Feedback(format!("no answered query {query_id:?} is known")));
        };
        if family == CLARIFIED {
            return Err(Error::Feedback(format!(
                "{query_id} asked back which feature was meant; no agent answered it, so there is nothing \
                 to reward: give the feature meant instead (feedback naming its agent), or ask again"
            )));
        }
        let agents = self.agents.current();
        let i = agents.catalog().index_of(&faj)?;
        let slot = agents.slot(i)?;
        let runs = self.swarm.family_of(slot)?;
        if family != runs {
            return Err(Error::Feedback(format!(
                "{query_id} was answered by component {family}, but {faj} now runs {runs}: that \
                 answer's state is not kept here"
            )));
        }
        let given = self.swarm.feedback(slot, query_id, reward);
        // Acknowledged feedback is on disk (a save ends durable).
        self.save_agents([slot])?;
        given.map(|()| agents.feature(i).clone()).map_err(Error::from)
    }

    /// Runs `workflow` on the live agents, its results stored as engrams of
    /// memory-graph `context` (see [`crate::workflow`]). Every step's agent
    /// (a FAJ code in any spelling, rewritten to the catalog's) and the
    /// context are checked before anything runs; the agents become members
    /// of the context. Each step is a call like any other (queued, counted,
    /// recycled on a trap); afterwards what the agents learned and their
    /// use are saved. A failed step is in the report, not an `Err`.
    pub fn run_workflow(&self, workflow: &mut Workflow, context: u64) -> Result<Report> {
        let current = self.agents.current();
        let catalog = current.catalog();
        let mut agents: Vec<usize> = Vec::new();
        for step in &mut workflow.steps {
            let i = catalog.index_of(&step.agent).map_err(|_| {
                Error::Workflow(format!(
                    "step {:?}: no feature agent {:?} in the catalog",
                    step.id, step.agent
                ))
            })?;
            // One spelling per agent: steps are grouped (and run one at a
            // time) per agent.
            step.agent = catalog.features[i].faj.clone();
            agents.push(i);
        }
        agents.sort_unstable();
        agents.dedup();
        let graph = self.memory_graph();
        graph.context(&Actor::Operator, context)?;
        let members =
            agents.iter().map(|&i| Op::AddMember { context, agent: catalog.features[i].faj.clone() });
        graph.apply(&Actor::Operator, members.collect())?;

        let workflow = &*workflow;
        let report = workflow.run(
            |step| {
                let slot = current.slot(catalog.index_of(&step.agent)?)?;
                let query = self.host.query(step.query.as_deref().unwrap_or_default());
                // In a cluster a question goes to the host the agent lives
                // on, which answers from what it learned; `validate` and
                // `kpis` depend on the feature's data only.
                if step.action == crate::workflow::StepAction::Query
                    && let Some(answer) = self.swarm.ask_elsewhere(slot, &query)
                {
                    let (response, _host) = answer?;
                    return Ok(crate::workflow::StepOutput {
                        content: response.content,
                        confidence: response.confidence,
                    });
                }
                Ok(self.swarm.call(slot, |a| crate::workflow::execute_step(step, a, &query))?)
            },
            |step, output, deps| {
                let id = graph.allocate_engram_id()?;
                let ops = crate::workflow::result_ops(workflow, step, output, deps, id, context);
                graph.apply(&Actor::agent(step.agent.clone()), ops)?;
                Ok(id)
            },
        );
        // What the agents learned is kept, whether the run completed or not.
        self.save_agents(agents.iter().filter_map(|&i| current.slot(i).ok()))?;
        report
    }

    /// The memory graph the agents and workflows write to
    /// (`<data dir>/memory.redb`).
    pub fn memory_graph(&self) -> &Arc<MemoryGraph> {
        &self.graph
    }

    /// Tells the router that the question of `query_id` (asked in this run
    /// or an earlier one) was meant for feature `agent` (a FAJ code in any
    /// spelling), on `operator`'s word: the question is kept as an example
    /// of that feature (persisted; a feature keeps its latest
    /// [`MAX_EXAMPLES_PER_AGENT`](elex_host::snapshots::MAX_EXAMPLES_PER_AGENT)),
    /// and later questions like it go there. Returns the feature's index.
    pub fn correct(&self, query_id: &str, agent: &str, operator: &str) -> Result<crate::Feature> {
        // A router built meanwhile (a plugin loading) must not miss it.
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let agents = self.agents.current();
        let i = agents.catalog().index_of(agent)?;
        let Some((_, _, text)) = self.asked(query_id)? else {
            return Err(Error::Feedback(format!("no answered query {query_id:?} is known")));
        };
        if text.is_empty() {
            return Err(Error::Feedback(format!(
                "the question of {query_id} was not kept (answered by an earlier version): ask it again"
            )));
        }
        if operator.trim().is_empty() {
            return Err(Error::Feedback(String::from("a correction needs the operator who gives it")));
        }
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let example = elex_host::snapshots::Example {
            text: text.clone(),
            operator: operator.trim().to_string(),
            query_id: query_id.to_string(),
            millis,
        };
        self.store.put_example(&agents.feature(i).faj, &example)?;
        agents.router().learn(&text, i);
        Ok(agents.feature(i).clone())
    }

    /// Keeps `example` as a question `agent` should answer and teaches it to
    /// the router, as [`Runtime::correct`] does: for a correction given on
    /// another host of a cluster. An example of the same query already kept
    /// is not kept twice.
    pub fn learn_example(
        &self,
        agent: &str,
        example: &elex_host::snapshots::Example,
    ) -> Result<crate::Feature> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let agents = self.agents.current();
        let i = agents.catalog().index_of(agent)?;
        let faj = &agents.feature(i).faj;
        let kept =
            self.store.examples()?.into_iter().any(|(a, e)| a == *faj && e.query_id == example.query_id);
        if !kept {
            self.store.put_example(faj, example)?;
            agents.router().learn(&example.text, i);
        }
        Ok(agents.feature(i).clone())
    }

    /// The question of the answer `query_id`, if it is known and was kept.
    pub fn question_of(&self, query_id: &str) -> Result<Option<String>> {
        Ok(self.asked(query_id)?.map(|(_, _, text)| text).filter(|t| !t.is_empty()))
    }

    /// Every [`Event`] of this runtime from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.host.subscribe()
    }

    /// Every agent's use across runs (calls, errors, latency, fuel, memory),
    /// sorted by agent id: what the database holds plus what the running
    /// agents did since their use was last saved.
    pub fn usage(&self) -> Result<Vec<(String, Usage)>> {
        // Not while a save moves use from the agents to the database: it
        // would be counted twice or not at all.
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: std::collections::BTreeMap<String, Usage> =
            self.store.all_usage()?.into_iter().collect();
        for &slot in self.agents.current().slots() {
            let status = self.swarm.status(slot)?;
            if status.usage.calls > 0 || status.usage.recycles > 0 || status.usage.evictions > 0 {
                all.entry(status.id).or_default().merge(&status.usage);
            }
        }
        Ok(all.into_iter().collect())
    }

    /// One agent's use across runs, as [`Runtime::usage`] counts it (`None`
    /// before its first call).
    pub fn usage_of(&self, agent_id: &str) -> Result<Option<Usage>> {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let mut usage = self.store.usage(agent_id)?;
        let agents = self.agents.current();
        if let Ok(i) = agents.catalog().index_of(agent_id) {
            let status = self.swarm.status(agents.slot(i)?)?;
            if status.usage.calls > 0 || status.usage.recycles > 0 || status.usage.evictions > 0 {
                usage.get_or_insert_with(Usage::default).merge(&status.usage);
            }
        }
        Ok(usage)
    }

    /// The catalog now: the features, then the plugins running. A plugin
    /// loaded or unloaded while the runtime runs makes a new one; an
    /// [`Answer`] carries the one it was answered under.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.agents.current().catalog().clone()
    }

    /// The agents now: catalog, router and where each lives in the swarm,
    /// one consistent view (see [`crate::agents`]).
    pub fn agents(&self) -> Arc<Agents> {
        self.agents.current()
    }

    /// The agents' component (name, digest, size, where it was loaded from).
    pub fn component(&self) -> &LoadedComponent {
        &self.agent
    }

    /// The router over the catalog now.
    pub fn router(&self) -> Arc<Router> {
        self.agents.current().router().clone()
    }

    /// The live agents: their status and upkeep ([`Swarm::maintain`]).
    pub fn swarm(&self) -> &Swarm {
        &self.swarm
    }

    /// How similarity routing runs: `hnsw@<version> component` or `exact scan`.
    pub fn similarity_search(&self) -> String {
        self.similarity.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores what the agents learned from queries since the last save
    /// (the snapshots of those called, every agent's use) and makes every
    /// write to the agents' database durable; how many snapshots it stored.
    /// A service calls it periodically (`elex serve`: every second);
    /// dropping the runtime does it too. Feedback and corrections are
    /// stored at once, whatever the period.
    pub fn save_changed(&self) -> Result<usize> {
        self.store_answers()?;
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        // Ends with a durable commit, which takes the answers along.
        Ok(self.swarm.save_changed()?)
    }

    /// Stores the snapshots of swarm slots `which` and every agent's use.
    fn save_agents(&self, which: impl IntoIterator<Item = usize>) -> Result<()> {
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.swarm.save(which)?)
    }

    /// Writes the answers recorded since the last time to the database.
    fn store_answers(&self) -> Result<()> {
        // One writer at a time; kept in memory until written, so feedback
        // always finds them.
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let answers: Vec<_> =
            self.answers.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        if answers.is_empty() {
            return Ok(());
        }
        self.store.put_answers(&answers)?;
        let mut pending = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        for a in &answers {
            pending.remove(&a.query_id);
        }
        Ok(())
    }

    /// The agent (FAJ code, or plugin id) that gave the answer `query_id`,
    /// in this run or an earlier one; `None` when no such answer is known,
    /// or no agent gave it (a question back, see [`Runtime::answer`]).
    pub fn answered_by(&self, query_id: &str) -> Result<Option<String>> {
        Ok(self.asked(query_id)?.filter(|(family, _, _)| family != CLARIFIED).map(|(_, agent, _)| agent))
    }

    /// The component family, agent and question of the answer `query_id`:
    /// recorded in this run and not stored yet, or stored.
    fn asked(&self, query_id: &str) -> Result<Option<(String, String, String)>> {
        if let Some(a) = self.answers.lock().unwrap_or_else(|p| p.into_inner()).get(query_id) {
            return Ok(Some((a.family.clone(), a.agent.clone(), a.text.clone())));
        }
        Ok(self.store.asked(query_id)?)
    }

    /// Stores every live agent's snapshot and every agent's use: what a
    /// service does when it stops.
    pub fn save_all(&self) -> Result<()> {
        self.save_agents(self.agents.current().slots().iter().copied())
    }

    /// An answer as the JSON object `elex query --json` prints and the
    /// service's `POST /v1/query` returns (one schema, this one function):
    /// the query id, the agent and why it was chosen, close candidates, the
    /// agent's action, content, confidence and Q-value, sources, the consult
    /// trace, timings, and the answering component.
    pub fn answer_json(&self, answer: &Answer) -> serde_json::Value {
        let feature = answer.feature();
        let response = &answer.response;
        let (load, start) = self.start_times();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        // Its component, if the agent still runs (it may have been unloaded
        // since).
        let agents = self.agents.current();
        let component = agents.slot_of(&feature.faj).ok().and_then(|slot| self.swarm.component_of(slot).ok());
        serde_json::json!({
            "query_id": response.query_id,
            "agent": { "faj": feature.faj, "name": feature.name, "chosen_by": answer.reason.to_string() },
            "close_candidates": crate::json::close_candidates(&answer.catalog, &answer.close),
            "asked_back": answer.asked_back,
            "action": response.action.to_string(),
            "content": response.content,
            "confidence": response.confidence,
            "q_value": response.q_value,
            "sources": response.sources,
            "trace": answer.trace.iter().map(|h| {
                let mut hop = serde_json::json!({
                    "from": h.from, "to": h.to, "depth": h.depth, "ms": h.millis, "outcome": h.outcome,
                });
                if let Some(host) = &h.host {
                    hop["host"] = serde_json::json!(host);
                }
                hop
            }).collect::<Vec<_>>(),
            "timing_ms": {
                "load": ms(load), "start_agents": ms(start), "routing": ms(answer.routing), "answer": ms(answer.took),
            },
            "agents_live": agents.slots().len(),
            "similarity_search": self.similarity_search(),
            "loaded_from": component.map(|c| c.origin.to_string()),
            "component": component.map(|c| serde_json::json!({ "source": c.what, "digest": c.digest, "size": c.size })),
        })
    }

    /// The installed plugins left out of this runtime, and why (their entry
    /// revoked, their kept file changed, …); see [`crate::plugins`].
    pub fn plugin_problems(&self) -> &[(String, String)] {
        &self.plugin_problems
    }

    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    pub(crate) fn store(&self) -> &SnapshotStore {
        &self.store
    }

    pub(crate) fn sources(&self) -> &Sources {
        &self.sources
    }

    /// From now on, the agents of `catalog`, entry `i` in swarm slot
    /// `slots[i]`, routed by a router built for it. The caller holds
    /// `changing`.
    pub(crate) fn replace_agents(&self, catalog: Catalog, slots: Vec<usize>) -> Result<()> {
        let (router, similarity) = self.routing.router(Arc::new(catalog))?;
        self.agents.replace(Agents::new(Arc::new(router), slots));
        *self.similarity.lock().unwrap_or_else(|p| p.into_inner()) = similarity;
        Ok(())
    }

    /// Puts back `agents`, an earlier value (its router as it was). The
    /// caller holds `changing`.
    pub(crate) fn restore_agents(&self, agents: Arc<Agents>) {
        self.agents.restore(agents);
    }

    /// Time spent loading the component, and starting the agents.
    pub fn start_times(&self) -> (Duration, Duration) {
        (self.load_time, self.start_time)
    }
}

impl Drop for Runtime {
    /// What the agents learned since the last save is stored.
    fn drop(&mut self) {
        if let Err(e) = self.save_changed() {
            tracing::error!(error = %e, "what the agents learned since the last save could not be stored");
        }
    }
}

/// Refuses an empty or blank question.
fn check_question(text: &str) -> Result<&str> {
    if text.trim().is_empty() {
        return Err(Error::NoQuestion);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn a_runtime_can_be_shared_across_threads_and_tasks() {
        assert_send_sync::<Runtime>();
    }

    #[test]
    fn blank_questions_and_bad_data_dirs_are_named() {
        assert!(matches!(check_question(" \n\t"), Err(Error::NoQuestion)));
        assert_eq!(check_question("hi").unwrap(), "hi");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_data_dir(file).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
        assert!(check_data_dir(dir.path().join("new/sub")).unwrap().is_dir());
    }
}
