//! The `swarm` suite: all 593 feature agents live and linked in one host.
//! Cold start from the precompiled cache, query latency end to end (route +
//! agent + any consult), throughput with 2 worker threads, RSS.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use elex_host::{Host, HostConfig, Reply, Swarm, SwarmConfig};
use elex_ran::{Catalog, Router};

use crate::{Row, quantile};

/// Questions of the kinds operators ask, by name, acronym, parameter or
/// counter; deterministic (feature i, template i % 6).
fn queries(catalog: &Catalog, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let f = &catalog.features[(k * 7919) % catalog.features.len()];
            let acronym = f.acronym.clone().unwrap_or_else(|| f.name.clone());
            match k % 6 {
                0 => format!("What is {}?", f.name),
                1 => format!("Which counters show the effect of {}?", f.name),
                2 => format!("Which parameters control {acronym} and what are their ranges?"),
                3 => match f.parameters.first() {
                    Some(p) => format!("What should {p} be set to?"),
                    None => format!("When should {} be enabled?", f.name),
                },
                4 => format!("What does {} require?", f.name),
                _ => match f.counters.first() {
                    Some(c) => format!("Why is {c} increasing?"),
                    None => format!("How do I troubleshoot {acronym}?"),
                },
            }
        })
        .collect()
}

/// Routes `text` and asks the chosen agent, as `Runtime::query` does
/// (without its database writes).
fn query(router: &Router, swarm: &Swarm, text: &str) -> Result<Reply> {
    let (i, _) = router.choose(text).ok_or_else(|| anyhow!("empty catalog"))?;
    swarm.ask(i, text).map_err(|e| anyhow!("{e}"))
}

