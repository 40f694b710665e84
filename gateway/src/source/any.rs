//! [`Sources`]: every kind of source behind one [`CameraSource`], chosen by URL scheme.

use std::time::Duration;

use async_trait::async_trait;

use super::file::FileSource;
use super::rtsp::RtspSource;
use super::{CameraSource, SessionSink};
use crate::config::StreamConfig;
use crate::core::Error;

/// Every kind of source, by URL scheme: `file://` files, `screen://` X11 displays, anything
/// else RTSP.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    file: FileSource,
}

#[async_trait]
impl CameraSource for Sources {
    async fn session(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
        if stream.url.starts_with("file:") {
            self.file.session(stream, stall, sink).await
        } else if stream.url.starts_with("screen:") {
            super::screen::session(stream, stall, sink).await
        } else {
            RtspSource.session(stream, stall, sink).await
        }
    }
}
