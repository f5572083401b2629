//! Talking to HTTP(S) trackers (BEP 3, 23, 48) with reqwest: building the shared client (its
//! timeout, redirect policy and rustls/ring TLS), one announce and one scrape. The URLs and
//! the reply parsing come from `tracker` (pure); this file only moves bytes, caps them at
//! `MAX_BODY_LEN` while they stream in, and turns what went wrong into an `AnnounceError`
//! naming the tracker. Runs on any tokio runtime with IO and time, `tokio_uring::start`
//! included; never spawns tasks of its own.

use super::AnnounceError;
use crate::tracker::{
    http_announce_url, http_scrape_url, parse_announce_response, parse_scrape_response,
    AnnounceRequest, AnnounceResponse, ScrapeEntry, TrackerError, MAX_BODY_LEN,
};
use crate::types::InfoHash;
use reqwest::redirect::{Attempt, Policy};
use reqwest::StatusCode;
use rustls_platform_verifier::BuilderVerifierExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A whole request (connect, redirects, body) gets this long: trackers answer in well under a
/// second when healthy, and a dead one must not hold up the next tier for long.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirects followed per request; trackers use one or two (http -> https, a moved host).
pub const MAX_REDIRECTS: usize = 5;

/// How the HTTP client behaves. The engine builds one client for all torrents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Limit on one whole request, redirects and body included.
    pub timeout: Duration,
    /// Redirects followed before giving up; a redirect back to a URL already visited is an
    /// error at once.
    pub max_redirects: usize,
    /// The `User-Agent` header; some trackers only admit known clients.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: HTTP_TIMEOUT,
            max_redirects: MAX_REDIRECTS,
            user_agent: concat!("spate/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Builds the HTTP client for trackers: `config`'s timeout and redirect limit, no proxy from
/// the environment (configuration comes in as values, never from deep reads of the
/// environment), HTTP/1.1 and rustls over ring with the system's root certificates.
pub fn http_client(config: &HttpConfig) -> Result<reqwest::Client, AnnounceError> {
    let max = config.max_redirects;
    reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(Policy::custom(move |attempt| judge_redirect(attempt, max)))
        .no_proxy()
        .user_agent(config.user_agent.clone())
        .tls_backend_preconfigured(tls_config())
        .build()
        .map_err(|e| AnnounceError::HttpClient {
            reason: error_chain(&e),
        })
}

/// Follows a redirect unless it goes back to a URL of this chain or is one too many.
fn judge_redirect(attempt: Attempt<'_>, max: usize) -> reqwest::redirect::Action {
    // `previous` holds the original URL and every URL redirected to so far.
    let hops = attempt.previous().len();
    if attempt.previous().contains(attempt.url()) {
        attempt.error("redirect loop: sent back to a URL already visited")
    } else if hops > max {
        attempt.error(format!("more than {max} redirects"))
    } else {
        attempt.follow()
    }
}

/// rustls with the ring provider (small next to aws-lc-rs's C build, and already built for
/// the hashing benches) and the platform's roots. Handed to reqwest ready-made, so no
/// process-wide default provider has to be installed. A system without CA certificates still
/// gets a client: plain HTTP trackers work, and HTTPS ones fail with an unknown-issuer error.
fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let builder = match builder.clone().with_platform_verifier() {
        Ok(verified) => verified,
        Err(_) => builder.with_root_certificates(rustls::RootCertStore::empty()),
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Announces `req` to the HTTP(S) tracker at `url` (the announce URL as the torrent lists it).
/// The client's timeout and redirect policy apply (see `http_client`). A "failure reason"
/// from the tracker is `Refused` whatever the status; otherwise a status other than 200 is
/// `Status`.
pub async fn announce_http(
    client: &reqwest::Client,
    url: &str,
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, AnnounceError> {
    let (status, body) = get_capped(client, url, &http_announce_url(url, req)).await?;
    judge_reply(url, status, parse_announce_response(&body))
}

/// Scrapes `hashes` from the tracker whose announce URL is `url` (BEP 48). Trackers whose URL
/// does not end in "announce" cannot be scraped: `NoScrape`.
pub async fn scrape_http(
    client: &reqwest::Client,
    url: &str,
    hashes: &[InfoHash],
) -> Result<Vec<ScrapeEntry>, AnnounceError> {
    let scrape_url = http_scrape_url(url, hashes).ok_or_else(|| AnnounceError::NoScrape {
        url: url.to_owned(),
    })?;
    let (status, body) = get_capped(client, url, &scrape_url).await?;
    judge_reply(url, status, parse_scrape_response(&body))
}

/// Turns a status and a parsed body into the result: the tracker's own failure reason wins,
/// then a non-200 status, then whatever the parser said.
fn judge_reply<T>(
    url: &str,
    status: StatusCode,
    parsed: Result<T, TrackerError>,
) -> Result<T, AnnounceError> {
    match parsed {
        Err(TrackerError::Failure(reason)) => Err(AnnounceError::Refused {
            url: url.to_owned(),
            reason,
        }),
        _ if status != StatusCode::OK => Err(AnnounceError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        }),
        Ok(value) => Ok(value),
        Err(source) => Err(AnnounceError::BadReply {
            url: url.to_owned(),
            source,
        }),
    }
}

/// GETs `full_url` and reads the body as it streams in, stopping as soon as it passes
/// `MAX_BODY_LEN` so a hostile tracker cannot make us buffer more. Errors name `tracker`,
/// the URL as listed, not `full_url` with our peer id in it.
async fn get_capped(
    client: &reqwest::Client,
    tracker: &str,
    full_url: &str,
) -> Result<(StatusCode, Vec<u8>), AnnounceError> {
    let started = Instant::now();
    let fail = |e: reqwest::Error| request_error(tracker, e, started);
    let mut response = client.get(full_url).send().await.map_err(fail)?;
    let status = response.status();
    let too_large = || {
        if status == StatusCode::OK {
            AnnounceError::BodyTooLarge {
                url: tracker.to_owned(),
            }
        } else {
            AnnounceError::Status {
                url: tracker.to_owned(),
                status: status.as_u16(),
            }
        }
    };
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > MAX_BODY_LEN) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        if chunk.len() > MAX_BODY_LEN - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// Sorts a reqwest failure into timeout, redirect, bad URL or plain transport error.
fn request_error(tracker: &str, e: reqwest::Error, started: Instant) -> AnnounceError {
    let url = tracker.to_owned();
    if e.is_timeout() {
        return AnnounceError::Timeout {
            url,
            waited: started.elapsed(),
        };
    }
    let (redirect, builder) = (e.is_redirect(), e.is_builder());
    // Our own URL would be in the message otherwise, peer id and all; the tracker's is enough.
    let reason = error_chain(&e.without_url());
    if redirect {
        AnnounceError::Redirect { url, reason }
    } else if builder {
        AnnounceError::InvalidUrl { url, reason }
    } else {
        AnnounceError::Http { url, reason }
    }
}

/// An error and all its sources, joined with ": ", skipping a source whose text its parent
/// already shows.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reason_wins_over_status() {
        let refused = judge_reply::<()>(
            "http://t/announce",
            StatusCode::INTERNAL_SERVER_ERROR,
            Err(TrackerError::Failure("unregistered torrent".into())),
        );
        assert!(
            matches!(refused, Err(AnnounceError::Refused { reason, .. }) if reason == "unregistered torrent")
        );
        let status = judge_reply::<()>(
            "http://t/announce",
            StatusCode::INTERNAL_SERVER_ERROR,
            Err(TrackerError::InvalidBencode("x".into())),
        );
        assert!(matches!(
            status,
            Err(AnnounceError::Status { status: 500, .. })
        ));
        let status = judge_reply("http://t/announce", StatusCode::NO_CONTENT, Ok(()));
        assert!(matches!(
            status,
            Err(AnnounceError::Status { status: 204, .. })
        ));
        let bad = judge_reply::<()>(
            "http://t/announce",
            StatusCode::OK,
            Err(TrackerError::TooDeep),
        );
        assert!(matches!(bad, Err(AnnounceError::BadReply { .. })));
        assert_eq!(judge_reply("u", StatusCode::OK, Ok(7)), Ok(7));
    }

    #[test]
    fn error_chain_joins_sources_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connect failed: refused");
    }

    #[test]
    fn the_client_builds_with_the_default_config() {
        http_client(&HttpConfig::default()).expect("client builds");
    }
}
