//! The tracker client against fake trackers on loopback: minimal HTTP/1.1 servers on tokio
//! TcpListeners that answer with canned responses (compact peers, status 500, redirect
//! loops, garbage, silence, oversized bodies) and UDP trackers on tokio UdpSockets (plain,
//! lossy, chatty, refusing, silent). Every test runs inside `spate::runtime::start`, as the
//! engine will, and is cut off after `TEST_LIMIT`.

use spate::announce::{
    announce_http, announce_udp, http_client, scrape_http, scrape_udp, AnnounceConfig,
    AnnounceError, Announcer, HttpConfig, TransferStats, UdpConfig,
};
use spate::tracker::{
    decode_udp_request, encode_udp_announce_reply, encode_udp_connect_reply, encode_udp_error,
    encode_udp_scrape_reply, AnnounceRequest, AnnounceResponse, Event, ScrapeEntry, ServerPeer,
    ServerReply, UdpConnectionCache, UdpRequest, MAX_BODY_LEN,
};
use spate::types::{InfoHash, PeerId};
use std::cell::RefCell;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// No test may take longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(10);
/// The connection id our fake UDP trackers hand out.
const CONN_ID: u64 = 0x1122_3344_5566_7788;
/// An info-hash with bytes that must be escaped and some that must not.
const HASH: InfoHash = InfoHash([
    0x12, 0x34, b'A', b'.', b'~', 0xff, b' ', b'%', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
]);
const PEER_ID: PeerId = PeerId(*b"-SP0100-abcdefghijkl");

fn run<F: Future<Output = ()>>(test: F) {
    spate::runtime::start(async {
        tokio::time::timeout(TEST_LIMIT, test)
            .await
            .expect("test ran past its time limit");
    });
}

fn request(event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: HASH,
        peer_id: PEER_ID,
        port: 6881,
        uploaded: 1000,
        downloaded: 2000,
        left: 12345,
        event,
        numwant: Some(50),
        key: 0xDEAD_BEEF,
        tracker_id: None,
    }
}

fn stats() -> TransferStats {
    TransferStats {
        uploaded: 1,
        downloaded: 2,
        left: 777,
    }
}

fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(3))
}

fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    http_client(&HttpConfig {
        timeout,
        ..HttpConfig::default()
    })
    .expect("HTTP client")
}

/// A plain announce to `url` over a fresh UDP connection (no cached connection id).
async fn announce_fresh(url: &str, config: &UdpConfig) -> Result<AnnounceResponse, AnnounceError> {
    announce_udp(
        url,
        &request(Event::None),
        &mut UdpConnectionCache::new(),
        config,
    )
    .await
}

fn fast_udp() -> UdpConfig {
    UdpConfig {
        base_timeout: Duration::from_millis(100),
        max_attempts: 3,
    }
}

fn announce_config() -> AnnounceConfig {
    AnnounceConfig {
        udp: fast_udp(),
        ..AnnounceConfig::new(HASH, PEER_ID, 6881)
    }
}

fn peer(a: u8, port: u16) -> SocketAddr {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port).into()
}

// ---------------------------------------------------------------------------------------
// A fake HTTP tracker

/// Request targets (path and query) a fake HTTP tracker has seen, in order.
type Log = Rc<RefCell<Vec<String>>>;

/// Serves HTTP/1.1 on 127.0.0.1: for each request, `respond(target)` gives the raw bytes
/// to send back (then the connection is closed), or `None` to hold the connection and never
/// answer. Returns the base URL and the log of targets.
async fn http_tracker(respond: impl Fn(&str) -> Option<Vec<u8>> + 'static) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Log::default();
    let seen = log.clone();
    tokio::task::spawn_local(async move {
        let mut silent = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(target) = read_request_target(&mut stream).await else {
                continue;
            };
            seen.borrow_mut().push(target.clone());
            match respond(&target) {
                Some(bytes) => {
                    // The client may hang up first (oversized bodies); that is fine.
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.shutdown().await;
                }
                None => silent.push(stream),
            }
        }
    });
    (base, log)
}

