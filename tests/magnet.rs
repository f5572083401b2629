//! Magnet links end to end: `spate download 'magnet:?...'` fetches the info dictionary from
//! peers named in the link or found through its tracker (BEP 9, served by `spate seed`),
//! downloads, and keeps the dictionary so that the same command resumes without peers.
//! Peers that send a dictionary with another hash, claim an absurd size, or reject every
//! request are dropped, and the download still completes from an honest one.

mod common;

use common::clients::poll_until;
use common::ext_peer;
use common::fixture::Fixture;
use common::swarm::{free_port, report_of, spawn_on, start_seeder, Proc};
use common::tracker_clients::SpateTracker;
use common::*;
use spate::metadata::{MetadataMessage, METADATA_PIECE};
use spate::peer::extended;
use spate::types::InfoHash;
use spate::wire::{FrameDecoder, Message, DEFAULT_MAX_FRAME};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn magnet(meta: &spate::metainfo::Metainfo, extra: &str) -> String {
    format!(
        "magnet:?xt=urn:btih:{}&dn={}{extra}",
        meta.info_hash.to_hex(),
        meta.info.name
    )
}

/// `spate download LINK -o OUT` with `extra` flags, no trackers unless asked for.
fn leech_magnet(link: &str, out: &Path, extra: &[&str]) -> Proc {
    let args = [
        &["download", link, "-o", path_str(out), "--json"][..],
        extra,
    ]
    .concat();
    spawn_on(free_port(), &args)
}

/// A torrent whose info dictionary takes two metadata pieces (900 pieces of 16 KiB: 18,000
/// bytes of hashes), in several files.
fn two_piece_metadata() -> Fixture {
    let fx = Fixture::multi_with(
        &[("tree/big.bin", 14 << 20), ("tree/small.txt", 777)],
        "tree",
        &["--piece-size", "16K"],
    );
    assert!(
        fx.meta.info_bytes.len() > METADATA_PIECE,
        "two metadata pieces"
    );
    fx
}

#[test]
fn downloads_from_a_link_with_a_peer_address_then_resumes_without_peers() {
    let fx = two_piece_metadata();
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let out = fx.out_dir("leech");
    let link = magnet(&fx.meta, &format!("&x.pe={}", seeder.addr()));
    let report = report_of(&leech_magnet(&link, &out, &["--no-trackers"]).wait(LIMIT));
    assert_eq!(report["complete"], true);
    assert_eq!(report["info_hash"], fx.meta.info_hash.to_hex());
    fx.assert_same_files(&out);
    let saved = out
        .join(".spate")
        .join(format!("{}.torrent", fx.meta.info_hash.to_hex()));
    let kept = spate::metainfo::Metainfo::from_bytes(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(
        kept.info_bytes, fx.meta.info_bytes,
        "the dictionary is kept byte for byte"
    );
    // The seeder is gone: the same command must finish from the kept metadata and the data.
    drop(seeder);
    let again = report_of(&leech_magnet(&link, &out, &["--no-trackers"]).wait(LIMIT));
    assert_eq!(again["complete"], true);
    assert_eq!(again["downloaded_bytes"], 0);
}

#[test]
fn finds_peers_through_the_links_tracker() {
    let tracker = SpateTracker::start(&["--listen", "127.0.0.1:0", "--interval", "2"]);
    let url = tracker.announce_url();
    let fx = Fixture::single_tracked(3 << 20, std::slice::from_ref(&url));
    let _seeder = spawn_on(
        free_port(),
        &["seed", path_str(&fx.torrent), path_str(&fx.seed_dir())],
    );
    let out = fx.out_dir("leech");
    let link = magnet(&fx.meta, &format!("&tr={url}"));
    let report = report_of(&leech_magnet(&link, &out, &[]).wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
}

/// What a hostile metadata peer does once spate asks it for pieces.
#[derive(Clone, Copy)]
enum Lie {
    /// Sends pieces of the right size filled with other bytes.
    WrongBytes,
    /// Says the dictionary is 1 GiB.
    HugeSize,
    /// Rejects every request.
    RejectAll,
}

/// A peer that speaks the handshakes and `ut_metadata` but lies; counts the metadata
/// requests it got. Serves connections until the test ends.
fn lying_peer(info_hash: InfoHash, size: usize, lie: Lie) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let _ = lie_to(conn, info_hash, size, lie, &counter);
            });
        }
    });
    (addr, asked)
}

