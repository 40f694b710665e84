//! Offline video jobs (issue #15): the pipeline a job asks for, and the two messages between
//! the gateway and a job worker (`infer-worker job`): a [`Task`] (one chunk of the input,
//! encoded, starting at a keyframe) and its [`ChunkResult`] (the chunk processed and encoded
//! again), each a JSON header and the bytes it describes.
//!
//! On the wire a message is: 4 bytes magic (`SLJT` task, `SLJR` result), `u32` big-endian
//! header length, the JSON header, then the payload the header's unit lengths describe (the
//! access units, Annex B, in decoding order; a result also carries a preview JPEG after them).
//! The same bytes travel in a Redis Streams entry or on a local worker's stdin/stdout (there
//! after a `u32` big-endian length of the whole message).
//!
//! Times are 90 kHz ticks from the start of the input (the RTP video clock).

use serde::{Deserialize, Serialize};

/// Redis keys of job distribution (Redis Streams consumer groups): the gateway adds tasks
/// to [`keys::TASKS`]; workers of group [`keys::GROUP`] read them (`XREADGROUP`), take over
/// those of a worker that stopped refreshing its claim (`XAUTOCLAIM`), push each result to
/// [`keys::result`] (a list with a TTL, `BLPOP`ed by the gateway) and `XACK` + `XDEL` the task.
pub mod keys {
    /// The task stream.
    pub const TASKS: &str = "sightline:jobs:tasks";
    /// The workers' consumer group.
    pub const GROUP: &str = "workers";
    /// Seconds a result waits in Redis for the gateway.
    pub const RESULT_TTL_S: u64 = 3600;

    /// The list a chunk's result is pushed to.
    pub fn result(job: &str, chunk: u32) -> String {
        format!("sightline:jobs:result:{job}:{chunk}")
    }

    /// Set while a job is cancelled: workers drop its tasks.
    pub fn cancelled(job: &str) -> String {
        format!("sightline:jobs:cancelled:{job}")
    }

    /// A worker's heartbeat (JSON, with a TTL).
    pub fn worker(name: &str) -> String {
        format!("sightline:jobs:worker:{name}")
    }

    /// The pattern matching every worker heartbeat.
    pub const WORKERS: &str = "sightline:jobs:worker:*";
}

/// Largest message accepted, bytes (a GOP of 4K video at a high bit rate fits).
pub const MAX_MESSAGE: usize = 256 << 20;
const TASK_MAGIC: &[u8; 4] = b"SLJT";
const RESULT_MAGIC: &[u8; 4] = b"SLJR";

/// One filter of a pipeline, applied to every picture in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Stage {
    /// Gaussian blur of the whole picture, standard deviation `sigma` px.
    Blur {
        /// Standard deviation, px (0.5..=50).
        sigma: f32,
    },
    /// Luma only (BT.601 weights).
    Grayscale,
    /// Canny edges (white on black), hysteresis thresholds on the gradient magnitude.
    Edges {
        /// Lower threshold.
        low: f32,
        /// Upper threshold.
        high: f32,
    },
    /// Frame differencing heat map: where the picture changed since the previous picture.
    Motion,
    /// The YOLO model of the worker: boxes and labels drawn.
    Detect,
    /// Faces found (SeetaFace frontal detector) blurred, Gaussian, standard deviation `sigma` px.
    BlurFaces {
        /// Standard deviation, px (0.5..=50).
        sigma: f32,
    },
    /// Faces found outlined.
    Faces,
    /// The YOLO model's objects followed through the whole video (ByteTrack-style tracker,
    /// in the gateway): each box drawn with its label and track id, ids kept across chunks.
    /// Takes a first pass over the video (decode + model only) before the drawing pass; a
    /// `detect` beside it in the pipeline is the same boxes and is drawn once.
    Track,
}

impl Stage {
    /// The stage's name as a pipeline spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Blur { .. } => "blur",
            Stage::Grayscale => "grayscale",
            Stage::Edges { .. } => "edges",
            Stage::Motion => "motion",
            Stage::Detect => "detect",
            Stage::BlurFaces { .. } => "blur_faces",
            Stage::Faces => "faces",
            Stage::Track => "track",
        }
    }
}

/// The filters a pipeline may name.
pub const FILTERS: [&str; 8] = ["blur", "grayscale", "edges", "motion", "detect", "track", "blur_faces", "faces"];

