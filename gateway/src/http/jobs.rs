//! Offline video jobs (issue #15): submit (`POST /api/jobs`, a multipart upload or a path
//! under `jobs.input_dir`), follow (`GET /api/jobs/{id}`, SSE `…/events`), fetch the result
//! (`result.mp4` with byte ranges, `metrics.json`, `preview`), cancel or delete (`DELETE`).
//!
//! Submitting and deleting need a control token; reading needs what viewing needs.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::extract::Controller;
use super::state::AppState;
use crate::auth::Caller;
use crate::core::Error;
use crate::jobs::{JobStatus, Jobs};

/// A JSON submission: a file under `jobs.input_dir` and the pipeline.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobRequest {
    /// The video, relative to `jobs.input_dir` (or absolute inside it).
    path: String,
    /// The filters: `["blur", "detect"]`, `[{"name": "blur", "sigma": 8}]` or `"blur,detect"`.
    #[schema(value_type = Object)]
    pipeline: serde_json::Value,
}

fn jobs(state: &AppState) -> Result<&std::sync::Arc<Jobs>, Error> {
    state.jobs.as_ref().ok_or_else(|| Error::JobIo("jobs are unavailable (their directory could not be made; see the log)".into()))
}

fn pipeline(value: &serde_json::Value) -> Result<Vec<wire::job::Stage>, Error> {
    wire::job::parse_pipeline(value).map_err(|e| Error::BadRequest(format!("pipeline: {e}")))
}

/// `POST /api/jobs`
#[utoipa::path(post, path = "/api/jobs", tag = "jobs",
    description = "Submits a video job. Either `multipart/form-data` with the file in a part named `video` and the pipeline as JSON in a part named `pipeline` (e.g. `[\"blur\",\"detect\"]`), or a JSON body `{\"path\", \"pipeline\"}` naming a file under `jobs.input_dir`. The video must be H.264 or H.265 (MP4, MKV, MOV, MPEG-TS). Filters: `blur` (`sigma`), `grayscale`, `edges` (`low`, `high`), `motion`, `detect`.",
    request_body(content = JobRequest, description = "A path under jobs.input_dir, or a multipart upload (`video`, `pipeline`)"),
    security(("bearer" = [])),
    responses((status = 201, description = "Queued", body = JobStatus),
        (status = 400, description = "Not a readable H.264/H.265 video, an empty upload, an unknown filter, a path outside jobs.input_dir", body = super::error::ErrorBody),
        (status = 413, description = "Upload larger than jobs.max_upload_bytes", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn submit(State(state): State<AppState>, _c: Controller, req: Request) -> Result<Response, Error> {
    let jobs = jobs(&state)?.clone();
    let is_multipart =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"));
    let status = if is_multipart {
        let multipart = Multipart::from_request(req, &state).await.map_err(|e| Error::BadRequest(e.body_text()))?;
        let (id, dir) = jobs.reserve()?;
        match upload(&jobs, multipart, &dir, state.limits.request_timeout).await {
            Ok((path, source, stages)) => jobs.submit(id, path, true, source, stages).await?,
            Err(e) => {
                jobs.discard(&id);
                return Err(e);
            }
        }
    } else {
        let bytes = axum::body::Bytes::from_request(req, &state).await.map_err(|e| Error::BadRequest(e.body_text()))?;
        let body: JobRequest = serde_json::from_slice(&bytes).map_err(|e| {
            Error::BadRequest(format!("expected multipart/form-data (video, pipeline) or JSON {{\"path\", \"pipeline\"}}: {e}"))
        })?;
        let stages = pipeline(&body.pipeline)?;
        let path = jobs.input_path(&body.path)?;
        let (id, _) = jobs.reserve()?;
        jobs.submit(id, path, false, body.path, stages).await?
    };
    let location = HeaderValue::from_str(&format!("/api/jobs/{}", status.id)).map_err(|e| Error::JobIo(e.to_string()))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(status)).into_response())
}

/// Reads the multipart parts: `video` streamed to `dir/input.{ext}` within
/// `jobs.max_upload_bytes`, `pipeline` as JSON. Each read waits at most `idle`.
async fn upload(
    jobs: &Jobs,
    mut multipart: Multipart,
    dir: &std::path::Path,
    idle: Duration,
) -> Result<(std::path::PathBuf, String, Vec<wire::job::Stage>), Error> {
    let limit = jobs.config().max_upload_bytes;
    let mut video = None;
    let mut stages = None;
    let stalled = || Error::BadRequest(format!("the upload stalled for {idle:?}"));
    loop {
        let field = tokio::time::timeout(idle, multipart.next_field())
            .await
            .map_err(|_| stalled())?
            .map_err(|e| Error::BadRequest(e.body_text()))?;
        let Some(mut field) = field else { break };
        match field.name() {
            Some("video") => {
                let source = field.file_name().map(sanitize).unwrap_or_else(|| "video".into());
                let ext = std::path::Path::new(&source)
                    .extension()
                    .and_then(|e| e.to_str())
                    .filter(|e| e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric()));
                let path = dir.join(format!("input.{}", ext.unwrap_or("bin")));
                let mut file = tokio::fs::File::create(&path).await.map_err(|e| Error::JobIo(format!("cannot store the upload: {e}")))?;
                let mut written = 0u64;
                loop {
                    let chunk = tokio::time::timeout(idle, field.chunk()).await.map_err(|_| stalled())?;
                    let Some(chunk) = chunk.map_err(|e| Error::BadRequest(format!("the upload broke off: {}", e.body_text())))? else {
                        break;
                    };
                    written += chunk.len() as u64;
                    if written > limit {
                        return Err(Error::UploadTooLarge { limit });
                    }
                    file.write_all(&chunk).await.map_err(|e| Error::JobIo(format!("cannot store the upload: {e}")))?;
                }
                file.flush().await.map_err(|e| Error::JobIo(e.to_string()))?;
                if written == 0 {
                    return Err(Error::BadRequest("the `video` part is empty".into()));
                }
                video = Some((path, source));
            }
            Some("pipeline") => {
                let text =
                    tokio::time::timeout(idle, field.text()).await.map_err(|_| stalled())?.map_err(|e| Error::BadRequest(e.body_text()))?;
                let value: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                stages = Some(pipeline(&value)?);
            }
            Some(other) => return Err(Error::BadRequest(format!("unexpected part {other:?}; send `video` and `pipeline`"))),
            None => return Err(Error::BadRequest("a part without a name".into())),
        }
    }
    let (path, source) = video.ok_or_else(|| Error::BadRequest("no `video` part".into()))?;
    let stages = stages.ok_or_else(|| Error::BadRequest("no `pipeline` part".into()))?;
    Ok((path, source, stages))
}

