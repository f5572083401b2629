//! The small value types every layer shares: info-hashes, peer ids, piece indices and block
//! references. Newtypes so that a piece index, a byte offset and a length cannot be mixed up.
//! Pure values: no I/O, no clocks.

use std::fmt;

/// The standard block size: the largest request most clients accept (BEP 3 practice).
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// SHA-1 of the bencoded info dictionary: the identity of a v1 torrent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// Lower-case hex, the form trackers' web pages and magnet links use.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The 20-byte id a peer sends in its handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// A fresh id in the Azureus style (`-SP0100-` then 12 random bytes).
    pub fn generate() -> PeerId {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-SP0100-");
        for b in &mut id[8..] {
            // Printable characters keep ids readable in tracker logs.
            *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random::<usize>() % 36];
        }
        PeerId(id)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", String::from_utf8_lossy(&self.0))
    }
}

/// Index of a piece within a torrent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PieceIndex(pub u32);

impl PieceIndex {
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One block: `len` bytes at byte `offset` inside piece `piece`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlockRef {
    pub piece: PieceIndex,
    pub offset: u32,
    pub len: u32,
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
