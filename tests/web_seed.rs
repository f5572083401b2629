//! Web seeds (BEP 19) end to end: a small HTTP server on 127.0.0.1 serves the seed's files
//! with range requests, and `spate download` fetches the torrent from it alone, or next to a
//! spate seeder when the server fails or sends bad data.

mod common;

use common::fixture::Fixture;
use common::swarm::{free_port, report_of, start_leecher, start_seeder, start_seeder_on};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const PIECE: usize = 256 << 10;

#[derive(Clone, Copy, PartialEq)]
enum Serves {
    /// The files as they are.
    Files,
    /// The files with one byte in every range flipped.
    Corrupt,
    /// 404 for everything.
    Nothing,
}

/// An HTTP/1.1 server of the files under a root set after it starts (the torrent must name
/// its port before the files exist): GET with one `Range: bytes=a-b`, one request per
/// connection. Stops when dropped.
struct WebServer {
    port: u16,
    root: Arc<Mutex<PathBuf>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebServer {
    fn start(serves: Serves) -> WebServer {
        let root = Arc::new(Mutex::new(PathBuf::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            let root = Arc::clone(&root);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            requests.fetch_add(1, Ordering::Relaxed);
                            let root = root.lock().unwrap().clone();
                            std::thread::spawn(move || {
                                let _ = answer(conn, &root, serves);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        WebServer {
            port,
            root,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(&self, root: PathBuf) {
        *self.root.lock().unwrap() = root;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut conn: TcpStream, root: &std::path::Path, serves: Serves) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(spec) = lower.strip_prefix("range: bytes=") {
            let (a, b) = spec.trim().split_once('-').unwrap();
            range = Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
        }
    }
    let file = root.join(percent_decode(path.trim_start_matches('/')));
    let data = match std::fs::read(&file) {
        Ok(data) if serves != Serves::Nothing => data,
        _ => {
            let reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            return conn.write_all(reply.as_bytes());
        }
    };
    let (a, b) = range.unwrap_or((0, data.len() as u64 - 1));
    let mut body = data[a as usize..=b as usize].to_vec();
    if serves == Serves::Corrupt {
        body[0] ^= 0xFF;
    }
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len(),
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(&body)?;
    // Let the client read it all before the close.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.read(&mut [0; 1]);
    Ok(())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A multi-file torrent (a file name with a space and one outside ASCII, an empty file,
/// files that end mid-piece) whose `url-list` is the root of a server of its files.
fn fixture_served(serves: Serves) -> (Fixture, WebServer) {
    let server = WebServer::start(serves);
    let files = [
        ("tree/a.bin", 3 * PIECE + 100),
        ("tree/empty", 0),
        ("tree/sub dir/ü.txt", 5000),
        ("tree/z.bin", PIECE - 5100 + 1),
    ];
    let fx = Fixture::multi_with(&files, "tree", &["--web-seed", &server.url()]);
    server.serve(fx.seed_dir());
    (fx, server)
}

#[test]
fn a_torrent_downloads_from_its_web_seed_alone() {
    let (fx, server) = fixture_served(Serves::Files);
    let out = fx.out_dir("leech");
    let report = report_of(&start_leecher(&fx.torrent, &out, &[]).wait(LIMIT));
    assert_eq!(report["complete"], true);
    assert_eq!(report["hash_failures"], 0);
    assert_eq!(report["web_seed_bytes"], fx.meta.info.total_length);
    fx.assert_same_files(&out);
    // 1 MiB fetches at most, one request per file each touches: a handful, not one a block.
    let (requests, blocks) = (server.requests(), fx.meta.info.total_length / 16384);
    assert!(
        requests > 0 && (requests as u64) < blocks,
        "{requests} requests"
    );
}

#[test]
fn a_single_file_torrent_downloads_from_its_web_seed() {
    let server = WebServer::start(Serves::Files);
    let fx = Fixture::multi_with(
        &[("one.bin", 2 * PIECE + 777)],
        "one.bin",
        &["--web-seed", &server.url()],
    );
    server.serve(fx.seed_dir());
    let out = fx.out_dir("leech");
    let report = report_of(&start_leecher(&fx.torrent, &out, &[]).wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
}

#[test]
fn a_web_seed_that_sends_bad_data_is_banned_and_a_peer_finishes_the_download() {
    let (fx, server) = fixture_served(Serves::Corrupt);
    // The seeder comes up a moment after the leecher (which retries the refused address),
    // so the web seed's data arrives first.
    let port = free_port();
    let out = fx.out_dir("leech");
    let peer = format!("127.0.0.1:{port}");
    let leecher = start_leecher(&fx.torrent, &out, &["--peer", &peer]);
    std::thread::sleep(Duration::from_millis(500));
    let _seeder = start_seeder_on(port, &fx.torrent, &fx.seed_dir(), &[]);
    let report = report_of(&leecher.wait(LIMIT));
    assert_eq!(report["complete"], true);
    fx.assert_same_files(&out);
    assert!(server.requests() > 0);
    assert!(report["hash_failures"].as_u64() >= Some(1), "{report}");
    assert!(report["peers_banned"].as_u64() >= Some(1), "{report}");
}

#[test]
fn a_web_seed_that_fails_is_set_aside_and_a_peer_finishes_the_download() {
    let (fx, server) = fixture_served(Serves::Nothing);
    let seeder = start_seeder(&fx.torrent, &fx.seed_dir(), &[]);
    let out = fx.out_dir("leech");
    let peer = seeder.addr().to_string();
    let report = report_of(&start_leecher(&fx.torrent, &out, &["--peer", &peer]).wait(LIMIT));
    assert_eq!(report["complete"], true);
    assert_eq!(report["hash_failures"], 0);
    assert_eq!(report["web_seed_bytes"], 0);
    fx.assert_same_files(&out);
    assert!(server.requests() > 0, "the web seed was tried");
}
