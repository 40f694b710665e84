//! Viewer places: who counts as watching a stream (so on-demand pull runs), and the limits on
//! how many may (`limits.max_viewers_per_stream`, `limits.max_viewers`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::config::LimitsConfig;
use crate::core::Error;
use crate::metrics::limit_hit;

/// Kinds of viewers, for counts and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ViewerKind {
    /// `GET /api/streams/{id}/feed`.
    Sse,
    /// `GET /api/streams/{id}/mjpeg`.
    Mjpeg,
    /// A WHEP session.
    Webrtc,
    /// The stream's LL-HLS producer (one place for all its HLS viewers).
    Hls,
    /// An RTSP restream client.
    Rtsp,
}

impl ViewerKind {
    /// Every kind, in the order of [`ViewerCounts`].
    pub(crate) const ALL: [ViewerKind; 5] = [ViewerKind::Sse, ViewerKind::Mjpeg, ViewerKind::Webrtc, ViewerKind::Hls, ViewerKind::Rtsp];

    /// The `kind` label of `sightline_viewers`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ViewerKind::Sse => "sse",
            ViewerKind::Mjpeg => "mjpeg",
            ViewerKind::Webrtc => "webrtc",
            ViewerKind::Hls => "hls",
            ViewerKind::Rtsp => "rtsp",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Viewer counts by kind, as shown by the API.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct ViewerCounts {
    /// SSE viewers.
    pub(crate) sse: usize,
    /// MJPEG viewers.
    pub(crate) mjpeg: usize,
    /// WebRTC (WHEP) viewers.
    pub(crate) webrtc: usize,
    /// 1 while the stream's LL-HLS producer runs (HLS viewers are plain HTTP requests).
    pub(crate) hls: usize,
    /// RTSP restream clients.
    pub(crate) rtsp: usize,
}

/// Live viewer counts of one stream, by kind.
#[derive(Debug, Default)]
pub(crate) struct Counters([AtomicUsize; 5]);

impl Counters {
    pub(crate) fn add(&self, kind: ViewerKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, kind: ViewerKind) {
        self.0[kind.index()].fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ViewerCounts {
        let get = |k: ViewerKind| self.0[k.index()].load(Ordering::Relaxed);
        ViewerCounts {
            sse: get(ViewerKind::Sse),
            mjpeg: get(ViewerKind::Mjpeg),
            webrtc: get(ViewerKind::Webrtc),
            hls: get(ViewerKind::Hls),
            rtsp: get(ViewerKind::Rtsp),
        }
    }
}

/// The gateway-wide viewer count against `limits.max_viewers`, and the per-stream maximum.
#[derive(Debug)]
pub(crate) struct ViewerBudget {
    max_total: usize,
    max_per_stream: usize,
    total: AtomicUsize,
}

impl ViewerBudget {
    /// A budget with the configured maxima.
    pub(crate) fn new(config: &LimitsConfig) -> Arc<ViewerBudget> {
        Arc::new(ViewerBudget { max_total: config.max_viewers, max_per_stream: config.max_viewers_per_stream, total: AtomicUsize::new(0) })
    }

    /// Most viewers per stream.
    pub(crate) fn max_per_stream(&self) -> usize {
        self.max_per_stream
    }

    /// Takes one place in the total; release it with [`ViewerBudget::release`].
    pub(crate) fn take(&self) -> Result<(), Error> {
        // Only ever incremented below the maximum: a refused attempt never holds a place.
        match self.total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_total).then_some(n + 1)) {
            Ok(_) => Ok(()),
            Err(_) => {
                limit_hit("viewers");
                Err(Error::Viewers { max: self.max_total })
            }
        }
    }

    /// Takes a place even beyond the maximum (a relay: see `StreamRuntime::relay_consumer`).
    pub(crate) fn take_beyond(&self) {
        self.total.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back a place taken with [`ViewerBudget::take`].
    pub(crate) fn release(&self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_budget_refuses_beyond_the_total() {
        let b = ViewerBudget::new(&LimitsConfig { max_viewers: 2, ..LimitsConfig::default() });
        b.take().unwrap();
        b.take().unwrap();
        assert!(matches!(b.take(), Err(Error::Viewers { max: 2 })));
        b.release();
        b.take().unwrap();
    }
}
