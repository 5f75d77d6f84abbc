//! The `elex:agent/agent` export.
//!
//! Each query is reduced to a small state (what kind of question, how well
//! the agent's knowledge matches it); the agent's Q-table (`elex:qlearning`)
//! picks the action for that state, and feedback updates the value of the
//! action taken.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::elex::agent::types::{
    Action, AgentConfig, AgentError, CounterSample, HealthReport, HealthStatus, KpiStatus, KpiValue,
    ParameterValue, Query, Response, Validation, Verdict,
};
use crate::elex::host::log::{self, Level};
use crate::elex::qlearning::engine::{Config as QConfig, Exploration, QTable, Transition};
use crate::elex::vector::kernels::{self, RangeVerdict};
use crate::exports::elex::agent::agent::Guest;
use crate::knowledge::{Feature, Snippet, Topic};
use crate::retrieval::Retrieval;
use crate::state::{Answered, Learned};

/// Below this similarity nothing the agent knows matches the question.
const MIN_RELEVANCE: f32 = 0.12;
/// At or above this similarity the match is strong.
const STRONG_RELEVANCE: f32 = 0.35;
/// How many snippets an answer quotes at most.
const ANSWER_SNIPPETS: usize = 4;
/// How many nearest snippets are considered before filtering by topic.
const CANDIDATES: u32 = 32;

/// The Q-table's actions, in index order.
const ACTIONS: [Action; 5] = [
    Action::DirectAnswer,
    Action::ContextAnswer,
    Action::ConsultPeer,
    Action::RequestClarification,
    Action::Escalate,
];

fn action_name(a: Action) -> &'static str {
    match a {
        Action::DirectAnswer => "direct-answer",
        Action::ContextAnswer => "context-answer",
        Action::ConsultPeer => "consult-peer",
        Action::RequestClarification => "request-clarification",
        Action::Escalate => "escalate",
    }
}

struct Loaded {
    id: String,
    feature: Feature,
    /// The tokens of the feature's name and acronym (see [`Loaded::focus`]).
    own: Vec<String>,
    /// Built at the first question (see [`Knowledge::build`]): a swarm of
    /// hundreds of agents starts without building what most of them may
    /// never be asked.
    knowledge: Option<Knowledge>,
    seed: u64,
    q: QTable,
    learned: Learned,
}

/// The agent's facts and their search index.
struct Knowledge {
    snippets: Vec<Snippet>,
    /// Each snippet's terms (`elex_text::terms` of its name and sentence).
    snippet_terms: Vec<Terms>,
    retrieval: Retrieval,
}

impl Knowledge {
    /// Snippets from the catalog entry, their terms and embeddings, and
    /// their search (see [`Retrieval::build`]).
    fn build(feature: &Feature, seed: u64) -> Result<Knowledge, AgentError> {
        let snippets = feature.snippets();
        let mut embeddings = Vec::with_capacity(snippets.len() * elex_text::DIM);
        let mut snippet_terms = Vec::with_capacity(snippets.len());
        for s in &snippets {
            // Questions name either the fact or what it says: embed both.
            let terms = elex_text::terms(&format!("{} {}", s.source, s.text));
            embeddings.extend_from_slice(&elex_text::embed_terms(&terms));
            snippet_terms.push(Terms::new(terms));
        }
        let (retrieval, how) = Retrieval::build(embeddings, seed).map_err(AgentError::Dependency)?;
        log::log(
            Level::Debug,
            "knowledge built",
            &[
                ("faj".to_string(), feature.faj.clone()),
                ("snippets".to_string(), snippets.len().to_string()),
                ("retrieval".to_string(), how.to_string()),
            ],
        );
        Ok(Knowledge { snippets, snippet_terms, retrieval })
    }
}

/// Instance state. Component instances are single-threaded.
struct Cell(RefCell<Option<Loaded>>);
// SAFETY: a wasm32 component instance runs on one thread.
unsafe impl Sync for Cell {}
static STATE: Cell = Cell(RefCell::new(None));

