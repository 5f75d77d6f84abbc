//! Snapshot bytes of a Q-table: magic `EXQL`, format version (u16 LE), then a
//! postcard body. Decoding checks every invariant, so corrupt or foreign
//! bytes are an error, never a trap.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::exports::elex::qlearning::engine::QError;
use crate::table::Inner;
use hashbrown::HashMap;

const MAGIC: &[u8; 4] = b"EXQL";
/// Version written by this build; the only one it reads.
pub const VERSION: u16 = 1;

pub fn encode(t: &Inner) -> Vec<u8> {
    let mut out = Vec::from(&MAGIC[..]);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Serialising plain vectors and strings into a Vec cannot fail.
    out.extend_from_slice(&postcard::to_allocvec(t).unwrap_or_default());
    out
}

fn corrupt(why: impl Into<String>) -> QError {
    QError::CorruptSnapshot(why.into())
}

/// A table from snapshot bytes, every invariant checked.
pub fn decode(bytes: &[u8]) -> Result<Inner, QError> {
    if bytes.len() < 6 || &bytes[..4] != MAGIC {
        return Err(corrupt("not a Q-table snapshot (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(QError::UnsupportedVersion(version as u32));
    }
    let mut saved: Inner = postcard::from_bytes(&bytes[6..]).map_err(|e| corrupt(format!("{e}")))?;
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
    saved.index = saved.names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
    Ok(saved)
}
