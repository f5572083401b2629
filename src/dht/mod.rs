//! The mainline DHT (BEP 5): a Kademlia node over UDP that finds peers for an info-hash
//! without a tracker and tells the network where we are. The pure parts are the wire format
//! (`krpc`), the routing table (`routing`), what we hold for other nodes (`store`: peers
//! announced to us and the tokens that admit announces) and the iterative search (`lookup`);
//! `node` runs them over a socket per address family (IPv4, and IPv6 as BEP 32 has it).

pub mod krpc;
pub mod lookup;
pub mod node;
pub mod routing;
pub mod store;

pub use node::{Dht, DhtConfig};

/// A DHT node's id, or a target in the same 160-bit space (an info-hash).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    pub fn random() -> NodeId {
        NodeId(rand::random())
    }

    /// The XOR distance to `other`, comparable as bytes (big-endian).
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::types::hex(&self.0[..4]))?;
        f.write_str("..")
    }
}

impl From<crate::types::InfoHash> for NodeId {
    fn from(h: crate::types::InfoHash) -> NodeId {
        NodeId(h.0)
    }
}
