//! Other BitTorrent clients (libtorrent, Transmission, aria2, qBittorrent, rqbit) and spate itself
//! as seeders or leechers of one torrent, for the interoperability tests.
//!
//! Every client runs on 127.0.0.1 only, TCP only, with DHT, PEX, LSD, UPnP, NAT-PMP and uTP
//! off, and (where it has an API) that is read back after it starts. Each guard owns a
//! private home directory (config, state, log) and its process group: dropping the guard,
//! also while a test unwinds from a panic, sends SIGTERM to that group, then SIGKILL after a
//! few seconds. Only groups created here are ever signalled. Every wait is bounded; a client
//! that fails to start, dies or reports an error makes the test panic with its log's tail.
//! A missing binary is a panic too, never a skip.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a seeder may take to start and check its data.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to answer on its API after it starts.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a group has to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

pub const LOCALHOST: &str = "127.0.0.1";

/// What a client does with the torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Starts with the complete data in its directory and serves it.
    Seed,
    /// Starts with an empty directory and downloads into it.
    Leech,
}

/// The torrent a client is started for.
#[derive(Debug, Clone)]
pub struct Job {
    pub role: Role,
    pub torrent: PathBuf,
    /// Lower-case hex v1 info-hash.
    pub info_hash: String,
    /// Holds (seeder) or receives (leecher) the torrent's file or top-level folder.
    pub dir: PathBuf,
    /// The peer port, on 127.0.0.1.
    pub port: u16,
}

/// A port on 127.0.0.1 that nobody listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// True if a TCP socket listens on 127.0.0.1:`port` or 0.0.0.0:`port` (read from
/// /proc/net/tcp, so nothing connects to the client to find out).
pub fn listening(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(state)) = (cols.next(), cols.next(), cols.next())
        else {
            return false;
        };
        let Some((ip, p)) = local.split_once(':') else {
            return false;
        };
        state == "0A"
            && u16::from_str_radix(p, 16) == Ok(port)
            && (ip == "0100007F" || ip == "00000000")
    })
}

/// Polls `f` every 100 ms until it gives a value or `timeout` passes.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The last `n` bytes of a log file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let from = bytes.len().saturating_sub(n);
            format!(
                "--- {} (last {} bytes) ---\n{}",
                path.display(),
                bytes.len() - from,
                String::from_utf8_lossy(&bytes[from..])
            )
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}

/// Panics if `program` (a path, or a name looked up on PATH) is not there: the tests must
/// fail loudly, never skip, when a client is missing.
pub fn require(program: &str) {
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
    };
    assert!(
        found,
        "{program} is not installed; the interop tests need python3-libtorrent, \
         transmission-daemon, transmission-cli, aria2 and qbittorrent-nox"
    );
}

/// How a process ended, read without reaping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A child process leading its own process group, with stdout and stderr in a log file.
/// Dropping it stops the whole group (SIGTERM, then SIGKILL) and reaps the child.
pub struct Group {
    child: std::process::Child,
    pub name: String,
    pub log: PathBuf,
}

impl Group {
    /// Starts `cmd` in a new process group; its output goes to `log`. The child gets
    /// SIGKILL if the thread that started it dies without dropping the guard.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Group {
        let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("duplicating the log file handle");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", cmd.get_program()));
        Group {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// How the leader exited, if it did. The child is left a zombie (not reaped), so its pid
    /// and therefore its process group id cannot be reused before the guard is dropped.
    pub fn exit(&self) -> Option<Exit> {
        // SAFETY: waitid with WNOWAIT only reads the child's state into `info`.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            if libc::waitid(libc::P_PID, self.pid() as libc::id_t, &mut info, flags) != 0
                || info.si_pid() == 0
            {
                return None;
            }
            Some(if info.si_code == libc::CLD_EXITED {
                Exit::Code(info.si_status())
            } else {
                Exit::Signal(info.si_status())
            })
        }
    }

    /// Waits up to `timeout` for the leader to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<Exit> {
        poll_until(timeout, || self.exit())
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 6000)
    }

    /// Panics with `msg` and the log's tail.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{}: {msg}\n{}", self.name, self.log_tail())
    }

    /// Waits until something listens on `port`, or the leader has exited if `exit_ok`.
    pub fn await_listening(&self, port: u16, exit_ok: bool) {
        let up = poll_until(API_TIMEOUT, || {
            (listening(port) || (exit_ok && self.exit().is_some())).then_some(())
        });
        if up.is_none() {
            self.fail(&format!("nothing listens on peer port {port}"));
        }
    }

    /// Panics if the leader exited.
    pub fn check_alive(&self) {
        if let Some(exit) = self.exit() {
            self.fail(&format!("exited unexpectedly ({exit:?})"));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain syscall; the group is ours (the leader is not reaped yet).
        unsafe {
            libc::killpg(self.pid(), sig);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.exit().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(TERM_GRACE).is_none() {
                eprintln!("{} ignored SIGTERM for {TERM_GRACE:?}; SIGKILL", self.name);
            }
        }
        // Whatever is left of the group (children that outlived the leader, or a leader
        // that ignored SIGTERM) is killed before the leader is reaped.
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// An environment for a client: no proxies, HOME and XDG directories inside `home`.
fn isolated(program: &str, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .current_dir(home);
    cmd
}

// --------------------------------------------------------------------------------------
// HTTP/1.1 over std TcpStream, for the clients' local APIs
// --------------------------------------------------------------------------------------

pub struct Response {
    pub status: u16,
    head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}) in reply: {}", self.text()))
    }
}

