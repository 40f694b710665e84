//! Camera audio: which codecs the gateway takes ([`AudioCodec`]).

use serde::Serialize;

/// A camera's audio codec, as named by its SDP `a=rtpmap` encoding name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    /// ITU-T G.711 A-law, 8 kHz (RFC 3551 §4.5.14, static payload type 8).
    Pcma,
    /// ITU-T G.711 µ-law, 8 kHz (RFC 3551 §4.5.14, static payload type 0).
    Pcmu,
    /// MPEG-4 AAC in `mpeg4-generic` (RFC 3640 AAC-hbr); frames are handed on ADTS-framed
    /// (ISO/IEC 13818-7 §6.2), self-describing for a decoder.
    Aac,
}

impl AudioCodec {
    /// The name used in the status: `pcma`, `pcmu`, `aac`.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcma => "pcma",
            AudioCodec::Pcmu => "pcmu",
            AudioCodec::Aac => "aac",
        }
    }

    /// The codec of a status name ([`AudioCodec::name`]).
    pub fn from_name(name: &str) -> Option<AudioCodec> {
        [AudioCodec::Pcma, AudioCodec::Pcmu, AudioCodec::Aac].into_iter().find(|c| c.name() == name)
    }

    /// The codec of an SDP encoding name (`PCMA`, `PCMU`, `mpeg4-generic`, any case); `None`
    /// for codecs the gateway does not take.
    pub fn from_encoding_name(name: &str) -> Option<AudioCodec> {
        [("pcma", AudioCodec::Pcma), ("pcmu", AudioCodec::Pcmu), ("mpeg4-generic", AudioCodec::Aac)]
            .into_iter()
            .find_map(|(n, codec)| name.eq_ignore_ascii_case(n).then_some(codec))
    }

    /// Whether WebRTC peers take it as it is (G.711 is mandatory in WebRTC, RFC 7874 §3);
    /// AAC is not a WebRTC codec and is transcoded to Opus.
    pub fn webrtc_passthrough(self) -> bool {
        matches!(self, AudioCodec::Pcma | AudioCodec::Pcmu)
    }
}

/// Sampling rates by their MPEG-4 sampling frequency index (ISO/IEC 14496-3 §1.6.3.4).
const AAC_RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// An AAC stream's decoder configuration: what an MP4 sample entry (`mp4a` + `esds`) and
/// an HLS `CODECS` value need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AacConfig {
    /// MPEG-4 audio object type (ISO/IEC 14496-3 §1.5.1.1): 2 for AAC-LC.
    pub object_type: u8,
    /// Sampling frequency index into the table of ISO/IEC 14496-3 §1.6.3.4.
    pub frequency_index: u8,
    /// Channel configuration (§1.6.3.5): 1 mono, 2 stereo.
    pub channels: u8,
}

impl AacConfig {
    /// The configuration an ADTS frame's fixed header states (ISO/IEC 13818-7 §6.2.1:
    /// `profile` is the object type minus one). `None` if `frame` is no ADTS frame, or
    /// states a reserved sampling frequency index.
    pub fn from_adts(frame: &[u8]) -> Option<AacConfig> {
        if frame.len() < 7 || frame[0] != 0xFF || frame[1] & 0xF6 != 0xF0 {
            return None;
        }
        let frequency_index = (frame[2] >> 2) & 0x0F;
        AAC_RATES.get(usize::from(frequency_index))?;
        Some(AacConfig { object_type: (frame[2] >> 6) + 1, frequency_index, channels: ((frame[2] & 1) << 2) | (frame[3] >> 6) })
    }

    /// AAC-LC at `rate` Hz with `channels` (what an SDP says of a camera's `mpeg4-generic`
    /// audio when no frame has been seen). `None` for a rate without an index.
    pub fn lc(rate: u32, channels: u16) -> Option<AacConfig> {
        let frequency_index = AAC_RATES.iter().position(|&r| r == rate)? as u8;
        Some(AacConfig { object_type: 2, frequency_index, channels: channels.min(7) as u8 })
    }