fn lie_to(
    mut conn: TcpStream,
    info_hash: InfoHash,
    size: usize,
    lie: Lie,
    asked: &AtomicUsize,
) -> std::io::Result<()> {
    let claimed = match lie {
        Lie::HugeSize => 1 << 30,
        _ => size,
    };
    let hello = format!("d1:md11:ut_metadatai3ee13:metadata_sizei{claimed}ee");
    ext_peer::answer(&mut conn, info_hash, hello.as_bytes())?;
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = Vec::new();
    let mut their_id = None;
    loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut replies = Vec::new();
        while let Some((message, used)) = decoder.decode(&buf).unwrap() {
            if let Message::Extended { id, payload } = message {
                if id == 0 {
                    their_id = extended::metadata_id_of(payload);
                } else if let Ok(MetadataMessage::Request { piece }) =
                    MetadataMessage::parse(payload)
                {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let len = size
                        .saturating_sub(piece as usize * METADATA_PIECE)
                        .min(METADATA_PIECE);
                    let garbage = vec![0x5a; len];
                    let reply = match lie {
                        Lie::RejectAll => MetadataMessage::Reject { piece },
                        _ => MetadataMessage::Data {
                            piece,
                            total_size: claimed as i64,
                            data: &garbage,
                        },
                    };
                    replies.push(reply.encode());
                }
            }
            buf.drain(..used);
        }
        for reply in replies {
            ext_peer::send_extended(
                &mut conn,
                their_id.expect("spate's extension handshake came first"),
                &reply,
            )?;
        }
    }
}

#[test]
fn peers_that_lie_about_the_metadata_are_dropped_and_an_honest_one_serves_it() {
    let fx = two_piece_metadata();
    let size = fx.meta.info_bytes.len();
    let liars: Vec<_> = [Lie::WrongBytes, Lie::HugeSize, Lie::RejectAll]
        .into_iter()
        .map(|lie| lying_peer(fx.meta.info_hash, size, lie))
        .collect();
    let mut pe: String = liars.iter().map(|(a, _)| format!("&x.pe={a}")).collect();
    let out = fx.out_dir("leech");
    let saved = out
        .join(".spate")
        .join(format!("{}.torrent", fx.meta.info_hash.to_hex()));
    // Liars only: spate asks them, keeps nothing, and goes on waiting.
    let leecher = leech_magnet(&magnet(&fx.meta, &pe), &out, &["--no-trackers"]);
    let (wrong_bytes, huge, reject_all) = (&liars[0].1, &liars[1].1, &liars[2].1);
    let asked = poll_until(LIMIT, || {
        (wrong_bytes.load(Ordering::SeqCst) >= 2 && reject_all.load(Ordering::SeqCst) >= 1)
            .then_some(())
    });
    leecher.signal("TERM");
    let stopped = leecher.wait(Duration::from_secs(10));
    assert!(
        asked.is_some(),
        "the liars were not asked: {}",
        stderr(&stopped)
    );
    assert_eq!(stopped.status.code(), Some(130), "{}", stderr(&stopped));
    assert!(!saved.exists(), "a wrong dictionary was kept");
    assert_eq!(
        huge.load(Ordering::SeqCst),
        0,
        "a 1 GiB dictionary is never asked for"
    );
    // With an honest seeder among them, the download completes.
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    pe += &format!("&x.pe={}", seeder.addr());
    let leecher = leech_magnet(&magnet(&fx.meta, &pe), &out, &["--no-trackers"]);
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
    assert!(saved.exists());
}

#[test]
fn a_link_without_peers_or_trackers_waits_and_stops_on_sigterm() {
    let fx = Fixture::single(1 << 20);
    let out = fx.out_dir("leech");
    let leecher = leech_magnet(&magnet(&fx.meta, ""), &out, &["--no-trackers"]);
    std::thread::sleep(Duration::from_millis(500));
    leecher.signal("TERM");
    let done = leecher.wait(Duration::from_secs(10));
    assert_eq!(done.status.code(), Some(130), "{}", stderr(&done));
}

#[test]
fn a_bad_link_is_refused_with_a_clear_message() {
    let out = tempdir();
    for (link, says) in [
        ("magnet:?dn=nohash", "no xt=urn:btih: info-hash"),
        ("magnet:?xt=urn:btih:1234", "neither 40 hex nor 32 base32"),
    ] {
        let o = run_spate(&["download", link, "-o", path_str(out.path())]);
        assert_eq!(o.status.code(), Some(2), "{link}");
        assert!(stderr(&o).contains(says), "{link}: {}", stderr(&o));
    }
}
