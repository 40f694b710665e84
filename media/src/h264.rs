//! H.264 bitstream helpers: Annex B NAL unit framing (ITU-T H.264 Annex B) and the few
//! sequence parameter set (SPS, H.264 §7.3.2.1) fields the gateway needs.
//!
//! Access units travel through the gateway in Annex B form (start code + NAL unit, repeated),
//! with SPS/PPS in front of every keyframe, as retina's `FrameFormat::SIMPLE` produces them.

use h264_reader::nal::{Nal, RefNal};

use crate::Error;

/// `nal_unit_type` of a non-IDR coded slice (H.264 Table 7-1).
pub const NAL_SLICE: u8 = 1;
/// `nal_unit_type` of an IDR coded slice: a keyframe.
pub const NAL_IDR: u8 = 5;
/// `nal_unit_type` of supplemental enhancement information.
pub const NAL_SEI: u8 = 6;
/// `nal_unit_type` of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// `nal_unit_type` of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// `nal_unit_type` of an access unit delimiter.
pub const NAL_AUD: u8 = 9;

/// The 4-byte Annex B start code written in front of every NAL unit we emit.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Returns the `nal_unit_type` (low five bits of the NAL unit header), or 0 for an empty slice.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Iterates the NAL units of an Annex B byte stream, without their start codes.
///
/// Accepts 3- and 4-byte start codes; bytes before the first start code are skipped, and
/// empty NAL units (two adjacent start codes) are not yielded.
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = match find_start_code(annexb) {
        Some((pos, len)) => &annexb[pos + len..],
        None => &[][..],
    };
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (nal, next) = match find_start_code(rest) {
                Some((pos, len)) => (&rest[..pos], &rest[pos + len..]),
                None => (rest, &[][..]),
            };
            rest = next;
            // A 4-byte start code leaves a trailing zero on the previous NAL unit only when
            // searching for 3-byte codes; `find_start_code` already folds that in.
            if !nal.is_empty() {
                return Some(nal);
            }
        }
        None
    })
}

/// Finds the next start code: returns `(offset, length)` where length is 3 or 4.
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if i > 0 && data[i - 1] == 0 {
                return Some((i - 1, 4));
            }
            return Some((i, 3));
        } else {
            i += 1;
        }
    }
    None
}

/// Whether the access unit contains an IDR slice (a keyframe, H.264 §3.69).
pub fn contains_idr(annexb: &[u8]) -> bool {
    nal_units(annexb).any(|n| nal_type(n) == NAL_IDR)
}

/// The SPS fields the gateway uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpsInfo {
    /// Displayed width in pixels (after cropping).
    pub width: u32,
    /// Displayed height in pixels (after cropping).
    pub height: u32,
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, …).
    pub profile_idc: u8,
    /// The constraint_set flags byte.
    pub constraint_flags: u8,
    /// `level_idc` (e.g. 31 for level 3.1).
    pub level_idc: u8,
    /// VUI `video_full_range_flag` (H.264 §E.2.1); `false` (limited range, 16..235) when absent.
    pub full_range: bool,
    /// VUI `max_num_reorder_frames` (H.264 §E.2.1) when the SPS has bitstream restrictions:
    /// above 0 the stream has reordered B-frames. `Some(0)` also for the Baseline profiles,
    /// which have no B slices; `None` when the SPS does not say.
    pub max_num_reorder_frames: Option<u32>,
}

impl SpsInfo {
    /// The profile's name (H.264 Annex A): `Constrained Baseline`, `Main`, `High`, …
    pub fn profile_name(&self) -> &'static str {
        match self.profile_idc {
            66 if self.constraint_flags & 0x40 != 0 => "Constrained Baseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            _ => "unknown",
        }
    }

    /// The RFC 6184 §8.1 `profile-level-id`: six hex digits of profile_idc, constraint flags
    /// and level_idc.
    pub fn profile_level_id(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.profile_idc, self.constraint_flags, self.level_idc)
    }
}