/// Reads a pipeline: a JSON array of stage names (`["detect", "blur"]`) or objects with a
/// `name` and parameters (`[{"name": "blur", "sigma": 8}]`); a string of comma-separated
/// names is accepted too. Parameters left out take their defaults (blur `sigma` 6; blur_faces
/// `sigma` 12; edges `low` 40, `high` 100).
///
/// Errors: an unknown filter, a parameter out of range, an empty pipeline (more than 8 stages
/// is an error too), with a message naming what is wrong.
pub fn parse_pipeline(value: &serde_json::Value) -> Result<Vec<Stage>, String> {
    use serde_json::Value;
    let items: Vec<Value> = match value {
        Value::Array(items) => items.clone(),
        Value::String(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect(),
        _ => return Err("the pipeline is a JSON array of filters, e.g. [\"blur\", \"detect\"]".into()),
    };
    if items.is_empty() {
        return Err("the pipeline names no filter".into());
    }
    if items.len() > 8 {
        return Err(format!("{} filters in one pipeline; at most 8", items.len()));
    }
    items.iter().map(stage).collect()
}

fn stage(item: &serde_json::Value) -> Result<Stage, String> {
    use serde_json::Value;
    let (name, params) = match item {
        Value::String(name) => (name.as_str(), serde_json::Map::new()),
        Value::Object(map) => match map.get("name") {
            Some(Value::String(name)) => (name.as_str(), map.clone()),
            _ => return Err("a filter object needs a \"name\"".into()),
        },
        other => return Err(format!("a filter is a name or an object, not {other}")),
    };
    let number = |key: &str, default: f32, range: std::ops::RangeInclusive<f32>| -> Result<f32, String> {
        match params.get(key) {
            None => Ok(default),
            Some(v) => match v.as_f64().map(|v| v as f32) {
                Some(v) if range.contains(&v) => Ok(v),
                _ => Err(format!("{name}: {key} must be a number in {}..={}", range.start(), range.end())),
            },
        }
    };
    let known: &[&str] = match name {
        "blur" | "blur_faces" => &["name", "sigma"],
        "edges" => &["name", "low", "high"],
        _ => &["name"],
    };
    if let Some(extra) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("{name}: unknown parameter {extra:?}"));
    }
    Ok(match name {
        "blur" => Stage::Blur { sigma: number("sigma", 6.0, 0.5..=50.0)? },
        "grayscale" | "gray" => Stage::Grayscale,
        "edges" => {
            let (low, high) = (number("low", 40.0, 0.0..=1000.0)?, number("high", 100.0, 0.0..=1000.0)?);
            if low > high {
                return Err(format!("edges: low {low} above high {high}"));
            }
            Stage::Edges { low, high }
        }
        "motion" => Stage::Motion,
        "detect" => Stage::Detect,
        "track" => Stage::Track,
        "blur_faces" => Stage::BlurFaces { sigma: number("sigma", 12.0, 0.5..=50.0)? },
        "faces" => Stage::Faces,
        other => return Err(format!("unknown filter {other:?}; filters: {}", FILTERS.join(", "))),
    })
}

/// The video codec of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 (ITU-T H.264), Annex B.
    H264,
    /// H.265 (ITU-T H.265), Annex B.
    H265,
}

/// One access unit of a message's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Presentation time, 90 kHz ticks from the input's start.
    pub pts: i64,
    /// Whether it is a keyframe (IDR/IRAP).
    pub key: bool,
    /// Its bytes in the payload (Annex B, parameter sets in front of a keyframe).
    pub len: u32,
}

/// Gateway -> worker: process one chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskHeader {
    /// The job's id.
    pub job: String,
    /// The chunk's index in the job (0-based, in the input's order).
    pub chunk: u32,
    /// The input's codec.
    pub codec: Codec,
    /// Picture width, px.
    pub width: u32,
    /// Picture height, px.
    pub height: u32,
    /// The filters, in order.
    pub pipeline: Vec<Stage>,
    /// The access units, decoding order, the first a keyframe.
    pub units: Vec<Unit>,
    /// When the gateway queued it, ms since the Unix epoch (queue wait in the metrics).
    pub queued_ms: u64,
    /// Run the model on every picture and answer its boxes ([`ResultHeader::detections`]),
    /// nothing encoded: the first pass of a `track` pipeline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detect_only: bool,
    /// The boxes a `track` stage draws, per picture (presentation order), with their
    /// track ids: the gateway's tracker over the first pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<FrameBoxes>,
}

/// An object's box on one picture, in its pixels: the model's [`crate::WireBox`] (its fields
/// flat in the JSON) with its class name and, from a `track` pass, its track id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobBox {
    /// Where, which class, how confident.
    #[serde(flatten)]
    pub bbox: crate::WireBox,
    /// The class's name.
    pub label: String,
    /// Its track id (a `track` pass), `None` from the model alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
}

