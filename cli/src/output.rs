//! Everything the CLI prints to stdout goes through here: [`outln!`] fails
//! with an error instead of panicking when stdout is closed (`elex … |
//! head -1`), and `main` turns that error into a quiet exit; [`clean`]
//! escapes control characters in text that comes from guests or the memory
//! graph, so an answer cannot drive the operator's terminal.

use std::borrow::Cow;
use std::io::Write;

/// `println!` that returns `anyhow::Result<()>`; a closed stdout is an
/// [`StdoutClosed`] error.
macro_rules! outln {
    () => { $crate::output::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}
pub(crate) use outln;

/// Stdout was closed by the reader: not a failure of the command.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes one line to stdout.
pub fn write_line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::anyhow!("cannot write to standard output: {e}")),
    }
}

/// Whether `e` (anywhere in its chain) is a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// `text` with control characters (other than tab) and Unicode direction
/// overrides escaped (`\u{1b}`), for printing to a terminal. Newlines are
/// escaped too: callers print multi-line text line by line.
pub fn clean(text: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain text\tok"), "plain text\tok");
        assert_eq!(clean("\x1b[2Jgone"), "\\u{1b}[2Jgone");
        assert_eq!(clean("a\rb\u{202e}c"), "a\\u{d}b\\u{202e}c");
        assert_eq!(clean("é ü 中"), "é ü 中");
    }
}
