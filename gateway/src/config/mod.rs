//! Configuration: serde structs loaded from TOML, `SIGHTLINE_*` environment variables and the
//! command line, in that order of precedence (later wins), then validated.
//!
//! Every field has a default (documented on the field), so an empty file is a valid config
//! that runs the built-in test camera. Plain serde data: this module depends on no other
//! module of the crate; the sections of other roles live in [`auth`] and [`limits`], and
//! [`redact`] masks the credentials camera and Redis URLs carry.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub mod auth;
pub mod limits;
pub mod redact;
pub mod screen;

pub use auth::{AuthConfig, AuthMode};
pub use limits::LimitsConfig;
use redact::redact_url;
use testcam::TestCamSettings;

/// The whole gateway configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory of the web UI's static files. Default `static`.
    pub static_dir: PathBuf,
    /// This replica's id in the state store (`updated_by`). Default: `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// This replica's base URL as other replicas and clients reach it (WHEP redirects).
    /// Default: `http://<listen>`.
    pub advertise_url: Option<String>,
    /// After SIGTERM, keep accepting requests this long (`/readyz` answers 503, feeds and
    /// WHEP are refused) so load balancers see the replica leave; 0 to 3 s. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Shared state.
    pub state: StateConfig,
    /// The built-in test camera.
    pub testcam: TestCamConfig,
    /// Ingest (camera pull) behaviour shared by all streams.
    pub ingest: IngestConfig,
    /// SSE/MJPEG feed limits.
    pub feeds: FeedsConfig,
    /// WebRTC (WHEP) live view.
    pub webrtc: WebrtcConfig,
    /// Every stream re-served over RTSP.
    pub restream: RestreamConfig,
    /// Object detection in `infer-worker` processes.
    pub detect: DetectConfig,
    /// Control and viewer tokens.
    pub auth: AuthConfig,
    /// Request, viewer and connection limits.
    pub limits: LimitsConfig,
    /// Analytics events to an MQTT broker. Default off.
    pub mqtt: MqttConfig,
    /// Where the gateway keeps its files (the SQLite event database). Created when missing.
    /// Default `data` (relative to the working directory).
    pub data_dir: PathBuf,
    /// Analytics event storage.
    pub events: EventsConfig,
    /// Recording: segment and fragment lengths, retention (streams choose `record`).
    pub recording: RecordingConfig,
    /// Offline video jobs (`POST /api/jobs`).
    pub jobs: JobsConfig,
    /// Each analytics event POSTed to these URLs. Default none.
    pub webhooks: Vec<WebhookConfig>,
    /// The cameras. Default: one stream `testcam` pulling the built-in test camera.
    pub streams: Vec<StreamConfig>,
}

/// `[testcam]`: the built-in test camera, run in-process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestCamConfig {
    /// Run the test camera inside the gateway. Default `true`.
    pub enabled: bool,
    /// RTSP listen address. Default `127.0.0.1:8555` (8554 is the restream's).
    pub listen: SocketAddr,
    /// Picture width, px. Default 1280.
    pub width: u32,
    /// Picture height, px. Default 720.
    pub height: u32,
    /// Frames per second. Default 25.
    pub fps: u32,
    /// Keyframe interval, frames. Default 50.
    pub gop: u32,
    /// Target bitrate, kbit/s. Default 2000.
    pub bitrate_kbps: u32,
}

impl Default for TestCamConfig {
    fn default() -> Self {
        let s = TestCamSettings::default();
        TestCamConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8555)),
            width: s.width,
            height: s.height,
            fps: s.fps,
            gop: s.gop,
            bitrate_kbps: s.bitrate_kbps,
        }
    }
}

impl TestCamConfig {
    /// The picture/encoder part.
    pub fn settings(&self) -> TestCamSettings {
        TestCamSettings { width: self.width, height: self.height, fps: self.fps, gop: self.gop, bitrate_kbps: self.bitrate_kbps }
    }

    /// The URL a stream uses to pull this camera.
    pub fn url(&self) -> String {
        format!("rtsp://{}/testcam", self.listen)
    }
}

/// `[restream]`: every stream re-served at `rtsp://HOST:PORT/{id}` (RFC 2326) for NVRs, VLC,
/// ffmpeg and GStreamer: the camera's video (H.264/H.265) and audio (G.711, AAC) as received,
/// over TCP (interleaved) or UDP, from the gateway's one camera connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RestreamConfig {
    /// Serve RTSP. Default `true`.
    pub enabled: bool,
    /// RTSP listen address (TCP). `[::]:PORT` takes IPv4 clients too. Default
    /// `127.0.0.1:8554`.
    pub listen: SocketAddr,
    /// UDP port RTP goes out from (RTCP from the next one; RFC 3550 §11: even). `0`: any free
    /// pair, chosen at start. Default 8000 (8001 for RTCP), as MediaMTX.
    pub udp_port: u16,
    /// How other replicas reach this restream (`rtsp://host:port`), for streams with
    /// `pull = "one_per_cluster"`. Default: `rtsp://{listen}` with the port bound, the host of
    /// `advertise_url` when `listen` is a wildcard address.
    pub advertise: Option<String>,
}

impl Default for RestreamConfig {
    fn default() -> Self {
        RestreamConfig { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 8554)), udp_port: 8000, advertise: None }
    }
}

impl RestreamConfig {
    /// Checks `udp_port` (even, so RTCP has the next one).
    pub fn validate(&self) -> Result<(), String> {
        if self.udp_port % 2 == 1 {
            return Err(format!("restream.udp_port = {} must be even (RTCP goes on the next port)", self.udp_port));
        }
        if let Some(a) = &self.advertise
            && !a.starts_with("rtsp://")
        {
            return Err(format!("restream.advertise = {a:?} must be rtsp://host:port"));
        }
        Ok(())
    }
}

/// `[state]`: where start/stop state lives.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `redis://[user:password@]host:port/db`: share state with other replicas through Redis.
    /// Default none: in-memory state for one process.
    pub redis_url: Option<String>,
}

/// `[ingest]`: reconnect and stall handling (DESIGN.md step 1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// No access unit for this long counts as a stall and reconnects. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// First reconnect delay; doubles per failure. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest reconnect delay. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            stall_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// `[feeds]`: SSE and MJPEG viewers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeedsConfig {
    /// JPEG frames queued per viewer before that viewer loses frames. Default 4.
    pub viewer_queue: usize,
    /// SSE keep-alive comment interval. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// The longest an SSE frame that went to detection is held back for its detection
    /// message, so the message arrives before its frame and players draw the boxes on their
    /// own picture. `0s` sends frames at once (boxes then arrive after their frame). Default
    /// `250ms`.
    #[serde(with = "humantime_serde")]
    pub detections_wait: Duration,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig { viewer_queue: 4, keepalive: Duration::from_secs(15), detections_wait: Duration::from_millis(250) }
    }
}

