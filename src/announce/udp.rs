//! Talking to UDP trackers (BEP 15): resolving `udp://host:port`, the connect exchange with
//! its one-minute connection id, announce and scrape, each packet retransmitted on the
//! 15 * 2^n schedule up to a bounded number of attempts. Packets come from `tracker::udp`
//! (pure); this file owns the socket and the waiting.
//!
//! The socket is tokio's readiness-based `UdpSocket`, not tokio-uring's: a receive has to sit
//! under `tokio::time::timeout`, and dropping an in-flight io_uring receive does not cancel
//! it (see DESIGN.md), while dropping a readiness wait is harmless. The socket lives for one
//! exchange and is connected to the tracker, so the kernel drops datagrams from anyone else.

use super::AnnounceError;
use crate::tracker::{
    decode_announce_response, decode_connect_response, decode_scrape_response, encode_announce,
    encode_connect, encode_scrape_request, AnnounceRequest, AnnounceResponse, ScrapeEntry,
    TrackerError, UdpConnectionCache,
};
use crate::types::InfoHash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// BEP 15's first wait for a reply; each retransmission doubles it.
pub const UDP_BASE_TIMEOUT: Duration = Duration::from_secs(15);
/// Unanswered packets tolerated per exchange. BEP 15 would go on for hours (up to n = 8);
/// three bound one announce to 15 + 30 + 60 s of waiting, after which the next tracker gets
/// its turn and the backoff decides when this one is tried again.
pub const UDP_MAX_ATTEMPTS: u32 = 3;
/// The doubling stops here (15 s * 2^8 = 3840 s), as in BEP 15.
const MAX_DOUBLINGS: u32 = 8;
/// Receive buffer: the largest UDP payload, so that no reply is cut short silently.
const MAX_DATAGRAM: usize = 65_536;
/// Every reply starts with action and transaction id.
const REPLY_HEADER_LEN: usize = 8;

/// Retransmission schedule of UDP exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpConfig {
    /// Wait for a reply to the first packet. Each unanswered packet doubles the wait for the
    /// next one (BEP 15's n), whether that is a retransmission or the announce that follows
    /// a late connect reply.
    pub base_timeout: Duration,
    /// The exchange gives up when this many waits (at least 1) have run out; answered
    /// packets do not count. Connect and announce share the budget.
    pub max_attempts: u32,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            base_timeout: UDP_BASE_TIMEOUT,
            max_attempts: UDP_MAX_ATTEMPTS,
        }
    }
}

impl UdpConfig {
    /// How long to wait for a reply after `attempt` (0-based) unanswered packets.
    pub fn attempt_timeout(&self, attempt: u32) -> Duration {
        self.base_timeout
            .saturating_mul(1 << attempt.min(MAX_DOUBLINGS))
    }

