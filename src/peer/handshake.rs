//! Reading a peer's handshake off the socket, under a watchdog (a tokio-uring read must never
//! sit under a timeout): the plain 68 bytes on connections we dialled, and on connections we
//! accepted either those or an MSE/PE exchange first (`wire::mse`), which ends in plaintext.
//! A peer that refuses plain handshakes is dialled again with MSE ([`dial_encrypted`]).

use super::conn::PeerError;
use crate::net::TcpStream;
use crate::types::InfoHash;
use crate::wire::mse::{self, Answer, Dial, Offer, Selected, KEY_LEN};
use crate::wire::{Handshake, HANDSHAKE_LEN};
use std::cell::Cell;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;
use tokio_uring::buf::BoundedBuf;

/// A peer that has not completed its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What one read may add to the handshake buffer.
const READ_CHUNK: usize = 16 << 10;
/// Bytes that tell a plain handshake from an MSE public key.
const PLAIN_PREFIX_LEN: usize = 20;

/// Shuts the socket down if it is still in use (the watchdog not dropped) after a timeout:
/// `HANDSHAKE_TIMEOUT` for a handshake.
pub(crate) struct Watchdog {
    done: Rc<Cell<bool>>,
}

impl Watchdog {
    fn start(stream: &Rc<TcpStream>) -> Watchdog {
        Watchdog::start_for(stream, HANDSHAKE_TIMEOUT)
    }

