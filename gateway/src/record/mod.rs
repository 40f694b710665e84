//! Recording (issue #14): streams with `record = "continuous"` are stored as they arrive,
//! without re-encoding, in fragmented MP4 segment files under
//! `{data_dir}/recordings/{stream}/{start_ms}.mp4` ([`media::fmp4`]), indexed in the event database
//! (`recordings` table, rows scoped by this data directory's `node_id`), and deleted by age and
//! total size per stream (`[recording]`).
//!
//! Stored times (`tfdt`) are on one wall-clock timeline, 90 kHz ticks since the Unix epoch:
//! a segment starts at its first keyframe's capture time (or, cut from the one before, where
//! that one's RTP clock says), so segments follow each other without re-timing and a
//! fragment's wall-clock time is its `tfdt` / 90.
//!
//! With `record = "events"` the same segments are made in memory and only written around
//! analytics events of the stream: from the keyframe fragment at least `recording.pre_roll`
//! before the event (kept in memory) to `recording.post_roll` after the last one; nothing
//! outside those windows reaches the disk.
//!
//! One task per recorded stream ([`Recorder`]) follows the hub from a keyframe: it opens a
//! segment (init segment first) at a keyframe that carries its parameter sets, appends a
//! fragment about every `recording.fragment` (at a keyframe, or at any unit after twice as
//! long), updates the index row after each fragment, and starts a new segment after
//! `recording.segment`, when the parameter sets change, or when the camera's clock jumps (a
//! reconnect). A `kill -9` loses at most the fragment being built: on start, each stream's
//! directory is reconciled with the index ([`Recorder::reconcile`]: a fragment cut short is
//! truncated away, files unknown to the index are indexed, rows without a file dropped). A
//! write that fails (disk full, directory not writable) makes the status `failed` with the
//! reason; live video goes on, and recording starts again at a keyframe 5 s later.
//!
//! A stream with detection also gets its detection messages stored beside each segment
//! ([`boxes`]), on the same timeline, for boxes drawn over playback.
//!
//! The camera's audio goes in a second track of the same fragments, as AAC (a camera's AAC
//! as received, its G.711 encoded: [`AacTrack`]), placed on the video's timeline by the
//! camera's clocks. A segment has an audio track only while audio comes: audio appearing,
//! stopping for a second or changing its configuration starts a new segment at the next
//! keyframe.

pub(crate) mod boxes;
pub(crate) mod export;
pub(crate) mod vod;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::{AudioCodec, VideoCodec};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::archive::{Archive, Db, Segment};
use crate::config::{Config, RecordMode, RecordingConfig};
use crate::core::Error;
use crate::core::audio::AudioFrame;
use crate::core::clock::now_ms;
use crate::core::frame::AccessUnit;
use crate::core::shutdown::Shutdown;
use crate::pipeline::aac_track::{AacTrack, VideoClock};
use crate::stream::{StreamRuntime, Streams};
use media::audio::AacConfig;
use media::fmp4::{self, ParameterSets, Sample, TIMESCALE};

/// After a failed write, recording is tried again this much later.
const RETRY: Duration = Duration::from_secs(5);
/// No unit for this long: the open fragment is written and the segment closed.
const IDLE: Duration = Duration::from_secs(2);
/// `events` mode: how late an event may arrive after its frame and still get its pre-roll
/// (detection and tracking behind on a loaded machine: CI saw events 8 s late on 2 cores).
/// Costs this much video in memory per events-mode stream (~2.5 MB at 2 Mbit/s).
const EVENT_DELAY: Duration = Duration::from_secs(10);
/// Retention runs this often.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// The camera's clock and ours disagreeing by more than this starts a new segment.
const JUMP_MS: i64 = 3_000;

/// What a stream's recorder is doing, in the stream status (`recording`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct RecordingStatus {
    /// The stream's `record` setting.
    pub(crate) mode: RecordMode,
    /// `off`, `waiting` (for a keyframe or the database), `recording`, or `failed` (with
    /// `reason`; tried again every 5 s).
    pub(crate) state: &'static str,
    /// Why recording failed (the file system's error), else `null`.
    pub(crate) reason: Option<String>,
    /// Start of the segment being written, ms since the Unix epoch.
    pub(crate) segment_start_ms: Option<u64>,
    /// The audio stored with the segment being written: `aac` (a camera's AAC as received,
    /// its G.711 encoded as AAC), or `null` (no camera audio, or none stored: see
    /// `audio_reason`).
    pub(crate) audio: Option<&'static str>,
    /// Why the camera's audio is not recorded (its G.711 cannot be encoded: FFmpeg without
    /// an AAC encoder), else `null`.
    pub(crate) audio_reason: Option<String>,
    /// Bytes written since the gateway started.
    pub(crate) bytes_written: u64,
}

impl RecordingStatus {
    fn off() -> RecordingStatus {
        RecordingStatus {
            mode: RecordMode::Off,
            state: "off",
            reason: None,
            segment_start_ms: None,
            audio: None,
            audio_reason: None,
            bytes_written: 0,
        }
    }
}

