//! WASI 0.2 for plugins, deny by default.
//!
//! Ordinary guest toolchains import WASI whether the plugin uses it or not: a
//! `std` Rust build for `wasm32-wasip2` imports 13–14 interfaces,
//! componentize-py and componentize-js runtimes a few more. The host links
//! all of wasmtime-wasi's WASI 0.2 interfaces so those components load as
//! they come, and gives each instance a context that grants nothing an agent
//! could use to reach outside its sandbox:
//!
//! | interface | what a plugin gets |
//! |---|---|
//! | `wasi:clocks` | the wall and monotonic clocks |
//! | `wasi:random` | random bytes (a fresh seed per instance) |
//! | `wasi:cli` stdout, stderr | lines into the host's log (`elex::guest`, tagged with the agent), at most [`OUTPUT_PER_CALL`] bytes a call |
//! | `wasi:cli` stdin, arguments | empty |
//! | `wasi:cli` environment | empty, unless granted: `env:NAME` |
//! | `wasi:filesystem` | no preopened directory, unless granted: `read:/guest=/host/dir`, read only |
//! | `wasi:sockets` | every address refused, unless granted: `connect:IP:PORT` (TCP); no name lookup |
//!
//! A capability is granted only when the plugin's manifest asks for it and
//! the operator grants it ([`Grants::decide`], `elex load --grant`).
//!
//! The time budget is enforced by epoch interruption, which only fires while
//! guest code runs; a guest blocked in a host call would sit out its
//! deadline. WASI blocks in one place, `wasi:io/poll` (`poll` and
//! `pollable.block`; a sleep is a poll on a clock's pollable), so the host
//! replaces those two with versions that give up at the call's deadline and
//! fail the call with its time budget: a plugin that sleeps forever is
//! stopped like one that loops forever.
//!
//! An instance's WASI context is made on first use: agents that import no
//! WASI (the composed feature agent) pay nothing for it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::instance::InstanceState;

/// Bytes of stdout and stderr together that one guest call may log; the rest
/// of that call's output is dropped (once, with a warning).
pub(crate) const OUTPUT_PER_CALL: usize = 64 * 1024;

/// Longest line logged; a longer one is cut.
const MAX_LINE: usize = 4096;

/// What an operator granted a plugin beyond every plugin's defaults: each
/// one a capability its manifest asked for (see
/// [`elex_registry::manifest::Capability`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables it may read (their values when it starts).
    pub env: Vec<String>,
    /// Host directories it may read: (guest path, host directory).
    pub read: Vec<(String, std::path::PathBuf)>,
    /// Addresses it may open TCP connections to.
    pub connect: Vec<std::net::SocketAddr>,
}

impl Grants {
    /// The grants of `granted` (`env:NAME`, `read:/guest=/host/dir`,
    /// `connect:IP:PORT`) for a plugin whose manifest asks for
    /// `asked`: every grant must be asked for, every ask granted, and a
    /// granted directory must exist; else why not, naming it.
    pub fn decide(
        asked: &[elex_registry::manifest::Capability],
        granted: &[String],
    ) -> Result<Grants, String> {
        use elex_registry::manifest::Capability;
        let mut grants = Grants::default();
        let mut covered = Vec::new();
        for grant in granted {
            let (capability, host_dir) = match grant.split_once('=') {
                Some((cap, dir)) if cap.starts_with("read:") => (cap, Some(dir)),
                _ => (grant.as_str(), None),
            };
            let capability: Capability = capability.parse()?;
            if !asked.contains(&capability) {
                return Err(format!(
                    "{capability} is granted, but the plugin's manifest does not ask for it"
                ));
            }
            match (&capability, host_dir) {
                (Capability::Env(name), None) => grants.env.push(name.clone()),
                (Capability::Connect(addr), None) => grants.connect.push(*addr),
                (Capability::Read(guest), Some(dir)) => {
                    let dir = std::path::PathBuf::from(dir);
                    if !dir.is_dir() {
                        return Err(format!("{capability}: {} is not a directory", dir.display()));
                    }
                    grants.read.push((guest.clone(), dir));
                }
                (Capability::Read(_), None) => {
                    return Err(format!("{capability}: say which host directory: {capability}=/host/dir"));
                }
                (_, Some(_)) => return Err(format!("{grant:?}: only read: grants take =/host/dir")),
            }
            covered.push(capability);
        }
        let missing: Vec<String> =
            asked.iter().filter(|c| !covered.contains(c)).map(|c| c.to_string()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "the plugin asks for {}; grant each (--grant {}) or do not load it",
                missing.join(", "),
                missing
                    .iter()
                    .map(|c| if c.starts_with("read:") { format!("{c}=/host/dir") } else { c.clone() })
                    .collect::<Vec<_>>()
                    .join(" --grant ")
            ));
        }
        Ok(grants)
    }
}

