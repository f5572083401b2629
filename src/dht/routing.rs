//! The routing table: the nodes we know, in 160 buckets by how many leading bits their id
//! shares with ours, at most `K` per bucket, so we know many nodes near us and a few far
//! away. A node that answers is kept fresh; one that fails three times in a row is dropped;
//! a full bucket takes a newcomer only in place of a node that has been failing. Pure.

use super::krpc::Contact;
use super::NodeId;
use std::time::Instant;

/// Nodes per bucket, and nodes a search keeps asking about (BEP 5's k).
pub const K: usize = 8;
/// Failures in a row after which a node is dropped.
const MAX_FAILURES: u8 = 3;

#[derive(Debug, Clone)]
struct Entry {
    contact: Contact,
    last_seen: Instant,
    failures: u8,
}

#[derive(Debug)]
pub struct RoutingTable {
    own: NodeId,
    buckets: Vec<Vec<Entry>>,
}

impl RoutingTable {
    pub fn new(own: NodeId) -> RoutingTable {
        RoutingTable {
            own,
            buckets: vec![Vec::new(); 160],
        }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bucket_of(&self, id: &NodeId) -> Option<usize> {
        let d = self.own.distance(id);
        let zeros = d.iter().position(|&b| b != 0)?;
        Some(zeros * 8 + d[zeros].leading_zeros() as usize)
    }

    /// A node was heard from (it answered, or it queried us): kept or added if there is room.
    pub fn heard_from(&mut self, contact: Contact, now: Instant) {
        let Some(b) = self.bucket_of(&contact.id) else {
            return; // our own id
        };
        let bucket = &mut self.buckets[b];
        if let Some(e) = bucket.iter_mut().find(|e| e.contact.id == contact.id) {
            e.contact.addr = contact.addr;
            e.last_seen = now;
            e.failures = 0;
            return;
        }
        let entry = Entry {
            contact,
            last_seen: now,
            failures: 0,
        };
        if bucket.len() < K {
            bucket.push(entry);
        } else if let Some(worst) = bucket
            .iter_mut()
            .filter(|e| e.failures > 0)
            .max_by_key(|e| e.failures)
        {
            *worst = entry;
        }
    }

    /// A query to the node with `id` went unanswered.
    pub fn failed(&mut self, id: &NodeId) {
        let Some(b) = self.bucket_of(id) else {
            return;
        };
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket.iter().position(|e| e.contact.id == *id) {
            bucket[i].failures += 1;
            if bucket[i].failures >= MAX_FAILURES {
                bucket.swap_remove(i);
            }
        }
    }

    /// Up to `n` known nodes closest to `target`, closest first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Contact> {
        let mut all: Vec<&Entry> = self.buckets.iter().flatten().collect();
        all.sort_by_key(|e| (e.failures > 0, target.distance(&e.contact.id)));
        all.into_iter().take(n).map(|e| e.contact).collect()
    }

    /// Nodes not heard from since `before`, to ping or refresh.
    pub fn stale(&self, before: Instant) -> Vec<Contact> {
        self.buckets
            .iter()
            .flatten()
            .filter(|e| e.last_seen < before)
            .map(|e| e.contact)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn contact(id: [u8; 20], port: u16) -> Contact {
        Contact {
            id: NodeId(id),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    #[test]
    fn keeps_at_most_k_per_bucket_and_replaces_failing_nodes() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]));
        // Ids with the top bit set all fall in bucket 0.
        let far = |i: u8| {
            let mut id = [0u8; 20];
            id[0] = 0x80;
            id[19] = i;
            contact(id, 1000 + u16::from(i))
        };
        for i in 0..20 {
            t.heard_from(far(i), now);
        }
        assert_eq!(t.len(), K);
        t.heard_from(contact([0; 20], 9), now);
        assert_eq!(t.len(), K, "our own id is never added");
        t.failed(&far(3).id);
        t.heard_from(far(30), now);
        let ids: Vec<_> = t
            .closest(&NodeId([0x80; 20]), 100)
            .iter()
            .map(|c| c.id)
            .collect();
        assert!(ids.contains(&far(30).id) && !ids.contains(&far(3).id));
        for _ in 0..MAX_FAILURES {
            t.failed(&far(0).id);
        }
        assert_eq!(t.len(), K - 1, "dropped after three failures");
    }

    #[test]
    fn closest_orders_by_xor_distance() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]));
        for b in [0x01u8, 0x10, 0x40, 0x80, 0xff] {
            t.heard_from(contact([b; 20], u16::from(b) + 1), now);
        }
        let got: Vec<u8> = t
            .closest(&NodeId([0x11; 20]), 3)
            .iter()
            .map(|c| c.id.0[0])
            .collect();
        assert_eq!(got, [0x10, 0x01, 0x40]);
    }
}
