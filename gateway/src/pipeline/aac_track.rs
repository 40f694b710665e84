//! A camera's audio as the AAC track of fragmented MP4 (issue #14), for recordings and live
//! LL-HLS: AAC as received (its ADTS headers dropped: the AudioSpecificConfig goes in the
//! init segment), G.711 encoded as AAC ([`AacEncoding`]: no MP4 or HLS player takes G.711).
//!
//! Each unit is placed on the video's timeline (90 kHz ticks since the Unix epoch) by the
//! camera's clocks — its capture time from the audio sender reports against the last video
//! unit's ([`VideoClock`]), else receive times — and then advanced by its RTP clock, so the
//! track has no gaps and stays within a frame of the picture; a unit more than
//! [`SLIP_MS`] from where the clocks place it re-anchors the track. Units wait until a
//! fragment takes them ([`AacTrack::take`]): those decoded before the fragment's end whose
//! length is known (the next unit has come).
//!
//! An init segment gets an audio track only while audio comes ([`AacTrack::wanted`]): audio
//! gone for [`GONE`], or never come in a camera session, and the next init segment goes
//! without one (a player's buffered range is its tracks' intersection: a track without
//! samples stalls it).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use media::AudioCodec;
use media::audio::{AacConfig, adts_frame_samples, adts_payload};
use media::fmp4::{AudioSample, TIMESCALE};
use tracing::warn;

use super::audio::AacEncoding;
use crate::core::audio::{AudioFrame, AudioInfo};

/// Camera audio gone for this long (or never come in a camera session): the next init
/// segment has no audio track.
pub(crate) const GONE: Duration = Duration::from_secs(1);
/// A unit this far from where the camera's clocks place it re-anchors the track.
pub(crate) const SLIP_MS: i64 = 200;
/// Units waiting for their fragment, at most (~10 s of 16 kHz AAC).
const QUEUE: usize = 160;

/// Where the last video unit is: its time on the fragments' timeline (90 kHz ticks since
/// the Unix epoch), its capture time (ms since the epoch) and when it was received.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VideoClock {
    /// Presentation time on the timeline, 90 kHz ticks since the Unix epoch.
    pub(crate) ticks: i64,
    /// Capture time, ms since the Unix epoch (the camera's, or the receive time).
    pub(crate) capture_ms: u64,
    /// Receive time.
    pub(crate) received: Instant,
}

/// One AAC unit waiting for its fragment.
struct Queued {
    /// Decoding time, in the sampling rate's ticks since the Unix epoch.
    dts: i64,
    /// Its length in samples (1024 per raw data block).
    nominal: u32,
    /// The raw access unit.
    data: Vec<u8>,
}

/// One stream's audio on its way into fragments. See the module docs.
pub(crate) struct AacTrack {
    stream: String,
    /// The configuration of the units queued.
    config: Option<AacConfig>,
    /// When the camera session's first video unit came.
    since: Option<Instant>,
    /// When the last audio frame came.
    last_seen: Option<Instant>,
    /// The last unit's RTP timestamp and decoding time (sampling-rate ticks since the epoch).
    last: Option<(u32, i64)>,
    queue: VecDeque<Queued>,
    /// G.711 to AAC, for a camera sending G.711 (behind a lock only so the track is `Sync`:
    /// one task uses it).
    g711: Option<parking_lot::Mutex<AacEncoding>>,
    /// Why the camera's audio cannot be stored, else `None`.
    reason: Option<String>,
}

impl AacTrack {
    /// An empty track for stream `stream` (in logs and metric labels).
    pub(crate) fn new(stream: &str) -> AacTrack {
        AacTrack {
            stream: stream.to_owned(),
            config: None,
            since: None,
            last_seen: None,
            last: None,
            queue: VecDeque::new(),
            g711: None,
            reason: None,
        }
    }

    /// A new camera session (a reconnect, a clock jump): the audio is placed again, nothing
    /// queued is kept.
    pub(crate) fn reset(&mut self) {
        *self = AacTrack { reason: self.reason.take(), ..AacTrack::new(&self.stream) };
    }

    /// Notes a video unit received at `received` (the first of a camera session starts the
    /// wait for audio).
    pub(crate) fn video(&mut self, received: Instant) {
        self.since.get_or_insert(received);
    }

