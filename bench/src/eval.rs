//! `cargo xtask eval`: routing accuracy and learning, written to
//! `target/bench/eval.json` (same row format as the benches).
//!
//! Routing: questions of six kinds an operator asks (what a feature is, its
//! prerequisites, the parameters that control it, the counters that show its
//! effect, when to enable it, how to troubleshoot it), each phrased by the
//! feature's name, by its acronym, and by a parameter or counter it owns
//! only, for every feature; plus FAJ-code questions, which must all route
//! right. The templates are fixed English phrasings chosen before looking at
//! the router's scores; the parameter of a parameter-only question is the
//! feature's most specific one (owned by the fewest features), as an
//! operator would name the parameter they associate with the feature.
//!
//! Description-only questions describe the feature the way an operator who
//! does not remember its name does: some of the words of its name (each
//! kept with probability 2/3 by a seeded hash, at least one; generic words
//! such as "feature", "support" or "mode" left out; the order shuffled),
//! the kind of feature (its category) and the radio access, never the
//! name as a phrase, the acronym, a parameter, a counter or a FAJ code.
//! (The catalog's generated description is a sentence made from the name
//! and category, so it cannot be the source: questions built from it would
//! test the router against its own profile.) Word choice is by the hash,
//! not by how distinctive a word is to the router.
//!
//! `ELEX_EVAL_MISSES=description cargo xtask eval` (or `name`, `acronym`,
//! `owned name`, `faj code`) prints the questions of that phrasing that
//! were routed wrong, with where they went.
//!
//! Realistic: the hand-written operator questions of `bench/eval/`
//! (abbreviations, compound short names, comparisons, symptoms, …), frozen
//! before the router was tuned on them; reported per kind and per phrasing
//! (`route_realistic_*`) and per half: the even lines are the development
//! half, the only one whose misses `ELEX_EVAL_MISSES=realistic` prints and
//! the router may be tuned on; the odd lines are held out.
//!
//! Blind paraphrases: 150 questions that describe a feature without its
//! name, written blind to the router (`bench/eval/README.md`); top-1 and
//! top-5 only, all held out.
//!
//! Learning: a simulated operator asks 20 linked agents (with dependency
//! peers) 2,000 questions of the six kinds and rewards the action it wants
//! for each kind (+1, else -0.5): a direct answer for what / parameters /
//! counters / when-to-enable questions (a request for clarification when the
//! feature has no parameters or counters to answer from), a consult of a
//! dependency peer for prerequisites, an escalation for troubleshooting. The learning curve is
//! the share of rewarded actions per 200 rounds; afterwards every (agent,
//! kind) pair is asked once more without feedback.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use elex_host::{Action, Host, HostConfig, Swarm, SwarmConfig};
use elex_ran::{Catalog, Router};

use crate::{Rng, Row};

const KINDS: [&str; 6] = ["what", "prerequisites", "parameters", "counters", "enable", "troubleshoot"];

fn question(kind: &str, subject: &str) -> String {
    match kind {
        "what" => format!("What is {subject} and what does it do?"),
        "prerequisites" => format!("What are the prerequisites of {subject}?"),
        "parameters" => format!("Which parameters control {subject} and what are their ranges?"),
        "counters" => format!("Which counters or KPIs show the effect of {subject}?"),
        "enable" => format!("When should I enable {subject}?"),
        _ => format!("How do I troubleshoot {subject} when it does not work?"),
    }
}

/// A question of `kind` naming only a parameter or counter.
fn owned_question(kind: &str, name: &str) -> String {
    match kind {
        "what" => format!("What does {name} do?"),
        "prerequisites" => format!("What must be in place before I change {name}?"),
        "parameters" => format!("What range and default does {name} have?"),
        "counters" => format!("What does {name} measure?"),
        "enable" => format!("When should {name} be changed?"),
        _ => format!("Why does {name} look wrong?"),
    }
}

