//! The text index: `<index>/<name>` holds one JSON object per line, one line
//! per version, sorted by version (like the crates.io index). Format
//! version [`FORMAT`]; documented in `registry-index/README.md`.
//!
//! Index files are read as regular files (no links, no FIFOs) of at most
//! [`MAX_INDEX_FILE_BYTES`]. A malformed line is reported with its file and
//! line number, and an unreadable file with its path; neither affects the
//! other entries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{Links, read_regular_text};
use crate::signing::KeyId;
use crate::{Error, Result, write_atomic};

/// The index line format this build reads and writes. Format 1 lines were
/// signed with a message that did not cover `size` and `budgets`; they are
/// refused with a request to re-sign.
pub const FORMAT: u32 = 2;

/// The largest index file (all versions of one name) elex reads or writes:
/// 4 MiB, some 8,000 versions.
pub const MAX_INDEX_FILE_BYTES: u64 = 4 << 20;

/// Budgets an index entry asks for; absent fields take the host's defaults.
/// Covered by the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Line format version ([`FORMAT`]).
    pub format: u32,
    pub name: String,
    pub version: semver::Version,
    /// The world the component targets, `package:name/world@version`.
    pub world: String,
    /// `blake3:<64 lower-case hex>` of the component bytes.
    pub digest: String,
    /// Size of the component in bytes (at most
    /// [`crate::store::MAX_COMPONENT_BYTES`]).
    pub size: u64,
    /// Key id of the signer (see [`KeyId`]; read in any spelling
    /// [`KeyId::parse`] accepts, written in lower case).
    pub signer: KeyId,
    /// ed25519 signature of [`Entry::signed_message`], 128 hex digits.
    pub signature: String,
    #[serde(default)]
    pub budgets: Budgets,
}

impl Entry {
    /// The bytes the signature covers ([`crate::signing::message`] of name,
    /// version, world, digest, size and budgets).
    pub fn signed_message(&self) -> Vec<u8> {
        crate::signing::message(
            &self.name,
            &self.version,
            &self.world,
            &self.digest,
            self.size,
            &self.budgets,
        )
    }
}

/// Component names: lower-case ASCII letters, digits and `-`, starting with a
/// letter, at most 64 characters (they are file names).
pub fn check_name(name: &str) -> Result<()> {
    if is_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: format!("component name {}", crate::signing::shown(name)),
            detail: String::from(
                "use lower-case letters, digits and '-', starting with a letter (at most 64)",
            ),
        })
    }
}

pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `digest` is `blake3:` and 64 lower-case hex digits.
pub(crate) fn is_digest(digest: &str) -> bool {
    digest
        .strip_prefix("blake3:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Parses one line of `file`; `line` is 1-based, for the error.
pub fn parse_line(file: &Path, line: usize, text: &str) -> Result<Entry> {
    let err = |detail: String| Error::IndexLine { file: file.to_path_buf(), line, detail };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(format!("not a valid index entry: {e}")))?;
    // The format first: a line of another format may have other fields.
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(1) => {
            return Err(err(format!(
                "index format 1: its signature does not cover the size and budgets; re-sign it \
                 (`elex sign`, or `cargo xtask build` for the development registry) to write a \
                 format {FORMAT} line"
            )));
        }
        Some(f) => return Err(err(format!("index format {f} (this build reads {FORMAT})"))),
        None => return Err(err(String::from("not a valid index entry: no numeric `format` field"))),
    }
    let entry: Entry =
        serde_json::from_value(value).map_err(|e| err(format!("not a valid index entry: {e}")))?;
    check_name(&entry.name).map_err(|e| err(e.to_string()))?;
    if file.file_name().is_some_and(|f| f != entry.name.as_str()) {
        return Err(err(format!("entry for {} in the file of another component", entry.name)));
    }
    if !is_digest(&entry.digest) {
        return Err(err(format!(
            "digest {} is not blake3:<64 lower-case hex digits>",
            crate::signing::shown(&entry.digest)
        )));
    }
    if entry.size > crate::store::MAX_COMPONENT_BYTES {
        return Err(err(format!(
            "size {} is above the limit of {} bytes",
            entry.size,
            crate::store::MAX_COMPONENT_BYTES
        )));
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

/// Every entry of an index that parses, and every problem found on the way.
#[derive(Debug, Default)]
pub struct Scan {
    /// Good entries, by name, then in file order (oldest version first).
    pub entries: Vec<Entry>,
    /// Unreadable index files ([`Error::IndexFile`]) and bad lines
    /// ([`Error::IndexLine`]), in name order.
    pub problems: Vec<Error>,
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

    /// The text of `name`'s index file, `None` when there is none. Read as
    /// a regular file (a link, FIFO or device is refused without blocking)
    /// of at most [`MAX_INDEX_FILE_BYTES`], in UTF-8.
    fn read(&self, name: &str) -> Result<Option<String>> {
        let path = self.file(name);
        match read_regular_text(&path, MAX_INDEX_FILE_BYTES, Links::Refuse) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::IndexFile { file: path, source: e }),
        }
    }

    /// Every entry of `name` that parses, oldest version first. Bad lines are
    /// skipped here ([`Index::scan`] reports them); an unreadable index file
    /// is an error for this name only.
    pub fn entries(&self, name: &str) -> Result<Vec<Entry>> {
        check_name(name)?;
        let path = self.file(name);
        Ok(self.read(name)?.map(|text| parse_file(&path, &text).0).unwrap_or_default())
    }

    /// Names with an index file (whatever the file's state: [`Index::scan`]
    /// reads them).
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.list()?.0)
    }

    /// Names in the folder, and the folder items that could not be listed.
    fn list(&self) -> Result<(Vec<String>, Vec<Error>)> {
        let mut names = Vec::new();
        let mut problems = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((names, problems)),
            Err(e) => return Err(Error::Io { path: self.dir.clone(), source: e }),
        };
        for item in rd {
            match item {
                Ok(item) => {
                    if let Some(n) = item.file_name().to_str()
                        && is_name(n)
                    {
                        names.push(n.to_string());
                    }
                }
                Err(e) => problems.push(Error::IndexFile { file: self.dir.clone(), source: e }),
            }
        }
        names.sort();
        Ok((names, problems))
    }

    /// Reads every index file: the entries that parse and every problem (an
    /// unreadable file, a bad line), each reported without stopping the
    /// others. Fails only when the index folder itself cannot be listed.
    pub fn scan(&self) -> Result<Scan> {
        let (names, mut problems) = self.list()?;
        let mut entries = Vec::new();
        for name in names {
            let path = self.file(&name);
            match self.read(&name) {
                Ok(Some(text)) => {
                    let (good, bad) = parse_file(&path, &text);
                    entries.extend(good);
                    problems.extend(bad);
                }
                // Removed since it was listed.
                Ok(None) => {}
                Err(e) => problems.push(e),
            }
        }
        Ok(Scan { entries, problems })
    }

    /// Every problem in the index: unreadable files and bad lines, by file
    /// (and line).
    pub fn check(&self) -> Result<Vec<Error>> {
        Ok(self.scan()?.problems)
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
    /// parse are kept as they are. Refused when the file would grow past
    /// [`MAX_INDEX_FILE_BYTES`].
    pub fn add(&self, entry: &Entry) -> Result<()> {
        check_name(&entry.name)?;
        let path = self.file(&entry.name);
        let text = self.read(&entry.name)?.unwrap_or_default();
        let line = serde_json::to_string(entry)
            .map_err(|e| Error::Invalid { what: String::from("index entry"), detail: e.to_string() })?;
        let version_of = |l: &str| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("version")?.as_str().and_then(|s| semver::Version::parse(s).ok()))
        };
        let mut lines: Vec<(Option<semver::Version>, String)> =
            text.lines().filter(|l| !l.trim().is_empty()).map(|l| (version_of(l), l.to_string())).collect();
        lines.push((Some(entry.version.clone()), line));
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n");
        out.push('\n');
        if out.len() as u64 > MAX_INDEX_FILE_BYTES {
            return Err(Error::IndexFile {
                file: path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("would grow past the limit of {MAX_INDEX_FILE_BYTES} bytes"),
                ),
            });
        }
        write_atomic(&path, out.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNER: &str = "3f2a9c01d4e5b6a7";

    fn line(name: &str, version: &str) -> String {
        format!(
            r#"{{"format":2,"name":"{name}","version":"{version}","world":"elex:platform/plugin@0.1.0","digest":"blake3:{}","size":10,"signer":"{SIGNER}","signature":"{}"}}"#,
            "a".repeat(64),
            "b".repeat(128)
        )
    }

    #[test]
    fn a_garbled_line_names_file_and_line_and_spares_the_rest() {
        let file = Path::new("index/agent");
        let text = format!("{}\n{{\"format\":2,\"na\n{}\n", line("agent", "0.1.0"), line("agent", "0.2.0"));
        let (entries, errors) = parse_file(file, &text);
        assert_eq!(entries.len(), 2);
        assert_eq!(errors.len(), 1);
        let msg = errors[0].to_string();
        assert!(msg.starts_with("index/agent, line 2:"), "{msg}");
    }

    #[test]
    fn lines_are_validated() {
        let f = Path::new("index/agent");
        let good = line("agent", "0.1.0");
        let e = parse_line(f, 1, &good).unwrap();
        assert_eq!(e.signer.to_string(), SIGNER);
        assert!(parse_line(f, 1, &line("other", "0.1.0")).is_err(), "wrong file");
        assert!(parse_line(f, 1, &line("agent", "one")).is_err(), "bad version");
        assert!(parse_line(f, 1, &good.replace("\"format\":2", "\"format\":3")).is_err());
        assert!(parse_line(f, 1, &good.replace("\"format\":2", "\"format\":\"2\"")).is_err());
        assert!(parse_line(f, 1, &good.replace("blake3:", "sha256:")).is_err());
        assert!(parse_line(f, 1, &good.replace("aaaa", "AAAA")).is_err(), "digests are lower case");
        assert!(parse_line(f, 1, &good.replace("bbbb", "zzzz")).is_err());
        assert!(parse_line(f, 1, &good.replace('}', ",\"extra\":1}")).is_err());
        assert!(parse_line(f, 1, &good.replace("\"size\":10", "\"size\":999999999999")).is_err());
        // The signer in any spelling of the one key-id parser; nothing else.
        let upper = good.replace(SIGNER, &format!(" {} ", SIGNER.to_uppercase()));
        assert_eq!(parse_line(f, 1, &upper).unwrap().signer, e.signer);
        for bad in ["", "abcd", "not hex at all!!"] {
            let msg = parse_line(f, 1, &good.replace(SIGNER, bad)).unwrap_err().to_string();
            assert!(msg.contains("key id"), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn format_1_lines_are_refused_with_a_request_to_re_sign() {
        let f = Path::new("index/agent");
        let old = line("agent", "0.1.0").replace("\"format\":2", "\"format\":1");
        let msg = parse_line(f, 3, &old).unwrap_err().to_string();
        assert!(msg.starts_with("index/agent, line 3: index format 1"), "{msg}");
        assert!(msg.contains("re-sign"), "{msg}");
    }

    #[test]
    fn entries_round_trip_in_the_written_form() {
        let f = Path::new("index/agent");
        let e = parse_line(f, 1, &line("agent", "0.1.0")).unwrap();
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(parse_line(f, 1, &text).unwrap(), e);
        let mut b = e.clone();
        b.budgets.fuel_per_call = Some(5);
        assert_eq!(parse_line(f, 1, &serde_json::to_string(&b).unwrap()).unwrap(), b);
        assert_ne!(b.signed_message(), e.signed_message());
    }

    fn index_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path().join("index"));
        std::fs::create_dir_all(index.dir()).unwrap();
        for (name, text) in files {
            std::fs::write(index.dir().join(name), text).unwrap();
        }
        (dir, index)
    }

    #[test]
    fn one_bad_index_file_does_not_stop_the_others() {
        let (_dir, index) = index_with(&[
            ("agent", &format!("{}\n", line("agent", "0.1.0"))),
            ("bad-utf8", ""),
            ("big", ""),
            ("zeta", &format!("{}\n{{\n", line("zeta", "1.0.0"))),
        ]);
        std::fs::write(index.dir().join("bad-utf8"), b"\xff\xfe\n").unwrap();
        let f = std::fs::File::create(index.dir().join("big")).unwrap();
        f.set_len(MAX_INDEX_FILE_BYTES + 1).unwrap();
        std::fs::create_dir(index.dir().join("folder")).unwrap();
        let scan = index.scan().unwrap();
        let names: Vec<_> = scan.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["agent", "zeta"]);
        let problems: Vec<_> = scan.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].contains("bad-utf8") && problems[0].contains("UTF-8"), "{}", problems[0]);
        assert!(problems[1].contains("big") && problems[1].contains("limit of 4194304"), "{}", problems[1]);
        assert!(problems[2].contains("folder") && problems[2].contains("directory"), "{}", problems[2]);
        assert!(problems[3].contains("zeta, line 2"), "{}", problems[3]);
        assert_eq!(index.check().unwrap().len(), 4);
        assert_eq!(index.entries("agent").unwrap().len(), 1);
        assert!(index.entries("big").is_err());
        assert!(index.entries("missing").unwrap().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn fifo_and_linked_index_files_are_refused_without_blocking() {
        let (_dir, index) = index_with(&[("agent", &format!("{}\n", line("agent", "0.1.0")))]);
        let fifo = index.dir().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        std::os::unix::fs::symlink("/dev/zero", index.dir().join("zero")).unwrap();
        let scan = index.scan().unwrap();
        assert_eq!(scan.entries.len(), 1);
        let problems: Vec<_> = scan.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("fifo") && problems[0].contains("FIFO"), "{}", problems[0]);
        assert!(problems[1].contains("zero") && problems[1].contains("symbolic link"), "{}", problems[1]);
        let e = index.resolve("fifo", &semver::VersionReq::STAR).unwrap_err();
        assert!(matches!(e, Error::IndexFile { .. }), "{e}");
        assert!(index.add(&parse_line(Path::new("index/fifo"), 1, &line("fifo", "1.0.0")).unwrap()).is_err());
    }

    #[test]
    fn add_keeps_versions_sorted_and_the_file_bounded() {
        let (_dir, index) = index_with(&[]);
        let f = Path::new("index/agent");
        for v in ["0.2.0", "0.1.0", "1.0.0"] {
            index.add(&parse_line(f, 1, &line("agent", v)).unwrap()).unwrap();
        }
        let versions: Vec<_> =
            index.entries("agent").unwrap().iter().map(|e| e.version.to_string()).collect();
        assert_eq!(versions, ["0.1.0", "0.2.0", "1.0.0"]);
        let one = format!("{}\n", line("agent", "0.0.1"));
        let big = one.repeat(MAX_INDEX_FILE_BYTES as usize / one.len());
        std::fs::write(index.dir().join("agent"), big).unwrap();
        let e = index.add(&parse_line(f, 1, &line("agent", "9.0.0")).unwrap()).unwrap_err();
        assert!(e.to_string().contains("would grow past"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_the_parser(s in "\\PC*") {
            let _ = parse_file(Path::new("index/x"), &s);
        }

        #[test]
        fn no_bytes_panic_the_parser(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_file(Path::new("index/agent"), &String::from_utf8_lossy(&b));
        }

        #[test]
        fn mutated_lines_never_panic(pos in 0usize..400, byte in proptest::num::u8::ANY) {
            let mut l = line("agent", "1.2.3").into_bytes();
            let i = pos % l.len();
            l[i] = byte;
            let _ = parse_file(Path::new("index/agent"), &String::from_utf8_lossy(&l));
        }

        #[test]
        fn lines_with_any_field_values_never_panic(
            format in proptest::num::u64::ANY,
            version in "\\PC{0,20}",
            digest in "\\PC{0,80}",
            signer in "\\PC{0,70}",
            size in proptest::num::u64::ANY,
            budget in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let mut v: serde_json::Value = serde_json::from_str(&line("agent", "1.0.0")).unwrap();
            v["format"] = format.into();
            v["version"] = version.into();
            v["digest"] = digest.into();
            v["signer"] = signer.into();
            v["size"] = size.into();
            v["budgets"] = serde_json::json!({ "fuel_per_call": budget });
            let _ = parse_line(Path::new("index/agent"), 1, &v.to_string());
        }
    }
}
