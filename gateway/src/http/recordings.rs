//! Recorded video (issue #14): what is recorded when (`/recordings`), and one MP4 of a range
//! (`/export.mp4`, byte ranges per RFC 9110 §14).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::query_rejection;
use super::events::parse_time;
use super::state::AppState;
use crate::auth::Caller;
use crate::core::Error;
use crate::core::clock::now_ms;
use crate::record::export;

/// Segments closer than this count as one continuous range.
const GAP_MS: u64 = 2_000;
/// The longest range one request may ask for.
const MAX_RANGE_MS: u64 = 31 * 86_400_000;
/// The longest export.
const MAX_EXPORT_MS: u64 = 86_400_000;

/// `from`/`to` of the recording endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RangeQuery {
    /// From this time (inclusive): Unix milliseconds or RFC 3339. Default (listing only):
    /// 24 h before `to`.
    from: Option<String>,
    /// Before this time (exclusive). Default (listing only): now.
    to: Option<String>,
}

/// One stretch of continuous recording.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct RecordedRange {
    /// Start, ms since the Unix epoch.
    pub(crate) start_ms: u64,
    /// End, ms since the Unix epoch.
    pub(crate) end_ms: u64,
}

/// `GET /api/streams/{id}/recordings`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Recordings {
    /// The stream.
    pub(crate) stream: String,
    /// The range asked for, ms since the Unix epoch.
    pub(crate) from_ms: u64,
    /// End of the range asked for (exclusive).
    pub(crate) to_ms: u64,
    /// Recorded stretches overlapping the range, oldest first; the gaps between them were
    /// not recorded (camera down, stream stopped, recording failed).
    pub(crate) ranges: Vec<RecordedRange>,
    /// Segment files in the range.
    pub(crate) segments: usize,
    /// Their bytes.
    pub(crate) bytes: u64,
}

/// `from` and `to` in ms: given or defaulted, `from` before `to`, at most `max_ms` apart.
fn range(q: &RangeQuery, required: bool, max_ms: u64) -> Result<(u64, u64), Error> {
    if required && (q.from.is_none() || q.to.is_none()) {
        return Err(Error::BadRequest("from and to are required".into()));
    }
    let to_ms = q.to.as_deref().map(|t| parse_time("to", t)).transpose()?.unwrap_or_else(|| now_ms() + 1);
    let from_ms = q.from.as_deref().map(|t| parse_time("from", t)).transpose()?.unwrap_or(to_ms.saturating_sub(86_400_000));
    if from_ms >= to_ms {
        return Err(Error::BadRequest("from must be before to".into()));
    }
    if to_ms - from_ms > max_ms {
        return Err(Error::BadRequest(format!("the range may be at most {} h long", max_ms / 3_600_000)));
    }
    Ok((from_ms, to_ms))
}