    /// Why the camera's audio cannot be stored (its G.711 cannot be encoded), else `None`.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The audio track an init segment made now gets, for a stream whose audio is `info`:
    /// the camera's audio as AAC while it comes (the SDP's configuration, AAC-LC, until a
    /// unit says otherwise); none once it has not come for [`GONE`].
    pub(crate) fn wanted(&self, info: Option<&AudioInfo>) -> Option<AacConfig> {
        let info = info?;
        info.codec?;
        let heard = self.last_seen.or(self.since)?;
        if heard.elapsed() > GONE {
            return None;
        }
        self.config.or_else(|| AacConfig::lc(info.clock_rate, info.channels.clamp(1, 2)))
    }

    /// Takes one of the camera's audio frames (`info` says what it is): AAC as it is, G.711
    /// encoded (one 1024-sample unit every 128 ms at 8 kHz, ~0.1 ms each: done here), queued
    /// at its place against `clock` (none: no video to place it by, not queued).
    pub(crate) fn frame(&mut self, info: &AudioInfo, frame: &AudioFrame, clock: Option<VideoClock>) {
        match info.codec {
            Some(AudioCodec::Aac) => {
                let (Some(config), Some(raw)) = (AacConfig::from_adts(&frame.data), adts_payload(&frame.data)) else {
                    metrics::counter!("sightline_aac_track_frames_dropped_total", "stream" => self.stream.clone(), "reason" => "not_adts")
                        .increment(1);
                    return;
                };
                self.reason = None;
                self.place(config, frame.rtp_timestamp, raw.to_vec(), adts_frame_samples(&frame.data), frame, clock);
            }
            Some(codec @ (AudioCodec::Pcma | AudioCodec::Pcmu)) => {
                if self.g711.as_ref().is_none_or(|w| {
                    let w = w.lock();
                    w.input() != info || w.jumped(frame)
                }) {
                    match AacEncoding::new(info.clone()) {
                        Ok(w) => self.g711 = Some(parking_lot::Mutex::new(w)),
                        Err(e) => {
                            self.g711 = None;
                            if self.reason.is_none() {
                                let reason = format!("camera audio {codec} cannot be encoded as AAC: {e}");
                                warn!(stream = %self.stream, %codec, "{reason}; no audio track");
                                self.reason = Some(reason);
                            }
                            return;
                        }
                    }
                }
                let Some(work) = self.g711.as_ref() else { return };
                let (config, units) = {
                    let mut w = work.lock();
                    (w.config(), w.encode(frame))
                };
                match (config, units) {
                    (Some(config), Ok(units)) => {
                        self.reason = None;
                        for unit in units {
                            self.place(config, unit.rtp_timestamp, unit.data, 1024, frame, clock);
                        }
                    }
                    (_, Err(e)) => {
                        warn!(stream = %self.stream, %codec, error = %e, "cannot encode camera audio as AAC; the encoder starts again");
                        metrics::counter!("sightline_aac_track_frames_dropped_total", "stream" => self.stream.clone(), "reason" => "encode")
                            .increment(1);
                        self.g711 = None;
                    }
                    (None, Ok(_)) => {}
                }
            }
            None => {}
        }
    }

    /// Queues one AAC unit (`config`, its first sample at `rtp` on the camera's audio clock,
    /// `nominal` samples long), placed by the camera's clocks through `reference` (the
    /// camera's frame it came from: capture and receive times) against `clock`, then advanced
    /// by the RTP clock.
    fn place(&mut self, config: AacConfig, rtp: u32, data: Vec<u8>, nominal: u32, reference: &AudioFrame, clock: Option<VideoClock>) {
        if self.config != Some(config) {
            self.config = Some(config);
            self.last = None;
            self.queue.clear();
        }
        self.last_seen = Some(reference.received);
        let Some(clock) = clock else { return };
        let rate = i64::from(config.sample_rate());
        let offset_ms = if reference.capture_ms > 0 {
            reference.capture_ms as i64 - clock.capture_ms as i64
        } else if reference.received >= clock.received {
            reference.received.duration_since(clock.received).as_millis() as i64
        } else {
            -(clock.received.duration_since(reference.received).as_millis() as i64)
        };
        let estimate =
            (clock.ticks + offset_ms * 90) * rate / TIMESCALE as i64 + i64::from(rtp.wrapping_sub(reference.rtp_timestamp) as i32);
        let dts = match self.last {
            Some((last_rtp, last)) => {
                let step = i64::from(rtp.wrapping_sub(last_rtp) as i32);
                if (-rate..=0).contains(&step) {
                    return; // repeated or out of order: its place is taken
                }
                let next = last + step;
                if step < 0 || (next - estimate).abs() > SLIP_MS * rate / 1000 { estimate } else { next }
            }
            None => estimate,
        };
        // Re-anchored back in time: what it overlaps is dropped.
        while self.queue.back().is_some_and(|q| q.dts >= dts) {
            self.queue.pop_back();
        }
        if self.queue.len() >= QUEUE {
            self.queue.pop_front();
        }
        self.last = Some((rtp, dts));
        self.queue.push_back(Queued { dts, nominal, data });
    }

