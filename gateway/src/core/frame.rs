//! Frames on their way through the gateway: an [`AccessUnit`] as the camera sent it (shared
//! by every consumer as `Arc<AccessUnit>`), and a decoded [`Picture`] offered to detection
//! through a [`PictureSink`].

use std::any::{Any, TypeId};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use media::{FrameMeta, RtpTimestamp, VideoCodec};
use parking_lot::Mutex;

/// Values consumers derive from one shared frame, made once on first use and shared with
/// every later asker: a WebRTC viewer's RTP payloads, an SSE viewer's event bytes. Keyed by
/// the value's type, which the consumer owns, so the frame's producer knows none of them.
#[derive(Default)]
pub struct Derived {
    slots: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
}

impl Derived {
    /// The `T` derived from this frame: made by `make` on the first call, the same `Arc`
    /// afterwards. Concurrent first callers wait for one `make`.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut slots = self.slots.lock();
        let found = slots.iter().find(|(id, _)| *id == TypeId::of::<T>()).map(|(_, v)| v.clone());
        let value = found.unwrap_or_else(|| {
            let made: Arc<dyn Any + Send + Sync> = Arc::new(make());
            slots.push((TypeId::of::<T>(), made.clone()));
            made
        });
        value.downcast::<T>().unwrap_or_else(|_| unreachable!("slots are keyed by their value's TypeId"))
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derived").field("values", &self.slots.lock().len()).finish()
    }
}

/// One access unit (all NAL units of one picture, H.264 §7.4.1.2.3, H.265 §7.4.2.4.4) as
/// received from the camera, numbered by the stream's hub.
#[derive(Debug)]
pub struct AccessUnit {
    /// Frame sequence number, assigned by the hub: increases by one per unit, across camera
    /// reconnects, starting at 1.
    pub seq: u64,
    /// The camera's RTP timestamp (90 kHz clock, RFC 6184 §5.1).
    pub rtp_timestamp: RtpTimestamp,
    /// When ingest received the unit.
    pub received: Instant,
    /// Capture time, ms since the Unix epoch: the camera's (RTCP sender report) when known,
    /// else the receive time.
    pub capture_ms: u64,
    /// Whether the unit is a random access point (H.264 IDR, H.265 IRAP).
    pub keyframe: bool,
    /// The codec of `data`.
    pub codec: VideoCodec,
    /// Annex B bytes (start code + NAL unit, repeated); the parameter sets (H.264 SPS/PPS,
    /// H.265 VPS/SPS/PPS) precede every keyframe.
    pub data: Bytes,
    derived: Derived,
}

/// Fields of a unit before the hub numbers it.
#[derive(Debug)]
pub struct NewAccessUnit {
    /// See [`AccessUnit::rtp_timestamp`].
    pub rtp_timestamp: RtpTimestamp,
    /// See [`AccessUnit::capture_ms`].
    pub capture_ms: u64,
    /// See [`AccessUnit::keyframe`].
    pub keyframe: bool,
    /// See [`AccessUnit::codec`].
    pub codec: VideoCodec,
    /// See [`AccessUnit::data`].
    pub data: Bytes,
}

impl AccessUnit {
    /// Unit number `seq` received now (hubs number their own; tests and benchmarks too).
    pub fn new(seq: u64, unit: NewAccessUnit) -> AccessUnit {
        AccessUnit {
            seq,
            rtp_timestamp: unit.rtp_timestamp,
            received: Instant::now(),
            capture_ms: unit.capture_ms,
            keyframe: unit.keyframe,
            codec: unit.codec,
            data: unit.data,
            derived: Derived::default(),
        }
    }

    /// A value derived from this unit once for all consumers (see [`Derived`]).
    pub fn derived<T: Any + Send + Sync>(&self, make: impl FnOnce(&AccessUnit) -> T) -> Arc<T> {
        self.derived.get_or_init(|| make(self))
    }
}

/// One decoded picture offered for detection: tightly packed I420 (Y `width`×`height`, then
/// U and V at half width and height, rounded up), as the decoder produced it. Cloning shares
/// the planes (a picture several models take is not copied).
#[derive(Clone, Debug)]
pub struct Picture {
    /// Which picture (stream, seq, RTP timestamp, capture time, size).
    pub meta: FrameMeta,
    /// Full-range YUV (else limited, H.264 `video_full_range_flag` = 0).
    pub full_range: bool,
    /// Y, U, V planes back to back.
    pub planes: Arc<[u8]>,
    /// When it was offered (slot wait time).
    pub offered: Instant,
}

impl Picture {
    /// Bytes of packed I420 for `width`×`height`.
    pub fn packed_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
    }
}

/// Where a stream's decoder offers pictures for detection (the detection scheduler).
pub trait PictureSink: Send + Sync + std::fmt::Debug {
    /// Takes the newest picture of its stream; must not block (the decoder calls it).
    fn offer(&self, picture: Picture);
    /// Forgets `stream`'s waiting picture: its decoding for detection stopped.
    fn clear(&self, stream: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_made_once_per_type() {
        let au = AccessUnit::new(
            1,
            NewAccessUnit {
                rtp_timestamp: RtpTimestamp::new(0),
                capture_ms: 0,
                keyframe: true,
                codec: media::VideoCodec::H264,
                data: Bytes::from_static(b"abc"),
            },
        );
        let mut made = 0;
        let a = au.derived(|au| {
            made += 1;
            au.data.len()
        });
        let b = au.derived(|_| -> usize { unreachable!("made already") });
        assert!(Arc::ptr_eq(&a, &b) && *a == 3 && made == 1);
        struct Other(&'static str);
        assert_eq!(au.derived(|_| Other("x")).0, "x", "another type has its own slot");
    }

    #[test]
    fn packed_i420_rounds_chroma_up() {
        assert_eq!(Picture::packed_len(1280, 720), 1280 * 720 * 3 / 2);
        assert_eq!(Picture::packed_len(3, 3), 9 + 2 * 4);
    }
}
