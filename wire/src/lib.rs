//! The gateway <-> detection worker protocol, sans-IO, and the frame ring that carries the
//! pictures ([`fdpass`]).
//!
//! A stream socket carries frames: `u32` big-endian length of what follows, `u8` protocol
//! version ([`VERSION`]), `u8` message kind, then a JSON body.
//!
//! Two transports carry the same messages:
//! - **Local** (a Unix socket): pictures never travel on the socket. The gateway sends one
//!   memfd (shared memory) with the [`Message::Ring`] message (SCM_RIGHTS, see
//!   [`crate::fdpass`]) and each [`Message::Frame`] names the slot holding the I420 picture.
//! - **Remote** (TCP, or TLS over TCP): the worker's [`Hello`] carries the gateway's worker
//!   token, and each picture travels inline in a [`Message::Picture`] (kind 8), whose body is
//!   `u32` big-endian length of a JSON header ([`PictureHeader`]), the header, then the
//!   picture's bytes (a baseline JPEG, or packed I420). A gateway that refuses a worker says
//!   why in a [`Message::Refused`] and closes the connection.
//!
//! [`decode`] (what the gateway reads: small JSON messages only) and [`decode_from_gateway`]
//! (what a worker reads: pictures up to [`MAX_PICTURE`] too) take a buffer and return a
//! message and the bytes it used, `Ok(None)` when more bytes are needed, or an error for
//! garbage (the caller closes that connection).

pub mod fdpass;
pub mod job;

pub use media::FrameMeta;
use serde::{Deserialize, Serialize};

/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Largest frame body accepted, bytes: messages are small JSON; pictures go through memfd
/// or in [`Message::Picture`].
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest [`Message::Picture`] frame a worker accepts, bytes: 4096x2160 I420 (13.3 MB) and
/// its header fit.
pub const MAX_PICTURE: usize = 16 * 1024 * 1024;
/// Bytes of the frame header: length (4), version (1), kind (1).
const HEADER: usize = 6;

/// Worker -> gateway, first message: what the worker runs. Its `Debug` output leaves the
/// token out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Model file name.
    pub model: String,
    /// Model input side, px.
    pub input_size: u32,
    /// Class names (index = class id).
    pub names: Vec<String>,
    /// Execution provider in use (`cpu`, `cuda`, …).
    pub provider: String,
    /// Worker process id.
    pub pid: u32,
    /// The worker's host name (remote workers; status and logs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Frames in flight the worker can take at once. Advisory: the gateway sends one at a
    /// time (newest picture wins), whatever it says.
    #[serde(default = "one")]
    pub capacity: u32,
    /// The gateway's worker token (`detect.remote.token`); required over TCP, unused on the
    /// Unix socket (file permissions guard it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn one() -> u32 {
    1
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("model", &self.model)
            .field("input_size", &self.input_size)
            .field("names", &self.names)
            .field("provider", &self.provider)
            .field("pid", &self.pid)
            .field("host", &self.host)
            .field("capacity", &self.capacity)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for Hello {
    /// An empty announcement taking one frame at a time (fill in what the worker runs).
    fn default() -> Hello {
        Hello {
            model: String::new(),
            input_size: 0,
            names: Vec::new(),
            provider: String::new(),
            pid: 0,
            host: String::new(),
            capacity: 1,
            token: None,
        }
    }
}

/// How a [`Message::Picture`] carries its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// A baseline JPEG of the picture's YUV 4:2:0 planes (no colour conversion either way;
    /// the range is [`PictureHeader::full_range`]'s).
    Jpeg,
    /// Packed I420: Y (stride = width), then U, then V (stride = width / 2 rounded up).
    I420,
}

/// Gateway -> remote worker: the header of a picture carried inline ([`Message::Picture`]).
/// On the wire the frame's identity is flat, as in [`Frame`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PictureHeader {
    /// Which picture (its size is the picture's size in px).
    #[serde(flatten)]
    pub meta: FrameMeta,
    /// Full-range YUV (else limited, 16..235).
    pub full_range: bool,
    /// What the bytes after the header are.
    pub encoding: Encoding,
}

