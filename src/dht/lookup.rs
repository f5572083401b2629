//! One iterative search of the DHT (BEP 5's `get_peers`, or `find_node` to fill the routing
//! table): ask the closest nodes known, at most `ALPHA` at a time, learn closer ones from
//! their answers, and stop when the `K` closest that answered have all been asked. Collects
//! the peers the nodes return and, for announcing, each answering node's token. Pure: the
//! node sends the queries and reports back.

use super::krpc::{Contact, Response};
use super::routing::K;
use super::NodeId;
use std::collections::HashSet;
use std::net::SocketAddr;

/// Queries in flight at once.
pub const ALPHA: usize = 3;
/// Candidates remembered, closest first.
const MAX_CANDIDATES: usize = 100;
/// Peers collected, at most.
const MAX_PEERS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Asked,
    Answered,
    Failed,
}

#[derive(Debug)]
struct Candidate {
    contact: Contact,
    state: State,
    token: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct Lookup {
    target: NodeId,
    /// Our own id: other nodes list us among their closest, and we never ask ourselves.
    own: NodeId,
    candidates: Vec<Candidate>,
    in_flight: usize,
    peers: Vec<SocketAddr>,
    seen_peers: HashSet<SocketAddr>,
}

impl Lookup {
    /// A search for `target` by the node `own`, starting from `start` (the routing table's
    /// closest nodes). A bootstrap node whose id is unknown can be given with the target as
    /// its id: it is then asked first, and its real id replaces it once it answers.
    pub fn new(target: NodeId, own: NodeId, start: Vec<Contact>) -> Lookup {
        let mut l = Lookup {
            target,
            own,
            candidates: Vec::new(),
            in_flight: 0,
            peers: Vec::new(),
            seen_peers: HashSet::new(),
        };
        l.add_contacts(&start);
        l
    }

    pub fn target(&self) -> NodeId {
        self.target
    }

    fn add_contacts(&mut self, contacts: &[Contact]) {
        for c in contacts {
            if self.candidates.iter().any(|k| k.contact.addr == c.addr) {
                continue;
            }
            self.candidates.push(Candidate {
                contact: *c,
                state: State::New,
                token: None,
            });
        }
        self.sort();
        // Forget the farthest that were never asked.
        while self.candidates.len() > MAX_CANDIDATES {
            match self.candidates.iter().rposition(|c| c.state == State::New) {
                Some(i) => {
                    self.candidates.remove(i);
                }
                None => break,
            }
        }
    }

    fn sort(&mut self) {
        let target = self.target;
        self.candidates
            .sort_by_key(|c| target.distance(&c.contact.id));
    }

    /// The next node to ask, if one is due and fewer than `ALPHA` queries are in flight.
    pub fn next_to_ask(&mut self) -> Option<Contact> {
        if self.in_flight >= ALPHA {
            return None;
        }
        let c = self
            .candidates
            .iter_mut()
            .filter(|c| c.state != State::Failed)
            .take(K)
            .find(|c| c.state == State::New)?;
        c.state = State::Asked;
        self.in_flight += 1;
        Some(c.contact)
    }

    fn asked(&mut self, addr: SocketAddr) -> Option<&mut Candidate> {
        self.candidates
            .iter_mut()
            .find(|c| c.contact.addr == addr && c.state == State::Asked)
    }

    /// The node at `addr` answered.
    pub fn answered(&mut self, addr: SocketAddr, r: &Response) {
        let own = self.own;
        let Some(c) = self.asked(addr) else {
            return;
        };
        if r.id == own {
            // We asked ourselves (a bootstrap address that was ours): not a node to use.
            c.state = State::Failed;
            self.in_flight -= 1;
            return;
        }
        c.state = State::Answered;
        c.contact.id = r.id;
        c.token.clone_from(&r.token);
        self.in_flight -= 1;
        for p in &r.values {
            if self.peers.len() < MAX_PEERS && self.seen_peers.insert(*p) {
                self.peers.push(*p);
            }
        }
        let others: Vec<Contact> = r.nodes.iter().filter(|n| n.id != own).copied().collect();
        self.add_contacts(&others);
    }

