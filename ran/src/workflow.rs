//! Workflows: steps that ask agents (a query, a parameter validation or a
//! KPI computation), run in dependency order with independent steps
//! concurrently, each result stored as an engram of a context.
//!
//! File format (JSON or YAML; YAML when the file ends in `.yaml`/`.yml`):
//!
//! ```yaml
//! name: check-mimo-sleep          # required
//! on_failure: stop                # stop (default) | continue
//! steps:
//!   - id: what                    # unique within the workflow
//!     agent: FAJ 121 3094         # the feature agent (FAJ code)
//!     query: What is MIMO Sleep Mode?   # action "query" (the default)
//!   - id: check
//!     agent: FAJ 121 3094
//!     action: validate            # query | validate | kpis
//!     params: { "MimoSleepFunction.sleepMode": 2 }   # name -> number
//!     depends_on: [what]          # ids of earlier steps
//!     on_failure: continue        # overrides the workflow's setting
//! ```
//!
//! Before anything runs the file is checked: unique step ids, known
//! `depends_on` ids, no cycle (the cycle is named), a query for `query`
//! steps and params for the others. With `on_failure: stop` the first failed
//! step stops the run (steps already running finish; later ones are
//! reported as not run); with `continue` the run goes on, but steps that
//! depend on a failed step are skipped.
//!
//! # Bounded work
//!
//! A workflow file comes from outside, so every step of reading it is
//! bounded by the limits below, checked in order of cost:
//!
//! 1. the file is read only if it is a regular file (a FIFO or a link to a
//!    device is refused without blocking) of at most [`MAX_FILE_BYTES`];
//! 2. a linear pre-scan measures how deeply collections nest
//!    ([`MAX_NESTING`]) before the YAML or JSON parser sees the text: the
//!    YAML scanner's work grows with the square of the nesting of flow
//!    collections (`[[[[…`), so deep files must never reach it;
//! 3. while parsing, `steps` and each `depends_on` stop at
//!    [`MAX_STEPS`] and [`MAX_DEPENDS_ON`] entries;
//! 4. the check is linear in steps plus dependencies (hash maps for ids,
//!    Kahn's algorithm for the waves and for finding a cycle), and the
//!    dependencies of all steps together are at most [`MAX_DEPENDENCIES`].
//!
//! # Scheduling
//!
//! A wave's steps are grouped by agent: each agent's steps run one after
//! another on one worker, different agents' steps concurrently (at most
//! [`MAX_CONCURRENT_AGENTS`] workers). An agent instance runs one call at a
//! time anyway, so this is as fast as one thread per step, and a wave with
//! many steps on one agent queues them instead of overflowing the agent's
//! bounded queue (`busy: … callers are already waiting`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// The largest workflow file read, in bytes (1 MiB): room for a workflow at
/// every other limit (1,000 steps of 64 dependencies each).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most steps in one workflow.
pub const MAX_STEPS: usize = 1_000;
/// The most `depends_on` entries of one step.
pub const MAX_DEPENDS_ON: usize = 64;
/// The most `depends_on` entries of all steps together: each becomes a
/// `derived-from` connection in the memory graph.
pub const MAX_DEPENDENCIES: usize = MAX_STEPS * MAX_DEPENDS_ON;
/// The deepest nesting of mappings and sequences in a workflow file (a
/// workflow needs 4: the file, `steps`, a step, its `params`).
pub const MAX_NESTING: usize = 32;
/// The longest step id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// The most agents whose steps run at once.
pub const MAX_CONCURRENT_AGENTS: usize = 16;

/// What a failed step does to the rest of a run (`on_failure`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// `stop` (the default): steps not yet started are not run; steps
    /// already running finish.
    #[default]
    Stop,
    /// `continue`: the run goes on, but steps that depend on the failed one
    /// are skipped.
    Continue,
}

/// What a step asks its agent (`action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// `query` (the default): the agent answers the step's `query`.
    #[default]
    Query,
    /// `validate`: the agent checks the step's `params` as parameter values;
    /// the output has one line per parameter with its verdict.
    Validate,
    /// `kpis`: the agent computes KPIs from the step's `params` as counter
    /// samples; the output has one line per KPI with its status.
    Kpis,
}

/// One step of a workflow: what to ask which agent, after which steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's id: not blank, unique within the workflow, at most
    /// [`MAX_ID_BYTES`].
    pub id: String,
    /// The agent's id (a FAJ code for feature agents).
    pub agent: String,
    /// What to ask the agent.
    #[serde(default)]
    pub action: StepAction,
    /// The question, for `query` steps.
    #[serde(default)]
    pub query: Option<String>,
    /// Parameter or counter values, for `validate` and `kpis` steps.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    /// Ids of the steps this one waits for (at most [`MAX_DEPENDS_ON`]).
    #[serde(default, deserialize_with = "at_most_depends_on")]
    pub depends_on: Vec<String>,
    /// What this step's failure does to the run, overriding the
    /// workflow's [`on_failure`](Workflow::on_failure).
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
}

/// A workflow as its file gives it: named steps run in dependency order
/// (see the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// The workflow's name (not blank); every result engram's source is
    /// `workflow:<name>/<step id>`.
    pub name: String,
    /// What a failed step does to the run, unless the step says otherwise.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// At most [`MAX_STEPS`].
    #[serde(deserialize_with = "at_most_steps")]
    pub steps: Vec<Step>,
}

/// A workflow file's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON: files with any extension but `.yaml`/`.yml`.
    Json,
    /// YAML: `.yaml` and `.yml` files.
    Yaml,
}

impl Format {
    /// YAML for `.yaml`/`.yml` files, JSON otherwise.
    pub fn of(path: &Path) -> Format {
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") { Format::Yaml } else { Format::Json }
    }
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The answer as text (stored as the engram's content).
    pub content: String,
    /// How sure the agent is of a `query` answer, as its response says;
    /// 1.0 for `validate` and `kpis` steps. Stored clamped to 0..=1.
    pub confidence: f32,
}

/// How a step of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepStatus {
    /// Ran; its result is the engram `engram`.
    Done {
        /// What the step produced.
        output: StepOutput,
        /// The memory-graph id of the engram the result is stored as
        /// (always set in a [`Report`]).
        engram: Option<u64>,
    },
    /// Ran and failed: the agent's or the host's error, a panic, or a
    /// result that could not be stored; the text says which.
    Failed(String),
    /// Not run because a step it depends on failed.
    Skipped(String),
    /// Not run because the workflow stopped first.
    NotRun,
}

/// One step of a [`Report`].
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's id.
    pub id: String,
    /// The step's agent id as the run saw it ([`Runtime::run_workflow`](crate::Runtime::run_workflow)
    /// rewrites FAJ codes to the catalog's spelling first).
    pub agent: String,
    /// How it ended.
    pub status: StepStatus,
    /// Time running the step took, waiting for its agent included (storing
    /// the result not); zero for a step that did not run.
    pub took: Duration,
}

/// The outcome of a run, steps in file order.
#[derive(Debug, Clone)]
pub struct Report {
    /// The workflow's name.
    pub workflow: String,
    /// Every step, in file order.
    pub steps: Vec<StepReport>,
    /// Time the whole run took.
    pub took: Duration,
}

impl Report {
    /// Whether every step is [`Done`](StepStatus::Done).
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|s| matches!(s.status, StepStatus::Done { .. }))
    }
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::Workflow(detail.into())
}

/// A list that refuses its `MAX + 1`th element while it is being parsed, so
/// an oversized list is never built.
fn at_most<'de, D, T>(de: D, max: usize, what: &'static str) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T> {
        max: usize,
        what: &'static str,
        item: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {} {}", self.max, self.what)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(serde::de::Error::custom(format!(
                        "more than {max} {what}; the limit is {max}",
                        max = self.max,
                        what = self.what
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    de.deserialize_seq(Bounded { max, what, item: PhantomData })
}

