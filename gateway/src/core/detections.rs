//! Detection messages: what viewers receive per inferred frame, on the WebRTC data channel
//! and as SSE `event: detections` (public contract, DESIGN.md), and the per-stream fan-out
//! that carries them as `Arc<Detections>` from whoever produced them (a worker, or the
//! replica holding the stream's detection lease) to every viewer.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use media::{FrameMeta, RtpTimestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Detection messages queued per subscriber before it skips to the newest.
const OUTPUT_QUEUE: usize = 16;

/// One box, normalised to 0..1 of the source frame.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NormalizedBox {
    /// Left edge, 0..1 of the width.
    pub x: f32,
    /// Top edge, 0..1 of the height.
    pub y: f32,
    /// Width, 0..1.
    pub w: f32,
    /// Height, 0..1.
    pub h: f32,
    /// Class index.
    pub class_id: u32,
    /// Class name (the model's `names`, or the index when it has none).
    pub label: String,
    /// Confidence 0..1.
    pub score: f32,
    /// The object's track id (stable while the object is tracked; ids start at 1 per stream
    /// and detection holder); `null` for a box no confirmed track took (a new object's first
    /// sighting).
    #[serde(default)]
    pub track_id: Option<u64>,
    /// The name of the model that found it (`detect.name` or a `[[detect.models]]` name).
    #[serde(default)]
    pub model: String,
}

/// The message's `"type"`: the data channel carries other kinds too.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Detections,
}

/// The boxes found on one frame. JSON: `{"type":"detections","stream","seq","rtp_timestamp",
/// "capture_ms","width","height","boxes":[{x,y,w,h,class_id,label,score,track_id,model}…],
/// "models":[…],"infer_ms","latency_ms"}`, made once per message by [`Detections::json`]
/// however many viewers send it.
///
/// With several models (`[[detect.models]]`) at their own rates, a frame several of them take
/// gets one message with all their boxes; `models` names the models whose answers it carries
/// (one that found nothing is listed with no boxes), so a player keeps each model's boxes
/// from the last message that lists it. A model that answers more than `detect.merge_wait`
/// after the first one comes in a second message for the same frame carrying all of that
/// frame's boxes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Detections {
    #[serde(rename = "type")]
    kind: Kind,
    /// The frame the boxes belong to.
    #[serde(flatten)]
    pub frame: FrameMeta,
    /// Boxes after NMS.
    pub boxes: Vec<NormalizedBox>,
    /// The models whose answers for this frame the message carries, in configuration order.
    #[serde(default)]
    pub models: Vec<String>,
    /// Model run time, ms (the longest of the models').
    pub infer_ms: f32,
    /// Capture to this message, ms.
    pub latency_ms: f32,
    /// Which numbering the boxes' `track_id`s belong to (the tracker's start, ms; kept when
    /// another replica takes the detection lease over and continues the tracks). Absent
    /// without tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_epoch: Option<u64>,
    #[serde(skip)]
    json: OnceLock<Arc<str>>,
}

impl Detections {
    /// The message for `frame` with the answers of `models`.
    pub fn new(frame: FrameMeta, boxes: Vec<NormalizedBox>, models: Vec<String>, infer_ms: f32, latency_ms: f32) -> Detections {
        Detections { kind: Kind::Detections, frame, boxes, models, infer_ms, latency_ms, track_epoch: None, json: OnceLock::new() }
    }

    /// The same boxes renamed to another copy of the frame (another replica's RTSP session
    /// numbers frames and stamps them with its own sequence and timestamps).
    pub fn renamed(&self, seq: u64, rtp_timestamp: RtpTimestamp) -> Detections {
        let frame = FrameMeta { seq, rtp_timestamp, ..self.frame.clone() };
        Detections {
            track_epoch: self.track_epoch,
            ..Detections::new(frame, self.boxes.clone(), self.models.clone(), self.infer_ms, self.latency_ms)
        }
    }

    /// The JSON text, serialized on first use.
    pub fn json(&self) -> &Arc<str> {
        self.json.get_or_init(|| match serde_json::to_string(self) {
            Ok(s) => s.into(),
            // Unreachable for these field types; an empty object keeps viewers' parsers alive.
            Err(_) => "{}".into(),
        })
    }
}

/// Per-stream fan-out of detection messages. Publishing never waits: a subscriber more than
/// 16 messages behind skips to the newest.
#[derive(Debug, Default)]
pub struct DetectionFanout {
    outputs: Mutex<HashMap<String, broadcast::Sender<Arc<Detections>>>>,
}

impl DetectionFanout {
    /// Detection messages of `stream`, from now on.
    pub fn subscribe(&self, stream: &str) -> broadcast::Receiver<Arc<Detections>> {
        self.outputs.lock().entry(stream.to_owned()).or_insert_with(|| broadcast::channel(OUTPUT_QUEUE).0).subscribe()
    }

    /// Sends a message to its stream's subscribers, if any.
    pub fn publish(&self, message: Arc<Detections>) {
        if let Some(tx) = self.outputs.lock().get(message.frame.stream.as_str()) {
            let _ = tx.send(message);
        }
    }
}

/// The next message of an optional subscription; never resolves when there is none, so it
/// can stand as a `select!` branch for a stream without detection.
pub async fn next_message(rx: &mut Option<broadcast::Receiver<Arc<Detections>>>) -> Result<Arc<Detections>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Detections {
        let frame =
            FrameMeta { stream: "cam".into(), seq: 7, rtp_timestamp: RtpTimestamp::new(3600), capture_ms: 5, width: 640, height: 360 };
        let b = NormalizedBox {
            x: 0.25,
            y: 0.5,
            w: 0.125,
            h: 0.25,
            class_id: 1,
            label: "square".into(),
            score: 0.75,
            track_id: Some(3),
            model: "shapes".into(),
        };
        Detections::new(frame, vec![b], vec!["shapes".into()], 8.0, 20.0)
    }

    #[test]
    fn json_is_the_public_contract_and_round_trips() {
        let m = message();
        let json = m.json().clone();
        assert!(
            json.starts_with(r#"{"type":"detections","stream":"cam","seq":7,"rtp_timestamp":3600,"capture_ms":5,"width":640,"height":360,"boxes":[{"x":0.25"#),
            "{json}"
        );
        assert!(json.ends_with(r#""track_id":3,"model":"shapes"}],"models":["shapes"],"infer_ms":8.0,"latency_ms":20.0}"#), "{json}");
        assert!(Arc::ptr_eq(&json, m.json()), "serialized once");
        let back: Detections = serde_json::from_str(&json).unwrap();
        assert_eq!((back.frame, back.boxes, back.models), (m.frame.clone(), m.boxes.clone(), m.models.clone()));
        assert!(serde_json::from_str::<Detections>(&json.replace("\"detections\"", "\"state\"")).is_err(), "only detection messages");
    }

    #[test]
    fn renaming_keeps_the_boxes_and_drops_the_cached_json() {
        let m = message();
        let _ = m.json();
        let r = m.renamed(99, RtpTimestamp::new(1));
        assert_eq!((r.frame.seq, r.frame.rtp_timestamp.get(), r.frame.capture_ms), (99, 1, 5));
        assert!(r.json().contains("\"seq\":99"));
    }

    #[tokio::test]
    async fn subscribers_get_their_streams_messages() {
        let fanout = DetectionFanout::default();
        let mut cam = fanout.subscribe("cam");
        let mut other = fanout.subscribe("other");
        fanout.publish(Arc::new(message()));
        assert_eq!(cam.recv().await.unwrap().frame.seq, 7);
        assert!(other.try_recv().is_err());
    }
}
