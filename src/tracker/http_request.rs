//! The few bytes of HTTP/1.x the built-in tracker needs: reading one request head (only the
//! request line matters; headers are skipped up to the blank line) and writing one short
//! response that closes the connection. A tracker answers GETs with small bodies, which is
//! why this is enough; anything richer (the client side) goes through reqwest. Pure: bytes
//! in, values out. The socket and its timeouts belong to `tracker_server`.

/// Longest request head accepted, request line and headers together. A tracker request is a
/// few hundred bytes (a scrape of 74 hashes about 4.5 KiB); anything longer is refused.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Longest method name accepted (the longest standard one, "OPTIONS", has 7 letters).
const MAX_METHOD_LEN: usize = 16;
/// How much of a bad version an error quotes.
const MAX_QUOTE_LEN: usize = 16;

/// The request line of one request. The target is split at the first '?': the query is
/// still percent-encoded, as the tracker core's query parsers expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// As sent; methods are case-sensitive.
    pub method: String,
    /// Starts with '/' (an absolute-form target is reduced to its path).
    pub path: String,
    /// Empty when the target has no '?'.
    pub query: String,
}

/// Why a request head was refused; `status` gives the HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head longer than {} bytes", MAX_REQUEST_HEAD)]
    HeadTooLarge,
    #[error("malformed request line: {0}")]
    BadRequestLine(&'static str),
    #[error("HTTP version {0:?} is not supported, only HTTP/1.x")]
    UnsupportedVersion(String),
}

impl HttpError {
    /// The response status for this error: 431, 400 or 505.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::BadRequestLine(_) => 400,
            HttpError::UnsupportedVersion(_) => 505,
        }
    }
}

/// Reads the request head at the start of `buf`. `Ok(None)`: the head is not complete yet,
/// read more (after `MAX_REQUEST_HEAD` bytes without the blank line, it is an error). A
/// malformed request line is refused as soon as its line is complete, without waiting for
/// the headers. Bytes after the head (a body, a pipelined request) are ignored.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let window = &buf[..buf.len().min(MAX_REQUEST_HEAD)];
    let Some(line_end) = find(window, b"\r\n") else {
        return if buf.len() >= MAX_REQUEST_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let head = parse_request_line(&window[..line_end])?;
    // The request line ends with CRLF; the head ends at the first empty line after it.
    if find(&window[line_end..], b"\r\n\r\n").is_some() {
        Ok(Some(head))
    } else if buf.len() >= MAX_REQUEST_HEAD {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(None)
    }
}

/// `method SP request-target SP HTTP-version` (RFC 9112, section 3).
fn parse_request_line(line: &[u8]) -> Result<RequestHead, HttpError> {
    let line = std::str::from_utf8(line).map_err(|_| HttpError::BadRequestLine("not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine(
            "expected method, target and version separated by single spaces",
        ));
    };
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.bytes().all(is_token_char) {
        return Err(HttpError::BadRequestLine("invalid method"));
    }
    check_version(version)?;
    let target = origin_form(target)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
    })
}

/// Accepts `HTTP/1.0`, `HTTP/1.1` and any other `HTTP/1.<digit>`.
fn check_version(version: &str) -> Result<(), HttpError> {
    let minor = version.strip_prefix("HTTP/1.");
    if minor.is_some_and(|m| m.len() == 1 && m.bytes().all(|b| b.is_ascii_digit())) {
        return Ok(());
    }
    if version.starts_with("HTTP/") && version.bytes().all(|b| b.is_ascii_graphic()) {
        let mut quoted = version.to_owned();
        quoted.truncate(MAX_QUOTE_LEN);
        return Err(HttpError::UnsupportedVersion(quoted));
    }
    Err(HttpError::BadRequestLine("invalid HTTP version"))
}

