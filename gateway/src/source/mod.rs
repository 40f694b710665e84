//! Where a stream's access units come from: the [`CameraSource`] trait, one camera session at
//! a time. [`rtsp::RtspSource`] pulls RTSP cameras with retina, [`file::FileSource`] plays
//! video files at 1x, [`screen`] captures an X11 display, and [`any::Sources`] picks one by
//! the URL's scheme. Reconnecting,
//! health and the hub are the stream layer's (`stream::ingest`): a source only plays one
//! session and reports what it receives.

pub(crate) mod any;
pub(crate) mod file;
pub(crate) mod rtsp;
pub(crate) mod screen;

use std::time::Duration;

use async_trait::async_trait;

use crate::config::StreamConfig;
use crate::core::Error;
use crate::core::audio::{AudioFrame, AudioHealth, AudioInfo};
use crate::core::frame::NewAccessUnit;

/// What one camera session delivers, in order.
pub(crate) trait SessionSink: Send {
    /// The video's picture size changed (or is first known), px.
    fn parameters(&mut self, width: u32, height: u32);
    /// One access unit, in decoding order.
    fn unit(&mut self, unit: NewAccessUnit);
    /// The session's audio, once before its first frame: what the camera offers (`health`,
    /// also a codec not taken) and what is taken (`info`); `None` for no audio or `audio =
    /// false`.
    fn audio_setup(&mut self, health: Option<AudioHealth>, info: Option<AudioInfo>);
    /// One audio frame, in order.
    fn audio(&mut self, frame: AudioFrame);
    /// `packets` video RTP packets never arrived (or arrived after later ones, which the RTP
    /// client drops): UDP loss before the next unit.
    fn lost(&mut self, packets: u64);
    /// `units` access units of a file were skipped: the gateway fell more than 300 ms behind
    /// the file's 1x clock (a unit and the rest of its GOP go; the file never plays slower).
    fn skipped(&mut self, units: u64);
}

/// One kind of camera. See the module docs.
#[async_trait]
pub(crate) trait CameraSource: Send + Sync + std::fmt::Debug + 'static {
    /// Connects to `stream`'s camera and plays one session, pushing what arrives into `sink`,
    /// until the camera ends it (`Ok`) or it fails. No access unit for `stall` is a failure
    /// ([`Error::Stalled`]); so is a connection step that takes longer.
    ///
    /// Errors (their messages are shown as the stream's `last_error`, credentials redacted):
    /// [`Error::CameraUrl`], [`Error::Rtsp`], [`Error::NoVideo`], [`Error::Stalled`].
    async fn session(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error>;
}
