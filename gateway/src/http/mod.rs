//! The HTTP API (public contract, DESIGN.md): REST start/stop/status, SSE and MJPEG feeds,
//! metrics, health and the web UI. Build it with [`app`]; errors are JSON
//! `{"error": "...", "detail": "..."}` made in one place, [`ApiError`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use signaling::whep::{self, WhepError};
use tokio::sync::watch;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, Caller, Denied};
use crate::config::{FPS_RANGE, QUALITY_RANGE};
use crate::feeds::{self, FeedFormat};
use crate::limits::{ControlRate, LimitsConfig, ViewerLimit};
use crate::state::{StartParams, StoreError};
use crate::streams::{StreamRuntime, Streams};
use crate::webrtc::{Patched, SessionError, Webrtc};

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The streams.
    pub streams: Arc<Streams>,
    /// Feed settings.
    pub feeds: crate::config::FeedsConfig,
    /// WHEP sessions; `None` when `webrtc.enabled = false`.
    pub webrtc: Option<Arc<Webrtc>>,
    /// The state store (for readiness).
    pub store: Arc<dyn crate::state::StateStore>,
    /// This replica's id, sent as `X-Sightline-Replica` on every response.
    pub replica_id: String,
    /// Who may call what.
    pub auth: Arc<Auth>,
    /// Request limits.
    pub limits: Arc<LimitsConfig>,
    /// Per-client rate of control requests.
    pub control_rate: Arc<ControlRate>,
    /// Turns true when the gateway begins to shut down (`/readyz` fails from then on).
    pub shutdown: watch::Receiver<bool>,
}

/// The JSON body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `not_found`, `bad_request`, `unauthorized`, `forbidden`,
    /// `stream_stopped`, `payload_too_large`, `rate_limited`, `headers_too_large`, `timeout`,
    /// `unavailable`, `at_capacity`, `moved`, or a WHEP kind (`bad_offer`, `no_h264`, …).
    pub error: String,
    /// What went wrong, for people.
    pub detail: String,
}

/// `GET /api/streams`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StreamList {
    /// The streams the caller may see.
    pub streams: Vec<crate::streams::StreamView>,
}

/// `GET /healthz`: the process is up.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, `state store unavailable` or `shutting down`.
    pub status: String,
    /// This replica's id.
    pub replica: String,
    /// Configured streams.
    pub streams: usize,
    /// WHEP sessions and announced UDP addresses; absent when WebRTC is off.
    pub webrtc: Option<WebrtcReadiness>,
}

/// WebRTC part of [`Readiness`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebrtcReadiness {
    /// Open WHEP sessions on this replica.
    pub sessions: usize,
    /// UDP addresses announced as ICE host candidates.
    pub udp: Vec<String>,
}

/// `POST /api/tokens` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The viewer token (JWT, HS256).
    pub token: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Streams it covers.
    pub streams: Vec<String>,
}

/// Every error the API returns, mapped to a status in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no such stream or route.
    #[error("{0}")]
    NotFound(String),
    /// 400: a malformed body or query.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the stream is stopped.
    #[error("{0}")]
    Conflict(String),
    /// 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3): no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token does not cover this request.
    #[error("{0}")]
    Forbidden(String),
    /// 408: the request took longer than `limits.request_timeout`.
    #[error("the request took longer than {0:?} (limits.request_timeout)")]
    Timeout(std::time::Duration),
    /// 413: the body is larger than `limits.max_body_bytes`.
    #[error("request body too large (limits.max_body_bytes)")]
    PayloadTooLarge,
    /// 429 with `Retry-After`: too many control requests from this client.
    #[error("too many control requests from this client; retry in {0} s (limits.control_rate)")]
    TooManyRequests(u64),
    /// 431: too many or too large header fields.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 503: the state store is unreachable, or WebRTC is off.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: too many WebRTC sessions.
    #[error("{0}")]
    AtCapacity(String),
    /// 307 to the replica that owns a WHEP session (draft-ietf-wish-whep §4.3 allows it).
    #[error("the WHEP session is owned by another replica: {0}")]
    Redirect(String),
    /// A WHEP protocol error, with its own status.
    #[error(transparent)]
    Whep(#[from] WhepError),
}

impl ApiError {
    fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "stream_stopped"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::AtCapacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
            ApiError::Redirect(_) => (StatusCode::TEMPORARY_REDIRECT, "moved"),
            ApiError::Whep(e) => (StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), whep_kind(e)),
        }
    }
}

