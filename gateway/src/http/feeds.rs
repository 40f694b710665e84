//! The JPEG feeds: `GET /api/streams/{id}/feed` (SSE, [`crate::out::sse`]) and
//! `GET /api/streams/{id}/mjpeg` (MJPEG, [`crate::out::mjpeg`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;

use super::error::query_rejection;
use super::state::{AppState, check_fps, check_quality};
use crate::auth::Caller;
use crate::core::Error;
use crate::out::{mjpeg, sse};
use crate::pipeline::Pixels;
use crate::stream::StreamRuntime;

/// `?fps=&quality=&token=` of the feeds; absent values take the stream's defaults.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedQuery {
    /// Frames per second, 1..=30.
    #[param(minimum = 1, maximum = 30)]
    fps: Option<u32>,
    /// JPEG quality, 1..=100.
    #[param(minimum = 1, maximum = 100)]
    quality: Option<u32>,
    /// A viewer token (read by [`Caller`]).
    #[allow(dead_code, reason = "read from the raw query by the Caller extractor; named here for deny_unknown_fields and OpenAPI")]
    token: Option<String>,
}

/// A feed request that passed the checks: the stream, its pipeline, and the viewer's rate
/// and quality.
struct Opened<'a> {
    rt: &'a Arc<StreamRuntime>,
    pixels: &'a Arc<Pixels>,
    fps: u32,
    quality: u8,
}

/// Checks a feed request: the caller may view the stream, the replica is not shutting down,
/// the stream exists and is active, the query is valid.
fn check<'a>(state: &'a AppState, caller: &Caller, id: &str, query: Result<Query<FeedQuery>, QueryRejection>) -> Result<Opened<'a>, Error> {
    caller.require_view(id)?;
    state.refuse_when_stopping()?;
    let rt = state.streams.require(id)?;
    let Query(q) = query.map_err(query_rejection)?;
    let record = rt.record();
    let fps = check_fps(q.fps.unwrap_or(record.fps))?;
    let quality = check_quality(q.quality.unwrap_or(u32::from(record.quality)))?;
    if !record.active {
        return Err(Error::StreamStopped { stream: id.to_owned() });
    }
    let pixels = state.pipelines.get(id).ok_or_else(|| Error::UnknownStream { stream: id.to_owned() })?;
    Ok(Opened { rt, pixels, fps, quality })
}

/// A streaming response of `content_type` that no proxy buffers or caches.
fn streaming(body: Body, content_type: &'static str) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    // Tells nginx (and similar proxies) not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// SSE feed: `event: frame` (base64 JPEG, `id:` = seq), `state`, `detections`, `stopped`.
#[utoipa::path(get, path = "/api/streams/{id}/feed", tag = "feeds", params(("id" = String, Path, description = "Stream id"), FeedQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Server-sent events until the stream stops", content_type = "text/event-stream", body = String),
        super::responses::Feed, super::responses::Denied, super::responses::Guard))]
pub(super) async fn sse_feed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let o = check(&state, &caller, &id, query)?;
    let body = sse::open(o.rt, o.pixels, o.fps, o.quality, state.detections(&id), &state.feeds, caller.expires())?;
    Ok(streaming(Body::from_stream(body), sse::CONTENT_TYPE))
}

/// MJPEG feed (`multipart/x-mixed-replace`), for `<img src>`.
#[utoipa::path(get, path = "/api/streams/{id}/mjpeg", tag = "feeds", params(("id" = String, Path, description = "Stream id"), FeedQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "JPEG parts until the stream stops", content_type = "multipart/x-mixed-replace", body = String),
        super::responses::Feed, super::responses::Denied, super::responses::Guard))]
pub(super) async fn mjpeg_feed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let o = check(&state, &caller, &id, query)?;
    let body = mjpeg::open(o.rt, o.pixels, o.fps, o.quality, caller.expires())?;
    Ok(streaming(Body::from_stream(body), mjpeg::CONTENT_TYPE))
}