/// Parses an SPS NAL unit (header byte included, emulation prevention bytes still in).
///
/// Errors: [`Error::NotSps`] for another NAL unit type, [`Error::BadSps`] for one that does not
/// parse (H.264 §7.3.2.1.1) or whose cropping leaves no picture.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, Error> {
    if nal_type(nal) != NAL_SPS {
        return Err(Error::NotSps(nal_type(nal)));
    }
    let sps = h264_reader::nal::sps::SeqParameterSet::from_bits(RefNal::new(nal, &[], true).rbsp_bits())
        .map_err(|e| Error::BadSps(format!("{e:?}")))?;
    let (width, height) = sps.pixel_dimensions().map_err(|e| Error::BadSps(format!("dimensions: {e:?}")))?;
    if width == 0 || height == 0 {
        return Err(Error::BadSps(format!("cropping leaves a {width}x{height} picture")));
    }
    let full_range = sps.vui_parameters.as_ref().and_then(|v| v.video_signal_type.as_ref()).is_some_and(|t| t.video_full_range_flag);
    let restrictions = sps.vui_parameters.as_ref().and_then(|v| v.bitstream_restrictions.as_ref());
    let baseline = u8::from(sps.profile_idc) == 66;
    let max_num_reorder_frames = restrictions.map(|r| r.max_num_reorder_frames).or(baseline.then_some(0));
    Ok(SpsInfo {
        width,
        height,
        profile_idc: sps.profile_idc.into(),
        constraint_flags: nal.get(2).copied().unwrap_or(0),
        level_idc: sps.level_idc,
        full_range,
        max_num_reorder_frames,
    })
}

/// Whether a coded slice NAL unit (type 1 or 5) is a B slice: `slice_type` 1 or 6 in its
/// header (H.264 §7.3.3, Table 7-6). `None` for other NAL units and headers that do not parse.
pub fn is_b_slice(nal: &[u8]) -> Option<bool> {
    use h264_reader::rbsp::BitRead;
    if !matches!(nal_type(nal), NAL_SLICE | NAL_IDR) {
        return None;
    }
    let mut r = RefNal::new(nal, &[], true).rbsp_bits();
    r.read_ue("first_mb_in_slice").ok()?;
    let slice_type = r.read_ue("slice_type").ok()?;
    (slice_type <= 9).then_some(slice_type % 5 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_mixed_start_codes() {
        let data = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
        assert!(contains_idr(&data));
    }

    #[test]
    fn no_start_code_yields_nothing() {
        assert_eq!(nal_units(&[1, 2, 3, 4]).count(), 0);
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn parses_a_720p_high_sps() {
        // SPS from GStreamer's x264enc (1280x720, High, level 3.1), captured from the
        // sprop-parameter-sets of scripts/gst_rtsp_server.py --profile high.
        let sps = [
            0x67, 0x64, 0x00, 0x1f, 0xac, 0xb4, 0x02, 0x80, 0x2d, 0xd8, 0x0b, 0x50, 0x10, 0x10, 0x14, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
            0x00, 0x03, 0x00, 0xca, 0x3c, 0x60, 0xca, 0x80,
        ];
        let info = parse_sps(&sps).expect("valid SPS");
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.profile_idc, 100);
        assert_eq!(info.profile_level_id(), "64001f");
        assert_eq!(info.profile_name(), "High");
        assert!(parse_sps(&[0x68, 1, 2]).is_err());
    }

    #[test]
    fn tells_b_slices() {
        // slice headers: first_mb_in_slice = 0 ("1"), slice_type ue: P = 0 ("1"), B = 1 ("010"),
        // B = 6 ("00111"), I = 7 ("0001000").
        assert_eq!(is_b_slice(&[0x41, 0b1100_0000]), Some(false));
        assert_eq!(is_b_slice(&[0x01, 0b1010_0000]), Some(true));
        assert_eq!(is_b_slice(&[0x01, 0b1001_1100]), Some(true));
        assert_eq!(is_b_slice(&[0x65, 0b1000_1000]), Some(false));
        assert_eq!(is_b_slice(&[0x67, 0xff]), None);
        assert_eq!(is_b_slice(&[0x01]), None);
    }

    #[test]
    fn an_sps_cropped_to_nothing_is_refused() {
        // Found by fuzz/sps_parse: frame cropping that leaves a 0-pixel-wide picture.
        let sps = [0x67, 0x03, 0x0e, 0x09, 0xba, 0xff, 0x12, 0x9a];
        assert!(matches!(parse_sps(&sps), Err(Error::BadSps(m)) if m.contains("cropping leaves")), "{:?}", parse_sps(&sps));
    }
}
