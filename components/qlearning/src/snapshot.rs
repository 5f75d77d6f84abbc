//! Snapshot bytes of a Q-table: magic `EXQL`, format version (u16 LE), then a
//! postcard body. Decoding checks every invariant, so corrupt or foreign
//! bytes are an error, never a trap.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::exports::elex::qlearning::engine::QError;
use crate::table::{Inner, Settings};

const MAGIC: &[u8; 4] = b"EXQL";
/// Version written by this build; the only one it reads.
pub const VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub settings: Settings,
    pub names: Vec<String>,
    pub q: Vec<f32>,
    pub visits: Vec<u32>,
    pub state_visits: Vec<u32>,
    pub updates: u64,
    pub selections: u64,
    pub epsilon: f32,
    pub rng: u64,
}

#[derive(Serialize)]
struct SavedRef<'a> {
    settings: &'a Settings,
    names: &'a [String],
    q: &'a [f32],
    visits: &'a [u32],
    state_visits: &'a [u32],
    updates: u64,
    selections: u64,
    epsilon: f32,
    rng: u64,
}

pub fn encode(t: &Inner) -> Vec<u8> {
    let body = SavedRef {
        settings: &t.settings,
        names: &t.names,
        q: &t.q,
        visits: &t.visits,
        state_visits: &t.state_visits,
        updates: t.updates,
        selections: t.selections,
        epsilon: t.epsilon,
        rng: t.rng,
    };
    let mut out = Vec::from(&MAGIC[..]);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Serialising plain vectors and strings into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_allocvec(&body).unwrap_or_default());
    out
}

fn corrupt(why: impl Into<String>) -> QError {
    QError::CorruptSnapshot(why.into())
}

pub fn decode(bytes: &[u8]) -> Result<Saved, QError> {
    if bytes.len() < 6 || &bytes[..4] != MAGIC {
        return Err(corrupt("not a Q-table snapshot (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(QError::UnsupportedVersion(version as u32));
    }
    let saved: Saved = postcard::from_bytes(&bytes[6..]).map_err(|e| corrupt(format!("{e}")))?;
    let n = saved.settings.actions.len();
    let states = saved.names.len();
    if n == 0 {
        return Err(corrupt("no actions"));
    }
    if saved.q.len() != states * n || saved.visits.len() != states * n || saved.state_visits.len() != states {
        return Err(corrupt("row lengths do not match the number of states and actions"));
    }
    if saved.q.iter().any(|v| !v.is_finite()) {
        return Err(corrupt("non-finite Q value"));
    }
    // Re-validate the settings as if they were a fresh config.
    let s = &saved.settings;
    let settings_ok = s.alpha > 0.0
        && s.alpha <= 1.0
        && (0.0..=1.0).contains(&s.gamma)
        && (0.0..=1.0).contains(&saved.epsilon)
        && s.epsilon_decay > 0.0
        && s.epsilon_decay <= 1.0
        && s.initial_q.is_finite();
    if !settings_ok {
        return Err(corrupt("settings out of range"));
    }
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(states);
    let duplicate = saved.names.iter().find(|name| seen.insert(name.as_str(), ()).is_some()).cloned();
    drop(seen);
    if let Some(name) = duplicate {
        return Err(corrupt(format!("state {name:?} appears twice")));
    }
    Ok(saved)
}

impl Saved {
    pub fn into_inner(self) -> Inner {
        let mut inner = Inner::new(self.settings);
        inner.index = self.names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
        inner.names = self.names;
        inner.q = self.q;
        inner.visits = self.visits;
        inner.state_visits = self.state_visits;
        inner.updates = self.updates;
        inner.selections = self.selections;
        inner.epsilon = self.epsilon;
        inner.rng = self.rng;
        inner
    }
}
