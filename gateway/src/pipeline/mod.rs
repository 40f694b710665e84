//! Pixels on demand (DESIGN.md steps 4-5): one decoder per stream, running only while a JPEG
//! viewer watches or detection wants pictures, and one JPEG encode per frame per quality that
//! some viewer actually takes this frame. Encoded bytes are shared (`Bytes`) by all viewers.
//!
//! The pipeline knows no consumer and no transport: JPEG viewers get `JpegFrame`s (SSE and
//! MJPEG wrap them, once per frame, through `JpegFrame::derived`), detection gets decoded
//! [`Picture`]s through the [`PictureSink`] set with `Pixels::set_picture_sink`.
//!
//! Each viewer has a bounded queue (`feeds.viewer_queue`); a viewer whose queue is full loses
//! that frame (counted as `reason="slow_viewer"`), never slowing the decoder, other viewers or
//! ingest. A viewer asking for fewer fps than the camera sends takes frames by RTP timestamp
//! (`decimate::Decimator`), so 10 fps from a 25 fps camera is 10 fps, not every 2nd or 3rd.
//!
//! - [`codec`]: decode (libavcodec: H.264 with or without B-frames, H.265; pictures in
//!   presentation order), range expansion, JPEG encode (blocking work, on tokio's blocking pool).
//! - `decimate`: which frames a consumer at a lower rate takes.
//! - `transcode`: WebRTC video for cameras browsers cannot take as sent (H.265, B-frames).
//! - `audio`: AAC to Opus for WebRTC; G.711 to AAC for fMP4.
//! - `aac_track`: a camera's audio as the AAC track of recordings and LL-HLS, placed on the
//!   video's timeline.
//! - `snapshot`: an event's snapshot, the detected picture with the object's box drawn.

pub(crate) mod aac_track;
pub(crate) mod audio;
pub mod codec;
pub(crate) mod decimate;
pub(crate) mod snapshot;
pub(crate) mod transcode;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use media::{FrameMeta, RtpTimestamp};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tracing::debug;

use self::codec::{Codec, Decoded, Encoded};
use self::decimate::Decimator;
use crate::core::StreamId;
use crate::core::frame::{Derived, Picture, PictureSink};
use crate::core::shutdown::Shutdown;
use crate::core::task::{note_panic, restart_on_panic};
use crate::stream::hub::Hub;

/// One encoded JPEG picture, shared by every viewer at its quality.
#[derive(Debug)]
pub(crate) struct JpegFrame {
    /// Which picture.
    pub(crate) meta: FrameMeta,
    /// The JFIF bytes.
    pub(crate) jpeg: Bytes,
    /// This picture was offered to detection: its detection message follows, unless no
    /// worker takes it before a newer picture replaces it (DESIGN.md step 6).
    pub(crate) detecting: bool,
    derived: Derived,
}

impl JpegFrame {
    /// A transport's wrapping of this picture (an SSE event, a multipart part), made once for
    /// all viewers of that transport (see [`Derived`]).
    pub(crate) fn derived<T: Any + Send + Sync>(&self, make: impl FnOnce(&JpegFrame) -> T) -> Arc<T> {
        self.derived.get_or_init(|| make(self))
    }
}

#[cfg(test)]
impl JpegFrame {
    /// A frame outside any pipeline.
    pub(crate) fn for_test(meta: FrameMeta, jpeg: Bytes, detecting: bool) -> JpegFrame {
        JpegFrame { meta, jpeg, detecting, derived: Derived::default() }
    }
}

/// The qualities a frame is encoded at, each with the ids of the viewers that take it.
type Wanted = Vec<(u8, Vec<u64>)>;

#[derive(Debug)]
struct Viewer {
    id: u64,
    quality: u8,
    decimator: Decimator,
    tx: mpsc::Sender<Arc<JpegFrame>>,
}

#[derive(Debug, Default)]
struct Viewers {
    next_id: u64,
    list: Vec<Viewer>,
    decoder_running: bool,
    /// Pictures for detection: those at the sink's rate go to it.
    pictures: Option<(Decimator, Arc<dyn PictureSink>)>,
}

/// The pixel pipeline of one stream. See the module docs.
#[derive(Debug)]
pub(crate) struct Pixels {
    stream_id: StreamId,
    hub: Arc<Hub>,
    queue_depth: usize,
    viewers: Mutex<Viewers>,
    changed: Notify,
}

