//! AAC to Opus for WebRTC (issue #12): AAC is not a WebRTC codec (RFC 7874 §3 names Opus
//! and G.711), so a camera's AAC is decoded (libavcodec, ADTS frames as retina writes them),
//! resampled to 48 kHz (libswresample), and encoded as Opus (libopus through libavcodec,
//! 20 ms packets, RFC 7587) once per stream, into the transcoder's own [`AudioHub`] that every
//! viewer of the stream follows. It runs only while a viewer holds it ([`AudioTranscoder::watch`]).
//!
//! The Opus RTP timestamps (48 kHz) count the samples encoded, starting from the camera's first
//! timestamp scaled to 48 kHz; a gap in the camera's timestamps (lost frames, a reconnect) moves
//! them on by the gap, so the browser's jitter buffer sees the same timing the camera sent.
//!
//! G.711 to AAC for recordings ([`AacEncoding`], issue #14): no MP4 or HLS player takes G.711,
//! so a recorded camera's A-law/µ-law is decoded (libavcodec's `pcm_alaw`/`pcm_mulaw`) and
//! encoded as AAC-LC (FFmpeg's native encoder, 1024-sample frames) at the camera's rate.

use std::sync::Arc;
use std::time::Instant;

use ffmpeg::ChannelLayout;
use ffmpeg::format::Sample;
use ffmpeg::format::sample::Type as SampleType;
use ffmpeg_next as ffmpeg;
use tracing::{info, warn};

use super::codec::ffmpeg_ready;
use crate::core::StreamId;
use crate::core::audio::{AudioFrame, AudioInfo};
use crate::core::task::{Held, OnDemand};
use crate::stream::audio::AudioHub;

/// Opus' RTP clock rate and the rate it is encoded at, Hz (RFC 7587 §4.1).
pub(crate) const OPUS_RATE: u32 = 48_000;
/// Samples per channel in one Opus packet: 20 ms at 48 kHz.
const OPUS_FRAME: usize = 960;
/// Opus bit rate per channel, bit/s: speech and ambient sound from a camera microphone.
const OPUS_BITS_PER_CHANNEL: usize = 32_000;
/// A camera timestamp this far (in 48 kHz samples) from where the Opus clock expects it is a
/// jump: the Opus clock follows it instead of counting on. 200 ms.
const MAX_DRIFT: i64 = 9_600;

/// The AAC-to-Opus transcoding of one stream. See the module docs.
#[derive(Debug)]
pub(crate) struct AudioTranscoder {
    stream_id: StreamId,
    source: Arc<AudioHub>,
    out: Arc<AudioHub>,
    demand: Arc<OnDemand>,
}

impl AudioTranscoder {
    /// A transcoder of the AAC frames `source` carries; starts on the first
    /// [`AudioTranscoder::watch`].
    pub(crate) fn new(stream_id: StreamId, source: Arc<AudioHub>) -> Arc<AudioTranscoder> {
        let out = Arc::new(AudioHub::new(stream_id.clone()));
        Arc::new(AudioTranscoder { stream_id, source, out, demand: Arc::default() })
    }

    /// The Opus packets (48 kHz RTP timestamps).
    pub(crate) fn hub(&self) -> &Arc<AudioHub> {
        &self.out
    }

    /// Holds the transcoder running (starts it when it is not).
    pub(crate) fn watch(self: &Arc<Self>) -> Held {
        let me = self.clone();
        self.demand.hold("audio_transcoder", &self.stream_id, move || me.clone().run())
    }

    async fn run(self: Arc<Self>) {
        info!(stream = %self.stream_id, "WebRTC audio transcoder (AAC to Opus) started");
        let mut frames = self.source.subscribe();
        let mut work: Option<OpusWork> = None;
        let mut errors = 0u64;
        while self.demand.wanted() {
            let frame = tokio::select! {
                frame = frames.next() => frame,
                () = self.demand.released() => continue,
            };
            let Some(frame) = frame else { break };
            let Some(info) = self.source.info() else { continue };
            // AAC decode + Opus encode of one frame take well under a millisecond: done here.
            let result = match work.as_mut().filter(|w| w.chain.input == info) {
                Some(w) => w.transcode(&frame),
                None => OpusWork::new(info).and_then(|w| work.insert(w).transcode(&frame)),
            };
            match result {
                Ok(packets) => {
                    metrics::counter!("sightline_audio_transcoded_frames_total", "stream" => self.stream_id.to_string()).increment(1);
                    for packet in packets {
                        self.out.publish(packet);
                    }
                }
                Err(e) => {
                    errors += 1;
                    metrics::counter!("sightline_transcode_errors_total", "stream" => self.stream_id.to_string()).increment(1);
                    if errors.is_power_of_two() {
                        warn!(stream = %self.stream_id, errors, error = %e, "audio transcoder: cannot transcode an AAC frame");
                    }
                    work = None;
                }
            }
        }
        info!(stream = %self.stream_id, "WebRTC audio transcoder stopped");
    }
}