/// What WASI needs of an instance: the context and the resource table.
pub(crate) struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
    /// What the current call may still write to stdout/stderr.
    output_left: Arc<AtomicUsize>,
}

impl WasiState {
    /// A context that grants clocks, random, output into the log, and what
    /// `grants` grants.
    fn new(agent_id: &str, grants: &Grants) -> WasiState {
        let output_left = Arc::new(AtomicUsize::new(OUTPUT_PER_CALL));
        let out = |stream: &'static str| GuestOutput {
            agent_id: Arc::from(agent_id),
            stream,
            left: Arc::clone(&output_left),
        };
        let mut builder = WasiCtx::builder();
        builder
            .stdout(out("stdout"))
            .stderr(out("stderr"))
            .allow_tcp(!grants.connect.is_empty())
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for name in &grants.env {
            if let Ok(value) = std::env::var(name) {
                builder.env(name, value);
            }
        }
        for (guest, host) in &grants.read {
            if let Err(e) = builder.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadOnly) {
                tracing::warn!(agent = agent_id, dir = %host.display(), error = %e, "a granted directory cannot be opened");
            }
        }
        if !grants.connect.is_empty() {
            let allowed = grants.connect.clone();
            builder.socket_addr_check(move |addr, used| {
                use wasmtime_wasi::sockets::SocketAddrUse;
                let ok = match used {
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    // The implicit bind before a connect.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                };
                Box::pin(async move { ok })
            });
        }
        WasiState { ctx: builder.build(), table: ResourceTable::new(), output_left }
    }
}

/// The per-instance WASI slot in [`InstanceState`]: empty until the guest
/// first calls a WASI function.
#[derive(Default)]
pub(crate) struct WasiSlot {
    /// What the operator granted this instance's plugin.
    pub(crate) grants: std::sync::Arc<Grants>,
    /// In a `Mutex` only to make the slot `Sync` (a WASI context is not):
    /// it is reached through `&mut` alone, with `get_mut`, never locked.
    state: Option<std::sync::Mutex<Box<WasiState>>>,
    /// When the current call's time budget runs out: blocking WASI calls
    /// give up there.
    pub(crate) deadline: Option<Instant>,
}

impl WasiSlot {
    /// An empty slot for an instance with `grants`.
    pub(crate) fn new(grants: std::sync::Arc<Grants>) -> WasiSlot {
        WasiSlot { grants, ..WasiSlot::default() }
    }

    fn state(&mut self, agent_id: &str) -> &mut WasiState {
        let grants = &self.grants;
        let slot = self
            .state
            .get_or_insert_with(|| std::sync::Mutex::new(Box::new(WasiState::new(agent_id, grants))));
        // Poisoned only if a panic happened while it was locked, and it is
        // never locked.
        slot.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms the slot for the next call: its deadline and a fresh output
    /// allowance.
    pub(crate) fn start_call(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
        if let Some(state) = &mut self.state {
            let state = state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.output_left.store(OUTPUT_PER_CALL, Ordering::Relaxed);
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let state = self.wasi.state(&self.agent_id);
        WasiCtxView { ctx: &mut state.ctx, table: &mut state.table }
    }
}

/// The `wasi:io/poll` version wasmtime-wasi links; the host's own `poll`
/// and `pollable.block` replace its functions under this name (a component
/// importing any 0.2.x version is linked to them).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// Adds WASI 0.2 to `linker`, with `wasi:io/poll`'s blocking functions
/// held to the call's deadline.
pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let linked = (|| {
        let mut poll = linker.instance(WASI_IO_POLL)?;
        poll.func_wrap(
            "poll",
            |mut cx: StoreContextMut<'_, InstanceState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
                until_deadline(cx.data_mut(), |table| {
                    wasmtime_wasi_io::bindings::wasi::io::poll::Host::poll(table, pollables)
                })
                .map(|ready| (ready,))
            },
        )?;
        poll.func_wrap(
            "[method]pollable.block",
            |mut cx: StoreContextMut<'_, InstanceState>, (pollable,): (Resource<DynPollable>,)| {
                until_deadline(cx.data_mut(), |table| {
                    wasmtime_wasi_io::bindings::wasi::io::poll::HostPollable::block(table, pollable)
                })
            },
        )
    })();
    linker.allow_shadowing(false);
    linked
}