/// Gateway -> worker: the worker is not served (a wrong token), and why. The gateway closes
/// the connection after it; a worker should not retry with the same settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why, for the worker's log.
    pub reason: String,
}

/// Gateway -> worker: the shared-memory ring (its memfd travels with this message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// Number of slots.
    pub slots: u32,
    /// Bytes per slot.
    pub slot_bytes: u64,
}

/// Gateway -> worker: run the model on the picture in `slot`. On the wire the frame's
/// identity is flat: `stream`, `seq`, `rtp_timestamp`, `capture_ms`, `width`, `height`, then
/// the fields below.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Which picture (its size is the picture's size in px).
    #[serde(flatten)]
    pub meta: FrameMeta,
    /// Luma stride, bytes.
    pub y_stride: u32,
    /// Chroma stride, bytes.
    pub uv_stride: u32,
    /// Full-range YUV (else limited, 16..235).
    pub full_range: bool,
    /// Ring slot holding Y, then U, then V.
    pub slot: u32,
}

impl Frame {
    /// Bytes the picture occupies in its slot.
    pub fn picture_bytes(&self) -> u64 {
        let rows = u64::from(self.meta.height);
        u64::from(self.y_stride) * rows + 2 * u64::from(self.uv_stride) * rows.div_ceil(2)
    }
}

/// One detected box in source pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireBox {
    /// Left edge, px.
    pub x: f32,
    /// Top edge, px.
    pub y: f32,
    /// Width, px.
    pub w: f32,
    /// Height, px.
    pub h: f32,
    /// Class index.
    pub class_id: u32,
    /// Confidence 0..=1.
    pub score: f32,
}

/// Worker -> gateway: the answer for one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    /// Stream id of the frame.
    pub stream: media::StreamId,
    /// Its sequence number.
    pub seq: u64,
    /// Boxes after NMS, source pixels.
    pub boxes: Vec<WireBox>,
    /// Pre-processing (colour conversion, letterbox), ms.
    pub pre_ms: f32,
    /// Inference, ms.
    pub infer_ms: f32,
    /// Post-processing (decode, NMS), ms.
    pub post_ms: f32,
    /// Decoding an inline JPEG ([`Message::Picture`]), ms; part of `pre_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_ms: Option<f32>,
}

/// Worker -> gateway: a frame could not be processed (the worker lives on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The frame, if the error belongs to one.
    pub seq: Option<u64>,
    /// What went wrong.
    pub message: String,
}

/// Either way: a heartbeat. The gateway sends `Ping` to an idle worker; the worker answers
/// `Pong` with the same nonce (a worker busy inferring answers after its frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Echoed back unchanged.
    pub nonce: u64,
}

/// Every message. The kind byte on the wire is [`Message::kind`].
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Kind 1.
    Hello(Hello),
    /// Kind 2.
    Ring(Ring),
    /// Kind 3.
    Frame(Frame),
    /// Kind 4.
    Detections(Detections),
    /// Kind 5.
    Failure(Failure),
    /// Kind 6, gateway -> worker.
    Ping(Heartbeat),
    /// Kind 7, worker -> gateway.
    Pong(Heartbeat),
    /// Kind 8, gateway -> remote worker: a picture and its bytes.
    Picture(PictureHeader, Vec<u8>),
    /// Kind 9, gateway -> worker: not served.
    Refused(Refusal),
}

impl Message {
    /// The kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => 1,
            Message::Ring(_) => 2,
            Message::Frame(_) => 3,
            Message::Detections(_) => 4,
            Message::Failure(_) => 5,
            Message::Ping(_) => 6,
            Message::Pong(_) => 7,
            Message::Picture(..) => KIND_PICTURE,
            Message::Refused(_) => 9,
        }
    }
}

