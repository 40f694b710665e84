//! The gateway's base layer: the types every other module shares and nothing else. It
//! depends on no other module of the crate.
//!
//! - [`frame`]: an [`AccessUnit`](frame::AccessUnit) as the camera sent it, a decoded
//!   [`Picture`](frame::Picture) offered for detection, and [`Derived`](frame::Derived), the
//!   per-frame cache of what consumers make from a frame once (RTP payloads, SSE events).
//! - [`audio`]: an audio frame as received, what the stream's audio is, and its health.
//! - [`events`]: analytics events (line crossed, zone entered, …) and their live fan-out.
//! - [`detections`]: the typed detection message and the per-stream fan-out that carries it
//!   to viewers as `Arc<Detections>`, serialized once.
//! - [`error`]: the crate's one error type.
//! - [`clock`]: wall-clock milliseconds.
//! - [`shutdown`]: the signal every task follows, and why a viewer's session ends.
//! - [`net`]: dual-stack TCP listeners.
//! - [`task`]: running a task again after it panics.

pub mod audio;
pub mod clock;
pub mod detections;
pub mod error;
pub mod events;
pub mod frame;
pub mod net;
pub mod shutdown;
pub mod task;
#[cfg(test)]
pub(crate) mod test_util;

pub use error::{Error, Result};
pub use media::{FrameMeta, RtpTimestamp, StreamId};

/// The user name a replica's relay presents to another's RTSP restream, with a control token
/// as the password (`pull = "one_per_cluster"`): the holder gives it no viewer place
/// (`Auth::is_relay`).
pub const RELAY_USER: &str = "sightline-relay";

/// Compares two secrets without an early exit on the first differing byte (no timing
/// oracle); different lengths differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A line an `infer-worker` process wrote to its stderr, without the name it gives itself
/// (`infer-worker: `, `infer-worker job: `), and whether the worker marked it as information
/// (`info: ...`, e.g. the graph optimization it chose) rather than trouble to log as a warning.
pub fn worker_line(line: &str) -> (&str, bool) {
    let own = line.strip_prefix("infer-worker: ").or_else(|| line.strip_prefix("infer-worker job: ")).unwrap_or(line);
    match own.strip_prefix("info: ") {
        Some(info) => (info, true),
        None => (own, false),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn worker_lines_lose_the_name_and_say_what_is_information() {
        use super::worker_line;
        assert_eq!(
            worker_line("infer-worker: info: model m.onnx: graph optimization extended"),
            ("model m.onnx: graph optimization extended", true)
        );
        assert_eq!(worker_line("infer-worker: the gateway closed the connection"), ("the gateway closed the connection", false));
        assert_eq!(worker_line("infer-worker job: redis: refused; reconnecting"), ("redis: refused; reconnecting", false));
        assert_eq!(worker_line("thread 'main' panicked at src/main.rs:1"), ("thread 'main' panicked at src/main.rs:1", false));
    }
}
