//! SSE and MJPEG feeds (public contract, DESIGN.md): each viewer gets pre-formatted, shared
//! bytes per frame ([`JpegFrame::sse_event`], [`JpegFrame::mjpeg_part`]), so an added viewer
//! costs a queue and a socket write, not an encode.
//!
//! SSE feeds of a stream with detection also carry `event: detections` (JSON, see
//! [`crate::detect::DetectionMessage`]); its `seq` matches the `id:` of the frame it belongs to.
//!
//! A feed ends when its stream is stopped or the gateway shuts down: SSE sends
//! `event: stopped` first, `data: {"reason":"stopped"|"shutdown"|"token_expired"}` (after
//! `shutdown`, reconnecting reaches another replica; a feed opened with a viewer token ends
//! when the token expires). Both end within
//! one scheduling round of the store event (well under the 200 ms the contract allows).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{broadcast, watch};

use crate::ingest::Health;
use crate::media::{JpegFrame, JpegSubscription, MJPEG_BOUNDARY};
use crate::state::StreamRecord;
use crate::streams::{ConsumerGuard, StreamRuntime};

/// Which wire format a feed writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedFormat {
    /// `text/event-stream` with base64 JPEG frames and state events.
    Sse,
    /// `multipart/x-mixed-replace` JPEG parts.
    Mjpeg,
}

struct Feed {
    format: FeedFormat,
    stream: Arc<StreamRuntime>,
    frames: JpegSubscription,
    record: watch::Receiver<StreamRecord>,
    /// `started_at_ms` when the feed opened: a stop and restart merged into one change
    /// still ends the feed.
    started_at: Option<u64>,
    health: watch::Receiver<Health>,
    shutdown: watch::Receiver<bool>,
    /// The viewer token's expiry: the feed ends then.
    expires: Option<tokio::time::Instant>,
    detections: Option<broadcast::Receiver<Arc<str>>>,
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

    /// Ends the feed: SSE writes `sse_stopped` (its `event: stopped`) last, MJPEG just ends.
    fn end(&mut self, sse_stopped: &'static [u8]) -> Option<Bytes> {
        self.done = true;
        match self.format {
            FeedFormat::Sse => Some(Bytes::from_static(sse_stopped)),
            FeedFormat::Mjpeg => None,
        }
    }

    /// The next chunk to write, or `None` when the feed is over.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if self.first && self.format == FeedFormat::Sse {
            self.first = false;
            // `retry:` tells EventSource how long to wait before reconnecting (ms).
            let mut head = b"retry: 2000\n\n".to_vec();
            head.extend_from_slice(&self.state_event());
            return Some(Bytes::from(head));
        }
        loop {
            tokio::select! {
                biased;
                () = crate::streams::shutting_down(&mut self.shutdown) => {
                    return self.end(b"event: stopped\ndata: {\"reason\":\"shutdown\"}\n\n");
                }
                () = sleep_until_some(self.expires) => {
                    return self.end(b"event: stopped\ndata: {\"reason\":\"token_expired\"}\n\n");
                }
                changed = self.record.changed() => {
                    let ended = changed.is_err() || {
                        let r = self.record.borrow_and_update();
                        !r.active || r.started_at_ms != self.started_at
                    };
                    if ended {
                        return self.end(b"event: stopped\ndata: {\"reason\":\"stopped\"}\n\n");
                    }
                }
                frame = self.frames.frames.recv() => {
                    let frame: Arc<JpegFrame> = frame?;
                    return Some(match self.format {
                        FeedFormat::Sse => frame.sse_event(),
                        FeedFormat::Mjpeg => frame.mjpeg_part(),
                    });
                }
                detection = next_detection(&mut self.detections), if self.detections.is_some() => match detection {
                    Ok(json) => return Some(Bytes::from(format!("event: detections\ndata: {json}\n\n"))),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => self.detections = None,
                },
                changed = self.health.changed(), if self.format == FeedFormat::Sse => {
                    if changed.is_ok() {
                        return Some(self.state_event());
                    }
                }
                _ = self.keepalive.tick(), if self.format == FeedFormat::Sse => {
                    return Some(Bytes::from_static(b": keepalive\n\n"));
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next detection message, or never when there is no receiver.
pub(crate) async fn next_detection(rx: &mut Option<broadcast::Receiver<Arc<str>>>) -> Result<Arc<str>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn chunks(feed: Feed) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move { feed.next_chunk().await.map(|b| (Ok(b), feed)) })
}

/// Builds the streaming response for an active stream. The caller has validated the stream,
/// its state and the query; the consumer guard is held until the response is dropped.
pub fn response(
    format: FeedFormat,
    stream: &Arc<StreamRuntime>,
    fps: u32,
    quality: u8,
    keepalive: Duration,
    expires: Option<std::time::Instant>,
) -> Result<Response, crate::limits::ViewerLimit> {
    let guard = stream.try_consumer(match format {
        FeedFormat::Sse => crate::streams::ViewerKind::Sse,
        FeedFormat::Mjpeg => crate::streams::ViewerKind::Mjpeg,
    })?;
    let mut record = stream.watch_record();
    // Seen now, so a stop that landed while the request was set up still ends the feed.
    let started_at = record.borrow().started_at_ms;
    if !record.borrow().active {
        record.mark_changed();
    } else {
        record.mark_unchanged();
    }
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        format,
        frames: stream.pixels.subscribe(fps, quality),
        stream: stream.clone(),
        record,
        started_at,
        health: stream.watch_health(),
        shutdown: stream.watch_shutdown(),
        expires: expires.map(tokio::time::Instant::from_std),
        detections: if format == FeedFormat::Sse { stream.detections() } else { None },
        keepalive,
        first: true,
        done: false,
        _guard: guard,
    };
    let content_type = match format {
        FeedFormat::Sse => HeaderValue::from_static("text/event-stream"),
        FeedFormat::Mjpeg => HeaderValue::from_str(&format!("multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"))
            .expect("boundary is a valid header value"),
    };
    let mut resp = Response::new(Body::from_stream(chunks(feed)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    // Tells nginx (and similar proxies) not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}
