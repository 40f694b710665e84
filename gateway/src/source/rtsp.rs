//! RTSP cameras through `retina` (RFC 2326): DESCRIBE, SETUP (TCP interleaved by default,
//! RFC 2326 §10.12, or UDP), PLAY, then H.264 (RFC 6184) or H.265 (RFC 7798) access units in
//! Annex B form with the parameter sets in front of keyframes (retina's `FrameFormat::SIMPLE`).
//! The first video stream of either codec is taken; H.264 wins when a camera offers both.
//! With the stream's `audio` on, the first audio stream the gateway takes (G.711 PCMA/PCMU,
//! AAC `mpeg4-generic`, RFC 3551/3640) is set up too; AAC frames come ADTS-framed. An audio
//! SETUP the camera refuses leaves the session video-only. A stall is judged on video alone.
//!
//! Capture times come from the camera's RTCP sender reports (RFC 3550 §6.4.1) through a
//! [`CaptureClock`]: every replica pulling the camera computes the same time for a frame,
//! which is how detection messages relayed between replicas find their frame. Before the
//! first report, or when the camera's clock is more than [`MAX_CLOCK_SKEW_MS`] away from
//! ours (a camera that was never set), the receive time is used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use media::rtcp::CaptureClock;
use media::{AudioCodec, RtpTimestamp, VideoCodec};
use retina::client::{InitialTimestampPolicy, PlayOptions, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tracing::{debug, info, warn};

use super::{CameraSource, SessionSink};
use crate::config::redact::{redact_url, scrub};
use crate::config::{StreamConfig, Transport};
use crate::core::Error;
use crate::core::audio::{AudioFrame, AudioHealth, AudioInfo};
use crate::core::clock::now_ms;
use crate::core::frame::NewAccessUnit;

/// Largest difference between a camera's sender-report clock and ours that is still taken
/// as the camera's capture time, ms. Beyond it the camera's clock is wrong (never set, or
/// counting from boot) and frames are stamped with their receive time.
const MAX_CLOCK_SKEW_MS: u64 = 10_000;

/// Pulls RTSP cameras. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct RtspSource;

/// Splits credentials out of the URL: retina takes them separately (RFC 2617 digest/basic).
fn split_credentials(stream: &str, raw: &str) -> Result<(url::Url, Option<retina::client::Credentials>), Error> {
    let mut url =
        url::Url::parse(raw).map_err(|e| Error::CameraUrl { stream: stream.into(), detail: format!("{}: {e}", redact_url(raw)) })?;
    let creds = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        Some(retina::client::Credentials { username: decode(url.username()), password: decode(url.password().unwrap_or("")) })
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

#[async_trait]
impl CameraSource for RtspSource {
    async fn session(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
        let id = stream.id.as_str();
        let (url, creds) = split_credentials(id, &stream.url)?;
        let password = creds.as_ref().map(|c| c.password.clone());
        let err = |e: retina::Error| Error::Rtsp { stream: id.into(), detail: scrub(&e.to_string(), password.as_deref()) };
        let timed = |what: &'static str| move |_| Error::Rtsp { stream: id.into(), detail: format!("{what} timed out after {stall:?}") };

        let options = SessionOptions::default().creds(creds).user_agent("Sightline".into());
        let mut described =
            tokio::time::timeout(stall, retina::client::Session::describe(url, options)).await.map_err(timed("DESCRIBE"))?.map_err(err)?;
        let codec_of =
            |s: &retina::client::Stream| (s.media() == "video").then(|| VideoCodec::from_encoding_name(s.encoding_name())).flatten();
        let (video, codec) = [VideoCodec::H264, VideoCodec::H265]
            .into_iter()
            .find_map(|wanted| described.streams().iter().position(|s| codec_of(s) == Some(wanted)).map(|i| (i, wanted)))
            .ok_or_else(|| Error::NoVideo { stream: id.into() })?;
        let setup = || {
            let transport = match stream.transport {
                Transport::Tcp => retina::client::Transport::Tcp(Default::default()),
                Transport::Udp => retina::client::Transport::Udp(Default::default()),
            };
            SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE)
        };
        tokio::time::timeout(stall, described.setup(video, setup())).await.map_err(timed("SETUP"))?.map_err(err)?;
        let (audio_health, audio) = match stream.audio.then(|| pick_audio(described.streams())).flatten() {
            Some((i, health, Some(info))) => match tokio::time::timeout(stall, described.setup(i, setup())).await {
                Ok(Ok(_)) => (Some(health), Some((i, info))),
                Ok(Err(e)) => {
                    warn!(stream = id, error = %scrub(&e.to_string(), password.as_deref()), "camera refused the audio SETUP; video only");
                    (None, None)
                }
                Err(elapsed) => return Err(timed("audio SETUP")(elapsed)),
            },
            Some((_, health, None)) => (Some(health), None),
            None => (None, None),
        };
        // `rtptime` is used when the server gives it for every track, else the first packet
        // starts each track (retina's default would refuse audio + video without it).
        let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
        let playing = tokio::time::timeout(stall, described.play(play)).await.map_err(timed("PLAY"))?.map_err(err)?;
        let mut demuxed = playing.demuxed().map_err(err)?;
        info!(stream = id, url = %redact_url(&stream.url), %codec, audio = ?audio_health.as_ref().map(|a| &a.codec), "camera session playing");
        let audio_index = audio.as_ref().map(|(i, _)| *i);
        let audio_clock_hz = audio.as_ref().map_or(8_000, |(_, info)| info.clock_rate);
        sink.audio_setup(audio_health, audio.map(|(_, info)| info));

        // Parameters from the SDP's sprop-parameter-sets, if the camera sent them.
        let mut parameter_sets = ParameterSets::default();
        note_parameters(id, &demuxed, video, sink, &mut parameter_sets);
        let mut clock = Clocks { capture: CaptureClock::default(), skew_logged: false };
        // The audio track's own sender reports (its RTP clock and timeline are its own).
        let mut audio_clock = CaptureClock::default();
        // A stall is no video for `stall`, whatever audio arrives meanwhile.
        let mut video_deadline = tokio::time::Instant::now() + stall;
        loop {
            let item = match tokio::time::timeout_at(video_deadline, demuxed.next()).await {
                Err(_) => return Err(Error::Stalled { stream: id.into(), after: stall }),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(err(e)),
                Ok(Some(Ok(item))) => item,
            };
            let frame = match item {
                CodecItem::VideoFrame(frame) => frame,
                CodecItem::Rtcp(rtcp) if rtcp.stream_id() == video => {
                    clock.sender_reports(id, &rtcp);
                    continue;
                }
                CodecItem::Rtcp(rtcp) if Some(rtcp.stream_id()) == audio_index => {
                    for sr in rtcp.pkts().filter_map(|p| p.as_sender_report().ok().flatten()) {
                        audio_clock.sender_report(sr.ntp_timestamp().0, RtpTimestamp::new(sr.rtp_timestamp()));
                    }
                    continue;
                }
                CodecItem::AudioFrame(frame) if Some(frame.stream_id()) == audio_index => {
                    let data = Arc::from(frame.data());
                    let rtp_timestamp = frame.timestamp().timestamp() as u32;
                    // As for video: the camera's clock when it is believable, else unknown.
                    let capture_ms = audio_clock
                        .capture_ms_at(RtpTimestamp::new(rtp_timestamp), audio_clock_hz)
                        .filter(|at| at.abs_diff(now_ms()) <= MAX_CLOCK_SKEW_MS)
                        .unwrap_or(0);
                    sink.audio(AudioFrame { rtp_timestamp, received: Instant::now(), capture_ms, data });
                    continue;
                }
                _ => continue,
            };
            video_deadline = tokio::time::Instant::now() + stall;
            if frame.loss() > 0 {
                sink.lost(u64::from(frame.loss()));
            }
            if frame.has_new_parameters() {
                note_parameters(id, &demuxed, video, sink, &mut parameter_sets);
            }
            let rtp_timestamp = RtpTimestamp::new(frame.timestamp().timestamp() as u32);
            let capture_ms = clock.capture_ms(id, rtp_timestamp);
            let keyframe = frame.is_random_access_point();
            let (keyframe, data) = parameter_sets.complete(codec, keyframe, frame.into_data());
            sink.unit(NewAccessUnit { rtp_timestamp, capture_ms, keyframe, codec, data });
        }
    }
}

/// A session's capture clock and whether its skew was reported.
struct Clocks {
    capture: CaptureClock,
    skew_logged: bool,
}

impl Clocks {
    /// Takes the sender reports of a compound RTCP packet (RFC 3550 §6.1).
    fn sender_reports(&mut self, stream: &str, rtcp: &retina::rtcp::ReceivedCompoundPacket) {
        for packet in rtcp.pkts() {
            if let Ok(Some(sr)) = packet.as_sender_report() {
                let at = self.capture.sender_report(sr.ntp_timestamp().0, RtpTimestamp::new(sr.rtp_timestamp()));
                debug!(stream, ?at, rtp_timestamp = sr.rtp_timestamp(), "RTCP sender report");
            }
        }
    }

    /// The capture time of the frame stamped `rtp_timestamp`: the camera's clock when it is
    /// known and believable, else now.
    fn capture_ms(&mut self, stream: &str, rtp_timestamp: RtpTimestamp) -> u64 {
        let now = now_ms();
        match self.capture.capture_ms(rtp_timestamp) {
            Some(at) if at.abs_diff(now) <= MAX_CLOCK_SKEW_MS => {
                // Camera encode + network + depacketization; 0 when the camera's clock runs ahead.
                let delay_ms = now.saturating_sub(at);
                metrics::histogram!("sightline_ingest_capture_delay_seconds", "stream" => stream.to_owned())
                    .record(delay_ms as f64 / 1000.0);
                at
            }
            Some(at) => {
                if !std::mem::replace(&mut self.skew_logged, true) {
                    warn!(
                        stream,
                        skew_ms = at as i64 - now as i64,
                        "the camera's clock (RTCP sender reports) is off by more than 10 s; using receive times"
                    );
                }
                now
            }
            None => now,
        }
    }
}

/// What a camera's `DESCRIBE` (RFC 2326 §10.2) announces: `gateway doctor` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Described {
    /// Video codec (`h264`, `h265`), or the SDP's encoding name when not one of those.
    pub(crate) codec: String,
    /// Whether the gateway takes that codec.
    pub(crate) supported: bool,
    /// Picture size from the SDP's parameter sets (`sprop-parameter-sets`), px; `None` when
    /// the camera sends them in band only.
    pub(crate) width: Option<u32>,
    /// Picture height, px.
    pub(crate) height: Option<u32>,
    /// Audio codec (`aac`, `opus`, `pcma`, …) when the camera offers audio.
    pub(crate) audio: Option<String>,
}

