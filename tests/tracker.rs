//! The built-in tracker on real loopback sockets: HTTP announce and scrape (compact and
//! dictionary peers), the whitelist, garbage and oversized requests, slow and surplus
//! connections, the UDP protocol with spate's own client packets, spate's `Announcer` over
//! http:// and udp://, the `spate tracker` command, and libtorrent and Transmission finding
//! each other through it and exchanging a file.

mod common;

use common::swarm::free_port;
use common::tracker_clients::{libtorrent_seeder, wait_for, SpateTracker, Transmission};
use common::{create_torrent, payload, spate, stderr, tempdir};
use spate::announce::{
    http_client, AnnounceConfig, Announcer, HttpConfig, TransferStats, UdpConfig,
};
use spate::tracker::{
    decode_announce_response, decode_connect_response, decode_scrape_response, encode_announce,
    encode_connect, encode_scrape_request, http_announce_url, parse_announce_response,
    parse_scrape_response, percent_encode, AnnounceRequest, AnnounceResponse, Event, ScrapeEntry,
    ServerConfig, TrackerError, MAX_REQUEST_HEAD,
};
use spate::tracker_server::{
    spawn_tracker_thread, RunningTracker, TrackerServerConfig, HTTP_READ_TIMEOUT,
    MAX_HTTP_CONNECTIONS,
};
use spate::types::{InfoHash, PeerId};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Longest wait for any one reply from the tracker.
const REPLY_LIMIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn start_tracker(state: ServerConfig) -> RunningTracker {
    spawn_tracker_thread(TrackerServerConfig {
        http: Some(loopback()),
        udp: Some(loopback()),
        state,
    })
    .expect("starting the tracker")
}

fn hash(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

fn peer_id(n: u8) -> PeerId {
    let mut id = *b"-XX0000-000000000000";
    id[19] = b'a' + n;
    PeerId(id)
}

fn request(info_hash: InfoHash, peer: u8, port: u16, left: u64, event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash,
        peer_id: peer_id(peer),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: None,
        key: u32::from(peer),
        tracker_id: None,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------------------
// HTTP by hand

/// Sends `bytes`, half-closes, and reads the whole response; `None` if the connection was
/// closed or reset without one.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, REPLY_LIMIT).expect("connecting");
    stream.set_read_timeout(Some(REPLY_LIMIT)).unwrap();
    stream.write_all(bytes).ok()?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) if !response.is_empty() => Some(response),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
            panic!("no response within {REPLY_LIMIT:?}")
        }
        _ => None,
    }
}

/// Splits a response into status and body.
fn status_and_body(response: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"));
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head ends with a blank line");
    (status, response[split + 4..].to_vec())
}

fn get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
    let response = exchange(addr, head.as_bytes()).expect("a response");
    status_and_body(&response)
}

/// The path and query of an announce, as spate's client would send it.
fn announce_target(req: &AnnounceRequest) -> String {
    http_announce_url("/announce", req)
}

