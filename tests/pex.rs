//! Peer exchange (BEP 11) end to end, over loopback sockets: a spate seeder tells a newly
//! connected peer the listening address of the leecher it serves; a spate leecher that knows
//! only a peer with nothing to give downloads the whole torrent from the seeder that peer
//! names in a `ut_pex` message; a private torrent neither offers PEX nor dials what a peer
//! names anyway; a peer that names a hundred addresses that never answer does not delay the
//! seeder a tracker names afterwards.

mod common;

use common::ext_peer;
use common::fixture::Fixture;
use common::swarm::{free_port, report_of, spawn_on, start_leecher, start_seeder, Proc};
use spate::peer::extended;
use spate::pex::{PexMessage, FLAG_REACHABLE, FLAG_SEED};
use spate::wire::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
/// What a test peer says in its extension handshake: it speaks `ut_pex`, as id 1.
const PEX_HELLO: &[u8] = b"d1:md6:ut_pexi1eee";

/// Accepts one connection on `listener` within `LIMIT`.
fn accept_one(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                return conn;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("nobody dialled the test peer: {e}"),
        }
    }
}

/// The extension handshake spate sends on `conn`.
fn their_extension_handshake(conn: &mut TcpStream) -> Vec<u8> {
    ext_peer::read_until(conn, |m| match m {
        Message::Extended { id: 0, payload } => Some(payload.to_vec()),
        _ => None,
    })
    .expect("spate sends its extension handshake")
}

/// Starts a leecher of `fx` into `out` whose only peer is a test peer that speaks
/// `ut_pex`; returns the leecher, the test peer's side of the connection, and the leecher's
/// extension handshake.
fn leecher_introduced(fx: &Fixture, out: &Path) -> (Proc, TcpStream, Vec<u8>) {
    let introducer = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = introducer.local_addr().unwrap().to_string();
    let leecher = start_leecher(&fx.torrent, out, &["--peer", &peer]);
    let mut conn = accept_one(&introducer);
    ext_peer::answer(&mut conn, fx.meta.info_hash, PEX_HELLO).unwrap();
    let hello = their_extension_handshake(&mut conn);
    (leecher, conn, hello)
}

#[test]
fn a_seeder_tells_a_new_peer_where_its_leecher_listens() {
    let fx = Fixture::single(4 << 20);
    // Slow enough that the leecher is still connected (and downloading) when we ask.
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &["--upload-limit", "64K"]);
    let out = fx.out_dir("leech");
    let leecher = start_leecher(&fx.torrent, &out, &["--peer", &seeder.addr().to_string()]);
    let mut conn = ext_peer::dial(seeder.addr(), fx.meta.info_hash, PEX_HELLO).unwrap();
    let hello = their_extension_handshake(&mut conn);
    assert_eq!(extended::pex_id_of(&hello), Some(extended::OUR_PEX_ID));
    assert_eq!(extended::listen_port_of(&hello), Some(seeder.port));
    let heard = ext_peer::read_until(&mut conn, |m| match m {
        Message::Extended { id: 1, payload } => {
            let msg = PexMessage::parse(payload).expect("a well-formed ut_pex message");
            let addrs: Vec<SocketAddr> = msg.added.iter().map(|&(a, _)| a).collect();
            addrs.contains(&leecher.addr()).then_some(msg)
        }
        _ => None,
    })
    .expect("the seeder names its leecher within the read timeout");
    let (_, flags) = heard
        .added
        .iter()
        .find(|(a, _)| *a == leecher.addr())
        .unwrap();
    assert_eq!(flags & FLAG_SEED, 0, "the leecher is not a seed");
    assert_eq!(
        flags & FLAG_REACHABLE,
        0,
        "the leecher dialled the seeder, not the other way"
    );
}

#[test]
fn a_leecher_downloads_from_a_seeder_it_heard_of_only_through_pex() {
    let fx = Fixture::single(3 << 20);
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    // The only peer the leecher is given has no pieces; it names the seeder.
    let out = fx.out_dir("leech");
    let (leecher, mut conn, hello) = leecher_introduced(&fx, &out);
    let pex_id = extended::pex_id_of(&hello).expect("the leecher offers ut_pex");
    assert_eq!(extended::listen_port_of(&hello), Some(leecher.port));
    let news = PexMessage {
        added: vec![(seeder.addr(), FLAG_SEED | FLAG_REACHABLE)],
        dropped: vec![],
    };
    ext_peer::send_extended(&mut conn, pex_id, &news.encode()).unwrap();
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["peers_from_pex"], 1, "{report}");
    fx.assert_same_files(&out);
    drop(conn);
}

