//! Live Low-Latency HLS (issue #14; RFC 8216bis §4.4.3.7-8, §4.4.5.2, §6.2.5-6): one
//! producer per stream, shared by every viewer, running only while someone fetches (it holds
//! one viewer place, `hls`, so the camera is pulled; it stops 30 s after the last request).
//!
//! The producer follows the hub from a keyframe and cuts the access units, as received, into
//! fMP4 parts of about [`PART_TARGET`] (a part ends before a keyframe or once it is that long)
//! and segments that start at keyframes and last at least [`SEGMENT_MIN`] (a camera's GOP,
//! usually); `media::fmp4` makes the init segment and each part's `moof` + `mdat`, and a
//! segment is its parts back to back. It keeps the last [`KEEP`] segments. The camera's audio
//! rides in the same parts as an AAC track (AAC as received, G.711 encoded; placed on the
//! video's timeline by [`AacTrack`]), listed in the multivariant playlist's `CODECS`; audio
//! appearing, stopping or changing starts over at the next keyframe (a discontinuity with a
//! new init segment).
//!
//! The media playlist lists segments with their parts for the newest three, and a preload
//! hint for the next part; a request for a playlist with `_HLS_msn`/`_HLS_part` waits until
//! that part exists (blocking reload), and so does a request for the hinted part.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::VideoCodec;
use media::audio::AacConfig;
use media::fmp4::{self, ParameterSets, Sample, TIMESCALE};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::core::Error;
use crate::core::audio::AudioInfo;
use crate::core::shutdown::Shutdown;
use crate::pipeline::aac_track::{AacTrack, VideoClock};
use crate::stream::StreamRuntime;
use crate::stream::viewers::ViewerKind;

/// Parts last about this long.
pub(crate) const PART_TARGET: Duration = Duration::from_millis(200);
/// A segment is cut at the first keyframe after this long.
const SEGMENT_MIN: Duration = Duration::from_secs(1);
/// Segments kept (and listed).
const KEEP: usize = 8;
/// Segments whose parts are listed (RFC 8216bis: at least those of the last 3 target durations).
const WITH_PARTS: usize = 3;
/// A producer nobody asked anything of for this long stops.
const IDLE: Duration = Duration::from_secs(30);
/// How long a blocking request waits.
const BLOCK: Duration = Duration::from_secs(6);

/// Every stream's live producer.
#[derive(Debug, Default)]
pub(crate) struct Hls {
    live: parking_lot::Mutex<HashMap<String, Arc<Live>>>,
}

impl Hls {
    /// `rt`'s producer, started if none runs; counts as a request.
    ///
    /// Errors: the viewer limits ([`StreamRuntime::try_consumer`]).
    pub(crate) fn live(self: &Arc<Self>, rt: &Arc<StreamRuntime>) -> Result<Arc<Live>, Error> {
        let mut map = self.live.lock();
        if let Some(live) = map.get(&rt.config.id).filter(|l| !l.ended()) {
            live.touch();
            return Ok(live.clone());
        }
        let guard = rt.try_consumer(ViewerKind::Hls)?;
        let (tx, _) = watch::channel(0u64);
        let live = Arc::new(Live {
            stream: rt.config.id.clone(),
            state: parking_lot::Mutex::new(State { next_msn: crate::core::clock::now_ms() / 1000, ..State::default() }),
            changed: tx,
            last_request: parking_lot::Mutex::new(Instant::now()),
        });
        map.insert(rt.config.id.clone(), live.clone());
        info!(stream = %rt.config.id, "LL-HLS producer started");
        let (hls, rt, producer) = (self.clone(), rt.clone(), live.clone());
        tokio::spawn(async move {
            producer.produce(&rt, rt.shutdown()).await;
            drop(guard);
            hls.live.lock().retain(|_, l| !Arc::ptr_eq(l, &producer));
            info!(stream = %rt.config.id, "LL-HLS producer stopped");
        });
        Ok(live)
    }
}

/// One part: `moof` + `mdat`.
#[derive(Debug, Clone)]
struct Part {
    data: Bytes,
    /// Seconds.
    duration: f64,
    independent: bool,
}

#[derive(Debug, Default)]
struct Segment {
    msn: u64,
    parts: Vec<Part>,
    /// Wall-clock time of its first unit, ms since the Unix epoch.
    start_ms: u64,
    complete: bool,
}

