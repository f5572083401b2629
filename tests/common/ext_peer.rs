//! Hand-driven peer connections that speak the extension protocol (BEP 10), for tests that
//! script what a peer says in extension messages (`ut_metadata`, `ut_pex`): the handshakes,
//! sending one extended message, and reading until a wanted message arrives.
#![allow(dead_code)]

use spate::types::{InfoHash, PeerId};
use spate::wire::{Extensions, FrameDecoder, Handshake, Message, DEFAULT_MAX_FRAME};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn our_handshake(info_hash: InfoHash) -> [u8; 68] {
    Handshake {
        reserved: Extensions {
            extended: true,
            fast: false,
            dht: false,
        }
        .reserved(),
        info_hash,
        peer_id: PeerId::generate(),
    }
    .encode()
}

/// Answers a connection spate dialled: reads its handshake, sends ours for `info_hash`
/// (with the extension bit), then `hello` as our extension handshake.
pub fn answer(conn: &mut TcpStream, info_hash: InfoHash, hello: &[u8]) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut theirs = [0u8; 68];
    conn.read_exact(&mut theirs)?;
    conn.write_all(&our_handshake(info_hash))?;
    send_extended(conn, 0, hello)
}

/// Dials spate at `addr`, exchanges handshakes (ours with the extension bit) and sends
/// `hello` as our extension handshake.
pub fn dial(addr: SocketAddr, info_hash: InfoHash, hello: &[u8]) -> io::Result<TcpStream> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.write_all(&our_handshake(info_hash))?;
    let mut theirs = [0u8; 68];
    conn.read_exact(&mut theirs)?;
    send_extended(&mut conn, 0, hello)?;
    Ok(conn)
}

/// Sends one extended message (BEP 10) with extended id `id`.
pub fn send_extended(conn: &mut TcpStream, id: u8, payload: &[u8]) -> io::Result<()> {
    let mut out = Vec::new();
    Message::Extended { id, payload }.encode_into(&mut out);
    conn.write_all(&out)
}

/// Reads messages until `pick` returns something; fails on end of stream or when the
/// socket's read timeout passes with nothing picked.
pub fn read_until<T>(
    conn: &mut TcpStream,
    mut pick: impl FnMut(Message<'_>) -> Option<T>,
) -> io::Result<T> {
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = Vec::new();
    loop {
        while let Some((message, used)) = decoder
            .decode(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            if let Some(found) = pick(message) {
                return Ok(found);
            }
            buf.drain(..used);
        }
        let mut chunk = [0u8; 16 << 10];
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