/// An uploaded file's name, kept for display only: its last path component, printable, at
/// most 100 characters.
fn sanitize(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// `GET /api/jobs`
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", description = "Every job, newest first.",
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The jobs", body = Vec<JobStatus>), super::responses::Denied, super::responses::Guard))]
pub(super) async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<JobStatus>>, Error> {
    caller.require_control()?;
    Ok(Json(jobs(&state)?.list()))
}

/// `GET /api/jobs/{id}`
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    description = "A job: state (`queued`, `running`, `done`, `failed`, `cancelled`), frames done and total, progress, fps, ETA, retried chunks, the reason it failed.",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The job", body = JobStatus),
        (status = 404, description = "Unknown job", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn get_job(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<JobStatus>, Error> {
    caller.require_control()?;
    Ok(Json(jobs(&state)?.get(&id)?))
}

/// `GET /api/jobs/{id}/events`
#[utoipa::path(get, path = "/api/jobs/{id}/events", tag = "jobs",
    description = "Server-sent events: `event: progress` with the job's status (as GET /api/jobs/{id}) at each change, the current one first; the stream ends after the job ends.",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "SSE stream", content_type = "text/event-stream"),
        (status = 404, description = "Unknown job", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    caller.require_control()?;
    let rx = jobs(&state)?.subscribe(&id)?;
    let stream = futures::stream::unfold((rx, false, false), |(mut rx, started, ended)| async move {
        if ended {
            return None;
        }
        if started && rx.changed().await.is_err() {
            return None;
        }
        let status = rx.borrow_and_update().clone();
        let ended = status.state.finished();
        let event = Event::default().event("progress").json_data(&status).unwrap_or_default();
        Some((Ok(event), (rx, true, ended)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `DELETE /api/jobs/{id}`
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "jobs",
    description = "Cancels a queued or running job (200, its status `cancelled`; queued chunks are dropped, its files removed), or deletes an ended job with its files (204).",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, description = "Cancelled", body = JobStatus), (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown job", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn delete(State(state): State<AppState>, _c: Controller, Path(id): Path<String>) -> Result<Response, Error> {
    let jobs = jobs(&state)?;
    if jobs.delete(&id).await? { Ok(Json(jobs.get(&id)?).into_response()) } else { Ok(StatusCode::NO_CONTENT.into_response()) }
}

/// `GET /api/jobs/{id}/result.mp4`
#[utoipa::path(get, path = "/api/jobs/{id}/result.mp4", tag = "jobs",
    description = "The processed video: H.264 in fragmented MP4, the input's frame count, order, size and frame rate. Byte ranges (RFC 9110 §14).",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The video", content_type = "video/mp4"),
        (status = 206, description = "The requested byte range", content_type = "video/mp4"),
        (status = 404, description = "Unknown job", body = super::error::ErrorBody),
        (status = 409, description = "Not done", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn result(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    caller.require_control()?;
    let path = jobs(&state)?.output(&id, "result.mp4")?;
    let len = tokio::fs::metadata(&path).await.map_err(|e| Error::JobIo(format!("{}: {e}", path.display())))?.len();
    let export = crate::record::export::Export::file(path, len);
    Ok(super::recordings::ranged(export, &headers, "video/mp4", Some(&format!("{id}.mp4"))))
}

/// `GET /api/jobs/{id}/metrics.json`
#[utoipa::path(get, path = "/api/jobs/{id}/metrics.json", tag = "jobs",
    description = "What the job measured: wall time, effective fps, workers' time and speedup against one worker, retried chunks and frames (%), queue wait and distribution overhead per chunk, totals per worker, and per frame (index, pts, chunk, worker, ms, retries, queue wait).",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Metrics", content_type = "application/json"),
        (status = 404, description = "Unknown job", body = super::error::ErrorBody),
        (status = 409, description = "Not done", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn metrics_json(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Error> {
    caller.require_control()?;
    let path = jobs(&state)?.output(&id, "metrics.json")?;
    let body = tokio::fs::read(&path).await.map_err(|e| Error::JobIo(format!("{}: {e}", path.display())))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/jobs/{id}/preview`
#[utoipa::path(get, path = "/api/jobs/{id}/preview", tag = "jobs",
    description = "A contact sheet (JPEG) of processed pictures, up to 16 across the video, four per row; while the job runs, of the pictures processed so far.",
    params(("id" = String, Path, description = "Job id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "JPEG", content_type = "image/jpeg"),
        (status = 404, description = "Unknown job", body = super::error::ErrorBody),
        (status = 409, description = "No processed picture yet", body = super::error::ErrorBody), super::responses::Denied, super::responses::Guard))]
pub(super) async fn preview(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Error> {
    caller.require_control()?;
    let jpeg = jobs(&state)?.preview(&id)?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg).into_response())
}
