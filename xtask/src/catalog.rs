//! `cargo xtask catalog`: builds `registry-index/catalog.jsonl` from the 593
//! real RAN features (`../shared/data/ran-features/features.jsonl`, or the
//! repository's byte-identical copy).
//!
//! Every field of the source is kept as it is. What the data lacks is added
//! deterministically and listed in the entry's `generated` field, never
//! passed off as vendor data:
//!
//! - `description`: one sentence from the name, category, access technology
//!   and licence flag;
//! - for each parameter: `type`, `unit`, `min`, `max`, `default`, chosen from
//!   the attribute's name (`...Enabled` is a boolean, `...Timer` a time in
//!   ms, `...Offset` a dB offset, ...) and a hash of the full name;
//! - for each KPI: `formula` (over the feature's own counters), `unit`,
//!   `threshold` and `direction` (`higher-is-better` or `lower-is-better`,
//!   from the KPI's name).
//!
//! Also added: `keywords`, elex's hand-written routing vocabulary
//! (`registry-index/keywords.jsonl`: the words operators use for what each
//! feature does, which its name lacks; not vendor data, see that folder's
//! README); `external_requires` (prerequisites outside the catalog, kept
//! as external), the serving `component` and its `budgets`. A malformed
//! line, a duplicate FAJ code or a cycle in `requires` fails with the entry
//! named.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use serde_json::{Value, json};

/// The component that serves every feature, and its budgets.
pub const COMPONENT: &str = "feature-agent@0.1.0";

/// FNV-1a, so the generated values depend only on the names.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Type, unit, range and default of a parameter, from its attribute name.
fn parameter_shape(full: &str) -> (&'static str, &'static str, f64, f64, f64) {
    let attr = full.rsplit('.').next().unwrap_or(full).to_ascii_lowercase();
    let h = hash(full);
    let has = |words: &[&str]| words.iter().any(|w| attr.contains(w));
    let pick = |lo: f64, hi: f64, step: f64| lo + ((h % (((hi - lo) / step) as u64 + 1)) as f64) * step;
    if attr.ends_with("enabled") || attr.ends_with("active") || has(&["switch", "flag", "allowed", "support"])
    {
        ("boolean", "", 0.0, 1.0, (h % 2) as f64)
    } else if has(&["rsrp"]) {
        ("integer", "dBm", -140.0, -44.0, pick(-120.0, -90.0, 1.0))
    } else if has(&["offset", "hyst", "threshold", "margin", "sinr", "rsrq"]) {
        ("integer", "dB", -30.0, 30.0, pick(-6.0, 6.0, 1.0))
    } else if has(&["timer", "time", "period", "delay", "duration", "interval", "timeout"]) {
        ("integer", "ms", 0.0, 60_000.0, pick(100.0, 5_000.0, 100.0))
    } else if has(&["percent", "ratio", "fraction", "load", "util", "share"]) {
        ("integer", "%", 0.0, 100.0, pick(10.0, 90.0, 5.0))
    } else if has(&["prio", "weight", "level"]) {
        ("integer", "", 0.0, 7.0, pick(0.0, 7.0, 1.0))
    } else if has(&["mode", "type", "policy", "strategy"]) {
        ("enum", "", 0.0, 3.0, pick(0.0, 3.0, 1.0))
    } else if has(&["power"]) {
        ("integer", "dBm", -50.0, 50.0, pick(0.0, 46.0, 1.0))
    } else if has(&["max", "min", "num", "count", "size", "limit"]) {
        ("integer", "", 0.0, 1_000.0, pick(1.0, 100.0, 1.0))
    } else {
        ("integer", "", 0.0, 100.0, pick(0.0, 100.0, 1.0))
    }
}

/// Formula, unit, threshold and direction of a KPI.
fn kpi_shape(name: &str, counters: &[String]) -> Value {
    let lower = name.to_ascii_lowercase();
    let worse_when_high = ["drop", "fail", "loss", "interference", "latency", "delay", "block", "error"]
        .iter()
        .any(|w| lower.contains(w));
    let h = hash(name);
    let formula = match counters {
        [] => String::from("(no counter of the feature measures it)"),
        [one] => one.clone(),
        [a, b, ..] => format!("100 * {a} / ({a} + {b})"),
    };
    // The formula is a share (in %) of the feature's first counter, or
    // the counter itself.
    let unit = if counters.len() >= 2 { "%" } else { "" };
    let (threshold, direction) = if worse_when_high {
        ((1 + h % 5) as f64, "lower-is-better")
    } else if counters.len() >= 2 {
        ((50 + h % 45) as f64, "higher-is-better")
    } else {
        ((10 + h % 90) as f64, "higher-is-better")
    };
    json!({ "name": name, "formula": formula, "unit": unit, "threshold": threshold, "direction": direction })
}

