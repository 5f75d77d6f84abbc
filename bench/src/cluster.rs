//! The `cluster` suite: `elex serve --cluster` hosts and a `nats-server`
//! (JetStream on), all on this machine's loopback.
//!
//! - The added latency of a forwarded query: one client asking host `a`
//!   about agents whose primary is `a` (answered locally) and about agents
//!   whose primary is another host (forwarded over NATS), p50/p99 of each.
//! - Throughput at 32 keep-alive clients with 1, 2 and 3 hosts (clients
//!   spread over the hosts; a host joins between the runs). On 2 cores
//!   every host and the clients share the same two cores: expect no
//!   speed-up; the per-hop cost is what bounds it on real machines.
//! - Failover: 16 clients on the two hosts that stay, one probe asking an
//!   agent of the host that is SIGKILLed; every answer and refusal is
//!   counted, the p99 of the 5 s after the kill, how soon the killed host's
//!   agent answers from another host, how soon the others drop it from the
//!   membership, whether feedback acknowledged before the kill is in the
//!   answers after it, and how soon a restarted host answers its agents
//!   again.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use elex_ran::Catalog;

use crate::serve::{Client, OPERATOR, Server, load_for, questions, root, write_access};
use crate::{Row, quantile};

const HOSTS: [&str; 3] = ["a", "b", "c"];

