//! `elex serve --cluster`: three hosts and a real `nats-server` (JetStream
//! on), all on loopback ports, started the way the README shows. Placement,
//! forwarding, feedback through any host, failover under load after a
//! SIGKILL with no lost query and no lost learned state, a clean leave, and
//! a rejoin that takes the share back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{request, text};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `nats-server` with JetStream, on a free loopback port.
struct Nats {
    child: Child,
    url: String,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nats(dir: &Path) -> Nats {
    let binary = root().join("target/tools/python/bin/nats-server");
    assert!(binary.is_file(), "{} is missing: `cargo xtask test` installs it", binary.display());
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .arg("--ports_file_dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let ports = dir.join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(url) = std::fs::read_to_string(&ports)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["nats"][0].as_str().map(str::to_string))
        {
            break url;
        }
        assert!(Instant::now() < deadline, "nats-server wrote no ports file");
        std::thread::sleep(Duration::from_millis(50));
    };
    Nats { child, url }
}

/// One `elex serve --cluster` host.
struct Host {
    child: Child,
    addr: String,
    id: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host `id` on its data dir as the README names it (`elex-<id>`).
fn start_host(work: &Path, nats: &str, id: &str) -> Host {
    spawn_host(work, host_command(work, nats, id, &format!("elex-{id}")), id)
}

fn spawn_host(work: &Path, mut command: Command, id: &str) -> Host {
    let stderr = std::fs::File::create(work.join(format!("{id}.stderr"))).unwrap();
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().expect("start elex serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    for _ in 0..4 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if let Some(a) = line.trim().strip_prefix("listening on http://") {
            addr = Some(a.to_string());
            break;
        }
    }
    // Keep reading its output so the host never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let stderr = work.join(format!("{id}.stderr"));
    let addr = addr.unwrap_or_else(|| panic!("host {id} did not start: see {}", stderr.display()));
    Host { child, addr, id: id.to_string() }
}

/// `elex serve --cluster` for host `id`, its data in `work/<data>`.
fn host_command(work: &Path, nats: &str, id: &str, data: &str) -> Command {
    elex_command(&work.join(data), &["serve", "--listen", "127.0.0.1:0", "--cluster", nats, "--host-id", id])
}

/// `elex ARGS` on data dir `data`.
fn elex_command(data: &Path, args: &[&str]) -> Command {
    std::fs::create_dir_all(data).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_elex"));
    command
        .args(args)
        .env("ELEX_DATA_DIR", data)
        .env("ELEX_REGISTRY", root().join("target/registry"))
        .env_remove("RUST_LOG");
    command
}

/// The README's three-host example, run as written but on free ports and
/// in `work`: its NATS server and hosts started, its curl lines asked (each
/// must succeed). The hosts, in the README's order.
fn start_the_readmes_cluster(work: &Path) -> (Nats, Vec<Host>) {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block =
        readme.split("<!-- cluster-example -->\n```sh\n").nth(1).expect("the README's cluster example");
    let lines: Vec<Vec<String>> =
        block[..block.find("```").unwrap()].lines().map(super::shell_words).collect();
    let nats_line = &lines[0];
    assert_eq!(nats_line[0], "nats-server");
    assert!(nats_line.iter().any(|w| w == "-js") && nats_line.last().unwrap() == "&", "{nats_line:?}");
    let nats = start_nats(&work.join("nats"));
    let mut hosts: Vec<Host> = Vec::new();
    let mut ports = Vec::new();
    for words in &lines[1..] {
        if words[0] == "curl" {
            let (mut method, mut body, mut url) = ("GET".to_string(), String::new(), String::new());
            let mut args = words[1..].iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "-s" => {}
                    "-X" => method = args.next().unwrap().clone(),
                    "-H" => assert_eq!(args.next().unwrap(), "Content-Type: application/json"),
                    "-d" => body = args.next().unwrap().clone(),
                    a => url = a.to_string(),
                }
            }
            let (port, path) = url.strip_prefix("http://127.0.0.1:").unwrap().split_once('/').unwrap();
            let host = &hosts[ports.iter().position(|p| p == port).unwrap()];
            // The hosts may not all know each other yet: a query waits for
            // the three (as a user would after starting them).
            for h in &hosts {
                wait_for_members(h, &["a", "b", "c"], Duration::from_secs(60));
            }
            let (status, out) = request(&host.addr, &method, &format!("/{path}"), None, &body);
            assert_eq!(status, 200, "{words:?}: {out}");
            continue;
        }
        // ELEX_DATA_DIR=DIR elex serve --listen ADDR --cluster URL --host-id ID &
        let data = words[0].strip_prefix("ELEX_DATA_DIR=").unwrap_or_else(|| panic!("{words:?}"));
        assert_eq!((words[1].as_str(), words.last().unwrap().as_str()), ("elex", "&"));
        let mut args: Vec<String> = words[2..words.len() - 1].to_vec();
        let mut id = String::new();
        for i in 0..args.len().saturating_sub(1) {
            match args[i].as_str() {
                "--listen" => {
                    ports.push(args[i + 1].rsplit(':').next().unwrap().to_string());
                    args[i + 1] = String::from("127.0.0.1:0");
                }
                "--cluster" => args[i + 1] = nats.url.clone(),
                "--host-id" => id = args[i + 1].clone(),
                _ => {}
            }
        }
        let data = work.join(Path::new(data).file_name().unwrap());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        hosts.push(spawn_host(work, elex_command(&data, &args), &id));
    }
    (nats, hosts)
}

