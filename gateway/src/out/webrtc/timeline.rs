//! Which access units a WebRTC viewer gets, and with which RTP timestamps (sans-IO).
//!
//! The camera's RTP timestamp is kept (out = in + a per-viewer offset, normally 0) so the
//! browser's `requestVideoFrameCallback` `rtpTimestamp` names the camera frame. Two things
//! bend that:
//! - **Bursts** (fast start, keyframe requests): the cached GOP is sent at once so the decoder
//!   reaches the live picture immediately. Its frames get timestamps one tick apart, squeezed
//!   below the newest one (or just above the last one sent), so the browser's jitter buffer
//!   does not schedule them over the GOP's real duration (which would add that much delay).
//! - **Camera restarts**: a new camera session starts at a random timestamp; the offset is
//!   re-chosen so the viewer's timeline continues one frame later, and the change is reported
//!   (the UI subtracts the offset to match detections to frames).

use std::sync::Arc;

use media::RtpTimestamp;

use crate::core::frame::AccessUnit;

/// A timestamp step larger than this (10 s), either way, is a new camera session.
const MAX_STEP: i64 = 10 * RtpTimestamp::CLOCK_HZ as i64;
/// Shortest frame interval assumed, 90 kHz ticks (90 fps): a burst squeezed into less than
/// this after the last frame sent cannot collide with the next live frame.
const MIN_FRAME_INTERVAL: u32 = 1000;
/// Step assumed across a camera restart (one frame at 25 fps), 90 kHz ticks.
const RESTART_STEP: u32 = RtpTimestamp::CLOCK_HZ / 25;

/// Per-viewer timeline state. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    last_seq: u64,
    last_in: Option<RtpTimestamp>,
    last_out: Option<RtpTimestamp>,
    /// out = camera timestamp + offset (90 kHz ticks, wrapping).
    offset: u32,
    offset_changed: bool,
    waiting_for_keyframe: bool,
}

impl Timeline {
    /// A viewer that has been sent nothing.
    pub(crate) fn new() -> Timeline {
        Timeline { waiting_for_keyframe: true, ..Timeline::default() }
    }

    /// The current offset (out = camera timestamp + offset, wrapping).
    pub(crate) fn offset(&self) -> u32 {
        self.offset
    }

    /// Whether the offset changed since the last call (then tell the viewer).
    pub(crate) fn take_offset_change(&mut self) -> bool {
        std::mem::take(&mut self.offset_changed)
    }

    /// Whether an offset change waits to be told (see [`Timeline::take_offset_change`]).
    pub(crate) fn offset_change_pending(&self) -> bool {
        self.offset_changed
    }

    /// Whether anything was sent yet.
    #[cfg(test)]
    fn started(&self) -> bool {
        self.last_out.is_some()
    }

    /// Plans a burst of `gop` (which must start with a keyframe): returns each unit with
    /// the timestamp to send it with. Empty if `gop` is empty or does not start at a keyframe.
    pub(crate) fn burst(&mut self, gop: &[Arc<AccessUnit>]) -> Vec<(Arc<AccessUnit>, RtpTimestamp)> {
        let (Some(first), Some(last)) = (gop.first(), gop.last()) else { return Vec::new() };
        if !first.keyframe {
            return Vec::new();
        }
        let n = gop.len() as u32;
        let first_ts = match self.last_out {
            // Squeeze below the newest unit's own timestamp: live frames then follow at offset 0.
            None => last.rtp_timestamp.wrapping_add(self.offset).wrapping_sub(n - 1),
            // Squeeze just after what the viewer already has.
            Some(out) => out.wrapping_add(1),
        };
        let planned: Vec<_> = gop.iter().enumerate().map(|(i, au)| (au.clone(), first_ts.wrapping_add(i as u32))).collect();
        let last_out = first_ts.wrapping_add(n - 1);
        // The next live unit is at least one frame interval after the newest one; if the
        // squeeze could reach that, shift the offset so timestamps never go backwards.
        let next_live = last.rtp_timestamp.wrapping_add(self.offset).wrapping_add(MIN_FRAME_INTERVAL);
        if next_live.ticks_since(last_out) <= 0 {
            self.set_offset(last_out.offset_from(last.rtp_timestamp).wrapping_add(1));
        }
        self.last_seq = self.last_seq.max(last.seq);
        self.last_in = Some(last.rtp_timestamp);
        self.last_out = Some(last_out);
        self.waiting_for_keyframe = false;
        planned
    }

