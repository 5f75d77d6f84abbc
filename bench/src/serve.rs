//! The `serve` suite: `elex serve` over loopback, client and server on this
//! machine. Keep-alive clients (plain HTTP/1.1 on std sockets, one thread
//! each) post questions to `/v1/query` for a bounded time at 1, 8, 32 and
//! 128 concurrent clients: throughput, p50/p99 latency, the share of 503
//! (`--max-in-flight`) answers, the server's RSS before and after; then 60 s
//! more at 32 clients, watching whether the RSS still grows. Then
//! the same 32-client load while abusive clients run beside it — malformed
//! JSON, oversized bodies, bad tokens, unknown agents, slow clients
//! (slowloris-style, bounded), and a hostile plugin that loops on every
//! question until its time budget stops it — and what each abuse got.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use elex_ran::Catalog;

use crate::{Row, quantile};

/// How long each concurrency level runs.
pub(crate) const LEVEL_TIME: Duration = Duration::from_secs(6);
/// The steady load after the levels, watching the server's memory.
const SOAK_TIME: Duration = Duration::from_secs(60);
/// The first part of each level, not measured (connections, caches).
const WARMUP: Duration = Duration::from_secs(1);
pub(crate) const OPERATOR: &str = "bench-operator-token-0123456789";

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_mib(&self) -> f64 {
        rss_mib_of(self.child.id())
    }
}

/// The resident memory of process `pid`, in MiB (0 when unknown).
pub(crate) fn rss_mib_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn start(data: &Path, access: &Path) -> Result<Server> {
    let bin = std::env::current_exe()?.with_file_name("elex");
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-unsigned", "--max-in-flight", "64"])
        .arg("--access")
        .arg(access)
        .env("ELEX_DATA_DIR", data)
        .env("ELEX_REGISTRY", root().join("target/registry"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().ok_or_else(|| anyhow!("no stdout"))?).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .ok_or_else(|| anyhow!("elex serve said {line:?}"))?
        .to_string();
    Ok(Server { child, addr })
}

/// A keep-alive HTTP/1.1 connection.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Client {
    pub(crate) fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client { reader: BufReader::new(stream), addr: addr.to_string() })
    }

    /// One request; its status (the body is read and dropped).
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<u16> {
        self.exchange(method, path, token, body).map(|(status, _)| status)
    }

    /// One request; its status and body.
    pub(crate) fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        // One write, as HTTP clients send a small request: two would reach
        // the server as two segments, waking it twice per request.
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.reader.get_mut().write_all(&request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 =
            line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("{line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            close |= lower == "connection: close";
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        ensure!(!close, "the server closed the connection");
        Ok((status, body))
    }
}

/// Questions like the swarm suite's: every kind, many features.
pub(crate) fn questions() -> Result<Vec<Vec<u8>>> {
    let catalog = Catalog::embedded().map_err(|e| anyhow!("{e}"))?;
    Ok((0..512)
        .map(|k| {
            let f = &catalog.features[(k * 7919) % catalog.features.len()];
            let text = match k % 4 {
                0 => format!("What is {}?", f.name),
                1 => format!("Which counters show the effect of {}?", f.name),
                2 => format!("What does {} require?", f.name),
                _ => format!("When should {} be enabled?", f.faj),
            };
            serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
        })
        .collect())
}

/// What a load level measured.
pub(crate) struct Level {
    pub(crate) ok_latencies_us: Vec<f64>,
    pub(crate) statuses: std::collections::BTreeMap<u16, u64>,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
}

/// `clients` keep-alive clients asking for `LEVEL_TIME`.
fn load(addr: &str, clients: usize, questions: &Arc<Vec<Vec<u8>>>) -> Level {
    load_for(&[addr], clients, questions, LEVEL_TIME)
}

