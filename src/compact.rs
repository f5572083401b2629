//! Compact peer addresses: 4 (IPv4) or 16 (IPv6) address bytes, then the port, big-endian.
//! Trackers (BEP 23, BEP 7) and peer exchange (BEP 11) carry peers this way; this module
//! writes them and reads lists of them from untrusted bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of one compact IPv4 entry.
pub const V4_LEN: usize = 6;
/// Bytes of one compact IPv6 entry.
pub const V6_LEN: usize = 18;

/// Appends `addr` in compact form.
pub fn put(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A list's length was not a whole number of entries.
#[derive(Debug, PartialEq, Eq)]
pub struct NotWhole {
    pub len: usize,
    pub entry: usize,
}

/// Appends the addresses of a list of compact entries (18 bytes each with `ipv6`, else 6)
/// to `out` until it holds `limit`; entries with port 0 are skipped.
pub fn read_into(
    bytes: &[u8],
    ipv6: bool,
    limit: usize,
    out: &mut Vec<SocketAddr>,
) -> Result<(), NotWhole> {
    let size = if ipv6 { V6_LEN } else { V4_LEN };
    if !bytes.len().is_multiple_of(size) {
        return Err(NotWhole {
            len: bytes.len(),
            entry: size,
        });
    }
    for entry in bytes.chunks_exact(size) {
        if out.len() >= limit {
            break;
        }
        let (ip, port) = entry.split_at(size - 2);
        let port = u16::from_be_bytes([port[0], port[1]]);
        let ip = match (<[u8; 4]>::try_from(ip), <[u8; 16]>::try_from(ip)) {
            (Ok(v4), _) => IpAddr::V4(Ipv4Addr::from(v4)),
            (_, Ok(v6)) => IpAddr::V6(Ipv6Addr::from(v6)),
            _ => continue,
        };
        if port != 0 {
            out.push(SocketAddr::new(ip, port));
        }
    }
    Ok(())
}

/// Whether an address a peer told us about names one host we could dial: a port, and an IP
/// that is not unspecified, broadcast or multicast.
pub fn dialable(addr: &SocketAddr) -> bool {
    let ip_ok = match addr.ip() {
        IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast(),
        IpAddr::V6(ip) => !ip.is_unspecified() && !ip.is_multicast(),
    };
    addr.port() != 0 && ip_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_families() {
        let a: SocketAddr = "10.1.2.3:6881".parse().unwrap();
        let b: SocketAddr = "[2001:db8::7]:51413".parse().unwrap();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        put(&mut v4, a);
        put(&mut v6, b);
        assert_eq!(v4, [10, 1, 2, 3, 0x1a, 0xe1]);
        assert_eq!(v6.len(), V6_LEN);
        let mut out = Vec::new();
        read_into(&v4, false, 10, &mut out).unwrap();
        read_into(&v6, true, 10, &mut out).unwrap();
        assert_eq!(out, [a, b]);
    }

    #[test]
    fn ragged_lists_fail_and_limits_and_port_zero_apply() {
        let mut out = Vec::new();
        assert_eq!(
            read_into(&[1, 2, 3, 4, 5], false, 10, &mut out),
            Err(NotWhole { len: 5, entry: 6 })
        );
        let list = [
            [127, 0, 0, 1, 0, 0],
            [127, 0, 0, 1, 0, 1],
            [127, 0, 0, 1, 0, 2],
        ]
        .concat();
        read_into(&list, false, 1, &mut out).unwrap();
        assert_eq!(
            out,
            ["127.0.0.1:1".parse().unwrap()],
            "port 0 skipped, limit 1"
        );
    }

    #[test]
    fn only_single_hosts_are_dialable() {
        for bad in [
            "0.0.0.0:1",
            "255.255.255.255:1",
            "224.0.0.1:1",
            "1.2.3.4:0",
            "[::]:1",
            "[ff02::1]:1",
        ] {
            assert!(!dialable(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["127.0.0.1:6881", "[::1]:6881", "192.168.1.2:80"] {
            assert!(dialable(&good.parse().unwrap()), "{good}");
        }
    }
}
