//! Request extractors: who is calling ([`Caller`], from the request head through
//! [`Auth`](crate::auth::Auth)), and [`Controller`], a caller allowed on control endpoints.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::state::AppState;
use crate::auth::{Caller, Presented};
use crate::core::Error;

/// The credentials of a request head, as [`Auth`](crate::auth::Auth) reads them.
pub(crate) fn presented(parts: &Parts) -> Presented<'_> {
    Presented {
        authorization: parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("")),
        query: parts.uri.query(),
        cookies: parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect(),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(state.auth.caller(&presented(parts)))
    }
}

/// A caller allowed on control endpoints (start, stop, tokens): holding a control token
/// (checked first: 401/403 tell a client what is wrong before 429 tells it to slow down) and
/// within the per-client control rate. Tokens are ≥ 16 characters, so guessing one is not a
/// matter of request rate.
#[derive(Debug)]
pub(crate) struct Controller;

impl FromRequestParts<AppState> for Controller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state.auth.caller(&presented(parts)).require_control()?;
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        if let Some(client) = state.control_rate.client(peer, &parts.headers)
            && let Err(wait) = state.control_rate.check(client)
        {
            return Err(Error::RateLimited { retry_after_s: wait.as_secs().max(1) });
        }
        Ok(Controller)
    }
}
