//! Sightline signaling: WHEP (draft-ietf-wish-whep-02) resource rules and the WebRTC peer
//! wrapper around `str0m` (sans-IO; the gateway owns sockets and timers).
//!
//! # Layout
//! - [`whep`]: session ids, ETags and If-Match, trickle-ICE fragments, ICE-server links,
//!   the error type with its HTTP statuses.
//! - [`peer`]: one viewer's str0m `Rtc` (RTP mode, ICE-lite): answer, send RTP, data channel.

pub mod peer;
pub mod whep;
