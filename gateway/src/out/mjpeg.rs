//! The MJPEG feed: `multipart/x-mixed-replace` (one JPEG per part, with `Content-Length` and
//! `X-Frame-Seq`), for `<img src>` and players like VLC. It ends (the body closes) when the
//! stream stops, the gateway shuts down or the viewer token expires. Each frame's part is
//! made once and shared by every MJPEG viewer at its quality.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use crate::core::Error;
use crate::pipeline::{JpegFrame, JpegSubscription, Pixels};
use crate::stream::{ConsumerGuard, EndWatch, StreamRuntime, ViewerKind};

/// Multipart boundary of the feed.
pub(crate) const BOUNDARY: &str = "sightlineframe";
/// The feed's `Content-Type`.
pub(crate) const CONTENT_TYPE: &str = "multipart/x-mixed-replace; boundary=sightlineframe";

/// A frame's multipart part, made once per JPEG for every MJPEG viewer.
struct Part(Bytes);

fn part(frame: &JpegFrame) -> Bytes {
    frame
        .derived(|f| {
            let head = format!(
                "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Seq: {}\r\n\r\n",
                f.jpeg.len(),
                f.meta.seq
            );
            let mut part = Vec::with_capacity(head.len() + f.jpeg.len() + 2);
            part.extend_from_slice(head.as_bytes());
            part.extend_from_slice(&f.jpeg);
            part.extend_from_slice(b"\r\n");
            Part(Bytes::from(part))
        })
        .0
        .clone()
}

struct Feed {
    frames: JpegSubscription,
    end: EndWatch,
    _guard: ConsumerGuard,
}

impl Feed {
    /// The next part, or `None` when the feed is over.
    async fn next_part(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            _ = self.end.ended() => None,
            frame = self.frames.frames.recv() => frame.map(|f| part(&f)),
        }
    }
}

/// Opens an MJPEG feed of `stream` at `fps` and JPEG `quality` (validated by the caller)
/// for a viewer whose token expires at `expires`; the body stream holds the viewer's place
/// until it is dropped.
///
/// Errors: [`Error::ViewersPerStream`] or [`Error::Viewers`] when the viewer limits are reached.
pub(crate) fn open(
    stream: &Arc<StreamRuntime>,
    pixels: &Arc<Pixels>,
    fps: u32,
    quality: u8,
    expires: Option<std::time::Instant>,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + use<>, Error> {
    let guard = stream.try_consumer(ViewerKind::Mjpeg)?;
    let feed = Feed { end: stream.end_watch(expires), frames: pixels.subscribe(fps, quality), _guard: guard };
    Ok(futures::stream::unfold(feed, |mut feed| async move { feed.next_part().await.map(|b| (Ok(b), feed)) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FrameMeta;

    #[test]
    fn a_part_frames_one_jpeg() {
        let meta =
            FrameMeta { stream: "s".into(), seq: 42, rtp_timestamp: media::RtpTimestamp::new(0), capture_ms: 0, width: 2, height: 2 };
        let frame = JpegFrame::for_test(meta, Bytes::from_static(b"\xff\xd8jpeg\xff\xd9"), false);
        let p = part(&frame);
        let text = String::from_utf8_lossy(&p);
        assert!(text.starts_with("--sightlineframe\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\nX-Frame-Seq: 42\r\n\r\n"), "{text}");
        assert!(p.ends_with(b"\xff\xd9\r\n"));
        assert_eq!(p.as_ptr(), part(&frame).as_ptr(), "made once, shared");
        assert!(CONTENT_TYPE.ends_with(BOUNDARY));
    }
}
