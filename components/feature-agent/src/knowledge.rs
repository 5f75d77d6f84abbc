//! A feature's catalog entry and the knowledge snippets built from it.
//!
//! The document given to `init` is one catalog entry as JSON, with the fields
//! of `../shared/data/ran-features/features.jsonl` (`faj`, `name`, `acronym`,
//! `cxc`, `access`, `licensed`, `category`, `requires`, `conflicts`,
//! `related`, `parameters`, `counters`, `kpis`). Parameters may carry
//! `min`/`max`/`default`/`unit` when the catalog knows them.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Feature {
    pub faj: String,
    pub name: String,
    #[serde(default)]
    pub acronym: Option<String>,
    #[serde(default)]
    pub cxc: Option<String>,
    #[serde(default)]
    pub access: Option<String>,
    #[serde(default)]
    pub licensed: bool,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Features it interacts with; used by routing, not in answers.
    #[serde(default)]
    #[allow(dead_code)]
    pub related: Vec<String>,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub counters: Vec<Named>,
    #[serde(default)]
    pub kpis: Vec<Named>,
}

#[derive(Debug, Deserialize)]
pub struct Parameter {
    pub name: String,
    #[serde(default)]
    pub relation: Option<String>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub default: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
}

/// A counter or KPI: accepts a bare string or an object with `name`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Named {
    Plain(String),
    Object { name: String },
}

impl Named {
    pub fn name(&self) -> &str {
        match self {
            Named::Plain(n) | Named::Object { name: n } => n,
        }
    }
}

/// What a snippet is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Overview,
    Dependencies,
    Parameter,
    Counter,
    Kpi,
}

/// One fact the agent can answer from.
pub struct Snippet {
    pub topic: Topic,
    /// The fact's own name (a parameter, counter or KPI name, or a topic).
    pub source: String,
    /// The sentence given in an answer.
    pub text: String,
}

impl Feature {
    pub fn title(&self) -> String {
        match &self.acronym {
            Some(a) if !a.is_empty() => format!("{} ({a}, {})", self.name, self.faj),
            _ => format!("{} ({})", self.name, self.faj),
        }
    }

    /// Every fact about the feature, each a snippet.
    pub fn snippets(&self) -> Vec<Snippet> {
        let mut out = Vec::new();
        let licence = match (&self.licensed, &self.cxc) {
            (true, Some(cxc)) => format!("a licensed feature (licence key {cxc})"),
            (true, None) => String::from("a licensed feature"),
            (false, _) => String::from("a feature that needs no licence"),
        };
        out.push(Snippet {
            topic: Topic::Overview,
            source: String::from("overview"),
            text: format!(
                "{} is {} in the {} category for {}.",
                self.title(),
                licence,
                self.category.as_deref().unwrap_or("uncategorised"),
                self.access.as_deref().unwrap_or("an unspecified access technology"),
            ),
        });
        out.push(Snippet {
            topic: Topic::Dependencies,
            source: String::from("prerequisites"),
            text: if self.requires.is_empty() {
                String::from("Prerequisites: the catalog lists no feature it requires.")
            } else {
                format!("Prerequisites: it requires {}.", self.requires.join(", "))
            },
        });
        out.push(Snippet {
            topic: Topic::Dependencies,
            source: String::from("conflicts"),
            text: if self.conflicts.is_empty() {
                String::from("Conflicts: the catalog lists no feature it conflicts with.")
            } else {
                format!("Conflicts: it cannot be active together with {}.", self.conflicts.join(", "))
            },
        });
        for p in &self.parameters {
            let mut text = format!(
                "Parameter {} ({}).",
                p.name,
                p.relation.as_deref().unwrap_or("related").to_ascii_lowercase()
            );
            if let (Some(min), Some(max)) = (p.min, p.max) {
                text.push_str(&format!(" Range {min} to {max}"));
                if let Some(unit) = &p.unit {
                    text.push_str(&format!(" {unit}"));
                }
                if let Some(d) = p.default {
                    text.push_str(&format!(", default {d}"));
                }
                text.push('.');
            }
            out.push(Snippet { topic: Topic::Parameter, source: p.name.clone(), text });
        }
        for c in &self.counters {
            out.push(Snippet {
                topic: Topic::Counter,
                source: String::from(c.name()),
                text: format!("PM counter {} shows the feature's effect.", c.name()),
            });
        }
        for k in &self.kpis {
            out.push(Snippet {
                topic: Topic::Kpi,
                source: String::from(k.name()),
                text: format!("KPI {} is affected by the feature.", k.name()),
            });
        }
        out
    }
}
