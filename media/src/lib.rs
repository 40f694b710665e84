//! Sightline's media leaf crate: the bitstream and RTP knowledge every other crate shares,
//! as plain functions and types (no I/O, no async runtime).
//!
//! # Layout
//! - [`ids`]: protocol identifiers as newtypes: [`RtpTimestamp`] (90 kHz), [`Ssrc`],
//!   [`SeqNo`], [`Pt`], and the [`StreamId`] that names a camera.
//! - [`frame`]: [`FrameMeta`], the identity of one picture (stream, sequence number, RTP
//!   timestamp, capture time, size) that JPEG frames, detection pictures, worker frames and
//!   detection messages all carry.
//! - [`codec`]: [`VideoCodec`] (H.264 or H.265) and [`SequenceInfo`], the parsed SPS of either.
//! - [`h264`]: Annex B NAL unit framing and the SPS fields the gateway needs (ITU-T H.264).
//! - [`h265`]: the H.265 NAL unit header and SPS fields (ITU-T H.265).
//! - [`rtp`]: RTP header (RFC 3550 §5.1), H.264 packetization and depacketization
//!   (RFC 6184 §5.6, §5.8), H.265's (RFC 7798 §4.4).
//! - [`rtcp`]: RTCP sender reports (RFC 3550 §6.4.1) and the [`rtcp::CaptureClock`] that turns
//!   a camera's RTP timestamps into its wall-clock capture times.
//! - [`fmp4`]: fragmented MP4 (init segments, `moof` + `mdat` fragments, scanning stored
//!   files back) for recordings and HLS, with mp4-atom's boxes.
//! - [`audio`]: [`AudioCodec`], the camera audio codecs the gateway takes (G.711, AAC).
//! - [`rtsp`]: the sans-IO RTSP/1.0 server connection (RFC 2326) behind the test camera and
//!   the restream, and AAC's RTP payload format (RFC 3640).
//! - [`Error`]: this crate's one error type.

pub mod audio;
pub mod codec;
pub mod fmp4;
pub mod frame;
pub mod h264;
pub mod h265;
pub mod ids;
pub mod rtcp;
pub mod rtp;
pub mod rtsp;

pub use audio::AudioCodec;
pub use codec::{SequenceInfo, VideoCodec};
pub use frame::FrameMeta;
pub use ids::{Pt, RtpTimestamp, SeqNo, Ssrc, StreamId};

/// Why bytes from a camera (or a peer) could not be parsed. Each variant says what was
/// expected, so a log line is enough to find the offending packet in a capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A NAL unit handed to an SPS parser is of another type (H.264 / H.265 Table 7-1).
    #[error("NAL unit type {0} is not an SPS")]
    NotSps(u8),
    /// An SPS that does not follow H.264 §7.3.2.1.1 or H.265 §7.3.2.2.
    #[error("bad SPS: {0}")]
    BadSps(String),
    /// An RTP payload with no bytes.
    #[error("empty RTP payload")]
    EmptyPayload,
    /// An FU-A or FU packet too short to hold its FU header (RFC 6184 §5.8, RFC 7798
    /// §4.4.3), or an aggregation packet whose sizes overrun it.
    #[error("FU-A without FU header")]
    FuWithoutHeader,
    /// An FU-A or FU continuation or end without a start fragment before it.
    #[error("FU-A continuation without start")]
    FuWithoutStart,
    /// A payload structure the depacketizer does not take (STAP-A, MTAP, FU-B: RFC 6184
    /// §5.7, §5.8), by NAL unit type.
    #[error("unsupported H.264 payload structure (NAL unit type {0})")]
    UnsupportedPayload(u8),
}