    /// The longest one exchange waits in vain before it gives up: the sum of all attempts'
    /// waits (answered round trips come on top).
    pub fn give_up_after(&self) -> Duration {
        (0..self.max_attempts.max(1))
            .map(|n| self.attempt_timeout(n))
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

/// Announces `req` to the UDP tracker at `url`, reusing the connection id in `cache` while it
/// is fresh and storing the new one otherwise. IPv6 trackers answer with 18-byte peers.
pub async fn announce_udp(
    url: &str,
    req: &AnnounceRequest,
    cache: &mut UdpConnectionCache,
    config: &UdpConfig,
) -> Result<AnnounceResponse, AnnounceError> {
    let mut exchange = Exchange::open(url, config).await?;
    let tid = rand::random::<u32>();
    let ipv6 = exchange.ipv6;
    loop {
        let conn_id = exchange.connection_id(cache).await?;
        let packet = encode_announce(conn_id, tid, req);
        if let Some(reply) = exchange.send_and_wait(&packet, tid).await? {
            let decoded = decode_announce_response(reply, tid, ipv6);
            return exchange.judge(cache, decoded);
        }
    }
}

/// Scrapes up to `MAX_SCRAPE_HASHES` torrents from the UDP tracker at `url`.
pub async fn scrape_udp(
    url: &str,
    hashes: &[InfoHash],
    cache: &mut UdpConnectionCache,
    config: &UdpConfig,
) -> Result<Vec<ScrapeEntry>, AnnounceError> {
    let mut exchange = Exchange::open(url, config).await?;
    let tid = rand::random::<u32>();
    loop {
        let conn_id = exchange.connection_id(cache).await?;
        let packet = encode_scrape_request(conn_id, tid, hashes).map_err(|source| {
            AnnounceError::BadRequest {
                url: url.to_owned(),
                source,
            }
        })?;
        if let Some(reply) = exchange.send_and_wait(&packet, tid).await? {
            let decoded = decode_scrape_response(reply, tid, hashes);
            return exchange.judge(cache, decoded);
        }
    }
}

/// One exchange with one tracker: the socket, the waits that ran out so far and the buffer
/// the replies land in.
struct Exchange<'a> {
    url: &'a str,
    config: &'a UdpConfig,
    socket: UdpSocket,
    ipv6: bool,
    timeouts: u32,
    started: Instant,
    buf: Vec<u8>,
}

impl<'a> Exchange<'a> {
    /// Resolves the tracker and opens a socket connected to it.
    async fn open(url: &'a str, config: &'a UdpConfig) -> Result<Exchange<'a>, AnnounceError> {
        let started = Instant::now();
        let addr = resolve(url, config).await?;
        let io = |e: std::io::Error| AnnounceError::Io {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(addr).await.map_err(io)?;
        Ok(Exchange {
            url,
            config,
            socket,
            ipv6: addr.is_ipv6(),
            timeouts: 0,
            started,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    /// A connection id that is fresh now: the cached one, or a new one from a connect
    /// exchange (whose lost packets count against the budget like any other).
    async fn connection_id(
        &mut self,
        cache: &mut UdpConnectionCache,
    ) -> Result<u64, AnnounceError> {
        let tid = rand::random::<u32>();
        loop {
            if let Some(id) = cache.valid(Instant::now()) {
                return Ok(id);
            }
            let packet = encode_connect(tid);
            if let Some(reply) = self.send_and_wait(&packet, tid).await? {
                let decoded = decode_connect_response(reply, tid);
                let id = self.judge(cache, decoded)?;
                cache.store(id, Instant::now());
                return Ok(id);
            }
        }
    }

    /// Sends `packet` and waits the current attempt's timeout for a reply carrying `tid`;
    /// replies to other transactions (late answers to an earlier exchange, say) are skipped.
    /// `None` means the wait ran out and the caller should send again; when the budget is
    /// spent, `Timeout`.
    async fn send_and_wait(
        &mut self,
        packet: &[u8],
        tid: u32,
    ) -> Result<Option<&[u8]>, AnnounceError> {
        let wait = self.config.attempt_timeout(self.timeouts);
        self.socket
            .send(packet)
            .await
            .map_err(|e| self.io_error(e))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut self.buf));
            match received.await {
                Err(_elapsed) => return self.on_timeout().map(|()| None),
                // A closed port on the tracker's host shows up here as ECONNREFUSED.
                Ok(Err(e)) => return Err(self.io_error(e)),
                Ok(Ok(len)) if carries_tid(&self.buf[..len], tid) => {
                    return Ok(Some(&self.buf[..len]));
                }
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Counts a wait that ran out; `Timeout` once `max_attempts` have.
    fn on_timeout(&mut self) -> Result<(), AnnounceError> {
        self.timeouts += 1;
        if self.timeouts >= self.config.max_attempts.max(1) {
            return Err(AnnounceError::Timeout {
                url: self.url.to_owned(),
                waited: self.started.elapsed(),
            });
        }
        Ok(())
    }

    /// Maps a decoded reply to our error type. An error packet also drops the cached
    /// connection id: the tracker may have refused it.
    fn judge<T>(
        &self,
        cache: &mut UdpConnectionCache,
        decoded: Result<T, TrackerError>,
    ) -> Result<T, AnnounceError> {
        let url = self.url.to_owned();
        decoded.map_err(|source| match source {
            TrackerError::Failure(reason) => {
                cache.clear();
                AnnounceError::Refused { url, reason }
            }
            source => AnnounceError::BadReply { url, source },
        })
    }

    fn io_error(&self, e: std::io::Error) -> AnnounceError {
        AnnounceError::Io {
            url: self.url.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// Whether a datagram is long enough to be a reply and answers transaction `tid`.
fn carries_tid(packet: &[u8], tid: u32) -> bool {
    packet.len() >= REPLY_HEADER_LEN && packet[4..REPLY_HEADER_LEN] == tid.to_be_bytes()
}

/// The tracker's socket address: an IP literal as is, a host name through the system
/// resolver (first address), within the first attempt's timeout.
async fn resolve(url: &str, config: &UdpConfig) -> Result<SocketAddr, AnnounceError> {
    let (host, port) = udp_host_port(url)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |reason: String| AnnounceError::Resolve {
        url: url.to_owned(),
        reason,
    };
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let mut addrs = tokio::time::timeout(config.attempt_timeout(0), lookup)
        .await
        .map_err(|_| failed("the resolver did not answer in time".to_owned()))?
        .map_err(|e| failed(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| failed("no address for that name".to_owned()))
}

/// Host (brackets stripped from IPv6 literals) and port of a `udp://host:port[/path]` URL.
/// The path (BEP 41 URL data) is ignored.
fn udp_host_port(url: &str) -> Result<(String, u16), AnnounceError> {
    let invalid = |reason: &str| AnnounceError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if parsed.scheme() != "udp" {
        return Err(invalid("not a udp:// URL"));
    }
    let port = parsed.port().ok_or_else(|| invalid("no port"))?;
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(invalid("no host")),
    };
    if port == 0 {
        return Err(invalid("port 0"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::retry_timeout;

    #[test]
    fn default_schedule_is_bep15_and_bounded() {
        let c = UdpConfig::default();
        for n in 0..12 {
            assert_eq!(c.attempt_timeout(n), retry_timeout(n));
        }
        assert_eq!(c.give_up_after(), Duration::from_secs(15 + 30 + 60));
        let fast = UdpConfig {
            base_timeout: Duration::from_millis(10),
            max_attempts: 0,
        };
        assert_eq!(fast.give_up_after(), Duration::from_millis(10));
    }

    #[test]
    fn udp_urls_give_host_and_port() {
        let ok = |u: &str| udp_host_port(u).unwrap();
        assert_eq!(
            ok("udp://tracker.example:6969/announce"),
            ("tracker.example".into(), 6969)
        );
        assert_eq!(ok("udp://127.0.0.1:80"), ("127.0.0.1".into(), 80));
        assert_eq!(ok("udp://[::1]:1337/announce?x=1"), ("::1".into(), 1337));
        for bad in [
            "udp://tracker.example/announce",
            "udp://:80",
            "http://a:1",
            "udp://a:0",
            "x",
        ] {
            let e = udp_host_port(bad).unwrap_err();
            assert!(matches!(e, AnnounceError::InvalidUrl { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn only_replies_to_our_transaction_count() {
        let mut reply = vec![0, 0, 0, 1];
        reply.extend_from_slice(&7u32.to_be_bytes());
        assert!(carries_tid(&reply, 7));
        assert!(!carries_tid(&reply, 8));
        assert!(!carries_tid(&reply[..7], 7));
    }
}