fn whep_kind(e: &WhepError) -> &'static str {
    match e {
        WhepError::BadOffer(_) => "bad_offer",
        WhepError::NoH264(_) => "no_h264",
        WhepError::BadFragment(_) => "bad_fragment",
        WhepError::TooLarge => "payload_too_large",
        WhepError::UnsupportedMediaType(_) => "unsupported_media_type",
        WhepError::PreconditionRequired => "precondition_required",
        WhepError::PreconditionFailed => "precondition_failed",
        WhepError::Unsupported(_) => "unsupported",
    }
}

/// Seconds a client should wait before retrying a WHEP POST refused at capacity.
const RETRY_AFTER_SECS: &str = "5";

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Whep(w) => ApiError::Whep(w),
            SessionError::UnknownSession(_) => ApiError::NotFound(e.to_string()),
            SessionError::AtCapacity(_) => {
                crate::limits::hit("webrtc_sessions");
                ApiError::AtCapacity(e.to_string())
            }
            SessionError::Viewers(_) => ApiError::AtCapacity(e.to_string()),
            SessionError::ShuttingDown => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        tracing::debug!(%status, error = %self, "request failed");
        let mut resp = (status, axum::Json(ErrorBody { error: kind.into(), detail: self.to_string() })).into_response();
        match &self {
            ApiError::AtCapacity(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            ApiError::TooManyRequests(secs) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            ApiError::Unauthorized(detail) => {
                // RFC 6750 §3.1: `invalid_token` when a token was presented but is not valid,
                // `invalid_request` when the header is not a bearer token at all.
                let value = if detail.starts_with("invalid token") {
                    "Bearer realm=\"sightline\", error=\"invalid_token\""
                } else if detail.starts_with("malformed request") {
                    "Bearer realm=\"sightline\", error=\"invalid_request\""
                } else {
                    "Bearer realm=\"sightline\""
                };
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
            }
            ApiError::PayloadTooLarge | ApiError::Whep(WhepError::TooLarge) => crate::limits::hit("body"),
            ApiError::Redirect(location) => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownStream(id) => ApiError::NotFound(format!("no stream {id:?}")),
            StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => ApiError::Unauthorized(m),
            Denied::Forbidden(m) => ApiError::Forbidden(m),
        }
    }
}

impl From<ViewerLimit> for ApiError {
    fn from(l: ViewerLimit) -> Self {
        ApiError::AtCapacity(l.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::PayloadTooLarge } else { ApiError::BadRequest(r.body_text()) }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// The router: API routes, then the web UI from `static_dir` for everything else.
///
/// Every request passes [`guard`] (header limits, `limits.request_timeout` on the response
/// head: streaming bodies are not cut). Auth is checked per handler ([`Caller`],
/// [`Controller`]); `/healthz`, `/readyz`, `/api/openapi.json` and the UI files are public.
pub fn app(state: AppState, static_dir: &std::path::Path) -> Router {
    let max_body = state.limits.max_body_bytes;
    let api = Router::new()
        .route("/api/streams", get(list_streams))
        .route("/api/streams/{id}", get(get_stream))
        .route("/api/streams/{id}/start", post(start_stream))
        .route("/api/streams/{id}/stop", post(stop_stream))
        .route("/api/streams/{id}/feed", get(sse_feed))
        .route("/api/streams/{id}/mjpeg", get(mjpeg_feed))
        .route("/api/streams/{id}/whep", post(whep_post).layer(DefaultBodyLimit::max(whep::MAX_SDP_BYTES)))
        .route(
            "/api/streams/{id}/whep/{session}",
            axum::routing::patch(whep_patch).delete(whep_delete).layer(DefaultBodyLimit::max(whep::MAX_SDP_BYTES)),
        )
        .route("/api/tokens", post(mint_token))
        .route("/api/openapi.json", get(crate::openapi::serve))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), replica_header))
        .with_state(state.clone());
    api.fallback_service(ServeDir::new(static_dir))
        .layer(axum::middleware::from_fn_with_state(state.limits.clone(), guard))
        .layer(cors())
        .layer(axum::middleware::from_fn(whep_options))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
            // The path only: a query string may carry a viewer token.
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        }))
}

/// Header limits (431) and the request timeout (408) for every request.
async fn guard(State(limits): State<Arc<LimitsConfig>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Err(detail) = crate::limits::check_headers(req.headers(), limits.max_header_bytes, limits.max_headers) {
        return ApiError::HeadersTooLarge(detail).into_response();
    }
    match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            crate::limits::hit("timeout");
            ApiError::Timeout(limits.request_timeout).into_response()
        }
    }
}