/// What is recorded of a stream between `from` and `to`: continuous ranges with the gaps
/// between them.
#[utoipa::path(get, path = "/api/streams/{id}/recordings", tag = "recordings",
    params(("id" = String, Path, description = "Stream id"), RangeQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Recorded ranges (none: an empty list)", body = Recordings),
        (status = 400, description = "Bad time or range (longer than 31 days)", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        (status = 503, description = "The database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn list_recordings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<Recordings>, Error> {
    caller.require_view(&id)?;
    state.streams.require(&id)?;
    let Query(q) = query.map_err(query_rejection)?;
    let (from_ms, to_ms) = range(&q, false, MAX_RANGE_MS)?;
    let segments = state.recorders.segments(&id, from_ms, to_ms).await?;
    let mut ranges: Vec<RecordedRange> = Vec::new();
    for s in &segments {
        match ranges.last_mut() {
            Some(last) if s.start_ms <= last.end_ms + GAP_MS => last.end_ms = last.end_ms.max(s.end_ms),
            _ => ranges.push(RecordedRange { start_ms: s.start_ms, end_ms: s.end_ms }),
        }
    }
    let bytes = segments.iter().map(|s| s.bytes).sum();
    Ok(Json(Recordings { stream: id, from_ms, to_ms, ranges, segments: segments.len(), bytes }))
}

/// The longest range of stored detections one request may ask for.
const MAX_DETECTIONS_MS: u64 = 3_600_000;

/// `GET /api/streams/{id}/detections`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RecordedDetections {
    /// The stream.
    pub(crate) stream: String,
    /// The range asked for, ms since the Unix epoch.
    pub(crate) from_ms: u64,
    /// End of the range asked for (exclusive).
    pub(crate) to_ms: u64,
    /// The detection messages stored with the recordings in the range, by `pts` (a frame
    /// whose boxes came in two messages: the last, which has them all).
    pub(crate) frames: Vec<crate::record::boxes::StoredDetections>,
}

/// The detections stored with a stream's recordings between `from` and `to` (at most 1 h),
/// each with its frame's time on the recording timeline (`pts`, 90 kHz ticks since the Unix
/// epoch: the frame's presentation time in the recorded MP4 and in `vod.m3u8`), so a player
/// draws each frame's boxes on that frame. Stored for streams with detection while they are
/// recorded; none elsewhere (an empty list).
#[utoipa::path(get, path = "/api/streams/{id}/detections", tag = "recordings",
    params(("id" = String, Path, description = "Stream id"), RangeQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Stored detections (none: an empty list)", body = RecordedDetections),
        (status = 400, description = "from/to missing or bad, or longer than 1 h", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        (status = 503, description = "The database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn recorded_detections(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<RecordedDetections>, Error> {
    caller.require_view(&id)?;
    state.streams.require(&id)?;
    let Query(q) = query.map_err(query_rejection)?;
    let (from_ms, to_ms) = range(&q, true, MAX_DETECTIONS_MS)?;
    let segments = state.recorders.segments(&id, from_ms, to_ms).await?;
    let files: Vec<std::path::PathBuf> = segments.iter().map(|s| state.recorders.file(s)).collect();
    let (from, to) = (from_ms as i64 * 90, to_ms as i64 * 90);
    let stream = id.clone();
    let mut frames = tokio::task::spawn_blocking(move || {
        let mut frames = Vec::new();
        for file in files {
            match crate::record::boxes::read(&file, from, to) {
                Ok(read) => frames.extend(read),
                Err(e) => tracing::warn!(stream, file = %file.display(), error = %e, "cannot read stored detections"),
            }
        }
        frames
    })
    .await
    .map_err(|e| Error::RecordingUnreadable(e.to_string()))?;
    // By time; of two messages for one frame the later (a superset) stays.
    frames.reverse();
    frames.sort_by_key(|f| f.pts);
    frames.dedup_by_key(|f| f.pts);
    Ok(Json(RecordedDetections { stream: id, from_ms, to_ms, frames }))
}

/// One MP4 (fragmented, H.264/H.265 as the camera sent it) of the stream from the keyframe at
/// or before `from` to `to`; byte ranges answered with 206. At most 24 h.
#[utoipa::path(get, path = "/api/streams/{id}/export.mp4", tag = "recordings",
    params(("id" = String, Path, description = "Stream id"), RangeQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The MP4", content_type = "video/mp4"),
        (status = 206, description = "The requested byte range", content_type = "video/mp4"),
        (status = 400, description = "from/to missing or bad, or longer than 24 h", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream, or nothing recorded in the range", body = super::error::ErrorBody),
        (status = 416, description = "The byte range is outside the file"),
        (status = 503, description = "The database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn export_mp4(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, Error> {
    caller.require_view(&id)?;
    state.streams.require(&id)?;
    let Query(q) = query.map_err(query_rejection)?;
    let (from_ms, to_ms) = range(&q, true, MAX_EXPORT_MS)?;
    let export = export::plan(&state.recorders, &id, from_ms, to_ms).await?;
    let len = export.len;
    tracing::info!(stream = %id, from_ms, to_ms, start_ms = export.start_ms, end_ms = export.end_ms, fragments = export.fragments, bytes = len, "export");
    let disposition = format!("attachment; filename=\"{id}-{}.mp4\"", export.start_ms);
    Ok(ranged(export, &headers, "video/mp4", Some(&disposition)))
}

/// `export` as the answer: 200 with all of it, 206 with the `Range` asked for, or 416.
pub(super) fn ranged(export: export::Export, headers: &HeaderMap, content_type: &'static str, disposition: Option<&str>) -> Response {
    let len = export.len;
    let etag = export.etag();
    // If-Range (RFC 9110 §13.1.5): a range of the representation the client has, or all of
    // the current one.
    let stale = headers.get(header::IF_RANGE).is_some_and(|v| v.to_str().ok() != Some(etag.as_str()));
    let range = if stale { ByteRange::Whole } else { byte_range(headers, len) };
    let mut response = match range {
        ByteRange::Whole => {
            let mut r = Body::from_stream(export.body(0, len)).into_response();
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        ByteRange::Part(start, end) => {
            let mut r = Body::from_stream(export.body(start, end + 1)).into_response();
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end + 1 - start));
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ASCII"));
            r
        }
        ByteRange::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ASCII"));
            return r;
        }
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if let Some(v) = disposition.and_then(|d| HeaderValue::from_str(d).ok()) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// The recorded video around event `id`: from `recording.pre_roll` before it (at the keyframe
/// at or before) to `recording.post_roll` after it (or as far as recorded yet), one MP4 as
/// `export.mp4` gives it.
#[utoipa::path(get, path = "/api/events/{id}/clip.mp4", tag = "recordings",
    params(("id" = String, Path, description = "Event id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The clip", content_type = "video/mp4"),
        (status = 206, description = "The requested byte range", content_type = "video/mp4"),
        (status = 404, description = "Unknown event, or its stream was not recorded then", body = super::error::ErrorBody),
        (status = 503, description = "The database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn event_clip(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let event = super::events::visible_event(&state, &caller, &id).await?;
    let (pre, post) = state.recorders.rolls;
    let from_ms = event.ts_ms.saturating_sub(pre.as_millis() as u64);
    let to_ms = event.ts_ms + post.as_millis() as u64;
    let export = export::plan(&state.recorders, &event.stream, from_ms, to_ms).await?;
    let disposition = format!("attachment; filename=\"{}-event-{}.mp4\"", event.stream, event.id);
    Ok(ranged(export, &headers, "video/mp4", Some(&disposition)))
}

/// `?token=…` to append to the playlist's URIs when the playlist was asked for with a token
/// in the query (players fetch segments by the playlist's relative URIs, without its query).
pub(super) fn token_suffix(raw_query: Option<&str>) -> String {
    let token = raw_query
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == crate::auth::TOKEN_QUERY).map(|(_, v)| v.into_owned()));
    token.map_or_else(String::new, |t| {
        format!("?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair(crate::auth::TOKEN_QUERY, &t).finish())
    })
}

/// An HLS VOD playlist (RFC 8216bis, fMP4) of the stream from the keyframe at or before `from`
/// to `to`: the stored fragments by byte range, `EXT-X-PROGRAM-DATE-TIME` on each file and
/// after each gap (`EXT-X-DISCONTINUITY`). At most 24 h.
#[utoipa::path(get, path = "/api/streams/{id}/vod.m3u8", tag = "recordings",
    params(("id" = String, Path, description = "Stream id"), RangeQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The playlist", content_type = "application/vnd.apple.mpegurl"),
        (status = 400, description = "from/to missing or bad, or longer than 24 h", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream, or nothing recorded in the range", body = super::error::ErrorBody),
        (status = 503, description = "The database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn vod_playlist(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, Error> {
    caller.require_view(&id)?;
    state.streams.require(&id)?;
    let Query(q) = query.map_err(query_rejection)?;
    let (from_ms, to_ms) = range(&q, true, MAX_EXPORT_MS)?;
    let body = crate::record::vod::playlist(&state.recorders, &id, from_ms, to_ms, &token_suffix(uri.query())).await?;
    Ok(([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl"), (header::CACHE_CONTROL, "private, no-cache")], body).into_response())
}

/// One stored segment file (`{start_ms}.mp4`, fragmented MP4) as the VOD playlist names it;
/// byte ranges answered with 206.
#[utoipa::path(get, path = "/api/streams/{id}/recordings/{file}", tag = "recordings",
    params(("id" = String, Path, description = "Stream id"), ("file" = String, Path, description = "`{start_ms}.mp4`")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The segment file", content_type = "video/mp4"),
        (status = 206, description = "The requested byte range", content_type = "video/mp4"),
        (status = 404, description = "Unknown stream or file", body = super::error::ErrorBody),
        (status = 416, description = "The byte range is outside the file"),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn segment_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    caller.require_view(&id)?;
    state.streams.require(&id)?;
    let unknown = || Error::UnknownRecording { stream: id.clone() };
    // Only `{digits}.mp4`: no other path can be named.
    let digits = file.strip_suffix(".mp4").filter(|d| !d.is_empty() && d.len() <= 20 && d.bytes().all(|b| b.is_ascii_digit()));
    if digits.is_none() {
        return Err(unknown());
    }
    let path = state.recorders.stream_dir(&id).join(&file);
    let len = tokio::fs::metadata(&path).await.map_err(|_| unknown())?.len();
    let export = export::Export::file(path, len);
    Ok(ranged(export, &headers, "video/mp4", None))
}

/// A `Range` header's meaning for a body of `len` bytes (one range; several are answered
/// with the whole body, as RFC 9110 §14.2 allows).
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

fn byte_range(headers: &HeaderMap, len: u64) -> ByteRange {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return ByteRange::Whole };
    let parsed = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => Some((start, end.min(len.saturating_sub(1)))),
        (Some(start), None) if b.is_empty() => Some((start, len.saturating_sub(1))),
        (None, Some(suffix)) if a.is_empty() && suffix > 0 => Some((len.saturating_sub(suffix), len.saturating_sub(1))),
        _ => return ByteRange::Whole,
    };
    match parsed {
        Some((start, end)) if start < len && start <= end => ByteRange::Part(start, end),
        _ => ByteRange::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range(&HeaderMap::new(), 100), ByteRange::Whole);
        assert_eq!(byte_range(&with("bytes=0-9"), 100), ByteRange::Part(0, 9));
        assert_eq!(byte_range(&with("bytes=90-"), 100), ByteRange::Part(90, 99));
        assert_eq!(byte_range(&with("bytes=-10"), 100), ByteRange::Part(90, 99));
        assert_eq!(byte_range(&with("bytes=50-500"), 100), ByteRange::Part(50, 99));
        assert_eq!(byte_range(&with("bytes=100-"), 100), ByteRange::Unsatisfiable);
        assert_eq!(byte_range(&with("bytes=0-1,5-6"), 100), ByteRange::Whole);
        assert_eq!(byte_range(&with("items=0-1"), 100), ByteRange::Whole);
        assert_eq!(byte_range(&with("bytes=9-1"), 100), ByteRange::Whole);
    }
}