/// One request to 127.0.0.1:`port` (Connection: close), with 5 s timeouts.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&local(port), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes)?;
    // Servers may keep the connection open despite "Connection: close" (qBittorrent does),
    // so the body ends where Content-Length or the last chunk says.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if let Some(resp) = parse_response(&raw)? {
            return Ok(resp);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            // EOF: the body is whatever came (no length given), if the head is complete
            return parse_response_at_eof(&raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn bad_http(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// The response head (status line and headers) and where the body starts.
fn split_head(raw: &[u8]) -> Option<(String, usize)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((
        String::from_utf8_lossy(&raw[..split]).into_owned(),
        split + 4,
    ))
}

fn response(head: String, body: Vec<u8>) -> std::io::Result<Response> {
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_http("no status"))?;
    Ok(Response { status, head, body })
}

/// A complete response in `raw`, or None if more must be read.
fn parse_response(raw: &[u8]) -> std::io::Result<Option<Response>> {
    let Some((head, at)) = split_head(raw) else {
        return Ok(None);
    };
    let probe = Response {
        status: 0,
        head,
        body: Vec::new(),
    };
    let body = &raw[at..];
    if probe
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        return match dechunk(body) {
            Some(b) => response(probe.head, b).map(Some),
            None => Ok(None),
        };
    }
    if let Some(len) = probe.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad_http("bad Content-Length"))?;
        if body.len() >= len {
            return response(probe.head, body[..len].to_vec()).map(Some);
        }
    }
    Ok(None)
}

fn parse_response_at_eof(raw: &[u8]) -> std::io::Result<Response> {
    let (head, at) = split_head(raw).ok_or_else(|| bad_http("connection closed early"))?;
    if let Some(r) = parse_response(raw)? {
        return Ok(r);
    }
    let r = response(head, raw[at..].to_vec())?;
    if r.header("content-length").is_some() || r.header("transfer-encoding").is_some() {
        return Err(bad_http("connection closed in the body"));
    }
    Ok(r)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}

// --------------------------------------------------------------------------------------
// The clients
// --------------------------------------------------------------------------------------

/// What the tests need from any running client.
pub trait Client {
    fn group(&self) -> &Group;
    /// Leecher: true once the client says the download is complete and every piece passed
    /// its hash check. Panics if the client died or reported an error.
    fn finished(&mut self) -> bool;

    /// Waits up to `timeout` for [`Client::finished`].
    fn wait_finished(&mut self, timeout: Duration) -> bool {
        poll_until(timeout, || self.finished().then_some(())).is_some()
    }

    fn log_tail(&self) -> String {
        self.group().log_tail()
    }
}

/// Makes a private home directory for a client.
fn home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("spate-interop-")
        .tempdir()
        .expect("creating a client home directory")
}

// ---- libtorrent ------------------------------------------------------------------------

pub const PYTHON_WITH_LIBTORRENT: &str = "/usr/bin/python3";

/// libtorrent (Debian's python3-libtorrent) driven by tests/support/lt_peer.py.
pub struct Libtorrent {
    group: Group,
    state: PathBuf,
    _home: tempfile::TempDir,
}

impl Libtorrent {
    /// Starts libtorrent; a seeder is returned once it is seeding (data checked). `connect`:
    /// peers it dials itself once its data is checked.
    pub fn start(job: &Job, connect: &[SocketAddr]) -> Libtorrent {
        Libtorrent::start_with(job, connect, &[])
    }

    /// [`Libtorrent::start`] with more lt_peer.py options (`--encryption forced`).
    ///
    /// python3-libtorrent 2.0.8 has died of SIGSEGV while adding its torrent, before any
    /// peer was involved, under the load of the whole suite (once in CI, 2026-12-07): a
    /// start that dies by a signal before its torrent is active is tried once more.
    pub fn start_with(job: &Job, connect: &[SocketAddr], options: &[&str]) -> Libtorrent {
        match Libtorrent::try_start(job, connect, options) {
            Ok(lt) => lt,
            Err(crash) => {
                eprintln!("libtorrent crashed while starting, starting it again:\n{crash}");
                Libtorrent::try_start(job, connect, options).unwrap_or_else(|crash| {
                    panic!("libtorrent crashed while starting, twice:\n{crash}")
                })
            }
        }
    }