    /// Sampling rate, Hz (the MP4 track's timescale).
    pub fn sample_rate(&self) -> u32 {
        AAC_RATES.get(usize::from(self.frequency_index)).copied().unwrap_or(0)
    }

    /// The 2-byte AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1): object type (5 bits),
    /// sampling frequency index (4), channel configuration (4), three zero bits.
    pub fn audio_specific_config(&self) -> [u8; 2] {
        let bits =
            (u16::from(self.object_type & 0x1F) << 11) | (u16::from(self.frequency_index) << 7) | (u16::from(self.channels & 0x0F) << 3);
        bits.to_be_bytes()
    }

    /// The RFC 6381 `CODECS` value: `mp4a.40.{object type}`.
    pub fn codecs(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// The raw AAC access unit inside an ADTS frame (ISO/IEC 13818-7 §6.2): the header (7
/// bytes, 9 with its CRC) dropped, cut to the frame length the header states. `None` if
/// `frame` is no ADTS frame, or shorter than its header says.
pub fn adts_payload(frame: &[u8]) -> Option<&[u8]> {
    AacConfig::from_adts(frame)?;
    let header_len = if frame[1] & 1 == 1 { 7 } else { 9 };
    let frame_len = (usize::from(frame[3] & 0x03) << 11) | (usize::from(frame[4]) << 3) | usize::from(frame[5] >> 5);
    frame.get(header_len..frame_len.max(header_len))
}

/// PCM samples per channel an ADTS frame decodes to: 1024 per raw data block (ISO/IEC
/// 13818-7 §6.2.1, `number_of_raw_data_blocks_in_frame` + 1); 1024 for anything else.
pub fn adts_frame_samples(frame: &[u8]) -> u32 {
    1024 * (u32::from(frame.get(6).map_or(0, |b| b & 0x03)) + 1)
}

impl std::fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_names() {
        assert_eq!(AudioCodec::from_encoding_name("PCMA"), Some(AudioCodec::Pcma));
        assert_eq!(AudioCodec::from_encoding_name("pcmu"), Some(AudioCodec::Pcmu));
        assert_eq!(AudioCodec::from_encoding_name("MPEG4-GENERIC"), Some(AudioCodec::Aac));
        assert_eq!(AudioCodec::from_encoding_name("opus"), None);
        assert_eq!(AudioCodec::from_name("aac"), Some(AudioCodec::Aac));
        assert!(AudioCodec::Pcma.webrtc_passthrough() && !AudioCodec::Aac.webrtc_passthrough());
    }

    #[test]
    fn adts_headers_give_the_decoder_configuration() {
        // AAC-LC, 16 kHz (index 8), mono, no CRC, a 10-byte frame: 7 header bytes + 3.
        let frame = [0xFF, 0xF1, 0x60, 0x40, 0x01, 0x5F, 0xFC, 1, 2, 3];
        let config = AacConfig::from_adts(&frame).unwrap();
        assert_eq!(config, AacConfig { object_type: 2, frequency_index: 8, channels: 1 });
        assert_eq!(config, AacConfig::lc(16_000, 1).unwrap());
        assert_eq!(config.sample_rate(), 16_000);
        assert_eq!(config.audio_specific_config(), [0x14, 0x08], "2 << 11 | 8 << 7 | 1 << 3");
        assert_eq!(config.codecs(), "mp4a.40.2");
        assert_eq!(adts_payload(&frame), Some(&[1u8, 2, 3][..]));
        assert_eq!(adts_frame_samples(&frame), 1024);
        // A frame cut short, garbage and a reserved rate are no frame.
        assert_eq!(adts_payload(&frame[..9]), None);
        assert_eq!(AacConfig::from_adts(b"\x00\x01\x02\x03\x04\x05\x06"), None);
        assert_eq!(AacConfig::from_adts(&[0xFF, 0xF1, 0x3C, 0x40, 0x01, 0x5F, 0xFC]), None, "index 15");
        assert_eq!(AacConfig::lc(44_000, 2), None);
    }
}
