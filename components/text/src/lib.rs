//! Deterministic text features shared by the agents (in wasm) and the host's
//! router (native), so that both embed text identically.
//!
//! # Tokens
//! Text is split on every character that is not ASCII alphanumeric; each
//! piece is split again at lower→upper case changes and letter↔digit changes
//! (`MimoSleepFunction.sleepMode` → `mimo sleep function sleep mode`,
//! `pmMimoSleepTime` → `pm mimo sleep time`), then lower-cased; one
//! lower-case letter before a run of capitals starts it (`eNB` → `enb`,
//! `mMIMO` → `mmimo`). An
//! acronym's plural `s` is dropped first (`UEs` → `ue`, `KPIs` → `kpi`).
//!
//! # Terms
//! [`terms`] are the tokens without common English function words
//! ([`STOPWORDS`]), with a plural `s` removed (`counters` → `counter`, but
//! not `ss` endings or words of three letters or fewer).
//!
//! # Embedding ([`embed`], [`DIM`] = 128 dimensions)
//! Feature hashing (Weinberger et al. 2009) of the terms, three kinds of
//! features:
//! every token (weight 1.0), every pair of adjacent tokens (weight 0.7), and
//! every character trigram of each token padded with `^`/`$` (weight 0.4,
//! spread over the token's trigrams). Each feature is hashed with 64-bit
//! FNV-1a; the low bits pick the dimension and bit 63 the sign. The vector is
//! then L2-normalised, so cosine similarity is a dot product. The scheme is
//! fixed: changing it changes every stored embedding.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// Embedding width.
pub const DIM: usize = 128;

/// The version of [`tokens`] and [`terms`]: raised whenever either gives
/// other output for some text, so that what was stored by terms (the
/// memory graph's text index) is rebuilt. 2: acronym plurals (`UEs`) and
/// `eNB`-style words.
pub const TEXT_VERSION: u64 = 2;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator byte no token contains keeps ("ab","c") != ("a","bc").
            h ^= 0x1f;
            h = h.wrapping_mul(FNV_PRIME);
        }
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// Splits text into lower-case tokens (see the crate docs).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, &mut String::new(), |t| out.push(String::from(t)));
    out
}

/// Calls `f` with each of [`tokens`] in turn, lower-cased into `buf`
/// (no string allocated per token).
fn for_each_token(text: &str, buf: &mut String, mut f: impl FnMut(&str)) {
    for mut piece in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        // "UEs", "KPIs": an acronym's plural `s` ends a word (otherwise the
        // rule for "MIMOSleep" below would make `u` + `es`).
        while let Some(at) = plural_acronym_at(piece.as_bytes()) {
            split_word(&piece[..at], buf, &mut f);
            piece = &piece[at + 1..];
        }
        split_word(piece, buf, &mut f);
    }
}

/// Splits one alphanumeric word at case and digit changes, passing each
/// part lower-cased (in `buf`) to `f`.
fn split_word(piece: &str, buf: &mut String, f: &mut impl FnMut(&str)) {
    let mut emit = |part: &str| {
        buf.clear();
        buf.push_str(part);
        buf.make_ascii_lowercase();
        f(buf);
    };
    let bytes = piece.as_bytes();
    let mut start = 0;
    for i in 1..bytes.len() {
        let (p, c) = (bytes[i - 1], bytes[i]);
        // "eNB", "mMIMO": one lower-case letter before a run of capitals
        // prefixes the run (not "tInactivityTimer": `t` `inactivity` …).
        let prefix = i == 1 && bytes.get(2).is_some_and(u8::is_ascii_uppercase);
        let case_break = p.is_ascii_lowercase() && c.is_ascii_uppercase() && !prefix;
        let digit_break = p.is_ascii_digit() != c.is_ascii_digit();
        // "MIMOSleep": split before the last capital of an upper-case run.
        let acronym_break = p.is_ascii_uppercase()
            && c.is_ascii_uppercase()
            && bytes.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if case_break || digit_break || acronym_break {
            emit(&piece[start..i]);
            start = i;
        }
    }
    if start < bytes.len() {
        emit(&piece[start..]);
    }
}

/// The position of the first plural `s` of an acronym in `bytes`: an `s`
/// after two or more capitals and not before a lower-case letter (`UEs`,
/// `KPIsPerCell`; not `SCells`).
fn plural_acronym_at(bytes: &[u8]) -> Option<usize> {
    (2..bytes.len()).find(|&i| {
        bytes[i] == b's'
            && bytes[i - 1].is_ascii_uppercase()
            && bytes[i - 2].is_ascii_uppercase()
            && !bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase)
    })
}

/// Words that carry no topic: dropped by [`terms`].
pub const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "any", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
    "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "should", "tell", "that", "the",
    "this", "to", "us", "we", "what", "when", "which", "who", "why", "with", "you",
];

/// Tokens minus stopwords, with plurals folded (see the crate docs).
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |t| out.push(String::from(t)));
    out
}

/// Calls `f` with each of [`terms`] of `text` in turn, without allocating a
/// string per term (the memory graph indexes many texts).
pub fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    for_each_token(text, &mut String::new(), |t| {
        if let Some(term) = term_of(t) {
            f(term)
        }
    })
}

/// [`terms`] of text whose [`tokens`] are already known.
pub fn terms_of(tokens: Vec<String>) -> Vec<String> {
    tokens.iter().filter_map(|t| term_of(t)).map(String::from).collect()
}

