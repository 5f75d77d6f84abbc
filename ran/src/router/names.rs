//! How operators name features when they do not write the catalog's name:
//! abbreviations of its words (`UL CA` for uplink carrier aggregation,
//! `IF-LB`, `NR-MDT`), its words in another order or with others between
//! them, and comparisons whose subject is the first feature named.
//!
//! [`Names`] expands the abbreviations of a text into the words they stand
//! for — learned from the catalog (a feature's acronym that no other
//! feature has stands for its name; an acronym whose letters are the
//! initials of its name's words lends every run of two or more of its
//! letters to the words they start: `UFSS` teaches `FSS`) plus the standard
//! RAN abbreviations of [`STANDARD`]; a word written as one compound of
//! them and name words (`ULCoMP`, `NRCA`) is taken apart — and finds the
//! feature whose whole name the expanded words cover, the most specific
//! (most name words) first.

use std::collections::HashMap;

use super::STEM;
use crate::catalog::Catalog;

/// Standard RAN abbreviations operators write for words of feature names.
const STANDARD: &[(&str, &str)] = &[
    ("ul", "uplink"),
    ("dl", "downlink"),
    ("ca", "carrier aggregation"),
    ("ho", "handover"),
    ("lb", "load balancing"),
    ("la", "link adaptation"),
    ("mu", "multi user"),
    ("su", "single user"),
    ("mmimo", "massive mimo"),
    ("dc", "dual connectivity"),
    ("sa", "standalone"),
    ("nsa", "non standalone"),
    ("comp", "coordinated multi point"),
    ("if", "inter frequency"),
    ("irat", "inter rat"),
    ("ext", "extension"),
    ("adv", "advanced"),
    ("bw", "bandwidth"),
    // 3GPP and RAN terms of art.
    ("enb", "eNodeB"),
    ("gnb", "gNodeB"),
    ("sdl", "supplemental downlink"),
    ("sul", "supplementary uplink"),
    ("hpue", "high power ue"),
    ("uac", "unified access control"),
    ("ecid", "enhanced cell id"),
    ("rrm", "radio resource management"),
    ("son", "self organizing network"),
    ("mdt", "minimization drive test"),
    ("anr", "automated neighbor relation"),
    ("bb", "baseband"),
    ("sw", "software"),
    ("hw", "hardware"),
    ("meas", "measurement"),
    ("pc", "power control"),
    ("rab", "radio access bearer"),
    ("erab", "radio access bearer"),
    ("csfb", "cs fallback"),
];

/// Longest word that may be learned as an abbreviation.
const MAX_ABBREVIATION: usize = 16;

/// Abbreviations that are also common English words: expanded only when
/// written in capitals (`IF-LB`, not "what if").
const WORDS: &[&str] =
    &["if", "la", "do", "as", "at", "be", "in", "is", "it", "no", "on", "or", "so", "to", "up"];

/// Name words that say little about which feature is meant: a name is
/// covered without them ("NR Massive MIMO Sleep Mode" by "NR mMIMO sleep").
const GENERIC: &[&str] = &["feature", "function", "handling", "mode", "package", "performance", "support"];

/// Fewest significant name words a covered name must have: a name of one
/// or two words ("Scheduler", "Carrier Aggregation") is covered by chance
/// by the words of many questions about other features.
const MIN_COVERED: usize = 3;

/// Shortest acronym that stands for its feature's name in other words: two
/// letters (`PM`, `BT`, `TO`) are common abbreviations of other things.
const MIN_ACRONYM: usize = 3;

/// Whether two terms match, here and in the similarity stage: the same
/// [`stem`] (`aggregated` covers `aggregation`, `queuing` covers `queue`).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a == b || stem(a) == stem(b)
}

/// A term's first [`STEM`] letters (all of a shorter one), after an `-ing`
/// or `-ed` ending (leaving four letters or more) or a final `e` (of five
/// letters or more) is dropped: `queuing`, `queued` and `queue` are `queu`,
/// `scheduling` and `schedule` `sched`; `rate` stays `rate`.
pub(crate) fn stem(t: &str) -> &str {
    stem_to(t, STEM)
}

