//! One peer connection: the framing of received bytes (`inbox`), the queue of bytes to send
//! (`outbox`), and the tasks that move bytes between them and the socket (`conn`). The
//! decisions (what to request, whom to unchoke) belong to `torrent`.

pub mod conn;
pub mod extended;
pub mod inbox;
pub mod outbox;
