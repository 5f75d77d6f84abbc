//! The `memory` suite: the memory graph at 100,000 engrams. Inserts in
//! batched transactions (with connections), text search p50/p99, a 3-hop
//! neighbourhood and a path query. Native only (the graph is host code).

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use elex_memgraph::{Actor, Connection, EngramData, GraphConfig, MemoryGraph, Op, SearchQuery};

use crate::{Rng, Row, quantile};

const ENGRAMS: usize = 100_000;
const BATCH: usize = 1_000;
const BIG_BATCH: usize = 5_000;
const VOCABULARY: usize = 20_000;

/// A Zipf(1) vocabulary of pronounceable pseudo-words: a few very common
/// words and a long tail, like real text.
struct Words {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Words {
    fn new(rng: &mut Rng) -> Words {
        // Letters only: the tokenizer splits at letter/digit boundaries.
        let syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "be", "do", "fi", "gu"];
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(VOCABULARY);
        while words.len() < VOCABULARY {
            let n = 2 + rng.below(4);
            let w: String = (0..n).map(|_| syll[rng.below(syll.len())]).collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut cdf = Vec::with_capacity(VOCABULARY);
        let mut acc = 0.0;
        for r in 1..=VOCABULARY {
            acc += 1.0 / r as f64;
            cdf.push(acc);
        }
        let total = acc;
        cdf.iter_mut().for_each(|c| *c /= total);
        Words { words, cdf }
    }
    fn pick(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let i = self.cdf.partition_point(|&c| c < u).min(VOCABULARY - 1);
        &self.words[i]
    }
}

/// A graph of [`ENGRAMS`] engrams inserted `batch` per transaction. The batches are generated first: the rate is the store's,
/// not the text generator's.
struct Filled {
    graph: MemoryGraph,
    ids: Vec<u64>,
    contents: Vec<String>,
    edges: usize,
    /// How long the inserts took.
    secs: f64,
}

fn fill(path: &Path, batch: usize) -> Result<Filled> {
    let g = MemoryGraph::open(path, GraphConfig::default()).map_err(|e| anyhow!("{e}"))?;
    let actor = Actor::agent("bench");
    let mut rng = Rng(7);
    let words = Words::new(&mut rng);
    let mut contents = Vec::with_capacity(ENGRAMS);
    let mut ids = Vec::with_capacity(ENGRAMS);
    let mut edges = 0usize;
    let mut batches = Vec::with_capacity(ENGRAMS / batch);
    for b in 0..ENGRAMS / batch {
        let mut ops = Vec::with_capacity(batch * 3);
        for i in 0..batch {
            let n = 8 + rng.below(17);
            let content: Vec<&str> = (0..n).map(|_| words.pick(&mut rng)).collect();
            let content = content.join(" ");
            let id = g.allocate_engram_id().expect("a local graph allocates ids");
            let data = EngramData {
                content: content.clone(),
                source: format!("bench/{b}"),
                confidence: 0.5,
                metadata: vec![("kind".into(), ["fact", "answer", "note"][i % 3].into())],
            };
            ops.push(Op::Create { id, data, context: None });
            // Two connections to earlier engrams.
            for relation in ["supports", "derived-from"] {
                if !ids.is_empty() {
                    let target = ids[rng.below(ids.len())];
                    ops.push(Op::Connect(Connection {
                        source: id,
                        target,
                        relation: relation.into(),
                        weight: 0.5,
                        metadata: vec![],
                    }));
                    edges += 1;
                }
            }
            ids.push(id);
            contents.push(content);
        }
        batches.push(ops);
    }
    let t = Instant::now();
    for ops in batches {
        g.apply(&actor, ops).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(Filled { graph: g, ids, contents, edges, secs: t.elapsed().as_secs_f64() })
}

pub fn run(out: &Path) -> Result<()> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    // Larger transactions amortise the commit (page writes and fsync).
    let big_secs = fill(&dir.path().join("big-batches.redb"), BIG_BATCH)?.secs;
    std::fs::remove_file(dir.path().join("big-batches.redb"))?;
    let Filled { graph: g, ids, contents, edges, secs } = fill(&dir.path().join("memory.redb"), BATCH)?;
    for (batch, secs) in [(BATCH, secs), (BIG_BATCH, big_secs)] {
        let name = if batch == BATCH {
            String::from("memgraph_insert_rate")
        } else {
            format!("memgraph_insert_rate_{batch}_per_tx")
        };
        rows.push(Row::new(&name, "engrams/s", ENGRAMS as f64 / secs, None).settings(format!(
            "{ENGRAMS} engrams of 8-24 Zipf words + {edges} connections, {batch} engrams per transaction, durable commits; {secs:.1} s"
        )));
    }
    let actor = Actor::agent("bench");
    let mut rng = Rng(8);
    let path = dir.path().join("memory.redb");
    let open_size = std::fs::metadata(&path)?.len();

    // Text search: two words of a random stored engram (what a user who saw
    // it would type), and one word.
    for (name, n_words) in [("memgraph_search_2_words", 2usize), ("memgraph_search_1_word", 1)] {
        let mut lat = Vec::new();
        let mut found = 0usize;
        for _ in 0..2_000 {
            let c = &contents[rng.below(contents.len())];
            let ws: Vec<&str> = c.split(' ').collect();
            let q: Vec<&str> = (0..n_words).map(|_| ws[rng.below(ws.len())]).collect();
            let query = SearchQuery { text: Some(q.join(" ")), limit: 10, ..SearchQuery::default() };
            let t = Instant::now();
            let hits = g.search(&actor, &query).map_err(|e| anyhow!("{e}"))?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            found += usize::from(!hits.is_empty());
        }
        let note =
            format!("{n_words} word(s) from a random engram, top 10 of 100K, BM25; {found}/2000 found");
        rows.push(
            Row::new(&format!("{name}_p50"), "us", quantile(&mut lat, 0.5), None).settings(note.clone()),
        );
        rows.push(Row::new(&format!("{name}_p99"), "us", quantile(&mut lat, 0.99), None).settings(note));
    }
    let mut lat = Vec::new();
    for _ in 0..500 {
        let id = ids[rng.below(ids.len())];
        let t = Instant::now();
        let n = g.neighbourhood(&actor, id, 3, None, 1_000).map_err(|e| anyhow!("{e}"))?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(n);
    }
    rows.push(
        Row::new("memgraph_neighbourhood_3_hops_p50", "us", quantile(&mut lat, 0.5), None)
            .settings("both directions, any relation, limit 1000, 100K engrams / 200K connections"),
    );
    rows.push(Row::new("memgraph_neighbourhood_3_hops_p99", "us", quantile(&mut lat, 0.99), None));
    let mut lat = Vec::new();
    for _ in 0..500 {
        let (a, b) = (ids[rng.below(ids.len())], ids[rng.below(ids.len())]);
        let t = Instant::now();
        std::hint::black_box(g.path(&actor, a, b, 4).map_err(|e| anyhow!("{e}"))?);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rows.push(
        Row::new("memgraph_path_depth4_p50", "us", quantile(&mut lat, 0.5), None)
            .settings("directed shortest path between two random engrams, at most 4 edges"),
    );
    let t = Instant::now();
    let problems = g.check_integrity().map_err(|e| anyhow!("{e}"))?;
    anyhow::ensure!(problems.is_empty(), "integrity: {problems:?}");
    rows.push(
        Row::new("memgraph_integrity_check", "ms", t.elapsed().as_secs_f64() * 1e3, None)
            .settings("every index at 100K"),
    );
    // The file at rest: an open database keeps room to grow (about twice
    // the data), which closing gives back. (Measured last: reopening would
    // leave the reads above a cold cache.)
    drop(g);
    let size = std::fs::metadata(&path)?.len();
    rows.push(
        Row::new("memgraph_file_size", "MB", size as f64 / 1e6, None).settings(format!(
            "after the 100K inserts, closed ({:.1} MB while open)",
            open_size as f64 / 1e6
        )),
    );
    crate::write(out, "memory", &rows)
}
