//! The `hnsw` component through the real component boundary: recall on
//! siftsmall, removal, snapshots and every refusal.

use elex_tests::guests::Hnsw;
use elex_tests::guests::hnsw_bindings::exports::elex::hnsw::store::{
    Config, DimensionMismatch, Distance, HnswError, Storage,
};
use wasmtime::Engine;

fn config(dimension: u32, distance: Distance) -> Config {
    Config {
        dimension,
        distance,
        storage: Storage::Full,
        m: 16,
        ef_construction: 200,
        ef_search: 64,
        seed: 7,
    }
}

#[test]
fn siftsmall_recall_at_10_through_the_component() {
    let sift = elex_tests::siftsmall().expect("siftsmall data");
    let mut h = Hnsw::new(&Engine::default());
    let ix = h.create(&config(128, Distance::SquaredL2)).unwrap();
    let ids: Vec<u64> = (0..(sift.base.len() / sift.dim) as u64).collect();
    for (chunk_ids, chunk) in ids.chunks(1000).zip(sift.base.chunks(1000 * sift.dim)) {
        h.insert_batch(ix, chunk_ids, chunk).unwrap();
    }
    assert_eq!(h.len(ix), 10_000);
    let mut recalls = Vec::new();
    for ef in [16u32, 64] {
        let found: Vec<Vec<u64>> = sift
            .queries
            .chunks(sift.dim)
            .map(|q| h.search(ix, q, 10, ef).unwrap().into_iter().map(|(id, _)| id).collect())
            .collect();
        recalls.push((ef, elex_tests::recall_at(10, &found, &sift.truth)));
    }
    eprintln!("siftsmall recall@10 by ef: {recalls:?}; index memory {} bytes", h.memory(ix));
    // The walk on 8-bit codes, re-ranked on the vectors, loses nothing
    // measurable against walking on the vectors (0.997 at ef=64).
    let at64 = recalls.iter().find(|(ef, _)| *ef == 64).unwrap().1;
    assert!(at64 >= 0.99, "recall@10 at ef=64 is {at64}");
    // Results are sorted, closest first, with true squared-L2 distances.
    for q in sift.queries.chunks(sift.dim).take(20) {
        let hits = h.search(ix, q, 10, 64).unwrap();
        assert!(hits.windows(2).all(|w| w[0].1 <= w[1].1));
        for (id, distance) in hits {
            let row = id as usize * sift.dim;
            let exact: f32 =
                q.iter().zip(&sift.base[row..row + sift.dim]).map(|(a, b)| (a - b) * (a - b)).sum();
            assert!((distance - exact).abs() <= 1e-4 * exact.max(1.0), "{id}: {distance} vs {exact}");
        }
    }
}

/// Vectors of 200 elements, most of their spread in the last 72: the
/// guest's grid kernel takes 128 elements per step, then 16, then one at a
/// time, and a walk that got any of those parts wrong would miss most true
/// neighbours.
#[test]
fn every_part_of_a_long_vector_counts_in_the_walk() {
    let (n, d) = (2000usize, 200usize);
    let mut x = 0x9e37_79b9u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    let scale = |j: usize| {
        if j < 128 {
            1.0
        } else if j < 192 {
            2.0
        } else {
            4.0
        }
    };
    let data: Vec<f32> = (0..n * d).map(|i| next() * scale(i % d)).collect();
    let mut h = Hnsw::new(&Engine::default());
    let ix = h.create(&config(d as u32, Distance::SquaredL2)).unwrap();
    let ids: Vec<u64> = (0..n as u64).collect();
    h.insert_batch(ix, &ids, &data).unwrap();
    // The walk's codes are there: a byte per element beside the f32s.
    assert!(h.memory(ix) >= (n * d * 5) as u64, "{} bytes", h.memory(ix));
    let l2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
    let mut hits = 0;
    for _ in 0..30 {
        let q: Vec<f32> = (0..d).map(|j| next() * scale(j)).collect();
        let mut truth: Vec<(f32, u64)> =
            (0..n).map(|i| (l2(&q, &data[i * d..i * d + d]), i as u64)).collect();
        truth.sort_by(|a, b| a.0.total_cmp(&b.0));
        let found = h.search(ix, &q, 10, 64).unwrap();
        hits += found.iter().filter(|(id, _)| truth[..10].iter().any(|t| t.1 == *id)).count();
    }
    assert!(hits >= 285, "recall@10 {} of 300", hits);
}

/// Points on a small grid: the exact neighbours are known.
fn grid(n: usize) -> Vec<f32> {
    (0..n * n).flat_map(|i| [(i % n) as f32, (i / n) as f32]).collect()
}

