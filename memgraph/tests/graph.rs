//! The memory graph through its public API: engrams, search, connections,
//! graph walks and their limits, contexts and permissions, atomic batches,
//! quotas and the schema check.

use elex_memgraph::*;

fn data(content: &str) -> EngramData {
    EngramData { content: content.into(), source: "test".into(), confidence: 0.8, metadata: vec![] }
}

fn with_meta(content: &str, meta: &[(&str, &str)]) -> EngramData {
    EngramData {
        metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..data(content)
    }
}

fn open(dir: &tempfile::TempDir) -> MemoryGraph {
    MemoryGraph::open(&dir.path().join(FILE_NAME), GraphConfig::default()).unwrap()
}

fn edge(source: u64, target: u64, relation: &str) -> Op {
    Op::Connect(Connection { source, target, relation: relation.into(), weight: 0.5, metadata: vec![] })
}

fn text(q: &str, limit: u32) -> SearchQuery {
    SearchQuery { text: Some(q.into()), limit, ..SearchQuery::default() }
}

#[test]
fn engrams_are_created_read_updated_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let a = Actor::agent("a");
    let id = g.create(&a, with_meta("MIMO sleep saves energy at night", &[("kind", "fact")]), None).unwrap();
    let e = g.get(&a, id).unwrap();
    assert_eq!((e.owner.as_str(), e.data.content.as_str()), ("a", "MIMO sleep saves energy at night"));
    assert!(e.created_ms > 0 && e.updated_ms == e.created_ms);
    g.apply(&a, vec![Op::Update { id, data: data("carrier aggregation raises throughput") }]).unwrap();
    assert_eq!(g.get(&a, id).unwrap().data.content, "carrier aggregation raises throughput");
    // The index follows the update.
    assert!(g.search(&a, &text("sleep", 10)).unwrap().is_empty());
    assert_eq!(g.search(&a, &text("throughput", 10)).unwrap()[0].id, id);
    assert!(
        g.search(
            &a,
            &SearchQuery { metadata: vec![("kind".into(), "fact".into())], limit: 5, ..Default::default() }
        )
        .unwrap()
        .is_empty()
    );
    g.apply(&a, vec![Op::Delete { id }]).unwrap();
    assert_eq!(g.get(&a, id), Err(GraphError::NotFound(id)));
    assert_eq!(g.quota_use("a").unwrap(), QuotaUse::default());
    assert!(g.check_integrity().unwrap().is_empty());
    // Ids are never reused.
    let next = g.create(&a, data("again"), None).unwrap();
    assert!(next > id);
}

#[test]
fn bad_data_is_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let a = Actor::agent("a");
    let bad = EngramData { confidence: 1.5, ..data("x") };
    assert!(matches!(g.create(&a, bad, None), Err(GraphError::Invalid(m)) if m.contains("confidence")));
    assert!(matches!(g.create(&a, data("  "), None), Err(GraphError::Invalid(m)) if m.contains("empty")));
    let nan = EngramData { confidence: f32::NAN, ..data("x") };
    assert!(matches!(g.create(&a, nan, None), Err(GraphError::Invalid(_))));
    let id = g.create(&a, data("one"), None).unwrap();
    let loop_edge = Op::Connect(Connection {
        source: id,
        target: id,
        relation: "".into(),
        weight: 0.5,
        metadata: vec![],
    });
    assert!(matches!(g.apply(&a, vec![loop_edge]), Err(GraphError::Invalid(m)) if m.contains("relation")));
    assert!(matches!(
        g.search(&a, &SearchQuery { limit: 3, ..Default::default() }),
        Err(GraphError::Invalid(_))
    ));
    assert!(
        matches!(g.search(&a, &text("the of and", 3)), Err(GraphError::Invalid(m)) if m.contains("searchable"))
    );
    // An id in use is refused: stored, or created earlier in the batch;
    // deleted earlier in the batch, it is free again.
    let stored = g.create(&a, data("stored"), None).unwrap();
    let taken = |r: Result<Vec<bool>>| matches!(r, Err(GraphError::Invalid(m)) if m.contains("is taken"));
    assert!(taken(g.apply(&a, vec![Op::Create { id: stored, data: data("again"), context: None }])));
    let fresh = g.allocate_engram_id().unwrap();
    let twice = vec![
        Op::Create { id: fresh, data: data("one"), context: None },
        Op::Create { id: fresh, data: data("two"), context: None },
    ];
    assert!(taken(g.apply(&a, twice)));
    let recreated = vec![
        Op::Create { id: fresh, data: data("one"), context: None },
        Op::Delete { id: fresh },
        Op::Create { id: fresh, data: data("two"), context: None },
    ];
    g.apply(&a, recreated).unwrap();
    assert_eq!(g.get(&a, fresh).unwrap().data.content, "two");
    assert!(g.check_integrity().unwrap().is_empty());
}

