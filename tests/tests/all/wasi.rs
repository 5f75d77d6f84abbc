//! WASI for plugins, deny by default: an ordinary `std` Rust plugin (the
//! `testing-wasi-probe` fixture, which imports WASI as every `wasm32-wasip2`
//! std build does) loads as it comes, gets clocks, random and its output in
//! the host's log, and nothing else: no environment, no files, no network;
//! a sleep is stopped by the time budget like a loop.

use std::io::Write;
use std::time::Duration;

use elex_host::{AgentConfig, AgentInstance, BudgetKind, Budgets, Error, Grants, Host, HostConfig};
use elex_tests::component_path;

fn host() -> Host {
    Host::new(HostConfig {
        budgets: Budgets { call_deadline: Duration::from_millis(300), ..Budgets::default() },
        ..HostConfig::default()
    })
    .unwrap()
}

fn probe(host: &Host) -> AgentInstance {
    probe_granted(host, Grants::default())
}

fn probe_granted(host: &Host, grants: Grants) -> AgentInstance {
    let mut loaded = host.load_unsigned_file(&component_path("testing-wasi-probe")).unwrap();
    loaded.grants = std::sync::Arc::new(grants);
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

thread_local! {
    /// What the log wrote on this thread while [`logged`] collected it.
    static CAPTURED: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Writes a log line into this thread's [`CAPTURED`] buffer, if it has one.
struct ThreadBuffer;

impl Write for ThreadBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with_borrow_mut(|c| c.as_mut().map(|c| c.extend_from_slice(buf)));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Log lines written on this thread while `f` runs. One global subscriber
/// for the test binary (a per-thread default would race with tracing's
/// per-callsite interest cache across parallel tests).
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadBuffer)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in the tests");
    });
    CAPTURED.with_borrow_mut(|c| *c = Some(Vec::new()));
    let out = f();
    let bytes = CAPTURED.with_borrow_mut(Option::take).unwrap_or_default();
    (out, String::from_utf8_lossy(&bytes).into_owned())
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

#[test]
fn granted_capabilities_reach_exactly_what_was_granted() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tides.txt"), b"high 06:10").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let granted = listener.local_addr().unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grants = Grants {
        env: vec![String::from("PATH")],
        read: vec![(String::from("/data"), dir.path().to_path_buf())],
        connect: vec![granted],
    };
    let mut agent = probe_granted(&host, grants);
    // One variable, the granted one.
    assert_eq!(ask(&host, &mut agent, "env"), "env 1 args 0");
    // The granted directory, read only, and nothing outside it.
    assert_eq!(ask(&host, &mut agent, "read /data/tides.txt"), "read 10 bytes");
    for path in ["/data/../etc/hostname", "/etc/hostname", "/data/missing"] {
        let answer = ask(&host, &mut agent, &format!("read {path}"));
        assert!(answer.starts_with("read refused:"), "{path}: {answer}");
    }
    // The granted address, and no other.
    assert_eq!(ask(&host, &mut agent, &format!("connect {granted}")), "connected");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok(), "the granted connection did not arrive");
    let answer = ask(&host, &mut agent, &format!("connect {}", other.local_addr().unwrap()));
    assert!(answer.starts_with("connect refused:"), "{answer}");
}
