//! Stream status and control: `GET /api/streams`, `GET /api/streams/{id}`,
//! `POST /api/streams/{id}/start`, `POST /api/streams/{id}/stop`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::error::{ErrorBody, body_rejection};
use super::extract::Controller;
use super::state::{AppState, check_fps, check_quality};
use crate::auth::Caller;
use crate::config::redact::redact_url;
use crate::config::{LineConfig, Transport, ZoneConfig};
use crate::core::Error;
use crate::detect::DetectionView;
use crate::out::webrtc::{WebrtcAudio, WebrtcVideo, audio_policy, policy};
use crate::state::StartParams;
use crate::stream::StreamRuntime;
use crate::stream::runtime::HealthView;

/// The API's view of a stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StreamView {
    /// Stream id.
    pub(crate) id: String,
    /// Display name.
    pub(crate) name: String,
    /// Camera URL with the password replaced by `***`.
    pub(crate) url: String,
    /// RTP transport used towards the camera.
    pub(crate) transport: Transport,
    /// Whether the camera is pulled only while watched.
    pub(crate) on_demand: bool,
    /// Whether the stream is started.
    pub(crate) active: bool,
    /// Default feed fps.
    pub(crate) fps: u32,
    /// Default feed JPEG quality.
    pub(crate) quality: u8,
    /// State store generation of this record.
    pub(crate) generation: u64,
    /// Last start, ms since the Unix epoch.
    pub(crate) started_at_ms: Option<u64>,
    /// Last change, ms since the Unix epoch.
    pub(crate) updated_at_ms: u64,
    /// Replica that made the last change.
    pub(crate) updated_by: String,
    /// Ingest health and viewer counts.
    pub(crate) health: HealthView,
    /// What each output does with the camera's video.
    pub(crate) video: VideoView,
    /// What each output does with the camera's audio.
    pub(crate) audio: AudioView,
    /// Object detection status.
    pub(crate) detection: DetectionView,
    /// Zones tracked objects enter, leave and loiter in (drawn on the live view).
    pub(crate) zones: Vec<ZoneConfig>,
    /// Lines (tripwires) tracked objects cross.
    pub(crate) lines: Vec<LineConfig>,
    /// Recording: `mode` (`off`, `continuous`), `state` (`off`, `waiting`, `recording`,
    /// `failed` with `reason`).
    pub(crate) recording: crate::record::RecordingStatus,
}

/// What each output does with the camera's video.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VideoView {
    /// WebRTC: `{"mode": "passthrough" | "transcode", "reason": …}` (from the camera's codec and
    /// B-frames; `passthrough` until they are known).
    pub(crate) webrtc: WebrtcVideo,
}

/// What each output does with the camera's audio (SSE and MJPEG are video only).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AudioView {
    /// WebRTC: `{"mode": "passthrough" | "transcode" | "off", "reason": …}` (G.711 passed
    /// through, AAC transcoded to Opus; `off` with the reason otherwise).
    pub(crate) webrtc: WebrtcAudio,
}

impl StreamView {
    /// The view of `rt` (credentials redacted) as `state` sees it now.
    fn new(state: &AppState, rt: &StreamRuntime) -> StreamView {
        let r = rt.record();
        let health = rt.health_view();
        let geometry = rt.geometry();
        StreamView {
            id: rt.config.id.clone(),
            name: rt.config.display_name().to_owned(),
            url: redact_url(&rt.config.url),
            transport: rt.config.transport,
            on_demand: rt.config.on_demand,
            active: r.active,
            fps: r.fps,
            quality: r.quality,
            generation: r.generation,
            started_at_ms: r.started_at_ms,
            updated_at_ms: r.updated_at_ms,
            updated_by: r.updated_by,
            video: VideoView { webrtc: policy(health.health.codec, health.health.b_frames) },
            audio: AudioView {
                webrtc: {
                    let camera = health.health.audio.as_ref();
                    let codec = camera.and_then(|a| media::AudioCodec::from_name(&a.codec).filter(|_| a.supported));
                    audio_policy(rt.config.audio, codec, camera.is_some())
                },
            },
            health,
            detection: state.detect.as_ref().map_or_else(DetectionView::off, |d| d.view(&rt.id)),
            zones: geometry.zones.clone(),
            lines: geometry.lines.clone(),
            recording: state.recorders.status(&rt.config.id),
        }
    }
}