#[test]
fn text_search_needs_every_word_and_ranks_by_relevance() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let a = Actor::agent("a");
    let strong = g.create(&a, data("sleep mode sleep mode saves energy"), None).unwrap();
    let weak = g
        .create(
            &a,
            data("sleep mode is one of many power features with long descriptions of everything"),
            None,
        )
        .unwrap();
    let other = g.create(&a, data("sleep timers for the scheduler"), None).unwrap();
    let hits = g.search(&a, &text("Sleep modes", 10)).unwrap();
    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(ids, [strong, weak], "AND of words, plural folded, best first");
    assert!(hits[0].score > hits[1].score);
    assert_eq!(g.search(&a, &text("sleep", 10)).unwrap().len(), 3);
    assert_eq!(g.search(&a, &text("sleep", 1)).unwrap().len(), 1);
    assert!(g.search(&a, &text("unknownword", 10)).unwrap().is_empty());
    let _ = other;
    // Combined with metadata (AND).
    let tagged = g.create(&a, with_meta("sleep mode tuning", &[("feature", "FAJ 121 3094")]), None).unwrap();
    let q = SearchQuery {
        text: Some("sleep".into()),
        metadata: vec![("feature".into(), "FAJ 121 3094".into())],
        limit: 10,
        context: None,
    };
    assert_eq!(g.search(&a, &q).unwrap().iter().map(|h| h.id).collect::<Vec<_>>(), [tagged]);
    let too_many = SearchQuery { limit: 1_000_000, ..q };
    assert!(matches!(g.search(&a, &too_many), Err(GraphError::LimitExceeded(m)) if m.contains("1000")));
}

#[test]
fn many_engrams_search_matches_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let op = Actor::Operator;
    let words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"];
    let mut ops = Vec::new();
    let mut docs = Vec::new();
    for i in 0..2_000u64 {
        let text: Vec<&str> = (0..6).map(|k| words[((i * 7 + k * k * 3 + i / 5) % 8) as usize]).collect();
        let content = text.join(" ");
        let id = g.allocate_engram_id().unwrap();
        ops.push(Op::Create { id, data: data(&content), context: None });
        docs.push((id, content));
    }
    g.apply(&op, ops).unwrap();
    // Delete some in the middle of posting blocks.
    let gone: Vec<Op> = docs.iter().step_by(7).map(|(id, _)| Op::Delete { id: *id }).collect();
    g.apply(&op, gone).unwrap();
    docs = docs.into_iter().enumerate().filter(|(i, _)| i % 7 != 0).map(|(_, d)| d).collect();
    for q in ["alpha", "alpha beta", "omega kappa theta", "gamma delta sigma"] {
        let want: Vec<u64> = docs
            .iter()
            .filter(|(_, c)| q.split(' ').all(|w| c.split(' ').any(|x| x == w)))
            .map(|(id, _)| *id)
            .collect();
        let mut got: Vec<u64> = g.search(&op, &text(q, 1000)).unwrap().iter().map(|h| h.id).collect();
        got.sort();
        let mut want = want;
        want.truncate(1000);
        assert_eq!(got.len(), want.len().min(1000), "{q}");
        if want.len() <= 1000 {
            assert_eq!(got, want, "{q}");
        }
    }
    assert!(g.check_integrity().unwrap().is_empty(), "{:?}", g.check_integrity());
}

/// A search streams a common word's blocks past the few engrams that also
/// hold a rare one, passing undecoded the blocks that hold none of them:
/// engrams that are the first or the last of a block are found all the
/// same (blocks hold 128 postings, so those are the engrams at 128k and
/// 128k + 127 of one transaction); a single candidate is looked up.
#[test]
fn candidates_at_the_edges_of_posting_blocks_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let op = Actor::Operator;
    let mut ops = Vec::new();
    let mut docs = Vec::new();
    for i in 0..3_000u64 {
        let mut words = vec!["common", "filler"];
        if i % 128 == 0 {
            words.push("firstofblock");
        }
        if i % 128 == 127 {
            words.push("lastofblock");
        }
        if i % 997 == 500 {
            words.push("inside");
        }
        if i == 1_500 {
            // One candidate: looked up on its own, not streamed.
            words.push("single");
        }
        let id = g.allocate_engram_id().unwrap();
        ops.push(Op::Create { id, data: data(&words.join(" ")), context: None });
        docs.push((id, words));
    }
    g.apply(&op, ops).unwrap();
    for rare in ["firstofblock", "lastofblock", "inside", "single"] {
        let want: Vec<u64> = docs.iter().filter(|(_, w)| w.contains(&rare)).map(|(id, _)| *id).collect();
        let mut got: Vec<u64> =
            g.search(&op, &text(&format!("common {rare}"), 100)).unwrap().iter().map(|h| h.id).collect();
        got.sort();
        assert_eq!(got, want, "common {rare}");
    }
}

