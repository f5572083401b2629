//! The torrent's side of peer exchange (BEP 11): once a second, each peer that speaks
//! `ut_pex` gets the news about our other peers' listening addresses (at most once a
//! minute, see `crate::pex`); what peers tell us is checked, capped and kept for the
//! session to dial. Private torrents never get here: `pex` is off for them.

use super::{PeerKey, Torrent};
use crate::compact;
use crate::pex::{PexMessage, FLAG_REACHABLE, FLAG_SEED};
use crate::wire::Message;
use std::net::SocketAddr;
use std::time::Instant;

/// Addresses from peers kept for the session at once; more wait for the next message.
const MAX_FOUND: usize = 200;

impl Torrent {
    /// Takes the addresses peers told us about since the last call.
    pub fn take_pex_found(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.pex_found)
    }

    /// Reads a peer's `ut_pex` message: its added peers are kept to dial, unless the message
    /// came too soon after its last one, or names a seed while we are one too.
    pub(super) fn on_pex_message(&mut self, key: PeerKey, payload: &[u8], now: Instant) {
        if !self.pex {
            return;
        }
        let complete = self.is_complete();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.pex.accept_incoming(now) {
            tracing::debug!(addr = %p.addr, "PEX message too soon after the last; ignored");
            return;
        }
        let Some(msg) = PexMessage::parse(payload) else {
            tracing::debug!(addr = %p.addr, "malformed PEX message ignored");
            return;
        };
        for (addr, flags) in msg.added {
            if self.pex_found.len() >= MAX_FOUND {
                break;
            }
            let useless = complete && flags & FLAG_SEED != 0;
            if !useless && compact::dialable(&addr) && !self.is_banned(addr) {
                self.pex_found.push(addr);
                self.stats.peers_from_pex += 1;
            }
        }
    }

    /// Sends each peer that exchanges peers the news it is due.
    pub(super) fn send_pex(&mut self, now: Instant) {
        if !self.pex {
            return;
        }
        let current: Vec<(SocketAddr, u8)> = (self.peers.values())
            .filter_map(|p| {
                let addr = p.listening_addr()?;
                let seed = if p.is_seed() { FLAG_SEED } else { 0 };
                let reachable = if p.dialled_by_us { FLAG_REACHABLE } else { 0 };
                Some((addr, seed | reachable))
            })
            .collect();
        let remote: Vec<(SocketAddr, u8)> = (current.iter())
            .filter(|(addr, _)| !addr.ip().is_loopback())
            .copied()
            .collect();
        for p in self.peers.values_mut() {
            let Some(id) = p.pex_id else { continue };
            let recipient = p.listening_addr();
            // A loopback address (a web seed's bridge, a client on this host) means
            // something only to a peer on this host too.
            let news = if p.addr.ip().is_loopback() {
                &current
            } else {
                &remote
            };
            if let Some(msg) = p.pex.next_message(now, news, recipient) {
                let payload = msg.encode();
                p.outbox.send(&Message::Extended {
                    id,
                    payload: &payload,
                });
            }
        }
    }
}
