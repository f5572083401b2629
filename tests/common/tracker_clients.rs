//! Other BitTorrent programs as test processes, loopback only: `spate tracker`, a libtorrent
//! seeder (Debian's python3-libtorrent) and a Transmission daemon. Each runs in its own
//! process group, which its guard stops on drop (SIGTERM, then SIGKILL after a bounded wait),
//! so a failing test leaves nothing behind. Settings follow ../shared/perf: DHT, PEX, LSD,
//! uTP, UPnP and NAT-PMP off, every socket on 127.0.0.1.
#![allow(dead_code)]

use super::spate;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a stopped process group gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A child started as the leader of a new process group, stopped with its group on drop.
/// The leader is reaped only after its group was signalled, so the group id cannot have
/// been reused by then: every signal goes to processes this guard started.
pub struct Group {
    child: Child,
    name: &'static str,
    status: Option<ExitStatus>,
}

impl Group {
    /// Starts `cmd` in a new process group.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Group {
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Group {
            child,
            name,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    /// Sends `sig` to the leader, unless it was reaped already.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: kill(2) on a child of ours that was not reaped, so its pid is its own.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Whether the leader has exited, without reaping it (waitid with WNOWAIT).
    fn leader_exited(&self) -> bool {
        if self.status.is_some() {
            return true;
        }
        // SAFETY: waitid(2) on our own child with a zeroed siginfo it fills in.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            let rc = libc::waitid(libc::P_PID, self.child.id(), &mut info, flags);
            rc != 0 || info.si_pid() != 0
        }
    }

    /// Waits up to `limit` for the leader to exit; then kills what is left of its group and
    /// reaps the leader.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while !self.leader_exited() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(self.kill_group_and_reap())
    }

    fn kill_group_and_reap(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        // SAFETY: the group this guard created; its leader is not reaped yet, so the id
        // still belongs to it (negative pid: the whole group).
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let status = self.child.wait().expect("waiting for our own child");
        self.status = Some(status);
        status
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: as in `kill_group_and_reap`.
        unsafe { libc::kill(-self.pid(), libc::SIGTERM) };
        if self.wait_exit(TERM_GRACE).is_none() {
            eprintln!("{} ignored SIGTERM; killing its group", self.name);
            self.kill_group_and_reap();
        }
    }
}

/// Polls `check` every `every` until it gives `Some`, for at most `limit`.
pub fn wait_for<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// spate tracker

/// `spate tracker` as a process, with the addresses it printed and its stderr so far.
pub struct SpateTracker {
    pub group: Group,
    pub http: SocketAddr,
    pub udp: Option<SocketAddr>,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl SpateTracker {
    /// Starts `spate tracker` with `args` and waits (up to 20 s) for the addresses it prints.
    pub fn start(args: &[&str]) -> SpateTracker {
        let mut cmd = spate();
        cmd.arg("tracker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut group = Group::spawn("spate tracker", &mut cmd);
        let stderr = group.child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wants_udp = args.contains(&"--udp");
        let mut tracker = SpateTracker {
            group,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            udp: None,
            lines,
            stderr: Vec::new(),
        };
        let (mut http, mut udp) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.is_none() || (wants_udp && udp.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tracker.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("spate tracker printed no addresses: {:?}", tracker.stderr)
            });
            http = http.or_else(|| address_in(&line, "http://"));
            udp = udp.or_else(|| address_in(&line, "udp://"));
            tracker.stderr.push(line);
        }
        tracker.http = http.expect("loop ends with an HTTP address");
        tracker.udp = udp;
        tracker
    }

    pub fn announce_url(&self) -> String {
        format!("http://{}/announce", self.http)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the status and stderr.
    pub fn terminate(mut self, limit: Duration) -> (Option<ExitStatus>, Vec<String>) {
        self.group.signal(libc::SIGTERM);
        let status = self.group.wait_exit(limit);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr.push(line);
        }
        (status, std::mem::take(&mut self.stderr))
    }
}

/// The `host:port` after `scheme` in a line such as "... http://127.0.0.1:6969/announce".
fn address_in(line: &str, scheme: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(scheme)? + scheme.len()..];
    rest.split('/').next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// libtorrent

