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
        cluster: &str,
        replicas: usize,
        host: &str,
        incarnation: u64,
        graph: Arc<MemoryGraph>,
    ) -> Result<Arc<GraphLog>> {
        let js = jetstream::new(client.clone());
        let name = format!("elex-{cluster}-graph");
        let subject = format!("elex.{cluster}.graph");
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some(String::from(
                    "elex: every write to the memory graph, in the order every host applies them",
                )),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: replicas.max(1),
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
        if here.seq != 0 && (here.log != log_id || here.seq > last) {
            return Err(graph_error(
                &name,
                format!(
                    "the memory graph {file} followed another log of this name (created again since); {rebuild}"
                ),
            ));
        }
        if info.state.messages > 0 && here.seq + 1 < first {
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
            host: host.to_string(),
            incarnation,
            log_id,
            tokio: tokio::runtime::Handle::current(),
            max_payload: client.server_info().max_payload,
            nonce: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
            applied: watch::Sender::new(here.seq),
            closed: AtomicBool::new(false),
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
        graph.follow(Arc::clone(&log) as Arc<dyn WriteLog>).map_err(|e| graph_error(&log.stream, e))?;
        Ok(log)
    }

    /// The last log position this host applied.
    pub(crate) fn applied(&self) -> u64 {
        *self.applied.borrow()
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
    /// applied; reconnects its consumer when it fails.
    async fn following(self: Arc<Self>, stream: stream::Stream, graph: Arc<MemoryGraph>) {
        loop {
            let start = self.applied() + 1;
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start },
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(c) => c.messages().await,
                Err(e) => {
                    tracing::error!(error = %e, stream = %self.stream, "cannot read the memory-graph log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
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
                if seq <= self.applied() {
                    continue;
                }
                if seq != self.applied() + 1 {
                    tracing::warn!(
                        expected = self.applied() + 1,
                        got = seq,
                        "gap in the memory-graph log; reading again"
                    );
                    break;
                }
                let entry = postcard::from_bytes::<Entry>(&message.payload).ok();
                if entry.is_none() {
                    // Every host skips it alike (it changes nothing).
                    tracing::warn!(seq, "an entry of the memory-graph log does not decode; skipped");
                }
                let result = self.apply(&graph, LogPosition { log: self.log_id, seq }, entry).await;
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

    /// Applies one entry (retrying storage failures: an entry is never
    /// skipped); for this process's own writes, the nonce and the outcome.
    async fn apply(
        &self,
        graph: &Arc<MemoryGraph>,
        at: LogPosition,
        entry: Option<Entry>,
    ) -> Option<(u64, std::result::Result<Vec<bool>, GraphError>)> {
        let mine = match &entry {
            Some(Entry::Write { host, incarnation, nonce, .. })
                if *host == self.host && *incarnation == self.incarnation =>
            {
                Some(*nonce)
            }
            _ => None,
        };
        let write = match entry {
            Some(Entry::Write { write, .. }) => Some(Arc::new(write)),
            _ => None,
        };
        loop {
            let (g, w) = (Arc::clone(graph), write.clone());
            let result =
                tokio::task::spawn_blocking(move || g.apply_logged(at, w.as_deref())).await.unwrap_or_else(
                    |e| Err(GraphError::Unavailable(format!("applying the entry panicked: {e}"))),
                );
            match result {
                Err(e @ (GraphError::Storage { .. } | GraphError::Corrupt { .. })) => {
                    tracing::error!(error = %e, seq = at.seq, "cannot apply an entry of the memory-graph log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                result => return mine.map(|nonce| (nonce, result)),
            }
        }
    }

    async fn publish(&self, entry: &Entry) -> std::result::Result<u64, GraphError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(GraphError::Unavailable(String::from("this host left the cluster")));
        }
        let bytes = postcard::to_allocvec(entry).map_err(|e| GraphError::Invalid(e.to_string()))?;
        if bytes.len() > self.max_payload {
            return Err(GraphError::LimitExceeded(format!(
                "this write is {} bytes; the cluster's memory-graph log takes at most {} bytes per write \
                 (the NATS server's max_payload): split it",
                bytes.len(),
                self.max_payload
            )));
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            GraphError::Unavailable(format!(
                "cannot append to the cluster's memory-graph log {}: {e}",
                self.stream
            ))
        };
        let ack = self.js.publish(self.subject.clone(), bytes.into()).await.map_err(|e| unavailable(&e))?;
        Ok(ack.await.map_err(|e| unavailable(&e))?.sequence)
    }
}

impl WriteLog for GraphLog {
    fn append(&self, write: LoggedWrite) -> std::result::Result<Vec<bool>, GraphError> {
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(nonce, send);
        let entry = Entry::Write { host: self.host.clone(), incarnation: self.incarnation, nonce, write };
        let forget = || self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&nonce);
        let seq = match self.tokio.block_on(self.publish(&entry)) {
            Ok(seq) => seq,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        match receive.recv_timeout(APPLY_TIMEOUT) {
            Ok(result) => result,
            Err(_) => {
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
        let seq = self.tokio.block_on(self.publish(&Entry::Lease))?;
        let start = seq
            .checked_mul(LEASE)
            .ok_or_else(|| GraphError::LimitExceeded(String::from("the memory-graph log ran out of ids")))?;
        Ok(start..start + LEASE)
    }
}
