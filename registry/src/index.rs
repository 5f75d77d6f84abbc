//! The text index: `<index>/<name>` holds one JSON object per line, one line
//! per version, sorted by version (like the crates.io index). Format
//! version [`FORMAT`]; documented in `registry-index/README.md`.
//!
//! A malformed line is reported with its file and line number and does not
//! affect the other entries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, io, write_atomic};

/// The index line format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Budgets an index entry asks for; absent fields take the host's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_call: Option<u64>,
}

/// One published version of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Line format version ([`FORMAT`]).
    pub format: u32,
    pub name: String,
    pub version: semver::Version,
    /// The world the component targets, `package:name/world@version`.
    pub world: String,
    /// `blake3:<64 hex>` of the component bytes.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Key id of the signer (see `signing::PublicKey::id`).
    pub signer: String,
    /// ed25519 signature of `signing::message(name, version, world, digest)`,
    /// 128 hex digits.
    pub signature: String,
    #[serde(default)]
    pub budgets: Budgets,
}

/// Component names: lower-case ASCII letters, digits and `-`, starting with a
/// letter, at most 64 characters (they are file names).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: format!("component name {name:?}"),
            detail: String::from(
                "use lower-case letters, digits and '-', starting with a letter (at most 64)",
            ),
        })
    }
}

/// Parses one line of `file`; `line` is 1-based, for the error.
pub fn parse_line(file: &Path, line: usize, text: &str) -> Result<Entry> {
    let err = |detail: String| Error::IndexLine { file: file.to_path_buf(), line, detail };
    let entry: Entry =
        serde_json::from_str(text).map_err(|e| err(format!("not a valid index entry: {e}")))?;
    if entry.format != FORMAT {
        return Err(err(format!("index format {} (this build reads {FORMAT})", entry.format)));
    }
    check_name(&entry.name).map_err(|e| err(e.to_string()))?;
    if file.file_name().is_some_and(|f| f != entry.name.as_str()) {
        return Err(err(format!("entry for {} in the file of another component", entry.name)));
    }
    let hex = entry.digest.strip_prefix("blake3:").unwrap_or("");
    if hex.len() != 64 || crate::unhex(hex).is_none() {
        return Err(err(format!("digest {:?} is not blake3:<64 hex digits>", entry.digest)));
    }
    if entry.signature.len() != 128 || crate::unhex(&entry.signature).is_none() {
        return Err(err(String::from("signature is not 128 hex digits")));
    }
    Ok(entry)
}

/// Parses a whole index file: the good entries, and an error per bad line.
pub fn parse_file(file: &Path, text: &str) -> (Vec<Entry>, Vec<Error>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(file, i + 1, line) {
            Ok(e) => entries.push(e),
            Err(e) => errors.push(e),
        }
    }
    (entries, errors)
}

/// An index folder.
pub struct Index {
    dir: PathBuf,
}

impl Index {
    pub fn new(dir: PathBuf) -> Index {
        Index { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every entry of `name` that parses, oldest version first. Bad lines are
    /// skipped here; [`Index::check`] reports them.
    pub fn entries(&self, name: &str) -> Result<Vec<Entry>> {
        check_name(name)?;
        let path = self.file(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        Ok(parse_file(&path, &text).0)
    }

    /// Names with an index file.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(Error::Io { path: self.dir.clone(), source: e }),
        };
        for item in rd {
            let item = item.map_err(io(&self.dir))?;
            if let Some(n) = item.file_name().to_str()
                && check_name(n).is_ok()
            {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every parse error in the index, by file and line.
    pub fn check(&self) -> Result<Vec<Error>> {
        let mut errors = Vec::new();
        for name in self.names()? {
            let path = self.file(&name);
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            errors.extend(parse_file(&path, &text).1);
        }
        Ok(errors)
    }

    /// The highest version of `name` matching `req`.
    pub fn resolve(&self, name: &str, req: &semver::VersionReq) -> Result<Entry> {
        let all = self.entries(name)?;
        let found = all.iter().filter(|e| req.matches(&e.version)).max_by(|a, b| a.version.cmp(&b.version));
        match found {
            Some(e) => Ok(e.clone()),
            None => Err(Error::NotFound {
                name: name.to_string(),
                req: req.to_string(),
                available: if all.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (available: {})",
                        all.iter().map(|e| e.version.to_string()).collect::<Vec<_>>().join(", ")
                    )
                },
            }),
        }
    }

    /// Adds an entry, keeping the file sorted by version. Lines that do not
    /// parse are kept as they are.
    pub fn add(&self, entry: &Entry) -> Result<()> {
        let path = self.file(&entry.name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let line = serde_json::to_string(entry)
            .map_err(|e| Error::Invalid { what: String::from("index entry"), detail: e.to_string() })?;
        let mut lines: Vec<(Option<semver::Version>, String)> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| (serde_json::from_str::<Entry>(l).ok().map(|e| e.version), l.to_string()))
            .collect();
        lines.push((Some(entry.version.clone()), line));
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n");
        out.push('\n');
        write_atomic(&path, out.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, version: &str) -> String {
        format!(
            r#"{{"format":1,"name":"{name}","version":"{version}","world":"elex:platform/plugin@0.1.0","digest":"blake3:{}","size":10,"signer":"abcd","signature":"{}"}}"#,
            "a".repeat(64),
            "b".repeat(128)
        )
    }

    #[test]
    fn a_garbled_line_names_file_and_line_and_spares_the_rest() {
        let file = Path::new("index/agent");
        let text = format!("{}\n{{\"format\":1,\"na\n{}\n", line("agent", "0.1.0"), line("agent", "0.2.0"));
        let (entries, errors) = parse_file(file, &text);
        assert_eq!(entries.len(), 2);
        assert_eq!(errors.len(), 1);
        let msg = errors[0].to_string();
        assert!(msg.starts_with("index/agent, line 2:"), "{msg}");
    }

    #[test]
    fn lines_are_validated() {
        let f = Path::new("index/agent");
        assert!(parse_line(f, 1, &line("agent", "0.1.0")).is_ok());
        assert!(parse_line(f, 1, &line("other", "0.1.0")).is_err(), "wrong file");
        assert!(parse_line(f, 1, &line("agent", "one")).is_err(), "bad version");
        assert!(parse_line(f, 1, &line("agent", "0.1.0").replace("\"format\":1", "\"format\":2")).is_err());
        assert!(parse_line(f, 1, &line("agent", "0.1.0").replace("blake3:", "sha256:")).is_err());
        assert!(parse_line(f, 1, &line("agent", "0.1.0").replace("bbbb", "zzzz")).is_err());
        assert!(parse_line(f, 1, &line("agent", "0.1.0").replace("}", ",\"extra\":1}")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_the_parser(s in "\\PC*") {
            let _ = parse_file(Path::new("index/x"), &s);
        }

        #[test]
        fn mutated_lines_never_panic(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut l = line("agent", "1.2.3").into_bytes();
            let i = pos % l.len();
            l[i] = byte;
            let _ = parse_file(Path::new("index/agent"), &String::from_utf8_lossy(&l));
        }
    }
}
