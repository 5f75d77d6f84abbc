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
        // `tracing` evaluates an event's fields only when a subscriber takes
        // it: a record nobody takes costs no formatting (the feature agents
        // log every question at `info`).
        let agent = self.agent_id.as_str();
        let message = cut(&message);
        let fields = Fields(&fields);
        match level {
            Level::Trace => tracing::trace!(target: "elex::guest", agent, %fields, "{message}"),
            Level::Debug => tracing::debug!(target: "elex::guest", agent, %fields, "{message}"),
            Level::Info => tracing::info!(target: "elex::guest", agent, %fields, "{message}"),
            Level::Warn => tracing::warn!(target: "elex::guest", agent, %fields, "{message}"),
            Level::Error => tracing::error!(target: "elex::guest", agent, %fields, "{message}"),
        }
    }
}

/// A record's fields as `key=value key=value`, values cut to
/// [`MAX_MESSAGE`], written only when displayed.
struct Fields<'a>(&'a [(String, String)]);

impl std::fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{k}={}", cut(v))?;
        }
        Ok(())
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
