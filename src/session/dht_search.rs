//! The session's DHT task for one public torrent: search the DHT for its peers and announce
//! our port to the nodes closest to it, then again soon while nobody is found (5 s, doubling
//! up to 5 minutes, sooner when a small routing table gains nodes) and every 15 minutes
//! once peers were found (nodes forget a peer 30 minutes after its announce). Every peer
//! found goes to the peer source.

use super::peers::PeerSource;
use crate::dht::routing::K;
use crate::dht::Dht;
use crate::types::InfoHash;
use std::rc::Rc;
use std::time::Duration;

const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
const REANNOUNCE: Duration = Duration::from_secs(15 * 60);

/// Runs until aborted.
pub async fn search_loop(dht: Rc<Dht>, info_hash: InfoHash, port: u16, source: Rc<PeerSource>) {
    let mut retry = FIRST_RETRY;
    loop {
        let peers = dht.search(info_hash, Some(port)).await;
        let nodes = dht.nodes();
        tracing::debug!(%info_hash, peers = peers.len(), nodes, "DHT search");
        if peers.is_empty() {
            let wait = retry;
            retry = (retry * 2).min(MAX_RETRY);
            source.add(peers);
            wait_or_more_nodes(&dht, wait, nodes).await;
        } else {
            retry = FIRST_RETRY;
            source.add(peers);
            tokio::time::sleep(REANNOUNCE).await;
        }
    }
}

/// Sleeps `wait`, or less if the routing table had fewer than `K` nodes and gained some: in
/// a young or small DHT, a node that just appeared may be the one to announce to (or the
/// one that knows the peers).
async fn wait_or_more_nodes(dht: &Dht, wait: Duration, nodes: usize) {
    let step = Duration::from_millis(500);
    let mut waited = Duration::ZERO;
    while waited < wait {
        tokio::time::sleep(step).await;
        waited += step;
        if nodes < K && dht.nodes() > nodes {
            return;
        }
    }
}
