//! `spate info`: what a .torrent file or a magnet link holds, as text or JSON.

use super::units::human_bytes;
use super::{load_torrent, BadInput};
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A .torrent file or a magnet: link.
    source: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<i32> {
    if args.source.starts_with("magnet:") {
        let m = Magnet::parse(&args.source).map_err(|e| BadInput(e.to_string()))?;
        print_magnet(&m, args.json);
    } else {
        let m = load_torrent(&PathBuf::from(&args.source))?;
        if args.json {
            println!("{:#}", torrent_json(&m));
        } else {
            print_torrent(&m);
        }
    }
    Ok(0)
}

fn torrent_json(m: &Metainfo) -> serde_json::Value {
    let files: Vec<_> = m
        .info
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.pad)
        .map(|(n, f)| json!({"index": n, "path": f.path.display().to_string(), "length": f.length}))
        .collect();
    json!({
        "name": m.info.name,
        "info_hash": m.info_hash.to_hex(),
        "total_length": m.info.total_length,
        "padding_bytes": padding_bytes(&m.info),
        "piece_length": m.info.piece_length,
        "piece_count": m.info.piece_count(),
        "private": m.info.private,
        "trackers": m.trackers,
        "web_seeds": m.web_seeds,
        "comment": m.comment,
        "created_by": m.created_by,
        "creation_date": m.creation_date,
        "files": files,
    })
}

/// Bytes of BEP 47 padding files: hashed as zeros, never written.
fn padding_bytes(info: &crate::metainfo::Info) -> u64 {
    info.files.iter().filter(|f| f.pad).map(|f| f.length).sum()
}

fn print_torrent(m: &Metainfo) {
    let i = &m.info;
    println!("name:        {}", i.name);
    println!("info-hash:   {}", m.info_hash);
    let padding = padding_bytes(i);
    let content = i.total_length - padding;
    if padding == 0 {
        println!("total size:  {} ({content} bytes)", human_bytes(content));
    } else {
        println!(
            "total size:  {} ({content} bytes in files; {} with {padding} bytes of BEP 47 padding)",
            human_bytes(content),
            i.total_length
        );
    }
    println!("piece size:  {}", human_bytes(i.piece_length.into()));
    println!("pieces:      {}", i.piece_count());
    println!("private:     {}", if i.private { "yes" } else { "no" });
    if let Some(c) = &m.comment {
        println!("comment:     {c}");
    }
    if let Some(c) = &m.created_by {
        println!("created by:  {c}");
    }
    println!(
        "trackers:    {}",
        if m.trackers.is_empty() { "none" } else { "" }
    );
    for (n, tier) in m.trackers.iter().enumerate() {
        println!("  tier {}: {}", n + 1, tier.join(", "));
    }
    println!(
        "web seeds:   {}",
        if m.web_seeds.is_empty() { "none" } else { "" }
    );
    for w in &m.web_seeds {
        println!("  {w}");
    }
    let files: Vec<_> = i.files.iter().enumerate().filter(|(_, f)| !f.pad).collect();
    println!(
        "files ({}; the number is what download --only takes):",
        files.len()
    );
    for (n, f) in files {
        println!(
            "  {n:>5}  {:>12}  {}",
            human_bytes(f.length),
            f.path.display()
        );
    }
}

fn print_magnet(m: &Magnet, as_json: bool) {
    let hash = m.info_hash.map(|h| h.to_hex()).unwrap_or_default();
    let peers: Vec<String> = m.peers.iter().map(|p| p.to_string()).collect();
    if as_json {
        let select: Option<Vec<String>> = m.select_only.as_ref().map(|r| {
            r.iter()
                .map(|r| format!("{}-{}", r.start(), r.end()))
                .collect()
        });
        let v = json!({"info_hash": hash, "name": m.name, "trackers": m.trackers,
            "web_seeds": m.web_seeds, "peers": peers, "select_only": select});
        println!("{v:#}");
        return;
    }
    println!("info-hash:   {hash}");
    println!(
        "name:        {}",
        m.name.as_deref().unwrap_or("(not given)")
    );
    for t in &m.trackers {
        println!("tracker:     {t}");
    }
    for w in &m.web_seeds {
        println!("web seed:    {w}");
    }
    for p in &peers {
        println!("peer:        {p}");
    }
}
