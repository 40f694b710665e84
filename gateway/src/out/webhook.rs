//! Analytics events to webhooks (issue #13, `[[webhooks]]`): each event this replica makes is
//! POSTed as its JSON (`application/json`, the same text as on `/api/events/live`) to every
//! webhook whose `streams` and `kinds` take it, one event at a time per webhook, in order.
//!
//! Headers: `X-Sightline-Event` (the kind), `X-Sightline-Delivery` (the event id: a receiver
//! seeing it twice got a retry), `X-Sightline-Attempt` (1, 2, …) and, with a `secret`,
//! `X-Sightline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (the scheme
//! Stripe and GitHub receivers know: the time in the signed text lets a receiver refuse old
//! replays).
//!
//! Connection errors, timeouts, 408, 429 and 5xx are retried after 0.5 s, doubling to 60 s, up
//! to `max_attempts`; other answers are final (logged). Meanwhile later events wait in the
//! webhook's queue ([`QUEUE`]); past it they are dropped and counted. Stored events do not
//! depend on webhooks: the event archive has them whatever the receiver does.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::WebhookConfig;
use crate::config::redact::redact_url;
use crate::core::events::{AnalyticsEvent, EventFanout};
use crate::core::task::AbortOnDrop;

/// Events waiting per webhook while its receiver is slow or down.
pub(crate) const QUEUE: usize = 10_000;
/// First wait before a retry; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The running webhooks; dropping them stops them.
#[derive(Debug)]
pub(crate) struct Webhooks {
    _tasks: Vec<AbortOnDrop>,
}

/// Starts delivering `events` to each configured webhook; `None` without any.
pub(crate) fn start(configs: &[WebhookConfig], events: &EventFanout) -> Option<Webhooks> {
    if configs.is_empty() {
        return None;
    }
    let client = match reqwest::Client::builder().user_agent(concat!("sightline/", env!("CARGO_PKG_VERSION"))).build() {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "webhooks disabled: no HTTP client");
            return None;
        }
    };
    let mut tasks = Vec::new();
    for config in configs {
        let hook = Arc::new(config.clone());
        let (tx, mut rx) = mpsc::channel::<Arc<AnalyticsEvent>>(QUEUE);
        let mut sub = events.subscribe();
        let url = redact_url(&hook.url);
        info!(url = %url, signed = hook.secret.is_some(), "delivering analytics events to a webhook");
        let wanted = hook.clone();
        tasks.push(AbortOnDrop::spawn(async move {
            loop {
                let event = match sub.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        metrics::counter!("sightline_webhook_dropped_total").increment(n);
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if wants(&wanted, &event) && tx.try_send(event.clone()).is_err() {
                    metrics::counter!("sightline_webhook_dropped_total").increment(1);
                    warn!(url = %redact_url(&wanted.url), stream = %event.event.stream, id = %event.id, "webhook queue full: event not delivered");
                }
            }
        }));
        let client = client.clone();
        tasks.push(AbortOnDrop::spawn(async move {
            while let Some(event) = rx.recv().await {
                deliver(&client, &hook, &event).await;
            }
        }));
    }
    Some(Webhooks { _tasks: tasks })
}

