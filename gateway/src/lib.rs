//! Sightline gateway: pulls H.264 from RTSP cameras and serves it to browsers over WebRTC
//! (WHEP, packets passed through) and as SSE (base64 JPEG) and MJPEG feeds, with object
//! detection in worker processes, REST start/stop, a web UI and Prometheus metrics.
//!
//! # Layout
//!
//! Modules by role; each depends only on those listed below it (`out` modules never on each
//! other), and only `app` sees all of them:
//!
//! ```text
//! app          wiring: run(), the shutdown order
//! http         router, handlers (+ OpenAPI), extractors, errors as answers, limits, server
//! restream     every stream re-served over RTSP (media's sans-IO server, a tokio shell)
//! out/sse, out/mjpeg, out/webrtc
//!              one transport each: SSE events, multipart JPEG, WHEP sessions on str0m loops
//! detect       worker processes, scheduler, connections, lease, cross-replica relay
//! jobs         offline video jobs: split into GOP chunks, workers (local | Redis Streams), MP4
//! record       recordings: fragmented MP4 segments, their index, retention, export
//! archive      analytics events stored (SQLite | PostgreSQL) with snapshots, retention
//! pipeline     decode, JPEG encode, decimation; knows no consumer
//! stream       hub (fan-out + GOP cache), ingest, on-demand pull, runtime, registry, viewers
//! source       the camera-source trait; RTSP through retina
//! state        stream state store and cluster store: memory | Redis
//! auth         control tokens and viewer JWTs (no HTTP types)
//! config       plain serde data for every section, redaction
//! core         stream ids, frame identity, typed detections, clock, shutdown, errors, tasks
//! metrics      the Prometheus recorder (a leaf any module may count with)
//! ```
//!
//! Below the gateway, leaf crates: `media` (H.264, RTP, RTCP, newtypes), `wire` (the worker
//! protocol), `signaling` (WHEP rules, the str0m peer), `testcam` (the built-in camera).
//!
//! # One access unit, camera to browser
//!
//! 1. `source::rtsp::RtspSource`'s `session` plays the camera with retina and turns each
//!    `VideoFrame` into a `NewAccessUnit`, stamping its capture time from the camera's RTCP
//!    sender reports (`media::rtcp::CaptureClock`).
//! 2. `stream::ingest::run`'s sink (`HubSink::unit`) parses a changed SPS outside any lock
//!    and calls `stream::hub::Hub::publish`, which numbers the unit (`seq`), caches the GOP
//!    and broadcasts the `Arc<AccessUnit>`.
//! 3. WebRTC: each event loop's tap (`out::webrtc::tap::run`) receives it; the loop's
//!    `EventLoop::fan_out` packetizes it once for every viewer on every loop
//!    (`rtp_payloads`, through [`core::frame::AccessUnit::derived`]), plans each viewer's RTP
//!    timestamp (`Timeline::live`) and queues the packets on its str0m peer
//!    (`ViewerPeer::write_rtp`); `EventLoop::flush` sends them, GSO-batched.
//! 4. JPEG feeds: the stream's `pipeline::Pixels` decoder task (`Pixels::decode`) runs
//!    [`pipeline::codec::Codec::decode`] on the blocking pool (libavcodec; pictures in
//!    presentation order), then for each picture some viewer takes `Codec::encode`: range
//!    expansion, one turbojpeg encode per quality; `Pixels::deliver` queues the
//!    `JpegFrame` to each viewer, and `out::sse` / `out::mjpeg` wrap it once per frame
//!    (`JpegFrame::derived`) into the bytes every viewer of that transport writes.
//!
//! # One decoded picture, to a worker and back
//!
//! 1. While this replica holds the stream's detection lease (`detect::lease::follow`), the
//!    decoder also offers packed I420 `Picture`s at `detect.fps` to the scheduler
//!    (`Scheduler::offer`, a slot per stream holding only the newest).
//! 2. An idle worker's connection task (`detect::connection`, `Conn::frame`) takes the
//!    newest picture (`Scheduler::next`), writes it into the worker's memfd ring and sends a
//!    `wire::Frame` naming the slot.
//! 3. `infer-worker` letterboxes, runs the model, applies NMS and answers `wire::Detections`
//!    in source pixels; `Conn::publish` normalises them into a [`core::detections::Detections`]
//!    and `Detect::publish` hands the `Arc` to the stream's `DetectionFanout` (and, with Redis,
//!    to the other replicas through `detect::relay`, which rename it to their own frame).
//! 4. Viewers get it as SSE `event: detections` and on the WebRTC data channel, its JSON
//!    serialized once ([`core::detections::Detections::json`]).

pub(crate) mod app;
pub(crate) mod archive;
pub mod auth;
pub mod config;
pub mod core;
pub(crate) mod detect;
pub mod doctor;
pub(crate) mod http;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod out;
pub mod pipeline;
pub(crate) mod record;
pub(crate) mod restream;
pub(crate) mod source;
pub mod state;
pub(crate) mod stream;

pub use app::{run, shutdown_signal};
