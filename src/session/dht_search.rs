//! The session's DHT task for one public torrent: search the DHT for its peers and announce
//! our port to the nodes closest to it, then again soon while nobody is found (5 s, doubling
//! up to 5 minutes) and every 15 minutes once peers were found (nodes forget a peer 30
//! minutes after its announce). Every peer found goes to the peer source.

use super::peers::PeerSource;
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
        tracing::debug!(%info_hash, peers = peers.len(), nodes = dht.nodes(), "DHT search");
        let wait = if peers.is_empty() {
            let wait = retry;
            retry = (retry * 2).min(MAX_RETRY);
            wait
        } else {
            retry = FIRST_RETRY;
            REANNOUNCE
        };
        source.add(peers);
        tokio::time::sleep(wait).await;
    }
}
