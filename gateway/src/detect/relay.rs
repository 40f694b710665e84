//! Detection messages between replicas. The replica holding a stream's detection lease
//! publishes each message through the cluster store (`sightline:detections:{id}`, JSON);
//! every other replica delivers it to its own viewers, renamed to its own copy of the frame:
//! its RTSP session numbers frames (`seq`) and stamps them (`rtp_timestamp`) differently, so
//! the frame is found by capture time (within [`RELAY_MATCH_MS`]; the camera's sender reports
//! give every replica the same capture times). Unmatched messages are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use super::service::Detect;
use crate::core::detections::Detections;
use crate::state::ClusterStore;
use crate::stream::Streams;

/// Messages queued for the relay before they are dropped (Redis slow or down).
const RELAY_QUEUE: usize = 256;
/// Largest capture-time difference between two replicas' copies of one frame, ms (under
/// half a frame interval at 30 fps).
const RELAY_MATCH_MS: u64 = 15;

/// Starts publishing this replica's messages through `cluster`, in order; returns the queue.
pub(super) fn spawn_out(cluster: Arc<dyn ClusterStore>) -> mpsc::Sender<Arc<Detections>> {
    let (tx, mut rx) = mpsc::channel::<Arc<Detections>>(RELAY_QUEUE);
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let stream = &message.frame.stream;
            if let Err(e) = cluster.publish_detections(stream, message.json()).await {
                debug!(%stream, error = %e, "cannot relay detections");
            }
        }
    });
    tx
}

/// Delivers other replicas' messages to this replica's viewers. See the module docs.
pub(super) async fn relay_in(detect: Arc<Detect>, streams: Arc<Streams>, mut relayed: broadcast::Receiver<(String, Arc<str>)>) {
    loop {
        let (stream, json) = match relayed.recv().await {
            Ok(m) => m,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (Some(rt), Some(here)) = (streams.get(&stream), detect.runs_here(&stream)) else { continue };
        if here.load(Ordering::Relaxed) {
            continue;
        }
        let message: Detections = match serde_json::from_str(&json) {
            Ok(m) => m,
            Err(e) => {
                warn!(stream, error = %e, "ignoring a malformed relayed detection message");
                continue;
            }
        };
        detect.follow_relayed(&message);
        let Some((seq, rtp_timestamp)) = rt.hub.unit_near(message.frame.capture_ms, RELAY_MATCH_MS) else {
            metrics::counter!("sightline_detect_relay_unmatched_total", "stream" => stream).increment(1);
            continue;
        };
        metrics::counter!("sightline_detect_relayed_total", "stream" => stream).increment(1);
        detect.fanout.publish(Arc::new(message.renamed(seq, rtp_timestamp)));
    }
}
