//! `[auth]`: control and viewer tokens (the checks live in `crate::auth`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shortest accepted `jwt_secret`, bytes (RFC 7518 §3.2: at least the hash size for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
