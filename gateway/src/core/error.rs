//! The gateway crate's one error type. Inner layers return it with the ids that locate the
//! problem (stream, session); the HTTP layer maps [`Error::kind`] to a status in one place
//! (`http::error`), answers 5xx with a generic body and logs the cause once.

use std::time::Duration;

use signaling::whep::WhepError;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is; decides the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404.
    NotFound,
    /// 400.
    BadRequest,
    /// 409: the stream is stopped.
    Conflict,
    /// 409: what the request would create exists already.
    Exists,
    /// 401 with a Bearer challenge.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 408.
    Timeout,
    /// 413.
    PayloadTooLarge,
    /// 429 with `Retry-After`.
    RateLimited,
    /// 431.
    HeadersTooLarge,
    /// 503 with `Retry-After`: full, or shutting down; the detail says which limit.
    AtCapacity,
    /// 503: a dependency is down or switched off; the body is generic.
    Unavailable,
    /// 307 to another replica.
    Redirect,
    /// A WHEP protocol error with its own status (draft-ietf-wish-whep).
    Whep,
    /// The camera session failed (shown in the stream's health, never an HTTP answer).
    Camera,
    /// 500: the gateway's own files could not be read (logged; the body is generic).
    Internal,
}

/// Which `WWW-Authenticate` challenge a 401 carries (RFC 6750 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// No credential was presented: the bare challenge.
    Missing,
    /// A token was presented but is not valid: `error="invalid_token"`.
    InvalidToken,
    /// The `Authorization` header is not a bearer token: `error="invalid_request"`.
    InvalidRequest,
}