fn at_most_steps<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Vec<Step>, D::Error> {
    at_most(de, MAX_STEPS, "steps")
}

fn at_most_depends_on<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Vec<String>, D::Error> {
    at_most(de, MAX_DEPENDS_ON, "dependencies in one step's depends_on")
}

/// A checked workflow's shape: each step's dependencies as indices, and the
/// waves (every step's dependencies are in earlier waves).
struct Plan {
    deps: Vec<Vec<usize>>,
    waves: Vec<Vec<usize>>,
}

/// A step id for a message: ids are short (see [`MAX_ID_BYTES`]), but one
/// that broke that limit is cut.
fn show_id(id: &str) -> String {
    if id.len() <= MAX_ID_BYTES {
        return format!("{id:?}");
    }
    let mut end = MAX_ID_BYTES;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &id[..end])
}

impl Workflow {
    /// Reads and checks a workflow file: a regular file (links are followed;
    /// a FIFO, device or directory is refused at once) of at most
    /// [`MAX_FILE_BYTES`], JSON or YAML by its extension.
    pub fn load(path: &Path) -> Result<Workflow> {
        let text = elex_registry::files::read_regular_text(
            path,
            MAX_FILE_BYTES,
            elex_registry::files::Links::Follow,
        )
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        Workflow::parse(&text, Format::of(path)).map_err(|e| match e {
            Error::Workflow(detail) => invalid(format!("{}: {detail}", path.display())),
            other => other,
        })
    }

    /// Parses and checks a workflow's text. Over-limit input is refused
    /// before the parser sees it where it can be (size, nesting) and while
    /// parsing otherwise (steps, dependencies per step); the work is linear
    /// in the text's length.
    pub fn parse(text: &str, format: Format) -> Result<Workflow> {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(invalid(format!(
                "the text is {} bytes; the limit is {MAX_FILE_BYTES} bytes",
                text.len()
            )));
        }
        nesting::check(text, format)?;
        let workflow: Workflow = match format {
            Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?,
            Format::Json => serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?,
        };
        workflow.check()?;
        Ok(workflow)
    }

    /// Steps grouped into waves: every step's dependencies are in earlier
    /// waves, steps of a wave in file order. Refuses what [`Workflow::parse`]
    /// refuses: duplicate ids, unknown dependencies, missing queries or
    /// params, cycles (naming one) and anything over the limits.
    pub fn waves(&self) -> Result<Vec<Vec<usize>>> {
        Ok(self.plan()?.waves)
    }

    fn check(&self) -> Result<()> {
        self.plan().map(|_| ())
    }

    /// Everything checked, in time linear in steps plus dependencies.
    fn plan(&self) -> Result<Plan> {
        if self.name.trim().is_empty() {
            return Err(invalid("the workflow has no name"));
        }
        let n = self.steps.len();
        if n == 0 {
            return Err(invalid("the workflow has no steps"));
        }
        if n > MAX_STEPS {
            return Err(invalid(format!("the workflow has {n} steps; the limit is {MAX_STEPS}")));
        }
        let total: usize = self.steps.iter().map(|s| s.depends_on.len()).sum();
        if total > MAX_DEPENDENCIES {
            return Err(invalid(format!(
                "the steps have {total} dependencies in all; the limit is {MAX_DEPENDENCIES}"
            )));
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, s) in self.steps.iter().enumerate() {
            if s.id.trim().is_empty() {
                return Err(invalid(format!("step {} has an empty id", i + 1)));
            }
            if s.id.len() > MAX_ID_BYTES {
                return Err(invalid(format!(
                    "step {} has an id of {} bytes; the limit is {MAX_ID_BYTES}",
                    i + 1,
                    s.id.len()
                )));
            }
            if index.insert(s.id.as_str(), i).is_some() {
                return Err(invalid(format!("step id {} is used twice", show_id(&s.id))));
            }
        }
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(n);
        // `listed[j] == i + 1`: step i already named step j.
        let mut listed = vec![0usize; n];
        for (i, s) in self.steps.iter().enumerate() {
            match s.action {
                StepAction::Query if s.query.as_deref().is_none_or(|q| q.trim().is_empty()) => {
                    return Err(invalid(format!("step {} is a query without `query`", show_id(&s.id))));
                }
                StepAction::Validate | StepAction::Kpis if s.params.is_empty() => {
                    return Err(invalid(format!("step {} needs `params`", show_id(&s.id))));
                }
                _ => {}
            }
            if s.depends_on.len() > MAX_DEPENDS_ON {
                return Err(invalid(format!(
                    "step {} depends on {} steps; the limit is {MAX_DEPENDS_ON}",
                    show_id(&s.id),
                    s.depends_on.len()
                )));
            }
            let mut mine = Vec::with_capacity(s.depends_on.len());
            for d in &s.depends_on {
                let Some(&j) = index.get(d.as_str()) else {
                    return Err(invalid(format!(
                        "step {} depends on unknown step {}",
                        show_id(&s.id),
                        show_id(d)
                    )));
                };
                if listed[j] == i + 1 {
                    return Err(invalid(format!(
                        "step {} lists {} twice in depends_on",
                        show_id(&s.id),
                        show_id(d)
                    )));
                }
                listed[j] = i + 1;
                mine.push(j);
            }
            deps.push(mine);
        }
        // Kahn's algorithm, wave by wave: each step and each dependency is
        // handled once.
        let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in deps.iter().enumerate() {
            for &j in ds {
                dependents[j].push(i);
            }
        }
        let mut waves = Vec::new();
        let mut wave: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut placed = 0;
        while !wave.is_empty() {
            placed += wave.len();
            let mut next = Vec::new();
            for &i in &wave {
                for &j in &dependents[i] {
                    waiting[j] -= 1;
                    if waiting[j] == 0 {
                        next.push(j);
                    }
                }
            }
            next.sort_unstable();
            waves.push(std::mem::replace(&mut wave, next));
        }
        if placed < n {
            return Err(invalid(self.name_cycle(&deps, &waiting)));
        }
        Ok(Plan { deps, waves })
    }

    /// Describes a cycle among the steps Kahn's algorithm could not place
    /// (`waiting[i] > 0`): each such step waits on at least one other such
    /// step, so following those dependencies from any of them must repeat a
    /// step. Linear: each step is visited at most once.
    fn name_cycle(&self, deps: &[Vec<usize>], waiting: &[usize]) -> String {
        let stuck = |i: usize| waiting[i] > 0;
        let start = (0..deps.len()).find(|&i| stuck(i)).expect("a step was not placed");
        let mut on_path = vec![usize::MAX; deps.len()];
        let mut path = vec![start];
        on_path[start] = 0;
        let cycle = loop {
            let at = *path.last().expect("the path starts with a step");
            let next = deps[at]
                .iter()
                .copied()
                .find(|&j| stuck(j))
                .expect("an unplaced step waits on an unplaced step");
            if on_path[next] != usize::MAX {
                break &path[on_path[next]..];
            }
            on_path[next] = path.len();
            path.push(next);
        };
        let ids: Vec<String> = cycle.iter().chain(&cycle[..1]).map(|&i| self.steps[i].id.clone()).collect();
        const SHOWN: usize = 12;
        if ids.len() <= SHOWN {
            format!("depends_on has a cycle: {}", ids.join(" -> "))
        } else {
            format!(
                "depends_on has a cycle of {} steps: {} -> … {} more … -> {}",
                cycle.len(),
                ids[..SHOWN - 3].join(" -> "),
                ids.len() - SHOWN,
                ids[ids.len() - 3..].join(" -> ")
            )
        }
    }

    /// Runs the steps: `execute` answers one step, `record` stores a result
    /// (given the engram ids of the step's dependencies) and returns its
    /// engram id.
    ///
    /// A wave's steps are grouped by `agent`; each group runs in file order
    /// on one worker thread, groups concurrently (at most
    /// [`MAX_CONCURRENT_AGENTS`] workers), so `execute` is never called for
    /// the same agent from two threads at once. Results are recorded in file
    /// order once the wave is done.
    pub fn run<E, R>(&self, execute: E, record: R) -> Result<Report>
    where
        E: Fn(&Step) -> Result<StepOutput> + Sync,
        R: Fn(&Step, &StepOutput, &[u64]) -> Result<u64> + Sync,
    {
        let started = Instant::now();
        let Plan { deps, waves } = self.plan()?;
        let mut status: Vec<Option<(StepStatus, Duration)>> = vec![None; self.steps.len()];
        let policy = |i: usize| self.steps[i].on_failure.unwrap_or(self.on_failure);
        let mut stopped = false;
        for wave in waves {
            if stopped {
                break;
            }
            // Steps whose dependencies failed are skipped, not run.
            let mut runnable = Vec::new();
            for &i in &wave {
                let failed_dep =
                    deps[i].iter().find(|&&j| !matches!(status[j], Some((StepStatus::Done { .. }, _))));
                match failed_dep {
                    Some(&j) => {
                        status[i] = Some((
                            StepStatus::Skipped(format!(
                                "depends on {}, which did not succeed",
                                self.steps[j].id
                            )),
                            Duration::ZERO,
                        ))
                    }
                    None => runnable.push(i),
                }
            }
            for (i, st, took) in self.run_wave(&runnable, &execute, &policy) {
                let step = &self.steps[i];
                let st = match st {
                    StepStatus::Done { output, .. } => {
                        let engrams: Vec<u64> = deps[i]
                            .iter()
                            .filter_map(|&j| match &status[j] {
                                Some((StepStatus::Done { engram: Some(e), .. }, _)) => Some(*e),
                                _ => None,
                            })
                            .collect();
                        match record(step, &output, &engrams) {
                            Ok(engram) => StepStatus::Done { output, engram: Some(engram) },
                            Err(e) => {
                                StepStatus::Failed(format!("answered, but storing the result failed: {e}"))
                            }
                        }
                    }
                    other => other,
                };
                if matches!(st, StepStatus::Failed(_)) && policy(i) == OnFailure::Stop {
                    stopped = true;
                }
                // NotRun stays unset: reported as not run.
                if st != StepStatus::NotRun {
                    status[i] = Some((st, took));
                }
            }
        }
        let steps = self
            .steps
            .iter()
            .zip(status)
            .map(|(s, st)| {
                let (status, took) = st.unwrap_or((StepStatus::NotRun, Duration::ZERO));
                StepReport { id: s.id.clone(), agent: s.agent.clone(), status, took }
            })
            .collect();
        Ok(Report { workflow: self.name.clone(), steps, took: started.elapsed() })
    }

    /// Runs one wave's `runnable` steps, grouped by agent (see
    /// [`Workflow::run`]); results in file order. A step that fails under
    /// `stop` keeps the steps not yet started from starting (`NotRun`).
    fn run_wave<E>(
        &self,
        runnable: &[usize],
        execute: &E,
        policy: &(dyn Fn(usize) -> OnFailure + Sync),
    ) -> Vec<(usize, StepStatus, Duration)>
    where
        E: Fn(&Step) -> Result<StepOutput> + Sync,
    {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for &i in runnable {
            let g = *group_of.entry(self.steps[i].agent.as_str()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        let next_group = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let worker = || {
            let mut done = Vec::new();
            loop {
                let g = next_group.fetch_add(1, Ordering::Relaxed);
                let Some(group) = groups.get(g) else { break };
                for &i in group {
                    if stop.load(Ordering::Acquire) {
                        done.push((i, StepStatus::NotRun, Duration::ZERO));
                        continue;
                    }
                    let t = Instant::now();
                    let step = &self.steps[i];
                    let st = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(step))) {
                        Ok(Ok(output)) => StepStatus::Done { output, engram: None },
                        Ok(Err(e)) => StepStatus::Failed(e.to_string()),
                        Err(_) => StepStatus::Failed(String::from("the step panicked")),
                    };
                    if matches!(st, StepStatus::Failed(_)) && policy(i) == OnFailure::Stop {
                        stop.store(true, Ordering::Release);
                    }
                    done.push((i, st, t.elapsed()));
                }
            }
            done
        };
        let workers = groups.len().min(MAX_CONCURRENT_AGENTS);
        let mut results: Vec<(usize, StepStatus, Duration)> = if workers <= 1 {
            worker()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("a workflow worker catches its steps' panics"))
                    .collect()
            })
        };
        results.sort_unstable_by_key(|r| r.0);
        results
    }
}

