//! Errors as HTTP answers, in one place: [`status_and_kind`] maps each [`Error`] to a status
//! and a machine-readable kind; the body is JSON `{"error": kind, "detail": text}`.
//!
//! Server-side failures (the state store down, a bug) get a generic detail; their cause is
//! logged once, here, at `error` level with the stream. Refusals a client can act on (at
//! capacity, naming the limit; WebRTC off) keep their detail.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use signaling::whep::WhepError;

use crate::core::Error;
use crate::core::error::{Challenge, ErrorKind};
use crate::metrics::limit_hit;

/// The JSON body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Machine-readable kind: `not_found`, `bad_request`, `unauthorized`, `forbidden`,
    /// `stream_stopped`, `conflict`, `payload_too_large`, `rate_limited`, `headers_too_large`, `timeout`,
    /// `unavailable`, `at_capacity`, `moved`, or a WHEP kind (`bad_offer`, `no_h264`, …).
    pub(crate) error: String,
    /// What went wrong, for people.
    pub(crate) detail: String,
}

/// Seconds a client should wait before retrying a request refused at capacity.
const RETRY_AFTER_SECS: &str = "5";

/// The status and kind of an error.
pub(crate) fn status_and_kind(e: &Error) -> (StatusCode, &'static str) {
    match e.kind() {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "stream_stopped"),
        ErrorKind::Exists => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        ErrorKind::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout"),
        ErrorKind::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ErrorKind::HeadersTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
        ErrorKind::AtCapacity => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
        ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorKind::Redirect => (StatusCode::TEMPORARY_REDIRECT, "moved"),
        ErrorKind::Whep => match e {
            Error::Whep { error, .. } => (StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST), whep_kind(error)),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        },
        // Camera errors are shown in the stream's health, not answered; if one ever reaches a
        // client it is the gateway's failure.
        ErrorKind::Camera | ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
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

/// What the client is told: the error's message, or for a server-side failure a generic
/// sentence (the cause goes to the log).
fn public_detail(e: &Error, status: StatusCode) -> String {
    match e {
        Error::StoreUnavailable { .. } => "the state store is unavailable; retry shortly".into(),
        Error::EventsUnavailable { .. } => "the event database is unavailable; retry shortly".into(),
        _ if status.is_server_error() && e.kind() != ErrorKind::AtCapacity && e.kind() != ErrorKind::Unavailable => {
            "internal error (logged on the gateway)".into()
        }
        _ => e.to_string(),
    }
}

/// The `WWW-Authenticate` value of a 401 (RFC 6750 §3.1).
fn challenge(c: Challenge) -> &'static str {
    match c {
        Challenge::InvalidToken => "Bearer realm=\"sightline\", error=\"invalid_token\"",
        Challenge::InvalidRequest => "Bearer realm=\"sightline\", error=\"invalid_request\"",
        Challenge::Missing => "Bearer realm=\"sightline\"",
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind) = status_and_kind(&self);
        let stream = self.stream().unwrap_or("");
        let detail = public_detail(&self, status);
        let cause = self.to_string();
        if detail != cause {
            // The client sees a generic detail: the cause is logged, once, here.
            tracing::error!(%status, stream, error = %cause, "request failed");
        } else {
            tracing::debug!(%status, stream, error = %cause, "request refused");
        }
        let body = ErrorBody { error: kind.into(), detail };
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        match &self {
            _ if self.kind() == ErrorKind::AtCapacity => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            Error::RateLimited { retry_after_s } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            Error::Unauthenticated { challenge: c, .. } => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge(*c)));
            }
            Error::PayloadTooLarge | Error::Whep { error: WhepError::TooLarge, .. } => limit_hit("body"),
            Error::Redirect { location } => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    h.insert(header::LOCATION, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// A body axum could not read: 413 past the limit, else 400.
pub(crate) fn body_rejection(r: BytesRejection) -> Error {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE { Error::PayloadTooLarge } else { Error::BadRequest(r.body_text()) }
}

/// A query string that does not parse: 400.
pub(crate) fn query_rejection(r: QueryRejection) -> Error {
    Error::BadRequest(r.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: Error) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let resp = e.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 4096).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn server_side_causes_stay_in_the_log() {
        let (status, _, body) = answer(Error::StoreUnavailable { cause: "Redis: connection refused (os error 111)".into() }).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
        assert!(!body["detail"].as_str().unwrap().contains("os error"), "{body}");
        let (status, headers, body) = answer(Error::ViewersPerStream { stream: "cam".into(), max: 3 }).await;
        assert_eq!((status, headers[header::RETRY_AFTER].to_str().unwrap()), (StatusCode::SERVICE_UNAVAILABLE, "5"));
        assert!(body["detail"].as_str().unwrap().contains("limits.max_viewers_per_stream"), "a limit the client can act on: {body}");
    }

    #[tokio::test]
    async fn challenges_and_whep_statuses() {
        let (status, headers, _) = answer(Error::Unauthenticated { challenge: Challenge::InvalidToken, detail: "x".into() }).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers[header::WWW_AUTHENTICATE].to_str().unwrap().contains("invalid_token"));
        let (status, _, body) = answer(Error::whep("cam", WhepError::PreconditionRequired)).await;
        assert_eq!((status.as_u16(), body["error"].as_str()), (428, Some("precondition_required")));
        let (status, headers, _) = answer(Error::Redirect { location: "http://b/x".into() }).await;
        assert_eq!((status.as_u16(), headers[header::LOCATION].to_str().unwrap()), (307, "http://b/x"));
    }
}
