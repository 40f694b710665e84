//! Per-stream fan-out of access units (DESIGN.md step 2).
//!
//! Ingest [`Hub::publish`]es each access unit once; every consumer holds a [`Subscription`]
//! that yields `Arc`-shared units. A new subscription starts with the cached GOP (from the
//! last keyframe), so decoding can begin at once. A slow consumer never blocks ingest: when it
//! falls more than [`FANOUT_DEPTH`] units behind, it skips to the next keyframe and the skipped
//! units are counted (`sightline_frames_dropped_total{reason="slow_consumer"}`).
//!
//! The hub parses nothing: the stream's SPS is parsed by ingest before a keyframe is
//! published and handed over with [`Hub::set_sps`], so no camera data is parsed while the
//! hub's lock is held.

use std::collections::VecDeque;
use std::sync::Arc;

use media::RtpTimestamp;
use media::SequenceInfo;
use parking_lot::Mutex;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::core::StreamId;
use crate::core::frame::{AccessUnit, NewAccessUnit};

/// Units a consumer may fall behind before it skips to the next keyframe: about 2.5 s at
/// 25 fps, enough to ride out a scheduling hiccup, small enough to bound memory.
pub(crate) const FANOUT_DEPTH: usize = 64;

/// Longest GOP cached for fast start, in units; a camera with a longer keyframe interval gets
/// no cache past this point (a new consumer then waits for the next keyframe).
const MAX_CACHED_GOP: usize = 300;

#[derive(Debug, Default)]
struct Cache {
    gop: Vec<Arc<AccessUnit>>,
    next_seq: u64,
    /// (capture_ms, seq, rtp_timestamp) of the last [`RECENT_UNITS`] units.
    recent: VecDeque<(u64, u64, RtpTimestamp)>,
}

/// Units remembered for [`Hub::unit_near`]: about 2 s at 30 fps.
const RECENT_UNITS: usize = 64;

/// Fan-out of one stream's access units. See the module docs.
#[derive(Debug)]
pub(crate) struct Hub {
    stream_id: StreamId,
    cache: Mutex<Cache>,
    tx: broadcast::Sender<Arc<AccessUnit>>,
    sps: watch::Sender<Option<SequenceInfo>>,
}

impl Hub {
    /// An empty hub for `stream_id` (used in metric labels).
    pub(crate) fn new(stream_id: StreamId) -> Hub {
        Hub {
            stream_id,
            cache: Mutex::new(Cache { gop: Vec::new(), next_seq: 1, recent: VecDeque::new() }),
            tx: broadcast::channel(FANOUT_DEPTH).0,
            sps: watch::Sender::new(None),
        }
    }