fn http_announce(
    addr: SocketAddr,
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, TrackerError> {
    let (status, body) = get(addr, &announce_target(req));
    assert_eq!(status, 200);
    parse_announce_response(&body)
}

fn http_scrape(addr: SocketAddr, hashes: &[InfoHash]) -> Vec<ScrapeEntry> {
    let query: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", percent_encode(&h.0)))
        .collect();
    let (status, body) = get(addr, &format!("/scrape?{}", query.join("&")));
    assert_eq!(status, 200);
    parse_scrape_response(&body).expect("a scrape body")
}

fn scrape_one(addr: SocketAddr, h: InfoHash) -> ScrapeEntry {
    let entries = http_scrape(addr, &[h]);
    entries
        .into_iter()
        .find(|e| e.info_hash == h)
        .unwrap_or(ScrapeEntry {
            info_hash: h,
            complete: 0,
            downloaded: 0,
            incomplete: 0,
        })
}

#[test]
fn http_announces_return_the_other_peer_in_both_forms() {
    let tracker = start_tracker(ServerConfig::default());
    let http = tracker.http_addr.unwrap();
    let h = hash(1);

    let first = http_announce(http, &request(h, 1, 6001, 1000, Event::Started)).unwrap();
    assert!(first.peers.is_empty(), "{:?}", first.peers);
    assert_eq!((first.complete, first.incomplete), (Some(0), Some(1)));
    assert_eq!(first.interval, 60);

    // Compact: the seeder gets the leecher, at the connection's address.
    let second = http_announce(http, &request(h, 2, 6002, 0, Event::Started)).unwrap();
    assert_eq!(second.peers, [local(6001)]);
    assert_eq!((second.complete, second.incomplete), (Some(1), Some(1)));

    // Dictionary form: the leecher gets the seeder, with its peer id.
    let target = announce_target(&request(h, 1, 6001, 1000, Event::None))
        .replace("&compact=1", "&compact=0");
    let (status, body) = get(http, &target);
    assert_eq!(status, 200);
    let mut want = b"5:peersld2:ip9:127.0.0.17:peer id20:".to_vec();
    want.extend_from_slice(&peer_id(2).0);
    want.extend_from_slice(b"4:porti6002eeee");
    assert!(body.ends_with(&want), "{}", String::from_utf8_lossy(&body));
    assert_eq!(parse_announce_response(&body).unwrap().peers, [local(6002)]);

    // A stopped peer is no longer handed out.
    http_announce(http, &request(h, 2, 6002, 0, Event::Stopped)).unwrap();
    let after = http_announce(http, &request(h, 1, 6001, 1000, Event::None)).unwrap();
    assert!(after.peers.is_empty());

    let started = Instant::now();
    tracker.stop().expect("a clean stop");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        TcpStream::connect_timeout(&http, REPLY_LIMIT).is_err(),
        "the listener is closed"
    );
}

#[test]
fn http_scrape_counts_seeds_leechers_and_downloads() {
    let tracker = start_tracker(ServerConfig::default());
    let http = tracker.http_addr.unwrap();
    let (a, b) = (hash(2), hash(3));
    http_announce(http, &request(a, 1, 7001, 10, Event::Started)).unwrap();
    http_announce(http, &request(a, 1, 7001, 0, Event::Completed)).unwrap();
    http_announce(http, &request(a, 2, 7002, 10, Event::Started)).unwrap();
    http_announce(http, &request(a, 3, 7003, 10, Event::Started)).unwrap();
    http_announce(http, &request(b, 1, 7001, 0, Event::Started)).unwrap();
    let unknown = hash(4);
    let entries = http_scrape(http, &[a, b, unknown]);
    let find = |h: InfoHash| *entries.iter().find(|e| e.info_hash == h).unwrap();
    let numbers = |e: ScrapeEntry| (e.complete, e.incomplete, e.downloaded);
    assert_eq!(numbers(find(a)), (1, 2, 1));
    assert_eq!(numbers(find(b)), (1, 0, 0));
    assert_eq!(numbers(find(unknown)), (0, 0, 0));

    let (status, body) = get(http, "/scrape");
    assert_eq!(status, 200);
    assert!(matches!(
        parse_scrape_response(&body),
        Err(TrackerError::Failure(_))
    ));
}

#[test]
fn the_whitelist_refuses_other_torrents_over_http_and_udp() {
    let allowed = hash(5);
    let tracker = start_tracker(ServerConfig {
        whitelist: Some([allowed].into_iter().collect()),
        ..ServerConfig::default()
    });
    let http = tracker.http_addr.unwrap();
    let err = http_announce(http, &request(hash(6), 1, 8001, 5, Event::Started)).unwrap_err();
    assert_eq!(
        err,
        TrackerError::Failure("torrent is not allowed on this tracker".into())
    );
    http_announce(http, &request(allowed, 1, 8001, 5, Event::Started)).expect("allowed");

    let udp = UdpClient::new(tracker.udp_addr.unwrap());
    let conn = udp.connect();
    let reply = udp.announce(conn, &request(hash(6), 2, 8002, 5, Event::Started));
    assert!(matches!(reply, Err(TrackerError::Failure(m)) if m.contains("not allowed")));
}