/// A libtorrent seeder (tests/support/lt_peer.py) of `torrent` whose data is in `save`,
/// listening on 127.0.0.1:`port`; it announces to the torrent's trackers, again at once on
/// SIGUSR1, and its output (tracker replies and errors included) goes to `log`.
pub fn libtorrent_seeder(torrent: &Path, save: &Path, port: u16, log: &Path) -> Group {
    let out = std::fs::File::create(log).expect("creating the libtorrent log");
    let err = out.try_clone().expect("cloning the log handle");
    let state = log.with_extension("state");
    std::fs::create_dir_all(&state).expect("creating the libtorrent state directory");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_peer.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script)
        .arg("seed")
        .arg(torrent)
        .arg(save)
        .arg(port.to_string())
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Group::spawn("libtorrent", &mut cmd)
}

// ---------------------------------------------------------------------------------------
// Transmission

/// A Transmission daemon with its config in `home`, downloading into `download_dir`.
pub struct Transmission {
    pub group: Group,
    pub rpc_port: u16,
    pub peer_port: u16,
    pub download_dir: PathBuf,
}

impl Transmission {
    /// Writes settings.json (as ../shared/perf/swarm does) and starts `transmission-daemon -f`.
    pub fn start(home: &Path, download_dir: &Path, peer_port: u16, rpc_port: u16) -> Transmission {
        let config = home.join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(download_dir).unwrap();
        let settings = serde_json::json!({
            "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "rpc-bind-address": "127.0.0.1", "rpc-port": rpc_port, "rpc-enabled": true,
            "rpc-authentication-required": false, "rpc-whitelist": "127.0.0.1,::1",
            "rpc-whitelist-enabled": true, "rpc-host-whitelist-enabled": false,
            "peer-port": peer_port, "peer-port-random-on-start": false,
            "download-dir": download_dir, "incomplete-dir-enabled": false,
            "watch-dir-enabled": false, "start-added-torrents": true,
            "speed-limit-down-enabled": false, "speed-limit-up-enabled": false,
            "ratio-limit-enabled": false, "idle-seeding-limit-enabled": false,
            "download-queue-enabled": false, "seed-queue-enabled": false,
            "queue-stalled-enabled": false,
            "encryption": 0, "preallocation": 1, "rename-partial-files": false,
            "cache-size-mb": 0, "message-level": 2, "umask": 18,
            "dht-enabled": false, "pex-enabled": false, "lpd-enabled": false,
            "port-forwarding-enabled": false, "utp-enabled": false, "blocklist-enabled": false,
        });
        let text = serde_json::to_string_pretty(&settings).unwrap();
        std::fs::write(config.join("settings.json"), text).unwrap();
        let log = std::fs::File::create(home.join("transmission.log")).unwrap();
        let mut cmd = Command::new("transmission-daemon");
        cmd.arg("-f")
            .arg("-g")
            .arg(&config)
            .arg("--log-error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        Transmission {
            group: Group::spawn("transmission-daemon", &mut cmd),
            rpc_port,
            peer_port,
            download_dir: download_dir.to_owned(),
        }
    }

    /// Runs `transmission-remote` against this daemon; returns stdout if it succeeded.
    pub fn remote(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("transmission-remote")
            .arg(format!("127.0.0.1:{}", self.rpc_port))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running transmission-remote (install transmission-cli)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds `torrent` once the RPC answers (waits up to 20 s).
    pub fn add(&self, torrent: &Path) {
        let path = torrent.to_str().expect("test paths are UTF-8");
        let added = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            self.remote(&["-a", path])
        });
        assert!(added.is_some(), "transmission-remote could not add {path}");
    }

    /// Percent done of the first torrent, as `transmission-remote -t 1 -i` reports it.
    pub fn percent_done(&self) -> Option<f64> {
        let info = self.remote(&["-t", "1", "-i"])?;
        let line = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("Percent Done:"))?;
        line.trim().trim_end_matches('%').parse().ok()
    }
}
