//! Unit tests for the torrent state machine, driven without sockets.