/// The top 10 of a ranked search are the 10 best by BM25 (k1 1.2, b 0.75,
/// idf ln(1 + (N - df + 0.5) / (df + 0.5))) computed from scratch, over a
/// skewed vocabulary so that terms span many posting blocks (and stream
/// past the candidates; `candidates_at_the_edges_of_posting_blocks_are_found`
/// has a candidate looked up on its own), in several batches and after
/// deletes.
#[test]
fn ranked_search_returns_the_best_by_bm25() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let op = Actor::Operator;
    let vocab: Vec<String> =
        (0..60).map(|i| format!("word{}", char::from(b'a' + (i % 26) as u8)).repeat(1 + i / 26)).collect();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut docs: Vec<(u64, Vec<String>)> = Vec::new();
    for _batch in 0..4 {
        let mut ops = Vec::new();
        for _ in 0..1_500 {
            let n = 3 + (next() % 18) as usize;
            // Skewed: the square of a uniform pick favours the first words.
            let words: Vec<String> = (0..n)
                .map(|_| {
                    let u = (next() % 1000) as f64 / 1000.0;
                    vocab[((u * u) * vocab.len() as f64) as usize].clone()
                })
                .collect();
            let id = g.allocate_engram_id().unwrap();
            ops.push(Op::Create { id, data: data(&words.join(" ")), context: None });
            docs.push((id, words));
        }
        g.apply(&op, ops).unwrap();
    }
    let gone: Vec<Op> = docs.iter().step_by(11).map(|(id, _)| Op::Delete { id: *id }).collect();
    g.apply(&op, gone).unwrap();
    docs = docs.into_iter().enumerate().filter(|(i, _)| i % 11 != 0).map(|(_, d)| d).collect();

    let n = docs.len() as f32;
    let avg = docs.iter().map(|(_, w)| w.len()).sum::<usize>() as f32 / n;
    let mut df: std::collections::HashMap<&str, f32> = std::collections::HashMap::new();
    for (_, w) in &docs {
        let mut seen: Vec<&str> = w.iter().map(String::as_str).collect();
        seen.sort();
        seen.dedup();
        seen.into_iter().for_each(|t| *df.entry(t).or_default() += 1.0);
    }
    let bm25 = |q: &[&str], words: &[String]| -> Option<f32> {
        let mut score = 0.0;
        for t in q {
            let tf = words.iter().filter(|x| x == t).count() as f32;
            if tf == 0.0 {
                return None;
            }
            let idf = (1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)).ln();
            score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * words.len() as f32 / avg));
        }
        Some(score)
    };
    let queries = [
        vec![vocab[0].as_str()],
        vec![vocab[0].as_str(), vocab[1].as_str()],
        vec![vocab[0].as_str(), vocab[40].as_str()],
        vec![vocab[3].as_str(), vocab[25].as_str(), vocab[55].as_str()],
        vec![vocab[59].as_str()],
    ];
    for q in queries {
        let mut want: Vec<(f32, u64)> =
            docs.iter().filter_map(|(id, w)| bm25(&q, w).map(|s| (s, *id))).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got = g.search(&op, &text(&q.join(" "), 10)).unwrap();
        assert_eq!(got.len(), want.len().min(10), "{q:?}");
        for (i, hit) in got.iter().enumerate() {
            // Same score as the reference (up to float summation order) ...
            let (s, _) = want.iter().find(|w| w.1 == hit.id).expect("a hit holds every word");
            assert!((s - hit.score).abs() < 1e-4, "{q:?}: {} scored {} vs {s}", hit.id, hit.score);
            // ... and as good as the reference's i-th best.
            assert!(hit.score >= want[i].0 - 1e-4, "{q:?}: hit {i} scores {} < {}", hit.score, want[i].0);
        }
    }
}

#[test]
fn connections_paths_and_neighbourhoods_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let a = Actor::agent("a");
    let ids: Vec<u64> = (0..6).map(|i| g.create(&a, data(&format!("node {i}")), None).unwrap()).collect();
    // 0 -> 1 -> 2 -> 3 -> 4, and 0 -> 5 (other relation), 5 -> 4.
    let mut ops: Vec<Op> = ids.windows(2).take(4).map(|w| edge(w[0], w[1], "supports")).collect();
    ops.push(edge(ids[0], ids[5], "contradicts"));
    ops.push(edge(ids[5], ids[4], "supports"));
    g.apply(&a, ops).unwrap();
    let c = g.connections(&a, ids[0]).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(g.path(&a, ids[0], ids[4], 6).unwrap(), Some(vec![ids[0], ids[5], ids[4]]));
    assert_eq!(g.path(&a, ids[0], ids[3], 2).unwrap(), None, "3 edges needed");
    assert_eq!(g.path(&a, ids[4], ids[0], 6).unwrap(), None, "edges are directed");
    assert!(
        matches!(g.path(&a, ids[0], ids[4], 99), Err(GraphError::LimitExceeded(m)) if m.contains("depth 99"))
    );
    let n1 = g.neighbourhood(&a, ids[0], 1, None, 100).unwrap();
    assert_eq!(n1.len(), 2);
    let n2 = g.neighbourhood(&a, ids[0], 2, Some("supports"), 100).unwrap();
    assert_eq!(n2, vec![ids[1], ids[2]]);
    assert_eq!(g.neighbourhood(&a, ids[0], 3, None, 2).unwrap().len(), 2, "limit");
    assert!(g.neighbourhood(&a, ids[0], 3, None, 0).unwrap().is_empty(), "limit 0");
    // Deleting an engram removes its connections both ways.
    g.apply(&a, vec![Op::Delete { id: ids[5] }]).unwrap();
    assert_eq!(g.connections(&a, ids[0]).unwrap().len(), 1);
    assert_eq!(g.path(&a, ids[0], ids[4], 6).unwrap().unwrap().len(), 5);
    assert_eq!(
        g.apply(&a, vec![Op::Disconnect { source: ids[0], target: ids[1], relation: "supports".into() }])
            .unwrap(),
        [true]
    );
    assert_eq!(
        g.apply(&a, vec![Op::Disconnect { source: ids[0], target: ids[1], relation: "supports".into() }])
            .unwrap(),
        [false]
    );
    assert!(g.check_integrity().unwrap().is_empty());
}

