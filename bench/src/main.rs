//! `elex-bench`: the benchmarks behind `cargo xtask bench`.
//!
//! Each suite prints a table and writes `target/bench/<suite>.json`: a JSON
//! list of rows `{ name, unit, value, native, ratio, recall?, settings? }`,
//! where `value` is the elex figure (in wasm, through the component
//! boundary, where the code runs in wasm) and `native` the same Rust code
//! built for the host CPU (or null).
//!
//! Suites: `libraries` (vector kernels, Q-update, HNSW on siftsmall) and
//! `runtime` (compile, cache load, instantiation, call overhead, memory).
//!
//! Timing: wall clock, single thread, median of repeated runs. Built in the
//! workspace's dev profile, whose dependencies (wasmtime, cranelift, the
//! native kernels and HNSW) are compiled with opt-level 3; the wasm
//! components are release builds.

/// The allocator of the `elex` binary, so that the figures are what its
/// users get (glibc's malloc made memory-graph inserts ~25 % slower).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use elex_tests::guests::hnsw_bindings::exports::elex::hnsw::store::{
    Config as HnswConfig, Distance, Storage,
};
use elex_tests::guests::vector_bindings::exports::elex::vector::kernels::Metric;
use elex_tests::guests::{Hnsw, Vector};
use serde::Serialize;
use wasmtime::{Config, Engine};

mod cluster;
mod eval;
mod memory;
mod plugins;
mod runtime;
mod serve;
mod swarm;

#[derive(Serialize)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub native: Option<f64>,
    /// `value / native` (wasm cost relative to native).
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
}

impl Row {
    pub fn new(name: &str, unit: &'static str, value: f64, native: Option<f64>) -> Row {
        let ratio = native.filter(|n| *n > 0.0).map(|n| value / n);
        Row { name: name.to_string(), unit, value, native, ratio, recall: None, settings: None }
    }
    pub fn recall(mut self, r: f64) -> Row {
        self.recall = Some(r);
        self
    }
    pub fn settings(mut self, s: impl Into<String>) -> Row {
        self.settings = Some(s.into());
        self
    }
}

