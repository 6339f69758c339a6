//! Where the CLI's text goes. Standard output: a reader that went away
//! (`cairn check | head -1`) ends the program quietly, as it would any Unix
//! filter. Standard error: control characters become `\xNN` (a file name in a
//! message must not drive the terminal or forge a line), and a failed write is
//! ignored rather than turned into a panic.

use std::fmt;
use std::io::Write;

/// Prints one line on standard output.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
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
