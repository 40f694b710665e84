//! Operations and tokens: `GET /metrics` (Prometheus), `GET /healthz`, `GET /readyz`,
//! `GET /api/workers` (detection workers), `POST /api/tokens` (viewer tokens).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::error::body_rejection;
use super::extract::Controller;
use super::state::AppState;
use crate::auth::Caller;
use crate::core::Error;

/// `GET /healthz`: the process is up.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Liveness {
    /// Always `ok`.
    pub(crate) status: String,
}

/// `GET /readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// `ready`, `state store unavailable` or `shutting down`.
    pub(crate) status: String,
    /// This replica's id.
    pub(crate) replica: String,
    /// Configured streams.
    pub(crate) streams: usize,
    /// WHEP sessions and announced UDP addresses; absent when WebRTC is off.
    pub(crate) webrtc: Option<WebrtcReadiness>,
}

/// WebRTC part of [`Readiness`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct WebrtcReadiness {
    /// Open WHEP sessions on this replica.
    pub(crate) sessions: usize,
    /// UDP addresses announced as ICE host candidates.
    pub(crate) udp: Vec<String>,
}

/// `POST /api/tokens` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    /// The viewer token (JWT, HS256).
    pub(crate) token: String,
    /// Expiry, seconds since the Unix epoch.
    pub(crate) expires_at: u64,
    /// Streams it covers.
    pub(crate) streams: Vec<String>,
}

/// Prometheus metrics (text format 0.0.4). A control token unless `auth.public_metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = [])),
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String), super::responses::Denied, super::responses::Guard))]
pub(super) async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, Error> {
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
    responses((status = 200, description = "A viewer token", body = TokenResponse), super::responses::Control, super::responses::Guard))]
pub(super) async fn mint_token(
    State(state): State<AppState>,
    _: Controller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, Error> {
    let body = body.map_err(body_rejection)?;
    let req: TokenRequest = serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("invalid token request: {e}")))?;
    let ttl = std::time::Duration::from_secs(req.ttl_s.unwrap_or(600));
    let subject = req.subject.as_deref().unwrap_or("viewer");
    let (token, expires_at) = state.auth.mint(subject, &req.streams, ttl)?;
    tracing::info!(subject, streams = ?req.streams, ttl_s = ttl.as_secs(), "viewer token minted");
    Ok(Json(TokenResponse { token, expires_at, streams: req.streams }))
}

/// `GET /api/workers` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct WorkersResponse {
    /// Whether detection runs on this gateway (`detect.enabled` and its socket made).
    pub(crate) detection: bool,
    /// Where remote workers connect (`detect.remote.listen`, as bound); absent when off.
    pub(crate) remote_listen: Option<String>,
    /// The connected detection workers, local and remote.
    pub(crate) workers: Vec<crate::detect::WorkerView>,
}

/// The detection workers connected to this replica (control token required): local (Unix
/// socket, shared memory) and remote (TCP/TLS), with host, model, provider and fps.
#[utoipa::path(get, path = "/api/workers", tag = "operations", security(("bearer" = [])),
    responses((status = 200, description = "Connected workers", body = WorkersResponse), super::responses::Control, super::responses::Guard))]
pub(super) async fn workers(State(state): State<AppState>, _: Controller) -> Json<WorkersResponse> {
    let detect = state.detect.as_ref();
    Json(WorkersResponse {
        detection: detect.is_some(),
        remote_listen: detect.and_then(|d| d.remote_listen()).map(|a| a.to_string()),
        workers: detect.map(|d| d.workers()).unwrap_or_default(),
    })
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up", body = Liveness), super::responses::Guard))]
pub(super) async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok".into() })
}

/// Readiness: 503 when the state store is unreachable or the gateway is shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Readiness), (status = 503, description = "Not ready", body = Readiness), super::responses::Guard))]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let webrtc = state
        .webrtc
        .as_ref()
        .map(|w| WebrtcReadiness { sessions: w.session_count(), udp: w.announced_addrs().iter().map(ToString::to_string).collect() });
    let stopping = state.shutdown.is_set();
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
    (status, Json(body))
}
