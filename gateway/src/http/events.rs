//! Analytics events (issue #13): `GET /api/events/live`, every stream's events as they happen,
//! as server-sent events (`event: event`, `id:` the event id, `data:` its JSON).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::error::query_rejection;
use super::state::AppState;
use crate::auth::Caller;
use crate::core::Error;
use crate::core::events::{AnalyticsEvent, EventKind};

/// Filters of `GET /api/events/live`; every given one must match.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LiveQuery {
    /// Only this stream's events (a viewer token must cover it).
    stream: Option<String>,
    /// Only this kind: `line_crossed`, `zone_enter`, `zone_exit`, `loitering`,
    /// `object_appeared`, `object_left`.
    kind: Option<String>,
    /// Only objects with this class label.
    label: Option<String>,
    /// A viewer token (read by [`Caller`]).
    #[allow(dead_code, reason = "read from the raw query by the Caller extractor; named here for deny_unknown_fields and OpenAPI")]
    token: Option<String>,
}

/// What a subscriber asked for.
struct Filter {
    caller: Caller,
    stream: Option<String>,
    kind: Option<EventKind>,
    label: Option<String>,
}

impl Filter {
    fn wants(&self, e: &AnalyticsEvent) -> bool {
        let e = &e.event;
        self.caller.may_view(&e.stream)
            && self.stream.as_ref().is_none_or(|s| *s == e.stream)
            && self.kind.is_none_or(|k| k == e.kind)
            && self.label.as_ref().is_none_or(|l| *l == e.label)
    }
}

/// Live analytics events (line crossings, zone entries and exits, loitering, objects appearing
/// and leaving) of the streams the caller may see, until the client leaves (or its viewer
/// token expires). Events are made where detection runs: with detection off none come.
#[utoipa::path(get, path = "/api/events/live", tag = "events", params(LiveQuery),
    security(("bearer" = []), ("token" = []), ("cookie" = [])),
    responses((status = 200, description = "Server-sent events: `event: event`, data an AnalyticsEvent", content_type = "text/event-stream", body = AnalyticsEvent),
        (status = 400, description = "Unknown filter or kind", body = super::error::ErrorBody),
        (status = 404, description = "Unknown stream", body = super::error::ErrorBody),
        super::responses::Denied, super::responses::Guard))]
pub(super) async fn live_events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Response, Error> {
    caller.require_any()?;
    let Query(q) = query.map_err(query_rejection)?;
    if let Some(stream) = &q.stream {
        // Permission first: a viewer token learns nothing of streams it does not cover.
        caller.require_view(stream)?;
        state.streams.require(stream)?;
    }
    let kind = match &q.kind {
        None => None,
        Some(k) => Some(
            EventKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == k)
                .ok_or_else(|| Error::BadRequest(format!("unknown event kind {k:?}")))?,
        ),
    };
    let rx = state.events.subscribe();
    let expires = caller.expires();
    let filter = Arc::new(Filter { caller, stream: q.stream, kind, label: q.label });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(RecvError::Lagged(n)) => metrics::counter!("sightline_events_live_dropped_total").increment(n),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |e| std::future::ready(filter.wants(e)))
    .map(|e| Ok::<_, Infallible>(Event::default().event("event").id(e.id.clone()).data(&**e.json())));
    // A viewer token's stream ends when the token does.
    let until = async move {
        match expires {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    let events = events.take_until(until);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.feeds.keepalive)).into_response())
}