/// Words of feature names that describe no behaviour: an operator
/// describing the feature leaves them out.
const GENERIC: &[&str] = &[
    "feature",
    "features",
    "function",
    "functionality",
    "support",
    "supported",
    "mode",
    "basic",
    "enhanced",
    "improved",
    "based",
    "handling",
    "management",
    "general",
    "new",
    "for",
    "of",
    "and",
    "the",
    "in",
    "on",
    "with",
    "to",
    "per",
];

/// Some of the words of the feature's name, shuffled (see the module docs).
fn described_words(f: &elex_ran::Feature, kind: &str) -> String {
    let mut roll = Rng::seeded_by(&[&f.faj, kind]);
    let content: Vec<String> =
        elex_text::tokens(&f.name).into_iter().filter(|w| !GENERIC.contains(&w.as_str())).collect();
    let content = if content.is_empty() { elex_text::tokens(&f.name) } else { content };
    let mut kept: Vec<String> =
        content.iter().filter(|_| !roll.next_u64().is_multiple_of(3)).cloned().collect();
    if kept.is_empty() {
        kept.push(content[roll.below(content.len())].clone());
    }
    // Fisher-Yates.
    for i in (1..kept.len()).rev() {
        kept.swap(i, roll.below(i + 1));
    }
    kept.join(" ")
}

/// A question of `kind` describing the feature without naming it.
fn described_question(kind: &str, f: &elex_ran::Feature) -> String {
    let words = described_words(f, kind);
    let category = f.category.as_deref().unwrap_or("radio").to_lowercase().replace(" & ", " and ");
    let access = match f.access.as_deref() {
        Some(a @ ("LTE" | "NR" | "GSM")) => format!("{a} "),
        _ => String::new(),
    };
    match kind {
        "what" => format!("What is the {access}{category} feature that deals with {words}?"),
        "prerequisites" => format!("What does the {access}{category} feature for {words} depend on?"),
        "parameters" => format!("Which parameters tune {words} ({category}) and what are their ranges?"),
        "counters" => format!("Which counters show whether {words} works in my {access}network?"),
        "enable" => format!("When should I switch on {words} for {category}?"),
        _ => format!("{words} ({access}{category}) is not behaving - how do I troubleshoot it?"),
    }
}

pub fn run(out: &Path) -> Result<()> {
    let mut rows = Vec::new();
    let catalog = Arc::new(Catalog::embedded().map_err(|e| anyhow!("{e}"))?);
    routing_rows(&catalog, &mut rows);
    realistic_rows(&catalog, &mut rows)?;
    blind_rows(&catalog, &mut rows)?;
    learning_rows(&catalog, &mut rows)?;
    crate::write(out, "eval", &rows)
}