/// The linear pre-scan that bounds nesting before a parser sees the text.
mod nesting {
    use super::{Format, MAX_NESTING, invalid};
    use crate::error::Result;

    /// How deeply a text's collections nest, and where (line and column,
    /// from 1) the nesting first went past [`MAX_NESTING`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Depth {
        pub deepest: usize,
        pub over: Option<(usize, usize)>,
    }

    /// Refuses text whose collections nest deeper than [`MAX_NESTING`].
    pub(super) fn check(text: &str, format: Format) -> Result<()> {
        let depth = match format {
            Format::Json => json(text),
            Format::Yaml => yaml(text)?,
        };
        match depth.over {
            Some((line, column)) => Err(invalid(format!(
                "mappings and sequences nest {} deep (deeper than allowed from line {line}, column {column}); the limit is {MAX_NESTING}",
                depth.deepest
            ))),
            None => Ok(()),
        }
    }

    /// JSON: brackets outside strings. Exact for JSON text; on anything else
    /// serde_json stops at the first error anyway.
    pub(super) fn json(text: &str) -> Depth {
        let (mut depth, mut deepest, mut first) = (0usize, 0usize, None);
        let (mut line, mut column) = (1usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for b in text.bytes() {
            if b == b'\n' {
                line += 1;
                column = 0;
            } else if b & 0xC0 != 0x80 {
                column += 1;
            }
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_NESTING && first.is_none() {
                        first = Some((line, column));
                    }
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Depth { deepest, over: first }
    }

    /// YAML: how deeply serde_yaml_ng's scanner (libyaml's, as
    /// unsafe-libyaml) would nest block and flow collections in `text`.
    ///
    /// This follows libyaml's scanner token by token: comments, quoted,
    /// plain and block scalars, anchors, tags, directives and document
    /// markers, the indentation stack and simple keys (which decide where a
    /// plain or block scalar ends), so that a `[` inside a scalar or comment
    /// is not counted and one that opens a collection always is. Where
    /// libyaml would stop with an error the scan goes on: anything it finds
    /// after that point can only make it refuse text the parser would refuse
    /// anyway. Refused outright: characters YAML forbids (libyaml's reader
    /// refuses them too).
    pub(super) fn yaml(text: &str) -> Result<Depth> {
        let chars: Vec<char> = text.strip_prefix('\u{FEFF}').unwrap_or(text).chars().collect();
        if let Some((at, &c)) = chars.iter().enumerate().find(|&(_, &c)| !allowed(c)) {
            let line = 1 + chars[..at].iter().filter(|&&c| c == '\n').count();
            return Err(invalid(format!("line {line}: character U+{:04X} is not allowed in YAML", c as u32)));
        }
        let mut s = Yaml {
            chars: &chars,
            at: 0,
            byte: 0,
            line: 0,
            column: 0,
            flows: Vec::new(),
            pairs: 0,
            levels: Vec::new(),
            indentless: 0,
            key_allowed: true,
            keys: vec![Key::NONE],
            deepest: 0,
            first: None,
        };
        s.scan();
        Ok(Depth { deepest: s.deepest, over: s.first.map(|(line, column)| (line + 1, column + 1)) })
    }

    /// The characters libyaml's reader accepts.
    fn allowed(c: char) -> bool {
        matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..)
    }

    /// A possible simple key (a key not introduced by `?`): where it
    /// started, so that a `:` after it opens a block mapping at its column,
    /// and how deep the collections in it nested, as measured before that
    /// mapping was open.
    #[derive(Clone, Copy)]
    struct Key {
        possible: bool,
        byte: usize,
        line: usize,
        column: usize,
        peak: usize,
    }

    impl Key {
        const NONE: Key = Key { possible: false, byte: 0, line: 0, column: 0, peak: 0 };
    }

    /// An open flow collection.
    #[derive(Clone, Copy)]
    struct Flow {
        sequence: bool,
        /// A sequence holding a `key: value` pair, which the parser makes a
        /// one-pair mapping, until the next `,` or the end.
        pair: bool,
        /// The deepest nesting measured inside.
        peak: usize,
    }

    /// An open block collection.
    #[derive(Clone, Copy)]
    struct Level {
        /// Its column (libyaml's `indent`).
        indent: isize,
        mapping: bool,
        /// A sequence without indentation is open as the value of this
        /// mapping.
        indentless: bool,
    }

    struct Yaml<'a> {
        chars: &'a [char],
        at: usize,
        /// Offset in bytes (libyaml's `mark.index`), line and column (in
        /// characters) of `at`.
        byte: usize,
        line: usize,
        column: usize,
        /// Open flow collections (libyaml's `flow_level` is their number).
        flows: Vec<Flow>,
        /// Flow sequences among `flows` with a pair open.
        pairs: usize,
        /// Open block collections, innermost last (libyaml's `indents`).
        levels: Vec<Level>,
        /// Block sequences without indentation (`key:\n- a`) among `levels`:
        /// the parser nests them though the scanner does not indent them.
        indentless: usize,
        /// libyaml's `simple_key_allowed`.
        key_allowed: bool,
        /// One possible simple key per flow level, and one for block context.
        keys: Vec<Key>,
        deepest: usize,
        first: Option<(usize, usize)>,
    }

    fn is_break(c: char) -> bool {
        matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
    }
    fn is_blank(c: char) -> bool {
        c == ' ' || c == '\t'
    }
    /// `'\0'` stands for the end of the text (the reader refuses NUL).
    fn is_breakz(c: char) -> bool {
        is_break(c) || c == '\0'
    }
    fn is_blankz(c: char) -> bool {
        is_blank(c) || is_breakz(c)
    }
    fn is_alpha(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    }
    fn is_uri(c: char, verbatim: bool) -> bool {
        is_alpha(c) || ";/?:@&=+$.%!~*'()".contains(c) || (verbatim && matches!(c, ',' | '[' | ']'))
    }

    impl Yaml<'_> {
        fn peek(&self, k: usize) -> char {
            self.chars.get(self.at + k).copied().unwrap_or('\0')
        }
        fn c(&self) -> char {
            self.peek(0)
        }
        /// Skips one character that is not a line break.
        fn skip(&mut self) {
            if let Some(&c) = self.chars.get(self.at) {
                self.at += 1;
                self.byte += c.len_utf8();
                self.column += 1;
            }
        }
        /// Skips one line break (`\r\n` is one).
        fn skip_line(&mut self) {
            if self.c() == '\r' && self.peek(1) == '\n' {
                self.at += 2;
                self.byte += 2;
            } else if is_break(self.c()) {
                self.byte += self.c().len_utf8();
                self.at += 1;
            } else {
                return;
            }
            self.line += 1;
            self.column = 0;
        }
        /// Skips one character, line break or not.
        fn step(&mut self) {
            if is_break(self.c()) { self.skip_line() } else { self.skip() }
        }
        fn document_marker(&self) -> bool {
            self.column == 0
                && ((self.c() == '-' && self.peek(1) == '-' && self.peek(2) == '-')
                    || (self.c() == '.' && self.peek(1) == '.' && self.peek(2) == '.'))
                && is_blankz(self.peek(3))
        }

        /// libyaml's `parser->indent`: the innermost block collection's
        /// column, -1 outside any.
        fn indent(&self) -> isize {
            self.levels.last().map_or(-1, |l| l.indent)
        }
        fn flow(&self) -> usize {
            self.flows.len()
        }
        /// Measures the nesting here.
        fn measure(&mut self) {
            let depth = self.levels.len() + self.indentless + self.flows.len() + self.pairs;
            self.note(depth);
        }
        fn note(&mut self, depth: usize) {
            self.deepest = self.deepest.max(depth);
            if depth > MAX_NESTING && self.first.is_none() {
                self.first = Some((self.line, self.column));
            }
            if let Some(flow) = self.flows.last_mut() {
                flow.peak = flow.peak.max(depth);
            }
        }
        /// Opens a block collection at `column` unless one is open there;
        /// whether it opened one.
        fn roll_indent(&mut self, column: usize, mapping: bool) -> bool {
            let column = column as isize;
            if self.flow() == 0 && self.indent() < column {
                self.levels.push(Level { indent: column, mapping, indentless: false });
                self.measure();
                return true;
            }
            false
        }
        fn unroll_indent(&mut self, column: isize) {
            if self.flow() == 0 {
                while self.indent() > column {
                    if self.levels.pop().is_some_and(|l| l.indentless) {
                        self.indentless -= 1;
                    }
                }
            }
        }
        /// A block entry or key at the innermost collection's own column.
        fn same_level(&mut self, entry: bool) {
            let Some(level) = self.levels.last_mut() else { return };
            if level.mapping && level.indentless != entry {
                level.indentless = entry;
                if entry {
                    self.indentless += 1;
                    self.measure();
                } else {
                    self.indentless -= 1;
                }
            }
        }
        fn top_key(&mut self) -> &mut Key {
            self.keys.last_mut().expect("the block context's key slot")
        }
        fn save_key(&mut self) {
            if self.key_allowed {
                let key =
                    Key { possible: true, byte: self.byte, line: self.line, column: self.column, peak: 0 };
                *self.top_key() = key;
            }
        }
        fn remove_key(&mut self) {
            self.top_key().possible = false;
        }

        /// A mapping key at `column`: in block context it may open a block
        /// mapping; in a flow sequence the parser opens a one-pair mapping.
        /// Whether a mapping opened around the key.
        fn key(&mut self, column: usize) -> bool {
            if self.flow() == 0 {
                let opened = self.roll_indent(column, true);
                if !opened {
                    self.same_level(false);
                }
                return opened;
            }
            match self.flows.last_mut() {
                Some(flow) if flow.sequence && !flow.pair => {
                    flow.pair = true;
                    self.pairs += 1;
                    self.measure();
                    true
                }
                _ => false,
            }
        }

        /// Closes the innermost flow collection: what nested inside counts
        /// for the enclosing collection and for a key it may be part of.
        fn close_flow(&mut self) {
            let Some(flow) = self.flows.pop() else { return };
            self.keys.pop();
            if flow.pair {
                self.pairs -= 1;
            }
            if let Some(outer) = self.flows.last_mut() {
                outer.peak = outer.peak.max(flow.peak);
            }
            let key = self.top_key();
            if key.possible {
                key.peak = key.peak.max(flow.peak);
            }
        }

        /// Ends the pair of the innermost flow sequence, if one is open.
        fn end_pair(&mut self) {
            if let Some(flow) = self.flows.last_mut().filter(|f| f.pair) {
                flow.pair = false;
                self.pairs -= 1;
            }
        }

        fn scan(&mut self) {
            loop {
                self.skip_to_next_token();
                self.unroll_indent(self.column as isize);
                let c = self.c();
                let next = self.peek(1);
                if c == '\0' {
                    return;
                }
                if self.column == 0 && c == '%' {
                    // A directive: one line.
                    self.unroll_indent(-1);
                    self.remove_key();
                    self.key_allowed = false;
                    while !is_breakz(self.c()) {
                        self.skip();
                    }
                } else if self.document_marker() {
                    self.unroll_indent(-1);
                    self.remove_key();
                    self.key_allowed = false;
                    self.skip();
                    self.skip();
                    self.skip();
                } else if c == '[' || c == '{' {
                    self.save_key();
                    self.keys.push(Key::NONE);
                    self.flows.push(Flow { sequence: c == '[', pair: false, peak: 0 });
                    self.measure();
                    self.key_allowed = true;
                    self.skip();
                } else if c == ']' || c == '}' {
                    self.remove_key();
                    self.close_flow();
                    self.key_allowed = false;
                    self.skip();
                } else if c == ',' {
                    self.remove_key();
                    self.end_pair();
                    self.key_allowed = true;
                    self.skip();
                } else if c == '-' && is_blankz(next) {
                    if self.flow() == 0 && !self.roll_indent(self.column, false) {
                        self.same_level(true);
                    }
                    self.remove_key();
                    self.key_allowed = true;
                    self.skip();
                } else if c == '?' && (self.flow() > 0 || is_blankz(next)) {
                    self.key(self.column);
                    self.remove_key();
                    self.key_allowed = self.flow() == 0;
                    self.skip();
                } else if c == ':' && (self.flow() > 0 || is_blankz(next)) {
                    let (byte, line) = (self.byte, self.line);
                    let key = *self.top_key();
                    // libyaml forgets a key not on this line or more than
                    // 1024 bytes back.
                    if key.possible && key.line == line && key.byte + 1024 >= byte {
                        if self.key(key.column) && key.peak > 0 {
                            // The key's collections are inside the new mapping.
                            self.note(key.peak + 1);
                        }
                        self.top_key().possible = false;
                        self.key_allowed = false;
                    } else {
                        self.key(self.column);
                        self.key_allowed = self.flow() == 0;
                    }
                    self.skip();
                } else if c == '*' || c == '&' {
                    self.save_key();
                    self.key_allowed = false;
                    self.skip();
                    while is_alpha(self.c()) {
                        self.skip();
                    }
                } else if c == '!' {
                    self.save_key();
                    self.key_allowed = false;
                    self.tag();
                } else if (c == '|' || c == '>') && self.flow() == 0 {
                    self.remove_key();
                    self.key_allowed = true;
                    self.block_scalar();
                } else if c == '\'' || c == '"' {
                    self.save_key();
                    self.key_allowed = false;
                    self.quoted_scalar(c == '\'');
                } else if !(is_blankz(c) || "-?:,[]{}#&*!|>'\"%@`".contains(c))
                    || (c == '-' && !is_blank(next))
                    || (self.flow() == 0 && (c == '?' || c == ':') && !is_blankz(next))
                {
                    self.save_key();
                    self.key_allowed = false;
                    self.plain_scalar();
                } else {
                    // libyaml stops here ("cannot start any token").
                    self.step();
                }
            }
        }

        /// Whitespace, comments and line breaks up to the next token.
        fn skip_to_next_token(&mut self) {
            loop {
                if self.column == 0 && self.c() == '\u{FEFF}' {
                    self.skip();
                }
                while self.c() == ' ' || ((self.flow() > 0 || !self.key_allowed) && self.c() == '\t') {
                    self.skip();
                }
                if self.c() == '#' {
                    while !is_breakz(self.c()) {
                        self.skip();
                    }
                }
                if !is_break(self.c()) {
                    return;
                }
                self.skip_line();
                if self.flow() == 0 {
                    self.key_allowed = true;
                }
            }
        }

        fn tag(&mut self) {
            if self.peek(1) == '<' {
                self.skip();
                self.skip();
                while is_uri(self.c(), true) {
                    self.skip();
                }
                if self.c() == '>' {
                    self.skip();
                }
                return;
            }
            // The handle (`!`, `!!` or `!name!`), then the suffix.
            self.skip();
            while is_alpha(self.c()) {
                self.skip();
            }
            if self.c() == '!' {
                self.skip();
            }
            while is_uri(self.c(), false) {
                self.skip();
            }
        }

        /// `'…'` or `"…"`, over as many lines as it takes.
        fn quoted_scalar(&mut self, single: bool) {
            let quote = if single { '\'' } else { '"' };
            self.skip();
            loop {
                if self.c() == '\0' {
                    return;
                }
                while !is_blankz(self.c()) {
                    let c = self.c();
                    if single && c == '\'' && self.peek(1) == '\'' {
                        self.skip();
                        self.skip();
                    } else if c == quote {
                        break;
                    } else if !single && c == '\\' && is_break(self.peek(1)) {
                        self.skip();
                        self.skip_line();
                        break;
                    } else if !single && c == '\\' {
                        // The escaped character (hex digits of \x, \u, \U
                        // are ordinary characters here).
                        self.skip();
                        self.skip();
                    } else {
                        self.skip();
                    }
                }
                if self.c() == quote {
                    self.skip();
                    return;
                }
                while is_blank(self.c()) || is_break(self.c()) {
                    self.step();
                }
            }
        }

        /// A plain scalar: in block context it goes on over lines indented
        /// deeper than the current block collection.
        fn plain_scalar(&mut self) {
            let indent = self.indent() + 1;
            let mut leading_blanks = false;
            loop {
                if self.document_marker() || self.c() == '#' {
                    break;
                }
                while !is_blankz(self.c()) {
                    let c = self.c();
                    let next = self.peek(1);
                    if (c == ':' && is_blankz(next))
                        || (self.flow() > 0 && (c == ':' && ",?[]{}".contains(next) || ",[]{}".contains(c)))
                    {
                        break;
                    }
                    self.skip();
                }
                if !(is_blank(self.c()) || is_break(self.c())) {
                    break;
                }
                while is_blank(self.c()) || is_break(self.c()) {
                    if is_break(self.c()) {
                        leading_blanks = true;
                    }
                    self.step();
                }
                if self.flow() == 0 && (self.column as isize) < indent {
                    break;
                }
            }
            if leading_blanks {
                self.key_allowed = true;
            }
        }

        /// `|` or `>`: the header, then every line indented at least as
        /// deep as the first (or as the indentation indicator says).
        fn block_scalar(&mut self) {
            self.skip();
            let mut increment = 0isize;
            let digit = |c: char| c.to_digit(10).filter(|&d| d > 0).map(|d| d as isize);
            if self.c() == '+' || self.c() == '-' {
                self.skip();
                if let Some(d) = digit(self.c()) {
                    increment = d;
                    self.skip();
                }
            } else if let Some(d) = digit(self.c()) {
                increment = d;
                self.skip();
                if self.c() == '+' || self.c() == '-' {
                    self.skip();
                }
            }
            while is_blank(self.c()) {
                self.skip();
            }
            if self.c() == '#' {
                while !is_breakz(self.c()) {
                    self.skip();
                }
            }
            // Anything else on the header line is an error for libyaml.
            while !is_breakz(self.c()) {
                self.skip();
            }
            self.skip_line();
            let mut indent = 0isize;
            if increment != 0 {
                indent = if self.indent() >= 0 { self.indent() + increment } else { increment };
            }
            self.block_scalar_breaks(&mut indent);
            while self.column as isize == indent && self.c() != '\0' {
                while !is_breakz(self.c()) {
                    self.skip();
                }
                self.skip_line();
                self.block_scalar_breaks(&mut indent);
            }
        }

        /// Empty lines and indentation; settles the scalar's indentation if
        /// it has none yet.
        fn block_scalar_breaks(&mut self, indent: &mut isize) {
            let mut max_indent = 0isize;
            loop {
                while (*indent == 0 || (self.column as isize) < *indent) && self.c() == ' ' {
                    self.skip();
                }
                max_indent = max_indent.max(self.column as isize);
                if !is_break(self.c()) {
                    break;
                }
                self.skip_line();
            }
            if *indent == 0 {
                *indent = max_indent.max(self.indent() + 1).max(1);
            }
        }
    }
}

