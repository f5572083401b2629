//! End-to-end tests of `spate create`, `spate info` and `spate verify` on real files, with
//! libtorrent, Transmission and aria2 as independent judges of the torrents spate writes.

mod common;

use common::*;
use std::path::Path;

const PIECE: usize = 32 << 10;

fn multi_file_tree(root: &Path) {
    write_tree(
        root,
        &[
            ("data/a first.bin", 3 * PIECE + 17),
            ("data/empty", 0),
            ("data/sub dir/ünïcödé ✓.txt", 1000),
            ("data/sub dir/zero too", 0),
            ("data/z last", PIECE - 1000 - 17 + 1), // total = 4 pieces + 1 byte
        ],
    );
}

fn info_json(torrent: &Path) -> serde_json::Value {
    let o = run_spate(&["info", path_str(torrent), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn verify_json(torrent: &Path, dir: &Path) -> (i32, serde_json::Value) {
    let o = run_spate(&["verify", path_str(torrent), path_str(dir), "--json"]);
    (
        o.status.code().unwrap(),
        serde_json::from_str(&stdout(&o)).unwrap(),
    )
}

#[test]
fn multi_file_round_trip_agrees_with_other_clients() {
    let dir = tempdir();
    multi_file_tree(dir.path());
    let torrent = dir.path().join("t.torrent");
    let hash = create_torrent(
        &dir.path().join("data"),
        &torrent,
        &["--piece-size", "32K", "-t", "http://127.0.0.1:1/announce"],
    );
    let info = info_json(&torrent);
    assert_eq!(info["info_hash"], hash.as_str());
    assert_eq!(info["name"], "data");
    assert_eq!(info["piece_count"], 5);
    assert_eq!(info["total_length"], 4 * PIECE as u64 + 1);
    assert_eq!(info["padding_bytes"], 0);
    let paths: Vec<&str> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "data/a first.bin",
            "data/empty",
            "data/sub dir/zero too",
            "data/sub dir/ünïcödé ✓.txt",
            "data/z last"
        ]
    );
    assert_eq!(libtorrent_info_hash(&torrent), hash);
    assert_eq!(transmission_info_hash(&torrent), hash);
    assert_eq!(aria2_info_hash(&torrent), hash);
    let (code, report) = verify_json(&torrent, dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["pieces"]["complete"], 5);
}

#[test]
fn single_file_with_one_byte_last_piece() {
    let dir = tempdir();
    write_tree(dir.path(), &[("one.bin", 2 * PIECE + 1)]);
    let torrent = dir.path().join("one.torrent");
    let hash = create_torrent(
        &dir.path().join("one.bin"),
        &torrent,
        &["--piece-size", "32K", "--private", "--comment", "c"],
    );
    let info = info_json(&torrent);
    assert_eq!(info["piece_count"], 3);
    assert_eq!(info["private"], true);
    assert_eq!(info["comment"], "c");
    assert_eq!(libtorrent_info_hash(&torrent), hash);
    let (code, _) = verify_json(&torrent, dir.path());
    assert_eq!(code, 0);
}

#[test]
fn verify_finds_a_flipped_byte_in_the_right_piece_and_file() {
    let dir = tempdir();
    multi_file_tree(dir.path());
    let torrent = dir.path().join("t.torrent");
    create_torrent(&dir.path().join("data"), &torrent, &["--piece-size", "32K"]);
    // Byte 2*PIECE+5 of "a first.bin" lies in piece 2.
    let victim = dir.path().join("data/a first.bin");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[2 * PIECE + 5] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(dir.path().join("data/z last")).unwrap();
    let (code, report) = verify_json(&torrent, dir.path());
    assert_eq!(code, 1);
    assert_eq!(report["complete"], false);
    let files = report["files"].as_array().unwrap();
    let a = files
        .iter()
        .find(|f| f["path"] == "data/a first.bin")
        .unwrap();
    assert_eq!(a["corrupt_pieces"], serde_json::json!([2]));
    assert_eq!(a["corrupt"], 1);
    let z = files.iter().find(|f| f["path"] == "data/z last").unwrap();
    assert_eq!(z["missing"], 2, "{z}"); // pieces 3 and 4 hold its bytes
    assert_eq!(report["pieces"]["corrupt"], 1);
    assert_eq!(report["pieces"]["missing"], 2);
}

#[test]
fn the_same_tree_gives_the_same_torrent() {
    let dir = tempdir();
    multi_file_tree(dir.path());
    let (a, b) = (dir.path().join("a.torrent"), dir.path().join("b.torrent"));
    create_torrent(&dir.path().join("data"), &a, &[]);
    create_torrent(&dir.path().join("data"), &b, &[]);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn magnet_info() {
    let o = run_spate(&[
        "info",
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x+y&tr=udp%3A%2F%2Ft%3A1",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("c12fe1c06bba254a9dc9f519b335aa7c1367a88a"),
        "{out}"
    );
    assert!(out.contains("x y") && out.contains("udp://t:1"), "{out}");
}

fn assert_bad_input(args: &[&str], needle: &str) {
    let o = run_spate(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "one clear line, got {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn bad_torrents_exit_2_with_one_clear_line() {
    let dir = tempdir();
    let t = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (t("trunc", b"d4:infod6:lengthi1e4:na"), "not valid bencode"),
        (t("text", b"hello world"), "not valid bencode"),
        (t("pieces", b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16e6:pieces41:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxee"), "info.pieces is 41 bytes, not a multiple of 20"),
        (t("type", b"d4:infod6:length1:x4:name1:x12:piece lengthi16e6:pieces0:ee"), "info.length is not an integer"),
        (t("escape", b"d4:infod5:filesld6:lengthi1e4:pathl2:..6:passwdeee4:name1:x12:piece lengthi16e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"), "refused path \"../passwd\""),
        (t("abs", b"d4:infod6:lengthi1e4:name4:/etc12:piece lengthi16e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"), "refused path \"/etc\""),
        (t("zero", b"d4:infod6:lengthi1e4:name1:x12:piece lengthi0e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"), "piece length is 0"),
        (t("count", b"d4:infod6:lengthi100e4:name1:x12:piece lengthi16e6:pieces20:xxxxxxxxxxxxxxxxxxxxee"), "need 7"),
        (t("huge", b"d4:infod6:lengthi9007199254740993e4:name1:x12:piece lengthi16e6:pieces0:ee"), "2^53"),
    ];
    for (path, needle) in &cases {
        assert_bad_input(&["info", path_str(path)], needle);
        assert_bad_input(&["verify", path_str(path), path_str(dir.path())], needle);
    }
    assert_bad_input(
        &["info", path_str(&dir.path().join("absent.torrent"))],
        "cannot read",
    );
    assert_bad_input(&["info", "magnet:?dn=x"], "no xt=urn:btih");
}

#[test]
fn create_refuses_missing_and_empty_paths() {
    let dir = tempdir();
    let out = dir.path().join("o.torrent");
    assert_bad_input(
        &[
            "create",
            path_str(&dir.path().join("nope")),
            "-o",
            path_str(&out),
        ],
        "No such file",
    );
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    assert_bad_input(
        &[
            "create",
            path_str(&dir.path().join("empty")),
            "-o",
            path_str(&out),
        ],
        "no files to add",
    );
    assert!(!out.exists());
}

#[test]
fn create_refuses_unreadable_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write_tree(dir.path(), &[("d/secret", 10)]);
    std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path().join("d/secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = dir.path().join("o.torrent");
    let src = dir.path().join("d");
    let args = ["create", path_str(&src), "-o", path_str(&out)];
    // Root reads everything, so as root the command runs as the unprivileged user nobody.
    let o = if unsafe { libc_geteuid() } == 0 {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_spate"),
            ])
            .args(args)
            .output()
            .expect("running setpriv (util-linux)")
    } else {
        run_spate(&args)
    };
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1);
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn info_into_a_closed_pipe_ends_without_a_panic() {
    let dir = tempdir();
    write_tree(dir.path(), &[("a.bin", 100_000)]);
    let torrent = dir.path().join("t.torrent");
    create_torrent(&dir.path().join("a.bin"), &torrent, &[]);
    let mut child = spate()
        .args(["info", path_str(&torrent)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before spate prints
    let out = child.wait_with_output().unwrap();
    assert!(
        !stderr(&out).contains("panicked"),
        "spate info panicked: {}",
        stderr(&out)
    );
}
