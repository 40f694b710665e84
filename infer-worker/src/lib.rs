//! Sightline's detection worker library: YOLO models through ONNX Runtime.
//!
//! # Layout
//! - [`yolo`]: output layouts (v8/v11, v5, end-to-end) recognised by shape, decoding, NMS.
//! - [`letterbox`]: resize-with-padding geometry and mapping boxes back to source pixels.
//! - [`image`]: I420/RGB to the letterboxed NCHW input tensor.
//! - [`names`]: class names from Ultralytics metadata or a labels file.
//! - [`runtime`]: finding libonnxruntime and the [`runtime::Detector`].
//! - [`serve`]: the worker loop the gateway talks to, over the `wire` crate's protocol.
//! - [`job`]: offline job chunks: decode, filters, encode; [`jobq`]: where they come from
//!   (stdin/stdout of a local gateway, or Redis Streams).

pub mod image;
pub mod job;
pub mod jobq;
pub mod letterbox;
pub mod names;
pub mod runtime;
pub mod serve;
pub mod yolo;

/// Initializes FFmpeg once, its own log limited to fatal errors (the job's result says what
/// failed).
pub fn ffmpeg_ready() -> Result<(), ffmpeg_next::Error> {
    static READY: std::sync::OnceLock<Result<(), ffmpeg_next::Error>> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
        ffmpeg_next::init()
    })
}