/// Every stream's recorder, and where recordings are.
#[derive(Debug)]
pub(crate) struct Recorders {
    /// `{data_dir}/recordings`.
    dir: PathBuf,
    /// This data directory's id in the index.
    node: String,
    archive: Arc<Archive>,
    status: HashMap<String, watch::Receiver<RecordingStatus>>,
    /// Event clips: (pre-roll, post-roll).
    pub(crate) rolls: (Duration, Duration),
}

impl Recorders {
    /// Starts a recorder for every stream with `record` set; they stop at `shutdown`, each
    /// writing its open fragment first.
    pub(crate) fn start(
        config: &Config,
        streams: &Streams,
        archive: Arc<Archive>,
        events: &crate::core::events::EventFanout,
        detections: &crate::core::detections::DetectionFanout,
        shutdown: &Shutdown,
    ) -> Arc<Recorders> {
        let dir = config.data_dir.join("recordings");
        let node = node_id(&config.data_dir);
        let mut status = HashMap::new();
        for rt in streams.all().filter(|rt| rt.config.record != RecordMode::Off) {
            let (tx, rx) = watch::channel(RecordingStatus { mode: rt.config.record, state: "waiting", ..RecordingStatus::off() });
            status.insert(rt.config.id.clone(), rx);
            let recorder = Recorder {
                rt: rt.clone(),
                dir: dir.join(&rt.config.id),
                node: node.clone(),
                config: config.recording.clone(),
                status: tx,
                open: None,
                carry: None,
                retry_at: None,
                mode: rt.config.record,
                events: (rt.config.record == RecordMode::Events).then(|| events.subscribe()),
                until_ms: 0,
                detections: (config.detect.enabled && rt.config.detect).then(|| detections.subscribe(&rt.config.id)),
                boxes: boxes::BoxTrack::default(),
                audio: Some(rt.audio.subscribe()),
                sound: AacTrack::new(&rt.config.id),
            };
            tokio::spawn(recorder.run(archive.clone(), shutdown.clone()));
        }
        Arc::new(Recorders { dir, node, archive, status, rolls: (config.recording.pre_roll, config.recording.post_roll) })
    }

    /// The recording status of stream `id`.
    pub(crate) fn status(&self, id: &str) -> RecordingStatus {
        self.status.get(id).map_or_else(RecordingStatus::off, |rx| rx.borrow().clone())
    }

    /// `stream`'s indexed segments overlapping `[from_ms, to_ms)`, oldest first.
    ///
    /// Errors: the database is not open (503).
    pub(crate) async fn segments(&self, stream: &str, from_ms: u64, to_ms: u64) -> Result<Vec<Segment>, Error> {
        let db = self.archive.open_database()?;
        db.segments(&self.node, stream, from_ms, to_ms).await.map_err(|e| Error::EventsUnavailable { cause: e.to_string() })
    }

    /// `{data_dir}/recordings/{stream}`.
    pub(crate) fn stream_dir(&self, stream: &str) -> PathBuf {
        self.dir.join(stream)
    }

    /// The file of `segment`.
    pub(crate) fn file(&self, segment: &Segment) -> PathBuf {
        self.dir.join(&segment.path)
    }
}

/// This data directory's id (`{data_dir}/node_id`, made once): index rows are this node's
/// when replicas share a PostgreSQL database but not their disks.
fn node_id(data_dir: &Path) -> String {
    let path = data_dir.join("node_id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return id.trim().to_owned();
    }
    let id = format!("{:016x}", rand::random::<u64>());
    if let Err(e) = std::fs::create_dir_all(data_dir).and_then(|()| std::fs::write(&path, &id)) {
        warn!(error = %e, path = %path.display(), "cannot store the node id; recordings are indexed under a new one next start");
    }
    id
}

/// A fragment kept in memory (`events` mode, no event near): the pre-roll.
struct Pending {
    bytes: Vec<u8>,
    start_ms: u64,
    end_ms: u64,
    keyframe: bool,
}

/// The segment being written (or, in `events` mode until an event comes, kept in memory).
struct Open {
    /// `None` while the segment lives in `pending` only.
    file: Option<tokio::fs::File>,
    init: Vec<u8>,
    pending: std::collections::VecDeque<Pending>,
    row: Segment,
    codec: VideoCodec,
    sets: ParameterSets,
    /// Time of the segment's first unit: 90 kHz ticks since the Unix epoch (stored `tfdt`s
    /// are on this wall-clock timeline, so segments follow each other without re-timing).
    base: i64,
    /// The last unit's RTP timestamp and its time from the segment's start (90 kHz).
    last_rtp: media::RtpTimestamp,
    last_pts: i64,
    /// The last unit's capture time (ms since the epoch) and receive time: where audio
    /// frames are placed from.
    last_capture_ms: u64,
    last_received: Instant,
    /// The segment's audio track (in its init segment), if any.
    audio: Option<AacConfig>,
    sequence: u32,
    fragment: Vec<Sample>,
    fragment_started: i64,
    /// Whether B-frames were seen (units shown before units decoded earlier).
    reorders: bool,
    /// `events` mode, a file open: fragments past the last event's post-roll, held back
    /// (at most EVENT_DELAY of them) in case an event of theirs is still on its way; the
    /// file goes on through them if one comes, and ends where it was without them if none.
    tail: std::collections::VecDeque<Pending>,
}

