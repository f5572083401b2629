//! Peer exchange (BEP 11) end to end, over loopback sockets: a spate seeder tells a newly
//! connected peer the listening address of the leecher it serves; a spate leecher that knows
//! only a peer with nothing to give downloads the whole torrent from the seeder that peer
//! names in a `ut_pex` message; a private torrent neither offers PEX nor dials what a peer
//! names anyway.

mod common;

use common::ext_peer;
use common::fixture::Fixture;
use common::swarm::{report_of, start_leecher, start_seeder, Proc};
use spate::peer::extended;
use spate::pex::{PexMessage, FLAG_REACHABLE, FLAG_SEED};
use spate::wire::Message;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
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