fn routing_rows(catalog: &Arc<Catalog>, rows: &mut Vec<Row>) {
    let router = Router::new(catalog.clone());
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for f in &catalog.features {
        for n in f.parameters.iter().chain(&f.counters) {
            *owners.entry(n.as_str()).or_default() += 1;
        }
    }
    // ELEX_EVAL_MISSES=<phrasing> (name, acronym, owned name, description,
    // faj code) prints that phrasing's questions routed wrong.
    let show_misses = std::env::var("ELEX_EVAL_MISSES").ok();
    // (phrasing, kind) -> (asked, top1, top5)
    let mut tally: HashMap<(&str, &str), (usize, usize, usize)> = HashMap::new();
    for (i, f) in catalog.features.iter().enumerate() {
        let specific = |names: &[String]| names.iter().min_by_key(|n| (owners[n.as_str()], n.len())).cloned();
        for kind in KINDS {
            let mut asked = vec![("name", question(kind, &f.name))];
            if let Some(a) = &f.acronym {
                asked.push(("acronym", question(kind, a)));
            }
            let owned = if kind == "counters" { specific(&f.counters) } else { specific(&f.parameters) };
            if let Some(n) = owned.or_else(|| specific(&f.counters)) {
                asked.push(("owned name", owned_question(kind, &n)));
            }
            asked.push(("description", described_question(kind, f)));
            asked.push(("faj code", question(kind, &f.faj)));
            for (phrasing, text) in asked {
                let top5 = router.route(&text, 5);
                if show_misses.as_deref() == Some(phrasing) && top5.first().is_none_or(|c| c.index != i) {
                    let got: Vec<String> = top5
                        .iter()
                        .map(|c| format!("{} [{}]", catalog.features[c.index].name, c.reason))
                        .collect();
                    eprintln!("miss ({kind}): {text:?} is {:?}; routed to {got:?}", f.name);
                }
                let t = tally.entry((phrasing, kind)).or_default();
                t.0 += 1;
                t.1 += usize::from(top5.first().is_some_and(|c| c.index == i));
                t.2 += usize::from(top5.iter().any(|c| c.index == i));
            }
        }
    }
    let mut overall = (0, 0, 0);
    let mut keys: Vec<_> = tally.keys().copied().collect();
    keys.sort();
    for (phrasing, kind) in keys {
        let (n, t1, t5) = tally[&(phrasing, kind)];
        if phrasing != "faj code" {
            overall = (overall.0 + n, overall.1 + t1, overall.2 + t5);
        }
        let name = format!("route_{}_{kind}", phrasing.replace(' ', "_"));
        rows.push(
            Row::new(&format!("{name}_top1"), "share", t1 as f64 / n as f64, None)
                .settings(format!("{n} questions; top-5 {:.3}", t5 as f64 / n as f64)),
        );
    }
    let faj: (usize, usize) =
        tally.iter().filter(|(k, _)| k.0 == "faj code").fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
    rows.push(
        Row::new("route_faj_code_top1", "share", faj.1 as f64 / faj.0 as f64, None)
            .settings(format!("{} questions", faj.0)),
    );
    rows.push(Row::new("route_overall_top1", "share", overall.1 as f64 / overall.0 as f64, None).settings(
        format!("{} questions by name, acronym, owned name or description (target 0.85)", overall.0),
    ));
    rows.push(
        Row::new("route_overall_top5", "share", overall.2 as f64 / overall.0 as f64, None)
            .settings(format!("{} questions (target 0.97)", overall.0)),
    );
}

/// The questions of `bench/eval/<file>`, one JSON object per non-empty
/// line, each with its line number; an error names the file and line.
fn eval_set<T: serde::de::DeserializeOwned>(file: &str) -> Result<(std::path::PathBuf, Vec<(usize, T)>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("eval").join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let set = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let q = serde_json::from_str(l).map_err(|e| anyhow!("{} line {}: {e}", path.display(), n + 1))?;
            Ok((n + 1, q))
        })
        .collect::<Result<_>>()?;
    Ok((path, set))
}

/// One question of the hand-written realistic set (`bench/eval/`).
#[derive(serde::Deserialize)]
struct Realistic {
    question: String,
    faj: String,
    kind: String,
    phrasing: String,
}

