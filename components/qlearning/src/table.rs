//! The Q-table: interned states, a dense row of action values per state,
//! visit counts, exploration state and a seeded random generator.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use hashbrown::HashMap;

use crate::elex::vector::kernels;
use crate::exports::elex::qlearning::engine::{
    Config, Exploration, GuestQTable, QError, QTable as QTableHandle, Stats, Transition,
};
use crate::snapshot;

/// Exploration without the WIT wrapper.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Explore {
    EpsilonGreedy,
    Ucb(f32),
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub actions: Vec<String>,
    pub alpha: f32,
    pub gamma: f32,
    pub epsilon: f32,
    pub epsilon_decay: f32,
    pub epsilon_floor: f32,
    pub initial_q: f32,
    pub explore: Explore,
    pub seed: u64,
}

impl Settings {
    pub fn from_config(c: Config) -> Result<Settings, QError> {
        let bad = |s: &str| Err(QError::InvalidConfig(String::from(s)));
        if c.actions.is_empty() {
            return bad("actions: at least one action is needed");
        }
        for (i, a) in c.actions.iter().enumerate() {
            if c.actions[..i].contains(a) {
                return Err(QError::InvalidConfig(format!("actions: {a:?} is listed twice")));
            }
        }
        if !(c.alpha > 0.0 && c.alpha <= 1.0) {
            return bad("alpha must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&c.gamma) {
            return bad("gamma must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&c.epsilon) {
            return bad("epsilon must be in [0, 1]");
        }
        if !(c.epsilon_decay > 0.0 && c.epsilon_decay <= 1.0) {
            return bad("epsilon-decay must be in (0, 1]");
        }
        if !(0.0..=c.epsilon).contains(&c.epsilon_floor) {
            return bad("epsilon-floor must be in [0, epsilon]");
        }
        if !c.initial_q.is_finite() {
            return bad("initial-q must be finite");
        }
        let explore = match c.exploration {
            Exploration::EpsilonGreedy => Explore::EpsilonGreedy,
            Exploration::Ucb(k) if k.is_finite() && k >= 0.0 => Explore::Ucb(k),
            Exploration::Ucb(_) => return bad("ucb constant must be finite and >= 0"),
        };
        Ok(Settings {
            actions: c.actions,
            alpha: c.alpha,
            gamma: c.gamma,
            epsilon: c.epsilon,
            epsilon_decay: c.epsilon_decay,
            epsilon_floor: c.epsilon_floor,
            initial_q: c.initial_q,
            explore,
            seed: c.seed,
        })
    }
}

/// The table's data. Row `s` of `q` and `visits` holds state `s`'s actions.
/// Serialised as the snapshot body (see `snapshot.rs`); `index` is rebuilt
/// from `names` on restore.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Inner {
    pub settings: Settings,
    /// State name → row.
    #[serde(skip)]
    pub index: HashMap<String, u32>,
    /// Row → state name (for snapshots and stats).
    pub names: Vec<String>,
    pub q: Vec<f32>,
    pub visits: Vec<u32>,
    pub state_visits: Vec<u32>,
    pub updates: u64,
    pub selections: u64,
    pub epsilon: f32,
    pub rng: u64,
}

impl Inner {
    pub fn new(settings: Settings) -> Inner {
        let epsilon = settings.epsilon;
        // SplitMix64 state; any seed (including 0) is fine.
        let rng = settings.seed;
        Inner {
            settings,
            index: HashMap::new(),
            names: Vec::new(),
            q: Vec::new(),
            visits: Vec::new(),
            state_visits: Vec::new(),
            updates: 0,
            selections: 0,
            epsilon,
            rng,
        }
    }

    fn actions(&self) -> usize {
        self.settings.actions.len()
    }

    /// The row of `state`, created with initial values if new.
    pub fn intern(&mut self, state: &str) -> usize {
        if let Some(&row) = self.index.get(state) {
            return row as usize;
        }
        let row = self.names.len();
        self.index.insert(String::from(state), row as u32);
        self.names.push(String::from(state));
        let n = self.actions();
        self.q.resize(self.q.len() + n, self.settings.initial_q);
        self.visits.resize(self.visits.len() + n, 0);
        self.state_visits.push(0);
        row
    }

    fn row(&self, row: usize) -> &[f32] {
        let n = self.actions();
        &self.q[row * n..row * n + n]
    }

