//! Chooses the feature agent for a query.
//!
//! Strong signals first, in order: a FAJ code in the text (`FAJ 121 3094`,
//! `FAJ-121-3094`, `faj1213094`); the full name of a feature (longest wins);
//! a parameter or counter name a feature owns (`MoClass.attribute`, or the
//! bare attribute; shared names go to the owner most similar to the text);
//! a name the text's words and abbreviations cover (see `names`); an
//! acronym (ties broken by how many of the feature's name words the text
//! shares; none when another feature has the acronym as a name word and
//! shares more words with the text). Without any, the feature whose
//! profile (name, acronym and category) is most similar to the text: the
//! 32 nearest under the 128-d `elex-text` embedding of the text's profile
//! words and of the words its abbreviations stand for (question-kind words
//! such as "counters" left out; in the attached HNSW index, else an exact
//! scan), plus the features sharing a rare word with the text, reranked by
//! the mean of the cosine and a TF-IDF word match, plus lighter matches on
//! the words of the feature's parameter and counter names and on its
//! description beyond its name (the catalog's hand-written keywords, in
//! words no name has; see `Lexicon`).

use elex_host::types::{Candidate as RoutingCandidate, Peer, Relation};
use elex_host::{AgentConfig, Directory};

use crate::catalog::Catalog;

/// Why a feature was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The caller named the agent (`--agent`, `Runtime::ask`).
    Named,
    /// The text is like an example question of this agent: one an operator
    /// said it should have answered (`elex feedback --agent`), or one of a
    /// plugin's manifest; how alike, 0..1.
    Example(f32),
    /// The text has the feature's FAJ code, in any spelling [`faj_codes`]
    /// finds.
    FajCode,
    /// The text has the feature's full name as whole words, in any case
    /// (the longest name found wins).
    Name,
    /// Every significant word of the feature's name is in the text, as
    /// written or abbreviated (`UL CA`, `IF-LB`), in any order.
    CoveredName,
    /// The text has this parameter or counter name (`MoClass.attribute`, or
    /// a bare attribute of six characters or more) and the feature owns it;
    /// of several owners, the one most similar to the text.
    OwnedName(String),
    /// The text has this acronym of the feature as a word, exactly as
    /// written; of several features, the one sharing most name words with
    /// the text.
    Acronym(String),
    /// No strong signal: the feature most similar to the text, with this
    /// score: the mean of the embedding cosine and the profile's TF-IDF
    /// word match, plus the lighter parameter/counter-word and description
    /// matches (below 0 only for a text like nothing; at most about 2; see
    /// `Lexicon`).
    Similarity(f32),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Named => f.write_str("named by the caller"),
            Reason::Example(a) => write!(f, "like an example question of this agent ({a:.2})"),
            Reason::FajCode => f.write_str("FAJ code in the text"),
            Reason::Name => f.write_str("feature name in the text"),
            Reason::CoveredName => f.write_str("the feature name's words in the text"),
            Reason::OwnedName(n) => write!(f, "owns {n}"),
            Reason::Acronym(a) => write!(f, "acronym {a}"),
            Reason::Similarity(s) => write!(f, "text similarity {s:.2}"),
        }
    }
}

/// Finds FAJ codes written as `FAJ 121 3094`, `FAJ-121-3094` or
/// `faj1213094`, normalised to `FAJ 121 3094`.
pub fn faj_codes(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = lower[i..].find("faj") {
        let mut j = i + pos + 3;
        let mut digits = String::new();
        while j < bytes.len() && digits.len() < 7 {
            match bytes[j] {
                b'0'..=b'9' => digits.push(bytes[j] as char),
                b' ' | b'-' | b'_' if digits.is_empty() || digits.len() == 3 => {}
                _ => break,
            }
            j += 1;
        }
        let followed_by_digit = bytes.get(j).is_some_and(u8::is_ascii_digit);
        if digits.len() == 7 && !followed_by_digit {
            out.push(format!("FAJ {} {}", &digits[..3], &digits[3..]));
        }
        i += pos + 3;
    }
    out
}

/// A ranked candidate agent for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Index in the catalog.
    pub index: usize,
    /// How strongly its reason holds: 1.0 for a strong signal, else the
    /// similarity score ([`Reason::Similarity`]). In [`Router::route`],
    /// another feature with the first's strong signal has 0.75 of the
    /// first's score, a requires-peer of the first half of it; among the
    /// rivals of [`Router::choose_with_rivals`], one sharing an acronym or a
    /// parameter name has its embedding cosine. The list's order is the
    /// ranking; scores compare candidates of one reason.
    pub score: f32,
    /// Why it is a candidate, in words: the chosen agent's [`Reason`],
    /// `also …` for another feature with the same signal, `requires-peer
    /// of FAJ …`, or `text similarity …`.
    pub reason: String,
}

/// The router of one catalog, with every feature's profile embedding
/// computed once (name, acronym and category under `elex-text`'s 128-d
/// embedding), so a query costs one embedding and a scan of 593 rows.
pub struct Router {
    catalog: std::sync::Arc<Catalog>,
    profiles: Vec<[f32; elex_text::DIM]>,
    by_faj: HashMap<String, usize>,
    /// Feature names as normalised word sequences (see [`words_of`]), and
    /// the first words of each: `Some(i)` for feature `i`'s whole name,
    /// `None` for a beginning of a longer name only. A run of words not
    /// here begins no name, so a scan of the text stops extending it.
    by_name: HashMap<String, Option<usize>>,
    /// Owners of each parameter/counter name, and of each bare attribute
    /// of six characters or more.
    owners: HashMap<String, Vec<usize>>,
    bare_owners: HashMap<String, Vec<usize>>,
    by_acronym: HashMap<String, Vec<usize>>,
    /// The features whose name has each term.
    by_name_term: HashMap<String, Vec<usize>>,
    lexicon: Lexicon,
    /// The profile embeddings in an `hnsw` component instance, once
    /// attached; until then similarity is an exact scan.
    index: std::sync::OnceLock<std::sync::Mutex<elex_host::VectorIndex>>,
    /// For each feature, the features that require it.
    required_by: Vec<Vec<usize>>,
    /// Abbreviations and the significant words of each name.
    names: names::Names,
    /// Questions operators said a feature should have answered
    /// ([`Router::learn`]): each feature and the question's terms.
    examples: std::sync::RwLock<Vec<(usize, Vec<String>)>>,
}

