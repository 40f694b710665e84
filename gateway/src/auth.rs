//! Who may call what: control tokens for start/stop and every mutating endpoint, and
//! short-lived viewer tokens (JWT, RFC 7519, HS256) scoped to stream ids for the feeds and WHEP.
//!
//! Credentials are read from, in order:
//! - `Authorization: Bearer <token>` (RFC 6750 §2.1; what WHEP clients send,
//!   draft-ietf-wish-whep §4.8);
//! - the `token` query parameter (RFC 6750 §2.3; `EventSource` and `<img>` cannot set headers);
//! - the `sightline_token` cookie (the web UI sets it after asking for a token).
//!
//! Control tokens are accepted only from the `Authorization` header, so a cookie can never
//! start or stop a stream on a cross-site request. A control token also grants viewing.
//!
//! Answers: no credential, or one that is malformed, expired or badly signed → 401 with
//! `WWW-Authenticate: Bearer` (RFC 6750 §3); a valid credential that does not cover the
//! request (a viewer token on start/stop, or for another stream) → 403.

//!
//! Sans-HTTP: the HTTP layer reads the request head into [`Presented`] and maps the
//! [`Error`]s returned here to statuses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, valid_stream_id};
use crate::core::Error;
use crate::core::error::Challenge;

/// The cookie the web UI stores a token in.
pub const TOKEN_COOKIE: &str = "sightline_token";
/// The query parameter feeds accept a token in.
pub const TOKEN_QUERY: &str = "token";
/// `iss` of the viewer tokens this gateway mints and accepts.
const ISSUER: &str = "sightline";
/// Why an `Authorization` header that is not `Bearer <token>` is refused.
const BAD_SCHEME: &str = "Authorization must be `Bearer <token>`";
/// Scope entry granting every stream.
pub const ALL_STREAMS: &str = "*";

/// Claims of a viewer token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ViewerClaims {
    /// Issuer: `sightline`.
    pub iss: String,
    /// Subject: who the token was minted for (free text, logged). `viewer` by default.
    pub sub: String,
    /// Stream ids the token may watch; `*` for all.
    pub streams: Vec<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch (RFC 7519 §4.1.4).
    pub exp: u64,
}

impl ViewerClaims {
    /// Whether the token covers stream `id`.
    pub fn covers(&self, id: &str) -> bool {
        self.streams.iter().any(|s| s == id || s == ALL_STREAMS)
    }
}

/// The verdict on a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: everything is allowed.
    Open,
    /// A control token: everything is allowed.
    Control,
    /// A valid viewer token.
    Viewer(ViewerClaims),
    /// No credential.
    Anonymous,
    /// A credential that is not valid (the reason, never the token).
    Invalid(String),
}

pub use crate::core::RELAY_USER;

/// `user:password` of a `Basic` authorization (RFC 7617), if it is one.
fn basic_credentials(text: &str) -> Option<String> {
    use base64::Engine as _;
    text.strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
}

impl Caller {
    /// The 401 for this caller: which challenge and why (RFC 6750 §3.1).
    fn unauthenticated(&self) -> Error {
        let (challenge, detail) = match self {
            Caller::Invalid(reason) if reason == BAD_SCHEME => (Challenge::InvalidRequest, format!("malformed request: {reason}")),
            Caller::Invalid(reason) => (Challenge::InvalidToken, format!("invalid token: {reason}")),
            _ => (Challenge::Missing, "a token is required (Authorization: Bearer, ?token= or the sightline_token cookie)".into()),
        };
        Error::Unauthenticated { challenge, detail }
    }

    /// Start/stop and other mutating endpoints: a control token.
    pub fn require_control(&self) -> Result<(), Error> {
        match self {
            Caller::Open | Caller::Control => Ok(()),
            Caller::Viewer(_) => Err(Error::Forbidden("a viewer token cannot do this; a control token is required".into())),
            Caller::Anonymous | Caller::Invalid(_) => Err(self.unauthenticated()),
        }
    }

