//! Crash safety: a child process writing large transactions is killed with
//! SIGKILL at a random moment, many times; after each kill the reopened
//! database holds every transaction completely or not at all, keeps every
//! transaction the child saw committed, and passes the integrity check.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use elex_memgraph::*;

const CHILD: &str = "ELEX_MEMGRAPH_CRASH_CHILD";
const BATCH: usize = 1_500;
const ROUNDS: u32 = 8;

fn config() -> GraphConfig {
    // No quota in the way however fast the child writes: the writer is
    // killed long before this many.
    let quota = Quota { max_engrams: u64::MAX, max_bytes: u64::MAX };
    GraphConfig { max_results: 100_000, open_wait: Duration::from_secs(10), quota, ..GraphConfig::default() }
}

/// The child: commits batches of BATCH engrams (each linked to the previous
/// one) until killed, printing each batch tag once its commit returned.
fn child(path: &str, round: &str) -> ! {
    let g = MemoryGraph::open(path.as_ref(), config()).expect("child opens the database");
    let actor = Actor::agent("writer");
    for b in 0.. {
        let tag = format!("{round}-{b}");
        let mut ops = Vec::with_capacity(BATCH * 2);
        let mut prev = None;
        for i in 0..BATCH {
            let id = g.allocate_engram_id().unwrap();
            let data = EngramData {
                content: format!("crash test engram {i} of batch {tag} with some words to index"),
                source: "crash".into(),
                confidence: 0.5,
                metadata: vec![("batch".into(), tag.clone())],
            };
            ops.push(Op::Create { id, data, context: None });
            if let Some(p) = prev {
                ops.push(Op::Connect(Connection {
                    source: p,
                    target: id,
                    relation: "next".into(),
                    weight: 1.0,
                    metadata: vec![],
                }));
            }
            prev = Some(id);
        }
        g.apply(&actor, ops).expect("batch commits");
        println!("committed {tag}");
    }
    unreachable!()
}

fn count(g: &MemoryGraph, tag: &str) -> usize {
    let q = SearchQuery {
        metadata: vec![("batch".into(), tag.into())],
        limit: 100_000,
        ..SearchQuery::default()
    };
    g.search(&Actor::Operator, &q).unwrap().len()
}

#[test]
fn killed_mid_transaction_the_database_holds_all_or_nothing() {
    if let (Ok(path), Ok(round)) = (std::env::var(CHILD), std::env::var("ELEX_CRASH_ROUND")) {
        child(&path, &round);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut committed_total = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "killed_mid_transaction_the_database_holds_all_or_nothing",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            .env("ELEX_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random point once at least one batch committed, so the
        // kill lands inside (or between) later batches.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            if let Some(tag) = line.trim().strip_prefix("committed ") {
                seen.push(tag.to_string());
                break;
            }
            line.clear();
        }
        assert!(!seen.is_empty(), "the child committed nothing");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 250));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        line.clear();
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(tag) = line.trim().strip_prefix("committed ") {
                seen.push(tag.to_string());
            }
            line.clear();
        }

        let g = MemoryGraph::open(&path, config()).expect("reopens after SIGKILL");
        let problems = g.check_integrity().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        for tag in &seen {
            assert_eq!(count(&g, tag), BATCH, "round {round}: batch {tag} was reported committed");
        }
        // The batch after the last reported one: all or nothing.
        let last: u32 = seen.last().unwrap().rsplit('-').next().unwrap().parse().unwrap();
        for b in last + 1..last + 3 {
            let n = count(&g, &format!("{round}-{b}"));
            assert!(n == 0 || n == BATCH, "round {round}: batch {b} half written: {n} of {BATCH}");
        }
        committed_total += seen.len();
        let total = g.len().unwrap() as usize;
        assert!(total >= committed_total * BATCH && total.is_multiple_of(BATCH), "{total} engrams");
        committed_total = total / BATCH;
    }
}