/// The hand-written set of operator questions (see `bench/eval/README.md`):
/// top-1 and top-5 per kind and per phrasing, and overall.
/// `ELEX_EVAL_MISSES=realistic` prints every miss (`realistic:<phrasing>`
/// only that phrasing's).
fn realistic_rows(catalog: &Arc<Catalog>, rows: &mut Vec<Row>) -> Result<()> {
    let (_, set) = eval_set::<Realistic>("realistic.jsonl")?;
    let set: Vec<Realistic> = set.into_iter().map(|(_, q)| q).collect();
    let router = Router::new(catalog.clone());
    let show = std::env::var("ELEX_EVAL_MISSES").ok();
    let show = |phrasing: &str| match show.as_deref() {
        Some("realistic") => true,
        Some(s) => s.strip_prefix("realistic:") == Some(phrasing),
        None => false,
    };
    // by "kind:<k>" / "phrasing:<p>" / "all" -> (asked, top1, top5)
    let mut tally: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
    // Close calls reported with the answer: (hits flagged, misses flagged,
    // misses whose right feature is among the close candidates).
    let (mut hits, mut misses) = (0usize, 0usize);
    let (mut hits_flagged, mut misses_flagged, mut misses_listed) = (0usize, 0usize, 0usize);
    // Questions asked back (a close choice by similarity, see
    // `Routed::is_close`): right and wrong choices among them, and those
    // whose right feature is among the features offered.
    let (mut hits_asked, mut misses_asked, mut offered_right) = (0usize, 0usize, 0usize);
    for (n, q) in set.iter().enumerate() {
        // Even lines are the development half (their misses are what
        // `ELEX_EVAL_MISSES` shows, and what the router may be tuned on);
        // odd lines are held out, reported but never shown.
        let half = if n % 2 == 0 { "dev" } else { "held-out" };
        let want = catalog.index_of(&q.faj).map_err(|e| anyhow!("{}: {e}", q.question))?;
        let top5 = router.route(&q.question, 5);
        let top1 = top5.first().is_some_and(|c| c.index == want);
        let in5 = top5.iter().any(|c| c.index == want);
        if let Some((chosen, reason, close)) = router.choose_with_rivals(&q.question) {
            if matches!(reason, elex_ran::router::Reason::Similarity(_)) && !close.is_empty() {
                hits_asked += usize::from(chosen == want);
                misses_asked += usize::from(chosen != want);
                let offers = router.most_like(&q.question, elex_ran::runtime::CLARIFY_OFFERS);
                offered_right += usize::from(offers.iter().any(|c| c.index == want));
            }
            if chosen == want {
                hits += 1;
                hits_flagged += usize::from(!close.is_empty());
            } else {
                misses += 1;
                misses_flagged += usize::from(!close.is_empty());
                misses_listed += usize::from(close.iter().any(|c| c.index == want));
            }
        }
        if !top1 && half == "dev" && show(&q.phrasing) {
            let got: Vec<String> =
                top5.iter().map(|c| format!("{} [{}]", catalog.features[c.index].name, c.reason)).collect();
            eprintln!(
                "miss ({}, {}): {:?} is {:?}; routed to {got:?}",
                q.kind, q.phrasing, q.question, catalog.features[want].name
            );
        }
        for key in [
            format!("kind:{}", q.kind),
            format!("phrasing:{}", q.phrasing),
            format!("half:{half}"),
            String::from("all"),
        ] {
            let t = tally.entry(key).or_default();
            *t = (t.0 + 1, t.1 + usize::from(top1), t.2 + usize::from(in5));
        }
    }
    let share = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    rows.push(Row::new("route_realistic_misses_flagged_close", "share", share(misses_flagged, misses), None).settings(
        format!(
            "of {misses} misses, the answer said the choice was close; the right feature among the close candidates in {misses_listed}"
        ),
    ));
    rows.push(
        Row::new("route_realistic_hits_flagged_close", "share", share(hits_flagged, hits), None)
            .settings(format!("of {hits} right answers, flagged close all the same")),
    );
    let asked = hits_asked + misses_asked;
    let total = hits + misses;
    rows.push(Row::new("route_realistic_asked_back", "share", share(asked, total), None).settings(format!(
        "{asked} of {total} questions asked back which feature was meant (the default): {misses_asked} \
         instead of a wrong answer, {hits_asked} instead of a right one; the right feature among the \
         {} offered in {offered_right}",
        elex_ran::runtime::CLARIFY_OFFERS
    )));
    rows.push(
        Row::new("route_realistic_wrong_answers", "share", share(misses - misses_asked, total), None)
            .settings(format!(
                "answered with the wrong feature when close choices ask back; {:.3} with --best-guess",
                share(misses, total)
            )),
    );
    // Learning from corrections: an operator corrects every development-
    // half question the router got wrong (`Router::learn`, as `elex
    // feedback --agent` does); then both halves are asked again.
    let mut corrected = 0;
    for q in set.iter().step_by(2) {
        let want = catalog.index_of(&q.faj).map_err(|e| anyhow!("{e}"))?;
        if router.choose(&q.question).is_none_or(|(i, _)| i != want) {
            router.learn(&q.question, want);
            corrected += 1;
        }
    }
    for half in ["dev", "held-out"] {
        let asked: Vec<&Realistic> =
            set.iter().enumerate().filter(|(n, _)| (n % 2 == 0) == (half == "dev")).map(|(_, q)| q).collect();
        let right = asked
            .iter()
            .filter(|q| {
                let want = catalog.index_of(&q.faj).ok();
                router.choose(&q.question).map(|(i, _)| i) == want
            })
            .count();
        rows.push(
            Row::new(
                &format!("route_realistic_half_{}_after_corrections_top1", half.replace('-', "_")),
                "share",
                right as f64 / asked.len() as f64,
                None,
            )
            .settings(format!(
                "after an operator corrected the {corrected} development-half questions routed wrong"
            )),
        );
    }
    // The same with every development-half question named by an operator
    // (`feedback --agent` on right answers too): what the router learns of
    // the features' vocabulary, on the held-out half.
    let labelled = Router::new(catalog.clone());
    for q in set.iter().step_by(2) {
        labelled.learn(&q.question, catalog.index_of(&q.faj).map_err(|e| anyhow!("{e}"))?);
    }
    let held_out: Vec<&Realistic> = set.iter().skip(1).step_by(2).collect();
    let right = held_out
        .iter()
        .filter(|q| labelled.choose(&q.question).map(|(i, _)| i) == catalog.index_of(&q.faj).ok())
        .count();
    rows.push(
        Row::new(
            "route_realistic_half_held_out_after_labelling_top1",
            "share",
            right as f64 / held_out.len() as f64,
            None,
        )
        .settings(format!(
            "after an operator named the feature of every one of the {} development-half questions",
            set.len().div_ceil(2)
        )),
    );
    for (key, (n, t1, t5)) in &tally {
        let name = format!("route_realistic_{}", key.replace([':', ' ', '-'], "_"));
        rows.push(
            Row::new(&format!("{name}_top1"), "share", *t1 as f64 / *n as f64, None)
                .settings(format!("{n} hand-written questions; top-5 {:.3}", *t5 as f64 / *n as f64)),
        );
    }
    Ok(())
}

