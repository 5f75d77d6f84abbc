//! An answer as `elex query` shows it, from the JSON object the runtime
//! builds (`Runtime::answer_json`) — the same whether the query ran here or
//! in a service (`--server`).

use serde_json::Value;

use crate::output::{clean, outln};

/// Prints `answer`: as pretty JSON with `json`, else for people.
pub fn print(answer: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(answer)?)?;
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let f = |v: &Value| v.as_f64().unwrap_or_default();
    let query_id = s(&answer["query_id"]);
    let agent = &answer["agent"];
    outln!(
        "agent       {}  {}  (chosen by {})",
        s(&agent["faj"]),
        clean(&s(&agent["name"])),
        s(&agent["chosen_by"])
    )?;
    let close = answer["close_candidates"].as_array().cloned().unwrap_or_default();
    let asked_back = answer["asked_back"].as_bool() == Some(true);
    for c in close.iter().filter(|_| !asked_back) {
        outln!("close call  {}  {}  ({})", s(&c["faj"]), clean(&s(&c["name"])), clean(&s(&c["reason"])))?;
    }
    if !close.is_empty() && !asked_back {
        outln!(
            "            if another was meant: elex feedback {query_id} --agent <FAJ>, or ask with --agent"
        )?;
    }
    outln!("action      {}", s(&answer["action"]))?;
    outln!("confidence  {:.2}    q-value {:.2}", f(&answer["confidence"]), f(&answer["q_value"]))?;
    outln!("answer")?;
    for line in s(&answer["content"]).lines() {
        outln!("  {}", clean(line))?;
    }
    let sources: Vec<String> =
        answer["sources"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
    if !sources.is_empty() {
        outln!("sources     {}", clean(&sources.join(", ")))?;
    }
    for h in answer["trace"].as_array().cloned().unwrap_or_default() {
        outln!(
            "consult     {} -> {} (depth {}, {:.2} ms): {}",
            s(&h["from"]),
            s(&h["to"]),
            h["depth"],
            f(&h["ms"]),
            clean(&s(&h["outcome"]))
        )?;
    }
    let t = &answer["timing_ms"];
    outln!(
        "timing      load {:.1} ms ({}), {} agents started in {:.0} ms, routing {:.3} ms, answer {:.3} ms",
        f(&t["load"]),
        s(&answer["loaded_from"]),
        answer["agents_live"],
        f(&t["start_agents"]),
        f(&t["routing"]),
        f(&t["answer"])
    )?;
    if answer["asked_back"].as_bool() == Some(true) {
        outln!("query id    {query_id}   (elex feedback {query_id} --agent <FAJ>: the feature meant)")?;
    } else {
        outln!("query id    {query_id}   (elex feedback {query_id} <reward in -1..1>)")?;
    }
    let c = &answer["component"];
    let digest = s(&c["digest"]);
    outln!(
        "component   {} ({} bytes, blake3 {})",
        s(&c["source"]),
        c["size"],
        digest.get(..16).unwrap_or(&digest)
    )?;
    Ok(())
}
