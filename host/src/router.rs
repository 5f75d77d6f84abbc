//! Chooses the feature agent for a query.
//!
//! Strong signals first, in order: a FAJ code in the text (`FAJ 121 3094`,
//! `FAJ-121-3094`, `faj1213094`); the full name of a feature (longest wins);
//! a parameter or counter name a feature owns (`MoClass.attribute`, or the
//! bare attribute; shared names go to the owner most similar to the text);
//! an acronym (ties broken by how
//! many of the feature's name words the text shares). Without any, the
//! feature whose name, acronym and category are most similar to the text
//! under the 128-d `elex-text` embedding.

use crate::catalog::Catalog;

/// Why a feature was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    FajCode,
    Name,
    OwnedName(String),
    Acronym(String),
    Similarity(f32),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::FajCode => f.write_str("FAJ code in the text"),
            Reason::Name => f.write_str("feature name in the text"),
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

/// The index of the chosen feature and why; `None` for an empty catalog.
pub fn choose(catalog: &Catalog, text: &str) -> Option<(usize, Reason)> {
    let features = &catalog.features;
    for code in faj_codes(text) {
        if let Some(i) = features.iter().position(|f| f.faj == code) {
            return Some((i, Reason::FajCode));
        }
    }
    let lower = text.to_ascii_lowercase();
    let by_name = features
        .iter()
        .enumerate()
        .filter(|(_, f)| contains_phrase(&lower, &f.name.to_ascii_lowercase()))
        .max_by_key(|(_, f)| f.name.len());
    if let Some((i, _)) = by_name {
        return Some((i, Reason::Name));
    }
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    let q = elex_text::embed(text);
    for w in &words {
        // `MoClass.attribute` matches exactly; a bare `attribute` (six
        // characters or more) matches the attribute part.
        let owns =
            |n: &String| n == w || (!w.contains('.') && w.len() >= 6 && n.rsplit('.').next() == Some(*w));
        let owners: Vec<usize> = (0..features.len())
            .filter(|&i| features[i].parameters.iter().chain(&features[i].counters).any(owns))
            .collect();
        // A name shared by several features: the owner closest to the rest
        // of the text.
        if let Some((i, _)) = most_similar(catalog, &q, owners.into_iter()) {
            return Some((i, Reason::OwnedName((*w).to_string())));
        }
    }
    let text_tokens = elex_text::tokens(text);
    let acronym_hit = features
        .iter()
        .enumerate()
        .filter(|(_, f)| f.acronym.as_deref().is_some_and(|a| a.len() >= 2 && words.contains(&a)))
        .max_by_key(|(i, f)| {
            let shared = elex_text::tokens(&f.name).iter().filter(|t| text_tokens.contains(t)).count();
            (shared, std::cmp::Reverse(*i))
        });
    if let Some((i, f)) = acronym_hit {
        return Some((i, Reason::Acronym(f.acronym.clone().unwrap_or_default())));
    }
    most_similar(catalog, &q, 0..features.len()).map(|(i, s)| (i, Reason::Similarity(s)))
}

/// Among `candidates`, the feature whose name, acronym and category embed
/// closest to `q` (lowest index on ties).
fn most_similar(
    catalog: &Catalog,
    q: &[f32; elex_text::DIM],
    candidates: impl Iterator<Item = usize>,
) -> Option<(usize, f32)> {
    candidates
        .map(|i| {
            let f = &catalog.features[i];
            let profile = format!(
                "{} {} {}",
                f.name,
                f.acronym.as_deref().unwrap_or(""),
                f.category.as_deref().unwrap_or("")
            );
            let e = elex_text::embed(&profile);
            (i, q.iter().zip(e.iter()).map(|(a, b)| a * b).sum::<f32>())
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// Whether `phrase` occurs in `text` on word boundaries.
fn contains_phrase(text: &str, phrase: &str) -> bool {
    if phrase.is_empty() {
        return false;
    }
    let bytes = text.as_bytes();
    text.match_indices(phrase).any(|(at, _)| {
        let before = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let end = at + phrase.len();
        let after = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        before && after
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_faj_codes_in_every_spelling() {
        assert_eq!(faj_codes("what is FAJ 121 3094?"), ["FAJ 121 3094"]);
        assert_eq!(faj_codes("FAJ-121-3094 and faj1213095"), ["FAJ 121 3094", "FAJ 121 3095"]);
        assert!(faj_codes("faj 12 3094").is_empty());
        assert!(faj_codes("faj12130944").is_empty());
    }

    #[test]
    fn strong_signals_pick_the_feature() {
        let c = Catalog::embedded().unwrap();
        let faj = |t: &str| c.features[choose(&c, t).unwrap().0].faj.clone();
        assert_eq!(faj("Tell me about FAJ 121 3094"), "FAJ 121 3094");
        assert_eq!(faj("How does MIMO Sleep Mode save energy?"), "FAJ 121 3094");
        let (_, reason) = choose(&c, "How does MIMO Sleep Mode save energy?").unwrap();
        assert_eq!(reason, Reason::Name);
    }

    #[test]
    fn owned_parameter_names_pick_their_feature() {
        let c = Catalog::embedded().unwrap();
        let owners = |p: &String| c.features.iter().filter(|g| g.parameters.contains(p)).count();
        let (f, p) = c
            .features
            .iter()
            .find_map(|f| f.parameters.iter().find(|p| owners(p) == 1).map(|p| (f, p)))
            .expect("some parameter has exactly one owner");
        let (i, reason) = choose(&c, &format!("what should {p} be set to")).unwrap();
        assert_eq!(c.features[i].faj, f.faj);
        assert_eq!(reason, Reason::OwnedName(p.clone()));
    }
}
