//! A plugin's manifest: who the plugin is, what it answers (for the router),
//! the budgets it needs and the WASI capabilities it asks for.
//!
//! Authors write it as `plugin.toml` next to their source:
//!
//! ```toml
//! id = "weather-words"            # the agent id: a-z, 0-9, '-'
//! name = "Weather words"
//! description = "Explains weather terms: dew point, wind chill, humidity."
//! keywords = ["weather", "dew point", "humidity"]
//! examples = ["What does dew point mean?"]
//! capabilities = []               # e.g. ["env:TZ", "read:/data", "connect:10.0.0.5:443"]
//!
//! [budgets]                       # optional; the host's policy caps them
//! memory-mib = 64
//! time-ms = 500
//! fuel = 0                        # 0 or absent: no fuel limit asked
//! ```
//!
//! `elex build` embeds it in the component as the custom section
//! [`SECTION`] (canonical JSON), so it travels with the bytes: the digest a
//! registry entry signs covers it, and an unsigned file carries it too.
//! [`Manifest::of_component`] reads it back.

use serde::{Deserialize, Serialize};

use crate::Budgets;

/// Name of the custom section that carries the manifest.
pub const SECTION: &str = "elex:plugin-manifest";

/// Largest manifest section accepted, in bytes.
pub const MAX_BYTES: usize = 64 * 1024;

/// What a manifest may hold: the bounds [`Manifest::check`] applies.
pub mod limits {
    /// Longest id.
    pub const ID: usize = 64;
    /// Longest name.
    pub const NAME: usize = 80;
    /// Longest description.
    pub const DESCRIPTION: usize = 2000;
    /// Most keywords, and the longest one.
    pub const KEYWORDS: (usize, usize) = (32, 60);
    /// Most examples, and the longest one.
    pub const EXAMPLES: (usize, usize) = (16, 300);
}

/// A plugin's manifest. See the [module docs](self) for the file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// The agent id: 1–64 of `a-z`, `0-9` and `-`, starting with a letter.
    /// The router and `--agent` know the plugin by it; its learned state is
    /// stored under it.
    pub id: String,
    /// A name for people (and the router: its words count like a feature's
    /// name).
    pub name: String,
    /// What the plugin answers, in a sentence or two (the router weighs its
    /// words).
    #[serde(default)]
    pub description: String,
    /// Words and phrases questions for this plugin use.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A few questions it answers; a question like one of them goes to it.
    #[serde(default)]
    pub examples: Vec<String>,
    /// The budgets it needs; the host's budgets cap them.
    #[serde(default)]
    pub budgets: ManifestBudgets,
    /// WASI capabilities it asks for beyond the defaults every plugin gets
    /// (clocks, random, output into the log), each a [`Capability`]: it gets
    /// one only when the operator also grants it when loading the plugin.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Budgets as a manifest writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestBudgets {
    /// Linear memory, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Time per call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// Fuel per call (0: none asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
}

/// A WASI capability a manifest asks for, as written there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `env:NAME`: the host's environment variable NAME (when set).
    Env(String),
    /// `read:/guest/path`: a host directory (chosen by the operator), read
    /// only, at this absolute path in the guest.
    Read(String),
    /// `connect:IP:PORT`: TCP connections to this address (no name lookup).
    Connect(std::net::SocketAddr),
}

impl std::str::FromStr for Capability {
    type Err = String;

    fn from_str(text: &str) -> Result<Capability, String> {
        let bad = |why: &str| format!("capability {text:?}: {why}");
        match text.split_once(':') {
            Some(("env", name)) => {
                let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && name.len() <= 128;
                ok.then(|| Capability::Env(name.to_string()))
                    .ok_or_else(|| bad("env:NAME, NAME of A-Z, a-z, 0-9, _"))
            }
            Some(("read", path)) => {
                let ok = path.starts_with('/')
                    && path.len() <= 256
                    && !path.split('/').any(|part| part == ".." || part == ".")
                    && !path.chars().any(char::is_control);
                ok.then(|| Capability::Read(path.to_string()))
                    .ok_or_else(|| bad("read:/absolute/guest/path, without . or .."))
            }
            Some(("connect", addr)) => addr
                .parse()
                .map(Capability::Connect)
                .map_err(|_| bad("connect:IP:PORT (an IP address, no host name)")),
            _ => Err(bad("one of env:NAME, read:/guest/path, connect:IP:PORT")),
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capability::Env(name) => write!(f, "env:{name}"),
            Capability::Read(path) => write!(f, "read:{path}"),
            Capability::Connect(addr) => write!(f, "connect:{addr}"),
        }
    }
}

/// Why a manifest is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("plugin.toml is not valid: {0}")]
    Toml(String),
    #[error("the component's {SECTION} section is not a valid manifest: {0}")]
    Section(String),
    #[error("the component has {0} {SECTION} sections; it must have one")]
    Sections(usize),
    #[error("the component's {SECTION} section is {0} bytes; at most {MAX_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the component cannot be read: {0}")]
    Component(String),
    #[error("manifest field `{field}`: {detail}")]
    Field { field: &'static str, detail: String },
}

