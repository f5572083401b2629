//! Fuzz target: BEP 9 `ut_metadata` messages as a peer sends them. `MetadataMessage::parse`
//! must never panic; a message it accepts must encode back to something that parses the
//! same. Each accepted DATA message is then fed to an assembler sized by its `total_size`
//! (when that is a size the assembler takes): `add` must never panic, and `finish` may hand
//! over only bytes whose SHA-1 is the info-hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};
use spate::metadata::{MetadataAssembler, MetadataMessage};
use spate::types::InfoHash;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = MetadataMessage::parse(data) else {
        return;
    };
    let again = message.encode();
    assert_eq!(
        MetadataMessage::parse(&again).as_ref(),
        Ok(&message),
        "re-encoding changed the message"
    );
    let MetadataMessage::Data {
        piece,
        total_size,
        data: bytes,
    } = message
    else {
        return;
    };
    // Small sizes only: the fuzzer should not spend its time zeroing megabytes.
    if total_size > 1 << 20 {
        return;
    }
    let hash = InfoHash(Sha1::digest(bytes).into());
    let Ok(mut assembler) = MetadataAssembler::new(hash, total_size) else {
        return;
    };
    if assembler.add(piece, total_size, bytes).is_err() || !assembler.is_complete() {
        return;
    }
    if let Ok(info) = assembler.finish() {
        assert_eq!(Sha1::digest(&info).as_slice(), hash.0, "finish passed a wrong hash");
        assert_eq!(info, bytes, "one piece holds the whole dictionary");
    }
});
