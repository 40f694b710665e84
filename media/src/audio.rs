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
}