    /// Numbers and sends one unit to every subscriber; never waits.
    pub(crate) fn publish(&self, unit: NewAccessUnit) -> Arc<AccessUnit> {
        let mut cache = self.cache.lock();
        let au = Arc::new(AccessUnit::new(cache.next_seq, unit));
        cache.next_seq += 1;
        if cache.recent.len() == RECENT_UNITS {
            cache.recent.pop_front();
        }
        cache.recent.push_back((au.capture_ms, au.seq, au.rtp_timestamp));
        if au.keyframe {
            cache.gop.clear();
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
    pub(crate) fn unit_near(&self, capture_ms: u64, tolerance_ms: u64) -> Option<(u64, RtpTimestamp)> {
        let cache = self.cache.lock();
        cache
            .recent
            .iter()
            .map(|&(at, seq, ts)| (at.abs_diff(capture_ms), seq, ts))
            .filter(|&(d, _, _)| d <= tolerance_ms)
            .min_by_key(|&(d, _, _)| d)
            .map(|(_, seq, ts)| (seq, ts))
    }

    /// Announces the stream's SPS (parsed by ingest from a keyframe) to [`Hub::watch_sps`]ers.
    pub(crate) fn set_sps(&self, sps: SequenceInfo) {
        self.sps.send_replace(Some(sps));
    }

    /// The stream's SPS as last announced (`None` before the first keyframe).
    pub(crate) fn sps(&self) -> Option<SequenceInfo> {
        self.sps.borrow().clone()
    }

    /// Follows the stream's SPS (codec, picture size, profile): `None` until the first keyframe.
    pub(crate) fn watch_sps(&self) -> watch::Receiver<Option<SequenceInfo>> {
        self.sps.subscribe()
    }

    /// The units from the last keyframe to now (empty when no keyframe is cached).
    pub(crate) fn cached_gop(&self) -> Vec<Arc<AccessUnit>> {
        self.cache.lock().gop.clone()
    }

    /// Number of units in the cached GOP.
    pub(crate) fn cached_gop_len(&self) -> usize {
        self.cache.lock().gop.len()
    }

    /// Forgets the cached GOP (the camera session ended; its pictures are stale).
    pub(crate) fn clear_cache(&self) {
        self.cache.lock().gop.clear();
    }

    /// A new consumer, starting with the cached GOP.
    pub(crate) fn subscribe(&self) -> Subscription {
        let cache = self.cache.lock();
        Subscription {
            stream_id: self.stream_id.clone(),
            backlog: cache.gop.iter().cloned().collect(),
            rx: self.tx.subscribe(),
            need_keyframe: cache.gop.is_empty(),
        }
    }

    /// A new consumer of live units only (no cached GOP); it gets every unit from now on,
    /// keyframe or not, except after falling behind (then it skips to a keyframe).
    pub(crate) fn subscribe_live(&self) -> Subscription {
        let _cache = self.cache.lock();
        Subscription { stream_id: self.stream_id.clone(), backlog: VecDeque::new(), rx: self.tx.subscribe(), need_keyframe: false }
    }
}

/// A consumer's view of a [`Hub`]: call [`Subscription::next`] in a loop.
#[derive(Debug)]
pub(crate) struct Subscription {
    stream_id: StreamId,
    backlog: VecDeque<Arc<AccessUnit>>,
    rx: broadcast::Receiver<Arc<AccessUnit>>,
    need_keyframe: bool,
}

impl Subscription {
    /// The next unit, starting at a keyframe and after any skip at the next keyframe.
    /// Returns `None` only when the hub is gone.
    pub(crate) async fn next(&mut self) -> Option<Arc<AccessUnit>> {
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
    pub(crate) fn in_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(keyframe: bool, ts: u32) -> NewAccessUnit {
        NewAccessUnit {
            rtp_timestamp: RtpTimestamp::new(ts),
            capture_ms: u64::from(ts),
            keyframe,
            codec: media::VideoCodec::H264,
            data: bytes::Bytes::from_static(b"\0\0\0\x01\x65"),
        }
    }

    #[tokio::test]
    async fn new_subscriber_starts_with_the_cached_gop() {
        let hub = Hub::new("s".into());
        hub.publish(unit(false, 0)); // before any keyframe: not cached
        hub.publish(unit(true, 1));
        hub.publish(unit(false, 2));
        let mut sub = hub.subscribe();
        assert!(sub.in_backlog());
        assert_eq!(sub.next().await.unwrap().rtp_timestamp.get(), 1);
        assert_eq!(sub.next().await.unwrap().seq, 3);
        assert!(!sub.in_backlog());
        hub.publish(unit(false, 3));
        assert_eq!(sub.next().await.unwrap().rtp_timestamp.get(), 3);
    }

    #[tokio::test]
    async fn without_cache_a_subscriber_waits_for_a_keyframe() {
        let hub = Hub::new("s".into());
        let mut sub = hub.subscribe();
        hub.publish(unit(false, 0));
        hub.publish(unit(true, 1));
        assert_eq!(sub.next().await.unwrap().rtp_timestamp.get(), 1);
    }

    #[tokio::test]
    async fn a_slow_subscriber_skips_to_the_next_keyframe() {
        let hub = Hub::new("s".into());
        hub.publish(unit(true, 0));
        let mut sub = hub.subscribe();
        assert!(sub.next().await.unwrap().keyframe);
        for ts in 1..(FANOUT_DEPTH as u32 + 10) {
            hub.publish(unit(false, ts));
        }
        hub.publish(unit(true, 1000));
        hub.publish(unit(false, 1001));
        let au = sub.next().await.unwrap();
        assert_eq!((au.rtp_timestamp.get(), au.keyframe), (1000, true));
        assert_eq!(sub.next().await.unwrap().rtp_timestamp.get(), 1001);
    }
}
