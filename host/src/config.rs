//! Host configuration: every limit and timeout in one table.

use std::path::PathBuf;
use std::time::Duration;

/// Budgets applied to every instance unless its index entry says otherwise.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Most linear memory an instance may hold, all its memories together.
    pub memory_bytes: u64,
    /// Most table elements per table.
    pub table_elements: usize,
    /// CPU time one call may run before it is interrupted (epoch deadline).
    pub call_deadline: Duration,
    /// Fuel per call (`None`: no fuel budget). Needs `HostConfig::fuel`;
    /// a breach ends the call with a `fuel` budget error.
    pub fuel_per_call: Option<u64>,
    /// Callers that may wait for a swarm's agent while it runs a call (an
    /// instance runs one call at a time); more get `Error::Busy` at once.
    pub queue_depth: u32,
}

impl Budgets {
    /// These budgets, tightened by what a signed registry entry asks for:
    /// a component may ask for less memory, a shorter deadline or less fuel
    /// than the host gives, never more. A fuel budget is applied only when
    /// the engine meters fuel (`fuel_metering`).
    pub fn tightened_by(&self, requested: &elex_registry::Budgets, fuel_metering: bool) -> Budgets {
        let mut b = self.clone();
        if let Some(m) = requested.memory_bytes {
            b.memory_bytes = b.memory_bytes.min(m);
        }
        if let Some(ms) = requested.call_deadline_ms {
            b.call_deadline = b.call_deadline.min(Duration::from_millis(ms));
        }
        if let Some(fuel) = requested.fuel_per_call
            && fuel_metering
        {
            b.fuel_per_call = Some(b.fuel_per_call.map_or(fuel, |f| f.min(fuel)));
        }
        b
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            memory_bytes: 64 << 20,
            table_elements: 10_000,
            call_deadline: Duration::from_millis(500),
            fuel_per_call: None,
            queue_depth: 16,
        }
    }
}

/// How the host's engine is set up.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Component instances that can be live at once (sizes the pooling
    /// allocator).
    pub max_instances: u32,
    /// Core instances one component instance may use: a composed agent has
    /// a few (one per composed component plus shims). A pooling limit: the
    /// pool holds `max_instances` times this many.
    pub core_instances_per_instance: u32,
    /// Linear memories one component instance may use, all its core
    /// instances together. A pooling limit: the pool holds `max_instances`
    /// times this many.
    pub memories_per_instance: u32,
    /// Tables one component instance may use, all its core instances
    /// together. A pooling limit: the pool holds `max_instances` times this
    /// many.
    pub tables_per_instance: u32,
    /// Largest size any one linear memory may reach (the pooling slot size).
    pub max_memory_bytes: u64,
    /// Bytes at the start of each pooling slot's memory that are reset in
    /// place and kept resident when the slot is freed, rather than returned
    /// to the kernel with madvise (whose TLB shootdowns cost more than the
    /// reset for a small guest). On Linux 6.7+ the host asks the kernel
    /// (`PAGEMAP_SCAN`) which of those pages the guest actually dirtied and
    /// resets only them, so a large value costs nothing for pages a guest
    /// never touched; elsewhere the whole range is memset on every free.
    /// Default 2 MiB: re-instantiating a small guest into a warm slot takes
    /// ~6 µs. An idle slot keeps at most this much RSS.
    pub keep_resident_bytes: usize,
    /// How often the epoch advances: the granularity of CPU deadlines.
    pub epoch_tick: Duration,
    /// Whether fuel metering is compiled in (needed for `Budgets::fuel_per_call`).
    pub fuel: bool,
    /// Pooling instance allocator (true) or on-demand allocation (false).
    pub pooling: bool,
    /// Default per-instance budgets.
    pub budgets: Budgets,
    /// Folder of precompiled artifacts (`None`: compile on every new host).
    pub cache_dir: Option<PathBuf>,
    /// Compiled components kept in memory.
    pub memory_cache_entries: u64,
}

impl HostConfig {
    /// Sized for a swarm of `agents` feature agents plus headroom for
    /// recycling: pooling slots for all, each linear memory at most 32 MiB
    /// (a feature agent holds ~5 MiB), so the address space reserved stays
    /// near `agents × memories × 32 MiB`.
    pub fn for_swarm(agents: u32) -> HostConfig {
        HostConfig {
            max_instances: agents + agents / 8 + 16,
            max_memory_bytes: 32 << 20,
            budgets: Budgets { memory_bytes: 32 << 20, ..Budgets::default() },
            ..HostConfig::default()
        }
    }

    /// Whether one instance of a component with `footprint` can fit this
    /// host's per-instance limits; an error naming the limit and the
    /// setting that raises it if not. The load path checks this before
    /// compiling; compiling then checks the exact count (the footprint is
    /// a lower bound: see [`elex_wit::Footprint`]).
    pub fn admit(&self, what: &str, footprint: &elex_wit::Footprint) -> crate::Result<()> {
        let checks = [
            (
                "core instances",
                footprint.core_instances,
                self.core_instances_per_instance,
                "core_instances_per_instance",
            ),
            ("linear memories", footprint.memories, self.memories_per_instance, "memories_per_instance"),
            ("tables", footprint.tables, self.tables_per_instance, "tables_per_instance"),
        ];
        for (resource, needs, limit, setting) in checks {
            if needs > limit {
                return Err(crate::Error::TooLarge {
                    what: what.to_string(),
                    resource,
                    needs,
                    limit,
                    setting,
                });
            }
        }
        Ok(())
    }

    /// The default folder for elex data: `$ELEX_DATA_DIR`, else
    /// `$XDG_DATA_HOME/elex`, else `~/.local/share/elex`, else `./.elex`.
    pub fn default_data_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("ELEX_DATA_DIR") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
            return PathBuf::from(d).join("elex");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".local/share/elex"),
            None => PathBuf::from(".elex"),
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_instances: 64,
            core_instances_per_instance: 20,
            memories_per_instance: 8,
            tables_per_instance: 16,
            max_memory_bytes: 64 << 20,
            keep_resident_bytes: 2 << 20,
            epoch_tick: Duration::from_millis(1),
            fuel: false,
            pooling: true,
            budgets: Budgets::default(),
            cache_dir: None,
            memory_cache_entries: 64,
        }
    }
}