/// `clients` keep-alive clients asking for `time` (the first second not
/// measured), spread over the servers at `addrs`.
pub(crate) fn load_for(
    addrs: &[&str],
    clients: usize,
    questions: &Arc<Vec<Vec<u8>>>,
    time: Duration,
) -> Level {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let measure_from = started + WARMUP;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, stop, questions) =
                (addrs[c % addrs.len()].to_string(), stop.clone(), questions.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut statuses = std::collections::BTreeMap::new();
                let mut errors = 0;
                let mut client = Client::connect(&addr).ok();
                let mut k = c * 31;
                while !stop.load(Ordering::Relaxed) {
                    let Some(conn) = client.as_mut() else {
                        errors += 1;
                        client = Client::connect(&addr).ok();
                        continue;
                    };
                    let t = Instant::now();
                    let result =
                        conn.request("POST", "/v1/query", Some(OPERATOR), &questions[k % questions.len()]);
                    k += 1;
                    if t < measure_from {
                        continue;
                    }
                    match result {
                        Ok(status) => {
                            *statuses.entry(status).or_insert(0u64) += 1;
                            if status == 200 {
                                latencies.push(t.elapsed().as_secs_f64() * 1e6);
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            client = Client::connect(&addr).ok();
                        }
                    }
                }
                (latencies, statuses, errors)
            })
        })
        .collect();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let mut level = Level {
        ok_latencies_us: Vec::new(),
        statuses: Default::default(),
        errors: 0,
        seconds: (time - WARMUP).as_secs_f64(),
    };
    for t in threads {
        if let Ok((l, s, e)) = t.join() {
            level.ok_latencies_us.extend(l);
            for (k, v) in s {
                *level.statuses.entry(k).or_insert(0) += v;
            }
            level.errors += e;
        }
    }
    level
}

