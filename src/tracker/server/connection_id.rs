//! Stateless UDP connection ids (BEP 15): an id is a keyed hash of the client's IP address
//! and the current minute, so the tracker needs no table of connections and a spoofed source
//! cannot get past the connect step. Pure: the secret and the minute come from the caller.

use crate::tracker::udp::concat;
use std::net::IpAddr;

/// The connection id for `ip` during `minute` (any counter of minutes the caller keeps):
/// SipHash-2-4 keyed with `secret` over the minute and the address. Without the secret the
/// id cannot be guessed, so a client must have received our connect reply at that address,
/// which is all BEP 15 asks of it. Not meant as a general-purpose MAC. No table needed.
///
/// The port is left out on purpose: clients may send each exchange from a new socket and
/// reuse the id for its minute (spate's own client does; opentracker also keys on the IP
/// only), and the port adds nothing against spoofing, which the IP already defeats.
pub fn udp_connection_id(secret: &[u8; 16], ip: IpAddr, minute: u64) -> u64 {
    let ip = match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let msg: [u8; 24] = concat(&[&minute.to_le_bytes(), &ip]);
    siphash24(secret, &msg)
}

/// Whether `conn_id` was issued to `ip` this minute or the previous one, which gives every
/// id a lifetime of at least one full minute.
pub fn udp_connection_id_valid(
    secret: &[u8; 16],
    ip: IpAddr,
    conn_id: u64,
    now_minute: u64,
) -> bool {
    conn_id == udp_connection_id(secret, ip, now_minute)
        || now_minute
            .checked_sub(1)
            .is_some_and(|prev| conn_id == udp_connection_id(secret, ip, prev))
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 (Aumasson and Bernstein), written out so ids stay stable across Rust releases.
fn siphash24(key: &[u8; 16], msg: &[u8]) -> u64 {
    let (k0, k1) = (le_u64(&key[..8]), le_u64(&key[8..]));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let chunks = msg.chunks_exact(8);
    let tail = chunks.remainder();
    let mut last = (msg.len() as u64 & 0xff) << 56;
    for (i, &b) in tail.iter().enumerate() {
        last |= u64::from(b) << (8 * i);
    }
    for m in chunks.map(le_u64).chain(std::iter::once(last)) {
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_stateless_and_expire() {
        let secret = [42u8; 16];
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let id = udp_connection_id(&secret, a, 10);
        assert!(udp_connection_id_valid(&secret, a, id, 10));
        assert!(udp_connection_id_valid(&secret, a, id, 11));
        assert!(!udp_connection_id_valid(&secret, a, id, 12));
        assert!(!udp_connection_id_valid(&secret, a, id, 9));
        assert!(!udp_connection_id_valid(&secret, b, id, 10));
        assert!(!udp_connection_id_valid(&[43u8; 16], a, id, 10));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(udp_connection_id_valid(&secret, mapped, id, 10));
        let id0 = udp_connection_id(&secret, a, 0);
        assert!(udp_connection_id_valid(&secret, a, id0, 0));
    }

    #[test]
    fn siphash_matches_reference_vectors() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, b""), 0x726f_db47_dd0e_0e31);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
    }
}
