//! Analytics events to an MQTT broker (issue #13, `[mqtt]`): every event this replica makes is
//! published as its JSON on `{prefix}/{stream}/events` with QoS 1 (at least once; the event id
//! lets subscribers drop a repeat). `rumqttc` keeps the connection and reconnects; while the
//! broker is down, events wait in its bounded queue and the newest are dropped past it
//! (counted in `sightline_mqtt_errors_total`).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::config::MqttConfig;
use crate::core::events::EventFanout;
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
            match client.try_publish(topic, QoS::AtLeastOnce, false, event.json().as_bytes().to_vec()) {
                Ok(()) => metrics::counter!("sightline_mqtt_published_total").increment(1),
                Err(_) => metrics::counter!("sightline_mqtt_errors_total").increment(1),
            }
        }
    });
    Some(Mqtt { _publish: publish, _connection: conn })
}