/// Reads a request head and returns its target, e.g. "/announce?info_hash=...".
async fn read_request_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_owned();
    let mut parts = line.split(' ');
    (parts.next()? == "GET").then_some(())?;
    parts.next().map(str::to_owned)
}

fn http_response(status: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A bencoded announce reply with compact IPv4 peers and an optional tracker id.
fn compact_reply(interval: u32, peers: &[SocketAddr], tracker_id: Option<&str>) -> Vec<u8> {
    let mut compact = Vec::new();
    for p in peers {
        let SocketAddr::V4(v4) = p else { continue };
        compact.extend_from_slice(&v4.ip().octets());
        compact.extend_from_slice(&v4.port().to_be_bytes());
    }
    let mut body = format!(
        "d8:completei5e10:incompletei7e8:intervali{interval}e12:min intervali60e5:peers{}:",
        compact.len()
    )
    .into_bytes();
    body.extend_from_slice(&compact);
    if let Some(id) = tracker_id {
        body.extend_from_slice(format!("10:tracker id{}:{id}", id.len()).as_bytes());
    }
    body.push(b'e');
    body
}

fn ok_reply(interval: u32, peers: &[SocketAddr], tracker_id: Option<&str>) -> Vec<u8> {
    http_response("200 OK", "", &compact_reply(interval, peers, tracker_id))
}

/// The value of `name` in a request target's query, as sent (still percent-encoded).
fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

// ---------------------------------------------------------------------------------------
// A fake UDP tracker

/// Requests a fake UDP tracker has decoded, in order.
type UdpLog = Rc<RefCell<Vec<UdpRequest>>>;

/// Serves BEP 15 on `bind`: every datagram is decoded and logged, and `respond(request,
/// index)` gives the datagrams to send back (none: the packet is "lost"). Returns the
/// tracker's `udp://` URL and the log.
async fn udp_tracker(
    bind: &str,
    mut respond: impl FnMut(&UdpRequest, usize) -> Vec<Vec<u8>> + 'static,
) -> Option<(String, UdpLog)> {
    let socket = UdpSocket::bind(bind).await.ok()?;
    let url = format!("udp://{}/announce", socket.local_addr().unwrap());
    let log = UdpLog::default();
    let seen = log.clone();
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(req) = decode_udp_request(&buf[..n]) else {
                continue;
            };
            let index = seen.borrow().len();
            seen.borrow_mut().push(req.clone());
            for reply in respond(&req, index) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    Some((url, log))
}

/// The well-behaved answer: a connection id for connects, the peers for announces (over
/// IPv6 when `ipv6`), a fixed count for scrapes.
fn answer(req: &UdpRequest, peers: &[SocketAddr], ipv6: bool) -> Vec<u8> {
    match req {
        UdpRequest::Connect { tid } => encode_udp_connect_reply(*tid, CONN_ID).to_vec(),
        UdpRequest::Announce { conn_id, tid, .. } if *conn_id == CONN_ID => {
            let reply = ServerReply {
                interval: 120,
                complete: 3,
                incomplete: 4,
                peers: peers
                    .iter()
                    .map(|&addr| ServerPeer {
                        peer_id: PEER_ID,
                        addr,
                    })
                    .collect(),
            };
            encode_udp_announce_reply(*tid, &reply, ipv6)
        }
        UdpRequest::Scrape { tid, hashes, .. } => {
            let entries: Vec<ScrapeEntry> = hashes
                .iter()
                .map(|&info_hash| ScrapeEntry {
                    info_hash,
                    complete: 9,
                    downloaded: 8,
                    incomplete: 7,
                })
                .collect();
            encode_udp_scrape_reply(*tid, &entries)
        }
        other => encode_udp_error(other.tid(), "unknown connection id"),
    }
}

fn connects(log: &UdpLog) -> usize {
    let log = log.borrow();
    log.iter()
        .filter(|r| matches!(r, UdpRequest::Connect { .. }))
        .count()
}

// ---------------------------------------------------------------------------------------
// HTTP

#[test]
fn http_announce_parses_compact_peers_and_sends_the_query() {
    run(async {
        let peers = [peer(1, 6881), peer(2, 51413)];
        let (base, log) = http_tracker(move |_| Some(ok_reply(900, &peers, None))).await;
        let url = format!("{base}/announce");
        let reply = announce_http(&client(), &url, &request(Event::Started))
            .await
            .expect("announce");
        assert_eq!(reply.peers, peers);
        assert_eq!(reply.interval, 900);
        assert_eq!((reply.complete, reply.incomplete), (Some(5), Some(7)));

        let target = log.borrow()[0].clone();
        assert!(target.starts_with("/announce?"), "{target}");
        assert_eq!(
            query_param(&target, "info_hash"),
            Some("%124A.~%FF%20%25%00%01%02%03%04%05%06%07%08%09%0A%0B")
        );
        assert_eq!(query_param(&target, "port"), Some("6881"));
        assert_eq!(query_param(&target, "left"), Some("12345"));
        assert_eq!(query_param(&target, "event"), Some("started"));
        assert_eq!(query_param(&target, "compact"), Some("1"));
        assert_eq!(
            query_param(&target, "peer_id"),
            Some("-SP0100-abcdefghijkl")
        );
    });
}

#[test]
fn http_status_500_is_an_error_naming_status_and_tracker() {
    run(async {
        let (base, _) =
            http_tracker(|_| Some(http_response("500 Internal Server Error", "", b"oops"))).await;
        let url = format!("{base}/announce");
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AnnounceError::Status {
                url: url.clone(),
                status: 500
            }
        );
        let text = err.to_string();
        assert!(text.contains("500") && text.contains(&url), "{text}");
    });
}

