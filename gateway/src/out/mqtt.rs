//! Analytics events to an MQTT broker (issue #13, `[mqtt]`): every event this replica makes is
//! published as its JSON on `{prefix}/{stream}/events` with QoS 1 (at least once; the event id
//! lets subscribers drop a repeat). After each line crossing, the line's counts since this
//! replica started (`{"line","in","out","labels":{label:{"in","out"}}}`) are published,
//! retained, on `{prefix}/{stream}/counts/{line}`, so a new subscriber gets the current ones. `rumqttc` keeps the connection and reconnects; while the
//! broker is down, events wait in its bounded queue and the newest are dropped past it
//! (counted in `sightline_mqtt_errors_total`).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::config::MqttConfig;
use crate::core::events::{AnalyticsEvent, EventFanout};
use crate::core::task::AbortOnDrop;

/// Publishes queued in the client before `publish` waits; ~10 s of a busy scene.
const QUEUE: usize = 1024;
/// Pause after a connection error before the client tries again.
const RETRY: Duration = Duration::from_secs(1);

/// The running publisher; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Mqtt {
    _publish: AbortOnDrop,
    _connection: AbortOnDrop,
}

/// Starts publishing `events` to the configured broker; `None` when `[mqtt]` has no URL.
pub(crate) fn start(config: &MqttConfig, replica_id: &str, events: &Arc<EventFanout>) -> Option<Mqtt> {
    let (host, port) = config.broker().ok().flatten()?;
    let client_id = config.client_id.clone().unwrap_or_else(|| format!("sightline-{replica_id}"));
    let mut options = MqttOptions::new(client_id, host.clone(), port);
    options.set_keep_alive(Duration::from_secs(15));
    let (client, mut connection) = AsyncClient::new(options, QUEUE);
    let prefix = config.prefix().to_owned();
    info!(broker = %format!("{host}:{port}"), %prefix, "publishing analytics events to MQTT");
    let conn = AbortOnDrop::spawn(async move {
        let mut connected = false;
        loop {
            match connection.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    info!("MQTT broker connected");
                }
                Ok(_) => {}
                Err(e) => {
                    if std::mem::replace(&mut connected, false) {
                        warn!(error = %e, "MQTT broker connection lost; retrying");
                    }
                    metrics::counter!("sightline_mqtt_errors_total").increment(1);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
    let mut rx = events.subscribe();
    let publish = AbortOnDrop::spawn(async move {
        let mut counts: HashMap<(String, String), LineCounts> = HashMap::new();
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    metrics::counter!("sightline_mqtt_errors_total").increment(n);
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let topic = format!("{prefix}/{}/events", event.event.stream);
            let mut messages = vec![(topic, event.json().as_bytes().to_vec(), false)];
            if let Some((topic, json)) = count(&mut counts, &prefix, &event) {
                messages.push((topic, json, true));
            }
            for (topic, payload, retain) in messages {
                match client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
                    Ok(()) => metrics::counter!("sightline_mqtt_published_total").increment(1),
                    Err(_) => metrics::counter!("sightline_mqtt_errors_total").increment(1),
                }
            }
        }
    });
    Some(Mqtt { _publish: publish, _connection: conn })
}

/// One line's crossings since this replica started, in and out, also per label.
#[derive(Debug, Default, serde::Serialize)]
struct LineCounts {
    line: String,
    #[serde(rename = "in")]
    inward: u64,
    out: u64,
    labels: BTreeMap<String, InOut>,
}

#[derive(Debug, Default, serde::Serialize)]
struct InOut {
    #[serde(rename = "in")]
    inward: u64,
    out: u64,
}

/// Counts a `line_crossed` event; returns the line's counts topic and JSON (other kinds: none).
fn count(counts: &mut HashMap<(String, String), LineCounts>, prefix: &str, event: &AnalyticsEvent) -> Option<(String, Vec<u8>)> {
    let e = &event.event;
    let (Some(line), Some(direction)) = (&e.line, e.direction) else { return None };
    let c = counts.entry((e.stream.clone(), line.clone())).or_insert_with(|| LineCounts { line: line.clone(), ..LineCounts::default() });
    let per_label = c.labels.entry(e.label.clone()).or_default();
    if direction == "in" {
        c.inward += 1;
        per_label.inward += 1;
    } else {
        c.out += 1;
        per_label.out += 1;
    }
    Some((format!("{prefix}/{}/counts/{line}", e.stream), serde_json::to_vec(c).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::{EventKind, NewEvent};

    fn crossing(label: &str, direction: &'static str, kind: EventKind) -> AnalyticsEvent {
        AnalyticsEvent::new(NewEvent {
            kind,
            stream: "gate".into(),
            label: label.into(),
            track_id: 1,
            line: (kind == EventKind::LineCrossed).then(|| "road".into()),
            direction: (kind == EventKind::LineCrossed).then_some(direction),
            zone: None,
            inside_ms: None,
            ts_ms: 0,
            seq: 0,
            rtp_timestamp: 0,
            bbox: None,
        })
    }

    #[test]
    fn line_counts_add_up_per_direction_and_label() {
        let mut counts = HashMap::new();
        assert!(count(&mut counts, "sightline", &crossing("car", "in", EventKind::ObjectAppeared)).is_none());
        count(&mut counts, "sightline", &crossing("car", "in", EventKind::LineCrossed));
        count(&mut counts, "sightline", &crossing("person", "out", EventKind::LineCrossed));
        let (topic, json) = count(&mut counts, "sightline", &crossing("car", "in", EventKind::LineCrossed)).unwrap();
        assert_eq!(topic, "sightline/gate/counts/road");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"line": "road", "in": 2, "out": 1, "labels": {"car": {"in": 2, "out": 0}, "person": {"in": 0, "out": 1}}})
        );
    }
}
