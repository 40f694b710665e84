//! Which video codec a stream carries, and its sequence parameters whichever it is.

use serde::Serialize;

use crate::{Error, h264, h265};

/// A camera's video codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// ITU-T H.264 / AVC; RTP payload format RFC 6184.
    #[default]
    H264,
    /// ITU-T H.265 / HEVC; RTP payload format RFC 7798.
    H265,
}

impl VideoCodec {
    /// The name used in the status and metric labels: `h264` or `h265`.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
        }
    }

    /// The codec of an SDP `a=rtpmap` encoding name (`H264`, `H265`, any case).
    pub fn from_encoding_name(name: &str) -> Option<VideoCodec> {
        if name.eq_ignore_ascii_case("h264") {
            Some(VideoCodec::H264)
        } else if name.eq_ignore_ascii_case("h265") {
            Some(VideoCodec::H265)
        } else {
            None
        }
    }

    /// The `nal_unit_type` of a NAL unit of this codec (H.264: one-byte header; H.265: two).
    pub fn nal_type(self, nal: &[u8]) -> u8 {
        match self {
            VideoCodec::H264 => h264::nal_type(nal),
            VideoCodec::H265 => h265::nal_type(nal),
        }
    }

    /// The `nal_unit_type` of this codec's sequence parameter set.
    pub fn sps_type(self) -> u8 {
        match self {
            VideoCodec::H264 => h264::NAL_SPS,
            VideoCodec::H265 => h265::NAL_SPS,
        }
    }

    /// The first SPS NAL unit of an Annex B access unit, if it has one.
    pub fn find_sps(self, annexb: &[u8]) -> Option<&[u8]> {
        h264::nal_units(annexb).find(|n| self.nal_type(n) == self.sps_type())
    }

    /// Parses an SPS NAL unit of this codec. Errors as [`h264::parse_sps`] and [`h265::parse_sps`].
    pub fn parse_sps(self, nal: &[u8]) -> Result<SequenceInfo, Error> {
        match self {
            VideoCodec::H264 => h264::parse_sps(nal).map(SequenceInfo::H264),
            VideoCodec::H265 => h265::parse_sps(nal).map(SequenceInfo::H265),
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream's parsed SPS, of either codec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SequenceInfo {
    /// An H.264 SPS.
    H264(h264::SpsInfo),
    /// An H.265 SPS.
    H265(h265::SpsInfo),
}

impl SequenceInfo {
    /// The codec.
    pub fn codec(&self) -> VideoCodec {
        match self {
            SequenceInfo::H264(_) => VideoCodec::H264,
            SequenceInfo::H265(_) => VideoCodec::H265,
        }
    }

    /// Displayed picture size `(width, height)`, px, after cropping.
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            SequenceInfo::H264(s) => (s.width, s.height),
            SequenceInfo::H265(s) => (s.width, s.height),
        }
    }

    /// The profile's name (`High`, `Main 10`, …).
    pub fn profile_name(&self) -> &'static str {
        match self {
            SequenceInfo::H264(s) => s.profile_name(),
            SequenceInfo::H265(s) => s.profile_name(),
        }
    }

    /// Whether the SPS announces reordered B-frames (`max_num_reorder_frames` /
    /// `sps_max_num_reorder_pics` above 0); `None` when an H.264 SPS does not say.
    pub fn reorders(&self) -> Option<bool> {
        match self {
            SequenceInfo::H264(s) => s.max_num_reorder_frames.map(|n| n > 0),
            SequenceInfo::H265(s) => Some(s.max_num_reorder_pics > 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_encoding_names() {
        assert_eq!(VideoCodec::from_encoding_name("H265"), Some(VideoCodec::H265));
        assert_eq!(VideoCodec::from_encoding_name("h264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::from_encoding_name("JPEG"), None);
        assert_eq!(serde_json::to_string(&VideoCodec::H265).unwrap(), r#""h265""#);
        assert_eq!(VideoCodec::H265.nal_type(&[0x42, 0x01]), h265::NAL_SPS);
        let au = [0, 0, 0, 1, 0x40, 0x01, 0, 0, 0, 1, 0x42, 0x01, 0xaa, 0, 0, 1, 0x26, 0x01];
        assert_eq!(VideoCodec::H265.find_sps(&au), Some(&[0x42, 0x01, 0xaa][..]));
        assert_eq!(VideoCodec::H264.find_sps(&au), None);
    }
}