#[test]
fn http_failure_reason_is_reported_even_with_an_error_status() {
    run(async {
        let body = b"d14:failure reason20:unregistered torrente";
        let (base, _) =
            http_tracker(move |_| Some(http_response("400 Bad Request", "", body))).await;
        let url = format!("{base}/announce");
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AnnounceError::Refused {
                url,
                reason: "unregistered torrent".into()
            }
        );
    });
}

#[test]
fn http_redirects_are_followed() {
    run(async {
        let peers = [peer(3, 3000)];
        let (base, log) = http_tracker(move |target| {
            if target.starts_with("/old") {
                let moved = target.replacen("/old", "/new", 1);
                Some(http_response(
                    "302 Found",
                    &format!("Location: {moved}\r\n"),
                    b"",
                ))
            } else {
                Some(ok_reply(600, &peers, None))
            }
        })
        .await;
        let reply = announce_http(
            &client(),
            &format!("{base}/old/announce"),
            &request(Event::None),
        )
        .await
        .expect("announce through a redirect");
        assert_eq!(reply.peers, peers);
        let log = log.borrow();
        assert_eq!(log.len(), 2);
        assert!(log[1].starts_with("/new/announce?info_hash="), "{}", log[1]);
    });
}

#[test]
fn http_redirect_loop_is_an_error() {
    run(async {
        let (base, log) = http_tracker(|target| {
            Some(http_response(
                "302 Found",
                &format!("Location: {target}\r\n"),
                b"",
            ))
        })
        .await;
        let url = format!("{base}/announce");
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Redirect { url: u, reason } if *u == url && reason.contains("loop")),
            "{err}"
        );
        assert_eq!(
            log.borrow().len(),
            1,
            "a loop is caught before going round again"
        );
    });
}

#[test]
fn http_redirect_chain_longer_than_five_is_an_error() {
    run(async {
        // /r0 -> /r1 -> /r2 -> ... never repeating itself.
        let (base, log) = http_tracker(|target| {
            let n: u32 = target[2..].split('?').next()?.parse().ok()?;
            let next = format!("/r{}", n + 1);
            Some(http_response(
                "301 Moved Permanently",
                &format!("Location: {next}\r\n"),
                b"",
            ))
        })
        .await;
        let url = format!("{base}/r0");
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Redirect { reason, .. } if reason.contains("more than 5")),
            "{err}"
        );
        assert_eq!(
            log.borrow().len(),
            6,
            "the original request and five redirects"
        );
    });
}

