//! Plugins from any language, as an author and an operator use them: `elex
//! new` in Rust, Python and JavaScript, `elex build` with the real
//! toolchains (cargo for wasm32-wasip2, componentize-py, componentize-qjs,
//! which `cargo xtask test` installs into target/tools/), `elex load`,
//! routing by the manifest next to the 593 feature agents, `--agent`,
//! feedback that the plugin keeps across runs, budget breaches stopped in
//! every language, signing and loading from a registry, `agents list`,
//! `reset`, `unload`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::text;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// PATH with the toolchains `cargo xtask test` installs.
fn tool_path() -> std::ffi::OsString {
    let tools = root().join("target/tools");
    let python = tools.join("python/bin");
    let node = tools.join("node/node_modules/.bin");
    for (dir, tool) in [(&python, "componentize-py"), (&node, "componentize-qjs")] {
        assert!(
            dir.join(tool).exists(),
            "{} is missing: run the tests with `cargo xtask test`, which installs it",
            dir.join(tool).display()
        );
    }
    let mut paths = vec![python, node];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).unwrap()
}

pub(super) fn elex(data: &Path, cwd: &Path, args: &[&str]) -> Output {
    // A registry of its own (a copy of the development one) in the work
    // folder when there is one, so signing a plugin touches no other test's.
    let own = cwd.join("registry");
    let registry = if own.is_dir() { own } else { root().join("target/registry") };
    Command::new(env!("CARGO_BIN_EXE_elex"))
        .args(args)
        .current_dir(cwd)
        .env("ELEX_DATA_DIR", data)
        .env("ELEX_REGISTRY", registry)
        .env("PATH", tool_path())
        // Rust plugins share one target folder across runs.
        .env("CARGO_TARGET_DIR", root().join("target/plugin-build"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run elex")
}

pub(super) fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub(super) fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (language, plugin id, the word its answers carry)
const PLUGINS: [(&str, &str, &str); 3] = [
    ("rust", "weather-words", "(rust)"),
    ("python", "tide-tables", "(python)"),
    ("js", "moon-phases", "(js)"),
];

/// An author's mistakes, added to the template's `handle`: `spin` loops
/// forever, `hog` allocates 1 GiB. (file, the line to put them before,
/// the code.)
fn misbehaviour(lang: &str) -> (&'static str, &'static str, &'static str) {
    match lang {
        "rust" => (
            "src/lib.rs",
            "        if query.text.trim().is_empty() {",
            "        if query.text == \"spin\" { loop { std::hint::black_box(0u8); } }\n        \
             if query.text == \"hog\" { let v = vec![1u8; 1 << 30]; std::hint::black_box(&v); }\n",
        ),
        "python" => (
            "app.py",
            "        if not query.text.strip():",
            "        if query.text == \"spin\":\n            while True:\n                pass\n        \
             if query.text == \"hog\":\n            hog = bytearray(1 << 30)\n",
        ),
        _ => (
            "agent.js",
            "    if (query.text.trim() === \"\") {",
            "    if (query.text === \"spin\") { for (;;) {} }\n    \
             if (query.text === \"hog\") { globalThis.hog = new Uint8Array(1 << 30); }\n",
        ),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies the development registry into `work/registry` and adds a new key
/// (from `elex keygen`) to its trust policy; returns the private key file.
pub(super) fn own_registry_trusting_a_new_key(work: &Path) -> PathBuf {
    copy_dir(&root().join("target/registry"), &work.join("registry"));
    let keys = work.join("keys");
    ok(elex(&work.join("data"), work, &["keygen", "--out", keys.to_str().unwrap()]), "keygen");
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let id = key.file_stem().unwrap().to_str().unwrap().to_string();
    let trust = work.join("registry/trust");
    std::fs::copy(keys.join(format!("{id}.pub")), trust.join("keys").join(format!("{id}.pub"))).unwrap();
    let mut policy = json(&std::fs::read_to_string(trust.join("policy.json")).unwrap());
    policy["trusted"].as_array_mut().unwrap().push(serde_json::json!({"key": id, "names": ["*"]}));
    std::fs::write(trust.join("policy.json"), policy.to_string()).unwrap();
    key
}

#[test]
fn plugins_in_rust_python_and_javascript_build_load_route_learn_and_unload() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let cwd = work.path();
    let key = own_registry_trusting_a_new_key(cwd);
    for (lang, id, _) in PLUGINS {
        let out = ok(elex(&data, cwd, &["new", id, "--lang", lang]), "elex new");
        assert!(out.contains(&format!("elex build {id}")), "{out}");
        let (file, before, code) = misbehaviour(lang);
        let source = cwd.join(id).join(file);
        let src = std::fs::read_to_string(&source).unwrap();
        assert!(src.contains(before), "{lang}: the template changed; update this test");
        std::fs::write(&source, src.replacen(before, &format!("{code}{before}"), 1)).unwrap();
        ok(elex(&data, cwd, &["build", id]), &format!("elex build ({lang})"));
        let file = format!("{id}/build/{id}.wasm");
        // Unsigned files load only when the operator says so.
        let refused = elex(&data, cwd, &["load", &file]);
        assert!(!refused.status.success() && text(&refused.stderr).contains("--allow-unsigned"));
        let out = ok(elex(&data, cwd, &["load", "--allow-unsigned", &file]), "elex load");
        assert!(out.contains(&format!("loaded plugin {id}")), "{out}");
        // Signed and loaded from the registry by name: it replaces the
        // unsigned one of the same id.
        let key = key.to_str().unwrap();
        ok(elex(&data, cwd, &["sign", &file, "--name", id, "--version", "0.1.0", "--key", key]), "sign");
        let out = ok(elex(&data, cwd, &["load", &format!("{id}@^0.1")]), "elex load from the registry");
        assert!(out.contains(&format!("registry {id}@0.1.0")), "{out}");
    }
    // The three are agents next to the 593 features (each once).
    let list = json(&ok(elex(&data, cwd, &["agents", "list", "--json"]), "agents list"));
    let agents = list.as_array().unwrap();
    assert_eq!(agents.len(), 593 + 3);
    for (_, id, _) in PLUGINS {
        assert!(agents.iter().any(|a| a["faj"] == id && a["category"] == "Plugin"), "{id} not listed");
    }
    for (lang, id, marker) in PLUGINS {
        let name = {
            let mut n = id.replace('-', " ");
            n[..1].make_ascii_uppercase();
            n
        };
        // The router picks it for a question like its manifest's example ...
        let routed = json(&ok(
            elex(&data, cwd, &["query", "--json", &format!("What can {name} tell me?")]),
            &format!("query for the {lang} plugin"),
        ));
        assert_eq!(routed["agent"]["faj"], id, "{routed}");
        assert!(routed["content"].as_str().unwrap().contains(marker), "{routed}");
        // ... --agent asks it by id, and feedback reaches it in a later run.
        let asked =
            json(&ok(elex(&data, cwd, &["query", "--json", "--agent", id, "hello"]), "query --agent"));
        assert_eq!(asked["q_value"], 0.0, "{asked}");
        let qid = asked["query_id"].as_str().unwrap();
        ok(elex(&data, cwd, &["feedback", qid, "0.5"]), "feedback");
        let again = json(&ok(elex(&data, cwd, &["query", "--json", "--agent", id, "hello"]), "query again"));
        assert_eq!(again["q_value"], 0.5, "{lang}: the reward is kept across runs: {again}");
        assert_eq!(again["component"]["source"], format!("{id}@0.1.0"), "{again}");
        // An author's loop or 1 GiB allocation is stopped by the budget of
        // its manifest (1 s, 32 MiB), and the plugin answers again after.
        for (ask, budget) in [("spin", "time budget"), ("hog", "memory budget")] {
            let out = elex(&data, cwd, &["query", "--agent", id, ask]);
            let err = text(&out.stderr);
            assert!(!out.status.success() && err.contains(budget), "{lang} {ask}: {err}");
        }
        ok(elex(&data, cwd, &["query", "--agent", id, "hello"]), "a query after the breaches");
    }
    // reset forgets what a plugin learned.
    let (_, id, _) = PLUGINS[1];
    ok(elex(&data, cwd, &["agents", "reset", id]), "agents reset");
    let fresh =
        json(&ok(elex(&data, cwd, &["query", "--json", "--agent", id, "hello"]), "query after reset"));
    assert_eq!(fresh["q_value"], 0.0, "{fresh}");
    // A feature question still goes to its feature.
    let feature = json(&ok(elex(&data, cwd, &["query", "--json", "What is FAJ 121 3094?"]), "feature query"));
    assert_eq!(feature["agent"]["faj"], "FAJ 121 3094");
    // Unloaded, it is gone from routing and --agent; the others stay.
    let (_, gone, _) = PLUGINS[0];
    ok(elex(&data, cwd, &["unload", gone]), "unload");
    let out = elex(&data, cwd, &["query", "--agent", gone, "hello"]);
    assert!(!out.status.success() && text(&out.stderr).contains(gone), "{}", text(&out.stderr));
    let out = elex(&data, cwd, &["unload", gone]);
    assert!(!out.status.success() && text(&out.stderr).contains("no plugin"), "{}", text(&out.stderr));
    // What it learned stayed stored, and can still be forgotten by its id.
    let out = ok(elex(&data, cwd, &["agents", "reset", gone]), "agents reset of an unloaded plugin");
    assert!(out.contains("snapshot(s) removed"), "{out}");
    let out = elex(&data, cwd, &["agents", "reset", "never-was-here"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let list = json(&ok(elex(&data, cwd, &["agents", "list", "--json"]), "agents list"));
    assert_eq!(list.as_array().unwrap().len(), 593 + 2);
}

#[test]
fn a_component_without_a_manifest_or_of_the_wrong_kind_is_not_loaded() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let components = root().join("target/components");
    // A plugin-world component without a manifest.
    let bare = components.join("testing-hostile.wasm");
    let out = elex(&data, work.path(), &["load", "--allow-unsigned", bare.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no plugin manifest"), "{}", text(&out.stderr));
    // A library, not an agent.
    let library = components.join("vector.wasm");
    let out = elex(&data, work.path(), &["load", "--allow-unsigned", library.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("elex:agent/agent"), "{}", text(&out.stderr));
    // Nothing was recorded.
    let list = json(&ok(elex(&data, work.path(), &["agents", "list", "--json"]), "agents list"));
    assert_eq!(list.as_array().unwrap().len(), 593);
    // componentize-qjs output without --sync needs the async component ABI,
    // which this host does not run: refused, with what to do.
    ok(elex(&data, work.path(), &["new", "async-js", "--lang", "js"]), "elex new");
    let qjs = root().join("target/tools/node/node_modules/.bin/componentize-qjs");
    let built = Command::new(qjs)
        .current_dir(work.path().join("async-js"))
        .args([
            "--wit",
            "wit",
            "--world",
            "elex:platform/plugin@0.1.0",
            "--js",
            "agent.js",
            "-o",
            "async.wasm",
        ])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let out =
        elex(&data, work.path(), &["inspect", "async-js/async.wasm", "--world", "elex:platform/plugin"]);
    assert!(!out.status.success() && text(&out.stderr).contains("--sync"), "{}", text(&out.stderr));
    // A manifest that asks for a capability loads only when the operator
    // grants it.
    let manifest = work.path().join("async-js/plugin.toml");
    let asks = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("capabilities = []", "capabilities = [\"env:HOME\"]");
    std::fs::write(&manifest, asks).unwrap();
    ok(elex(&data, work.path(), &["build", "async-js"]), "elex build");
    let file = "async-js/build/async-js.wasm";
    let out = elex(&data, work.path(), &["load", "--allow-unsigned", file]);
    assert!(!out.status.success() && text(&out.stderr).contains("--grant env:HOME"), "{}", text(&out.stderr));
    let out = elex(&data, work.path(), &["load", "--allow-unsigned", file, "--grant", "env:PATH"]);
    assert!(!out.status.success() && text(&out.stderr).contains("does not ask"), "{}", text(&out.stderr));
    let out = ok(
        elex(&data, work.path(), &["load", "--allow-unsigned", file, "--grant", "env:HOME"]),
        "load --grant",
    );
    assert!(out.contains("granted: env:HOME"), "{out}");
    ok(elex(&data, work.path(), &["unload", "async-js"]), "unload");
    // A manifest that is not valid stops `elex build` before any tool runs.
    let project = work.path().join("bad");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("plugin.toml"), "id = \"Bad Id\"\nname = \"x\"\n").unwrap();
    let out = elex(&data, work.path(), &["build", project.to_str().unwrap()]);
    assert!(!out.status.success() && text(&out.stderr).contains("`id`"), "{}", text(&out.stderr));
}

#[test]
fn elex_wit_writes_the_contract_a_plugin_builds_against() {
    let work = tempfile::tempdir().unwrap();
    let out = ok(elex(&work.path().join("data"), work.path(), &["wit", "--out", "wit"]), "elex wit --out");
    assert!(out.contains("elex:platform/plugin"), "{out}");
    let worlds = std::fs::read_to_string(work.path().join("wit/worlds.wit")).unwrap();
    assert!(worlds.contains("world plugin"));
    assert!(work.path().join("wit/deps/agent/agent.wit").is_file());
    let printed = ok(elex(&work.path().join("data"), work.path(), &["wit"]), "elex wit");
    assert!(printed.contains("interface agent") && printed.contains("world plugin"));
}
