//! How viewers receive a stream: one module per transport, none importing another.
//!
//! - [`sse`]: `text/event-stream` with base64 JPEG frames, state, detections and the stop.
//! - [`hls`]: live LL-HLS, one producer per stream for every viewer (fMP4 parts).
//! - [`mjpeg`]: `multipart/x-mixed-replace` JPEG parts, for `<img>` and VLC.
//! - [`mqtt`]: analytics events to an MQTT broker (not a viewer: no place, no end).
//! - [`webhook`]: analytics events POSTed to HTTP receivers, signed, retried.
//! - [`webrtc`]: WHEP sessions on str0m event loops, H.264 passed through, detections on
//!   the data channel.
//!
//! Each takes a viewer place on the stream (on-demand pull runs while any is held) and ends
//! when the stream's [`EndWatch`](crate::stream::EndWatch) says so: the stream stopped, the
//! gateway shuts down, or the viewer token expired.

pub(crate) mod hls;
pub(crate) mod mjpeg;
pub(crate) mod mqtt;
pub(crate) mod sse;
pub(crate) mod webhook;
pub(crate) mod webrtc;
