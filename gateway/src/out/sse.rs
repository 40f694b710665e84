//! The SSE feed (public contract, DESIGN.md; WHATWG HTML §9.2 event stream format):
//! `retry:` and a first `event: state`, then `event: frame` (`id:` = frame seq, `data:` =
//! base64 JPEG), `event: detections` (JSON; its `seq` matches the `id:` of its frame, and it
//! comes *before* that frame: see [`Playout`]),
//! `event: state` when the stream's health changes, `: keepalive` comments, and last
//! `event: stopped` with `{"reason":"stopped"|"shutdown"|"token_expired"}` before the feed
//! ends (within one scheduling round of the store event, well under the 200 ms the contract
//! allows).
//!
//! A frame offered to detection is held back until its detection message has gone out (at
//! most `[feeds] detections_wait`), so a player draws the boxes on the very picture they were
//! computed for instead of holding the previous boxes over it while the model runs: the
//! feed runs late by the model's time on the frames it detects, and frames keep their order.
//!
//! Each frame's event is formatted once and shared by every SSE viewer at its quality, so an
//! added viewer costs a queue and a socket write, not an encode.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::config::FeedsConfig;
use crate::core::Error;
use crate::core::clock::sleep_until_some;
use crate::core::detections::{Detections, next_message};
use crate::core::shutdown::StopReason;
use crate::pipeline::{JpegFrame, JpegSubscription, Pixels};
use crate::stream::ingest::Health;
use crate::stream::{ConsumerGuard, EndWatch, StreamRuntime, ViewerKind};

/// The feed's `Content-Type`.
pub(crate) const CONTENT_TYPE: &str = "text/event-stream";
/// How long `EventSource` waits before reconnecting, ms (the `retry:` field).
const RETRY_MS: u32 = 2000;

/// A frame's `event: frame`, made once per JPEG for every SSE viewer.
struct FrameEvent(Bytes);

fn frame_event(frame: &JpegFrame) -> Bytes {
    frame
        .derived(|f| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&f.jpeg);
            FrameEvent(Bytes::from(format!("event: frame\nid: {}\ndata: {b64}\n\n", f.meta.seq)))
        })
        .0
        .clone()
}

/// The `event: stopped` that ends a feed.
fn stopped_event(reason: StopReason) -> Bytes {
    Bytes::from(format!("event: stopped\ndata: {{\"reason\":\"{}\"}}\n\n", reason.as_str()))
}

/// Frames held back until their detection message is sent (module docs). Sans-IO: the feed
/// passes the time in.
#[derive(Debug)]
struct Playout {
    /// The longest a frame waits for its detections.
    wait: Duration,
    /// Frames not sent yet, in order, each with the time it goes out at the latest and
    /// whether it still waits for its detections.
    held: VecDeque<(Arc<JpegFrame>, Instant, bool)>,
    /// The newest frame whose detection message was sent (older ones get none any more).
    detected_up_to: u64,
    /// Cleared when a frame's detections do not come in time (a worker died, or the picture
    /// was replaced before a worker took it), set again by the next message: without workers
    /// the feed waits once, not on every frame.
    waiting: bool,
}

impl Playout {
    fn new(wait: Duration) -> Playout {
        Playout { wait, held: VecDeque::new(), detected_up_to: 0, waiting: true }
    }

    /// A frame from the pipeline: the frames to send now, in order.
    fn frame(&mut self, frame: Arc<JpegFrame>, now: Instant) -> Vec<Arc<JpegFrame>> {
        let awaiting = frame.detecting && self.waiting && frame.meta.seq > self.detected_up_to && !self.wait.is_zero();
        let by = if awaiting { now + self.wait } else { now };
        self.held.push_back((frame, by, awaiting));
        self.release(now)
    }

    /// The detection message of frame `seq` is being sent: the frames to send after it.
    fn detections(&mut self, seq: u64, now: Instant) -> Vec<Arc<JpegFrame>> {
        self.waiting = true;
        self.detected_up_to = self.detected_up_to.max(seq);
        for (frame, _, awaiting) in &mut self.held {
            if frame.meta.seq <= seq {
                *awaiting = false;
            }
        }
        self.release(now)
    }

    /// When the first held frame stops waiting, if one waits.
    fn deadline(&self) -> Option<Instant> {
        self.held.front().filter(|(_, _, awaiting)| *awaiting).map(|(_, by, _)| *by)
    }

