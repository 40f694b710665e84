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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The cookie the web UI stores a token in.
pub const TOKEN_COOKIE: &str = "sightline_token";
/// The query parameter feeds accept a token in.
pub const TOKEN_QUERY: &str = "token";
/// Shortest accepted `jwt_secret`, bytes (RFC 7518 §3.2: at least the hash size for HS256).
pub const MIN_SECRET_BYTES: usize = 32;
/// `iss` of the viewer tokens this gateway mints and accepts.
const ISSUER: &str = "sightline";
/// Why an `Authorization` header that is not `Bearer <token>` is refused.
const BAD_SCHEME: &str = "Authorization must be `Bearer <token>`";
/// Scope entry granting every stream.
pub const ALL_STREAMS: &str = "*";

/// When authentication applies.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Off when the HTTP listen address is loopback (127.0.0.0/8, ::1), on otherwise.
    #[default]
    Auto,
    /// Always required.
    On,
    /// Never required (everything is open: only behind a trusted proxy that authenticates).
    Off,
}

/// `[auth]`: control and viewer tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `auto`, `on` or `off`. Default `auto`: off on a loopback-only listen, on otherwise.
    pub mode: AuthMode,
    /// Bearer tokens that may start/stop streams and do everything else
    /// (`SIGHTLINE_AUTH__CONTROL_TOKENS='["…"]'`). Default none.
    pub control_tokens: Vec<String>,
    /// HS256 secret (≥ 32 bytes) that signs viewer tokens (`SIGHTLINE_AUTH__JWT_SECRET`).
    /// Default none: no viewer tokens, only control tokens are accepted.
    pub jwt_secret: Option<String>,
    /// Longest lifetime `gateway token --ttl` and `POST /api/tokens` may give. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
    /// Serve `/metrics` without a token. Default `false` (a control token is needed).
    pub public_metrics: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Auto,
            control_tokens: Vec::new(),
            jwt_secret: None,
            max_token_ttl: Duration::from_secs(24 * 3600),
            public_metrics: false,
        }
    }
}

impl AuthConfig {
    /// Whether authentication is required for a gateway listening on `listen`.
    pub fn enabled_for(&self, listen: std::net::SocketAddr) -> bool {
        match self.mode {
            AuthMode::On => true,
            AuthMode::Off => false,
            AuthMode::Auto => !listen.ip().is_loopback(),
        }
    }

    /// Checks the secrets (they are needed only when auth is on for `listen`).
    pub fn validate(&self, listen: std::net::SocketAddr) -> Result<(), String> {
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return Err(format!("auth.jwt_secret must be at least {MIN_SECRET_BYTES} bytes"));
        }
        if self.control_tokens.iter().any(|t| t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control())) {
            return Err("auth.control_tokens: each token must be at least 16 characters, without spaces".into());
        }
        if self.enabled_for(listen) && self.control_tokens.is_empty() && self.jwt_secret.is_none() {
            return Err(format!(
                "authentication is on (listen {listen} is not loopback-only) but no auth.control_tokens or auth.jwt_secret is set; \
                 set them (SIGHTLINE_AUTH__CONTROL_TOKENS='[\"…\"]', SIGHTLINE_AUTH__JWT_SECRET=…) or auth.mode = \"off\" behind a proxy that authenticates"
            ));
        }
        if self.max_token_ttl.is_zero() {
            return Err("auth.max_token_ttl must be above 0".into());
        }
        Ok(())
    }
}

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

/// Why a token was not minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// No `auth.jwt_secret` configured.
    #[error("viewer tokens need auth.jwt_secret (SIGHTLINE_AUTH__JWT_SECRET)")]
    NoSecret,
    /// TTL zero or above `auth.max_token_ttl`.
    #[error("ttl must be between 1s and {0:?} (auth.max_token_ttl)")]
    BadTtl(Duration),
    /// No stream, or an invalid stream id.
    #[error("{0}")]
    BadStreams(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
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

/// Why a request is refused: 401 or 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// 401: no valid credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: the credential does not cover this request.
    #[error("{0}")]
    Forbidden(String),
}

impl Caller {
    fn unauthenticated(&self) -> Denied {
        match self {
            Caller::Invalid(reason) if reason == BAD_SCHEME => Denied::Unauthenticated(format!("malformed request: {reason}")),
            Caller::Invalid(reason) => Denied::Unauthenticated(format!("invalid token: {reason}")),
            _ => Denied::Unauthenticated("a token is required (Authorization: Bearer, ?token= or the sightline_token cookie)".into()),
        }
    }

    /// Start/stop and other mutating endpoints: a control token.
    pub fn require_control(&self) -> Result<(), Denied> {
        match self {
            Caller::Open | Caller::Control => Ok(()),
            Caller::Viewer(_) => Err(Denied::Forbidden("a viewer token cannot do this; a control token is required".into())),
            Caller::Anonymous | Caller::Invalid(_) => Err(self.unauthenticated()),
        }
    }

    /// Watching stream `id` (feeds, WHEP, its status).
    pub fn require_view(&self, id: &str) -> Result<(), Denied> {
        match self {
            Caller::Open | Caller::Control => Ok(()),
            Caller::Viewer(c) if c.covers(id) => Ok(()),
            Caller::Viewer(_) => Err(Denied::Forbidden(format!("the token does not cover stream {id:?}"))),
            Caller::Anonymous | Caller::Invalid(_) => Err(self.unauthenticated()),
        }
    }