#[test]
fn garbage_gets_400_and_the_server_keeps_serving() {
    let tracker = start_tracker(ServerConfig::default());
    let http = tracker.http_addr.unwrap();
    let cases: [(&[u8], u16); 6] = [
        (b"garbage\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"GET /announce HTTP/2.0\r\n\r\n", 505),
        (b"POST /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /index.html HTTP/1.1\r\n\r\n", 404),
        (b"GET /announce HTTP/1.1\r\n", 400), // then the client closes: incomplete head
    ];
    for (bytes, want) in cases {
        let mut stream = TcpStream::connect_timeout(&http, REPLY_LIMIT).unwrap();
        stream.set_read_timeout(Some(REPLY_LIMIT)).unwrap();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let (status, _) = status_and_body(&response);
        assert_eq!(status, want, "{:?}", String::from_utf8_lossy(bytes));
    }
    // An announce that parses as HTTP but not as an announce is a bencoded failure.
    let (status, body) = get(http, "/announce?info_hash=short");
    assert_eq!(status, 200);
    assert!(matches!(
        parse_announce_response(&body),
        Err(TrackerError::Failure(_))
    ));
    // And the server still answers properly.
    http_announce(http, &request(hash(7), 1, 9001, 1, Event::Started)).expect("still serving");
}

#[test]
fn an_oversized_head_is_refused_with_431() {
    let tracker = start_tracker(ServerConfig::default());
    let http = tracker.http_addr.unwrap();
    let mut head = b"GET /announce HTTP/1.1\r\n".to_vec();
    while head.len() < 3 * MAX_REQUEST_HEAD {
        head.extend_from_slice(b"X-Padding: 0123456789abcdef0123456789abcdef\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let response = exchange(http, &head).expect("a response before the close");
    let (status, body) = status_and_body(&response);
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&body));
    // A request line longer than the cap is refused the same way.
    let long = format!(
        "GET /announce?{} HTTP/1.1\r\n\r\n",
        "a".repeat(MAX_REQUEST_HEAD)
    );
    let (status, _) = status_and_body(&exchange(http, long.as_bytes()).unwrap());
    assert_eq!(status, 431);
    http_announce(http, &request(hash(8), 1, 9002, 1, Event::Started)).expect("still serving");
}

#[test]
fn a_silent_client_is_cut_off_after_the_read_timeout() {
    let tracker = start_tracker(ServerConfig::default());
    let http = tracker.http_addr.unwrap();
    let mut stream = TcpStream::connect_timeout(&http, REPLY_LIMIT).unwrap();
    stream.write_all(b"GET /annou").unwrap();
    stream
        .set_read_timeout(Some(HTTP_READ_TIMEOUT + REPLY_LIMIT))
        .unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let waited = started.elapsed();
    assert_eq!(status_and_body(&response).0, 408);
    assert!(
        waited >= HTTP_READ_TIMEOUT - Duration::from_millis(500)
            && waited < HTTP_READ_TIMEOUT + REPLY_LIMIT,
        "{waited:?}"
    );
}

#[test]
fn connections_beyond_the_cap_are_closed_until_one_frees_up() {
    let tracker = start_tracker(ServerConfig::default());
    let http = tracker.http_addr.unwrap();
    let mut idle: Vec<TcpStream> = (0..MAX_HTTP_CONNECTIONS)
        .map(|_| TcpStream::connect_timeout(&http, REPLY_LIMIT).expect("connecting"))
        .collect();
    // Accepted in order after the idle ones, so over the cap: closed without an answer.
    let mut extra = TcpStream::connect_timeout(&http, REPLY_LIMIT).unwrap();
    extra.set_read_timeout(Some(REPLY_LIMIT)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the surplus connection was not closed: {other:?}"),
    }
    assert!(started.elapsed() < REPLY_LIMIT);
    // Closing an idle connection frees its slot for the next client.
    idle.pop();
    let served = wait_for(REPLY_LIMIT, Duration::from_millis(50), || {
        let head = b"GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n";
        exchange(http, head)
    });
    let (status, body) = status_and_body(&served.expect("served once a slot is free"));
    assert_eq!(status, 200);
    assert!(body.starts_with(b"d5:files"));
    drop(idle);
}

// ---------------------------------------------------------------------------------------
// UDP with spate's client packets

struct UdpClient {
    socket: UdpSocket,
    tracker: SocketAddr,
    tid: std::cell::Cell<u32>,
}

impl UdpClient {
    fn new(tracker: SocketAddr) -> UdpClient {
        UdpClient::bind(loopback(), tracker)
    }

    fn bind(local: SocketAddr, tracker: SocketAddr) -> UdpClient {
        let socket = UdpSocket::bind(local).unwrap();
        socket.set_read_timeout(Some(REPLY_LIMIT)).unwrap();
        UdpClient {
            socket,
            tracker,
            tid: std::cell::Cell::new(0x1000),
        }
    }

    fn next_tid(&self) -> u32 {
        self.tid.set(self.tid.get() + 1);
        self.tid.get()
    }

    fn send_and_receive(&self, packet: &[u8]) -> Vec<u8> {
        self.socket.send_to(packet, self.tracker).unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, from) = self
            .socket
            .recv_from(&mut buf)
            .expect("a UDP reply in time");
        assert_eq!(from, self.tracker);
        buf.truncate(n);
        buf
    }

    fn connect(&self) -> u64 {
        let tid = self.next_tid();
        let reply = self.send_and_receive(&encode_connect(tid));
        decode_connect_response(&reply, tid).expect("a connect reply")
    }

    fn announce(&self, conn: u64, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
        let tid = self.next_tid();
        let reply = self.send_and_receive(&encode_announce(conn, tid, req));
        decode_announce_response(&reply, tid, false)
    }

    fn scrape(&self, conn: u64, hashes: &[InfoHash]) -> Result<Vec<ScrapeEntry>, TrackerError> {
        let tid = self.next_tid();
        let reply = self.send_and_receive(&encode_scrape_request(conn, tid, hashes).unwrap());
        decode_scrape_response(&reply, tid, hashes)
    }
}

