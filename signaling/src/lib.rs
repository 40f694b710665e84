//! Sightline signaling: WHEP (draft-ietf-wish-whep-02) resource rules and the WebRTC peer
//! wrapper around `str0m` (sans-IO; the gateway owns sockets and timers).
//!
//! # Layout
//! - [`whep`]: session ids, ETags and If-Match, trickle-ICE fragments, ICE-server links,
//!   the error type with its HTTP statuses.
//! - [`peer`]: one viewer's str0m `Rtc` (RTP mode, ICE-lite): answer, send RTP, data channel.
//! - [`srtp`], [`keytap`]: the video packets a peer seals itself (AES-GCM SRTP, RFC 7714) with
//!   the keys its DTLS handshake exported, outside str0m's per-packet send path.

pub mod keytap;
pub mod peer;
pub mod srtp;
pub mod whep;