#[test]
fn a_walk_over_a_huge_graph_is_stopped_at_the_visit_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = GraphConfig { max_visited: 500, ..GraphConfig::default() };
    let g = MemoryGraph::open(&dir.path().join(FILE_NAME), config).unwrap();
    let op = Actor::Operator;
    let hub = g.create(&op, data("hub"), None).unwrap();
    let mut ops = Vec::new();
    for i in 0..2_000 {
        let id = g.allocate_engram_id().unwrap();
        ops.push(Op::Create { id, data: data(&format!("leaf {i}")), context: None });
        ops.push(edge(hub, id, "has"));
    }
    g.apply(&op, ops).unwrap();
    let e = g.neighbourhood(&op, hub, 2, None, 1000).unwrap_err();
    assert!(matches!(&e, GraphError::LimitExceeded(m) if m.contains("500")), "{e}");
    let far = g.create(&op, data("far"), None).unwrap();
    assert!(matches!(g.path(&op, hub, far, 3), Err(GraphError::LimitExceeded(_))));
}

#[test]
fn agents_see_only_their_own_engrams_and_their_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let (a, b, c) = (Actor::agent("a"), Actor::agent("b"), Actor::agent("c"));
    let mine = g.create(&a, data("private note of a"), None).unwrap();
    let e = g.get(&b, mine).unwrap_err();
    assert!(matches!(&e, GraphError::Denied(m) if m.contains("belongs to a")), "{e}");
    assert!(matches!(g.apply(&b, vec![Op::Delete { id: mine }]), Err(GraphError::Denied(_))));
    assert!(g.search(&b, &text("private", 10)).unwrap().is_empty(), "search hides what b may not see");
    let ctx = g.create_context(&a, "shared").unwrap();
    assert!(
        matches!(g.apply(&b, vec![Op::AddToContext { context: ctx, id: mine }]), Err(GraphError::Denied(m)) if m.contains("not a member"))
    );
    g.apply(
        &a,
        vec![Op::AddToContext { context: ctx, id: mine }, Op::AddMember { context: ctx, agent: "b".into() }],
    )
    .unwrap();
    assert_eq!(g.get(&b, mine).unwrap().owner, "a");
    assert_eq!(g.search(&b, &text("private", 10)).unwrap().len(), 1);
    let theirs = g.create(&b, data("note by b in the context"), Some(ctx)).unwrap();
    assert_eq!(g.context_engrams(&a, ctx, 10).unwrap(), vec![mine, theirs]);
    assert!(matches!(g.context_engrams(&c, ctx, 10), Err(GraphError::Denied(_))));
    assert!(matches!(g.create(&c, data("x"), Some(ctx)), Err(GraphError::Denied(_))));
    assert!(matches!(g.context_engrams(&a, 999, 10), Err(GraphError::NotFound(999))));
    // Connecting to something invisible is refused.
    let cs = g.create(&c, data("c's own"), None).unwrap();
    assert!(matches!(g.apply(&c, vec![edge(cs, mine, "cites")]), Err(GraphError::Denied(_))));
    let info = g.context(&Actor::Operator, ctx).unwrap();
    assert_eq!(
        (info.name.as_str(), info.members.clone(), info.engrams),
        ("shared", vec!["a".to_string(), "b".to_string()], 2)
    );
    let scoped = SearchQuery { text: Some("note".into()), context: Some(ctx), limit: 10, metadata: vec![] };
    assert_eq!(g.search(&b, &scoped).unwrap().len(), 2);
    assert!(matches!(g.search(&c, &scoped), Err(GraphError::Denied(_))));
}

#[test]
fn a_batch_applies_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let a = Actor::agent("a");
    let keep = g.create(&a, data("kept"), None).unwrap();
    let new = g.allocate_engram_id().unwrap();
    let ops = vec![
        Op::Create { id: new, data: data("half written"), context: None },
        edge(new, keep, "cites"),
        Op::Update { id: 424242, data: data("missing") },
    ];
    assert_eq!(g.apply(&a, ops), Err(GraphError::NotFound(424242)));
    assert_eq!(g.get(&a, new), Err(GraphError::NotFound(new)));
    assert!(g.search(&a, &text("half", 10)).unwrap().is_empty());
    assert_eq!(g.quota_use("a").unwrap().engrams, 1);
    assert!(g.check_integrity().unwrap().is_empty());

    // A large batch (its texts indexed on a second thread): a refusal
    // half-way leaves nothing; updates in the batch index the new text.
    let mut ops: Vec<Op> = (0..300)
        .map(|i| Op::Create {
            id: g.allocate_engram_id().unwrap(),
            data: data(&format!("bulk number{i}")),
            context: None,
        })
        .collect();
    ops.insert(150, Op::Update { id: 424242, data: data("missing") });
    assert_eq!(g.apply(&a, ops), Err(GraphError::NotFound(424242)));
    assert!(g.search(&a, &text("bulk", 10)).unwrap().is_empty());
    let ids: Vec<u64> = (0..300).map(|_| g.allocate_engram_id().unwrap()).collect();
    let mut ops: Vec<Op> =
        ids.iter().map(|&id| Op::Create { id, data: data("bulk original"), context: None }).collect();
    ops.push(Op::Update { id: ids[7], data: data("bulk rewritten") });
    ops.extend(ids[100..200].iter().map(|&id| Op::Update { id, data: data("bulk again") }));
    g.apply(&a, ops).unwrap();
    let hits = g.search(&a, &text("rewritten", 10)).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [ids[7]]);
    assert_eq!(g.search(&a, &text("original", 1000)).unwrap().len(), 199);
    assert_eq!(g.search(&a, &text("again", 1000)).unwrap().len(), 100);
    assert!(g.check_integrity().unwrap().is_empty());
}

