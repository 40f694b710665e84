//! Analytics events (issue #13): `GET /api/events/live`, every stream's events as they happen,
//! as server-sent events (`event: event`, `id:` the event id, `data:` its JSON); the stored
//! ones: `GET /api/events` (search, newest first, paged with cursors), `GET /api/events/{id}`,
//! `GET /api/events/{id}/snapshot.jpg`; and `GET /api/streams/{id}/counts` (line crossings and
//! zone visits per time bucket).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::error::query_rejection;
use super::state::AppState;
use crate::archive::{EventQuery, EventRecord, LineCount, ZoneCount};
use crate::auth::{ALL_STREAMS, Caller};
use crate::core::Error;
use crate::core::clock::now_ms;
use crate::core::events::{AnalyticsEvent, EventKind};

/// `GET /api/events` page size when `limit` is not given.
const DEFAULT_LIMIT: u32 = 50;
/// Largest `limit`.
const MAX_LIMIT: u32 = 500;
/// Most buckets one counts request may ask for.
const MAX_BUCKETS: u64 = 10_000;

/// Filters of `GET /api/events/live`; every given one must match.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LiveQuery {
    /// Only this stream's events (a viewer token must cover it).
    stream: Option<String>,
    /// Only this kind: `line_crossed`, `zone_enter`, `zone_exit`, `loitering`,
    /// `object_appeared`, `object_left`.
    kind: Option<String>,
    /// Only objects with this class label.
    label: Option<String>,
    /// A viewer token (read by [`Caller`]).
    #[allow(dead_code, reason = "read from the raw query by the Caller extractor; named here for deny_unknown_fields and OpenAPI")]
    token: Option<String>,
}

/// What a subscriber asked for.
struct Filter {
    caller: Caller,
    stream: Option<String>,
    kind: Option<EventKind>,
    label: Option<String>,
}

impl Filter {
    fn wants(&self, e: &AnalyticsEvent) -> bool {
        let e = &e.event;
        self.caller.may_view(&e.stream)
            && self.stream.as_ref().is_none_or(|s| *s == e.stream)
            && self.kind.is_none_or(|k| k == e.kind)
            && self.label.as_ref().is_none_or(|l| *l == e.label)
    }
}

/// Live analytics events (line crossings, zone entries and exits, loitering, objects appearing
/// and leaving) of the streams the caller may see, until the client leaves (or its viewer
/// token expires). Events are made where detection runs: with detection off none come.
#[utoipa::path(get, path = "/api/events/live", tag = "events", params(LiveQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Server-sent events: `event: event`, data an AnalyticsEvent", content_type = "text/event-stream", body = AnalyticsEvent),
        (status = 400, description = "Unknown filter or kind", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn live_events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Response, Error> {
    caller.require_any()?;
    let Query(q) = query.map_err(query_rejection)?;
    if let Some(stream) = &q.stream {
        // Permission first: a viewer token learns nothing of streams it does not cover.
        caller.require_view(stream)?;
        state.streams.require(stream)?;
    }
    let kind = q.kind.as_deref().map(event_kind).transpose()?;
    let rx = state.events.subscribe();
    let expires = caller.expires();
    let filter = Arc::new(Filter { caller, stream: q.stream, kind, label: q.label });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(RecvError::Lagged(n)) => metrics::counter!("sightline_events_live_dropped_total").increment(n),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |e| std::future::ready(filter.wants(e)))
    .map(|e| Ok::<_, Infallible>(Event::default().event("event").id(e.id.clone()).data(&**e.json())));
    // A viewer token's stream ends when the token does.
    let until = async move {
        match expires {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    let events = events.take_until(until);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.feeds.keepalive)).into_response())
}

/// The kind named `k`, or 400.
fn event_kind(k: &str) -> Result<EventKind, Error> {
    EventKind::ALL.into_iter().find(|kind| kind.as_str() == k).ok_or_else(|| Error::BadRequest(format!("unknown event kind {k:?}")))
}

/// A time given as Unix milliseconds or RFC 3339 (`2026-11-29T03:00:00Z`, `…+01:00`), in ms
/// since the Unix epoch; 400 otherwise.
pub(super) fn parse_time(name: &str, raw: &str) -> Result<u64, Error> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().map_err(|_| Error::BadRequest(format!("{name}: {raw:?} is too large")));
    }
    let t: jiff::Timestamp =
        raw.parse().map_err(|_| Error::BadRequest(format!("{name}: {raw:?} is neither Unix milliseconds nor an RFC 3339 time")))?;
    u64::try_from(t.as_millisecond()).map_err(|_| Error::BadRequest(format!("{name}: {raw:?} is before 1970")))
}

