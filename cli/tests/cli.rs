//! The `elex` binary as an operator uses it. Needs the built components
//! (`cargo xtask build`, which `cargo xtask test` runs first).

mod plugins;
mod serve;

use std::path::PathBuf;
use std::process::{Command, Output};

fn components() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/components")
}

fn elex(args: &[&str]) -> Output {
    // Cargo gives integration tests a scratch folder under target/.
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("elex-cli-data");
    Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(args)
        .env("ELEX_DATA_DIR", &data)
        .env_remove("RUST_LOG")
        .output()
        .expect("run elex")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_command() {
    let out = elex(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "query", "inspect", "keygen", "sign", "verify", "index", "agents", "engram", "context", "workflow",
        "feedback", "load", "unload", "new", "build", "wit", "serve",
    ] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(help.contains("RUST_LOG"), "{help}");
}

#[test]
fn inspect_shows_only_host_imports_on_the_composed_agent() {
    let file = components().join("feature-agent.composed.wasm");
    let out = elex(&["inspect", file.to_str().unwrap(), "--world", "elex:platform/plugin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wit = text(&out.stdout);
    assert!(wit.contains("export elex:agent/agent@0.1.0;"), "{wit}");
    assert!(wit.contains("import elex:host/log@0.1.0;"), "{wit}");
    for lib in ["elex:vector", "elex:qlearning", "elex:hnsw", "wasi:"] {
        assert!(!wit.contains(&format!("import {lib}")), "{lib} is still imported:\n{wit}");
    }
    assert!(text(&out.stderr).contains("fits elex:platform/plugin@0.1.0"));
    assert!(text(&out.stderr).contains("the host loads it: one instance declares"), "{}", text(&out.stderr));
}

#[test]
fn inspect_explains_what_is_wrong() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = elex(&["inspect", manifest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a WebAssembly file"), "{}", text(&out.stderr));

    let vector = components().join("vector.wasm");
    let out = elex(&["inspect", vector.to_str().unwrap(), "--world", "elex:platform/plugin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("must export `elex:agent/agent@0.1.0`"), "{err}");

    let out = elex(&["inspect", vector.to_str().unwrap(), "--world", "no:such/world"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown world"), "{}", text(&out.stderr));
}

#[test]
fn keygen_sign_verify_round_trip() {
    let (registry, key) = registry_with_trusted_key("sign");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let id = key.file_stem().unwrap().to_str().unwrap().to_string();
    let trust = registry.join("trust");
    let reg = registry.to_str().unwrap();
    let composed = components().join("feature-agent.composed.wasm");
    let args = [
        "--registry",
        reg,
        "sign",
        composed.to_str().unwrap(),
        "--name",
        "feature-agent",
        "--version",
        "0.1.0",
    ];
    let out = elex(&[&args[..], &["--key", key.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = elex(&["--registry", reg, "verify", "feature-agent@^0.1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok  feature-agent@0.1.0"), "{}", text(&out.stdout));
    let out = elex(&["--registry", reg, "query", "What is FAJ 121 3094?", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The vector library does not fit the plugin world: refused at signing.
    let vector = components().join("vector.wasm");
    let out = elex(&[
        "--registry",
        reg,
        "sign",
        vector.to_str().unwrap(),
        "--name",
        "v",
        "--version",
        "1.0.0",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not fit"), "{}", text(&out.stderr));
    // Revoking the key makes verification and loading fail.
    std::fs::write(
        trust.join("policy.json"),
        format!(r#"{{"format": 1, "trusted": [{{"key": "{id}", "names": ["*"]}}], "revoked": ["{id}"]}}"#),
    )
    .unwrap();
    let out = elex(&["--registry", reg, "index", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("revoked"), "{}", text(&out.stdout));
    let out = elex(&["--registry", reg, "query", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("revoked key"), "{}", text(&out.stderr));
}

fn tempfile_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn query_answers_as_json() {
    let out = elex(&["query", "What is FAJ 121 3094?", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["agent"]["faj"], "FAJ 121 3094");
    assert_eq!(v["agent"]["chosen_by"], "FAJ code in the text");
    assert_eq!(v["action"], "direct-answer");
    assert!(v["content"].as_str().unwrap().contains("MIMO Sleep Mode"));
}

#[test]
fn query_refuses_bad_arguments_clearly() {
    let out = elex(&["query"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(text(&out.stderr).contains("<TEXT>"));

    let out = elex(&["query", "hello", "--component", "/no/such/file.wasm", "--allow-unsigned"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    // A component file is unsigned: refused unless explicitly allowed.
    let composed = components().join("feature-agent.composed.wasm");
    let out = elex(&["query", "What is FAJ 121 3094?", "--component", composed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("refusing to load unsigned component"), "{}", text(&out.stderr));
    let out = elex(&[
        "query",
        "What is FAJ 121 3094?",
        "--component",
        composed.to_str().unwrap(),
        "--allow-unsigned",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("UNSIGNED"), "a loud warning: {}", text(&out.stderr));

    // A registry without the agent says where it looked and what to do.
    let empty = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("empty-registry");
    let out = elex(&["query", "hello", "--registry", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("empty-registry does not exist") && err.contains("cargo xtask build"), "{err}");

    let out = elex(&["query", "hello", "--agent", "FAJ 999 9999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no feature has that FAJ code"), "{}", text(&out.stderr));

    let cargo_toml = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = elex(&["query", "hello", "--component", cargo_toml, "--allow-unsigned"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a WebAssembly file"), "{}", text(&out.stderr));
}

#[test]
fn agents_stats_shows_use_across_runs() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_elex"))
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run elex")
    };
    let out = run(&["agents", "stats"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no agent has run yet"), "{}", text(&out.stdout));
    // Two runs at once: the second waits for the agents' database.
    let a = std::thread::scope(|s| {
        let first = s.spawn(|| run(&["query", "What is FAJ 121 3094?"]));
        let second = run(&["query", "Which counters show the effect of FAJ 121 3094?"]);
        (first.join().unwrap(), second)
    });
    for out in [&a.0, &a.1] {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = run(&["agents", "stats", "--agent", "faj1213094", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["agent"], "FAJ 121 3094");
    assert_eq!(row["name"], "MIMO Sleep Mode");
    assert_eq!(row["calls"], 2, "{row}");
    assert_eq!(row["errors"], 0);
    assert!(row["latency_p50_us"].as_f64().unwrap() > 0.0, "{row}");
    assert!(row["latency_p99_us"].as_f64().unwrap() >= row["latency_p50_us"].as_f64().unwrap());
    assert!(row["memory_peak_bytes"].as_u64().unwrap() > 0);
    let out = run(&["agents", "stats"]);
    assert!(text(&out.stdout).contains("MIMO Sleep Mode"), "{}", text(&out.stdout));
    let out = run(&["agents", "stats", "--agent", "FAJ 999 9999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no recorded use"), "{}", text(&out.stderr));
}

/// `elex` with its own data dir.
fn elex_in(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_elex"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run elex")
}

#[test]
fn engrams_and_contexts_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| elex_in(data.path(), args);
    let out = run(&["engram", "add", "MIMO Sleep Mode saves energy at night", "--meta", "kind=fact"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let out = run(&["engram", "add", "Carrier aggregation raises throughput", "--as", "agent-x"]);
    let other = text(&out.stdout).trim().to_string();
    let out = run(&["engram", "search", "sleep energy", "--json"]);
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert_eq!(hits[0]["id"].to_string(), id);
    let out = run(&["engram", "search", "--meta", "kind=fact", "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0]["id"].to_string(), id);
    // Permissions: agent-y may not read agent-x's engram until they share a context.
    let out = run(&["engram", "get", &other, "--as", "agent-y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("denied"), "{}", text(&out.stderr));
    let ctx = text(&run(&["context", "create", "review", "--as", "agent-x"]).stdout).trim().to_string();
    let out = run(&["context", "add", &ctx, "--engram", &other, "--agent", "agent-y", "--as", "agent-x"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["engram", "get", &other, "--as", "agent-y"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("Carrier aggregation"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["context", "show", &ctx, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["members"], serde_json::json!(["agent-x", "agent-y"]));
    assert_eq!(shown["engram_count"], 1);
    // Bad input: a clear error, nothing stored.
    let out = run(&["engram", "add", "x", "--confidence", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("confidence"), "{}", text(&out.stderr));
    let out = run(&["engram", "add", "x", "--meta", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("key=value"), "{}", text(&out.stderr));
    let out = run(&["context", "show", "999"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn workflows_store_each_step_and_refuse_cycles_before_running() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| elex_in(data.path(), args);
    let ctx = text(&run(&["context", "create", "msm"]).stdout).trim().to_string();
    let wf = data.path().join("review.yaml");
    std::fs::write(
        &wf,
        "name: review\non_failure: continue\nsteps:\n\
         - id: counters\n  agent: FAJ 121 3094\n  query: Which counters show the effect of MIMO Sleep Mode?\n\
         - id: prereq\n  agent: FAJ 121 4219\n  query: What does it require?\n\
         - id: check\n  agent: FAJ 121 3094\n  action: validate\n  params: {Bogus.thing: 1}\n  depends_on: [counters, prereq]\n",
    )
    .unwrap();
    let out = run(&["workflow", "run", wf.to_str().unwrap(), "--context", &ctx, "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["succeeded"], true);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps[0]["answer"].as_str().unwrap().contains("pmMimoSleep"), "{report}");
    assert!(steps[2]["answer"].as_str().unwrap().contains("unknown-parameter"), "{report}");
    let check = steps[2]["engram"].to_string();
    let out = run(&["engram", "get", &check, "--json"]);
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["owner"], "FAJ 121 3094");
    assert_eq!(e["connections"].as_array().unwrap().len(), 2, "derived from both dependencies: {e}");
    let shown: serde_json::Value =
        serde_json::from_slice(&run(&["context", "show", &ctx, "--json"]).stdout).unwrap();
    assert_eq!(shown["engram_count"], 3);

    // A cycle is refused before anything runs.
    let cyclic = data.path().join("cyclic.json");
    std::fs::write(
        &cyclic,
        r#"{"name":"c","steps":[{"id":"a","agent":"FAJ 121 3094","query":"x","depends_on":["b"]},
            {"id":"b","agent":"FAJ 121 3094","query":"y","depends_on":["a"]}]}"#,
    )
    .unwrap();
    let out = run(&["workflow", "run", cyclic.to_str().unwrap(), "--context", &ctx]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cycle: a -> b -> a"), "{}", text(&out.stderr));
    let shown: serde_json::Value =
        serde_json::from_slice(&run(&["context", "show", &ctx, "--json"]).stdout).unwrap();
    assert_eq!(shown["engram_count"], 3, "nothing ran");
    // An unknown agent, too.
    std::fs::write(&cyclic, r#"{"name":"c","steps":[{"id":"a","agent":"FAJ 999 9999","query":"x"}]}"#)
        .unwrap();
    let out = run(&["workflow", "run", cyclic.to_str().unwrap(), "--context", &ctx]);
    assert!(text(&out.stderr).contains("no feature agent"), "{}", text(&out.stderr));
}

#[test]
fn feedback_reaches_the_agent_in_a_later_run_and_agents_are_listed() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| elex_in(data.path(), args);
    let out = run(&["query", "What are the prerequisites of FAJ 121 4219?", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["agents_live"], 593);
    assert_eq!(first["similarity_search"], "hnsw@0.1.0 component");
    let qid = first["query_id"].as_str().unwrap().to_string();
    let out = run(&["feedback", &qid, "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("FAJ 121 4219"), "{}", text(&out.stdout));
    // The next run's agent starts from what it learned.
    let again: serde_json::Value = serde_json::from_slice(
        &run(&["query", "What are the prerequisites of FAJ 121 4219?", "--json"]).stdout,
    )
    .unwrap();
    assert!(again["q_value"].as_f64().unwrap() > first["q_value"].as_f64().unwrap(), "{first}\n{again}");
    assert_ne!(again["query_id"], first["query_id"], "query ids are unique across runs");
    // Bad feedback: clear errors.
    let out = run(&["feedback", "q-unknown", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no answered query"), "{}", text(&out.stderr));
    let out = run(&["feedback", &qid, "5"]);
    assert!(text(&out.stderr).contains("outside -1..1"), "{}", text(&out.stderr));
    let out = run(&["feedback", &qid, "-0.5"]);
    assert_eq!(out.status.code(), Some(1), "a query is rewarded once");

    let out = run(&["agents", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len(),
        593
    );
    let out = run(&["agents", "show", "faj1214219"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("UE Throughput-Aware IFLB") && shown.contains("requires    FAJ 121 3009"),
        "{shown}"
    );
    assert!(shown.contains("learned     snapshot of"), "{shown}");
    // Its hand-written keywords (registry-index/keywords.jsonl).
    assert!(
        shown.lines().any(|l| l.starts_with("keywords    ") && l.ends_with("(elex's, for routing)")),
        "{shown}"
    );
    // A feature without counters says so, without an empty example list.
    let shown = text(&run(&["agents", "show", "FAJ 121 5589"]).stdout);
    assert!(shown.lines().any(|l| l == "counters    0"), "{shown}");
    assert!(shown.contains("parameters  4 (e.g. FieldReplaceableUnit."), "{shown}");
    assert_eq!(run(&["agents", "show", "FAJ 999 9999"]).status.code(), Some(1));
}

// ---- Issue #12: the CLI at its edges, and its data dir under attack ----

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_elex"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["agents", "list", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, then close the pipe. The JSON is far
    // larger than a pipe's buffer, so elex is still writing.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "[");
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn blank_questions_missing_places_and_a_file_as_data_dir_are_named() {
    let data = tempfile::tempdir().unwrap();
    for blank in ["", "   ", "\n\t"] {
        let out = elex_in(data.path(), &["query", blank]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("the question is empty"), "{}", text(&out.stderr));
    }
    let file = data.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for args in [&["engram", "search", "x"][..], &["agents", "stats"], &["query", "What is FAJ 121 3094?"]] {
        let out = elex_in(&file, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("a-file is not a folder") && err.contains("--data-dir"), "{args:?}: {err}");
    }
}

/// `elex` with its own data dir and the registry's hostile fixture as the
/// agent component.
fn hostile_query(data: &std::path::Path, question: &str, extra: &[&str]) -> Output {
    let hostile = components().join("testing-hostile.wasm");
    let mut args = vec!["query", question, "--component", hostile.to_str().unwrap(), "--allow-unsigned"];
    args.extend_from_slice(extra);
    elex_in(data, &args)
}

#[test]
fn another_components_run_never_breaks_the_signed_agents_state() {
    let data = tempfile::tempdir().unwrap();
    let signed = |q: &str| elex_in(data.path(), &["query", q, "--json"]);
    let out = signed("What is FAJ 121 3094?");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let qid = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["query_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(elex_in(data.path(), &["feedback", &qid, "1"]).status.success());
    // An unsigned component answers as the same feature and saves its state.
    let out = hostile_query(data.path(), "hello", &["--agent", "FAJ 121 3094"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: hello"), "{}", text(&out.stdout));
    // The signed agent still starts from its own state, every time.
    for _ in 0..2 {
        let out = signed("What is FAJ 121 3094?");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("cannot be restored"), "{}", text(&out.stderr));
    }
    let out = elex_in(data.path(), &["agents", "check"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // reset forgets both components' snapshots of that agent.
    let out = elex_in(data.path(), &["agents", "reset", "faj1213094"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 snapshot(s) removed"), "{}", text(&out.stdout));
    let out = elex_in(data.path(), &["agents", "show", "FAJ 121 3094"]);
    assert!(text(&out.stdout).contains("learned     nothing yet"), "{}", text(&out.stdout));
    assert_eq!(elex_in(data.path(), &["agents", "reset", "FAJ 999 9999"]).status.code(), Some(1));
}

#[test]
fn failed_calls_count_in_stats_and_guest_text_is_escaped() {
    let data = tempfile::tempdir().unwrap();
    let agent = ["--agent", "FAJ 121 3094"];
    let out = hostile_query(data.path(), "trap", &agent);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("trapped"), "{}", text(&out.stderr));
    let out = hostile_query(data.path(), "loop", &agent);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("time budget"), "{}", text(&out.stderr));
    let out = hostile_query(data.path(), "\x1b[2J\x1b]0;owned\x07title", &agent);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
    assert!(shown.contains("ok: \\u{1b}[2J\\u{1b}]0;owned\\u{7}title"), "{shown}");
    let out = elex_in(data.path(), &["agents", "stats", "--agent", "FAJ 121 3094", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row = &serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0];
    assert_eq!((row["calls"].as_u64(), row["errors"].as_u64()), (Some(3), Some(2)), "{row}");
    assert_eq!(row["recycles"].as_u64(), Some(2), "{row}");

    // Engram text too; --json stays exact.
    let out = elex_in(data.path(), &["engram", "add", "red \x1b[31malert"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let shown = text(&elex_in(data.path(), &["engram", "get", &id]).stdout);
    assert!(shown.contains("red \\u{1b}[31malert") && !shown.contains('\x1b'), "{shown:?}");
    let json = elex_in(data.path(), &["engram", "get", &id, "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["content"], "red \x1b[31malert");
}

/// A registry in a fresh scratch folder whose own trust policy trusts a new
/// key (from `elex keygen`) for every name; returns it and the key file.
fn registry_with_trusted_key(name: &str) -> (PathBuf, PathBuf) {
    let scratch = tempfile_dir(name);
    let keys = scratch.join("keys");
    let out = elex(&["keygen", "--out", keys.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("a private key file");
    let id = key.file_stem().unwrap().to_str().unwrap().to_string();
    let registry = scratch.join("registry");
    let trust = registry.join("trust");
    std::fs::create_dir_all(trust.join("keys")).unwrap();
    std::fs::copy(keys.join(format!("{id}.pub")), trust.join("keys").join(format!("{id}.pub"))).unwrap();
    std::fs::write(
        trust.join("policy.json"),
        format!(r#"{{"format": 1, "trusted": [{{"key": "{id}", "names": ["*"]}}], "revoked": []}}"#),
    )
    .unwrap();
    (registry, key)
}

fn sign_args<'a>(reg: &'a str, file: &'a str, name: &'a str, key: &'a str) -> Vec<&'a str> {
    vec!["--registry", reg, "sign", file, "--name", name, "--version", "0.1.0", "--key", key]
}

#[test]
fn sign_refuses_a_key_the_registry_does_not_trust_unless_untrusted() {
    let (registry, _) = registry_with_trusted_key("sign-untrusted");
    let reg = registry.to_str().unwrap();
    // Another key, which the registry's policy does not know.
    let stranger_dir = tempfile_dir("sign-untrusted-stranger");
    assert!(elex(&["keygen", "--out", stranger_dir.to_str().unwrap()]).status.success());
    let stranger = std::fs::read_dir(&stranger_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let composed = components().join("feature-agent.composed.wasm");
    let args = sign_args(reg, composed.to_str().unwrap(), "feature-agent", stranger.to_str().unwrap());
    let out = elex(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown key") && err.contains("--untrusted"), "{err}");
    assert!(!registry.join("index/feature-agent").exists(), "nothing published");

    let out = elex(&[&args[..], &["--untrusted"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning") && text(&out.stderr).contains("--untrusted"));
    let out = elex(&["--registry", reg, "verify", "feature-agent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown key"), "{}", text(&out.stderr));

    let out = elex(&["sign", "--help"]);
    assert!(text(&out.stdout).contains("--untrusted"), "{}", text(&out.stdout));
}

#[test]
fn index_verify_reports_each_bad_file_and_checks_the_others() {
    let (registry, key) = registry_with_trusted_key("index-bad-files");
    let reg = registry.to_str().unwrap();
    let composed = components().join("feature-agent.composed.wasm");
    let out = elex(&sign_args(reg, composed.to_str().unwrap(), "feature-agent", key.to_str().unwrap()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let index = registry.join("index");
    std::fs::write(index.join("garbled"), b"\xff\xfe not UTF-8\n").unwrap();
    std::fs::write(index.join("old"), "{\"format\":1}\n").unwrap();
    #[cfg(unix)]
    {
        assert!(std::process::Command::new("mkfifo").arg(index.join("fifo")).status().unwrap().success());
        std::os::unix::fs::symlink("/dev/zero", index.join("zero")).unwrap();
    }
    let out = elex(&["--registry", reg, "index", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("ok   feature-agent@0.1.0"), "{shown}");
    assert!(shown.contains("garbled: is not UTF-8"), "{shown}");
    assert!(shown.contains("index format 1") && shown.contains("re-sign"), "{shown}");
    #[cfg(unix)]
    {
        assert!(shown.contains("fifo: is not a regular file (a FIFO)"), "{shown}");
        assert!(shown.contains("zero: is a symbolic link"), "{shown}");
    }
    let out = elex(&["--registry", reg, "index", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("feature-agent"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("warning: skipped index file"), "{}", text(&out.stderr));
}

#[test]
fn workflow_steps_on_one_agent_queue_for_it() {
    // 40 independent steps on one agent: more than its queue (16) holds if
    // they all called at once; they wait their turn and all succeed.
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| elex_in(data.path(), args);
    let ctx = text(&run(&["context", "create", "many"]).stdout).trim().to_string();
    let wf = data.path().join("many.json");
    let steps: Vec<String> = (0..40)
        .map(|i| {
            // Spelled two ways: still one agent.
            let agent = if i % 2 == 0 { "FAJ 121 3094" } else { "FAJ1213094" };
            format!(r#"{{"id":"s{i}","agent":"{agent}","query":"What does MIMO Sleep Mode save? ({i})"}}"#)
        })
        .collect();
    std::fs::write(&wf, format!(r#"{{"name":"many","steps":[{}]}}"#, steps.join(","))).unwrap();
    let out = run(&["workflow", "run", wf.to_str().unwrap(), "--context", &ctx, "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 40);
    assert_eq!(steps.iter().filter(|s| s["status"] == "done").count(), 40, "{report}");
    assert!(steps.iter().all(|s| s["agent"] == "FAJ 121 3094"), "{report}");
    let shown: serde_json::Value =
        serde_json::from_slice(&run(&["context", "show", &ctx, "--json"]).stdout).unwrap();
    assert_eq!(shown["engram_count"], 40);
}

#[test]
fn workflow_files_over_the_limits_or_not_regular_are_refused_at_once() {
    let data = tempfile::tempdir().unwrap();
    let refused = |file: &std::path::Path| {
        let out = elex_in(data.path(), &["workflow", "run", file.to_str().unwrap(), "--context", "1"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // 100,000 nested `[`: refused by the pre-scan, before the YAML parser.
    let deep = data.path().join("deep.yaml");
    std::fs::write(&deep, "[".repeat(100_000)).unwrap();
    let e = refused(&deep);
    assert!(e.contains("nest") && e.contains("the limit is 32"), "{e}");
    // A 1,001-step chain: one step over the limit.
    let chain = data.path().join("chain.json");
    let steps: Vec<String> = (0..1001)
        .map(|i| {
            let deps = if i == 0 { String::new() } else { format!(r#""s{}""#, i - 1) };
            format!(r#"{{"id":"s{i}","agent":"FAJ 121 3094","query":"q","depends_on":[{deps}]}}"#)
        })
        .collect();
    std::fs::write(&chain, format!(r#"{{"name":"chain","steps":[{}]}}"#, steps.join(","))).unwrap();
    let e = refused(&chain);
    assert!(e.contains("more than 1000 steps; the limit is 1000"), "{e}");
    // Over the size limit.
    let big = data.path().join("big.yaml");
    std::fs::write(&big, format!("name: big\n#{}\n", "x".repeat(1 << 20))).unwrap();
    let e = refused(&big);
    assert!(e.contains("limit of 1048576 bytes"), "{e}");
    #[cfg(unix)]
    {
        // A FIFO would block a plain read forever; a link to /dev/zero would
        // be read without end.
        let fifo = data.path().join("fifo.yaml");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = refused(&fifo);
        assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        let zero = data.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = refused(&zero);
        assert!(e.contains("not a regular file (a device)"), "{e}");
    }
}

#[test]
fn engram_check_finds_a_flipped_byte() {
    let data = tempfile::tempdir().unwrap();
    let out = elex_in(data.path(), &["engram", "add", "zqxjvk marker of a stored engram"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let out = elex_in(data.path(), &["engram", "check"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: "), "{}", text(&out.stdout));
    // Flip one letter of the stored content (still valid UTF-8).
    let file = data.path().join("memory.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let marker = b"zqxjvk";
    let mut flipped = 0;
    for i in 0..bytes.len().saturating_sub(marker.len()) {
        if &bytes[i..i + marker.len()] == marker {
            bytes[i] = b'Z';
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the content is stored as written");
    std::fs::write(&file, &bytes).unwrap();
    let out = elex_in(data.path(), &["engram", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("PROBLEM"), "{}", text(&out.stdout));
    let out = elex_in(data.path(), &["engram", "get", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("corrupt"), "{}", text(&out.stderr));
}

#[test]
fn the_embedding_example_runs() {
    // `cargo test` builds the examples beside the test binaries. The agent's
    // usage counts both of its calls: the query and the feedback.
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../debug/examples/embed");
    assert!(exe.is_file(), "{} is built by `cargo test`", exe.display());
    let data = tempfile::tempdir().unwrap();
    let registry = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/registry");
    let out = Command::new(&exe).arg(data.path()).arg(&registry).env_remove("RUST_LOG").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("FAJ 121 3094 (MIMO Sleep Mode) answered q"), "{shown}");
    assert!(shown.contains("event: 593 agents started"), "subscribed before the start: {shown}");
    assert!(
        shown.contains("rewarded FAJ 121 3094") && shown.contains("usage of FAJ 121 3094: 2 calls, 0 errors"),
        "{shown}"
    );
}

#[test]
fn a_correction_teaches_the_router_where_questions_like_it_go() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| elex_in(data.path(), args);
    let asked = "how do I stop the radios chattering at night on the quiet sites";
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = json(&["query", asked, "--json"]);
    assert_ne!(first["agent"]["faj"], "FAJ 121 3094", "routed elsewhere before the correction: {first}");
    let qid = first["query_id"].as_str().unwrap().to_string();

    // The operator says it was meant for MIMO Sleep Mode; wrong input first.
    let out = run(&["feedback", &qid, "--agent", "FAJ 999 9999", "--operator", "ana"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no feature"), "{}", text(&out.stderr));
    let out = run(&["feedback", &qid]);
    assert_eq!(out.status.code(), Some(2), "a reward or --agent is needed");
    let out = run(&["feedback", &qid, "--agent", "faj1213094", "--operator", "ana"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("FAJ 121 3094 (MIMO Sleep Mode): kept as its example, on ana's word"));

    // A later run routes the same question, and one like it, there.
    for text in [asked, "radios chattering at night on quiet sites, how do I stop it"] {
        let again = json(&["query", text, "--json"]);
        assert_eq!(again["agent"]["faj"], "FAJ 121 3094", "{again}");
        assert!(
            again["agent"]["chosen_by"].as_str().unwrap().starts_with("like an example question"),
            "{again}"
        );
    }
}

#[test]
fn a_close_choice_asks_back_and_the_answer_to_it_teaches_the_router() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| elex_in(data.path(), args);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let vague = "how to reduce interference between cells";
    let asked = json(&["query", vague, "--json"]);
    assert_eq!(asked["action"], "request-clarification", "{asked}");
    assert_eq!(asked["asked_back"], true, "{asked}");
    // The offers, with their scores, as close candidates.
    let offered = asked["close_candidates"].as_array().unwrap();
    assert_eq!(offered.len(), 5, "{asked}");
    assert!(offered.iter().all(|c| c["score"].as_f64().is_some()), "{asked}");
    let content = asked["content"].as_str().unwrap();
    assert!(content.starts_with("Several features match") && content.contains("FAJ 121 5065"), "{content}");
    assert!(asked["trace"].as_array().unwrap().is_empty(), "no agent ran: {asked}");
    let qid = asked["query_id"].as_str().unwrap().to_string();
    // --best-guess answers at once with the most similar feature's agent.
    let guessed = json(&["query", vague, "--best-guess", "--json"]);
    assert_eq!(guessed["agent"]["faj"], asked["agent"]["faj"], "{guessed}");
    assert_ne!(guessed["action"], "request-clarification", "{guessed}");

    // Nothing to reward; the operator says which was meant.
    let out = run(&["feedback", &qid, "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nothing to reward"), "{}", text(&out.stderr));
    let out = run(&["feedback", &qid, "--agent", "FAJ 121 5065", "--operator", "ana"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = json(&["query", vague, "--json"]);
    assert_eq!(
        (again["agent"]["faj"].as_str(), again["action"].as_str()),
        (Some("FAJ 121 5065"), Some("direct-answer")),
        "{again}"
    );
    assert_eq!(again["asked_back"], false);
    // A later correction of the same question supersedes the earlier one,
    // in later runs too.
    let out = run(&["feedback", &qid, "--agent", "FAJ 121 5079", "--operator", "bo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = json(&["query", vague, "--json"]);
    assert_eq!(again["agent"]["faj"], "FAJ 121 5079", "{again}");
    let asked = text(&run(&["query", "power saving for radios"]).stdout);
    assert!(asked.contains("--agent <FAJ>: the feature meant"), "{asked}");
}