/// A `nats-server` with JetStream on a free loopback port; (process, URL).
fn start_nats(dir: &Path) -> Result<(Server, String)> {
    let binary = root().join("target/tools/python/bin/nats-server");
    ensure!(binary.is_file(), "{} is missing: `cargo xtask bench cluster` installs it", binary.display());
    std::fs::create_dir_all(dir)?;
    let child = Command::new(&binary)
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .arg("--ports_file_dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let ports = dir.join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = std::fs::read_to_string(&ports)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["nats"][0].as_str().map(str::to_string));
        if let Some(url) = url {
            return Ok((Server { child, addr: String::new() }, url));
        }
        ensure!(Instant::now() < deadline, "nats-server wrote no ports file");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_host(work: &Path, access: &Path, nats: &str, id: &str) -> Result<Server> {
    let bin = std::env::current_exe()?.with_file_name("elex");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-in-flight",
            "64",
            "--cluster",
            nats,
            "--host-id",
            id,
        ])
        .arg("--access")
        .arg(access)
        .env("ELEX_DATA_DIR", work.join(id))
        .env("ELEX_REGISTRY", root().join("target/registry"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut out = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let mut addr = None;
    for _ in 0..4 {
        let mut line = String::new();
        out.read_line(&mut line)?;
        if let Some(a) = line.trim().strip_prefix("listening on http://") {
            addr = Some(a.to_string());
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let addr = addr.ok_or_else(|| anyhow!("host {id} did not start"))?;
    Ok(Server { child, addr })
}

fn get(addr: &str, path: &str) -> Result<serde_json::Value> {
    let (status, body) = Client::connect(addr)?.exchange("GET", path, Some(OPERATOR), b"")?;
    ensure!(status == 200, "GET {path}: {status}");
    Ok(serde_json::from_slice(&body)?)
}

fn members(addr: &str) -> Result<Vec<String>> {
    Ok(get(addr, "/v1/cluster")?["hosts"]
        .as_array()
        .ok_or_else(|| anyhow!("no hosts"))?
        .iter()
        .filter_map(|h| h["host"].as_str().map(str::to_string))
        .collect())
}

/// Waits (at most 60 s) until the host at `addr` sees exactly `hosts`; how
/// long that took.
fn wait_for_members(addr: &str, hosts: &[&str]) -> Result<Duration> {
    let t = Instant::now();
    while members(addr)? != hosts {
        ensure!(t.elapsed() < Duration::from_secs(60), "{addr} never saw {hosts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t.elapsed())
}

fn primary(hosts: &[&str], agent: &str) -> String {
    let live: BTreeSet<String> = hosts.iter().map(|h| h.to_string()).collect();
    elex_cluster::placement::owners(&live, agent, 2)[0].to_string()
}

fn ask_body(faj: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "text": format!("What is {name}?"), "agent": faj }))
        .unwrap_or_default()
}

/// p50 and p99 of one client asking `addr` each of `questions` in turn for
/// `time`.
fn one_client(addr: &str, questions: &[Vec<u8>], time: Duration) -> Result<(f64, f64, usize)> {
    let mut client = Client::connect(addr)?;
    let mut latencies = Vec::new();
    let t = Instant::now();
    let mut k = 0;
    while t.elapsed() < time {
        let q = Instant::now();
        let status = client.request("POST", "/v1/query", Some(OPERATOR), &questions[k % questions.len()])?;
        ensure!(status == 200, "a query answered {status}");
        latencies.push(q.elapsed().as_secs_f64() * 1e6);
        k += 1;
    }
    let n = latencies.len();
    Ok((quantile(&mut latencies, 0.5), quantile(&mut latencies, 0.99), n))
}

/// `count` engrams written through `writer`, each then read through
/// `reader` until it is there: p50 and p99 of the write, of the time from
/// its answer until `reader` has it, and the count.
fn graph_writes(writer: &str, reader: &str, count: usize) -> Result<(f64, f64, f64, f64, usize)> {
    let (mut write, mut read) = (Client::connect(writer)?, Client::connect(reader)?);
    let (mut writes, mut lags) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let body = serde_json::to_vec(&serde_json::json!({
            "content": format!("bench note {i}: MIMO sleep saves energy at night"),
            "metadata": { "bench": "cluster" },
        }))?;
        let t = Instant::now();
        let (status, out) = write.exchange("POST", "/v1/engrams", Some(OPERATOR), &body)?;
        writes.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(status == 201, "a write answered {status}");
        let id = serde_json::from_slice::<serde_json::Value>(&out)?["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("a write gave no id"))?;
        let t = Instant::now();
        let path = format!("/v1/engrams/{id}");
        while read.exchange("GET", &path, Some(OPERATOR), b"")?.0 != 200 {
            ensure!(t.elapsed() < Duration::from_secs(10), "engram {id} never reached {reader}");
        }
        lags.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((
        quantile(&mut writes, 0.5),
        quantile(&mut writes, 0.99),
        quantile(&mut lags, 0.5),
        quantile(&mut lags, 0.99),
        count,
    ))
}

pub fn run(out: &Path) -> Result<()> {
    let work = tempfile::tempdir()?;
    let access = write_access(work.path())?;
    let (_nats, url) = start_nats(&work.path().join("nats"))?;
    let catalog = Catalog::embedded().map_err(|e| anyhow!("{e}"))?;
    let questions = Arc::new(questions()?);
    let mut rows = Vec::new();
    let mut table = Vec::new();

    // Throughput with 1, 2, 3 hosts: a host joins between the runs.
    let mut hosts: Vec<Server> = Vec::new();
    for n in 1..=3 {
        hosts.push(start_host(work.path(), &access, &url, HOSTS[n - 1])?);
        for h in &hosts {
            wait_for_members(&h.addr, &HOSTS[..n])?;
        }
        let addrs: Vec<&str> = hosts.iter().map(|h| h.addr.as_str()).collect();
        // Every question once through each host first.
        for addr in &addrs {
            let mut warm = Client::connect(addr)?;
            for q in questions.iter() {
                warm.request("POST", "/v1/query", Some(OPERATOR), q)?;
            }
        }
        let mut level = load_for(&addrs, 32, &questions, crate::serve::LEVEL_TIME);
        let ok = level.statuses.get(&200).copied().unwrap_or(0);
        let total: u64 = level.statuses.values().sum::<u64>() + level.errors;
        let qps = ok as f64 / level.seconds;
        let (p50, p99) =
            (quantile(&mut level.ok_latencies_us, 0.5), quantile(&mut level.ok_latencies_us, 0.99));
        table.push(format!(
            "{n} host(s), 32 clients  {qps:>7.0} answers/s  p50 {p50:>6.0} µs  p99 {p99:>6.0} µs  not 200: {} of {total}",
            total - ok
        ));
        let settings = format!("{n} hosts, 32 keep-alive clients spread over them, {:.0} s", level.seconds);
        rows.push(Row::new(&format!("answers/s, {n} hosts"), "q/s", qps, None).settings(settings.clone()));
        rows.push(Row::new(&format!("p50, {n} hosts"), "µs", p50, None).settings(settings.clone()));
        rows.push(Row::new(&format!("p99, {n} hosts"), "µs", p99, None).settings(settings));
    }

    // Local against forwarded, one client on host a.
    let local: Vec<Vec<u8>> = catalog
        .features
        .iter()
        .filter(|f| primary(&HOSTS, &f.faj) == "a")
        .map(|f| ask_body(&f.faj, &f.name))
        .collect();
    let forwarded: Vec<Vec<u8>> = catalog
        .features
        .iter()
        .filter(|f| primary(&HOSTS, &f.faj) != "a")
        .map(|f| ask_body(&f.faj, &f.name))
        .collect();
    let time = Duration::from_secs(5);
    let (l50, l99, ln) = one_client(&hosts[0].addr, &local, time)?;
    let (f50, f99, fnn) = one_client(&hosts[0].addr, &forwarded, time)?;
    table.push(format!("1 client, answered locally   p50 {l50:>6.0} µs  p99 {l99:>6.0} µs  ({ln} queries)"));
    table.push(format!(
        "1 client, forwarded          p50 {f50:>6.0} µs  p99 {f99:>6.0} µs  ({fnn} queries): +{:.0} µs at p50",
        f50 - l50
    ));
    let settings = String::from("one keep-alive client on host a, agents named; 3 hosts");
    rows.push(Row::new("local query p50", "µs", l50, None).settings(settings.clone()));
    rows.push(Row::new("local query p99", "µs", l99, None).settings(settings.clone()));
    rows.push(Row::new("forwarded query p50", "µs", f50, None).settings(settings.clone()));
    rows.push(Row::new("forwarded query p99", "µs", f99, None).settings(settings.clone()));
    rows.push(Row::new("added by forwarding, p50", "µs", f50 - l50, None).settings(settings));

    // The memory graph: a write through host a (appended to the stream and
    // applied there before it answers), then how long until host c has it.
    let (w50, w99, lag50, lag99, writes) = graph_writes(&hosts[0].addr, &hosts[2].addr, 1_000)?;
    table.push(format!(
        "memory graph: write through a  p50 {w50:>6.0} µs  p99 {w99:>6.0} µs; on c after p50 {lag50:>5.0} µs  p99 {lag99:>6.0} µs  ({writes} writes)"
    ));
    let settings = String::from(
        "one keep-alive client: POST /v1/engrams on host a, then GET on host c until found; 3 hosts",
    );
    rows.push(Row::new("graph write p50", "µs", w50, None).settings(settings.clone()));
    rows.push(Row::new("graph write p99", "µs", w99, None).settings(settings.clone()));
    rows.push(
        Row::new("graph write on another host after, p50", "µs", lag50, None).settings(settings.clone()),
    );
    rows.push(Row::new("graph write on another host after, p99", "µs", lag99, None).settings(settings));

    // Failover: feedback on an agent of host a, then load on b and c, a
    // SIGKILLed under it.
    let victim = catalog
        .features
        .iter()
        .find(|f| primary(&HOSTS, &f.faj) == "a")
        .ok_or_else(|| anyhow!("a has no agents"))?;
    let probe_body = ask_body(&victim.faj, &victim.name);
    let (status, body) =
        Client::connect(&hosts[1].addr)?.exchange("POST", "/v1/query", Some(OPERATOR), &probe_body)?;
    ensure!(status == 200, "asking {} answered {status}", victim.faj);
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    let reward = serde_json::to_vec(&serde_json::json!({ "query_id": answer["query_id"], "reward": 1.0 }))?;
    let (status, _) =
        Client::connect(&hosts[2].addr)?.exchange("POST", "/v1/feedback", Some(OPERATOR), &reward)?;
    ensure!(status == 200, "feedback answered {status}");
    let (_, body) =
        Client::connect(&hosts[1].addr)?.exchange("POST", "/v1/query", Some(OPERATOR), &probe_body)?;
    let learned = serde_json::from_slice::<serde_json::Value>(&body)?["q_value"].as_f64();

    let survivors = [hosts[1].addr.clone(), hosts[2].addr.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load: Vec<_> = (0..16)
        .map(|c| {
            let (addr, stop, questions) = (survivors[c % 2].clone(), stop.clone(), questions.clone());
            std::thread::spawn(move || {
                // (time since start, status, latency µs); status 0: an I/O error.
                let mut seen: Vec<(f64, u16, f64)> = Vec::new();
                let mut client = Client::connect(&addr).ok();
                let mut k = c * 31;
                while !stop.load(Ordering::Relaxed) {
                    let Some(conn) = client.as_mut() else { break };
                    let t = Instant::now();
                    let status =
                        conn.request("POST", "/v1/query", Some(OPERATOR), &questions[k % questions.len()]);
                    k += 1;
                    let at = t.duration_since(started).as_secs_f64();
                    match status {
                        Ok(s) => seen.push((at, s, t.elapsed().as_secs_f64() * 1e6)),
                        Err(_) => {
                            seen.push((at, 0, t.elapsed().as_secs_f64() * 1e6));
                            client = Client::connect(&addr).ok();
                        }
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let victim_host = hosts.remove(0);
    let killed_at = Instant::now();
    drop(victim_host); // SIGKILL
    let kill_s = killed_at.duration_since(started).as_secs_f64();
    // The killed host's agent, asked until another host answers.
    let mut probe = Client::connect(&survivors[0])?;
    let (answered_after, value_after) = loop {
        let (status, body) = probe.exchange("POST", "/v1/query", Some(OPERATOR), &probe_body)?;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            if v["host"] != "a" {
                break (killed_at.elapsed(), v["q_value"].as_f64());
            }
        }
        ensure!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the killed host's agent never answered elsewhere"
        );
    };
    wait_for_members(&survivors[0], &["b", "c"])?;
    let dropped_after = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(killed_at.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut window = Vec::new();
    for t in load {
        for (at, status, us) in t.join().map_err(|_| anyhow!("a load thread panicked"))? {
            *statuses.entry(status).or_default() += 1;
            if status == 200 && at >= kill_s && at < kill_s + 5.0 {
                window.push(us);
            }
        }
    }
    let window_p99 = if window.is_empty() { f64::NAN } else { quantile(&mut window, 0.99) };
    let total: u64 = statuses.values().sum();
    let answered = statuses.get(&200).copied().unwrap_or(0);
    let retryable = statuses.get(&503).copied().unwrap_or(0);
    let other = total - answered - retryable;
    let kept = value_after == learned && learned.is_some_and(|v| v > 0.0);
    table.push(format!(
        "failover (SIGKILL a; 16 clients on b, c): {answered} answered, {retryable} retryable 503, {other} other, of {total}; \
         p99 in the 5 s after the kill {window_p99:.0} µs"
    ));
    table.push(format!(
        "  a's agent answered from another host {:.0} ms after the kill; a dropped from the membership after {:.2} s; \
         feedback before the kill kept: {kept} ({learned:?} -> {value_after:?})",
        answered_after.as_secs_f64() * 1e3,
        dropped_after.as_secs_f64()
    ));
    let settings =
        String::from("3 hosts, 16 keep-alive clients on the 2 that stay, host a SIGKILLed after 2 s");
    rows.push(Row::new("failover: answered", "queries", answered as f64, None).settings(settings.clone()));
    rows.push(
        Row::new("failover: retryable 503", "queries", retryable as f64, None).settings(settings.clone()),
    );
    rows.push(Row::new("failover: other outcomes", "queries", other as f64, None).settings(settings.clone()));
    rows.push(
        Row::new("failover: p99 in the 5 s after the kill", "µs", window_p99, None)
            .settings(settings.clone()),
    );
    rows.push(
        Row::new(
            "failover: killed host's agent answers elsewhere after",
            "ms",
            answered_after.as_secs_f64() * 1e3,
            None,
        )
        .settings(settings.clone()),
    );
    rows.push(
        Row::new(
            "failover: killed host dropped from the membership after",
            "s",
            dropped_after.as_secs_f64(),
            None,
        )
        .settings(format!("{settings}; --dead-after-ms 3000 (default)")),
    );
    rows.push(
        Row::new("failover: feedback before the kill kept", "bool", f64::from(u8::from(kept)), None)
            .settings(settings),
    );

    // Rejoin: a restarted with the same id answers its agents again.
    let restarted = Instant::now();
    let back = start_host(work.path(), &access, &url, "a")?;
    let started_in = restarted.elapsed();
    let mut probe = Client::connect(&survivors[0])?;
    let rejoined = loop {
        let (status, body) = probe.exchange("POST", "/v1/query", Some(OPERATOR), &probe_body)?;
        if status == 200 && serde_json::from_slice::<serde_json::Value>(&body)?["host"] == "a" {
            break restarted.elapsed();
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(60),
            "the restarted host never took its agent back"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    table.push(format!(
        "rejoin: a restarted (runtime up in {:.2} s) answers its agents again {:.2} s after the restart",
        started_in.as_secs_f64(),
        rejoined.as_secs_f64()
    ));
    rows.push(
        Row::new("rejoin: restarted host answers its agents after", "s", rejoined.as_secs_f64(), None)
            .settings(String::from("same id and data dir; includes loading and starting 593 agents")),
    );
    drop(back);
    drop(hosts);

    println!("\ncluster over loopback (nats-server and 3 hosts on this machine)");
    for line in &table {
        println!("  {line}");
    }
    crate::write(out, "cluster", &rows)
}