/// The streams a caller may see events of: `None` for all.
fn scope(caller: &Caller) -> Option<Vec<String>> {
    match caller {
        Caller::Viewer(c) if !c.streams.iter().any(|s| s == ALL_STREAMS) => Some(c.streams.clone()),
        _ => None,
    }
}

/// Search filters of `GET /api/events`; every given one must match.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchQuery {
    /// Only this stream's events (a viewer token must cover it).
    stream: Option<String>,
    /// Only this kind: `line_crossed`, `zone_enter`, `zone_exit`, `loitering`,
    /// `object_appeared`, `object_left`.
    kind: Option<String>,
    /// Only objects with this class label.
    label: Option<String>,
    /// Only events of this zone.
    zone: Option<String>,
    /// Only crossings of this line.
    line: Option<String>,
    /// From this capture time (inclusive): Unix milliseconds or RFC 3339.
    from: Option<String>,
    /// Before this capture time (exclusive): Unix milliseconds or RFC 3339.
    to: Option<String>,
    /// Events per page, 1-500. Default 50.
    limit: Option<u32>,
    /// `next_cursor` of the previous page: the page of older events after it.
    cursor: Option<String>,
    /// A viewer token (read by [`Caller`]).
    #[allow(dead_code, reason = "read from the raw query by the Caller extractor; named here for deny_unknown_fields and OpenAPI")]
    token: Option<String>,
}

/// One page of stored events, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EventPage {
    /// The events (capture time, then id, descending).
    events: Vec<EventRecord>,
    /// Pass as `cursor` for the next page of older events; `null` on the last page.
    next_cursor: Option<String>,
}

fn encode_cursor(e: &EventRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", e.ts_ms, e.id))
}

fn decode_cursor(raw: &str) -> Result<(u64, String), Error> {
    let bad = || Error::BadRequest("cursor: not a next_cursor of this API".into());
    let text = URL_SAFE_NO_PAD.decode(raw).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad)?;
    let (ts, id) = text.split_once(':').ok_or_else(bad)?;
    let ts = ts.parse().map_err(|_| bad())?;
    Ok((ts, id.to_owned()))
}

/// Stored analytics events of the streams the caller may see, newest first, paged: follow
/// `next_cursor` until it is `null`. `from`/`to` bound the capture time.
#[utoipa::path(get, path = "/api/events", tag = "events", params(SearchQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "Unknown filter, kind, bad time, limit or cursor", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        (status = 503, description = "The event database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn search_events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<EventPage>, Error> {
    caller.require_any()?;
    let Query(q) = query.map_err(query_rejection)?;
    if let Some(stream) = &q.stream {
        caller.require_view(stream)?;
        state.streams.require(stream)?;
    }
    if let Some(k) = &q.kind {
        event_kind(k)?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let query = EventQuery {
        scope: scope(&caller),
        stream: q.stream,
        kind: q.kind,
        label: q.label,
        zone: q.zone,
        line: q.line,
        from_ms: q.from.as_deref().map(|t| parse_time("from", t)).transpose()?,
        to_ms: q.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut events = state.archive.list(&query).await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_cursor = more.then(|| events.last().map(encode_cursor)).flatten();
    Ok(Json(EventPage { events, next_cursor }))
}

/// The stored event `id` (404 for an event of a stream the caller's viewer token does not
/// cover, as for one that does not exist).
#[utoipa::path(get, path = "/api/events/{id}", tag = "events", params(("id" = String, Path, description = "Event id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The event", body = EventRecord),
        (status = 404, description = "Unknown event", body = super::error::ErrorBody),
        (status = 503, description = "The event database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn get_event(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<EventRecord>, Error> {
    Ok(Json(visible_event(&state, &caller, &id).await?))
}

/// The stored event `id` if the caller may see its stream; 404 as for an unknown one if not.
pub(super) async fn visible_event(state: &AppState, caller: &Caller, id: &str) -> Result<EventRecord, Error> {
    caller.require_any()?;
    let event = state.archive.get(id).await?;
    if !caller.may_view(&event.stream) {
        return Err(Error::unknown_event("event", id));
    }
    Ok(event)
}

/// The snapshot of event `id`: a JPEG of the frame it happened on with the object's box
/// outlined (yellow). Immutable: clients and proxies may cache it.
#[utoipa::path(get, path = "/api/events/{id}/snapshot.jpg", tag = "events", params(("id" = String, Path, description = "Event id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, description = "Unknown event, or one stored without a snapshot", body = super::error::ErrorBody),
        (status = 503, description = "The event database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn event_snapshot(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Error> {
    visible_event(&state, &caller, &id).await?;
    let jpeg = state.archive.snapshot(&id).await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=86400, immutable")], jpeg).into_response())
}

/// Range and bucket of `GET /api/streams/{id}/counts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CountsQuery {
    /// From this capture time (inclusive): Unix milliseconds or RFC 3339. Default: 24 h
    /// before `to`.
    from: Option<String>,
    /// Before this capture time (exclusive). Default: now.
    to: Option<String>,
    /// Bucket length: a duration (`15m`, `1h`, `1d`) or milliseconds. Default: the whole
    /// range in one bucket. At most 10 000 buckets.
    bucket: Option<String>,
    /// A viewer token (read by [`Caller`]).
    #[allow(dead_code, reason = "read from the raw query by the Caller extractor; named here for deny_unknown_fields and OpenAPI")]
    token: Option<String>,
}