/// Whether `hook` takes `event` (its `streams` and `kinds`; empty lists take all).
fn wants(hook: &WebhookConfig, event: &AnalyticsEvent) -> bool {
    let e = &event.event;
    (hook.streams.is_empty() || hook.streams.contains(&e.stream))
        && (hook.kinds.is_empty() || hook.kinds.iter().any(|k| k == e.kind.as_str()))
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub(crate) fn signature(secret: &str, t: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Whether an answer is worth another attempt (RFC 9110 §15.5.9, RFC 6585 §4, 5xx).
fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

/// POSTs `event` until the receiver takes it, refuses it, or `max_attempts` are spent.
async fn deliver(client: &reqwest::Client, hook: &WebhookConfig, event: &AnalyticsEvent) {
    let body = event.json().to_string();
    let url = redact_url(&hook.url);
    let stream = &event.event.stream;
    let mut wait = RETRY_MIN;
    let mut last = String::new();
    for attempt in 1..=hook.max_attempts {
        let mut req = client
            .post(&hook.url)
            .timeout(hook.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Sightline-Event", event.event.kind.as_str())
            .header("X-Sightline-Delivery", &event.id)
            .header("X-Sightline-Attempt", attempt.to_string())
            .body(body.clone());
        if let Some(secret) = &hook.secret {
            let t = crate::core::clock::now_ms() / 1000;
            req = req.header("X-Sightline-Signature", signature(secret, t, &body));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("sightline_webhook_delivered_total").increment(1);
                if attempt > 1 {
                    info!(url = %url, stream = %stream, id = %event.id, attempt, "webhook took the event after retries");
                }
                return;
            }
            Ok(r) if retryable(r.status()) => last = format!("HTTP {}", r.status()),
            Ok(r) => {
                metrics::counter!("sightline_webhook_failed_total").increment(1);
                warn!(url = %url, stream = %stream, id = %event.id, status = r.status().as_u16(), "webhook refused the event; not retried");
                return;
            }
            // reqwest's errors name the URL: without it (it may carry a token).
            Err(e) => last = e.without_url().to_string(),
        }
        metrics::counter!("sightline_webhook_retries_total").increment(1);
        if attempt == 1 {
            warn!(url = %url, stream = %stream, id = %event.id, error = %last, "webhook delivery failed; retrying with backoff");
        }
        if attempt < hook.max_attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
    metrics::counter!("sightline_webhook_failed_total").increment(1);
    error!(url = %url, stream = %stream, id = %event.id, attempts = hook.max_attempts, error = %last, "webhook gave up on the event (it stays stored)");
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use parking_lot::Mutex;

    use super::*;
    use crate::core::events::{EventKind, NewEvent};

    fn event(kind: EventKind, ts_ms: u64) -> AnalyticsEvent {
        AnalyticsEvent::new(NewEvent {
            kind,
            stream: "gate".into(),
            label: "car".into(),
            track_id: 7,
            line: (kind == EventKind::LineCrossed).then(|| "road".into()),
            direction: (kind == EventKind::LineCrossed).then_some("in"),
            zone: None,
            inside_ms: None,
            ts_ms,
            seq: 1,
            rtp_timestamp: 0,
            bbox: None,
        })
    }

    type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

    /// A receiver on `port` that answers 500 to its first POST and 200 after.
    async fn receiver(port: u16, got: Received) -> AbortOnDrop {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let got = got.clone();
                async move {
                    let mut got = got.lock();
                    got.push((headers, body));
                    if got.len() == 1 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
                }
            }),
        );
        AbortOnDrop::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    #[tokio::test]
    async fn a_receiver_that_is_down_then_fails_gets_every_event_signed_in_order() {
        // A port with nothing on it yet: connection refused until the receiver starts.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let hook = WebhookConfig {
            url: format!("http://127.0.0.1:{port}/hook"),
            secret: Some("s3cret".into()),
            streams: vec!["gate".into()],
            kinds: vec!["line_crossed".into()],
            timeout: Duration::from_secs(2),
            max_attempts: 10,
        };
        hook.validate().unwrap();
        let fanout = EventFanout::default();
        let _hooks = start(std::slice::from_ref(&hook), &fanout).unwrap();
        let (a, b) = (event(EventKind::LineCrossed, 1000), event(EventKind::LineCrossed, 2000));
        let want = [a.id.clone(), b.id.clone()];
        fanout.publish(a, None);
        fanout.publish(event(EventKind::ZoneEnter, 1500), None);
        fanout.publish(b, None);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let got: Received = Arc::default();
        let _receiver = receiver(port, got.clone()).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while got.lock().len() < 3 {
            assert!(std::time::Instant::now() < deadline, "deliveries so far: {}", got.lock().len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = got.lock();
        // The first event: refused connections, then a 500, then taken; the second once.
        assert_eq!(got.len(), 3, "the zone event is not for this webhook");
        let ids: Vec<&str> = got.iter().map(|(h, _)| h["x-sightline-delivery"].to_str().unwrap()).collect();
        assert_eq!(ids, vec![want[0].as_str(), want[0].as_str(), want[1].as_str()]);
        let attempts: Vec<u32> = got.iter().map(|(h, _)| h["x-sightline-attempt"].to_str().unwrap().parse().unwrap()).collect();
        assert!(attempts[0] >= 2 && attempts[1] == attempts[0] + 1 && attempts[2] == 1, "{attempts:?}");
        for (headers, body) in got.iter() {
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(headers["x-sightline-event"], "line_crossed");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["id"].as_str(), headers["x-sightline-delivery"].to_str().ok());
            // The receiver's check: HMAC over "<t>.<body>" with the shared secret.
            let sig = headers["x-sightline-signature"].to_str().unwrap();
            let t: u64 = sig.strip_prefix("t=").and_then(|s| s.split(',').next()).unwrap().parse().unwrap();
            assert_eq!(sig, signature("s3cret", t, body));
            let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            let hex = sig.split("v1=").nth(1).unwrap();
            let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            mac.verify_slice(&bytes).expect("the signature verifies");
        }
    }

    #[test]
    fn bad_webhook_config_is_refused() {
        let ok = WebhookConfig {
            url: "https://hooks.example/x".into(),
            secret: None,
            streams: vec![],
            kinds: vec![],
            timeout: Duration::from_secs(5),
            max_attempts: 3,
        };
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut WebhookConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.url = "ftp://x/y".into()).contains("http"));
        assert!(!bad(|c| c.url = "mqtt://u:pw@x/y".into()).contains("pw"), "no password in the error");
        assert!(bad(|c| c.kinds = vec!["zone_entered".into()]).contains("zone_entered"));
        assert!(bad(|c| c.max_attempts = 0).contains("max_attempts"));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS) && retryable(StatusCode::BAD_GATEWAY) && !retryable(StatusCode::BAD_REQUEST));
    }
}