    /// Sends nothing more until the next keyframe (a keyframe request that is not answered
    /// with a burst).
    pub(crate) fn wait_for_keyframe(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// Plans a live unit: `Some(timestamp)` to send it, `None` to skip it (already sent in a
    /// burst, or a delta frame while waiting for a keyframe).
    pub(crate) fn live(&mut self, au: &AccessUnit) -> Option<RtpTimestamp> {
        if au.seq <= self.last_seq || (self.waiting_for_keyframe && !au.keyframe) {
            return None;
        }
        if let (Some(last_in), Some(last_out)) = (self.last_in, self.last_out) {
            // Backwards by less than MAX_STEP is B-frame reordering, not a new camera session.
            let step = au.rtp_timestamp.ticks_since(last_in);
            if !(-MAX_STEP..=MAX_STEP).contains(&step) || (step == 0 && au.keyframe) {
                self.set_offset(last_out.wrapping_add(RESTART_STEP).offset_from(au.rtp_timestamp));
            }
        }
        let out = au.rtp_timestamp.wrapping_add(self.offset);
        self.last_seq = au.seq;
        self.last_in = Some(au.rtp_timestamp);
        self.last_out = Some(out);
        self.waiting_for_keyframe = false;
        Some(out)
    }

    fn set_offset(&mut self, offset: u32) {
        if offset != self.offset {
            self.offset = offset;
            self.offset_changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::NewAccessUnit;

    fn au(seq: u64, ts: u32, keyframe: bool) -> Arc<AccessUnit> {
        Arc::new(AccessUnit::new(
            seq,
            NewAccessUnit {
                rtp_timestamp: RtpTimestamp::new(ts),
                capture_ms: 0,
                keyframe,
                codec: media::VideoCodec::H264,
                data: bytes::Bytes::new(),
            },
        ))
    }

    /// The planned timestamps as numbers.
    fn ts(t: Option<RtpTimestamp>) -> Option<u32> {
        t.map(RtpTimestamp::get)
    }

    #[test]
    fn live_start_waits_for_a_keyframe_and_keeps_camera_timestamps() {
        let mut t = Timeline::new();
        assert_eq!(ts(t.live(&au(1, 1000, false))), None);
        assert_eq!(ts(t.live(&au(2, 4600, true))), Some(4600));
        assert_eq!(ts(t.live(&au(3, 8200, false))), Some(8200));
        assert_eq!(t.offset(), 0);
        assert!(!t.take_offset_change());
    }

    #[test]
    fn fast_start_squeezes_the_gop_below_the_newest_frame() {
        let mut t = Timeline::new();
        let gop = [au(10, 0xffff_f000, true), au(11, 0xffff_f000 + 3600, false), au(12, 0xffff_f000u32.wrapping_add(7200), false)];
        let plan = t.burst(&gop);
        let newest = 0xffff_f000u32.wrapping_add(7200);
        let planned: Vec<u32> = plan.iter().map(|(_, t)| t.get()).collect();
        assert_eq!(planned, vec![newest.wrapping_sub(2), newest.wrapping_sub(1), newest]);
        assert_eq!(ts(t.live(&au(12, newest, false))), None, "sent in the burst already");
        assert_eq!(ts(t.live(&au(13, newest.wrapping_add(3600), false))), Some(newest.wrapping_add(3600)));
        assert_eq!(t.offset(), 0, "camera timestamps kept after a fast start");
    }

    #[test]
    fn keyframe_request_burst_goes_after_what_was_sent() {
        let mut t = Timeline::new();
        assert_eq!(ts(t.live(&au(1, 100, true))), Some(100));
        assert_eq!(ts(t.live(&au(2, 3700, false))), Some(3700));
        let plan = t.burst(&[au(1, 100, true), au(2, 3700, false)]);
        assert_eq!(plan.iter().map(|(_, t)| t.get()).collect::<Vec<_>>(), vec![3701, 3702]);
        // The burst fits before the next frame: live keeps camera timestamps.
        assert_eq!(ts(t.live(&au(3, 7300, false))), Some(7300));
        assert!(!t.take_offset_change());
        // A burst too long to fit before the next frame shifts the offset instead of going
        // backwards: 1200 frames ending at the frame last sent.
        let gop: Vec<_> = (0..1200u32).map(|i| au(100 + u64::from(i), 7300u32.wrapping_sub(3600 * (1199 - i)), i == 0)).collect();
        let last_out = t.burst(&gop).last().unwrap().1.get();
        assert_eq!(last_out, 7300 + 1200);
        let next = t.live(&au(1300, 7300 + 3600, false)).unwrap().get();
        assert!(next > last_out, "{next} after {last_out}");
        assert!(t.take_offset_change());
    }

    #[test]
    fn camera_restart_continues_one_frame_later() {
        let mut t = Timeline::new();
        assert_eq!(ts(t.live(&au(1, 50_000, true))), Some(50_000));
        assert_eq!(ts(t.live(&au(2, 53_600, false))), Some(53_600));
        // New camera session: random timestamp far away.
        let out = t.live(&au(3, 3_000_000_000, true)).unwrap().get();
        assert_eq!(out, 53_600 + RESTART_STEP);
        assert!(t.take_offset_change());
        assert_eq!(ts(t.live(&au(4, 3_000_003_600, false))), Some(out + 3600));
    }

    #[test]
    fn b_frame_reordering_is_not_a_camera_restart() {
        let mut t = Timeline::new();
        assert_eq!(ts(t.live(&au(1, 10_000, true))), Some(10_000));
        assert_eq!(ts(t.live(&au(2, 20_800, false))), Some(20_800), "P frame three frames ahead");
        assert_eq!(ts(t.live(&au(3, 13_600, false))), Some(13_600), "B frame: earlier timestamp, kept");
        assert_eq!(ts(t.live(&au(4, 17_200, false))), Some(17_200));
        assert!(!t.take_offset_change());
    }

    #[test]
    fn bursts_need_a_keyframe_first() {
        let mut t = Timeline::new();
        assert!(t.burst(&[]).is_empty());
        assert!(t.burst(&[au(1, 0, false)]).is_empty());
        assert!(!t.started());
    }
}