#[test]
fn http_garbage_is_a_bad_reply_naming_the_tracker() {
    run(async {
        let (base, _) =
            http_tracker(|_| Some(http_response("200 OK", "", b"<html>hello</html>"))).await;
        let url = format!("{base}/announce");
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::BadReply { url: u, .. } if *u == url),
            "{err}"
        );
        assert!(err.to_string().contains(&url));
    });
}

#[test]
fn http_silent_tracker_times_out() {
    run(async {
        let (base, log) = http_tracker(|_| None).await;
        let url = format!("{base}/announce");
        let started = Instant::now();
        let err = announce_http(
            &client_with_timeout(Duration::from_millis(300)),
            &url,
            &request(Event::None),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Timeout { url: u, .. } if *u == url),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(log.borrow().len(), 1, "the request did arrive");
    });
}

#[test]
fn http_body_is_cut_off_past_the_cap() {
    run(async {
        // No Content-Length: the body runs until the connection closes, so only the
        // streaming check can stop it.
        let (base, _) = http_tracker(|_| {
            let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            bytes.extend(std::iter::repeat_n(b'x', MAX_BODY_LEN + 100_000));
            Some(bytes)
        })
        .await;
        let url = format!("{base}/announce");
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert_eq!(err, AnnounceError::BodyTooLarge { url });
    });
}

#[test]
fn http_refused_connection_names_the_tracker() {
    run(async {
        let url = format!("http://{}/announce", closed_tcp_port().await);
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Http { url: u, .. } if *u == url),
            "{err}"
        );
        assert!(
            !err.to_string().contains("info_hash"),
            "our query stays out: {err}"
        );
    });
}

