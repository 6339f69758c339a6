//! The recovery key: 64 characters from `0-9a-z` (about 330 bits), generated on
//! the device, shown once, never stored in the repository.

use std::fmt;

use zeroize::Zeroizing;

use crate::{Error, KeyProblem, random_bytes};

/// Number of characters in a recovery key.
pub const RECOVERY_KEY_LEN: usize = 64;

/// The key's alphabet, in order.
pub const RECOVERY_KEY_ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A parsed, normalized recovery key. Its `Debug` output is redacted and its
/// memory is wiped on drop.
#[derive(Clone)]
pub struct RecoveryKey {
    chars: Zeroizing<[u8; RECOVERY_KEY_LEN]>,
}

impl RecoveryKey {
    /// Generates a fresh key from the operating system's CSPRNG. Each character is
    /// uniform over the 36-letter alphabet (rejection sampling, no modulo bias).
    pub fn generate() -> Result<Self, Error> {
        let mut chars = Zeroizing::new([0u8; RECOVERY_KEY_LEN]);
        let mut filled = 0;
        let mut pool = Zeroizing::new([0u8; 128]);
        while filled < RECOVERY_KEY_LEN {
            random_bytes(pool.as_mut())?;
            for &b in pool.iter() {
                // 252 = 7 × 36: bytes at or above it would bias the low letters.
                if b < 252
                    && filled < RECOVERY_KEY_LEN
                    && let (Some(slot), Some(&c)) = (
                        chars.get_mut(filled),
                        RECOVERY_KEY_ALPHABET.get(usize::from(b % 36)),
                    )
                {
                    *slot = c;
                    filled += 1;
                }
            }
        }
        Ok(Self { chars })
    }

    /// Parses a key as a person may type it: spaces, tabs, newlines, dashes and
    /// a byte-order mark (editors on some systems start a saved file with one)
    /// are ignored, letters may be in either case. The error names the problem (length
    /// or position of a bad character) and never repeats the key.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut chars = Zeroizing::new([0u8; RECOVERY_KEY_LEN]);
        let mut n_found = 0usize;
        let mut bad_position = None;
        for c in text.chars() {
            if c.is_whitespace() || c == '-' || c == '\u{feff}' {
                continue;
            }
            n_found += 1;
            let lower = c.to_ascii_lowercase();
            let valid = lower.is_ascii_digit() || lower.is_ascii_lowercase();
            if !valid {
                bad_position.get_or_insert(n_found);
                continue;
            }
            if let Some(slot) = chars.get_mut(n_found - 1) {
                *slot = lower as u8;
            }
        }
        if let Some(position) = bad_position {
            return Err(Error::MalformedKey {
                problem: KeyProblem::BadCharacter { position },
            });
        }
        if n_found != RECOVERY_KEY_LEN {
            return Err(Error::MalformedKey {
                problem: KeyProblem::WrongLength { found: n_found },
            });
        }
        Ok(Self { chars })
    }

    /// Checks a key a caller chose (a frontend that derives its own, a
    /// user who typed one) before it protects a repository: it must be a
    /// well-formed key ([`RecoveryKey::parse`]) and look drawn at random,
    /// with at least [`MIN_DISTINCT_CHARACTERS`](crate::MIN_DISTINCT_CHARACTERS)
    /// distinct characters (so one repeated character, or a short pattern,
    /// is refused). Keys already protecting a repository are never refused
    /// by this: opening does not call it.
    pub fn check_chosen(&self) -> Result<(), Error> {
        let mut seen = [false; 256];
        for &c in self.chars.iter() {
            seen[usize::from(c)] = true;
        }
        let distinct = seen.iter().filter(|&&s| s).count();
        if distinct < crate::MIN_DISTINCT_CHARACTERS {
            return Err(Error::MalformedKey {
                problem: KeyProblem::TooSimple { distinct },
            });
        }
        Ok(())
    }

    /// The normalized key characters, for key derivation only.
    pub(crate) fn as_bytes(&self) -> &[u8; RECOVERY_KEY_LEN] {
        &self.chars
    }

    /// The key for showing to a person once: 16 groups of 4 separated by spaces.
    pub fn to_grouped_string(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(80));
        for (i, group) in self.chars.chunks(4).enumerate() {
            if i > 0 {
                out.push(' ');
            }
            for &c in group {
                out.push(char::from(c));
            }
        }
        out
    }

    /// The key as 64 plain characters (for writing a key file).
    pub fn to_plain_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.chars.iter().map(|&c| char::from(c)).collect())
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(<redacted>)")
    }
}

