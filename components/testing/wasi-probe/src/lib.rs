//! An ordinary `std` Rust plugin, built for `wasm32-wasip2` like any author's
//! first plugin: it imports WASI (clocks, random, stdio, environment,
//! filesystem, sockets) whether it uses them or not. The host's tests use it
//! to check what the deny-by-default WASI grants. `handle` acts on the query
//! text:
//!
//! | text | does | the host must answer |
//! |---|---|---|
//! | `print <words>` | prints the words to stdout and stderr | the words in the host's log; an answer |
//! | `flood` | prints 1 MiB to stdout | an answer (output past the per-call limit dropped) |
//! | `env` | counts environment variables and arguments | `env 0 args 0` |
//! | `read <path>` | reads a file | the error (no directory is open to it) |
//! | `list` | lists `/` and `.` | the errors |
//! | `connect <addr>` | opens a TCP connection | the error (every address refused) |
//! | `clock` | reads the wall and monotonic clocks | a time after 2020 |
//! | `random` | draws 16 random bytes twice; fills a `HashMap` (seeded from WASI) | two different draws |
//! | `sleep` | sleeps an hour | its time budget |
//! | `exit` | `std::process::exit(3)` | a trap |
//! | `panic` | panics | a trap |
//!
//! Anything else is echoed back.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "elex:platform/plugin@0.1.0",
    path: "../../../wit",
    generate_all,
});

use elex::agent::types::{
    Action, AgentConfig, AgentError, CounterSample, HealthReport, HealthStatus, KpiValue, ParameterValue,
    Query, Response, Validation,
};
use exports::elex::agent::agent::Guest;

struct Probe;

fn answer(query: Query, content: String) -> Response {
    Response {
        query_id: query.id,
        agent_id: String::from("wasi-probe"),
        action: Action::DirectAnswer,
        content,
        confidence: 1.0,
        q_value: 0.0,
        sources: Vec::new(),
    }
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // wasi:random/random under the hood.
    getrandom::fill(&mut bytes).expect("wasi:random answers");
    bytes
}

impl Guest for Probe {
    fn init(_config: AgentConfig) -> Result<(), AgentError> {
        println!("wasi-probe starting");
        Ok(())
    }

    fn handle(query: Query) -> Result<Response, AgentError> {
        let text = query.text.clone();
        let (verb, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        let content = match verb {
            "print" => {
                println!("{rest}");
                eprintln!("{rest} (stderr)");
                String::from("printed")
            }
            "flood" => {
                let line = "x".repeat(1023);
                let mut out = std::io::stdout().lock();
                for _ in 0..1024 {
                    let _ = writeln!(out, "{line}");
                }
                String::from("flooded")
            }
            "env" => format!("env {} args {}", std::env::vars_os().count(), std::env::args_os().count()),
            "read" => match std::fs::read(rest) {
                Ok(bytes) => format!("read {} bytes", bytes.len()),
                Err(e) => format!("read refused: {e}"),
            },
            "list" => ["/", "."]
                .iter()
                .map(|dir| match std::fs::read_dir(dir) {
                    Ok(entries) => format!("{dir}: {} entries", entries.count()),
                    Err(e) => format!("{dir}: refused: {e}"),
                })
                .collect::<Vec<_>>()
                .join("; "),
            "connect" => match std::net::TcpStream::connect(rest) {
                Ok(_) => String::from("connected"),
                Err(e) => format!("connect refused: {e}"),
            },
            "clock" => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let t = Instant::now();
                format!("unix {now} monotonic-ok {}", t.elapsed() < Duration::from_secs(60))
            }
            "random" => {
                let a = random_bytes();
                let b = random_bytes();
                let map: HashMap<u32, u32> = (0..100).map(|i| (i, i)).collect();
                format!("random differ {} map {}", a != b, map.len())
            }
            "sleep" => {
                std::thread::sleep(Duration::from_secs(3600));
                String::from("woke after an hour")
            }
            "exit" => std::process::exit(3),
            "panic" => panic!("asked to panic"),
            _ => text.clone(),
        };
        Ok(answer(query, content))
    }

    fn feedback(_query_id: String, _reward: f32) -> Result<(), AgentError> {
        Ok(())
    }

    fn validate(_parameters: Vec<ParameterValue>) -> Result<Vec<Validation>, AgentError> {
        Ok(Vec::new())
    }

    fn kpis(_samples: Vec<CounterSample>) -> Result<Vec<KpiValue>, AgentError> {
        Ok(Vec::new())
    }

    fn snapshot() -> Result<Vec<u8>, AgentError> {
        Ok(Vec::new())
    }

    fn restore(_bytes: Vec<u8>) -> Result<(), AgentError> {
        Ok(())
    }

    fn health() -> HealthReport {
        HealthReport { status: HealthStatus::Healthy, detail: String::from("ok") }
    }
}

export!(Probe);
