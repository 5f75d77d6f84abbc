//! `elex serve` as an operator runs it: a real HTTP server on a loopback
//! port, spoken to with plain HTTP/1.1 over a TCP socket: roles from an
//! access file, JSON errors with the right status, the body limit, the same
//! answer object as `elex query --json`, and a SIGTERM that stores what the
//! agents learned.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::text;

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("ELEX_DATA_DIR", data)
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
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {head}\n{body}"));
    (status, json)
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
    let (status, err) = request(addr, "GET", "/v1/nothing-here", Some(READER), "");
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")));
    let (status, err) = request(addr, "GET", "/v1/query", Some(OPERATOR), "");
    assert_eq!((status, err["code"].as_str()), (405, Some("method_not_allowed")));
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
    let (status, one) = request(addr, "GET", "/v1/agents/faj1213094", Some(READER), "");
    assert_eq!(status, 200);
    assert!(one["usage"]["calls"].as_u64().is_some_and(|c| c >= 2), "{one}");
    // An answer left for a later run to reward.
    let (status, second) = request(addr, "POST", "/v1/query", Some(OPERATOR), ask);
    assert_eq!(status, 200);
    let later_qid = second["query_id"].as_str().unwrap().to_string();

    // SIGTERM: it stops, stores every agent's state, and exits 0.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    let mut out = String::new();
    server.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success() && out.contains("every agent's state is stored"), "{status}: {out}");
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
