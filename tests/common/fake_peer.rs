//! A scripted BitTorrent peer for tests, on std threads and blocking sockets: it serves a
//! torrent's pieces honestly or misbehaves in one chosen way (corrupt data, unrequested
//! blocks, wrong lengths, oversized frames, bad bitfields, a wrong info-hash, silence), so
//! tests can check that spate drops it and still completes from honest peers; or it serves
//! honestly in an unusual way (blocks out of order, part of the pieces).
#![allow(dead_code)]

use spate::metainfo::Metainfo;
use spate::types::{BlockRef, InfoHash, PeerId, PieceIndex};
use spate::wire::{Extensions, FrameDecoder, Handshake, Message};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the fake peer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Serves blocks with every byte flipped.
    Corrupt,
    /// Answers the first request, then sends a block nobody asked for.
    Unrequested,
    /// Answers a request with a block one byte short.
    WrongLength,
    /// Sends a length prefix of 4 GiB - 1 right after the bitfield.
    HugeFrame,
    /// Sends a bitfield one byte too long.
    BitfieldTooLong,
    /// Sends a bitfield with the spare trailing bits set.
    BitfieldSpareBits,
    /// Sends HAVE for a piece past the end.
    HaveOutOfRange,
    /// Answers the handshake with another info-hash.
    WrongInfoHash,
    /// Accepts the connection and never sends a byte.
    Silent,
    /// Honest, but answers each batch of requests with every piece's blocks in reverse
    /// order, as seeders that read from disk in parallel often do.
    Reversed,
    /// As `Reversed`, but each block goes out on its own after a short pause, so the
    /// receiver's reads hold one block each: a slow peer's pattern.
    ReversedTrickle,
    /// Honest, but has (and says it has) only the first half of the pieces.
    HalfSeed,
    /// Honest, but shows connection number i only the pieces p with p % 3 == i % 3, so three
    /// leechers each get a third from it and must trade the rest among themselves.
    ThirdPerConnection,
}

/// A fake peer listening on 127.0.0.1; stops when dropped.
pub struct FakePeer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections that ended (spate hung up or we did).
    pub disconnects: Arc<AtomicU32>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

impl FakePeer {
    /// Serves `data` (the torrent's whole payload) for `meta`.
    pub fn start(meta: &Metainfo, data: Vec<u8>, behaviour: Behaviour) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let disconnects = Arc::new(AtomicU32::new(0));
        let ctx = Arc::new(Ctx {
            info_hash: meta.info_hash,
            piece_len: meta.info.piece_length,
            piece_count: meta.info.piece_count(),
            data,
            behaviour,
        });
        let (stop2, disc2) = (Arc::clone(&stop), Arc::clone(&disconnects));
        std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (ctx, disc, stop) = (Arc::clone(&ctx), Arc::clone(&disc2), Arc::clone(&stop2));
                std::thread::spawn(move || {
                    let _ = serve(&ctx, stream, &stop, index as u32);
                    disc.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FakePeer {
            addr,
            stop,
            disconnects,
        }
    }
}

struct Ctx {
    info_hash: InfoHash,
    piece_len: u32,
    piece_count: u32,
    data: Vec<u8>,
    behaviour: Behaviour,
}

fn send(stream: &mut TcpStream, m: &Message<'_>) -> std::io::Result<()> {
    let mut out = Vec::new();
    m.encode_into(&mut out);
    stream.write_all(&out)
}

fn bitfield(ctx: &Ctx) -> Vec<u8> {
    let n = ctx.piece_count as usize;
    let mut bits = vec![0u8; n.div_ceil(8)];
    for i in 0..n {
        bits[i / 8] |= 0x80 >> (i % 8);
    }
    bits
}

fn serve(ctx: &Ctx, mut stream: TcpStream, stop: &AtomicBool, index: u32) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hs = [0u8; 68];
    stream.read_exact(&mut hs)?;
    if ctx.behaviour == Behaviour::Silent {
        let mut sink = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) && stream.read(&mut sink)? > 0 {}
        return Ok(());
    }
    let mut info_hash = ctx.info_hash;
    if ctx.behaviour == Behaviour::WrongInfoHash {
        info_hash.0[0] ^= 1;
    }
    let ours = Handshake {
        reserved: Extensions {
            extended: false,
            fast: false,
            dht: false,
        }
        .reserved(),
        info_hash,
        peer_id: PeerId::generate(),
    };
    stream.write_all(&ours.encode())?;
    let mut bits = bitfield(ctx);
    for i in 0..ctx.piece_count as usize {
        let hidden = match ctx.behaviour {
            Behaviour::HalfSeed => i >= ctx.piece_count as usize / 2,
            Behaviour::ThirdPerConnection => i as u32 % 3 != index % 3,
            _ => false,
        };
        if hidden {
            bits[i / 8] &= !(0x80 >> (i % 8));
        }
    }
    match ctx.behaviour {
        Behaviour::BitfieldTooLong => bits.push(0),
        Behaviour::BitfieldSpareBits => *bits.last_mut().unwrap() |= 0x01,
        _ => {}
    }
    send(&mut stream, &Message::Bitfield(&bits))?;
    match ctx.behaviour {
        Behaviour::HugeFrame => stream.write_all(&[0xff, 0xff, 0xff, 0xff, 7])?,
        Behaviour::HaveOutOfRange => {
            send(&mut stream, &Message::Have(PieceIndex(ctx.piece_count)))?
        }
        _ => {}
    }
    send(&mut stream, &Message::Unchoke)?;
    answer_requests(ctx, &mut stream, stop)
}

fn answer_requests(ctx: &Ctx, stream: &mut TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut served = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut requests = Vec::new();
        let mut used = 0;
        while let Ok(Some((m, len))) = decoder.decode(&buf[used..]) {
            if let Message::Request(b) = m {
                requests.push(b);
            }
            used += len;
        }
        buf.drain(..used);
        let trickle = ctx.behaviour == Behaviour::ReversedTrickle;
        if ctx.behaviour == Behaviour::Reversed || trickle {
            for piece in requests.chunk_by_mut(|a, b| a.piece == b.piece) {
                piece.reverse();
            }
        }
        stream.set_nodelay(trickle)?;
        for b in requests {
            answer(ctx, stream, b, served)?;
            served += 1;
            if trickle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(())
}

fn answer(ctx: &Ctx, stream: &mut TcpStream, b: BlockRef, served: u32) -> std::io::Result<()> {
    let start = b.piece.0 as usize * ctx.piece_len as usize + b.offset as usize;
    let mut data = ctx.data[start..start + b.len as usize].to_vec();
    let mut block = b;
    match ctx.behaviour {
        Behaviour::Corrupt => data.iter_mut().for_each(|x| *x = !*x),
        Behaviour::WrongLength => {
            data.pop();
        }
        Behaviour::Unrequested if served == 1 => {
            // Shifted by one byte: a block nobody could have requested.
            block.offset += 1;
            data.pop();
        }
        _ => {}
    }
    send(
        stream,
        &Message::Piece {
            piece: block.piece,
            offset: block.offset,
            data: &data,
        },
    )
}
