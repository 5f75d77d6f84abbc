//! WASI for plugins, deny by default: an ordinary `std` Rust plugin (the
//! `testing-wasi-probe` fixture, which imports WASI as every `wasm32-wasip2`
//! std build does) loads as it comes, gets clocks, random and its output in
//! the host's log, and nothing else: no environment, no files, no network;
//! a sleep is stopped by the time budget like a loop.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elex_host::{AgentConfig, AgentInstance, BudgetKind, Budgets, Error, Host, HostConfig};
use elex_tests::component_path;

fn host() -> Host {
    Host::new(HostConfig {
        budgets: Budgets { call_deadline: Duration::from_millis(300), ..Budgets::default() },
        ..HostConfig::default()
    })
    .unwrap()
}

fn probe(host: &Host) -> AgentInstance {
    let loaded = host.load_unsigned_file(&component_path("testing-wasi-probe")).unwrap();
    assert!(
        loaded.interfaces.imports.iter().any(|i| i.starts_with("wasi:cli/")),
        "the fixture is meant to import WASI: {:?}",
        loaded.interfaces.imports
    );
    let config = AgentConfig {
        agent_id: "probe".into(),
        name: "probe".into(),
        settings: vec![],
        document: String::new(),
    };
    host.instantiate(&loaded, config).unwrap()
}

fn ask(host: &Host, agent: &mut AgentInstance, text: &str) -> String {
    agent.handle(&host.query(text)).unwrap_or_else(|e| panic!("{text}: {e}")).content
}

/// Log lines written while `f` runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    (out, text)
}

#[test]
fn a_std_plugin_loads_and_gets_clocks_random_and_its_output_in_the_log() {
    let host = host();
    let ((), log) = logged(|| {
        let mut agent = probe(&host);
        assert_eq!(ask(&host, &mut agent, "print hello from a plugin"), "printed");
        let clock = ask(&host, &mut agent, "clock");
        let unix: u64 = clock.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(unix > 1_600_000_000, "{clock}");
        assert!(clock.ends_with("monotonic-ok true"), "{clock}");
        assert_eq!(ask(&host, &mut agent, "random"), "random differ true map 100");
        assert_eq!(ask(&host, &mut agent, "echo this"), "echo this");
    });
    for (line, stream) in [
        ("wasi-probe starting", "stdout"),
        ("hello from a plugin agent", "stdout"),
        ("hello from a plugin (stderr)", "stderr"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("elex::guest")
                && l.contains("agent=probe")
                && l.contains(line)
                && l.contains(&format!("stream=\"{stream}\""))),
            "`{line}` is not in the log:\n{log}"
        );
    }
}

#[test]
fn a_plugin_gets_no_environment_files_or_network() {
    let host = host();
    let mut agent = probe(&host);
    // The host's own environment (PATH at least) is not the guest's.
    assert!(std::env::vars_os().count() > 0);
    assert_eq!(ask(&host, &mut agent, "env"), "env 0 args 0");
    // Files the host can read are not there for the guest.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), b"secret").unwrap();
    for path in [secret.path().to_str().unwrap(), "/etc/hostname", "Cargo.toml", "../Cargo.toml"] {
        let answer = ask(&host, &mut agent, &format!("read {path}"));
        assert!(answer.starts_with("read refused:"), "{path}: {answer}");
    }
    let listing = ask(&host, &mut agent, "list");
    assert_eq!(listing.matches("refused").count(), 2, "{listing}");
    // A listening socket on loopback the guest must not reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = ask(&host, &mut agent, &format!("connect {addr}"));
    assert!(answer.starts_with("connect refused:"), "{answer}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the guest reached the host's socket");
}

#[test]
fn a_sleeping_plugin_is_stopped_by_its_time_budget_like_a_looping_one() {
    let host = host();
    let mut agent = probe(&host);
    let err = agent.handle(&host.query("sleep")).unwrap_err();
    assert!(
        matches!(err, Error::Budget { kind: BudgetKind::Time, call: "handle", .. }),
        "an hour's sleep must end at the time budget: {err}"
    );
    // exit and panic are traps of that instance only.
    for text in ["exit", "panic"] {
        let mut agent = probe(&host);
        let err = agent.handle(&host.query(text)).unwrap_err();
        assert!(matches!(err, Error::Trap { .. }), "{text}: {err}");
    }
}

#[test]
fn output_past_the_per_call_limit_is_dropped_and_the_call_still_answers() {
    let host = host();
    let ((), log) = logged(|| {
        let mut agent = probe(&host);
        assert_eq!(ask(&host, &mut agent, "flood"), "flooded");
        // The next call has its own allowance.
        assert_eq!(ask(&host, &mut agent, "print after the flood"), "printed");
    });
    let kept = log.lines().filter(|l| l.contains(&"x".repeat(1023))).count();
    assert!(kept > 0 && kept < 1024, "{kept} of 1024 flood lines were logged");
    assert!(
        log.contains("over the per-call limit"),
        "no warning:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert!(log.lines().any(|l| l.contains("after the flood")));
}