#[test]
fn quotas_stop_an_agent_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = GraphConfig { quota: Quota { max_bytes: 100, max_engrams: 3 }, ..GraphConfig::default() };
    let g = MemoryGraph::open(&dir.path().join(FILE_NAME), config).unwrap();
    let a = Actor::agent("a");
    for i in 0..3 {
        g.create(&a, data(&format!("n{i}")), None).unwrap();
    }
    let e = g.create(&a, data("n3"), None).unwrap_err();
    assert!(matches!(&e, GraphError::QuotaExceeded(m) if m.contains("engrams of a: limit 3")), "{e}");
    let b = Actor::agent("b");
    let e = g.create(&b, data(&"x".repeat(200)), None).unwrap_err();
    assert!(matches!(&e, GraphError::QuotaExceeded(m) if m.contains("bytes of b: limit 100")), "{e}");
    // The operator has no quota.
    g.create(&Actor::Operator, data(&"y".repeat(500)), None).unwrap();
}

#[test]
fn the_schema_version_is_checked_and_junk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        g.create(&Actor::Operator, data("persisted"), None).unwrap();
    }
    {
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        assert_eq!(g.len().unwrap(), 1);
        let id = g.create(&Actor::Operator, data("second"), None).unwrap();
        assert_eq!(id, 2, "ids continue after a reopen");
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        tx.commit().unwrap();
    }
    let e = MemoryGraph::open(&path, GraphConfig::default()).unwrap_err();
    assert!(
        e.to_string().contains(&format!("schema version {} (a newer elex wrote it)", SCHEMA_VERSION + 1)),
        "{e}"
    );
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x42; 4096]).unwrap();
    assert!(matches!(MemoryGraph::open(&junk, GraphConfig::default()), Err(GraphError::Storage { .. })));
}

/// A log with one reader and one writer, in this process: what the cluster
/// does over JetStream, for the graph's side of the contract.
struct LocalLog {
    graph: std::sync::OnceLock<std::sync::Weak<MemoryGraph>>,
    seq: std::sync::Mutex<u64>,
}

impl LocalLog {
    fn next(&self, write: Option<&LoggedWrite>) -> Result<(u64, Vec<bool>)> {
        let mut seq = self.seq.lock().unwrap();
        *seq += 1;
        let graph = self.graph.get().unwrap().upgrade().unwrap();
        graph.apply_logged(LogPosition { log: 7, seq: *seq }, write).map(|changed| (*seq, changed))
    }
}

impl WriteLog for LocalLog {
    fn append(&self, write: LoggedWrite) -> Result<Vec<bool>> {
        self.next(Some(&write)).map(|(_, changed)| changed)
    }
    fn lease(&self) -> Result<std::ops::Range<u64>> {
        let (seq, _) = self.next(None)?;
        Ok(seq * LEASE..(seq + 1) * LEASE)
    }
}

