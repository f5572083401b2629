//! KRPC, the DHT's wire format (BEP 5): one bencoded dictionary per UDP datagram, a query
//! (`ping`, `find_node`, `get_peers`, `announce_peer`), its response, or an error. Both
//! address families (BEP 32): IPv4 nodes are 26-byte entries under `nodes`, IPv6 nodes 38-byte
//! entries under `nodes6`, peers 6 or 18 bytes. Pure; every field a remote node controls is
//! bounded before it is used.

use super::NodeId;
use crate::bencode;
use crate::compact;
use crate::types::InfoHash;
use serde_bencode::value::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Longest datagram read or accepted; real KRPC messages stay well under it.
pub const MAX_PACKET: usize = 2048;
/// Longest transaction id or token kept from a remote node.
const MAX_OPAQUE: usize = 64;
/// Most peers (`values`) taken from one response.
const MAX_VALUES: usize = 200;
/// Bytes of one compact node entry: id, IPv4 address, port.
const COMPACT_NODE: usize = 26;
/// Bytes of one compact IPv6 node entry (BEP 32): id, IPv6 address, port.
const COMPACT_NODE6: usize = 38;

/// A node of the DHT: its id and where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Krpc {
    /// The transaction id, echoed by the response.
    pub tid: Vec<u8>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A query from the node `id`.
    Query {
        id: NodeId,
        query: Query,
    },
    Response(Response),
    Error {
        code: i64,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping,
    FindNode {
        target: NodeId,
    },
    GetPeers {
        info_hash: InfoHash,
    },
    AnnouncePeer {
        info_hash: InfoHash,
        port: u16,
        /// Use the datagram's source port instead of `port` (BEP 5).
        implied_port: bool,
        token: Vec<u8>,
    },
}

/// What a response may carry; which fields are set depends on the query it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub id: NodeId,
    /// Nodes of both families: the IPv4 ones travel as `nodes`, the IPv6 ones as `nodes6`.
    pub nodes: Vec<Contact>,
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KrpcError {
    #[error("not a bencoded dictionary")]
    NotADict,
    #[error("missing or malformed {0}")]
    Field(&'static str),
    #[error("unknown query {0:?}")]
    UnknownQuery(String),
}

type Dict = HashMap<Vec<u8>, Value>;

impl Krpc {
    /// Parses one datagram.
    pub fn parse(packet: &[u8]) -> Result<Krpc, KrpcError> {
        if packet.len() > MAX_PACKET || bencode::validate(packet).is_err() {
            return Err(KrpcError::NotADict);
        }
        let Ok(Value::Dict(d)) = serde_bencode::from_bytes::<Value>(packet) else {
            return Err(KrpcError::NotADict);
        };
        let tid = bytes(&d, "t")
            .filter(|t| t.len() <= MAX_OPAQUE)
            .ok_or(KrpcError::Field("t"))?
            .to_vec();
        let body = match bytes(&d, "y").ok_or(KrpcError::Field("y"))? {
            b"q" => parse_query(&d)?,
            b"r" => Body::Response(parse_response(dict(&d, "r").ok_or(KrpcError::Field("r"))?)?),
            b"e" => parse_error(&d)?,
            _ => return Err(KrpcError::Field("y")),
        };
        Ok(Krpc { tid, body })
    }

    /// The datagram for this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut top = Dict::new();
        top.insert(b"t".to_vec(), Value::Bytes(self.tid.clone()));
        match &self.body {
            Body::Query { id, query } => {
                let mut a = Dict::new();
                a.insert(b"id".to_vec(), Value::Bytes(id.0.to_vec()));
                let method: &[u8] = match query {
                    Query::Ping => b"ping",
                    Query::FindNode { target } => {
                        a.insert(b"target".to_vec(), Value::Bytes(target.0.to_vec()));
                        b"find_node"
                    }
                    Query::GetPeers { info_hash } => {
                        a.insert(b"info_hash".to_vec(), Value::Bytes(info_hash.0.to_vec()));
                        b"get_peers"
                    }
                    Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    } => {
                        a.insert(b"info_hash".to_vec(), Value::Bytes(info_hash.0.to_vec()));
                        a.insert(b"port".to_vec(), Value::Int((*port).into()));
                        a.insert(b"implied_port".to_vec(), Value::Int((*implied_port).into()));
                        a.insert(b"token".to_vec(), Value::Bytes(token.clone()));
                        b"announce_peer"
                    }
                };
                top.insert(b"y".to_vec(), Value::Bytes(b"q".to_vec()));
                top.insert(b"q".to_vec(), Value::Bytes(method.to_vec()));
                top.insert(b"a".to_vec(), Value::Dict(a));
            }
            Body::Response(r) => {
                let mut d = Dict::new();
                d.insert(b"id".to_vec(), Value::Bytes(r.id.0.to_vec()));
                let (v4, v6): (Vec<Contact>, Vec<Contact>) =
                    r.nodes.iter().partition(|n| n.addr.is_ipv4());
                if !v4.is_empty() {
                    d.insert(b"nodes".to_vec(), Value::Bytes(compact_nodes(&v4)));
                }
                if !v6.is_empty() {
                    d.insert(b"nodes6".to_vec(), Value::Bytes(compact_nodes(&v6)));
                }
                if !r.values.is_empty() {
                    let values = r.values.iter().map(|a| Value::Bytes(compact_addr(a)));
                    d.insert(b"values".to_vec(), Value::List(values.collect()));
                }
                if let Some(token) = &r.token {
                    d.insert(b"token".to_vec(), Value::Bytes(token.clone()));
                }
                top.insert(b"y".to_vec(), Value::Bytes(b"r".to_vec()));
                top.insert(b"r".to_vec(), Value::Dict(d));
            }
            Body::Error { code, message } => {
                let e = vec![Value::Int(*code), Value::Bytes(message.as_bytes().to_vec())];
                top.insert(b"y".to_vec(), Value::Bytes(b"e".to_vec()));
                top.insert(b"e".to_vec(), Value::List(e));
            }
        }
        serde_bencode::to_bytes(&Value::Dict(top)).expect("encoding an in-memory dict cannot fail")
    }
}