/// Garbage on the socket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A frame longer than [`MAX_FRAME`] ([`MAX_PICTURE`] for a picture a worker reads).
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A frame too short to hold version and kind.
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    /// Another protocol version.
    #[error("protocol version {0}, expected {VERSION}")]
    Version(u8),
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// A body that is not the message's JSON.
    #[error("bad body for kind {kind}: {detail}")]
    Body {
        /// The kind.
        kind: u8,
        /// serde's message.
        detail: String,
    },
}

/// Encodes one message as a frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    if let Message::Picture(header, bytes) = msg {
        return encode_picture(header, bytes);
    }
    let body = match msg {
        Message::Hello(m) => serde_json::to_vec(m),
        Message::Ring(m) => serde_json::to_vec(m),
        Message::Frame(m) => serde_json::to_vec(m),
        Message::Detections(m) => serde_json::to_vec(m),
        Message::Failure(m) => serde_json::to_vec(m),
        Message::Ping(m) | Message::Pong(m) => serde_json::to_vec(m),
        Message::Refused(m) => serde_json::to_vec(m),
        Message::Picture(..) => unreachable!("encoded above"),
    }
    .expect("wire messages serialize");
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
    out.push(VERSION);
    out.push(msg.kind());
    out.extend_from_slice(&body);
    out
}

/// The kind byte of [`Message::Picture`].
const KIND_PICTURE: u8 = 8;

/// The frame of a [`Message::Picture`] with `header` and the picture's `bytes` (JPEG or
/// packed I420), written straight from the borrowed bytes: the one copy of a picture on its
/// way to a remote worker. The same bytes as [`encode`] of the message.
pub fn encode_picture(header: &PictureHeader, bytes: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("wire messages serialize");
    let mut out = Vec::with_capacity(HEADER + 4 + json.len() + bytes.len());
    out.extend_from_slice(&((2 + 4 + json.len() + bytes.len()) as u32).to_be_bytes());
    out.extend([VERSION, KIND_PICTURE]);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(bytes);
    out
}

/// Decodes the first frame in `buf`: `Ok(Some((message, consumed)))`, `Ok(None)` if the
/// frame is incomplete, or the error that makes the stream unusable. Every frame is at most
/// [`MAX_FRAME`] bytes: what a gateway reads from workers.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    decode_limited(buf, MAX_FRAME)
}

/// [`decode`] for a worker: a [`Message::Picture`] frame may be up to [`MAX_PICTURE`] bytes.
pub fn decode_from_gateway(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    decode_limited(buf, MAX_PICTURE)
}

fn decode_limited(buf: &[u8], max_picture: usize) -> Result<Option<(Message, usize)>, WireError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        // Only a picture may be larger, and only up to the reader's limit: refuse the rest
        // before buffering them.
        match (buf.get(4), buf.get(5)) {
            (Some(&version), _) if version != VERSION => return Err(WireError::Version(version)),
            (_, None) if len <= max_picture => return Ok(None),
            (_, Some(&8)) if len <= max_picture => {}
            _ => return Err(WireError::TooLarge(len)),
        }
    }
    if len < 2 {
        return Err(WireError::TooShort(len));
    }
    let Some(frame) = buf.get(4..4 + len) else { return Ok(None) };
    if frame[0] != VERSION {
        return Err(WireError::Version(frame[0]));
    }
    let kind = frame[1];
    let body = &frame[2..];
    let bad = |e: serde_json::Error| WireError::Body { kind, detail: e.to_string() };
    let msg = match kind {
        1 => Message::Hello(serde_json::from_slice(body).map_err(bad)?),
        2 => Message::Ring(serde_json::from_slice(body).map_err(bad)?),
        3 => Message::Frame(serde_json::from_slice(body).map_err(bad)?),
        4 => Message::Detections(finite(serde_json::from_slice(body).map_err(bad)?)?),
        5 => Message::Failure(serde_json::from_slice(body).map_err(bad)?),
        6 => Message::Ping(serde_json::from_slice(body).map_err(bad)?),
        7 => Message::Pong(serde_json::from_slice(body).map_err(bad)?),
        8 => {
            let Some(json_len) = body.get(..4) else { return Err(WireError::TooShort(len)) };
            let json_len = u32::from_be_bytes([json_len[0], json_len[1], json_len[2], json_len[3]]) as usize;
            let Some(json) = body.get(4..).and_then(|rest| rest.get(..json_len)) else {
                return Err(WireError::Body { kind, detail: format!("header of {json_len} bytes past the frame's end") });
            };
            let header: PictureHeader = serde_json::from_slice(json).map_err(bad)?;
            Message::Picture(header, body[4 + json_len..].to_vec())
        }
        9 => Message::Refused(serde_json::from_slice(body).map_err(bad)?),
        other => return Err(WireError::Kind(other)),
    };
    Ok(Some((msg, 4 + len)))
}

