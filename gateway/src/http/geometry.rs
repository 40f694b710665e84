//! Zones and lines over REST (issue #13): `GET|POST /api/streams/{id}/zones`,
//! `PUT|DELETE /api/streams/{id}/zones/{zone}`, and the same for `lines`. Kept in the state
//! store (Redis with replicas), so every replica, its trackers and its viewers' overlays follow
//! an edit; once edited, a stream's zones and lines replace those of its config.
//!
//! Bodies are a zone or a line as in the config (`{"id","points":[[x,y],…],"labels",…}`),
//! checked like the config's: ids, points in 0..1, >= 3 corners without crossing edges, >= 2
//! line points (400), at most 100 of each per stream (413).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::body_rejection;
use super::extract::Controller;
use super::state::AppState;
use crate::auth::Caller;
use crate::config::{LineConfig, ZoneConfig};
use crate::core::Error;
use crate::state::Geometry;

/// A stream's zones, and the version of its zones and lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ZoneList {
    /// The zones.
    zones: Vec<ZoneConfig>,
    /// 0: the config's; each edit adds 1.
    version: u64,
}

/// A stream's lines, and the version of its zones and lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LineList {
    /// The lines.
    lines: Vec<LineConfig>,
    /// 0: the config's; each edit adds 1.
    version: u64,
}

/// What zones and lines have in common here.
trait Shape: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// `zone` or `line`.
    const WHAT: &'static str;
    fn id(&self) -> &str;
    fn set_id(&mut self, id: String);
    fn list<'a>(zones: &'a mut Vec<ZoneConfig>, lines: &'a mut Vec<LineConfig>) -> &'a mut Vec<Self>;
}

impl Shape for ZoneConfig {
    const WHAT: &'static str = "zone";
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn list<'a>(zones: &'a mut Vec<ZoneConfig>, _: &'a mut Vec<LineConfig>) -> &'a mut Vec<Self> {
        zones
    }
}

impl Shape for LineConfig {
    const WHAT: &'static str = "line";
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn list<'a>(_: &'a mut Vec<ZoneConfig>, lines: &'a mut Vec<LineConfig>) -> &'a mut Vec<Self> {
        lines
    }
}

fn parse<S: Shape>(body: Result<Bytes, BytesRejection>) -> Result<S, Error> {
    let body = body.map_err(body_rejection)?;
    serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("invalid {}: {e}", S::WHAT)))
}

fn not_found<S: Shape>(stream: &str, id: &str) -> Error {
    Error::UnknownGeometry { stream: stream.to_owned(), what: S::WHAT, id: id.chars().take(64).collect() }
}

/// Adds `shape` (409 when its id is taken); returns it.
async fn create<S: Shape>(state: &AppState, stream: &str, shape: S) -> Result<(S, std::sync::Arc<Geometry>), Error> {
    state
        .streams
        .edit_geometry(stream, |zones, lines| {
            let list = S::list(zones, lines);
            if list.iter().any(|s| s.id() == shape.id()) {
                return Err(Error::Exists(format!("stream {stream:?} has a {} {:?} already; PUT replaces it", S::WHAT, shape.id())));
            }
            list.push(shape.clone());
            Ok(shape.clone())
        })
        .await
}

/// Creates or replaces the shape `id`; returns it and whether it is new.
async fn put<S: Shape>(state: &AppState, stream: &str, id: String, mut shape: S) -> Result<(bool, S), Error> {
    if shape.id() != id && !shape.id().is_empty() {
        return Err(Error::BadRequest(format!("the body's id {:?} is not the path's {id:?}", shape.id())));
    }
    shape.set_id(id);
    let ((new, shape), _) = state
        .streams
        .edit_geometry(stream, |zones, lines| {
            let list = S::list(zones, lines);
            match list.iter_mut().find(|s| s.id() == shape.id()) {
                Some(held) => {
                    *held = shape.clone();
                    Ok((false, shape.clone()))
                }
                None => {
                    list.push(shape.clone());
                    Ok((true, shape.clone()))
                }
            }
        })
        .await?;
    Ok((new, shape))
}

async fn delete<S: Shape>(state: &AppState, stream: &str, id: &str) -> Result<(), Error> {
    state
        .streams
        .edit_geometry(stream, |zones, lines| {
            let list = S::list(zones, lines);
            let before = list.len();
            list.retain(|s| s.id() != id);
            if list.len() == before { Err(not_found::<S>(stream, id)) } else { Ok(()) }
        })
        .await
        .map(|_| ())
}

/// POST: 201 with the shape.
async fn created<S: Shape>(state: &AppState, stream: &str, body: Result<Bytes, BytesRejection>) -> Result<Response, Error> {
    state.streams.require(stream)?;
    let (shape, _) = create::<S>(state, stream, parse(body)?).await?;
    Ok((StatusCode::CREATED, Json(shape)).into_response())
}

/// PUT: 201 (new) or 200 (replaced) with the shape.
async fn replaced<S: Shape>(state: &AppState, stream: &str, id: String, body: Result<Bytes, BytesRejection>) -> Result<Response, Error> {
    state.streams.require(stream)?;
    let body = with_id(body, &id)?;
    let (new, shape) = put::<S>(state, stream, id, parse(Ok(body))?).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(shape)).into_response())
}

