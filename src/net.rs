//! Sockets: opening, tuning (socket2) and wrapping peer connections for tokio-uring. The
//! only place besides `storage` that names tokio-uring's socket types, so the runtime can be
//! swapped without touching the engine.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use tokio_uring::net::{TcpListener, TcpStream};

/// Unsent bytes a peer socket may hold before a write waits (TCP_NOTSENT_LOWAT). Uploads
/// then enter the kernel only as fast as the peer opens its window, instead of megabytes
/// waiting behind a closed window for the peer's ACKs to push them out (on loopback, from
/// inside the peer's own recv calls). An rqbit leecher, CPU-bound on one core on our
/// two-core machine, downloaded 0.87x as fast without it (`perf/compare --size 2G
/// --piece 1M`, spate:rqbit, 3 alternating runs each: 154/155/165 MB/s without,
/// 174/179/180 with); spate, libtorrent and aria2 leechers were unchanged within noise.
const UNSENT_LOW_WATER_BYTES: u32 = 4 << 10;

fn tune(socket: &Socket) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    // Both buffers are left to the kernel's autotuning (the send buffer never fills, given
    // the low-water mark). Setting SO_RCVBUF would switch receive autotuning off and clamp
    // the buffer at net.core.rmem_max, 208 KiB on a stock kernel: with that, a 2 GiB download
    // cost the leecher 2.38-2.48 CPU s from libtorrent and 2.83-2.89 from aria2, against
    // 2.15-2.25 and 2.23-2.25 autotuned (2026-12-07, alternating single runs of
    // `perf/compare --size 2G --piece 1M`); with rmem_max raised to 4 MiB the two were even.
    let _ = socket.set_tcp_notsent_lowat(UNSENT_LOW_WATER_BYTES);
    Ok(())
}

/// Connects to a peer within `timeout`, tuned, as a tokio-uring stream.
///
/// The connect runs as a blocking connect on a socket2 socket inside `spawn_blocking` (a
/// timed-out tokio-uring connect cannot be cancelled cleanly).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let std_stream = tokio::task::spawn_blocking(move || -> io::Result<std::net::TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        tune(&socket)?;
        socket.connect_timeout(&addr.into(), timeout)?;
        Ok(socket.into())
    })
    .await
    .map_err(|e| io::Error::other(format!("connect task failed: {e}")))??;
    Ok(TcpStream::from_std(std_stream))
}

/// Tunes an accepted stream like an outgoing one.
pub fn tune_accepted(stream: &TcpStream) -> io::Result<()> {
    tune(&borrow_socket(stream))
}

/// `stream`'s fd as a socket2 socket, without taking ownership of it (never dropped).
fn borrow_socket(stream: &TcpStream) -> std::mem::ManuallyDrop<Socket> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: the fd stays open while `stream` lives, and ManuallyDrop never closes it.
    std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(stream.as_raw_fd()) })
}

/// A TCP socket bound to its address but not yet listening: the port is ours (a busy port is
/// an error at once), while connections to it are still refused until `listen`.
pub struct BoundSocket(Socket);

impl BoundSocket {
    /// Binds with SO_REUSEADDR (a restarted client can take its port back while old
    /// connections sit in TIME_WAIT). On `[::]` the one socket takes IPv6 and IPv4 peers
    /// both (IPv4 ones arrive as IPv4-mapped addresses, see `canonical`), as libtorrent and
    /// Transmission listen by default; a host without IPv6 gets `0.0.0.0` instead.
    pub fn bind(addr: SocketAddr) -> io::Result<BoundSocket> {
        let every_address = addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        match BoundSocket::bind_exactly(addr, every_address) {
            Err(e) if every_address && no_ipv6(&e) => {
                let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
                BoundSocket::bind_exactly(v4, false)
            }
            bound => bound,
        }
    }

    fn bind_exactly(addr: SocketAddr, dual_stack: bool) -> io::Result<BoundSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if dual_stack {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        Ok(BoundSocket(socket))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Starts accepting connections.
    pub fn listen(self) -> io::Result<TcpListener> {
        self.0.listen(1024)?;
        Ok(TcpListener::from_std(self.0.into()))
    }
}

/// True if `e` says the host has no IPv6 (the kernel built or booted without it, or no
/// IPv6 address to bind).
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

/// A peer's address as the peer itself would give it: an IPv4 peer accepted on a dual-stack
/// socket (`::ffff:a.b.c.d`) is `a.b.c.d`, so the same peer is one address whichever
/// socket it came through (bans, duplicates, peer exchange).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Binds a listening socket like `BoundSocket`, non-blocking, as a std listener: for servers that
/// bind on one thread (to learn the real port at once) and serve on another, with tokio's
/// readiness-based listener (`tokio::net::TcpListener::from_std`). An IPv6 address also takes
/// IPv4 connections.
pub fn listen_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds a non-blocking UDP socket as a std socket, for `tokio::net::UdpSocket::from_std`. An
/// IPv6 address also takes IPv4 datagrams.
pub fn bind_udp_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_udp(addr, false)
}

/// As `bind_udp_std`, but an IPv6 socket takes IPv6 datagrams only, so an IPv4 socket can
/// hold the same port next to it.
pub fn bind_udp_one_family(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    bind_udp(addr, true)
}

fn bind_udp(addr: SocketAddr, only_v6: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The low-water mark of `stream`, checking on the way that Nagle is off.
    fn unsent_low_water(stream: &TcpStream) -> u32 {
        let socket = borrow_socket(stream);
        assert!(socket.tcp_nodelay().unwrap());
        socket.tcp_notsent_lowat().unwrap()
    }

    #[test]
    fn both_ends_of_a_peer_connection_are_tuned() {
        crate::runtime::start(async {
            let bound = BoundSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = bound.local_addr().unwrap();
            let listener = bound.listen().unwrap();
            let outgoing = connect(addr, Duration::from_secs(5)).await.unwrap();
            let (incoming, _) = listener.accept().await.unwrap();
            tune_accepted(&incoming).unwrap();
            assert_eq!(unsent_low_water(&outgoing), UNSENT_LOW_WATER_BYTES);
            assert_eq!(unsent_low_water(&incoming), UNSENT_LOW_WATER_BYTES);
        });
    }

    #[test]
    fn listening_on_every_address_takes_ipv4_and_ipv6_peers() {
        crate::runtime::start(async {
            let bound = BoundSocket::bind("[::]:0".parse().unwrap()).unwrap();
            let port = bound.local_addr().unwrap().port();
            let listener = bound.listen().unwrap();
            for ip in ["127.0.0.1", "::1"] {
                let ip: IpAddr = ip.parse().unwrap();
                let outgoing = connect((ip, port).into(), Duration::from_secs(5)).await;
                let outgoing = outgoing.unwrap();
                let (_incoming, from) = listener.accept().await.unwrap();
                let ours = borrow_socket(&outgoing).local_addr().unwrap();
                assert_eq!(canonical(from), ours.as_socket().unwrap());
                assert_eq!(canonical(from).ip(), ip);
            }
        });
    }

    #[test]
    fn a_canonical_address_unmaps_ipv4_only() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:6881".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:6881".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
