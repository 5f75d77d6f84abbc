//! What each agent has used: calls, errors, fuel, memory, latency. Kept per
//! agent by the [`Swarm`](crate::Swarm), stored beside its
//! snapshots so `elex agents stats` shows use across runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latencies in log-spaced buckets: 8 per power of two from 1 ns to ~1 h
/// (316 buckets), so a quantile is exact to within 9 % and the histogram
/// costs 2.5 KB whatever the number of calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const PER_OCTAVE: u32 = 8;
const BUCKETS: usize = 42 * PER_OCTAVE as usize;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: vec![0; BUCKETS], total: 0 }
    }
}

impl LatencyHistogram {
    fn bucket(ns: u64) -> usize {
        if ns <= 1 {
            return 0;
        }
        // Octave from the leading bit, the step within it from the next
        // three bits.
        let octave = 63 - ns.leading_zeros();
        let step = if octave >= 3 { (ns >> (octave - 3)) & 7 } else { (ns << (3 - octave)) & 7 };
        ((octave * PER_OCTAVE) as usize + step as usize).min(BUCKETS - 1)
    }

    /// The largest latency of bucket `i` (its upper edge), in ns.
    fn upper_ns(i: usize) -> u64 {
        let (octave, step) = (i as u32 / PER_OCTAVE, i as u64 % PER_OCTAVE as u64);
        let base = 1u64 << octave;
        base + ((step + 1) * base) / PER_OCTAVE as u64
    }

    /// Counts one call that took `latency` in its bucket (latencies beyond
    /// the last bucket count in it).
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    /// Calls recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (0..=1), rounded up to its bucket's edge; `None`
    /// before the first call.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(Self::upper_ns(i)));
            }
        }
        None
    }

    /// Calls that took at most `edge`, as far as the buckets tell: those in
    /// buckets whose upper edge is at most `edge` (a bucket is at most 9 %
    /// wide), for exporting as a histogram with coarser buckets.
    pub fn at_most(&self, edge: Duration) -> u64 {
        let ns = u64::try_from(edge.as_nanos()).unwrap_or(u64::MAX);
        self.counts.iter().enumerate().filter(|&(i, _)| Self::upper_ns(i) <= ns).map(|(_, c)| c).sum()
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }
}

/// Use of one agent, cumulative over its instances (and over runs when the
/// swarm has a database).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Calls made to the agent, failed ones included.
    pub calls: u64,
    /// Calls that returned an error (agent errors, traps, budget breaches).
    pub errors: u64,
    /// Fuel the agent's calls consumed, when the host meters fuel.
    pub fuel_used: u64,
    /// Total time in calls.
    pub busy: Duration,
    /// Linear memory of the live instance now (0 when it has none).
    pub memory_bytes: u64,
    /// Largest linear memory any of its instances held.
    pub memory_peak_bytes: u64,
    /// Instances re-created after a trap or an unhealthy report.
    pub recycles: u64,
    /// Times the agent's instance was evicted (its snapshot stored and the
    /// instance dropped), for idleness, memory pressure or on request.
    pub evictions: u64,
    /// Latency of every call.
    pub latency: LatencyHistogram,
}

impl Usage {
    /// Counts one call that took `took`, consumed `fuel` and left the
    /// instance holding `memory_bytes` (its peak so far `memory_peak_bytes`).
    pub fn record_call(
        &mut self,
        took: Duration,
        failed: bool,
        fuel: u64,
        memory_bytes: u64,
        memory_peak_bytes: u64,
    ) {
        self.calls += 1;
        self.errors += u64::from(failed);
        self.busy += took;
        self.latency.record(took);
        self.fuel_used += fuel;
        self.memory_bytes = memory_bytes;
        self.memory_peak_bytes = self.memory_peak_bytes.max(memory_peak_bytes);
    }

    /// Adds the use in `delta` (recorded after this) to this total.
    pub fn merge(&mut self, delta: &Usage) {
        self.calls += delta.calls;
        self.errors += delta.errors;
        self.fuel_used += delta.fuel_used;
        self.busy += delta.busy;
        self.memory_bytes = delta.memory_bytes;
        self.memory_peak_bytes = self.memory_peak_bytes.max(delta.memory_peak_bytes);
        self.recycles += delta.recycles;
        self.evictions += delta.evictions;
        self.latency.merge(&delta.latency);
    }

    /// Encodes for the database.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("usage always encodes")
    }

    /// Decodes what [`Usage::to_bytes`] wrote; `None` for bytes of another
    /// layout.
    pub fn from_bytes(bytes: &[u8]) -> Option<Usage> {
        postcard::from_bytes(bytes).ok().filter(|u: &Usage| u.latency.counts.len() == BUCKETS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_bucket() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (1.0, 1_000_000.0)] {
            let got = h.quantile(q).unwrap().as_nanos() as f64;
            assert!(got >= want && got <= want * 1.13, "q{q}: {got} vs {want}");
        }
        let mut tiny = LatencyHistogram::default();
        tiny.record(Duration::ZERO);
        tiny.record(Duration::from_nanos(3));
        tiny.record(Duration::from_secs(100_000));
        assert!(tiny.quantile(1.0).unwrap() >= Duration::from_secs(3600));
        // 491 µs is the last value below the edge of the bucket that ends
        // before 500 µs (491.52 µs).
        assert_eq!(h.at_most(Duration::from_micros(500)), 491);
        assert_eq!(h.at_most(Duration::from_secs(1)), 1000);
        assert_eq!(h.at_most(Duration::ZERO), 0);
        let mut both = h.clone();
        both.merge(&tiny);
        assert_eq!(both.count(), 1003);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = LatencyHistogram::bucket(ns);
            assert!(b >= last || ns > 100_000);
            assert!(LatencyHistogram::upper_ns(b) >= ns || b == BUCKETS - 1, "{ns} -> {b}");
            last = b;
        }
    }

    #[test]
    fn usage_round_trips_and_garbage_is_refused() {
        let mut u = Usage { calls: 3, errors: 1, fuel_used: 99, ..Usage::default() };
        u.latency.record(Duration::from_micros(40));
        assert_eq!(Usage::from_bytes(&u.to_bytes()), Some(u));
        assert_eq!(Usage::from_bytes(b"\xff\xff\xff"), None);
    }
}
