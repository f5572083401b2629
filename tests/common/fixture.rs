//! A torrent made from a deterministic payload under a temp dir: the seed's data in
//! `seed/`, empty directories beside it for leechers, 256 KiB pieces.

use super::{create_torrent, tempdir, write_tree};
use spate::metainfo::Metainfo;
use std::path::Path;

const PIECE: usize = 256 << 10;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub torrent: std::path::PathBuf,
    pub meta: Metainfo,
}

impl Fixture {
    /// A single-file torrent of `len` bytes in `dir/seed/one.bin`.
    pub fn single(len: usize) -> Fixture {
        let dir = tempdir();
        write_tree(&dir.path().join("seed"), &[("one.bin", len)]);
        Fixture::finish(dir, "seed/one.bin", &[])
    }

    pub fn multi() -> Fixture {
        let dir = tempdir();
        write_tree(
            &dir.path().join("seed"),
            &[
                ("tree/a.bin", 3 * PIECE + 100),
                ("tree/empty", 0),
                ("tree/sub dir/ü.txt", 5000),
                ("tree/sub dir/zero", 0),
                ("tree/z.bin", PIECE - 5100 + 1),
            ],
        );
        Fixture::finish(dir, "seed/tree", &[])
    }

    /// A single-file torrent of `len` bytes announcing to `trackers`, one tier each.
    pub fn single_tracked(len: usize, trackers: &[String]) -> Fixture {
        let dir = tempdir();
        write_tree(&dir.path().join("seed"), &[("one.bin", len)]);
        let mut args = vec![];
        for t in trackers {
            args.extend(["-t", t.as_str()]);
        }
        Fixture::finish(dir, "seed/one.bin", &args)
    }

    /// A torrent of `files` under `seed/`, made from `seed/<top>` with `extra` flags for
    /// `spate create` (which may set another piece size than 256 KiB).
    pub fn multi_with(files: &[(&str, usize)], top: &str, extra: &[&str]) -> Fixture {
        let dir = tempdir();
        write_tree(&dir.path().join("seed"), files);
        Fixture::finish(dir, &format!("seed/{top}"), extra)
    }

    fn finish(dir: tempfile::TempDir, rel: &str, extra: &[&str]) -> Fixture {
        let torrent = dir.path().join("t.torrent");
        let default_piece: &[&str] = if extra.contains(&"--piece-size") {
            &[]
        } else {
            &["--piece-size", "256K"]
        };
        let args = [default_piece, extra].concat();
        create_torrent(&dir.path().join(rel), &torrent, &args);
        let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
        Fixture { dir, torrent, meta }
    }

    pub fn seed_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("seed")
    }

    pub fn out_dir(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The whole payload, concatenated in torrent order.
    pub fn payload(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for f in &self.meta.info.files {
            all.extend(std::fs::read(self.seed_dir().join(&f.path)).unwrap());
        }
        all
    }

    pub fn assert_same_files(&self, out: &Path) {
        for f in &self.meta.info.files {
            let want = std::fs::read(self.seed_dir().join(&f.path)).unwrap();
            let got = std::fs::read(out.join(&f.path))
                .unwrap_or_else(|e| panic!("{}: {e}", f.path.display()));
            assert!(want == got, "{} differs", f.path.display());
        }
    }
}