    /// The frames due by `now`, in order.
    fn release(&mut self, now: Instant) -> Vec<Arc<JpegFrame>> {
        let mut out = Vec::new();
        while let Some((_, by, awaiting)) = self.held.front() {
            if *awaiting && *by > now {
                break;
            }
            if *awaiting {
                self.waiting = false; // its detections did not come in time
            }
            out.extend(self.held.pop_front().map(|(frame, _, _)| frame));
        }
        out
    }
}

/// The bytes of `events` (already formatted) followed by the `event: frame` of `frames`.
fn chunk(first: Option<Bytes>, frames: Vec<Arc<JpegFrame>>) -> Option<Bytes> {
    match (first, frames.len()) {
        (None, 0) => None,
        (None, 1) => frames.first().map(|f| frame_event(f)),
        (first, _) => {
            let mut out = Vec::from(first.as_deref().unwrap_or_default());
            for f in &frames {
                out.extend_from_slice(&frame_event(f));
            }
            Some(Bytes::from(out))
        }
    }
}

struct Feed {
    stream: Arc<StreamRuntime>,
    frames: JpegSubscription,
    playout: Playout,
    end: EndWatch,
    health: watch::Receiver<Health>,
    detections: Option<broadcast::Receiver<Arc<Detections>>>,
    keepalive: tokio::time::Interval,
    first: bool,
    done: bool,
    _guard: ConsumerGuard,
}

impl Feed {
    fn state_event(&self) -> Bytes {
        let json = serde_json::to_string(&self.stream.health_view()).unwrap_or_else(|_| "{}".into());
        Bytes::from(format!("event: state\ndata: {json}\n\n"))
    }

    /// The next chunk to write, or `None` when the feed is over.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
            let mut head = format!("retry: {RETRY_MS}\n\n").into_bytes();
            head.extend_from_slice(&self.state_event());
            return Some(Bytes::from(head));
        }
        loop {
            tokio::select! {
                biased;
                reason = self.end.ended() => {
                    self.done = true;
                    return Some(stopped_event(reason));
                }
                frame = self.frames.frames.recv() => {
                    let frame = frame?;
                    let detected = self.detections.is_some();
                    let now = Instant::now();
                    let due = if detected { self.playout.frame(frame, now) } else { vec![frame] };
                    if let Some(chunk) = chunk(None, due) {
                        return Some(chunk);
                    }
                }
                () = sleep_until_some(self.playout.deadline()) => {
                    if let Some(chunk) = chunk(None, self.playout.release(Instant::now())) {
                        return Some(chunk);
                    }
                }
                detection = next_message(&mut self.detections), if self.detections.is_some() => match detection {
                    Ok(d) => {
                        let event = Bytes::from(format!("event: detections\ndata: {}\n\n", d.json()));
                        let due = self.playout.detections(d.frame.seq, Instant::now());
                        return chunk(Some(event), due);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        self.detections = None;
                        // No detections any more: nothing waits for them.
                        if let Some(chunk) = chunk(None, self.playout.detections(u64::MAX, Instant::now())) {
                            return Some(chunk);
                        }
                    }
                },
                changed = self.health.changed() => {
                    if changed.is_ok() {
                        return Some(self.state_event());
                    }
                }
                _ = self.keepalive.tick() => return Some(Bytes::from_static(b": keepalive\n\n")),
            }
        }
    }
}

