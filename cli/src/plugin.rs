//! Plugins: `elex new`, `elex build`, `elex wit`, `elex load`, `elex unload`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use elex_registry::Manifest;
use elex_wit::World;

use crate::Places;
use crate::output::outln;

/// A plugin's source language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// std Rust with wit-bindgen, built for wasm32-wasip2 with cargo.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-qjs.
    Js,
}

/// The templates (`templates/` in the repository), compiled in.
const MANIFEST: &str = include_str!("../../templates/plugin.toml");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../../templates/rust/src/lib.rs");
const PYTHON_APP: &str = include_str!("../../templates/python/app.py");
const JS_AGENT: &str = include_str!("../../templates/js/agent.js");

/// The world every plugin targets.
const WORLD: &str = "elex:platform/plugin@0.1.0";

/// The versions the templates are tested with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
pub const COMPONENTIZE_QJS: &str = "componentize-qjs@0.4.5";

impl Lang {
    /// The project's files: (path, text), before `{{id}}`/`{{name}}` are
    /// filled in.
    fn files(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Lang::Rust => vec![("Cargo.toml", RUST_CARGO), ("src/lib.rs", RUST_LIB)],
            Lang::Python => vec![("app.py", PYTHON_APP)],
            Lang::Js => vec![("agent.js", JS_AGENT)],
        }
    }

    /// The language of the project in `dir`, from its files.
    fn of_project(dir: &Path) -> anyhow::Result<Lang> {
        for (file, lang) in [("Cargo.toml", Lang::Rust), ("app.py", Lang::Python), ("agent.js", Lang::Js)] {
            if dir.join(file).is_file() {
                return Ok(lang);
            }
        }
        bail!(
            "{} is not a plugin project: it has none of Cargo.toml (Rust), app.py (Python), agent.js \
             (JavaScript); create one with `elex new <id> --lang rust|python|js`",
            dir.display()
        )
    }

    /// The build command, as the project's README shows it.
    fn build_command(self) -> String {
        match self {
            Lang::Rust => String::from("cargo build --release --target wasm32-wasip2"),
            Lang::Python => format!("componentize-py -d wit -w {WORLD} componentize app -o build/app.wasm"),
            Lang::Js => {
                format!("componentize-qjs --wit wit --world {WORLD} --js agent.js --sync -o build/agent.wasm")
            }
        }
    }

    fn install_hint(self) -> String {
        match self {
            Lang::Rust => String::from("rustup target add wasm32-wasip2"),
            Lang::Python => format!("pip install {COMPONENTIZE_PY}"),
            Lang::Js => format!("npm install -g {COMPONENTIZE_QJS}"),
        }
    }
}

/// A name for people from a plugin id: `weather-words` → `Weather words`.
fn name_of(id: &str) -> String {
    let words = id.replace('-', " ");
    let mut chars = words.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn fill(template: &str, id: &str, name: &str) -> String {
    template.replace("{{id}}", id).replace("{{name}}", name)
}

/// Writes the WIT contract into `dir` (`worlds.wit`, `deps/…`).
fn write_wit(dir: &Path) -> anyhow::Result<()> {
    for (path, text) in elex_wit::SOURCES {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// `elex wit`: prints the WIT a plugin implements, or writes the folder.
pub fn wit(out: Option<PathBuf>) -> anyhow::Result<()> {
    match out {
        Some(dir) => {
            write_wit(&dir)?;
            outln!("wrote the elex WIT contract to {} (world {WORLD})", dir.display())?;
        }
        None => {
            for (path, text) in elex_wit::SOURCES {
                outln!("// ---- {path}")?;
                outln!("{text}")?;
            }
        }
    }
    Ok(())
}

/// `elex new`: writes a plugin project from the templates.
pub fn new(id: &str, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let name = name_of(id);
    // The id is checked as the manifest will be.
    let manifest =
        Manifest::from_toml(&fill(MANIFEST, id, &name)).map_err(|e| anyhow!("plugin id {id:?}: {e}"))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(id));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: choose another --dir", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files: Vec<(String, String)> = vec![(String::from("plugin.toml"), fill(MANIFEST, id, &name))];
    files.extend(lang.files().into_iter().map(|(p, t)| (p.to_string(), fill(t, id, &name))));
    files.push((String::from("README.md"), readme(&manifest, lang)));
    files.push((
        String::from(".gitignore"),
        String::from("/target\n/build\n__pycache__/\n/src/bindings.rs\n"),
    ));
    for (path, text) in &files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    write_wit(&dir.join("wit"))?;
    outln!("created {} plugin `{id}` in {}", format!("{lang:?}").to_lowercase(), dir.display())?;
    outln!("next:  elex build {0}  &&  elex load --allow-unsigned {0}/build/{id}.wasm", dir.display())?;
    Ok(())
}

fn readme(manifest: &Manifest, lang: Lang) -> String {
    let id = &manifest.id;
    format!(
        "# {name}\n\n\
         An elex plugin: an agent of the `{WORLD}` world (the WIT in `wit/`), which the elex host\n\
         runs next to the 593 RAN feature agents. `plugin.toml` is its manifest: the router picks\n\
         this agent for questions like its description, keywords and examples.\n\n\
         ## Build\n\n\
         ```sh\nelex build .\n```\n\n\
         runs `{build}` and embeds `plugin.toml` in the result, `build/{id}.wasm`.\n\
         Needs: `{hint}`.\n\n\
         ## Run it\n\n\
         ```sh\n\
         elex load --allow-unsigned build/{id}.wasm   # or sign it (elex sign) and: elex load {id}\n\
         elex query \"{example}\"\n\
         elex query --agent {id} \"hello\"\n\
         elex unload {id}\n\
         ```\n\n\
         What it may use: clocks, random, and stdout/stderr (into the host's log, `elex -v`); no\n\
         files, network or environment. Each call is held to the budgets in `plugin.toml`, capped\n\
         by the host's.\n",
        name = manifest.name,
        build = lang.build_command(),
        hint = lang.install_hint(),
        example = manifest.examples.first().map(String::as_str).unwrap_or("hello"),
    )
}

/// Runs a build tool, with a clear error when it is not installed.
fn run_tool(mut cmd: Command, tool: &str, lang: Lang) -> anyhow::Result<()> {
    let status = cmd.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("`{tool}` is not installed (not on PATH): {}", lang.install_hint())
        } else {
            anyhow!("cannot run `{tool}`: {e}")
        }
    })?;
    if !status.success() {
        bail!("`{tool}` failed ({status}); its output is above");
    }
    Ok(())
}