/// `[webrtc]`: WHEP viewers (draft-ietf-wish-whep) over one UDP port per event loop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Serve WHEP. Default `true`.
    pub enabled: bool,
    /// Local IP the UDP sockets bind and announce as host candidates. Default: the HTTP
    /// listen IP, or 127.0.0.1 when that is unspecified (0.0.0.0/::): set this to the LAN
    /// address for viewers on other machines. IPv4 or IPv6 (`"::1"`, a global IPv6 address):
    /// the candidates are of that family. `"::"` binds each event loop's socket for both
    /// families (`IPV6_V6ONLY` off, RFC 3493 §5.3) and announces `public_ips`, one address of
    /// each family: IPv4 and IPv6 viewers at once. Replies from a `"::"` socket leave from the
    /// address the kernel routes from: on a host with several addresses of a family, announce
    /// the one its routes use, or bind a specific address.
    pub ip: Option<IpAddr>,
    /// The IPs to announce instead of `ip` (NAT 1:1, or the two families of a `"::"` socket):
    /// at most one per family. Default none.
    pub public_ips: Vec<IpAddr>,
    /// First UDP port; event loop `i` uses `udp_port + i`. 0 picks free ports. Default 8189.
    pub udp_port: u16,
    /// Event loops (threads' worth of sessions, one UDP socket each). 0 = one per core.
    pub loops: usize,
    /// Most WHEP sessions at once; more get 503 with Retry-After. Default 500.
    pub max_sessions: usize,
    /// STUN/TURN servers offered to clients in `Link` headers. Default none.
    pub ice_servers: Vec<IceServerConfig>,
    /// How long a WHEP POST waits for the camera's first keyframe (to learn its H.264
    /// profile) when the stream is not being pulled yet. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub first_frame_timeout: std::time::Duration,
    /// A session whose ICE/DTLS has not connected after this long is dropped. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Video RTP packets kept per viewer to answer its NACKs (RFC 4585 §6.2.1) with resends
    /// (RTX, RFC 4588): the larger part of a viewer's memory (~1.2 KB each). 256 packets are
    /// ~1 s of a 2 Mbit/s camera, several round trips on any network a live view works on.
    /// Default 256.
    pub nack_history: usize,
    /// Seal each viewer's video SRTP in the gateway (AES-GCM, RFC 7714) from the payloads all
    /// viewers share, with a resend history of references to them (~40 bytes a packet instead of
    /// str0m's ~430), rather than through str0m's per-packet send path; str0m keeps ICE, DTLS,
    /// RTCP, audio and the data channel. Sessions that negotiate AES-CM keep str0m's path.
    /// Default true.
    pub direct_video: bool,
}

impl WebrtcConfig {
    /// The IP the UDP sockets bind: `webrtc.ip` (0.0.0.0 needs `public_ips` to announce),
    /// else the HTTP listen IP, else (an unspecified listen IP) loopback.
    pub fn bind_ip(&self, http_listen: SocketAddr) -> IpAddr {
        self.ip.unwrap_or_else(|| {
            let ip = http_listen.ip();
            if ip.is_unspecified() { IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) } else { ip }
        })
    }

    /// Event loops (one UDP socket each, on `udp_port + i`): `loops`, or with 0 one per core.
    pub fn loop_count(&self) -> usize {
        if self.loops == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { self.loops }
    }
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            enabled: true,
            ip: None,
            public_ips: Vec::new(),
            udp_port: 8189,
            loops: 0,
            max_sessions: 500,
            ice_servers: Vec::new(),
            first_frame_timeout: std::time::Duration::from_secs(5),
            connect_timeout: std::time::Duration::from_secs(15),
            nack_history: 256,
            direct_video: true,
        }
    }
}

/// `[detect]`: YOLO object detection in separate `infer-worker` processes (DESIGN.md step 6).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Run detection on streams that have `detect = true` while they are pulled. Default `true`.
    pub enabled: bool,
    /// The ONNX model (YOLOv8/11, YOLOv5 or an end-to-end export). Default
    /// `models/testcam-shapes.onnx`, which finds the test camera's shapes.
    pub model: PathBuf,
    /// A labels file (one class name per line) overriding the model's `names`. Default none.
    pub labels: Option<PathBuf>,
    /// `libonnxruntime.so` to load. Default: `ORT_DYLIB_PATH`, else the `onnxruntime` Python
    /// package's copy.
    pub onnxruntime: Option<PathBuf>,
    /// Execution provider: `cpu`, `cuda`, `tensorrt` or `openvino`. Default `cpu`.
    pub provider: String,
    /// Worker processes to spawn. Default 0 = cores - 1, at least 1.
    pub workers: usize,
    /// ONNX Runtime intra-op threads per worker. Default 1.
    pub threads: usize,
    /// Most frames per second inferred per stream (1..=30). Default 10.
    pub fps: u32,
    /// Minimum box score viewers get, 0..1. Default 0.5. With `track`, workers send boxes down
    /// to the tracker's low score (0.1) and a weaker box reaches viewers only when it continues
    /// a track (ByteTrack's second association).
    pub confidence: f32,
    /// Class-aware NMS IoU threshold, 0..1. Default 0.45.
    pub iou: f32,
    /// The `infer-worker` binary. Default: next to the gateway binary.
    pub worker_bin: Option<PathBuf>,
    /// The Unix socket workers connect to (external workers may too). Default: a fresh path
    /// in the temporary directory.
    pub socket: Option<PathBuf>,
    /// A worker that does not answer a frame or a heartbeat this long is killed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Track objects (a `track_id` per box, stable while the object is followed). Default `true`.
    pub track: bool,
    /// A track not matched this long is forgotten (its object left, or hid too long); one
    /// matched again within it keeps its id. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub track_max_lost: Duration,
    /// Spawn the `workers` local worker processes. `false`: only workers that connect on their
    /// own (to `socket`, or to `[detect.remote]` from other machines). Default `true`.
    pub spawn: bool,
    /// `[detect.remote]`: workers on other machines over TCP. Off by default.
    pub remote: RemoteWorkersConfig,
    /// The name of `model` in detection messages (each box's `model`). Default: the model
    /// file's stem (`testcam-shapes`).
    pub name: Option<String>,
    /// `[[detect.models]]`: more models run on the same streams, each with its own worker
    /// pool and rate; a frame several models take gets one message with all their boxes.
    /// Default none.
    pub models: Vec<ModelConfig>,
    /// With `[[detect.models]]`: how long a frame's message waits, after the first model's
    /// answer, for the other models that took the frame; a later answer goes out in a second
    /// message for the frame with all its boxes. Default `100ms`.
    #[serde(with = "humantime_serde")]
    pub merge_wait: Duration,
}

/// `[[detect.models]]`: another model on every detected stream, beside `detect.model`, with
/// its own pool of worker processes (`workers`) and rate (`fps`). Its boxes carry its `name`
/// as `model`; a frame this model and another both take gets one message with both models'
/// boxes. Workers are routed to a pool by the model file name they announce in their `Hello`
/// (remote workers too), so two pools cannot share a model file name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model's name in messages, status and the overlay's toggles: 1-32 of `A-Z a-z 0-9 _ -`.
    /// Required.
    pub name: String,
    /// The ONNX model (as `detect.model`). Required.
    pub model: PathBuf,
    /// A labels file (as `detect.labels`). Default none.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Most frames per second inferred per stream (1..=30). Default 2. At a rate that
    /// `detect.fps` is a multiple of, it takes a subset of `detect.model`'s frames, so each
    /// of its answers shares a message with that model's boxes.
    #[serde(default = "ModelConfig::default_fps")]
    pub fps: u32,
    /// Worker processes to spawn for this model. Default 1.
    #[serde(default = "ModelConfig::default_workers")]
    pub workers: usize,
    /// Minimum box score, 0..1. Default `detect.confidence`.
    #[serde(default)]
    pub confidence: Option<f32>,
    /// Class-aware NMS IoU threshold, 0..1. Default `detect.iou`.
    #[serde(default)]
    pub iou: Option<f32>,
}

impl ModelConfig {
    fn default_fps() -> u32 {
        2
    }

    fn default_workers() -> usize {
        1
    }
}