/// [`stem`] to `letters` letters instead of [`STEM`]. (A term is ASCII:
/// [`elex_text::terms`] splits on everything else.)
pub(crate) fn stem_to(t: &str, letters: usize) -> &str {
    let base = ["ing", "ed"]
        .iter()
        .find_map(|end| t.strip_suffix(end).filter(|b| b.len() >= 4))
        .or_else(|| t.strip_suffix('e').filter(|_| t.len() >= 5))
        .unwrap_or(t);
    &base[..base.len().min(letters)]
}

/// The significant terms of a feature name: its [`elex_text::terms`]
/// without [`GENERIC`] words.
pub(crate) fn name_terms(name: &str) -> Vec<String> {
    let mut t = elex_text::terms(name);
    t.retain(|w| !GENERIC.contains(&w.as_str()));
    t.sort();
    t.dedup();
    t
}

/// The abbreviations of a catalog and the significant words of its names.
pub(crate) struct Names {
    /// Lower-case abbreviation → the words it may stand for.
    expansions: HashMap<String, Vec<String>>,
    /// Abbreviations learned from operators' corrections
    /// ([`Names::learn_from`]), the same way.
    learned: std::sync::RwLock<HashMap<String, Vec<String>>>,
    /// Each feature's significant name terms.
    terms: Vec<Vec<String>>,
    /// Stem ([`stem`]) → features whose name has a term of it.
    by_stem: HashMap<String, Vec<usize>>,
    /// How many different stems each feature's significant name terms have.
    stems: Vec<usize>,
    /// Every term of the catalog's profiles and parameter and counter
    /// names: a word among them is never taken apart.
    vocabulary: std::collections::HashSet<String>,
    /// Each feature's name terms with those of its abbreviations
    /// ([`Names::expanded_terms`] of the name).
    name_expanded: Vec<Vec<String>>,
    /// The pieces a run-together compound may be made of: abbreviations,
    /// significant name terms of three letters or more, and common ones of
    /// two ([`COMMON_SHORT`]).
    pieces: std::collections::HashSet<String>,
}

/// Longest run-together compound taken apart (`ULCoMP`, `IFLB`).
const MAX_COMPOUND: usize = 24;

/// Fewest names a two-letter name word must be in to be a piece of a
/// compound.
const COMMON_SHORT: usize = 10;

