//! The `qlearning` component (composed with `vector`, which its batch update
//! uses) through the real component boundary.

use elex_tests::guests::QLearning as Q;
use elex_tests::guests::qlearning_bindings::exports::elex::qlearning::engine::{
    Config, Exploration, QError, Transition,
};
use wasmtime::Engine;

fn config(actions: &[&str]) -> Config {
    Config {
        actions: actions.iter().map(|s| s.to_string()).collect(),
        alpha: 0.5,
        gamma: 0.9,
        epsilon: 1.0,
        epsilon_decay: 1.0,
        epsilon_floor: 0.0,
        initial_q: 0.0,
        exploration: Exploration::EpsilonGreedy,
        seed: 42,
    }
}

/// A 4x4 grid world: goal (3,3) +1, pit (1,1) -1 (both terminal), every
/// other step -0.04; moves into a wall stay put.
const N: i32 = 4;
const MOVES: [(i32, i32); 4] = [(-1, 0), (1, 0), (0, -1), (0, 1)];
const GAMMA: f32 = 0.9;

fn terminal(s: (i32, i32)) -> bool {
    s == (3, 3) || s == (1, 1)
}

fn step(s: (i32, i32), a: usize) -> ((i32, i32), f32) {
    let (dr, dc) = MOVES[a];
    let next = ((s.0 + dr).clamp(0, N - 1), (s.1 + dc).clamp(0, N - 1));
    let reward = if next == (3, 3) {
        1.0
    } else if next == (1, 1) {
        -1.0
    } else {
        -0.04
    };
    (next, reward)
}

fn name(s: (i32, i32)) -> String {
    format!("{},{}", s.0, s.1)
}

/// Q* by value iteration.
fn optimal_q() -> std::collections::HashMap<((i32, i32), usize), f32> {
    let mut q = std::collections::HashMap::new();
    for _ in 0..500 {
        let mut next_q = std::collections::HashMap::new();
        for r in 0..N {
            for c in 0..N {
                if terminal((r, c)) {
                    continue;
                }
                for a in 0..4 {
                    let (s2, rew) = step((r, c), a);
                    let best = if terminal(s2) {
                        0.0
                    } else {
                        (0..4).map(|b| *q.get(&(s2, b)).unwrap_or(&0.0)).fold(f32::MIN, f32::max)
                    };
                    next_q.insert(((r, c), a), rew + GAMMA * best);
                }
            }
        }
        q = next_q;
    }
    q
}

#[test]
fn learns_the_optimal_policy_of_a_grid_world() {
    let mut e = Q::new(&Engine::default());
    let t = e.create(&config(&["up", "down", "left", "right"])).unwrap();
    let mut rng = 12345u64;
    let mut rand = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for episode in 0..3000 {
        let mut s = loop {
            let s = ((rand() % 4) as i32, (rand() % 4) as i32);
            if !terminal(s) {
                break s;
            }
        };
        let mut batch = Vec::new();
        for _ in 0..40 {
            let a = e.select(t, &name(s)) as usize; // epsilon 1: uniform exploration
            let (s2, r) = step(s, a);
            let tr = Transition {
                state: name(s),
                action: a as u32,
                reward: r,
                next_state: (!terminal(s2)).then(|| name(s2)),
            };
            // Half the episodes go through the batch path.
            if episode % 2 == 0 {
                e.update(t, &tr).unwrap();
            } else {
                batch.push(tr);
            }
            if terminal(s2) {
                break;
            }
            s = s2;
        }
        if !batch.is_empty() {
            e.update_batch(t, &batch).unwrap();
        }
    }
    let q_star = optimal_q();
    let mut worst: f32 = 0.0;
    for r in 0..N {
        for c in 0..N {
            if terminal((r, c)) {
                continue;
            }
            let learned = e.values(t, &name((r, c)));
            let star: Vec<f32> = (0..4).map(|a| q_star[&((r, c), a)]).collect();
            for a in 0..4 {
                worst = worst.max((learned[a] - star[a]).abs());
            }
            let greedy = |v: &[f32]| (0..4).max_by(|&x, &y| v[x].total_cmp(&v[y]).then(y.cmp(&x))).unwrap();
            // Optimal actions may tie; the learned greedy action must be one
            // of them.
            let best = star[greedy(&star)];
            assert!(
                (star[greedy(&learned)] - best).abs() < 1e-4,
                "state {r},{c}: learned {learned:?} optimal {star:?}"
            );
        }
    }
    assert!(worst < 0.05, "max |Q - Q*| = {worst}");
}

#[test]
fn batch_updates_equal_sequential_updates() {
    let mut e = Q::new(&Engine::default());
    let a = e.create(&config(&["x", "y"])).unwrap();
    let b = e.create(&config(&["x", "y"])).unwrap();
    // Repeated pairs and chains, where a naive batch would differ.
    let trs: Vec<Transition> = (0..200)
        .map(|i| Transition {
            state: format!("s{}", i % 7),
            action: (i % 2) as u32,
            reward: ((i * 37) % 11) as f32 / 10.0 - 0.5,
            next_state: (i % 5 != 0).then(|| format!("s{}", (i + 1) % 7)),
        })
        .collect();
    let seq: Vec<f32> = trs.iter().map(|tr| e.update(a, tr).unwrap()).collect();
    let bat = e.update_batch(b, &trs).unwrap();
    assert_eq!(seq, bat);
    assert_eq!(e.snapshot(a), e.snapshot(b));
}