fn names(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from).or_else(|| x["name"].as_str().map(String::from)))
                .collect()
        })
        .unwrap_or_default()
}

/// Fewest and most phrases of a feature's keywords.
const KEYWORDS: std::ops::RangeInclusive<usize> = 3..=12;

/// The hand-written routing vocabulary (`registry-index/keywords.jsonl`):
/// each line `{"faj": …, "keywords": […]}`, 3–12 distinct non-empty ASCII
/// phrases, written as operators write them (`SCell`, `VoLTE`); `source`
/// names it in errors. Each FAJ code with its line number.
fn keyword_lists(text: &str, source: &str) -> Result<Vec<(usize, String, Vec<String>)>> {
    let mut out: Vec<(usize, String, Vec<String>)> = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{source}, line {at}: {e}"))?;
        let (Some(faj), Some(list), 2) =
            (v["faj"].as_str(), v["keywords"].as_array(), v.as_object().map_or(0, |o| o.len()))
        else {
            bail!("{source}, line {at}: not {{\"faj\": …, \"keywords\": […]}}");
        };
        let mut keywords: Vec<String> = Vec::new();
        for k in list {
            match k.as_str() {
                Some(k) if k.trim().is_empty() => bail!("{source}, line {at} ({faj}): an empty keyword"),
                // The router's words are ASCII: it would split other letters away.
                Some(k) if !k.is_ascii() => bail!("{source}, line {at} ({faj}): keyword {k:?} is not ASCII"),
                Some(k) if keywords.iter().any(|seen| seen.eq_ignore_ascii_case(k)) => {
                    bail!("{source}, line {at} ({faj}): keyword {k:?} twice")
                }
                Some(k) => keywords.push(k.to_string()),
                None => bail!("{source}, line {at} ({faj}): keyword {k} is not a string"),
            }
        }
        if !KEYWORDS.contains(&keywords.len()) {
            bail!(
                "{source}, line {at} ({faj}): {} keywords, not {}–{}",
                keywords.len(),
                KEYWORDS.start(),
                KEYWORDS.end()
            );
        }
        if let Some(first) = first_line.insert(faj.to_string(), at) {
            bail!("{source}, line {at}: {faj} listed twice (first on line {first})");
        }
        out.push((at, faj.to_string(), keywords));
    }
    Ok(out)
}

