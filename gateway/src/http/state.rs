//! What every handler shares: [`AppState`], and the checks more than one handler makes.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::guard::ControlRate;
use crate::auth::Auth;
use crate::config::{FPS_RANGE, FeedsConfig, LimitsConfig, QUALITY_RANGE};
use crate::core::Error;
use crate::core::detections::Detections;
use crate::core::events::EventFanout;
use crate::core::shutdown::Shutdown;
use crate::detect::Detect;
use crate::out::webrtc::Webrtc;
use crate::pipeline::Pipelines;
use crate::state::StateStore;
use crate::stream::Streams;

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    /// The streams.
    pub(crate) streams: Arc<Streams>,
    /// Their pixel pipelines (JPEG feeds).
    pub(crate) pipelines: Arc<Pipelines>,
    /// Detection; `None` when `detect.enabled = false` or its socket could not be made.
    pub(crate) detect: Option<Arc<Detect>>,
    /// Analytics events (made by detection; none without it).
    pub(crate) events: Arc<EventFanout>,
    /// Stored analytics events.
    pub(crate) archive: Arc<crate::archive::Archive>,
    /// Live LL-HLS producers.
    pub(crate) hls: Arc<crate::out::hls::Hls>,
    /// Stream recorders and the recordings index.
    pub(crate) recorders: Arc<crate::record::Recorders>,
    /// Offline video jobs; `None` when their directory or Redis could not be set up.
    pub(crate) jobs: Option<Arc<crate::jobs::Jobs>>,
    /// WHEP sessions; `None` when `webrtc.enabled = false`.
    pub(crate) webrtc: Option<Arc<Webrtc>>,
    /// The state store (for readiness).
    pub(crate) store: Arc<dyn StateStore>,
    /// Feed settings.
    pub(crate) feeds: FeedsConfig,
    /// This replica's id, sent as `X-Sightline-Replica` on every response.
    pub(crate) replica_id: String,
    /// Who may call what.
    pub(crate) auth: Arc<Auth>,
    /// Request limits.
    pub(crate) limits: Arc<LimitsConfig>,
    /// Per-client rate of control requests.
    pub(crate) control_rate: Arc<ControlRate>,
    /// Fires when the gateway begins to shut down (`/readyz` fails from then on).
    pub(crate) shutdown: Shutdown,
}

impl AppState {
    /// New viewers are refused once shutdown began (they reconnect to another replica).
    pub(super) fn refuse_when_stopping(&self) -> Result<(), Error> {
        if self.shutdown.is_set() { Err(Error::ShuttingDown) } else { Ok(()) }
    }

    /// Detection messages of stream `id`, when it has detection.
    pub(super) fn detections(&self, id: &str) -> Option<broadcast::Receiver<Arc<Detections>>> {
        self.detect.as_ref().and_then(|d| d.subscribe(id))
    }
}

/// A feed's or a start's frames per second, within [`FPS_RANGE`].
pub(super) fn check_fps(fps: u32) -> Result<u32, Error> {
    if FPS_RANGE.contains(&fps) { Ok(fps) } else { Err(Error::BadRequest(format!("fps {fps} outside {FPS_RANGE:?}"))) }
}

/// A feed's or a start's JPEG quality, within [`QUALITY_RANGE`].
pub(super) fn check_quality(q: u32) -> Result<u8, Error> {
    u8::try_from(q)
        .ok()
        .filter(|q| QUALITY_RANGE.contains(q))
        .ok_or_else(|| Error::BadRequest(format!("quality {q} outside {QUALITY_RANGE:?}")))
}