    /// Watching stream `id` (feeds, WHEP, its status).
    pub fn require_view(&self, id: &str) -> Result<(), Error> {
        match self {
            Caller::Open | Caller::Control => Ok(()),
            Caller::Viewer(c) if c.covers(id) => Ok(()),
            Caller::Viewer(_) => Err(Error::Forbidden(format!("the token does not cover stream {id:?}"))),
            Caller::Anonymous | Caller::Invalid(_) => Err(self.unauthenticated()),
        }
    }

    /// Any valid credential (the stream list, filtered by [`Caller::may_view`]).
    pub fn require_any(&self) -> Result<(), Error> {
        match self {
            Caller::Anonymous | Caller::Invalid(_) => Err(self.unauthenticated()),
            _ => Ok(()),
        }
    }

    /// When the caller's access ends: a viewer token's `exp` as an [`std::time::Instant`]
    /// (feeds and WHEP sessions opened with it end then); `None` for control tokens and open
    /// access.
    pub fn expires(&self) -> Option<std::time::Instant> {
        match self {
            Caller::Viewer(c) => Some(std::time::Instant::now() + Duration::from_secs(c.exp.saturating_sub(now_secs()))),
            _ => None,
        }
    }

    /// Whether stream `id` is visible to this caller.
    pub fn may_view(&self, id: &str) -> bool {
        self.require_view(id).is_ok()
    }
}

