//! A strict, allocation-free bencode scanner. It checks that a byte string is one
//! well-formed bencode value (bounded nesting, lengths that fit the input, canonical
//! integers) and finds the exact byte span of a dictionary entry, which the info-hash needs:
//! re-encoding a parsed value can change its bytes. Parsing into values is serde_bencode's
//! job; this module runs first so that serde_bencode only ever sees input it cannot choke on
//! (deep nesting would overflow its recursion, huge length prefixes would make it allocate).

use std::ops::Range;

/// Deepest list/dict nesting accepted; real torrents and tracker replies use under 10.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not valid bencode at byte {offset}: {reason}")]
pub struct BencodeError {
    pub offset: usize,
    pub reason: &'static str,
}

fn fail<T>(offset: usize, reason: &'static str) -> Result<T, BencodeError> {
    Err(BencodeError { offset, reason })
}

/// Checks that `buf` holds exactly one bencode value, nothing before or after it.
pub fn validate(buf: &[u8]) -> Result<(), BencodeError> {
    let end = skip_value(buf, 0, 0)?;
    if end != buf.len() {
        return fail(end, "trailing bytes after the value");
    }
    Ok(())
}

/// The length of the one value `buf` starts with (bytes may follow it, as the raw data of a
/// BEP 9 metadata piece follows its dictionary).
pub fn leading_value_len(buf: &[u8]) -> Result<usize, BencodeError> {
    skip_value(buf, 0, 0)
}

/// The integer stored under `key` in the top-level dictionary of `buf` (which must already
/// be valid), or None if there is none or it is not an integer that fits an i64.
pub fn dict_int(buf: &[u8], key: &[u8]) -> Option<i64> {
    let span = dict_value_span(buf, key).ok()??;
    let text = buf[span].strip_prefix(b"i")?.strip_suffix(b"e")?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The bytes of the string stored under `key` in the top-level dictionary of `buf` (which
/// must already be valid), or None if there is none or the value is not a string.
pub fn dict_bytes<'a>(buf: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let span = dict_value_span(buf, key).ok()??;
    if !buf[span.start].is_ascii_digit() {
        return None;
    }
    string_span(buf, span.start).ok().map(|s| &buf[s])
}

/// Returns the byte range of the value stored under `key` in the top-level dictionary of
/// `buf` (which must already be valid), or None if `buf` is not a dict or lacks the key.
pub fn dict_value_span(buf: &[u8], key: &[u8]) -> Result<Option<Range<usize>>, BencodeError> {
    if buf.first() != Some(&b'd') {
        return Ok(None);
    }
    let mut pos = 1;
    while buf.get(pos) != Some(&b'e') {
        let key_span = string_span(buf, pos)?;
        let value_start = key_span.end;
        let value_end = skip_value(buf, value_start, 1)?;
        if &buf[key_span] == key {
            return Ok(Some(value_start..value_end));
        }
        pos = value_end;
    }
    Ok(None)
}

/// Skips the value starting at `pos` and returns the offset just past it.
fn skip_value(buf: &[u8], pos: usize, depth: usize) -> Result<usize, BencodeError> {
    match buf.get(pos) {
        None => fail(pos, "input ends where a value should start"),
        Some(b'i') => skip_integer(buf, pos),
        Some(b'0'..=b'9') => Ok(string_span(buf, pos)?.end),
        Some(b'l') => skip_container(buf, pos, depth, false),
        Some(b'd') => skip_container(buf, pos, depth, true),
        Some(_) => fail(pos, "unexpected byte where a value should start"),
    }
}

fn skip_container(buf: &[u8], pos: usize, depth: usize, dict: bool) -> Result<usize, BencodeError> {
    if depth >= MAX_DEPTH {
        return fail(pos, "nesting deeper than 64 levels");
    }
    let mut pos = pos + 1;
    loop {
        match buf.get(pos) {
            None => return fail(pos, "list or dictionary is not terminated"),
            Some(b'e') => return Ok(pos + 1),
            Some(_) if dict => {
                if !buf[pos].is_ascii_digit() {
                    return fail(pos, "dictionary key is not a string");
                }
                pos = string_span(buf, pos)?.end;
                pos = skip_value(buf, pos, depth + 1)?;
            }
            Some(_) => pos = skip_value(buf, pos, depth + 1)?,
        }
    }
}

fn skip_integer(buf: &[u8], pos: usize) -> Result<usize, BencodeError> {
    let digits_start = pos + 1;
    let end = find_byte(buf, digits_start, b'e').ok_or(BencodeError {
        offset: pos,
        reason: "integer is not terminated",
    })?;
    let text = &buf[digits_start..end];
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.len() <= 19
        && digits.iter().all(u8::is_ascii_digit)
        && !(digits.len() > 1 && digits[0] == b'0')
        && text != b"-0";
    if !canonical {
        return fail(digits_start, "malformed integer");
    }
    Ok(end + 1)
}

/// The span of the bytes of the string starting at `pos` (after its `len:` prefix).
fn string_span(buf: &[u8], pos: usize) -> Result<Range<usize>, BencodeError> {
    let colon = find_byte(buf, pos, b':').ok_or(BencodeError {
        offset: pos,
        reason: "string length has no ':'",
    })?;
    let digits = &buf[pos..colon];
    if digits.is_empty()
        || digits.len() > 18
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return fail(pos, "malformed string length");
    }
    let len: usize = digits
        .iter()
        .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
    let start = colon + 1;
    if len > buf.len() - start {
        return fail(pos, "string runs past the end of the input");
    }
    Ok(start..start + len)
}

