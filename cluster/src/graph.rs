//! The memory graph across hosts: one JetStream stream,
//! `elex-<cluster>-graph`, carries every write of every host, and every
//! host applies it in stream order to its own copy of the graph (see
//! `elex_memgraph`'s `log` module for why the copies stay equal).
//!
//! A host joins with a graph that is blank or that followed this very
//! stream before (it catches up from where it stopped); any other graph
//! is refused, since its engrams would exist on this host only. A write on
//! a host returns once that host applied it, with what applying it gave
//! (the new engram is readable there at once; the other hosts have it when
//! they reach its position, which `GET /v1/cluster` shows as
//! `graph_applied`). The stream keeps every entry: a host that joins later
//! rebuilds the graph from the first one.
//!
//! The stream is created with deletes and purges denied: an entry missing
//! from the middle would leave the hosts that applied it and the hosts that
//! did not apart. A host that finds an entry missing, one it cannot read
//! (written by a newer elex), or one it cannot apply after
//! [`APPLY_TRIES`] tries stops following and says why (`graph_error` in
//! `GET /v1/cluster`; its writes fail with that reason) rather than go on
//! with a graph that differs from the others'. Entries are deduplicated by
//! JetStream (`Nats-Msg-Id`), so a write whose acknowledgement was lost is
//! sent again without being applied twice.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use elex_ran::host::memgraph::{GraphError, LEASE, LogPosition, LoggedWrite, MemoryGraph, WriteLog};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Error, Result};

/// How long a write waits for this host to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long catching up at join may go without applying an entry.
const STALLED: Duration = Duration::from_secs(30);

/// How often an entry that fails to apply for lack of storage is tried
/// before the host stops following the log.
pub(crate) const APPLY_TRIES: u32 = 10;

/// How often a write is sent when its acknowledgement does not come.
const PUBLISH_TRIES: u32 = 3;

/// The entry format this build writes and reads (the first byte of an
/// entry; postcard after it).
const FORMAT: u8 = 1;

/// One entry of the stream.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    /// A write, tagged with the process that made it (which waits for it).
    Write { host: String, incarnation: u64, nonce: u64, write: LoggedWrite },
    /// A block of ids for one writer: ids `seq * LEASE ..` of its position.
    Lease,
}

type Waiter = std::sync::mpsc::SyncSender<std::result::Result<Vec<bool>, GraphError>>;

/// This host's end of the stream: appends its writes, applies everyone's.
pub(crate) struct GraphLog {
    js: jetstream::Context,
    stream: String,
    subject: String,
    host: String,
    incarnation: u64,
    /// The stream's identity (its creation time in ns).
    log_id: u64,
    tokio: tokio::runtime::Handle,
    max_payload: usize,
    nonce: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiter>>,
    /// The last position this host applied.
    applied: watch::Sender<u64>,
    closed: AtomicBool,
    /// Why this host stopped following the log, once it did.
    broken: Mutex<Option<String>>,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn graph_error(stream: &str, detail: impl std::fmt::Display) -> Error {
    Error::Graph { stream: stream.to_string(), detail: detail.to_string() }
}

impl GraphLog {
    /// Opens (or creates) the cluster's graph stream, checks that `graph`
    /// can follow it, applies every entry it has not applied yet, and
    /// sends the graph's later writes through the stream.
    pub(crate) async fn attach(
        client: &async_nats::Client,
        config: &crate::ClusterConfig,
        incarnation: u64,
        graph: Arc<MemoryGraph>,
    ) -> Result<Arc<GraphLog>> {
        let js = jetstream::new(client.clone());
        let name = config.store("graph");
        let subject = config.subject("graph");
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some(String::from(
                    "elex: every write to the memory graph, in the order every host applies them",
                )),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: config.state_replicas.max(1),
                deny_delete: true,
                deny_purge: true,
                // Within it, a write sent again is stored once.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| graph_error(&name, format!("{e} (is JetStream on? start nats-server with -js)")))?;
        let info = stream.info().await.map_err(|e| graph_error(&name, e))?.clone();
        let log_id = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let here = graph.log_position().map_err(|e| graph_error(&name, e))?;
        let file = graph.file().display().to_string();
        let rebuild = format!("move {file} away: this host then rebuilds its graph from the cluster's log");
        if here.seq == 0 && !graph.is_blank().map_err(|e| graph_error(&name, e))? {
            return Err(graph_error(
                &name,
                format!(
                    "the memory graph {file} holds engrams or contexts written outside the cluster, \
                     which the other hosts would never have; {rebuild}"
                ),
            ));
        }
        if !info.config.deny_delete || !info.config.deny_purge {
            tracing::warn!(stream = %name, "the memory-graph log allows deleting entries: deleting one stops every host");
        }
        if here.seq != 0 && here.log != log_id {
            return Err(graph_error(
                &name,
                format!(
                    "the memory graph {file} followed an earlier stream of this name (deleted and created again \
                     since); {rebuild}"
                ),
            ));
        }
        if here.seq > last {
            return Err(graph_error(
                &name,
                format!(
                    "the memory graph {file} has applied entries up to {} but the log ends at {last}: the NATS \
                     server lost entries this host applied; {rebuild}",
                    here.seq
                ),
            ));
        }
        if here.seq + 1 < first {
            return Err(graph_error(
                &name,
                format!(
                    "the log starts at entry {first} but {file} has applied only up to {}: the entries between \
                     were removed from the stream; {rebuild}",
                    here.seq
                ),
            ));
        }
        let log = Arc::new(GraphLog {
            js,
            stream: name,
            subject,
            host: config.host_id.clone(),
            incarnation,
            log_id,
            tokio: tokio::runtime::Handle::current(),
            max_payload: client.server_info().max_payload,
            nonce: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
            applied: watch::Sender::new(here.seq),
            closed: AtomicBool::new(false),
            broken: Mutex::new(None),
            follower: Mutex::new(None),
        });
        let mut applied = log.applied.subscribe();
        let follower = tokio::spawn(Arc::clone(&log).following(stream, Arc::clone(&graph)));
        *log.follower.lock().unwrap_or_else(|p| p.into_inner()) = Some(follower);
        if last > here.seq {
            tracing::info!(from = here.seq, to = last, "catching up with the cluster's memory-graph log");
        }
        // Bounded by progress, not by length: a long log takes its time,
        // an unreadable one fails the join.
        while *applied.borrow_and_update() < last {
            if !matches!(tokio::time::timeout(STALLED, applied.changed()).await, Ok(Ok(()))) {
                log.close();
                return Err(graph_error(
                    &log.stream,
                    format!(
                        "catching up stalled at entry {} of {last} for {} s (see the log for why)",
                        log.applied(),
                        STALLED.as_secs()
                    ),
                ));
            }
        }
        if let Err(e) = graph.follow(Arc::clone(&log) as Arc<dyn WriteLog>) {
            log.close();
            return Err(graph_error(&log.stream, e));
        }
        Ok(log)
    }