/// Runs `step` on agent instance `agent`: its query (as `query`), its
/// parameter validation or its KPI computation.
pub(crate) fn execute_step(
    step: &Step,
    agent: &mut elex_host::AgentInstance,
    query: &elex_host::Query,
) -> elex_host::Result<StepOutput> {
    use elex_host::types::{CounterSample, ParameterValue};
    match step.action {
        StepAction::Query => {
            let r = agent.handle(query)?;
            Ok(StepOutput { content: r.content, confidence: r.confidence })
        }
        StepAction::Validate => {
            let params: Vec<ParameterValue> =
                step.params.iter().map(|(n, v)| ParameterValue { name: n.clone(), value: *v }).collect();
            let lines: Vec<String> = agent
                .validate(&params)?
                .iter()
                .map(|v| format!("{}: {} ({})", v.name, v.verdict, v.message))
                .collect();
            Ok(StepOutput { content: lines.join("\n"), confidence: 1.0 })
        }
        StepAction::Kpis => {
            let samples: Vec<CounterSample> =
                step.params.iter().map(|(n, v)| CounterSample { name: n.clone(), value: *v }).collect();
            let lines: Vec<String> = agent
                .kpis(&samples)?
                .iter()
                .map(|k| {
                    format!(
                        "{} = {:.3} {} (threshold {}, {})",
                        k.name, k.value, k.unit, k.threshold, k.status
                    )
                })
                .collect();
            Ok(StepOutput { content: lines.join("\n"), confidence: 1.0 })
        }
    }
}

