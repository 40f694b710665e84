//! HLS VOD over the stored fragments (`GET /api/streams/{id}/vod.m3u8`, RFC 8216bis): each
//! fragment is a media segment addressed by byte range in its segment file
//! (`EXT-X-BYTERANGE`), each file's init segment an `EXT-X-MAP` with its byte range; nothing
//! is re-muxed or copied. A gap in the recording (more than 100 ms) or another codec
//! configuration is an `EXT-X-DISCONTINUITY`; `EXT-X-PROGRAM-DATE-TIME` gives each file's and
//! each discontinuity's wall-clock time, so a player can map its position to the timeline.
//! Written with m3u8-rs.

use m3u8_rs::{ByteRange, Map, MediaPlaylist, MediaPlaylistType, MediaSegment};

use super::Recorders;
use super::export::select;
use crate::core::Error;

/// A gap between fragments beyond this is a discontinuity.
const GAP_MS: u64 = 100;

/// The playlist of `stream` over `[from_ms, to_ms)`; segment URIs are
/// `recordings/{file}{suffix}` (relative to the playlist; `suffix` carries a viewer token).
///
/// Errors: as [`select`].
pub(crate) async fn playlist(recorders: &Recorders, stream: &str, from_ms: u64, to_ms: u64, suffix: &str) -> Result<String, Error> {
    let (found, range) = select(recorders, stream, from_ms, to_ms).await?;
    let mut segments = Vec::with_capacity(range.len());
    let mut previous: Option<&super::export::Found> = None;
    let mut longest = 0f32;
    for f in &found[range] {
        let name = f.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let uri = format!("recordings/{name}{suffix}");
        let new_file = previous.is_none_or(|p| p.file != f.file);
        let discontinuity = previous.is_some_and(|p| p.init != f.init || f.start_ms().abs_diff(p.end_ms()) > GAP_MS);
        let duration = f.info.duration as f32 / media::fmp4::TIMESCALE as f32;
        longest = longest.max(duration);
        segments.push(MediaSegment {
            uri: uri.clone(),
            duration,
            byte_range: Some(ByteRange { length: f.info.len, offset: Some(f.info.offset) }),
            discontinuity,
            map: (new_file || discontinuity).then(|| Map {
                uri,
                byte_range: Some(ByteRange { length: f.init.len() as u64, offset: Some(0) }),
                ..Default::default()
            }),
            program_date_time: (new_file || discontinuity)
                .then(|| chrono::DateTime::from_timestamp_millis(f.start_ms() as i64).map(|t| t.fixed_offset()))
                .flatten(),
            ..Default::default()
        });
        previous = Some(f);
    }
    let independent = found.iter().all(|f| f.info.keyframe);
    let list = MediaPlaylist {
        version: Some(7),
        target_duration: longest.ceil().max(1.0) as u64,
        media_sequence: 0,
        segments,
        end_list: true,
        playlist_type: Some(MediaPlaylistType::Vod),
        independent_segments: independent,
        ..Default::default()
    };
    let mut out = Vec::new();
    list.write_to(&mut out).map_err(|e| Error::RecordingUnreadable(e.to_string()))?;
    String::from_utf8(out).map_err(|e| Error::RecordingUnreadable(e.to_string()))
}
