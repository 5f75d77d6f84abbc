//! The `runtime` suite: what the host itself costs: compiling and loading
//! the composed agent, starting agents, calling them, and the memory 593
//! live agents take.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use elex_host::cache::Origin;
use elex_host::{Host, HostConfig};
use elex_ran::Catalog;

use crate::{Row, ns_per_iter, quantile};

pub fn rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

pub fn run(out: &Path) -> Result<()> {
    let mut rows = Vec::new();
    let path = elex_tests::component_path("feature-agent.composed");
    let bytes = std::fs::read(&path)?;
    let cache = tempfile::tempdir()?;
    let config = HostConfig {
        max_instances: 600,
        max_memory_bytes: 16 << 20,
        cache_dir: Some(cache.path().to_path_buf()),
        ..HostConfig::default()
    };

    // Compile: a host with an empty cache.
    let host = Host::new(config.clone()).map_err(|e| anyhow!("{e}"))?;
    let loaded = host.load_unsigned_bytes("feature-agent.composed", &bytes).map_err(|e| anyhow!("{e}"))?;
    anyhow::ensure!(loaded.origin == Origin::Compiled, "expected a cold compile");
    rows.push(
        Row::new("compile_composed_agent", "ms", loaded.compile_time.as_secs_f64() * 1e3, None)
            .settings(format!("{} bytes, cranelift, parallel compilation", bytes.len())),
    );
    drop(host);

    // Load from the disk cache: fresh hosts, the artifact on disk.
    let mut loads = Vec::new();
    for _ in 0..10 {
        let host = Host::new(config.clone()).map_err(|e| anyhow!("{e}"))?;
        let l = host.load_unsigned_bytes("feature-agent.composed", &bytes).map_err(|e| anyhow!("{e}"))?;
        anyhow::ensure!(l.origin == Origin::Disk, "expected a disk-cache hit, got {}", l.origin);
        loads.push(l.load_time.as_secs_f64() * 1e3);
    }
    rows.push(
        Row::new("load_from_disk_cache", "ms", quantile(&mut loads, 0.5), None)
            .settings("digest, verified artifact read, deserialize, instantiate-pre; median of 10"),
    );

    // Registry verification: read + blake3 digest + ed25519 signature + trust.
    let reg_dir = tempfile::tempdir()?;
    let key = elex_registry::KeyPair::generate()?;
    let mut policy = elex_registry::Policy::default();
    policy.trust(key.public(), vec![String::from("*")]);
    let registry = elex_registry::Registry::open(reg_dir.path(), policy);
    let version = semver::Version::new(0, 1, 0);
    let world = elex_host::World::Plugin.qualified_name();
    registry.publish("feature-agent", &version, world, &bytes, &key, elex_registry::Budgets::default())?;
    let any = semver::VersionReq::STAR;
    let fetch = ns_per_iter(50, 7, || {
        std::hint::black_box(registry.fetch("feature-agent", &any).expect("verified"));
    });
    rows.push(Row::new("registry_fetch_and_verify", "ms", fetch / 1e6, None).settings(format!(
        "{} KB component: index lookup, read, blake3 digest, ed25519 signature, trust",
        bytes.len() / 1000
    )));
    let entry = registry.index.resolve("feature-agent", &any)?;
    let sig = ns_per_iter(200, 7, || {
        registry.verify_entry(&entry).expect("verified");
    });
    rows.push(
        Row::new("registry_signature_check", "us", sig / 1e3, None)
            .settings("ed25519 verify_strict + policy"),
    );

    // 593 agents, one per feature, all live.
    let host = Host::new(config).map_err(|e| anyhow!("{e}"))?;
    let loaded = host.load_unsigned_bytes("feature-agent.composed", &bytes).map_err(|e| anyhow!("{e}"))?;
    let catalog = Catalog::embedded().map_err(|e| anyhow!("{e}"))?;
    let rss_before = rss_bytes();
    let mut starts = Vec::new();
    let mut agents = Vec::with_capacity(catalog.features.len());
    let t = Instant::now();
    for f in &catalog.features {
        let ts = Instant::now();
        agents.push(host.instantiate(&loaded, f.agent_config()).map_err(|e| anyhow!("{}: {e}", f.faj))?);
        starts.push(ts.elapsed().as_secs_f64() * 1e6);
    }
    let total = t.elapsed().as_secs_f64() * 1e3;
    let n = agents.len();
    rows.push(
        Row::new("start_593_agents_total", "ms", total, None)
            .settings("instantiate + init (JSON entry, embeddings, knowledge HNSW) per feature"),
    );
    rows.push(
        Row::new("start_agent_p50", "us", quantile(&mut starts, 0.5), None).settings("instantiate + init"),
    );
    rows.push(
        Row::new("start_agent_p99", "us", quantile(&mut starts, 0.99), None).settings("instantiate + init"),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        rows.push(
            Row::new("rss_593_live_agents", "MB", after / 1e6, None)
                .settings(format!("process RSS; {:.1} MB before starting them", before / 1e6)),
        );
    }

    // Calls on one live agent.
    let agent = &mut agents[n / 2];
    let call = ns_per_iter(20_000, 7, || {
        std::hint::black_box(agent.health().expect("health"));
    });
    rows.push(
        Row::new("call_trivial_export", "ns", call, None).settings("agent.health(), host to guest and back"),
    );
    let query = host.query("Which parameters control this feature and what are their ranges?");
    let handle = ns_per_iter(2000, 7, || {
        std::hint::black_box(agent.handle(&query).expect("handle"));
    });
    rows.push(Row::new("agent_handle_query", "us", handle / 1e3, None).settings("one agent, direct answer"));

    // Re-instantiate into a warm pool slot.
    let f = &catalog.features[0];
    let mut restarts = Vec::new();
    for _ in 0..50 {
        let old = agents.pop();
        drop(old);
        let ts = Instant::now();
        agents.push(host.instantiate(&loaded, f.agent_config()).map_err(|e| anyhow!("{e}"))?);
        restarts.push(ts.elapsed().as_secs_f64() * 1e6);
    }
    rows.push(
        Row::new("restart_agent_warm_slot_p50", "us", quantile(&mut restarts, 0.5), None)
            .settings(format!("drop + instantiate + init of {} into a freed pool slot", f.faj)),
    );
    drop(agents);
    drop(host);
    instantiation_rows(&mut rows)?;
    crate::write(out, "runtime", &rows)
}