/// The catalog for `input` (JSON lines), with the routing vocabulary of
/// `keywords` (see [`keyword_lists`]); `source` and `keywords_source` name
/// them in errors.
pub fn generate(input: &str, source: &str, keywords: &str, keywords_source: &str) -> Result<String> {
    let lists = keyword_lists(keywords, keywords_source)?;
    let mut entries: Vec<Value> = Vec::new();
    let mut line_of: HashMap<String, usize> = HashMap::new();
    for (i, line) in input.lines().enumerate() {
        let at = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{source}, line {at}: {e}"))?;
        let Some(faj) = v["faj"].as_str().map(String::from) else {
            bail!("{source}, line {at}: no `faj` code");
        };
        if v["name"].as_str().is_none_or(|n| n.trim().is_empty()) {
            bail!("{source}, line {at} ({faj}): no `name`");
        }
        if let Some(first) = line_of.insert(faj.clone(), at) {
            bail!("{source}, line {at}: duplicate FAJ code {faj} (first on line {first})");
        }
        entries.push(v);
    }
    // requires must be acyclic among catalog features.
    let index: HashMap<String, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e["faj"].as_str().unwrap_or_default().to_string(), i))
        .collect();
    let requires: Vec<Vec<usize>> = entries
        .iter()
        .map(|e| names(e, "requires").iter().filter_map(|r| index.get(r).copied()).collect())
        .collect();
    let mut state = vec![0u8; entries.len()]; // 0 new, 1 on the path, 2 done
    for start in 0..entries.len() {
        let mut stack = vec![(start, 0usize)];
        let mut path = vec![start];
        if state[start] != 0 {
            continue;
        }
        state[start] = 1;
        while let Some((node, next)) = stack.pop() {
            if next < requires[node].len() {
                stack.push((node, next + 1));
                let child = requires[node][next];
                match state[child] {
                    0 => {
                        state[child] = 1;
                        stack.push((child, 0));
                        path.push(child);
                    }
                    1 => {
                        let from = path.iter().position(|&p| p == child).unwrap_or(0);
                        let cycle: Vec<&str> = path[from..]
                            .iter()
                            .chain([&child])
                            .map(|&p| entries[p]["faj"].as_str().unwrap_or_default())
                            .collect();
                        bail!("{source}: `requires` has a cycle: {}", cycle.join(" -> "));
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    if let Some((at, stray, _)) = lists.iter().find(|(_, faj, _)| !index.contains_key(faj)) {
        bail!("{keywords_source}, line {at}: {stray} is not a feature of {source}");
    }
    let mut keywords: HashMap<String, Vec<String>> = lists.into_iter().map(|(_, faj, k)| (faj, k)).collect();
    let mut out = String::new();
    for mut e in entries {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let category = e["category"].as_str().unwrap_or("uncategorised").to_string();
        let access = e["access"].as_str().unwrap_or("LTE/NR").to_string();
        let licensed = e["licensed"].as_bool().unwrap_or(false);
        let counters = names(&e, "counters");
        let external: Vec<String> =
            names(&e, "requires").into_iter().filter(|r| !index.contains_key(r)).collect();
        let faj = e["faj"].as_str().unwrap_or_default().to_string();
        let obj = e.as_object_mut().expect("an entry is an object");
        obj.insert(String::from("keywords"), json!(keywords.remove(&faj).unwrap_or_default()));
        obj.insert(
            String::from("description"),
            json!(format!(
                "{name} is {} {access} feature in the {category} category.",
                if licensed { "a licensed" } else { "an unlicensed" }
            )),
        );
        if let Some(params) = obj.get_mut("parameters").and_then(Value::as_array_mut) {
            for p in params.iter_mut() {
                let full = p["name"].as_str().unwrap_or_default().to_string();
                let (ty, unit, min, max, default) = parameter_shape(&full);
                if let Some(p) = p.as_object_mut() {
                    p.insert(String::from("type"), json!(ty));
                    if !unit.is_empty() {
                        p.insert(String::from("unit"), json!(unit));
                    }
                    p.insert(String::from("min"), json!(min));
                    p.insert(String::from("max"), json!(max));
                    p.insert(String::from("default"), json!(default));
                }
            }
        }
        let kpis: Vec<Value> =
            names(&Value::Object(obj.clone()), "kpis").iter().map(|k| kpi_shape(k, &counters)).collect();
        obj.insert(String::from("kpis"), Value::Array(kpis));
        obj.insert(String::from("external_requires"), json!(external));
        obj.insert(String::from("component"), json!(COMPONENT));
        obj.insert(
            String::from("budgets"),
            json!({ "memory_bytes": 32u64 << 20, "call_timeout_ms": 1000, "queue_depth": 16 }),
        );
        obj.insert(
            String::from("generated"),
            json!([
                "description",
                "parameters[].type",
                "parameters[].unit",
                "parameters[].min",
                "parameters[].max",
                "parameters[].default",
                "kpis[].formula",
                "kpis[].unit",
                "kpis[].threshold",
                "kpis[].direction"
            ]),
        );
        let sorted: BTreeMap<_, _> = obj.iter().collect();
        out.push_str(&serde_json::to_string(&sorted)?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_committed_catalog_is_what_the_generator_makes() {
        let src = std::fs::read_to_string(root().join("registry-index/ran-features/features.jsonl")).unwrap();
        let keywords = std::fs::read_to_string(root().join("registry-index/keywords.jsonl")).unwrap();
        let made = generate(&src, "features.jsonl", &keywords, "keywords.jsonl").unwrap();
        let committed = std::fs::read_to_string(root().join("registry-index/catalog.jsonl")).unwrap();
        assert!(made == committed, "registry-index/catalog.jsonl is stale: run `cargo xtask catalog`");
        assert_eq!(made.lines().count(), 593);
        let msm: Value = made
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["faj"] == "FAJ 121 3094")
            .unwrap();
        assert_eq!(msm["component"], COMPONENT);
        for line in made.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(KEYWORDS.contains(&v["keywords"].as_array().unwrap().len()), "{}", v["faj"]);
        }
        assert!(msm["generated"].as_array().unwrap().iter().any(|g| g == "parameters[].min"));
        let p = &msm["parameters"][0];
        assert!(p["min"].as_f64().unwrap() <= p["default"].as_f64().unwrap());
        assert!(p["default"].as_f64().unwrap() <= p["max"].as_f64().unwrap());
    }

    #[test]
    fn bad_sources_name_the_entry() {
        let a = r#"{"faj":"FAJ 1","name":"A","requires":["FAJ 2"]}"#;
        let b = r#"{"faj":"FAJ 2","name":"B","requires":["FAJ 3"]}"#;
        let c = r#"{"faj":"FAJ 3","name":"C","requires":["FAJ 1"]}"#;
        let e = generate(&[a, b, c].join("\n"), "t", "", "k").unwrap_err().to_string();
        assert!(e.contains("cycle: FAJ 1 -> FAJ 2 -> FAJ 3 -> FAJ 1"), "{e}");
        let e = generate(&[a, a].join("\n"), "t", "", "k").unwrap_err().to_string();
        assert!(e.contains("line 2: duplicate FAJ code FAJ 1 (first on line 1)"), "{e}");
        let e = generate(&[a, "{oops"].join("\n"), "t", "", "k").unwrap_err().to_string();
        assert!(e.contains("t, line 2"), "{e}");
        // A prerequisite outside the catalog is kept as external.
        let out = generate(a, "t", "", "k").unwrap();
        assert!(out.contains(r#""external_requires":["FAJ 2"]"#), "{out}");
    }

    #[test]
    fn keywords_are_checked_and_attached() {
        let a = r#"{"faj":"FAJ 1","name":"A"}"#;
        let out =
            generate(a, "t", r#"{"faj":"FAJ 1","keywords":["bar access","SCell","sib2"]}"#, "k").unwrap();
        assert!(out.contains(r#""keywords":["bar access","SCell","sib2"]"#), "{out}");
        assert!(generate(a, "t", "", "k").unwrap().contains(r#""keywords":[]"#));
        for (bad, says) in [
            (r#"{"faj":"FAJ 9","keywords":["x","y","z"]}"#, "k, line 1: FAJ 9 is not a feature of t"),
            (r#"{"faj":"FAJ 1","keywords":["x"," ","z"]}"#, "k, line 1 (FAJ 1): an empty keyword"),
            (r#"{"faj":"FAJ 1","keywords":["x",1,"z"]}"#, "keyword 1 is not a string"),
            (r#"{"faj":"FAJ 1","keywords":["x","señal","z"]}"#, "keyword \"señal\" is not ASCII"),
            (r#"{"faj":"FAJ 1","keywords":["x","X","z"]}"#, "keyword \"X\" twice"),
            (r#"{"faj":"FAJ 1","keywords":["x","y"]}"#, "k, line 1 (FAJ 1): 2 keywords, not 3–12"),
            (r#"{"faj":"FAJ 1","keywords":["x","y","z"],"more":1}"#, "k, line 1: not {"),
            (r#"{"faj":"FAJ 1"}"#, "k, line 1: not {"),
            ("{oops", "k, line 1:"),
        ] {
            let e = generate(a, "t", bad, "k").unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let many: Vec<String> = (0..13).map(|i| format!("\"w{i}\"")).collect();
        let e = generate(a, "t", &format!(r#"{{"faj":"FAJ 1","keywords":[{}]}}"#, many.join(",")), "k")
            .unwrap_err();
        assert!(e.to_string().contains("13 keywords, not 3–12"), "{e}");
        let twice = [r#"{"faj":"FAJ 1","keywords":["x","y","z"]}"#; 2].join("\n");
        let e = generate(a, "t", &twice, "k").unwrap_err().to_string();
        assert!(e.contains("k, line 2: FAJ 1 listed twice (first on line 1)"), "{e}");
    }
}
