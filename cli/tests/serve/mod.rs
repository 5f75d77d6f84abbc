//! `elex serve` as an operator runs it: a real HTTP server on a loopback
//! port, spoken to with plain HTTP/1.1 over a TCP socket: roles from an
//! access file, JSON errors with the right status, the body limit, the same
//! answer object as `elex query --json`, and a SIGTERM that stores what the
//! agents learned.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::text;

mod cluster;

const OPERATOR: &str = "operator-token-0123456789";
const READER: &str = "reader-token-0123456789";

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, args: &[&str]) -> Server {
    start_with_registry(data, &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/registry"), args)
}

fn start_with_registry(data: &Path, registry: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("ELEX_DATA_DIR", data)
        .env("ELEX_REGISTRY", registry)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start elex serve");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line:?}")).to_string();
    Server { child, addr }
}

/// One request; (status, JSON body).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    request_of(addr, method, path, token, "application/json", body.as_bytes())
}

/// One request with a body of `content_type`; (status, JSON body).
fn request_of(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let (status, head, body) = raw(addr, method, path, token, content_type, body);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {head}\n{body}"));
    (status, json)
}

/// One request; (status, head, body as text).
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(300))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server that refuses a request before reading its body (a 403 for an
    // upload) may close while the body is still being sent.
    let _ = stream.write_all(body);
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, head.to_string(), body.to_string())
}

/// Opens `GET /v1/events` as `token`; the reader of its stream, past the
/// response head.
fn event_stream(addr: &str, token: Option<&str>) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "{line}");
    while line.trim() != "" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    reader
}

/// Reads the event stream until an event named `name` whose data has
/// `needle`; that data.
fn next_event(events: &mut BufReader<TcpStream>, name: &str, needle: &str) -> String {
    let mut line = String::new();
    let mut current = String::new();
    loop {
        line.clear();
        assert!(events.read_line(&mut line).unwrap() > 0, "the stream ended before {name}");
        if let Some(event) = line.trim().strip_prefix("event: ") {
            current = event.to_string();
        } else if let Some(data) = line.trim().strip_prefix("data: ")
            && current == name
            && data.contains(needle)
        {
            return data.to_string();
        }
    }
}

fn access_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("access.json");
    let tokens = format!(
        r#"{{"tokens": [{{"name": "ops", "token": "{OPERATOR}", "role": "operator"}},
                        {{"name": "dashboard", "token": "{READER}", "role": "read"}}]}}"#
    );
    std::fs::write(&file, tokens).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    file
}