/// A JPEG viewer's frames; dropping it leaves the pipeline (the decoder stops with the last).
#[derive(Debug)]
pub(crate) struct JpegSubscription {
    /// Frames for this viewer, already at its fps and quality.
    pub(crate) frames: mpsc::Receiver<Arc<JpegFrame>>,
    pixels: Arc<Pixels>,
    id: u64,
}

impl Drop for JpegSubscription {
    fn drop(&mut self) {
        self.pixels.viewers.lock().list.retain(|viewer| viewer.id != self.id);
        self.pixels.changed.notify_one();
    }
}

impl Pixels {
    /// A pipeline fed by `hub`; `queue_depth` frames are queued per viewer.
    pub(crate) fn new(stream_id: StreamId, hub: Arc<Hub>, queue_depth: usize) -> Arc<Pixels> {
        // Exported at zero from the start so dashboards see every stream.
        metrics::gauge!("sightline_decoders_active", "stream" => stream_id.to_string()).set(0.0);
        Arc::new(Pixels { stream_id, hub, queue_depth, viewers: Mutex::default(), changed: Notify::new() })
    }

    /// Adds a viewer at `fps` (1..=30) and JPEG `quality` (1..=100); starts the decoder if
    /// it is not running.
    pub(crate) fn subscribe(self: &Arc<Self>, fps: u32, quality: u8) -> JpegSubscription {
        let (tx, rx) = mpsc::channel(self.queue_depth);
        let mut v = self.viewers.lock();
        v.next_id += 1;
        let id = v.next_id;
        v.list.push(Viewer { id, quality, decimator: Decimator::new(fps), tx });
        self.ensure_decoder(&mut v);
        JpegSubscription { frames: rx, pixels: self.clone(), id }
    }

    fn ensure_decoder(self: &Arc<Self>, v: &mut Viewers) {
        if !v.decoder_running {
            v.decoder_running = true;
            let pixels = self.clone();
            tokio::spawn(async move {
                let id = pixels.stream_id.clone();
                // It ends on its own when its last viewer leaves (they all end at shutdown).
                restart_on_panic("decoder", &id, Shutdown::never(), || pixels.clone().decode()).await;
            });
        }
    }

    /// Sends decoded pictures at `fps` to `sink` (decoding then runs even without JPEG
    /// viewers), or stops that (`None`; the sink's waiting picture of this stream is cleared).
    pub(crate) fn set_picture_sink(self: &Arc<Self>, sink: Option<(u32, Arc<dyn PictureSink>)>) {
        let mut v = self.viewers.lock();
        match sink {
            Some((fps, sink)) => {
                v.pictures = Some((Decimator::new(fps), sink));
                self.ensure_decoder(&mut v);
            }
            None => {
                if let Some((_, sink)) = v.pictures.take() {
                    sink.clear(&self.stream_id);
                }
                drop(v);
                self.changed.notify_one();
            }
        }
    }

