//! Peer exchange (BEP 11): `ut_pex` messages tell a connected peer which peers we are
//! connected to, as that set changes, so a swarm stays connected when its tracker is slow,
//! down or gone. Pure: `PexMessage` reads a peer's message (bounded, from untrusted bytes)
//! and writes ours; `PexLog` remembers, for one connection, what that peer has been told
//! and when, and makes the next message from the current set of peers.

use crate::compact;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Peers one message we send adds (or drops) at most, as libtorrent sends; the rest of a
/// larger change goes in the next message.
pub const MAX_SENT_PER_MESSAGE: usize = 50;
/// Peers we take from one message a peer sends, added and dropped each; the rest is ignored.
pub const MAX_READ_PER_MESSAGE: usize = 100;
/// A peer gets a message from us at most this often (BEP 11: at most once a minute).
pub const INTERVAL: Duration = Duration::from_secs(60);
/// A peer's messages closer together than this are ignored: a peer cannot make us dial
/// faster by sending more often. Shorter than `INTERVAL`, for timers that run early.
pub const MIN_RECEIVE_GAP: Duration = Duration::from_secs(45);

/// `added.f` bit: the peer is a seed (BEP 11).
pub const FLAG_SEED: u8 = 0x02;
/// `added.f` bit: we dialled the peer, so it accepts connections.
pub const FLAG_REACHABLE: u8 = 0x10;

/// One `ut_pex` message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers the sender is newly connected to, each with its `added.f` flags (0 if the
    /// sender gave none).
    pub added: Vec<(SocketAddr, u8)>,
    /// Peers the sender is no longer connected to.
    pub dropped: Vec<SocketAddr>,
}

impl PexMessage {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty()
    }

    /// Reads a `ut_pex` payload: None unless it is one bencoded dictionary whose address
    /// lists (`added`, `added6`, `dropped`, `dropped6`, each optional) are whole compact
    /// entries. At most `MAX_READ_PER_MESSAGE` added and as many dropped peers are kept;
    /// flags missing or short count as 0.
    pub fn parse(payload: &[u8]) -> Option<PexMessage> {
        crate::bencode::validate(payload).ok()?;
        if payload.first() != Some(&b'd') {
            return None;
        }
        let list = |key: &[u8], ipv6: bool, out: &mut Vec<SocketAddr>| {
            let bytes = crate::bencode::dict_bytes(payload, key).unwrap_or_default();
            compact::read_into(bytes, ipv6, MAX_READ_PER_MESSAGE, out).ok()
        };
        let mut msg = PexMessage::default();
        for (key, flags_key, ipv6) in [
            (&b"added"[..], &b"added.f"[..], false),
            (b"added6", b"added6.f", true),
        ] {
            let raw = crate::bencode::dict_bytes(payload, key).unwrap_or_default();
            let size = if ipv6 {
                compact::V6_LEN
            } else {
                compact::V4_LEN
            };
            if !raw.len().is_multiple_of(size) {
                return None;
            }
            // One flags byte per entry; flags of another length are ignored, not misread.
            let flags = crate::bencode::dict_bytes(payload, flags_key)
                .filter(|f| f.len() == raw.len() / size)
                .unwrap_or_default();
            for (i, entry) in raw.chunks_exact(size).enumerate() {
                if msg.added.len() == MAX_READ_PER_MESSAGE {
                    break;
                }
                let mut one = Vec::with_capacity(1);
                compact::read_into(entry, ipv6, 1, &mut one).ok()?;
                if let Some(addr) = one.pop() {
                    msg.added.push((addr, flags.get(i).copied().unwrap_or(0)));
                }
            }
        }
        list(b"dropped", false, &mut msg.dropped)?;
        list(b"dropped6", true, &mut msg.dropped)?;
        Some(msg)
    }

    /// The bencoded payload: `added`, `added.f`, `added6`, `added6.f`, `dropped`,
    /// `dropped6`, in that (sorted) order, every key present.
    pub fn encode(&self) -> Vec<u8> {
        let (mut added, mut added_f, mut added6, mut added6_f) = (vec![], vec![], vec![], vec![]);
        for &(addr, flags) in &self.added {
            if addr.is_ipv4() {
                compact::put(&mut added, addr);
                added_f.push(flags);
            } else {
                compact::put(&mut added6, addr);
                added6_f.push(flags);
            }
        }
        let (mut dropped, mut dropped6) = (vec![], vec![]);
        for &addr in &self.dropped {
            compact::put(
                if addr.is_ipv4() {
                    &mut dropped
                } else {
                    &mut dropped6
                },
                addr,
            );
        }
        let mut out = b"d".to_vec();
        for (key, value) in [
            ("added", added),
            ("added.f", added_f),
            ("added6", added6),
            ("added6.f", added6_f),
            ("dropped", dropped),
            ("dropped6", dropped6),
        ] {
            out.extend_from_slice(format!("{}:{key}{}:", key.len(), value.len()).as_bytes());
            out.extend_from_slice(&value);
        }
        out.push(b'e');
        out
    }
}