impl Open {
    /// A time on the recording timeline (90 kHz since the Unix epoch) in ms.
    fn end_ms(&self, ticks: i64) -> u64 {
        ticks.max(0) as u64 * 1000 / TIMESCALE
    }
}

/// Whether the fragment being built ends before the next unit.
///
/// A keyframe starts a fragment unless the fragment it would end began with a keyframe less
/// than `fragment_ticks` (90 kHz) ago (all-intra video: fragments of about `fragment_ticks`).
/// Between keyframes a fragment is cut after twice `fragment_ticks`, unless the video has
/// B-frames (a fragment's decoding times are its presentation times sorted, so it must end
/// before a keyframe). Every GOP thus starts a fragment: an `events` file and an export need
/// one to begin at, and a frame lost before a keyframe must not shift the cuts off the
/// keyframes for good (fragments of 2x`fragment_ticks` in a GOP of a multiple of that).
fn cut_before(keyframe: bool, starts_with_keyframe: bool, empty: bool, age: i64, fragment_ticks: i64, reorders: bool) -> bool {
    if empty {
        return false;
    }
    if keyframe {
        return !starts_with_keyframe || age >= fragment_ticks;
    }
    !reorders && age >= 2 * fragment_ticks
}

/// One stream's recorder. See the module docs.
struct Recorder {
    rt: Arc<StreamRuntime>,
    /// `{data_dir}/recordings/{stream}`.
    dir: PathBuf,
    node: String,
    config: RecordingConfig,
    status: watch::Sender<RecordingStatus>,
    open: Option<Open>,
    /// The last closed segment's last unit: RTP timestamp and recording-timeline ticks.
    carry: Option<(media::RtpTimestamp, i64)>,
    retry_at: Option<Instant>,
    mode: RecordMode,
    /// `events` mode: the analytics events (taken by `run`).
    events: Option<tokio::sync::broadcast::Receiver<Arc<crate::core::events::AnalyticsEvent>>>,
    /// `events` mode: record until this wall-clock time (the last event's post-roll), ms.
    until_ms: u64,
    /// The stream's detection messages, when it has detection (taken by `run`).
    detections: Option<tokio::sync::broadcast::Receiver<Arc<crate::core::detections::Detections>>>,
    /// Where they are stored.
    boxes: boxes::BoxTrack,
    /// The stream's audio frames (taken by `run`).
    audio: Option<crate::stream::audio::AudioSubscription>,
    /// Its way into the fragments.
    sound: AacTrack,
}

