//! spate: a BitTorrent client built on io_uring.
//!
//! The crate is laid out in three rings (see DESIGN.md): a pure core that never touches a
//! socket, a file or a clock (`bencode`, `metainfo`, `magnet`, `layout`, ...), the I/O layer
//! (`storage`, `hash`, `announce`, `tracker_server`), and the front (`cli`).

pub mod announce;
pub mod bench;
pub mod bencode;
pub mod buffer;
pub mod check;
pub mod choker;
pub mod cli;
pub mod compact;
pub mod creator;
pub mod dht;
pub mod hash;
pub mod layout;
pub mod magnet;
pub mod metadata;
pub mod metainfo;
pub mod net;
pub mod peer;
pub mod pex;
pub mod picker;
pub mod ratelimit;
pub mod runtime;
pub mod selection;
pub mod session;
pub mod storage;
pub mod torrent;
pub mod tracker;
pub mod tracker_server;
pub mod types;
pub mod webseed;
pub mod wire;