/// A decoder of one camera audio configuration, the resampler from what it decodes, and an
/// encoder: what both transcoders here are made of.
struct Chain {
    input: AudioInfo,
    decoder: ffmpeg::decoder::Audio,
    resampler: Option<ffmpeg::software::resampling::Context>,
    encoder: ffmpeg::encoder::Audio,
    /// The encoder's channel layout, and its number of channels (1 or 2).
    layout: ChannelLayout,
    channels: usize,
}

/// The decoder, resampler and encoder of one AAC configuration.
struct OpusWork {
    chain: Chain,
    /// Resampled interleaved 16-bit samples waiting for a whole Opus frame.
    pending: Vec<u8>,
    /// The Opus RTP timestamp of the first sample in `pending`.
    clock: Option<u32>,
}

impl OpusWork {
    fn new(input: AudioInfo) -> Result<OpusWork, ffmpeg::Error> {
        ffmpeg_ready()?;
        let aac = ffmpeg::decoder::find(ffmpeg::codec::Id::AAC).ok_or(ffmpeg::Error::DecoderNotFound)?;
        let decoder = ffmpeg::codec::Context::new_with_codec(aac).decoder().audio()?;
        let channels = usize::from(input.channels.clamp(1, 2));
        let layout = if channels == 1 { ChannelLayout::MONO } else { ChannelLayout::STEREO };
        let opus = ffmpeg::encoder::find_by_name("libopus").ok_or(ffmpeg::Error::EncoderNotFound)?;
        let mut encoder = ffmpeg::codec::Context::new_with_codec(opus).encoder().audio()?;
        encoder.set_rate(OPUS_RATE as i32);
        encoder.set_channel_layout(layout);
        encoder.set_format(Sample::I16(SampleType::Packed));
        encoder.set_bit_rate(OPUS_BITS_PER_CHANNEL * channels);
        encoder.set_time_base(ffmpeg::Rational::new(1, OPUS_RATE as i32));
        let mut options = ffmpeg::Dictionary::new();
        options.set("frame_duration", "20");
        let encoder = encoder.open_with(options)?;
        let chain = Chain { input, decoder, resampler: None, encoder, layout, channels };
        Ok(OpusWork { chain, pending: Vec::new(), clock: None })
    }

    /// Decodes one ADTS frame and returns the Opus packets that completed.
    fn transcode(&mut self, frame: &AudioFrame) -> Result<Vec<AudioFrame>, ffmpeg::Error> {
        self.follow_clock(frame.rtp_timestamp);
        self.chain.decoder.send_packet(&ffmpeg::Packet::copy(&frame.data))?;
        let mut decoded = ffmpeg::frame::Audio::empty();
        while self.chain.decoder.receive_frame(&mut decoded).is_ok() {
            self.resample(&decoded)?;
        }
        let mut out = Vec::new();
        let bytes = OPUS_FRAME * self.chain.channels * 2;
        while self.pending.len() >= bytes {
            let mut input = ffmpeg::frame::Audio::new(Sample::I16(SampleType::Packed), OPUS_FRAME, self.chain.layout);
            input.set_rate(OPUS_RATE);
            input.data_mut(0)[..bytes].copy_from_slice(&self.pending[..bytes]);
            self.pending.drain(..bytes);
            let timestamp = self.clock.unwrap_or(0);
            self.clock = Some(timestamp.wrapping_add(OPUS_FRAME as u32));
            input.set_pts(Some(i64::from(timestamp)));
            self.chain.encoder.send_frame(&input)?;
            let mut packet = ffmpeg::Packet::empty();
            while self.chain.encoder.receive_packet(&mut packet).is_ok() {
                if let Some(data) = packet.data() {
                    // The packet's pts is its first sample's (less the encoder's look-ahead).
                    let rtp_timestamp = packet.pts().unwrap_or(i64::from(timestamp)) as u32;
                    out.push(AudioFrame { rtp_timestamp, received: Instant::now(), capture_ms: 0, data: Arc::from(data) });
                }
            }
        }
        Ok(out)
    }

