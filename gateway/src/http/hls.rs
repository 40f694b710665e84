//! Live LL-HLS endpoints (issue #14): playlists, init segment, parts and segments of a
//! stream's producer (`out::hls`). Cache headers let a CDN keep parts, segments and blocking
//! playlist answers (their URLs name what they hold); CORS as for WHEP (the router's).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::error::query_rejection;
use super::recordings::token_suffix;
use super::state::AppState;
use crate::auth::Caller;
use crate::core::Error;
use crate::out::hls::Live;

/// `_HLS_msn` / `_HLS_part` (RFC 8216bis §6.2.5.2); a viewer `token` beside them is carried
/// into the playlist's URIs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Delivery {
    /// Answer once the playlist holds this media sequence number.
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    /// With `_HLS_msn`: once it holds this part of it.
    #[serde(rename = "_HLS_part")]
    part: Option<usize>,
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

fn answer(content_type: &'static str, cache: &'static str, body: impl Into<Bytes>) -> Response {
    let mut r = body.into().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

/// The stream's producer (started on demand) once it has its first part.
async fn producer(state: &AppState, caller: &Caller, id: &str) -> Result<std::sync::Arc<Live>, Error> {
    caller.require_view(id)?;
    let rt = state.streams.require(id)?;
    if !rt.record().active {
        return Err(Error::StreamStopped { stream: id.to_owned() });
    }
    let live = state.hls.live(rt)?;
    if !live.wait_for(0, Some(0)).await && live.init().is_none() {
        return Err(Error::UnknownHls { stream: id.to_owned(), what: "video".into() });
    }
    Ok(live)
}

/// The multivariant playlist (one variant, with `CODECS` and `RESOLUTION`).
#[utoipa::path(get, path = "/api/streams/{id}/hls/index.m3u8", tag = "feeds",
    params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Multivariant playlist", content_type = "application/vnd.apple.mpegurl"),
        (status = 404, description = "Unknown stream, or no video within 6 s", body = super::error::ErrorBody),
        (status = 409, description = "Stream stopped", body = super::error::ErrorBody),
        (status = 503, description = "At the viewer limit (the producer takes one place)", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn multivariant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, Error> {
    let live = producer(&state, &caller, &id).await?;
    let body = live.multivariant(&token_suffix(uri.query())).ok_or(Error::UnknownHls { stream: id, what: "playlist".into() })?;
    Ok(answer(PLAYLIST, "no-cache", body))
}

/// The media playlist: segments, parts of the newest, a preload hint; with `_HLS_msn`
/// (and `_HLS_part`) answered once that part exists (blocking reload; 408 after 6 s).
#[utoipa::path(get, path = "/api/streams/{id}/hls/media.m3u8", tag = "feeds",
    params(("id" = String, Path, description = "Stream id"), Delivery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Media playlist", content_type = "application/vnd.apple.mpegurl"),
        (status = 400, description = "_HLS_part without _HLS_msn, or _HLS_msn more than two segments ahead", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        (status = 409, description = "Stream stopped", body = super::error::ErrorBody),
        (status = 503, description = "At the viewer limit (the producer takes one place)", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn media(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
    query: Result<Query<Delivery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = query.map_err(query_rejection)?;
    let live = producer(&state, &caller, &id).await?;
    let cache = match (q.msn, q.part) {
        (None, Some(_)) => return Err(Error::BadRequest("_HLS_part needs _HLS_msn".into())),
        (None, None) => "no-cache",
        (Some(msn), part) => {
            if live.newest_msn().is_some_and(|newest| msn > newest + 2) {
                return Err(Error::BadRequest(format!("_HLS_msn {msn} is more than two segments ahead")));
            }
            if !live.wait_for(msn, part).await {
                return Err(Error::Timeout(std::time::Duration::from_secs(6)));
            }
            // The URL names what it waits for: a CDN may keep the answer.
            "public, max-age=6"
        }
    };
    let body = live.media_playlist(&token_suffix(uri.query())).ok_or(Error::UnknownHls { stream: id, what: "playlist".into() })?;
    Ok(answer(PLAYLIST, cache, body))
}

/// The init segment (`ftyp` + `moov`).
#[utoipa::path(get, path = "/api/streams/{id}/hls/init.mp4", tag = "feeds",
    params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Init segment", content_type = "video/mp4"),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        (status = 409, description = "Stream stopped", body = super::error::ErrorBody),
        (status = 503, description = "At the viewer limit (the producer takes one place)", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn init(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Error> {
    let live = producer(&state, &caller, &id).await?;
    let init = live.init().ok_or(Error::UnknownHls { stream: id, what: "init segment".into() })?;
    Ok(answer("video/mp4", "public, max-age=60", init))
}

/// A part, `{msn}.{part}.m4s`; the hinted next part is answered once it exists.
#[utoipa::path(get, path = "/api/streams/{id}/hls/part/{name}", tag = "feeds",
    params(("id" = String, Path, description = "Stream id"), ("name" = String, Path, description = "`{msn}.{part}.m4s`")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The part (`moof` + `mdat`)", content_type = "video/mp4"),
        (status = 404, description = "Unknown stream or part (gone, or not within 6 s)", body = super::error::ErrorBody),
        (status = 409, description = "Stream stopped", body = super::error::ErrorBody),
        (status = 503, description = "At the viewer limit (the producer takes one place)", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn part(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, Error> {
    let unknown = || Error::UnknownHls { stream: id.clone(), what: format!("part {}", name.chars().take(40).collect::<String>()) };
    let (msn, part) = name
        .strip_suffix(".m4s")
        .and_then(|n| n.split_once('.'))
        .and_then(|(m, p)| Some((m.parse::<u64>().ok()?, p.parse::<usize>().ok()?)))
        .ok_or_else(unknown)?;
    let live = producer(&state, &caller, &id).await?;
    if live.newest_msn().is_some_and(|newest| msn <= newest + 1) {
        live.wait_for(msn, Some(part)).await;
    }
    let data = live.part(msn, part).ok_or_else(unknown)?;
    Ok(answer("video/mp4", "public, max-age=60", data))
}

/// A whole segment, `{msn}.m4s` (its parts back to back).
#[utoipa::path(get, path = "/api/streams/{id}/hls/seg/{name}", tag = "feeds",
    params(("id" = String, Path, description = "Stream id"), ("name" = String, Path, description = "`{msn}.m4s`")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The segment", content_type = "video/mp4"),
        (status = 404, description = "Unknown stream or segment", body = super::error::ErrorBody),
        (status = 409, description = "Stream stopped", body = super::error::ErrorBody),
        (status = 503, description = "At the viewer limit (the producer takes one place)", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn segment(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, Error> {
    let unknown = || Error::UnknownHls { stream: id.clone(), what: format!("segment {}", name.chars().take(40).collect::<String>()) };
    let msn = name.strip_suffix(".m4s").and_then(|m| m.parse::<u64>().ok()).ok_or_else(unknown)?;
    let live = producer(&state, &caller, &id).await?;
    let data = live.segment(msn).ok_or_else(unknown)?;
    Ok(answer("video/mp4", "public, max-age=60", data))
}