/// One model's worker pool as configured: `detect.model` (index 0) or a `[[detect.models]]`
/// entry, with the defaults filled in from `[detect]`. See [`DetectConfig::pools`].
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// The model's name in messages.
    pub name: String,
    /// The ONNX model.
    pub model: PathBuf,
    /// Its labels file.
    pub labels: Option<PathBuf>,
    /// Frames per second per stream.
    pub fps: u32,
    /// Worker processes to spawn (0 without `detect.spawn`).
    pub workers: usize,
    /// Minimum box score viewers get.
    pub confidence: f32,
    /// NMS IoU threshold.
    pub iou: f32,
}

impl PoolConfig {
    /// The model file's name, as a worker announces it in its `Hello`.
    pub fn file_name(&self) -> String {
        self.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// `[detect.remote]`: detection workers on other machines (`infer-worker serve --connect
/// tcp://HOST:PORT --token T`) take frames from the same scheduler as local ones; their
/// pictures travel inline (JPEG or I420) instead of through shared memory.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWorkersConfig {
    /// Listen address for remote workers (TCP; `[::]:PORT` takes IPv4 too). Default none: off.
    pub listen: Option<SocketAddr>,
    /// The token a remote worker presents in its `Hello` (`SIGHTLINE_DETECT__REMOTE__TOKEN`);
    /// at least 16 bytes; required with `listen`.
    pub token: Option<String>,
    /// PEM certificate chain: with `tls_key`, remote workers connect over TLS (`tls://`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How pictures travel: `jpeg` (default; ~20x fewer bytes, a few ms to encode and decode)
    /// or `i420` (raw planes, 1.38 MB per 720p frame).
    pub encoding: String,
    /// JPEG quality, 1..=100. Default 90.
    pub jpeg_quality: u8,
}

impl std::fmt::Debug for RemoteWorkersConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWorkersConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("encoding", &self.encoding)
            .field("jpeg_quality", &self.jpeg_quality)
            .finish()
    }
}

impl Default for RemoteWorkersConfig {
    fn default() -> Self {
        RemoteWorkersConfig { listen: None, token: None, tls_cert: None, tls_key: None, encoding: "jpeg".into(), jpeg_quality: 90 }
    }
}

/// Shortest accepted `detect.remote.token`, bytes.
pub const MIN_WORKER_TOKEN_BYTES: usize = 16;

impl RemoteWorkersConfig {
    /// Checks the token, TLS pair, encoding and quality when remote workers are on.
    pub fn validate(&self) -> Result<(), String> {
        if !["jpeg", "i420"].contains(&self.encoding.as_str()) {
            return Err(format!("detect.remote.encoding {:?} must be \"jpeg\" or \"i420\"", self.encoding));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err("detect.remote.jpeg_quality must be 1..=100".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("detect.remote.tls_cert and detect.remote.tls_key go together".into());
        }
        if self.listen.is_some() && self.token.as_ref().is_none_or(|t| t.len() < MIN_WORKER_TOKEN_BYTES) {
            return Err(format!(
                "detect.remote.listen needs detect.remote.token of at least {MIN_WORKER_TOKEN_BYTES} bytes (remote workers receive the cameras' pictures)"
            ));
        }
        Ok(())
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            model: PathBuf::from("models/testcam-shapes.onnx"),
            labels: None,
            onnxruntime: None,
            provider: "cpu".into(),
            workers: 0,
            threads: 1,
            fps: 10,
            confidence: 0.5,
            iou: 0.45,
            worker_bin: None,
            socket: None,
            timeout: Duration::from_secs(10),
            track: true,
            track_max_lost: Duration::from_secs(1),
            spawn: true,
            remote: RemoteWorkersConfig::default(),
            name: None,
            models: Vec::new(),
            merge_wait: Duration::from_millis(100),
        }
    }
}

impl DetectConfig {
    /// The least box score workers send: with tracking, down to the tracker's low score, so
    /// weak boxes (an object partly hidden) can keep its track alive (ByteTrack's second
    /// association); such boxes reach viewers only when a track takes them.
    pub fn worker_confidence(&self) -> f32 {
        self.worker_confidence_at(self.confidence)
    }

    /// [`DetectConfig::worker_confidence`] for a model whose viewers' minimum is `confidence`.
    pub fn worker_confidence_at(&self, confidence: f32) -> f32 {
        if self.track { confidence.min(self.tracker_at(confidence).low_score) } else { confidence }
    }

    /// The tracker's thresholds: boxes at `confidence` and above are strong (ByteTrack's
    /// high score); new tracks need 0.1 more, as in ByteTrack.
    pub fn tracker(&self) -> track::TrackerConfig {
        self.tracker_at(self.confidence)
    }

    /// [`DetectConfig::tracker`] for a model whose minimum score is `confidence`.
    pub fn tracker_at(&self, confidence: f32) -> track::TrackerConfig {
        track::TrackerConfig {
            high_score: confidence,
            new_track_score: (confidence + 0.1).min(1.0),
            max_lost_ms: self.track_max_lost.as_millis().try_into().unwrap_or(u64::MAX),
            ..track::TrackerConfig::default()
        }
    }

    /// The name of `detect.model` in messages: `detect.name`, else the file's stem with
    /// characters other than `A-Z a-z 0-9 _ -` made `_`, cut to 32.
    pub fn model_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let stem = self.model.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).take(32).collect();
        if name.is_empty() { "model".into() } else { name }
    }

    /// Every model's worker pool: `detect.model` first, then `[[detect.models]]` in order.
    pub fn pools(&self) -> Vec<PoolConfig> {
        let first = PoolConfig {
            name: self.model_name(),
            model: self.model.clone(),
            labels: self.labels.clone(),
            fps: self.fps,
            workers: self.worker_count(),
            confidence: self.confidence,
            iou: self.iou,
        };
        let more = self.models.iter().map(|m| PoolConfig {
            name: m.name.clone(),
            model: m.model.clone(),
            labels: m.labels.clone(),
            fps: m.fps,
            workers: if self.spawn { m.workers } else { 0 },
            confidence: m.confidence.unwrap_or(self.confidence),
            iou: m.iou.unwrap_or(self.iou),
        });
        std::iter::once(first).chain(more).collect()
    }

    /// Checks `[[detect.models]]`: names valid and distinct, model file names distinct (they
    /// route workers to pools), rates and thresholds in range.
    fn validate_models(&self) -> Result<(), String> {
        let pools = self.pools();
        let mut names = std::collections::HashSet::new();
        let mut files = std::collections::HashSet::new();
        for (i, p) in pools.iter().enumerate() {
            let key = if i == 0 { "detect.name".to_owned() } else { format!("detect.models[{}]", i - 1) };
            let valid = (1..=32).contains(&p.name.len()) && p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(format!("{key}: model name {:?} must be 1-32 characters of A-Z a-z 0-9 _ -", p.name));
            }
            if !names.insert(p.name.clone()) {
                return Err(format!("{key}: model name {:?} is used twice", p.name));
            }
            if !files.insert(p.file_name()) {
                return Err(format!(
                    "{key}: model file name {:?} is used by another model (workers join a model's pool by the file name they announce; copy or rename the file)",
                    p.file_name()
                ));
            }
            if i > 0 && !FPS_RANGE.contains(&p.fps) {
                return Err(format!("{key}: fps {} outside {FPS_RANGE:?}", p.fps));
            }
            if !(0.0..=1.0).contains(&p.confidence) || !(0.0..=1.0).contains(&p.iou) {
                return Err(format!("{key}: confidence and iou must be within 0..1"));
            }
            if i > 0 && self.spawn && p.workers == 0 {
                return Err(format!("{key}: workers must be at least 1 (or detect.spawn = false)"));
            }
        }
        if self.merge_wait > self.timeout {
            return Err("detect.merge_wait must be at most detect.timeout".into());
        }
        Ok(())
    }

    /// The `infer-worker` binary: `worker_bin`, else `infer-worker` next to this executable.
    pub fn worker_binary(&self) -> PathBuf {
        self.worker_bin.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("infer-worker")))
                .unwrap_or_else(|| PathBuf::from("infer-worker"))
        })
    }

    /// Workers to spawn: none without `spawn`; else `workers`, or cores - 1 (at least 1)
    /// when 0.
    pub fn worker_count(&self) -> usize {
        if !self.spawn {
            return 0;
        }
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1),
            n => n,
        }
    }
}