#[test]
fn https_goes_through_rustls() {
    run(async {
        // A plain-text server: the TLS handshake must fail, cleanly and with the URL, which
        // shows the client really speaks TLS with the provider we handed it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/announce", listener.local_addr().unwrap());
        tokio::task::spawn_local(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let err = announce_http(&client(), &url, &request(Event::None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Http { url: u, .. } if *u == url),
            "{err}"
        );
    });
}

/// A loopback address where nothing listens (bound, then released).
async fn closed_tcp_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn http_scrape_reads_the_files_dictionary() {
    run(async {
        let (base, log) = http_tracker(|_| {
            let mut body = b"d5:filesd20:".to_vec();
            body.extend_from_slice(&HASH.0);
            body.extend_from_slice(b"d8:completei4e10:downloadedi9e10:incompletei2eeee");
            Some(http_response("200 OK", "", &body))
        })
        .await;
        let entries = scrape_http(&client(), &format!("{base}/x/announce.php"), &[HASH])
            .await
            .expect("scrape");
        assert_eq!(
            entries,
            [ScrapeEntry {
                info_hash: HASH,
                complete: 4,
                downloaded: 9,
                incomplete: 2
            }]
        );
        assert!(log.borrow()[0].starts_with("/x/scrape.php?info_hash=%124A"));
        let err = scrape_http(&client(), &format!("{base}/tracker"), &[HASH])
            .await
            .unwrap_err();
        assert!(matches!(err, AnnounceError::NoScrape { .. }));
    });
}

// ---------------------------------------------------------------------------------------
// UDP

#[test]
fn udp_announce_connects_once_and_reuses_the_connection_id() {
    run(async {
        let peers = [peer(4, 4000), peer(5, 5000)];
        let (url, log) = udp_tracker("127.0.0.1:0", move |req, _| {
            vec![answer(req, &peers, false)]
        })
        .await
        .unwrap();
        let mut cache = UdpConnectionCache::new();
        let reply = announce_udp(&url, &request(Event::Started), &mut cache, &fast_udp())
            .await
            .expect("announce");
        assert_eq!(reply.peers, peers);
        assert_eq!(
            (reply.interval, reply.complete, reply.incomplete),
            (120, Some(3), Some(4))
        );
        announce_udp(&url, &request(Event::None), &mut cache, &fast_udp())
            .await
            .expect("second announce");
        assert_eq!(connects(&log), 1, "the connection id is kept for a minute");

        let log = log.borrow();
        let UdpRequest::Announce {
            info_hash,
            left,
            port,
            event,
            key,
            ..
        } = &log[1]
        else {
            panic!("second packet is {:?}", log[1]);
        };
        assert_eq!(
            (*info_hash, *left, *port, *event),
            (HASH, 12345, 6881, Event::Started)
        );
        assert_eq!(*key, 0xDEAD_BEEF);
    });
}

#[test]
fn udp_lost_packet_is_retransmitted() {
    run(async {
        let peers = [peer(6, 6000)];
        // The first connect and the first announce go unanswered.
        let (url, log) = udp_tracker("127.0.0.1:0", move |req, index| {
            if index == 0 || index == 2 {
                vec![]
            } else {
                vec![answer(req, &peers, false)]
            }
        })
        .await
        .unwrap();
        let config = UdpConfig {
            base_timeout: Duration::from_millis(100),
            max_attempts: 3,
        };
        let started = Instant::now();
        let reply = announce_fresh(&url, &config)
            .await
            .expect("announce after retries");
        assert_eq!(reply.peers, peers);
        // 100 ms for the lost connect, then twice that for the lost announce.
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(log.borrow().len(), 4);
        assert_eq!(connects(&log), 2);
    });
}

#[test]
fn udp_replies_to_other_transactions_are_ignored() {
    run(async {
        let peers = [peer(7, 7000)];
        let (url, _) = udp_tracker("127.0.0.1:0", move |req, _| {
            let good = answer(req, &peers, false);
            let mut stray = good.clone();
            stray[4] ^= 0xff;
            vec![stray, b"junk".to_vec(), good]
        })
        .await
        .unwrap();
        let config = UdpConfig {
            base_timeout: Duration::from_secs(2),
            max_attempts: 1,
        };
        let started = Instant::now();
        let reply = announce_fresh(&url, &config).await.expect("announce");
        assert_eq!(reply.peers, peers);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no retransmission was needed"
        );
    });
}

#[test]
fn udp_error_packet_carries_the_trackers_message() {
    run(async {
        let (url, _) = udp_tracker("127.0.0.1:0", |req, _| match req {
            UdpRequest::Connect { .. } => vec![answer(req, &[], false)],
            _ => vec![encode_udp_error(req.tid(), "torrent not registered")],
        })
        .await
        .unwrap();
        let mut cache = UdpConnectionCache::new();
        let err = announce_udp(&url, &request(Event::None), &mut cache, &fast_udp())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AnnounceError::Refused {
                url: url.clone(),
                reason: "torrent not registered".into()
            }
        );
        assert!(err.to_string().contains(&url));
        assert_eq!(
            cache.valid(std::time::Instant::now()),
            None,
            "the id is dropped"
        );
    });
}

#[test]
fn udp_silent_tracker_gives_up_after_max_attempts() {
    run(async {
        let (url, log) = udp_tracker("127.0.0.1:0", |_, _| vec![]).await.unwrap();
        let config = UdpConfig {
            base_timeout: Duration::from_millis(50),
            max_attempts: 3,
        };
        let started = Instant::now();
        let err = announce_fresh(&url, &config).await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(&err, AnnounceError::Timeout { url: u, .. } if *u == url),
            "{err}"
        );
        // 50 + 100 + 200 ms.
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(log.borrow().len(), 3);
    });
}