/// The term a token makes: none for a stopword; a plural `s` dropped.
pub fn term_of(t: &str) -> Option<&str> {
    if STOPWORDS.binary_search(&t).is_ok() {
        return None;
    }
    if t.len() > 3 && t.ends_with('s') && !t.ends_with("ss") && !t.bytes().all(|b| b.is_ascii_digit()) {
        return Some(&t[..t.len() - 1]);
    }
    Some(t)
}

fn add(v: &mut [f32; DIM], h: u64, weight: f32) {
    let slot = (h % DIM as u64) as usize;
    v[slot] += if h >> 63 == 1 { -weight } else { weight };
}

/// The 128-d unit-length embedding of `text` (all zeros for text without
/// tokens).
pub fn embed(text: &str) -> [f32; DIM] {
    embed_terms(&terms(text))
}

/// [`embed`] of text whose [`terms`] are already known.
pub fn embed_terms<S: AsRef<str>>(toks: &[S]) -> [f32; DIM] {
    let mut v = [0.0f32; DIM];
    for (i, t) in toks.iter().enumerate() {
        let t = t.as_ref();
        add(&mut v, fnv1a(&[b"w", t.as_bytes()]), 1.0);
        if let Some(next) = toks.get(i + 1) {
            add(&mut v, fnv1a(&[b"b", t.as_bytes(), next.as_ref().as_bytes()]), 0.7);
        }
        // Character trigrams of "^token$", without building that string.
        let b = t.as_bytes();
        let n = b.len() + 2;
        let at = |i: usize| {
            if i == 0 {
                b'^'
            } else if i == n - 1 {
                b'$'
            } else {
                b[i - 1]
            }
        };
        let grams = n.saturating_sub(2).max(1) as f32;
        for i in 0..n.saturating_sub(2) {
            add(&mut v, fnv1a(&[b"c", &[at(i), at(i + 1), at(i + 2)]]), 0.4 / grams * 3.0);
        }
    }
    elex_kernels::normalize(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terms one by one are the terms of the tokens, for odd text too
    /// (generated: letters of both cases, digits, spaces, punctuation,
    /// plurals, stopwords).
    #[test]
    fn terms_one_by_one_are_the_terms_of_the_tokens() {
        let alphabet = b"aAbBeEnNsSuUmMiIoO019 -_/.";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut texts: Vec<String> =
            ["UEs eNB KPIsPerCell MIMOSleep the cells SCells 5G NR-CA", "", "s ss sss 1234s"]
                .iter()
                .map(|t| String::from(*t))
                .collect();
        for _ in 0..2000 {
            let n = (seed % 40) as usize;
            let mut t = String::new();
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                t.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            texts.push(t);
        }
        for t in &texts {
            let mut one_by_one = Vec::new();
            for_each_term(t, |term| one_by_one.push(String::from(term)));
            assert_eq!(one_by_one, terms_of(tokens(t)), "{t:?}");
            assert_eq!(terms(t), one_by_one, "{t:?}");
        }
    }

    #[test]
    fn splits_identifiers() {
        assert_eq!(tokens("MimoSleepFunction.sleepMode"), ["mimo", "sleep", "function", "sleep", "mode"]);
        assert_eq!(tokens("pmMimoSleepTime"), ["pm", "mimo", "sleep", "time"]);
        assert_eq!(tokens("FAJ 121 3094"), ["faj", "121", "3094"]);
        assert_eq!(tokens("MIMOSleep x2"), ["mimo", "sleep", "x", "2"]);
        assert_eq!(tokens("eNB gNB mMIMO eNBId"), ["enb", "gnb", "mmimo", "enb", "id"]);
        // One lower-case letter before a word is a word of its own.
        assert_eq!(
            tokens("tInactivityTimer qRxLevMin"),
            ["t", "inactivity", "timer", "q", "rx", "lev", "min"]
        );
        assert_eq!(
            tokens("gNodeB ENodeBFunction TypeA"),
            ["g", "node", "b", "e", "node", "b", "function", "type", "a"]
        );
    }

    #[test]
    fn an_acronyms_plural_is_the_acronym() {
        assert_eq!(tokens("UEs"), ["ue"]);
        assert_eq!(tokens("Limited Capability UEs"), ["limited", "capability", "ue"]);
        assert_eq!(tokens("KPIs RETs"), ["kpi", "ret"]);
        assert_eq!(tokens("maxUEsPerCell"), ["max", "ue", "per", "cell"]);
        assert_eq!(tokens("numUEs2 UEsIDs"), ["num", "ue", "2", "ue", "id"]);
        // Not a plural: a lower-case letter follows, or one capital precedes.
        assert_eq!(tokens("SCells PCell OFDMsymbols"), ["s", "cells", "p", "cell", "ofd", "msymbols"]);
        assert_eq!(tokens("Ms CMAS"), ["ms", "cmas"]);
    }

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn terms_drop_stopwords_and_fold_plurals() {
        assert_eq!(terms("Which counters show the effect of it?"), ["counter", "show", "effect"]);
        assert_eq!(terms("access class"), ["access", "class"]);
        assert_eq!(terms("has 1000s"), ["has", "1000", "s"]);
    }

    #[test]
    fn embedding_is_unit_and_deterministic() {
        let a = embed("MIMO sleep mode energy saving");
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
        assert_eq!(a, embed("MIMO sleep mode energy saving"));
        assert_eq!(embed("  ..  "), [0.0; DIM]);
    }

    #[test]
    fn related_text_is_closer() {
        let q = embed("how does mimo sleep mode save energy");
        let near = embed("MIMO Sleep Mode");
        let far = embed("X2 Configuration");
        let dot = |a: &[f32; DIM], b: &[f32; DIM]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(dot(&q, &near) > dot(&q, &far) + 0.2);
    }
}