fn field(field: &'static str, detail: impl Into<String>) -> ManifestError {
    ManifestError::Field { field, detail: detail.into() }
}

impl Manifest {
    /// Parses `plugin.toml` text and checks it.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Toml(e.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks every field against its bounds ([`limits`]).
    pub fn check(&self) -> Result<(), ManifestError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= limits::ID
            && self.id.starts_with(|c: char| c.is_ascii_lowercase())
            && self.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(field(
                "id",
                format!("{:?}: 1 to {} of a-z, 0-9 and '-', starting with a letter", self.id, limits::ID),
            ));
        }
        let text = |name: &'static str, value: &str, max: usize, required: bool| {
            if required && value.trim().is_empty() {
                return Err(field(name, "is empty"));
            }
            if value.chars().count() > max {
                return Err(field(name, format!("longer than {max} characters")));
            }
            if value.chars().any(char::is_control) {
                return Err(field(name, "has control characters"));
            }
            Ok(())
        };
        text("name", &self.name, limits::NAME, true)?;
        text("description", &self.description, limits::DESCRIPTION, false)?;
        let list = |name: &'static str, items: &[String], (most, longest): (usize, usize)| {
            if items.len() > most {
                return Err(field(name, format!("{} entries; at most {most}", items.len())));
            }
            items.iter().try_for_each(|i| text(name, i, longest, true))
        };
        list("keywords", &self.keywords, limits::KEYWORDS)?;
        list("examples", &self.examples, limits::EXAMPLES)?;
        let b = &self.budgets;
        if b.memory_mib == Some(0) || b.time_ms == Some(0) {
            return Err(field("budgets", "memory-mib and time-ms must be above 0 when given"));
        }
        if b.memory_mib.is_some_and(|m| m > 1 << 20) {
            return Err(field("budgets", "memory-mib above 1 TiB"));
        }
        if self.capabilities.len() > 32 {
            return Err(field("capabilities", "more than 32"));
        }
        self.capabilities().map(|_| ())
    }

    /// The capabilities it asks for, parsed.
    pub fn capabilities(&self) -> Result<Vec<Capability>, ManifestError> {
        self.capabilities.iter().map(|c| c.parse().map_err(|e: String| field("capabilities", e))).collect()
    }

    /// The budgets it asks for, as a registry entry signs them.
    pub fn budgets(&self) -> Budgets {
        let b = &self.budgets;
        Budgets {
            memory_bytes: b.memory_mib.map(|m| m << 20),
            call_deadline_ms: b.time_ms,
            fuel_per_call: b.fuel.filter(|&f| f > 0),
        }
    }

    /// The manifest as the canonical JSON of its section.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `component` with this manifest embedded as its [`SECTION`] custom
    /// section (replacing a manifest it already had).
    pub fn embed(&self, component: &[u8]) -> Result<Vec<u8>, ManifestError> {
        let mut out = strip(component)?;
        let section = wasm_encoder::CustomSection {
            name: SECTION.into(),
            data: std::borrow::Cow::Owned(self.to_json().into_bytes()),
        };
        use wasm_encoder::{ComponentSection, Encode};
        out.push(section.id());
        section.encode(&mut out);
        Ok(out)
    }

    /// The manifest a component carries, if any; an error if it carries a
    /// malformed one, or more than one.
    pub fn of_component(component: &[u8]) -> Result<Option<Manifest>, ManifestError> {
        let sections = manifest_sections(component)?;
        match sections.as_slice() {
            [] => Ok(None),
            [(_, data)] => {
                if data.len() > MAX_BYTES {
                    return Err(ManifestError::TooLarge(data.len()));
                }
                let manifest: Manifest =
                    serde_json::from_slice(data).map_err(|e| ManifestError::Section(e.to_string()))?;
                manifest.check()?;
                Ok(Some(manifest))
            }
            more => Err(ManifestError::Sections(more.len())),
        }
    }
}

/// A manifest section found in a component: the range of its contents (its
/// name and data) and its data.
type Found<'a> = (std::ops::Range<usize>, &'a [u8]);

