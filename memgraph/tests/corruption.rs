//! Damage to the database file: a byte flipped inside a stored engram, edge
//! or context (the text stays valid, so only the checksum can tell) is a
//! `Corrupt` error when read — never the damaged data — and the integrity
//! check names the record; everything else still reads.

use elex_memgraph::*;

fn data(content: &str) -> EngramData {
    EngramData {
        content: content.into(),
        source: "test".into(),
        confidence: 0.8,
        metadata: vec![("kind".into(), "fact".into())],
    }
}

/// Changes one letter of every occurrence of `marker` in the file (with the
/// graph closed): `Q` becomes `R`, still valid UTF-8. Returns how many it
/// changed.
fn flip_in_file(path: &std::path::Path, marker: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let mut n = 0;
    let mut i = 0;
    while i + marker.len() <= bytes.len() {
        if &bytes[i..i + marker.len()] == marker {
            bytes[i] ^= 0x03; // 'Q' (0x51) -> 'R' (0x52)
            n += 1;
            i += marker.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(path, bytes).unwrap();
    n
}

fn corrupt(r: Result<impl std::fmt::Debug, GraphError>) -> (&'static str, String, String) {
    match r {
        Err(GraphError::Corrupt { table, key, detail, .. }) => (table, key, detail),
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_in_a_stored_engram_is_an_error_and_the_integrity_check_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let op = Actor::Operator;
    let (hit, other) = {
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        // Upper case: the index holds the lower-cased term, so the marker's
        // bytes occur only inside the engram's value.
        let hit = g.create(&op, data("sleep mode QXZMARKERQXZ saves energy"), None).unwrap();
        let other = g.create(&op, data("carrier aggregation raises throughput"), None).unwrap();
        assert!(g.check_integrity().unwrap().is_empty());
        (hit, other)
    };
    assert_eq!(flip_in_file(&path, b"QXZMARKERQXZ"), 1, "the marker is stored once");

    let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
    let (table, key, detail) = corrupt(g.get(&op, hit));
    assert_eq!((table, key.as_str()), ("engrams", hit.to_string().as_str()));
    assert!(detail.contains("checksum mismatch"), "{detail}");
    let e = g.get(&op, hit).unwrap_err().to_string();
    assert!(e.contains(FILE_NAME) && e.contains(&format!("engrams record {hit} is corrupt")), "{e}");
    // A search finds it through the index and the owner map, which are
    // whole (a hit is an id and a score, nothing of the record); reading
    // the record is the error.
    let q = SearchQuery { text: Some("sleep".into()), limit: 10, ..SearchQuery::default() };
    let hits = g.search(&op, &q).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [hit]);
    corrupt(g.get(&op, hits[0].id));
    // Writes that read it are refused, and change nothing.
    corrupt(g.apply(&op, vec![Op::Update { id: hit, data: data("replaced") }]));
    corrupt(g.apply(&op, vec![Op::Delete { id: hit }]));
    // The rest of the graph reads on.
    assert_eq!(g.get(&op, other).unwrap().data.content, "carrier aggregation raises throughput");
    let q = SearchQuery { text: Some("throughput".into()), limit: 10, ..SearchQuery::default() };
    assert_eq!(g.search(&op, &q).unwrap()[0].id, other);

    let problems = g.check_integrity().unwrap();
    assert_eq!(problems.len(), 1, "the corrupt record and no knock-on reports: {problems:?}");
    assert!(
        problems[0].starts_with(&format!("engrams record {hit} is corrupt: checksum mismatch")),
        "{problems:?}"
    );
}

#[test]
fn flipped_bytes_in_an_edge_or_a_context_are_errors_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let a = Actor::agent("a");
    let (x, y, ctx) = {
        let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
        let ctx = g.create_context(&a, "QXZCONTEXTQXZ").unwrap();
        let x = g.create(&a, data("first engram"), Some(ctx)).unwrap();
        let y = g.create(&a, data("second engram"), Some(ctx)).unwrap();
        g.apply(
            &a,
            vec![Op::Connect(Connection {
                source: x,
                target: y,
                relation: "supports".into(),
                weight: 0.5,
                metadata: vec![("why".into(), "QXZEDGEQXZ".into())],
            })],
        )
        .unwrap();
        (x, y, ctx)
    };
    assert_eq!(flip_in_file(&path, b"QXZCONTEXTQXZ"), 1);
    assert_eq!(flip_in_file(&path, b"QXZEDGEQXZ"), 1);

    let g = MemoryGraph::open(&path, GraphConfig::default()).unwrap();
    let (table, key, _) = corrupt(g.context(&a, ctx));
    assert_eq!((table, key), ("contexts", ctx.to_string()));
    let (table, key, _) = corrupt(g.connections(&a, x));
    // (The key names the relation by its number: "supports" is the first.)
    assert_eq!((table, key), ("edges_out", format!("({x}, {y}, relation #0)")));
    // A walk along the damaged edges is refused the same way (the edges of
    // a segment share checksummed chunks); engrams and context membership
    // read on.
    let (table, _, _) = corrupt(g.neighbourhood(&a, x, 1, None, 10));
    assert_eq!(table, "edges_out");
    assert_eq!(g.get(&a, y).unwrap().data.content, "second engram");
    assert_eq!(g.context_engrams(&a, ctx, 10).unwrap(), vec![x, y]);

    let mut problems = g.check_integrity().unwrap();
    problems.sort();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("contexts record {ctx} is corrupt: checksum mismatch")),
        "{problems:?}"
    );
    assert!(
        problems[1]
            .starts_with(&format!("edges_out record ({x}, {y}, relation #0) is corrupt: checksum mismatch")),
        "{problems:?}"
    );
}