/// Opens an SSE feed of `stream` at `fps` and JPEG `quality` (validated by the caller) for
/// a viewer whose token expires at `expires`, with `[feeds]`'s keep-alive interval and
/// detections wait; the body stream holds the viewer's place until it is dropped.
///
/// Errors: [`Error::ViewersPerStream`] or [`Error::Viewers`] when the viewer limits are reached.
pub(crate) fn open(
    stream: &Arc<StreamRuntime>,
    pixels: &Arc<Pixels>,
    fps: u32,
    quality: u8,
    detections: Option<broadcast::Receiver<Arc<Detections>>>,
    timing: &FeedsConfig,
    expires: Option<std::time::Instant>,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + use<>, Error> {
    let guard = stream.try_consumer(ViewerKind::Sse)?;
    let mut keepalive = tokio::time::interval_at(Instant::now() + timing.keepalive, timing.keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        end: stream.end_watch(expires),
        frames: pixels.subscribe(fps, quality),
        health: stream.watch_health(),
        stream: stream.clone(),
        playout: Playout::new(timing.detections_wait),
        detections,
        keepalive,
        first: true,
        done: false,
        _guard: guard,
    };
    Ok(futures::stream::unfold(feed, |mut feed| async move { feed.next_chunk().await.map(|b| (Ok(b), feed)) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shutdown::ShutdownTrigger;
    use crate::stream::runtime::tests::record;
    use crate::stream::viewers::ViewerBudget;
    use futures::StreamExt;

    fn frame(seq: u64, detecting: bool) -> Arc<JpegFrame> {
        let meta = crate::core::FrameMeta {
            stream: "s".into(),
            seq,
            rtp_timestamp: media::RtpTimestamp::new(seq as u32 * 3600),
            capture_ms: 0,
            width: 2,
            height: 2,
        };
        Arc::new(JpegFrame::for_test(meta, Bytes::from_static(b"jpeg"), detecting))
    }

    fn seqs(frames: Vec<Arc<JpegFrame>>) -> Vec<u64> {
        frames.iter().map(|f| f.meta.seq).collect()
    }

    #[test]
    fn a_detected_frame_follows_its_detections_and_the_frames_behind_it_keep_their_order() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Playout::new(Duration::from_millis(250));
        assert_eq!(seqs(p.frame(frame(1, false), ms(0))), [1], "not detected: at once");
        assert!(p.frame(frame(2, true), ms(0)).is_empty(), "waits for its detections");
        assert_eq!(p.deadline(), Some(ms(250)));
        assert!(p.frame(frame(3, false), ms(40)).is_empty(), "behind a waiting frame");
        assert!(p.frame(frame(4, true), ms(80)).is_empty());
        assert_eq!(seqs(p.detections(2, ms(90))), [2, 3], "after frame 2's message; 4 still waits");
        assert_eq!(p.deadline(), Some(ms(330)));
        // Frame 4 was replaced before a worker took it: frame 5's message releases both.
        assert!(p.frame(frame(5, true), ms(120)).is_empty());
        assert_eq!(seqs(p.detections(5, ms(150))), [4, 5]);
        assert_eq!(p.deadline(), None);
        // A message for a frame not seen yet: that frame does not wait when it comes.
        let _ = p.detections(6, ms(160));
        assert_eq!(seqs(p.frame(frame(6, true), ms(170))), [6]);
    }

    #[test]
    fn without_detections_a_frame_waits_once_not_on_every_frame() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Playout::new(Duration::from_millis(250));
        assert!(p.frame(frame(1, true), ms(0)).is_empty());
        assert!(p.release(ms(249)).is_empty());
        assert_eq!(seqs(p.release(ms(250))), [1], "the longest wait");
        assert_eq!(seqs(p.frame(frame(2, true), ms(300))), [2], "no more waiting (the worker died)");
        let _ = p.detections(1, ms(320));
        assert!(p.frame(frame(3, true), ms(340)).is_empty(), "a message came: frames wait again");
        // No wait configured: nothing is held.
        let mut p = Playout::new(Duration::ZERO);
        assert_eq!(seqs(p.frame(frame(1, true), ms(0))), [1]);
    }

    #[test]
    fn a_chunk_is_the_detections_then_their_frames() {
        assert!(chunk(None, vec![]).is_none());
        let c = chunk(Some(Bytes::from_static(b"event: detections\ndata: {}\n\n")), vec![frame(7, true), frame(8, false)]).unwrap();
        let text = String::from_utf8_lossy(&c);
        assert!(text.starts_with("event: detections\ndata: {}\n\nevent: frame\nid: 7\ndata: anBlZw==\n\nevent: frame\nid: 8\n"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_sends_state_keepalives_and_ends_with_the_reason() {
        let (trigger, shutdown) = ShutdownTrigger::new();
        let config = crate::config::Config::default();
        let rt = StreamRuntime::new(config.streams[0].clone(), record("testcam"), ViewerBudget::new(&config.limits), shutdown);
        let pixels = Pixels::new(rt.id.clone(), rt.hub.clone(), 4);
        let body = open(&rt, &pixels, 10, 75, None, &FeedsConfig::default(), None).unwrap();
        let mut body = Box::pin(body);
        let head = body.next().await.unwrap().unwrap();
        assert!(head.starts_with(b"retry: 2000\n\nevent: state\ndata: {\"active\":true"), "{head:?}");
        assert_eq!(rt.health_view().viewers.sse, 1);
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b": keepalive\n\n", "after 15 s of nothing");
        trigger.trigger();
        assert_eq!(&body.next().await.unwrap().unwrap()[..], b"event: stopped\ndata: {\"reason\":\"shutdown\"}\n\n");
        assert!(body.next().await.is_none(), "the feed ends after event: stopped");
        drop(body);
        assert_eq!(rt.health_view().viewers.sse, 0, "the place is given back");
    }
}
