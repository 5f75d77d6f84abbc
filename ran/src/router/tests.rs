//! The router's tests, and the reference router they check it against.

use super::names::{self, Names};
use super::*;

/// The reference router: the signals of [`Router::choose`] found by
/// scanning the catalog (and computing the profile embeddings) on every
/// call, so the indexed router can be checked against it.
fn choose(catalog: &Catalog, text: &str) -> Option<(usize, Reason)> {
    choose_with(catalog, text, &|q, c| most_similar(catalog, q, c))
}

type Similar<'a> =
    dyn Fn(&[f32; elex_text::DIM], &mut dyn Iterator<Item = usize>) -> Option<(usize, f32)> + 'a;

/// The reference of [`Router::named`]: every signal found by scanning.
fn named(
    catalog: &Catalog,
    part: &str,
    q: &[f32; elex_text::DIM],
    most_similar: &Similar<'_>,
) -> Option<(usize, Reason)> {
    let features = &catalog.features;
    let text = part;
    let lower = part.to_ascii_lowercase();
    let by_name = features
        .iter()
        .enumerate()
        .filter(|(_, f)| contains_phrase(&lower, &f.name.to_ascii_lowercase()))
        .max_by_key(|(_, f)| f.name.len());
    // Names the words and abbreviations of `part` cover, by a scan.
    let (_, names) = &*tables_of(catalog);
    let terms = names.expanded_terms(part);
    let covered: Vec<usize> = (0..features.len())
        .filter(|&i| {
            let name = names.name_terms(i);
            name.len() >= 3 && name.iter().all(|n| terms.iter().any(|t| names::same(t, n)))
        })
        .collect();
    let most = covered.iter().map(|&i| names.size(i)).max().unwrap_or(0);
    let covered: Vec<usize> = covered.into_iter().filter(|&i| names.size(i) == most).collect();
    let pick_covered =
        || most_similar(q, &mut covered.iter().copied()).map(|(i, _)| (i, Reason::CoveredName));
    if let Some((i, f)) = by_name {
        if most > names.size(i) && !covered.iter().all(|&c| names.within(c, &f.name)) {
            return pick_covered();
        }
        // A longer name containing it, all but one of whose words (by
        // stem) the text has: no signal from the shorter one.
        let text_stems: Vec<&str> = terms.iter().map(|t| names::stem(t)).collect();
        let longer = (0..features.len()).any(|c| {
            let mut stems: Vec<&str> = names.name_terms(c).iter().map(|n| names::stem(n)).collect();
            stems.sort_unstable();
            stems.dedup();
            let missing = stems.iter().filter(|s| !text_stems.contains(s)).count();
            c != i
                && stems.len() >= 4
                && missing == 1
                && names.size(c) > names.size(i) + 1
                && names.within(i, &features[c].name)
        });
        if !longer {
            return Some((i, Reason::Name));
        }
    }
    let words = name_words(part);
    for w in &words {
        // `MoClass.attribute` matches exactly; a bare `attribute` (six
        // characters or more) matches the attribute part.
        let owns = |n: &String| {
            n == w || (!w.contains('.') && bare_attribute(w) && n.rsplit('.').next() == Some(*w))
        };
        let owners: Vec<usize> = (0..features.len())
            .filter(|&i| features[i].parameters.iter().chain(&features[i].counters).any(owns))
            .collect();
        // A name shared by several features: the owner closest to the rest
        // of the text.
        if let Some((i, _)) = most_similar(q, &mut owners.into_iter()) {
            return Some((i, Reason::OwnedName((*w).to_string())));
        }
    }
    if !covered.is_empty() {
        return pick_covered();
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
    let (i, f) = acronym_hit?;
    let acronym = f.acronym.clone().unwrap_or_default();
    let text_terms = elex_text::terms(text);
    let shared = |f: &crate::catalog::Feature| {
        elex_text::terms(&f.name).iter().filter(|t| text_terms.contains(t)).count()
    };
    // A feature whose name has the acronym as a word, not its own, and
    // shares more words with the text than the owner (and its acronym).
    let as_term = elex_text::terms(&acronym);
    let rival = as_term.len() == 1
        && features.iter().any(|g| {
            g.acronym.as_deref() != Some(&acronym)
                && elex_text::terms(&g.name).contains(&as_term[0])
                && shared(g) > shared(f) + 1
        });
    (!rival).then_some((i, Reason::Acronym(acronym)))
}

/// The lexicon and the abbreviations of `catalog`, built once per catalog
/// and thread: they are derived data the reference scan needs, not
/// signals it finds, and building them for every question would make the
/// comparison tests slow.
fn tables_of(catalog: &Catalog) -> std::rc::Rc<(Lexicon, Names)> {
    // (A catalog's address, size, last agent and descriptions: tests
    // build catalogs that differ only in these.)
    type Key = (usize, usize, String, u64);
    type Tables = std::rc::Rc<(Lexicon, Names)>;
    thread_local! {
        static TABLES: std::cell::RefCell<Vec<(Key, Tables)>> = Default::default();
    }
    let key: Key = (
        catalog as *const Catalog as usize,
        catalog.features.len(),
        catalog.features.last().map(|f| f.faj.clone()).unwrap_or_default(),
        {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            catalog.features.iter().for_each(|f| f.about.hash(&mut h));
            h.finish()
        },
    );
    TABLES.with(|t| {
        let mut t = t.borrow_mut();
        if let Some((_, tables)) = t.iter().find(|(k, _)| *k == key) {
            return tables.clone();
        }
        let tables = std::rc::Rc::new(Lexicon::with_names(catalog));
        t.push((key, tables.clone()));
        tables
    })
}

fn choose_with(catalog: &Catalog, text: &str, most_similar: &Similar<'_>) -> Option<(usize, Reason)> {
    let features = &catalog.features;
    for code in faj_codes(text) {
        if let Some(i) = features.iter().position(|f| f.faj == code) {
            return Some((i, Reason::FajCode));
        }
    }
    let tables = tables_of(catalog);
    let (lexicon, names) = &*tables;
    let query = lexicon.query(text, names);
    let q = query.embedding;
    let subject = names::comparison_subject(text);
    if let Some(hit) = subject.and_then(|part| named(catalog, part, &q, most_similar)) {
        return Some(hit);
    }
    if let Some(hit) = named(catalog, text, &q, most_similar) {
        return Some(hit);
    }
    // The embedding's nearest POOL by an exact scan, reranked.
    let mut pool: Vec<(usize, f32)> = (0..features.len())
        .map(|i| (i, most_similar(&q, &mut std::iter::once(i)).map_or(0.0, |s| s.1)))
        .collect();
    let rare = lexicon.rare_matches(&query);
    pool.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let (mut kept, rest): (Vec<_>, Vec<_>) = pool.into_iter().enumerate().partition(|(rank, _)| *rank < POOL);
    kept.extend(rest.into_iter().filter(|(_, (i, _))| rare.contains(i)));
    let pool = kept.into_iter().map(|(_, p)| p).collect();
    lexicon.rerank(&query, pool).first().map(|&(i, s)| (i, Reason::Similarity(s)))
}

/// Among `candidates`, the feature whose name, acronym and category embed
/// closest to `q` (lowest index on ties).
fn most_similar(
    catalog: &Catalog,
    q: &[f32; elex_text::DIM],
    candidates: &mut dyn Iterator<Item = usize>,
) -> Option<(usize, f32)> {
    candidates
        .map(|i| {
            let e = elex_text::embed(&profile(&catalog.features[i]));
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

#[test]
fn finds_faj_codes_in_every_spelling() {
    assert_eq!(faj_codes("what is FAJ 121 3094?"), ["FAJ 121 3094"]);
    assert_eq!(faj_codes("FAJ-121-3094 and faj1213095"), ["FAJ 121 3094", "FAJ 121 3095"]);
    assert!(faj_codes("faj 12 3094").is_empty());
    assert!(faj_codes("faj12130944").is_empty());
}

#[test]
fn the_realistic_classes_route_to_the_subject_and_the_covered_name() {
    let c = std::sync::Arc::new(Catalog::embedded().unwrap());
    let r = Router::new(c.clone());
    let name = |t: &str| c.features[r.choose(t).unwrap().0].name.clone();
    // Abbreviated name words, not the catalog's acronym of a shorter name.
    assert_eq!(name("NR UL CA never gets configured for capable UEs"), "NR Uplink Carrier Aggregation");
    assert_eq!(name("UL FSS on LTE, when to enable it?"), "Uplink Frequency-Selective Scheduling");
    // A compound short name.
    assert_eq!(name("IF-LB: which counters show the load balancing HOs?"), "Inter-Frequency Load Balancing");
    // The subject of a comparison, not the longer name it is compared with.
    assert_eq!(
        name("Automatic SCell Management vs Configurable SCell Priority, which learns by itself?"),
        "Automatic SCell Management"
    );
    assert_eq!(
        name("what is the difference between NR Massive MIMO Eco Mode and NR Massive MIMO Sleep Mode"),
        "NR Massive MIMO Eco Mode"
    );
    // A short name that is a word of a longer one the text nearly names
    // is no signal; by itself it is.
    assert_eq!(
        name("how do I set the minimum for the proportional fair scheduler on LTE?"),
        "Minimum Rate Proportional Fair Scheduler"
    );
    assert_eq!(r.choose("What is Scheduler and what does it do?").unwrap().1, Reason::Name);
    // eNB stands for eNodeB, as the names write it.
    assert_eq!(name("inter-eNB CA vs Elastic RAN, the difference?"), "Inter-eNodeB Carrier Aggregation");
    // "if" in a sentence is a word.
    assert_ne!(r.choose("what if MIMO Sleep Mode fails").unwrap().1, Reason::CoveredName);
    // The words an abbreviation stands for weigh in similarity, but not
    // their one-letter pieces (gNB: gNodeB is `g` `node` `b`).
    let q = r.lexicon.query("UL CoMP gain on the gNB", &r.names);
    for t in ["uplink", "coordinated", "gnb", "node"] {
        assert!(q.terms.contains(&t.to_string()), "{t} in {:?}", q.terms);
    }
    assert!(!q.terms.iter().any(|t| t == "g" || t == "b"), "{:?}", q.terms);
    // An acronym that is also another name's word: by itself it names its
    // feature; beside more of the other name's words it names none.
    let crs = "Cascaded RET Support";
    assert_eq!(name("What is CRS and what does it do?"), crs);
    for reference in [true, false] {
        let text = "CRS interference from the neighbour cells — which feature?";
        let chosen = if reference { choose(&c, text) } else { r.choose(text) };
        assert!(!matches!(chosen, Some((_, Reason::Acronym(_)))), "{chosen:?}");
    }
}

#[test]
fn a_correction_teaches_its_abbreviations_for_other_questions() {
    let c = std::sync::Arc::new(Catalog::embedded().unwrap());
    let r = Router::new(c.clone());
    let pcq = c.features.iter().position(|f| f.name == "Prioritized Call Queuing at High Load").unwrap();
    let later = "which counters show PCQ at high load working?";
    assert_ne!(r.choose(later).unwrap().0, pcq, "unknown before the correction");
    r.learn("PCQ on a busy LTE cell — what has to be configured?", pcq);
    // A different question with the abbreviation now covers the name.
    assert_eq!(r.choose(later).unwrap(), (pcq, Reason::CoveredName));
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

/// Questions that describe a feature without its name, acronym, a
/// parameter or a counter: rare words count for more than common ones
/// ("NR", "network"), and the words of the question kind ("counters")
/// do not pull in features named after them.
#[test]
fn descriptions_find_their_feature() {
    let c = std::sync::Arc::new(Catalog::embedded().unwrap());
    let r = Router::new(c.clone());
    let name = |t: &str| c.features[r.choose(t).unwrap().0].name.clone();
    assert_eq!(
        name("Which counters show whether antenna vswr works in my NR network?"),
        "VSWR Antenna Supervision"
    );
    assert_eq!(
        name("Which counters show whether over source clock ntp works in my NR network?"),
        "Clock Source over NTP"
    );
    assert_eq!(
        name("How do I troubleshoot rejection of interference by combining?"),
        "Interference Rejection Combining"
    );
    let (_, reason) = r.choose("what does the antenna feature that lets mimo sleep do").unwrap();
    assert!(matches!(reason, Reason::Similarity(_)), "{reason:?}");
    assert_eq!(name("what does the antenna feature that lets mimo sleep do"), "MIMO Sleep Mode");
}

#[test]
fn the_router_agrees_with_choose_and_ranks_peers() {
    let c = std::sync::Arc::new(Catalog::embedded().unwrap());
    let r = Router::new(c.clone());
    let mut texts: Vec<String> = [
        "How does MIMO Sleep Mode save energy?",
        "uplink interference in crowded cells",
        "FAJ 121 4219 prerequisites",
        "NR UL CA never gets configured for capable UEs",
        "IF-LB: which counters show the load balancing HOs?",
        "Automatic SCell Management vs Configurable SCell Priority, which learns by itself?",
        "what is the difference between NR Massive MIMO Eco Mode and NR Massive MIMO Sleep Mode",
        "inter-eNB CA vs Elastic RAN, the difference?",
    ]
    .map(String::from)
    .to_vec();
    // Every kind of signal, for a quarter of the catalog.
    for (i, f) in c.features.iter().enumerate().step_by(4) {
        texts.push(format!("What is {}?", f.name));
        texts.push(format!("Which parameters control {}?", f.acronym.as_deref().unwrap_or("it")));
        if let Some(p) = f.parameters.first() {
            texts.push(format!("What should {p} be set to?"));
            texts.push(format!("Tune {} now", p.rsplit('.').next().unwrap()));
        }
        if let Some(k) = f.counters.first() {
            texts.push(format!("Why is {k} rising?"));
        }
        // A description: the name's words reversed, no name as a phrase
        // (a covered name).
        let words: Vec<&str> = f.name.split(' ').rev().collect();
        texts.push(format!("Which counters show whether {} works?", words.join(" ")));
        // A comparison with the next feature, by name and by acronym.
        let next = &c.features[(i + 1) % c.features.len()];
        texts.push(format!("How does {} differ from {}?", f.name, next.name));
        if let Some(a) = &f.acronym {
            texts.push(format!("How does {a} differ from {}?", next.name));
        }
    }
    texts.push(String::from("How does CRS differ from interference cancellation?"));
    texts.push(String::from("CRS interference cancellation with UE assistance"));
    for text in &texts {
        assert_eq!(r.choose(text), choose(&c, text), "{text}");
    }
    let with_requires =
        c.features.iter().position(|f| f.requires.iter().any(|q| c.by_faj(q).is_some())).unwrap();
    let cands = r.route(&c.features[with_requires].faj, 5);
    assert_eq!(cands[0].index, with_requires);
    assert_eq!(cands[0].score, 1.0);
    assert!(cands[1].reason.starts_with("requires-peer of"), "{cands:?}");
    assert!(cands.len() == 5 && cands.windows(2).skip(2).all(|w| w[0].score >= w[1].score));
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

#[test]
fn a_plugin_is_routed_by_its_manifest_next_to_the_features() {
    let mut catalog = Catalog::embedded().unwrap();
    let manifest = elex_host::registry::Manifest::from_toml(
        r#"
id = "weather-words"
name = "Weather words"
description = "Explains weather terms: dew point, wind chill, relative humidity, barometric pressure."
keywords = ["dew point", "wind chill", "humidity", "forecast"]
examples = ["Why does the forecast say it feels colder than the thermometer?"]
"#,
    )
    .unwrap();
    let plugin = catalog.add_plugin(&manifest).unwrap();
    assert_eq!(plugin, 593);
    assert!(catalog.add_plugin(&manifest).is_err(), "one agent per id");
    assert_eq!(catalog.index_of("weather-words").unwrap(), plugin);
    let catalog = std::sync::Arc::new(catalog);
    let router = Router::new(catalog.clone());
    for example in &manifest.examples {
        router.add_example(example, plugin);
    }
    // By its name, its description and keywords, its example.
    for text in [
        "What does Weather words know?",
        "what is the dew point and why does it matter",
        "how is wind chill computed",
        "Why does the forecast say it feels colder than the thermometer today?",
    ] {
        assert_eq!(router.choose(text).map(|(i, _)| i), Some(plugin), "{text}");
    }
    // RAN questions still go to their features.
    for (text, faj) in [
        ("What is FAJ 121 3094?", "FAJ 121 3094"),
        ("Which parameters control MIMO Sleep Mode?", "FAJ 121 3094"),
    ] {
        let (i, _) = router.choose(text).unwrap();
        assert_eq!(catalog.features[i].faj, faj, "{text}");
    }
}

#[test]
fn a_close_choice_names_its_rivals_and_a_clear_one_none() {
    let catalog = std::sync::Arc::new(Catalog::embedded().unwrap());
    let router = Router::new(catalog.clone());
    // Clear: a FAJ code, a full name.
    for text in ["What is FAJ 121 3094?", "Which parameters control MIMO Sleep Mode?"] {
        let (i, reason, rivals) = router.choose_with_rivals(text).unwrap();
        assert!(rivals.is_empty(), "{text}");
        assert_eq!(router.choose(text), Some((i, reason)), "one choice, with or without rivals");
    }
    // By similarity, with a rival within the margin: it is named, with its
    // score, never the chosen feature itself.
    let text = "throughput lower than expected on the uplink";
    let (i, reason, close) = router.choose_with_rivals(text).unwrap();
    assert_eq!(router.choose(text), Some((i, reason.clone())));
    let Reason::Similarity(best) = reason else { panic!("{text}: {reason:?}") };
    assert!(!close.is_empty() && close.len() <= CLOSE_LIMIT, "{close:?}");
    for c in &close {
        assert!(c.index != i && c.score >= best * (1.0 - CLOSE_MARGIN), "{c:?}");
        assert!(c.reason.starts_with("text similarity"), "{c:?}");
    }
    // An acronym several features have: the others are the rivals.
    let shared = catalog
        .features
        .iter()
        .filter_map(|f| f.acronym.clone())
        .find(|a| catalog.features.iter().filter(|f| f.acronym.as_deref() == Some(a.as_str())).count() > 1)
        .expect("the catalog has a shared acronym");
    let text = format!("how do I turn on {shared}");
    let (_, reason, close) = router.choose_with_rivals(&text).unwrap();
    assert!(matches!(reason, Reason::Acronym(_)), "{text}: {reason:?}");
    assert!(!close.is_empty() && close.iter().all(|c| c.reason.starts_with("also acronym")), "{close:?}");
}

#[test]
fn a_feature_named_in_the_text_outweighs_a_question_merely_like_an_example() {
    let c = std::sync::Arc::new(Catalog::embedded().unwrap());
    let r = Router::new(c.clone());
    let index = |name: &str| c.features.iter().position(|f| f.name == name).unwrap();
    let (vonr, fallback) = (index("Voice over NR"), index("EPS Fallback for IMS Voice"));
    let corrected = "when should I enable VoNR on the NR cells instead of the IMS voice fallback";
    r.learn(corrected, vonr);
    // The same question goes where the operator said.
    assert_eq!(r.choose(corrected).unwrap().0, vonr);
    // One like it that names another feature goes to that feature.
    let naming = "when should I enable EPS Fallback for IMS Voice on the NR cells instead of VoNR";
    let alike = r.example(naming).map(|(_, a)| a);
    assert!(alike.is_some_and(|a| (EXAMPLE_MATCH..SAME_QUESTION).contains(&a)), "{alike:?}");
    assert_eq!(r.choose(naming).unwrap(), (fallback, Reason::Name));
}

#[test]
fn a_description_counts_in_the_words_no_name_has() {
    let mut c = Catalog::embedded().unwrap();
    let index = |c: &Catalog, name: &str| c.features.iter().position(|f| f.name == name).unwrap();
    let (lamps, sleep, pair, apart) = (
        index(&c, "Optical Indicator Control"),
        index(&c, "MIMO Sleep Mode"),
        index(&c, "Theft Deterrence"),
        index(&c, "Packet Capture"),
    );
    let phrases = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Words in no name, and name words ("uplink"), on one feature; the
    // words of another's own name on a second; one phrase on a third, its
    // words as two phrases on a fourth.
    c.features[lamps].about = phrases(&["quokka beacons", "marsupial uplink"]);
    c.features[sleep].about = phrases(&["mimo sleep mode", "sleep"]);
    c.features[pair].about = phrases(&["wombat lantern"]);
    c.features[apart].about = phrases(&["wombat", "lantern"]);
    let c = std::sync::Arc::new(c);
    let r = Router::new(c.clone());
    // Described in words no name has, it is found: by the words, by a pair
    // of them, as the reference scan finds it too.
    for text in ["the quokka beacons blink all night — which feature?", "marsupial uplink setup"] {
        assert_eq!(r.choose(text).map(|(i, _)| i), Some(lamps), "{text}");
        assert_eq!(choose(&c, text).map(|(i, _)| i), Some(lamps), "{text}");
    }
    // Name words are left to the name, alone and in pairs: they count for
    // nothing here.
    let q = r.lexicon.query("MIMO Sleep Mode", &r.names);
    assert_eq!(r.lexicon.about.scores(q.described(), &[sleep, lamps]), [0.0, 0.0]);
    // So are their abbreviations, alone or beside a name word (`NR SA` is
    // NR Standalone, `UL CA` Uplink Carrier Aggregation), and words that
    // say nothing of a feature; a word that only begins like a name word
    // is kept (`intermodulation` is not `inter`).
    let names_have = NameWords::of(&c);
    let kept = |p: &[&str]| described(&phrases(p), &names_have, &r.names);
    assert_eq!(kept(&["NR SA", "nr sa", "UL CA", "HO", "after", "more", "x"]), Vec::<String>::new());
    // In any case: `SCell` is a name word however it is written.
    assert_eq!(kept(&["SCell", "scells", "SCELL"]), Vec::<String>::new());
    assert_eq!(kept(&["pcap trace"]), ["pcap", "pcap~trac"]);
    assert_eq!(kept(&["intermodulation"]), ["intermodulation"]);
    // A phrase as written counts for more than its words apart.
    let q = r.lexicon.query("Wombat Lantern", &r.names);
    let scores = r.lexicon.about.scores(q.described(), &[pair, apart]);
    assert!(scores[0] > scores[1], "{scores:?}");
    assert!(scores[1] > 0.0, "{scores:?}");
}

#[test]
fn loading_a_plugin_leaves_the_features_descriptions_as_they_were() {
    let mut c = Catalog::embedded().unwrap();
    let before = Router::new(std::sync::Arc::new(c.clone()));
    let theft = c.features.iter().position(|f| f.name == "Theft Deterrence").unwrap();
    assert!(before.lexicon.about.by_stem["stolen"].contains(&theft));
    // A plugin described by words the features' descriptions use.
    let manifest = elex_host::registry::Manifest::from_toml(
        r#"
id = "site-alarms"
name = "Site Alarms"
description = "Power supply failure, battery backup, stolen or missing equipment."
keywords = ["alarm", "stolen equipment"]
"#,
    )
    .unwrap();
    c.add_plugin(&manifest).unwrap();
    let after = Router::new(std::sync::Arc::new(c));
    assert!(before.lexicon.about.by_stem == after.lexicon.about.by_stem);
}

#[test]
fn function_words_are_sorted_terms() {
    assert!(FUNCTION_WORDS.windows(2).all(|w| w[0] < w[1]));
    for w in FUNCTION_WORDS {
        assert_eq!(elex_text::terms(w), [*w], "{w} is not the term it makes");
    }
}
