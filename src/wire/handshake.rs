//! The fixed 68-byte handshake that opens every peer connection (BEP 3), and the reserved bits
//! through which peers announce the extensions they speak (BEP 5 DHT, BEP 6 fast, BEP 10).

use super::WireError;
use crate::types::{InfoHash, PeerId};

/// Bytes in a handshake: pstrlen, "BitTorrent protocol", reserved, info-hash, peer id.
pub const HANDSHAKE_LEN: usize = 68;

const PSTR: &[u8; 19] = b"BitTorrent protocol";

// Where each field sits in the 68 bytes.
const RESERVED_AT: usize = 20;
const INFO_HASH_AT: usize = 28;
const PEER_ID_AT: usize = 48;

/// One side's handshake.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

/// The extensions a reserved field announces.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Extensions {
    /// BEP 10 extension protocol.
    pub extended: bool,
    /// BEP 6 fast extension.
    pub fast: bool,
    /// BEP 5 DHT (the peer will answer a PORT message).
    pub dht: bool,
}

impl Extensions {
    /// The reserved bytes that announce exactly these extensions; usable in a `const`.
    pub const fn reserved(self) -> [u8; 8] {
        let mut r = [0u8; 8];
        if self.extended {
            r[5] |= 0x10;
        }
        if self.fast {
            r[7] |= 0x04;
        }
        if self.dht {
            r[7] |= 0x01;
        }
        r
    }
}

impl Handshake {
    /// The 68 bytes to send.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = PSTR.len() as u8;
        out[1..RESERVED_AT].copy_from_slice(PSTR);
        out[RESERVED_AT..INFO_HASH_AT].copy_from_slice(&self.reserved);
        out[INFO_HASH_AT..PEER_ID_AT].copy_from_slice(&self.info_hash.0);
        out[PEER_ID_AT..].copy_from_slice(&self.peer_id.0);
        out
    }

    /// Reads a handshake from the first 68 bytes of `buf` (the caller passes exactly 68; any
    /// bytes after them are ignored). Does not check the info-hash: the engine knows which
    /// torrents it serves.
    pub fn decode(buf: &[u8]) -> Result<Handshake, WireError> {
        let Some(hs) = buf.first_chunk::<HANDSHAKE_LEN>() else {
            return Err(WireError::BadHandshake("fewer than 68 bytes"));
        };
        if usize::from(hs[0]) != PSTR.len() {
            return Err(WireError::BadHandshake("protocol string length is not 19"));
        }
        if &hs[1..RESERVED_AT] != PSTR {
            return Err(WireError::BadHandshake(
                "protocol string is not \"BitTorrent protocol\"",
            ));
        }
        Ok(Handshake {
            reserved: field(hs, RESERVED_AT),
            info_hash: InfoHash(field(hs, INFO_HASH_AT)),
            peer_id: PeerId(field(hs, PEER_ID_AT)),
        })
    }

    /// Whether the peer speaks the BEP 10 extension protocol.
    pub fn supports_extended(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// Whether the peer speaks the BEP 6 fast extension.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// Whether the peer runs a BEP 5 DHT node.
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    /// All three flags at once.
    pub fn extensions(&self) -> Extensions {
        Extensions {
            extended: self.supports_extended(),
            fast: self.supports_fast(),
            dht: self.supports_dht(),
        }
    }
}

/// The `N` bytes at `at`; the offsets are constants that fit inside 68 bytes.
fn field<const N: usize>(hs: &[u8; HANDSHAKE_LEN], at: usize) -> [u8; N] {
    let mut f = [0u8; N];
    f.copy_from_slice(&hs[at..at + N]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(reserved: [u8; 8]) -> Handshake {
        Handshake {
            reserved,
            info_hash: InfoHash([0xAB; 20]),
            peer_id: PeerId(*b"-SP0100-abcdefghijkl"),
        }
    }

    #[test]
    fn encodes_then_decodes_to_itself() {
        let hs = sample([1, 2, 3, 4, 5, 6, 7, 8]);
        let bytes = hs.encode();
        assert_eq!(bytes[0], 19);
        assert_eq!(&bytes[1..20], b"BitTorrent protocol");
        assert_eq!(Handshake::decode(&bytes), Ok(hs));
    }

    #[test]
    fn reserved_bits_round_trip() {
        for bits in 0..8u8 {
            let ext = Extensions {
                extended: bits & 1 != 0,
                fast: bits & 2 != 0,
                dht: bits & 4 != 0,
            };
            assert_eq!(sample(ext.reserved()).extensions(), ext);
        }
    }

    #[test]
    fn reserved_bits_are_where_the_beps_put_them() {
        const ALL: [u8; 8] = Extensions {
            extended: true,
            fast: true,
            dht: true,
        }
        .reserved();
        assert_eq!(ALL, [0, 0, 0, 0, 0, 0x10, 0, 0x05]);
    }

    #[test]
    fn short_input_is_rejected() {
        let bytes = sample([0; 8]).encode();
        assert!(matches!(
            Handshake::decode(&bytes[..67]),
            Err(WireError::BadHandshake(_))
        ));
    }

    #[test]
    fn wrong_pstrlen_and_pstr_are_rejected() {
        let mut bytes = sample([0; 8]).encode();
        bytes[0] = 18;
        assert!(Handshake::decode(&bytes).is_err());
        bytes[0] = 19;
        bytes[1] = b'b';
        assert!(Handshake::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Handshake::decode(&bytes);
        }
    }
}