/// Sends one `DESCRIBE` to the stream's camera within `timeout` (no `SETUP`, no `PLAY`: the
/// camera's session count is not used). Errors: the URL does not parse, the camera does not
/// answer in time, refuses (401, 404, …; credentials scrubbed from the message), or offers no
/// video.
pub(crate) async fn describe(stream: &StreamConfig, timeout: Duration) -> Result<Described, Error> {
    let id = stream.id.as_str();
    let (url, creds) = split_credentials(id, &stream.url)?;
    let password = creds.as_ref().map(|c| c.password.clone());
    let options = SessionOptions::default().creds(creds).user_agent("Sightline doctor".into());
    let described = tokio::time::timeout(timeout, retina::client::Session::describe(url, options))
        .await
        .map_err(|_| Error::Rtsp { stream: id.into(), detail: format!("DESCRIBE timed out after {timeout:?}") })?
        .map_err(|e| Error::Rtsp { stream: id.into(), detail: scrub(&e.to_string(), password.as_deref()) })?;
    let streams = described.streams();
    let video = streams
        .iter()
        .find(|s| s.media() == "video" && VideoCodec::from_encoding_name(s.encoding_name()).is_some())
        .or_else(|| streams.iter().find(|s| s.media() == "video"))
        .ok_or_else(|| Error::NoVideo { stream: id.into() })?;
    let codec = VideoCodec::from_encoding_name(video.encoding_name());
    let size = match video.parameters() {
        Some(ParametersRef::Video(p)) => Some(p.pixel_dimensions()),
        _ => None,
    };
    Ok(Described {
        codec: codec.map_or_else(|| video.encoding_name().to_ascii_lowercase(), |c| c.to_string()),
        supported: codec.is_some(),
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        audio: pick_audio(streams).map(|(_, health, _)| health.codec),
    })
}