impl Recorder {
    async fn run(mut self, archive: Arc<Archive>, mut shutdown: Shutdown) {
        let stream = self.rt.config.id.clone();
        let Some(db) = archive.database(shutdown.clone()).await else { return };
        match self.reconcile(&db).await {
            Ok((kept, dropped)) => info!(stream, kept, dropped, "recordings reconciled with the index"),
            Err(e) => warn!(stream, error = %e, "cannot reconcile recordings"),
        }
        let mut sub = self.rt.hub.subscribe();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let mut events = self.events.take();
        let mut detections = self.detections.take();
        let mut audio = self.audio.take();
        // Reset by units only (other streams' events must not keep it from firing).
        let idle = tokio::time::sleep(IDLE);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                unit = sub.next() => match unit {
                    Some(au) => {
                        idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
                        self.unit(&db, &au).await;
                    }
                    None => break,
                },
                () = &mut idle => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
                    self.close(&db, None).await;
                    self.sound.reset();
                }
                frame = async { audio.as_mut().expect("only polled with a subscription").next().await }, if audio.is_some() => match frame {
                    Some(frame) => self.audio_frame(&frame),
                    None => audio = None,
                },
                event = async { events.as_mut().expect("only polled with a receiver").recv().await }, if events.is_some() => match event {
                    Ok(e) if e.event.stream == stream => self.event(&db, e.event.ts_ms).await,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => events = None,
                },
                message = async { detections.as_mut().expect("only polled with a receiver").recv().await }, if detections.is_some() => match message {
                    Ok(m) => self.store_boxes(&m).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("sightline_recording_detections_dropped_total", "stream" => stream.clone()).increment(n);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => detections = None,
                },
                _ = prune.tick() => self.prune(&db).await,
                () = shutdown.wait() => break,
            }
        }
        self.close(&db, None).await;
    }

    /// Stores a detection message beside the segment its frame is in (see [`boxes`]): the
    /// frame's time from its RTP timestamp on the open segment's clock (or the last closed
    /// one's).
    async fn store_boxes(&mut self, message: &crate::core::detections::Detections) {
        let rtp = message.frame.rtp_timestamp;
        let (pts, file_open) = match (&self.open, self.carry) {
            (Some(open), _) => (open.base + open.last_pts + rtp.ticks_since(open.last_rtp), open.file.is_some()),
            (None, Some((last_rtp, ticks))) => (ticks + rtp.ticks_since(last_rtp), false),
            (None, None) => return,
        };
        // Kept in memory as long as the pre-roll could reach back to it (`events` mode).
        let window = (self.config.pre_roll + EVENT_DELAY).as_millis() as i64 * 90;
        let keep_from = (self.open.is_some() && !file_open).then(|| pts - window);
        self.boxes.message(message, pts, file_open, keep_from).await;
    }

    /// The audio track a segment opened now gets ([`AacTrack::wanted`]).
    fn audio_wanted(&self) -> Option<AacConfig> {
        self.sound.wanted(self.rt.audio.info().as_ref())
    }

    /// Takes one audio frame: queued for the fragment it falls in, placed against the last
    /// video unit ([`AacTrack::frame`]); the status says why when it cannot be stored.
    fn audio_frame(&mut self, frame: &AudioFrame) {
        let Some(info) = self.rt.audio.info() else { return };
        let clock =
            self.open.as_ref().map(|o| VideoClock { ticks: o.base + o.last_pts, capture_ms: o.last_capture_ms, received: o.last_received });
        self.sound.frame(&info, frame, clock);
        let reason = self.sound.reason();
        if self.status.borrow().audio_reason.as_deref() != reason {
            let reason = reason.map(str::to_owned);
            self.status.send_modify(|s| s.audio_reason = reason);
        }
    }

    /// Takes one access unit: opens, cuts and closes segments and fragments around it.
    async fn unit(&mut self, db: &Db, au: &AccessUnit) {
        let (sets, data) = fmp4::sample_data(au.codec, &au.data);
        self.sound.video(au.received);
        if let Some(open) = &self.open {
            let pts = open.last_pts + au.rtp_timestamp.ticks_since(open.last_rtp);
            let wall_ms = open.end_ms(open.base + pts) as i64;
            let jumped = (wall_ms - au.capture_ms as i64).abs() > JUMP_MS || pts < open.last_pts - i64::from(TIMESCALE as u32) * 2;
            let new_sets = au.keyframe && sets.complete(au.codec) && sets != open.sets;
            let long = au.keyframe && open.file.is_some() && wall_ms as u64 >= open.row.start_ms + self.config.segment.as_millis() as u64;
            let new_audio = au.keyframe && open.audio != self.audio_wanted();
            if jumped || new_sets || au.codec != open.codec || long || new_audio {
                self.close(db, (!jumped).then_some(pts)).await;
                if jumped {
                    self.sound.reset();
                    self.sound.video(au.received);
                }
            }
        }
        if self.open.is_none() && !self.begin(db, au, &sets).await {
            return;
        }
        let Some(open) = self.open.as_mut() else { return };
        let pts = open.last_pts + au.rtp_timestamp.ticks_since(open.last_rtp);
        open.last_rtp = au.rtp_timestamp;
        open.last_pts = pts;
        open.last_capture_ms = au.capture_ms;
        open.last_received = au.received;
        let fragment_ticks = (self.config.fragment.as_millis() as i64) * 90;
        let age = pts - open.fragment_started;
        // Decoding times are each fragment's presentation times sorted: with B-frames
        // (a unit shown before one decoded earlier) a fragment must end before a keyframe.
        if open.fragment.last().is_some_and(|s| s.pts > open.base + pts) {
            open.reorders = true;
        }
        let starts_with_keyframe = open.fragment.first().is_some_and(|s| s.keyframe);
        if cut_before(au.keyframe, starts_with_keyframe, open.fragment.is_empty(), age, fragment_ticks, open.reorders) {
            self.flush(db, Some(pts)).await;
        }
        if let Some(open) = self.open.as_mut() {
            if open.fragment.is_empty() {
                open.fragment_started = pts;
            }
            open.fragment.push(Sample { pts: open.base + pts, keyframe: au.keyframe, data });
        }
    }

    /// Opens a segment at `au` if it is a keyframe with its parameter sets (and no failure
    /// is being waited out). Returns whether a segment is open.
    async fn begin(&mut self, db: &Db, au: &AccessUnit, sets: &ParameterSets) -> bool {
        if !au.keyframe || !sets.complete(au.codec) || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let stream = self.rt.config.id.clone();
        let (width, height) = match au.codec.parse_sps(&sets.sps[0]) {
            Ok(info) => info.dimensions(),
            Err(e) => {
                warn!(stream, error = %e, "keyframe with an SPS that does not parse; not recorded");
                return false;
            }
        };
        let audio = self.audio_wanted();
        let init = match fmp4::init_segment_with_audio(au.codec, sets, width, height, audio.as_ref()) {
            Ok(init) => init,
            Err(e) => {
                warn!(stream, error = %e, "cannot make an init segment; not recorded");
                return false;
            }
        };
        // Continuing the closed segment's timeline (its RTP clock) unless that is not this
        // camera session's (more than JUMP_MS off the capture time).
        let wall = au.capture_ms as i64 * 90;
        let base = self
            .carry
            .take()
            .map(|(rtp, ticks)| ticks + au.rtp_timestamp.ticks_since(rtp))
            .filter(|b| (b - wall).abs() <= JUMP_MS * 90)
            .unwrap_or(wall);
        let start_ms = base.max(0) as u64 / 90;
        let row = Segment {
            path: String::new(),
            stream: stream.clone(),
            start_ms,
            end_ms: start_ms,
            bytes: 0,
            keyframes: 0,
            codec: au.codec.name().to_owned(),
        };
        self.open = Some(Open {
            file: None,
            init,
            pending: Default::default(),
            row,
            codec: au.codec,
            sets: sets.clone(),
            base,
            last_rtp: au.rtp_timestamp,
            last_pts: 0,
            last_capture_ms: au.capture_ms,
            last_received: au.received,
            audio,
            sequence: 0,
            fragment: Vec::new(),
            fragment_started: 0,
            reorders: false,
            tail: Default::default(),
        });
        if self.mode == RecordMode::Continuous || au.capture_ms <= self.until_ms {
            return self.materialize(db, None).await;
        }
        true
    }

    /// Writes the segment kept in memory to its file (init segment, then the pre-roll) and
    /// indexes it; from now on fragments go to the file. Returns whether a segment is open.
    /// With `event_ms`, the pre-roll kept starts at the newest keyframe fragment at least
    /// `recording.pre_roll` before it.
    async fn materialize(&mut self, db: &Db, event_ms: Option<u64>) -> bool {
        let Some(open) = self.open.as_mut() else { return false };
        if open.file.is_some() {
            return true;
        }
        if event_ms.is_some() && open.pending.is_empty() {
            // Nothing kept yet (the window before closed less than a GOP ago): a file starts
            // at a keyframe, so it opens with the next keyframe fragment (`flush`). Opening it
            // now would start it without one, and index it from the last file's end.
            return true;
        }
        if let Some(ts) = event_ms {
            let from = ts.saturating_sub(self.config.pre_roll.as_millis() as u64);
            if let Some(i) = open.pending.iter().rposition(|p| p.keyframe && p.start_ms <= from) {
                open.pending.drain(..i);
            }
        }
        let start_ms = open.pending.front().map_or(open.row.start_ms, |p| p.start_ms);
        let mut head = open.init.clone();
        let (mut keyframes, mut end_ms) = (0, start_ms);
        for p in open.pending.drain(..) {
            head.extend_from_slice(&p.bytes);
            keyframes += u64::from(p.keyframe);
            end_ms = p.end_ms;
        }
        let dir = self.dir.clone();
        let opened = async {
            tokio::fs::create_dir_all(&dir).await?;
            // Never over another segment: a name taken (two segments starting within the same
            // millisecond) moves on by a millisecond.
            let mut at = start_ms;
            loop {
                let name = format!("{at}.mp4");
                match tokio::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(&name)).await {
                    Ok(mut file) => {
                        file.write_all(&head).await?;
                        file.flush().await?;
                        return Ok::<_, std::io::Error>((file, name));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && at < start_ms + 10 => at += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        .await;
        let (file, name) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.open = None;
                self.fail(format!("cannot write {}: {e}", dir.join(format!("{start_ms}.mp4")).display()));
                return false;
            }
        };
        let stream = self.rt.config.id.clone();
        open.file = Some(file);
        self.boxes.opened(&dir.join(&name), start_ms as i64 * 90).await;
        open.row = Segment { path: format!("{stream}/{name}"), start_ms, end_ms, bytes: head.len() as u64, keyframes, ..open.row.clone() };
        if let Err(e) = db.upsert_segment(&self.node, &open.row).await {
            warn!(stream, error = %e, "cannot index a new recording segment (reconciled at the next start)");
        }
        metrics::counter!("sightline_recording_bytes_total", "stream" => stream).increment(head.len() as u64);
        self.retry_at = None;
        let audio = open.audio.map(|_| AudioCodec::Aac.name());
        self.status.send_modify(|s| {
            s.state = "recording";
            s.reason = None;
            s.segment_start_ms = Some(start_ms);
            s.audio = audio;
            s.bytes_written += head.len() as u64;
        });
        true
    }

    /// `events` mode: an event of this stream captured at `ts_ms`: record from its pre-roll
    /// (kept in memory) to its post-roll.
    ///
    /// An event that comes after its window's file reached the post-roll of the one before
    /// (detection and tracking take time: CI saw one 31 ms of video after a window ended)
    /// finds the fragments since in the file's tail: the file goes on through them when the
    /// event's pre-roll reaches back into it (no keyframe in the tail at least `pre_roll`
    /// before the event), else it ends and a new file starts at that keyframe.
    async fn event(&mut self, db: &Db, ts_ms: u64) {
        tracing::debug!(stream = %self.rt.config.id, ts_ms, "recording around an event");
        self.until_ms = self.until_ms.max(ts_ms + self.config.post_roll.as_millis() as u64);
        let from = ts_ms.saturating_sub(self.config.pre_roll.as_millis() as u64);
        let Some(open) = self.open.as_ref() else { return };
        if open.file.is_some() {
            if open.tail.iter().skip(1).any(|p| p.keyframe && p.start_ms <= from) {
                self.end_window();
            } else {
                self.write_tail(db).await;
                return;
            }
        }
        self.materialize(db, Some(ts_ms)).await;
    }

    /// `events` mode: writes the tail's fragments that start before the window's end
    /// (`until_ms`).
    async fn write_tail(&mut self, db: &Db) {
        let mut written = false;
        while let Some(open) = self.open.as_mut()
            && open.tail.front().is_some_and(|p| p.start_ms < self.until_ms)
        {
            let p = open.tail.pop_front().expect("a front fragment");
            if !self.write_fragment(db, &p.bytes, p.keyframe, p.end_ms).await {
                return;
            }
            written = true;
        }
        if let Some(open) = self.open.as_ref().filter(|_| written) {
            let start_ms = open.row.start_ms;
            self.status.send_modify(|s| {
                s.state = "recording";
                s.segment_start_ms = Some(start_ms);
            });
        }
    }

    /// `events` mode: the file ends where it was written to; the segment goes on in memory
    /// from the tail's first keyframe fragment (an event arriving late, after its frame,
    /// still finds its pre-roll there, and the next file continues this one's timeline).
    fn end_window(&mut self) {
        let Some(open) = self.open.as_mut() else { return };
        if open.file.take().is_none() {
            return;
        }
        self.boxes.closed(open.row.end_ms as i64 * 90 + 90);
        open.row.bytes = 0;
        open.row.keyframes = 0;
        open.row.start_ms = open.row.end_ms; // the next file starts where this one ended
        let tail = std::mem::take(&mut open.tail);
        open.pending.extend(tail.into_iter().skip_while(|p| !p.keyframe));
        self.waiting();
    }

    /// `events` mode: no file is being written (`recording.state` `waiting`).
    fn waiting(&self) {
        self.status.send_modify(|s| {
            s.state = "waiting";
            s.segment_start_ms = None;
        });
    }

    /// Writes the open fragment; `next_pts` is the next unit's time (the last sample's
    /// duration), `None` at a segment's end (the typical frame interval then).
    async fn flush(&mut self, db: &Db, next_pts: Option<i64>) {
        let Some(open) = self.open.as_mut() else { return };
        if open.fragment.is_empty() {
            return;
        }
        let max_pts = open.fragment.iter().map(|s| s.pts).max().unwrap_or(0);
        let min_pts = open.fragment.iter().map(|s| s.pts).min().unwrap_or(0);
        let typical = if open.fragment.len() > 1 { (max_pts - min_pts) / (open.fragment.len() as i64 - 1) } else { 3600 };
        let last = next_pts.map(|n| n + open.base).map_or(typical, |n| n - max_pts).clamp(1, i64::from(TIMESCALE as u32));
        let audio = self.sound.take(open.audio, open.base, max_pts + last, next_pts.is_none());
        open.sequence += 1;
        let bytes = match fmp4::fragment_with_audio(open.sequence, &open.fragment, last as u32, &audio) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(stream = %open.row.stream, error = %e, "cannot make a fragment; dropped");
                open.fragment.clear();
                return;
            }
        };
        let keyframe = open.fragment[0].keyframe;
        open.fragment.clear();
        let (start_ms, end_ms) = (open.end_ms(min_pts), open.end_ms(max_pts + last));
        if open.file.is_none() {
            // In memory: keep the pre-roll, from the newest keyframe fragment at least
            // `pre_roll` before the end, and EVENT_DELAY more (an event arrives after its
            // frame: detection and tracking take time).
            if open.pending.is_empty() && !keyframe {
                return; // a file must start at a keyframe: nothing is kept before one
            }
            open.pending.push_back(Pending { bytes, start_ms, end_ms, keyframe });
            let keep_from = end_ms.saturating_sub((self.config.pre_roll + EVENT_DELAY).as_millis() as u64);
            if let Some(i) = open.pending.iter().rposition(|p| p.keyframe && p.start_ms <= keep_from) {
                open.pending.drain(..i);
            }
            // An event's window is open but its file waited for this keyframe fragment.
            let first_start = open.pending.front().map(|p| p.start_ms);
            if self.mode == RecordMode::Events && first_start.is_some_and(|s| s <= self.until_ms) {
                self.materialize(db, None).await;
            }
            return;
        }
        if self.mode == RecordMode::Events && (!open.tail.is_empty() || start_ms >= self.until_ms) {
            // Past the last event's post-roll: held back in the tail; the file ends without
            // it once it holds EVENT_DELAY and no event came for it.
            let first = open.tail.is_empty();
            open.tail.push_back(Pending { bytes, start_ms, end_ms, keyframe });
            if first {
                self.waiting();
            }
            self.write_tail(db).await;
            if let Some(open) = self.open.as_ref()
                && open.tail.front().is_some_and(|p| end_ms.saturating_sub(p.start_ms) > EVENT_DELAY.as_millis() as u64)
            {
                self.end_window();
            }
            return;
        }
        self.write_fragment(db, &bytes, keyframe, end_ms).await;
    }

    /// Appends a fragment ending at `end_ms` to the open file and indexes it. Returns false
    /// when the write failed (the segment is then closed and the failure reported).
    async fn write_fragment(&mut self, db: &Db, bytes: &[u8], keyframe: bool, end_ms: u64) -> bool {
        let Some(open) = self.open.as_mut() else { return false };
        let Some(file) = open.file.as_mut() else { return false };
        let written = async {
            file.write_all(bytes).await?;
            file.flush().await
        }
        .await;
        if let Err(e) = written {
            let reason = format!("cannot write {}: {e}", open.row.path);
            self.open = None; // what was written before stays, indexed up to its last fragment
            self.fail(reason);
            return false;
        }
        open.row.bytes += bytes.len() as u64;
        open.row.keyframes += u64::from(keyframe);
        open.row.end_ms = end_ms;
        let stream = open.row.stream.clone();
        metrics::counter!("sightline_recording_bytes_total", "stream" => stream.clone()).increment(bytes.len() as u64);
        self.status.send_modify(|s| s.bytes_written += bytes.len() as u64);
        if let Err(e) = db.upsert_segment(&self.node, &open.row).await {
            warn!(stream, error = %e, "cannot update the recording index (reconciled at the next start)");
        }
        true
    }

    /// Writes the open fragment and closes the segment.
    async fn close(&mut self, db: &Db, next_pts: Option<i64>) {
        self.flush(db, next_pts).await;
        if let Some(open) = self.open.take() {
            if open.file.is_some() {
                self.boxes.closed(open.row.end_ms as i64 * 90 + 90);
            }
            self.carry = Some((open.last_rtp, open.base + open.last_pts));
            self.status.send_modify(|s| {
                if s.state == "recording" {
                    s.state = "waiting";
                }
                s.segment_start_ms = None;
                s.audio = None;
            });
        }
    }

    fn fail(&mut self, reason: String) {
        warn!(stream = %self.rt.config.id, reason, "recording failed; live video goes on, retried in 5 s");
        metrics::counter!("sightline_recording_failures_total", "stream" => self.rt.config.id.clone()).increment(1);
        self.retry_at = Some(Instant::now() + RETRY);
        self.status.send_modify(|s| {
            s.state = "failed";
            s.reason = Some(reason);
            s.segment_start_ms = None;
        });
    }

    /// Makes the index and the stream's directory agree: each file scanned (a fragment cut
    /// short truncated away, a file with no complete fragment removed) and indexed; rows
    /// without a file dropped. Returns (segments kept, removed).
    async fn reconcile(&self, db: &Db) -> Result<(usize, usize), String> {
        let stream = self.rt.config.id.clone();
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || scan_dir(&stream, &dir)).await.map_err(|e| e.to_string())??;
        let mut dropped = found.iter().filter(|f| f.is_none()).count();
        let kept: Vec<Segment> = found.into_iter().flatten().collect();
        for seg in &kept {
            db.upsert_segment(&self.node, seg).await.map_err(|e| e.to_string())?;
        }
        let indexed = db.segments(&self.node, &self.rt.config.id, 0, u64::MAX).await.map_err(|e| e.to_string())?;
        for seg in indexed.iter().filter(|s| !kept.iter().any(|k| k.path == s.path)) {
            db.delete_segment(&self.node, &seg.path).await.map_err(|e| e.to_string())?;
            dropped += 1;
        }
        Ok((kept.len(), dropped))
    }

    /// Deletes segments older than `max_age`, then the oldest while the stream's recordings
    /// take more than `max_bytes` (never the one being written).
    async fn prune(&mut self, db: &Db) {
        let stream = self.rt.config.id.clone();
        let Ok(segments) = db.segments(&self.node, &stream, 0, u64::MAX).await else { return };
        let open = self.open.as_ref().map(|o| o.row.path.clone());
        let oldest_kept = now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        let mut gone = 0;
        for seg in segments.iter().filter(|s| Some(&s.path) != open.as_ref()) {
            if seg.end_ms >= oldest_kept && total <= self.config.max_bytes {
                break;
            }
            let file = self.dir.join(seg.path.rsplit('/').next().unwrap_or(""));
            let _ = tokio::fs::remove_file(boxes::sidecar(&file)).await;
            match tokio::fs::remove_file(&file).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(stream, error = %e, file = %file.display(), "cannot delete an old recording");
                    continue;
                }
            }
            let _ = db.delete_segment(&self.node, &seg.path).await;
            total = total.saturating_sub(seg.bytes);
            gone += 1;
        }
        if gone > 0 {
            info!(stream, segments = gone, "old recordings deleted");
            metrics::counter!("sightline_recording_segments_deleted_total", "stream" => stream).increment(gone);
        }
    }
}