/// The auth settings in force, shared by the handlers.
#[derive(Clone)]
pub struct Auth {
    enabled: bool,
    control_tokens: Vec<String>,
    keys: Option<(EncodingKey, DecodingKey)>,
    max_ttl: Duration,
    public_metrics: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.enabled)
            .field("control_tokens", &self.control_tokens.len())
            .field("viewer_tokens", &self.keys.is_some())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Auth {
    /// The settings for a gateway listening on `listen` (call [`AuthConfig::validate`] first).
    pub fn new(config: &AuthConfig, listen: std::net::SocketAddr) -> Auth {
        let keys = config.jwt_secret.as_deref().map(|s| (EncodingKey::from_secret(s.as_bytes()), DecodingKey::from_secret(s.as_bytes())));
        Auth {
            enabled: config.enabled_for(listen),
            control_tokens: config.control_tokens.clone(),
            keys,
            max_ttl: config.max_token_ttl,
            public_metrics: config.public_metrics,
        }
    }

    /// Authentication off (tests, loopback).
    pub fn disabled() -> Auth {
        Auth { enabled: false, control_tokens: Vec::new(), keys: None, max_ttl: Duration::from_secs(3600), public_metrics: true }
    }

    /// Whether credentials are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `/metrics` needs no token.
    pub fn public_metrics(&self) -> bool {
        !self.enabled || self.public_metrics
    }

    /// Mints a viewer token for `streams` valid `ttl` from now; returns it and its expiry
    /// (seconds since the Unix epoch).
    ///
    /// Errors: [`Error::NoTokenSecret`] without `auth.jwt_secret`; [`Error::BadRequest`] for
    /// a TTL of zero or above `auth.max_token_ttl`, no stream or an invalid stream id.
    pub fn mint(&self, subject: &str, streams: &[String], ttl: Duration) -> Result<(String, u64), Error> {
        let (encoding, _) = self.keys.as_ref().ok_or(Error::NoTokenSecret)?;
        if ttl.is_zero() || ttl > self.max_ttl {
            return Err(Error::BadRequest(format!("ttl must be between 1s and {:?} (auth.max_token_ttl)", self.max_ttl)));
        }
        if streams.is_empty() {
            return Err(Error::BadRequest("name at least one stream (or \"*\" for all)".into()));
        }
        if let Some(bad) = streams.iter().find(|s| s.as_str() != ALL_STREAMS && !valid_stream_id(s)) {
            return Err(Error::BadRequest(format!("{bad:?} is not a valid stream id")));
        }
        let iat = now_secs();
        let exp = iat + ttl.as_secs().max(1);
        let claims = ViewerClaims { iss: ISSUER.into(), sub: subject.to_owned(), streams: streams.to_vec(), iat, exp };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .map_err(|e| Error::BadRequest(format!("signing failed: {e}")))?;
        Ok((token, exp))
    }

    /// Classifies one presented token.
    pub fn check_token(&self, token: &str, from_header: bool) -> Caller {
        if from_header && self.control_tokens.iter().any(|t| crate::core::constant_time_eq(t.as_bytes(), token.as_bytes())) {
            return Caller::Control;
        }
        let Some((_, decoding)) = &self.keys else {
            return Caller::Invalid("not a control token (and viewer tokens are not configured)".into());
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.leeway = 5;
        match jsonwebtoken::decode::<ViewerClaims>(token, decoding, &validation) {
            Ok(data) => Caller::Viewer(data.claims),
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAlgorithm => "wrong algorithm (HS256 expected)",
                    ErrorKind::MissingRequiredClaim(_) => "missing exp or iss",
                    _ if from_header => "not a control token or a viewer token",
                    _ => "malformed",
                };
                Caller::Invalid(reason.into())
            }
        }
    }

    /// The caller behind an RTSP request (the restream): `Authorization: Basic` (RFC 7617)
    /// with a token as the password (the user name is ignored; a token as the user name
    /// with an empty password is taken too), which may be a control token as a header is;
    /// else a `token` query parameter, a viewer token only (as for HTTP).
    pub fn rtsp_caller(&self, authorization: Option<&str>, query: Option<&str>) -> Caller {
        if !self.enabled {
            return Caller::Open;
        }
        if let Some(text) = authorization {
            let decoded = basic_credentials(text);
            return match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((user, "")) if !user.is_empty() => self.check_token(user, true),
                Some((_, password)) => self.check_token(password, true),
                None => Caller::Invalid("Authorization must be `Basic` with a token as the password".into()),
            };
        }
        match query.and_then(query_token) {
            Some(t) => self.check_token(&t, false),
            None => Caller::Anonymous,
        }
    }

    /// Whether an RTSP request is another replica's relay (`pull = "one_per_cluster"`): it
    /// presents a control token as the `Basic` password of the user [`RELAY_USER`]. Relays
    /// serve a replica's viewers: they do not take viewer places (`[limits]`). With
    /// authentication off nothing tells a relay apart, and each counts as a viewer.
    pub fn is_relay(&self, authorization: Option<&str>) -> bool {
        let Some(decoded) = authorization.and_then(basic_credentials) else { return false };
        match decoded.split_once(':') {
            Some((RELAY_USER, password)) => self.enabled && matches!(self.check_token(password, true), Caller::Control),
            _ => false,
        }
    }

    /// The caller behind what a request presents.
    pub fn caller(&self, presented: &Presented<'_>) -> Caller {
        if !self.enabled {
            return Caller::Open;
        }
        if let Some(text) = presented.authorization {
            let token = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).map(str::trim);
            return match token {
                Some(t) if !t.is_empty() => self.check_token(t, true),
                _ => Caller::Invalid(BAD_SCHEME.into()),
            };
        }
        if let Some(t) = presented.query.and_then(query_token) {
            return self.check_token(&t, false);
        }
        match cookie_token(&presented.cookies) {
            Some(t) => self.check_token(&t, false),
            None => Caller::Anonymous,
        }
    }
}

/// The credentials a request carries, as the HTTP layer read them from its head.
#[derive(Clone, Debug, Default)]
pub struct Presented<'a> {
    /// The `Authorization` header (`""` when it is not valid UTF-8), if present.
    pub authorization: Option<&'a str>,
    /// The query string.
    pub query: Option<&'a str>,
    /// The `Cookie` header values (RFC 6265 §5.4: `a=b; c=d`).
    pub cookies: Vec<&'a str>,
}

/// The `token` query parameter, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == TOKEN_QUERY).map(|(_, v)| v.into_owned())
}

