//! WHEP (draft-ietf-wish-whep): `POST /api/streams/{id}/whep` creates a session
//! ([`crate::out::webrtc`]); `PATCH`/`DELETE` on its resource trickle ICE, restart ICE or end
//! it, and are redirected (307) to the replica that owns the session; `OPTIONS` on both
//! advertises what each accepts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use signaling::whep::{self, WhepError};

use super::error::{ErrorBody, body_rejection};
use super::state::AppState;
use crate::auth::Caller;
use crate::core::Error;
use crate::out::webrtc::{Patched, Webrtc};

/// If another replica owns the session, the 307 to send there (same path).
async fn redirect_to_owner(webrtc: &Webrtc, session: &str, path: &str) -> Result<(), Error> {
    if webrtc.has_session(session) {
        return Ok(());
    }
    match webrtc.session_owner(session).await {
        Some(base) => Err(Error::Redirect { location: format!("{}{path}", base.trim_end_matches('/')) }),
        None => Ok(()),
    }
}

fn webrtc(state: &AppState) -> Result<&Arc<Webrtc>, Error> {
    state.webrtc.as_ref().ok_or(Error::WebrtcDisabled)
}

/// Checks the request's Content-Type against `want` (parameters like charset allowed).
fn require_content_type(stream: &str, headers: &HeaderMap, want: &'static str) -> Result<(), Error> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) { Ok(()) } else { Err(Error::whep(stream, WhepError::UnsupportedMediaType(want))) }
}

/// The body as text: 413 (WHEP's own limit) past 64 KiB, 400 when it is not UTF-8.
fn body_text(stream: &str, body: Result<Bytes, BytesRejection>) -> Result<String, Error> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE { Error::whep(stream, WhepError::TooLarge) } else { body_rejection(r) }
    })?;
    String::from_utf8(body.to_vec()).map_err(|_| Error::BadRequest("the body is not UTF-8".into()))
}

/// `POST /api/streams/{id}/whep` (draft-ietf-wish-whep §4.2): SDP offer in, 201 with the
/// answer, `Location` of the session resource, `ETag` and ICE-server `Link`s.
#[utoipa::path(post, path = "/api/streams/{id}/whep", tag = "whep", params(("id" = String, Path, description = "Stream id")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer (RFC 8866), at most 64 KiB"),
    security(("bearer" = [])),
    responses((status = 201, description = "SDP answer; `Location` of the session, `ETag`", content_type = "application/sdp", body = String,
            headers(("location" = String, description = "Session resource"), ("etag" = String, description = "ICE session tag"))),
        super::responses::WhepPost, super::responses::Denied, super::responses::Guard))]
pub(super) async fn whep_post(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    caller.require_view(&id)?;
    state.refuse_when_stopping()?;
    let webrtc = webrtc(&state)?;
    let rt = state.streams.require(&id)?;
    require_content_type(&id, &headers, whep::SDP_MEDIA_TYPE)?;
    let offer = body_text(&id, body)?;
    if !rt.record().active {
        return Err(Error::StreamStopped { stream: id });
    }
    let created = webrtc.create(rt, &offer, caller.expires(), state.detections(&id)).await?;
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
        super::responses::WhepSession, super::responses::Guard))]
pub(super) async fn whep_patch(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let webrtc = webrtc(&state)?;
    state.streams.require(&id)?;
    redirect_to_owner(webrtc, &session, uri.path()).await?;
    require_content_type(&id, &headers, whep::SDPFRAG_MEDIA_TYPE)?;
    let fragment = body_text(&id, body)?;
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
        super::responses::Guard))]
pub(super) async fn whep_delete(
    State(state): State<AppState>,
    Path((id, session)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response, Error> {
    let webrtc = webrtc(&state)?;
    state.streams.require(&id)?;
    redirect_to_owner(webrtc, &session, uri.path()).await?;
    webrtc.delete(&id, &session).await?;
    Ok(StatusCode::OK.into_response())
}

/// `OPTIONS` on WHEP resources (draft-ietf-wish-whep §4.2): adds `Accept-Post` /
/// `Accept-Patch` to the CORS layer's answer (which handles every OPTIONS), and answers a
/// plain OPTIONS (no CORS preflight) with 204.
pub(super) async fn whep_options(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
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