#[test]
fn udp_closed_port_fails_without_waiting() {
    run(async {
        let addr = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("udp://{addr}");
        let config = UdpConfig {
            base_timeout: Duration::from_secs(3),
            max_attempts: 1,
        };
        let started = Instant::now();
        let err = announce_fresh(&url, &config).await.unwrap_err();
        // Loopback reports the closed port (ICMP), so no timeout has to run out.
        assert!(
            matches!(&err, AnnounceError::Io { url: u, .. } if *u == url),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn udp_over_ipv6_reads_18_byte_peers() {
    run(async {
        let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
        let peers = [v6, peer(8, 8000)];
        let Some((url, _)) =
            udp_tracker("[::1]:0", move |req, _| vec![answer(req, &peers, true)]).await
        else {
            eprintln!("no IPv6 loopback here; skipping");
            return;
        };
        let reply = announce_fresh(&url, &fast_udp())
            .await
            .expect("announce over IPv6");
        assert_eq!(reply.peers, [v6], "only IPv6 peers, 18 bytes each");
    });
}

#[test]
fn udp_scrape_returns_the_counts() {
    run(async {
        let (url, _) = udp_tracker("127.0.0.1:0", |req, _| vec![answer(req, &[], false)])
            .await
            .unwrap();
        let entries = scrape_udp(&url, &[HASH], &mut UdpConnectionCache::new(), &fast_udp())
            .await
            .expect("scrape");
        assert_eq!(
            entries,
            [ScrapeEntry {
                info_hash: HASH,
                complete: 9,
                downloaded: 8,
                incomplete: 7
            }]
        );
    });
}

// ---------------------------------------------------------------------------------------
// Announcer: BEP 12 order, failover, tracker ids, backoff

#[test]
fn failover_within_a_tier_promotes_the_tracker_that_answered() {
    run(async {
        let (bad, bad_log) =
            http_tracker(|_| Some(http_response("500 Internal Server Error", "", b""))).await;
        let peers = [peer(9, 9000)];
        let (good, good_log) = http_tracker(move |_| Some(ok_reply(900, &peers, None))).await;
        let (bad, good) = (format!("{bad}/announce"), format!("{good}/announce"));
        let mut announcer = Announcer::new_in_order(
            announce_config(),
            vec![vec![bad.clone(), good.clone()]],
            client(),
        );

        let outcome = announcer
            .announce(Event::Started, stats())
            .await
            .expect("announce");
        assert_eq!(outcome.tracker, good);
        assert_eq!(outcome.peers, peers);
        assert_eq!(outcome.interval, Duration::from_secs(900));
        assert_eq!(outcome.min_interval, Some(Duration::from_secs(60)));
        assert_eq!((bad_log.borrow().len(), good_log.borrow().len()), (1, 1));
        let target = good_log.borrow()[0].clone();
        assert_eq!(query_param(&target, "left"), Some("777"));
        assert_eq!(query_param(&target, "event"), Some("started"));

        let order: Vec<_> = announcer.trackers().map(|t| t.url.to_owned()).collect();
        assert_eq!(
            order,
            [good.clone(), bad.clone()],
            "the answering tracker moves first"
        );
        let failed = announcer.trackers().find(|t| t.url == bad).unwrap();
        assert_eq!(failed.failures, 1);
        assert!(matches!(
            failed.last_error,
            Some(AnnounceError::Status { status: 500, .. })
        ));

        // The next announce goes straight to the tracker that answered.
        announcer
            .announce(Event::None, stats())
            .await
            .expect("announce");
        assert_eq!((bad_log.borrow().len(), good_log.borrow().len()), (1, 2));
    });
}

#[test]
fn failover_to_the_next_tier_after_every_tracker_of_the_first_fails() {
    run(async {
        let (garbage, _) = http_tracker(|_| Some(http_response("200 OK", "", b"nonsense"))).await;
        let garbage = format!("{garbage}/announce");
        let peers = [peer(10, 1000)];
        let (udp, _) = udp_tracker("127.0.0.1:0", move |req, _| {
            vec![answer(req, &peers, false)]
        })
        .await
        .unwrap();
        let tiers = vec![
            vec![garbage.clone(), "wss://tracker.example/announce".to_owned()],
            vec![udp.clone()],
        ];
        let mut announcer = Announcer::new_in_order(announce_config(), tiers, client());
        let outcome = announcer
            .announce(Event::Started, stats())
            .await
            .expect("announce");
        assert_eq!(outcome.tracker, udp);
        assert_eq!(outcome.peers, peers);
        assert_eq!((outcome.seeders, outcome.leechers), (Some(3), Some(4)));

        let errors: Vec<_> = announcer
            .trackers()
            .map(|t| (t.tier, t.last_error.cloned()))
            .collect();
        assert!(
            matches!(&errors[0], (0, Some(AnnounceError::BadReply { url, .. })) if *url == garbage)
        );
        assert!(
            matches!(&errors[1], (0, Some(AnnounceError::UnsupportedScheme { url })) if url.starts_with("wss://"))
        );
        assert_eq!(errors[2], (1, None));
    });
}

#[test]
fn tracker_id_is_sent_back_on_the_next_announce() {
    run(async {
        let (base, log) =
            http_tracker(|_| Some(ok_reply(1800, &[peer(11, 1100)], Some("T-42")))).await;
        let url = format!("{base}/announce");
        let mut announcer = Announcer::new(announce_config(), vec![vec![url]], client());
        announcer
            .announce(Event::Started, stats())
            .await
            .expect("first");
        announcer
            .announce(Event::None, stats())
            .await
            .expect("second");
        let log = log.borrow();
        assert_eq!(query_param(&log[0], "trackerid"), None);
        assert_eq!(query_param(&log[1], "trackerid"), Some("T-42"));
        assert_eq!(
            query_param(&log[1], "event"),
            None,
            "a regular announce has no event"
        );
        let delay = announcer.next_announce_delay(Instant::now());
        assert!(delay > Duration::from_secs(1790) && delay <= Duration::from_secs(1800));
    });
}

#[test]
fn when_every_tracker_fails_the_last_error_returns_and_trackers_back_off() {
    run(async {
        let (bad, bad_log) =
            http_tracker(|_| Some(http_response("503 Service Unavailable", "", b""))).await;
        let (silent, _) = udp_tracker("127.0.0.1:0", |_, _| vec![]).await.unwrap();
        let bad = format!("{bad}/announce");
        let mut announcer = Announcer::new_in_order(
            announce_config(),
            vec![vec![bad.clone()], vec![silent.clone()]],
            client(),
        );
        let err = announcer
            .announce(Event::Started, stats())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AnnounceError::Timeout { url, .. } if *url == silent),
            "{err}"
        );

        let delay = announcer.next_announce_delay(Instant::now());
        assert!(
            delay > Duration::from_secs(25) && delay <= Duration::from_secs(30),
            "{delay:?}"
        );

        // A regular announce leaves backing-off trackers alone...
        let err = announcer.announce(Event::None, stats()).await.unwrap_err();
        assert!(
            matches!(err, AnnounceError::BackingOff { failures: 1, .. }),
            "{err}"
        );
        assert_eq!(bad_log.borrow().len(), 1);
        // ...but a stopped announce is still delivered where possible.
        let err = announcer
            .announce(Event::Stopped, stats())
            .await
            .unwrap_err();
        assert_eq!(bad_log.borrow().len(), 2);
        assert_eq!(query_param(&bad_log.borrow()[1], "numwant"), Some("0"));
        assert!(err.url() == Some(silent.as_str()), "{err}");
        assert_eq!(announcer.trackers().next().unwrap().failures, 2);
    });
}

#[test]
fn an_announcer_without_usable_trackers_says_so() {
    run(async {
        let mut empty = Announcer::new(announce_config(), vec![vec![], vec![" ".into()]], client());
        let err = empty.announce(Event::Started, stats()).await.unwrap_err();
        assert_eq!(err, AnnounceError::NoTrackers);

        let mut odd = Announcer::new(announce_config(), vec![vec!["dht://x".into()]], client());
        let err = odd.announce(Event::Started, stats()).await.unwrap_err();
        assert_eq!(
            err,
            AnnounceError::UnsupportedScheme {
                url: "dht://x".into()
            }
        );
    });
}