    /// Starts libtorrent; Err (with its log) if it died by a signal before its torrent was
    /// active. Any other failure panics.
    fn try_start(
        job: &Job,
        connect: &[SocketAddr],
        options: &[&str],
    ) -> Result<Libtorrent, String> {
        require(PYTHON_WITH_LIBTORRENT);
        let home = home();
        let state = home.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_peer.py");
        let mut cmd = isolated(PYTHON_WITH_LIBTORRENT, home.path());
        cmd.arg("-u")
            .arg(script)
            .arg(match job.role {
                Role::Seed => "seed",
                Role::Leech => "leech",
            })
            .arg(&job.torrent)
            .arg(&job.dir)
            .arg(job.port.to_string())
            .arg(&state);
        for addr in connect {
            cmd.arg("--connect").arg(addr.to_string());
        }
        cmd.args(options);
        let group = Group::spawn("libtorrent", cmd, &home.path().join("lt.log"));
        let lt = Libtorrent {
            group,
            state,
            _home: home,
        };
        let crashed = || matches!(lt.group.exit(), Some(Exit::Signal(_)));
        let active = poll_until(READY_TIMEOUT, || {
            if crashed() {
                return Some(false);
            }
            lt.flag("active").map(|()| true)
        });
        match active {
            Some(true) => {}
            Some(false) => return Err(lt.group.log_tail()),
            None => lt.group.fail("torrent not active after 30 s"),
        }
        if job.role == Role::Seed && poll_until(READY_TIMEOUT, || lt.flag("ready")).is_none() {
            lt.group.fail("not seeding after 30 s");
        }
        Ok(lt)
    }

    fn check_failed(&self) {
        if let Ok(msg) = std::fs::read_to_string(self.state.join("failed")) {
            self.group
                .fail(&format!("libtorrent reported an error: {msg}"));
        }
        self.group.check_alive();
    }

    fn flag(&self, name: &str) -> Option<()> {
        self.check_failed();
        self.state.join(name).exists().then_some(())
    }

    /// The text of the state file `name` (see lt_peer.py), once it exists.
    pub fn state_text(&self, name: &str) -> Option<String> {
        self.check_failed();
        std::fs::read_to_string(self.state.join(name)).ok()
    }
}

impl Client for Libtorrent {
    fn group(&self) -> &Group {
        &self.group
    }

    fn finished(&mut self) -> bool {
        self.flag("done").is_some()
    }
}

// ---- Transmission ----------------------------------------------------------------------

/// transmission-daemon 3.00 in the foreground with its own config dir, RPC on 127.0.0.1.
/// It never dials 127.0.0.0/8 peers (they are "martian" to it) but accepts them.
pub struct Transmission {
    group: Group,
    rpc_port: u16,
    session_id: String,
    _home: tempfile::TempDir,
}

/// Transmission settings that must be off.
const TRANSMISSION_OFF: &[&str] = &[
    "dht-enabled",
    "pex-enabled",
    "lpd-enabled",
    "utp-enabled",
    "port-forwarding-enabled",
];