    /// Values of `state` (initial values if unknown), without interning.
    pub fn values(&self, state: &str) -> Vec<f32> {
        match self.index.get(state) {
            Some(&r) => Vec::from(self.row(r as usize)),
            None => alloc::vec![self.settings.initial_q; self.actions()],
        }
    }

    /// Greedy action and value (lowest index on ties).
    pub fn best(&self, state: &str) -> (u32, f32) {
        argmax(&self.values(state))
    }

    fn max_of(&self, state: &str) -> f32 {
        self.best(state).1
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        (self.next_random() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn select(&mut self, state: &str) -> u32 {
        let row = self.intern(state);
        let n = self.actions();
        let action = match self.settings.explore {
            Explore::EpsilonGreedy => {
                let explore = self.uniform() < self.epsilon;
                self.epsilon = (self.epsilon * self.settings.epsilon_decay).max(self.settings.epsilon_floor);
                if explore {
                    (self.next_random() % n as u64) as usize
                } else {
                    argmax(self.row(row)).0 as usize
                }
            }
            Explore::Ucb(c) => {
                let base = row * n;
                match self.visits[base..base + n].iter().position(|&v| v == 0) {
                    Some(untried) => untried,
                    None => {
                        let ln_n = libm_ln(self.state_visits[row] as f32);
                        let scores: Vec<f32> = (0..n)
                            .map(|a| self.q[base + a] + c * libm_sqrt(ln_n / self.visits[base + a] as f32))
                            .collect();
                        argmax(&scores).0 as usize
                    }
                }
            }
        };
        self.visits[row * n + action] = self.visits[row * n + action].saturating_add(1);
        self.state_visits[row] = self.state_visits[row].saturating_add(1);
        self.selections += 1;
        action as u32
    }

    pub fn check(&self, t: &Transition) -> Result<(), QError> {
        if t.action as usize >= self.actions() {
            return Err(QError::UnknownAction(t.action));
        }
        if !t.reward.is_finite() {
            return Err(QError::NonFinite(format!("reward {} for state {:?}", t.reward, t.state)));
        }
        Ok(())
    }

    pub fn update(&mut self, t: &Transition) -> Result<f32, QError> {
        self.check(t)?;
        let next = t.next_state.as_deref().map(|s| self.max_of(s)).unwrap_or(0.0);
        let row = self.intern(&t.state);
        let i = row * self.actions() + t.action as usize;
        let s = &self.settings;
        let q = self.q[i] + s.alpha * (t.reward + s.gamma * next - self.q[i]);
        self.q[i] = q;
        self.updates += 1;
        Ok(q)
    }

    /// Applies transitions in order through the vector kernels' batch update.
    /// The batch is cut into runs in which no transition reads a row an
    /// earlier one of the run writes, so the result equals sequential
    /// updates exactly.
    pub fn update_batch(&mut self, ts: &[Transition]) -> Result<Vec<f32>, QError> {
        for t in ts {
            self.check(t)?;
        }
        let mut out = Vec::with_capacity(ts.len());
        let mut start = 0;
        while start < ts.len() {
            let mut written: Vec<usize> = Vec::new();
            let (mut idx, mut q, mut r, mut next) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut end = start;
            while end < ts.len() {
                let t = &ts[end];
                let row = self.intern(&t.state);
                let next_row = t.next_state.as_deref().map(|s| self.intern(s));
                let conflicts = written.contains(&row) || next_row.is_some_and(|nr| written.contains(&nr));
                if conflicts {
                    break;
                }
                written.push(row);
                let i = row * self.actions() + t.action as usize;
                idx.push(i);
                q.push(self.q[i]);
                r.push(t.reward);
                next.push(next_row.map(|nr| argmax(self.row(nr)).1).unwrap_or(0.0));
                end += 1;
            }
            let s = &self.settings;
            let updated = kernels::q_update(&q, &r, &next, s.alpha, s.gamma)
                .map_err(|e| QError::InvalidConfig(format!("vector kernels refused the batch: {e:?}")))?;
            for (i, v) in idx.into_iter().zip(updated) {
                self.q[i] = v;
                out.push(v);
            }
            self.updates += (end - start) as u64;
            start = end;
        }
        Ok(out)
    }

    pub fn merge(&mut self, other: Inner, weight: f32) -> Result<(), QError> {
        if !(0.0..=1.0).contains(&weight) {
            return Err(QError::InvalidConfig(String::from("merge weight must be in [0, 1]")));
        }
        if other.settings.actions != self.settings.actions {
            return Err(QError::Incompatible(format!(
                "action sets differ: {:?} here, {:?} in the other table",
                self.settings.actions, other.settings.actions
            )));
        }
        let n = self.actions();
        for (s, name) in other.names.iter().enumerate() {
            let known = self.index.contains_key(name.as_str());
            let row = self.intern(name);
            for a in 0..n {
                let theirs = other.q[s * n + a];
                let mine = &mut self.q[row * n + a];
                *mine = if known { (1.0 - weight) * *mine + weight * theirs } else { theirs };
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
        for &v in &self.q {
            min = min.min(v);
            max = max.max(v);
            sum += v as f64;
        }
        let entries = self.q.len();
        let mean = if entries == 0 { 0.0 } else { (sum / entries as f64) as f32 };
        if entries == 0 {
            (min, max) = (0.0, 0.0);
        }
        Stats {
            states: self.names.len() as u32,
            entries: entries as u32,
            updates: self.updates,
            selections: self.selections,
            epsilon: self.epsilon,
            min_q: min,
            max_q: max,
            mean_q: mean,
            memory_bytes: self.memory_bytes(),
        }
    }

    /// Heap bytes held: value and visit rows, state names (once in `names`,
    /// once as map keys) and the map's buckets.
    pub fn memory_bytes(&self) -> u64 {
        use core::mem::size_of;
        let names: usize = self.names.iter().map(|s| s.capacity()).sum();
        let rows = self.q.capacity() * 4 + self.visits.capacity() * 4 + self.state_visits.capacity() * 4;
        let vec_headers = self.names.capacity() * size_of::<String>();
        let map = self.index.capacity() * (size_of::<(String, u32)>() + 1);
        (names * 2 + rows + vec_headers + map + size_of::<Inner>()) as u64
    }
}

fn argmax(values: &[f32]) -> (u32, f32) {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i as u32, v);
        }
    }
    if best.1 == f32::NEG_INFINITY && !values.is_empty() {
        best.1 = values[0];
    }
    best
}

fn libm_sqrt(x: f32) -> f32 {
    use core::arch::wasm32::{f32x4_extract_lane, f32x4_splat, f32x4_sqrt};
    f32x4_extract_lane::<0>(f32x4_sqrt(f32x4_splat(x)))
}

/// Natural log for UCB (x >= 1): exponent from the bits, then a series on the
/// mantissa; accurate to ~1e-6, ample for an exploration bonus.
fn libm_ln(x: f32) -> f32 {
    if x <= 0.0 {
        return f32::NEG_INFINITY;
    }
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    // ln(m) = 2 atanh((m-1)/(m+1))
    let y = (m - 1.0) / (m + 1.0);
    let y2 = y * y;
    let series = 2.0 * y * (1.0 + y2 / 3.0 + y2 * y2 / 5.0 + y2 * y2 * y2 / 7.0 + y2 * y2 * y2 * y2 / 9.0);
    series + exp as f32 * core::f32::consts::LN_2
}

/// The `q-table` resource.
pub struct QTable {
    inner: RefCell<Inner>,
}

impl QTable {
    pub fn from_inner(inner: Inner) -> QTable {
        QTable { inner: RefCell::new(inner) }
    }
}

impl GuestQTable for QTable {
    fn create(config: Config) -> Result<QTableHandle, QError> {
        let settings = Settings::from_config(config)?;
        Ok(QTableHandle::new(QTable::from_inner(Inner::new(settings))))
    }

    fn select(&self, state: String) -> Result<u32, QError> {
        Ok(self.inner.borrow_mut().select(&state))
    }

    fn best(&self, state: String) -> (u32, f32) {
        self.inner.borrow().best(&state)
    }

    fn values(&self, state: String) -> Vec<f32> {
        self.inner.borrow().values(&state)
    }

    fn update(&self, t: Transition) -> Result<f32, QError> {
        self.inner.borrow_mut().update(&t)
    }

    fn update_batch(&self, ts: Vec<Transition>) -> Result<Vec<f32>, QError> {
        self.inner.borrow_mut().update_batch(&ts)
    }

    fn merge(&self, other: Vec<u8>, weight: f32) -> Result<(), QError> {
        let saved = snapshot::decode(&other)?;
        self.inner.borrow_mut().merge(saved, weight)
    }

    fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(&self.inner.borrow())
    }

    fn restore(bytes: Vec<u8>) -> Result<QTableHandle, QError> {
        Ok(QTableHandle::new(QTable::from_inner(snapshot::decode(&bytes)?)))
    }

    fn stats(&self) -> Stats {
        self.inner.borrow().stats()
    }
}