fn with<T>(f: impl FnOnce(&mut Loaded) -> Result<T, AgentError>) -> Result<T, AgentError> {
    let mut guard = STATE.0.borrow_mut();
    let loaded = guard.as_mut().ok_or(AgentError::NotInitialized)?;
    f(loaded)
}

fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn new_q_table(seed: u64) -> Result<QTable, AgentError> {
    QTable::create(&QConfig {
        actions: ACTIONS.iter().map(|a| action_name(*a).to_string()).collect(),
        alpha: 0.1,
        gamma: 0.0,
        // Greedy: untrained agents answer directly (action 0 wins ties);
        // feedback moves the values.
        epsilon: 0.0,
        epsilon_decay: 1.0,
        epsilon_floor: 0.0,
        initial_q: 0.0,
        exploration: Exploration::EpsilonGreedy,
        seed,
    })
    .map_err(|e| AgentError::Dependency(format!("elex:qlearning refused the table: {e:?}")))
}

/// The snippet topics that answer a kind of question (empty: any), and
/// whether the kind alone makes a snippet of those topics relevant (a
/// question about "its counters" is answered by any counter).
fn topics_for(kind: &str) -> (&'static [Topic], bool) {
    match kind {
        "dependencies" => (&[Topic::Dependencies], true),
        "observability" => (&[Topic::Counter, Topic::Kpi], true),
        "configuration" => (&[Topic::Parameter], true),
        "general" => (&[Topic::Overview, Topic::Dependencies, Topic::Parameter], false),
        // When to enable a feature: what it is, what it needs, what it
        // excludes.
        "activation" => (&[Topic::Overview, Topic::Dependencies], true),
        // Troubleshooting starts from what shows the effect and what the
        // feature depends on.
        "troubleshoot" => (&[Topic::Counter, Topic::Kpi, Topic::Dependencies], true),
        _ => (&[], false),
    }
}

/// How many of the question's terms a snippet has (equal, or one a prefix of
/// the other of at least four letters: "config" / "configuration").
fn shared_terms(question: &[Term<&str>], snippet: &Terms) -> usize {
    question.iter().filter(|x| snippet.has(x)).count()
}

/// A snippet's terms without repeats, ordered by head (see [`Term`]): only
/// the terms with a question term's head can match it, and a binary search
/// finds them.
struct Terms {
    terms: Vec<Term<String>>,
}

impl Terms {
    fn new(terms: Vec<String>) -> Terms {
        let mut terms: Vec<Term<String>> = terms.into_iter().map(Term::new).collect();
        terms.sort_unstable_by(|x, y| x.head.cmp(&y.head).then_with(|| x.text.cmp(&y.text)));
        terms.dedup_by(|x, y| x.text == y.text);
        Terms { terms }
    }

    /// Whether one of the terms matches `x`.
    fn has<S: AsRef<str>>(&self, x: &Term<S>) -> bool {
        let from = self.terms.partition_point(|t| t.head < x.head);
        self.terms[from..].iter().take_while(|t| t.head == x.head).any(|t| x.matches(t))
    }
}

/// A term (owned or borrowed) with its first four bytes as a number: two
/// terms can only match (equal, or one a prefix of the other of at least
/// four bytes) when those are equal, so most pairs are told apart by one
/// comparison.
struct Term<S> {
    head: u32,
    text: S,
}

impl<S: AsRef<str>> Term<S> {
    fn new(text: S) -> Term<S> {
        let bytes = text.as_ref().as_bytes();
        let mut head = [0u8; 4];
        let n = bytes.len().min(4);
        head[..n].copy_from_slice(&bytes[..n]);
        Term { head: u32::from_le_bytes(head), text }
    }

    /// Equal, or one starts with the other and both have at least four
    /// bytes.
    fn matches<T: AsRef<str>>(&self, other: &Term<T>) -> bool {
        let (x, y) = (self.text.as_ref(), other.text.as_ref());
        self.head == other.head
            && (x == y || (x.len().min(y.len()) >= 4 && (x.starts_with(y) || y.starts_with(x))))
    }
}