impl Names {
    /// Learns the abbreviations of `catalog` (see the module docs);
    /// `vocabulary` is every term of its profiles and parameter and counter
    /// names (see [`super::Lexicon::with_names`]).
    pub(crate) fn of(catalog: &Catalog, vocabulary: std::collections::HashSet<String>) -> Names {
        let mut expansions: HashMap<String, Vec<String>> = HashMap::new();
        let mut add = |abbreviation: String, words: &str| {
            let list = expansions.entry(abbreviation).or_default();
            if !list.iter().any(|w| w == words) {
                list.push(words.to_string());
            }
        };
        for (a, words) in STANDARD {
            add(a.to_string(), words);
        }
        let mut acronym_count: HashMap<String, usize> = HashMap::new();
        for f in &catalog.features {
            if let Some(a) = &f.acronym {
                *acronym_count.entry(a.to_ascii_lowercase()).or_default() += 1;
            }
        }
        // Runs of letters of aligned acronyms, and what each stands for:
        // kept only when every acronym that has the run agrees.
        let mut runs: HashMap<String, Option<String>> = HashMap::new();
        for f in &catalog.features {
            let Some(acronym) = &f.acronym else { continue };
            let lower = acronym.to_ascii_lowercase();
            let compact: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
            if compact.len() >= MIN_ACRONYM && acronym_count[&lower] == 1 {
                add(compact.clone(), &f.name.to_ascii_lowercase());
            }
            let words: Vec<String> = elex_text::tokens(&f.name)
                .into_iter()
                .filter(|w| !w.bytes().all(|b| b.is_ascii_digit()))
                .collect();
            let letters: Vec<char> = compact.chars().filter(char::is_ascii_alphabetic).collect();
            let aligned = letters.len() == words.len()
                && letters.len() >= 3
                && letters.iter().zip(&words).all(|(l, w)| w.starts_with(*l));
            if !aligned {
                continue;
            }
            for start in 0..letters.len() {
                // Runs of two or more letters, short of the whole acronym.
                for end in (start + 2..=letters.len()).filter(|&end| end - start < letters.len()) {
                    let run: String = letters[start..end].iter().collect();
                    let stands = words[start..end].join(" ");
                    runs.entry(run)
                        .and_modify(|s| {
                            if s.as_deref() != Some(stands.as_str()) {
                                *s = None;
                            }
                        })
                        .or_insert(Some(stands));
                }
            }
        }
        // A standard abbreviation keeps its meaning: `ENB` in `LENBS`
        // (LTE Extended N77 Band Support) does not make "eNB" an extended
        // band.
        for (run, stands) in runs {
            if let Some(words) = stands
                && !STANDARD.iter().any(|(a, _)| *a == run)
            {
                add(run, &words);
            }
        }
        let terms: Vec<Vec<String>> = catalog.features.iter().map(|f| name_terms(&f.name)).collect();
        let mut by_stem: HashMap<String, Vec<usize>> = HashMap::new();
        let mut stems = vec![0; terms.len()];
        for (i, ts) in terms.iter().enumerate() {
            for t in ts {
                let list = by_stem.entry(stem(t).to_string()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                    stems[i] += 1;
                }
            }
        }
        // Two-letter name words are pieces only when common (`nr`, `ue`):
        // most are fragments of other things (`pa`, `en`).
        let common = |t: &str| by_stem.get(t).is_some_and(|fs| fs.len() >= COMMON_SHORT);
        let pieces = expansions
            .keys()
            .cloned()
            .chain(terms.iter().flatten().filter(|t| t.len() >= 3 || (t.len() == 2 && common(t))).cloned())
            .collect();
        let mut names = Names {
            expansions,
            learned: Default::default(),
            terms,
            by_stem,
            stems,
            vocabulary,
            pieces,
            name_expanded: Vec::new(),
        };
        names.name_expanded = catalog.features.iter().map(|f| names.expanded_terms(&f.name)).collect();
        names
    }

    /// What the abbreviation `word` (in lower case) may stand for, from the
    /// catalog and the standard table (none for another word).
    pub(crate) fn meanings(&self, word: &str) -> &[String] {
        self.expansions.get(word).map_or(&[], Vec::as_slice)
    }

    /// The terms of `text` with the words of every abbreviation in it added
    /// (a hyphenated compound is also looked up whole: `MC-PUSCH`).
    pub(crate) fn expanded_terms(&self, text: &str) -> Vec<String> {
        let mut out = elex_text::terms(text);
        out.extend(self.expansions_in(text));
        out.sort();
        out.dedup();
        out
    }