impl Segment {
    fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

/// What the producer has made.
#[derive(Debug, Default)]
struct State {
    init: Option<Bytes>,
    /// Bumped with each new init segment (its URI carries it: caches keep no stale one).
    generation: u32,
    /// The next segment's media sequence number: never reused, seeded from the wall clock
    /// (segments last >= 1 s, so a producer started later starts above an earlier one's).
    next_msn: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`: bumped when the producer starts over (new parameter
    /// sets, or the camera's clock jumped).
    discontinuity: u64,
    /// `EXT-X-TARGETDURATION`: the longest segment so far, s (never lowered).
    target: u64,
    /// RFC 6381 codecs and the picture size, for the multivariant playlist.
    codecs: String,
    size: (u32, u32),
    /// Completed segments and the open one (last), oldest first.
    segments: VecDeque<Segment>,
    ended: bool,
}

impl State {
    /// Whether part `part` of segment `msn` exists (or a later one does).
    fn has(&self, msn: u64, part: Option<usize>) -> bool {
        let Some(last) = self.segments.back() else { return false };
        match part {
            None => self.segments.iter().any(|s| s.msn >= msn && s.complete) || last.msn > msn,
            Some(p) => last.msn > msn || (last.msn == msn && last.parts.len() > p),
        }
    }

    fn target_duration(&self) -> u64 {
        self.target.max(1)
    }

    /// Starts over after the last segment: a new init segment and timeline follow.
    fn start_over(&mut self) {
        self.segments.clear();
        self.init = None;
        self.discontinuity += 1;
    }
}

/// A stream's live producer and what it made. See the module docs.
#[derive(Debug)]
pub(crate) struct Live {
    stream: String,
    state: parking_lot::Mutex<State>,
    /// Bumped at each new part.
    changed: watch::Sender<u64>,
    last_request: parking_lot::Mutex<Instant>,
}

/// The unit-by-unit cutter of [`Live::produce`].
struct Cutter {
    codec: VideoCodec,
    sets: ParameterSets,
    base: i64,
    last_rtp: media::RtpTimestamp,
    last_pts: i64,
    /// The last unit's capture and receive times (where audio is placed from).
    last_capture_ms: u64,
    last_received: Instant,
    /// The init segment's audio track, if any.
    audio: Option<AacConfig>,
    samples: Vec<Sample>,
    part_start: i64,
    segment_start: i64,
    sequence: u32,
    /// B-frames seen: parts then end before keyframes only (decoding times are each part's
    /// presentation times sorted).
    reorders: bool,
}

impl Live {
    fn touch(&self) {
        *self.last_request.lock() = Instant::now();
    }

    fn ended(&self) -> bool {
        self.state.lock().ended
    }

    async fn produce(&self, rt: &StreamRuntime, mut shutdown: Shutdown) {
        let mut sub = rt.hub.subscribe();
        let mut audio = Some(rt.audio.subscribe());
        let mut track = AacTrack::new(&self.stream);
        let mut cutter: Option<Cutter> = None;
        let mut idle = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                unit = sub.next() => match unit {
                    Some(au) => self.unit(&mut cutter, &mut track, rt.audio.info().as_ref(), &au),
                    None => break,
                },
                frame = async { audio.as_mut().expect("only polled with a subscription").next().await }, if audio.is_some() => match frame {
                    Some(frame) => if let Some(info) = rt.audio.info() {
                        let clock = cutter.as_ref().map(|c| VideoClock {
                            ticks: c.base + c.last_pts,
                            capture_ms: c.last_capture_ms,
                            received: c.last_received,
                        });
                        track.frame(&info, &frame, clock);
                    },
                    None => audio = None,
                },
                _ = idle.tick() => if self.last_request.lock().elapsed() > IDLE { break },
                () = shutdown.wait() => break,
            }
        }
        self.state.lock().ended = true;
        self.changed.send_modify(|n| *n += 1);
    }

    fn unit(&self, cutter: &mut Option<Cutter>, track: &mut AacTrack, info: Option<&AudioInfo>, au: &crate::core::frame::AccessUnit) {
        let (sets, data) = fmp4::sample_data(au.codec, &au.data);
        track.video(au.received);
        let jumped = cutter.as_ref().is_some_and(|c| {
            // The camera's clock against ours (a reconnect, a file starting over).
            let pts = c.last_pts + au.rtp_timestamp.ticks_since(c.last_rtp);
            ((c.base + pts) / 90 - au.capture_ms as i64).abs() > 3_000 || pts < c.last_pts - 2 * TIMESCALE as i64
        });
        let new_audio = au.keyframe && cutter.as_ref().is_some_and(|c| c.audio != track.wanted(info));
        if jumped
            || new_audio
            || cutter.as_ref().is_some_and(|c| c.codec != au.codec || (au.keyframe && sets.complete(au.codec) && sets != c.sets))
        {
            // Another codec configuration, audio track or timeline: start over (a
            // discontinuity; players load the new init segment).
            debug!(stream = %self.stream, jumped, new_audio, "LL-HLS: starting over");
            *cutter = None;
            if jumped {
                track.reset();
                track.video(au.received);
            }
            self.state.lock().start_over();
            self.changed.send_modify(|n| *n += 1);
        }
        let Some(c) = cutter.as_mut() else {
            if !au.keyframe || !sets.complete(au.codec) {
                return;
            }
            let Ok((width, height)) = au.codec.parse_sps(&sets.sps[0]).map(|i| i.dimensions()) else { return };
            let audio = track.wanted(info);
            let Ok(init) = fmp4::init_segment_with_audio(au.codec, &sets, width, height, audio.as_ref()) else { return };
            let mut state = self.state.lock();
            state.init = Some(Bytes::from(init));
            state.generation += 1;
            state.codecs = fmp4::codecs(au.codec, &sets).unwrap_or_default();
            if let Some(a) = &audio {
                state.codecs = format!("{},{}", state.codecs, a.codecs());
            }
            state.size = (width, height);
            drop(state);
            *cutter = Some(Cutter {
                codec: au.codec,
                sets,
                base: au.capture_ms as i64 * 90,
                last_rtp: au.rtp_timestamp,
                last_pts: 0,
                last_capture_ms: au.capture_ms,
                last_received: au.received,
                audio,
                samples: Vec::new(),
                part_start: 0,
                segment_start: 0,
                sequence: 0,
                reorders: false,
            });
            return self.unit_cut(cutter.as_mut().expect("just set"), track, au, data);
        };
        self.unit_cut(c, track, au, data);
    }

    fn unit_cut(&self, c: &mut Cutter, track: &mut AacTrack, au: &crate::core::frame::AccessUnit, data: Vec<u8>) {
        let pts = c.last_pts + au.rtp_timestamp.ticks_since(c.last_rtp);
        let step = pts - c.last_pts;
        c.last_rtp = au.rtp_timestamp;
        c.last_pts = pts;
        c.last_capture_ms = au.capture_ms;
        c.last_received = au.received;
        if step < 0 {
            c.reorders = true;
        }
        let part_ticks = PART_TARGET.as_millis() as i64 * 90;
        // A part ends before the unit that would take it past the part target (RFC 8216bis
        // §4.4.4.9: no part longer than PART-TARGET).
        let full = pts - c.part_start + step.clamp(1, part_ticks) > part_ticks;
        if !c.samples.is_empty() && (au.keyframe || (full && !c.reorders)) {
            let new_segment = au.keyframe && pts - c.segment_start >= SEGMENT_MIN.as_millis() as i64 * 90;
            self.close_part(c, track, pts, new_segment);
            if new_segment {
                c.segment_start = pts;
            }
        }
        if c.samples.is_empty() {
            c.part_start = pts;
        }
        c.samples.push(Sample { pts: c.base + pts, keyframe: au.keyframe, data });
    }

    /// Closes the part being built (the next unit at `next_pts`), and the segment with it
    /// when `end_segment`.
    fn close_part(&self, c: &mut Cutter, track: &mut AacTrack, next_pts: i64, end_segment: bool) {
        let max = c.samples.iter().map(|s| s.pts).max().unwrap_or(0);
        let min = c.samples.iter().map(|s| s.pts).min().unwrap_or(0);
        let last = (c.base + next_pts - max).clamp(1, TIMESCALE as i64);
        let audio = track.take(c.audio, c.base, max + last, false);
        c.sequence += 1;
        let Ok(data) = fmp4::fragment_with_audio(c.sequence, &c.samples, last as u32, &audio) else {
            c.samples.clear();
            return;
        };
        let part =
            Part { data: Bytes::from(data), duration: (max + last - min) as f64 / TIMESCALE as f64, independent: c.samples[0].keyframe };
        let start_ms = (min.max(0) as u64) * 1000 / TIMESCALE;
        c.samples.clear();
        let mut state = self.state.lock();
        if state.segments.back().is_none_or(|s| s.complete) {
            let msn = state.next_msn;
            state.next_msn += 1;
            state.segments.push_back(Segment { msn, parts: Vec::new(), start_ms, complete: false });
        }
        let open = state.segments.back_mut().expect("just ensured");
        open.parts.push(part);
        let open_duration = open.duration().ceil() as u64;
        state.target = state.target.max(open_duration);
        let open = state.segments.back_mut().expect("just ensured");
        if end_segment {
            open.complete = true;
            while state.segments.len() > KEEP {
                state.segments.pop_front();
            }
        }
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits (up to [`BLOCK`]) until part `part` of segment `msn` exists; whether it does.
    pub(crate) async fn wait_for(&self, msn: u64, part: Option<usize>) -> bool {
        self.touch();
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + BLOCK;
        loop {
            {
                let state = self.state.lock();
                if state.has(msn, part) {
                    return true;
                }
                if state.ended {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return false;
            }
        }
    }

    /// The next media sequence number a playlist may name without being told to wait for
    /// it: the open segment's (or, with none, 0).
    pub(crate) fn newest_msn(&self) -> Option<u64> {
        self.state.lock().segments.back().map(|s| s.msn)
    }

    /// The multivariant playlist: one variant, `media.m3u8{suffix}`.
    pub(crate) fn multivariant(&self, suffix: &str) -> Option<String> {
        self.touch();
        let state = self.state.lock();
        state.init.as_ref()?;
        let (w, h) = state.size;
        Some(format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS=\"{}\",RESOLUTION={w}x{h}\nmedia.m3u8{suffix}\n",
            state.codecs
        ))
    }

    /// The media playlist, or `None` before the first part.
    pub(crate) fn media_playlist(&self, suffix: &str) -> Option<String> {
        self.touch();
        let state = self.state.lock();
        state.init.as_ref()?;
        let first = state.segments.front()?;
        let pt = PART_TARGET.as_secs_f64();
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
             #EXT-X-PART-INF:PART-TARGET={pt:.3}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n\
             #EXT-X-MAP:URI=\"init.mp4?v={}{}\"\n",
            state.target_duration(),
            3.0 * pt,
            first.msn,
            state.discontinuity,
            state.generation,
            suffix.replacen('?', "&", 1)
        );
        let with_parts = state.segments.len().saturating_sub(WITH_PARTS);
        for (i, seg) in state.segments.iter().enumerate() {
            if let Some(t) = chrono::DateTime::from_timestamp_millis(seg.start_ms as i64) {
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            }
            if i >= with_parts {
                for (n, p) in seg.parts.iter().enumerate() {
                    let independent = if p.independent { ",INDEPENDENT=YES" } else { "" };
                    let _ = writeln!(out, "#EXT-X-PART:DURATION={:.5},URI=\"part/{}.{n}.m4s{suffix}\"{independent}", p.duration, seg.msn);
                }
            }
            if seg.complete {
                let _ = writeln!(out, "#EXTINF:{:.5},\nseg/{}.m4s{suffix}", seg.duration(), seg.msn);
            }
        }
        let (msn, part) = match state.segments.back() {
            Some(s) if s.complete => (s.msn + 1, 0),
            Some(s) => (s.msn, s.parts.len()),
            None => (0, 0),
        };
        let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part/{msn}.{part}.m4s{suffix}\"");
        Some(out)
    }

    /// The init segment.
    pub(crate) fn init(&self) -> Option<Bytes> {
        self.touch();
        self.state.lock().init.clone()
    }

    /// Part `part` of segment `msn`, if kept.
    pub(crate) fn part(&self, msn: u64, part: usize) -> Option<Bytes> {
        self.touch();
        let state = self.state.lock();
        state.segments.iter().find(|s| s.msn == msn)?.parts.get(part).map(|p| p.data.clone())
    }

    /// Segment `msn` (its parts back to back), if complete and kept.
    pub(crate) fn segment(&self, msn: u64) -> Option<Bytes> {
        self.touch();
        let state = self.state.lock();
        let seg = state.segments.iter().find(|s| s.msn == msn && s.complete)?;
        let mut out = Vec::with_capacity(seg.parts.iter().map(|p| p.data.len()).sum());
        for p in &seg.parts {
            out.extend_from_slice(&p.data);
        }
        Some(Bytes::from(out))
    }
}