#[test]
fn the_service_answers_with_roles_limits_and_json_errors_and_keeps_state_on_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let access = access_file(work.path());
    let server = start(&data, &["--access", access.to_str().unwrap(), "--max-body-bytes", "2048"]);
    let addr = server.addr.as_str();
    let (status, err) = request(addr, "GET", "/v1/events", None, "");
    assert_eq!((status, err["code"].as_str()), (401, Some("unauthorized")));
    let (_, head, _) = raw(addr, "GET", "/v1/agents", None, "application/json", b"");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    let mut events = event_stream(addr, Some(READER));

    assert_eq!(request(addr, "GET", "/health", None, "").0, 200);
    let (status, ready) = request(addr, "GET", "/ready", None, "");
    assert_eq!((status, ready["agents"].as_u64()), (200, Some(593)));
    // Roles: none, read, operator.
    let (status, err) = request(addr, "GET", "/v1/agents", None, "");
    assert_eq!((status, err["code"].as_str()), (401, Some("unauthorized")));
    let (status, err) = request(addr, "GET", "/v1/agents", Some("not-a-token-at-all-000"), "");
    assert_eq!((status, err["code"].as_str()), (401, Some("unauthorized")));
    let (status, agents) = request(addr, "GET", "/v1/agents", Some(READER), "");
    assert_eq!((status, agents.as_array().map(Vec::len)), (200, Some(593)));
    let ask = r#"{"text": "What is FAJ 121 3094?"}"#;
    let (status, err) = request(addr, "POST", "/v1/query", Some(READER), ask);
    assert_eq!((status, err["code"].as_str()), (403, Some("forbidden")));
    // The answer: the object `elex query --json` prints, key for key.
    let (status, answer) = request(addr, "POST", "/v1/query", Some(OPERATOR), ask);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["agent"]["faj"], "FAJ 121 3094");
    let cli = Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(["query", "--json", "What is FAJ 121 3094?"])
        .env("ELEX_DATA_DIR", work.path().join("cli-data"))
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&answer), keys(&cli));
    // Bad requests: JSON errors with their status.
    let cases = [
        (r#"{"text": "#, 400, "bad_request"),
        (r#"{"text": "hi", "surprise": 1}"#, 422, "bad_request"),
        (r#"{"text": "   "}"#, 400, "bad_request"),
        (r#"{"text": "hi", "agent": "FAJ 999 9999"}"#, 404, "no_agent"),
    ];
    for (body, want, code) in cases {
        let (status, err) = request(addr, "POST", "/v1/query", Some(OPERATOR), body);
        assert_eq!((status, err["code"].as_str()), (want, Some(code)), "{body}: {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let huge = format!(r#"{{"text": "{}"}}"#, "x".repeat(4096));
    let (status, err) = request(addr, "POST", "/v1/query", Some(OPERATOR), &huge);
    assert_eq!((status, err["code"].as_str()), (413, Some("too_large")));
    assert!(err["message"].as_str().unwrap().contains("--max-body-bytes 2048"), "{err}");
    let (status, _, body) = raw(addr, "POST", "/v1/query", Some(OPERATOR), "text/plain", ask.as_bytes());
    assert!(status == 415 && body.contains("unsupported_media_type"), "{status}: {body}");
    let (status, err) = request(addr, "GET", "/v1/nothing-here", Some(READER), "");
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    let (status, err) = request(addr, "GET", "/v1/query", Some(OPERATOR), "");
    assert_eq!((status, err["code"].as_str()), (405, Some("method_not_allowed")));
    // Plugins are the admin's; an upload (unsigned) needs --allow-unsigned.
    let (status, err) = request(addr, "POST", "/v1/plugins", Some(OPERATOR), r#"{"name": "x@1"}"#);
    assert_eq!((status, err["code"].as_str()), (403, Some("forbidden")));
    let (status, listed) = request(addr, "GET", "/v1/plugins", Some(READER), "");
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(0)));
    // Feedback, and one agent with its use.
    let qid = answer["query_id"].as_str().unwrap();
    let (status, fed) = request(
        addr,
        "POST",
        "/v1/feedback",
        Some(OPERATOR),
        &format!(r#"{{"query_id": "{qid}", "reward": 1}}"#),
    );
    assert_eq!((status, fed["rewarded"]["agent"].as_str()), (200, Some("FAJ 121 3094")), "{fed}");
    // A second reward for the same answer is the caller's mistake: 400.
    let again = format!(r#"{{"query_id": "{qid}", "reward": 1}}"#);
    let (status, err) = request(addr, "POST", "/v1/feedback", Some(OPERATOR), &again);
    assert_eq!((status, err["code"].as_str()), (400, Some("bad_request")), "{err}");
    let (status, one) = request(addr, "GET", "/v1/agents/faj1213094", Some(READER), "");
    assert_eq!(status, 200);
    assert!(one["usage"]["calls"].as_u64().is_some_and(|c| c >= 2), "{one}");
    // An answer left for a later run to reward.
    let (status, second) = request(addr, "POST", "/v1/query", Some(OPERATOR), ask);
    assert_eq!(status, 200);
    let later_qid = second["query_id"].as_str().unwrap().to_string();
    // The event stream saw the answers and the reward.
    let seen: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "query_answered", qid)).unwrap();
    assert_eq!(seen["agent"], "FAJ 121 3094", "{seen}");
    next_event(&mut events, "agent_rewarded", qid);
    next_event(&mut events, "query_answered", &later_qid);
    // Metrics: requests by route template and status, each agent's use.
    let (status, _, metrics) = raw(addr, "GET", "/metrics", Some(READER), "text/plain", b"");
    assert_eq!(status, 200, "{metrics}");
    for line in [
        r#"elex_http_requests_total{method="POST",route="/v1/query",status="200"} 2"#,
        r#"elex_http_requests_total{method="POST",route="/v1/query",status="403"} 1"#,
        r#"elex_http_requests_total{method="GET",route="/v1/agents/{id}",status="200"} 1"#,
        // Two answers, a reward and a refused second reward.
        r#"elex_agent_calls_total{agent="FAJ 121 3094"} 4"#,
        r#"elex_agent_errors_total{agent="FAJ 121 3094"} 1"#,
        r#"elex_agent_call_duration_seconds_count{agent="FAJ 121 3094"} 4"#,
        r#"elex_agents{state="running"} 593"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("elex_http_request_duration_seconds_bucket{"), "{metrics}");
    let (status, err) = request(addr, "GET", "/metrics", None, "");
    assert_eq!((status, err["code"].as_str()), (401, Some("unauthorized")));
    // The OpenAPI document, open to all, is the committed one.
    let (status, _, served) = raw(addr, "GET", "/v1/openapi.json", None, "application/json", b"");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../server/openapi.json")).unwrap();
    assert_eq!((status, served), (200, committed));

    // SIGTERM: it stops, stores every agent's state, and exits 0.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    let mut out = String::new();
    server.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success() && out.contains("every agent's state is stored"), "{status}: {out}");
    // The open event stream was ended, not left hanging.
    let mut rest = String::new();
    events.read_to_string(&mut rest).unwrap();
    // A later run knows the query and what the agent learned from it.
    let later = Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(["feedback", &later_qid, "0.5"])
        .env("ELEX_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(later.status.success(), "{}", text(&later.stderr));
}

#[test]
fn a_service_off_loopback_needs_an_access_file_and_a_bad_one_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_elex"))
            .arg("serve")
            .args(args)
            .env("ELEX_DATA_DIR", work.path().join("data"))
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"]);
    assert!(!out.status.success() && text(&out.stderr).contains("--access"), "{}", text(&out.stderr));
    let access = access_file(work.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&access, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(&["--listen", "127.0.0.1:0", "--access", access.to_str().unwrap()]);
        assert!(!out.status.success() && text(&out.stderr).contains("chmod 600"), "{}", text(&out.stderr));
    }
    let out = run(&["--listen", "not-an-address"]);
    assert!(!out.status.success() && text(&out.stderr).contains("--listen"), "{}", text(&out.stderr));
}

#[test]
fn plugins_load_and_unload_while_the_service_runs() {
    use super::plugins::{elex, ok, own_registry_trusting_a_new_key};
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let data = cwd.join("data");
    let key = own_registry_trusting_a_new_key(cwd);
    let id = "hot-moon";
    ok(elex(&data, cwd, &["new", id, "--lang", "js"]), "elex new");
    ok(elex(&data, cwd, &["build", id]), "elex build");
    let file = cwd.join(id).join("build").join(format!("{id}.wasm"));
    let wasm = std::fs::read(&file).unwrap();

    // Without --allow-unsigned an upload is refused, and nothing changes.
    let server = start_with_registry(&data, &cwd.join("registry"), &[]);
    let addr = server.addr.as_str();
    let (status, err) = request_of(addr, "POST", "/v1/plugins", None, "application/wasm", &wasm);
    assert_eq!((status, err["code"].as_str()), (403, Some("unsigned_refused")), "{err}");
    drop(server);

    let server = start_with_registry(&data, &cwd.join("registry"), &["--allow-unsigned"]);
    let addr = server.addr.as_str();
    let ready = |want: u64| {
        let (status, ready) = request(addr, "GET", "/ready", None, "");
        assert_eq!((status, ready["agents"].as_u64()), (200, Some(want)), "{ready}");
    };
    ready(593);
    // Not a component; not a plugin (the feature agent has no manifest);
    // a registry entry that does not exist: each a 422 with its reason.
    let (status, err) = request_of(addr, "POST", "/v1/plugins", None, "application/wasm", b"\0asm junk");
    assert_eq!((status, err["code"].as_str()), (422, Some("bad_plugin")), "{err}");
    let agent = std::fs::read(super::components().join("feature-agent.composed.wasm")).unwrap();
    let (status, err) = request_of(addr, "POST", "/v1/plugins", None, "application/wasm", &agent);
    assert_eq!((status, err["code"].as_str()), (422, Some("bad_plugin")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("manifest"), "{err}");
    let (status, err) = request(addr, "POST", "/v1/plugins", None, r#"{"name": "no-such-plugin@^1"}"#);
    assert_eq!((status, err["code"].as_str()), (422, Some("bad_plugin")), "{err}");
    ready(593);

    // Uploaded while the 593 run: routed to, asked by id, rewarded.
    let (status, loaded) = request_of(addr, "POST", "/v1/plugins", None, "application/wasm", &wasm);
    assert_eq!((status, loaded["id"].as_str()), (201, Some(id)), "{loaded}");
    assert_eq!(loaded["source"], "unsigned upload");
    ready(594);
    let (status, answer) =
        request(addr, "POST", "/v1/query", None, r#"{"text": "What can Hot moon tell me?"}"#);
    assert_eq!((status, answer["agent"]["faj"].as_str()), (200, Some(id)), "{answer}");
    let ask = format!(r#"{{"text": "hello", "agent": "{id}"}}"#);
    let (status, answer) = request(addr, "POST", "/v1/query", None, &ask);
    assert_eq!((status, answer["q_value"].as_f64()), (200, Some(0.0)), "{answer}");
    let qid = answer["query_id"].as_str().unwrap();
    let (status, _) =
        request(addr, "POST", "/v1/feedback", None, &format!(r#"{{"query_id": "{qid}", "reward": 0.5}}"#));
    assert_eq!(status, 200);
    // The features still answer as before.
    let (status, answer) = request(addr, "POST", "/v1/query", None, r#"{"text": "What is FAJ 121 3094?"}"#);
    assert_eq!((status, answer["agent"]["faj"].as_str()), (200, Some("FAJ 121 3094")), "{answer}");

    // Signed into the registry, loaded by name: it replaces the upload. Its
    // state is its own (an unsigned component's is never restored into a
    // signed one), and it learns.
    let key = key.to_str().unwrap();
    let file = file.to_str().unwrap();
    ok(elex(&data, cwd, &["sign", file, "--name", id, "--version", "0.1.0", "--key", key]), "sign");
    let (status, loaded) = request(addr, "POST", "/v1/plugins", None, &format!(r#"{{"name": "{id}@^0.1"}}"#));
    assert_eq!((status, loaded["source"].as_str()), (201, Some("registry hot-moon@0.1.0")), "{loaded}");
    ready(594);
    let (status, answer) = request(addr, "POST", "/v1/query", None, &ask);
    assert_eq!((status, answer["q_value"].as_f64()), (200, Some(0.0)), "{answer}");
    let qid = answer["query_id"].as_str().unwrap();
    let (status, _) =
        request(addr, "POST", "/v1/feedback", None, &format!(r#"{{"query_id": "{qid}", "reward": 0.5}}"#));
    assert_eq!(status, 200);
    let (status, listed) = request(addr, "GET", "/v1/plugins", None, "");
    assert_eq!((status, listed[0]["id"].as_str()), (200, Some(id)), "{listed}");

    // Unloaded: gone from routing and from --agent, at once.
    let (status, gone) = request(addr, "DELETE", &format!("/v1/plugins/{id}"), None, "");
    assert_eq!((status, gone["unloaded"].as_str()), (200, Some(id)), "{gone}");
    ready(593);
    let (status, err) = request(addr, "POST", "/v1/query", None, &ask);
    assert_eq!((status, err["code"].as_str()), (404, Some("no_agent")), "{err}");
    let (status, answer) =
        request(addr, "POST", "/v1/query", None, r#"{"text": "What can Hot moon tell me?"}"#);
    assert_eq!(status, 200);
    assert_ne!(answer["agent"]["faj"], id, "{answer}");
    let (status, err) = request(addr, "DELETE", &format!("/v1/plugins/{id}"), None, "");
    assert_eq!((status, err["code"].as_str()), (404, Some("no_agent")), "{err}");
    // Loaded again, it is back with what it learned.
    let (status, _) = request(addr, "POST", "/v1/plugins", None, &format!(r#"{{"name": "{id}@^0.1"}}"#));
    assert_eq!(status, 201);
    let (status, answer) = request(addr, "POST", "/v1/query", None, &ask);
    assert_eq!((status, answer["q_value"].as_f64()), (200, Some(0.5)), "{answer}");
}

#[test]
fn each_client_is_held_to_its_rate() {
    let work = tempfile::tempdir().unwrap();
    let access = access_file(work.path());
    let server = start(
        &work.path().join("data"),
        &["--access", access.to_str().unwrap(), "--rate-limit", "0.5", "--rate-burst", "2"],
    );
    let addr = server.addr.as_str();
    for _ in 0..2 {
        assert_eq!(request(addr, "GET", "/v1/agents", Some(READER), "").0, 200);
    }
    let (status, head, body) = raw(addr, "GET", "/v1/agents", Some(READER), "application/json", b"");
    assert_eq!(status, 429, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 2"), "{head}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["code"], "rate_limited");
    assert!(err["message"].as_str().unwrap().contains("token dashboard"), "{err}");
    // Another token has its own; requests without a token count by address;
    // health and readiness are never limited.
    assert_eq!(request(addr, "GET", "/v1/agents/FAJ%20121%203094", Some(OPERATOR), "").0, 200);
    for _ in 0..2 {
        assert_eq!(request(addr, "GET", "/v1/agents", None, "").0, 401);
    }
    let (status, err) = request(addr, "GET", "/v1/agents", None, "");
    assert_eq!((status, err["code"].as_str()), (429, Some("rate_limited")), "{err}");
    for _ in 0..5 {
        assert_eq!(request(addr, "GET", "/health", None, "").0, 200);
    }
}

#[test]
fn the_memory_graph_and_workflows_over_http() {
    let work = tempfile::tempdir().unwrap();
    let server = start(&work.path().join("data"), &[]);
    let addr = server.addr.as_str();
    let (status, context) = request(addr, "POST", "/v1/contexts", None, r#"{"name": "msm-review"}"#);
    assert_eq!(status, 201, "{context}");
    let context = context["id"].as_u64().unwrap();
    let body = format!(
        r#"{{"content": "MIMO Sleep Mode saves energy at night", "metadata": {{"kind": "fact"}}, "context": {context}}}"#
    );
    let (status, engram) = request(addr, "POST", "/v1/engrams", None, &body);
    assert_eq!(status, 201, "{engram}");
    let id = engram["id"].as_u64().unwrap();
    let (status, got) = request(addr, "GET", &format!("/v1/engrams/{id}"), None, "");
    assert_eq!((status, got["metadata"]["kind"].as_str()), (200, Some("fact")), "{got}");
    let (status, hits) = request(addr, "POST", "/v1/search", None, r#"{"text": "sleep energy"}"#);
    assert_eq!((status, hits[0]["id"].as_u64()), (200, Some(id)), "{hits}");
    let members = r#"{"agents": ["FAJ 121 3094"]}"#;
    let (status, _) = request(addr, "POST", &format!("/v1/contexts/{context}/members"), None, members);
    assert_eq!(status, 200);
    // A workflow's answers become engrams of the context.
    let workflow = format!(
        r#"{{"context": {context}, "workflow": {{"name": "msm-review", "steps": [
            {{"id": "counters", "agent": "FAJ 121 3094", "query": "Which counters show the effect?"}},
            {{"id": "check", "agent": "FAJ 121 3094", "action": "validate",
              "params": {{"MimoSleepFunction.sleepMode": 2}}, "depends_on": ["counters"]}}]}}}}"#
    );
    let (status, report) = request(addr, "POST", "/v1/workflows", None, &workflow);
    assert_eq!((status, report["succeeded"].as_bool()), (200, Some(true)), "{report}");
    assert_eq!(report["steps"].as_array().unwrap().len(), 2);
    let (status, shown) = request(addr, "GET", &format!("/v1/contexts/{context}?limit=10"), None, "");
    assert_eq!((status, shown["engram_count"].as_u64()), (200, Some(3)), "{shown}");
    assert!(shown["members"].as_array().unwrap().iter().any(|m| m == "FAJ 121 3094"), "{shown}");
    // Bad input: each its status and code.
    let cases = [
        ("GET", "/v1/engrams/999999".to_string(), "", 404, "not_found"),
        ("GET", "/v1/engrams/not-a-number".to_string(), "", 400, "bad_request"),
        (
            "POST",
            "/v1/workflows".to_string(),
            r#"{"context": 1, "workflow": {"name": "x", "steps": [{"id": "a", "agent": "FAJ 999 9999"}]}}"#,
            400,
            "bad_workflow",
        ),
        (
            "POST",
            "/v1/workflows".to_string(),
            r#"{"context": 1, "workflow": {"steps": "no"}}"#,
            400,
            "bad_workflow",
        ),
        ("POST", "/v1/contexts/999999/members".to_string(), members, 404, "not_found"),
        ("POST", "/v1/search".to_string(), r#"{"text": "x", "limit": "ten"}"#, 422, "bad_request"),
    ];
    for (method, path, body, want, code) in cases {
        let (status, err) = request(addr, method, &path, None, body);
        assert_eq!((status, err["code"].as_str()), (want, Some(code)), "{method} {path}: {err}");
    }
}

/// Splits a shell line into words: single quotes group, `#` after a space
/// starts a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    let mut previous = ' ';
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '#' if !quoted && previous == ' ' => break,
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
        previous = c;
    }
    words.extend(word);
    words
}

#[test]
fn the_readmes_curl_session_runs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block =
        readme.split("<!-- service-example -->\n```sh\n").nth(1).expect("the README's service example");
    let lines: Vec<&str> = block[..block.find("```").unwrap()].lines().collect();
    assert!(lines[0].starts_with("elex serve --listen 127.0.0.1:7700"), "{}", lines[0]);
    assert!(lines.last().unwrap().starts_with("kill %1"));
    let work = tempfile::tempdir().unwrap();
    let server = start(&work.path().join("data"), &[]);
    let mut ran = 0;
    for line in &lines[1..lines.len() - 1] {
        let words = shell_words(line);
        assert_eq!(words[0], "curl", "{line}");
        let (mut method, mut headers, mut body, mut url) =
            ("GET".to_string(), Vec::new(), String::new(), None);
        let mut args = words[1..].iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-s" | "-N" => {}
                "-X" => method = args.next().unwrap().clone(),
                "-H" => headers.push(args.next().unwrap().clone()),
                "-d" => body = args.next().unwrap().clone(),
                a if a.starts_with("http://127.0.0.1:7700") => {
                    url = Some(a.replace("127.0.0.1:7700", &server.addr))
                }
                a => panic!("{line}: the test does not know curl's {a}"),
            }
        }
        let url = url.unwrap_or_else(|| panic!("{line}: no URL"));
        let path = url.split_once(server.addr.as_str()).unwrap().1.to_string();
        if path == "/v1/events" {
            // A stream: it opens with 200; the service ends it when it stops.
            event_stream(&server.addr, None);
        } else {
            let content_type = headers
                .iter()
                .find_map(|h| h.strip_prefix("Content-Type: "))
                .unwrap_or("application/json")
                .to_string();
            let (status, head, text) =
                raw(&server.addr, &method, &path, None, &content_type, body.as_bytes());
            assert!((200..300).contains(&status), "{line}: {head}\n{text}");
        }
        ran += 1;
    }
    assert_eq!(ran, lines.len() - 2);
    // `kill %1`: SIGTERM, and the service stops cleanly.
    let mut server = server;
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    assert!(server.child.wait().unwrap().success());
}

#[test]
fn a_sigkill_loses_no_acknowledged_feedback_and_no_committed_engram() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = start(&data, &[]);
    let addr = server.addr.clone();
    let ask = r#"{"text": "What is FAJ 121 3094?"}"#;
    for _ in 0..3 {
        let (status, answer) = request(&addr, "POST", "/v1/query", None, ask);
        assert_eq!(status, 200, "{answer}");
        let qid = answer["query_id"].as_str().unwrap();
        let reward = format!(r#"{{"query_id": "{qid}", "reward": 1}}"#);
        assert_eq!(request(&addr, "POST", "/v1/feedback", None, &reward).0, 200);
    }
    let (_, learned) = request(&addr, "POST", "/v1/query", None, ask);
    let learned = learned["q_value"].as_f64().unwrap();
    assert!(learned > 0.0, "three rewards of 1 raised the value: {learned}");
    let (status, engram) =
        request(&addr, "POST", "/v1/engrams", None, r#"{"content": "kept through a crash"}"#);
    assert_eq!(status, 201);
    let id = engram["id"].as_u64().unwrap();
    // SIGKILL under load (other agents asked meanwhile): no shutdown, no
    // save.
    let load = std::thread::spawn(move || {
        let mut answered = 0;
        for k in 0..100_000 {
            let body = format!(r#"{{"text": "What does feature number {k} require?"}}"#);
            let Ok(mut stream) = TcpStream::connect(&addr) else { break };
            let _ = write!(
                stream,
                "POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut response = String::new();
            if stream.read_to_string(&mut response).is_err() || !response.contains(" 200 ") {
                break;
            }
            answered += 1;
        }
        answered
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(server);
    let answered_before_the_kill = load.join().unwrap();
    assert!(answered_before_the_kill > 0 && answered_before_the_kill < 100_000, "{answered_before_the_kill}");
    let server = start(&data, &[]);
    let (status, after) = request(&server.addr, "POST", "/v1/query", None, ask);
    assert_eq!((status, after["q_value"].as_f64()), (200, Some(learned)), "{after}");
    let (status, kept) = request(&server.addr, "GET", &format!("/v1/engrams/{id}"), None, "");
    assert_eq!((status, kept["content"].as_str()), (200, Some("kept through a crash")), "{kept}");
}

#[test]
fn the_cli_talks_to_a_running_service_with_server() {
    let work = tempfile::tempdir().unwrap();
    let access = access_file(work.path());
    let server = start(&work.path().join("data"), &["--access", access.to_str().unwrap()]);
    let url = format!("http://{}", server.addr);
    // A data dir of its own that the commands must not touch.
    let untouched = work.path().join("untouched");
    let elex = |args: &[&str], env_server: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_elex"));
        if env_server {
            cmd.env("ELEX_SERVER", &url);
        } else {
            cmd.args(["--server", &url]);
        }
        cmd.args(args).env("ELEX_DATA_DIR", &untouched).env("ELEX_TOKEN", OPERATOR).env_remove("RUST_LOG");
        cmd.output().unwrap()
    };
    let out = elex(&["query", "--json", "What is FAJ 121 3094?"], false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["agent"]["faj"], "FAJ 121 3094");
    let qid = answer["query_id"].as_str().unwrap();
    // People see what a local query shows.
    let out = elex(&["query", "What is FAJ 121 3094?"], true);
    let shown = text(&out.stdout);
    assert!(out.status.success() && shown.contains("agent       FAJ 121 3094"), "{shown}");
    assert!(shown.contains("query id    q"), "{shown}");
    let out = elex(&["feedback", qid, "0.5"], true);
    assert!(
        out.status.success() && text(&out.stdout).contains("FAJ 121 3094 rewarded +0.50"),
        "{}",
        text(&out.stderr)
    );
    let out = elex(&["agents", "show", "faj1213094"], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown["usage"]["calls"].as_u64().unwrap() >= 3, "{shown}");
    assert!(shown["about"].as_array().unwrap().len() >= 3, "{shown}");
    let out = elex(&["context", "create", "remote-review"], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let context = text(&out.stdout).trim().to_string();
    let out =
        elex(&["engram", "add", "written over HTTP", "--context", &context, "--meta", "kind=test"], true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = elex(&["engram", "search", "written HTTP"], true);
    assert!(out.status.success() && text(&out.stdout).contains("written over HTTP"), "{}", text(&out.stdout));
    // Refusals, each clear.
    let out = elex(&["agents", "stats"], true);
    assert!(!out.status.success() && text(&out.stderr).contains("without --server"), "{}", text(&out.stderr));
    let out = elex(&["engram", "get", "1", "--as", "FAJ 121 3094"], true);
    assert!(!out.status.success() && text(&out.stderr).contains("--as"), "{}", text(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(["--server", &url, "query", "hi"])
        .env_remove("ELEX_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = elex(&["--server", "https://127.0.0.1:1", "query", "hi"], true);
    assert!(!out.status.success() && text(&out.stderr).contains("http://HOST:PORT"), "{}", text(&out.stderr));
    let out = elex(&["--server", "http://127.0.0.1:1", "query", "hi"], true);
    assert!(!out.status.success() && text(&out.stderr).contains("cannot reach"), "{}", text(&out.stderr));
    // Nothing was started or written here.
    assert!(!untouched.exists());
}

#[test]
fn a_looping_plugin_meets_the_request_timeout_and_the_in_flight_bound() {
    let work = tempfile::tempdir().unwrap();
    let hostile = std::fs::read(super::components().join("testing-hostile.wasm")).unwrap();
    let manifest = "id = \"looper\"\nname = \"Looper\"\n[budgets]\ntime-ms = 3000\n";
    let looper = elex_registry::Manifest::from_toml(manifest).unwrap().embed(&hostile).unwrap();
    let server = start(
        &work.path().join("data"),
        &["--allow-unsigned", "--request-timeout-ms", "100", "--max-in-flight", "1"],
    );
    let addr = server.addr.clone();
    let (status, loaded) = request_of(&addr, "POST", "/v1/plugins", None, "application/wasm", &looper);
    assert_eq!(status, 201, "{loaded}");
    // The loop outlasts the request: 503 with Retry-After, while the guest
    // runs on until its own budget stops it ...
    let (status, head, body) =
        raw(&addr, "POST", "/v1/query", None, "application/json", br#"{"text": "loop", "agent": "looper"}"#);
    assert_eq!(status, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert!(body.contains("took longer than 100 ms"), "{body}");
    // ... holding the one request slot: the next request is refused at once.
    let (status, err) = request(&addr, "POST", "/v1/query", None, r#"{"text": "What is FAJ 121 3094?"}"#);
    assert_eq!((status, err["code"].as_str()), (503, Some("busy")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("in flight"), "{err}");
    // Once the budget has stopped the loop, the service answers again.
    let mut answered = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if request(&addr, "GET", "/v1/agents/looper", None, "").0 == 200 {
            answered = true;
            break;
        }
    }
    assert!(answered, "the service did not recover after the plugin's budget");
}

#[test]
fn a_close_choice_asks_back_unless_the_request_says_not_to() {
    let work = tempfile::tempdir().unwrap();
    let server = start(&work.path().join("data"), &[]);
    let addr = server.addr.as_str();
    let vague = r#"{"text": "how to reduce interference between cells"}"#;
    let (status, asked) = request(addr, "POST", "/v1/query", None, vague);
    assert_eq!((status, asked["action"].as_str()), (200, Some("request-clarification")), "{asked}");
    let body = serde_json::json!({ "query_id": asked["query_id"], "reward": 1.0 }).to_string();
    let (status, refused) = request(addr, "POST", "/v1/feedback", None, &body);
    assert_eq!((status, refused["code"].as_str()), (400, Some("bad_request")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("nothing to reward"), "{refused}");
    let guess = r#"{"text": "how to reduce interference between cells", "clarify": false}"#;
    let (status, answered) = request(addr, "POST", "/v1/query", None, guess);
    assert_eq!(
        (status, answered["agent"]["faj"].clone()),
        (200, asked["agent"]["faj"].clone()),
        "{answered}"
    );
    assert_ne!(answered["action"], "request-clarification", "{answered}");
}
