//! Loopback swarms of spate processes for tests: a seeder on a free port, leechers pointed
//! at it, each a child process killed (by PID) when its guard drops.
#![allow(dead_code)]

use super::{spate, stderr};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A spate child process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Proc {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits for exit (up to `limit`), killing it past that; returns its output.
    pub fn wait(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let child = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true").spawn().unwrap(),
        );
        child.wait_with_output().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `spate seed` for `torrent` over `dir` on a free port; returns once it accepts peers.
pub fn start_seeder(torrent: &Path, dir: &Path, extra: &[&str]) -> Proc {
    start_seeder_on(free_port(), torrent, dir, extra)
}

/// Starts `spate seed` on a given port.
pub fn start_seeder_on(port: u16, torrent: &Path, dir: &Path, extra: &[&str]) -> Proc {
    let seed = [
        "seed",
        torrent.to_str().unwrap(),
        dir.to_str().unwrap(),
        "--no-trackers",
    ];
    let p = spawn_on(port, &[&seed[..], extra].concat());
    wait_listening(p.addr(), Duration::from_secs(20));
    p
}

/// Starts `spate download` of `torrent` into `out` with the given extra args.
pub fn start_leecher(torrent: &Path, out: &Path, extra: &[&str]) -> Proc {
    let download = [
        "download",
        torrent.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let flags = ["--no-trackers", "--json"];
    spawn_on(free_port(), &[&download[..], &flags, extra].concat())
}

/// Spawns spate with `args`, listening quietly on 127.0.0.1:`port`, output captured.
pub fn spawn_on(port: u16, args: &[&str]) -> Proc {
    spawn_listening(Some("127.0.0.1"), port, args)
}

/// Spawns spate with `args`, listening quietly on `ip` (its default, every address, if
/// None) and `port`, output captured.
pub fn spawn_listening(ip: Option<&str>, port: u16, args: &[&str]) -> Proc {
    let mut cmd = spate();
    cmd.args(args);
    if let Some(ip) = ip {
        cmd.args(["--listen-ip", ip]);
    }
    let child = cmd
        .args(["--listen-port", &port.to_string(), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc { child, port }
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening at {addr} after {limit:?}");
}

/// Parses the leecher's `--json` report, failing with its stderr if it did not succeed.
pub fn report_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "leecher failed ({:?}): {}",
        out.status,
        stderr(out)
    );
    let report = final_report(&out.stdout);
    if report["complete"] == true {
        let event = verified_event(&out.stdout)
            .unwrap_or_else(|| panic!("a complete run printed no verified event: {report}"));
        // Its own clock starts with the command, the report's with the session: only its
        // presence, its place before the report (the last line) and its fields are checked.
        assert!(
            event["wall_s"].as_f64().is_some_and(|s| s >= 0.0)
                && event["total_bytes"] == report["total_bytes"]
                && event["wanted_bytes"] == report["wanted_bytes"],
            "bad verified event: {event} {report}"
        );
    }
    report
}

/// The end-of-run object of `download --json`: its last line of output.
pub fn final_report(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad report {text:?}: {e}"))
}

/// The `{"event":"verified",...}` line `download --json` prints once every piece is verified.
pub fn verified_event(stdout: &[u8]) -> Option<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "verified")
}