/// The boxes of one picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameBoxes {
    /// The picture's presentation time, 90 kHz ticks.
    pub pts: i64,
    /// Its boxes.
    pub boxes: Vec<JobBox>,
}

/// A task: its header and the access units' bytes, concatenated.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// What to do.
    pub header: TaskHeader,
    /// The units' bytes, in `header.units` order.
    pub payload: Vec<u8>,
}

/// Per-picture timing in a result.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameTiming {
    /// The picture's presentation time, 90 kHz ticks.
    pub pts: i64,
    /// Time spent on it in the filters and the encoder, ms.
    pub ms: f32,
}

/// Worker -> gateway: a chunk processed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultHeader {
    /// The job's id.
    pub job: String,
    /// The chunk's index.
    pub chunk: u32,
    /// Which worker did it (host and process id, or its `--name`).
    pub worker: String,
    /// Whether this worker took the chunk over from one that did not finish it.
    pub retried: bool,
    /// Why the chunk could not be processed (undecodable input, a model error); then the
    /// payload is empty and the job fails with this reason.
    pub error: Option<String>,
    /// The encoded access units (H.264, Annex B, SPS/PPS in front of the keyframe), decoding
    /// order = presentation order (no B-frames).
    pub units: Vec<Unit>,
    /// Output picture size, px.
    pub width: u32,
    /// Output picture height, px.
    pub height: u32,
    /// Per picture, presentation order.
    pub frames: Vec<FrameTiming>,
    /// When the worker took it, ms since the Unix epoch.
    pub started_ms: u64,
    /// Decoding time, ms.
    pub decode_ms: f32,
    /// Filter time, ms.
    pub filter_ms: f32,
    /// Encoding time, ms.
    pub encode_ms: f32,
    /// The whole chunk, ms.
    pub total_ms: f32,
    /// Bytes of the preview JPEG after the units (0: none).
    pub preview_len: u32,
    /// A `detect_only` task's answer: each picture's boxes, presentation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<FrameBoxes>,
}

/// A result: header, the encoded units, then the preview JPEG.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkResult {
    /// What was done.
    pub header: ResultHeader,
    /// The units' bytes then the preview's.
    pub payload: Vec<u8>,
}

impl ChunkResult {
    /// The encoded units' bytes, in `header.units` order.
    pub fn units(&self) -> &[u8] {
        let n: usize = self.header.units.iter().map(|u| u.len as usize).sum();
        &self.payload[..n.min(self.payload.len())]
    }

    /// The preview JPEG (empty when none).
    pub fn preview(&self) -> &[u8] {
        let at = self.units().len();
        &self.payload[at..]
    }
}

/// Why a message cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobWireError {
    /// Not a message of this kind (wrong magic, too short).
    #[error("not a job {0} message")]
    NotMessage(&'static str),
    /// The header is not the JSON expected.
    #[error("malformed header: {0}")]
    Header(String),
    /// The payload is not what the header describes.
    #[error("payload of {got} bytes, header describes {want}")]
    Payload {
        /// Bytes present.
        got: usize,
        /// Bytes the header describes.
        want: usize,
    },
}

fn encode(magic: &[u8; 4], header: &impl Serialize, payload: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + json.len() + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    out
}

fn decode<'a, H: Deserialize<'a>>(magic: &[u8; 4], what: &'static str, bytes: &'a [u8]) -> Result<(H, &'a [u8]), JobWireError> {
    if bytes.len() < 8 || &bytes[..4] != magic {
        return Err(JobWireError::NotMessage(what));
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let json = bytes.get(8..8 + n).ok_or(JobWireError::NotMessage(what))?;
    let header = serde_json::from_slice(json).map_err(|e| JobWireError::Header(e.to_string()))?;
    Ok((header, &bytes[8 + n..]))
}

impl Task {
    /// The task's bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode(TASK_MAGIC, &self.header, &self.payload)
    }

    /// Reads a task; the payload must be exactly the units' bytes.
    pub fn decode(bytes: &[u8]) -> Result<Task, JobWireError> {
        let (header, payload): (TaskHeader, _) = decode(TASK_MAGIC, "task", bytes)?;
        let want: usize = header.units.iter().map(|u| u.len as usize).sum();
        if payload.len() != want {
            return Err(JobWireError::Payload { got: payload.len(), want });
        }
        Ok(Task { header, payload: payload.to_vec() })
    }
}