#[test]
fn copies_fed_the_same_log_stay_equal_and_refuse_writes_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let open_at = |name: &str| MemoryGraph::open(&dir.path().join(name), GraphConfig::default()).unwrap();
    let (one, two) = (open_at("one.redb"), open_at("two.redb"));
    assert!(one.is_blank().unwrap());
    let (a, operator) = (Actor::agent("a"), Actor::Operator);
    let entries = [
        Some(LoggedWrite {
            actor: operator.clone(),
            ops: vec![Op::CreateContext { id: LEASE, name: "c".into() }],
            time_ms: 5,
        }),
        None,
        Some(LoggedWrite {
            actor: a.clone(),
            ops: vec![Op::Create { id: 2 * LEASE, data: data("MIMO sleep saves energy"), context: None }],
            time_ms: 9,
        }),
        // Refused on every copy alike: b cannot see a's engram.
        Some(LoggedWrite { actor: Actor::agent("b"), ops: vec![Op::Delete { id: 2 * LEASE }], time_ms: 11 }),
    ];
    for graph in [&one, &two] {
        for (i, entry) in entries.iter().enumerate() {
            let at = LogPosition { log: 7, seq: i as u64 + 1 };
            let outcome = graph.apply_logged(at, entry.as_ref());
            assert_eq!(outcome.is_err(), i == 3, "entry {i}: {outcome:?}");
        }
        assert_eq!(graph.log_position().unwrap(), LogPosition { log: 7, seq: 4 });
    }
    let (e1, e2) = (one.get(&a, 2 * LEASE).unwrap(), two.get(&a, 2 * LEASE).unwrap());
    assert_eq!(e1, e2);
    assert_eq!((e1.created_ms, e1.updated_ms), (9, 9), "the log's time, not the applying host's");
    assert_eq!(one.context(&operator, LEASE).unwrap(), two.context(&operator, LEASE).unwrap());
    // An entry is applied once, and only from the log it came from.
    let again = one.apply_logged(LogPosition { log: 7, seq: 4 }, entries[0].as_ref());
    assert!(matches!(again, Err(GraphError::Invalid(_))), "{again:?}");
    let other = one.apply_logged(LogPosition { log: 8, seq: 5 }, entries[0].as_ref());
    assert!(matches!(other, Err(GraphError::Invalid(_))), "{other:?}");
    // A copy written on its own would diverge: refused, also after a restart.
    let direct = two.create(&a, data("only here"), None);
    assert!(
        matches!(&direct, Err(GraphError::Denied(m)) if m.contains("write through a host of the cluster")),
        "{direct:?}"
    );
    drop(two);
    let two = std::sync::Arc::new(open_at("two.redb"));
    assert!(matches!(two.create(&a, data("only here"), None), Err(GraphError::Denied(_))));
    assert!(!two.is_blank().unwrap());

    // Following a log: writes go through it, ids come from leased blocks.
    let log = std::sync::Arc::new(LocalLog { graph: Default::default(), seq: std::sync::Mutex::new(4) });
    log.graph.set(std::sync::Arc::downgrade(&two)).unwrap();
    two.follow(log.clone()).unwrap();
    let id = two.create(&a, data("through the log"), None).unwrap();
    assert_eq!(id, 5 * LEASE, "the first id of the block leased at entry 5");
    assert_eq!(two.get(&a, id).unwrap().data.content, "through the log");
    assert_eq!(two.log_position().unwrap(), LogPosition { log: 7, seq: 6 });
    assert_eq!(two.create(&a, data("next"), None).unwrap(), 5 * LEASE + 1, "one lease serves many ids");
    assert!(two.follow(log).is_err(), "one log per graph");
    // The one id never handed out is refused (its successor would wrap).
    let last = LoggedWrite {
        actor: a.clone(),
        ops: vec![Op::Create { id: u64::MAX, data: data("x"), context: None }],
        time_ms: 1,
    };
    let refused = one.apply_logged(LogPosition { log: 7, seq: 5 }, Some(&last));
    assert!(matches!(refused, Err(GraphError::Invalid(_))), "{refused:?}");
    assert_eq!(one.log_position().unwrap().seq, 5, "refused alike everywhere: its position is kept");
}

/// Many transactions of different sizes (so that the index's segments are
/// made and merged), changes to engrams of older segments (updates,
/// deletes, edges from and to them), and ids committed out of order: after
/// every transaction the integrity check is clean, and text search and
/// neighbourhoods (edges both ways) agree with a plain model.
#[test]
fn segments_form_merge_and_take_changes_to_older_engrams() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let op = Actor::Operator;
    let words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "rho", "tau"];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut docs: BTreeMap<u64, String> = BTreeMap::new();
    let mut edges: BTreeSet<(u64, u64)> = BTreeSet::new();
    let text = |next: &mut dyn FnMut(u64) -> u64| {
        let n = 1 + next(6) as usize;
        (0..n).map(|_| words[next(words.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
    };
    let sizes = [1, 7, 60, 3, 200, 1, 1, 25];
    for round in 0..40 {
        let size = sizes[round % sizes.len()];
        // New engrams, each connected to one stored before this round.
        let before: Vec<u64> = docs.keys().copied().collect();
        let mut batches = vec![Vec::new()];
        if round % 5 == 4 {
            batches.push(Vec::new()); // two batches, committed in reverse order
        }
        for b in batches.iter_mut() {
            for _ in 0..size {
                let id = g.allocate_engram_id().unwrap();
                let content = text(&mut next);
                b.push(Op::Create { id, data: data(&content), context: None });
                docs.insert(id, content);
                if !before.is_empty() {
                    let target = before[next(before.len() as u64) as usize];
                    b.push(edge(id, target, "r"));
                    edges.insert((id, target));
                }
            }
        }
        // Out of order: the later ids first.
        for b in batches.into_iter().rev() {
            g.apply(&op, b).unwrap();
        }
        if round % 3 == 2 {
            let ids: Vec<u64> = docs.keys().copied().collect();
            let mut ops = Vec::new();
            let mut touched = BTreeSet::new();
            for _ in 0..5 {
                let id = ids[next(ids.len() as u64) as usize];
                if touched.insert(id) {
                    let content = text(&mut next);
                    ops.push(Op::Update { id, data: data(&content) });
                    docs.insert(id, content);
                }
            }
            for _ in 0..3 {
                let (s, t) = (ids[next(ids.len() as u64) as usize], ids[next(ids.len() as u64) as usize]);
                ops.push(edge(s, t, "r"));
                edges.insert((s, t));
            }
            if let Some(&(s, t)) = edges.iter().nth(next(edges.len() as u64) as usize) {
                ops.push(Op::Disconnect { source: s, target: t, relation: "r".into() });
                edges.remove(&(s, t));
            }
            for _ in 0..2 {
                let id = ids[next(ids.len() as u64) as usize];
                if touched.insert(id) {
                    ops.push(Op::Delete { id });
                    docs.remove(&id);
                    edges.retain(|&(s, t)| s != id && t != id);
                }
            }
            g.apply(&op, ops).unwrap();
        }
        assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new(), "round {round}");
    }
    for w in words {
        let want: BTreeSet<u64> =
            docs.iter().filter(|(_, c)| c.split(' ').any(|x| x == w)).map(|(id, _)| *id).collect();
        let got: BTreeSet<u64> = g.search(&op, &text_query(w)).unwrap().iter().map(|h| h.id).collect();
        assert_eq!(got, want, "{w}");
    }
    for &id in docs.keys().step_by(7) {
        let want: BTreeSet<u64> = edges
            .iter()
            .filter_map(|&(s, t)| {
                if s == id {
                    Some(t)
                } else if t == id {
                    Some(s)
                } else {
                    None
                }
            })
            .collect();
        let got: BTreeSet<u64> = g.neighbourhood(&op, id, 1, None, 1000).unwrap().into_iter().collect();
        assert_eq!(got, want, "neighbours of {id}");
    }
}

fn text_query(q: &str) -> SearchQuery {
    text(q, 1000)
}

/// A transaction whose new engrams have no searchable words but have
/// edges makes a segment of edges alone: searching and walking still work,
/// and so does the integrity check.
#[test]
fn a_segment_of_edges_alone_reads_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let op = Actor::Operator;
    let old = g.create(&op, data("carrier aggregation"), None).unwrap();
    let id = g.allocate_engram_id().unwrap();
    // Stopwords and punctuation only: no terms.
    g.apply(&op, vec![Op::Create { id, data: data("to do!!"), context: None }, edge(id, old, "about")])
        .unwrap();
    assert_eq!(g.search(&op, &text("carrier", 10)).unwrap().len(), 1);
    assert_eq!(g.neighbourhood(&op, old, 1, None, 10).unwrap(), vec![id]);
    assert_eq!(g.connections(&op, id).unwrap().len(), 1);
    assert_eq!(g.check_integrity().unwrap(), Vec::<String>::new());
}

