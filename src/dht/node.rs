//! A DHT node: answers other nodes' queries (from the routing table, the peer store and
//! the tokens), sends ours with a two-second timeout each, bootstraps from the configured
//! nodes and keeps the table filled, and runs searches (`search`): find the peers of an
//! info-hash and, given a port, announce ourselves to the nodes closest to it. As BEP 32
//! has it, IPv4 and IPv6 are two DHTs: a node listening on every address runs one on an
//! IPv4 socket and one on an IPv6-only socket of the same port, each with its own routing
//! table and peer store, and a search asks both. Answers are sent within a byte budget per
//! second, so spoofed queries cannot turn us into an amplifier. Runs on the session's
//! thread; dropping the `Dht` stops its tasks.

use super::krpc::{self, Body, Contact, Krpc, Query, Response};
use super::lookup::Lookup;
use super::routing::{RoutingTable, K};
use super::store::{PeerStore, Tokens};
use super::NodeId;
use crate::types::InfoHash;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// How long a query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the table is refilled from the bootstrap nodes while it is small.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Bytes of answers sent per second, at most (per address family).
const ANSWER_BUDGET: usize = 64 << 10;
/// The nodes libtorrent and Transmission bootstrap from, used when none are given.
pub const PUBLIC_BOOTSTRAP: [&str; 3] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
];

/// Where the node listens and whom it asks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtConfig {
    /// The address to bind, port 0 picking one. The unspecified IPv6 address (a session
    /// listening on every address) gives an IPv4 node on 0.0.0.0 and, where the host has
    /// IPv6, an IPv6 node on [::], same port; any other address one node of its family.
    pub bind: SocketAddr,
    /// host:port of the nodes to bootstrap from (each node takes those of its family).
    pub bootstrap: Vec<String>,
}

struct State {
    table: RoutingTable,
    tokens: Tokens,
    store: PeerStore,
    next_tid: u16,
    /// Answer bytes left this second, and when the second began.
    budget: (usize, Instant),
}

/// The node of one address family.
struct Inner {
    socket: UdpSocket,
    /// The family of `socket`: only nodes of it are asked or kept.
    v6: bool,
    state: RefCell<State>,
    pending: RefCell<HashMap<u16, (SocketAddr, oneshot::Sender<Response>)>>,
    bootstrap: RefCell<Vec<SocketAddr>>,
}

/// A running DHT node (one per address family underneath).
pub struct Dht {
    /// The IPv4 node first, when there is one.
    families: Vec<Rc<Inner>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Dht {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Dht {
    /// Binds the socket(s) and starts answering, bootstrapping and refreshing. Must run
    /// inside the tokio-uring runtime.
    pub fn start(config: &DhtConfig) -> std::io::Result<Dht> {
        let own = NodeId::random();
        // Addresses are usable at once; host names are resolved by the maintenance tasks.
        let (mut literal, mut names) = (Vec::new(), Vec::new());
        for b in &config.bootstrap {
            match b.parse::<SocketAddr>() {
                Ok(addr) => literal.push(addr),
                Err(_) => names.push(b.clone()),
            }
        }
        let mut dht = Dht {
            families: Vec::new(),
            tasks: Vec::new(),
        };
        for socket in bind_sockets(config.bind)? {
            let inner = Rc::new(Inner::new(UdpSocket::from_std(socket)?, own)?);
            inner.bootstrap.borrow_mut().extend(
                literal
                    .iter()
                    .filter(|a| inner.same_family(a) && krpc::usable(a)),
            );
            dht.tasks
                .push(tokio_uring::spawn(receive_loop(Rc::clone(&inner))));
            dht.tasks.push(tokio_uring::spawn(maintain(
                Rc::clone(&inner),
                names.clone(),
            )));
            dht.families.push(inner);
        }
        Ok(dht)
    }

    /// The address of the first node (the IPv4 one, if any); the others share its port.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.families[0].socket.local_addr()
    }

    /// Nodes in the routing tables.
    pub fn nodes(&self) -> usize {
        self.families
            .iter()
            .map(|f| f.state.borrow().table.len())
            .sum()
    }

    /// The addresses of up to `n` nodes of the routing tables, closest to us first, shared
    /// between the families: worth saving, to join through them next time.
    pub fn known_nodes(&self, n: usize) -> Vec<SocketAddr> {
        let each = n.div_ceil(self.families.len().max(1));
        let mut out: Vec<SocketAddr> = self
            .families
            .iter()
            .flat_map(|f| {
                let s = f.state.borrow();
                let closest = s.table.closest(&s.table.own_id(), each);
                closest.into_iter().map(|c| c.addr)
            })
            .collect();
        out.truncate(n);
        out
    }

    /// Finds peers of `info_hash` (those announced to us included) and, with a port,
    /// announces that we have it on that port to the closest nodes that gave us a token;
    /// in both families at once.
    pub async fn search(&self, info_hash: InfoHash, announce_port: Option<u16>) -> Vec<SocketAddr> {
        let searches = self
            .families
            .iter()
            .map(|f| Rc::clone(f).search(info_hash, announce_port));
        let mut peers = Vec::new();
        for found in futures_util::future::join_all(searches).await {
            extend_unique(&mut peers, found);
        }
        peers
    }
}

/// Appends the addresses of `more` that `peers` does not hold yet, in order.
fn extend_unique(peers: &mut Vec<SocketAddr>, more: impl IntoIterator<Item = SocketAddr>) {
    for p in more {
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
}

/// The sockets of a node bound to `bind` (see `DhtConfig::bind`). A host without IPv6
/// costs the IPv6 node only.
fn bind_sockets(bind: SocketAddr) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let everywhere = matches!(bind, SocketAddr::V6(v6) if v6.ip().is_unspecified());
    if !everywhere {
        return Ok(vec![crate::net::bind_udp_one_family(bind)?]);
    }
    let v4 =
        crate::net::bind_udp_one_family(SocketAddr::from((Ipv4Addr::UNSPECIFIED, bind.port())))?;
    let port = v4.local_addr()?.port();
    let mut sockets = vec![v4];
    match crate::net::bind_udp_one_family(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(socket) => sockets.push(socket),
        Err(e) => tracing::debug!(port, error = %e, "no IPv6 DHT node"),
    }
    Ok(sockets)
}

impl Inner {
    fn new(socket: UdpSocket, own: NodeId) -> std::io::Result<Inner> {
        let now = Instant::now();
        Ok(Inner {
            v6: socket.local_addr()?.is_ipv6(),
            socket,
            state: RefCell::new(State {
                table: RoutingTable::new(own),
                tokens: Tokens::new(now),
                store: PeerStore::default(),
                next_tid: rand::random(),
                budget: (ANSWER_BUDGET, now),
            }),
            pending: RefCell::new(HashMap::new()),
            bootstrap: RefCell::new(Vec::new()),
        })
    }