/// A question of the blind paraphrase set (`bench/eval/blind-paraphrase.jsonl`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Blind {
    faj: String,
    question: String,
    unsure: bool,
}

/// The blind paraphrase set (see `bench/eval/README.md`): top-1 and top-5,
/// all of it held out (its misses are never printed).
fn blind_rows(catalog: &Arc<Catalog>, rows: &mut Vec<Row>) -> Result<()> {
    let (path, set) = eval_set::<Blind>("blind-paraphrase.jsonl")?;
    let router = Router::new(catalog.clone());
    let (mut asked, mut top1, mut top5, mut unsure) = (0usize, 0usize, 0usize, 0usize);
    let mut seen = std::collections::HashSet::new();
    for (line, q) in set {
        // Errors name the line only: the set is held out.
        let at = || format!("{} line {line}", path.display());
        let want = catalog.index_of(&q.faj).map_err(|e| anyhow!("{}: {e}", at()))?;
        anyhow::ensure!(seen.insert(want), "{}: a second question for one feature", at());
        let top = router.route(&q.question, 5);
        asked += 1;
        unsure += usize::from(q.unsure);
        top1 += usize::from(top.first().is_some_and(|c| c.index == want));
        top5 += usize::from(top.iter().any(|c| c.index == want));
    }
    anyhow::ensure!(asked > 0, "{}: no questions", path.display());
    let settings = format!(
        "{asked} questions describing a feature without its name (at most one common word of it), \
         written blind to the router ({unsure} marked unsure by their writer); all held out"
    );
    rows.push(
        Row::new("route_blind_paraphrase_top1", "share", top1 as f64 / asked as f64, None)
            .settings(settings.clone()),
    );
    rows.push(
        Row::new("route_blind_paraphrase_top5", "share", top5 as f64 / asked as f64, None).settings(settings),
    );
    Ok(())
}