    /// The last log position this host applied.
    pub(crate) fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Why this host stopped following the log, if it did.
    pub(crate) fn error(&self) -> Option<String> {
        self.broken.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops following the log for `why`: every waiting write and every
    /// later one fails with it.
    fn stall(&self, why: String) {
        tracing::error!(stream = %self.stream, "{why}");
        *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
        for (_, waiter) in self.waiting.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = waiter.try_send(Err(GraphError::Unavailable(why.clone())));
        }
    }

    /// Stops following the log; later writes fail at once.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Some(task) = self.follower.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Applies the stream's entries in order, from the one after the last
    /// applied; reconnects its consumer when it fails; stops (see
    /// [`GraphLog::stall`]) where going on would make this host's graph
    /// differ from the others'.
    async fn following(self: Arc<Self>, mut stream: stream::Stream, graph: Arc<MemoryGraph>) {
        loop {
            if let Err(why) = self.check_stream(&mut stream).await {
                return self.stall(why);
            }
            let start = self.applied() + 1;
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(c) => c.messages().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, stream = %self.stream, "cannot read the memory-graph log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, stream = %self.stream, "reading the memory-graph log");
                        break;
                    }
                };
                let Ok(seq) = message.info().map(|i| i.stream_sequence) else { continue };
                let next = self.applied() + 1;
                if seq < next {
                    continue; // delivered again
                }
                if seq > next {
                    return self.stall(format!(
                        "entries {next} to {} are missing from the memory-graph log {} (deleted or purged): \
                         this host stops applying it, since the hosts that applied them and those that did \
                         not would differ",
                        seq - 1,
                        self.stream
                    ));
                }
                let entry = match message.payload.split_first() {
                    Some((&FORMAT, rest)) => postcard::from_bytes::<Entry>(rest).map_err(|e| e.to_string()),
                    Some((&format, _)) => Err(format!("format {format}, this build reads {FORMAT}")),
                    None => Err(String::from("empty")),
                };
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(why) => {
                        return self.stall(format!(
                            "entry {seq} of the memory-graph log {} is not one this build reads ({why}): \
                             run the same elex on every host",
                            self.stream
                        ));
                    }
                };
                let result = match self.apply(&graph, LogPosition { log: self.log_id, seq }, entry).await {
                    Ok(result) => result,
                    Err(why) => return self.stall(why),
                };
                self.applied.send_replace(seq);
                let waiter = result.and_then(|(nonce, result)| {
                    Some((self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&nonce)?, result))
                });
                if let Some((waiter, result)) = waiter {
                    let _ = waiter.try_send(result);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the stream is still the one this host follows, with every
    /// entry it applied (checked whenever its consumer is made again).
    async fn check_stream(&self, stream: &mut stream::Stream) -> std::result::Result<(), String> {
        let info = match stream.info().await {
            Ok(info) => info.clone(),
            // Unreachable now: the consumer's own retries say so.
            Err(_) => return Ok(()),
        };
        if u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0) != self.log_id {
            return Err(format!(
                "the memory-graph log {} was deleted and created again: this host's graph follows the \
                 earlier one; restart the hosts with their memory.redb moved away",
                self.stream
            ));
        }
        if info.state.last_sequence < self.applied() {
            return Err(format!(
                "the memory-graph log {} ends at entry {} but this host applied up to {}: the NATS server \
                 lost entries",
                self.stream,
                info.state.last_sequence,
                self.applied()
            ));
        }
        Ok(())
    }

    /// Applies one entry, trying a storage failure again up to
    /// [`APPLY_TRIES`] times (an entry is never skipped); for this
    /// process's own writes, the nonce and the outcome. `Err`: why this
    /// host must stop following the log.
    async fn apply(
        &self,
        graph: &Arc<MemoryGraph>,
        at: LogPosition,
        entry: Entry,
    ) -> std::result::Result<Option<(u64, std::result::Result<Vec<bool>, GraphError>)>, String> {
        let (mine, write) = match entry {
            Entry::Write { host, incarnation, nonce, write } => (
                (host == self.host && incarnation == self.incarnation).then_some(nonce),
                Some(Arc::new(write)),
            ),
            Entry::Lease => (None, None),
        };
        let mut attempt = 1;
        loop {
            let (g, w) = (Arc::clone(graph), write.clone());
            let result =
                tokio::task::spawn_blocking(move || g.apply_logged(at, w.as_deref())).await.unwrap_or_else(
                    |e| Err(GraphError::Unavailable(format!("applying the entry panicked: {e}"))),
                );
            match result {
                Err(
                    e
                    @ (GraphError::Storage { .. } | GraphError::Corrupt { .. } | GraphError::Unavailable(_)),
                ) if attempt < APPLY_TRIES => {
                    tracing::error!(error = %e, seq = at.seq, attempt, "cannot apply an entry of the memory-graph log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    attempt += 1;
                }
                Err(
                    e
                    @ (GraphError::Storage { .. } | GraphError::Corrupt { .. } | GraphError::Unavailable(_)),
                ) => {
                    return Err(format!(
                        "entry {} of the memory-graph log {} failed {APPLY_TRIES} times on this host's graph: {e}",
                        at.seq, self.stream
                    ));
                }
                result => return Ok(mine.map(|nonce| (nonce, result))),
            }
        }
    }

    /// Sends `entry` (tagged `id` for JetStream's deduplication) and
    /// returns its position; sent again, under the same id, when its
    /// acknowledgement does not come.
    async fn publish(&self, entry: &Entry, id: &str) -> std::result::Result<u64, GraphError> {
        if let Some(why) = self.error() {
            return Err(GraphError::Unavailable(why));
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(GraphError::Unavailable(String::from("this host left the cluster")));
        }
        let mut bytes = vec![FORMAT];
        bytes.extend(postcard::to_allocvec(entry).map_err(|e| GraphError::Invalid(e.to_string()))?);
        if bytes.len() > self.max_payload {
            return Err(GraphError::LimitExceeded(format!(
                "this write is {} bytes; the cluster's memory-graph log takes at most {} bytes per write \
                 (the NATS server's max_payload): split it",
                bytes.len(),
                self.max_payload
            )));
        }
        let bytes = bytes::Bytes::from(bytes);
        let mut failure = String::new();
        for attempt in 1..=PUBLISH_TRIES {
            let message = jetstream::message::PublishMessage::build().payload(bytes.clone()).message_id(id);
            match self.js.send_publish(self.subject.clone(), message).await {
                Ok(ack) => match ack.await {
                    Ok(ack) => return Ok(ack.sequence),
                    Err(e) => failure = e.to_string(),
                },
                Err(e) => failure = e.to_string(),
            }
            tracing::warn!(error = %failure, attempt, "no acknowledgement from the memory-graph log; sending again");
        }
        Err(GraphError::Unavailable(format!(
            "the cluster's memory-graph log {} did not acknowledge this write ({failure}): it may still be \
             applied; look before writing it again",
            self.stream
        )))
    }

    fn message_id(&self, nonce: u64) -> String {
        format!("{}.{:x}.{nonce}", self.host, self.incarnation)
    }
}

impl WriteLog for GraphLog {
    fn append(&self, write: LoggedWrite) -> std::result::Result<Vec<bool>, GraphError> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(nonce, send);
        let entry = Entry::Write { host: self.host.clone(), incarnation: self.incarnation, nonce, write };
        let forget = || self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&nonce);
        let seq = match self.tokio.block_on(self.publish(&entry, &self.message_id(nonce))) {
            Ok(seq) => seq,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        match receive.recv_timeout(APPLY_TIMEOUT) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(GraphError::Unavailable(
                self.error().unwrap_or_else(|| String::from("this host left the cluster")),
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                forget();
                Err(GraphError::Unavailable(format!(
                    "the write is entry {seq} of the cluster's memory-graph log, but this host has not applied it \
                     within {} s: it applies when this host catches up",
                    APPLY_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn lease(&self) -> std::result::Result<Range<u64>, GraphError> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let seq = self.tokio.block_on(self.publish(&Entry::Lease, &self.message_id(nonce)))?;
        let start = seq
            .checked_mul(LEASE)
            .ok_or_else(|| GraphError::LimitExceeded(String::from("the memory-graph log ran out of ids")))?;
        Ok(start..start + LEASE)
    }
}