/// A similarity candidate this close to the chosen one's score (relative)
/// is reported with the answer ([`Router::choose_with_rivals`]).
pub const CLOSE_MARGIN: f32 = 0.1;
/// Most close candidates reported with an answer.
pub const CLOSE_LIMIT: usize = 3;

/// How alike a question must be to an example question (the share of
/// their combined significant words both have) to go where the example
/// went, unless it names a feature (its full name, or every word of it).
pub const EXAMPLE_MATCH: f32 = 0.6;

/// How alike a question must be to an example question to go where the
/// example went even when it names another feature: the same question,
/// give or take a word.
pub const SAME_QUESTION: f32 = 0.9;

use std::collections::HashMap;

const STEM: usize = 5;

/// Words that name the kind of answer wanted (the question kinds agents
/// answer: what a feature is, its prerequisites, parameters, counters and
/// KPIs, when to enable it, how to troubleshoot it), as [`elex_text::terms`]
/// folds them: they say what is asked, not about which feature, so the
/// similarity stage ignores them (`Flexible Counters` is not what "which
/// counters show ..." is about).
const QUESTION_WORDS: &[&str] = &["counter", "enable", "kpi", "parameter", "prerequisite", "troubleshoot"];

/// Whether `t` is one letter (`b` of `eNodeB`): of the words an
/// abbreviation stands for, it says nothing about a feature, and the
/// similarity stage leaves it out (as rare, it would count for much).
fn one_letter(t: &str) -> bool {
    t.len() == 1 && t.as_bytes()[0].is_ascii_alphabetic()
}

/// What the similarity stage looks at in a text, computed once per query:
/// its terms (question words left out) and their embedding.
struct Query {
    terms: Vec<String>,
    embedding: [f32; elex_text::DIM],
    /// The text, for [`Query::described`].
    text: String,
    described: std::cell::OnceCell<Vec<String>>,
}

impl Query {
    /// What the description match looks at ([`described_terms`]), computed
    /// when first needed: most questions are routed by a strong signal.
    fn described(&self) -> &[String] {
        self.described.get_or_init(|| described_terms(&self.text))
    }
}

/// Similarity candidates reranked per query: the embedding's best this
/// many.
const POOL: usize = 32;

/// The profile terms of every feature with their inverse document
/// frequencies, for the lexical half of the similarity score: the cosine
/// of the query's and a profile's binary TF-IDF vectors, where a query term
/// matches a profile term with the same stem ([`names::stem`]). It
/// lets a word few features have (`vswr`, `ntp`) count for more than one
/// most have (`lte`, `nr`), which the hashed embedding cannot do.
///
/// A second, lighter match runs over the words of each feature's parameter
/// and counter names (`LagPort.lacpEnabled`: `lag port lacp enabled`): an
/// operator describing a behaviour often uses the word its managed objects
/// are named by (`LACP`, `IMEISV`, `duct`) rather than the feature's name.
///
/// A third match runs over what each feature is described by beyond its
/// name ([`Feature::about`](crate::catalog::Feature::about): the catalog's
/// hand-written keywords, `switch off LEDs`, `layer 2 encryption`, `SPID`;
/// a plugin's description and keywords are its profile instead, as it has
/// no other words): the words of those phrases, and
/// each two adjacent words as a pair, that no catalog feature's name,
/// acronym or category has ([`described`]). Operators describe a feature in
/// words its name lacks; the words names have are left to the profile match
/// (a question of `Energy Saving` words is not pulled to a feature
/// described by "energy saving"), and a pair (`layer~2`, `2~encrypt`)
/// counts a phrase for more than its words apart.
struct Lexicon {
    profile: TermIndex,
    detail: TermIndex,
    about: TermIndex,
}

/// Letters of a term a description is matched by (more than
/// [`names::stem`]'s five: `intermodulation` is not `inter`, `transmit` not
/// `transfer`).
const DESCRIBED_STEM: usize = 7;

/// The key a description term is matched by: its first [`DESCRIBED_STEM`]
/// letters after a common ending ([`names::stem_to`]); a pair as it is.
fn described_key(t: &str) -> &str {
    if t.contains('~') { t } else { names::stem_to(t, DESCRIBED_STEM) }
}

/// Each two adjacent `terms`, keyed and joined by `~` (`layer 2
/// encryption`: `layer~2`, `2~encrypt`).
fn pairs(terms: &[String]) -> impl Iterator<Item = String> + '_ {
    terms.windows(2).map(|w| format!("{}~{}", described_key(&w[0]), described_key(&w[1])))
}

/// The terms of `text` in lower case (`SCells`, `scells` and `SCELLS` are
/// all `scell`; as written, case splits words: `SCells` is `s` `cell`),
/// then their [`pairs`]: what the description match compares, in
/// descriptions, in names ([`NameWords`]) and in questions alike.
fn described_terms(text: &str) -> Vec<String> {
    let mut terms = elex_text::terms(&text.to_ascii_lowercase());
    let pairs: Vec<String> = pairs(&terms).collect();
    terms.extend(pairs);
    terms
}

