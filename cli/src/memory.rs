//! `elex engram …` and `elex context …`: the memory graph in
//! <DATA_DIR>/memory.redb, as the operator or (`--as`) as an agent.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use elex_memgraph::{Actor, EngramData, GraphConfig, MemoryGraph, Op, SearchQuery};

use crate::Places;
use crate::output::{clean, outln};

/// Whom a command acts as.
#[derive(Args, Clone)]
pub struct As {
    /// Act as this agent (its permissions and quota) instead of the
    /// operator, who sees everything.
    #[arg(long = "as", value_name = "AGENT")]
    pub agent: Option<String>,
}

impl As {
    fn actor(&self) -> Actor {
        match &self.agent {
            Some(a) => Actor::agent(a.clone()),
            None => Actor::Operator,
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

#[derive(Subcommand)]
pub enum EngramCommand {
    /// Store an engram; prints its id.
    Add {
        /// The content.
        content: String,
        /// Where it came from.
        #[arg(long, default_value = "cli")]
        source: String,
        /// Confidence in [0, 1].
        #[arg(long, default_value_t = 1.0)]
        confidence: f32,
        /// Metadata, repeatable.
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        /// Put it in this context.
        #[arg(long, value_name = "ID")]
        context: Option<u64>,
        #[command(flatten)]
        actor: As,
    },
    /// Print one engram.
    Get {
        id: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        actor: As,
    },
    /// Search by words (all must occur; ranked by BM25), metadata and context.
    Search {
        /// Words to look for.
        text: Option<String>,
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
        metadata: Vec<(String, String)>,
        #[arg(long, value_name = "ID")]
        context: Option<u64>,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        actor: As,
    },
    /// Check the memory graph: every record against its checksum and every
    /// index against the engrams; exits 1 if anything is wrong.
    Check,
}

#[derive(Subcommand)]
pub enum ContextCommand {
    /// Create a context; prints its id.
    Create {
        name: String,
        #[command(flatten)]
        actor: As,
    },
    /// Add engrams and/or agents to a context.
    Add {
        context: u64,
        /// An engram to add, repeatable.
        #[arg(long = "engram", value_name = "ID")]
        engrams: Vec<u64>,
        /// An agent to let in, repeatable.
        #[arg(long = "agent", value_name = "AGENT")]
        agents: Vec<String>,
        #[command(flatten)]
        actor: As,
    },
    /// Show a context: name, members and engrams (oldest first).
    Show {
        context: u64,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        actor: As,
    },
}

impl Places {
    /// The memory graph of the data dir; waits while another elex holds it.
    pub fn memory_graph(&self) -> anyhow::Result<MemoryGraph> {
        let path = self.data_dir()?.join(elex_memgraph::FILE_NAME);
        let config = GraphConfig { open_wait: Duration::from_secs(30), ..GraphConfig::default() };
        MemoryGraph::open(&path, config).map_err(|e| anyhow!("{e}"))
    }
}

fn preview(s: &str, n: usize) -> String {
    let one_line = clean(&s.replace('\n', " ")).into_owned();
    match one_line.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

pub fn engram(places: &Places, command: EngramCommand) -> anyhow::Result<()> {
    let graph = places.memory_graph()?;
    match command {
        EngramCommand::Add { content, source, confidence, metadata, context, actor } => {
            let data = EngramData { content, source, confidence, metadata };
            let id = graph.create(&actor.actor(), data, context)?;
            outln!("{id}")?;
        }
        EngramCommand::Get { id, json, actor } => {
            if json {
                let e = elex_ran::json::engram(&graph, &actor.actor(), id)?;
                outln!("{}", serde_json::to_string_pretty(&e)?)?;
            } else {
                let e = graph.get(&actor.actor(), id)?;
                outln!("engram      {}  (owner {}, confidence {:.2})", e.id, e.owner, e.data.confidence)?;
                outln!("source      {}", clean(&e.data.source))?;
                for (k, v) in &e.data.metadata {
                    outln!("meta        {} = {}", clean(k), clean(v))?;
                }
                for c in graph.connections(&actor.actor(), id)? {
                    outln!("connection  -{}-> {} (weight {:.2})", c.relation, c.target, c.weight)?;
                }
                outln!("content")?;
                for line in e.data.content.lines() {
                    outln!("  {}", clean(line))?;
                }
            }
        }
        EngramCommand::Check => {
            let problems = graph.check_integrity()?;
            for p in &problems {
                outln!("PROBLEM {}", clean(p))?;
            }
            let path = places.data_dir.join(elex_memgraph::FILE_NAME);
            if !problems.is_empty() {
                anyhow::bail!("{} problem(s) in {}", problems.len(), path.display());
            }
            outln!("ok: every record and index of {} checks out", path.display())?;
        }
        EngramCommand::Search { text, metadata, context, limit, json, actor } => {
            let who = actor.actor();
            let query = SearchQuery { text, metadata, context, limit };
            if json {
                let out = elex_ran::json::search(&graph, &who, &query)?;
                outln!("{}", serde_json::to_string_pretty(&out)?)?;
                return Ok(());
            }
            let hits = graph.search(&who, &query)?;
            let rows: Vec<_> =
                hits.iter().map(|h| graph.get(&who, h.id).map(|e| (h.score, e))).collect::<Result<_, _>>()?;
            if rows.is_empty() {
                outln!("no engram matches")?;
            } else {
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED).set_header(["id", "score", "owner", "content"]);
                for (score, e) in &rows {
                    table.add_row([
                        e.id.to_string(),
                        format!("{score:.3}"),
                        e.owner.clone(),
                        preview(&e.data.content, 70),
                    ]);
                }
                outln!("{table}")?;
            }
        }
    }
    Ok(())
}

pub fn context(places: &Places, command: ContextCommand) -> anyhow::Result<()> {
    let graph = places.memory_graph()?;
    match command {
        ContextCommand::Create { name, actor } => {
            outln!("{}", graph.create_context(&actor.actor(), &name)?)?;
        }
        ContextCommand::Add { context, engrams, agents, actor } => {
            if engrams.is_empty() && agents.is_empty() {
                return Err(anyhow!("give --engram and/or --agent"));
            }
            let ops: Vec<Op> = engrams
                .into_iter()
                .map(|id| Op::AddToContext { context, id })
                .chain(agents.into_iter().map(|agent| Op::AddMember { context, agent }))
                .collect();
            let n = ops.len();
            graph.apply(&actor.actor(), ops).with_context(|| format!("adding to context {context}"))?;
            eprintln!("context {context}: {n} added");
        }
        ContextCommand::Show { context, limit, json, actor } => {
            let who = actor.actor();
            if json {
                let out = elex_ran::json::context(&graph, &who, context, limit)?;
                outln!("{}", serde_json::to_string_pretty(&out)?)?;
            } else {
                let c = graph.context(&who, context)?;
                let ids = graph.context_engrams(&who, context, limit)?;
                let engrams: Vec<_> = ids.iter().map(|&id| graph.get(&who, id)).collect::<Result<_, _>>()?;
                outln!("context   {}  {:?}  (created by {})", c.id, c.name, clean(&c.creator))?;
                outln!("members   {}", c.members.join(", "))?;
                outln!("engrams   {}", c.engrams)?;
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED).set_header(["id", "owner", "content"]);
                for e in &engrams {
                    table.add_row([e.id.to_string(), e.owner.clone(), preview(&e.data.content, 80)]);
                }
                if !engrams.is_empty() {
                    outln!("{table}")?;
                }
            }
        }
    }
    Ok(())
}
