//! The BEP 10 extension handshake: what we advertise (client name, how many requests we
//! accept queued) and what we read from the peer's (its request queue size, `reqq`).

use crate::torrent::MAX_QUEUED_REQUESTS;
use serde_bencode::value::Value;
use std::collections::HashMap;

/// Our extension handshake payload (message id 20, extended id 0).
pub fn our_handshake() -> Vec<u8> {
    let mut d = HashMap::new();
    d.insert(b"m".to_vec(), Value::Dict(HashMap::new()));
    d.insert(b"reqq".to_vec(), Value::Int(MAX_QUEUED_REQUESTS as i64));
    d.insert(
        b"v".to_vec(),
        Value::Bytes(format!("spate {}", env!("CARGO_PKG_VERSION")).into_bytes()),
    );
    serde_bencode::to_bytes(&Value::Dict(d)).expect("encoding an in-memory dict cannot fail")
}

/// The `reqq` a peer advertised, if its handshake is well-formed and has one.
pub fn reqq_of(payload: &[u8]) -> Option<u32> {
    crate::bencode::validate(payload).ok()?;
    let span = crate::bencode::dict_value_span(payload, b"reqq").ok()??;
    match serde_bencode::from_bytes::<Value>(&payload[span]).ok()? {
        Value::Int(n) if n > 0 => Some(n.min(i64::from(u32::MAX)) as u32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reqq_round_trip_and_garbage() {
        assert_eq!(reqq_of(&our_handshake()), Some(MAX_QUEUED_REQUESTS as u32));
        assert_eq!(reqq_of(b"d4:reqqi250ee"), Some(250));
        assert_eq!(reqq_of(b"d4:reqqi-1ee"), None);
        assert_eq!(reqq_of(b"garbage"), None);
        assert_eq!(reqq_of(b"d1:mdee"), None);
    }
}
