//! The one wasmtime [`Engine`] of a host, configured in one place, and the
//! thread that drives epoch interruption.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::config::HostConfig;
use crate::error::{Error, Result};

/// Builds the engine: component model, pooling allocator sized from the
/// configuration, epoch interruption, optional fuel, parallel compilation.
pub fn build(config: &HostConfig) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let n = config.max_instances;
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(config.core_instances_per_instance))
        .total_memories(n.saturating_mul(config.memories_per_instance))
        .total_tables(n.saturating_mul(config.tables_per_instance))
        .max_core_instances_per_component(config.core_instances_per_instance)
        .max_memories_per_component(config.memories_per_instance)
        .max_tables_per_component(config.tables_per_instance)
        .max_memory_size(
            usize::try_from(config.max_memory_bytes)
                .map_err(|_| Error::Config(String::from("max_memory_bytes does not fit in usize")))?,
        )
        .table_elements(config.budgets.table_elements)
        // A freed slot's first pages are reset in place and stay resident
        // instead of being returned to the kernel and faulted in again;
        // with PAGEMAP_SCAN (Linux 6.7+) only the pages the guest dirtied
        // are reset. See `HostConfig::keep_resident_bytes`.
        .linear_memory_keep_resident(config.keep_resident_bytes)
        .table_keep_resident(config.keep_resident_bytes.min(64 << 10))
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut c = Config::new();
    c.wasm_component_model(true)
        // Component-model async is not used: leaving its bookkeeping off
        // halves the cost of every call.
        .concurrency_support(false)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        .profiler(profiler())
        .epoch_interruption(true)
        .consume_fuel(config.fuel)
        // Reserve only what a memory may grow to, plus a small guard: with
        // hundreds of instances the default (4 GiB + guard per memory) would
        // reserve terabytes of address space.
        .memory_reservation(config.max_memory_bytes)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .allocation_strategy(if config.pooling {
            InstanceAllocationStrategy::Pooling(pool)
        } else {
            InstanceAllocationStrategy::OnDemand
        });
    Engine::new(&c).map_err(|e| Error::Config(format!("{e:#}")))
}

/// `ELEX_PERFMAP=1` in the environment: wasmtime writes
/// `/tmp/perf-<pid>.map`, so that `perf record`/`perf report` name the
/// compiled guest functions (`wasm[9]::function[91]::…`) instead of
/// showing bare addresses (an engine that cannot create that file is not
/// built: the error says why). Off otherwise: it costs a write per
/// function compiled or loaded.
fn profiler() -> wasmtime::ProfilingStrategy {
    if std::env::var_os("ELEX_PERFMAP").is_some_and(|v| v == "1") {
        wasmtime::ProfilingStrategy::PerfMap
    } else {
        wasmtime::ProfilingStrategy::None
    }
}

/// Advances the engine's epoch every `tick` until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine, tick: std::time::Duration) -> Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(String::from("elex-epoch"))
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Config(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