/// The file's length and the bytes its pages in use take, read with redb
/// itself (the graph closed).
fn file_use(path: &std::path::Path) -> (u64, u64) {
    let db = redb::Database::open(path).unwrap();
    let tx = db.begin_write().unwrap();
    let stats = tx.stats().unwrap();
    tx.abort().unwrap();
    drop(db);
    (std::fs::metadata(path).unwrap().len(), stats.allocated_pages() * stats.page_size() as u64)
}

#[test]
fn the_space_merges_free_is_given_back_when_the_graph_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let g = open(&dir);
    let a = Actor::agent("a");
    // Many small transactions: their segments merge again and again, and
    // every merge frees the pages of the segments it replaced.
    let mut ids = Vec::new();
    for round in 0..60u64 {
        let mut ops = Vec::new();
        for i in 0..250u64 {
            let id = g.allocate_engram_id().unwrap();
            let words = format!("alpha{} beta{} gamma{} delta round{round}", i % 7, i % 31, (i * round) % 97);
            ops.push(Op::Create { id, data: data(&words), context: None });
            if let Some(&earlier) = ids.get((i * 7919 + round) as usize % ids.len().max(1)) {
                ops.push(edge(id, earlier, "supports"));
            }
            ids.push(id);
        }
        g.apply(&a, ops).unwrap();
    }
    let before = g.search(&a, &text("alpha3 beta5", 50)).unwrap();
    assert!(!before.is_empty());
    drop(g);
    let (file, in_use) = file_use(&path);
    assert!(
        file - in_use <= (in_use / 8).max(1 << 20),
        "{} of the file's {file} bytes are free after closing",
        file - in_use
    );
    // Nothing was lost on the way.
    let g = open(&dir);
    assert_eq!(g.len().unwrap(), ids.len() as u64);
    assert_eq!(g.search(&a, &text("alpha3 beta5", 50)).unwrap(), before);
    assert!(g.check_integrity().unwrap().is_empty());
    drop(g);
    // Space freed otherwise (here: a table of 4 MB written and dropped)
    // is left to the next close that merges: a graph that only read
    // closes without compacting.
    {
        let db = redb::Database::open(&path).unwrap();
        let junk: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("junk");
        let tx = db.begin_write().unwrap();
        for i in 0..1_000u64 {
            tx.open_table(junk).unwrap().insert(i, &[7u8; 4_000][..]).unwrap();
        }
        tx.commit().unwrap();
        // Pages written after it, so that the freed space is not at the
        // end of the file (which redb gives back at once).
        let tail: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("tail");
        let tx = db.begin_write().unwrap();
        for i in 0..64u64 {
            tx.open_table(tail).unwrap().insert(i, &[7u8; 4_000][..]).unwrap();
        }
        tx.commit().unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(junk).unwrap();
        tx.commit().unwrap();
    }
    let (sparse, in_use) = file_use(&path);
    assert!(sparse - in_use > (in_use / 8).max(1 << 20), "{sparse} {in_use}");
    let g = open(&dir);
    assert_eq!(g.search(&a, &text("alpha3 beta5", 50)).unwrap(), before);
    drop(g);
    assert_eq!(file_use(&path).0, sparse);
}

