//! Per-stream fan-out of audio frames, beside the video [`super::hub::Hub`].
//!
//! Ingest announces the camera's audio ([`AudioInfo`], from the SDP) with
//! [`AudioHub::set_info`] when a session starts and publishes every frame once; WebRTC taps
//! and the AAC-to-Opus transcoder subscribe. Audio has no keyframes and no cache: a consumer
//! that falls more than [`AUDIO_DEPTH`] frames behind loses the oldest (counted as
//! `sightline_frames_dropped_total{reason="slow_audio_consumer"}`) and goes on.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::core::StreamId;
pub(crate) use crate::core::audio::{AudioFrame, AudioHealth, AudioInfo};

/// Frames a consumer may fall behind: about 1 s of 20 ms frames.
pub(crate) const AUDIO_DEPTH: usize = 50;

/// A stream's audio fan-out. See the module docs.
#[derive(Debug)]
pub(crate) struct AudioHub {
    stream_id: StreamId,
    info: Mutex<Option<AudioInfo>>,
    tx: broadcast::Sender<Arc<AudioFrame>>,
}

impl AudioHub {
    /// An empty hub for `stream_id` (used in metric labels).
    pub(crate) fn new(stream_id: StreamId) -> AudioHub {
        AudioHub { stream_id, info: Mutex::new(None), tx: broadcast::channel(AUDIO_DEPTH).0 }
    }

    /// Announces the audio of the session that starts (`None`: none, or none taken).
    pub(crate) fn set_info(&self, info: Option<AudioInfo>) {
        *self.info.lock() = info;
    }

    /// The audio as last announced.
    pub(crate) fn info(&self) -> Option<AudioInfo> {
        self.info.lock().clone()
    }

    /// Sends one frame to every subscriber; never waits.
    pub(crate) fn publish(&self, frame: AudioFrame) {
        let _ = self.tx.send(Arc::new(frame));
    }

    /// A consumer of frames from now on.
    pub(crate) fn subscribe(&self) -> AudioSubscription {
        AudioSubscription { stream_id: self.stream_id.clone(), rx: self.tx.subscribe() }
    }
}

/// A consumer's view of an [`AudioHub`].
#[derive(Debug)]
pub(crate) struct AudioSubscription {
    stream_id: StreamId,
    rx: broadcast::Receiver<Arc<AudioFrame>>,
}

impl AudioSubscription {
    /// The next frame; `None` only when the hub is gone.
    pub(crate) async fn next(&mut self) -> Option<Arc<AudioFrame>> {
        loop {
            match self.rx.recv().await {
                Ok(frame) => return Some(frame),
                Err(RecvError::Lagged(skipped)) => {
                    metrics::counter!("sightline_frames_dropped_total", "stream" => self.stream_id.to_string(), "reason" => "slow_audio_consumer")
                        .increment(skipped);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn frame(ts: u32) -> AudioFrame {
        AudioFrame { rtp_timestamp: ts, received: Instant::now(), capture_ms: 0, data: Arc::from(&b"\xd5\xd5"[..]) }
    }

    #[tokio::test]
    async fn a_slow_consumer_loses_the_oldest_frames_and_goes_on() {
        let hub = AudioHub::new("s".into());
        let mut sub = hub.subscribe();
        for ts in 0..(4 * AUDIO_DEPTH as u32) {
            hub.publish(frame(ts * 160));
        }
        // The channel keeps at least AUDIO_DEPTH frames (rounded up to a power of two).
        let first = sub.next().await.unwrap().rtp_timestamp / 160;
        assert!((1..=3 * AUDIO_DEPTH as u32).contains(&first), "the oldest were lost: first {first}");
        assert_eq!(sub.next().await.unwrap().rtp_timestamp, (first + 1) * 160, "then in order");
    }
}