/// Weight of each shared term when ranking relevant snippets.
const TERM_BONUS: f32 = 0.15;

/// The kind of question, from its words.
fn question_kind(t: &[String]) -> &'static str {
    let has = |words: &[&str]| t.iter().any(|w| words.contains(&w.as_str()));
    if has(&["troubleshoot", "problem", "fail", "failure", "issue", "degraded", "drop", "why"]) {
        "troubleshoot"
    } else if has(&[
        "require",
        "requires",
        "prerequisite",
        "prerequisites",
        "depend",
        "depends",
        "conflict",
        "conflicts",
    ]) {
        "dependencies"
    } else if has(&["counter", "counters", "kpi", "kpis", "pm", "measure", "monitor", "effect"]) {
        "observability"
    } else if has(&["parameter", "parameters", "set", "value", "range", "default", "configure", "tune"]) {
        "configuration"
    } else if has(&["enable", "activate", "when", "should"]) {
        "activation"
    } else {
        "general"
    }
}

fn relevance_bucket(best: f32) -> &'static str {
    if best >= STRONG_RELEVANCE {
        "strong"
    } else if best >= MIN_RELEVANCE {
        "weak"
    } else {
        "none"
    }
}

impl Loaded {
    /// The terms of the question `tokens` without the feature's own name
    /// and acronym (every snippet is about this feature, so those words only
    /// blur the match); all its `terms` if no other token is left.
    fn focus<'t>(&self, tokens: &'t [String], terms: &[&'t str]) -> Vec<&'t str> {
        let mut rest = tokens.iter().filter(|t| !self.own.contains(t)).peekable();
        if rest.peek().is_none() {
            return terms.to_vec();
        }
        rest.filter_map(|t| elex_text::term_of(t)).collect()
    }
}

pub struct FeatureAgent;

/// Interactions (questions answered plus feedback received) before an agent
/// leaves its cold start.
const COLD_START: u64 = 100;

/// How far the agent trusts itself: 0.5 for a new agent, growing linearly
/// with interactions to 1.0 at [`COLD_START`]. An answer's confidence is its
/// relevance times this.
fn experience(learned: &Learned) -> f32 {
    let n = (learned.queries + learned.feedback).min(COLD_START);
    0.5 + 0.5 * n as f32 / COLD_START as f32
}

/// Asks a dependency peer (a prerequisite first, else a related feature)
/// through the host: the peer's answer and its sources, or `None` when the
/// host has no routing or no peer answers.
fn consult_peer(question: &str) -> Option<(String, Vec<String>)> {
    use crate::elex::host::routing::{self, Relation};
    let peers = routing::peers().ok()?;
    let peer = peers
        .iter()
        .find(|p| p.relation == Relation::Requires)
        .or_else(|| peers.iter().find(|p| p.relation == Relation::Enhances))?;
    let answer = routing::consult(&peer.agent_id, question).ok()?;
    let relation = if peer.relation == Relation::Requires { "a prerequisite" } else { "a related feature" };
    let mut sources = alloc::vec![format!("peer:{}", peer.agent_id)];
    sources.extend(answer.sources);
    Some((format!(" consulted {} ({relation}):\n{}", peer.agent_id, answer.content), sources))
}

/// Engrams of the shared memory graph that match the question (in the
/// query's context, if it has one), or `None`.
fn recall(query: &Query) -> Option<(String, Vec<String>)> {
    use crate::elex::host::memory_graph::{self as graph, SearchQuery};
    let hits = graph::search(&SearchQuery {
        text: Some(query.text.clone()),
        metadata: Vec::new(),
        context: query.context,
        limit: 3,
    })
    .ok()?;
    let mut text = String::from(", from shared memory:");
    let mut sources = Vec::new();
    for h in hits {
        if let Ok(e) = graph::get(h.id) {
            text.push_str("\n- ");
            text.push_str(&e.content);
            sources.push(format!("engram:{}", e.id));
        }
    }
    (!sources.is_empty()).then_some((text, sources))
}

impl Guest for FeatureAgent {
    fn init(config: AgentConfig) -> Result<(), AgentError> {
        let feature: Feature = serde_json::from_str(&config.document)
            .map_err(|e| AgentError::InvalidInput(format!("catalog entry is not valid JSON: {e}")))?;
        let seed = seed_of(&config.agent_id);
        let q = new_q_table(seed)?;
        let mut own = elex_text::tokens(&feature.name);
        if let Some(a) = &feature.acronym {
            own.extend(elex_text::tokens(a));
        }
        *STATE.0.borrow_mut() = Some(Loaded {
            id: config.agent_id,
            feature,
            own,
            knowledge: None,
            seed,
            q,
            learned: Learned::default(),
        });
        Ok(())
    }

