//! The HTTP API (public contract, DESIGN.md): REST start/stop/status, SSE and MJPEG feeds,
//! WHEP, metrics, health and the web UI. Build it with [`app`]; errors are JSON
//! `{"error": "...", "detail": "..."}` made in one place ([`error`]).
//!
//! - [`streams`], [`feeds`], [`whep`], [`ops`]: the handlers, each with its OpenAPI
//!   description beside it; [`openapi`] gathers them into `GET /api/openapi.json`.
//! - [`state`]: [`AppState`], what the handlers share; [`responses`]: the answers several
//!   handlers document.
//! - [`extract`]: who is calling; [`guard`]: header, time and control-rate limits.
//! - [`server`]: the accept loop (connection cap, request-head deadline, graceful drain).

pub(crate) mod error;
mod events;
mod extract;
mod feeds;
mod geometry;
pub(crate) mod guard;
mod hls;
mod jobs;
pub(crate) mod openapi;
mod ops;
mod recordings;
mod responses;
pub(crate) mod server;
mod state;
mod streams;
#[cfg(test)]
mod tests;
mod whep;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use signaling::whep::MAX_SDP_BYTES;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

pub(crate) use self::state::AppState;
use crate::core::Error;

/// The router: API routes, then the web UI from `static_dir` for everything else.
///
/// Every request passes [`guard::guard`] (header limits, `limits.request_timeout` on the
/// response head: streaming bodies are not cut). Auth is checked per handler (the `Caller`
/// and `Controller` extractors); `/healthz`, `/readyz`, `/api/openapi.json` and the UI files
/// are public.
pub(crate) fn app(state: AppState, static_dir: &std::path::Path) -> Router {
    let max_body = state.limits.max_body_bytes;
    let api = Router::new()
        .route("/api/streams", get(streams::list_streams))
        .route("/api/streams/{id}", get(streams::get_stream))
        .route("/api/streams/{id}/start", post(streams::start_stream))
        .route("/api/streams/{id}/stop", post(streams::stop_stream))
        .route("/api/streams/{id}/feed", get(feeds::sse_feed))
        .route("/api/streams/{id}/mjpeg", get(feeds::mjpeg_feed))
        .route("/api/streams/{id}/whep", post(whep::whep_post).layer(DefaultBodyLimit::max(MAX_SDP_BYTES)))
        .route(
            "/api/streams/{id}/whep/{session}",
            axum::routing::patch(whep::whep_patch).delete(whep::whep_delete).layer(DefaultBodyLimit::max(MAX_SDP_BYTES)),
        )
        .route("/api/events", get(events::search_events))
        .route("/api/events/live", get(events::live_events))
        .route("/api/events/{id}", get(events::get_event))
        .route("/api/events/{id}/snapshot.jpg", get(events::event_snapshot))
        .route("/api/events/{id}/clip.mp4", get(recordings::event_clip))
        .route("/api/streams/{id}/counts", get(events::stream_counts))
        .route("/api/streams/{id}/recordings", get(recordings::list_recordings))
        .route("/api/streams/{id}/detections", get(recordings::recorded_detections))
        .route("/api/streams/{id}/export.mp4", get(recordings::export_mp4))
        .route("/api/streams/{id}/vod.m3u8", get(recordings::vod_playlist))
        .route("/api/streams/{id}/recordings/{file}", get(recordings::segment_file))
        .route("/api/streams/{id}/hls/index.m3u8", get(hls::multivariant))
        .route("/api/streams/{id}/hls/media.m3u8", get(hls::media))
        .route("/api/streams/{id}/hls/init.mp4", get(hls::init))
        .route("/api/streams/{id}/hls/part/{name}", get(hls::part))
        .route("/api/streams/{id}/hls/seg/{name}", get(hls::segment))
        .route("/api/streams/{id}/zones", get(geometry::list_zones).post(geometry::create_zone))
        .route("/api/streams/{id}/zones/{zone}", axum::routing::put(geometry::put_zone).delete(geometry::delete_zone))
        .route("/api/streams/{id}/lines", get(geometry::list_lines).post(geometry::create_line))
        .route("/api/streams/{id}/lines/{line}", axum::routing::put(geometry::put_line).delete(geometry::delete_line))
        .route("/api/jobs", get(jobs::list).post(jobs::submit).layer(DefaultBodyLimit::disable()))
        .route("/api/jobs/{id}", get(jobs::get_job).delete(jobs::delete))
        .route("/api/jobs/{id}/events", get(jobs::events))
        .route("/api/jobs/{id}/result.mp4", get(jobs::result))
        .route("/api/jobs/{id}/metrics.json", get(jobs::metrics_json))
        .route("/api/jobs/{id}/preview", get(jobs::preview))
        .route("/api/tokens", post(ops::mint_token))
        .route("/api/workers", get(ops::workers))
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), replica_header))
        .with_state(state.clone());
    api.fallback_service(ServeDir::new(static_dir))
        .layer(axum::middleware::from_fn_with_state(state.limits.clone(), guard::guard))
        .layer(cors())
        .layer(axum::middleware::from_fn(whep::whep_options))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
            // The path only: a query string may carry a viewer token.
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
        }))
}

/// CORS for players on other origins (draft-ietf-wish-whep §4.1 expects it): any origin,
/// the WHEP methods, and the headers a WHEP client must read.
fn cors() -> CorsLayer {
    use axum::http::Method;
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::IF_MATCH, header::AUTHORIZATION, header::RANGE])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::RETRY_AFTER,
            header::CONTENT_RANGE,
            header::HeaderName::from_static("accept-patch"),
        ])
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

async fn api_not_found(uri: axum::http::Uri) -> Error {
    Error::UnknownRoute { path: uri.path().to_owned() }
}