/// A stream's counts over a time range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Counts {
    /// The stream.
    stream: String,
    /// Range start, ms since the Unix epoch (inclusive).
    from_ms: u64,
    /// Range end, ms since the Unix epoch (exclusive).
    to_ms: u64,
    /// Bucket length, ms; buckets start at `from_ms`.
    bucket_ms: u64,
    /// Crossings per line, label, direction and bucket (buckets without any are left out).
    lines: Vec<LineCount>,
    /// Entries, exits and loitering per zone, label and bucket.
    zones: Vec<ZoneCount>,
    /// Objects in each zone now, per label (from the tracks; empty without tracking).
    occupancy: Vec<Occupancy>,
}

/// How many objects of a label are in a zone now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Occupancy {
    /// The zone.
    zone: String,
    /// The objects' class label.
    label: String,
    /// Objects inside now.
    objects: u64,
}

/// How many objects crossed each line of the stream (per label and direction), entered, left
/// and loitered in each zone, per time bucket, from the stored events; and how many are in
/// each zone now.
#[utoipa::path(get, path = "/api/streams/{id}/counts", tag = "events", params(("id" = String, Path, description = "Stream id"), CountsQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Counts", body = Counts),
        (status = 400, description = "Bad time, range or bucket", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        (status = 503, description = "The event database is unavailable", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn stream_counts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<CountsQuery>, QueryRejection>,
) -> Result<Json<Counts>, Error> {
    caller.require_view(&id)?;
    state.streams.require(&id)?;
    let Query(q) = query.map_err(query_rejection)?;
    let to_ms = q.to.as_deref().map(|t| parse_time("to", t)).transpose()?.unwrap_or_else(|| now_ms() + 1);
    let from_ms = q.from.as_deref().map(|t| parse_time("from", t)).transpose()?.unwrap_or(to_ms.saturating_sub(86_400_000));
    if from_ms >= to_ms {
        return Err(Error::BadRequest("from must be before to".into()));
    }
    let bucket_ms = match q.bucket.as_deref() {
        None => to_ms - from_ms,
        Some(raw) if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => {
            raw.parse().map_err(|_| Error::BadRequest(format!("bucket: {raw:?} is too large")))?
        }
        Some(raw) => humantime::parse_duration(raw)
            .map_err(|e| Error::BadRequest(format!("bucket: {raw:?}: {e}")))?
            .as_millis()
            .try_into()
            .map_err(|_| Error::BadRequest(format!("bucket: {raw:?} is too large")))?,
    };
    if bucket_ms == 0 || (to_ms - from_ms).div_ceil(bucket_ms) > MAX_BUCKETS {
        return Err(Error::BadRequest(format!("bucket must be more than 0 and make at most {MAX_BUCKETS} buckets of the range")));
    }
    let (lines, zones) = state.archive.counts(&id, from_ms, to_ms, bucket_ms).await?;
    let occupancy = state
        .detect
        .as_ref()
        .and_then(|d| d.occupancy(&id))
        .unwrap_or_default()
        .into_iter()
        .map(|(zone, label, n)| Occupancy { zone, label, objects: n as u64 })
        .collect();
    Ok(Json(Counts { stream: id, from_ms, to_ms, bucket_ms, lines, zones, occupancy }))
}