/// A caller allowed on control endpoints (start, stop, tokens): holding a control token
/// (checked first: 401/403 tell a client what is wrong before 429 tells it to slow down) and
/// within the per-client control rate. Tokens are ≥ 16 characters, so guessing one is not a
/// matter of request rate.
#[derive(Debug)]
struct Controller;

impl axum::extract::FromRequestParts<AppState> for Controller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.caller(&parts.headers, parts.uri.query()).require_control()?;
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        if let Some(client) = state.control_rate.client(peer, &parts.headers)
            && let Err(wait) = state.control_rate.check(client)
        {
            return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
        }
        Ok(Controller)
    }
}

/// CORS for players on other origins (draft-ietf-wish-whep §4.1 expects it): any origin,
/// the WHEP methods, and the headers a WHEP client must read.
fn cors() -> CorsLayer {
    use axum::http::Method;
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::IF_MATCH, header::AUTHORIZATION])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::RETRY_AFTER,
            header::HeaderName::from_static("accept-patch"),
        ])
}

/// New viewers are refused once shutdown began (they reconnect to another replica).
fn refuse_when_stopping(state: &AppState) -> Result<(), ApiError> {
    match *state.shutdown.borrow() {
        true => Err(ApiError::AtCapacity("this replica is shutting down".into())),
        false => Ok(()),
    }
}

fn stream<'a>(state: &'a AppState, id: &str) -> Result<&'a Arc<StreamRuntime>, ApiError> {
    state.streams.get(id).ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))
}

/// Lists the streams the caller may see (a viewer token: its streams).
#[utoipa::path(get, path = "/api/streams", tag = "streams", security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The streams", body = StreamList), crate::openapi::Denied, crate::openapi::Guard))]
async fn list_streams(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<StreamList>, ApiError> {
    caller.require_any()?;
    let streams: Vec<_> = state.streams.all().filter(|s| caller.may_view(&s.config.id)).map(|s| s.view()).collect();
    Ok(axum::Json(StreamList { streams }))
}

/// One stream: state, health, viewers, detection.
#[utoipa::path(get, path = "/api/streams/{id}", tag = "streams", params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "The stream", body = crate::streams::StreamView),
        (status = 404, description = "No such stream", body = ErrorBody), crate::openapi::Denied, crate::openapi::Guard))]
async fn get_stream(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    caller.require_view(&id)?;
    Ok(axum::Json(stream(&state, &id)?.view()))
}

fn check_fps(fps: u32) -> Result<u32, ApiError> {
    if FPS_RANGE.contains(&fps) { Ok(fps) } else { Err(ApiError::BadRequest(format!("fps {fps} outside {FPS_RANGE:?}"))) }
}

fn check_quality(q: u32) -> Result<u8, ApiError> {
    u8::try_from(q)
        .ok()
        .filter(|q| QUALITY_RANGE.contains(q))
        .ok_or_else(|| ApiError::BadRequest(format!("quality {q} outside {QUALITY_RANGE:?}")))
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

/// Starts a stream (on every replica), optionally with new feed defaults. Control token.
#[utoipa::path(post, path = "/api/streams/{id}/start", tag = "control", params(("id" = String, Path, description = "Stream id")),
    request_body(content = Option<StartBody>, content_type = "application/json", description = "Optional new defaults"),
    security(("bearer" = [])),
    responses((status = 200, description = "The stream, started", body = crate::streams::StreamView), crate::openapi::Control, crate::openapi::Guard))]
async fn start_stream(
    State(state): State<AppState>,
    _: Controller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    stream(&state, &id)?;
    let body = body?;
    let parsed: StartBody = if body.iter().all(u8::is_ascii_whitespace) {
        StartBody::default()
    } else {
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        if value.is_null() {
            StartBody::default()
        } else if !value.is_object() {
            return Err(ApiError::BadRequest("the body must be a JSON object like {\"fps\":15,\"quality\":75}".into()));
        } else {
            serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid start request: {e}")))?
        }
    };
    let params = StartParams { fps: parsed.fps.map(check_fps).transpose()?, quality: parsed.quality.map(check_quality).transpose()? };
    let rt = state.streams.set_active(&id, true, params).await?;
    Ok(axum::Json(rt.view()))
}