pub fn run(out: &Path) -> Result<()> {
    let mut rows = Vec::new();
    let bytes = std::fs::read(elex_tests::component_path("feature-agent.composed"))?;
    let cache = tempfile::tempdir()?;
    let config = HostConfig { cache_dir: Some(cache.path().to_path_buf()), ..HostConfig::for_swarm(593) };
    // Fill the disk cache (the agent and the hnsw component), then start
    // cold from it in a fresh host.
    let hnsw = std::fs::read(elex_tests::component_path("hnsw"))?;
    {
        let warm = Host::new(config.clone()).map_err(|e| anyhow!("{e}"))?;
        warm.load_unsigned_bytes("feature-agent", &bytes).map_err(|e| anyhow!("{e}"))?;
        warm.vector_index(&hnsw, &[], elex_text::DIM).map_err(|e| anyhow!("{e}"))?;
    }
    let catalog = Arc::new(Catalog::embedded().map_err(|e| anyhow!("{e}"))?);
    let rss_before = crate::runtime::rss_bytes();
    let t = Instant::now();
    let host = Arc::new(Host::new(config).map_err(|e| anyhow!("{e}"))?);
    let loaded = Arc::new(host.load_unsigned_bytes("feature-agent", &bytes).map_err(|e| anyhow!("{e}"))?);
    let router = Arc::new(Router::new(catalog.clone()));
    let swarm = Swarm::start(host.clone(), loaded, router.clone(), None, SwarmConfig::default(), |_| {})
        .map_err(|e| anyhow!("{e}"))?;
    router.attach_index(
        host.vector_index(&hnsw, &router.profile_rows(), elex_text::DIM).map_err(|e| anyhow!("{e}"))?,
    );
    let cold = t.elapsed();
    rows.push(Row::new("swarm_cold_start", "ms", cold.as_secs_f64() * 1e3, None).settings(format!(
        "new host, load from the disk cache, instantiate + init 593 linked agents on {} threads, agent embeddings into an hnsw instance (knowledge indexes are built at each agent's first question)",
        SwarmConfig::default().start_threads
    )));
    if let (Some(before), Some(after)) = (rss_before, crate::runtime::rss_bytes()) {
        rows.push(
            Row::new("swarm_rss", "MB", after / 1e6, None)
                .settings(format!("process RSS with 593 live agents; {:.1} MB before", before / 1e6)),
        );
    }

    let qs = queries(&catalog, 3_000);
    // The first question to each agent builds its knowledge index (agents
    // defer that work at start): timed separately. Feature k*7919 mod 593
    // visits every agent once in the first 593 questions.
    let mut first = Vec::with_capacity(593);
    for q in &qs[..593] {
        let t = Instant::now();
        query(&router, &swarm, q)?;
        first.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let note = "the first question to each agent: route + build its knowledge index + answer";
    rows.push(Row::new("swarm_first_query_p50", "us", quantile(&mut first, 0.5), None).settings(note));
    rows.push(Row::new("swarm_first_query_p99", "us", quantile(&mut first, 0.99), None).settings(note));
    let mut lat = Vec::with_capacity(qs.len());
    let mut consults = 0;
    for q in &qs {
        let t = Instant::now();
        let a = query(&router, &swarm, q)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        consults += usize::from(!a.trace.is_empty());
    }
    let note =
        format!("route + answer (+ consult in {consults} of {}), 6 kinds of operator question", qs.len());
    rows.push(Row::new("swarm_query_p50", "us", quantile(&mut lat, 0.5), None).settings(note.clone()));
    rows.push(Row::new("swarm_query_p99", "us", quantile(&mut lat, 0.99), None).settings(note));

    // Routing alone, as the runtime routes (the choice and its close
    // rivals; similarity in the attached hnsw instance): the question mix,
    // and the hand-written operator questions of the eval (longer, vaguer).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/realistic.jsonl");
    let realistic: Vec<String> = std::fs::read_to_string(&path)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(str::to_string))
        .collect();
    for (name, texts) in [("mix", &qs), ("realistic", &realistic)] {
        let mut lat = Vec::with_capacity(texts.len() * 3);
        for _ in 0..3 {
            for text in texts.iter() {
                let t = Instant::now();
                std::hint::black_box(router.choose_with_rivals(text));
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let note = format!("Router::choose_with_rivals, {} questions ({name}) three times", texts.len());
        rows.push(
            Row::new(&format!("swarm_routing_{name}_p50"), "us", quantile(&mut lat, 0.5), None)
                .settings(note.clone()),
        );
        rows.push(
            Row::new(&format!("swarm_routing_{name}_p99"), "us", quantile(&mut lat, 0.99), None)
                .settings(note),
        );
    }

    // With a consult: agents that have a prerequisite in the catalog are
    // taught (negative feedback otherwise) to consult it for prerequisite
    // questions; then those questions are timed.
    let with_peer: Vec<usize> = (0..catalog.features.len())
        .filter(|&i| catalog.features[i].requires.iter().any(|r| router.index_of(r).is_some()))
        .collect();
    let ask =
        |i: usize| swarm.ask(i, &format!("What are the prerequisites of {}?", catalog.features[i].name));
    for &i in &with_peer {
        for _ in 0..8 {
            let a = ask(i).map_err(|e| anyhow!("{e}"))?;
            if a.response.action == elex_host::Action::ConsultPeer {
                swarm.feedback(i, &a.response.query_id, 1.0).map_err(|e| anyhow!("{e}"))?;
                break;
            }
            swarm.feedback(i, &a.response.query_id, -0.5).map_err(|e| anyhow!("{e}"))?;
        }
    }
    let mut lat = Vec::new();
    let mut hops = 0;
    for k in 0..1_000 {
        let i = with_peer[k % with_peer.len()];
        let t = Instant::now();
        let a = ask(i).map_err(|e| anyhow!("{e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        hops += a.trace.len();
    }
    let note = format!(
        "prerequisite questions to the {} agents with an in-catalog prerequisite, taught to consult it; {hops} hops in 1000 queries",
        with_peer.len()
    );
    rows.push(
        Row::new("swarm_query_with_consult_p50", "us", quantile(&mut lat, 0.5), None).settings(note.clone()),
    );
    rows.push(Row::new("swarm_query_with_consult_p99", "us", quantile(&mut lat, 0.99), None).settings(note));

    // Throughput: 2 workers for 2 s.
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let secs = 2.0;
    std::thread::scope(|s| {
        for w in 0..2 {
            let (router, swarm, qs, done, stop) = (&router, &swarm, &qs, &done, &stop);
            s.spawn(move || {
                let mut k = w * 1_500;
                while !stop.load(Ordering::Relaxed) {
                    if query(router, swarm, &qs[k % qs.len()]).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    k += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    rows.push(
        Row::new("swarm_throughput_2_threads", "q/s", done.load(Ordering::Relaxed) as f64 / secs, None)
            .settings("2 worker threads, the same question mix, for 2 s"),
    );
    crate::write(out, "swarm", &rows)
}