/// The audio stream to set up: the first one of a codec the gateway takes, else the first one
/// (reported, not set up). `(index, health, info)`; `info` is `None` for a codec not taken.
fn pick_audio(streams: &[retina::client::Stream]) -> Option<(usize, AudioHealth, Option<AudioInfo>)> {
    let audio = || streams.iter().enumerate().filter(|(_, s)| s.media() == "audio");
    let (i, s) = audio().find(|(_, s)| AudioCodec::from_encoding_name(s.encoding_name()).is_some()).or_else(|| audio().next())?;
    let codec = AudioCodec::from_encoding_name(s.encoding_name());
    let channels = s.channels().map_or(1, |c| c.get());
    let health = AudioHealth {
        codec: codec.map_or_else(|| s.encoding_name().to_ascii_lowercase(), |c| c.name().to_owned()),
        clock_rate: s.clock_rate_hz(),
        channels,
        supported: codec.is_some(),
    };
    Some((i, health, codec.map(|codec| AudioInfo { codec: Some(codec), clock_rate: s.clock_rate_hz(), channels })))
}

/// Reports the stream's picture size (from its SPS) to the sink.
fn note_parameters(stream: &str, demuxed: &retina::client::Demuxed, video: usize, sink: &mut dyn SessionSink, sets: &mut ParameterSets) {
    if let Some(ParametersRef::Video(p)) = demuxed.streams()[video].parameters() {
        let (w, h) = p.pixel_dimensions();
        debug!(stream, w, h, codec = p.rfc6381_codec(), "video parameters");
        sink.parameters(w, h);
        if p.rfc6381_codec().starts_with("hvc1") {
            sets.take_extra_data(p.extra_data());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h265_irap_pictures_get_their_parameter_sets() {
        // NAL unit header bytes: type << 1, then layer 0 / tid 1.
        let nal = |t: u8| [0u8, 0, 0, 1, t << 1, 1, 0xAA];
        let au = |types: &[u8]| types.iter().flat_map(|&t| nal(t)).collect::<Vec<u8>>();
        let mut p = ParameterSets::default();
        assert!(!p.complete(VideoCodec::H265, false, au(&[19])).0, "no parameter sets yet: not a starting point");
        let (k, first) = p.complete(VideoCodec::H265, true, au(&[32, 33, 34, 19]));
        assert!(k && first.len() == 28);
        assert!(!p.complete(VideoCodec::H265, false, au(&[1])).0, "a trailing picture");
        let (k, cra) = p.complete(VideoCodec::H265, false, au(&[21]));
        assert!(k, "a CRA picture is a keyframe whatever retina said");
        assert_eq!(&cra[..], &au(&[32, 33, 34, 21])[..], "with the VPS, SPS and PPS in front");
        let mut hvcc = vec![0u8; 22];
        hvcc.push(3);
        for t in [32u8, 33, 34] {
            hvcc.extend_from_slice(&[t, 0, 1, 0, 3, t << 1, 1, 0xBB]);
        }
        let mut q = ParameterSets::default();
        q.take_extra_data(&hvcc);
        let (k, cra) = q.complete(VideoCodec::H265, false, au(&[21]));
        assert!(k && cra.len() == 4 * 7 && cra[4] == 32 << 1, "parameter sets from hvcC (the SDP's), before any keyframe");
        let mut r = ParameterSets::default();
        r.take_extra_data(&au(&[32, 33, 34]));
        assert_eq!(&r.complete(VideoCodec::H265, false, au(&[21])).1[..], &au(&[32, 33, 34, 21])[..], "from Annex B extra data");
        let (k, avc) = p.complete(VideoCodec::H264, false, vec![0, 0, 0, 1, 0x65]);
        assert!(!k && avc.len() == 5, "H.264 as retina gave it");
    }

    #[test]
    fn credentials_leave_the_url() {
        let (url, creds) = split_credentials("s", "rtsp://admin:p%40ss@10.1.1.1:554/live").unwrap();
        assert_eq!(url.as_str(), "rtsp://10.1.1.1:554/live");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("admin", "p@ss"));
        let (_, creds) = split_credentials("s", "rtsp://a+b:pa+ss&x@cam/live").unwrap();
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("a+b", "pa+ss&x"), "+ and & are literal in userinfo");
        let (_, none) = split_credentials("s", "rtsp://cam/live").unwrap();
        assert!(none.is_none());
        let e = split_credentials("s", "rtsp://u:secret@[bad/x").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn capture_times_use_a_believable_camera_clock() {
        let mut clocks = Clocks { capture: CaptureClock::default(), skew_logged: false };
        let ts = RtpTimestamp::new(1000);
        let now = now_ms();
        assert!(clocks.capture_ms("s", ts).abs_diff(now) < 1000, "no report yet: receive time");
        clocks.capture.sender_report(media::rtcp::ntp_from_unix_ms(now - 500), ts);
        assert_eq!(clocks.capture_ms("s", ts.wrapping_add(9000)), now - 400, "the camera's clock, 100 ms after its report");
        clocks.capture.sender_report(media::rtcp::ntp_from_unix_ms(1_000), ts);
        assert!(clocks.capture_ms("s", ts).abs_diff(now) < 1000, "a camera clock in 1970 is not believed");
        assert!(clocks.skew_logged);
    }
}

/// The H.265 parameter sets last seen, to complete keyframes retina did not see as such.
///
/// retina 0.4 calls an H.265 access unit a random access point only when none of its slices
/// is inter-coded by its reckoning, which misses the IRAP pictures x265 (GStreamer's
/// `x265enc`) sends after the first; it then neither flags them nor puts the VPS/SPS/PPS in
/// front. The NAL unit type says it is a keyframe (H.265 Table 7-1); the parameter sets are
/// put in front here, as every consumer expects them before a keyframe.
#[derive(Default)]
struct ParameterSets {
    /// Annex B VPS, SPS and PPS, in order.
    h265: Option<Vec<u8>>,
}

impl ParameterSets {
    /// Takes the parameter sets of retina's `extra_data` (from the SDP's `sprop-vps/sps/pps`
    /// or the last keyframe it recognized): Annex B NAL units with the Annex B framing the
    /// gateway asks for, else an `hvcC` box body (ISO/IEC 14496-15 §8.3.3.1: 22 bytes, then
    /// arrays of NAL units by type, each behind a 16-bit length).
    fn take_extra_data(&mut self, extra: &[u8]) {
        if extra.starts_with(&[0, 0, 1]) || extra.starts_with(&[0, 0, 0, 1]) {
            let mut sets = Vec::new();
            for nal in media::h264::nal_units(extra).filter(|n| (32..=34).contains(&media::h265::nal_type(n))) {
                sets.extend_from_slice(&[0, 0, 0, 1]);
                sets.extend_from_slice(nal);
            }
            if !sets.is_empty() {
                self.h265 = Some(sets);
            }
            return;
        }
        let hvcc = extra;
        let mut sets = Vec::new();
        let mut at = 23; // 22 bytes of fields, then numOfArrays
        for _ in 0..*hvcc.get(22).unwrap_or(&0) {
            // array_completeness/NAL_unit_type, then numNalus.
            let Some(head) = hvcc.get(at..at + 3) else { return };
            at += 3;
            for _ in 0..u16::from_be_bytes([head[1], head[2]]) {
                let Some(len) = hvcc.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return };
                let Some(nal) = hvcc.get(at + 2..at + 2 + len) else { return };
                at += 2 + len;
                if (32..=34).contains(&media::h265::nal_type(nal)) {
                    sets.extend_from_slice(&[0, 0, 0, 1]);
                    sets.extend_from_slice(nal);
                }
            }
        }
        if !sets.is_empty() {
            self.h265 = Some(sets);
        }
    }

    /// `(keyframe, data)` for one access unit of `codec` as retina gave it.
    fn complete(&mut self, codec: VideoCodec, keyframe: bool, data: Vec<u8>) -> (bool, Bytes) {
        if codec != VideoCodec::H265 {
            return (keyframe, Bytes::from(data));
        }
        use media::h265::{is_irap, nal_type};
        let types: Vec<u8> = media::h264::nal_units(&data).map(nal_type).collect();
        if types.contains(&33) {
            let mut sets = Vec::new();
            for nal in media::h264::nal_units(&data).filter(|n| (32..=34).contains(&nal_type(n))) {
                sets.extend_from_slice(&[0, 0, 0, 1]);
                sets.extend_from_slice(nal);
            }
            self.h265 = Some(sets);
            return (keyframe || types.iter().any(|&t| is_irap(t)), Bytes::from(data));
        }
        if !types.iter().any(|&t| is_irap(t)) {
            return (keyframe, Bytes::from(data));
        }
        match &self.h265 {
            Some(sets) => {
                let mut out = Vec::with_capacity(sets.len() + data.len());
                out.extend_from_slice(sets);
                out.extend_from_slice(&data);
                (true, Bytes::from(out))
            }
            // No parameter sets yet: not decodable on its own, so not a keyframe to start at.
            None => (keyframe, Bytes::from(data)),
        }
    }
}
