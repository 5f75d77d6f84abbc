//! The feature catalog: the 593 RAN features agents are configured from.
//!
//! The default source is compiled in: `registry-index/catalog.jsonl`, made
//! by `cargo xtask catalog` from the 593 real features (`registry-index/
//! ran-features/features.jsonl`) plus generated, marked, parameter ranges,
//! KPI formulas and descriptions; one JSON object per line. Each line is
//! also the document an agent's `init` receives.

use serde::Deserialize;

use crate::error::{Error, Result};
use elex_host::AgentConfig;

/// The compiled-in catalog.
pub const EMBEDDED_CATALOG: &str = include_str!("../../registry-index/catalog.jsonl");

/// The real feature data the catalog is generated from (kept to check its
/// checksum).
#[cfg(test)]
const EMBEDDED_FEATURES: &str = include_str!("../../registry-index/ran-features/features.jsonl");

/// One feature: the fields the host routes on, plus the raw entry.
#[derive(Debug, Clone)]
pub struct Feature {
    /// `FAJ ddd dddd`: its agent's id. For a plugin, the plugin's id.
    pub faj: String,
    /// The feature's name (`MIMO Sleep Mode`).
    pub name: String,
    /// Its short name, when the source gives a non-empty one.
    pub acronym: Option<String>,
    /// Its category as the source gives it (`Energy Saving`, `NR/5G`, ...).
    pub category: Option<String>,
    /// Radio access technology as the source gives it (`LTE`, `NR`, ...).
    pub access: Option<String>,
    /// Managed-object parameter names (`MoClass.attribute`).
    pub parameters: Vec<String>,
    /// PM counter names.
    pub counters: Vec<String>,
    /// FAJ codes of features this one needs (some outside the catalog:
    /// external prerequisites).
    pub requires: Vec<String>,
    /// FAJ codes of features that cannot be active together with this one.
    pub conflicts: Vec<String>,
    /// FAJ codes of features that interact with this one.
    pub related: Vec<String>,
    /// The entry as JSON, given to the agent (a plugin's manifest, for a
    /// plugin).
    pub document: String,
    /// Phrases that describe it beyond its name, for routing: a plugin's
    /// description and keywords; a catalog feature's hand-written keywords
    /// (`registry-index/keywords.jsonl`: the words operators use for what
    /// it does, which its name lacks).
    pub about: Vec<String>,
    /// A plugin an operator loaded (`elex load`), not a RAN feature.
    pub plugin: bool,
    /// A plugin's example questions, from its manifest (empty for a
    /// feature of the catalog): the router sends questions like them to it.
    pub examples: Vec<String>,
}

#[derive(Deserialize)]
struct Entry {
    faj: String,
    name: String,
    #[serde(default)]
    acronym: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    access: Option<String>,
    #[serde(default)]
    parameters: Vec<NameOnly>,
    #[serde(default)]
    counters: Vec<serde_json::Value>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    conflicts: Vec<String>,
    #[serde(default)]
    related: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
}

#[derive(Deserialize)]
struct NameOnly {
    name: String,
}

impl Feature {
    /// The configuration an agent serving this feature is initialised with.
    pub fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            agent_id: self.faj.clone(),
            name: self.name.clone(),
            settings: Vec::new(),
            document: self.document.clone(),
        }
    }
}

/// Every feature, in source order.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The features in source order; a feature's position is its catalog
    /// index (the index of its agent in the swarm).
    pub features: Vec<Feature>,
}

impl Catalog {
    /// The compiled-in catalog.
    pub fn embedded() -> Result<Catalog> {
        Catalog::parse("registry-index/catalog.jsonl", EMBEDDED_CATALOG)
    }