/// Stops a stream (on every replica): its feeds end with `event: stopped`. Control token.
#[utoipa::path(post, path = "/api/streams/{id}/stop", tag = "control", params(("id" = String, Path, description = "Stream id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The stream, stopped", body = crate::streams::StreamView), crate::openapi::Control, crate::openapi::Guard))]
async fn stop_stream(State(state): State<AppState>, _: Controller, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    stream(&state, &id)?;
    let rt = state.streams.set_active(&id, false, StartParams::default()).await?;
    Ok(axum::Json(rt.view()))
}

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
    #[allow(dead_code)]
    token: Option<String>,
}

fn open_feed(
    state: &AppState,
    caller: &Caller,
    id: &str,
    query: Result<Query<FeedQuery>, QueryRejection>,
    format: FeedFormat,
) -> Result<Response, ApiError> {
    caller.require_view(id)?;
    refuse_when_stopping(state)?;
    let rt = stream(state, id)?;
    let Query(q) = query?;
    let record = rt.record();
    let fps = check_fps(q.fps.unwrap_or(record.fps))?;
    let quality = check_quality(q.quality.unwrap_or(u32::from(record.quality)))?;
    if !record.active {
        return Err(ApiError::Conflict(format!("stream {id:?} is stopped; POST /api/streams/{id}/start first")));
    }
    Ok(feeds::response(format, rt, fps, quality, state.feeds.keepalive, caller.expires())?)
}

/// SSE feed: `event: frame` (base64 JPEG, `id:` = seq), `state`, `detections`, `stopped`.
#[utoipa::path(get, path = "/api/streams/{id}/feed", tag = "feeds", params(("id" = String, Path, description = "Stream id"), FeedQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Server-sent events until the stream stops", content_type = "text/event-stream", body = String),
        crate::openapi::Feed, crate::openapi::Denied, crate::openapi::Guard))]
async fn sse_feed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    open_feed(&state, &caller, &id, query, FeedFormat::Sse)
}

/// MJPEG feed (`multipart/x-mixed-replace`), for `<img src>`.
#[utoipa::path(get, path = "/api/streams/{id}/mjpeg", tag = "feeds", params(("id" = String, Path, description = "Stream id"), FeedQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "JPEG parts until the stream stops", content_type = "multipart/x-mixed-replace", body = String),
        crate::openapi::Feed, crate::openapi::Denied, crate::openapi::Guard))]
async fn mjpeg_feed(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    open_feed(&state, &caller, &id, query, FeedFormat::Mjpeg)
}

/// Tags every API response with the replica that answered (`X-Sightline-Replica`), for
/// operators behind a load balancer.
async fn replica_header(State(state): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&state.replica_id) {
        resp.headers_mut().insert("x-sightline-replica", v);
    }
    resp
}

/// If another replica owns the session, the 307 to send there (same path).
async fn redirect_to_owner(webrtc: &Webrtc, session: &str, path: &str) -> Result<(), ApiError> {
    if webrtc.has_session(session) {
        return Ok(());
    }
    match webrtc.session_owner(session).await {
        Some(base) => Err(ApiError::Redirect(format!("{}{path}", base.trim_end_matches('/')))),
        None => Ok(()),
    }
}

fn webrtc(state: &AppState) -> Result<&Arc<Webrtc>, ApiError> {
    state.webrtc.as_ref().ok_or_else(|| ApiError::Unavailable("WebRTC is disabled (webrtc.enabled = false)".into()))
}

/// Checks the request's Content-Type against `want` (parameters like charset allowed).
fn require_content_type(headers: &HeaderMap, want: &'static str) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) { Ok(()) } else { Err(WhepError::UnsupportedMediaType(want).into()) }
}

fn body_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let body =
        body.map_err(|r| if r.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::Whep(WhepError::TooLarge) } else { r.into() })?;
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))
}

/// `POST /api/streams/{id}/whep` (draft-ietf-wish-whep §4.2): SDP offer in, 201 with the
/// answer, `Location` of the session resource, `ETag` and ICE-server `Link`s.
#[utoipa::path(post, path = "/api/streams/{id}/whep", tag = "whep", params(("id" = String, Path, description = "Stream id")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (RFC 8866), at most 64 KiB"),
    security(("bearer" = [])),
    responses((status = 201, description = "SDP answer; `Location` of the session, `ETag`", content_type = "application/sdp", body = String,
            headers(("location" = String, description = "Session resource"), ("etag" = String, description = "ICE session tag"))),
        crate::openapi::WhepPost, crate::openapi::Denied, crate::openapi::Guard))]