#[test]
fn udp_connect_announce_and_scrape_round_trip() {
    let tracker = start_tracker(ServerConfig::default());
    let udp_addr = tracker.udp_addr.unwrap();
    let h = hash(9);
    let (a, b) = (UdpClient::new(udp_addr), UdpClient::new(udp_addr));
    let (conn_a, conn_b) = (a.connect(), b.connect());
    assert_eq!(conn_a, conn_b, "ids depend on the IP only, not the port");

    let first = a
        .announce(conn_a, &request(h, 1, 5001, 100, Event::Started))
        .unwrap();
    assert!(first.peers.is_empty());
    let second = b
        .announce(conn_b, &request(h, 2, 5002, 0, Event::Started))
        .unwrap();
    assert_eq!(second.peers, [local(5001)]);
    assert_eq!((second.complete, second.incomplete), (Some(1), Some(1)));
    assert_eq!(second.interval, 60);
    let again = a
        .announce(conn_a, &request(h, 1, 5001, 100, Event::None))
        .unwrap();
    assert_eq!(again.peers, [local(5002)]);

    let entries = a.scrape(conn_a, &[h, hash(10)]).unwrap();
    let numbers: Vec<_> = entries.iter().map(|e| (e.complete, e.incomplete)).collect();
    assert_eq!(numbers, [(1, 1), (0, 0)]);

    // The HTTP side sees the same swarm.
    let http = tracker.http_addr.unwrap();
    let e = scrape_one(http, h);
    assert_eq!((e.complete, e.incomplete), (1, 1));
}