/// The top-level manifest sections of a component.
fn manifest_sections(component: &[u8]) -> Result<Vec<Found<'_>>, ManifestError> {
    use wasmparser::{Parser, Payload};
    let mut out = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|e| ManifestError::Component(e.to_string()))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(reader) if depth == 0 && reader.name() == SECTION => {
                let range = reader.range();
                let range = usize::try_from(range.start).unwrap_or(usize::MAX)
                    ..usize::try_from(range.end).unwrap_or(usize::MAX);
                out.push((range, reader.data()));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `component` without its manifest sections.
fn strip(component: &[u8]) -> Result<Vec<u8>, ManifestError> {
    if !wasmparser::Parser::is_component(component) {
        return Err(ManifestError::Component(String::from("not a WebAssembly component")));
    }
    let sections = manifest_sections(component)?;
    let mut out = Vec::with_capacity(component.len() + 1024);
    let mut at = 0;
    for (range, _) in sections {
        // `range` is the section's contents; its id byte and size come
        // before them.
        let start = section_start(component, range.start);
        out.extend_from_slice(&component[at..start]);
        at = range.end;
    }
    out.extend_from_slice(&component[at..]);
    Ok(out)
}

/// Where the section whose contents start at `contents` begins: back over
/// its LEB128 size to its id byte (0, a custom section).
fn section_start(bytes: &[u8], contents: usize) -> usize {
    let mut i = contents;
    // The size's last byte has its high bit clear; the ones before it set.
    i -= 1;
    while i > 0 && bytes[i - 1] & 0x80 != 0 {
        i -= 1;
    }
    i - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
id = "weather-words"
name = "Weather words"
description = "Explains weather terms."
keywords = ["weather", "dew point"]
examples = ["What does dew point mean?"]

[budgets]
memory-mib = 64
time-ms = 500
"#;

    /// The smallest component: the preamble of a component binary.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn parses_checks_and_round_trips_through_a_component() {
        let m = Manifest::from_toml(TOML).unwrap();
        assert_eq!(m.id, "weather-words");
        assert_eq!(
            m.budgets(),
            Budgets { memory_bytes: Some(64 << 20), call_deadline_ms: Some(500), fuel_per_call: None }
        );
        assert_eq!(Manifest::of_component(EMPTY_COMPONENT).unwrap(), None);
        let with = m.embed(EMPTY_COMPONENT).unwrap();
        assert_eq!(Manifest::of_component(&with).unwrap(), Some(m.clone()));
        // Embedding again replaces it: still one section, the new content.
        let mut other = m.clone();
        other.name = String::from("Weather words, second edition");
        let again = other.embed(&with).unwrap();
        assert_eq!(Manifest::of_component(&again).unwrap(), Some(other));
        // Stripped, the bytes are the original ones.
        assert_eq!(strip(&again).unwrap(), EMPTY_COMPONENT);
    }

    #[test]
    fn refuses_bad_fields_with_their_name() {
        let bad = [
            ("id = \"Weather\"\nname = \"x\"", "id"),
            ("id = \"1w\"\nname = \"x\"", "id"),
            ("id = \"w\"\nname = \"\"", "name"),
            ("id = \"w\"\nname = \"x\\u0007\"", "name"),
            ("id = \"w\"\nname = \"x\"\n[budgets]\nmemory-mib = 0", "budgets"),
        ];
        for (text, name) in bad {
            match Manifest::from_toml(text) {
                Err(ManifestError::Field { field, .. }) => assert_eq!(field, name, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            Manifest::from_toml("id = \"w\"\nname = \"x\"\ncapabilities = [\"net:all\"]"),
            Err(ManifestError::Field { field: "capabilities", .. })
        ));
        for (text, ok) in [
            ("env:TZ", true),
            ("env:A B", false),
            ("read:/data", true),
            ("read:data", false),
            ("read:/data/../etc", false),
            ("connect:127.0.0.1:80", true),
            ("connect:example.com:80", false),
        ] {
            let parsed = text.parse::<Capability>();
            assert_eq!(parsed.is_ok(), ok, "{text}: {parsed:?}");
            if let Ok(c) = parsed {
                assert_eq!(c.to_string(), text);
            }
        }
        let many = format!("id = \"w\"\nname = \"x\"\nexamples = [{}]", vec!["\"q\""; 17].join(","));
        assert!(matches!(Manifest::from_toml(&many), Err(ManifestError::Field { field: "examples", .. })));
        assert!(matches!(
            Manifest::from_toml("id = \"w\"\nname = \"x\"\nweird = 1"),
            Err(ManifestError::Toml(_))
        ));
    }

    #[test]
    fn refuses_a_forged_or_doubled_section() {
        let m = Manifest::from_toml(TOML).unwrap();
        let with = m.embed(EMPTY_COMPONENT).unwrap();
        // A second copy appended by hand.
        let mut doubled = with.clone();
        doubled.extend_from_slice(&with[EMPTY_COMPONENT.len()..]);
        assert!(matches!(Manifest::of_component(&doubled), Err(ManifestError::Sections(2))));
        // Not JSON.
        let section = wasm_encoder::CustomSection { name: SECTION.into(), data: b"{nope".into() };
        let mut forged = EMPTY_COMPONENT.to_vec();
        use wasm_encoder::{ComponentSection, Encode};
        forged.push(section.id());
        section.encode(&mut forged);
        assert!(matches!(Manifest::of_component(&forged), Err(ManifestError::Section(_))));
        // Truncated.
        assert!(Manifest::of_component(&with[..with.len() - 3]).is_err());
    }
}