/// Every error of the gateway. See the module docs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such stream.
    #[error("no stream {stream:?}")]
    UnknownStream {
        /// The id asked for.
        stream: String,
    },
    /// No such API route.
    #[error("no API route {path}")]
    UnknownRoute {
        /// The request path.
        path: String,
    },
    /// No such WHEP session on this stream.
    #[error("no WHEP session {session} on this stream")]
    UnknownSession {
        /// The stream of the request path.
        stream: String,
        /// The session id asked for (cut to 40 characters).
        session: String,
    },
    /// No such stored event (or no snapshot stored for it).
    #[error("no {what} {id:?}")]
    UnknownEvent {
        /// `event` or `snapshot of event`.
        what: &'static str,
        /// The id asked for (cut to 40 characters).
        id: String,
    },
    /// No such zone or line on the stream.
    #[error("no {what} {id:?} on stream {stream:?}")]
    UnknownGeometry {
        /// The stream.
        stream: String,
        /// `zone` or `line`.
        what: &'static str,
        /// The id asked for (cut to 64 characters).
        id: String,
    },
    /// What a request would create exists already.
    #[error("{0}")]
    Exists(String),
    /// A stream would get more zones or lines than allowed.
    #[error("stream {stream:?} may have at most {max} zones and {max} lines")]
    GeometryLimit {
        /// The stream.
        stream: String,
        /// The limit.
        max: usize,
    },
    /// The event database cannot be reached or is not open yet.
    #[error("event database unavailable: {cause}")]
    EventsUnavailable {
        /// What failed (logged, not sent to clients).
        cause: String,
    },
    /// Nothing of the stream is recorded in the asked range.
    #[error("stream {stream:?} has no recording in the asked range")]
    UnknownRecording {
        /// The stream.
        stream: String,
    },
    /// No such LL-HLS part, segment or playlist (gone, not made yet, or no video yet).
    #[error("no HLS {what} of stream {stream:?} (gone, or not made within 6 s)")]
    UnknownHls {
        /// The stream.
        stream: String,
        /// What was asked for (`part 12.3`, `segment 12`, `playlist`).
        what: String,
    },
    /// No job with this id (never submitted, or deleted).
    #[error("no job {id:?}")]
    UnknownJob {
        /// The id asked for.
        id: String,
    },
    /// The job's output is not ready (it is queued, running, failed or cancelled).
    #[error("job {id:?} is {state}; its output exists once it is done")]
    JobNotDone {
        /// The job.
        id: String,
        /// Its state.
        state: String,
    },
    /// A job's files could not be written or read.
    #[error("job storage: {0}")]
    JobIo(String),
    /// An upload larger than `jobs.max_upload_bytes`.
    #[error("the upload is larger than {limit} bytes (jobs.max_upload_bytes)")]
    UploadTooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// A recording file could not be read.
    #[error("recording unreadable: {0}")]
    RecordingUnreadable(String),
    /// The stream is stopped.
    #[error("stream {stream:?} is stopped; POST /api/streams/{stream}/start first")]
    StreamStopped {
        /// The stream.
        stream: String,
    },
    /// A malformed body, query or value.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credential.
    #[error("{detail}")]
    Unauthenticated {
        /// The challenge to send.
        challenge: Challenge,
        /// Why (never the token itself).
        detail: String,
    },
    /// A valid credential that does not cover this request.
    #[error("{0}")]
    Forbidden(String),
    /// The request took longer than `limits.request_timeout`.
    #[error("the request took longer than {0:?} (limits.request_timeout)")]
    Timeout(Duration),
    /// The body is larger than `limits.max_body_bytes`.
    #[error("request body too large (limits.max_body_bytes)")]
    PayloadTooLarge,
    /// Too many control requests from this client.
    #[error("too many control requests from this client; retry in {retry_after_s} s (limits.control_rate)")]
    RateLimited {
        /// Seconds until the client may retry.
        retry_after_s: u64,
    },
    /// Too many or too large header fields.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// `limits.max_viewers_per_stream` is reached for this stream.
    #[error("stream has its maximum of {max} viewers (limits.max_viewers_per_stream)")]
    ViewersPerStream {
        /// The stream.
        stream: String,
        /// The limit.
        max: usize,
    },
    /// `limits.max_viewers` is reached.
    #[error("the gateway has its maximum of {max} viewers (limits.max_viewers)")]
    Viewers {
        /// The limit.
        max: usize,
    },
    /// `webrtc.max_sessions` is reached.
    #[error("at capacity: {max} WebRTC sessions")]
    WebrtcSessions {
        /// The limit.
        max: usize,
    },
    /// This replica is shutting down and takes no new viewers.
    #[error("this replica is shutting down")]
    ShuttingDown,
    /// The state store (Redis) cannot be reached, or is restoring a record.
    #[error("state store unavailable: {cause}")]
    StoreUnavailable {
        /// What failed (logged, not sent to clients).
        cause: String,
    },
    /// WebRTC is switched off (`webrtc.enabled = false`).
    #[error("WebRTC is disabled (webrtc.enabled = false)")]
    WebrtcDisabled,
    /// The WebRTC event loops are gone (shutting down).
    #[error("WebRTC is shutting down")]
    WebrtcStopping,
    /// Viewer tokens need `auth.jwt_secret`.
    #[error("viewer tokens need auth.jwt_secret (SIGHTLINE_AUTH__JWT_SECRET)")]
    NoTokenSecret,
    /// Another replica owns the WHEP session: the same request there.
    #[error("the WHEP session is owned by another replica: {location}")]
    Redirect {
        /// The URL on the owner.
        location: String,
    },
    /// A WHEP protocol error.
    #[error("{error}")]
    Whep {
        /// The stream of the request.
        stream: String,
        /// What was wrong.
        #[source]
        error: WhepError,
    },
    /// The camera URL cannot be used.
    #[error("bad camera url {detail}")]
    CameraUrl {
        /// The stream.
        stream: String,
        /// The URL (credentials redacted) and why.
        detail: String,
    },
    /// The RTSP client reported an RTSP/RTP error (credentials scrubbed).
    #[error("{detail}")]
    Rtsp {
        /// The stream.
        stream: String,
        /// retina's message, with its connection and packet context.
        detail: String,
    },
    /// The camera offers no video stream in a codec we take (H.264, H.265).
    #[error("camera offers no H.264 or H.265 video stream")]
    NoVideo {
        /// The stream.
        stream: String,
    },
    /// No access unit within the stall timeout.
    #[error("no access unit for {after:?}")]
    Stalled {
        /// The stream.
        stream: String,
        /// `ingest.stall_timeout`.
        after: Duration,
    },
    /// The camera closed the session.
    #[error("camera ended the session")]
    CameraEnded {
        /// The stream.
        stream: String,
    },
}