impl Transmission {
    pub fn start(job: &Job) -> Transmission {
        require("transmission-daemon");
        require("transmission-remote");
        let home = home();
        let config = home.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let rpc_port = free_port();
        let mut settings = serde_json::json!({
            "bind-address-ipv4": LOCALHOST,
            "bind-address-ipv6": "::1",
            "peer-port": job.port,
            "peer-port-random-on-start": false,
            "rpc-enabled": true,
            "rpc-bind-address": LOCALHOST,
            "rpc-port": rpc_port,
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": true,
            "rpc-whitelist": LOCALHOST,
            "rpc-host-whitelist-enabled": false,
            "download-dir": job.dir,
            "incomplete-dir-enabled": false,
            "watch-dir-enabled": false,
            "start-added-torrents": true,
            "download-queue-enabled": false,
            "seed-queue-enabled": false,
            "queue-stalled-enabled": false,
            "ratio-limit-enabled": false,
            "idle-seeding-limit-enabled": false,
            "speed-limit-down-enabled": false,
            "speed-limit-up-enabled": false,
            "alt-speed-enabled": false,
            "alt-speed-time-enabled": false,
            "blocklist-enabled": false,
            "encryption": 0,
            "rename-partial-files": false,
            "message-level": 2,
        });
        for key in TRANSMISSION_OFF {
            settings[*key] = false.into();
        }
        std::fs::write(
            config.join("settings.json"),
            serde_json::to_vec_pretty(&settings).unwrap(),
        )
        .unwrap();
        let mut cmd = isolated("transmission-daemon", home.path());
        cmd.arg("-f").arg("-g").arg(&config).arg("--log-info");
        let group = Group::spawn("transmission", cmd, &home.path().join("transmission.log"));
        let mut tr = Transmission {
            group,
            rpc_port,
            session_id: String::new(),
            _home: home,
        };
        let session = poll_until(API_TIMEOUT, || {
            tr.group.check_alive();
            tr.rpc("session-get", serde_json::json!({})).ok()
        })
        .unwrap_or_else(|| tr.group.fail("no RPC after 20 s"));
        let args = &session["arguments"];
        for key in TRANSMISSION_OFF {
            if args.get(*key).is_some_and(|v| v != false) {
                tr.group.fail(&format!("{key} is on: {args}"));
            }
        }
        if args["peer-port"] != job.port {
            tr.group.fail(&format!(
                "peer-port is {}, not {}",
                args["peer-port"], job.port
            ));
        }
        // Add the torrent with transmission-remote, as a user would.
        let out = isolated("transmission-remote", tr._home.path())
            .arg(format!("{LOCALHOST}:{rpc_port}"))
            .arg("--add")
            .arg(&job.torrent)
            .arg("--download-dir")
            .arg(&job.dir)
            .output()
            .expect("running transmission-remote");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !said.contains("success") {
            tr.group.fail(&format!("transmission-remote --add: {said}"));
        }
        if job.role == Role::Seed {
            let ready = poll_until(READY_TIMEOUT, || {
                let t = tr.torrent();
                (t["status"] == 6 && t["leftUntilDone"] == 0 && t["percentDone"] == 1).then_some(())
            });
            if ready.is_none() {
                let t = tr.torrent();
                tr.group.fail(&format!("not seeding after 30 s: {t}"));
            }
        } else {
            // past its check of the (empty) download directory: status 4 is "downloading"
            let ready = poll_until(READY_TIMEOUT, || {
                (tr.torrent()["status"] == 4).then_some(())
            });
            if ready.is_none() {
                let t = tr.torrent();
                tr.group.fail(&format!("not downloading after 30 s: {t}"));
            }
        }
        tr.group.await_listening(job.port, false);
        tr
    }

    /// One RPC call (with the X-Transmission-Session-Id handshake).
    pub fn rpc(
        &mut self,
        method: &str,
        arguments: serde_json::Value,
    ) -> std::io::Result<serde_json::Value> {
        let body = serde_json::json!({"method": method, "arguments": arguments}).to_string();
        for _ in 0..3 {
            let r = http(
                self.rpc_port,
                "POST",
                "/transmission/rpc",
                &[
                    ("X-Transmission-Session-Id", &self.session_id),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )?;
            if r.status == 409 {
                self.session_id = r.header("X-Transmission-Session-Id").unwrap_or("").into();
                continue;
            }
            if r.status != 200 {
                return Err(std::io::Error::other(format!(
                    "RPC {method}: HTTP {}: {}",
                    r.status,
                    r.text()
                )));
            }
            return Ok(r.json());
        }
        Err(std::io::Error::other("RPC: no session id"))
    }

    /// The torrent's status fields; panics on an RPC failure or a torrent error.
    fn torrent(&mut self) -> serde_json::Value {
        self.group.check_alive();
        let fields = serde_json::json!({"fields": [
            "status", "percentDone", "leftUntilDone", "error", "errorString", "peersConnected",
            "haveValid", "corruptEver"]});
        let r = self
            .rpc("torrent-get", fields)
            .unwrap_or_else(|e| self.group.fail(&format!("torrent-get: {e}")));
        let t = r["arguments"]["torrents"][0].clone();
        if t.is_null() {
            self.group.fail(&format!("no torrent in {r}"));
        }
        if t["error"] != 0 {
            self.group.fail(&format!("torrent error: {t}"));
        }
        t
    }
}

impl Client for Transmission {
    fn group(&self) -> &Group {
        &self.group
    }

