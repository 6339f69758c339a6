//! Where the CLI's text goes. Standard output: a reader that went away
//! (`cairn check | head -1`) drops the rest of the output but not the
//! command's result (its exit status stands); any other failed write makes
//! the command fail. Standard error: control characters become `\xNN` (a file name in a
//! message must not drive the terminal or forge a line), and a failed write is
//! ignored rather than turned into a panic.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

/// How standard output fared: `None` while every write succeeded.
static FAILURE: Mutex<Option<Failure>> = Mutex::new(None);

#[derive(Clone, Debug)]
enum Failure {
    /// The reader went away (`cairn check | head -1`): the rest of the output
    /// is dropped, the command's own result stands.
    Closed,
    /// Anything else (`> /dev/full`): the command fails.
    Error(String),
}

/// Prints one line on standard output; after a failed write, prints nothing.
pub fn line(args: fmt::Arguments<'_>) {
    let _ = try_line(args);
}

/// Prints one line and flushes it, saying whether it reached its reader
/// (for what must not be lost, like a new recovery key).
pub fn try_line(args: fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut failure = FAILURE.lock().unwrap_or_else(|e| e.into_inner());
    if failure.is_some() {
        return Err(std::io::Error::other("standard output failed earlier"));
    }
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{args}").and_then(|()| out.flush());
    if let Err(e) = &written {
        *failure = Some(if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Error(e.to_string())
        });
    }
    written
}

/// Why standard output failed, if it failed otherwise than by its reader
/// going away (which is no error: the command's own result stands).
pub fn write_error() -> Option<String> {
    match &*FAILURE.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(Failure::Error(message)) => Some(message.clone()),
        _ => None,
    }
}

/// Prints one line on standard error, made safe for a terminal.
pub fn error_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", sanitize(text));
}

/// Control characters (newlines, escapes) as `\xNN`; everything else as is.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `println!` through [`line`].
macro_rules! out {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}

/// `eprintln!` through [`error_line`].
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::error_line(&format!($($arg)*)) };
}

pub(crate) use {err, out};

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::sanitize("a\nb\x1b[2Jc\u{7}"),
            "a\\x0ab\\x1b[2Jc\\x07"
        );
        assert_eq!(super::sanitize("Grüße 🎉"), "Grüße 🎉");
    }
}