    /// Keeps the Opus clock on the camera's: where the camera's timestamp (scaled to 48 kHz)
    /// of this frame is more than [`MAX_DRIFT`] from where the clock expects it, the clock
    /// jumps there (what is pending is dropped: it belongs to the old timeline).
    fn follow_clock(&mut self, camera_timestamp: u32) {
        let rate = u64::from(self.chain.input.clock_rate.max(1));
        let scaled = (u64::from(camera_timestamp) * u64::from(OPUS_RATE) / rate) as u32;
        let queued = (self.pending.len() / (self.chain.channels * 2)) as u32;
        let expected = self.clock.map(|c| c.wrapping_add(queued));
        let drift = expected.map_or(i64::MAX, |e| i64::from(scaled.wrapping_sub(e) as i32));
        if drift.abs() > MAX_DRIFT {
            self.pending.clear();
            self.clock = Some(scaled);
        }
    }

    /// Converts decoded samples to 48 kHz interleaved 16-bit and queues them.
    fn resample(&mut self, decoded: &ffmpeg::frame::Audio) -> Result<(), ffmpeg::Error> {
        let resampler = converter(&mut self.chain.resampler, decoded, Sample::I16(SampleType::Packed), self.chain.layout, OPUS_RATE)?;
        // Room for the upsampled frame plus what the resampler holds back.
        let capacity = decoded.samples() * OPUS_RATE as usize / decoded.rate().max(1) as usize + 256;
        let mut out = ffmpeg::frame::Audio::new(Sample::I16(SampleType::Packed), capacity, self.chain.layout);
        resampler.run(decoded, &mut out)?;
        let bytes = out.samples() * self.chain.channels * 2;
        self.pending.extend_from_slice(&out.data(0)[..bytes]);
        Ok(())
    }
}

/// The resampler in `slot` from `decoded`'s format, layout and rate to `format`, `layout` and
/// `rate`, made again when the decoded samples change.
fn converter<'a>(
    slot: &'a mut Option<ffmpeg::software::resampling::Context>,
    decoded: &ffmpeg::frame::Audio,
    format: Sample,
    layout: ChannelLayout,
    rate: u32,
) -> Result<&'a mut ffmpeg::software::resampling::Context, ffmpeg::Error> {
    let from =
        if decoded.channel_layout().is_empty() { ChannelLayout::default(i32::from(decoded.channels())) } else { decoded.channel_layout() };
    if let Some(r) = slot.as_ref()
        && (r.input().format != decoded.format() || r.input().rate != decoded.rate() || r.input().channel_layout != from)
    {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(ffmpeg::software::resampling::Context::get(decoded.format(), from, decoded.rate(), format, layout, rate)?);
    }
    Ok(slot.as_mut().expect("made above"))
}

/// AAC bit rate per channel for G.711 sources, bit/s: more than G.711's 8 kHz band needs.
const AAC_BITS_PER_CHANNEL: usize = 32_000;

/// One AAC access unit made from G.711: raw (no ADTS header), timed on the camera's clock.
#[derive(Debug)]
pub(crate) struct EncodedAac {
    /// The camera's RTP timestamp (its clock rate) of the unit's first sample, as decoded
    /// (the encoder's priming frame comes first, 1024 samples before the camera's first).
    pub(crate) rtp_timestamp: u32,
    /// The raw access unit.
    pub(crate) data: Vec<u8>,
}

/// G.711 to AAC-LC of one camera audio configuration. See the module docs.
pub(crate) struct AacEncoding {
    chain: Chain,
    /// Decoded samples, one byte vector of 32-bit floats per channel, waiting for a whole AAC
    /// frame.
    pending: Vec<Vec<u8>>,
    /// The camera's timestamp of the first sample encoded, and the samples taken since.
    base: Option<u32>,
    taken: u64,
}