/// English words that say nothing of a feature (beside
/// [`elex_text::STOPWORDS`]), as [`elex_text::terms`] gives them: a
/// description's `after` or `more` matching a question's would be chance.
/// Sorted.
const FUNCTION_WORDS: &[&str] = &[
    "after", "again", "all", "also", "because", "been", "before", "being", "both", "but", "cannot", "could",
    "did", "during", "each", "else", "even", "ever", "every", "few", "get", "got", "had", "has", "have",
    "having", "here", "into", "just", "less", "like", "many", "may", "might", "more", "most", "much", "must",
    "need", "never", "no", "not", "now", "once", "only", "other", "our", "out", "over", "own", "per", "same",
    "so", "some", "still", "such", "than", "their", "them", "then", "there", "these", "they", "thing",
    "those", "through", "too", "under", "until", "very", "via", "was", "were", "while", "will", "without",
    "won", "would", "yet", "your",
];

/// The words and adjacent pairs of the catalog features' names, acronyms
/// and categories in lower case (not plugins': loading one leaves the
/// features' descriptions as they were), under [`described_key`].
struct NameWords {
    terms: std::collections::HashSet<String>,
    pairs: std::collections::HashSet<String>,
}

impl NameWords {
    fn of(catalog: &Catalog) -> NameWords {
        let (mut terms, mut pairs) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for f in catalog.features.iter().filter(|f| !f.plugin) {
            let t = elex_text::terms(&profile(f).to_ascii_lowercase());
            pairs.extend(self::pairs(&t));
            terms.extend(t.iter().map(|t| described_key(t).to_string()));
        }
        NameWords { terms, pairs }
    }
}

/// What the description match of a feature looks at in its `about`
/// phrases, in lower case: their terms and [`pairs`] that say what no name
/// can. Left out: a [`FUNCTION_WORDS`] word, a single letter, a term some
/// name has, or an abbreviation of
/// such terms (`HO`, `SA`); a pair some name has, also when either word is
/// spelled out (`NR SA` is `NR standalone`, `UL CA` is `uplink carrier
/// aggregation`).
fn described(about: &[String], names_have: &NameWords, names: &names::Names) -> Vec<String> {
    let known = |t: &str| names_have.terms.contains(described_key(t));
    let named = |t: &str| {
        let meanings = names.meanings(t);
        FUNCTION_WORDS.binary_search(&t).is_ok()
            || one_letter(t)
            || known(t)
            || !meanings.is_empty() && meanings.iter().all(|m| elex_text::terms(m).iter().all(|w| known(w)))
    };
    // A word's spellings at the start and at the end of a pair: as
    // written, and the first (last) term of each of its meanings.
    let spellings = |t: &str| -> (Vec<String>, Vec<String>) {
        let mut firsts = vec![described_key(t).to_string()];
        let mut lasts = firsts.clone();
        for m in names.meanings(t) {
            let terms = elex_text::terms(m);
            if let (Some(a), Some(b)) = (terms.first(), terms.last()) {
                firsts.push(described_key(a).to_string());
                lasts.push(described_key(b).to_string());
            }
        }
        (firsts, lasts)
    };
    let mut out = Vec::new();
    for phrase in about {
        let terms = elex_text::terms(&phrase.to_ascii_lowercase());
        out.extend(terms.iter().filter(|t| !named(t)).cloned());
        for (w, pair) in terms.windows(2).zip(pairs(&terms)) {
            let (_, lasts) = spellings(&w[0]);
            let (firsts, _) = spellings(&w[1]);
            if !lasts.iter().any(|a| firsts.iter().any(|b| names_have.pairs.contains(&format!("{a}~{b}")))) {
                out.push(pair);
            }
        }
    }
    out
}

/// How much the parameter/counter-word match adds to a similarity score
/// (the embedding cosine and the profile match weigh 0.5 each).
const DETAIL_WEIGHT: f32 = 0.35;

/// How much the description match (words and pairs no name has) adds to a
/// similarity score. Chosen on the development half of the realistic set
/// and the generated set: at 0.8, development top-1 / top-5 0.950 / 0.987
/// and generated 0.902 / 0.978. From 0.7 to 1.2 development top-5 stays
/// 0.980–0.987 while generated top-1 slips from 0.903 to 0.900 as the
/// weight grows; at 0.6 and 0.5 fewer features are lifted into the top 5
/// (0.977, 0.973).
const ABOUT_WEIGHT: f32 = 0.8;

/// One set of terms per feature, with idf, norms and a stem index.
struct TermIndex {
    /// What a term is matched by: [`names::stem`], or [`described_key`].
    key: fn(&str) -> &str,
    idf: HashMap<String, f32>,
    norms: Vec<f32>,
    /// The features that have a term of each key (`key`).
    by_stem: HashMap<String, Vec<usize>>,
    /// The largest idf of the terms of each stem.
    stem_idf: HashMap<String, f32>,
    /// Each term's squared idf under its key, the key of the query terms
    /// it matches; with the feature that has it.
    /// Scoring a query adds these up per feature instead of comparing
    /// every term of every candidate with every query term.
    matches: HashMap<String, Vec<(u32, f32)>>,
}

/// A query term held by at most this many profiles brings those features
/// into the similarity pool even when the embedding does not.
const RARE: usize = 24;

/// The same for a description term or pair: most are rare (88 of the
/// ~4,000 are held by more than 8 features), and each brings its features
/// into the pool; 8 keeps the pool small and routes the development half
/// and the generated set as 24 does.
const RARE_DESCRIBED: usize = 8;

/// The words of a feature's parameter and counter names.
fn detail(f: &crate::catalog::Feature) -> String {
    f.parameters.iter().chain(&f.counters).map(String::as_str).collect::<Vec<_>>().join(" ")
}

impl TermIndex {
    /// The index of each text's [`elex_text::terms`], matched by stem.
    fn of(texts: impl Iterator<Item = String>) -> TermIndex {
        TermIndex::of_terms(texts.map(|text| elex_text::terms(&text)).collect(), names::stem)
    }