/// Runs a blocking WASI call to completion or to the call's deadline,
/// whichever comes first; at the deadline the call fails as if the guest
/// had been interrupted there.
fn until_deadline<'a, T, F>(
    state: &'a mut InstanceState,
    call: impl FnOnce(&'a mut ResourceTable) -> F,
) -> wasmtime::Result<T>
where
    F: std::future::Future<Output = wasmtime::Result<T>> + 'a,
{
    let deadline = state.wasi.deadline.unwrap_or_else(Instant::now);
    let table = &mut state.wasi.state(&state.agent_id).table;
    let blocking = call(table);
    // The timer is made inside the runtime `in_tokio` enters.
    let waited =
        wasmtime_wasi::runtime::in_tokio(
            async move { tokio::time::timeout_at(deadline.into(), blocking).await },
        );
    waited.unwrap_or_else(|_elapsed| Err(wasmtime::Trap::Interrupt.into()))
}

/// stdout or stderr of one instance: complete lines go to the log.
#[derive(Clone)]
struct GuestOutput {
    agent_id: Arc<str>,
    stream: &'static str,
    left: Arc<AtomicUsize>,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogWriter::new(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LogWriter::new(self.clone()))
    }
}

/// Buffers a stream's bytes and logs each complete line.
struct LogWriter {
    out: GuestOutput,
    line: Vec<u8>,
    /// The allowance ran out during this call and a warning was logged.
    warned: bool,
}

impl LogWriter {
    fn new(out: GuestOutput) -> LogWriter {
        LogWriter { out, line: Vec::new(), warned: false }
    }

    fn take(&mut self, bytes: &[u8]) {
        let allowed = self
            .out
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| Some(left.saturating_sub(bytes.len())))
            .unwrap_or(0);
        if allowed == OUTPUT_PER_CALL {
            self.warned = false;
        }
        let kept = &bytes[..bytes.len().min(allowed)];
        for &b in kept {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        if kept.len() < bytes.len() && !self.warned {
            self.warned = true;
            tracing::warn!(
                target: "elex::guest",
                agent = %self.out.agent_id,
                stream = self.out.stream,
                limit = OUTPUT_PER_CALL,
                "guest output over the per-call limit; the rest of this call's output is dropped"
            );
        }
    }

    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches('\r');
        tracing::info!(target: "elex::guest", agent = %self.out.agent_id, stream = self.out.stream, "{text}");
        self.line.clear();
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LogWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for LogWriter {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> LogWriter {
        LogWriter::new(GuestOutput {
            agent_id: Arc::from("a"),
            stream: "stdout",
            left: Arc::new(AtomicUsize::new(OUTPUT_PER_CALL)),
        })
    }

    #[test]
    fn output_is_bounded_per_call() {
        let mut w = writer();
        w.take(&vec![b'x'; OUTPUT_PER_CALL - 10]);
        w.take(&[b'y'; 100]);
        assert_eq!(w.out.left.load(Ordering::Relaxed), 0);
        assert!(w.warned);
        // A line never grows past the cut.
        assert!(w.line.len() <= MAX_LINE);
        // The next call gets a fresh allowance.
        let mut slot = WasiSlot::default();
        slot.state("a");
        slot.start_call(Instant::now());
        assert_eq!(slot.state("a").output_left.load(Ordering::Relaxed), OUTPUT_PER_CALL);
    }
}
