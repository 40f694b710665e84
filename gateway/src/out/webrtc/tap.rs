//! A stream tap: one task per (event loop, stream) that follows the stream for all of the
//! loop's sessions of it: live access units, health changes and detection messages (as
//! data-channel text), and the end (stop, shutdown). An audio tap follows the stream's audio
//! (the camera's or the transcoder's) for the loop's sessions that negotiated it.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use signaling::peer::PeerAudio;

use crate::core::StreamId;
use crate::core::audio::AudioFrame;
use crate::core::detections::{Detections, next_message};
use crate::core::frame::AccessUnit;
use crate::core::shutdown::StopReason;
use crate::stream::StreamRuntime;
use crate::stream::audio::AudioHub;
use crate::stream::hub::Hub;

/// Which sessions a tap serves: those of a stream that get its video as the camera sends it,
/// or those that get it transcoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TapKey {
    /// The stream.
    pub(super) stream: StreamId,
    /// Whether the sessions get the transcoder's video.
    pub(super) transcoded: bool,
}

/// Which sessions an audio tap serves: those of a stream that negotiated its audio codec.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct AudioTapKey {
    /// The stream.
    pub(super) stream: StreamId,
    /// The codec the sessions get.
    pub(super) codec: PeerAudio,
}

/// What a tap sends to its loop.
#[derive(Debug)]
pub(super) enum TapMessage {
    /// A live access unit.
    Unit(TapKey, Arc<AccessUnit>),
    /// Data-channel text for every session of the tap (`state`, `detections`).
    Text(TapKey, Arc<str>),
    /// An audio frame for the sessions of an audio tap.
    Audio(AudioTapKey, Arc<AudioFrame>),
    /// The tap's sessions end.
    Stopped(TapKey, StopReason),
}

/// The data channel's `state` message.
pub(super) fn state_message(stream: &StreamRuntime) -> String {
    json!({"type": "state", "health": stream.health_view()}).to_string()
}

/// Follows `stream` until it ends (or the loop is gone), its units from `video` (the camera's
/// hub or the transcoder's), sending to `tx`.
pub(super) async fn run(
    key: TapKey,
    stream: Arc<StreamRuntime>,
    video: Arc<Hub>,
    detections: Option<broadcast::Receiver<Arc<Detections>>>,
    tx: mpsc::Sender<TapMessage>,
) {
    // From now on: the receiver was made when the session's offer came (before the camera's
    // first keyframe was waited for), and what queued since is stale.
    let mut detections = detections.map(|rx| rx.resubscribe());
    let mut units = video.subscribe_live();
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

/// Follows `audio` (the camera's or the transcoder's) until the loop is gone.
pub(super) async fn run_audio(key: AudioTapKey, audio: Arc<AudioHub>, tx: mpsc::Sender<TapMessage>) {
    let mut frames = audio.subscribe();
    while let Some(frame) = frames.next().await {
        if tx.send(TapMessage::Audio(key.clone(), frame)).await.is_err() {
            return;
        }
    }
}