/// A relation's name is stored once and edges hold its number: relations
/// read back by name (after a reopen, and from older segments), a filter or
/// a disconnect by a name no edge ever had finds nothing, and a damaged
/// name-to-number entry is an error, never another relation's edges.
#[test]
fn relations_are_named_once_and_read_back_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let a = Actor::Operator;
    let ids: Vec<u64> = {
        let g = open(&dir);
        let ids: Vec<u64> = (0..4).map(|i| g.create(&a, data(&format!("node {i}")), None).unwrap()).collect();
        g.apply(&a, vec![edge(ids[0], ids[1], "supports"), edge(ids[0], ids[2], "derived-from")]).unwrap();
        // A later transaction: its own segment, the same numbers.
        let more = g.create(&a, data("node 4"), None).unwrap();
        g.apply(&a, vec![edge(more, ids[0], "supports"), edge(ids[3], ids[0], "contradicts")]).unwrap();
        ids.into_iter().chain([more]).collect()
    };
    let g = open(&dir);
    let rels: Vec<String> = g.connections(&a, ids[0]).unwrap().into_iter().map(|c| c.relation).collect();
    assert_eq!(rels, ["supports", "derived-from"]);
    assert_eq!(g.connections(&a, ids[4]).unwrap()[0].relation, "supports");
    assert_eq!(g.connections(&a, ids[3]).unwrap()[0].relation, "contradicts");
    let mut supports = g.neighbourhood(&a, ids[0], 1, Some("supports"), 10).unwrap();
    supports.sort();
    assert_eq!(supports, [ids[1], ids[4]]);
    assert!(g.neighbourhood(&a, ids[0], 1, Some("no-such-relation"), 10).unwrap().is_empty());
    let gone = g
        .apply(
            &a,
            vec![Op::Disconnect { source: ids[0], target: ids[1], relation: "no-such-relation".into() }],
        )
        .unwrap();
    assert_eq!(gone, [false]);
    assert!(g.check_integrity().unwrap().is_empty());
    drop(g);
    // "derived-from" (number 1, the second handed out) filed under
    // "supports": a lookup by that name is refused as corrupt.
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let numbers: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("relation_numbers");
        tx.open_table(numbers).unwrap().insert("supports", 1).unwrap();
        tx.commit().unwrap();
    }
    let g = open(&dir);
    let e = g.neighbourhood(&a, ids[0], 1, Some("supports"), 10).unwrap_err();
    assert!(matches!(e, GraphError::Corrupt { .. }), "{e}");
    assert!(g.apply(&a, vec![edge(ids[1], ids[2], "supports")]).is_err());
    assert_eq!(g.check_integrity().unwrap(), ["the relation numbers disagree with the relation names"]);
    drop(g);
    // A forged relation number of 2^64-1: a new relation is refused, not
    // numbered 0 over "supports".
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let names: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("relations");
        tx.open_table(names).unwrap().insert(u64::MAX, &b"junk"[..]).unwrap();
        tx.commit().unwrap();
    }
    let g = open(&dir);
    let e = g.apply(&a, vec![edge(ids[1], ids[2], "brand-new")]).unwrap_err();
    assert!(matches!(e, GraphError::Corrupt { .. }), "{e}");
    assert_eq!(g.connections(&a, ids[0]).unwrap()[1].relation, "derived-from");
    drop(g);
    // Owners are numbered the same way: after a forged owner number of
    // 2^64-2, a new owner is refused (the owner map cannot hold 2^64-1).
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        let names: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("owner_names");
        tx.open_table(names).unwrap().insert(u64::MAX - 1, &b"junk"[..]).unwrap();
        tx.commit().unwrap();
    }
    let g = open(&dir);
    let e = g.create(&Actor::agent("newcomer"), data("x"), None).unwrap_err();
    assert!(
        matches!(&e, GraphError::Corrupt { detail, .. } if detail.contains("no owner number is left")),
        "{e}"
    );
    assert!(g.create(&a, data("a's own"), None).is_ok(), "an owner with a number writes on");
}

/// Reads share a snapshot until the next commit: a search on any thread
/// that starts after a write returned finds what it wrote.
#[test]
fn a_read_after_a_write_returned_sees_it_on_every_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let g = open(&dir);
    let written = AtomicUsize::new(0);
    const WRITES: usize = 150;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let before = written.load(Ordering::Acquire);
                    let seen = g.search(&Actor::agent("a"), &text("tick", 1_000)).unwrap().len();
                    assert!(seen >= before, "{seen} engrams found after {before} writes returned");
                    if before == WRITES {
                        break;
                    }
                }
            });
        }
        for i in 0..WRITES {
            g.create(&Actor::agent("a"), data(&format!("tick {i}")), None).unwrap();
            written.store(i + 1, Ordering::Release);
        }
    });
    assert_eq!(g.search(&Actor::agent("a"), &text("tick", 1_000)).unwrap().len(), WRITES);
}