    fn finished(&mut self) -> bool {
        let t = self.torrent();
        t["leftUntilDone"] == 0 && t["percentDone"] == 1
    }
}

// ---- aria2 -----------------------------------------------------------------------------

/// aria2c with JSON-RPC on 127.0.0.1. As a leecher it exits 0 once the download is
/// complete and checked (`--seed-time=0`).
pub struct Aria2 {
    group: Group,
    rpc_port: u16,
    role: Role,
    _home: tempfile::TempDir,
}

impl Aria2 {
    pub fn start(job: &Job) -> Aria2 {
        require("aria2c");
        let home = home();
        let h = home.path();
        let rpc_port = free_port();
        let mut cmd = isolated("aria2c", h);
        cmd.args([
            "--no-conf=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--enable-peer-exchange=false",
            "--bt-enable-lpd=false",
            "--disable-ipv6=true",
            "--interface=127.0.0.1",
            "--async-dns=false",
            "--enable-rpc=true",
            "--rpc-listen-all=false",
            "--follow-torrent=false",
            "--bt-save-metadata=false",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--file-allocation=none",
            "--summary-interval=0",
            "--console-log-level=notice",
            "--log-level=info",
        ])
        .arg(format!("--dht-file-path={}", h.join("dht.dat").display()))
        .arg(format!("--dht-file-path6={}", h.join("dht6.dat").display()))
        .arg(format!("--listen-port={}", job.port))
        .arg(format!("--rpc-listen-port={rpc_port}"))
        .arg(format!("--dir={}", job.dir.display()))
        .arg(format!("--log={}", h.join("aria2-debug.log").display()))
        .arg(format!("--stop-with-process={}", std::process::id()));
        match job.role {
            Role::Seed => cmd.args([
                "--check-integrity=true",
                "--bt-hash-check-seed=true",
                "--bt-seed-unverified=false",
                "--seed-ratio=0.0",
            ]),
            Role::Leech => cmd.arg("--seed-time=0"),
        };
        cmd.arg(&job.torrent);
        let group = Group::spawn("aria2", cmd, &h.join("aria2.log"));
        let a = Aria2 {
            group,
            rpc_port,
            role: job.role,
            _home: home,
        };
        let options = poll_until(API_TIMEOUT, || {
            a.group.check_alive();
            a.rpc("aria2.getGlobalOption", serde_json::json!([])).ok()
        })
        .unwrap_or_else(|| a.group.fail("no RPC after 20 s"));
        for key in [
            "enable-dht",
            "enable-dht6",
            "enable-peer-exchange",
            "bt-enable-lpd",
        ] {
            if options["result"][key] != "false" {
                a.group
                    .fail(&format!("{key} is {}", options["result"][key]));
            }
        }
        if job.role == Role::Seed {
            let ready = poll_until(READY_TIMEOUT, || {
                a.group.check_alive();
                let r = a
                    .rpc(
                        "aria2.tellActive",
                        serde_json::json!([["seeder", "completedLength", "totalLength"]]),
                    )
                    .ok()?;
                r["result"]
                    .as_array()?
                    .iter()
                    .any(|d| d["seeder"] == "true" && d["completedLength"] == d["totalLength"])
                    .then_some(())
            });
            if ready.is_none() {
                a.group.fail("not seeding after 30 s");
            }
        }
        a.group.await_listening(job.port, false);
        a
    }

    pub fn rpc(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> std::io::Result<serde_json::Value> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": "t", "method": method, "params": params});
        let r = http(
            self.rpc_port,
            "POST",
            "/jsonrpc",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )?;
        if r.status != 200 {
            return Err(std::io::Error::other(format!(
                "HTTP {}: {}",
                r.status,
                r.text()
            )));
        }
        Ok(r.json())
    }
}

impl Client for Aria2 {
    fn group(&self) -> &Group {
        &self.group
    }

    fn log_tail(&self) -> String {
        format!(
            "{}\n{}",
            self.group.log_tail(),
            tail(&self._home.path().join("aria2-debug.log"), 6000)
        )
    }