#[test]
fn udp_requests_with_a_wrong_connection_id_get_an_error_packet() {
    let tracker = start_tracker(ServerConfig::default());
    let udp_addr = tracker.udp_addr.unwrap();
    let a = UdpClient::new(udp_addr);
    // Another IP (still loopback): ids are bound to the client's IP.
    let b = UdpClient::bind(SocketAddr::from(([127, 0, 0, 2], 0)), udp_addr);
    let conn_a = a.connect();
    let req = request(hash(11), 1, 5003, 1, Event::Started);
    for (client, conn) in [(&a, 0x0123_4567_89ab_cdef), (&b, conn_a)] {
        let err = client.announce(conn, &req).unwrap_err();
        assert_eq!(
            err,
            TrackerError::Failure("unknown or expired connection id".into())
        );
        let err = client.scrape(conn, &[hash(11)]).unwrap_err();
        assert!(matches!(err, TrackerError::Failure(_)), "{err}");
    }
    // A malformed packet with a transaction id gets an error too; a runt gets nothing.
    let mut bad = encode_connect(77).to_vec();
    bad[0] ^= 0xff;
    let reply = a.send_and_receive(&bad);
    assert_eq!(&reply[..8], &[0, 0, 0, 3, 0, 0, 0, 77]);
    a.socket.send_to(&[1, 2, 3], udp_addr).unwrap();
    a.announce(conn_a, &req).expect("the right id still works");
}

// ---------------------------------------------------------------------------------------
// spate's own announcer

#[test]
fn the_announcer_finds_the_other_peer_over_http_and_udp() {
    let tracker = start_tracker(ServerConfig::default());
    let http_url = format!("http://{}/announce", tracker.http_addr.unwrap());
    let udp_url = format!("udp://{}/announce", tracker.udp_addr.unwrap());
    spate::runtime::start(async {
        let client = http_client(&HttpConfig {
            timeout: REPLY_LIMIT,
            ..HttpConfig::default()
        })
        .unwrap();
        for (n, (url_a, url_b)) in [(&http_url, &udp_url), (&udp_url, &http_url)]
            .into_iter()
            .enumerate()
        {
            let h = hash(20 + n as u8);
            let announcer = |peer: u8, port: u16, url: &String| {
                let config = AnnounceConfig {
                    udp: UdpConfig {
                        base_timeout: Duration::from_secs(1),
                        max_attempts: 3,
                    },
                    ..AnnounceConfig::new(h, peer_id(peer), port)
                };
                Announcer::new_in_order(config, vec![vec![url.clone()]], client.clone())
            };
            let mut a = announcer(1, 4001, url_a);
            let mut b = announcer(2, 4002, url_b);
            let leecher = TransferStats {
                left: 500,
                ..TransferStats::default()
            };
            let seed = TransferStats::default();
            let out = a
                .announce(Event::Started, leecher)
                .await
                .expect("a announces");
            assert!(out.peers.is_empty());
            let out = b.announce(Event::Started, seed).await.expect("b announces");
            assert_eq!(out.peers, [local(4001)], "{url_b}");
            assert_eq!((out.seeders, out.leechers), (Some(1), Some(1)));
            let out = a.announce(Event::None, leecher).await.expect("a again");
            assert_eq!(out.peers, [local(4002)], "{url_a}");
            b.announce(Event::Stopped, seed).await.expect("b stops");
            let out = a.announce(Event::None, leecher).await.expect("a alone");
            assert!(out.peers.is_empty());
        }
    });
}

// ---------------------------------------------------------------------------------------
// The command