async fn whep_post(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_view(&id)?;
    refuse_when_stopping(&state)?;
    let webrtc = webrtc(&state)?;
    let rt = stream(&state, &id)?;
    require_content_type(&headers, whep::SDP_MEDIA_TYPE)?;
    let offer = body_text(body)?;
    if !rt.record().active {
        return Err(ApiError::Conflict(format!("stream {id:?} is stopped; POST /api/streams/{id}/start first")));
    }
    let created = webrtc.create(rt, &offer, caller.expires()).await?;
    let location = format!("/api/streams/{id}/whep/{}", created.id);
    let mut resp = (StatusCode::CREATED, created.answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(whep::SDP_MEDIA_TYPE));
    h.insert(header::LOCATION, HeaderValue::from_str(&location).expect("ids are header-safe"));
    h.insert(header::ETAG, HeaderValue::from_str(&created.etag.header_value()).expect("hex"));
    h.insert("accept-patch", HeaderValue::from_static(whep::SDPFRAG_MEDIA_TYPE));
    for link in webrtc.links() {
        if let Ok(v) = HeaderValue::from_str(link) {
            h.append(header::LINK, v);
        }
    }
    Ok(resp)
}

/// `PATCH` on a session: trickle ICE (204) or ICE restart with `If-Match: *` (200). The
/// session URL (128 random bits) is the capability: no token is needed, so a player whose
/// short-lived token expired can still trickle, restart ICE and hang up.
#[utoipa::path(patch, path = "/api/streams/{id}/whep/{session}", tag = "whep",
    params(("id" = String, Path, description = "Stream id"), ("session" = String, Path, description = "WHEP session id"),
        ("if-match" = Option<String>, Header, description = "The session's ETag, or * for an ICE restart")),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag", description = "Trickle ICE fragment (RFC 8840)"),
    responses((status = 204, description = "Candidates added"),
        (status = 200, description = "ICE restart: our new credentials", content_type = "application/trickle-ice-sdpfrag", body = String),
        crate::openapi::WhepSession, crate::openapi::Guard))]
async fn whep_patch(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let webrtc = webrtc(&state)?;
    stream(&state, &id)?;
    redirect_to_owner(webrtc, &session, uri.path()).await?;
    require_content_type(&headers, whep::SDPFRAG_MEDIA_TYPE)?;
    let fragment = body_text(body)?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    match webrtc.patch(&id, &session, if_match, &fragment).await? {
        Patched::Trickle => Ok(StatusCode::NO_CONTENT.into_response()),
        Patched::IceRestart { etag, fragment } => {
            let mut resp = (StatusCode::OK, fragment).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(whep::SDPFRAG_MEDIA_TYPE));
            resp.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag.header_value()).expect("hex"));
            Ok(resp)
        }
    }
}

/// `DELETE` on a session: 200 and the session ends.
#[utoipa::path(delete, path = "/api/streams/{id}/whep/{session}", tag = "whep",
    params(("id" = String, Path, description = "Stream id"), ("session" = String, Path, description = "WHEP session id")),
    responses((status = 200, description = "Session ended"), (status = 404, description = "No such session", body = ErrorBody),
        (status = 307, description = "Another replica owns the session"), (status = 503, description = "WebRTC off", body = ErrorBody),
        crate::openapi::Guard))]
async fn whep_delete(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let webrtc = webrtc(&state)?;
    stream(&state, &id)?;
    redirect_to_owner(webrtc, &session, uri.path()).await?;
    webrtc.delete(&id, &session).await?;
    Ok(StatusCode::OK.into_response())
}

/// `OPTIONS` on WHEP resources (draft-ietf-wish-whep §4.2): adds `Accept-Post` /
/// `Accept-Patch` to the CORS layer's answer (which handles every OPTIONS), and answers a
/// plain OPTIONS (no CORS preflight) with 204.
async fn whep_options(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let options = req.method() == axum::http::Method::OPTIONS;
    // The endpoint takes POST; a session resource PATCH and DELETE.
    let (endpoint, session) = (options && path.ends_with("/whep"), options && path.contains("/whep/"));
    let preflight = req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = next.run(req).await;
    if endpoint || session {
        if !preflight {
            *resp.status_mut() = StatusCode::NO_CONTENT;
        }
        let h = resp.headers_mut();
        if endpoint {
            h.insert("accept-post", HeaderValue::from_static(whep::SDP_MEDIA_TYPE));
            h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
        } else {
            h.insert("accept-patch", HeaderValue::from_static(whep::SDPFRAG_MEDIA_TYPE));
            h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, PATCH, DELETE"));
        }
    }
    resp
}