#[test]
fn snapshots_round_trip_and_refuse_corruption() {
    let mut e = Q::new(&Engine::default());
    let t = e.create(&config(&["a", "b", "c"])).unwrap();
    for i in 0..50 {
        e.select(t, &format!("s{}", i % 10));
        e.update(
            t,
            &Transition { state: format!("s{}", i % 10), action: i % 3, reward: 0.5, next_state: None },
        )
        .unwrap();
    }
    let bytes = e.snapshot(t);
    let back = e.restore(&bytes).unwrap();
    assert_eq!(e.snapshot(back), bytes);
    assert_eq!(e.values(back, "s3"), e.values(t, "s3"));
    // Same seed, same state: the restored table explores identically.
    let picks_a: Vec<u32> = (0..20).map(|_| e.select(t, "s1")).collect();
    let picks_b: Vec<u32> = (0..20).map(|_| e.select(back, "s1")).collect();
    assert_eq!(picks_a, picks_b);

    assert!(matches!(e.restore(b"garbage"), Err(QError::CorruptSnapshot(_))));
    let mut v = bytes.clone();
    v[4] = 7;
    assert_eq!(e.restore(&v), Err(QError::UnsupportedVersion(7)));
    for cut in [6, bytes.len() / 2, bytes.len() - 1] {
        assert!(e.restore(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.clone();
    for i in 6..flipped.len() {
        flipped[i] ^= 0x55;
        let _ = e.restore(&flipped); // never a trap
        flipped[i] ^= 0x55;
    }
}

#[test]
fn merge_blends_by_weight_and_checks_actions() {
    let mut e = Q::new(&Engine::default());
    let a = e.create(&config(&["p", "q"])).unwrap();
    let b = e.create(&config(&["p", "q"])).unwrap();
    e.update(a, &Transition { state: "s".into(), action: 0, reward: 1.0, next_state: None }).unwrap(); // 0.5
    e.update(b, &Transition { state: "s".into(), action: 0, reward: -1.0, next_state: None }).unwrap(); // -0.5
    e.update(b, &Transition { state: "only-b".into(), action: 1, reward: 1.0, next_state: None }).unwrap();
    let other = e.snapshot(b);
    e.merge(a, &other, 0.25).unwrap();
    let v = e.values(a, "s");
    assert!((v[0] - (0.75 * 0.5 + 0.25 * -0.5)).abs() < 1e-6, "{v:?}");
    assert_eq!(e.values(a, "only-b"), vec![0.0, 0.5]);
    let c = e.create(&config(&["p", "other"])).unwrap();
    let foreign = e.snapshot(c);
    assert!(matches!(e.merge(a, &foreign, 0.5), Err(QError::Incompatible(_))));
    assert!(matches!(e.merge(a, &other, 1.5), Err(QError::InvalidConfig(_))));
}

#[test]
fn refuses_bad_configs_and_transitions() {
    let mut e = Q::new(&Engine::default());
    for bad in [
        Config { actions: vec![], ..config(&[]) },
        Config { alpha: 0.0, ..config(&["a"]) },
        Config { gamma: 1.5, ..config(&["a"]) },
        Config { epsilon_floor: 2.0, ..config(&["a"]) },
        Config { initial_q: f32::NAN, ..config(&["a"]) },
        Config { exploration: Exploration::Ucb(-1.0), ..config(&["a"]) },
        config(&["a", "a"]),
    ] {
        assert!(matches!(e.create(&bad), Err(QError::InvalidConfig(_))), "{bad:?}");
    }
    let t = e.create(&config(&["a", "b"])).unwrap();
    let tr = |action, reward| Transition { state: "s".into(), action, reward, next_state: None };
    assert_eq!(e.update(t, &tr(2, 0.0)), Err(QError::UnknownAction(2)));
    assert!(matches!(e.update(t, &tr(0, f32::INFINITY)), Err(QError::NonFinite(_))));
    // A batch with one bad transition applies nothing.
    assert_eq!(e.update_batch(t, &[tr(0, 1.0), tr(5, 1.0)]), Err(QError::UnknownAction(5)));
    assert_eq!(e.values(t, "s"), vec![0.0, 0.0]);
}

#[test]
fn ucb_tries_every_action_first() {
    let mut e = Q::new(&Engine::default());
    let t = e.create(&Config { exploration: Exploration::Ucb(1.0), ..config(&["a", "b", "c"]) }).unwrap();
    let first: Vec<u32> = (0..3).map(|_| e.select(t, "s")).collect();
    assert_eq!(first, [0, 1, 2]);
}

#[test]
fn a_thousand_entries_stay_under_50_kb() {
    let mut e = Q::new(&Engine::default());
    let t = e.create(&config(&["direct", "context", "consult", "clarify", "escalate"])).unwrap();
    for i in 0..200 {
        e.update(
            t,
            &Transition { state: format!("kind-{i}/strong"), action: 0, reward: 1.0, next_state: None },
        )
        .unwrap();
    }
    let s = e.stats(t);
    assert_eq!(s.entries, 1000);
    assert_eq!(s.states, 200);
    eprintln!("q-table with {} entries: {} bytes", s.entries, s.memory_bytes);
    assert!(s.memory_bytes < 50_000, "{} bytes", s.memory_bytes);
}
