//! What `spate download` was given: a .torrent file, or a magnet link. A link's info
//! dictionary is fetched from peers (`session::magnet`) and kept as
//! `DIR/.spate/<info-hash>.torrent`, so that running the same command again (after Ctrl-C or
//! a crash) resumes without asking peers for it again.

use super::units::human_bytes;
use super::{load_torrent, BadInput};
use crate::magnet::Magnet;
use crate::metadata;
use crate::metainfo::Metainfo;
use crate::session::magnet::{fetch_metadata, FetchStatus, MagnetFetch};
use crate::session::SessionConfig;
use crate::types::PeerId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A download's torrent, as given.
pub enum Source {
    File(Metainfo),
    Magnet(Magnet),
}

impl Source {
    /// A magnet link if `given` starts with `magnet:`, else a .torrent file to read.
    pub fn parse(given: &Path) -> anyhow::Result<Source> {
        match given.to_str() {
            Some(uri) if uri.starts_with("magnet:") => Magnet::parse(uri)
                .map(Source::Magnet)
                .map_err(|e| BadInput(format!("{uri}: {e}")).into()),
            _ => load_torrent(given).map(Source::File),
        }
    }
}

/// Where a link's info dictionary is kept under the download directory.
pub fn saved_torrent_path(out_dir: &Path, magnet: &Magnet) -> Option<PathBuf> {
    let hash = magnet.info_hash?;
    Some(
        out_dir
            .join(".spate")
            .join(format!("{}.torrent", hash.to_hex())),
    )
}

/// The torrent a link points at, if an earlier run saved it (and it is that torrent).
pub fn saved_metainfo(out_dir: &Path, magnet: &Magnet) -> Option<Metainfo> {
    let bytes = std::fs::read(saved_torrent_path(out_dir, magnet)?).ok()?;
    let meta = Metainfo::from_bytes(&bytes).ok()?;
    (Some(meta.info_hash) == magnet.info_hash).then_some(meta)
}

/// Fetches the link's info dictionary from peers (the link's, `config.peers`, its trackers
/// unless `config` turns them off, the DHT if `config` runs it), saves it under
/// `config.out_dir`, and returns the torrent with the peers heard of. None if stopped first.
pub async fn fetch_and_save(
    magnet: &Magnet,
    config: &SessionConfig,
    quiet: bool,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<(Metainfo, Vec<SocketAddr>)>> {
    let out_dir = &config.out_dir;
    let use_trackers = config.use_trackers;
    let info_hash = magnet
        .info_hash
        .expect("Magnet::parse requires an info-hash");
    let mut peers = magnet.peers.clone();
    peers.extend(config.peers.iter().filter(|p| !magnet.peers.contains(p)));
    let fetch = MagnetFetch {
        info_hash,
        trackers: magnet.trackers.clone(),
        peers,
        peer_id: PeerId::generate(),
        port: config.listen.port(),
        use_trackers,
        dht: config.dht.clone(),
    };
    let what = magnet.name.clone().unwrap_or_else(|| info_hash.to_hex());
    if !quiet {
        let no_trackers = fetch.trackers.is_empty() || !use_trackers;
        if fetch.peers.is_empty() && no_trackers && fetch.dht.is_none() {
            eprintln!("spate: {what}: the link names no peers and no trackers to ask, and the DHT is off (--dht); waiting for peers (give some with --peer)");
        } else {
            eprintln!("spate: fetching the torrent's metadata for {what}");
        }
    }
    let started = Instant::now();
    let mut last_line = Instant::now();
    let on_status = |s: &FetchStatus| {
        if !quiet && last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            eprintln!(
                "spate: still looking for the metadata: {} peers known, {} asked, {} without it",
                s.peers_known, s.asks, s.failures
            );
        }
    };
    let Some(fetched) = fetch_metadata(&fetch, stop, on_status).await else {
        return Ok(None);
    };
    let file = metadata::torrent_file(&fetched.info, &magnet.trackers, &magnet.web_seeds);
    let meta = Metainfo::from_bytes(&file)
        .map_err(|e| BadInput(format!("the metadata peers sent for {what}: {e}")))?;
    let path = saved_torrent_path(out_dir, magnet).expect("the link has an info-hash");
    save(&path, &file)?;
    if !quiet {
        let files = match meta.info.files.len() {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        eprintln!(
            "spate: got the metadata in {:.2} s: {} ({} in {files})",
            started.elapsed().as_secs_f64(),
            meta.info.name,
            human_bytes(meta.info.total_length),
        );
    }
    Ok(Some((meta, fetched.peers)))
}

/// Writes `bytes` to `path` (creating its folder) through a temporary file and a rename,
/// so a crash leaves either the whole file or none.
fn save(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("a path under the download directory");
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("torrent.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("cannot save {}: {e}", path.display()))
}