    fn finished(&mut self) -> bool {
        assert_eq!(self.role, Role::Leech, "only a leecher finishes");
        match self.group.exit() {
            // With RPC on, aria2 keeps running after the download: its notice says when the
            // download (every piece checked) is complete.
            None => self.group.log_tail().contains("Download complete:"),
            Some(Exit::Code(0)) => true,
            Some(other) => self.group.fail(&format!("exited with {other:?}")),
        }
    }
}

// ---- qBittorrent -----------------------------------------------------------------------

/// qbittorrent-nox with a private profile; the torrent is added through the WebAPI
/// (localhost needs no login).
pub struct Qbittorrent {
    group: Group,
    webui_port: u16,
    info_hash: String,
    _home: tempfile::TempDir,
}

impl Qbittorrent {
    pub fn start(job: &Job) -> Qbittorrent {
        require("qbittorrent-nox");
        let home = home();
        let h = home.path();
        let config = h.join("qBittorrent/config");
        std::fs::create_dir_all(&config).unwrap();
        let webui_port = free_port();
        let dir = job.dir.display();
        let port = job.port;
        let conf = format!(
            "[LegalNotice]\n\
             Accepted=true\n\
             \n\
             [BitTorrent]\n\
             Session\\DHTEnabled=false\n\
             Session\\PeXEnabled=false\n\
             Session\\LSDEnabled=false\n\
             Session\\DHTBootstrapNodes=127.0.0.1:1\n\
             Session\\Port={port}\n\
             Session\\Interface=lo\n\
             Session\\InterfaceName=lo\n\
             Session\\InterfaceAddress=127.0.0.1\n\
             Session\\BTProtocol=TCP\n\
             Session\\Encryption=2\n\
             Session\\MultiConnectionsPerIp=true\n\
             Session\\AnonymousModeEnabled=false\n\
             Session\\AddTrackersEnabled=false\n\
             Session\\DefaultSavePath={dir}\n\
             Session\\TempPathEnabled=false\n\
             Session\\AddTorrentPaused=false\n\
             Session\\AddTorrentStopped=false\n\
             Session\\QueueingSystemEnabled=false\n\
             Session\\GlobalMaxRatio=-1\n\
             Session\\GlobalMaxSeedingMinutes=-1\n\
             Session\\IgnoreLimitsOnLAN=true\n\
             Session\\Preallocation=false\n\
             Session\\AddExtensionToIncompleteFiles=false\n\
             \n\
             [Network]\n\
             PortForwardingEnabled=false\n\
             \n\
             [Preferences]\n\
             Connection\\UPnP=false\n\
             Connection\\ResolvePeerCountries=false\n\
             Connection\\PortRangeMin={port}\n\
             General\\Locale=en\n\
             General\\UseRandomPort=false\n\
             Bittorrent\\DHT=false\n\
             Bittorrent\\PeX=false\n\
             Bittorrent\\LSD=false\n\
             Downloads\\SavePath={dir}\n\
             WebUI\\Enabled=true\n\
             WebUI\\Address=127.0.0.1\n\
             WebUI\\Port={webui_port}\n\
             WebUI\\LocalHostAuth=false\n\
             WebUI\\CSRFProtection=false\n\
             WebUI\\HostHeaderValidation=false\n\
             WebUI\\UseUPnP=false\n\
             \n\
             [Application]\n\
             FileLogger\\Enabled=true\n\
             FileLogger\\Path={logs}\n\
             \n\
             [RSS]\n\
             AutoDownloader\\EnableProcessing=false\n\
             Session\\EnableProcessing=false\n",
            logs = h.join("logs").display(),
        );
        std::fs::write(config.join("qBittorrent.conf"), conf).unwrap();
        let mut cmd = isolated("qbittorrent-nox", h);
        cmd.arg(format!("--profile={}", h.display()))
            .arg(format!("--webui-port={webui_port}"));
        let group = Group::spawn("qbittorrent", cmd, &h.join("qbittorrent.log"));
        let q = Qbittorrent {
            group,
            webui_port,
            info_hash: job.info_hash.to_ascii_lowercase(),
            _home: home,
        };
        poll_until(API_TIMEOUT, || {
            q.group.check_alive();
            q.api("GET", "app/version", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        })
        .unwrap_or_else(|| q.group.fail("no WebUI after 20 s"));
        let prefs = q.get_json("app/preferences");
        for key in ["dht", "pex", "lsd", "upnp"] {
            if prefs[key] != false {
                q.group.fail(&format!("{key} is {}: {prefs}", prefs[key]));
            }
        }
        if prefs["bittorrent_protocol"] != 1 {
            q.group.fail(&format!(
                "bittorrent_protocol is {}, not 1 (TCP only)",
                prefs["bittorrent_protocol"]
            ));
        }
        if prefs["listen_port"] != job.port {
            q.group
                .fail(&format!("listen_port is {}", prefs["listen_port"]));
        }
        q.add_torrent(job);
        if job.role == Role::Seed {
            let ready = poll_until(READY_TIMEOUT, || {
                let t = q.torrent()?;
                (t["progress"] == 1
                    && matches!(t["state"].as_str(), Some("uploading" | "stalledUP")))
                .then_some(())
            });
            if ready.is_none() {
                q.group
                    .fail(&format!("not seeding after 30 s: {:?}", q.torrent()));
            }
        } else {
            // libtorrent turns incoming peers away while the torrent is still checking
            let mut states = Vec::new();
            let ready = poll_until(READY_TIMEOUT, || {
                let t = q.torrent()?;
                let state = t["state"].as_str().unwrap_or("?").to_string();
                if states.last() != Some(&state) {
                    states.push(state.clone());
                }
                // From a magnet link naming a fast peer it may be done before we look.
                let done = t["progress"] == 1;
                (done || matches!(state.as_str(), "stalledDL" | "downloading")).then_some(())
            });
            eprintln!("qbittorrent leecher states: {states:?}");
            if ready.is_none() {
                q.group
                    .fail(&format!("not downloading after 30 s: {:?}", q.torrent()));
            }
        }
        q.group.await_listening(job.port, false);
        q
    }

    pub fn api(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let referer = format!("http://127.0.0.1:{}", self.webui_port);
        let mut all = vec![("Referer", referer.as_str())];
        all.extend_from_slice(headers);
        http(
            self.webui_port,
            method,
            &format!("/api/v2/{path}"),
            &all,
            body,
        )
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        match self.api("GET", path, &[], b"") {
            Ok(r) if r.status == 200 => r.json(),
            Ok(r) => self
                .group
                .fail(&format!("{path}: HTTP {}: {}", r.status, r.text())),
            Err(e) => self.group.fail(&format!("{path}: {e}")),
        }
    }

    fn add_torrent(&self, job: &Job) {
        let boundary = format!("spateinterop{}", std::process::id());
        let mut body = Vec::new();
        let mut field = |name: &str, value: &str| {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n\
                     {value}\r\n"
                )
                .as_bytes(),
            );
        };
        field("savepath", &job.dir.display().to_string());
        field("paused", "false");
        field("stopped", "false");
        field("skip_checking", "false");
        field("contentLayout", "Original");
        field("autoTMM", "false");
        match job.torrent.to_str().filter(|t| t.starts_with("magnet:")) {
            // A magnet link: qBittorrent fetches the metadata from the link's x.pe peers.
            Some(link) => {
                field("urls", link);
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
            None => {
                body.extend_from_slice(
                    format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"torrents\"; \
                         filename=\"t.torrent\"\r\nContent-Type: application/x-bittorrent\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(&std::fs::read(&job.torrent).expect("reading the torrent"));
                body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            }
        }
        let ctype = format!("multipart/form-data; boundary={boundary}");
        match self.api(
            "POST",
            "torrents/add",
            &[("Content-Type", ctype.as_str())],
            &body,
        ) {
            Ok(r) if r.status == 200 && r.text().contains("Ok") => {}
            Ok(r) => self
                .group
                .fail(&format!("torrents/add: HTTP {}: {}", r.status, r.text())),
            Err(e) => self.group.fail(&format!("torrents/add: {e}")),
        }
        if poll_until(API_TIMEOUT, || self.torrent()).is_none() {
            self.group.fail("the added torrent does not show up");
        }
    }

    /// Asks qBittorrent to connect to `addr` (WebAPI torrents/addPeers).
    pub fn add_peer(&self, addr: SocketAddr) {
        let body = format!(
            "hashes={}&peers={}",
            self.info_hash,
            form_encode(&addr.to_string())
        );
        match self.api(
            "POST",
            "torrents/addPeers",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        ) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => self.group.fail(&format!(
                "torrents/addPeers: HTTP {}: {}",
                r.status,
                r.text()
            )),
            Err(e) => self.group.fail(&format!("torrents/addPeers: {e}")),
        }
    }