/// The action the simulated operator rewards: a consult of a dependency
/// peer for prerequisites, an escalation for troubleshooting, else a direct
/// answer, unless the feature has no facts of the asked kind (no counters or
/// no parameters): then it wants the agent to ask back.
fn wanted(kind: &str, f: &elex_ran::Feature) -> Action {
    match kind {
        "prerequisites" => Action::ConsultPeer,
        "troubleshoot" => Action::Escalate,
        "counters" if f.counters.is_empty() => Action::RequestClarification,
        "parameters" if f.parameters.is_empty() => Action::RequestClarification,
        _ => Action::DirectAnswer,
    }
}

fn learning_rows(catalog: &Arc<Catalog>, rows: &mut Vec<Row>) -> Result<()> {
    let bytes = std::fs::read(elex_tests::component_path("feature-agent.composed"))?;
    let host = Arc::new(Host::new(HostConfig::for_swarm(593)).map_err(|e| anyhow!("{e}"))?);
    let loaded = Arc::new(host.load_unsigned_bytes("feature-agent", &bytes).map_err(|e| anyhow!("{e}"))?);
    let router = Arc::new(Router::new(catalog.clone()));
    let swarm = Swarm::start(host, loaded, router.clone(), None, SwarmConfig::default(), |_| {})
        .map_err(|e| anyhow!("{e}"))?;
    // 20 agents that have a prerequisite in the catalog.
    let agents: Vec<usize> = (0..catalog.features.len())
        .filter(|&i| catalog.features[i].requires.iter().any(|r| router.index_of(r).is_some()))
        .step_by(5)
        .take(20)
        .collect();
    anyhow::ensure!(agents.len() == 20, "only {} agents with prerequisites", agents.len());
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut curve = Vec::new();
    let mut window = 0;
    for round in 1..=2_000 {
        let i = agents[(next() % agents.len() as u64) as usize];
        let kind = KINDS[(next() % KINDS.len() as u64) as usize];
        let answer = swarm.ask(i, &question(kind, &catalog.features[i].name)).map_err(|e| anyhow!("{e}"))?;
        let right = answer.response.action == wanted(kind, &catalog.features[i]);
        window += usize::from(right);
        swarm
            .feedback(i, &answer.response.query_id, if right { 1.0 } else { -0.5 })
            .map_err(|e| anyhow!("{e}"))?;
        if round % 200 == 0 {
            curve.push(window as f64 / 200.0);
            window = 0;
        }
    }
    for (k, share) in curve.iter().enumerate() {
        rows.push(
            Row::new(&format!("learning_rounds_{}_{}", k * 200 + 1, (k + 1) * 200), "share", *share, None)
                .settings("rewarded action chosen, per 200 feedback rounds"),
        );
    }
    let (mut right, mut total) = (0, 0);
    for kind in KINDS {
        let mut done: HashMap<String, usize> = HashMap::new();
        let mut kind_right = 0;
        for &i in &agents {
            let a = swarm.ask(i, &question(kind, &catalog.features[i].name)).map_err(|e| anyhow!("{e}"))?;
            kind_right += usize::from(a.response.action == wanted(kind, &catalog.features[i]));
            *done.entry(a.response.action.to_string()).or_default() += 1;
        }
        let mut done: Vec<_> = done.into_iter().collect();
        done.sort();
        rows.push(
            Row::new(
                &format!("learning_after_2000_rounds_{kind}"),
                "share",
                kind_right as f64 / agents.len() as f64,
                None,
            )
            .settings(format!("actions taken {done:?}")),
        );
        right += kind_right;
        total += agents.len();
    }
    rows.push(
        Row::new("learning_after_2000_rounds", "share", right as f64 / total as f64, None)
            .settings(format!("{total} (agent, kind) pairs asked once more without feedback (target 0.90)")),
    );
    Ok(())
}