/// Peer exchange with one connected peer: what it has been told, when it may be told
/// more, and when it last told us something we used.
#[derive(Debug, Default)]
pub struct PexLog {
    told: HashSet<SocketAddr>,
    next_send_at: Option<Instant>,
    last_used_at: Option<Instant>,
}

impl PexLog {
    /// The message to send this peer now, if one is due and there is news: peers of
    /// `current` (our connected peers' listening addresses with their flags, except the
    /// `recipient` itself) it was not told of, and peers it was told of that are gone.
    /// The first message goes out at the first call; then one per `INTERVAL` at most.
    pub fn next_message(
        &mut self,
        now: Instant,
        current: &[(SocketAddr, u8)],
        recipient: Option<SocketAddr>,
    ) -> Option<PexMessage> {
        if self.next_send_at.is_some_and(|at| now < at) {
            return None;
        }
        let mut msg = PexMessage::default();
        for &(addr, flags) in current {
            if msg.added.len() == MAX_SENT_PER_MESSAGE {
                break;
            }
            if Some(addr) != recipient && !self.told.contains(&addr) {
                msg.added.push((addr, flags));
            }
        }
        let still: HashSet<SocketAddr> = current.iter().map(|&(a, _)| a).collect();
        msg.dropped = (self.told.iter())
            .filter(|a| !still.contains(a))
            .take(MAX_SENT_PER_MESSAGE)
            .copied()
            .collect();
        if msg.is_empty() {
            return None;
        }
        self.told.extend(msg.added.iter().map(|&(a, _)| a));
        for gone in &msg.dropped {
            self.told.remove(gone);
        }
        self.next_send_at = Some(now + INTERVAL);
        Some(msg)
    }

    /// Whether a message from the peer that arrived at `now` is to be used: not sooner
    /// than `MIN_RECEIVE_GAP` after the last one used.
    pub fn accept_incoming(&mut self, now: Instant) -> bool {
        if self
            .last_used_at
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_RECEIVE_GAP)
        {
            return false;
        }
        self.last_used_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn encodes_and_parses_both_families_with_flags() {
        let msg = PexMessage {
            added: vec![
                (addr("10.0.0.1:6881"), FLAG_SEED),
                (addr("[2001:db8::1]:7000"), FLAG_REACHABLE),
                (addr("10.0.0.2:6882"), 0),
            ],
            dropped: vec![addr("10.0.0.9:1"), addr("[2001:db8::9]:2")],
        };
        let bytes = msg.encode();
        crate::bencode::validate(&bytes).unwrap();
        let back = PexMessage::parse(&bytes).unwrap();
        assert_eq!(
            back.added,
            [
                (addr("10.0.0.1:6881"), FLAG_SEED),
                (addr("10.0.0.2:6882"), 0),
                (addr("[2001:db8::1]:7000"), FLAG_REACHABLE)
            ],
            "IPv4 first, flags kept"
        );
        assert_eq!(back.dropped, msg.dropped);
        assert_eq!(
            PexMessage::default().encode(),
            b"d5:added0:7:added.f0:6:added60:8:added6.f0:7:dropped0:8:dropped60:e"
        );
    }

