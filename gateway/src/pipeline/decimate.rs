//! Which frames a consumer at a lower rate takes, by RTP timestamp.

use media::RtpTimestamp;

/// Picks frames for a viewer at `fps` out of a camera's frames by RTP timestamp.
///
/// The timeline is cut into a fixed grid of `90 000 / fps`-tick slots (from RTP timestamp 0)
/// and the first frame of each slot is taken (after the very first frame, which is taken at
/// once wherever it falls, a slot whose first frame is under half an interval later is
/// skipped, so the rate never spikes). The grid does not depend on when a consumer
/// started, so every consumer at the same rate takes the same frames (one JPEG encode serves
/// viewers that joined at different times; SSE frames and detections at the same rate name
/// the same frames), and a rate that divides another takes a subset of its frames.
#[derive(Debug)]
pub(crate) struct Decimator {
    interval: u32,
    /// The last frame taken.
    taken: Option<RtpTimestamp>,
    /// The last frame seen (reordering check).
    seen: Option<RtpTimestamp>,
    /// The slot of the last frame seen.
    slot: Option<u32>,
}

/// A timestamp step larger than this, either way, is a camera restart: start over.
const MAX_TS_STEP: i64 = 10 * RtpTimestamp::CLOCK_HZ as i64;

impl Decimator {
    /// A decimator for `fps` frames per second (1 or more).
    pub(crate) fn new(fps: u32) -> Decimator {
        Decimator { interval: RtpTimestamp::CLOCK_HZ / fps.max(1), taken: None, seen: None, slot: None }
    }

    /// Whether the frame with RTP timestamp `ts` should be taken.
    pub(crate) fn take(&mut self, ts: RtpTimestamp) -> bool {
        if let Some(seen) = self.seen {
            let step = ts.ticks_since(seen);
            if (-MAX_TS_STEP..=0).contains(&step) {
                // B-frame reordering: no time passed.
                return false;
            }
        }
        self.seen = Some(ts);
        let slot = ts.get() / self.interval;
        if self.slot == Some(slot) {
            return false;
        }
        self.slot = Some(slot);
        let take = match self.taken {
            None => true,
            Some(prev) => ts.ticks_since(prev).abs() >= i64::from(self.interval / 2),
        };
        if take {
            self.taken = Some(ts);
        }
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(fps: u32, source_fps: u32, frames: u32) -> usize {
        let mut d = Decimator::new(fps);
        let step = RtpTimestamp::CLOCK_HZ / source_fps;
        (0..frames).filter(|i| d.take(RtpTimestamp::new(0xffff_0000u32.wrapping_add(i * step)))).count()
    }

    #[test]
    fn decimation_keeps_the_requested_rate() {
        // Within two frames over 10 s: the first slot may be partial (grid phase), and the
        // 2^32 wrap (once per 13 h) is not a whole number of slots, so it adds one.
        let near = |got: usize, want: usize| got.abs_diff(want) <= 2;
        assert!(near(taken(10, 25, 250), 100), "10 of 25 fps over 10 s (wrapping timestamps)");
        assert!(near(taken(5, 25, 250), 50));
        assert_eq!(taken(30, 25, 250), 250, "cannot exceed the source");
        assert!(near(taken(1, 30, 300), 10));
        assert!(near(taken(15, 30, 300), 150));
    }

    #[test]
    fn consumers_at_one_rate_take_the_same_frames_whenever_they_start() {
        let frames: Vec<u32> = (0..500u32).map(|i| 123_456 + i * 3600).collect();
        let picks = |fps: u32, from: usize| -> Vec<u32> {
            let mut d = Decimator::new(fps);
            frames[from..].iter().copied().filter(|&ts| d.take(RtpTimestamp::new(ts))).skip(1).collect()
        };
        let early = picks(10, 0);
        let late = picks(10, 37);
        assert!(late.iter().all(|ts| early.contains(ts)), "a late joiner takes the same frames");
        let five = picks(5, 11);
        assert!(five.iter().all(|ts| early.contains(ts)), "5 fps takes a subset of the 10 fps frames");
    }

    #[test]
    fn decimation_restarts_after_a_timestamp_jump() {
        let mut d = Decimator::new(10);
        assert!(d.take(RtpTimestamp::new(1000)));
        assert!(!d.take(RtpTimestamp::new(4600)));
        assert!(d.take(RtpTimestamp::new(1_000_000_000)), "a camera restart with new timestamps shows at once");
    }
}
