//! The tracker's whitelist file, parsed from text: one info-hash per line as 40 hex digits
//! (either case), blank lines and `#` comments (whole lines or after a hash) ignored. A bad
//! line is an error that names the line, so the operator can fix it; nothing is skipped
//! silently. Reading the file is the caller's job (`tracker_server::load_whitelist`).

use crate::types::InfoHash;
use std::collections::HashSet;

/// Most info-hashes one whitelist may hold: a million is ~60 MB of table, far beyond any
/// tracker we expect to run, and stops a wrong file (a disk image, a log) from eating memory.
pub const MAX_WHITELIST_LEN: usize = 1_000_000;
/// How much of a bad line an error quotes.
const QUOTE_LEN: usize = 60;

/// Why a whitelist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhitelistError {
    /// `line` counts from 1; `text` is the line without its comment, cut to a few dozen bytes.
    #[error("line {line}: {text:?} is not an info-hash (40 hex digits)")]
    BadLine { line: usize, text: String },
    #[error("more than {} info-hashes", MAX_WHITELIST_LEN)]
    TooMany,
}

/// The set of info-hashes listed in `text`. An empty list is allowed: it refuses everything.
pub fn parse_whitelist(text: &str) -> Result<HashSet<InfoHash>, WhitelistError> {
    let mut hashes = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let hash = parse_hex_hash(entry).ok_or_else(|| WhitelistError::BadLine {
            line: index + 1,
            text: quote(entry),
        })?;
        hashes.insert(hash);
        if hashes.len() > MAX_WHITELIST_LEN {
            return Err(WhitelistError::TooMany);
        }
    }
    Ok(hashes)
}

fn parse_hex_hash(text: &str) -> Option<InfoHash> {
    if text.len() != 40 {
        return None;
    }
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()?;
    <[u8; 20]>::try_from(bytes).ok().map(InfoHash)
}

/// The start of `text`, cut at a character boundary.
fn quote(text: &str) -> String {
    let mut end = text.len().min(QUOTE_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hashes_comments_and_blank_lines() {
        let text = "# allowed torrents\n\
                    \n\
                    0123456789abcdef0123456789ABCDEF01234567  # mixed case\n\
                    \t  ffffffffffffffffffffffffffffffffffffffff\r\n\
                    0123456789abcdef0123456789abcdef01234567\n";
        let got = parse_whitelist(text).unwrap();
        let mut first = [0u8; 20];
        for (i, b) in first.iter_mut().enumerate() {
            *b = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef][i % 8];
        }
        let want: HashSet<_> = [InfoHash(first), InfoHash([0xff; 20])].into();
        assert_eq!(got, want);
        assert!(parse_whitelist("").unwrap().is_empty());
        assert!(parse_whitelist("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = format!("{}\n# fine\nnot-a-hash # comment\n", "a".repeat(40));
        assert_eq!(
            parse_whitelist(&text),
            Err(WhitelistError::BadLine {
                line: 3,
                text: "not-a-hash".into()
            })
        );
        let short = parse_whitelist(&"a".repeat(39)).unwrap_err();
        assert!(short.to_string().starts_with("line 1: "), "{short}");
        let non_hex = format!("{}g", "a".repeat(39));
        assert!(parse_whitelist(&non_hex).is_err());
        let long = "é".repeat(100);
        let WhitelistError::BadLine { text, .. } = parse_whitelist(&long).unwrap_err() else {
            panic!("a long line is a bad line");
        };
        assert!(text.len() <= QUOTE_LEN);
    }
}