pub(crate) fn write_access(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("access.json");
    let text = format!(
        r#"{{"tokens": [{{"name": "bench", "token": "{OPERATOR}", "role": "admin"}}], "anonymous": null}}"#
    );
    std::fs::write(&path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(path)
}

/// A plugin that loops on every question until its 200 ms budget stops
/// it: the hostile test component with a manifest.
fn hostile_plugin() -> Result<Vec<u8>> {
    let bytes = std::fs::read(root().join("target/components/testing-hostile.wasm"))?;
    let manifest = elex_registry::Manifest::from_toml(
        "id = \"looper\"\nname = \"Looper\"\ndescription = \"loops\"\n[budgets]\ntime-ms = 200\n",
    )
    .map_err(|e| anyhow!("{e}"))?;
    manifest.embed(&bytes).map_err(|e| anyhow!("{e}"))
}

pub fn run(out: &Path) -> Result<()> {
    let work = tempfile::tempdir()?;
    let access = write_access(work.path())?;
    let server = start(&work.path().join("data"), &access)?;
    let questions = Arc::new(questions()?);
    let mut rows = Vec::new();
    let rss_start = server.rss_mib();
    // Every question once: each agent asked has grown its memory to what it
    // needs; growth after this is what the load adds.
    let mut warm = Client::connect(&server.addr)?;
    for q in questions.iter() {
        warm.request("POST", "/v1/query", Some(OPERATOR), q)?;
    }
    let rss_warm = server.rss_mib();
    let mut requests = 0u64;
    let mut table = Vec::new();
    for clients in [1usize, 8, 32, 128] {
        let mut level = load(&server.addr, clients, &questions);
        let total: u64 = level.statuses.values().sum::<u64>() + level.errors;
        requests += total;
        let ok = level.statuses.get(&200).copied().unwrap_or(0);
        let busy = level.statuses.get(&503).copied().unwrap_or(0);
        let qps = ok as f64 / level.seconds;
        let (p50, p99) = if level.ok_latencies_us.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (quantile(&mut level.ok_latencies_us, 0.5), quantile(&mut level.ok_latencies_us, 0.99))
        };
        let share_503 = busy as f64 / total.max(1) as f64;
        table.push(format!(
            "{clients:>4} clients  {qps:>8.0} answers/s  p50 {p50:>7.0} µs  p99 {p99:>7.0} µs  503 {:.1} %  other {:?}  errors {}",
            share_503 * 100.0,
            level.statuses.iter().filter(|(s, _)| **s != 200 && **s != 503).collect::<Vec<_>>(),
            level.errors
        ));
        let settings = format!("{clients} keep-alive clients, {:.0} s measured", level.seconds);
        rows.push(
            Row::new(&format!("answers/s, {clients} clients"), "q/s", qps, None).settings(settings.clone()),
        );
        rows.push(Row::new(&format!("p50, {clients} clients"), "µs", p50, None).settings(settings.clone()));
        rows.push(Row::new(&format!("p99, {clients} clients"), "µs", p99, None).settings(settings.clone()));
        rows.push(
            Row::new(&format!("503 share, {clients} clients"), "fraction", share_503, None)
                .settings(settings),
        );
        rows.push(
            Row::new(&format!("server RSS after {clients} clients"), "MiB", server.rss_mib(), None)
                .settings(format!("after {requests} requests in all")),
        );
    }
    // A longer steady load: does the server's memory keep growing?
    let soak_start = server.rss_mib();
    let soak_time = std::env::var("ELEX_BENCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(SOAK_TIME, Duration::from_secs);
    // The RSS every 10 s while it runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, pid) = (sampling.clone(), server.child.id());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(10));
                samples.push(rss_mib_of(pid));
            }
            samples
        })
    };
    let mut soak = load_for(&[&server.addr], 32, &questions, soak_time);
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let soak_requests: u64 = soak.statuses.values().sum::<u64>() + soak.errors;
    requests += soak_requests;
    let soak_end = server.rss_mib();
    let soak_qps = soak.statuses.get(&200).copied().unwrap_or(0) as f64 / soak.seconds;
    let soak_p99 = quantile(&mut soak.ok_latencies_us, 0.99);
    table.push(format!(
        "soak: 32 clients for {} s: {soak_qps:.0} answers/s, p99 {soak_p99:.0} µs, RSS {soak_start:.0} -> {soak_end:.0} MiB over {soak_requests} requests; every 10 s: {:?}",
        soak_time.as_secs(),
        samples.iter().map(|m| m.round()).collect::<Vec<_>>()
    ));
    rows.push(Row::new("server RSS growth over the soak", "MiB", soak_end - soak_start, None).settings(
        format!("32 clients, {} s, {soak_requests} requests, from {soak_start:.0} MiB", soak_time.as_secs()),
    ));
    let rss_end = server.rss_mib();
    rows.push(
        Row::new("server RSS before the load", "MiB", rss_start, None)
            .settings(String::from("593 agents live, nothing asked")),
    );
    rows.push(
        Row::new("server RSS after warm-up", "MiB", rss_warm, None)
            .settings(format!("after every one of the {} questions once", questions.len())),
    );
    rows.push(
        Row::new("server RSS after the load", "MiB", rss_end, None)
            .settings(format!("after {requests} requests")),
    );

    // Abuse beside a 32-client load.
    let mut admin = Client::connect(&server.addr)?;
    let wasm = hostile_plugin()?;
    let status = {
        let auth = format!("Authorization: Bearer {OPERATOR}\r\n");
        let mut stream = TcpStream::connect(&server.addr)?;
        write!(
            stream,
            "POST /v1/plugins HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            wasm.len()
        )?;
        stream.write_all(&wasm)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response.split(' ').nth(1).unwrap_or_default().to_string()
    };
    ensure!(status == "201", "loading the hostile plugin: {status}");
    admin.request("GET", "/ready", None, b"")?;
    let stop = Arc::new(AtomicBool::new(false));
    let abusers: Vec<(&str, std::thread::JoinHandle<std::collections::BTreeMap<String, u64>>)> = [
        ("malformed JSON", 0usize),
        ("oversized body", 1),
        ("bad token", 2),
        ("unknown agent", 3),
        ("hostile plugin looping (8 clients: more than the query threads)", 4),
        ("slow clients (20 connections, a byte a second)", 5),
    ]
    .into_iter()
    .map(|(name, kind)| {
        let (addr, stop) = (server.addr.clone(), stop.clone());
        (
            name,
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::new();
                if kind == 5 {
                    let mut slow: Vec<TcpStream> =
                        (0..20).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let byte = b"POST /v1/query HTTP/1.1\r\n"[i % 25];
                        slow.retain_mut(|s| s.write_all(&[byte]).is_ok());
                        i += 1;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    *seen.entry(format!("{} of 20 still open", slow.len())).or_insert(0) += 1;
                    return seen;
                }
                if kind == 4 {
                    // More clients than query threads, all asking the
                    // looping agent: the others must still be answered.
                    let all: Vec<_> = (0..8)
                        .map(|_| {
                            let (addr, stop) = (addr.clone(), stop.clone());
                            std::thread::spawn(move || {
                                let mut seen = std::collections::BTreeMap::new();
                                let Ok(mut client) = Client::connect(&addr) else { return seen };
                                while !stop.load(Ordering::Relaxed) {
                                    let body = b"{\"text\": \"loop\", \"agent\": \"looper\"}";
                                    let key = match client.request("POST", "/v1/query", Some(OPERATOR), body)
                                    {
                                        Ok(status) => status.to_string(),
                                        Err(e) => {
                                            client = match Client::connect(&addr) {
                                                Ok(c) => c,
                                                Err(_) => break,
                                            };
                                            format!(
                                                "connection: {}",
                                                e.to_string().chars().take(40).collect::<String>()
                                            )
                                        }
                                    };
                                    *seen.entry(key).or_insert(0u64) += 1;
                                }
                                seen
                            })
                        })
                        .collect();
                    for t in all {
                        for (k, v) in t.join().unwrap_or_default() {
                            *seen.entry(k).or_insert(0) += v;
                        }
                    }
                    return seen;
                }
                let Ok(mut client) = Client::connect(&addr) else { return seen };
                while !stop.load(Ordering::Relaxed) {
                    let big = vec![b'x'; 100 * 1024];
                    let result = match kind {
                        0 => client.request("POST", "/v1/query", Some(OPERATOR), b"{\"text\": "),
                        1 => client.request("POST", "/v1/query", Some(OPERATOR), &big),
                        2 => client.request(
                            "POST",
                            "/v1/query",
                            Some("not-a-real-token-000000"),
                            b"{\"text\": \"hi\"}",
                        ),
                        // 3 (4 and 5 are handled above): an unknown agent.
                        _ => client.request(
                            "POST",
                            "/v1/query",
                            Some(OPERATOR),
                            b"{\"text\": \"hi\", \"agent\": \"FAJ 999 9999\"}",
                        ),
                    };
                    let key = match result {
                        Ok(status) => status.to_string(),
                        Err(e) => {
                            client = match Client::connect(&addr) {
                                Ok(c) => c,
                                Err(_) => break,
                            };
                            format!("connection: {}", e.to_string().chars().take(40).collect::<String>())
                        }
                    };
                    *seen.entry(key).or_insert(0) += 1;
                }
                seen
            }),
        )
    })
    .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut level = load(&server.addr, 32, &questions);
    stop.store(true, Ordering::Relaxed);
    let ok = level.statuses.get(&200).copied().unwrap_or(0);
    let qps = ok as f64 / level.seconds;
    let (p50, p99) = (quantile(&mut level.ok_latencies_us, 0.5), quantile(&mut level.ok_latencies_us, 0.99));
    table.push(format!(
        "  32 clients beside the abusers  {qps:>8.0} answers/s  p50 {p50:>7.0} µs  p99 {p99:>7.0} µs  statuses {:?}",
        level.statuses
    ));
    let settings = String::from("32 keep-alive clients while abusive clients run beside them");
    rows.push(Row::new("answers/s under abuse, 32 clients", "q/s", qps, None).settings(settings.clone()));
    rows.push(Row::new("p50 under abuse, 32 clients", "µs", p50, None).settings(settings.clone()));
    rows.push(Row::new("p99 under abuse, 32 clients", "µs", p99, None).settings(settings));
    for (name, handle) in abusers {
        let seen = handle.join().map_err(|_| anyhow!("an abuser panicked"))?;
        table.push(format!("  abuse: {name}: {seen:?}"));
        rows.push(
            Row::new(&format!("abuse: {name}"), "requests", seen.values().sum::<u64>() as f64, None)
                .settings(seen.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")),
        );
    }
    println!("\nserve: elex serve over loopback (client and server on this machine)");
    for line in &table {
        println!("{line}");
    }
    crate::write(out, "serve", &rows)
}