fn parse_query(d: &Dict) -> Result<Body, KrpcError> {
    let a = dict(d, "a").ok_or(KrpcError::Field("a"))?;
    let id = node_id(a, "id").ok_or(KrpcError::Field("id"))?;
    let method = bytes(d, "q").ok_or(KrpcError::Field("q"))?;
    let info_hash = || {
        node_id(a, "info_hash")
            .map(|h| InfoHash(h.0))
            .ok_or(KrpcError::Field("info_hash"))
    };
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: node_id(a, "target").ok_or(KrpcError::Field("target"))?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: info_hash()?,
        },
        b"announce_peer" => Query::AnnouncePeer {
            info_hash: info_hash()?,
            port: int(a, "port")
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(KrpcError::Field("port"))?,
            implied_port: int(a, "implied_port").is_some_and(|v| v != 0),
            token: bytes(a, "token")
                .filter(|t| t.len() <= MAX_OPAQUE)
                .ok_or(KrpcError::Field("token"))?
                .to_vec(),
        },
        other => {
            let name = String::from_utf8_lossy(&other[..other.len().min(32)]).into_owned();
            return Err(KrpcError::UnknownQuery(name));
        }
    };
    Ok(Body::Query { id, query })
}

fn parse_response(r: &Dict) -> Result<Response, KrpcError> {
    let id = node_id(r, "id").ok_or(KrpcError::Field("id"))?;
    let mut nodes = bytes(r, "nodes")
        .map(|b| parse_compact_nodes(b, COMPACT_NODE))
        .unwrap_or_default();
    if let Some(b) = bytes(r, "nodes6") {
        nodes.extend(parse_compact_nodes(b, COMPACT_NODE6));
    }
    let values = match r.get(&b"values"[..]) {
        Some(Value::List(list)) => list
            .iter()
            .filter_map(|v| match v {
                Value::Bytes(b) => parse_compact_addr(b),
                _ => None,
            })
            .take(MAX_VALUES)
            .collect(),
        _ => Vec::new(),
    };
    let token = bytes(r, "token")
        .filter(|t| t.len() <= MAX_OPAQUE)
        .map(<[u8]>::to_vec);
    Ok(Response {
        id,
        nodes,
        values,
        token,
    })
}

fn parse_error(d: &Dict) -> Result<Body, KrpcError> {
    match d.get(&b"e"[..]) {
        Some(Value::List(l)) => match l.as_slice() {
            [Value::Int(code), Value::Bytes(msg), ..] => Ok(Body::Error {
                code: *code,
                message: error_message(msg),
            }),
            _ => Err(KrpcError::Field("e")),
        },
        _ => Err(KrpcError::Field("e")),
    }
}