/// `elex build`: builds the plugin project in `dir` and embeds its manifest;
/// returns the component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(dir.join("plugin.toml"))
        .with_context(|| format!("reading {}", dir.join("plugin.toml").display()))?;
    let manifest = Manifest::from_toml(&text)?;
    let lang = Lang::of_project(dir)?;
    let out_dir = dir.join("build");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let built = match lang {
        Lang::Rust => {
            let target_dir =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| dir.join("target"));
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir);
            run_tool(cmd, "cargo", lang)?;
            target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", manifest.id.replace('-', "_")))
        }
        Lang::Python => {
            let out = out_dir.join("app.wasm");
            let mut cmd = Command::new("componentize-py");
            cmd.arg("-d").arg(dir.join("wit")).args(["-w", WORLD, "componentize", "-p"]).arg(dir);
            cmd.arg("app").arg("-o").arg(&out);
            run_tool(cmd, "componentize-py", lang)?;
            out
        }
        Lang::Js => {
            let out = out_dir.join("agent.wasm");
            let mut cmd = Command::new("componentize-qjs");
            cmd.arg("--wit").arg(dir.join("wit")).args(["--world", WORLD, "--js"]).arg(dir.join("agent.js"));
            cmd.arg("--sync").arg("-o").arg(&out);
            run_tool(cmd, "componentize-qjs", lang)?;
            out
        }
    };
    let bytes = crate::read_component_file(&built)?;
    let bytes = manifest.embed(&bytes)?;
    elex_wit::check_fit(&bytes, World::Plugin).map_err(|e| anyhow!("{}: {e}", built.display()))?;
    let out = out_dir.join(format!("{}.wasm", manifest.id));
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    outln!("built {} ({} bytes, manifest embedded)", out.display(), bytes.len())?;
    outln!("load it:  elex load --allow-unsigned {}", out.display())?;
    Ok(out)
}

/// `elex load`: installs a plugin into the data dir.
pub fn load(
    places: &Places,
    spec: &str,
    allow_unsigned: bool,
    grants: &[String],
    operator: Option<String>,
) -> anyhow::Result<()> {
    let looks_like_file = spec.ends_with(".wasm") || spec.contains(std::path::MAIN_SEPARATOR);
    let spec = if allow_unsigned {
        let path = PathBuf::from(spec);
        if !path.exists() {
            bail!("component {} not found", path.display());
        }
        eprintln!("warning: loading UNSIGNED plugin {} (--allow-unsigned)", path.display());
        elex_ran::PluginSpec::Unsigned(path)
    } else if looks_like_file {
        bail!(
            "refusing to load unsigned component {spec}: publish it with `elex sign` and load it by name, \
             or pass --allow-unsigned for development"
        );
    } else {
        elex_ran::PluginSpec::Registry(spec.to_string())
    };
    let operator = operator.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| String::from("unknown"));
    let plugin = crate::builder(places)?.install_plugin(&spec, &operator, grants)?;
    let m = &plugin.manifest;
    outln!("loaded plugin {} ({}) from {}", m.id, m.name, source_of(&plugin.installed))?;
    if !grants.is_empty() {
        outln!("granted: {}", grants.join(", "))?;
    }
    outln!("the router can now pick it; ask it directly with: elex query --agent {} \"...\"", m.id)?;
    Ok(())
}

/// Where an installed plugin comes from, in words.
pub fn source_of(p: &elex_host::snapshots::InstalledPlugin) -> String {
    match &p.source {
        elex_host::snapshots::PluginSource::Registry { name, version } => {
            format!("registry {name}@{version}")
        }
        elex_host::snapshots::PluginSource::Unsigned => {
            {
                // The record is read from the data dir: a short digest is shown whole, never a panic.
                format!("an unsigned file (blake3 {})", p.digest.get(..16).unwrap_or(&p.digest))
            }
        }
    }
}

/// `elex unload`.
pub fn unload(places: &Places, id: &str) -> anyhow::Result<()> {
    if crate::builder(places)?.uninstall_plugin(id)? {
        outln!("unloaded plugin {id}; what it learned stays stored (elex agents reset {id} forgets it)")?;
        Ok(())
    } else {
        bail!("no plugin {id:?} is loaded in {}", places.data_dir.display())
    }
}