/// Execution providers `detect.provider` may name.
pub const PROVIDERS: [&str; 4] = ["cpu", "cuda", "tensorrt", "openvino"];

/// One `[[webrtc.ice_servers]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

/// RTP transport to request from a camera.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved on the RTSP TCP connection (RFC 2326 §10.12). The default: works
    /// through NAT and firewalls.
    #[default]
    Tcp,
    /// RTP over UDP: less latency on a clean LAN, no retransmission.
    Udp,
}

/// `[[streams]]`: one camera.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stream id used in URLs: 1-64 of `A-Z a-z 0-9 _ -`. Required.
    pub id: String,
    /// Display name. Default: the id.
    #[serde(default)]
    pub name: Option<String>,
    /// `rtsp://[user:password@]host[:port]/path`. Required. Credentials are never shown.
    pub url: String,
    /// RTP transport. Default `tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// Pull the camera only while someone watches. Default `true`.
    #[serde(default = "yes")]
    pub on_demand: bool,
    /// With `on_demand`, keep pulling this long after the last viewer leaves. Default `10s`.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Whether the stream starts active when first seen by the state store. Default `true`.
    #[serde(default = "yes")]
    pub active: bool,
    /// Default feed frames per second (1..=30). Default 10.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Default feed JPEG quality (1..=100). Default 75.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Run object detection on this stream (when `[detect]` is enabled). Default `true`.
    #[serde(default = "yes")]
    pub detect: bool,
    /// Take the camera's audio (G.711 A-law/µ-law passed through, AAC transcoded to Opus once
    /// for the stream) to WebRTC viewers whose offer has an audio m-line. Default `true`.
    #[serde(default = "yes")]
    pub audio: bool,
    /// A `file://` source starts over at its end, timestamps going on (viewers keep their
    /// session). Default `false`: at its end the file plays again as a new session, after the
    /// reconnect delay.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// `off` (default), `continuous` (the camera's video stored as it arrives: fragmented MP4
    /// under `{data_dir}/recordings/{id}`, see `[recording]`) or `events` (only around the
    /// stream's analytics events). A recorded stream is pulled whenever it is active, watched
    /// or not.
    #[serde(default)]
    pub record: RecordMode,
    /// Who connects to the camera: `every_replica` (default: each replica with viewers pulls
    /// it) or `one_per_cluster` (with Redis, the replica holding the stream's pull lease pulls
    /// it and the others relay its access units from that replica's RTSP restream; for
    /// cameras that allow few sessions). Needs `[restream]` enabled.
    #[serde(default)]
    pub pull: PullMode,
    /// Zones (polygons) tracked objects enter, leave and loiter in (issue #13). Default none.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Lines (directed polylines, tripwires) tracked objects cross. Default none.
    #[serde(default)]
    pub lines: Vec<LineConfig>,
}

/// `[mqtt]`: every analytics event published as JSON on `{topic_prefix}/{stream}/events`
/// (QoS 1), the topic layout Home Assistant and Frigate users wire into automations.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The broker, `mqtt://host:port` (port default 1883). Default none: MQTT off.
    pub url: Option<String>,
    /// Topic prefix. Default `sightline`.
    pub topic_prefix: Option<String>,
    /// Client id. Default `sightline-{replica id}`.
    pub client_id: Option<String>,
}

impl MqttConfig {
    /// The broker's host and port, if MQTT is on. Errors name the bad URL.
    pub fn broker(&self) -> Result<Option<(String, u16)>, String> {
        let Some(raw) = &self.url else { return Ok(None) };
        let url = url::Url::parse(raw).map_err(|e| format!("mqtt.url {}: {e}", redact_url(raw)))?;
        if url.scheme() != "mqtt" {
            return Err(format!("mqtt.url {} must be mqtt://host[:port]", redact_url(raw)));
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("mqtt.url {} has no host", redact_url(raw)))?;
        Ok(Some((host.trim_start_matches('[').trim_end_matches(']').to_owned(), url.port().unwrap_or(1883))))
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        self.topic_prefix.as_deref().unwrap_or("sightline")
    }
}

/// A stream's `pull` setting.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullMode {
    /// Every replica with viewers connects to the camera.
    #[default]
    EveryReplica,
    /// One replica in the cluster connects to the camera (the pull lease's holder); the
    /// others relay from it.
    OnePerCluster,
}

/// A stream's `record` setting.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// Nothing stored.
    #[default]
    Off,
    /// Everything stored, segment after segment.
    Continuous,
    /// Only around the stream's analytics events: `recording.pre_roll` before (kept in
    /// memory) to `recording.post_roll` after the last one.
    Events,
}

/// `[recording]`: how recordings are cut and how long they are kept (per stream).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// A segment file is closed at the first keyframe after this long. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub segment: Duration,
    /// A fragment (what a crash may lose at most) is closed at the first keyframe after this
    /// long, or at any access unit after twice as long. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub fragment: Duration,
    /// Segments older than this are deleted. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most bytes of recordings kept per stream; the oldest segments go first. Default
    /// 10 GB.
    pub max_bytes: u64,
    /// An event's clip (`/api/events/{id}/clip.mp4`), and in `events` mode what is recorded,
    /// starts this long before the event (at the keyframe at or before). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub pre_roll: Duration,
    /// An event's clip ends this long after the event. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub post_roll: Duration,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            segment: Duration::from_secs(60),
            fragment: Duration::from_secs(1),
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: 10_000_000_000,
            pre_roll: Duration::from_secs(5),
            post_roll: Duration::from_secs(5),
        }
    }
}

impl RecordingConfig {
    /// Checks the lengths.
    pub fn validate(&self) -> Result<(), String> {
        if !(Duration::from_millis(100)..=Duration::from_secs(10)).contains(&self.fragment) {
            return Err("recording.fragment must be 100ms to 10s".into());
        }
        if self.segment < self.fragment || self.segment > Duration::from_secs(3600) {
            return Err("recording.segment must be from recording.fragment to 1h".into());
        }
        if self.max_age < Duration::from_secs(60) {
            return Err("recording.max_age must be at least 1m".into());
        }
        if self.pre_roll > Duration::from_secs(600) || self.post_roll > Duration::from_secs(600) {
            return Err("recording.pre_roll and recording.post_roll must be at most 10m".into());
        }
        if self.max_bytes < 1_000_000 {
            return Err("recording.max_bytes must be at least 1000000".into());
        }
        Ok(())
    }
}

