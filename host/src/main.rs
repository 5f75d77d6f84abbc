//! `elex`: the command-line front of `elex-host`. Every command is a thin
//! layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use elex_host::{Catalog, Host, HostConfig, World, router};

/// The composed feature agent, as `cargo xtask build` names it.
const DEFAULT_COMPONENT: &str = "feature-agent.composed.wasm";

#[derive(Parser)]
#[command(name = "elex", version, about = "elex: a WebAssembly component host for RAN feature agents")]
#[command(long_about = "elex loads wasm components of the elex:platform/plugin world into a \
wasmtime host, gives each instance its own budget, and asks them questions.\n\n\
Logging: -v (info), -vv (debug), -vvv (trace) on stderr; RUST_LOG overrides (e.g. RUST_LOG=elex=debug).")]
struct Cli {
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Folder for elex's data: the precompiled-component cache lives in
    /// <DATA_DIR>/cache [default: $ELEX_DATA_DIR, else $XDG_DATA_HOME/elex,
    /// else ~/.local/share/elex].
    #[arg(long, global = true, value_name = "DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the feature agents a question and print the answer.
    ///
    /// The agent is chosen from the text: a FAJ code, a feature name, a
    /// parameter or counter a feature owns, an acronym, or else the most
    /// similar feature.
    Query {
        /// The question.
        text: String,
        /// Component to run [default: $ELEX_COMPONENT, else
        /// feature-agent.composed.wasm in target/components next to this
        /// binary, else in ./target/components].
        #[arg(long, value_name = "FILE")]
        component: Option<PathBuf>,
        /// Ask the agent of this feature (FAJ code) instead of routing.
        #[arg(long, value_name = "FAJ")]
        agent: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a component's imports and exports as WIT, or say why the file is
    /// not a component.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Also check that it fits this world (e.g. elex:platform/plugin).
        #[arg(long, value_name = "WORLD")]
        world: Option<String>,
    },
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

fn default_component() -> PathBuf {
    if let Some(p) = std::env::var_os("ELEX_COMPONENT") {
        return PathBuf::from(p);
    }
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("../components").join(DEFAULT_COMPONENT)));
    match beside_binary {
        Some(p) if p.is_file() => p,
        _ => Path::new("target/components").join(DEFAULT_COMPONENT),
    }
}

fn query(
    data_dir: PathBuf,
    text: &str,
    component: Option<PathBuf>,
    agent: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let path = component.unwrap_or_else(default_component);
    if !path.is_file() {
        return Err(anyhow!(
            "component {} not found: run `cargo xtask build`, or pass --component <file.wasm>",
            path.display()
        ));
    }
    let catalog = Catalog::embedded()?;
    let (index, reason) = match &agent {
        Some(faj) => {
            let code = router::faj_codes(faj).into_iter().next().unwrap_or_else(|| faj.clone());
            let i = catalog
                .features
                .iter()
                .position(|f| f.faj == code)
                .with_context(|| format!("no feature with FAJ code {faj:?}"))?;
            (i, String::from("--agent"))
        }
        None => {
            let (i, r) = router::choose(&catalog, text).context("the catalog is empty")?;
            (i, r.to_string())
        }
    };
    let feature = &catalog.features[index];

    let config = HostConfig { cache_dir: Some(data_dir.join("cache")), ..HostConfig::default() };
    let host = Host::new(config)?;
    let t0 = Instant::now();
    let loaded = host.load_file(&path)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut instance = host.instantiate(&loaded, feature.agent_config())?;
    let start_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let response = instance.handle(&host.query(text))?;
    let answer_ms = t2.elapsed().as_secs_f64() * 1e3;

    if json {
        let out = serde_json::json!({
            "query_id": response.query_id,
            "agent": { "faj": feature.faj, "name": feature.name, "chosen_by": reason },
            "action": response.action.to_string(),
            "content": response.content,
            "confidence": response.confidence,
            "q_value": response.q_value,
            "sources": response.sources,
            "timing_ms": { "load": load_ms, "instantiate": start_ms, "answer": answer_ms },
            "loaded_from": loaded.origin.to_string(),
            "component": { "path": path.display().to_string(), "digest": loaded.digest, "size": loaded.size },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("agent       {}  {}  (chosen by {reason})", feature.faj, feature.name);
        println!("action      {}", response.action);
        println!("confidence  {:.2}    q-value {:.2}", response.confidence, response.q_value);
        println!("answer");
        for line in response.content.lines() {
            println!("  {line}");
        }
        if !response.sources.is_empty() {
            println!("sources     {}", response.sources.join(", "));
        }
        println!(
            "timing      load {load_ms:.1} ms ({}), instantiate {start_ms:.2} ms, answer {answer_ms:.3} ms",
            loaded.origin
        );
        println!("component   {} ({} bytes, blake3 {})", path.display(), loaded.size, &loaded.digest[..16]);
    }
    Ok(())
}

fn inspect(file: &Path, world: Option<String>) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let wit = elex_wit::print_wit(&bytes).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    print!("{wit}");
    if let Some(name) = world {
        let w = World::from_name(&name).with_context(|| {
            let known: Vec<_> = World::ALL.iter().map(|w| w.qualified_name()).collect();
            format!("unknown world {name:?}; known worlds: {}", known.join(", "))
        })?;
        elex_wit::check_fit(&bytes, w).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        eprintln!("{} fits {w}", file.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let data_dir = cli.data_dir.unwrap_or_else(HostConfig::default_data_dir);
    let result = match cli.command {
        Command::Query { text, component, agent, json } => query(data_dir, &text, component, agent, json),
        Command::Inspect { file, world } => inspect(&file, world),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