async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no API route {}", uri.path()))
}

/// Prometheus metrics (text format 0.0.4). A control token unless `auth.public_metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = [])),
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String), crate::openapi::Denied, crate::openapi::Guard))]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    if !state.auth.public_metrics() {
        caller.require_control()?;
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render()))
}

/// `POST /api/tokens` body: `{"streams": ["cam1"], "ttl_s": 600, "subject": "alice"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    /// Stream ids the token may watch (`"*"` for all).
    #[schema(min_items = 1, value_type = Vec<StreamIdSchema>)]
    streams: Vec<String>,
    /// Lifetime, seconds (default 600, at most `auth.max_token_ttl`, 86400 by default).
    #[schema(minimum = 1, maximum = 86400)]
    ttl_s: Option<u64>,
    /// Who the token is for (logged). Default `viewer`.
    subject: Option<String>,
}

/// A stream id in a token request: 1-64 of `A-Z a-z 0-9 _ -`, or `*` for all streams.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^([A-Za-z0-9_-]{1,64}|\*)$")]
#[allow(dead_code, reason = "describes the JSON for the OpenAPI document")]
pub(crate) struct StreamIdSchema(String);

/// Mints a viewer token (control token required): `{"token", "expires_at", "streams"}`.
#[utoipa::path(post, path = "/api/tokens", tag = "control", request_body(content = TokenRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "A viewer token", body = TokenResponse), crate::openapi::Control, crate::openapi::Guard))]
async fn mint_token(
    State(state): State<AppState>,
    _: Controller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<TokenResponse>, ApiError> {
    let body = body?;
    let req: TokenRequest = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid token request: {e}")))?;
    let ttl = std::time::Duration::from_secs(req.ttl_s.unwrap_or(600));
    let subject = req.subject.as_deref().unwrap_or("viewer");
    let (token, expires_at) = state.auth.mint(subject, &req.streams, ttl).map_err(|e| match e {
        crate::auth::MintError::NoSecret => ApiError::Unavailable(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })?;
    tracing::info!(subject, streams = ?req.streams, ttl_s = ttl.as_secs(), "viewer token minted");
    Ok(axum::Json(TokenResponse { token, expires_at, streams: req.streams }))
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up", body = Liveness), crate::openapi::Guard))]
async fn healthz() -> axum::Json<Liveness> {
    axum::Json(Liveness { status: "ok".into() })
}

/// Readiness: 503 when the state store is unreachable or the gateway is shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Readiness), (status = 503, description = "Not ready", body = Readiness), crate::openapi::Guard))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Readiness>) {
    let webrtc = state
        .webrtc
        .as_ref()
        .map(|w| WebrtcReadiness { sessions: w.session_count(), udp: w.announced_addrs().iter().map(ToString::to_string).collect() });
    let stopping = *state.shutdown.borrow();
    let ready = !stopping && state.store.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if stopping {
            "shutting down"
        } else if ready {
            "ready"
        } else {
            "state store unavailable"
        }
        .into(),
        replica: state.replica_id.clone(),
        streams: state.streams.all().count(),
        webrtc,
    };
    (status, axum::Json(body))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use futures::StreamExt as _;
    use tower::ServiceExt;

    use super::*;

    fn guarded(router: Router) -> Router {
        let limits = Arc::new(LimitsConfig { request_timeout: Duration::from_millis(100), ..LimitsConfig::default() });
        router.layer(axum::middleware::from_fn_with_state(limits, guard))
    }

    #[tokio::test]
    async fn slow_requests_get_408_but_streaming_bodies_are_not_cut() {
        let app = guarded(Router::new().route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await })).route(
            "/stream",
            get(|| async {
                // The head is ready at once; the body takes 300 ms, beyond the timeout.
                let chunks = futures::stream::iter(0..3u32).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(Bytes::from(format!("chunk {i}\n")))
                });
                Body::from_stream(chunks)
            }),
        ));
        let resp = app.clone().oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "timeout");
        assert!(v["detail"].as_str().unwrap().contains("limits.request_timeout"));

        let resp = app.oneshot(Request::get("/stream").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\n");
    }
}
