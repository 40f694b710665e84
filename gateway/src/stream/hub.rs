//! Per-stream fan-out of access units (DESIGN.md step 2).
//!
//! Ingest [`Hub::publish`]es each access unit once; every consumer holds a [`Subscription`]
//! that yields `Arc`-shared units. A new subscription starts with the cached GOP (from the
//! last keyframe), so decoding can begin at once. A slow consumer never blocks ingest: when it
//! falls more than [`FANOUT_DEPTH`] units behind, it skips to the next keyframe and the skipped
//! units are counted (`sightline_frames_dropped_total{reason="slow_consumer"}`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::{h264, rtp};

/// One H.264 access unit (all NAL units of one picture) as received from the camera.
#[derive(Debug)]
pub struct AccessUnit {
    /// Frame sequence number, assigned by the hub: increases by one per unit, across camera
    /// reconnects, starting at 1.
    pub seq: u64,
    /// The camera's RTP timestamp (90 kHz clock, RFC 6184 §5.1).
    pub rtp_timestamp: u32,
    /// When ingest received the unit.
    pub received: Instant,
    /// Capture time, ms since the Unix epoch: the camera's (RTCP sender report) when known,
    /// else the receive time.
    pub capture_ms: u64,
    /// Whether the unit is an IDR picture (random access point).
    pub keyframe: bool,
    /// Annex B bytes (start code + NAL unit, repeated); SPS/PPS precede every keyframe.
    pub data: Bytes,
    /// RTP payloads, made on first use and shared by every WebRTC viewer.
    rtp: OnceLock<Arc<[Arc<[u8]>]>>,
}

impl AccessUnit {
    /// A unit outside any hub (tests, benchmarks); hubs number their own.
    pub fn new(seq: u64, unit: NewAccessUnit) -> AccessUnit {
        AccessUnit {
            seq,
            rtp_timestamp: unit.rtp_timestamp,
            received: Instant::now(),
            capture_ms: unit.capture_ms,
            keyframe: unit.keyframe,
            data: unit.data,
            rtp: OnceLock::new(),
        }
    }

    /// The unit's RTP payloads (RFC 6184 packetization-mode 1, at most
    /// [`rtp::DEFAULT_MAX_PAYLOAD`] bytes each), packetized once however many viewers send it.
    pub fn rtp_payloads(&self) -> &Arc<[Arc<[u8]>]> {
        self.rtp
            .get_or_init(|| rtp::packetize_h264(&self.data, rtp::DEFAULT_MAX_PAYLOAD).iter().map(|p| Arc::<[u8]>::from(&p[..])).collect())
    }
}

/// Units a consumer may fall behind before it skips to the next keyframe: about 2.5 s at
/// 25 fps, enough to ride out a scheduling hiccup, small enough to bound memory.
pub const FANOUT_DEPTH: usize = 64;

/// Longest GOP cached for fast start, in units; a camera with a longer keyframe interval gets
/// no cache past this point (a new consumer then waits for the next keyframe).
const MAX_CACHED_GOP: usize = 300;

#[derive(Debug, Default)]
struct Cache {
    gop: Vec<Arc<AccessUnit>>,
    next_seq: u64,
    sps: Bytes,
    /// (capture_ms, seq, rtp_timestamp) of the last [`RECENT_UNITS`] units.
    recent: std::collections::VecDeque<(u64, u64, u32)>,
}

/// Units remembered for [`Hub::unit_near`]: about 2 s at 30 fps.
const RECENT_UNITS: usize = 64;

/// Fan-out of one stream's access units. See the module docs.
#[derive(Debug)]
pub struct Hub {
    stream_id: Arc<str>,
    cache: Mutex<Cache>,
    tx: broadcast::Sender<Arc<AccessUnit>>,
    sps: watch::Sender<Option<h264::SpsInfo>>,
}