    /// Any valid credential (the stream list, filtered by [`Caller::may_view`]).
    pub fn require_any(&self) -> Result<(), Denied> {
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

/// Compares without an early exit on the first differing byte (no timing oracle).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    pub fn mint(&self, subject: &str, streams: &[String], ttl: Duration) -> Result<(String, u64), MintError> {
        let (encoding, _) = self.keys.as_ref().ok_or(MintError::NoSecret)?;
        if ttl.is_zero() || ttl > self.max_ttl {
            return Err(MintError::BadTtl(self.max_ttl));
        }
        if streams.is_empty() {
            return Err(MintError::BadStreams("name at least one stream (or \"*\" for all)".into()));
        }
        if let Some(bad) = streams.iter().find(|s| s.as_str() != ALL_STREAMS && !crate::config::valid_stream_id(s)) {
            return Err(MintError::BadStreams(format!("{bad:?} is not a valid stream id")));
        }
        let iat = now_secs();
        let exp = iat + ttl.as_secs().max(1);
        let claims = ViewerClaims { iss: ISSUER.into(), sub: subject.to_owned(), streams: streams.to_vec(), iat, exp };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)?;
        Ok((token, exp))
    }

    /// Classifies one presented token.
    pub fn check_token(&self, token: &str, from_header: bool) -> Caller {
        if from_header && self.control_tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
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

    /// The caller behind a request's headers and query string.
    pub fn caller(&self, headers: &HeaderMap, query: Option<&str>) -> Caller {
        if !self.enabled {
            return Caller::Open;
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let text = value.to_str().unwrap_or("");
            let token = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).map(str::trim);
            return match token {
                Some(t) if !t.is_empty() => self.check_token(t, true),
                _ => Caller::Invalid(BAD_SCHEME.into()),
            };
        }
        if let Some(t) = query.and_then(query_token) {
            return self.check_token(&t, false);
        }
        match cookie_token(headers) {
            Some(t) => self.check_token(&t, false),
            None => Caller::Anonymous,
        }
    }
}

/// The `token` query parameter, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == TOKEN_QUERY).map(|(_, v)| v.into_owned())
}

/// The `sightline_token` cookie (RFC 6265 §5.4 `Cookie: a=b; c=d`).
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

impl FromRequestParts<crate::api::AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &crate::api::AppState) -> Result<Self, Self::Rejection> {
        Ok(state.auth.caller(&parts.headers, parts.uri.query()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    #[test]
    fn auto_mode_follows_the_listen_address() {
        let c = AuthConfig::default();
        assert!(!c.enabled_for("127.0.0.1:8080".parse().unwrap()));
        assert!(!c.enabled_for("[::1]:8080".parse().unwrap()));
        assert!(c.enabled_for("0.0.0.0:8080".parse().unwrap()));
        assert!(c.enabled_for("192.0.2.1:8080".parse().unwrap()));
        let err = c.validate("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert!(err.contains("auth.control_tokens"), "{err}");
        c.validate("127.0.0.1:8080".parse().unwrap()).unwrap();
        let short = AuthConfig { jwt_secret: Some("short".into()), ..AuthConfig::default() };
        assert!(short.validate("127.0.0.1:8080".parse().unwrap()).is_err());
    }

    #[test]
    fn control_token_only_from_the_header() {
        let a = auth();
        assert_eq!(a.caller(&bearer(CONTROL), None), Caller::Control);
        let from_query = a.caller(&HeaderMap::new(), Some(&format!("token={CONTROL}")));
        assert!(matches!(from_query, Caller::Invalid(_)), "{from_query:?}");
        assert_eq!(a.caller(&HeaderMap::new(), None), Caller::Anonymous);
        assert!(matches!(a.caller(&bearer("nope"), None), Caller::Invalid(_)));
    }

    #[test]
    fn viewer_tokens_are_scoped_and_expire() {
        let a = auth();
        let (token, exp) = a.mint("alice", &["cam1".into()], Duration::from_secs(600)).unwrap();
        assert!(exp >= now_secs() + 599);
        let caller = a.caller(&HeaderMap::new(), Some(&format!("fps=5&token={token}")));
        caller.require_view("cam1").unwrap();
        assert!(matches!(caller.require_view("cam2"), Err(Denied::Forbidden(_))));
        assert!(matches!(caller.require_control(), Err(Denied::Forbidden(_))));
        let mut cookie = HeaderMap::new();
        cookie.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {TOKEN_COOKIE}={token}")).unwrap());
        assert!(a.caller(&cookie, None).may_view("cam1"));

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
        assert!(matches!(a.caller(&HeaderMap::new(), None).require_view("cam1"), Err(Denied::Unauthenticated(_))));
    }

    #[test]
    fn minting_checks_its_input() {
        let a = auth();
        assert!(matches!(a.mint("x", &[], Duration::from_secs(60)), Err(MintError::BadStreams(_))));
        assert!(matches!(a.mint("x", &["../etc".into()], Duration::from_secs(60)), Err(MintError::BadStreams(_))));
        assert!(matches!(a.mint("x", &["cam".into()], Duration::from_secs(48 * 3600)), Err(MintError::BadTtl(_))));
        let (all, _) = a.mint("x", &[ALL_STREAMS.into()], Duration::from_secs(60)).unwrap();
        assert!(a.check_token(&all, false).may_view("anything"));
        assert!(matches!(Auth::disabled().mint("x", &["cam".into()], Duration::from_secs(60)), Err(MintError::NoSecret)));
    }
}