/// Instantiation alone: the `testing-hostile` fixture, whose `init` does
/// nothing, so what is timed is instantiate + one trivial call.
fn instantiation_rows(rows: &mut Vec<Row>) -> Result<()> {
    let bytes = std::fs::read(elex_tests::component_path("testing-hostile"))?;
    let config = |id: &str| elex_host::AgentConfig {
        agent_id: id.to_string(),
        name: id.to_string(),
        settings: vec![],
        document: String::new(),
    };
    for pooling in [true, false] {
        let host = Host::new(HostConfig {
            max_instances: 600,
            max_memory_bytes: 16 << 20,
            pooling,
            ..HostConfig::default()
        })
        .map_err(|e| anyhow!("{e}"))?;
        let loaded = host.load_unsigned_bytes("testing-hostile", &bytes).map_err(|e| anyhow!("{e}"))?;
        let mut live = Vec::with_capacity(593);
        let mut times = Vec::with_capacity(593);
        let t = Instant::now();
        for i in 0..593 {
            let ts = Instant::now();
            live.push(host.instantiate(&loaded, config(&format!("a{i}"))).map_err(|e| anyhow!("{e}"))?);
            times.push(ts.elapsed().as_secs_f64() * 1e6);
        }
        let total = t.elapsed().as_secs_f64() * 1e3;
        let kind = if pooling { "pooling" } else { "on_demand" };
        let note = "instantiate + init of a minimal plugin (the testing-hostile fixture)";
        rows.push(
            Row::new(&format!("instantiate_{kind}_p50"), "us", quantile(&mut times, 0.5), None)
                .settings(note),
        );
        rows.push(
            Row::new(&format!("instantiate_{kind}_p99"), "us", quantile(&mut times, 0.99), None)
                .settings(note),
        );
        rows.push(Row::new(&format!("instantiate_593_{kind}_total"), "ms", total, None).settings(note));
        if pooling {
            let mut again = Vec::new();
            for i in 0..200 {
                drop(live.pop());
                let ts = Instant::now();
                live.push(host.instantiate(&loaded, config(&format!("b{i}"))).map_err(|e| anyhow!("{e}"))?);
                again.push(ts.elapsed().as_secs_f64() * 1e6);
            }
            rows.push(
                Row::new("recycle_into_warm_pool_slot_p50", "us", quantile(&mut again, 0.5), None)
                    .settings("drop one of 593 live instances, instantiate + init into its slot"),
            );
        }
    }
    Ok(())
}
