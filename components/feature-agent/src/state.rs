//! What a feature agent learns at run time, and its snapshot format.
//!
//! Snapshot bytes: magic `EXAG`, format version (u16 LE), queries handled
//! (u64), feedback count (u64), reward sum (f64), then the Q-table's own
//! snapshot bytes (length-prefixed, u32), all little-endian.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

const MAGIC: &[u8; 4] = b"EXAG";
const VERSION: u16 = 2;
const HEADER: usize = 4 + 2 + 8 + 8 + 8 + 4;
/// How many recent queries accept feedback.
const RECENT: usize = 256;

/// A query this instance answered: what it saw and what it did.
pub struct Answered {
    pub query_id: String,
    pub state: String,
    pub action: u32,
}

#[derive(Default)]
pub struct Learned {
    pub queries: u64,
    pub feedback: u64,
    pub reward_sum: f64,
    /// Recent answers, oldest first.
    recent: VecDeque<Answered>,
}

/// The agent's counters plus the Q-table bytes, as read from a snapshot.
pub struct Restored {
    pub learned: Learned,
    pub q_table: Vec<u8>,
}

impl Learned {
    pub fn answered(&mut self, a: Answered) {
        self.queries += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(a);
    }

    /// Takes the record of a recent query for feedback.
    pub fn take(&mut self, query_id: &str) -> Option<Answered> {
        let pos = self.recent.iter().position(|a| a.query_id == query_id)?;
        self.recent.remove(pos)
    }

    pub fn rewarded(&mut self, reward: f32) {
        self.feedback += 1;
        self.reward_sum += reward as f64;
    }

    pub fn to_bytes(&self, q_table: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + q_table.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.queries.to_le_bytes());
        out.extend_from_slice(&self.feedback.to_le_bytes());
        out.extend_from_slice(&self.reward_sum.to_le_bytes());
        out.extend_from_slice(&(q_table.len() as u32).to_le_bytes());
        out.extend_from_slice(q_table);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Restored, String> {
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(String::from("not a feature-agent snapshot (bad magic)"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(format!("snapshot format version {version}, this agent reads {VERSION}"));
        }
        if bytes.len() < HEADER {
            return Err(format!("snapshot is {} bytes, shorter than its {HEADER}-byte header", bytes.len()));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            b
        };
        let reward_sum = f64::from_le_bytes(word(22));
        if !reward_sum.is_finite() {
            return Err(String::from("snapshot holds a non-finite reward sum"));
        }
        let q_len = u32::from_le_bytes([bytes[30], bytes[31], bytes[32], bytes[33]]) as usize;
        if bytes.len() != HEADER + q_len {
            return Err(format!("snapshot is {} bytes, its header says {}", bytes.len(), HEADER + q_len));
        }
        Ok(Restored {
            learned: Learned {
                queries: u64::from_le_bytes(word(6)),
                feedback: u64::from_le_bytes(word(14)),
                reward_sum,
                recent: VecDeque::new(),
            },
            q_table: Vec::from(&bytes[HEADER..]),
        })
    }
}
