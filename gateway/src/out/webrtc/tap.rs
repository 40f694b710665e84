//! A stream tap: one task per (event loop, stream) that follows the stream for all of the
//! loop's sessions of it: live access units, health changes and detection messages (as
//! data-channel text), and the end (stop, shutdown).

use std::sync::Arc;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::core::StreamId;
use crate::core::detections::{Detections, next_message};
use crate::core::frame::AccessUnit;
use crate::core::shutdown::StopReason;
use crate::stream::StreamRuntime;

/// What a tap sends to its loop.
#[derive(Debug)]
pub(super) enum TapMessage {
    /// A live access unit.
    Unit(StreamId, Arc<AccessUnit>),
    /// Data-channel text for every session of the stream (`state`, `detections`).
    Text(StreamId, Arc<str>),
    /// The stream's sessions end.
    Stopped(StreamId, StopReason),
}

/// The data channel's `state` message.
pub(super) fn state_message(stream: &StreamRuntime) -> String {
    json!({"type": "state", "health": stream.health_view()}).to_string()
}

/// Follows `stream` until it ends (or the loop is gone), sending to `tx`.
pub(super) async fn run(
    stream: Arc<StreamRuntime>,
    detections: Option<broadcast::Receiver<Arc<Detections>>>,
    tx: mpsc::Sender<TapMessage>,
) {
    let key = stream.id.clone();
    // From now on: the receiver was made when the session's offer came (before the camera's
    // first keyframe was waited for), and what queued since is stale.
    let mut detections = detections.map(|rx| rx.resubscribe());
    let mut units = stream.hub.subscribe_live();
    let mut health = stream.watch_health();
    health.mark_unchanged();
    // Seen from now: the stream may have stopped while the session was being set up.
    let mut end = stream.end_watch(None);
    loop {
        let message = tokio::select! {
            biased;
            reason = end.ended() => {
                let _ = tx.send(TapMessage::Stopped(key.clone(), reason)).await;
                return;
            }
            au = units.next() => match au {
                Some(au) => TapMessage::Unit(key.clone(), au),
                None => return,
            },
            detection = next_message(&mut detections), if detections.is_some() => match detection {
                Ok(d) => TapMessage::Text(key.clone(), d.json().clone()),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    detections = None;
                    continue;
                }
            },
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
                health.borrow_and_update();
                TapMessage::Text(key.clone(), state_message(&stream).into())
            }
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}
