//! The peer-wire codec (BEP 3, with the BEP 6 fast-extension and BEP 10 extended message ids).
//!
//! This module owns the byte format only: encoding and decoding the handshake and the
//! length-prefixed messages on byte slices. It is sans-IO: no sockets, no buffers of its own,
//! no allocation sized by a peer. Decoded messages borrow from the caller's buffer.
//!
//! Checks here are structural (lengths, ids, the handshake's protocol string). Semantic checks —
//! a piece index in range, a block inside its piece, a bitfield matching the torrent — belong to
//! the engine, which knows the torrent; [`validate_bitfield`] is offered for it to call.

mod decoder;
mod handshake;
mod message;
pub mod mse;

pub use decoder::{validate_bitfield, FrameDecoder, FrameHeader, HeaderKind, DEFAULT_MAX_FRAME};
pub use handshake::{Extensions, Handshake, HANDSHAKE_LEN};
pub use message::{id, piece_header, Message, PIECE_HEADER_LEN};

/// Why bytes from a peer could not be read. Every variant means the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix announces more than we are willing to buffer.
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLong { len: u32, max: u32 },
    /// A message whose size the protocol fixes (or bounds below) came with another length.
    #[error("message id {id} came with a length of {len} bytes, which that message cannot have")]
    BadLength { id: u8, len: u32 },
    /// The 68-byte handshake is malformed; the text says which part.
    #[error("bad handshake: {0}")]
    BadHandshake(&'static str),
    /// A bitfield's byte length does not match the torrent's piece count.
    #[error("bitfield of {got} bytes, but the torrent needs exactly {want}")]
    BitfieldLength { got: usize, want: usize },
    /// A bitfield sets bits past the last piece, which BEP 3 requires to be zero.
    #[error("bitfield sets spare bits past the last piece")]
    BitfieldSpareBits,
}