    /// The index of these terms per feature, matched by `key`.
    fn of_terms(mut terms: Vec<Vec<String>>, key: fn(&str) -> &str) -> TermIndex {
        for t in terms.iter_mut() {
            t.sort();
            t.dedup();
        }
        let mut df: HashMap<String, f32> = HashMap::new();
        terms.iter().flatten().for_each(|t| *df.entry(t.clone()).or_default() += 1.0);
        let n = terms.len() as f32;
        let idf: HashMap<String, f32> = df.into_iter().map(|(t, d)| (t, (1.0 + n / d).ln())).collect();
        let norms =
            terms.iter().map(|ts| ts.iter().map(|t| idf[t] * idf[t]).sum::<f32>().sqrt().max(1e-6)).collect();
        let mut by_stem: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, ts) in terms.iter().enumerate() {
            for t in ts {
                let list = by_stem.entry(key(t).to_string()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        let mut stem_idf: HashMap<String, f32> = HashMap::new();
        for (t, w) in idf.iter() {
            let e = stem_idf.entry(key(t).to_string()).or_default();
            *e = e.max(*w);
        }
        let mut matches: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
        for (i, ts) in terms.iter().enumerate() {
            for t in ts {
                matches.entry(key(t).to_string()).or_default().push((i as u32, idf[t] * idf[t]));
            }
        }
        TermIndex { key, idf, norms, by_stem, stem_idf, matches }
    }

    /// Features that have a term of `terms` (or of its stem) at most
    /// `rare` features have.
    fn rare_matches(&self, terms: &[String], rare: usize, out: &mut Vec<usize>) {
        out.extend(
            terms
                .iter()
                .filter_map(|q| self.by_stem.get((self.key)(q)))
                .filter(|list| list.len() <= rare)
                .flatten()
                .copied(),
        );
    }

    /// Whether some feature has the term `q` or a term of its stem.
    fn knows(&self, q: &str) -> bool {
        self.idf.contains_key(q) || self.stem_idf.contains_key((self.key)(q))
    }

    /// The idf of `q` (or of a term of its stem); 0 for a term no feature
    /// has.
    fn weight(&self, q: &str) -> f32 {
        self.idf.get(q).copied().unwrap_or_else(|| self.stem_idf.get((self.key)(q)).copied().unwrap_or(0.0))
    }

    /// Lexical similarity of each candidate to the query: the cosine of
    /// binary TF-IDF vectors (terms of one key counted together), 0 when
    /// nothing matches and 1 for the same terms.
    fn scores(&self, terms: &[String], candidates: &[usize]) -> Vec<f32> {
        let mut query = terms.to_vec();
        query.sort();
        query.dedup();
        // A query term's weight: its idf, or a stem-sharing term's.
        let q_norm = query.iter().map(|q| self.weight(q).powi(2)).sum::<f32>().sqrt();
        if q_norm == 0.0 {
            return vec![0.0; candidates.len()];
        }
        // A term matches a query term of the same stem: under each
        // distinct key below are the terms matched, each once.
        let mut keys: Vec<&str> = query.iter().map(|q| (self.key)(q)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut shared = vec![0.0f32; self.norms.len()];
        for key in keys {
            for &(i, w) in self.matches.get(key).into_iter().flatten() {
                shared[i as usize] += w;
            }
        }
        candidates.iter().map(|&i| shared[i] / (q_norm * self.norms[i])).collect()
    }
}

impl Lexicon {
    /// The lexicon of `catalog`, and its abbreviations (learned from the
    /// catalog and its vocabulary: see [`names::Names::of`]).
    fn with_names(catalog: &Catalog) -> (Lexicon, names::Names) {
        let profile = TermIndex::of(catalog.features.iter().map(profile));
        let detail = TermIndex::of(catalog.features.iter().map(detail));
        let vocabulary = profile.idf.keys().chain(detail.idf.keys()).cloned().collect();
        let names = names::Names::of(catalog, vocabulary);
        let names_have = NameWords::of(catalog);
        // A plugin's description is in its profile (it has no other words).
        let about = catalog
            .features
            .iter()
            .map(|f| if f.plugin { Vec::new() } else { described(&f.about, &names_have, &names) })
            .collect();
        (Lexicon { about: TermIndex::of_terms(about, described_key), detail, profile }, names)
    }

    /// Features that share a rare term (or its stem) with the query, in
    /// their profile or their parameter and counter names (held by at most
    /// [`RARE`] features), or in their description (a term or pair held
    /// by at most [`RARE_DESCRIBED`]).
    fn rare_matches(&self, q: &Query) -> Vec<usize> {
        let mut out = Vec::new();
        self.profile.rare_matches(&q.terms, RARE, &mut out);
        self.detail.rare_matches(&q.terms, RARE, &mut out);
        self.about.rare_matches(q.described(), RARE_DESCRIBED, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether some profile has the term `q` or a term of its stem.
    fn knows(&self, q: &str) -> bool {
        self.profile.knows(q)
    }

    /// The [`Query`] of `text`: its terms, then those of the words its
    /// abbreviations stand for ([`names::Names::expansions_in`]), without
    /// [`QUESTION_WORDS`]; and
    /// the embedding of those some profile has (or a term of their stem:
    /// `sleeping` for `sleep`), of all of them if none. An operator's
    /// question words ("which", "show", ...) are in no profile, and in a
    /// hashed embedding they would only add noise.
    fn query(&self, text: &str, names: &names::Names) -> Query {
        let mut terms = elex_text::terms(text);
        // The words its abbreviations stand for ("UL CoMP": uplink
        // coordinated multi point), after those written.
        for t in names.expansions_in(text) {
            // (Not a letter of one: `eNodeB` is `e` `node` `b`.)
            if !one_letter(&t) && !terms.contains(&t) {
                terms.push(t);
            }
        }
        terms.retain(|t| !QUESTION_WORDS.contains(&t.as_str()));
        let known: Vec<String> = terms.iter().filter(|t| self.knows(t)).cloned().collect();
        let embedding = elex_text::embed_terms(if known.is_empty() { &terms } else { &known });
        Query { terms, embedding, text: text.to_string(), described: std::cell::OnceCell::new() }
    }

    /// `pool` (feature, embedding cosine) reranked by the mean of the cosine
    /// and the profile match, plus [`DETAIL_WEIGHT`] times the parameter
    /// and counter-word match and [`ABOUT_WEIGHT`] times the description
    /// match; best first, lowest index on ties.
    fn rerank(&self, q: &Query, pool: Vec<(usize, f32)>) -> Vec<(usize, f32)> {
        let ids: Vec<usize> = pool.iter().map(|p| p.0).collect();
        let lexical = self.profile.scores(&q.terms, &ids);
        let detail = self.detail.scores(&q.terms, &ids);
        let about = self.about.scores(q.described(), &ids);
        let mut out: Vec<(usize, f32)> = pool
            .into_iter()
            .zip(lexical.into_iter().zip(detail).zip(about))
            .map(|((i, cos), ((lex, det), ab))| {
                (i, 0.5 * cos + 0.5 * lex + DETAIL_WEIGHT * det + ABOUT_WEIGHT * ab)
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// The words of `text` as written that may be a parameter or counter name
/// (`MoClass.attribute`, a bare attribute) or an acronym.
fn name_words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether an attribute name is matched bare (without its `MoClass.`):
/// six characters or more in two or more words (`sleepMode`,
/// `x2BlackList`). A one-word attribute (`unlock`, `priority`) is an
/// ordinary word of many questions about other features.
fn bare_attribute(attribute: &str) -> bool {
    attribute.len() >= 6 && elex_text::tokens(attribute).len() >= 2
}

/// Lower-case alphanumeric words of `text`, as the name index keys them.
fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

impl Router {
    /// The router of `catalog`: computes every feature's profile embedding
    /// and the FAJ code, name, parameter, counter and acronym indexes.
    /// Similarity is an exact scan until an index is attached
    /// ([`Router::attach_index`]).
    pub fn new(catalog: std::sync::Arc<Catalog>) -> Router {
        let profiles = catalog.features.iter().map(|f| elex_text::embed(&profile(f))).collect();
        let by_faj: HashMap<String, usize> =
            catalog.features.iter().enumerate().map(|(i, f)| (f.faj.clone(), i)).collect();
        let mut by_name: HashMap<String, Option<usize>> = HashMap::new();
        let mut owners: HashMap<String, Vec<usize>> = HashMap::new();
        let mut bare_owners: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_acronym: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_name_term: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in catalog.features.iter().enumerate() {
            for t in elex_text::terms(&f.name) {
                let list = by_name_term.entry(t).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
            let words = words_of(&f.name);
            for k in 1..words.len() {
                by_name.entry(words[..k].join(" ")).or_insert(None);
            }
            // A name two features share goes to the later one, as in `choose`.
            by_name.insert(words.join(" "), Some(i));
            for n in f.parameters.iter().chain(&f.counters) {
                let list = owners.entry(n.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
                if let Some(attr) = n.rsplit('.').next().filter(|a| bare_attribute(a) && n.contains('.')) {
                    let list = bare_owners.entry(attr.to_string()).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
            if let Some(a) = f.acronym.as_deref().filter(|a| a.len() >= 2) {
                by_acronym.entry(a.to_string()).or_default().push(i);
            }
        }
        let mut required_by = vec![Vec::new(); catalog.features.len()];
        for (i, f) in catalog.features.iter().enumerate() {
            for r in &f.requires {
                if let Some(&j) = by_faj.get(r) {
                    required_by[j].push(i);
                }
            }
        }
        let (lexicon, names) = Lexicon::with_names(&catalog);
        Router {
            examples: std::sync::RwLock::new(Vec::new()),
            names,
            required_by,
            lexicon,
            catalog,
            profiles,
            by_faj,
            by_name,
            owners,
            bare_owners,
            by_acronym,
            by_name_term,
            index: std::sync::OnceLock::new(),
        }
    }

    /// The profile embeddings, row-major (for building an
    /// [`VectorIndex`](elex_host::VectorIndex) with [`Host::vector_index`](elex_host::Host::vector_index)).
    pub fn profile_rows(&self) -> Vec<f32> {
        self.profiles.iter().flatten().copied().collect()
    }

    /// From now on, similarity over all agents is searched in `index` (an
    /// HNSW in an `hnsw` component instance). A second call is ignored.
    pub fn attach_index(&self, index: elex_host::VectorIndex) {
        let _ = self.index.set(std::sync::Mutex::new(index));
    }

    /// Whether similarity runs in an attached HNSW component.
    pub fn has_index(&self) -> bool {
        self.index.get().is_some()
    }

    /// Cosine similarity of `q` and agent `i`'s profile (both unit length).
    fn similarity(&self, q: &[f32; elex_text::DIM], i: usize) -> f32 {
        q.iter().zip(self.profiles[i].iter()).map(|(a, b)| a * b).sum()
    }

    /// The `k` agents most similar to `q`, best first: from the attached
    /// index, else (or if it fails) an exact scan.
    fn nearest(&self, q: &[f32; elex_text::DIM], k: usize) -> Vec<(usize, f32)> {
        if let Some(index) = self.index.get() {
            let found = index.lock().map_err(|_| ()).and_then(|mut i| i.search(q, k).map_err(|_| ()));
            match found {
                Ok(hits) if hits.iter().all(|h| h.0 < self.profiles.len()) => return hits,
                Ok(_) => tracing::warn!("the agent index gave an unknown agent; routing by exact scan"),
                Err(()) => tracing::warn!("the agent index failed; routing by exact scan"),
            }
        }
        let mut sims: Vec<(usize, f32)> =
            (0..self.profiles.len()).map(|i| (i, self.similarity(q, i))).collect();
        sims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        sims.truncate(k);
        sims
    }

    /// The `k` agents most similar to the query, best first: the
    /// embedding's nearest [`POOL`] and the features sharing a rare word
    /// with it, reranked with the lexical similarity (see [`Lexicon`]).
    fn similar(&self, q: &Query, k: usize) -> Vec<(usize, f32)> {
        let mut pooled = vec![false; self.profiles.len()];
        let mut pool: Vec<(usize, f32)> = self
            .nearest(&q.embedding, POOL.max(k))
            .into_iter()
            .filter(|&(i, _)| !std::mem::replace(&mut pooled[i], true))
            .collect();
        for i in self.lexicon.rare_matches(q) {
            if !std::mem::replace(&mut pooled[i], true) {
                pool.push((i, self.similarity(&q.embedding, i)));
            }
        }
        let mut ranked = self.lexicon.rerank(q, pool);
        ranked.truncate(k);
        ranked
    }

    /// The catalog it routes over; a candidate's `index` is a position in
    /// its features.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog, shared.
    pub fn catalog_arc(&self) -> &std::sync::Arc<Catalog> {
        &self.catalog
    }

    /// The catalog index of a FAJ code.
    pub fn index_of(&self, faj: &str) -> Option<usize> {
        self.by_faj.get(faj).copied()
    }

    /// The agent for `text` and why (see the module docs): the same
    /// signals as the reference scan in the tests, looked up in indexes.
    pub fn choose(&self, text: &str) -> Option<(usize, Reason)> {
        let query = std::cell::OnceCell::new();
        self.strong_signal(text, &query).or_else(|| {
            let q = query.get_or_init(|| self.lexicon.query(text, &self.names));
            self.similar(q, 1).first().map(|&(i, s)| (i, Reason::Similarity(s)))
        })
    }

    /// The other features with the same strong signal as `first` (`reason`:
    /// a parameter or counter name, an acronym they share), most similar to
    /// the query embedding `q` first.
    fn sharing(&self, first: usize, reason: &Reason, q: &[f32; elex_text::DIM]) -> Vec<(usize, f32)> {
        let shared: Vec<usize> = match reason {
            Reason::OwnedName(w) => self
                .owners
                .get(w.as_str())
                .or_else(|| self.bare_owners.get(w.as_str()))
                .cloned()
                .unwrap_or_default(),
            Reason::Acronym(a) => self.by_acronym.get(a.as_str()).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut shared: Vec<(usize, f32)> =
            shared.into_iter().filter(|&i| i != first).map(|i| (i, self.similarity(q, i))).collect();
        shared.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        shared
    }

    /// [`Router::choose`], with the features nearly as likely to be what
    /// `text` is about, best first, at most [`CLOSE_LIMIT`], from the same
    /// routing pass: for a choice by similarity, those within
    /// [`CLOSE_MARGIN`] of its score; for an acronym or a parameter/counter
    /// name, the other features that have it. No rivals when the choice is
    /// clear (a FAJ code, a full or covered name, an example question, or
    /// a clear similarity lead).
    pub fn choose_with_rivals(&self, text: &str) -> Option<(usize, Reason, Vec<Candidate>)> {
        let query = std::cell::OnceCell::new();
        let rival = |(index, score, reason): (usize, f32, String)| Candidate { index, score, reason };
        if let Some((chosen, reason)) = self.strong_signal(text, &query) {
            let rivals = match &reason {
                Reason::Acronym(_) | Reason::OwnedName(_) => {
                    let q = query.get_or_init(|| self.lexicon.query(text, &self.names));
                    self.sharing(chosen, &reason, &q.embedding)
                        .into_iter()
                        .take(CLOSE_LIMIT)
                        .map(|(i, s)| rival((i, s, format!("also {reason}"))))
                        .collect()
                }
                _ => Vec::new(),
            };
            return Some((chosen, reason, rivals));
        }
        let q = query.get_or_init(|| self.lexicon.query(text, &self.names));
        let ranked = self.similar(q, CLOSE_LIMIT + 1);
        let &(chosen, best) = ranked.first()?;
        let rivals = ranked[1..]
            .iter()
            .filter(|&&(_, s)| s >= best * (1.0 - CLOSE_MARGIN))
            .map(|&(i, s)| rival((i, s, format!("text similarity {s:.2}"))))
            .collect();
        Some((chosen, Reason::Similarity(best), rivals))
    }

    /// Keeps `text` as a question feature `i` should answer, and learns
    /// the abbreviations of the feature's name words it uses (`mMIMO`,
    /// `HPUE`; see `names.rs`) for every question: a later
    /// question whose significant words (abbreviations expanded) are at
    /// least [`EXAMPLE_MATCH`] the same goes to `i`, before any signal but
    /// a FAJ code or a feature's name ([`SAME_QUESTION`] alike: before a
    /// name too). A feature keeps its latest [`MAX_EXAMPLES_PER_AGENT`](elex_host::snapshots::MAX_EXAMPLES_PER_AGENT)).
    pub fn learn(&self, text: &str, i: usize) {
        if i >= self.catalog.features.len() {
            return;
        }
        // Its abbreviations of the feature's name words, for every
        // question from now on.
        let known = |w: &str| self.lexicon.knows(w) || elex_text::terms(w).is_empty();
        for (abbreviation, words) in self.names.learn_from(text, &self.catalog.features[i].name, known) {
            tracing::info!(abbreviation, words, "learned an abbreviation from a correction");
        }
        self.add_example(text, i);
    }

    /// Keeps `text` as an example question of agent `i` (a later question
    /// at least [`EXAMPLE_MATCH`] like it goes to `i`), without learning
    /// abbreviations from it: for a plugin's manifest examples, which an
    /// author wrote, not an operator (whose corrections, through
    /// [`Router::learn`], may teach abbreviations for every question).
    pub fn add_example(&self, text: &str, i: usize) {
        if i >= self.catalog.features.len() {
            return;
        }
        let mut terms = self.names.expanded_terms(text);
        terms.retain(|t| !QUESTION_WORDS.contains(&t.as_str()));
        if terms.is_empty() {
            return;
        }
        let mut examples = self.examples.write().unwrap_or_else(|p| p.into_inner());
        // The same question said to be another feature's: this one
        // supersedes it.
        examples.retain(|(f, t)| *f == i || *t != terms);
        // A feature keeps its latest examples, as the database does.
        let limit = elex_host::snapshots::MAX_EXAMPLES_PER_AGENT;
        if examples.iter().filter(|(f, _)| *f == i).count() >= limit
            && let Some(oldest) = examples.iter().position(|(f, _)| *f == i)
        {
            examples.remove(oldest);
        }
        examples.push((i, terms));
    }

    /// The feature of the operator example most like `text`, and how alike
    /// (at least [`EXAMPLE_MATCH`]).
    fn example(&self, text: &str) -> Option<(usize, f32)> {
        let examples = self.examples.read().unwrap_or_else(|p| p.into_inner());
        if examples.is_empty() {
            return None;
        }
        let mut terms = self.names.expanded_terms(text);
        terms.retain(|t| !QUESTION_WORDS.contains(&t.as_str()));
        examples
            .iter()
            .map(|(i, ex)| {
                let shared = ex.iter().filter(|e| terms.contains(e)).count();
                let union = ex.len() + terms.len() - shared;
                (*i, shared as f32 / union.max(1) as f32)
            })
            .filter(|&(_, alike)| alike >= EXAMPLE_MATCH)
            // The most alike; the latest example on ties.
            .fold(None, |best: Option<(usize, f32)>, (i, a)| match best {
                Some((_, b)) if b > a => best,
                _ => Some((i, a)),
            })
    }

    /// A FAJ code, or a feature named (see [`Router::named`]) — in the
    /// subject of a comparison first, else anywhere in `text` (the query is
    /// computed only if candidates need disambiguating).
    fn strong_signal(&self, text: &str, query: &std::cell::OnceCell<Query>) -> Option<(usize, Reason)> {
        for code in faj_codes(text) {
            if let Some(&i) = self.by_faj.get(&code) {
                return Some((i, Reason::FajCode));
            }
        }
        let example = self.example(text);
        if let Some((i, alike)) = example.filter(|&(_, alike)| alike >= SAME_QUESTION) {
            return Some((i, Reason::Example(alike)));
        }
        let named = names::comparison_subject(text)
            .and_then(|subject| self.named(subject, text, query))
            .or_else(|| self.named(text, text, query));
        match (named, example) {
            // A feature's name in the text outweighs a question merely like
            // an example ("EPS Fallback for IMS Voice … instead of VoNR" is
            // not about Voice over NR because a question about VoNR was).
            (Some(hit @ (_, Reason::Name | Reason::CoveredName)), _) => Some(hit),
            (_, Some((i, alike))) => Some((i, Reason::Example(alike))),
            (named, None) => named,
        }
    }

    /// The feature `part` of `text` names: by its name as written (the
    /// longest), unless the words and abbreviations of `part` cover a
    /// longer name, or all but one word of a longer name that contains it
    /// (then the name as written is just a word of the other: no signal
    /// from it); else by a parameter or counter it owns; else by a name
    /// `part` covers; else by its acronym. Ties go to the feature most
    /// similar to the whole `text`.
    fn named(&self, part: &str, text: &str, query: &std::cell::OnceCell<Query>) -> Option<(usize, Reason)> {
        let features = &self.catalog.features;
        let embedding = || &query.get_or_init(|| self.lexicon.query(text, &self.names)).embedding;
        // The longest feature name in the text, on word boundaries.
        let words = words_of(part);
        let mut best: Option<usize> = None;
        let mut run = String::new();
        for start in 0..words.len() {
            run.clear();
            for word in &words[start..] {
                if !run.is_empty() {
                    run.push(' ');
                }
                run.push_str(word);
                let Some(&named) = self.by_name.get(run.as_str()) else { break };
                if let Some(i) = named {
                    let better = best.is_none_or(|b| {
                        let (lb, li) = (features[b].name.len(), features[i].name.len());
                        li > lb || (li == lb && i > b)
                    });
                    if better {
                        best = Some(i);
                    }
                }
            }
        }
        let (covered, nearly) = self.names.coverage(&self.names.expanded_terms(part));
        let covered_size = covered.first().map_or(0, |&i| self.names.size(i));
        let pick_covered = || {
            self.most_similar(embedding(), &mut covered.iter().copied())
                .map(|(i, _)| (i, Reason::CoveredName))
        };
        if let Some(i) = best {
            // A longer name the text covers wins, unless naming `i` is
            // what covers it.
            if covered_size > self.names.size(i)
                && !covered.iter().all(|&c| self.names.within(c, &features[i].name))
            {
                return pick_covered();
            }
            // A longer name containing it, all but one of whose words the
            // text has, makes the shorter name a mere word of it: no
            // signal.
            let longer = nearly.iter().any(|&c| {
                c != i && self.names.size(c) > self.names.size(i) + 1 && self.names.within_name_of(i, c)
            });
            if !longer {
                return Some((i, Reason::Name));
            }
        }
        let raw_words = name_words(part);
        for w in &raw_words {
            let owners = match self.owners.get(*w) {
                Some(o) => Some(o),
                None if !w.contains('.') && bare_attribute(w) => self.bare_owners.get(*w),
                None => None,
            };
            if let Some(owners) = owners
                && let Some((i, _)) = self.most_similar(embedding(), &mut owners.iter().copied())
            {
                return Some((i, Reason::OwnedName((*w).to_string())));
            }
        }
        if !covered.is_empty() {
            return pick_covered();
        }
        // Words shared with `part`: the subject of a comparison, not what
        // it is compared with.
        let text_tokens = elex_text::tokens(part);
        let shared = |i: usize| {
            elex_text::tokens(&features[i].name).iter().filter(|t| text_tokens.contains(t)).count()
        };
        let &i = raw_words
            .iter()
            .filter_map(|w| self.by_acronym.get(*w))
            .flatten()
            .max_by_key(|&&i| (shared(i), std::cmp::Reverse(i)))?;
        let acronym = features[i].acronym.clone().unwrap_or_default();
        // An acronym that is also a word of other features' names ("CRS"
        // of Cascaded RET Support, and of Network-Assisted CRS
        // Interference Cancellation) names its feature (counting as one
        // more shared word) unless one of those shares more words with the
        // text: then no feature is named, and similarity decides. (Words
        // here are terms: no stopwords.)
        let text_terms = elex_text::terms_of(text_tokens.clone());
        let shared_terms =
            |j: usize| elex_text::terms(&features[j].name).iter().filter(|t| text_terms.contains(t)).count();
        let owner_shared = shared_terms(i) + 1;
        if let [term] = elex_text::terms(&acronym).as_slice() {
            let as_word = self.by_name_term.get(term).into_iter().flatten();
            if as_word
                .filter(|&&j| features[j].acronym.as_deref() != Some(&acronym))
                .any(|&j| shared_terms(j) > owner_shared)
            {
                return None;
            }
        }
        Some((i, Reason::Acronym(acronym)))
    }

    fn most_similar(
        &self,
        q: &[f32; elex_text::DIM],
        candidates: &mut dyn Iterator<Item = usize>,
    ) -> Option<(usize, f32)> {
        candidates.map(|i| (i, self.similarity(q, i))).max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    }

    /// The `limit` features whose profile is most like `text`, best first,
    /// with their similarity: what a clarification offers when the choice
    /// by similarity is close ([`Router::choose_with_rivals`]).
    pub fn most_like(&self, text: &str, limit: usize) -> Vec<Candidate> {
        let q = self.lexicon.query(text, &self.names);
        self.similar(&q, limit)
            .into_iter()
            .map(|(index, s)| Candidate { index, score: s, reason: format!("text similarity {s:.2}") })
            .collect()
    }

    /// Up to `limit` candidates, best first: the chosen agent, then the
    /// most similar others, then dependency peers (requires) of the chosen
    /// one.
    pub fn route(&self, text: &str, limit: usize) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        let query = std::cell::OnceCell::new();
        let strong = self.strong_signal(text, &query);
        let q = query.get_or_init(|| self.lexicon.query(text, &self.names));
        let sims = self.similar(q, limit + 8);
        let Some((first, reason)) = strong.or_else(|| sims.first().map(|&(i, s)| (i, Reason::Similarity(s))))
        else {
            return out;
        };
        // 1.0 for a strong signal.
        let first_score = if let Reason::Similarity(s) = reason { s } else { 1.0 };
        let q = &q.embedding;
        out.push(Candidate { index: first, score: first_score, reason: reason.to_string() });
        // Other features with the same strong signal (a shared parameter or
        // counter name, a shared acronym), most similar first.
        for (i, _) in self.sharing(first, &reason, q).into_iter().take(limit.saturating_sub(2)) {
            out.push(Candidate { index: i, score: first_score * 0.75, reason: format!("also {reason}") });
        }
        for code in &self.catalog.features[first].requires {
            if out.len() >= limit {
                break;
            }
            if let Some(i) = self.index_of(code).filter(|i| out.iter().all(|c| c.index != *i)) {
                out.push(Candidate {
                    index: i,
                    score: first_score * 0.5,
                    reason: format!("requires-peer of {}", self.catalog.features[first].faj),
                });
            }
        }
        for (i, s) in sims {
            if out.len() >= limit {
                break;
            }
            if out.iter().all(|c| c.index != i) {
                out.push(Candidate { index: i, score: s, reason: format!("text similarity {s:.2}") });
            }
        }
        out.truncate(limit);
        out
    }
}

/// The router is the directory of the swarm of feature agents: agent `i` is
/// feature `i`, its id the FAJ code; guests' `route` calls get
/// [`Router::route`], their `peers` the catalog's relations.
impl Directory for Router {
    fn len(&self) -> usize {
        self.catalog.features.len()
    }

    fn config(&self, i: usize) -> Option<AgentConfig> {
        self.catalog.features.get(i).map(|f| f.agent_config())
    }

    fn agent_id(&self, i: usize) -> Option<String> {
        self.catalog.features.get(i).map(|f| f.faj.clone())
    }

    fn index_of(&self, agent_id: &str) -> Option<usize> {
        Router::index_of(self, agent_id)
    }

    fn route(&self, query: &str, limit: usize) -> Option<Vec<RoutingCandidate>> {
        let features = &self.catalog.features;
        Some(
            Router::route(self, query, limit)
                .into_iter()
                .map(|c| RoutingCandidate {
                    agent_id: features[c.index].faj.clone(),
                    score: c.score,
                    reason: c.reason,
                })
                .collect(),
        )
    }

    fn peers(&self, i: usize) -> Vec<Peer> {
        let features = &self.catalog.features;
        let Some(f) = features.get(i) else { return Vec::new() };
        let known = |codes: &[String], relation: Relation| -> Vec<Peer> {
            codes
                .iter()
                .filter(|c| self.by_faj.contains_key(c.as_str()))
                .map(|c| Peer { agent_id: c.clone(), relation })
                .collect()
        };
        let mut out = known(&f.requires, Relation::Requires);
        out.extend(
            self.required_by[i]
                .iter()
                .map(|&j| Peer { agent_id: features[j].faj.clone(), relation: Relation::RequiredBy }),
        );
        out.extend(known(&f.conflicts, Relation::Conflicts));
        out.extend(known(&f.related, Relation::Enhances));
        out
    }
}

fn profile(f: &crate::catalog::Feature) -> String {
    format!(
        "{} {} {} {}",
        f.name,
        f.acronym.as_deref().unwrap_or(""),
        f.category.as_deref().unwrap_or(""),
        if f.plugin { f.about.join(" ") } else { String::new() }
    )
}

mod names;
#[cfg(test)]
mod tests;
