//! `elex agents …`: what the agents have done, from the agents' database.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use elex_host::snapshots;
use elex_host::usage::Usage;

use crate::Places;
use crate::output::outln;

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// Every agent: the features of the catalog (FAJ code, name, acronym,
    /// category, and how much it owns), then the plugins loaded with
    /// `elex load` (category Plugin).
    List {
        /// Only agents of this category (case-insensitive substring).
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One agent: its feature's data, dependencies and what it has learned.
    Show {
        /// FAJ code, e.g. "FAJ 121 3094" or faj1213094, or a plugin's id.
        faj: String,
        #[arg(long)]
        json: bool,
    },
    /// Usage of every agent that has run, across runs: calls, errors,
    /// latency p50/p99, fuel, memory peak, recycles and evictions.
    Stats {
        /// Only this agent (FAJ code, e.g. "FAJ 121 3094").
        #[arg(long, value_name = "FAJ")]
        agent: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget what an agent has learned: removes its stored snapshots (of
    /// every component); it starts fresh in the next run. Usage history is
    /// kept.
    Reset {
        /// FAJ code, e.g. "FAJ 121 3094", or a plugin's id.
        faj: String,
    },
    /// Check every record of the agents' database against its checksum;
    /// exits 1 if any is corrupt.
    Check,
}

pub fn run(places: &Places, command: AgentsCommand) -> anyhow::Result<()> {
    match command {
        AgentsCommand::Stats { agent, json } => stats(places, agent, json),
        AgentsCommand::List { category, json } => list(places, category, json),
        AgentsCommand::Show { faj, json } => show(places, &faj, json),
        AgentsCommand::Reset { faj } => reset(places, &faj),
        AgentsCommand::Check => check(places),
    }
}

fn micros(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e6)
}

fn stats(places: &Places, agent: Option<String>, json: bool) -> anyhow::Result<()> {
    let path = places.data_dir()?.join(snapshots::FILE_NAME);
    let mut rows: Vec<(String, Usage)> = if path.exists() {
        places.agent_store()?.all_usage().with_context(|| format!("reading {}", path.display()))?
    } else {
        Vec::new()
    };
    let catalog = crate::builder(places)?.agents()?;
    if let Some(want) = &agent {
        let code = catalog.feature(want).map_or_else(|_| want.clone(), |f| f.faj.clone());
        rows.retain(|(id, _)| *id == code);
        if rows.is_empty() {
            anyhow::bail!("agent {want:?} has no recorded use in {}", path.display());
        }
    }
    let name_of = |id: &str| catalog.by_faj(id).map(|f| f.name.clone()).unwrap_or_default();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(id, u)| {
                serde_json::json!({
                    "agent": id,
                    "name": name_of(id),
                    "calls": u.calls,
                    "errors": u.errors,
                    "latency_p50_us": micros(u.latency.quantile(0.5)),
                    "latency_p99_us": micros(u.latency.quantile(0.99)),
                    "busy_ms": u.busy.as_secs_f64() * 1e3,
                    "fuel_used": u.fuel_used,
                    "memory_peak_bytes": u.memory_peak_bytes,
                    "recycles": u.recycles,
                    "evictions": u.evictions,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no agent has run yet with data dir {}", places.data_dir.display())?;
        return Ok(());
    }
    let fmt_us =
        |d: Option<Duration>| micros(d).map(|us| format!("{us:.0} µs")).unwrap_or_else(|| "-".into());
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "agent",
        "name",
        "calls",
        "errors",
        "p50",
        "p99",
        "fuel",
        "memory peak",
        "recycles",
        "evictions",
    ]);
    for (id, u) in &rows {
        table.add_row([
            id.clone(),
            name_of(id),
            u.calls.to_string(),
            u.errors.to_string(),
            fmt_us(u.latency.quantile(0.5)),
            fmt_us(u.latency.quantile(0.99)),
            u.fuel_used.to_string(),
            format!("{:.1} MiB", u.memory_peak_bytes as f64 / (1 << 20) as f64),
            u.recycles.to_string(),
            u.evictions.to_string(),
        ]);
    }
    outln!("{table}")?;
    outln!("p50/p99 are upper bucket edges (within 9 %); {} agents", rows.len())?;
    Ok(())
}

fn list(places: &Places, category: Option<String>, json: bool) -> anyhow::Result<()> {
    let catalog = crate::builder(places)?.agents()?;
    let want = category.map(|c| c.to_lowercase());
    let features: Vec<_> = catalog
        .features
        .iter()
        .filter(|f| {
            want.as_ref()
                .is_none_or(|w| f.category.as_deref().is_some_and(|c| c.to_lowercase().contains(w.as_str())))
        })
        .collect();
    if json {
        let out: Vec<_> = features
            .iter()
            .map(|f| {
                serde_json::json!({"faj": f.faj, "name": f.name, "acronym": f.acronym, "category": f.category,
                    "parameters": f.parameters.len(), "counters": f.counters.len(), "requires": f.requires})
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["agent", "name", "acronym", "category", "params", "counters"]);
    for f in &features {
        table.add_row([
            f.faj.clone(),
            f.name.clone(),
            f.acronym.clone().unwrap_or_default(),
            f.category.clone().unwrap_or_default(),
            f.parameters.len().to_string(),
            f.counters.len().to_string(),
        ]);
    }
    outln!("{table}")?;
    outln!("{} agents", features.len())?;
    Ok(())
}

fn show(places: &Places, faj: &str, json: bool) -> anyhow::Result<()> {
    let catalog = crate::builder(places)?.agents()?;
    let f = catalog.feature(faj)?;
    let path = places.data_dir()?.join(snapshots::FILE_NAME);
    let (usage, learned) = if path.exists() {
        let store = places.agent_store()?;
        let learned: Vec<String> = store
            .snapshot_keys()?
            .into_iter()
            .filter(|k| k.split_once('/').is_some_and(|(_, a)| a == f.faj))
            .collect();
        let bytes = learned
            .iter()
            .filter_map(|k| k.split_once('/'))
            .filter_map(|(family, agent)| store.get(family, agent).ok().flatten())
            .map(|b| b.len())
            .sum::<usize>();
        (store.usage(&f.faj)?, (!learned.is_empty()).then_some(bytes))
    } else {
        (None, None)
    };
    let name_of = |code: &String| {
        catalog.by_faj(code).map_or_else(|| format!("{code} (external)"), |g| format!("{code} {}", g.name))
    };
    if json {
        let out = serde_json::json!({
            "faj": f.faj, "name": f.name, "acronym": f.acronym, "category": f.category,
            "requires": f.requires, "conflicts": f.conflicts, "related": f.related,
            "parameters": f.parameters, "counters": f.counters, "about": f.about,
            "snapshot_bytes": learned,
            "calls": usage.as_ref().map(|u| u.calls),
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    outln!(
        "agent       {}  {}{}",
        f.faj,
        f.name,
        f.acronym.as_deref().map(|a| format!(" ({a})")).unwrap_or_default()
    )?;
    outln!("category    {}", f.category.as_deref().unwrap_or("-"))?;
    for (label, list) in [("requires", &f.requires), ("conflicts", &f.conflicts), ("related", &f.related)] {
        if !list.is_empty() {
            outln!("{label:<11} {}", list.iter().map(name_of).collect::<Vec<_>>().join("; "))?;
        }
    }
    match (f.about.is_empty(), f.plugin) {
        (true, _) => {}
        (false, true) => outln!("about       {}", f.about.join("; "))?,
        // registry-index/keywords.jsonl: elex's own words, not vendor data.
        (false, false) => outln!("keywords    {} (elex's, for routing)", f.about.join("; "))?,
    }
    if !f.plugin {
        for (label, names) in [("parameters", &f.parameters), ("counters", &f.counters)] {
            let some: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            let examples =
                if some.is_empty() { String::new() } else { format!(" (e.g. {})", some.join(", ")) };
            outln!("{label:<11} {}{examples}", names.len())?;
        }
    }
    match (learned, usage) {
        (Some(bytes), Some(u)) => {
            outln!("learned     snapshot of {bytes} bytes; {} calls, {} errors", u.calls, u.errors)?
        }
        (Some(bytes), None) => outln!("learned     snapshot of {bytes} bytes")?,
        _ => outln!("learned     nothing yet (no snapshot in {})", places.data_dir.display())?,
    }
    Ok(())
}

fn reset(places: &Places, faj: &str) -> anyhow::Result<()> {
    let catalog = crate::builder(places)?.agents()?;
    let store = places.agent_store()?;
    // A live agent by any spelling of its id; else an agent that is gone
    // (an unloaded plugin) but left state behind, by its exact id.
    let id = match catalog.feature(faj) {
        Ok(f) => f.faj.clone(),
        Err(e) => {
            let left =
                store.snapshot_keys()?.iter().any(|k| k.split_once('/').is_some_and(|(_, a)| a == faj));
            if !left {
                return Err(e.into());
            }
            faj.to_string()
        }
    };
    let removed = store.reset(&id)?;
    if removed == 0 {
        outln!("{id} had learned nothing: no snapshot to remove")?;
    } else {
        outln!("{id} reset: {removed} snapshot(s) removed; it starts fresh in the next run")?;
    }
    Ok(())
}

fn check(places: &Places) -> anyhow::Result<()> {
    let problems = places.agent_store()?.check()?;
    for p in &problems {
        outln!("CORRUPT {p}")?;
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{} corrupt record(s) in {}",
            problems.len(),
            places.data_dir.join(snapshots::FILE_NAME).display()
        );
    }
    outln!("ok: every record of {} checks out", places.data_dir.join(snapshots::FILE_NAME).display())?;
    Ok(())
}
