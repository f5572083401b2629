//! spate: a BitTorrent client built on io_uring.
//!
//! The crate is laid out in three rings (see DESIGN.md): a pure core that never touches a
//! socket, a file or a clock (`bencode`, `metainfo`, `magnet`, `layout`, ...), the I/O layer
//! (`storage`, `hash`), and the front (`cli`).

pub mod bencode;
pub mod layout;
pub mod metainfo;
pub mod types;
