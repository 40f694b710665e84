//! Fuzzes answering a WHEP offer (`signaling::peer::ViewerPeer::accept`, str0m's SDP parser
//! underneath): arbitrary UTF-8 as a browser (or anyone) could POST it.
//!
//! Checks: no panic (an `Err` is a 400 for the client, fine); an accepted offer yields an
//! answer that parses as SDP, and a peer that can be polled.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use signaling::peer::{PeerConfig, ViewerPeer};
use str0m::change::SdpAnswer;

fuzz_target!(|offer: &str| {
    let config = PeerConfig { candidates: vec![SocketAddr::from(([127, 0, 0, 1], 8189))], profile_level_id: 0x42e01f };
    let now = Instant::now();
    let Ok((mut peer, answer)) = ViewerPeer::accept(offer, &config, now) else { return };
    SdpAnswer::from_sdp_string(&answer).unwrap_or_else(|e| panic!("our answer is not SDP ({e}):\n{answer}"));
    let (mut out, mut events) = (Vec::new(), Vec::new());
    assert!(peer.poll(&mut out, &mut events).is_some(), "a fresh peer is alive: {events:?}");
});