impl Error {
    /// The kind, which decides the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            UnknownStream { .. }
            | UnknownRoute { .. }
            | UnknownSession { .. }
            | UnknownEvent { .. }
            | UnknownGeometry { .. }
            | UnknownRecording { .. }
            | UnknownHls { .. }
            | UnknownJob { .. } => ErrorKind::NotFound,
            RecordingUnreadable(_) | JobIo(_) => ErrorKind::Internal,
            JobNotDone { .. } => ErrorKind::Exists,
            StreamStopped { .. } => ErrorKind::Conflict,
            Exists(_) => ErrorKind::Exists,
            BadRequest(_) => ErrorKind::BadRequest,
            Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Forbidden(_) => ErrorKind::Forbidden,
            Timeout(_) => ErrorKind::Timeout,
            PayloadTooLarge | GeometryLimit { .. } | UploadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            RateLimited { .. } => ErrorKind::RateLimited,
            HeadersTooLarge(_) => ErrorKind::HeadersTooLarge,
            ViewersPerStream { .. } | Viewers { .. } | WebrtcSessions { .. } | ShuttingDown => ErrorKind::AtCapacity,
            StoreUnavailable { .. } | EventsUnavailable { .. } | WebrtcDisabled | WebrtcStopping | NoTokenSecret => ErrorKind::Unavailable,
            Redirect { .. } => ErrorKind::Redirect,
            Whep { .. } => ErrorKind::Whep,
            CameraUrl { .. } | Rtsp { .. } | NoVideo { .. } | Stalled { .. } | CameraEnded { .. } => ErrorKind::Camera,
        }
    }

    /// The stream the error is about, if any.
    pub fn stream(&self) -> Option<&str> {
        use Error::*;
        match self {
            UnknownStream { stream }
            | UnknownSession { stream, .. }
            | StreamStopped { stream }
            | UnknownRecording { stream }
            | UnknownHls { stream, .. }
            | GeometryLimit { stream, .. }
            | UnknownGeometry { stream, .. }
            | ViewersPerStream { stream, .. }
            | Whep { stream, .. }
            | CameraUrl { stream, .. }
            | Rtsp { stream, .. }
            | NoVideo { stream }
            | Stalled { stream, .. }
            | CameraEnded { stream } => Some(stream),
            _ => None,
        }
    }

    /// No stored event `id` (`what`: `event`, `snapshot of event`); the id cut to 40
    /// characters for the answer.
    pub fn unknown_event(what: &'static str, id: &str) -> Error {
        Error::UnknownEvent { what, id: id.chars().take(40).collect() }
    }

    /// A WHEP error about `stream`.
    pub fn whep(stream: &str, error: WhepError) -> Error {
        Error::Whep { stream: stream.to_owned(), error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_stream_ids() {
        let e = Error::ViewersPerStream { stream: "door".into(), max: 2 };
        assert_eq!((e.kind(), e.stream()), (ErrorKind::AtCapacity, Some("door")));
        assert!(e.to_string().contains("max_viewers_per_stream"), "the detail names the setting: {e}");
        let e = Error::whep("door", WhepError::PreconditionFailed);
        assert_eq!((e.kind(), e.stream()), (ErrorKind::Whep, Some("door")));
        assert_eq!(Error::StoreUnavailable { cause: "x".into() }.kind(), ErrorKind::Unavailable);
        assert_eq!(Error::NoVideo { stream: "s".into() }.to_string(), "camera offers no H.264 or H.265 video stream");
    }
}