/// An error's text as we keep it: at most 200 bytes of UTF-8, cut after the lossy
/// conversion (cut before, a split character or invalid bytes grew into replacement
/// characters past the cap, and the message no longer read back the same once re-encoded).
fn error_message(raw: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn bytes<'a>(d: &'a Dict, key: &str) -> Option<&'a [u8]> {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => Some(b),
        _ => None,
    }
}

fn dict<'a>(d: &'a Dict, key: &str) -> Option<&'a Dict> {
    match d.get(key.as_bytes()) {
        Some(Value::Dict(inner)) => Some(inner),
        _ => None,
    }
}

fn int(d: &Dict, key: &str) -> Option<i64> {
    match d.get(key.as_bytes()) {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    }
}

fn node_id(d: &Dict, key: &str) -> Option<NodeId> {
    let b: [u8; 20] = bytes(d, key)?.try_into().ok()?;
    Some(NodeId(b))
}

/// The compact form of an address and port (`crate::compact`): 6 bytes for IPv4, 18 for
/// IPv6.
fn compact_addr(a: &SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact::V6_LEN);
    compact::put(&mut out, *a);
    out
}

/// A compact address of either length; None for another length or an unusable address.
fn parse_compact_addr(b: &[u8]) -> Option<SocketAddr> {
    let ipv6 = match b.len() {
        compact::V4_LEN => false,
        compact::V6_LEN => true,
        _ => return None,
    };
    let mut one = Vec::with_capacity(1);
    compact::read_into(b, ipv6, 1, &mut one).ok()?;
    one.pop().filter(usable)
}

/// An address worth sending to: one a peer could dial (`compact::dialable`: a port, not
/// unspecified, broadcast or multicast) and, for IPv6, not an IPv4-mapped one (an IPv4 node
/// belongs in `nodes`).
pub fn usable(a: &SocketAddr) -> bool {
    let mapped = matches!(a.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some());
    compact::dialable(a) && !mapped
}

/// Compact node entries, all of one family (the caller splits them).
fn compact_nodes(nodes: &[Contact]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nodes {
        out.extend_from_slice(&n.id.0);
        compact::put(&mut out, n.addr);
    }
    out
}