/// Every `{start_ms}.mp4` in `dir`, scanned: `Some(row)` for a file with fragments (a tail
/// cut short truncated away), `None` for one removed (nothing playable in it).
fn scan_dir(stream: &str, dir: &Path) -> Result<Vec<Option<Segment>>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".boxes.jsonl") {
            // Stored detections whose segment is gone (deleted while the gateway was down).
            if !dir.join(format!("{stem}.mp4")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        let Some(start_ms) = name.strip_suffix(".mp4").and_then(|n| n.parse::<u64>().ok()) else { continue };
        let path = entry.path();
        let scanned = std::fs::File::open(&path).and_then(|mut f| {
            let len = f.metadata()?.len();
            let scan = fmp4::scan(&mut f, len);
            // A fragment cut short (a crash) is truncated away; if the file cannot be written,
            // readers stop where the scan did anyway.
            if !scan.fragments.is_empty() && scan.valid_len < len {
                let cut = std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(scan.valid_len));
                if let Err(e) = cut {
                    warn!(stream, file = %path.display(), error = %e, "cannot truncate a fragment cut short");
                }
            }
            Ok(scan)
        });
        match scanned {
            Err(e) => {
                // Unreadable now (permissions, a read-only copy, I/O): kept, not indexed.
                warn!(stream, file = %path.display(), error = %e, "cannot scan a recording; left as it is");
            }
            Ok(scan) if !scan.fragments.is_empty() => found.push(Some(Segment {
                path: format!("{stream}/{name}"),
                stream: stream.to_owned(),
                start_ms,
                end_ms: scan.end() * 1000 / TIMESCALE,
                bytes: scan.valid_len,
                keyframes: scan.fragments.iter().filter(|f| f.keyframe).count() as u64,
                codec: codec_of(&path).to_owned(),
            })),
            Ok(_) => {
                // Read and holds no complete fragment (an init segment alone, or not ours).
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(boxes::sidecar(&path));
                found.push(None);
            }
        }
    }
    Ok(found)
}

