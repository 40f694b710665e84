//! The identity of one picture as it travels from decoder to viewers and workers.

use serde::{Deserialize, Serialize};

use crate::{RtpTimestamp, StreamId};

/// Which picture of which stream, when it was captured and how large it is: the fields that
/// JPEG frames, pictures offered for detection, frames sent to workers and detection
/// messages share. Serialized flat (`stream`, `seq`, `rtp_timestamp`, `capture_ms`, `width`,
/// `height`) inside those messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// Stream id.
    pub stream: StreamId,
    /// Frame sequence number, assigned by the gateway's hub: +1 per access unit, from 1,
    /// across camera reconnects. SSE frames carry it as `id:`.
    pub seq: u64,
    /// The camera's RTP timestamp of the frame (90 kHz): what a browser's
    /// `requestVideoFrameCallback` `rtpTimestamp` shows for it.
    pub rtp_timestamp: RtpTimestamp,
    /// Capture time, ms since the Unix epoch: the camera's clock from its RTCP sender reports
    /// (RFC 3550 §6.4.1) when it sends them, else the time the gateway received the frame.
    pub capture_ms: u64,
    /// Picture width, px.
    pub width: u32,
    /// Picture height, px.
    pub height: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_flat_with_the_contract_names() {
        let meta =
            FrameMeta { stream: "cam".into(), seq: 7, rtp_timestamp: RtpTimestamp::new(3600), capture_ms: 1, width: 1280, height: 720 };
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(json, r#"{"stream":"cam","seq":7,"rtp_timestamp":3600,"capture_ms":1,"width":1280,"height":720}"#);
        assert_eq!(serde_json::from_str::<FrameMeta>(&json).unwrap(), meta);
    }
}