/// Fields of a unit before the hub numbers it.
#[derive(Debug)]
pub struct NewAccessUnit {
    /// See [`AccessUnit::rtp_timestamp`].
    pub rtp_timestamp: u32,
    /// See [`AccessUnit::capture_ms`].
    pub capture_ms: u64,
    /// See [`AccessUnit::keyframe`].
    pub keyframe: bool,
    /// See [`AccessUnit::data`].
    pub data: Bytes,
}

impl Hub {
    /// An empty hub for `stream_id` (used in metric labels).
    pub fn new(stream_id: &str) -> Hub {
        Hub {
            stream_id: stream_id.into(),
            cache: Mutex::new(Cache { gop: Vec::new(), next_seq: 1, sps: Bytes::new(), recent: Default::default() }),
            tx: broadcast::channel(FANOUT_DEPTH).0,
            sps: watch::Sender::new(None),
        }
    }

    /// Numbers and sends one unit to every subscriber; never waits.
    pub fn publish(&self, unit: NewAccessUnit) -> Arc<AccessUnit> {
        let mut cache = self.cache.lock().expect("hub lock poisoned");
        let au = Arc::new(AccessUnit::new(cache.next_seq, unit));
        cache.next_seq += 1;
        if cache.recent.len() == RECENT_UNITS {
            cache.recent.pop_front();
        }
        cache.recent.push_back((au.capture_ms, au.seq, au.rtp_timestamp));
        if au.keyframe {
            cache.gop.clear();
            self.note_sps(&mut cache, &au);
        }
        if (au.keyframe || !cache.gop.is_empty()) && cache.gop.len() < MAX_CACHED_GOP {
            cache.gop.push(au.clone());
        } else {
            cache.gop.clear();
        }
        // Sent under the lock so a new subscriber sees each unit exactly once: either in the
        // cached GOP or from the channel.
        let _ = self.tx.send(au.clone());
        au
    }

    /// The recent unit captured closest to `capture_ms` (ms since the Unix epoch), if one is
    /// within `tolerance_ms`: its `(seq, rtp_timestamp)`. Names this replica's copy of a frame
    /// that another replica (with its own RTSP session, numbering and timestamps) describes.
    pub fn unit_near(&self, capture_ms: u64, tolerance_ms: u64) -> Option<(u64, u32)> {
        let cache = self.cache.lock().expect("hub lock poisoned");
        cache
            .recent
            .iter()
            .map(|&(at, seq, ts)| (at.abs_diff(capture_ms), seq, ts))
            .filter(|&(d, _, _)| d <= tolerance_ms)
            .min_by_key(|&(d, _, _)| d)
            .map(|(_, seq, ts)| (seq, ts))
    }

    /// Parses the keyframe's SPS when it differs from the last one seen.
    fn note_sps(&self, cache: &mut Cache, au: &AccessUnit) {
        let Some(sps) = h264::nal_units(&au.data).find(|n| h264::nal_type(n) == h264::NAL_SPS) else { return };
        if sps == &cache.sps[..] {
            return;
        }
        cache.sps = au.data.slice_ref(sps);
        match h264::parse_sps(sps) {
            Ok(info) => {
                self.sps.send_replace(Some(info));
            }
            Err(e) => tracing::warn!(stream = %self.stream_id, error = %e, "camera sent an SPS we cannot parse"),
        }
    }

    /// Follows the stream's SPS (picture size, profile): `None` until the first keyframe.
    pub fn watch_sps(&self) -> watch::Receiver<Option<h264::SpsInfo>> {
        self.sps.subscribe()
    }

    /// The units from the last keyframe to now (empty when no keyframe is cached).
    pub fn cached_gop(&self) -> Vec<Arc<AccessUnit>> {
        self.cache.lock().expect("hub lock poisoned").gop.clone()
    }

    /// Number of units in the cached GOP.
    pub fn cached_gop_len(&self) -> usize {
        self.cache.lock().expect("hub lock poisoned").gop.len()
    }

    /// Forgets the cached GOP (the camera session ended; its pictures are stale).
    pub fn clear_cache(&self) {
        self.cache.lock().expect("hub lock poisoned").gop.clear();
    }