/// The memory-graph operations that store `step`'s `output` as engram `id`
/// of `context`, derived from the engrams of its dependencies `deps`.
pub(crate) fn result_ops(
    workflow: &Workflow,
    step: &Step,
    output: &StepOutput,
    deps: &[u64],
    id: u64,
    context: u64,
) -> Vec<elex_memgraph::Op> {
    use elex_memgraph::{Connection, EngramData, Op};
    let action = format!("{:?}", step.action).to_lowercase();
    let mut ops = vec![Op::Create {
        id,
        data: EngramData {
            content: if output.content.trim().is_empty() {
                String::from("(empty answer)")
            } else {
                output.content.clone()
            },
            source: format!("workflow:{}/{}", workflow.name, step.id),
            confidence: output.confidence.clamp(0.0, 1.0),
            metadata: vec![
                ("workflow".into(), workflow.name.clone()),
                ("step".into(), step.id.clone()),
                ("action".into(), action),
                ("agent".into(), step.agent.clone()),
            ],
        },
        context: Some(context),
    }];
    ops.extend(deps.iter().map(|&d| {
        Op::Connect(Connection {
            source: id,
            target: d,
            relation: "derived-from".into(),
            weight: 1.0,
            metadata: vec![],
        })
    }));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn wf(json: &str) -> Result<Workflow> {
        Workflow::parse(json, Format::Json)
    }

    fn yaml(text: &str) -> Result<Workflow> {
        Workflow::parse(text, Format::Yaml)
    }

    fn step_on(id: &str, agent: &str, deps: &[&str]) -> String {
        let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
        format!(r#"{{"id":"{id}","agent":"{agent}","query":"q {id}","depends_on":[{}]}}"#, deps.join(","))
    }

    fn step(id: &str, deps: &[&str]) -> String {
        step_on(id, "A", deps)
    }

    fn steps_json(steps: &[String]) -> String {
        format!(r#"{{"name":"w","steps":[{}]}}"#, steps.join(","))
    }

    /// `n` steps, step `i` depending on the `min(i, fan_in)` steps before it.
    fn dense(n: usize, fan_in: usize) -> String {
        let steps: Vec<String> = (0..n)
            .map(|i| {
                let deps: Vec<String> = (i.saturating_sub(fan_in)..i).map(|j| format!("s{j}")).collect();
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                step(&format!("s{i}"), &deps)
            })
            .collect();
        steps_json(&steps)
    }

    fn built(n: usize, deps_of: impl Fn(usize) -> Vec<usize>) -> Workflow {
        Workflow {
            name: String::from("w"),
            on_failure: OnFailure::Stop,
            steps: (0..n)
                .map(|i| Step {
                    id: format!("s{i}"),
                    agent: String::from("A"),
                    action: StepAction::Query,
                    query: Some(String::from("q")),
                    params: BTreeMap::new(),
                    depends_on: deps_of(i).into_iter().map(|j| format!("s{j}")).collect(),
                    on_failure: None,
                })
                .collect(),
        }
    }

    #[test]
    fn waves_follow_dependencies_and_cycles_are_named() {
        let w =
            wf(&steps_json(&[step("a", &[]), step("b", &["a"]), step("c", &["a"]), step("d", &["b", "c"])]))
                .unwrap();
        assert_eq!(w.waves().unwrap(), vec![vec![0], vec![1, 2], vec![3]]);
        let e = wf(&steps_json(&[step("a", &["c"]), step("b", &["a"]), step("c", &["b"])])).unwrap_err();
        assert!(e.to_string().contains("cycle: a -> c -> b -> a"), "{e}");
        // A step outside the cycle that waits on it is not part of the name.
        let e = wf(&steps_json(&[step("x", &["b"]), step("a", &["b"]), step("b", &["a"])])).unwrap_err();
        assert!(e.to_string().contains("cycle: b -> a -> b"), "{e}");
        let e = wf(&steps_json(&[step("a", &["a"])])).unwrap_err();
        assert!(e.to_string().contains("cycle: a -> a"), "{e}");
        let e = wf(&steps_json(&[step("a", &["zz"])])).unwrap_err();
        assert!(e.to_string().contains("unknown step \"zz\""), "{e}");
        let e = wf(&steps_json(&[step("a", &[]), step("a", &[])])).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
        let e = wf(&steps_json(&[step("a", &[]), step("b", &["a", "a"])])).unwrap_err();
        assert!(e.to_string().contains("lists \"a\" twice"), "{e}");
        let e = wf(r#"{"name":"w","steps":[{"id":"v","agent":"A","action":"validate"}]}"#).unwrap_err();
        assert!(e.to_string().contains("needs `params`"), "{e}");
        assert!(wf(r#"{"name":"w","steps":[{"id":"v","agent":"A","query":"x","bogus":1}]}"#).is_err());
        assert!(wf(r#"{"name":"w","steps":[]}"#).unwrap_err().to_string().contains("no steps"));
        assert!(wf(r#"{"name":" ","steps":[]}"#).unwrap_err().to_string().contains("no name"));
    }

    #[test]
    fn a_long_cycle_is_named_in_short() {
        // 1,000 steps in one ring: found in linear time, named with its size.
        let w = built(MAX_STEPS, |i| vec![(i + 1) % MAX_STEPS]);
        let e = w.check().unwrap_err().to_string();
        assert!(e.contains("cycle of 1000 steps: s0 -> s1 -> s2"), "{e}");
        assert!(e.contains("-> s999 -> s0"), "{e}");
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn chains_and_dense_workflows_at_the_limits_validate() {
        let chain = wf(&dense(MAX_STEPS, 1)).unwrap();
        assert_eq!(chain.waves().unwrap().len(), MAX_STEPS);
        // Every step depends on the 64 before it: 61,920 dependencies.
        let text = dense(MAX_STEPS, MAX_DEPENDS_ON);
        assert!(text.len() as u64 <= MAX_FILE_BYTES, "{} bytes", text.len());
        let w = wf(&text).unwrap();
        let waves = w.waves().unwrap();
        assert_eq!(waves.len(), MAX_STEPS);
        assert_eq!(w.steps.iter().map(|s| s.depends_on.len()).sum::<usize>(), 61_920);
        let yaml_text: String = std::iter::once(String::from("name: w\nsteps:\n"))
            .chain((0..MAX_STEPS).map(|i| {
                let deps: Vec<String> =
                    (i.saturating_sub(MAX_DEPENDS_ON)..i).map(|j| format!("s{j}")).collect();
                format!("- id: s{i}\n  agent: A\n  query: q\n  depends_on: [{}]\n", deps.join(", "))
            }))
            .collect();
        assert_eq!(yaml(&yaml_text).unwrap().waves().unwrap().len(), MAX_STEPS);
    }

    #[test]
    fn over_the_limits_is_refused_naming_the_limit() {
        // 40,000 steps: over the step limit (and, as text, over the size limit).
        let e = built(40_000, |i| if i == 0 { vec![] } else { vec![i - 1] }).check().unwrap_err();
        assert!(e.to_string().contains("40000 steps; the limit is 1000"), "{e}");
        let e = wf(&dense(40_000, 1)).unwrap_err();
        assert!(e.to_string().contains("the limit is 1048576 bytes"), "{e}");
        // Within the size limit, parsing stops at the 1,001st step.
        let e = wf(&dense(MAX_STEPS + 1, 1)).unwrap_err();
        assert!(e.to_string().contains("more than 1000 steps; the limit is 1000"), "{e}");
        let many: Vec<String> = (0..=MAX_DEPENDS_ON).map(|i| format!("d{i}")).collect();
        let mut steps: Vec<String> = many.iter().map(|d| step(d, &[])).collect();
        let deps: Vec<&str> = many.iter().map(String::as_str).collect();
        steps.push(step("x", &deps));
        let e = wf(&steps_json(&steps)).unwrap_err();
        assert!(e.to_string().contains("the limit is 64"), "{e}");
        let e = built(70, |i| if i == 69 { (0..65).collect() } else { vec![] }).check().unwrap_err();
        assert!(e.to_string().contains("\"s69\" depends on 65 steps; the limit is 64"), "{e}");
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let e = wf(&steps_json(&[step(&long, &[])])).unwrap_err();
        assert!(e.to_string().contains("129 bytes; the limit is 128"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        for (format, text) in [
            (Format::Yaml, "[".repeat(100_000)),
            (Format::Yaml, format!("name: w\nsteps: {}", "[".repeat(100_000))),
            (Format::Yaml, "{a: ".repeat(50_000)),
            (Format::Yaml, "[\n".repeat(100_000)),
            (Format::Yaml, "- ".repeat(100_000)),
            (Format::Yaml, (0..40).map(|i| format!("{}k:\n", " ".repeat(i))).collect()),
            (Format::Json, "[".repeat(100_000)),
            (Format::Json, format!(r#"{{"name":"w","steps":{}"#, "[".repeat(100_000))),
        ] {
            let e = Workflow::parse(&text, format).unwrap_err().to_string();
            assert!(e.contains("the limit is 32"), "{format:?} {:?}: {e}", &text[..20.min(text.len())]);
        }
        // 32 deep passes the pre-scan (and fails as a workflow).
        for (format, text) in [
            (Format::Yaml, format!("{}{}", "[".repeat(32), "]".repeat(32))),
            (Format::Json, format!("{}{}", "[".repeat(32), "]".repeat(32))),
        ] {
            let e = Workflow::parse(&text, format).unwrap_err().to_string();
            assert!(!e.contains("the limit is 32"), "{e}");
        }
    }

    #[test]
    fn brackets_in_text_are_not_nesting() {
        let open = "[{".repeat(40);
        for query in [
            format!("\"{open} \\\" {open}\""),
            format!("'{open} '' {open}'"),
            format!("what about {open}"),
            format!("|\n      {open}\n      {open}"),
            format!(">-\n      {open}\n\n      more {open}"),
            format!("plain\n      continued {open}"),
            format!("q # {open}"),
        ] {
            let text =
                format!("name: w\nsteps:\n  - id: a\n    agent: A\n    query: {query}\n    depends_on: []\n");
            let w = yaml(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
            assert!(
                w.steps[0].query.as_deref().is_some_and(|q| q.starts_with('q') || q.contains("[{")),
                "{text}"
            );
        }
        let w =
            wf(&format!(r#"{{"name":"w","steps":[{{"id":"a","agent":"A","query":"{open} \" {open}"}}]}}"#))
                .unwrap();
        assert!(w.steps[0].query.as_deref().unwrap().starts_with("[{"));
    }

    #[test]
    fn independent_steps_of_different_agents_run_concurrently_and_failures_stop_or_skip() {
        let w = Workflow::parse(
            &format!(
                r#"{{"name":"w","on_failure":"continue","steps":[{},{},{},{}]}}"#,
                step_on("a", "A", &[]),
                step_on("b", "B", &[]),
                step_on("c", "A", &["a"]),
                step_on("d", "B", &["b"])
            ),
            Format::Json,
        )
        .unwrap();
        let barrier = std::sync::Barrier::new(2);
        let stored = Mutex::new(Vec::new());
        let report = w
            .run(
                |s| {
                    if s.id == "a" || s.id == "b" {
                        // Both must be running at once to pass the barrier.
                        barrier.wait();
                    }
                    if s.id == "b" {
                        return Err(invalid("b breaks"));
                    }
                    Ok(StepOutput { content: format!("answer {}", s.id), confidence: 0.5 })
                },
                |s, _, deps| {
                    let mut st = stored.lock().unwrap();
                    st.push((s.id.clone(), deps.to_vec()));
                    Ok(st.len() as u64)
                },
            )
            .unwrap();
        let status: Vec<&StepStatus> = report.steps.iter().map(|s| &s.status).collect();
        assert!(matches!(status[0], StepStatus::Done { engram: Some(1), .. }));
        assert!(matches!(status[1], StepStatus::Failed(m) if m.contains("b breaks")));
        assert!(matches!(status[2], StepStatus::Done { .. }));
        assert!(matches!(status[3], StepStatus::Skipped(m) if m.contains("depends on b")));
        assert_eq!(stored.lock().unwrap()[1], ("c".to_string(), vec![1]), "c's engram links a's");
        assert!(!report.succeeded());

        // The same with stop: c never runs.
        let w = Workflow { on_failure: OnFailure::Stop, ..w };
        let report = w
            .run(
                |s| {
                    if s.id == "b" {
                        Err(invalid("b breaks"))
                    } else {
                        Ok(StepOutput { content: String::new(), confidence: 1.0 })
                    }
                },
                |_, _, _| Ok(1),
            )
            .unwrap();
        assert!(matches!(report.steps[2].status, StepStatus::NotRun));
        assert!(matches!(report.steps[3].status, StepStatus::NotRun));
    }

    #[test]
    fn steps_of_one_agent_queue_instead_of_overlapping() {
        // 40 independent steps on one agent and 3 on another: one caller at a
        // time per agent, every step done.
        let mut steps: Vec<String> = (0..40).map(|i| step_on(&format!("a{i}"), "A", &[])).collect();
        steps.extend((0..3).map(|i| step_on(&format!("b{i}"), "B", &[])));
        let w = wf(&steps_json(&steps)).unwrap();
        let in_flight: HashMap<&str, AtomicUsize> =
            [("A", AtomicUsize::new(0)), ("B", AtomicUsize::new(0))].into();
        let overlapped = AtomicBool::new(false);
        let order = Mutex::new(Vec::new());
        let report = w
            .run(
                |s| {
                    let n = &in_flight[s.agent.as_str()];
                    if n.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlapped.store(true, Ordering::SeqCst);
                    }
                    std::thread::yield_now();
                    if s.agent == "A" {
                        order.lock().unwrap().push(s.id.clone());
                    }
                    n.fetch_sub(1, Ordering::SeqCst);
                    Ok(StepOutput { content: s.id.clone(), confidence: 1.0 })
                },
                |_, _, _| Ok(1),
            )
            .unwrap();
        assert!(report.succeeded());
        assert_eq!(report.steps.iter().filter(|s| matches!(s.status, StepStatus::Done { .. })).count(), 43);
        assert!(!overlapped.load(Ordering::SeqCst), "an agent was called twice at once");
        let expected: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        assert_eq!(*order.lock().unwrap(), expected, "one agent's steps run in file order");

        // A failure under `stop` keeps the agent's later steps of the wave
        // from starting; a panic is a failed step, not a crash.
        let w = wf(&steps_json(&[step("x", &[]), step("y", &[]), step("z", &[])])).unwrap();
        let report = w
            .run(
                |s| match s.id.as_str() {
                    "y" => panic!("y panics"),
                    _ => Ok(StepOutput { content: String::new(), confidence: 1.0 }),
                },
                |_, _, _| Ok(1),
            )
            .unwrap();
        assert!(matches!(report.steps[0].status, StepStatus::Done { .. }));
        assert!(matches!(&report.steps[1].status, StepStatus::Failed(m) if m.contains("panicked")));
        assert!(matches!(report.steps[2].status, StepStatus::NotRun));
    }

    #[test]
    fn workflow_files_are_read_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("w.yaml");
        std::fs::write(&good, "name: w\nsteps:\n  - id: a\n    agent: A\n    query: q\n").unwrap();
        assert_eq!(Workflow::load(&good).unwrap().steps.len(), 1);
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = Workflow::load(&big).unwrap_err().to_string();
        assert!(e.contains("limit of 1048576 bytes"), "{e}");
        let e = Workflow::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        #[cfg(unix)]
        {
            let zero = dir.path().join("zero.yaml");
            std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
            let e = Workflow::load(&zero).unwrap_err().to_string();
            assert!(e.contains("device"), "{e}");
            let fifo = dir.path().join("fifo.yaml");
            assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
            let e = Workflow::load(&fifo).unwrap_err().to_string();
            assert!(e.contains("FIFO"), "{e}");
        }
    }

    /// How deeply a parsed YAML value nests.
    fn value_depth(v: &serde_yaml_ng::Value) -> usize {
        use serde_yaml_ng::Value;
        match v {
            Value::Sequence(s) => 1 + s.iter().map(value_depth).max().unwrap_or(0),
            Value::Mapping(m) => {
                1 + m.iter().map(|(k, v)| value_depth(k).max(value_depth(v))).max().unwrap_or(0)
            }
            Value::Tagged(t) => value_depth(&t.value),
            _ => 0,
        }
    }

    fn json_value(depth: u32) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            (-1e6f64..1e6).prop_map(serde_json::Value::from),
            "[a-z\\[\\]{}:,#'\" -]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(depth, 256, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just(String::from("name")),
                        Just(String::from("steps")),
                        Just(String::from("id")),
                        Just(String::from("agent")),
                        Just(String::from("query")),
                        Just(String::from("depends_on")),
                        "[a-z]{1,4}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A random document wrapped in up to 48 sequences and mappings, so
    /// that about a third of them nest past the limit.
    fn deep_json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        (json_value(8), proptest::collection::vec(any::<bool>(), 0..48)).prop_map(|(value, wraps)| {
            wraps.into_iter().fold(value, |inner, sequence| {
                if sequence {
                    serde_json::json!([inner, 1])
                } else {
                    serde_json::json!({ "k": inner, "n": 1 })
                }
            })
        })
    }

    fn json_depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// YAML-like text: YAML's indicators and tokens, indentation and line
    /// breaks of every kind, scalars and comments (no aliases: a parsed
    /// alias repeats its anchor's nesting).
    const YAMLISH: &str = concat!(
        "(",
        "[\\[\\]{}:,?|>'\"#!%\\\\-]|[ ]{1,6}|\n|\r\n|\r|\t|[ab0-9]{1,3}|\u{e9}|\u{85}|\u{2028}|\u{feff}",
        "|- |: |, |\\? |\n- |\n  - |\n    |\n  |[a-c]: |'[\\[{ a]*'|\"[\\[{ \\\\a]*\"|# [\\[{]*|\\|[+-]?[1-3]?\n|>-?\n",
        "|!![a-z]+ |!<[\\[a,]*> |---\n|\\.\\.\\.\n|%YAML 1.2\n",
        "){0,80}"
    );

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::default())]

        /// Any bytes: an error or a workflow, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let text = String::from_utf8_lossy(&bytes);
            for format in [Format::Json, Format::Yaml] {
                if let Ok(w) = Workflow::parse(&text, format) {
                    proptest::prop_assert!(w.steps.len() <= MAX_STEPS);
                }
            }
        }

        /// YAML-like text: never a panic, and the pre-scan never sees less
        /// nesting than the parser builds (so what it passes is bounded).
        #[test]
        fn the_yaml_pre_scan_never_underestimates(text in proptest::string::string_regex(YAMLISH).unwrap()) {
            let _ = Workflow::parse(&text, Format::Yaml);
            if let (Ok(depth), Ok(value)) = (nesting::yaml(&text), serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)) {
                proptest::prop_assert!(value_depth(&value) <= depth.deepest,
                    "{text:?}: parsed {} deep, scanned {}", value_depth(&value), depth.deepest);
            }
        }

        /// Random structured documents, as JSON and as YAML (block and
        /// flow): never a panic; nesting measured exactly for JSON and never
        /// underestimated for YAML; past the limit, refused by the pre-scan.
        #[test]
        fn structured_documents_are_measured(value in deep_json_value()) {
            let depth = json_depth(&value);
            let json = serde_json::to_string(&value).unwrap();
            proptest::prop_assert_eq!(nesting::json(&json).deepest, depth);
            let block = serde_yaml_ng::to_string(&value).unwrap();
            for (format, text) in [(Format::Json, json.as_str()), (Format::Yaml, block.as_str()), (Format::Yaml, json.as_str())] {
                let result = Workflow::parse(text, format);
                if depth > MAX_NESTING {
                    let e = result.unwrap_err().to_string();
                    proptest::prop_assert!(e.contains("the limit is 32"), "{}", e);
                }
                if format == Format::Yaml {
                    proptest::prop_assert!(nesting::yaml(text).unwrap().deepest >= depth, "{}", text);
                }
            }
        }
    }
}