impl PartialEq for RecoveryKey {
    fn eq(&self, other: &Self) -> bool {
        // Not constant time: comparing keys is for tests and prompts, not a check
        // an attacker can time.
        self.chars[..] == other.chars[..]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chosen_keys_must_look_random() {
        let one = RecoveryKey::parse(&"a".repeat(64)).expect("well-formed");
        assert!(matches!(
            one.check_chosen(),
            Err(Error::MalformedKey {
                problem: KeyProblem::TooSimple { distinct: 1 }
            })
        ));
        let pattern = RecoveryKey::parse(&"0123456".repeat(10)[..64]).expect("well-formed");
        assert!(pattern.check_chosen().is_err());
        let eight = RecoveryKey::parse(&"01234567".repeat(8)).expect("well-formed");
        assert!(eight.check_chosen().is_ok());
        for _ in 0..100 {
            RecoveryKey::generate()
                .expect("random")
                .check_chosen()
                .expect("a random key is never too simple");
        }
        // The message names the problem, never the key.
        let shown = one.check_chosen().unwrap_err().to_string();
        assert!(!shown.contains("aaaa"), "{shown}");
    }

    use super::*;

    #[test]
    fn generated_keys_use_the_alphabet() {
        let k = RecoveryKey::generate().unwrap();
        let s = k.to_plain_string();
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|c| RECOVERY_KEY_ALPHABET.contains(&c)));
        assert_ne!(k, RecoveryKey::generate().unwrap());
    }

    #[test]
    fn generated_characters_cover_the_alphabet() {
        let mut seen = [0usize; 36];
        for _ in 0..60 {
            for c in RecoveryKey::generate().unwrap().to_plain_string().bytes() {
                let i = RECOVERY_KEY_ALPHABET.iter().position(|&a| a == c).unwrap();
                seen[i] += 1;
            }
        }
        // 3840 draws over 36 letters: every letter appears, none dominates.
        assert!(seen.iter().all(|&n| n > 30 && n < 250), "{seen:?}");
    }

    #[test]
    fn parse_accepts_grouped_mixed_case() {
        let k = RecoveryKey::generate().unwrap();
        let grouped = k.to_grouped_string().to_uppercase();
        assert_eq!(RecoveryKey::parse(&grouped).unwrap(), k);
        let dashed = grouped.replace(' ', "-");
        assert_eq!(RecoveryKey::parse(&format!("  {dashed}\n")).unwrap(), k);
    }

    /// Regression: a key file saved with a UTF-8 byte-order mark was refused.
    #[test]
    fn parse_ignores_a_byte_order_mark() {
        let k = RecoveryKey::generate().unwrap();
        let text = format!("\u{feff}{}\r\n", k.to_grouped_string().as_str());
        assert_eq!(RecoveryKey::parse(&text).unwrap(), k);
    }

    #[test]
    fn parse_names_the_problem() {
        let short = "abcd".repeat(15);
        assert_eq!(
            RecoveryKey::parse(&short).unwrap_err(),
            Error::MalformedKey {
                problem: KeyProblem::WrongLength { found: 60 }
            }
        );
        let mut bad = "a".repeat(64);
        bad.replace_range(9..10, "!");
        assert_eq!(
            RecoveryKey::parse(&bad).unwrap_err(),
            Error::MalformedKey {
                problem: KeyProblem::BadCharacter { position: 10 }
            }
        );
        assert!(RecoveryKey::parse(&"é".repeat(64)).is_err());
        assert!(RecoveryKey::parse("").is_err());
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let k = RecoveryKey::generate().unwrap();
        let plain = k.to_plain_string();
        assert!(!format!("{k:?}").contains(plain.as_str()));
        let mut text = plain.to_string();
        text.push('x');
        let err = RecoveryKey::parse(&text).unwrap_err().to_string();
        assert!(!err.contains(&plain[..8]));
    }
}