/// Finds `byte` at or after `from`, looking at most 20 bytes ahead (the longest number).
fn find_byte(buf: &[u8], from: usize, byte: u8) -> Option<usize> {
    let window = buf.get(from..)?;
    window
        .iter()
        .take(21)
        .position(|&b| b == byte)
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_values() {
        validate(b"d3:cow3:moo4:spaml1:a1:bi42eee").unwrap();
        validate(b"i-3e").unwrap();
        validate(b"0:").unwrap();
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            &b"i03e"[..],
            b"i-0e",
            b"ie",
            b"5:abc",
            b"l",
            b"d1:ae",
            b"di1ei2ee",
            b"i1ei2e",
            b"99999999999999999999:x",
            b"x",
        ] {
            assert!(validate(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_deep_nesting_without_recursing_forever() {
        let mut deep = vec![b'l'; 100_000];
        deep.extend(vec![b'e'; 100_000]);
        assert_eq!(
            validate(&deep).unwrap_err().reason,
            "nesting deeper than 64 levels"
        );
    }

    #[test]
    fn finds_the_exact_span_of_a_key() {
        let buf = b"d8:announce3:url4:infod4:name1:xe5:zzzzzi1ee";
        let span = dict_value_span(buf, b"info").unwrap().unwrap();
        assert_eq!(&buf[span], b"d4:name1:xe");
        assert_eq!(dict_value_span(buf, b"nope").unwrap(), None);
    }

    #[test]
    fn reads_a_leading_value_and_its_integers() {
        let buf = b"d8:msg_typei1e5:piecei2e10:total_sizei34567eeRAW";
        let len = leading_value_len(buf).unwrap();
        assert_eq!(&buf[len..], b"RAW");
        let dict = &buf[..len];
        assert_eq!(dict_int(dict, b"piece"), Some(2));
        assert_eq!(dict_int(dict, b"total_size"), Some(34567));
        assert_eq!(dict_int(dict, b"nope"), None);
        assert_eq!(dict_int(b"d1:a3:xyze", b"a"), None);
        assert_eq!(dict_int(b"d1:ai-7ee", b"a"), Some(-7));
        assert_eq!(dict_int(b"d1:ai99999999999999999999ee", b"a"), None);
    }

    #[test]
    fn reads_a_string_value() {
        let buf = b"d5:added6:abcdef1:ai3e1:e0:e";
        assert_eq!(dict_bytes(buf, b"added"), Some(&b"abcdef"[..]));
        assert_eq!(dict_bytes(buf, b"e"), Some(&b""[..]));
        assert_eq!(dict_bytes(buf, b"a"), None, "an integer is not a string");
        assert_eq!(dict_bytes(buf, b"nope"), None);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = validate(&bytes);
            let _ = dict_value_span(&bytes, b"info");
        }
    }
}