/// Median nanoseconds per iteration of `f` over `reps` runs of `iters`.
pub fn ns_per_iter(iters: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// The `p`-quantile (0..=1) of sorted-in-place samples.
/// SplitMix64: deterministic, so every run generates the same data.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded by an FNV-1a hash of `parts` (a seed per item, e.g. per
    /// feature and question kind).
    pub fn seeded_by(parts: &[&str]) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for p in parts {
            for b in p.bytes().chain([0x1f]) {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Rng(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn quantile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[i]
}

pub fn write(out: &Path, suite: &str, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{suite}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(rows)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\n{suite}  ({})", path.display());
    println!(
        "{:<34} {:>14} {:>14} {:>8} {:>7}  {:<8} settings",
        "name", "elex (wasm)", "native", "ratio", "recall", "unit"
    );
    for r in rows {
        let f = |x: f64| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else if x >= 1.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.4}")
            }
        };
        println!(
            "{:<34} {:>14} {:>14} {:>8} {:>7}  {:<8} {}",
            r.name,
            f(r.value),
            r.native.map(f).unwrap_or_else(|| "-".into()),
            r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into()),
            r.recall.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into()),
            r.unit,
            r.settings.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// The engine settings the host uses for guest code (epoch interruption on).
fn engine() -> Result<Engine> {
    let mut c = Config::new();
    c.wasm_component_model(true).concurrency_support(false).epoch_interruption(true);
    Engine::new(&c).map_err(|e| anyhow::anyhow!("{e:#}"))
}

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn libraries(out: &Path) -> Result<()> {
    let engine = engine()?;
    let mut rows = Vec::new();
    let mut v = Vector::new(&engine);
    let a = pseudo_random(128, 1);
    let b = pseudo_random(128, 2);

    // Single calls: the component boundary (two lists copied in) included.
    type Wasm = fn(
        &elex_tests::guests::vector_bindings::exports::elex::vector::kernels::Guest,
        &mut wasmtime::Store<()>,
        &[f32],
        &[f32],
    ) -> wasmtime::Result<
        Result<f32, elex_tests::guests::vector_bindings::exports::elex::vector::kernels::VectorError>,
    >;
    type Native = fn(&[f32], &[f32]) -> Result<f32, elex_kernels::KernelError>;
    let singles: [(&str, Wasm, Native); 3] = [
        ("cosine_128_call", |k, s, a, b| k.call_cosine(s, a, b), elex_kernels::cosine),
        ("dot_128_call", |k, s, a, b| k.call_dot(s, a, b), elex_kernels::dot),
        ("squared_l2_128_call", |k, s, a, b| k.call_squared_l2(s, a, b), elex_kernels::squared_l2),
    ];
    for (name, wasm, native) in singles {
        let w = ns_per_iter(20_000, 7, || {
            let (k, s) = v.split();
            std::hint::black_box(wasm(k, s, &a, &b).unwrap().unwrap());
        });
        let n = ns_per_iter(200_000, 7, || {
            std::hint::black_box(native(std::hint::black_box(&a), std::hint::black_box(&b)).unwrap());
        });
        rows.push(Row::new(name, "ns", w, Some(n)).settings("one pair of 128-d vectors per call"));
    }

    // Per pair inside a batch of 1,000 rows: against a `matrix` kept in the
    // component (only the query crosses the boundary), and with the whole
    // matrix copied in by `score-rows` on every call.
    let matrix = pseudo_random(128 * 1000, 3);
    let norms = elex_kernels::row_norms(&matrix, 128).expect("norms");
    let kept = {
        let (k, s) = v.split();
        k.matrix().call_create(s, &matrix, 128).expect("no trap").map_err(|e| anyhow::anyhow!("{e:?}"))?
    };
    for (name, metric, km) in [
        ("cosine_128", Metric::Cosine, elex_kernels::Metric::Cosine),
        ("dot_128", Metric::Dot, elex_kernels::Metric::Dot),
        ("squared_l2_128", Metric::SquaredL2, elex_kernels::Metric::SquaredL2),
    ] {
        let w = ns_per_iter(500, 7, || {
            let (k, s) = v.split();
            std::hint::black_box(k.matrix().call_score(s, kept, &a, metric).unwrap().unwrap());
        }) / 1000.0;
        let n = ns_per_iter(2000, 7, || {
            std::hint::black_box(elex_kernels::score_rows_normed(&a, &matrix, 128, &norms, km).unwrap());
        }) / 1000.0;
        rows.push(
            Row::new(&format!("{name}_batch_per_pair"), "ns", w, Some(n))
                .settings("matrix resource of 1,000 rows kept in the component; score()"),
        );
        let w = ns_per_iter(200, 7, || {
            let (k, s) = v.split();
            std::hint::black_box(k.call_score_rows(s, &a, &matrix, 128, metric).unwrap().unwrap());
        }) / 1000.0;
        let n = ns_per_iter(2000, 7, || {
            std::hint::black_box(elex_kernels::score_rows(&a, &matrix, 128, km).unwrap());
        }) / 1000.0;
        rows.push(
            Row::new(&format!("{name}_batch_with_copy_per_pair"), "ns", w, Some(n))
                .settings("score-rows: the 1,000-row matrix (512 KB) copied into the component per call"),
        );
    }

    let q = pseudo_random(100, 4);
    let r = pseudo_random(100, 5);
    let nx = pseudo_random(100, 6);
    let w = ns_per_iter(5000, 7, || {
        let (k, s) = v.split();
        std::hint::black_box(k.call_q_update(s, &q, &r, &nx, 0.1, 0.9).unwrap().unwrap());
    });
    let n = ns_per_iter(50_000, 7, || {
        std::hint::black_box(elex_kernels::q_update(&q, &r, &nx, 0.1, 0.9).unwrap());
    });
    rows.push(Row::new("q_update_batch_100", "us", w / 1e3, Some(n / 1e3)));

    let vals = pseudo_random(1000, 7);
    let lo: Vec<f32> = vals.iter().map(|x| x - 0.5).collect();
    let hi: Vec<f32> = vals.iter().map(|x| x + 0.25).collect();
    let w = ns_per_iter(2000, 7, || {
        let (k, s) = v.split();
        std::hint::black_box(k.call_validate_ranges(s, &vals, &lo, &hi).unwrap().unwrap());
    });
    let n = ns_per_iter(20_000, 7, || {
        std::hint::black_box(elex_kernels::validate_ranges(&vals, &lo, &hi).unwrap());
    });
    rows.push(Row::new("validate_1000_parameters", "us", w / 1e3, Some(n / 1e3)));

    let counters = pseudo_random(500, 8);
    let weights = pseudo_random(500, 9);
    let w = ns_per_iter(5000, 7, || {
        let (k, s) = v.split();
        std::hint::black_box(k.call_aggregate(s, &counters, &weights, 0.5).unwrap().unwrap());
    });
    let n = ns_per_iter(50_000, 7, || {
        std::hint::black_box(elex_kernels::aggregate(&counters, &weights, 0.5).unwrap());
    });
    rows.push(Row::new("aggregate_500_counters", "us", w / 1e3, Some(n / 1e3)));

    interruption_rows(&mut rows)?;
    hnsw_rows(&engine, &mut rows, Storage::Full)?;
    hnsw_rows(&engine, &mut rows, Storage::Int8)?;
    write(out, "libraries", &rows)
}

/// What epoch interruption and fuel metering cost on a compute-heavy call:
/// scoring 1,000 kept rows of 128-d (about 30 us of simd128 work). The three
/// engines are measured in interleaved rounds and the best round of each is
/// kept, so a noisy neighbour does not land on one configuration only.
fn interruption_rows(rows: &mut Vec<Row>) -> Result<()> {
    let matrix = pseudo_random(128 * 1000, 11);
    let query = pseudo_random(128, 12);
    let setup = |epoch: bool, fuel: bool| -> Result<(Vector, wasmtime::component::ResourceAny)> {
        let mut c = Config::new();
        c.wasm_component_model(true).concurrency_support(false).epoch_interruption(epoch).consume_fuel(fuel);
        let engine = Engine::new(&c).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut v = Vector::new(&engine);
        let (k, s) = v.split();
        let m = k
            .matrix()
            .call_create(&mut *s, &matrix, 128)
            .expect("no trap")
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok((v, m))
    };
    // neither, epoch, fuel
    let mut configs = [setup(false, false)?, setup(true, false)?, setup(false, true)?];
    let mut best = [f64::INFINITY; 3];
    for _round in 0..9 {
        for (i, (v, m)) in configs.iter_mut().enumerate() {
            let m = *m;
            let t = ns_per_iter(100, 1, || {
                let (k, s) = v.split();
                std::hint::black_box(k.matrix().call_score(s, m, &query, Metric::Dot).unwrap().unwrap());
            });
            best[i] = best[i].min(t);
        }
    }
    let [base, epoch, fuel] = best;
    let note = |what: &str| {
        format!(
            "{what} vs neither, matrix.score of 1,000 x 128 (dot); baseline {:.1} us; best of 9 interleaved rounds",
            base / 1e3
        )
    };
    rows.push(
        Row::new("epoch_interruption_overhead", "%", (epoch / base - 1.0) * 100.0, None)
            .settings(note("epoch checks")),
    );
    rows.push(
        Row::new("fuel_metering_overhead", "%", (fuel / base - 1.0) * 100.0, None)
            .settings(note("fuel metering")),
    );
    Ok(())
}

fn hnsw_rows(engine: &Engine, rows: &mut Vec<Row>, storage: Storage) -> Result<()> {
    let sift = elex_tests::siftsmall()?;
    let d = sift.dim;
    let n = sift.base.len() / d;
    let (m, ef_c) = (16u32, 200u32);
    let (prefix, native_storage) = match storage {
        Storage::Full => ("hnsw", elex_ann::Storage::Full),
        Storage::Int8 => ("hnsw_int8", elex_ann::Storage::Int8),
    };
    let settings = format!("siftsmall, M={m}, ef_construction={ef_c}, squared L2, {prefix} storage");

    // wasm: the first n-1000 in batches, then 1000 single inserts timed.
    let mut h = Hnsw::new(engine);
    let config = HnswConfig {
        dimension: d as u32,
        distance: Distance::SquaredL2,
        storage,
        m,
        ef_construction: ef_c,
        ef_search: 64,
        seed: 7,
    };
    let ix = h.create(&config).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let split = n - 1000;
    let t = Instant::now();
    let ids: Vec<u64> = (0..split as u64).collect();
    for (c_ids, c) in ids.chunks(1000).zip(sift.base[..split * d].chunks(1000 * d)) {
        h.insert_batch(ix, c_ids, c).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let mut inserts = Vec::new();
    for i in split..n {
        let ti = Instant::now();
        h.insert(ix, i as u64, &sift.base[i * d..i * d + d]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        inserts.push(ti.elapsed().as_nanos() as f64 / 1e3);
    }
    let wasm_build = t.elapsed().as_secs_f64();

    // native: the same graph code.
    let params = elex_ann::Params {
        dimension: d,
        metric: elex_ann::Metric::SquaredL2,
        storage: native_storage,
        m: m as usize,
        ef_construction: ef_c as usize,
        ef_search: 64,
        seed: 7,
    };
    let mut g = elex_ann::Graph::new(params).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    g.reserve(n);
    let t = Instant::now();
    let mut native_inserts = Vec::new();
    for i in 0..n {
        let ti = Instant::now();
        g.insert(i as u64, &sift.base[i * d..i * d + d]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if i >= split {
            native_inserts.push(ti.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    let native_build = t.elapsed().as_secs_f64();
    rows.push(
        Row::new(&format!("{prefix}_build_siftsmall"), "s", wasm_build, Some(native_build))
            .settings(settings.clone()),
    );
    let (wi, ni) = (quantile(&mut inserts, 0.5), quantile(&mut native_inserts, 0.5));
    rows.push(
        Row::new(&format!("{prefix}_insert_at_10k_p50"), "us", wi, Some(ni)).settings(settings.clone()),
    );

    const REPEAT: usize = 20;
    for ef in [16u32, 32, 64, 128] {
        let mut lat = Vec::new();
        let mut found = Vec::new();
        let t = Instant::now();
        for _ in 0..REPEAT {
            found.clear();
            for q in sift.queries.chunks(d) {
                let tq = Instant::now();
                let hits = h.search(ix, q, 10, ef).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                lat.push(tq.elapsed().as_nanos() as f64 / 1e3);
                found.push(hits.into_iter().map(|(id, _)| id).collect::<Vec<_>>());
            }
        }
        let qps = lat.len() as f64 / t.elapsed().as_secs_f64();
        let recall = elex_tests::recall_at(10, &found, &sift.truth);

        let mut nlat = Vec::new();
        let mut nfound = Vec::new();
        let t = Instant::now();
        for _ in 0..REPEAT {
            nfound.clear();
            for q in sift.queries.chunks(d) {
                let tq = Instant::now();
                let hits = g.search(q, 10, ef as usize).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                nlat.push(tq.elapsed().as_nanos() as f64 / 1e3);
                nfound.push(hits.into_iter().map(|(id, _)| id).collect::<Vec<_>>());
            }
        }
        let nqps = nlat.len() as f64 / t.elapsed().as_secs_f64();
        let s = format!("{settings}, ef={ef}, k=10");
        rows.push(
            Row::new(
                &format!("{prefix}_search_ef{ef}_p50"),
                "us",
                quantile(&mut lat, 0.5),
                Some(quantile(&mut nlat, 0.5)),
            )
            .recall(recall)
            .settings(s.clone()),
        );
        rows.push(
            Row::new(
                &format!("{prefix}_search_ef{ef}_p99"),
                "us",
                quantile(&mut lat, 0.99),
                Some(quantile(&mut nlat, 0.99)),
            )
            .recall(recall)
            .settings(s.clone()),
        );
        // For throughput, higher is better: the ratio is still wasm / native.
        rows.push(
            Row::new(&format!("{prefix}_search_ef{ef}_qps"), "q/s", qps, Some(nqps))
                .recall(recall)
                .settings(s),
        );
    }
    rows.push(
        Row::new(
            &format!("{prefix}_memory_siftsmall"),
            "bytes",
            h.memory(ix) as f64,
            Some(g.memory_bytes() as f64),
        )
        .settings(settings.clone()),
    );
    // What the graph costs at rest: the component's snapshot (hnswlib's
    // peer figure is its saved index file).
    let snapshot = h.snapshot(ix).len() as f64;
    rows.push(Row::new(&format!("{prefix}_snapshot_siftsmall"), "bytes", snapshot, None).settings(settings));
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let suites: Vec<&str> = if args.is_empty() {
        vec!["libraries", "runtime", "memory", "swarm"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    if suites.len() > 1 {
        // One process per suite: a suite's RSS and caches must not include
        // what the suites before it left behind.
        let me = std::env::current_exe()?;
        for suite in suites {
            let status = std::process::Command::new(&me).arg(suite).status()?;
            anyhow::ensure!(status.success(), "the {suite} suite failed ({status})");
        }
        return Ok(());
    }
    for suite in suites {
        match suite {
            "libraries" => libraries(&out)?,
            "runtime" => runtime::run(&out)?,
            "memory" => memory::run(&out)?,
            "swarm" => swarm::run(&out)?,
            "eval" => eval::run(&out)?,
            "plugins" => plugins::run(&out)?,
            "serve" => serve::run(&out)?,
            "cluster" => cluster::run(&out)?,
            other => {
                anyhow::bail!(
                    "unknown suite {other:?}; suites: libraries, runtime, memory, swarm, eval, plugins, serve, cluster"
                )
            }
        }
    }
    Ok(())
}