/// DELETE: 204.
async fn deleted<S: Shape>(state: &AppState, stream: &str, id: &str) -> Result<StatusCode, Error> {
    state.streams.require(stream)?;
    delete::<S>(state, stream, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The zones of a stream (the config's until edited).
#[utoipa::path(get, path = "/api/streams/{id}/zones", tag = "events", params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The zones", body = ZoneList),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn list_zones(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<ZoneList>, Error> {
    caller.require_view(&id)?;
    let g = state.streams.require(&id)?.geometry();
    Ok(Json(ZoneList { zones: g.zones.clone(), version: g.version }))
}

/// The lines of a stream (the config's until edited).
#[utoipa::path(get, path = "/api/streams/{id}/lines", tag = "events", params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The lines", body = LineList),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn list_lines(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<LineList>, Error> {
    caller.require_view(&id)?;
    let g = state.streams.require(&id)?.geometry();
    Ok(Json(LineList { lines: g.lines.clone(), version: g.version }))
}

/// Adds a zone to a stream, on every replica. Control token.
#[utoipa::path(post, path = "/api/streams/{id}/zones", tag = "control", params(("id" = String, Path, description = "Stream id")),
    request_body(content = ZoneConfig, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 201, description = "The zone, added", body = ZoneConfig),
        (status = 409, description = "A zone with this id exists", body = super::error::ErrorBody),
        super::responses::Control, super::responses::Guard))]
pub(super) async fn create_zone(
    State(state): State<AppState>,
    _: Controller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    created::<ZoneConfig>(&state, &id, body).await
}

/// Adds a line to a stream, on every replica. Control token.
#[utoipa::path(post, path = "/api/streams/{id}/lines", tag = "control", params(("id" = String, Path, description = "Stream id")),
    request_body(content = LineConfig, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 201, description = "The line, added", body = LineConfig),
        (status = 409, description = "A line with this id exists", body = super::error::ErrorBody),
        super::responses::Control, super::responses::Guard))]
pub(super) async fn create_line(
    State(state): State<AppState>,
    _: Controller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    created::<LineConfig>(&state, &id, body).await
}

/// Creates or replaces zone `zone` of a stream (the body's `id` may be left out). Control token.
#[utoipa::path(put, path = "/api/streams/{id}/zones/{zone}", tag = "control",
    params(("id" = String, Path, description = "Stream id"), ("zone" = String, Path, description = "Zone id")),
    request_body(content = ZoneConfig, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "The zone, replaced", body = ZoneConfig), (status = 201, description = "The zone, created", body = ZoneConfig),
        super::responses::Control, super::responses::Guard))]
pub(super) async fn put_zone(
    State(state): State<AppState>,
    _: Controller,
    Path((id, zone)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    replaced::<ZoneConfig>(&state, &id, zone, body).await
}

/// Creates or replaces line `line` of a stream (the body's `id` may be left out). Control token.
#[utoipa::path(put, path = "/api/streams/{id}/lines/{line}", tag = "control",
    params(("id" = String, Path, description = "Stream id"), ("line" = String, Path, description = "Line id")),
    request_body(content = LineConfig, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "The line, replaced", body = LineConfig), (status = 201, description = "The line, created", body = LineConfig),
        super::responses::Control, super::responses::Guard))]
pub(super) async fn put_line(
    State(state): State<AppState>,
    _: Controller,
    Path((id, line)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    replaced::<LineConfig>(&state, &id, line, body).await
}

/// Deletes zone `zone` of a stream. Control token.
#[utoipa::path(delete, path = "/api/streams/{id}/zones/{zone}", tag = "control",
    params(("id" = String, Path, description = "Stream id"), ("zone" = String, Path, description = "Zone id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), super::responses::Control, super::responses::Guard))]
pub(super) async fn delete_zone(
    State(state): State<AppState>,
    _: Controller,
    Path((id, zone)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    deleted::<ZoneConfig>(&state, &id, &zone).await
}

/// Deletes line `line` of a stream. Control token.
#[utoipa::path(delete, path = "/api/streams/{id}/lines/{line}", tag = "control",
    params(("id" = String, Path, description = "Stream id"), ("line" = String, Path, description = "Line id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), super::responses::Control, super::responses::Guard))]
pub(super) async fn delete_line(
    State(state): State<AppState>,
    _: Controller,
    Path((id, line)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    deleted::<LineConfig>(&state, &id, &line).await
}

/// The PUT body with the path's id filled in when the body has none (a JSON object is
/// required; anything else is left for [`parse`] to refuse).
fn with_id(body: Result<Bytes, BytesRejection>, id: &str) -> Result<Bytes, Error> {
    let body = body.map_err(body_rejection)?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.entry("id").or_insert_with(|| serde_json::Value::String(id.to_owned()));
            Ok(Bytes::from(serde_json::to_vec(&map).unwrap_or_default()))
        }
        _ => Ok(body),
    }
}