/// The `sightline_token` cookie (RFC 6265 §5.4 `Cookie: a=b; c=d`).
fn cookie_token(cookies: &[&str]) -> Option<String> {
    cookies
        .iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const CONTROL: &str = "control-token-0123456789";

    fn auth() -> Auth {
        let config = AuthConfig {
            mode: AuthMode::On,
            control_tokens: vec![CONTROL.into()],
            jwt_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        };
        Auth::new(&config, "127.0.0.1:8080".parse().unwrap())
    }

    fn bearer(header: &str) -> Presented<'_> {
        Presented { authorization: Some(header), ..Presented::default() }
    }

    fn query(q: &str) -> Presented<'_> {
        Presented { query: Some(q), ..Presented::default() }
    }

    #[test]
    fn control_token_only_from_the_header() {
        let a = auth();
        assert_eq!(a.caller(&bearer(&format!("Bearer {CONTROL}"))), Caller::Control);
        let from_query = a.caller(&query(&format!("token={CONTROL}")));
        assert!(matches!(from_query, Caller::Invalid(_)), "{from_query:?}");
        assert_eq!(a.caller(&Presented::default()), Caller::Anonymous);
        assert!(matches!(a.caller(&bearer("Bearer nope")), Caller::Invalid(_)));
        assert_eq!(a.caller(&bearer("Basic dTpw")), Caller::Invalid(BAD_SCHEME.into()), "not a bearer token");
    }

    #[test]
    fn viewer_tokens_are_scoped_and_expire() {
        let a = auth();
        let (token, exp) = a.mint("alice", &["cam1".into()], Duration::from_secs(600)).unwrap();
        assert!(exp >= now_secs() + 599);
        let caller = a.caller(&query(&format!("fps=5&token={token}")));
        caller.require_view("cam1").unwrap();
        assert!(matches!(caller.require_view("cam2"), Err(Error::Forbidden(_))));
        assert!(matches!(caller.require_control(), Err(Error::Forbidden(_))));
        let cookie = format!("a=b; {TOKEN_COOKIE}={token}");
        assert!(a.caller(&Presented { cookies: vec!["x=y", &cookie], ..Presented::default() }).may_view("cam1"));

        // Expired (beyond the 5 s leeway), signed with another secret, or unsigned ("none").
        let claims = ViewerClaims { iss: ISSUER.into(), sub: "x".into(), streams: vec!["cam1".into()], iat: 0, exp: now_secs() - 60 };
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        assert_eq!(a.check_token(&expired, false), Caller::Invalid("expired".into()));
        let claims = ViewerClaims { exp: now_secs() + 60, ..claims };
        let forged =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"another-secret-another-secret-xx"))
                .unwrap();
        assert_eq!(a.check_token(&forged, false), Caller::Invalid("bad signature".into()));
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", forged.split('.').nth(1).unwrap());
        assert!(matches!(a.check_token(&unsigned, false), Caller::Invalid(_)));
        assert!(matches!(
            a.caller(&Presented::default()).require_view("cam1"),
            Err(Error::Unauthenticated { challenge: Challenge::Missing, .. })
        ));
        assert!(matches!(
            a.caller(&bearer("Bearer nope")).require_view("cam1"),
            Err(Error::Unauthenticated { challenge: Challenge::InvalidToken, .. })
        ));
    }

    #[test]
    fn minting_checks_its_input() {
        let a = auth();
        assert!(matches!(a.mint("x", &[], Duration::from_secs(60)), Err(Error::BadRequest(m)) if m.contains("at least one stream")));
        assert!(
            matches!(a.mint("x", &["../etc".into()], Duration::from_secs(60)), Err(Error::BadRequest(m)) if m.contains("not a valid stream id"))
        );
        assert!(
            matches!(a.mint("x", &["cam".into()], Duration::from_secs(48 * 3600)), Err(Error::BadRequest(m)) if m.contains("max_token_ttl"))
        );
        let (all, _) = a.mint("x", &[ALL_STREAMS.into()], Duration::from_secs(60)).unwrap();
        assert!(a.check_token(&all, false).may_view("anything"));
        assert!(matches!(Auth::disabled().mint("x", &["cam".into()], Duration::from_secs(60)), Err(Error::NoTokenSecret)));
    }
}
