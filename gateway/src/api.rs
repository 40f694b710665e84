//! The HTTP API (public contract, DESIGN.md): REST start/stop/status, SSE and MJPEG feeds,
//! metrics, health and the web UI. Build it with [`app`]; errors are JSON
//! `{"error": "...", "detail": "..."}` made in one place, [`ApiError`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use signaling::whep::{self, WhepError};
use tokio::sync::watch;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::auth::{Auth, Caller, Denied};
use crate::config::{FPS_RANGE, QUALITY_RANGE};
use crate::limits::{ControlRate, LimitsConfig, ViewerLimit};
use crate::feeds::{self, FeedFormat};
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
        let mut resp = (status, axum::Json(json!({"error": kind, "detail": self.to_string()}))).into_response();
        match &self {
            ApiError::AtCapacity(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            ApiError::TooManyRequests(secs) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            ApiError::Unauthorized(detail) => {
                // RFC 6750 §3: `invalid_token` when a token was presented but is not valid.
                let value = if detail.starts_with("invalid token") {
                    "Bearer realm=\"sightline\", error=\"invalid_token\""
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
        .route(
            "/api/streams/{id}/whep",
            post(whep_post).layer(DefaultBodyLimit::max(whep::MAX_SDP_BYTES)),
        )
        .route(
            "/api/streams/{id}/whep/{session}",
            axum::routing::patch(whep_patch)
                .delete(whep_delete)
                .layer(DefaultBodyLimit::max(whep::MAX_SDP_BYTES)),
        )
        .route("/api/tokens", post(mint_token))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), replica_header))
        .with_state(state.clone());
    api.fallback_service(ServeDir::new(static_dir))
        .layer(axum::middleware::from_fn_with_state(state, guard))
        .layer(cors())
        .layer(axum::middleware::from_fn(whep_options))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
            // The path only: a query string may carry a viewer token.
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        }))
}

/// Header limits (431) and the request timeout (408) for every request.
async fn guard(State(state): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limits = &state.limits;
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

/// A caller allowed on control endpoints (start, stop, tokens): within the per-client
/// control rate (checked first, so token guessing is rate limited too) and holding a
/// control token.
#[derive(Debug)]
struct Controller;

impl axum::extract::FromRequestParts<AppState> for Controller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        if let Some(client) = state.control_rate.client(peer, &parts.headers)
            && let Err(wait) = state.control_rate.check(client)
        {
            return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
        }
        state.auth.caller(&parts.headers, parts.uri.query()).require_control()?;
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
        .expose_headers([header::LOCATION, header::ETAG, header::LINK, header::RETRY_AFTER, header::HeaderName::from_static("accept-patch")])
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

async fn list_streams(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    caller.require_any()?;
    let streams: Vec<_> = state.streams.all().filter(|s| caller.may_view(&s.config.id)).map(|s| s.view()).collect();
    Ok(axum::Json(json!({ "streams": streams })))
}

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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    fps: Option<u32>,
    quality: Option<u32>,
}

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
        if !value.is_object() {
            return Err(ApiError::BadRequest("the body must be a JSON object like {\"fps\":15,\"quality\":75}".into()));
        }
        serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid start request: {e}")))?
    };
    let params = StartParams { fps: parsed.fps.map(check_fps).transpose()?, quality: parsed.quality.map(check_quality).transpose()? };
    let rt = state.streams.set_active(&id, true, params).await?;
    Ok(axum::Json(rt.view()))
}

async fn stop_stream(State(state): State<AppState>, _: Controller, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    stream(&state, &id)?;
    let rt = state.streams.set_active(&id, false, StartParams::default()).await?;
    Ok(axum::Json(rt.view()))
}

/// `?fps=&quality=` of the feeds; absent values take the stream's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    fps: Option<u32>,
    quality: Option<u32>,
    /// A viewer token (read by [`Caller`]).
    #[allow(dead_code)]
    token: Option<String>,
}

fn open_feed(state: &AppState, caller: &Caller, id: &str, query: Result<Query<FeedQuery>, QueryRejection>, format: FeedFormat) -> Result<Response, ApiError> {
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
    Ok(feeds::response(format, rt, fps, quality, state.feeds.keepalive)?)
}

async fn sse_feed(State(state): State<AppState>, caller: Caller, Path(id): Path<String>, query: Result<Query<FeedQuery>, QueryRejection>) -> Result<Response, ApiError> {
    open_feed(&state, &caller, &id, query, FeedFormat::Sse)
}

async fn mjpeg_feed(State(state): State<AppState>, caller: Caller, Path(id): Path<String>, query: Result<Query<FeedQuery>, QueryRejection>) -> Result<Response, ApiError> {
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
    let body = body.map_err(|r| if r.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::Whep(WhepError::TooLarge) } else { r.into() })?;
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))
}

/// `POST /api/streams/{id}/whep` (draft-ietf-wish-whep §4.2): SDP offer in, 201 with the
/// answer, `Location` of the session resource, `ETag` and ICE-server `Link`s.
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
    let created = webrtc.create(rt, &offer).await?;
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
    let whep = req.method() == axum::http::Method::OPTIONS && (path.ends_with("/whep") || path.contains("/whep/"));
    let preflight = req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = next.run(req).await;
    if whep {
        if !preflight {
            *resp.status_mut() = StatusCode::NO_CONTENT;
        }
        let h = resp.headers_mut();
        h.insert("accept-post", HeaderValue::from_static(whep::SDP_MEDIA_TYPE));
        h.insert("accept-patch", HeaderValue::from_static(whep::SDPFRAG_MEDIA_TYPE));
        h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST, PATCH, DELETE"));
    }
    resp
}

async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no API route {}", uri.path()))
}

async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    if !state.auth.public_metrics() {
        caller.require_control()?;
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render()))
}

/// `POST /api/tokens` body: `{"streams": ["cam1"], "ttl_s": 600, "subject": "alice"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// Stream ids the token may watch (`"*"` for all).
    streams: Vec<String>,
    /// Lifetime, seconds (default 600, at most `auth.max_token_ttl`).
    ttl_s: Option<u64>,
    /// Who the token is for (logged). Default `viewer`.
    subject: Option<String>,
}

/// Mints a viewer token (control token required): `{"token", "expires_at", "streams"}`.
async fn mint_token(State(state): State<AppState>, _: Controller, body: Result<Bytes, BytesRejection>) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let req: TokenRequest = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid token request: {e}")))?;
    let ttl = std::time::Duration::from_secs(req.ttl_s.unwrap_or(600));
    let subject = req.subject.as_deref().unwrap_or("viewer");
    let (token, expires_at) = state.auth.mint(subject, &req.streams, ttl).map_err(|e| match e {
        crate::auth::MintError::NoSecret => ApiError::Unavailable(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    })?;
    tracing::info!(subject, streams = ?req.streams, ttl_s = ttl.as_secs(), "viewer token minted");
    Ok(axum::Json(json!({"token": token, "expires_at": expires_at, "streams": req.streams})))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let webrtc = state.webrtc.as_ref().map(|w| json!({"sessions": w.session_count(), "udp": w.announced_addrs()}));
    let stopping = *state.shutdown.borrow();
    let ready = !stopping && state.store.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if stopping { "shutting down" } else if ready { "ready" } else { "state store unavailable" },
        "replica": state.replica_id,
        "streams": state.streams.all().count(),
        "webrtc": webrtc,
    });
    (status, axum::Json(body))
}