    /// The node at `addr` did not answer in time (or answered with an error).
    pub fn failed(&mut self, addr: SocketAddr) {
        if let Some(c) = self.asked(addr) {
            c.state = State::Failed;
            self.in_flight -= 1;
        }
    }

    /// Nothing in flight and nobody left to ask among the closest.
    pub fn is_done(&self) -> bool {
        self.in_flight == 0
            && !self
                .candidates
                .iter()
                .filter(|c| c.state != State::Failed)
                .take(K)
                .any(|c| c.state == State::New)
    }

    /// The peers the nodes returned, in the order they came.
    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// The closest nodes that answered with a token: where to announce.
    pub fn announce_targets(&self) -> Vec<(Contact, Vec<u8>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered)
            .filter_map(|c| c.token.clone().map(|t| (c.contact, t)))
            .take(K)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn contact(id: u8, port: u16) -> Contact {
        Contact {
            id: NodeId([id; 20]),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    /// A simulated network: node i knows the nodes in `links[i]`; node 9 has the peer.
    #[test]
    fn walks_toward_the_target_and_collects_peers_and_tokens() {
        let target = NodeId([0x0f; 20]);
        let ids = [0xf0u8, 0x80, 0x40, 0x20, 0x10, 0x08, 0x0e, 0x0f];
        let knows = |id: u8| -> Vec<Contact> {
            // Every node knows the two next closer ones.
            let i = ids.iter().position(|&x| x == id).unwrap();
            ids[i + 1..]
                .iter()
                .take(2)
                .map(|&x| contact(x, u16::from(x)))
                .collect()
        };
        let mut l = Lookup::new(target, NodeId([0xaa; 20]), vec![contact(0xf0, 0xf0)]);
        let mut asked = Vec::new();
        while !l.is_done() {
            let mut batch = Vec::new();
            while let Some(c) = l.next_to_ask() {
                batch.push(c);
            }
            assert!(batch.len() <= ALPHA);
            for c in batch {
                asked.push(c.id.0[0]);
                let r = Response {
                    id: c.id,
                    nodes: knows(c.id.0[0]),
                    values: if c.id.0[0] == 0x0f {
                        vec![SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 6881))]
                    } else {
                        vec![]
                    },
                    token: Some(vec![c.id.0[0]]),
                };
                if c.id.0[0] == 0x40 {
                    l.failed(c.addr);
                } else {
                    l.answered(c.addr, &r);
                }
            }
        }
        assert!(asked.contains(&0x0f), "reached the closest node: {asked:?}");
        assert_eq!(l.peers().len(), 1);
        let targets = l.announce_targets();
        assert_eq!(targets[0].0.id, target, "the closest answering node first");
        assert!(
            targets.iter().all(|(c, _)| c.id.0[0] != 0x40),
            "failed nodes get no announce"
        );
    }

    #[test]
    fn a_bootstrap_node_with_an_unknown_id_is_asked_first_and_renamed() {
        let target = NodeId([1; 20]);
        let boot = Contact {
            id: target,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7)),
        };
        let own = NodeId([0x33; 20]);
        let mut l = Lookup::new(target, own, vec![contact(0x80, 1), boot]);
        assert_eq!(l.next_to_ask().unwrap().addr.port(), 7);
        // It lists us among its closest nodes: we never ask ourselves.
        let r = Response {
            id: NodeId([0xff; 20]),
            nodes: vec![contact(0x33, 3)],
            ..Response::default()
        };
        l.answered(boot.addr, &r);
        assert_eq!(l.next_to_ask().unwrap().addr.port(), 1, "never ourselves");
        // An answer from a node never asked changes nothing.
        l.answered(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 99)),
            &Response::default(),
        );
        l.failed(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)));
        assert!(l.is_done());
    }
}