    #[test]
    fn reads_what_libtorrent_sends_and_rejects_garbage() {
        // libtorrent's form: flags present, no IPv6 lists.
        let lt = b"d5:added12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe27:added.f2:\x10\x027:dropped0:e";
        let m = PexMessage::parse(lt).unwrap();
        assert_eq!(
            m.added,
            [
                (addr("127.0.0.1:6881"), FLAG_REACHABLE),
                (addr("127.0.0.2:6882"), FLAG_SEED)
            ]
        );
        // Flags that do not line up are dropped, not misread.
        let short_flags =
            b"d5:added12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe27:added.f1:\x02e";
        assert!(PexMessage::parse(short_flags)
            .unwrap()
            .added
            .iter()
            .all(|&(_, f)| f == 0));
        assert_eq!(PexMessage::parse(b"de"), Some(PexMessage::default()));
        for bad in [
            &b"garbage"[..],
            b"le",
            b"d5:added5:abcdee",
            b"d7:dropped7:abcdefge",
            b"d5:added6:abcdef",
        ] {
            assert_eq!(PexMessage::parse(bad), None, "{bad:?}");
        }
        // A list of another type is read as empty, not trusted.
        assert_eq!(
            PexMessage::parse(b"d5:addedi3ee"),
            Some(PexMessage::default())
        );
    }

    #[test]
    fn a_huge_message_is_cut_to_the_cap() {
        let many: Vec<(SocketAddr, u8)> = (0..1000u16)
            .map(|i| {
                (
                    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000 + i)),
                    0,
                )
            })
            .collect();
        let bytes = PexMessage {
            added: many,
            dropped: vec![],
        }
        .encode();
        assert_eq!(
            PexMessage::parse(&bytes).unwrap().added.len(),
            MAX_READ_PER_MESSAGE
        );
    }

    #[test]
    fn a_log_sends_news_once_a_minute_and_never_the_recipient_itself() {
        let t0 = Instant::now();
        let (a, b, c, me) = (
            addr("127.0.0.1:1"),
            addr("127.0.0.1:2"),
            addr("127.0.0.1:3"),
            addr("127.0.0.1:9"),
        );
        let mut log = PexLog::default();
        assert_eq!(
            log.next_message(t0, &[(me, 0)], Some(me)),
            None,
            "nothing to say"
        );
        let first = log.next_message(t0, &[(a, 0), (b, FLAG_SEED), (me, 0)], Some(me));
        assert_eq!(first.unwrap().added, [(a, 0), (b, FLAG_SEED)]);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(
            log.next_message(later, &[(a, 0), (c, 0)], Some(me)),
            None,
            "too soon"
        );
        let due = t0 + INTERVAL;
        let news = log.next_message(due, &[(a, 0), (c, 0)], Some(me)).unwrap();
        assert_eq!(news.added, [(c, 0)]);
        assert_eq!(news.dropped, [b]);
        let quiet = due + INTERVAL;
        assert_eq!(
            log.next_message(quiet, &[(a, 0), (c, 0)], Some(me)),
            None,
            "no news"
        );
    }

    #[test]
    fn a_big_change_goes_out_over_several_messages() {
        let t0 = Instant::now();
        let many: Vec<(SocketAddr, u8)> = (1..=120u16)
            .map(|p| (SocketAddr::from(([127, 0, 0, 1], p)), 0))
            .collect();
        let mut log = PexLog::default();
        let mut seen = HashSet::new();
        for i in 0..3 {
            let at = t0 + INTERVAL * i;
            let msg = log.next_message(at, &many, None).unwrap();
            assert!(msg.added.len() <= MAX_SENT_PER_MESSAGE);
            seen.extend(msg.added.into_iter().map(|(a, _)| a));
        }
        assert_eq!(seen.len(), 120);
    }

    #[test]
    fn a_peer_sending_too_often_is_ignored_until_the_gap_passes() {
        let t0 = Instant::now();
        let mut log = PexLog::default();
        assert!(log.accept_incoming(t0));
        assert!(!log.accept_incoming(t0 + Duration::from_secs(10)));
        assert!(log.accept_incoming(t0 + MIN_RECEIVE_GAP));
    }
}