impl AacEncoding {
    /// An encoder for G.711 described by `input` (its rate and channels).
    ///
    /// Errors: not G.711, or FFmpeg lacking the G.711 decoders or the AAC encoder.
    pub(crate) fn new(input: AudioInfo) -> Result<AacEncoding, ffmpeg::Error> {
        ffmpeg_ready()?;
        let id = match input.codec {
            Some(media::AudioCodec::Pcma) => ffmpeg::codec::Id::PCM_ALAW,
            Some(media::AudioCodec::Pcmu) => ffmpeg::codec::Id::PCM_MULAW,
            _ => return Err(ffmpeg::Error::InvalidData),
        };
        let channels = usize::from(input.channels.clamp(1, 2));
        let layout = if channels == 1 { ChannelLayout::MONO } else { ChannelLayout::STEREO };
        let rate = input.clock_rate.max(1) as i32;
        // A PCM decoder needs its rate and channels before it opens; ffmpeg-next sets those
        // only on encoders, so they come over in the parameters of one (never opened).
        let g711 = ffmpeg::encoder::find(id).ok_or(ffmpeg::Error::EncoderNotFound)?;
        let mut described = ffmpeg::codec::Context::new_with_codec(g711).encoder().audio()?;
        described.set_rate(rate);
        described.set_channel_layout(layout);
        described.set_format(Sample::I16(SampleType::Packed));
        let decoder_codec = ffmpeg::decoder::find(id).ok_or(ffmpeg::Error::DecoderNotFound)?;
        let decoder = ffmpeg::codec::Context::from_parameters(&described)?.decoder().open_as(decoder_codec)?.audio()?;
        let aac = ffmpeg::encoder::find(ffmpeg::codec::Id::AAC).ok_or(ffmpeg::Error::EncoderNotFound)?;
        let mut encoder = ffmpeg::codec::Context::new_with_codec(aac).encoder().audio()?;
        encoder.set_rate(rate);
        encoder.set_channel_layout(layout);
        encoder.set_format(Sample::F32(SampleType::Planar));
        encoder.set_bit_rate(AAC_BITS_PER_CHANNEL * channels);
        encoder.set_time_base(ffmpeg::Rational::new(1, rate));
        let encoder = encoder.open()?;
        let chain = Chain { input, decoder, resampler: None, encoder, layout, channels };
        Ok(AacEncoding { chain, pending: vec![Vec::new(); channels], base: None, taken: 0 })
    }

    /// The configuration of the AAC made (AAC-LC at the camera's rate and channels).
    pub(crate) fn config(&self) -> Option<media::audio::AacConfig> {
        media::audio::AacConfig::lc(self.chain.input.clock_rate, self.chain.channels as u16)
    }

    /// The G.711 this encoder takes.
    pub(crate) fn input(&self) -> &AudioInfo {
        &self.chain.input
    }

    /// Whether `frame` is not where the samples taken so far put the camera's clock (a gap
    /// or a new camera session, more than [`MAX_DRIFT`]'s 200 ms): the encoder must start
    /// again there.
    pub(crate) fn jumped(&self, frame: &AudioFrame) -> bool {
        let Some(base) = self.base else { return false };
        let queued = (self.pending[0].len() / 4) as u64;
        let expected = base.wrapping_add((self.taken + queued) as u32);
        let drift = i64::from(frame.rtp_timestamp.wrapping_sub(expected) as i32);
        drift.abs() > i64::from(self.chain.input.clock_rate.max(1)) / 5
    }

    /// Decodes one G.711 payload and returns the AAC units that completed.
    ///
    /// Errors: what libavcodec reports (a new [`AacEncoding`] should take over).
    pub(crate) fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAac>, ffmpeg::Error> {
        let base = *self.base.get_or_insert(frame.rtp_timestamp);
        self.chain.decoder.send_packet(&ffmpeg::Packet::copy(&frame.data))?;
        let mut decoded = ffmpeg::frame::Audio::empty();
        while self.chain.decoder.receive_frame(&mut decoded).is_ok() {
            self.queue(&decoded)?;
        }
        let size = (self.chain.encoder.frame_size() as usize).max(1);
        let mut out = Vec::new();
        while self.pending[0].len() >= size * 4 {
            let mut input = ffmpeg::frame::Audio::new(Sample::F32(SampleType::Planar), size, self.chain.layout);
            input.set_rate(self.chain.input.clock_rate);
            for (plane, queued) in self.pending.iter_mut().enumerate() {
                input.data_mut(plane)[..size * 4].copy_from_slice(&queued[..size * 4]);
                queued.drain(..size * 4);
            }
            input.set_pts(Some(self.taken as i64));
            self.taken += size as u64;
            self.chain.encoder.send_frame(&input)?;
            let mut packet = ffmpeg::Packet::empty();
            while self.chain.encoder.receive_packet(&mut packet).is_ok() {
                if let Some(data) = packet.data() {
                    // Its pts counts samples from the first taken, less the priming.
                    let offset = packet.pts().unwrap_or(self.taken as i64 - size as i64);
                    out.push(EncodedAac { rtp_timestamp: base.wrapping_add(offset as u32), data: data.to_vec() });
                }
            }
        }
        Ok(out)
    }