/// The path-and-query of a target: origin-form as is, absolute-form (`http://host/p?q`,
/// which servers must accept) without its scheme and authority.
fn origin_form(target: &str) -> Result<&str, HttpError> {
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::BadRequestLine("invalid character in the target"));
    }
    if target.starts_with('/') {
        return Ok(target);
    }
    let scheme_len = ["http://", "https://"].into_iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme).then_some(scheme.len())
    });
    let Some(scheme_len) = scheme_len else {
        return Err(HttpError::BadRequestLine("the target must start with '/'"));
    };
    let rest = &target[scheme_len..];
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Ok(&rest[i..]),
        // "http://host?q" has an empty path, which means "/": not a tracker path anyway.
        Some(_) | None => Ok("/"),
    }
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A complete HTTP/1.1 response: status line, `Content-Type: text/plain`, `Content-Length`,
/// `Connection: close`, then `body`. (Bencoded bodies go out as text/plain too, as most
/// trackers do; clients do not look at the type.)
pub fn http_response(status: u16, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// The reason phrases of the statuses the tracker sends; others get an empty phrase, which
/// HTTP/1.1 allows.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, query: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            path: path.into(),
            query: query.into(),
        }
    }

    #[test]
    fn reads_the_request_line_and_skips_headers() {
        let req = b"GET /announce?info_hash=%01&port=1 HTTP/1.1\r\nHost: t\r\nX: y\r\n\r\n";
        assert_eq!(
            parse_request_head(req),
            Ok(Some(head("GET", "/announce", "info_hash=%01&port=1")))
        );
        let bare = b"GET /scrape HTTP/1.0\r\n\r\ntrailing body bytes";
        assert_eq!(
            parse_request_head(bare),
            Ok(Some(head("GET", "/scrape", "")))
        );
        let empty_query = b"POST /announce? HTTP/1.1\r\n\r\n";
        assert_eq!(
            parse_request_head(empty_query),
            Ok(Some(head("POST", "/announce", "")))
        );
    }

    #[test]
    fn absolute_form_targets_become_paths() {
        let req = b"GET http://tracker.example:6969/announce?a=1 HTTP/1.1\r\n\r\n";
        assert_eq!(
            parse_request_head(req),
            Ok(Some(head("GET", "/announce", "a=1")))
        );
        let req = b"GET HTTP://host?a=1 HTTP/1.1\r\n\r\n";
        assert_eq!(parse_request_head(req), Ok(Some(head("GET", "/", ""))));
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let full = b"GET /announce?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_request_head(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_request_head(full).unwrap().is_some());
    }

    #[test]
    fn a_bad_request_line_is_refused_before_the_headers_end() {
        let cases: [(&[u8], u16); 10] = [
            (b"garbage\r\n", 400),
            (b"GET /announce\r\n", 400),
            (b"GET  /announce HTTP/1.1\r\n", 400),
            (b"GET /a HTTP/1.1 extra\r\n", 400),
            (b"GET announce HTTP/1.1\r\n", 400),
            (b"G(T /a HTTP/1.1\r\n", 400),
            (b"GET /a\x01b HTTP/1.1\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\n", 400),
            (b"GET /a FTP/1.1\r\n", 400),
            (b"GET /a HTTP/2.0\r\n", 505),
        ];
        for (bytes, status) in cases {
            let err = parse_request_head(bytes).unwrap_err();
            assert_eq!(
                err.status(),
                status,
                "{:?}: {err}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long_method = format!("{} / HTTP/1.1\r\n", "A".repeat(MAX_METHOD_LEN + 1));
        assert!(parse_request_head(long_method.as_bytes()).is_err());
    }

    #[test]
    fn an_oversized_head_is_refused() {
        let mut req = b"GET /announce HTTP/1.1\r\n".to_vec();
        while req.len() < MAX_REQUEST_HEAD {
            req.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse_request_head(&req), Err(HttpError::HeadTooLarge));
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        // A blank line past the cap does not help.
        req.extend_from_slice(b"\r\n");
        assert_eq!(parse_request_head(&req), Err(HttpError::HeadTooLarge));
        // Nor does a request line longer than the cap.
        let long = format!("GET /{} HTTP/1.1", "a".repeat(MAX_REQUEST_HEAD));
        assert_eq!(
            parse_request_head(long.as_bytes()),
            Err(HttpError::HeadTooLarge)
        );
        // A head of exactly the cap is fine.
        let mut exact = b"GET / HTTP/1.1\r\nX: ".to_vec();
        exact.resize(MAX_REQUEST_HEAD - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), MAX_REQUEST_HEAD);
        assert!(parse_request_head(&exact).unwrap().is_some());
    }

    #[test]
    fn versions_are_reported() {
        let err = parse_request_head(b"GET / HTTP/3\r\n\r\n").unwrap_err();
        assert_eq!(err, HttpError::UnsupportedVersion("HTTP/3".into()));
        assert!(err.to_string().contains("HTTP/3"));
    }

    #[test]
    fn responses_carry_length_type_and_close() {
        let r = http_response(200, b"d8:intervali60ee");
        let text = String::from_utf8(r).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\
             Connection: close\r\n\r\nd8:intervali60ee"
        );
        let r = http_response(404, b"");
        assert!(r.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(r.ends_with(b"Content-Length: 0\r\nConnection: close\r\n\r\n"));
        assert!(http_response(299, b"").starts_with(b"HTTP/1.1 299 \r\n"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Bytes drawn mostly from what request heads are made of, to get past the first checks.
    fn headish() -> impl Strategy<Value = Vec<u8>> {
        vec(
            select(b"GET /announce?=&% HTTP/1.1\r\n:\x00\xff".to_vec()),
            0..400,
        )
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..MAX_REQUEST_HEAD + 100)) {
            let _ = parse_request_head(&bytes);
        }

        #[test]
        fn head_like_bytes_never_panic(bytes in headish()) {
            if let Ok(Some(h)) = parse_request_head(&bytes) {
                prop_assert!(h.path.starts_with('/'));
            }
        }

        #[test]
        fn valid_heads_parse_whole_and_wait_when_cut(
            path in "/[a-z0-9._~-]{0,40}",
            query in "[a-zA-Z0-9=&%_.-]{0,200}",
            headers in vec("[A-Za-z-]{1,20}: [ -~]{0,60}", 0..10),
            cut: prop::sample::Index,
        ) {
            let mut text = format!("GET {path}?{query} HTTP/1.1\r\n");
            for h in &headers {
                text.push_str(h);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            let bytes = text.as_bytes();
            let want = RequestHead { method: "GET".into(), path: path.clone(), query: query.clone() };
            prop_assert_eq!(parse_request_head(bytes), Ok(Some(want)));
            let cut = cut.index(bytes.len());
            prop_assert_eq!(parse_request_head(&bytes[..cut]), Ok(None));
        }
    }
}
