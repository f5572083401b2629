//! Fuzz target: the built-in tracker's HTTP request reader, `parse_request_head`, on arbitrary
//! bytes (what a client of `spate tracker` sends). It must never panic. An accepted head has
//! a method of token characters, a path that starts with '/' and holds no '?', a query and
//! path of visible ASCII, and a blank line within the first `MAX_REQUEST_HEAD` bytes; a
//! refusal maps to a 4xx/5xx status; `http_response` of it carries the body it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::tracker::{http_response, parse_request_head, MAX_REQUEST_HEAD};

fuzz_target!(|data: &[u8]| {
    match parse_request_head(data) {
        Ok(Some(head)) => {
            let window = &data[..data.len().min(MAX_REQUEST_HEAD)];
            assert!(window.windows(4).any(|w| w == b"\r\n\r\n"));
            assert!(!head.method.is_empty());
            assert!(head.method.bytes().all(|b| b.is_ascii_graphic()));
            assert!(head.path.starts_with('/') && !head.path.contains('?'));
            let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
            assert!(visible(&head.path) && visible(&head.query));
        }
        Ok(None) => assert!(data.len() < MAX_REQUEST_HEAD),
        Err(e) => {
            let status = e.status();
            assert!((400..600).contains(&status), "{e}: {status}");
            let body = e.to_string();
            let response = http_response(status, body.as_bytes());
            assert!(response.ends_with(body.as_bytes()));
        }
    }
});