/// `GET /api/streams`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StreamList {
    /// The streams the caller may see.
    pub(crate) streams: Vec<StreamView>,
}

/// Lists the streams the caller may see (a viewer token: its streams).
#[utoipa::path(get, path = "/api/streams", tag = "streams", security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The streams", body = StreamList), super::responses::Denied, super::responses::Guard))]
pub(super) async fn list_streams(State(state): State<AppState>, caller: Caller) -> Result<Json<StreamList>, Error> {
    caller.require_any()?;
    let streams: Vec<_> = state.streams.all().filter(|s| caller.may_view(&s.id)).map(|s| StreamView::new(&state, s)).collect();
    Ok(Json(StreamList { streams }))
}

/// One stream: state, health, viewers, detection.
#[utoipa::path(get, path = "/api/streams/{id}", tag = "streams", params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The stream", body = StreamView),
        (status = 404, description = "No such stream", body = ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn get_stream(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<StreamView>, Error> {
    caller.require_view(&id)?;
    Ok(Json(StreamView::new(&state, state.streams.require(&id)?)))
}

/// `POST /api/streams/{id}/start` body: optional `{"fps": 1..=30, "quality": 1..=100}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    /// Default feed frames per second, 1..=30.
    #[schema(minimum = 1, maximum = 30)]
    fps: Option<u32>,
    /// Default feed JPEG quality, 1..=100.
    #[schema(minimum = 1, maximum = 100)]
    quality: Option<u32>,
}

impl StartBody {
    /// Parses an optional body: empty, `null` or an object.
    fn parse(body: &[u8]) -> Result<StartBody, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(StartBody::default());
        }
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
        if value.is_null() {
            Ok(StartBody::default())
        } else if !value.is_object() {
            Err(Error::BadRequest("the body must be a JSON object like {\"fps\":15,\"quality\":75}".into()))
        } else {
            serde_json::from_value(value).map_err(|e| Error::BadRequest(format!("invalid start request: {e}")))
        }
    }
}

/// Starts a stream (on every replica), optionally with new feed defaults. Control token.
#[utoipa::path(post, path = "/api/streams/{id}/start", tag = "control", params(("id" = String, Path, description = "Stream id")),
    request_body(content = Option<StartBody>, content_type = "application/json", description = "Optional new defaults"),
    security(("bearer" = [])),
    responses((status = 200, description = "The stream, started", body = StreamView), super::responses::Control, super::responses::Guard))]
pub(super) async fn start_stream(
    State(state): State<AppState>,
    _: Controller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StreamView>, Error> {
    state.streams.require(&id)?;
    let parsed = StartBody::parse(&body.map_err(body_rejection)?)?;
    let params = StartParams { fps: parsed.fps.map(check_fps).transpose()?, quality: parsed.quality.map(check_quality).transpose()? };
    let rt = state.streams.set_active(&id, true, params).await?;
    Ok(Json(StreamView::new(&state, &rt)))
}

/// Stops a stream (on every replica): its feeds end with `event: stopped`. Control token.
#[utoipa::path(post, path = "/api/streams/{id}/stop", tag = "control", params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The stream, stopped", body = StreamView), super::responses::Control, super::responses::Guard))]
pub(super) async fn stop_stream(State(state): State<AppState>, _: Controller, Path(id): Path<String>) -> Result<Json<StreamView>, Error> {
    state.streams.require(&id)?;
    let rt = state.streams.set_active(&id, false, StartParams::default()).await?;
    Ok(Json(StreamView::new(&state, &rt)))
}
