//! The `elex` binary as an operator uses it. Needs the built components
//! (`cargo xtask build`, which `cargo xtask test` runs first).

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
        "feedback",
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
    let scratch = tempfile_dir("sign");
    let keys = scratch.join("keys");
    let registry = scratch.join("registry");
    let out = elex(&["keygen", "--out", keys.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("a private key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let id = key.file_stem().unwrap().to_str().unwrap().to_string();
    // Trust the new key for every name, in the registry's own policy.
    let trust = registry.join("trust");
    std::fs::create_dir_all(trust.join("keys")).unwrap();
    std::fs::copy(keys.join(format!("{id}.pub")), trust.join("keys").join(format!("{id}.pub"))).unwrap();
    std::fs::write(
        trust.join("policy.json"),
        format!(r#"{{"format": 1, "trusted": [{{"key": "{id}", "names": ["*"]}}], "revoked": []}}"#),
    )
    .unwrap();
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
    assert!(text(&out.stderr).contains("no component feature-agent matches"), "{}", text(&out.stderr));

    let out = elex(&["query", "hello", "--agent", "FAJ 999 9999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no feature with FAJ code"), "{}", text(&out.stderr));

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
    assert_eq!(run(&["agents", "show", "FAJ 999 9999"]).status.code(), Some(1));
}