#[test]
fn a_private_torrent_neither_offers_pex_nor_dials_what_a_peer_names() {
    let fx = Fixture::multi_with(&[("one.bin", 1 << 20)], "one.bin", &["--private"]);
    assert!(fx.meta.info.private);
    // A listener that only counts who dials it, named in the PEX message below.
    let bait = TcpListener::bind("127.0.0.1:0").unwrap();
    let bait_addr = bait.local_addr().unwrap();
    let dialled = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&dialled);
    std::thread::spawn(move || {
        for conn in bait.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let out = fx.out_dir("leech");
    let (leecher, mut conn, hello) = leecher_introduced(&fx, &out);
    assert_eq!(extended::pex_id_of(&hello), None, "no ut_pex offered");
    // Sent anyway, under the id spate uses for public torrents.
    let news = PexMessage {
        added: vec![(bait_addr, FLAG_SEED | FLAG_REACHABLE)],
        dropped: vec![],
    };
    ext_peer::send_extended(&mut conn, extended::OUR_PEX_ID, &news.encode()).unwrap();
    // The connect loop takes new addresses at least once a second.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        dialled.load(Ordering::SeqCst),
        0,
        "dialled a peer named by PEX"
    );
    leecher.signal("INT");
    let report = common::swarm::final_report(&leecher.wait(LIMIT).stdout);
    assert_eq!(report["peers_from_pex"], 0, "{report}");
}

/// A listening address that never completes a connect: a listener with a backlog of 0
/// whose one queued connection is never accepted, so the kernel drops every further SYN and
/// a dialler waits out its own timeout. Holds both sockets.
struct DeadEnd {
    _listener: socket2::Socket,
    _filler: TcpStream,
    addr: SocketAddr,
}

impl DeadEnd {
    fn new() -> DeadEnd {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&any.into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let filler = TcpStream::connect(addr).unwrap();
        DeadEnd {
            _listener: listener,
            _filler: filler,
            addr,
        }
    }
}

/// An HTTP tracker on a thread that answers every announce with `peer` once `reveal` is
/// set, and with no peers before (interval 1 s). Returns its announce URL.
fn tracker_revealing(peer: SocketAddr, reveal: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/announce", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                request.push(byte[0]);
            }
            let SocketAddr::V4(v4) = peer else {
                unreachable!("a loopback IPv4 peer")
            };
            let mut compact = Vec::new();
            if reveal.load(Ordering::SeqCst) {
                compact.extend(v4.ip().octets());
                compact.extend(v4.port().to_be_bytes());
            }
            let mut body = format!("d8:intervali1e5:peers{}:", compact.len()).into_bytes();
            body.extend(compact);
            body.push(b'e');
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    url
}

#[test]
fn addresses_a_peer_names_that_never_answer_do_not_delay_a_tracker_peer() {
    let seed_fx = Fixture::single(2 << 20);
    let seeder = start_seeder(&seed_fx.torrent, &seed_fx.seed_dir(), &[]);
    let reveal = Arc::new(AtomicBool::new(false));
    let url = tracker_revealing(seeder.addr(), Arc::clone(&reveal));
    // The same payload, announcing to the test tracker (the seeder, started without
    // trackers, never learns of the leecher, so only the leecher's dial can join them).
    let fx = Fixture::single_tracked(2 << 20, &[url]);
    assert_eq!(fx.meta.info_hash, seed_fx.meta.info_hash);
    let dead: Vec<DeadEnd> = (0..100).map(|_| DeadEnd::new()).collect();
    assert!(
        TcpStream::connect_timeout(&dead[0].addr, Duration::from_millis(500)).is_err(),
        "a dead end answered"
    );
    // The leecher announces (the tracker names nobody yet) and meets the test peer, which
    // names the hundred dead ends. Dialled one after another, 8 at a time with a 5 s
    // timeout, they would hold every connect slot for over a minute.
    let introducer = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = fx.out_dir("leech");
    let leecher = spawn_on(
        free_port(),
        &[
            "download",
            fx.torrent.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--peer",
            &introducer.local_addr().unwrap().to_string(),
        ],
    );
    let mut conn = accept_one(&introducer);
    ext_peer::answer(&mut conn, fx.meta.info_hash, PEX_HELLO).unwrap();
    let hello = their_extension_handshake(&mut conn);
    let pex_id = extended::pex_id_of(&hello).expect("the leecher offers ut_pex");
    let news = PexMessage {
        added: dead
            .iter()
            .map(|d| (d.addr, FLAG_SEED | FLAG_REACHABLE))
            .collect(),
        dropped: vec![],
    };
    ext_peer::send_extended(&mut conn, pex_id, &news.encode()).unwrap();
    // The connect loop takes what peers named at least once a second.
    std::thread::sleep(Duration::from_millis(1500));
    // Now the tracker names the seeder; the leecher hears of it at its next announce and
    // must dial it at once.
    reveal.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let report = report_of(&leecher.wait(Duration::from_secs(90)));
    let took = started.elapsed();
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["peers_from_pex"], 100, "{report}");
    fx.assert_same_files(&out);
    assert!(
        took < Duration::from_secs(15),
        "the tracker's seeder waited behind the dead ends: {took:?}"
    );
    drop((conn, seeder, dead));
}