    /// Decodes until no viewer and no picture sink is left.
    async fn decode(self: Arc<Self>) {
        let labels = [("stream", self.stream_id.to_string())];
        let _active = GaugeGuard::new(metrics::gauge!("sightline_decoders_active", &labels));
        debug!(stream = %self.stream_id, "decoder started");
        let mut codec = Some(Codec::new(&self.stream_id));
        let mut sub = self.hub.subscribe();
        loop {
            let au = tokio::select! {
                au = sub.next() => au,
                () = self.changed.notified() => None,
            };
            let Some(au) = au else {
                let mut v = self.viewers.lock();
                if v.list.is_empty() && v.pictures.is_none() {
                    v.decoder_running = false;
                    break;
                }
                continue;
            };
            // Units replayed from the cached GOP are decoded (the decoder needs them) but
            // their pictures are stale: nobody gets them.
            let live = !sub.in_backlog();
            let mut c = codec.take().unwrap_or_else(|| Codec::new(&self.stream_id));
            let (pixels, job_au) = (self.clone(), au.clone());
            let result = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                // Pictures leave the decoder in presentation order, each with its own unit's
                // identity; with B-frames that is not the unit just sent.
                for decoded in c.decode(&job_au) {
                    if !live {
                        continue;
                    }
                    let (wanted, sink) = pixels.pick(decoded.rtp_timestamp);
                    let qualities: Vec<u8> = wanted.iter().map(|(q, _)| *q).collect();
                    let meta = pixels.meta(&decoded);
                    // Detection gets the picture before the JPEGs are encoded (the model's
                    // run overlaps them; the SSE feed holds the frame for its boxes anyway).
                    let mut detecting = false;
                    let mut offer = |planes: Vec<u8>| {
                        if let Some(sink) = &sink {
                            let offered = Instant::now();
                            sink.offer(Picture { meta: meta.clone(), full_range: decoded.full_range, planes: planes.into(), offered });
                            detecting = true;
                        }
                    };
                    let hand_off = sink.is_some().then_some(&mut offer as &mut dyn FnMut(Vec<u8>));
                    let encoded = c.encode(&decoded, &qualities, hand_off);
                    out.push((meta, wanted, encoded, detecting));
                }
                (c, out)
            })
            .await;
            let (c, pictures) = match result {
                Ok(done) => done,
                Err(e) => {
                    // The codec panicked on this unit (corrupt input the decoder chokes on):
                    // a new codec starts at the next keyframe.
                    if let Ok(payload) = e.try_into_panic() {
                        note_panic("decoder", &self.stream_id, &*payload);
                    }
                    sub = self.hub.subscribe();
                    continue;
                }
            };
            codec = Some(c);
            for (meta, wanted, encoded, detecting) in pictures {
                self.deliver(meta, wanted, encoded, detecting);
            }
        }
        debug!(stream = %self.stream_id, "decoder stopped");
    }

    fn meta(&self, picture: &Decoded) -> FrameMeta {
        FrameMeta {
            stream: self.stream_id.clone(),
            seq: picture.seq,
            rtp_timestamp: picture.rtp_timestamp,
            capture_ms: picture.capture_ms,
            width: picture.width,
            height: picture.height,
        }
    }

    /// Which qualities the picture stamped `rtp_timestamp` must be encoded at, with the
    /// viewer ids that take each, and the picture sink if it is due for detection.
    fn pick(&self, rtp_timestamp: RtpTimestamp) -> (Wanted, Option<Arc<dyn PictureSink>>) {
        let mut v = self.viewers.lock();
        let sink = v.pictures.as_mut().and_then(|(decimator, sink)| decimator.take(rtp_timestamp).then(|| sink.clone()));
        let mut by_quality: Wanted = Vec::new();
        for viewer in &mut v.list {
            if !viewer.decimator.take(rtp_timestamp) {
                continue;
            }
            if viewer.tx.capacity() == 0 {
                // A stalled viewer: don't encode for it (the frame is lost for it anyway).
                self.count_slow_viewer();
                continue;
            }
            match by_quality.iter_mut().find(|(q, _)| *q == viewer.quality) {
                Some((_, ids)) => ids.push(viewer.id),
                None => by_quality.push((viewer.quality, vec![viewer.id])),
            }
        }
        (by_quality, sink)
    }

    fn count_slow_viewer(&self) {
        metrics::counter!("sightline_frames_dropped_total", "stream" => self.stream_id.to_string(), "reason" => "slow_viewer").increment(1);
    }

    fn deliver(&self, meta: FrameMeta, wanted: Wanted, encoded: Option<Encoded>, detecting: bool) {
        let Some(encoded) = encoded else { return };
        if wanted.is_empty() {
            return;
        }
        let v = self.viewers.lock();
        for ((_, ids), jpeg) in wanted.into_iter().zip(encoded.jpegs) {
            let frame = Arc::new(JpegFrame { meta: meta.clone(), jpeg, detecting, derived: Derived::default() });
            for viewer in v.list.iter().filter(|viewer| ids.contains(&viewer.id)) {
                if viewer.tx.try_send(frame.clone()).is_err() {
                    self.count_slow_viewer();
                }
            }
        }
    }
}

/// Adds one to a gauge while alive (a running decoder), also when its task panics.
struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    fn new(gauge: metrics::Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The pixel pipelines of all streams, by stream id.
#[derive(Debug, Default)]
pub(crate) struct Pipelines(BTreeMap<StreamId, Arc<Pixels>>);

impl Pipelines {
    /// One pipeline per stream of `streams`, fed by its hub.
    pub(crate) fn new<'a>(streams: impl Iterator<Item = (&'a StreamId, &'a Arc<Hub>)>, queue_depth: usize) -> Pipelines {
        Pipelines(streams.map(|(id, hub)| (id.clone(), Pixels::new(id.clone(), hub.clone(), queue_depth))).collect())
    }

    /// The pipeline of stream `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Pixels>> {
        self.0.get(id)
    }
}
