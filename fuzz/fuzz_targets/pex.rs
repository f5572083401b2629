//! Fuzz target: BEP 11 `ut_pex` messages as a peer sends them. `PexMessage::parse` must never
//! panic, must keep no more peers than its caps, and a message it accepts must encode back to
//! bytes that parse to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate::pex::{PexMessage, MAX_READ_PER_MESSAGE};

fuzz_target!(|data: &[u8]| {
    let Some(message) = PexMessage::parse(data) else {
        return;
    };
    assert!(
        message.added.len() <= MAX_READ_PER_MESSAGE,
        "too many added"
    );
    assert!(
        message.dropped.len() <= MAX_READ_PER_MESSAGE,
        "too many dropped"
    );
    let mut ports = (message.added.iter().map(|(a, _)| a.port()))
        .chain(message.dropped.iter().map(|a| a.port()));
    assert!(ports.all(|p| p != 0), "a port-0 address was kept");
    let again = PexMessage::parse(&message.encode());
    assert_eq!(
        again.as_ref(),
        Some(&message),
        "re-encoding changed the message"
    );
});