    fn own_id(&self) -> NodeId {
        self.state.borrow().table.own_id()
    }

    /// Whether `addr` is of this node's family (the only ones its socket reaches).
    fn same_family(&self, addr: &SocketAddr) -> bool {
        addr.is_ipv6() == self.v6
    }

    /// `Dht::search` in this family.
    async fn search(
        self: Rc<Self>,
        info_hash: InfoHash,
        announce_port: Option<u16>,
    ) -> Vec<SocketAddr> {
        let lookup = self.lookup(NodeId::from(info_hash), Some(info_hash)).await;
        if let Some(port) = announce_port {
            let announces = lookup.announce_targets().into_iter().map(|(c, token)| {
                let query = Query::AnnouncePeer {
                    info_hash,
                    port,
                    implied_port: false,
                    token,
                };
                let inner = Rc::clone(&self);
                async move { inner.query(c.addr, query).await }
            });
            futures_util::future::join_all(announces).await;
        }
        let mut peers = lookup.peers().to_vec();
        let stored = self.state.borrow().store.peers(&info_hash, Instant::now());
        extend_unique(&mut peers, stored);
        peers
    }

    /// Sends `query` to `addr` and waits for the answer; None on timeout or error.
    async fn query(&self, addr: SocketAddr, query: Query) -> Option<Response> {
        let tid = {
            let mut s = self.state.borrow_mut();
            s.next_tid = s.next_tid.wrapping_add(1);
            s.next_tid
        };
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(tid, (addr, tx));
        let message = Krpc {
            tid: tid.to_be_bytes().to_vec(),
            body: Body::Query {
                id: self.own_id(),
                query,
            },
        };
        let sent = self.socket.send_to(&message.encode(), addr).await.is_ok();
        let answer = if sent {
            tokio::time::timeout(QUERY_TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.pending.borrow_mut().remove(&tid);
        answer
    }

    /// An iterative search for `target`: `get_peers` when an info-hash is given, else
    /// `find_node`. Starts from the table's closest nodes and, while the table is small,
    /// the bootstrap nodes.
    async fn lookup(self: &Rc<Self>, target: NodeId, info_hash: Option<InfoHash>) -> Lookup {
        let mut start = self.state.borrow().table.closest(&target, K);
        if start.len() < K {
            let boot = self.bootstrap.borrow().clone();
            start.extend(boot.into_iter().map(|addr| Contact { id: target, addr }));
        }
        let mut lookup = Lookup::new(target, self.own_id(), start);
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        loop {
            while let Some(c) = lookup.next_to_ask() {
                let query = match info_hash {
                    Some(info_hash) => Query::GetPeers { info_hash },
                    None => Query::FindNode { target },
                };
                let inner = Rc::clone(self);
                in_flight.push(async move { (c, inner.query(c.addr, query).await) });
            }
            use futures_util::StreamExt;
            let Some((c, answer)) = in_flight.next().await else {
                break;
            };
            match answer {
                Some(mut r) => {
                    // A node may list both families; this socket reaches only its own.
                    r.nodes.retain(|n| self.same_family(&n.addr));
                    lookup.answered(c.addr, &r);
                }
                None => {
                    lookup.failed(c.addr);
                    self.state.borrow_mut().table.failed(&c.id);
                }
            }
            if lookup.is_done() {
                break;
            }
        }
        lookup
    }

    /// Answers a query from `from`; returns the reply datagram, if any.
    fn answer(&self, tid: Vec<u8>, from: SocketAddr, id: NodeId, query: Query) -> Vec<u8> {
        let now = Instant::now();
        let mut s = self.state.borrow_mut();
        s.table.heard_from(Contact { id, addr: from }, now);
        let own = s.table.own_id();
        let body = match query {
            Query::Ping => Body::Response(Response {
                id: own,
                ..Response::default()
            }),
            Query::FindNode { target } => Body::Response(Response {
                id: own,
                nodes: s.table.closest(&target, K),
                ..Response::default()
            }),
            Query::GetPeers { info_hash } => Body::Response(Response {
                id: own,
                nodes: s.table.closest(&NodeId::from(info_hash), K),
                values: s.store.peers(&info_hash, now),
                token: Some(s.tokens.issue(from.ip(), now)),
            }),
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if s.tokens.accepts(from.ip(), &token, now) {
                    let port = if implied_port { from.port() } else { port };
                    let peer = SocketAddr::new(from.ip(), port);
                    if krpc::usable(&peer) {
                        s.store.add(info_hash, peer, now);
                    }
                    Body::Response(Response {
                        id: own,
                        ..Response::default()
                    })
                } else {
                    Body::Error {
                        code: 203,
                        message: "bad token".into(),
                    }
                }
            }
        };
        Krpc { tid, body }.encode()
    }

    /// Spends `bytes` of this second's answer budget; false when it is spent.
    fn spend(&self, bytes: usize) -> bool {
        let mut s = self.state.borrow_mut();
        let now = Instant::now();
        if now.duration_since(s.budget.1) >= Duration::from_secs(1) {
            s.budget = (ANSWER_BUDGET, now);
        }
        if s.budget.0 < bytes {
            return false;
        }
        s.budget.0 -= bytes;
        true
    }
}

/// Receives datagrams until the node is dropped: answers queries, hands answers to the
/// queries waiting for them (only from the address asked).
async fn receive_loop(inner: Rc<Inner>) {
    let mut buf = vec![0u8; krpc::MAX_PACKET + 1];
    loop {
        let (n, from) = match inner.socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // An ICMP error from an earlier send, usually; never spin on a failing socket.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !inner.same_family(&from) || !krpc::usable(&from) {
            continue;
        }
        let Ok(message) = Krpc::parse(&buf[..n]) else {
            continue;
        };
        match message.body {
            Body::Query { id, query } => {
                let reply = inner.answer(message.tid, from, id, query);
                if inner.spend(reply.len()) {
                    let _ = inner.socket.send_to(&reply, from).await;
                }
            }
            Body::Response(r) => {
                let Ok(tid) = <[u8; 2]>::try_from(message.tid.as_slice()) else {
                    continue;
                };
                let tid = u16::from_be_bytes(tid);
                let waiting = inner.pending.borrow().get(&tid).map(|(addr, _)| *addr);
                if waiting != Some(from) {
                    continue;
                }
                let (_, tx) = inner
                    .pending
                    .borrow_mut()
                    .remove(&tid)
                    .expect("checked above");
                inner.state.borrow_mut().table.heard_from(
                    Contact {
                        id: r.id,
                        addr: from,
                    },
                    Instant::now(),
                );
                let _ = tx.send(r);
            }
            Body::Error { .. } => {}
        }
    }
}

/// Resolves the bootstrap nodes given by name, then fills the table (a search for our own id) now and
/// whenever it has fewer than `K` nodes, checking every `REFRESH_EVERY`.
async fn maintain(inner: Rc<Inner>, bootstrap: Vec<String>) {
    let resolved = tokio::task::spawn_blocking(move || {
        // Names only: nothing is looked up when every node was given as an address.
        let mut out = Vec::new();
        for host in bootstrap {
            match host.to_socket_addrs() {
                Ok(addrs) => out.extend(addrs),
                Err(e) => tracing::debug!(%host, error = %e, "DHT bootstrap node not resolved"),
            }
        }
        out
    })
    .await
    .unwrap_or_default();
    inner.bootstrap.borrow_mut().extend(
        resolved
            .into_iter()
            .filter(|a| inner.same_family(a) && krpc::usable(a)),
    );
    loop {
        if inner.state.borrow().table.len() < K {
            let own = inner.own_id();
            inner.lookup(own, None).await;
            tracing::debug!(nodes = inner.state.borrow().table.len(), "DHT bootstrapped");
        }
        tokio::time::sleep(REFRESH_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(bootstrap: &[&Dht]) -> Dht {
        let bootstrap = bootstrap
            .iter()
            .map(|d| d.local_addr().unwrap().to_string())
            .collect();
        node_on("127.0.0.1:0", bootstrap)
    }

    fn node_on(bind: &str, bootstrap: Vec<String>) -> Dht {
        let config = DhtConfig {
            bind: bind.parse().unwrap(),
            bootstrap,
        };
        Dht::start(&config).unwrap()
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never met");
    }

    /// Three nodes on loopback: one announces an info-hash through the first, a third finds
    /// it there; a forged announce is refused.
    #[test]
    fn a_peer_announced_by_one_node_is_found_by_another() {
        crate::runtime::start(async {
            let router = node(&[]);
            let seeder = node(&[&router]);
            let leecher = node(&[&router]);
            until(|| seeder.nodes() >= 1 && leecher.nodes() >= 1).await;
            let info_hash = InfoHash([0x42; 20]);
            let first = seeder.search(info_hash, Some(5555)).await;
            assert!(first.is_empty(), "{first:?}");
            let found = leecher.search(info_hash, None).await;
            assert_eq!(found, ["127.0.0.1:5555".parse::<SocketAddr>().unwrap()]);
            // An announce with a token the router never gave is refused.
            let forged = Query::AnnouncePeer {
                info_hash: InfoHash([0x43; 20]),
                port: 7777,
                implied_port: false,
                token: b"forged".to_vec(),
            };
            let router_addr = router.local_addr().unwrap();
            assert!(leecher.families[0]
                .query(router_addr, forged)
                .await
                .is_none());
            assert!(leecher.search(InfoHash([0x43; 20]), None).await.is_empty());
        });
    }

    /// BEP 32: a node listening on every address runs an IPv4 and an IPv6 DHT on one port.
    /// IPv6 nodes that join through it find each other's peers over IPv6, IPv4 nodes over
    /// IPv4, and each family's table holds only its own nodes.
    #[test]
    fn a_node_on_every_address_serves_both_families() {
        crate::runtime::start(async {
            let router = node_on("[::]:0", Vec::new());
            assert_eq!(router.families.len(), 2, "an IPv4 and an IPv6 node");
            let port = router.local_addr().unwrap().port();
            assert_eq!(router.families[1].socket.local_addr().unwrap().port(), port);
            let via6 = || node_on("[::1]:0", vec![format!("[::1]:{port}")]);
            let via4 = || node_on("127.0.0.1:0", vec![format!("127.0.0.1:{port}")]);
            let (seeder6, leecher6, seeder4, leecher4) = (via6(), via6(), via4(), via4());
            until(|| {
                [&seeder6, &leecher6, &seeder4, &leecher4]
                    .iter()
                    .all(|d| d.nodes() >= 1)
            })
            .await;
            let (h6, h4) = (InfoHash([6; 20]), InfoHash([4; 20]));
            seeder6.search(h6, Some(5556)).await;
            seeder4.search(h4, Some(5554)).await;
            let want6 = "[::1]:5556".parse::<SocketAddr>().unwrap();
            let want4 = "127.0.0.1:5554".parse::<SocketAddr>().unwrap();
            assert_eq!(leecher6.search(h6, None).await, [want6]);
            assert_eq!(leecher4.search(h4, None).await, [want4]);
            assert!(
                leecher6.search(h4, None).await.is_empty(),
                "IPv4 peers stay in IPv4"
            );
            // The router found each of them itself, in both families at once.
            assert_eq!(router.search(h6, None).await, [want6]);
            let known = router.known_nodes(64);
            assert!(known.iter().any(SocketAddr::is_ipv4) && known.iter().any(SocketAddr::is_ipv6));
            for f in &router.families {
                let table = f.state.borrow().table.closest(&NodeId::default(), 64);
                assert!(table.iter().all(|c| f.same_family(&c.addr)), "{table:?}");
            }
        });
    }
}