    /// The units to store with a fragment of an init segment with audio track `track`,
    /// starting at `start90` and ending at `end90` (90 kHz ticks since the epoch): those
    /// decoded before the end whose length is known (the next unit has come; all of them for
    /// a `last` fragment). Units wholly before `start90` are dropped. None when `track` is not
    /// the configuration of the units queued.
    pub(crate) fn take(&mut self, track: Option<AacConfig>, start90: i64, end90: i64, last: bool) -> Vec<AudioSample> {
        let Some(config) = track.filter(|c| self.config == Some(*c)) else { return Vec::new() };
        let rate = i64::from(config.sample_rate());
        let (start, end) = (start90 * rate / TIMESCALE as i64, end90 * rate / TIMESCALE as i64);
        while self.queue.front().is_some_and(|q| q.dts + i64::from(q.nominal) <= start) {
            self.queue.pop_front();
        }
        let mut out = Vec::new();
        while let Some(q) = self.queue.front() {
            if q.dts >= end {
                break;
            }
            let duration = match self.queue.get(1) {
                Some(next) => next.dts - q.dts,
                None if last => i64::from(q.nominal),
                None => break,
            };
            let q = self.queue.pop_front().expect("a front unit");
            out.push(AudioSample { dts: q.dts.max(0) as u64, duration: duration.clamp(1, i64::from(u32::MAX)) as u32, data: q.data });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An ADTS frame: AAC-LC, 16 kHz, mono, 3 payload bytes `n`.
    fn adts(n: u8) -> Arc<[u8]> {
        Arc::from(&[0xFF, 0xF1, 0x60, 0x40, 0x01, 0x5F, 0xFC, n, n, n][..])
    }

    #[test]
    fn units_follow_the_rtp_clock_from_where_the_capture_times_place_them() {
        let info = AudioInfo { codec: Some(AudioCodec::Aac), clock_rate: 16_000, channels: 1 };
        let mut track = AacTrack::new("s");
        let now = Instant::now();
        assert_eq!(track.wanted(Some(&info)), None, "no video yet: no session");
        track.video(now);
        assert_eq!(track.wanted(Some(&info)), AacConfig::lc(16_000, 1), "the SDP's until a unit comes");
        // Video at 10 s on the timeline, captured at t = 1000 ms; audio captured 20 ms later.
        let clock = VideoClock { ticks: 900_000, capture_ms: 1000, received: now };
        for i in 0..5u32 {
            let frame =
                AudioFrame { rtp_timestamp: 7 + 1024 * i, received: now, capture_ms: 1020 + u64::from(i) * 64, data: adts(i as u8) };
            track.frame(&info, &frame, Some(clock));
        }
        // 10.02 s at 16 kHz = 160 320; then 1024 apart. A fragment to 10.2 s takes the three
        // units before it (the third's length known from the fourth).
        let config = AacConfig::lc(16_000, 1);
        let got = track.take(config, 900_000, 918_000, false);
        assert_eq!(
            got.iter().map(|s| (s.dts, s.duration, s.data[0])).collect::<Vec<_>>(),
            [(160_320, 1024, 0), (161_344, 1024, 1), (162_368, 1024, 2)]
        );
        // A unit 1 s off where the clocks place it re-anchors; the last fragment takes all.
        let jump = AudioFrame { rtp_timestamp: 7 + 1024 * 5 + 16_000, received: now, capture_ms: 1020 + 5 * 64, data: adts(9) };
        track.frame(&info, &jump, Some(clock));
        let got = track.take(config, 900_000, 1_000_000, true);
        assert_eq!(got.iter().map(|s| (s.dts, s.data[0])).collect::<Vec<_>>(), [(163_392, 3), (164_416, 4), (165_440, 9)]);
        assert_eq!(got[1].duration, 1024, "the re-anchored unit follows without a gap");
        // Another configuration's track takes nothing; garbage is dropped.
        track.frame(&info, &AudioFrame { rtp_timestamp: 0, received: now, capture_ms: 0, data: Arc::from(&b"garbage"[..]) }, Some(clock));
        assert!(track.take(AacConfig::lc(48_000, 2), 0, i64::MAX / 2, true).is_empty());
    }
}