    /// A new consumer, starting with the cached GOP.
    pub fn subscribe(&self) -> Subscription {
        let cache = self.cache.lock().expect("hub lock poisoned");
        Subscription {
            stream_id: self.stream_id.clone(),
            backlog: cache.gop.iter().cloned().collect(),
            rx: self.tx.subscribe(),
            need_keyframe: cache.gop.is_empty(),
        }
    }

    /// A new consumer of live units only (no cached GOP); it gets every unit from now on,
    /// keyframe or not, except after falling behind (then it skips to a keyframe).
    pub fn subscribe_live(&self) -> Subscription {
        let _cache = self.cache.lock().expect("hub lock poisoned");
        Subscription { stream_id: self.stream_id.clone(), backlog: VecDeque::new(), rx: self.tx.subscribe(), need_keyframe: false }
    }

    /// Number of current subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// A consumer's view of a [`Hub`]: call [`Subscription::next`] in a loop.
#[derive(Debug)]
pub struct Subscription {
    stream_id: Arc<str>,
    backlog: VecDeque<Arc<AccessUnit>>,
    rx: broadcast::Receiver<Arc<AccessUnit>>,
    need_keyframe: bool,
}

impl Subscription {
    /// The next unit, starting at a keyframe and after any skip at the next keyframe.
    /// Returns `None` only when the hub is gone.
    pub async fn next(&mut self) -> Option<Arc<AccessUnit>> {
        if let Some(au) = self.backlog.pop_front() {
            return Some(au);
        }
        loop {
            match self.rx.recv().await {
                Ok(au) => {
                    if self.need_keyframe && !au.keyframe {
                        continue;
                    }
                    self.need_keyframe = false;
                    return Some(au);
                }
                Err(RecvError::Lagged(skipped)) => {
                    metrics::counter!("sightline_frames_dropped_total", "stream" => self.stream_id.to_string(), "reason" => "slow_consumer")
                        .increment(skipped);
                    self.need_keyframe = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Whether units from the cached GOP are still queued (a decoder can skip showing those).
    pub fn in_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(keyframe: bool, ts: u32) -> NewAccessUnit {
        NewAccessUnit { rtp_timestamp: ts, capture_ms: 0, keyframe, data: Bytes::from_static(b"\0\0\0\x01\x65") }
    }

    #[tokio::test]
    async fn new_subscriber_starts_with_the_cached_gop() {
        let hub = Hub::new("s");
        hub.publish(unit(false, 0)); // before any keyframe: not cached
        hub.publish(unit(true, 1));
        hub.publish(unit(false, 2));
        let mut sub = hub.subscribe();
        assert!(sub.in_backlog());
        assert_eq!(sub.next().await.unwrap().rtp_timestamp, 1);
        assert_eq!(sub.next().await.unwrap().seq, 3);
        assert!(!sub.in_backlog());
        hub.publish(unit(false, 3));
        assert_eq!(sub.next().await.unwrap().rtp_timestamp, 3);
    }

    #[tokio::test]
    async fn without_cache_a_subscriber_waits_for_a_keyframe() {
        let hub = Hub::new("s");
        let mut sub = hub.subscribe();
        hub.publish(unit(false, 0));
        hub.publish(unit(true, 1));
        assert_eq!(sub.next().await.unwrap().rtp_timestamp, 1);
    }

    #[tokio::test]
    async fn a_slow_subscriber_skips_to_the_next_keyframe() {
        let hub = Hub::new("s");
        hub.publish(unit(true, 0));
        let mut sub = hub.subscribe();
        assert!(sub.next().await.unwrap().keyframe);
        for ts in 1..(FANOUT_DEPTH as u32 + 10) {
            hub.publish(unit(false, ts));
        }
        hub.publish(unit(true, 1000));
        hub.publish(unit(false, 1001));
        let au = sub.next().await.unwrap();
        assert_eq!((au.rtp_timestamp, au.keyframe), (1000, true));
        assert_eq!(sub.next().await.unwrap().rtp_timestamp, 1001);
    }
}
