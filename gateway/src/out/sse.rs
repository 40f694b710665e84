//! The SSE feed (public contract, DESIGN.md; WHATWG HTML §9.2 event stream format):
//! `retry:` and a first `event: state`, then `event: frame` (`id:` = frame seq, `data:` =
//! base64 JPEG), `event: detections` (JSON; its `seq` matches the `id:` of its frame),
//! `event: state` when the stream's health changes, `: keepalive` comments, and last
//! `event: stopped` with `{"reason":"stopped"|"shutdown"|"token_expired"}` before the feed
//! ends (within one scheduling round of the store event, well under the 200 ms the contract
//! allows).
//!
//! Each frame's event is formatted once and shared by every SSE viewer at its quality, so an
//! added viewer costs a queue and a socket write, not an encode.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{broadcast, watch};

use crate::core::Error;
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

struct Feed {
    stream: Arc<StreamRuntime>,
    frames: JpegSubscription,
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
                frame = self.frames.frames.recv() => return frame.map(|f| frame_event(&f)),
                detection = next_message(&mut self.detections), if self.detections.is_some() => match detection {
                    Ok(d) => return Some(Bytes::from(format!("event: detections\ndata: {}\n\n", d.json()))),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => self.detections = None,
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
/// a viewer whose token expires at `expires`; the body stream holds the viewer's place until
/// it is dropped.
///
/// Errors: [`Error::ViewersPerStream`] or [`Error::Viewers`] when the viewer limits are reached.
pub(crate) fn open(
    stream: &Arc<StreamRuntime>,
    pixels: &Arc<Pixels>,
    fps: u32,
    quality: u8,
    detections: Option<broadcast::Receiver<Arc<Detections>>>,
    keepalive: Duration,
    expires: Option<std::time::Instant>,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + use<>, Error> {
    let guard = stream.try_consumer(ViewerKind::Sse)?;
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        end: stream.end_watch(expires),
        frames: pixels.subscribe(fps, quality),
        health: stream.watch_health(),
        stream: stream.clone(),
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

    #[tokio::test(start_paused = true)]
    async fn a_feed_sends_state_keepalives_and_ends_with_the_reason() {
        let (trigger, shutdown) = ShutdownTrigger::new();
        let config = crate::config::Config::default();
        let rt = StreamRuntime::new(config.streams[0].clone(), record("testcam"), ViewerBudget::new(&config.limits), shutdown);
        let pixels = Pixels::new(rt.id.clone(), rt.hub.clone(), 4);
        let body = open(&rt, &pixels, 10, 75, None, Duration::from_secs(15), None).unwrap();
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
