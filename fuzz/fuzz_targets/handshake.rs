//! Fuzz target: `Handshake::decode` on arbitrary bytes. It must never panic; a handshake it
//! accepts re-encodes to the input's first 68 bytes, and its extension flags agree with the
//! reserved bits. Any 68+ bytes starting with the right protocol string must be accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::wire::{Handshake, HANDSHAKE_LEN};

fuzz_target!(|data: &[u8]| {
    let well_formed =
        data.len() >= HANDSHAKE_LEN && data[0] == 19 && &data[1..20] == b"BitTorrent protocol";
    match Handshake::decode(data) {
        Ok(hs) => {
            assert!(well_formed, "accepted a malformed handshake");
            let bytes = hs.encode();
            assert_eq!(&bytes[..], &data[..HANDSHAKE_LEN]);
            assert_eq!(Handshake::decode(&bytes), Ok(hs));
            let ext = hs.extensions();
            let mask = spate::wire::Extensions {
                extended: true,
                fast: true,
                dht: true,
            }
            .reserved();
            let masked: Vec<u8> = hs.reserved.iter().zip(mask).map(|(r, m)| r & m).collect();
            assert_eq!(masked, ext.reserved());
        }
        Err(_) => assert!(!well_formed, "refused a well-formed handshake"),
    }
});