/// Compact node entries of `entry` bytes each (26: IPv4, 38: IPv6); a trailing partial
/// entry and unusable addresses are skipped.
fn parse_compact_nodes(b: &[u8], entry: usize) -> Vec<Contact> {
    b.chunks_exact(entry)
        .filter_map(|c| {
            let id = NodeId(c[..20].try_into().expect("entries are longer than an id"));
            parse_compact_addr(&c[20..]).map(|addr| Contact { id, addr })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn an_error_text_reads_back_the_same_once_re_encoded() {
        // The fuzzer's case: invalid bytes that grow as replacement characters, past the cap.
        let text = [b"ab".as_slice(), &[0xFF; 150], &[b'6'; 150]].concat();
        let mut packet = format!("d1:eli100e{}:", text.len()).into_bytes();
        packet.extend_from_slice(&text);
        packet.extend_from_slice(b"e1:t2:aa1:y1:ee");
        let message = Krpc::parse(&packet).unwrap();
        let Body::Error { message: kept, .. } = &message.body else {
            panic!("not an error: {message:?}");
        };
        assert!(kept.len() <= 200);
        assert_eq!(Krpc::parse(&message.encode()).unwrap(), message);
    }

    fn id(b: u8) -> NodeId {
        NodeId([b; 20])
    }

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), port))
    }

    fn addr6(last: u16, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last), port))
    }

    #[test]
    fn every_message_round_trips() {
        let messages = [
            Body::Query {
                id: id(1),
                query: Query::Ping,
            },
            Body::Query {
                id: id(1),
                query: Query::FindNode { target: id(2) },
            },
            Body::Query {
                id: id(1),
                query: Query::GetPeers {
                    info_hash: InfoHash([3; 20]),
                },
            },
            Body::Query {
                id: id(1),
                query: Query::AnnouncePeer {
                    info_hash: InfoHash([3; 20]),
                    port: 6881,
                    implied_port: true,
                    token: b"tok".to_vec(),
                },
            },
            Body::Response(Response {
                id: id(4),
                nodes: vec![Contact {
                    id: id(5),
                    addr: addr(5, 6881),
                }],
                values: vec![addr(6, 51413), addr(7, 1)],
                token: Some(b"secret".to_vec()),
            }),
            Body::Response(Response {
                id: id(4),
                nodes: vec![
                    Contact {
                        id: id(5),
                        addr: addr(5, 6881),
                    },
                    Contact {
                        id: id(8),
                        addr: addr6(8, 6881),
                    },
                ],
                values: vec![addr6(9, 51413), addr(7, 1)],
                token: None,
            }),
            Body::Response(Response {
                id: id(4),
                ..Response::default()
            }),
            Body::Error {
                code: 203,
                message: "Protocol Error".into(),
            },
        ];
        for body in messages {
            let m = Krpc {
                tid: b"aa".to_vec(),
                body,
            };
            assert_eq!(Krpc::parse(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn reads_the_examples_of_bep_5() {
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let m = Krpc::parse(ping).unwrap();
        assert_eq!(m.tid, b"aa");
        assert!(matches!(
            m.body,
            Body::Query {
                query: Query::Ping,
                ..
            }
        ));
        let values = b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
        let Body::Response(r) = Krpc::parse(values).unwrap().body else {
            panic!("a response");
        };
        assert_eq!(r.values.len(), 2);
        assert_eq!(r.token.as_deref(), Some(&b"aoeusnth"[..]));
        let error = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        assert_eq!(
            Krpc::parse(error).unwrap().body,
            Body::Error {
                code: 201,
                message: "A Generic Error Ocurred".into()
            }
        );
    }

    #[test]
    fn refuses_or_trims_what_a_hostile_node_sends() {
        for bad in [
            &b"garbage"[..],
            b"le",
            b"d1:t2:aae",
            b"d1:t2:aa1:y1:qe",
            b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:nope1:t2:aa1:y1:qe",
            b"d1:ad2:id20:abcdefghij01234567894:porti70000e5:token1:x9:info_hash20:abcdefghij0123456789e1:q13:announce_peer1:t2:aa1:y1:qe",
        ] {
            assert!(Krpc::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(Krpc::parse(&vec![b'x'; MAX_PACKET + 1]).is_err());
        // Nodes with port 0 or a multicast address, and a trailing partial entry, are dropped.
        let mut nodes = Vec::new();
        nodes.extend_from_slice(&[1; 20]);
        nodes.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        nodes.extend_from_slice(&[2; 20]);
        nodes.extend_from_slice(&[127, 0, 0, 2, 0, 0]);
        nodes.extend_from_slice(&[3; 20]);
        nodes.extend_from_slice(&[224, 0, 0, 1, 0x1a, 0xe1]);
        nodes.extend_from_slice(&[4; 10]);
        assert_eq!(
            parse_compact_nodes(&nodes, COMPACT_NODE),
            [Contact {
                id: id(1),
                addr: addr(1, 6881)
            }]
        );
    }

    /// BEP 32: IPv6 nodes come as 38-byte entries under `nodes6`; an IPv4-mapped address,
    /// a multicast one, port 0 and a peer of a third length are dropped.
    #[test]
    fn reads_ipv6_nodes_and_peers() {
        let entry = |id_byte: u8, ip: Ipv6Addr, port: u16| {
            let mut e = vec![id_byte; 20];
            e.extend_from_slice(&ip.octets());
            e.extend_from_slice(&port.to_be_bytes());
            e
        };
        let good = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let nodes6 = [
            entry(1, good, 6881),
            entry(2, Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(), 6881),
            entry(3, "ff02::1".parse().unwrap(), 6881),
            entry(4, good, 0),
        ]
        .concat();
        let peer6 = [good.octets().as_slice(), &[0x1a, 0xe1]].concat();
        let mut packet = b"d1:rd2:id20:abcdefghij01234567896:nodes6".to_vec();
        packet.extend_from_slice(format!("{}:", nodes6.len()).as_bytes());
        packet.extend_from_slice(&nodes6);
        packet.extend_from_slice(b"6:valuesl18:");
        packet.extend_from_slice(&peer6);
        packet.extend_from_slice(b"5:abcdeee1:t2:aa1:y1:re");
        let Body::Response(r) = Krpc::parse(&packet).unwrap().body else {
            panic!("a response");
        };
        assert_eq!(
            r.nodes,
            [Contact {
                id: id(1),
                addr: SocketAddr::from((good, 6881))
            }]
        );
        assert_eq!(r.values, [SocketAddr::from((good, 6881))]);
    }
}