    fn handle(query: Query) -> Result<Response, AgentError> {
        with(|a| {
            if a.knowledge.is_none() {
                a.knowledge = Some(Knowledge::build(&a.feature, a.seed)?);
            }
            let Some(k) = a.knowledge.as_ref() else { return Err(AgentError::NotInitialized) };
            let tokens = elex_text::tokens(&query.text);
            let kind = question_kind(&tokens);
            let question_terms: Vec<&str> = tokens.iter().filter_map(|t| elex_text::term_of(t)).collect();
            let focus = a.focus(&tokens, &question_terms);
            // A question that says nothing beyond the feature's name ("What
            // is MIMO Sleep Mode?") asks for the overview.
            let about_the_feature = focus.is_empty();
            let embedding = elex_text::embed_terms(if about_the_feature { &question_terms } else { &focus });
            let question_terms: Vec<Term<&str>> = question_terms.into_iter().map(Term::new).collect();
            let nearest = k.retrieval.search(&embedding, CANDIDATES).map_err(AgentError::Dependency)?;
            // Prefer the facts that answer this kind of question; fall back
            // to any fact when the feature has none of that topic.
            let (wanted, topic_is_evidence) = if about_the_feature && kind == "general" {
                (&[Topic::Overview][..], true)
            } else {
                topics_for(kind)
            };
            let mut on_topic: Vec<(usize, f32)> = nearest
                .iter()
                .filter(|(row, _)| wanted.is_empty() || wanted.contains(&k.snippets[*row].topic))
                .copied()
                .collect();
            // The overview and dependency facts are few: when the question
            // wants them and the search did not bring them, take them.
            if on_topic.is_empty() && topic_is_evidence {
                on_topic = (0..k.snippets.len())
                    .filter(|&r| matches!(k.snippets[r].topic, Topic::Overview | Topic::Dependencies))
                    .filter(|&r| wanted.contains(&k.snippets[r].topic))
                    .map(|r| (r, MIN_RELEVANCE))
                    .collect();
            }
            let hits = if on_topic.is_empty() { nearest } else { on_topic };
            // Similar is not enough: a relevant fact is of the asked-for
            // topic or shares a word with the question (hashed embeddings
            // give unrelated short texts some similarity). Relevant facts are
            // ranked by similarity plus a bonus per shared word.
            let mut relevant: Vec<(usize, f32, f32)> = hits
                .iter()
                .filter_map(|&(row, sim)| {
                    let shared = shared_terms(&question_terms, &k.snippet_terms[row]);
                    let on_topic = topic_is_evidence && wanted.contains(&k.snippets[row].topic);
                    // A fact of the asked-for topic answers the question
                    // however its wording compares; others must be similar
                    // and share a word with it.
                    (on_topic || (sim >= MIN_RELEVANCE && shared > 0)).then_some((
                        row,
                        sim,
                        sim + TERM_BONUS * shared as f32,
                    ))
                })
                .collect();
            relevant.sort_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(&y.0)));
            relevant.truncate(ANSWER_SNIPPETS);
            let best = relevant.iter().map(|r| r.1).fold(0.0f32, f32::max);
            let state = format!("{kind}/{}", relevance_bucket(best));
            let chosen =
                a.q.select(&state)
                    .map_err(|e| AgentError::Dependency(format!("elex:qlearning select failed: {e:?}")))?;
            let q_value = a.q.values(&state).get(chosen as usize).copied().unwrap_or(0.0);

            let mut action = ACTIONS.get(chosen as usize).copied().unwrap_or(Action::DirectAnswer);
            // Context and peers come from the host's memory graph and
            // routing; where the host has none (or they have nothing) the
            // agent answers itself.
            let borrowed = match action {
                Action::ConsultPeer => consult_peer(&query.text),
                Action::ContextAnswer => recall(&query),
                _ => None,
            };
            if matches!(action, Action::ContextAnswer | Action::ConsultPeer) && borrowed.is_none() {
                action = Action::DirectAnswer;
            }
            // Nothing to answer from: ask instead of inventing.
            if action == Action::DirectAnswer && relevant.is_empty() {
                action = Action::RequestClarification;
            }
            let title = a.feature.title();
            let (content, sources) = match (action, borrowed) {
                (Action::ConsultPeer | Action::ContextAnswer, Some((text, sources))) => {
                    (format!("{title}{text}"), sources)
                }
                _ => match action {
                    Action::RequestClarification => (
                        format!(
                            "{title} knows {} parameters, {} counters and {} KPIs, but the question does not \
                         clearly match them. Name a parameter, counter or behaviour of the feature.",
                            a.feature.parameters.len(),
                            a.feature.counters.len(),
                            a.feature.kpis.len()
                        ),
                        Vec::new(),
                    ),
                    Action::Escalate => (
                        format!(
                            "{title}: this question is escalated to a RAN expert; feedback on past answers asked for it."
                        ),
                        Vec::new(),
                    ),
                    _ => {
                        let mut text = title;
                        let mut sources = Vec::new();
                        for (row, _, _) in &relevant {
                            let s = &k.snippets[*row];
                            text.push_str("\n- ");
                            text.push_str(&s.text);
                            sources.push(s.source.clone());
                        }
                        (text, sources)
                    }
                },
            };
            // Feedback judges the policy's choice, even when the agent had
            // to fall back (no peer answered, nothing in memory): otherwise a
            // choice that cannot be carried out would never be unlearned.
            a.learned.answered(Answered { query_id: query.id.clone(), state: state.clone(), action: chosen });
            log::log(
                Level::Info,
                "query handled",
                &[
                    ("query_id".to_string(), query.id.clone()),
                    ("state".to_string(), state),
                    ("action".to_string(), action_name(action).to_string()),
                    ("relevance".to_string(), format!("{best:.3}")),
                ],
            );
            Ok(Response {
                query_id: query.id,
                agent_id: a.id.clone(),
                action,
                content,
                confidence: (best * experience(&a.learned)).clamp(0.0, 1.0),
                q_value,
                sources,
            })
        })
    }

    fn feedback(query_id: String, reward: f32) -> Result<(), AgentError> {
        if !reward.is_finite() || !(-1.0..=1.0).contains(&reward) {
            return Err(AgentError::InvalidInput(format!("reward {reward} is outside [-1, 1]")));
        }
        with(|a| {
            let answered = a.learned.take(&query_id).ok_or_else(|| {
                AgentError::InvalidInput(format!(
                    "no recent query with id {query_id:?}: an answer takes one reward, and an agent \
                         keeps only its last {} answers",
                    crate::state::RECENT
                ))
            })?;
            a.q.update(&Transition {
                state: answered.state,
                action: answered.action,
                reward,
                next_state: None,
            })
            .map_err(|e| AgentError::Dependency(format!("elex:qlearning update failed: {e:?}")))?;
            a.learned.rewarded(reward);
            Ok(())
        })
    }

    fn validate(parameters: Vec<ParameterValue>) -> Result<Vec<Validation>, AgentError> {
        with(|a| {
            // Parameters with a known range go through the SIMD range check in
            // one call; the rest are judged here.
            let mut out: Vec<Validation> = Vec::with_capacity(parameters.len());
            let (mut values, mut mins, mut maxs, mut slots) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for p in &parameters {
                let owned = a.feature.parameters.iter().find(|fp| fp.name == p.name);
                let (verdict, message) = match owned {
                    None => (
                        Verdict::UnknownParameter,
                        format!("{} is not a parameter of {}", p.name, a.feature.faj),
                    ),
                    Some(_) if !p.value.is_finite() => {
                        (Verdict::NotANumber, String::from("value is not finite"))
                    }
                    Some(fp) => match (fp.min, fp.max) {
                        (Some(min), Some(max)) => {
                            slots.push(out.len());
                            values.push(p.value as f32);
                            mins.push(min as f32);
                            maxs.push(max as f32);
                            (Verdict::Ok, format!("allowed range {min} to {max}"))
                        }
                        _ => (Verdict::NoRange, format!("no range is known for {}", p.name)),
                    },
                };
                out.push(Validation { name: p.name.clone(), verdict, message });
            }
            if !slots.is_empty() {
                let verdicts = kernels::validate_ranges(&values, &mins, &maxs)
                    .map_err(|e| AgentError::Dependency(format!("elex:vector failed: {e:?}")))?;
                for (slot, v) in slots.into_iter().zip(verdicts) {
                    out[slot].verdict = match v {
                        RangeVerdict::Within => Verdict::Ok,
                        RangeVerdict::Below => Verdict::BelowMinimum,
                        RangeVerdict::Above => Verdict::AboveMaximum,
                        RangeVerdict::Invalid => Verdict::NotANumber,
                    };
                }
            }
            Ok(out)
        })
    }

    fn kpis(samples: Vec<CounterSample>) -> Result<Vec<KpiValue>, AgentError> {
        with(|a| {
            // Each counter's samples are summed with the vector library's
            // aggregation; a KPI is then computed from its formula (as the
            // generated catalog writes them: `c` or `100 * a / (a + b)`).
            // A KPI without a formula, or without samples of its counters,
            // is reported as lacking data rather than guessed.
            let total = |counter: &str| -> Result<Option<f64>, AgentError> {
                let values: Vec<f32> =
                    samples.iter().filter(|s| s.name == counter).map(|s| s.value as f32).collect();
                if values.is_empty() {
                    return Ok(None);
                }
                let ones = alloc::vec![1.0f32; values.len()];
                let summary = kernels::aggregate(&values, &ones, 0.0)
                    .map_err(|e| AgentError::Dependency(format!("elex:vector aggregate failed: {e:?}")))?;
                Ok(Some(summary.sum))
            };
            let mut out = Vec::with_capacity(a.feature.kpis.len());
            for k in &a.feature.kpis {
                let no_data = |unit: &str, threshold: f64| KpiValue {
                    name: String::from(k.name()),
                    value: 0.0,
                    unit: String::from(unit),
                    threshold,
                    status: KpiStatus::NoData,
                };
                let crate::knowledge::Kpi::Object { formula: Some(f), unit, threshold, direction, .. } = k
                else {
                    out.push(no_data("", 0.0));
                    continue;
                };
                let (unit, threshold) = (unit.as_deref().unwrap_or(""), threshold.unwrap_or(0.0));
                let value = match f.strip_prefix("100 * ").and_then(|r| r.split_once(" / (")) {
                    Some((num, rest)) => {
                        let den = rest.trim_end_matches(')');
                        let other = den.split(" + ").nth(1).unwrap_or("");
                        match (total(num)?, total(other)?) {
                            (Some(x), Some(y)) if x + y > 0.0 => Some(100.0 * x / (x + y)),
                            _ => None,
                        }
                    }
                    None if !f.contains(' ') => total(f)?,
                    None => None,
                };
                let Some(value) = value else {
                    out.push(no_data(unit, threshold));
                    continue;
                };
                let lower_is_better = direction.as_deref() == Some("lower-is-better");
                let margin = threshold.abs() * 0.05;
                let status = match lower_is_better {
                    false if value >= threshold => KpiStatus::Ok,
                    false if value >= threshold - margin => KpiStatus::Warning,
                    true if value <= threshold => KpiStatus::Ok,
                    true if value <= threshold + margin => KpiStatus::Warning,
                    _ => KpiStatus::Breach,
                };
                out.push(KpiValue {
                    name: String::from(k.name()),
                    value,
                    unit: String::from(unit),
                    threshold,
                    status,
                });
            }
            Ok(out)
        })
    }

    fn snapshot() -> Result<Vec<u8>, AgentError> {
        with(|a| Ok(a.learned.to_bytes(&a.q.snapshot())))
    }

    fn restore(bytes: Vec<u8>) -> Result<(), AgentError> {
        let restored = Learned::from_bytes(&bytes).map_err(AgentError::CorruptState)?;
        let q = QTable::restore(&restored.q_table)
            .map_err(|e| AgentError::CorruptState(format!("Q-table: {e:?}")))?;
        with(|a| {
            a.learned = restored.learned;
            a.q = q;
            Ok(())
        })
    }

    fn health() -> HealthReport {
        match STATE.0.borrow().as_ref() {
            Some(a) => HealthReport {
                status: HealthStatus::Healthy,
                detail: format!(
                    "{} answered {} queries, {} rewarded{}",
                    a.id,
                    a.learned.queries,
                    a.learned.feedback,
                    if a.learned.queries + a.learned.feedback < COLD_START { " (cold start)" } else { "" }
                ),
            },
            None => HealthReport { status: HealthStatus::Unhealthy, detail: String::from("not initialised") },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule [`Term::matches`] speeds up, written out plainly.
    fn plain(x: &str, y: &str) -> bool {
        x == y || (x.len().min(y.len()) >= 4 && (x.starts_with(y) || y.starts_with(x)))
    }

    #[test]
    fn term_matching_agrees_with_the_plain_rule() {
        let words = [
            "", "a", "ab", "abc", "abcd", "abcde", "abcdx", "abce", "mimo", "mimos", "mim", "sleep",
            "sleeping", "cell", "cells", "cel", "2", "20", "2000", "20000", "counter", "count", "countr",
        ];
        for x in words {
            for y in words {
                let (tx, ty) = (Term::new(x), Term::new(String::from(y)));
                assert_eq!(tx.matches(&ty), plain(x, y), "{x:?} vs {y:?}");
            }
            // Looked up among every word, among the words once more and
            // among every second or third of those (each left out some
            // time): as a scan by the plain rule finds.
            for step in [1, 2, 3] {
                let some: Vec<&str> = words.iter().chain(&words).copied().step_by(step).collect();
                let snippet = Terms::new(some.iter().map(|w| String::from(*w)).collect());
                assert_eq!(snippet.has(&Term::new(x)), some.iter().any(|w| plain(x, w)), "{x:?} in {some:?}");
            }
        }
        // Terms of the same head that do not match, before and after the
        // one that does.
        let terms = |w: &[&str]| Terms::new(w.iter().map(|w| String::from(*w)).collect());
        assert!(!terms(&["abcdx"]).has(&Term::new("abcde")));
        assert!(!terms(&["countr", "cou"]).has(&Term::new("counter")));
        assert!(terms(&["abcde", "abcdx", "abcdz"]).has(&Term::new("abcdx")));
        assert!(terms(&["countr", "counter", "counterx"]).has(&Term::new("counter")));
        assert!(!terms(&["countr", "counterx"]).has(&Term::new("counts")));
        let question: Vec<Term<&str>> = ["sleep", "mode", "x"].into_iter().map(Term::new).collect();
        assert_eq!(shared_terms(&question, &terms(&["sleeping", "x", "mod", "x", "sleep"])), 2);
        assert_eq!(shared_terms(&question, &terms(&["cell", "mo"])), 0);
    }
}
