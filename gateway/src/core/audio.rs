//! Camera audio on its way through the gateway: an [`AudioFrame`] as received, the
//! [`AudioInfo`] that says how to read it, and [`AudioHealth`], what the status shows.

use std::sync::Arc;
use std::time::Instant;

use media::AudioCodec;
use serde::Serialize;

/// One audio frame as received: a G.711 RTP payload, one AAC access unit with its ADTS
/// header (ISO/IEC 13818-7 §6.2, written by retina), or one Opus packet (RFC 7587) made by
/// the transcoder.
#[derive(Debug)]
pub struct AudioFrame {
    /// RTP timestamp in the clock rate of its [`AudioInfo`].
    pub rtp_timestamp: u32,
    /// When it was received (or encoded).
    pub received: Instant,
    /// When the camera captured it, Unix ms, from the camera's RTCP sender reports of the
    /// audio track; 0 when not known (no report yet, or made here: the Opus transcoder).
    pub capture_ms: u64,
    /// The codec's bytes (shared with every viewer as the RTP payload).
    pub data: Arc<[u8]>,
}

/// What a stream's audio is: codec, clock rate, channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioInfo {
    /// The codec; `None` for Opus made by the transcoder.
    pub codec: Option<AudioCodec>,
    /// RTP clock rate, Hz (8000 for G.711, the sampling rate for AAC, 48000 for Opus).
    pub clock_rate: u32,
    /// Channels.
    pub channels: u16,
}

/// `health.audio`: the camera's audio as set up (also a codec the gateway does not take).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AudioHealth {
    /// `pcma`, `pcmu`, `aac`, or the SDP encoding name of an audio stream left out
    /// (e.g. `opus`, `g726-32`).
    #[schema(example = "pcma")]
    pub codec: String,
    /// RTP clock rate, Hz.
    pub clock_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Whether the gateway takes it (sends it to WebRTC viewers).
    pub supported: bool,
}
