//! Fuzz target: the BEP 10 extension handshake readers, `extended::reqq_of` (and
//! `extended::donthave_id_of`, `metadata_id_of`, `pex_id_of`, which must never panic and
//! never answer 0, and `metadata_size_of`, `listen_port_of`), on arbitrary
//! payloads (what a peer sends as extended message 0; up to the 1 MiB frame cap in real use).
//! It must never panic, and its work stays linear (the scanner runs before serde_bencode, so
//! no deep recursion and no allocation sized by the peer). A value it returns must be right:
//! the payload is valid bencode, a dictionary whose top-level `reqq` is a positive integer,
//! clamped to u32. When `reqq` appears once and serde_bencode reads the payload (it refuses
//! integers past i64, which the scanner lets through), the answer must match serde_bencode's
//! parse, and re-encoding that parse (canonical key order) must give the same answer: the one
//! field it understands round-trips. Our own handshake must advertise our queue size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_bencode::value::Value;
use spate::bencode::{dict_value_span, validate};
use spate::peer::extended::{
    donthave_id_of, listen_port_of, metadata_id_of, metadata_size_of, our_handshake, pex_id_of,
    reqq_of, Offer, OUR_DONTHAVE_ID, OUR_METADATA_ID, OUR_PEX_ID,
};
use spate::torrent::MAX_QUEUED_REQUESTS;
use std::sync::Once;

fuzz_target!(|data: &[u8]| {
    static OURS: Once = Once::new();
    OURS.call_once(|| {
        let ours = our_handshake(Offer {
            metadata_size: Some(777),
            pex: true,
            listen_port: Some(6881),
        });
        assert_eq!(reqq_of(&ours), Some(MAX_QUEUED_REQUESTS as u32));
        assert_eq!(donthave_id_of(&ours), Some(OUR_DONTHAVE_ID));
        assert_eq!(metadata_id_of(&ours), Some(OUR_METADATA_ID));
        assert_eq!(metadata_size_of(&ours), Some(777));
        assert_eq!(pex_id_of(&ours), Some(OUR_PEX_ID));
        assert_eq!(listen_port_of(&ours), Some(6881));
    });

    for id in [donthave_id_of(data), metadata_id_of(data), pex_id_of(data)]
        .into_iter()
        .flatten()
    {
        assert!(id >= 1, "extension id 0 means disabled (BEP 10)");
        assert!(
            validate(data).is_ok(),
            "an extension id from invalid bencode"
        );
    }
    if metadata_size_of(data).is_some() {
        assert!(
            validate(data).is_ok(),
            "a metadata size from invalid bencode"
        );
    }
    if let Some(port) = listen_port_of(data) {
        assert!(port != 0, "a listening port of 0");
        assert!(
            validate(data).is_ok(),
            "a listening port from invalid bencode"
        );
    }

    let got = reqq_of(data);
    if let Some(n) = got {
        assert!(n >= 1, "reqq of 0");
    }
    if validate(data).is_err() {
        assert_eq!(got, None, "a value from invalid bencode");
        return;
    }
    let Some(span) = dict_value_span(data, b"reqq").expect("span of valid bencode") else {
        assert_eq!(got, None, "a value with no top-level reqq");
        return;
    };
    // The entries after the first `reqq` form a dict of their own: is the key there again?
    let mut after = vec![b'd'];
    after.extend_from_slice(&data[span.end..]);
    let repeated = dict_value_span(&after, b"reqq")
        .expect("the remaining entries are valid")
        .is_some();
    if repeated {
        return; // serde_bencode keeps the last of duplicate keys, the scanner the first
    }
    // serde_bencode refuses some input the scanner accepts (an integer past i64); reqq_of
    // only decodes the reqq value, so it may still answer.
    let Ok(parsed) = serde_bencode::from_bytes::<Value>(data) else {
        return;
    };
    let Value::Dict(dict) = parsed else {
        panic!("a top-level reqq in something serde_bencode reads as {parsed:?}");
    };
    let want = match dict.get(&b"reqq"[..]) {
        Some(Value::Int(v)) if *v > 0 => Some((*v).min(i64::from(u32::MAX)) as u32),
        Some(_) => None,
        None => panic!("serde_bencode lost the reqq key"),
    };
    assert_eq!(got, want, "reqq disagrees with serde_bencode's parse");
    let again = serde_bencode::to_bytes(&Value::Dict(dict)).expect("re-encoding a parsed dict");
    assert_eq!(
        reqq_of(&again),
        got,
        "reqq changes when the dict is re-encoded"
    );
});