impl ChunkResult {
    /// The result's bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode(RESULT_MAGIC, &self.header, &self.payload)
    }

    /// Reads a result; the payload must be the units' bytes and the preview.
    pub fn decode(bytes: &[u8]) -> Result<ChunkResult, JobWireError> {
        let (header, payload): (ResultHeader, _) = decode(RESULT_MAGIC, "result", bytes)?;
        let want = header.units.iter().map(|u| u.len as usize).sum::<usize>() + header.preview_len as usize;
        if payload.len() != want {
            return Err(JobWireError::Payload { got: payload.len(), want });
        }
        Ok(ChunkResult { header, payload: payload.to_vec() })
    }
}

/// The most common step between presentation times (sorted; the median of the positive
/// steps), 90 kHz ticks; `None` with fewer than two distinct times.
pub fn frame_step(pts: impl IntoIterator<Item = i64>) -> Option<i64> {
    let mut sorted: Vec<i64> = pts.into_iter().collect();
    sorted.sort_unstable();
    let mut steps: Vec<i64> = sorted.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).collect();
    steps.sort_unstable();
    steps.get(steps.len() / 2).copied()
}

/// Splits a payload into the units' bytes, one slice per unit.
pub fn unit_slices<'a>(units: &'a [Unit], payload: &'a [u8]) -> impl Iterator<Item = (&'a Unit, &'a [u8])> + 'a {
    let mut at = 0usize;
    units.iter().map(move |u| {
        let end = (at + u.len as usize).min(payload.len());
        let s = &payload[at.min(end)..end];
        at = end;
        (u, s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pipelines_by_name_object_or_string() {
        assert_eq!(parse_pipeline(&json!(["blur", "detect"])).unwrap(), vec![Stage::Blur { sigma: 6.0 }, Stage::Detect]);
        assert_eq!(parse_pipeline(&json!("grayscale, edges")).unwrap(), vec![Stage::Grayscale, Stage::Edges { low: 40.0, high: 100.0 }]);
        assert_eq!(parse_pipeline(&json!([{"name": "blur", "sigma": 2}])).unwrap(), vec![Stage::Blur { sigma: 2.0 }]);
        for bad in [
            json!([]),
            json!(["sharpen"]),
            json!([{"name": "blur", "sigma": 0}]),
            json!([{"name": "blur", "radius": 3}]),
            json!(7),
            json!([1]),
        ] {
            assert!(parse_pipeline(&bad).is_err(), "{bad} accepted");
        }
        let e = parse_pipeline(&json!(["detect", "sharpen"])).unwrap_err();
        assert!(e.contains("sharpen") && e.contains("blur"), "{e}");
    }

    #[test]
    fn task_and_result_round_trip_and_garbage_is_an_error() {
        let header = TaskHeader {
            job: "j1".into(),
            chunk: 3,
            codec: Codec::H264,
            width: 320,
            height: 240,
            pipeline: vec![Stage::Motion],
            units: vec![Unit { pts: 0, key: true, len: 3 }, Unit { pts: 3600, key: false, len: 2 }],
            queued_ms: 1,
            detect_only: false,
            tracks: Vec::new(),
        };
        let task = Task { header, payload: vec![1, 2, 3, 4, 5] };
        let bytes = task.encode();
        assert_eq!(Task::decode(&bytes).unwrap(), task);
        // A drawing pass's tracked boxes travel with the task.
        let mut tracked = task.clone();
        tracked.header.pipeline = vec![Stage::Track];
        let bbox = crate::WireBox { x: 1.5, y: 2.0, w: 30.0, h: 40.0, class_id: 2, score: 0.75 };
        let b = JobBox { bbox, label: "bar".into(), track_id: Some(7) };
        tracked.header.tracks = vec![FrameBoxes { pts: 3600, boxes: vec![b] }];
        assert_eq!(Task::decode(&tracked.encode()).unwrap(), tracked);
        let slices: Vec<&[u8]> = unit_slices(&task.header.units, &task.payload).map(|(_, s)| s).collect();
        assert_eq!(slices, vec![&[1, 2, 3][..], &[4, 5][..]]);
        assert_eq!(Task::decode(&bytes[..bytes.len() - 1]), Err(JobWireError::Payload { got: 4, want: 5 }));
        assert_eq!(Task::decode(b"GET / HTTP/1.1"), Err(JobWireError::NotMessage("task")));
        assert!(matches!(ChunkResult::decode(&bytes), Err(JobWireError::NotMessage("result"))));
        let mut garbage = b"SLJT".to_vec();
        garbage.extend_from_slice(&3u32.to_be_bytes());
        garbage.extend_from_slice(b"{x}");
        assert!(matches!(Task::decode(&garbage), Err(JobWireError::Header(_))));
    }
}