    /// A watchdog that shuts `stream` down after `timeout`.
    pub(crate) fn start_for(stream: &Rc<TcpStream>, timeout: Duration) -> Watchdog {
        let done = Rc::new(Cell::new(false));
        tokio_uring::spawn({
            // Weak: a strong reference would keep the socket open for the whole timeout
            // after a refused handshake.
            let (stream, done) = (Rc::downgrade(stream), Rc::clone(&done));
            async move {
                tokio::time::sleep(timeout).await;
                if let (false, Some(stream)) = (done.get(), stream.upgrade()) {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.set(true);
    }
}

/// Reads until `buf` holds at least `want` bytes (growing it a read at a time).
async fn read_at_least(
    stream: &TcpStream,
    mut buf: Vec<u8>,
    want: usize,
) -> Result<Vec<u8>, PeerError> {
    while buf.len() < want {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK);
        }
        let filled = buf.len();
        let (res, slice) = stream.read(buf.slice(filled..)).await;
        buf = slice.into_inner();
        if res? == 0 {
            // Not misbehaviour: a busy or still-checking client may hang up; retry later.
            let eof = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed during the handshake",
            );
            return Err(eof.into());
        }
    }
    Ok(buf)
}

/// The plain handshake at the front of `buf`, and the bytes after it.
fn split_handshake(buf: &[u8]) -> Result<(Handshake, Vec<u8>), PeerError> {
    let theirs = Handshake::decode(&buf[..HANDSHAKE_LEN])
        .map_err(|e| PeerError::Handshake(e.to_string()))?;
    Ok((theirs, buf[HANDSHAKE_LEN..].to_vec()))
}

/// An MSE exchange the peer got wrong.
fn refused(e: mse::MseError) -> PeerError {
    PeerError::Handshake(e.to_string())
}

/// Reads the handshake of a peer we dialled, and whatever arrived with it.
pub async fn read_handshake(stream: &Rc<TcpStream>) -> Result<(Handshake, Vec<u8>), PeerError> {
    let _watchdog = Watchdog::start(stream);
    let buf = read_at_least(stream, Vec::with_capacity(READ_CHUNK), HANDSHAKE_LEN).await?;
    split_handshake(&buf)
}

/// Reads the handshake of a peer that dialled us, plain or behind MSE, and whatever arrived
/// with it. `torrent_named` maps MSE's HASH('req2', info-hash) to a torrent we serve.
pub async fn answer_handshake(
    stream: &Rc<TcpStream>,
    torrent_named: impl Fn(&[u8; 20]) -> Option<InfoHash>,
) -> Result<(Handshake, Vec<u8>), PeerError> {
    let _watchdog = Watchdog::start(stream);
    let buf = read_at_least(stream, Vec::with_capacity(READ_CHUNK), PLAIN_PREFIX_LEN).await?;
    if mse::looks_plain(&buf) {
        let buf = read_at_least(stream, buf, HANDSHAKE_LEN).await?;
        return split_handshake(&buf);
    }
    let (info_hash, plaintext) = answer_encrypted(stream, buf, torrent_named).await?;
    let plaintext = read_at_least(stream, plaintext, HANDSHAKE_LEN).await?;
    let (theirs, rest) = split_handshake(&plaintext).map_err(|e| {
        let first = &plaintext[..HANDSHAKE_LEN.min(24)];
        PeerError::Handshake(format!("after MSE: {e} (it began {first:02x?})"))
    })?;
    if theirs.info_hash != info_hash {
        return Err(PeerError::Handshake(format!(
            "MSE named torrent {info_hash}, the handshake {}",
            theirs.info_hash
        )));
    }
    Ok((theirs, rest))
}

/// The MSE exchange, from the dialler's first bytes (`buf`) to our step 4; returns the
/// torrent it named and the plaintext that followed.
async fn answer_encrypted(
    stream: &TcpStream,
    buf: Vec<u8>,
    torrent_named: impl Fn(&[u8; 20]) -> Option<InfoHash>,
) -> Result<(InfoHash, Vec<u8>), PeerError> {
    let mut buf = read_at_least(stream, buf, KEY_LEN).await?;
    let mut answer = Answer::new(&mut rand::thread_rng());
    let their_key: &[u8; KEY_LEN] = buf.first_chunk().expect("read_at_least gave KEY_LEN");
    let step2 = answer
        .public_key(their_key, &mut rand::thread_rng())
        .map_err(refused)?;
    let (res, _) = stream.write_all(step2).await;
    res?;
    buf.drain(..KEY_LEN);
    loop {
        match answer.offer(&buf, &torrent_named).map_err(refused)? {
            Offer::Complete(accepted) => {
                let (res, _) = stream.write_all(accepted.reply).await;
                res?;
                return Ok((accepted.info_hash, accepted.plaintext));
            }
            // `offer` refuses before the buffer passes MAX_OFFER; the bound is kept here too.
            Offer::Incomplete if buf.len() >= Answer::MAX_OFFER => {
                return Err(PeerError::Handshake("MSE: offer too long".into()));
            }
            Offer::Incomplete => {
                let want = buf.len() + 1;
                buf = read_at_least(stream, buf, want).await?;
            }
        }
    }
}

/// Dials with MSE: sends our public key, then our offer (plaintext after the exchange) with
/// `ours`, our handshake, as its initial payload; reads the peer's answer and handshake.
/// Returns the peer's handshake and whatever plaintext followed it.
pub async fn dial_encrypted(
    stream: &Rc<TcpStream>,
    info_hash: InfoHash,
    ours: &[u8],
) -> Result<(Handshake, Vec<u8>), PeerError> {
    let _watchdog = Watchdog::start(stream);
    let mut dial = Dial::new(info_hash, &mut rand::thread_rng());
    let (res, _) = stream
        .write_all(dial.public_key(&mut rand::thread_rng()))
        .await;
    res?;
    let mut buf = read_at_least(stream, Vec::with_capacity(READ_CHUNK), KEY_LEN).await?;
    let their_key: &[u8; KEY_LEN] = buf.first_chunk().expect("read_at_least gave KEY_LEN");
    let step3 = dial.offer(their_key, ours).map_err(refused)?;
    let (res, _) = stream.write_all(step3).await;
    res?;
    buf.drain(..KEY_LEN);
    let plaintext = loop {
        match dial.selected(&buf).map_err(refused)? {
            Selected::Plaintext(p) => break p,
            Selected::Incomplete if buf.len() >= Dial::MAX_REPLY => {
                return Err(PeerError::Handshake("MSE: answer too long".into()));
            }
            Selected::Incomplete => {
                let want = buf.len() + 1;
                buf = read_at_least(stream, buf, want).await?;
            }
        }
    };
    let plaintext = read_at_least(stream, plaintext, HANDSHAKE_LEN).await?;
    split_handshake(&plaintext)
}