    /// The torrent's entry in torrents/info, if it is there; panics on an error state.
    fn torrent(&self) -> Option<serde_json::Value> {
        self.group.check_alive();
        let list = self.get_json(&format!("torrents/info?hashes={}", self.info_hash));
        let t = list.get(0)?.clone();
        if matches!(t["state"].as_str(), Some("error" | "missingFiles")) {
            self.group.fail(&format!("torrent state: {t}"));
        }
        Some(t)
    }
}

impl Client for Qbittorrent {
    fn group(&self) -> &Group {
        &self.group
    }

    fn log_tail(&self) -> String {
        format!(
            "{}\n{}",
            self.group.log_tail(),
            tail(&self._home.path().join("logs/qbittorrent.log"), 6000)
        )
    }

    fn finished(&mut self) -> bool {
        self.torrent().is_some_and(|t| {
            t["progress"] == 1
                && t["amount_left"] == 0
                && matches!(
                    t["state"].as_str(),
                    Some("uploading" | "stalledUP" | "queuedUP" | "forcedUP")
                )
        })
    }
}

// ---- rqbit -----------------------------------------------------------------------------

/// rqbit's stateless `download` with its HTTP API on 127.0.0.1 and trackers off. As a
/// leecher it exits 0 once every piece is downloaded and checked (`--exit-on-finish`); a
/// seeder is returned once its API says the torrent is finished and live.
pub struct Rqbit {
    group: Group,
    api_port: u16,
    role: Role,
    _home: tempfile::TempDir,
}

impl Rqbit {
    /// Starts rqbit; `connect`: peers it dials itself.
    pub fn start(job: &Job, connect: &[SocketAddr]) -> Rqbit {
        require("rqbit");
        let home = home();
        let api_port = free_port();
        let mut cmd = isolated("rqbit", home.path());
        cmd.env("RQBIT_LOG_LEVEL_CONSOLE", "info").args([
            "--disable-dht",
            "--disable-dht-persistence",
            "--disable-upnp-port-forward",
            "--disable-lsd",
            "--disable-trackers",
            "--ipv4-only",
            "--listen-ip",
            LOCALHOST,
        ]);
        // rqbit 9.1 announces port 4240 unless told which port it listens on.
        for flag in ["--listen-port", "--announce-port"] {
            cmd.arg(flag).arg(job.port.to_string());
        }
        cmd.arg("--http-api-listen-addr")
            .arg(format!("{LOCALHOST}:{api_port}"))
            .args(["download", "--overwrite", "-o"])
            .arg(&job.dir);
        if job.role == Role::Leech {
            cmd.arg("--exit-on-finish");
        }
        if !connect.is_empty() {
            let peers: Vec<String> = connect.iter().map(|p| p.to_string()).collect();
            cmd.arg("--initial-peers").arg(peers.join(","));
        }
        cmd.arg(&job.torrent);
        let group = Group::spawn("rqbit", cmd, &home.path().join("rqbit.log"));
        let r = Rqbit {
            group,
            api_port,
            role: job.role,
            _home: home,
        };
        if job.role == Role::Seed {
            let ready = poll_until(READY_TIMEOUT, || {
                r.group.check_alive();
                let s = r.stats()?;
                (s["finished"] == true && s["state"] == "live").then_some(())
            });
            if ready.is_none() {
                r.group.fail("not seeding after 30 s");
            }
        }
        // A leecher that dials in may finish a small torrent and exit (--exit-on-finish)
        // before the first poll; `finished` judges its exit code.
        r.group.await_listening(job.port, job.role == Role::Leech);
        r
    }