/// `GET /v1/cluster` of `host`.
fn status(host: &Host) -> serde_json::Value {
    let (code, status) = request(&host.addr, "GET", "/v1/cluster", None, "");
    assert_eq!(code, 200, "{status}");
    status
}

fn members(host: &Host) -> Vec<String> {
    status(host)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

/// Waits (bounded) until `host` sees exactly `hosts`.
fn wait_for_members(host: &Host, hosts: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = members(host);
        if seen == hosts {
            return;
        }
        assert!(Instant::now() < deadline, "{} sees {seen:?}, not {hosts:?}", host.id);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ask(host: &Host, question: &str) -> (u16, serde_json::Value) {
    request(&host.addr, "POST", "/v1/query", None, &serde_json::json!({ "text": question }).to_string())
}

fn answered(host: &Host, question: &str) -> serde_json::Value {
    let (code, answer) = ask(host, question);
    assert_eq!(code, 200, "{answer}");
    answer
}

fn reward(host: &Host, query_id: &str) {
    let body = serde_json::json!({ "query_id": query_id, "reward": 1.0 }).to_string();
    let (code, out) = request(&host.addr, "POST", "/v1/feedback", None, &body);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["query_id"], query_id, "{out}");
}

const MIMO: &str = "What is FAJ 121 3094?";

#[test]
fn a_three_host_cluster_places_forwards_fails_over_and_takes_its_share_back() {
    let work = tempfile::tempdir().unwrap();
    let (nats, mut hosts) = start_the_readmes_cluster(work.path());
    for host in &hosts {
        wait_for_members(host, &["a", "b", "c"], Duration::from_secs(60));
    }

    // Placement: every agent on two hosts, one primary each, the same view
    // everywhere.
    let (mut held, mut primaries) = (0, 0);
    for host in &hosts {
        let s = status(host);
        held += s["holds"].as_u64().unwrap();
        primaries += s["primary_of"].as_u64().unwrap();
        assert_eq!(s["replicas"], 2);
    }
    assert_eq!((held, primaries), (2 * 593, 593));

    // Forwarding: whichever host is asked, the agent's primary answers.
    let answers: Vec<_> = hosts.iter().map(|h| answered(h, MIMO)).collect();
    let primary = answers[0]["host"].as_str().unwrap().to_string();
    for a in &answers {
        assert_eq!(a["host"], primary.as_str(), "{a}");
        assert_eq!(a["agent"]["faj"], "FAJ 121 3094");
        assert_eq!(a["agent"]["chosen_by"], "FAJ code in the text", "routed where it was asked: {a}");
        assert!(a["query_id"].as_str().unwrap().starts_with(&format!("{primary}:")), "{a}");
    }
    let p = hosts.iter().position(|h| h.id == primary).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    assert!(status(&hosts[p])["served"].as_u64().unwrap() >= 2, "the two other hosts forwarded to it");

    // A consult crosses hosts: an agent whose prerequisites all have
    // another primary, taught to consult (every other action penalised).
    consults_cross_hosts(&hosts);

    // A correction given through one host is learned by every host.
    corrections_reach_every_host(&hosts);

    // Feedback through a host that did not answer reaches the one that did.
    reward(&hosts[others[0]], answers[1]["query_id"].as_str().unwrap());
    let learned = answered(&hosts[others[1]], MIMO)["q_value"].as_f64().unwrap();
    assert!(learned > 0.0, "the reward raised the value: {learned}");
    // An unknown host in a query id is a clear error, not a hang.
    let body = r#"{"query_id": "nosuchhost:q1-1", "reward": 1}"#;
    let (code, err) = request(&hosts[0].addr, "POST", "/v1/feedback", None, body);
    assert_eq!((code, err["code"].as_str()), (404, Some("unknown_host")), "{err}");

    // SIGKILL the primary under a steady bounded load on the two others:
    // every query is answered or refused with a retryable 503, none is lost
    // or hangs, and the standby answers with what was learned.
    let survivors: Vec<String> = others.iter().map(|&i| hosts[i].addr.clone()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = survivors
        .iter()
        .cloned()
        .map(|addr| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                let mut values = Vec::new();
                for k in 0..20_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let question =
                        if k % 2 == 0 { MIMO.to_string() } else { format!("What does feature {k} need?") };
                    let body = serde_json::json!({ "text": question }).to_string();
                    let (code, answer) = timed_request(&addr, &body);
                    *statuses.entry(code).or_default() += 1;
                    if code == 200 && k % 2 == 0 {
                        values.push((
                            answer["host"].as_str().unwrap_or("").to_string(),
                            answer["q_value"].as_f64(),
                        ));
                    }
                }
                (statuses, values)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let killed = hosts.remove(p);
    drop(killed); // SIGKILL
    // Until the survivors drop it (heartbeat timeout), and a while after.
    for i in 0..2 {
        wait_for_members(&hosts[i], &survivor_ids(&hosts), Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered_by = std::collections::BTreeSet::new();
    for t in load {
        let (statuses, values) = t.join().unwrap();
        eprintln!("load through a survivor: {statuses:?}");
        let total: usize = statuses.values().sum();
        assert!(total > 0);
        assert!(
            statuses.keys().all(|s| *s == 200 || *s == 503),
            "only answers or retryable refusals: {statuses:?}"
        );
        assert!(statuses.get(&200).copied().unwrap_or(0) * 10 >= total * 9, "{statuses:?}");
        for (host, value) in values {
            answered_by.insert(host);
            assert!(value >= Some(learned), "an answer after the reward knew less: {value:?} < {learned}");
        }
    }
    assert!(answered_by.len() >= 2, "the primary, then a standby, answered: {answered_by:?}");
    let standby = answered(&hosts[0], MIMO);
    assert_ne!(standby["host"], primary.as_str());
    assert_eq!(standby["q_value"].as_f64(), Some(learned), "{standby}");
    let s: u64 = hosts.iter().map(|h| status(h)["primary_of"].as_u64().unwrap()).sum();
    assert_eq!(s, 593, "the killed host's agents were placed again");

    // What the standby learns meanwhile goes back with the share.
    reward(&hosts[1], standby["query_id"].as_str().unwrap());
    let interim = answered(&hosts[0], MIMO);
    let relearned = interim["q_value"].as_f64().unwrap();
    assert!(relearned > learned, "{relearned} > {learned}");
    let back = start_host(work.path(), &nats.url, &primary);
    hosts.insert(p, back);
    for host in &hosts {
        wait_for_members(host, &["a", "b", "c"], Duration::from_secs(60));
    }
    for host in &hosts {
        let a = answered(host, MIMO);
        assert_eq!(a["host"], primary.as_str(), "the restarted host answers its agents again: {a}");
        assert_eq!(a["q_value"].as_f64(), Some(relearned), "with the state learned while it was away: {a}");
    }

    // A host that would place agents on another number of hosts is refused.
    let odd = host_command(work.path(), &nats.url, "d", "elex-d").args(["--replicas", "3"]).output().unwrap();
    assert!(!odd.status.success());
    assert!(text(&odd.stderr).contains("same --replicas"), "{}", text(&odd.stderr));

    // Feedback on an answer the interim primary gave is refused now that
    // the agent is back on its own host: only the primary learns.
    let body = serde_json::json!({ "query_id": interim["query_id"], "reward": 1.0 }).to_string();
    let (code, err) = request(&hosts[0].addr, "POST", "/v1/feedback", None, &body);
    assert_eq!((code, err["code"].as_str()), (409, Some("agent_moved")), "{err}");

    // A second live process with a member's id is refused.
    let twin = host_command(work.path(), &nats.url, "b", "b-twin").output().unwrap();
    assert!(!twin.status.success());
    assert!(text(&twin.stderr).contains("already has the id b"), "{}", text(&twin.stderr));

    // A clean stop (SIGTERM) is said, not waited for: the others drop the
    // host because it said it left, not because its beats stopped.
    let left_before = status(&hosts[0])["left"].as_u64().unwrap();
    let timed_out_before = status(&hosts[0])["timed_out"].as_u64().unwrap();
    let mut leaving = hosts.pop().unwrap();
    let left = leaving.id.clone();
    let pid = leaving.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(leaving.child.wait().unwrap().success());
    let remaining: Vec<&str> = ["a", "b", "c"].into_iter().filter(|h| *h != left).collect();
    wait_for_members(&hosts[0], &remaining, Duration::from_secs(30));
    let after = status(&hosts[0]);
    assert_eq!(after["left"].as_u64(), Some(left_before + 1), "{after}");
    assert_eq!(after["timed_out"].as_u64(), Some(timed_out_before), "{after}");
}

/// Teaches an agent to consult its prerequisite (on another host) and
/// checks the consult's hop in the answer's trace names that host.
fn consults_cross_hosts(hosts: &[Host]) {
    let catalog = elex_ran::Catalog::embedded().unwrap();
    let live: std::collections::BTreeSet<String> = ["a", "b", "c"].iter().map(|h| h.to_string()).collect();
    let primary = |agent: &str| elex_cluster::placement::owners(&live, agent, 2)[0].to_string();
    let feature = catalog
        .features
        .iter()
        .find(|f| {
            let peers: Vec<_> = f.requires.iter().filter_map(|r| catalog.index_of(r).ok()).collect();
            !peers.is_empty() && peers.iter().all(|&p| primary(&catalog.features[p].faj) != primary(&f.faj))
        })
        .expect("an agent whose prerequisites live on other hosts");
    let asked = hosts.iter().find(|h| h.id != primary(&feature.faj)).unwrap();
    // The prerequisites answer once first (their instances warm on their
    // primaries), as they would in a service that has run a while.
    for p in feature.requires.iter().filter_map(|r| catalog.index_of(r).ok()) {
        let peer = &catalog.features[p];
        let body = serde_json::json!({ "text": format!("What is {}?", peer.name), "agent": peer.faj });
        let (code, answer) = request(&asked.addr, "POST", "/v1/query", None, &body.to_string());
        assert_eq!(code, 200, "{answer}");
    }
    for _ in 0..200 {
        let body =
            serde_json::json!({ "text": format!("How do I enable {}?", feature.name), "agent": feature.faj });
        let (code, answer) = request(&asked.addr, "POST", "/v1/query", None, &body.to_string());
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["host"], primary(&feature.faj).as_str(), "{answer}");
        if answer["action"] == "consult-peer" {
            let hop = &answer["trace"][0];
            let callee = hop["to"].as_str().unwrap();
            assert_eq!(hop["outcome"], "ok", "{answer}");
            assert_eq!(
                hop["host"],
                primary(callee).as_str(),
                "the consult ran on its callee's primary: {answer}"
            );
            assert_eq!(hop["depth"], 1);
            return;
        }
        let penalty = serde_json::json!({ "query_id": answer["query_id"], "reward": -1.0 });
        let (code, out) = request(&asked.addr, "POST", "/v1/feedback", None, &penalty.to_string());
        assert_eq!(code, 200, "{out}");
    }
    panic!("{} never consulted its prerequisite", feature.faj);
}

/// Corrects the agent of a vague question through one host; the others
/// route it to the corrected agent.
fn corrections_reach_every_host(hosts: &[Host]) {
    let question = "Which setting lets the cells sleep at night to save power?";
    let first = answered(&hosts[0], question);
    let routed = first["agent"]["faj"].as_str().unwrap().to_string();
    let meant = if routed == "FAJ 121 0484" { "FAJ 121 3094" } else { "FAJ 121 0484" };
    let body = serde_json::json!({ "query_id": first["query_id"], "agent": meant, "operator": "ran-ops" });
    let (code, out) = request(&hosts[1].addr, "POST", "/v1/feedback", None, &body.to_string());
    assert_eq!((code, out["corrected"]["agent"].as_str()), (200, Some(meant)), "{out}");
    for host in hosts {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = answered(host, question);
            if answer["agent"]["faj"] == meant {
                break;
            }
            assert!(Instant::now() < deadline, "host {} never learned the correction: {answer}", host.id);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn survivor_ids(hosts: &[Host]) -> Vec<&str> {
    hosts.iter().map(|h| h.id.as_str()).collect()
}

/// A query to `addr` that must finish within 30 s (none may hang).
fn timed_request(addr: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a query hung past 30 s");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn a_host_that_cannot_reach_nats_says_so() {
    let work = tempfile::tempdir().unwrap();
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = host_command(work.path(), &format!("nats://127.0.0.1:{port}"), "a", "a").output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot reach NATS"), "{}", text(&out.stderr));
    let bad = host_command(work.path(), "nats://127.0.0.1:1", "a.b", "a").output().unwrap();
    assert!(text(&bad.stderr).contains("host id"), "{}", text(&bad.stderr));
    // Cluster flags without --cluster are an error, not silently ignored.
    let alone = elex_command(&work.path().join("a"), &["serve", "--host-id", "a"]).output().unwrap();
    assert!(!alone.status.success());
    assert!(text(&alone.stderr).contains("--cluster"), "{}", text(&alone.stderr));
}

#[test]
fn a_plugin_loaded_on_one_host_is_loaded_placed_and_unloaded_on_every_host() {
    use super::super::plugins::{elex, ok, own_registry_trusting_a_new_key};
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let key = own_registry_trusting_a_new_key(cwd);
    let id = "cluster-moon";
    ok(elex(&cwd.join("data"), cwd, &["new", id, "--lang", "js"]), "elex new");
    ok(elex(&cwd.join("data"), cwd, &["build", id]), "elex build");
    let file = cwd.join(id).join("build").join(format!("{id}.wasm"));
    let (key, file) = (key.to_str().unwrap(), file.to_str().unwrap());
    let sign = ["sign", file, "--name", id, "--version", "0.1.0", "--key", key];
    ok(elex(&cwd.join("data"), cwd, &sign), "sign");

    let nats = start_nats(&cwd.join("nats"));
    let start = |h: &str| {
        let mut command = host_command(cwd, &nats.url, h, &format!("elex-{h}"));
        command.env("ELEX_REGISTRY", cwd.join("registry"));
        spawn_host(cwd, command, h)
    };
    let mut hosts: Vec<Host> = ["a", "b"].iter().map(|h| start(h)).collect();
    for host in &hosts {
        wait_for_members(host, &["a", "b"], Duration::from_secs(60));
    }
    // Running there: among its agents (routed to, asked by id).
    let listed = |host: &Host| {
        let (code, agent) = request(&host.addr, "GET", &format!("/v1/agents/{id}"), None, "");
        assert!(code == 200 || code == 404, "{agent}");
        code == 200
    };
    let wait_until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Loaded by name on a: b loads it too, and its agent is placed.
    let body = format!(r#"{{"name": "{id}@^0.1"}}"#);
    let (code, loaded) = request(&hosts[0].addr, "POST", "/v1/plugins", None, &body);
    assert_eq!((code, loaded["id"].as_str()), (201, Some(id)), "{loaded}");
    wait_until("b loading the plugin", &|| listed(&hosts[1]));
    let live: std::collections::BTreeSet<String> = ["a", "b"].iter().map(|h| h.to_string()).collect();
    let primary = elex_cluster::placement::owners(&live, id, 2)[0].to_string();
    let ask = format!(r#"{{"text": "hello", "agent": "{id}"}}"#);
    for host in &hosts {
        let (code, answer) = request(&host.addr, "POST", "/v1/query", None, &ask);
        assert_eq!((code, answer["host"].as_str()), (200, Some(primary.as_str())), "{answer}");
    }
    // It learns on its primary, whichever host takes the feedback.
    let (_, answer) = request(&hosts[0].addr, "POST", "/v1/query", None, &ask);
    reward(&hosts[1], answer["query_id"].as_str().unwrap());
    let (_, after) = request(&hosts[1].addr, "POST", "/v1/query", None, &ask);
    assert!(after["q_value"].as_f64().unwrap() > 0.0, "{after}");

    // A host that joins later loads it too.
    hosts.push(start("c"));
    wait_until("c loading the plugin", &|| listed(&hosts[2]));

    // Unloaded on b: gone from a too.
    let (code, gone) = request(&hosts[1].addr, "DELETE", &format!("/v1/plugins/{id}"), None, "");
    assert_eq!((code, gone["unloaded"].as_str()), (200, Some(id)), "{gone}");
    wait_until("a unloading the plugin", &|| !listed(&hosts[0]));
    wait_until("c unloading the plugin", &|| !listed(&hosts[2]));
    let (code, err) = request(&hosts[0].addr, "POST", "/v1/query", None, &ask);
    assert_eq!((code, err["code"].as_str()), (404, Some("no_agent")), "{err}");
}

/// Waits (bounded) until every host applied the same memory-graph log
/// position.
fn wait_for_one_graph(hosts: &[Host]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied: Vec<u64> = hosts.iter().map(|h| status(h)["graph_applied"].as_u64().unwrap()).collect();
        if applied.iter().all(|&a| a == applied[0]) {
            return applied[0];
        }
        assert!(Instant::now() < deadline, "the hosts' graphs stay apart: {applied:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `host` shows of the graph: the context's engrams, a search, and
/// the first engrams in full.
fn graph_seen(host: &Host, context: u64) -> (serde_json::Value, serde_json::Value, Vec<serde_json::Value>) {
    let (code, shown) = request(&host.addr, "GET", &format!("/v1/contexts/{context}?limit=200"), None, "");
    assert_eq!(code, 200, "{shown}");
    let (code, hits) =
        request(&host.addr, "POST", "/v1/search", None, r#"{"text": "sleep energy", "limit": 200}"#);
    assert_eq!(code, 200, "{hits}");
    let engrams = shown["engrams"]
        .as_array()
        .unwrap()
        .iter()
        .take(5)
        .map(|e| {
            let id = e.as_u64().or_else(|| e["id"].as_u64()).unwrap();
            let (code, engram) = request(&host.addr, "GET", &format!("/v1/engrams/{id}"), None, "");
            assert_eq!(code, 200, "{engram}");
            engram
        })
        .collect();
    (shown, hits, engrams)
}

#[test]
fn the_memory_graph_is_one_graph_on_every_host() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let nats = start_nats(&cwd.join("nats"));
    let mut hosts: Vec<Host> = ["a", "b"].iter().map(|h| start_host(cwd, &nats.url, h)).collect();
    for host in &hosts {
        wait_for_members(host, &["a", "b"], Duration::from_secs(60));
    }
    let (code, context) = request(&hosts[0].addr, "POST", "/v1/contexts", None, r#"{"name": "msm-review"}"#);
    assert_eq!(code, 201, "{context}");
    let context = context["id"].as_u64().unwrap();

    // Writes through both hosts at once: every id is new on every host.
    let mut ids: Vec<u64> = std::thread::scope(|s| {
        let writers: Vec<_> = hosts
            .iter()
            .map(|host| {
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let body = serde_json::json!({
                                "content": format!("MIMO sleep saves energy, note {i} through {}", host.id),
                                "context": context,
                            });
                            let (code, out) =
                                request(&host.addr, "POST", "/v1/engrams", None, &body.to_string());
                            assert_eq!(code, 201, "{out}");
                            // The host that took the write reads it at once.
                            let id = out["id"].as_u64().unwrap();
                            let (code, got) =
                                request(&host.addr, "GET", &format!("/v1/engrams/{id}"), None, "");
                            assert_eq!(code, 200, "{got}");
                            id
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "two hosts handed out the same engram id");

    // Engrams the agents write (a workflow's answers) are shared too. The
    // workflow runs through the host that is not the agent's primary: its
    // question step is answered by the primary.
    let primary = answered(&hosts[0], MIMO)["host"].as_str().unwrap().to_string();
    let (primary, other) =
        if hosts[0].id == primary { (&hosts[0], &hosts[1]) } else { (&hosts[1], &hosts[0]) };
    let members = r#"{"agents": ["FAJ 121 3094"]}"#;
    let (code, out) = request(&other.addr, "POST", &format!("/v1/contexts/{context}/members"), None, members);
    assert_eq!(code, 200, "{out}");
    let workflow = format!(
        r#"{{"context": {context}, "workflow": {{"name": "msm-review", "steps": [
            {{"id": "counters", "agent": "FAJ 121 3094", "query": "Which counters show the effect?"}}]}}}}"#
    );
    let served = status(primary)["served"].as_u64().unwrap();
    let (code, report) = request(&other.addr, "POST", "/v1/workflows", None, &workflow);
    assert_eq!((code, report["succeeded"].as_bool()), (200, Some(true)), "{report}");
    assert_eq!(status(primary)["served"].as_u64(), Some(served + 1), "the primary answered the step");

    wait_for_one_graph(&hosts);
    let seen: Vec<_> = hosts.iter().map(|h| graph_seen(h, context)).collect();
    assert_eq!(seen[0].0["engram_count"].as_u64(), Some(51), "{}", seen[0].0);
    assert!(seen[0].1.as_array().unwrap().len() >= 50, "{}", seen[0].1);
    assert_eq!(seen[0], seen[1], "host a and host b show different graphs");

    // A host that was down catches up before it answers again.
    hosts[1].child.kill().unwrap();
    hosts[1].child.wait().unwrap();
    let body = serde_json::json!({ "content": "written while b was down", "context": context });
    let (code, out) = request(&hosts[0].addr, "POST", "/v1/engrams", None, &body.to_string());
    assert_eq!(code, 201, "{out}");
    let while_down = out["id"].as_u64().unwrap();
    hosts[1] = start_host(cwd, &nats.url, "b");
    let (code, got) = request(&hosts[1].addr, "GET", &format!("/v1/engrams/{while_down}"), None, "");
    assert_eq!((code, got["content"].as_str()), (200, Some("written while b was down")), "{got}");

    // A host that joins later builds the whole graph from the log.
    hosts.push(start_host(cwd, &nats.url, "c"));
    wait_for_one_graph(&hosts);
    let seen: Vec<_> = hosts.iter().map(|h| graph_seen(h, context)).collect();
    assert_eq!(seen[2].0["engram_count"].as_u64(), Some(52), "{}", seen[2].0);
    assert!(seen.iter().all(|s| *s == seen[0]), "the hosts show different graphs");

    // A graph written outside the cluster cannot join it (its engrams
    // would be on one host only) …
    let d = cwd.join("elex-d");
    let local = elex_command(&d, &["engram", "add", "a note of this host only"]).output().unwrap();
    assert!(local.status.success(), "{}", text(&local.stderr));
    let refused = host_command(cwd, &nats.url, "d", "elex-d").output().unwrap();
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("written outside the cluster"), "{}", text(&refused.stderr));
    // … and a host's copy, outside the cluster, takes no writes.
    let mut c = hosts.pop().unwrap();
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let alone = elex_command(&cwd.join("elex-c"), &["engram", "add", "x"]).output().unwrap();
    assert!(!alone.status.success());
    assert!(text(&alone.stderr).contains("write through a host of the cluster"), "{}", text(&alone.stderr));
    let read =
        elex_command(&cwd.join("elex-c"), &["engram", "get", &while_down.to_string()]).output().unwrap();
    assert!(text(&read.stdout).contains("written while b was down"), "{}", text(&read.stderr));
}