    /// The terms of the words the abbreviations in `text` stand for, in
    /// the order they are written.
    pub(crate) fn expansions_in(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let compounds = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.contains('-'))
            .map(|w| w.replace('-', ""));
        let words = text.split(|c: char| !c.is_ascii_alphanumeric()).map(str::to_string).chain(compounds);
        let learned = self.learned.read().unwrap_or_else(|p| p.into_inner());
        let expand = |lower: &str, out: &mut Vec<String>| {
            let lists = self.expansions.get(lower).into_iter().chain(learned.get(lower));
            let mut any = false;
            for words in lists.flatten() {
                out.extend(elex_text::terms(words));
                any = true;
            }
            any
        };
        for word in words.filter(|w| w.len() >= 2) {
            let lower = word.to_ascii_lowercase();
            if WORDS.contains(&lower.as_str()) && !word.bytes().all(|b| b.is_ascii_uppercase()) {
                continue;
            }
            if expand(&lower, &mut out) || self.vocabulary.contains(&lower) {
                continue;
            }
            // A run-together compound of abbreviations and name words,
            // written as one (`ULCoMP`, `NRCA`: a capital or digit first, a
            // letter in it): each piece as if written apart.
            let first = word.as_bytes()[0];
            if !(first.is_ascii_uppercase() || first.is_ascii_digit())
                || !word.bytes().any(|b| b.is_ascii_alphabetic())
            {
                continue;
            }
            for piece in self.compound(&lower) {
                if !expand(piece, &mut out) {
                    out.push(piece.to_string());
                }
            }
        }
        out
    }

    /// The fewest pieces (two or more; see [`Names::pieces`]) that spell
    /// `word` end to end, the longest first piece on ties; none if no such
    /// spelling exists.
    fn compound<'w>(&self, word: &'w str) -> Vec<&'w str> {
        let n = word.len();
        if !(4..=MAX_COMPOUND).contains(&n) || !word.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Vec::new();
        }
        // best[i]: fewest pieces spelling word[i..], and the first piece's end.
        let mut best: Vec<Option<(usize, usize)>> = vec![None; n + 1];
        best[n] = Some((0, n));
        for i in (0..n).rev() {
            for end in (i + 2..=n).rev() {
                if let Some((count, _)) = best[end]
                    && self.pieces.contains(&word[i..end])
                    && best[i].is_none_or(|(c, _)| count + 1 < c)
                {
                    best[i] = Some((count + 1, end));
                }
            }
        }
        match best[0] {
            Some((count, _)) if count >= 2 => {
                let mut out = Vec::with_capacity(count);
                let mut i = 0;
                while i < n {
                    let (_, end) = best[i].expect("a spelling continues to the end");
                    out.push(&word[i..end]);
                    i = end;
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// The features whose whole name (every significant word, at least
    /// [`MIN_COVERED`]) `terms` cover, with the most name words (several
    /// when they tie); and the features with four or more significant name
    /// words of which `terms` have all but one (`minimum … proportional
    /// fair scheduler` for Minimum Rate Proportional Fair Scheduler). Both
    /// in index order.
    pub(crate) fn coverage(&self, terms: &[String]) -> (Vec<usize>, Vec<usize>) {
        // Two terms are the same (see [`same`]) exactly when their stems
        // are equal: a name is covered when each of its stems is one of the
        // text's, counted through the stem index without comparing words.
        let mut stems: Vec<&str> = terms.iter().map(|t| stem(t)).collect();
        stems.sort_unstable();
        stems.dedup();
        let mut found = vec![0u16; self.terms.len()];
        for i in stems.iter().filter_map(|s| self.by_stem.get(*s)).flatten() {
            found[*i] += 1;
        }
        let (mut covered, mut nearly) = (Vec::new(), Vec::new());
        for (i, &n) in found.iter().enumerate().filter(|(_, n)| **n > 0) {
            let n = usize::from(n);
            if n == self.stems[i] && self.terms[i].len() >= MIN_COVERED {
                covered.push(i);
            } else if self.stems[i] >= 4 && n + 1 == self.stems[i] {
                nearly.push(i);
            }
        }
        let most = covered.iter().map(|&i| self.terms[i].len()).max().unwrap_or(0);
        covered.retain(|&i| self.terms[i].len() == most);
        (covered, nearly)
    }

    /// Whether every significant name word of feature `i` is in feature
    /// `c`'s name, as written or abbreviated ([`Names::within`] of `c`'s
    /// name, precomputed).
    pub(crate) fn within_name_of(&self, i: usize, c: usize) -> bool {
        self.terms[i].iter().all(|n| self.name_expanded[c].iter().any(|t| same(t, n)))
    }

    /// Learns the abbreviations in `text`, a question an operator said
    /// feature `name` should answer: a word of the text that is no known
    /// word (`known`) nor abbreviation, and that spells two or more
    /// consecutive words of the name by their beginnings (`mMIMO`: massive
    /// MIMO, `HPUE`: high power UE), stands for those words from now on —
    /// for every feature's questions. Returns what it learned.
    pub(crate) fn learn_from(
        &self,
        text: &str,
        name: &str,
        known: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let words: Vec<String> = elex_text::tokens(name);
        let mut learned = Vec::new();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            // A hyphenated compound whole (`mMIMO-sleep`), and each part.
            let parts = word.split('-').map(str::to_string);
            for candidate in std::iter::once(word.replace('-', "")).chain(parts) {
                let lower = candidate.to_ascii_lowercase();
                // An abbreviation is short: a long word is no candidate (and
                // the spelling search stays small).
                if !(2..=MAX_ABBREVIATION).contains(&lower.len())
                    || lower.bytes().all(|b| b.is_ascii_digit())
                    || lower.contains('-')
                    || known(&lower)
                    || self.expansions.contains_key(&lower)
                {
                    continue;
                }
                let Some((start, end)) = spelled(&lower, &words) else { continue };
                let stands = words[start..end].join(" ");
                let mut map = self.learned.write().unwrap_or_else(|p| p.into_inner());
                let list = map.entry(lower.clone()).or_default();
                if !list.contains(&stands) {
                    list.push(stands.clone());
                    learned.push((lower, stands));
                }
            }
        }
        learned
    }

    /// How many significant words feature `i`'s name has.
    pub(crate) fn size(&self, i: usize) -> usize {
        self.terms[i].len()
    }

    /// The significant words of feature `i`'s name.
    #[cfg(test)]
    pub(crate) fn name_terms(&self, i: usize) -> &[String] {
        &self.terms[i]
    }

    /// Whether `name`, its abbreviations expanded, has every significant
    /// word of feature `i`'s name: `IFLB Activation Threshold` has those of
    /// `Inter-Frequency Load Balancing`, so a text naming the first does
    /// not cover the second by naming the first.
    pub(crate) fn within(&self, i: usize, name: &str) -> bool {
        let own = self.expanded_terms(name);
        self.terms[i].iter().all(|n| own.iter().any(|t| same(t, n)))
    }
}

/// The run of two or more consecutive `words` that `abbreviation` spells
/// by their beginnings (each word contributing a non-empty prefix, in
/// order, the whole abbreviation used), the first such run.
fn spelled(abbreviation: &str, words: &[String]) -> Option<(usize, usize)> {
    fn rest(a: &str, words: &[String], k: usize) -> Option<usize> {
        if a.is_empty() {
            return Some(k);
        }
        let w = words.get(k)?;
        // Longest prefix first: `mimo` takes all of MIMO before trying `m`.
        (1..=a.len().min(w.len()))
            .rev()
            .filter(|&n| w.as_bytes()[..n] == a.as_bytes()[..n])
            .find_map(|n| rest(&a[n..], words, k + 1))
    }
    (0..words.len()).find_map(|start| {
        rest(abbreviation, words, start).filter(|&end| end - start >= 2).map(|end| (start, end))
    })
}

/// Words that put a second feature against the first: the question is about
/// the one before them.
const COMPARED: &[&str] = &[
    " vs. ",
    " vs ",
    " versus ",
    " compared to ",
    " compared with ",
    " differ from ",
    " differs from ",
    " different from ",
    " instead of ",
    " rather than ",
    " better than ",
];

/// The part of `text` a comparison is about: what comes before "vs",
/// "compared to", "differ from", …, or what is between "between" and "and"
/// in "the difference between A and B"; `None` for a text that compares
/// nothing.
pub(crate) fn comparison_subject(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    if let Some(at) = lower.find(" between ") {
        let from = at + " between ".len();
        if let Some(and) = lower[from..].find(" and ") {
            return Some(&text[from..from + and]);
        }
    }
    let at = COMPARED.iter().filter_map(|m| lower.find(m)).min()?;
    Some(&text[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_of_a_comparison_is_the_first_feature() {
        assert_eq!(comparison_subject("A Thing vs B Thing — which?"), Some("A Thing"));
        assert_eq!(comparison_subject("How does A differ from B?"), Some("How does A"));
        assert_eq!(comparison_subject("what is the difference between A and B"), Some("A"));
        assert_eq!(comparison_subject("What is MIMO Sleep Mode?"), None);
    }

    #[test]
    fn stems_drop_common_endings() {
        for (a, b) in [
            ("queuing", "queue"),
            ("queued", "queue"),
            ("scheduling", "schedule"),
            ("aggregated", "aggregation"),
        ] {
            assert!(same(a, b), "{a} {b}");
        }
        for (a, b) in [("rate", "rat"), ("mode", "model"), ("speed", "spend")] {
            assert!(!same(a, b), "{a} {b}");
        }
    }

    #[test]
    fn a_run_together_compound_is_taken_apart() {
        let c = Catalog::embedded().unwrap();
        let (_, names) = super::super::Lexicon::with_names(&c);
        assert_eq!(names.compound("ulcomp"), ["ul", "comp"]);
        assert_eq!(names.compound("nrca"), ["nr", "ca"]);
        // A word of the catalog is not taken apart, nor one no pieces spell.
        assert!(names.expansions_in("handover").is_empty());
        assert!(names.compound("xyzzyq").is_empty());
        let terms = names.expanded_terms("ULCoMP gain on LTE?");
        for t in ["uplink", "coordinated", "multi", "point"] {
            assert!(terms.contains(&t.to_string()), "{t} in {terms:?}");
        }
    }

    #[test]
    fn an_abbreviation_spells_consecutive_name_words() {
        let words: Vec<String> = ["nr", "massive", "mimo", "sleep", "mode"].map(String::from).to_vec();
        assert_eq!(spelled("mmimo", &words), Some((1, 3)));
        assert_eq!(spelled("mimosleep", &words), Some((2, 4)));
        assert_eq!(spelled("nrx", &words), None);
        assert_eq!(spelled("sleep", &words), None, "one word is not an abbreviation");
        let hpue: Vec<String> = ["high", "power", "ue"].map(String::from).to_vec();
        assert_eq!(spelled("hpue", &hpue), Some((0, 3)));
    }

    #[test]
    fn abbreviations_are_learned_from_the_catalog_and_cover_names() {
        let c = Catalog::embedded().unwrap();
        let (_, names) = super::super::Lexicon::with_names(&c);
        let faj = |text: &str| -> Vec<String> {
            names
                .coverage(&names.expanded_terms(text))
                .0
                .into_iter()
                .map(|i| c.features[i].name.clone())
                .collect()
        };
        // A run of an aligned acronym (UFSS) stands for its words.
        assert!(
            names.expansions["fss"].iter().any(|w| w == "frequency selective scheduling"),
            "{:?}",
            names.expansions.get("fss")
        );
        assert_eq!(faj("UL FSS on LTE, when to enable it?"), ["Uplink Frequency-Selective Scheduling"]);
        assert_eq!(faj("NR UL CA never gets configured"), ["NR Uplink Carrier Aggregation"]);
        // A run of a catalog acronym does not change a standard
        // abbreviation: `LENBS` (LTE Extended N77 Band Support) spells
        // `enb`, which stays eNodeB.
        assert_eq!(names.expansions["enb"], ["eNodeB"]);
        assert_eq!(names.expansions_in("UL CoMP on LTE"), ["uplink", "coordinated", "multi", "point"]);
        // "if" is a word, "IF" an abbreviation.
        assert!(!names.expanded_terms("what if it fails").contains(&String::from("inter")));
        assert!(names.expanded_terms("IF-LB counters").contains(&String::from("inter")));
    }
}
