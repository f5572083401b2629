//! File selection end to end, over loopback sockets and real files: `download --only`
//! fetches the pieces of the chosen files and stops there (the neighbours that share a piece
//! get those bytes, nothing more); running the same download without `--only` then fetches
//! the rest and keeps what the first run verified; a magnet link's `so=` selects the same
//! way; an index the torrent does not have is refused before anything starts.

mod common;

use common::fixture::Fixture;
use common::swarm::{report_of, spawn_on, start_leecher, start_seeder};
use common::*;
use std::path::Path;
use std::time::Duration;

const PIECE: usize = 256 << 10;
const LIMIT: Duration = Duration::from_secs(60);

/// Three files whose boundaries fall inside pieces: `a` ends in piece 3, which `b` starts;
/// `b` ends in piece 5, which `c` starts.
fn three_files() -> Fixture {
    Fixture::multi_with(
        &[
            ("tree/a.bin", 3 * PIECE + 100),
            ("tree/b.bin", 2 * PIECE - 50),
            ("tree/c.bin", PIECE + 7),
        ],
        "tree",
        &[],
    )
}

/// Whether `rel` under `out` holds exactly the seed's bytes.
fn same(fx: &Fixture, out: &Path, rel: &str) -> bool {
    let want = std::fs::read(fx.seed_dir().join(rel)).unwrap();
    std::fs::read(out.join(rel)).is_ok_and(|got| got == want)
}

/// Bytes in the pieces `pieces` of the fixture's torrent.
fn piece_bytes(fx: &Fixture, pieces: std::ops::Range<usize>) -> u64 {
    let total = fx.meta.info.total_length as usize;
    pieces.map(|p| (total - p * PIECE).min(PIECE) as u64).sum()
}

#[test]
fn only_the_selected_file_comes_then_the_rest_resumes() {
    let fx = three_files();
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let peer = seeder.addr().to_string();
    let out = fx.out_dir("leech");

    let first = start_leecher(&fx.torrent, &out, &["--peer", &peer, "--only", "1"]);
    let report = report_of(&first.wait(LIMIT));
    assert_eq!(report["complete"], true, "{report}");
    // b.bin lies in pieces 3, 4 and 5.
    let wanted = piece_bytes(&fx, 3..6);
    assert_eq!(report["wanted_bytes"], wanted, "{report}");
    assert_eq!(report["downloaded_bytes"], wanted, "{report}");
    assert!(
        same(&fx, &out, "tree/b.bin"),
        "the selected file is complete"
    );
    for other in ["tree/a.bin", "tree/c.bin"] {
        assert!(!same(&fx, &out, other), "{other} was not selected");
    }
    let c_len = std::fs::metadata(out.join("tree/c.bin")).unwrap().len();
    assert!(
        c_len < (PIECE + 7) as u64,
        "an unselected file is neither reserved nor extended: {c_len}"
    );

    let second = start_leecher(&fx.torrent, &out, &["--peer", &peer]);
    let report = report_of(&second.wait(LIMIT));
    assert_eq!(report["complete"], true, "{report}");
    let total = fx.meta.info.total_length;
    assert_eq!(
        report["downloaded_bytes"],
        total - wanted,
        "what the first run verified is kept: {report}"
    );
    fx.assert_same_files(&out);
}

#[test]
fn a_magnet_links_so_selects_the_files() {
    let fx = three_files();
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let link = format!(
        "magnet:?xt=urn:btih:{}&dn=tree&x.pe={}&so=0,2",
        fx.meta.info_hash.to_hex(),
        seeder.addr()
    );
    let out = fx.out_dir("leech");
    let args = [
        "download",
        &link,
        "-o",
        path_str(&out),
        "--no-trackers",
        "--json",
    ];
    let report = report_of(&spawn_on(common::swarm::free_port(), &args).wait(LIMIT));
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(
        report["wanted_bytes"],
        piece_bytes(&fx, 0..4) + piece_bytes(&fx, 5..7),
        "{report}"
    );
    assert!(same(&fx, &out, "tree/a.bin") && same(&fx, &out, "tree/c.bin"));
    assert!(!same(&fx, &out, "tree/b.bin"), "b.bin was not selected");
}

#[test]
fn a_file_the_torrent_lacks_is_refused_and_info_numbers_the_files() {
    let fx = three_files();
    let out = fx.out_dir("leech");
    for (only, says) in [
        ("3", "file 3 does not exist: the torrent has 3 files (0-2)"),
        ("0,1-9", "file 9 does not exist"),
        ("2-1", "not a list of file indices"),
    ] {
        let o = run_spate(&[
            "download",
            path_str(&fx.torrent),
            "-o",
            path_str(&out),
            "--only",
            only,
        ]);
        assert_eq!(o.status.code(), Some(2), "--only {only}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "--only {only}: {}", stderr(&o));
    }
    assert!(!out.exists(), "nothing was started");
    let info = run_spate(&["info", path_str(&fx.torrent), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&info)).unwrap();
    let numbered: Vec<(u64, String)> = (v["files"].as_array().unwrap().iter())
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        numbered,
        [
            (0, "tree/a.bin".into()),
            (1, "tree/b.bin".into()),
            (2, "tree/c.bin".into())
        ]
    );
}