/// `[jobs]`: offline video jobs (issue #15): a whole file through a pipeline of filters on
/// worker processes, chunk by chunk (a GOP or more each), re-assembled into an MP4.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Where uploads, results, metrics and previews are kept (one directory per job).
    /// Default `{data_dir}/jobs`.
    pub dir: Option<PathBuf>,
    /// Jobs may name a file under this directory instead of uploading one (`{"path": …}`);
    /// paths outside it are refused. Default none (uploads only).
    pub input_dir: Option<PathBuf>,
    /// Largest upload, bytes (413 above). Default 4 GB.
    pub max_upload_bytes: u64,
    /// `infer-worker job` processes the gateway runs: on stdin/stdout without Redis, as
    /// Redis Streams consumers with `state.redis_url` (then workers on other machines join
    /// them). Default 2; 0 runs none (with Redis: external workers only).
    pub workers: usize,
    /// A chunk holds whole GOPs, at least this many pictures (a GOP longer than this is one
    /// chunk). Default 50.
    pub chunk_frames: usize,
    /// Chunks queued or being processed per job, at most (bounds memory and Redis). Default 8.
    pub max_in_flight: usize,
    /// A chunk not answered this long fails its job ("no worker"). Default `10m`.
    #[serde(with = "humantime_serde")]
    pub chunk_timeout: Duration,
    /// Redis workers take over a chunk whose worker stopped refreshing its claim this long.
    /// Default `15s`.
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// x264 preset of the output. Default `veryfast`.
    pub preset: String,
    /// Finished jobs (their files too) are deleted this long after they end. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            dir: None,
            input_dir: None,
            max_upload_bytes: 4_000_000_000,
            workers: 2,
            chunk_frames: 50,
            max_in_flight: 8,
            chunk_timeout: Duration::from_secs(600),
            claim_idle: Duration::from_secs(15),
            preset: "veryfast".into(),
            max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// x264 presets `jobs.preset` may name.
pub const X264_PRESETS: [&str; 9] = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"];

impl JobsConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.chunk_frames) {
            return Err("jobs.chunk_frames must be 1 to 10000".into());
        }
        if !(1..=256).contains(&self.max_in_flight) {
            return Err("jobs.max_in_flight must be 1 to 256".into());
        }
        if self.workers > 256 {
            return Err("jobs.workers must be at most 256".into());
        }
        if self.claim_idle < Duration::from_secs(2) {
            return Err("jobs.claim_idle must be at least 2s (workers refresh their claim every second)".into());
        }
        if self.chunk_timeout < Duration::from_secs(1) {
            return Err("jobs.chunk_timeout must be at least 1s".into());
        }
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return Err(format!("jobs.preset must be one of {}", X264_PRESETS.join(", ")));
        }
        if self.max_upload_bytes == 0 {
            return Err("jobs.max_upload_bytes must be positive".into());
        }
        Ok(())
    }
}

/// `[events]`: where analytics events are stored and for how long.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `postgres://user:password@host:port/db`: store events in PostgreSQL, shared by every
    /// replica. Default none: an SQLite file, `{data_dir}/events.db`, for this replica alone.
    pub database_url: Option<String>,
    /// Events older than this are deleted (with their snapshots). Default `30d`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most events kept per stream; the oldest go first. Default 100000.
    pub max_per_stream: u64,
    /// JPEG quality (1-100) of each event's snapshot, the frame it happened on with the
    /// object's box drawn; 0: no snapshots. Default 80.
    pub snapshot_quality: u8,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { database_url: None, max_age: Duration::from_secs(30 * 86_400), max_per_stream: 100_000, snapshot_quality: 80 }
    }
}

impl EventsConfig {
    /// Checks the database URL's scheme and the numbers. Errors never show the password.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(raw) = &self.database_url {
            let url = url::Url::parse(raw).map_err(|e| format!("events.database_url {}: {e}", redact_url(raw)))?;
            if !matches!(url.scheme(), "postgres" | "postgresql") {
                return Err(format!("events.database_url {} must be postgres://user:password@host:port/db", redact_url(raw)));
            }
        }
        if self.snapshot_quality > 100 {
            return Err("events.snapshot_quality must be 0 (no snapshots) to 100".into());
        }
        if self.max_per_stream == 0 || self.max_age.is_zero() {
            return Err("events.max_per_stream and events.max_age must be more than 0".into());
        }
        Ok(())
    }
}

/// The event kinds, as `[[webhooks]] kinds` names them.
pub const EVENT_KINDS: [&str; 6] = ["line_crossed", "zone_enter", "zone_exit", "loitering", "object_appeared", "object_left"];

/// `[[webhooks]]`: every event (of the listed streams and kinds) POSTed as its JSON to `url`,
/// signed with `secret`, retried with backoff while the receiver fails.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` (rustls, Mozilla's roots) receiver.
    pub url: String,
    /// HMAC-SHA256 key: each POST carries `X-Sightline-Signature: t=<unix s>,v1=<hex of
    /// HMAC(secret, "<t>.<body>")>`. Default none (unsigned).
    #[serde(default)]
    pub secret: Option<String>,
    /// Only these streams' events; empty: all. Default empty.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Only these kinds (`line_crossed`, `zone_enter`, …); empty: all. Default empty.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Per attempt. Default `5s`.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event (connection errors, 408, 429 and 5xx are retried, waiting 0.5 s
    /// doubling to 60 s; other answers are final). Default 10.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_webhook_attempts() -> u32 {
    10
}

impl WebhookConfig {
    /// Checks the URL, kinds and numbers. Errors never show a password.
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.url).map_err(|e| format!("webhooks.url {}: {e}", redact_url(&self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(format!("webhooks.url {} must be http(s)://host/path", redact_url(&self.url)));
        }
        if let Some(k) = self.kinds.iter().find(|k| !EVENT_KINDS.contains(&k.as_str())) {
            return Err(format!("webhooks.kinds: {k:?} is none of {EVENT_KINDS:?}"));
        }
        if self.max_attempts == 0 || self.timeout.is_zero() {
            return Err("webhooks.max_attempts and webhooks.timeout must be more than 0".into());
        }
        Ok(())
    }
}

/// Most zones or lines per stream.
pub const MAX_GEOMETRY_PER_STREAM: usize = 100;

/// `[[streams.zones]]`: a polygon in 0..1 coordinates of the picture (x right, y down).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Its id, 1-64 of `A-Z a-z 0-9 _ -`, unique in the stream (events name it).
    pub id: String,
    /// Corners `[[x, y], …]`, at least 3, edges not crossing.
    #[schema(value_type = Vec<Vec<f32>>)]
    pub points: Vec<[f32; 2]>,
    /// Labels it counts (the model's class names); empty: all. Default empty.
    #[serde(default)]
    pub labels: Vec<String>,
    /// An object inside this long is `loitering` (once per visit). Default: never.
    #[serde(default, with = "humantime_serde::option")]
    #[schema(value_type = Option<String>, example = "10s")]
    pub dwell: Option<Duration>,
}

/// `[[streams.lines]]`: a directed polyline in 0..1 coordinates. Crossing it from its left to
/// its right (as seen on the picture, looking from each point to the next) is `in`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Its id, 1-64 of `A-Z a-z 0-9 _ -`, unique in the stream.
    pub id: String,
    /// Points `[[x, y], …]`, at least 2.
    #[schema(value_type = Vec<Vec<f32>>)]
    pub points: Vec<[f32; 2]>,
    /// Labels it counts; empty: all. Default empty.
    #[serde(default)]
    pub labels: Vec<String>,
}

fn points(p: &[[f32; 2]]) -> Vec<track::zones::Point> {
    p.iter().map(|&[x, y]| track::zones::Point { x, y }).collect()
}

impl ZoneConfig {
    /// The tracker's zone.
    pub fn zone(&self) -> track::zones::Zone {
        track::zones::Zone {
            id: self.id.clone(),
            points: points(&self.points),
            labels: self.labels.clone(),
            dwell_ms: self.dwell.map(|d| d.as_millis().try_into().unwrap_or(u64::MAX)),
        }
    }
}