/// `h264` or `h265`, from the sample entry of a recording's init segment.
fn codec_of(path: &Path) -> &'static str {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(4096).read_to_end(&mut head);
    }
    if head.windows(4).any(|w| w == b"hvc1") { "h265" } else { "h264" }
}

#[cfg(test)]
mod tests {
    use super::cut_before;

    /// 25 fps (3600 ticks a frame), 200 ms fragments, a keyframe every 50 frames; `lost`
    /// frames missing. Returns the frame numbers that start a fragment.
    fn cuts(frames: u32, lost: &[u32], gop: u32) -> Vec<u32> {
        let (mut starts, mut first, mut first_key) = (Vec::new(), None::<u32>, false);
        for n in (0..frames).filter(|n| !lost.contains(n)) {
            let key = n % gop == 0;
            let age = first.map_or(0, |f| i64::from(n - f) * 3600);
            if first.is_none() || cut_before(key, first_key, false, age, 18_000, false) {
                starts.push(n);
                first = Some(n);
                first_key = key;
            }
        }
        starts
    }

    #[test]
    fn every_keyframe_starts_a_fragment_even_after_a_lost_frame() {
        // Frames 10-15 lost (a burst a slow subscriber skips): the 400 ms cuts move from
        // 0, 10, 20 ... to 16, 26, 36, 46, and frame 50, a keyframe 4 frames into a fragment,
        // must still start one (cut only 200 ms or more into a fragment, it never would
        // again: 96, 146 ... all miss their keyframe by 4 frames).
        for lost in [&[][..], &[7], &[10, 11, 12, 13, 14, 15], &[3, 44], &[46, 47, 48, 49]] {
            let starts = cuts(200, lost, 50);
            for k in [0, 50, 100, 150] {
                assert!(starts.contains(&k), "lost {lost:?}: keyframe {k} inside a fragment: {starts:?}");
            }
            // No fragment longer than 400 ms.
            assert!(starts.windows(2).all(|w| w[1] - w[0] <= 10 + lost.len() as u32), "{starts:?}");
        }
    }

    #[test]
    fn all_intra_video_is_cut_by_duration_not_at_every_frame() {
        let starts = cuts(50, &[], 1);
        assert_eq!(starts, (0..50).step_by(5).collect::<Vec<_>>());
        assert!(!cut_before(true, true, true, 10_000_000, 18_000, false), "an empty fragment is never cut");
        assert!(!cut_before(false, true, false, 50_000, 18_000, true), "with B-frames only a keyframe cuts");
    }
}
