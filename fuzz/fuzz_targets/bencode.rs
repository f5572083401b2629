//! Fuzz target: the strict bencode scanner, `bencode::validate` and `dict_value_span`. Neither
//! may panic on any input. The first byte picks a key length (0-7) and the key is taken from
//! the next bytes; the rest is the buffer. The whole input is also scanned with the key
//! "info", so torrent-shaped seeds stay useful. A span that is found must lie inside the
//! buffer, follow the key's own bytes, and (in a valid buffer) be one valid value itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::bencode::{dict_value_span, validate};

fuzz_target!(|data: &[u8]| {
    check(data, b"info");
    if let Some((&first, rest)) = data.split_first() {
        let key_len = usize::from(first % 8).min(rest.len());
        let (key, buf) = rest.split_at(key_len);
        check(buf, key);
    }
});

fn check(buf: &[u8], key: &[u8]) {
    let valid = validate(buf);
    if let Err(e) = &valid {
        assert!(
            e.offset <= buf.len(),
            "error offset {} past the end {}",
            e.offset,
            buf.len()
        );
    }
    // Documented for valid buffers, but it must not panic on others either (it returns a
    // Result); only valid buffers are held to the span invariants beyond bounds.
    let span = dict_value_span(buf, key);
    if valid.is_err() {
        if let Ok(Some(r)) = span {
            assert!(r.start <= r.end && r.end <= buf.len());
        }
        return;
    }
    match span {
        Err(e) => panic!("dict_value_span failed on a valid buffer: {e}"),
        Ok(None) => {}
        Ok(Some(r)) => {
            assert!(
                r.start < r.end && r.end <= buf.len(),
                "span {r:?} of {}",
                buf.len()
            );
            let mut prefix = format!("{}:", key.len()).into_bytes();
            prefix.extend_from_slice(key);
            assert!(
                buf[..r.start].ends_with(&prefix),
                "span does not follow its key"
            );
            assert!(
                validate(&buf[r.clone()]).is_ok(),
                "span {r:?} is not one value"
            );
        }
    }
}
