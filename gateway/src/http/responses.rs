//! The answers several endpoints share, as OpenAPI descriptions (utoipa `IntoResponses`):
//! the handlers name them in their `#[utoipa::path]`.

use super::error::ErrorBody;

/// Answers any request may get from the guard: 408 and 431.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the OpenAPI document; never built")]
pub(crate) enum Guard {
    /// The request took longer than `limits.request_timeout`.
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// Too many or too large header fields (`limits.max_headers`, `limits.max_header_bytes`).
    #[response(status = 431)]
    HeadersTooLarge(ErrorBody),
}

/// Answers of endpoints that need a token.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the OpenAPI document; never built")]
pub(crate) enum Denied {
    /// No valid token (`WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token does not cover this request.
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// Answers of control endpoints (start, stop, tokens) besides 200.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the OpenAPI document; never built")]
pub(crate) enum Control {
    /// A malformed body.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not a control token.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such stream or route.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is larger than `limits.max_body_bytes`.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// Too many control requests from this client (`Retry-After`).
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// The state store is unreachable, or viewer tokens are not configured.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Answers of the feeds besides 200, 401 and 403.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the OpenAPI document; never built")]
pub(crate) enum Feed {
    /// A bad `fps`, `quality` or unknown query parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No such stream.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The stream is stopped.
    #[response(status = 409)]
    Stopped(ErrorBody),
    /// Viewer limit reached or shutting down (`Retry-After`).
    #[response(status = 503)]
    AtCapacity(ErrorBody),
}

/// Answers of a WHEP POST besides 201, 401 and 403 (draft-ietf-wish-whep §4.2).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the OpenAPI document; never built")]
pub(crate) enum WhepPost {
    /// A malformed offer, or one without H.264 video.
    #[response(status = 400)]
    BadOffer(ErrorBody),
    /// No such stream.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The stream is stopped.
    #[response(status = 409)]
    Stopped(ErrorBody),
    /// The offer is larger than 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not `application/sdp`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// An offer the gateway understands but cannot serve.
    #[response(status = 422)]
    Unsupported(ErrorBody),
    /// Session or viewer limit reached, WebRTC off, or shutting down (`Retry-After`).
    #[response(status = 503)]
    AtCapacity(ErrorBody),
}

/// Answers of a PATCH on a WHEP session besides 200 and 204.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes answers for the OpenAPI document; never built")]
pub(crate) enum WhepSession {
    /// Another replica owns the session: the same request there.
    #[response(status = 307)]
    Moved(ErrorBody),
    /// A malformed fragment.
    #[response(status = 400)]
    BadFragment(ErrorBody),
    /// No such stream or session.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `If-Match` names another ICE session.
    #[response(status = 412)]
    PreconditionFailed(ErrorBody),
    /// The fragment is larger than 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not `application/trickle-ice-sdpfrag`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// A fragment the gateway understands but does not support.
    #[response(status = 422)]
    Unsupported(ErrorBody),
    /// No `If-Match`.
    #[response(status = 428)]
    PreconditionRequired(ErrorBody),
    /// WebRTC off or shutting down.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}