#[test]
fn spate_tracker_prints_its_addresses_serves_and_exits_130_on_sigterm() {
    let tracker = SpateTracker::start(&[
        "--listen",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--interval",
        "30",
    ]);
    assert_ne!(tracker.http.port(), 0);
    let udp = UdpClient::new(tracker.udp.expect("a UDP address"));
    let conn = udp.connect();
    let reply = udp
        .announce(conn, &request(hash(30), 1, 3001, 0, Event::Started))
        .unwrap();
    assert_eq!(reply.interval, 30);
    assert_eq!(scrape_one(tracker.http, hash(30)).complete, 1);
    let (status, stderr) = tracker.terminate(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{stderr:?}");
    assert!(stderr.iter().any(|l| l.contains("stopped")), "{stderr:?}");
}

#[test]
fn spate_tracker_refuses_a_bad_whitelist_naming_the_line() {
    let dir = tempdir();
    let list = dir.path().join("allowed");
    std::fs::write(&list, format!("# ok\n{}\nnot-a-hash\n", "ab".repeat(20))).unwrap();
    let out = spate()
        .args(["tracker", "--listen", "127.0.0.1:0", "--whitelist"])
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("line 3") && text.contains("not-a-hash"),
        "{text}"
    );
    let out = spate()
        .args(["tracker", "--listen", "127.0.0.1:0", "--interval", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// libtorrent and Transmission

/// libtorrent seeds, Transmission leeches, and they only know of each other through
/// `spate tracker`. Transmission 3 never dials 127.0.0.0/8 peers, so libtorrent must dial
/// it: it is made to re-announce until it has learnt of Transmission and the file is over.
#[test]
fn libtorrent_and_transmission_find_each_other_through_spate_tracker() {
    let dir = tempdir();
    let root = dir.path();
    let tracker = SpateTracker::start(&["--listen", "127.0.0.1:0", "--interval", "60"]);
    let announce = tracker.announce_url();

    let seed_dir = root.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data = payload(3 << 20, 77);
    std::fs::write(seed_dir.join("file.bin"), &data).unwrap();
    let torrent = root.join("file.torrent");
    let hex = create_torrent(
        &seed_dir.join("file.bin"),
        &torrent,
        &["--tracker", &announce, "--piece-size", "256K"],
    );
    let info_hash = InfoHash(
        <[u8; 20]>::try_from(data_encoding::HEXLOWER.decode(hex.as_bytes()).unwrap()).unwrap(),
    );

    let lt_log = root.join("libtorrent.log");
    let libtorrent = libtorrent_seeder(&torrent, &seed_dir, free_port(), &lt_log);
    let transmission = Transmission::start(
        &root.join("transmission"),
        &root.join("downloads"),
        free_port(),
        free_port(),
    );
    transmission.add(&torrent);
    let logs = || {
        let lt = std::fs::read_to_string(&lt_log).unwrap_or_default();
        let tr_log = root.join("transmission/transmission.log");
        let tr = std::fs::read_to_string(tr_log).unwrap_or_default();
        let tail = |s: &str| s.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        format!("libtorrent:\n{}\ntransmission:\n{}", tail(&lt), tail(&tr))
    };

    let listed = wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let e = scrape_one(tracker.http, info_hash);
        (e.complete + e.incomplete == 2).then_some(e)
    });
    let listed = listed.unwrap_or_else(|| panic!("the tracker never listed both\n{}", logs()));
    assert_eq!(
        (listed.complete, listed.incomplete),
        (1, 1),
        "one seed, one leecher"
    );

    let downloaded = transmission.download_dir.join("file.bin");
    let mut last_nudge = Instant::now() - Duration::from_secs(10);
    let done = wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        if last_nudge.elapsed() >= Duration::from_secs(3) {
            libtorrent.signal(libc::SIGUSR1);
            last_nudge = Instant::now();
        }
        let complete = transmission.percent_done().is_some_and(|p| p >= 100.0);
        (complete && std::fs::read(&downloaded).ok().as_deref() == Some(&data[..])).then_some(())
    });
    assert!(
        done.is_some(),
        "Transmission did not get the file\n{}",
        logs()
    );

    // Transmission tells the tracker it completed: two seeds, one download.
    let seeds = wait_for(Duration::from_secs(20), Duration::from_millis(250), || {
        let e = scrape_one(tracker.http, info_hash);
        (e.complete == 2).then_some(e)
    });
    let seeds = seeds.unwrap_or_else(|| panic!("no completed announce\n{}", logs()));
    assert_eq!((seeds.incomplete, seeds.downloaded), (0, 1));

    drop(transmission);
    drop(libtorrent);
    let (status, stderr) = tracker.terminate(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(130), "{stderr:?}");
}