    /// Converts decoded samples to planar 32-bit float (the AAC encoder's format) and queues
    /// them.
    fn queue(&mut self, decoded: &ffmpeg::frame::Audio) -> Result<(), ffmpeg::Error> {
        let resampler =
            converter(&mut self.chain.resampler, decoded, Sample::F32(SampleType::Planar), self.chain.layout, self.chain.input.clock_rate)?;
        let mut out = ffmpeg::frame::Audio::new(Sample::F32(SampleType::Planar), decoded.samples() + 64, self.chain.layout);
        resampler.run(decoded, &mut out)?;
        let bytes = out.samples() * 4;
        for (plane, queued) in self.pending.iter_mut().enumerate() {
            queued.extend_from_slice(&out.data(plane)[..bytes]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use media::AudioCodec;

    use super::*;

    /// ADTS AAC frames made by ffmpeg from a 440 Hz tone: 16 kHz mono, 2 s.
    fn aac_frames() -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.aac");
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=2", "-c:a", "aac", "-f", "adts"])
            .arg(&path)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
        let bytes = std::fs::read(&path).unwrap();
        let mut frames = Vec::new();
        let mut at = 0;
        while at + 7 <= bytes.len() {
            assert_eq!((bytes[at], bytes[at + 1] & 0xf0), (0xff, 0xf0), "ADTS sync at {at}");
            let len = (usize::from(bytes[at + 3] & 3) << 11) | (usize::from(bytes[at + 4]) << 3) | usize::from(bytes[at + 5] >> 5);
            frames.push(bytes[at..at + len].to_vec());
            at += len;
        }
        frames
    }

    #[test]
    fn aac_becomes_20_ms_opus_packets_on_a_48_khz_clock() {
        let frames = aac_frames();
        assert!(frames.len() > 25, "{} frames", frames.len());
        let info = AudioInfo { codec: Some(AudioCodec::Aac), clock_rate: 16_000, channels: 1 };
        let mut work = OpusWork::new(info).unwrap();
        let mut packets = Vec::new();
        for (i, data) in frames.iter().enumerate() {
            // AAC frames are 1024 samples; the camera's clock starts at 1000.
            let frame =
                AudioFrame { rtp_timestamp: 1000 + 1024 * i as u32, received: Instant::now(), capture_ms: 0, data: Arc::from(&data[..]) };
            packets.extend(work.transcode(&frame).unwrap());
        }
        // 2 s of audio (and the AAC encoder's priming): ~100 packets of 20 ms.
        assert!((90..=110).contains(&packets.len()), "{} packets", packets.len());
        for pair in packets.windows(2) {
            assert_eq!(pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp), 960, "20 ms apart");
        }
        assert!(packets.iter().all(|p| !p.data.is_empty() && p.data.len() < 400), "Opus packets of 32 kbit/s");
        // Decoded back by libavcodec, each is 20 ms of audio that is not silence.
        let opus = ffmpeg::decoder::find(ffmpeg::codec::Id::OPUS).unwrap();
        let mut decoder = ffmpeg::codec::Context::new_with_codec(opus).decoder().audio().unwrap();
        let mut samples = 0;
        let mut loud = 0;
        for p in &packets {
            decoder.send_packet(&ffmpeg::Packet::copy(&p.data)).unwrap();
            let mut out = ffmpeg::frame::Audio::empty();
            while decoder.receive_frame(&mut out).is_ok() {
                samples += out.samples();
                let bytes = out.data(0);
                loud += bytes.iter().filter(|b| **b != 0).count();
            }
        }
        assert!(samples >= 90 * 960, "{samples} samples decoded");
        assert!(loud > samples, "a tone, not silence");
    }

    #[test]
    fn a_camera_timestamp_jump_moves_the_opus_clock() {
        let frames = aac_frames();
        let info = AudioInfo { codec: Some(AudioCodec::Aac), clock_rate: 16_000, channels: 1 };
        let mut work = OpusWork::new(info).unwrap();
        let mut last = None;
        for (i, data) in frames.iter().take(20).enumerate() {
            // Half-way the camera restarts its clock 10 s later.
            let ts = 1024 * i as u32 + if i >= 10 { 160_000 } else { 0 };
            let frame = AudioFrame { rtp_timestamp: ts, received: Instant::now(), capture_ms: 0, data: Arc::from(&data[..]) };
            for p in work.transcode(&frame).unwrap() {
                last = Some(p.rtp_timestamp);
            }
        }
        let last = last.expect("packets");
        assert!(last > 480_000, "the Opus clock followed the camera's jump of 10 s (480 000 at 48 kHz): {last}");
    }

    #[test]
    fn garbage_does_not_stop_the_audio() {
        let info = AudioInfo { codec: Some(AudioCodec::Aac), clock_rate: 16_000, channels: 1 };
        let mut work = OpusWork::new(info).unwrap();
        let garbage = AudioFrame {
            rtp_timestamp: 0,
            received: Instant::now(),
            capture_ms: 0,
            data: Arc::from(&b"\xff\xf1garbage that is not AAC"[..]),
        };
        let _ = work.transcode(&garbage);
        let mut packets = 0;
        for (i, data) in aac_frames().iter().take(20).enumerate() {
            let frame =
                AudioFrame { rtp_timestamp: 1024 * (i as u32 + 1), received: Instant::now(), capture_ms: 0, data: Arc::from(&data[..]) };
            packets += work.transcode(&frame).map_or(0, |p| p.len());
        }
        assert!(packets >= 15, "AAC after garbage is transcoded: {packets} packets");
    }

    #[test]
    fn g711_becomes_aac_on_the_cameras_clock() {
        // 2 s of a 440 Hz tone as A-law, 20 ms payloads (160 bytes at 8 kHz), by ffmpeg.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.alaw");
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=2", "-f", "alaw"])
            .arg(&path)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
        let alaw = std::fs::read(&path).unwrap();
        let info = AudioInfo { codec: Some(AudioCodec::Pcma), clock_rate: 8000, channels: 1 };
        let mut work = AacEncoding::new(info).unwrap();
        assert_eq!(work.config().unwrap().audio_specific_config(), [0x15, 0x88], "AAC-LC, 8 kHz (index 11), mono");
        let mut units = Vec::new();
        for (i, payload) in alaw.chunks(160).enumerate() {
            let frame =
                AudioFrame { rtp_timestamp: 5000 + 160 * i as u32, received: Instant::now(), capture_ms: 0, data: Arc::from(payload) };
            assert!(!work.jumped(&frame), "frame {i}");
            units.extend(work.encode(&frame).unwrap());
        }
        // 16 000 samples: 15 whole frames of 1024 taken (the rest waits); the encoder holds
        // one back, and its first unit is the priming.
        assert_eq!(units.len(), 14, "{} units", units.len());
        assert_eq!(units[0].rtp_timestamp, 5000u32.wrapping_sub(1024), "priming before the camera's first sample");
        assert!(units.windows(2).all(|w| w[1].rtp_timestamp.wrapping_sub(w[0].rtp_timestamp) == 1024));
        // Decoded back, the tone is there at its level (ffmpeg's sine: 1/8 of full scale).
        let aac = ffmpeg::decoder::find(ffmpeg::codec::Id::AAC).unwrap();
        let mut decoder = ffmpeg::codec::Context::new_with_codec(aac).decoder().audio().unwrap();
        let mut peak = 0f32;
        for u in &units[2..] {
            // Raw units need the AudioSpecificConfig: sent as ADTS instead.
            let mut adts = vec![0xFF, 0xF1, 0x40 | (11 << 2), 0x40, 0, 0, 0xFC];
            let len = adts.len() + u.data.len();
            adts[3] |= ((len >> 11) & 3) as u8;
            adts[4] = (len >> 3) as u8;
            adts[5] = ((len & 7) << 5) as u8 | 0x1F;
            adts.extend_from_slice(&u.data);
            decoder.send_packet(&ffmpeg::Packet::copy(&adts)).unwrap();
            let mut out = ffmpeg::frame::Audio::empty();
            while decoder.receive_frame(&mut out).is_ok() {
                let samples: &[f32] = out.plane(0);
                peak = samples.iter().fold(peak, |p, s| p.max(s.abs()));
            }
        }
        assert!((0.1..0.2).contains(&peak), "the tone decodes back: peak {peak}");
        // A frame 1 s on is a jump.
        let later =
            AudioFrame { rtp_timestamp: 5000 + 16_000 + 8000, received: Instant::now(), capture_ms: 0, data: Arc::from(&alaw[..160]) };
        assert!(work.jumped(&later));
    }
}