/// Refuses detections with a number beyond `f32`'s range: serde reads `1e39` as infinity,
/// which [`encode`] would write as `null`, a frame no decoder accepts.
fn finite(d: Detections) -> Result<Detections, WireError> {
    let boxes = d.boxes.iter().flat_map(|b| [b.x, b.y, b.w, b.h, b.score]);
    if boxes.chain([d.pre_ms, d.infer_ms, d.post_ms, d.decode_ms.unwrap_or(0.0)]).all(f32::is_finite) {
        Ok(d)
    } else {
        Err(WireError::Body { kind: 4, detail: "a number beyond the f32 range".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            meta: FrameMeta {
                stream: "cam".into(),
                seq: 7,
                rtp_timestamp: media::RtpTimestamp::new(3600),
                capture_ms: 1,
                width: 1280,
                height: 720,
            },
            y_stride: 1280,
            uv_stride: 640,
            full_range: false,
            slot: 1,
        }
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            Message::Hello(Hello {
                model: "m.onnx".into(),
                input_size: 640,
                names: vec!["a".into()],
                provider: "cpu".into(),
                pid: 9,
                host: "gpu1".into(),
                capacity: 1,
                token: Some("t".into()),
            }),
            Message::Ring(Ring { slots: 2, slot_bytes: 1 << 20 }),
            Message::Frame(frame()),
            Message::Detections(Detections {
                stream: "cam".into(),
                seq: 7,
                boxes: vec![WireBox { x: 1.0, y: 2.0, w: 3.0, h: 4.0, class_id: 2, score: 0.5 }],
                pre_ms: 1.0,
                infer_ms: 2.0,
                post_ms: 0.5,
                decode_ms: Some(1.5),
            }),
            Message::Failure(Failure { seq: None, message: "x".into() }),
            Message::Ping(Heartbeat { nonce: 3 }),
            Message::Pong(Heartbeat { nonce: 3 }),
            Message::Picture(PictureHeader { meta: frame().meta, full_range: true, encoding: Encoding::Jpeg }, vec![0xff, 0xd8, 0, 1]),
            Message::Refused(Refusal { reason: "wrong token".into() }),
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(encode(m));
        }
        let mut at = 0;
        for m in &msgs {
            let (got, used) = decode_from_gateway(&stream[at..]).unwrap().unwrap();
            assert_eq!(&got, m);
            at += used;
        }
        assert_eq!(at, stream.len());
        assert_eq!(frame().picture_bytes(), 1280 * 720 * 3 / 2);
    }

    #[test]
    fn frame_identity_is_flat_on_the_wire() {
        let bytes = encode(&Message::Frame(frame()));
        let body: serde_json::Value = serde_json::from_slice(&bytes[HEADER..]).unwrap();
        assert_eq!((body["stream"].as_str(), body["seq"].as_u64(), body["rtp_timestamp"].as_u64()), (Some("cam"), Some(7), Some(3600)));
        assert_eq!((body["width"].as_u64(), body["y_stride"].as_u64(), body["slot"].as_u64()), (Some(1280), Some(1280), Some(1)));
    }

    #[test]
    fn a_hello_without_the_remote_fields_reads_as_a_local_worker() {
        let body = br#"{"model":"m.onnx","input_size":640,"names":[],"provider":"cpu","pid":9}"#;
        let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        frame.extend([VERSION, 1]);
        frame.extend(body);
        let Message::Hello(hello) = decode(&frame).unwrap().unwrap().0 else { panic!("a Hello") };
        assert_eq!((hello.host.as_str(), hello.capacity, hello.token), ("", 1, None));
    }

    #[test]
    fn only_a_worker_reads_large_pictures() {
        let picture = Message::Picture(
            PictureHeader { meta: frame().meta, full_range: false, encoding: Encoding::I420 },
            vec![7; 1280 * 720 * 3 / 2],
        );
        let bytes = encode(&picture);
        assert!(matches!(decode(&bytes), Err(WireError::TooLarge(_))), "the gateway refuses a worker's large frame");
        assert!(matches!(decode(&bytes[..5]), Err(WireError::TooLarge(_))), "even before its kind arrives");
        let mut other_version = bytes[..6].to_vec();
        other_version[4] = 9;
        assert_eq!(decode_from_gateway(&other_version), Err(WireError::Version(9)), "before buffering the picture");
        assert_eq!(decode_from_gateway(&bytes).unwrap().unwrap(), (picture, bytes.len()));
        for cut in [0, 4, 5, 6, 100, bytes.len() - 1] {
            assert_eq!(decode_from_gateway(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        // Larger than MAX_PICTURE, or large and not a picture: refused on the header alone.
        let mut huge = ((MAX_PICTURE + 1) as u32).to_be_bytes().to_vec();
        huge.extend([VERSION, 8]);
        assert!(matches!(decode_from_gateway(&huge), Err(WireError::TooLarge(_))));
        let mut big_hello = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big_hello.extend([VERSION, 1]);
        assert!(matches!(decode_from_gateway(&big_hello), Err(WireError::TooLarge(_))));
        // A header length past the frame's end.
        let mut lying = 10u32.to_be_bytes().to_vec();
        lying.extend([VERSION, 8, 0, 0, 0, 200, b'{', b'}', 0, 0]);
        assert!(matches!(decode_from_gateway(&lying), Err(WireError::Body { kind: 8, .. })));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let bytes = encode(&Message::Frame(frame()));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn numbers_beyond_f32_are_refused() {
        // The wire_decode fuzz target's round trip: `1e39` decoded as an infinite f32, which
        // encoded as `null`, which no longer decoded.
        let frame = |x: &str| {
            let body = format!(
                r#"{{"stream":"t","seq":7,"boxes":[{{"x":{x},"y":0,"w":1,"h":1,"class_id":0,"score":0.5}}],"pre_ms":1,"infer_ms":1,"post_ms":1}}"#
            );
            let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
            frame.extend([VERSION, 4]);
            frame.extend(body.as_bytes());
            frame
        };
        assert!(matches!(decode(&frame("1e39")), Err(WireError::Body { kind: 4, .. })));
        let (msg, _) = decode(&frame("3e38")).unwrap().unwrap();
        assert_eq!(decode(&encode(&msg)).unwrap().unwrap().0, msg);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 1, 1]), Err(WireError::TooLarge(0xffff_ffff)));
        assert_eq!(decode_from_gateway(&[0, 0, 0, 3, 1, 8, 0]), Err(WireError::TooShort(3)));
        assert_eq!(decode(&[0, 0, 0, 1, 1]), Err(WireError::TooShort(1)));
        assert_eq!(decode(&[0, 0, 0, 2, 9, 1]), Err(WireError::Version(9)));
        assert_eq!(decode(&[0, 0, 0, 2, 1, 77]), Err(WireError::Kind(77)));
        assert!(matches!(decode(b"\0\0\0\x05\x01\x03{x}"), Err(WireError::Body { kind: 3, .. })));
        // A deterministic pseudo-random byte soup never panics.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let soup: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = decode(&soup);
            let _ = decode_from_gateway(&soup);
        }
    }
}