    fn stats(&self) -> Option<serde_json::Value> {
        let r = http(self.api_port, "GET", "/torrents/0/stats/v1", &[], b"").ok()?;
        (r.status == 200).then(|| r.json())
    }
}

impl Client for Rqbit {
    fn group(&self) -> &Group {
        &self.group
    }

    fn finished(&mut self) -> bool {
        assert_eq!(self.role, Role::Leech, "only a leecher finishes");
        match self.group.exit() {
            None => false,
            Some(Exit::Code(0)) => true,
            Some(other) => self.group.fail(&format!("exited with {other:?}")),
        }
    }
}

// ---- spate -----------------------------------------------------------------------------

/// `spate seed` (with `--peer` addresses to dial), logging at debug level. Returned once it
/// listens, which it does only after checking its data.
pub struct SpateSeeder {
    group: Group,
    _home: tempfile::TempDir,
}

impl SpateSeeder {
    pub fn start(job: &Job, peers: &[SocketAddr]) -> SpateSeeder {
        SpateSeeder::start_with(job, peers, &[])
    }

    /// [`SpateSeeder::start`] with more `spate seed` flags.
    pub fn start_with(job: &Job, peers: &[SocketAddr], extra: &[&str]) -> SpateSeeder {
        assert_eq!(job.role, Role::Seed);
        let home = home();
        let mut cmd = super::spate();
        cmd.env("SPATE_LOG", "debug")
            .arg("seed")
            .arg(&job.torrent)
            .arg(&job.dir)
            .args(["--listen-ip", LOCALHOST, "--listen-port"])
            .arg(job.port.to_string())
            .args(["--no-trackers", "--quiet"])
            .args(extra);
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        let group = Group::spawn("spate seed", cmd, &home.path().join("spate.log"));
        let s = SpateSeeder { group, _home: home };
        let up = poll_until(READY_TIMEOUT, || {
            s.group.check_alive();
            listening(job.port).then_some(())
        });
        if up.is_none() {
            s.group.fail("not listening after 30 s");
        }
        s
    }

    pub fn group(&self) -> &Group {
        &self.group
    }
}

/// `spate download` into `job.dir` from `peers`, logging at debug level; runs until it exits
/// or `timeout` passes. Returns its exit (None on timeout) and its log's tail.
pub fn spate_download(
    job: &Job,
    peers: &[SocketAddr],
    timeout: Duration,
) -> (Option<Exit>, String) {
    spate_download_with(job, peers, timeout, &[])
}

/// [`spate_download`] with more `spate download` flags.
pub fn spate_download_with(
    job: &Job,
    peers: &[SocketAddr],
    timeout: Duration,
    extra: &[&str],
) -> (Option<Exit>, String) {
    assert_eq!(job.role, Role::Leech);
    let home = home();
    let mut cmd = super::spate();
    cmd.env("SPATE_LOG", "debug")
        .arg("download")
        .arg(&job.torrent)
        .arg("-o")
        .arg(&job.dir)
        .args(["--listen-ip", LOCALHOST, "--listen-port"])
        .arg(job.port.to_string())
        .args(["--no-trackers", "--quiet", "--json"])
        .args(extra);
    for p in peers {
        cmd.arg("--peer").arg(p.to_string());
    }
    let group = Group::spawn("spate download", cmd, &home.path().join("spate.log"));
    let exit = group.wait_exit(timeout);
    let log = group.log_tail();
    drop(group);
    (exit, log)
}
