//! One peer connection: the framing of received bytes (`inbox`), the queue of bytes to send
//! (`outbox`), reading the peer's handshake, plain or behind MSE (`handshake`), and the tasks that move bytes between them and the socket (`conn`). The
//! decisions (what to request, whom to unchoke) belong to `torrent`.

pub mod conn;
pub mod extended;
pub mod handshake;
pub mod inbox;
pub mod outbox;
