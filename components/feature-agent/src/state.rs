//! What a feature agent learns at run time, and its snapshot format.
//!
//! Snapshot bytes: magic `EXAG`, format version (u16 LE), queries handled
//! (u64), feedback count (u64), reward sum (f64), then the Q-table's own
//! snapshot bytes (length-prefixed, u32), then (from version 3) the recent
//! answers that still accept feedback: their count (u32) and for each the
//! query id and state (u16-length-prefixed UTF-8) and the action (u32); all
//! little-endian. Version 2 snapshots (without recent answers) are read too.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

const MAGIC: &[u8; 4] = b"EXAG";
const VERSION: u16 = 3;
const HEADER: usize = 4 + 2 + 8 + 8 + 8 + 4;
/// How many recent queries accept feedback.
pub const RECENT: usize = 256;

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
        out.extend_from_slice(&(self.recent.len() as u32).to_le_bytes());
        for a in &self.recent {
            for text in [&a.query_id, &a.state] {
                let b = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
                out.extend_from_slice(&(b.len() as u16).to_le_bytes());
                out.extend_from_slice(b);
            }
            out.extend_from_slice(&a.action.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Restored, String> {
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(String::from("not a feature-agent snapshot (bad magic)"));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION && version != 2 {
            return Err(format!("snapshot format version {version}, this agent reads 2 and {VERSION}"));
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
        let q_end = HEADER.checked_add(q_len).filter(|&e| e <= bytes.len());
        let Some(q_end) = q_end else {
            return Err(format!(
                "snapshot is {} bytes, its header says at least {}",
                bytes.len(),
                HEADER + q_len
            ));
        };
        let recent = if version == 2 {
            if bytes.len() != q_end {
                return Err(format!("snapshot is {} bytes, its header says {q_end}", bytes.len()));
            }
            VecDeque::new()
        } else {
            read_recent(&bytes[q_end..])?
        };
        Ok(Restored {
            learned: Learned {
                queries: u64::from_le_bytes(word(6)),
                feedback: u64::from_le_bytes(word(14)),
                reward_sum,
                recent,
            },
            q_table: Vec::from(&bytes[HEADER..q_end]),
        })
    }
}

/// The recent-answers section of a version 3 snapshot; it must fill `b`.
fn read_recent(mut b: &[u8]) -> Result<VecDeque<Answered>, String> {
    let short = || String::from("snapshot's recent answers are truncated");
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (b.get(..n)?, b.get(n..)?);
        *b = tail;
        Some(head)
    }
    let count =
        u32::from_le_bytes(take(&mut b, 4).ok_or_else(short)?.try_into().map_err(|_| short())?) as usize;
    if count > RECENT {
        return Err(format!("snapshot holds {count} recent answers, more than {RECENT}"));
    }
    let mut out = VecDeque::with_capacity(count);
    for _ in 0..count {
        let mut text = || -> Result<String, String> {
            let len = u16::from_le_bytes(take(&mut b, 2).ok_or_else(short)?.try_into().map_err(|_| short())?);
            let raw = take(&mut b, len as usize).ok_or_else(short)?;
            String::from_utf8(raw.to_vec()).map_err(|_| String::from("snapshot holds a non-UTF-8 query id"))
        };
        let query_id = text()?;
        let state = text()?;
        let action = u32::from_le_bytes(take(&mut b, 4).ok_or_else(short)?.try_into().map_err(|_| short())?);
        out.push_back(Answered { query_id, state, action });
    }
    if !b.is_empty() {
        return Err(format!("snapshot has {} bytes after its recent answers", b.len()));
    }
    Ok(out)
}
