//! The `plugins` suite: a plugin in each language, as `elex new` writes and
//! `elex build` builds it (the real toolchains from `target/tools/`, which
//! `cargo xtask bench plugins` installs): build time, component size, first
//! load (compile) and cached load, start (instantiate + init), answer
//! latency and the linear memory one instance holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use elex_host::cache::Origin;
use elex_host::{AgentConfig, Host, HostConfig};

use crate::{Row, quantile};

/// Answers timed per language.
const QUERIES: usize = 300;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn elex(cwd: &Path, args: &[&str]) -> Result<()> {
    let tools = root().join("target/tools");
    let mut paths = vec![tools.join("python/bin"), tools.join("node/node_modules/.bin")];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    // The elex binary of this build (xtask builds it before the suite).
    let bin = std::env::current_exe()?.with_file_name("elex");
    let out = Command::new(&bin)
        .args(args)
        .current_dir(cwd)
        .env("PATH", std::env::join_paths(paths)?)
        .env("CARGO_TARGET_DIR", root().join("target/bench/plugin-build"))
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    ensure!(
        out.status.success(),
        "elex {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub fn run(out: &Path) -> Result<()> {
    let mut rows = Vec::new();
    let work = tempfile::tempdir()?;
    for lang in ["rust", "python", "js"] {
        let id = format!("bench-{lang}");
        elex(work.path(), &["new", &id, "--lang", lang])?;
        let t = Instant::now();
        elex(work.path(), &["build", &id])?;
        let build = t.elapsed();
        let bytes = std::fs::read(work.path().join(&id).join("build").join(format!("{id}.wasm")))?;
        let cache = tempfile::tempdir()?;
        let config = HostConfig { cache_dir: Some(cache.path().to_path_buf()), ..HostConfig::default() };
        let host = Host::new(config.clone()).map_err(|e| anyhow!("{e}"))?;
        let first = host.load_unsigned_bytes(&id, &bytes).map_err(|e| anyhow!("{e}"))?;
        ensure!(first.origin == Origin::Compiled, "expected a cold compile");
        // A new host on the same cache: what every later `elex` run pays.
        let host = Host::new(config).map_err(|e| anyhow!("{e}"))?;
        let cached = host.load_unsigned_bytes(&id, &bytes).map_err(|e| anyhow!("{e}"))?;
        ensure!(cached.origin == Origin::Disk, "expected a disk-cache load, got {}", cached.origin);
        let config =
            AgentConfig { agent_id: id.clone(), name: id.clone(), settings: vec![], document: String::new() };
        let t = Instant::now();
        let mut agent = host.instantiate(&cached, config).map_err(|e| anyhow!("{e}"))?;
        let start = t.elapsed();
        let mut latencies = Vec::with_capacity(QUERIES);
        for i in 0..QUERIES {
            let query = host.query(&format!("question number {i}"));
            let t = Instant::now();
            agent.handle(&query).map_err(|e| anyhow!("{e}"))?;
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let settings = |what: &str| format!("{lang}: {what}");
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        rows.push(Row::new(&format!("plugin_{lang}_build"), "ms", ms(build), None).settings(settings(
            "elex build of a fresh `elex new` project (Rust: cargo release; its dependencies compiled on the first run, reused from target/bench/plugin-build after)",
        )));
        rows.push(
            Row::new(&format!("plugin_{lang}_size"), "bytes", bytes.len() as f64, None)
                .settings(settings("component with its manifest")),
        );
        rows.push(
            Row::new(&format!("plugin_{lang}_first_load"), "ms", ms(first.load_time), None)
                .settings(settings("check + cranelift compile")),
        );
        rows.push(
            Row::new(&format!("plugin_{lang}_cached_load"), "ms", ms(cached.load_time), None)
                .settings(settings("from the disk cache, new host")),
        );
        rows.push(
            Row::new(&format!("plugin_{lang}_start"), "ms", ms(start), None)
                .settings(settings("instantiate + init")),
        );
        rows.push(
            Row::new(&format!("plugin_{lang}_answer_p50"), "us", quantile(&mut latencies, 0.5), None)
                .settings(settings(&format!("handle, {QUERIES} calls"))),
        );
        rows.push(
            Row::new(&format!("plugin_{lang}_answer_p99"), "us", quantile(&mut latencies, 0.99), None)
                .settings(settings(&format!("handle, {QUERIES} calls"))),
        );
        rows.push(
            Row::new(&format!("plugin_{lang}_memory"), "bytes", agent.memory().used_bytes as f64, None)
                .settings(settings("linear memory of one instance after the answers")),
        );
    }
    crate::write(out, "plugins", &rows)
}
