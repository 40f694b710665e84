//! Sightline's detection worker library: YOLO models through ONNX Runtime.
//!
//! # Layout
//! - [`yolo`]: output layouts (v8/v11, v5, end-to-end) recognised by shape, decoding, NMS.
//! - [`letterbox`]: resize-with-padding geometry and mapping boxes back to source pixels.
//! - [`image`]: I420/RGB to the letterboxed NCHW input tensor.
//! - [`names`]: class names from Ultralytics metadata or a labels file.
//! - [`runtime`]: finding libonnxruntime and the [`runtime::Detector`].
//! - [`serve`]: the worker loop the gateway talks to, over the `wire` crate's protocol.

pub mod image;
pub mod letterbox;
pub mod names;
pub mod runtime;
pub mod serve;
pub mod yolo;