    /// Parses JSON lines; `source_name` names the source in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Catalog> {
        let mut features = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let err =
                |detail: String| Error::Catalog { source_name: source_name.to_string(), line: i + 1, detail };
            let e: Entry = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
            if !seen.insert(e.faj.clone()) {
                return Err(err(format!("duplicate FAJ code {}", e.faj)));
            }
            let counters = e
                .counters
                .iter()
                .filter_map(|c| match c {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => o.get("name").and_then(|n| n.as_str()).map(String::from),
                    _ => None,
                })
                .collect();
            features.push(Feature {
                faj: e.faj,
                name: e.name,
                acronym: e.acronym.filter(|a| !a.is_empty()),
                category: e.category,
                access: e.access,
                parameters: e.parameters.into_iter().map(|p| p.name).collect(),
                counters,
                requires: e.requires,
                conflicts: e.conflicts,
                related: e.related,
                document: line.to_string(),
                about: e.keywords,
                plugin: false,
                examples: Vec::new(),
            });
        }
        Ok(Catalog { features })
    }

    /// Adds a plugin as an agent after the features, routed by its
    /// manifest (name, description, keywords; its examples are taught to
    /// the router by the runtime); returns its index. Refused when an agent
    /// with its id is there already.
    pub fn add_plugin(&mut self, manifest: &elex_host::registry::Manifest) -> Result<usize> {
        if self.features.iter().any(|f| f.faj == manifest.id) {
            return Err(Error::Plugin(format!("{:?}: an agent with that id is loaded already", manifest.id)));
        }
        let about = std::iter::once(&manifest.description)
            .chain(&manifest.keywords)
            .filter(|p| !p.trim().is_empty())
            .cloned()
            .collect();
        self.features.push(Feature {
            faj: manifest.id.clone(),
            name: manifest.name.clone(),
            acronym: None,
            category: Some(String::from("Plugin")),
            access: None,
            parameters: Vec::new(),
            counters: Vec::new(),
            requires: Vec::new(),
            conflicts: Vec::new(),
            related: Vec::new(),
            document: manifest.to_json(),
            about,
            plugin: true,
            examples: manifest.examples.clone(),
        });
        Ok(self.features.len() - 1)
    }

    /// The catalog without plugin `id` (unchanged if it has none).
    pub fn without_plugin(&self, id: &str) -> Catalog {
        Catalog { features: self.features.iter().filter(|f| !(f.plugin && f.faj == id)).cloned().collect() }
    }

    /// The feature with this FAJ code (`FAJ ddd dddd`).
    pub fn by_faj(&self, faj: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.faj == faj)
    }

    /// The catalog index of the agent an operator names: a feature, in any
    /// spelling of its FAJ code (`FAJ 121 3094`, `FAJ-121-3094`,
    /// `faj1213094`), or a plugin by its id.
    pub fn index_of(&self, spec: &str) -> crate::Result<usize> {
        let code =
            crate::router::faj_codes(spec).into_iter().next().unwrap_or_else(|| spec.trim().to_string());
        self.features.iter().position(|f| f.faj == code).ok_or_else(|| {
            crate::Error::NoAgent(format!("{spec:?}: no feature has that FAJ code and no plugin that id"))
        })
    }

    /// The feature an operator names, in any spelling of its FAJ code.
    pub fn feature(&self, spec: &str) -> crate::Result<&Feature> {
        self.index_of(spec).map(|i| &self.features[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_has_593_features() {
        let c = Catalog::embedded().unwrap();
        assert_eq!(c.features.len(), 593);
        let msm = c.by_faj("FAJ 121 3094").unwrap();
        assert_eq!(msm.name, "MIMO Sleep Mode");
    }

    #[test]
    fn embedded_feature_data_matches_its_checksum() {
        use sha2::{Digest, Sha256};
        let sum = Sha256::digest(EMBEDDED_FEATURES.as_bytes());
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ad50b0c18783a7ea9ef85f11442ad58f6636033dcde17d175f40d6601ae886b3");
    }

    #[test]
    fn malformed_and_duplicate_lines_name_the_line() {
        let e = Catalog::parse("t.jsonl", "{\"faj\":\"FAJ 1\",\"name\":\"A\"}\n{oops").unwrap_err();
        assert!(e.to_string().contains("t.jsonl, line 2"), "{e}");
        let e = Catalog::parse(
            "t.jsonl",
            "{\"faj\":\"FAJ 1\",\"name\":\"A\"}\n{\"faj\":\"FAJ 1\",\"name\":\"B\"}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("duplicate FAJ code FAJ 1"), "{e}");
    }
}
