//! Fuzzes the gateway <-> worker wire format (`wire::decode_from_gateway`, which reads every kind `wire::decode` reads and large pictures too): arbitrary bytes, as a
//! peer could send them, are decoded frame after frame. Decoding must never panic; every
//! message it accepts must re-encode to a frame that decodes to the same message; and no
//! frame may claim more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{decode_from_gateway as decode, encode};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
            Ok(Some((msg, used))) => {
                assert!(used > 0 && at + used <= data.len(), "consumed {used} of {}", data.len() - at);
                let again = encode(&msg);
                let (back, n) = decode(&again).expect("re-encoded frame decodes").expect("complete");
                assert_eq!(back, msg);
                assert_eq!(n, again.len());
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