impl LineConfig {
    /// The tracker's line.
    pub fn line(&self) -> track::zones::Line {
        track::zones::Line { id: self.id.clone(), points: points(&self.points), labels: self.labels.clone() }
    }
}

impl StreamConfig {
    /// Checks the stream's zones and lines: ids, geometry, counts.
    pub fn validate_geometry(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        if self.zones.len() > MAX_GEOMETRY_PER_STREAM || self.lines.len() > MAX_GEOMETRY_PER_STREAM {
            return Err(format!("stream {}: at most {MAX_GEOMETRY_PER_STREAM} zones and {MAX_GEOMETRY_PER_STREAM} lines", self.id));
        }
        let checked = self
            .zones
            .iter()
            .map(|z| (&z.id, "zone", z.zone().validate()))
            .chain(self.lines.iter().map(|l| (&l.id, "line", l.line().validate())));
        for (id, what, result) in checked {
            if !valid_stream_id(id) {
                return Err(format!("stream {}: {what} id {id:?} must be 1-64 characters of A-Z a-z 0-9 _ -", self.id));
            }
            if !ids.insert(id) {
                return Err(format!("stream {}: zone or line id {id:?} is used twice", self.id));
            }
            result.map_err(|e| format!("stream {}: {what} {id}: {e}", self.id))?;
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_linger() -> Duration {
    Duration::from_secs(10)
}
fn default_fps() -> u32 {
    10
}
fn default_quality() -> u8 {
    75
}

impl StreamConfig {
    /// A stream with every optional field at its default.
    pub fn new(id: &str, url: &str) -> StreamConfig {
        StreamConfig {
            id: id.to_owned(),
            name: None,
            url: url.to_owned(),
            transport: Transport::Tcp,
            on_demand: true,
            linger: default_linger(),
            active: true,
            fps: default_fps(),
            quality: default_quality(),
            detect: true,
            audio: true,
            looping: false,
            record: RecordMode::Off,
            pull: PullMode::EveryReplica,
            zones: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Whether the camera is pulled only while watched: `on_demand`, unless the stream is
    /// recorded (then it is pulled whenever active).
    pub fn pulled_on_demand(&self) -> bool {
        self.on_demand && self.record == RecordMode::Off
    }

    /// Display name, falling back to the id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

impl Default for Config {
    fn default() -> Self {
        let testcam = TestCamConfig::default();
        let mut stream = StreamConfig::new("testcam", &testcam.url());
        stream.name = Some("Built-in test camera".into());
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            static_dir: PathBuf::from("static"),
            replica_id: None,
            advertise_url: None,
            shutdown_grace: Duration::from_secs(1),
            state: StateConfig::default(),
            testcam,
            ingest: IngestConfig::default(),
            restream: RestreamConfig::default(),
            feeds: FeedsConfig::default(),
            webrtc: WebrtcConfig::default(),
            detect: DetectConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            mqtt: MqttConfig::default(),
            data_dir: PathBuf::from("data"),
            events: EventsConfig::default(),
            recording: RecordingConfig::default(),
            jobs: JobsConfig::default(),
            webhooks: Vec::new(),
            streams: vec![stream],
        }
    }
}

/// Figment's messages, except that a bad value under `[auth]` is not repeated (a secret
/// given in the wrong shape, e.g. a token without the list brackets, would end up in the log)
/// and a syntax error does not quote its line.
fn redacted_errors(errors: figment::Error) -> String {
    use figment::error::Kind;
    let messages: Vec<String> = errors
        .into_iter()
        .map(|e| match (&e.kind, e.path.first().map(String::as_str)) {
            (Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected), Some(first))
                if first == "auth" || e.path.iter().map(String::as_str).eq(["detect", "remote", "token"]) =>
            {
                format!("invalid value for key \"{}\": expected {expected} (value not shown)", e.path.join("."))
            }
            // A TOML syntax error quotes its source line, which may hold a secret or a camera
            // password: keep the position, drop the excerpt (lines with a `|` gutter).
            _ => e.to_string().lines().filter(|l| !is_source_excerpt(l)).collect::<Vec<_>>().join(" "),
        })
        .collect();
    messages.join("; ")
}

/// `  |`, `2 | text`, `  |   ^`: the source excerpt lines of a toml parse error.
fn is_source_excerpt(line: &str) -> bool {
    let t = line.trim_start();
    let digits = t.trim_start_matches(|c: char| c.is_ascii_digit());
    digits.trim_start().starts_with('|')
}

/// Frames per second a feed may ask for.
pub const FPS_RANGE: std::ops::RangeInclusive<u32> = 1..=30;
/// JPEG qualities a feed may ask for.
pub const QUALITY_RANGE: std::ops::RangeInclusive<u8> = 1..=100;

/// Whether `id` is a valid stream id (1-64 of `A-Z a-z 0-9 _ -`).
pub fn valid_stream_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Loads `file` (TOML) over the defaults, then `SIGHTLINE_*` variables (nested keys joined
    /// with `__`, e.g. `SIGHTLINE_TESTCAM__ENABLED=false`). With no `file`,
    /// `config/sightline.toml` is used if it exists.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Self::defaults();
        let default_file = Path::new("config/sightline.toml");
        match file {
            Some(path) if !path.exists() => anyhow::bail!("config file {} does not exist", path.display()),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if default_file.exists() => figment = figment.merge(Toml::file_exact(default_file)),
            None => {}
        }
        Self::extract(figment.merge(Env::prefixed("SIGHTLINE_").split("__")))
    }

    /// Parses TOML `text` over the defaults, as [`Config::load`] does a file but without the
    /// environment. Not validated: call [`Config::validate`].
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        Self::extract(Self::defaults().merge(Toml::string(text)))
    }

    fn defaults() -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
    }

    fn extract(figment: Figment) -> anyhow::Result<Config> {
        figment.extract().map_err(|e: figment::Error| anyhow::anyhow!("invalid configuration: {}", redacted_errors(e)))
    }

    /// Checks every field; the message names the offending stream or key.
    pub fn validate(&self) -> Result<(), String> {
        if self.testcam.enabled {
            self.testcam.settings().validate()?;
        }
        if self.feeds.viewer_queue == 0 {
            return Err("feeds.viewer_queue must be at least 1".into());
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.streams {
            if !valid_stream_id(&s.id) {
                return Err(format!("stream id {:?} must be 1-64 characters of A-Z a-z 0-9 _ -", s.id));
            }
            if !seen.insert(&s.id) {
                return Err(format!("stream id {:?} is defined twice", s.id));
            }
            if s.url.starts_with("screen:") {
                screen::ScreenUrl::parse(&s.url).map_err(|e| format!("stream {}: {e}", s.id))?;
            } else {
                let url = url::Url::parse(&s.url).map_err(|e| format!("stream {}: bad url {}: {e}", s.id, redact_url(&s.url)))?;
                if !matches!(url.scheme(), "rtsp" | "rtsps" | "file") {
                    let shown = redact_url(&s.url);
                    return Err(format!("stream {}: url {shown} must be rtsp://, rtsps://, file:///path or screen://:DISPLAY", s.id));
                }
            }
            if !FPS_RANGE.contains(&s.fps) {
                return Err(format!("stream {}: fps {} outside {FPS_RANGE:?}", s.id, s.fps));
            }
            if !QUALITY_RANGE.contains(&s.quality) {
                return Err(format!("stream {}: quality {} outside {QUALITY_RANGE:?}", s.id, s.quality));
            }
            s.validate_geometry()?;
        }
        let v4 = self.webrtc.public_ips.iter().filter(|ip| ip.is_ipv4()).count();
        if v4 > 1 || self.webrtc.public_ips.len() - v4 > 1 {
            return Err("webrtc.public_ips: at most one IPv4 and one IPv6 address".into());
        }
        if let Some(ip) = self.webrtc.ip
            && !(ip.is_ipv6() && ip.is_unspecified())
            && self.webrtc.public_ips.iter().any(|p| p.is_ipv4() != ip.is_ipv4())
        {
            return Err(format!("webrtc.public_ips has an address of the other family than webrtc.ip {ip}: use \"::\" for both families"));
        }
        if self.webrtc.max_sessions == 0 {
            return Err("webrtc.max_sessions must be at least 1".into());
        }
        if !(16..=10_000).contains(&self.webrtc.nack_history) {
            return Err(format!("webrtc.nack_history must be 16..=10000 packets, not {}", self.webrtc.nack_history));
        }
        if let Some(bad) = self.webrtc.ice_servers.iter().find(|s| !["stun:", "turn:", "turns:"].iter().any(|p| s.url.starts_with(p))) {
            return Err(format!("webrtc.ice_servers: {:?} must start with stun:, turn: or turns:", bad.url));
        }
        self.mqtt.broker()?;
        self.events.validate()?;
        self.recording.validate()?;
        self.jobs.validate()?;
        self.restream.validate()?;
        for w in &self.webhooks {
            w.validate()?;
        }
        let d = &self.detect;
        if !PROVIDERS.contains(&d.provider.as_str()) {
            return Err(format!("detect.provider {:?} must be one of {PROVIDERS:?}", d.provider));
        }
        if !FPS_RANGE.contains(&d.fps) {
            return Err(format!("detect.fps {} outside {FPS_RANGE:?}", d.fps));
        }
        if !(0.0..=1.0).contains(&d.confidence) || !(0.0..=1.0).contains(&d.iou) {
            return Err("detect.confidence and detect.iou must be within 0..1".into());
        }
        if d.threads == 0 || d.timeout.is_zero() {
            return Err("detect.threads and detect.timeout must be above 0".into());
        }
        d.remote.validate()?;
        if d.enabled {
            d.validate_models()?;
        }
        if self.ingest.backoff_min.is_zero() || self.ingest.backoff_min > self.ingest.backoff_max {
            return Err("ingest.backoff_min must be > 0 and <= ingest.backoff_max".into());
        }
        if self.shutdown_grace > Duration::from_secs(3) {
            return Err("shutdown_grace must be at most 3s (the gateway exits within 10 s of SIGTERM)".into());
        }
        self.auth.validate(self.listen)?;
        if self.restream.enabled {
            self.auth.validate(self.restream.listen)?;
        } else if let Some(s) = self.streams.iter().find(|s| s.pull == PullMode::OnePerCluster) {
            return Err(format!("stream {:?}: pull = \"one_per_cluster\" relays through the RTSP restream; enable [restream]", s.id));
        }
        self.limits.validate()?;
        if self.limits.request_timeout <= self.webrtc.first_frame_timeout {
            return Err("limits.request_timeout must be longer than webrtc.first_frame_timeout (a WHEP POST waits that long)".into());
        }
        Ok(())
    }

    /// Adds (or replaces by id) a stream given on the command line as `ID=URL`; it starts active.
    pub fn add_stream_arg(&mut self, arg: &str) -> Result<(), String> {
        let (id, url) = arg.split_once('=').ok_or_else(|| format!("--stream {:?}: expected ID=URL", redact_url(arg)))?;
        let stream = StreamConfig::new(id, url);
        match self.streams.iter_mut().find(|s| s.id == id) {
            Some(existing) => *existing = stream,
            None => self.streams.push(stream),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_the_test_camera() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.streams.len(), 1);
        assert_eq!(c.streams[0].url, "rtsp://127.0.0.1:8555/testcam");
    }

    #[test]
    fn remote_workers_need_a_token_and_a_known_encoding() {
        let check = |toml: &str| Config::from_toml_str(toml).unwrap().validate();
        let on = "[detect.remote]\nlisten = \"0.0.0.0:7000\"\n";
        assert!(check(on).unwrap_err().contains("detect.remote.token"));
        assert!(check(&format!("{on}token = \"short\"\n")).unwrap_err().contains("at least 16 bytes"));
        let ok = format!("{on}token = \"0123456789abcdef\"\n");
        check(&ok).unwrap();
        assert!(check(&format!("{ok}encoding = \"png\"\n")).unwrap_err().contains("encoding"));
        assert!(check(&format!("{ok}jpeg_quality = 0\n")).unwrap_err().contains("jpeg_quality"));
        assert!(check(&format!("{ok}tls_cert = \"c.pem\"\n")).unwrap_err().contains("go together"));
        let c = Config::from_toml_str(&ok).unwrap();
        assert!(!format!("{:?}", c.detect).contains("0123456789abcdef"), "the token is not in Debug output");
        let err = Config::from_toml_str("[detect.remote]\ntoken = 1234567890123456\n").unwrap_err().to_string();
        assert!(!err.contains("1234567890") && err.contains("detect.remote.token"), "{err}");
        assert_eq!(Config::from_toml_str("[detect]\nspawn = false\nworkers = 3\n").unwrap().detect.worker_count(), 0);
    }

    #[test]
    fn models_are_told_apart_by_name_and_file() {
        let base =
            "[detect]\nmodel = \"m/shapes.onnx\"\nworkers = 2\nfps = 10\n\n[[detect.models]]\nname = \"slow\"\nmodel = \"n/slow.onnx\"\n";
        let check = |more: &str| Config::from_toml_str(&format!("{base}{more}")).unwrap().validate();
        check("").unwrap();
        let pools = Config::from_toml_str(base).unwrap().detect.pools();
        let summary: Vec<(&str, u32, usize, f32)> = pools.iter().map(|p| (p.name.as_str(), p.fps, p.workers, p.confidence)).collect();
        assert_eq!(summary, [("shapes", 10, 2, 0.5), ("slow", 2, 1, 0.5)], "the name from the file, defaults from [detect]");
        let err = check("\n[[detect.models]]\nname = \"again\"\nmodel = \"o/slow.onnx\"\n").unwrap_err();
        assert!(err.contains("detect.models[1]: model file name \"slow.onnx\" is used by another model"), "{err}");
        let err = check("\n[[detect.models]]\nname = \"shapes\"\nmodel = \"other.onnx\"\n").unwrap_err();
        assert!(err.contains("model name \"shapes\" is used twice"), "{err}");
        assert!(check("\n[[detect.models]]\nname = \"a b\"\nmodel = \"x.onnx\"\n").unwrap_err().contains("1-32 characters"));
        assert!(check("\n[[detect.models]]\nname = \"f\"\nmodel = \"x.onnx\"\nfps = 60\n").unwrap_err().contains("fps 60 outside"));
        assert!(check("\n[[detect.models]]\nname = \"z\"\nmodel = \"x.onnx\"\nworkers = 0\n").unwrap_err().contains("workers must be"));
        assert!(check("\n[[detect.models]]\nname = \"c\"\nmodel = \"x.onnx\"\nconfidence = 2.0\n").unwrap_err().contains("within 0..1"));
        let odd = Config::from_toml_str("[detect]\nmodel = \"m/yolov8n.int8 v2.onnx\"\n").unwrap();
        assert_eq!(odd.detect.model_name(), "yolov8n_int8_v2", "a default name from any file name");
        odd.validate().unwrap();
        let slow_merge = Config::from_toml_str("[detect]\nmerge_wait = \"1m\"\n").unwrap().validate();
        assert!(slow_merge.unwrap_err().contains("merge_wait"));
        let err = Config::from_toml_str(&format!("{base}fsp = 3\n")).unwrap_err().to_string();
        assert!(err.contains("fsp"), "unknown keys are refused: {err}");
        let off = Config::from_toml_str(&format!("{base}\n[detect.remote]\n")).unwrap();
        assert_eq!(off.detect.pools()[1].workers, 1);
        let mut no_spawn = off.clone();
        no_spawn.detect.spawn = false;
        assert!(no_spawn.detect.pools().iter().all(|p| p.workers == 0), "detect.spawn = false spawns no model's workers");
    }

    #[test]
    fn public_ips_take_one_address_per_family() {
        let check = |toml: &str| Config::from_toml_str(toml).unwrap().validate();
        check("[webrtc]\nip = \"::\"\npublic_ips = [\"192.0.2.5\", \"2001:db8::5\"]\n").unwrap();
        assert!(check("[webrtc]\npublic_ips = [\"192.0.2.5\", \"192.0.2.6\"]\n").unwrap_err().contains("one IPv4 and one IPv6"));
        assert!(check("[webrtc]\nip = \"10.0.0.1\"\npublic_ips = [\"2001:db8::5\"]\n").unwrap_err().contains("other family"));
        assert!(check("[webrtc]\nip = \"::1\"\npublic_ips = [\"192.0.2.5\"]\n").unwrap_err().contains("other family"));
    }

    #[test]
    fn shipped_config_files_are_valid() {
        for file in ["../config/sightline.toml", "../config/cameras.example.toml"] {
            let mut c = Config::from_toml_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            if !c.listen.ip().is_loopback() {
                // The example listens on all interfaces: it is valid only with the tokens its
                // comments say to set from the environment.
                assert!(c.validate().unwrap_err().contains("auth.control_tokens"), "{file}: auth must be required");
                c.auth.control_tokens = vec!["0123456789abcdef0123456789abcdef".into()];
            }
            c.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn a_secret_in_the_wrong_shape_is_not_repeated() {
        let err = Config::from_toml_str("[auth]\ncontrol_tokens = \"3f9a-secret-token-value\"\njwt_secret = 12345678901234567\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.control_tokens") && err.contains("value not shown"), "{err}");
        assert!(!err.contains("3f9a-secret") && !err.contains("12345678901234567"), "{err}");
        let err = Config::from_toml_str("[auth]\njwt_secret = \"unterminated-secret-value\nmode = \"on\"\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && !err.contains("unterminated-secret"), "{err}");
        let err = Config::from_toml_str("[[streams]]\nid = \"a\"\nurl = rtsp://admin:hunter2@cam/x\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn zones_and_lines_are_checked() {
        let with = |geometry: &str| {
            let text = format!("[[streams]]\nid = \"yard\"\nurl = \"rtsp://cam/x\"\n{geometry}");
            Config::from_toml_str(&text).map_err(|e| e.to_string()).and_then(|c| c.validate())
        };
        assert_eq!(with("[[streams.zones]]\nid = \"gate\"\npoints = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\ndwell = \"5s\"\n"), Ok(()));
        let bowtie = with("[[streams.zones]]\nid = \"gate\"\npoints = [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]\n").unwrap_err();
        assert!(bowtie.contains("stream yard: zone gate") && bowtie.contains("cross"), "{bowtie}");
        let short = with("[[streams.lines]]\nid = \"door\"\npoints = [[0.1, 0.1]]\n").unwrap_err();
        assert!(short.contains("at least 2 points"), "{short}");
        let outside = with("[[streams.lines]]\nid = \"door\"\npoints = [[0.1, 0.1], [1.2, 0.5]]\n").unwrap_err();
        assert!(outside.contains("outside 0..1"), "{outside}");
        let twice = with("[[streams.lines]]\nid = \"door\"\npoints = [[0.1, 0.1], [0.2, 0.5]]\n[[streams.zones]]\nid = \"door\"\npoints = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\n").unwrap_err();
        assert!(twice.contains("used twice"), "{twice}");
        let mqtt = Config::from_toml_str("[mqtt]\nurl = \"http://user:hunter2@broker\"\n").unwrap().validate().unwrap_err();
        assert!(mqtt.contains("must be mqtt://") && !mqtt.contains("hunter2"), "{mqtt}");
        let ok = Config::from_toml_str("[mqtt]\nurl = \"mqtt://broker.lan\"\n").unwrap();
        assert_eq!(ok.mqtt.broker(), Ok(Some(("broker.lan".to_owned(), 1883))));
        let bad_id = with("[[streams.lines]]\nid = \"a b'; DROP TABLE\"\npoints = [[0.1, 0.1], [0.2, 0.5]]\n").unwrap_err();
        assert!(bad_id.contains("must be 1-64 characters"), "{bad_id}");
        let many: String = (0..=MAX_GEOMETRY_PER_STREAM)
            .map(|i| format!("[[streams.lines]]\nid = \"l{i}\"\npoints = [[0.1, 0.1], [0.2, 0.5]]\n"))
            .collect();
        assert!(with(&many).unwrap_err().contains("at most 100"));
    }

    #[test]
    fn a_public_restream_needs_tokens_and_an_even_udp_port() {
        let c = Config::from_toml_str("[restream]\nlisten = \"0.0.0.0:8554\"\n").unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.contains("0.0.0.0:8554") && err.contains("auth.control_tokens"), "{err}");
        let c = Config::from_toml_str("[restream]\nlisten = \"0.0.0.0:8554\"\nenabled = false\n").unwrap();
        c.validate().unwrap();
        let c = Config::from_toml_str("[restream]\nudp_port = 8001\n").unwrap();
        assert!(c.validate().unwrap_err().contains("even"));
        let one = "[[streams]]\nid = \"c\"\nurl = \"rtsp://h/\"\npull = \"one_per_cluster\"\n";
        let c = Config::from_toml_str(&format!("[restream]\nenabled = false\n{one}")).unwrap();
        assert!(c.validate().unwrap_err().contains("enable [restream]"));
        let c = Config::from_toml_str(&format!("[restream]\nadvertise = \"http://h:1\"\n{one}")).unwrap();
        assert!(c.validate().unwrap_err().contains("rtsp://"));
        assert_eq!(Config::from_toml_str(one).unwrap().streams[0].pull, PullMode::OnePerCluster);
        assert_eq!(Config::default().restream.listen.port(), 8554);
        assert_eq!(Config::default().testcam.listen.port(), 8555);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let bad = Config::from_toml_str("listn = \"x\"");
        assert!(bad.unwrap_err().to_string().contains("listn"));
        let mut c = Config::default();
        c.streams[0].fps = 0;
        assert!(c.validate().unwrap_err().contains("fps"));
        let mut c = Config::default();
        c.streams.push(StreamConfig::new("bad id", "rtsp://h/"));
        assert!(c.validate().unwrap_err().contains("bad id"));
        let mut c = Config::default();
        c.streams.push(StreamConfig::new("x", "http://u:secret@h/"));
        let err = c.validate().unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn stream_args_add_or_replace() {
        let mut c = Config::default();
        c.add_stream_arg("door=rtsp://u:p@10.0.0.2/s").unwrap();
        c.add_stream_arg("testcam=rtsp://127.0.0.1:9/x").unwrap();
        assert_eq!(c.streams.len(), 2);
        assert_eq!(c.streams[0].url, "rtsp://127.0.0.1:9/x");
        assert!(c.add_stream_arg("nonsense").is_err());
    }
}
