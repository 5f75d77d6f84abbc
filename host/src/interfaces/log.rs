//! `elex:host/log`: guest log records become `tracing` events tagged with the
//! agent id.

use crate::bindings::elex::host::log::{Host, Level};

/// What `elex:host/log` needs of an instance: whose records they are.
pub(crate) struct LogState {
    pub(crate) agent_id: String,
}

/// Longest message kept; longer ones are cut (a guest must not be able to
/// flood the host's log).
const MAX_MESSAGE: usize = 4096;

fn cut(s: &str) -> &str {
    if s.len() <= MAX_MESSAGE {
        return s;
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Host for LogState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        // A record no subscriber takes costs no formatting (the feature
        // agents log every question at `info`).
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "elex::guest", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "elex::guest", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "elex::guest", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "elex::guest", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "elex::guest", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let agent = self.agent_id.as_str();
        let message = cut(&message);
        let fields = fields.iter().map(|(k, v)| format!("{k}={}", cut(v))).collect::<Vec<_>>().join(" ");
        match level {
            Level::Trace => tracing::trace!(target: "elex::guest", agent, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "elex::guest", agent, fields, "{message}"),
            Level::Info => tracing::info!(target: "elex::guest", agent, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "elex::guest", agent, fields, "{message}"),
            Level::Error => tracing::error!(target: "elex::guest", agent, fields, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_cannot_flood_the_log() {
        let long = "é".repeat(MAX_MESSAGE);
        let kept = cut(&long);
        assert!(kept.len() <= MAX_MESSAGE && long.starts_with(kept));
        assert_eq!(cut("short"), "short");
        // Any level, any fields: recorded, never a panic (with a subscriber
        // taking every record, so that the records are formatted).
        let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let recorded = std::sync::Arc::clone(&recorded);
            move || Sink(std::sync::Arc::clone(&recorded))
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut state = LogState { agent_id: String::from("a") };
            for level in [Level::Trace, Level::Debug, Level::Info, Level::Warn, Level::Error] {
                state.log(level, long.clone(), vec![(String::from("k"), long.clone())]);
            }
        });
        let text = String::from_utf8(recorded.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().all(|l| l.contains("agent=\"a\"") && l.len() < 3 * MAX_MESSAGE), "{text}");
    }

    /// Collects what a subscriber writes.
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
