//! Router corrections across a cluster. A correction (feedback naming the
//! agent a question was meant for) is learned by the host that answered,
//! then recorded in the key-value bucket `elex-<cluster>-corrections`;
//! every host, and every host that joins later, follows the bucket and
//! learns the same example question, so a similar question goes to the
//! corrected agent whichever host routes it.

use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;
use elex_ran::host::snapshots::Example;
use serde::{Deserialize, Serialize};

use crate::{Cluster, Error, Result, key_token};

/// A correction as its bucket keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedCorrection {
    /// The agent the question was meant for.
    agent: String,
    /// The question.
    text: String,
    /// Who gave the correction.
    operator: String,
    /// The corrected answer's cluster query id (`HOST:ID`).
    query_id: String,
    /// When, in milliseconds since the Unix epoch.
    millis: u64,
    /// The host that recorded it, and that host's process.
    host: String,
    incarnation: u64,
}

impl Cluster {
    /// Records a correction this host learned — `agent` was meant by the
    /// question of cluster query `query_id` — so that every host learns
    /// it. From a blocking thread.
    pub fn share_correction_blocking(&self, agent: &str, example: &Example) -> Result<()> {
        let record = SharedCorrection {
            agent: agent.to_string(),
            text: example.text.clone(),
            operator: example.operator.clone(),
            query_id: example.query_id.clone(),
            millis: example.millis,
            host: self.config.host_id.clone(),
            incarnation: self.incarnation,
        };
        let value = Bytes::from(serde_json::to_vec(&record).map_err(|e| Error::Nats(e.to_string()))?);
        // One record per corrected answer.
        let key = key_token(&example.query_id);
        self.tokio.block_on(self.corrections.put(key.as_str(), value)).map_err(|e| Error::State {
            bucket: self.config.store("corrections"),
            detail: format!("cannot record the correction of {}: {e}", example.query_id),
        })?;
        Ok(())
    }

    /// Follows the corrections bucket (those recorded so far first): learns
    /// each correction another process recorded.
    pub(crate) async fn following_corrections(self: Arc<Self>, mut watch: kv::Watch) {
        let bucket = self.config.store("corrections");
        while let Some(entry) = crate::next_entry(&mut watch, &bucket).await {
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(c) = serde_json::from_slice::<SharedCorrection>(&entry.value) else {
                tracing::warn!(key = %entry.key, "a malformed correction was ignored");
                continue;
            };
            if key_token(&c.query_id) != entry.key
                || (c.host == self.config.host_id && c.incarnation == self.incarnation)
            {
                continue;
            }
            let runtime = Arc::clone(&self.runtime);
            let example =
                Example { text: c.text, operator: c.operator, query_id: c.query_id, millis: c.millis };
            let agent = c.agent.clone();
            match tokio::task::spawn_blocking(move || runtime.learn_example(&agent, &example)).await {
                Ok(Ok(_)) => {
                    tracing::info!(agent = %c.agent, from = %c.host, "learned a correction given on another host")
                }
                Ok(Err(e)) => {
                    tracing::warn!(agent = %c.agent, error = %e, "a correction given on another host was not learned")
                }
                Err(e) => tracing::warn!(error = %e, "learning a correction panicked"),
            }
        }
        tracing::error!(
            "the corrections bucket's watch ended: corrections given elsewhere are no longer learned"
        );
    }
}