#[test]
fn removed_ids_are_never_returned_and_snapshots_round_trip() {
    let mut h = Hnsw::new(&Engine::default());
    let ix = h.create(&Config { m: 8, ef_construction: 64, ..config(2, Distance::SquaredL2) }).unwrap();
    let points = grid(20);
    let ids: Vec<u64> = (0..400).collect();
    h.insert_batch(ix, &ids, &points).unwrap();
    // The nearest neighbour of each point is itself.
    for id in [0u64, 57, 399] {
        let p = &points[id as usize * 2..id as usize * 2 + 2];
        assert_eq!(h.search(ix, p, 1, 32).unwrap()[0], (id, 0.0));
    }
    assert!(h.remove(ix, 57));
    assert!(!h.remove(ix, 57), "second removal reports not live");
    assert_eq!(h.len(ix), 399);
    let near = h.search(ix, &[17.0, 2.0], 5, 32).unwrap();
    assert!(near.iter().all(|(id, _)| *id != 57), "{near:?}");
    assert_eq!(near.len(), 5);

    let bytes = h.snapshot(ix);
    let back = h.restore(&bytes).unwrap();
    assert_eq!(h.len(back), 399);
    assert_eq!(h.search(back, &[17.0, 2.0], 5, 32).unwrap(), near);
    assert_eq!(h.snapshot(back), bytes);
    // An empty index round-trips too.
    let empty = h.create(&config(2, Distance::SquaredL2)).unwrap();
    let none = h.snapshot(empty);
    let back_empty = h.restore(&none).unwrap();
    assert_eq!((h.len(back_empty), h.snapshot(back_empty)), (0, none));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(h.restore(&trailing), Err(HnswError::CorruptSnapshot(_))));

    // A version-1 snapshot (the graph without its walk grid) still
    // restores, with a grid fitted to its vectors. Exactly one cut of the
    // grid off a version-2 snapshot is a valid version-1 one.
    let mut v1 = bytes.clone();
    v1[4..6].copy_from_slice(&1u16.to_le_bytes());
    let restored: Vec<_> = (v1.len() - 40..v1.len()).filter_map(|cut| h.restore(&v1[..cut]).ok()).collect();
    assert_eq!(restored.len(), 1);
    let old = restored[0];
    assert_eq!(h.len(old), 399);
    for id in [0u64, 58, 399] {
        let p = &points[id as usize * 2..id as usize * 2 + 2];
        assert_eq!(h.search(old, p, 1, 32).unwrap()[0], (id, 0.0));
    }
    assert_eq!(h.snapshot(old)[4..6], 2u16.to_le_bytes());
}

#[test]
fn cosine_distance_is_one_minus_similarity() {
    let mut h = Hnsw::new(&Engine::default());
    let ix = h.create(&config(3, Distance::Cosine)).unwrap();
    h.insert(ix, 1, &[1.0, 0.0, 0.0]).unwrap();
    h.insert(ix, 2, &[0.0, 5.0, 0.0]).unwrap();
    h.insert(ix, 3, &[1.0, 1.0, 0.0]).unwrap();
    let hits = h.search(ix, &[2.0, 0.0, 0.0], 3, 0).unwrap();
    assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 3, 2]);
    assert!(hits[0].1.abs() < 1e-6);
    assert!((hits[1].1 - (1.0 - std::f32::consts::FRAC_1_SQRT_2)).abs() < 1e-5);
    assert!((hits[2].1 - 1.0).abs() < 1e-6);
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let mut h = Hnsw::new(&Engine::default());
    assert!(matches!(h.create(&config(0, Distance::Cosine)), Err(HnswError::InvalidConfig(_))));
    assert!(matches!(
        h.create(&Config { m: 1, ..config(4, Distance::Cosine) }),
        Err(HnswError::InvalidConfig(_))
    ));
    let ix = h.create(&config(4, Distance::SquaredL2)).unwrap();
    assert_eq!(
        h.insert(ix, 1, &[1.0, 2.0]),
        Err(HnswError::DimensionMismatch(DimensionMismatch { expected: 4, found: 2 }))
    );
    assert_eq!(h.insert(ix, 1, &[1.0, f32::NAN, 0.0, 0.0]), Err(HnswError::NonFinite(1)));
    h.insert(ix, 1, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(h.insert(ix, 1, &[1.0, 2.0, 3.0, 4.0]), Err(HnswError::DuplicateId(1)));
    // A batch with one bad vector inserts nothing.
    assert_eq!(
        h.insert_batch(ix, &[2, 3], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, f32::INFINITY, 1.0]),
        Err(HnswError::NonFinite(3))
    );
    assert_eq!(h.len(ix), 1);
    assert!(matches!(h.search(ix, &[1.0], 1, 0), Err(HnswError::DimensionMismatch(_))));
    // Corrupt snapshots are errors, never traps.
    let good = h.snapshot(ix);
    assert!(matches!(h.restore(b"nope"), Err(HnswError::CorruptSnapshot(_))));
    let mut wrong_version = good.clone();
    wrong_version[4] = 9;
    assert_eq!(h.restore(&wrong_version), Err(HnswError::UnsupportedVersion(9)));
    for cut in [7, good.len() / 2, good.len() - 1] {
        assert!(matches!(h.restore(&good[..cut]), Err(HnswError::CorruptSnapshot(_))), "cut at {cut}");
    }
    let mut flipped = good.clone();
    for i in 6..flipped.len() {
        flipped[i] ^= 0xff;
        let _ = h.restore(&flipped); // must not trap (expect("no trap") inside)
        flipped[i] ^= 0xff;
    }
}

#[test]
fn int8_storage_keeps_recall_in_under_6_mb() {
    let sift = elex_tests::siftsmall().expect("siftsmall data");
    let mut h = Hnsw::new(&Engine::default());
    let ix = h.create(&Config { storage: Storage::Int8, ..config(128, Distance::SquaredL2) }).unwrap();
    let ids: Vec<u64> = (0..(sift.base.len() / sift.dim) as u64).collect();
    h.insert_batch(ix, &ids, &sift.base).unwrap();
    let found: Vec<Vec<u64>> = sift
        .queries
        .chunks(sift.dim)
        .map(|q| h.search(ix, q, 10, 64).unwrap().into_iter().map(|(id, _)| id).collect())
        .collect();
    let recall = elex_tests::recall_at(10, &found, &sift.truth);
    let memory = h.memory(ix);
    eprintln!("int8 siftsmall: recall@10 {recall} at ef=64, index memory {memory} bytes");
    assert!(recall >= 0.95, "recall@10 {recall}");
    assert!(memory <= 6_000_000, "{memory} bytes");
    // Snapshots keep the storage kind.
    let bytes = h.snapshot(ix);
    let back = h.restore(&bytes).unwrap();
    assert_eq!(h.search(back, &sift.queries[..sift.dim], 10, 64).unwrap().len(), 10);
}
