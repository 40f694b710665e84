//! H.265 (HEVC) bitstream helpers: the two-byte NAL unit header (ITU-T H.265 §7.3.1.2), the
//! NAL unit types the gateway tells apart (Table 7-1) and the sequence parameter set fields it
//! needs (§7.3.2.2: profile, level, picture size after the conformance window).
//!
//! Framing is Annex B as for H.264: use [`crate::h264::nal_units`] to split an access unit.
//! retina depacketizes RFC 7798 and puts VPS/SPS/PPS in front of every IRAP picture.

use std::num::NonZeroUsize;

use h264_reader::rbsp::{BitRead, BitReader, BitReaderError, ByteReader};

use crate::Error;

/// First IRAP (intra random access point) `nal_unit_type`: BLA_W_LP (Table 7-1).
pub const NAL_BLA_W_LP: u8 = 16;
/// IDR_W_RADL: an IDR picture that may have leading pictures.
pub const NAL_IDR_W_RADL: u8 = 19;
/// IDR_N_LP: an IDR picture without leading pictures.
pub const NAL_IDR_N_LP: u8 = 20;
/// CRA_NUT: a clean random access picture.
pub const NAL_CRA: u8 = 21;
/// Last type reserved for IRAP pictures (RSV_IRAP_VCL23).
pub const NAL_IRAP_LAST: u8 = 23;
/// `nal_unit_type` of a video parameter set.
pub const NAL_VPS: u8 = 32;
/// `nal_unit_type` of a sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// `nal_unit_type` of a picture parameter set.
pub const NAL_PPS: u8 = 34;
/// `nal_unit_type` of an access unit delimiter.
pub const NAL_AUD: u8 = 35;

/// The `nal_unit_type` of a NAL unit (bits 1..7 of its first header byte), 0 for an empty slice.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| (b >> 1) & 0x3f)
}

/// Whether a NAL unit of this type carries a coded slice segment (VCL, types 0..=31).
pub fn is_vcl(nal_type: u8) -> bool {
    nal_type < 32
}

/// Whether a NAL unit of this type is an IRAP picture's slice (BLA, IDR, CRA: a keyframe).
pub fn is_irap(nal_type: u8) -> bool {
    (NAL_BLA_W_LP..=NAL_IRAP_LAST).contains(&nal_type)
}

/// The SPS fields the gateway uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpsInfo {
    /// Displayed width in pixels (after the conformance window).
    pub width: u32,
    /// Displayed height in pixels (after the conformance window).
    pub height: u32,
    /// `general_profile_idc` (1 Main, 2 Main 10, 3 Main Still Picture, 4 range extensions).
    pub profile_idc: u8,
    /// `general_tier_flag`: `true` for the High tier.
    pub high_tier: bool,
    /// `general_level_idc`: 30 times the level (93 is level 3.1).
    pub level_idc: u8,
    /// `bit_depth_luma_minus8 + 8`.
    pub bit_depth: u8,
    /// `sps_max_num_reorder_pics` of the highest sub-layer: how many pictures may precede one
    /// in decoding order and follow it in output order. Above 0 the stream has B-frames that
    /// are reordered (frames leave the decoder in another order than they arrive).
    pub max_num_reorder_pics: u32,
}

impl SpsInfo {
    /// The profile's name (H.265 Annex A): `Main`, `Main 10`, …
    pub fn profile_name(&self) -> &'static str {
        match self.profile_idc {
            1 => "Main",
            2 => "Main 10",
            3 => "Main Still Picture",
            4 => "Range Extensions",
            5 => "High Throughput",
            9 => "Screen Content Coding",
            _ => "unknown",
        }
    }
}

fn bits(e: BitReaderError) -> Error {
    Error::BadSps(format!("{e:?}"))
}

/// Parses an H.265 SPS NAL unit (two-byte header included, emulation prevention bytes still in).
///
/// Errors: [`Error::NotSps`] for another NAL unit type, [`Error::BadSps`] for one that ends
/// early or is out of range (§7.3.2.2.1, §7.4.3.2.1) or whose conformance window leaves no
/// picture.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, Error> {
    if nal_type(nal) != NAL_SPS {
        return Err(Error::NotSps(nal_type(nal)));
    }
    if nal.len() < 3 {
        return Err(Error::BadSps("shorter than its header".into()));
    }
    let two = NonZeroUsize::new(2).expect("2 is not zero");
    let mut r = BitReader::new(ByteReader::skipping_bytes(nal, two));
    r.skip(4, "sps_video_parameter_set_id").map_err(bits)?;
    let max_sub_layers_minus1: u8 = r.read(3, "sps_max_sub_layers_minus1").map_err(bits)?;
    if max_sub_layers_minus1 > 6 {
        return Err(Error::BadSps(format!("sps_max_sub_layers_minus1 {max_sub_layers_minus1} > 6")));
    }
    r.skip(1, "sps_temporal_id_nesting_flag").map_err(bits)?;
    // profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3.
    r.skip(2, "general_profile_space").map_err(bits)?;
    let high_tier = r.read_bool("general_tier_flag").map_err(bits)?;
    let profile_idc: u8 = r.read(5, "general_profile_idc").map_err(bits)?;
    r.skip(32, "general_profile_compatibility_flags").map_err(bits)?;
    r.skip(48, "general constraint flags").map_err(bits)?;
    let level_idc: u8 = r.read(8, "general_level_idc").map_err(bits)?;
    let mut sub_layers = [(false, false); 7];
    for layer in sub_layers.iter_mut().take(usize::from(max_sub_layers_minus1)) {
        *layer = (r.read_bool("sub_layer_profile_present_flag").map_err(bits)?, r.read_bool("sub_layer_level_present_flag").map_err(bits)?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - u32::from(max_sub_layers_minus1)), "reserved_zero_2bits").map_err(bits)?;
    }
    for &(profile, level) in sub_layers.iter().take(usize::from(max_sub_layers_minus1)) {
        if profile {
            r.skip(88, "sub_layer profile").map_err(bits)?;
        }
        if level {
            r.skip(8, "sub_layer_level_idc").map_err(bits)?;
        }
    }
    let sps_id = r.read_ue("sps_seq_parameter_set_id").map_err(bits)?;
    if sps_id > 15 {
        return Err(Error::BadSps(format!("sps_seq_parameter_set_id {sps_id} > 15")));
    }
    let chroma_format_idc = r.read_ue("chroma_format_idc").map_err(bits)?;
    let separate_colour_planes = match chroma_format_idc {
        0..=2 => false,
        3 => r.read_bool("separate_colour_plane_flag").map_err(bits)?,
        n => return Err(Error::BadSps(format!("chroma_format_idc {n} > 3"))),
    };
    let coded_width = r.read_ue("pic_width_in_luma_samples").map_err(bits)?;
    let coded_height = r.read_ue("pic_height_in_luma_samples").map_err(bits)?;
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.read_bool("conformance_window_flag").map_err(bits)? {
        left = r.read_ue("conf_win_left_offset").map_err(bits)?;
        right = r.read_ue("conf_win_right_offset").map_err(bits)?;
        top = r.read_ue("conf_win_top_offset").map_err(bits)?;
        bottom = r.read_ue("conf_win_bottom_offset").map_err(bits)?;
    }
    let bit_depth_luma_minus8 = r.read_ue("bit_depth_luma_minus8").map_err(bits)?;
    if bit_depth_luma_minus8 > 8 {
        return Err(Error::BadSps(format!("bit_depth_luma_minus8 {bit_depth_luma_minus8} > 8")));
    }
    r.read_ue("bit_depth_chroma_minus8").map_err(bits)?;
    r.read_ue("log2_max_pic_order_cnt_lsb_minus4").map_err(bits)?;
    let ordering_per_layer = r.read_bool("sps_sub_layer_ordering_info_present_flag").map_err(bits)?;
    let mut max_num_reorder_pics = 0;
    for _ in (if ordering_per_layer { 0 } else { max_sub_layers_minus1 })..=max_sub_layers_minus1 {
        r.read_ue("sps_max_dec_pic_buffering_minus1").map_err(bits)?;
        max_num_reorder_pics = r.read_ue("sps_max_num_reorder_pics").map_err(bits)?;
        r.read_ue("sps_max_latency_increase_plus1").map_err(bits)?;
    }
    // Table 6-1: SubWidthC and SubHeightC, in which the window offsets count.
    let (sub_width, sub_height) = match (chroma_format_idc, separate_colour_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let crop = |size: u32, a: u32, b: u32, unit: u32| {
        a.checked_add(b).and_then(|sum| sum.checked_mul(unit)).and_then(|cut| size.checked_sub(cut)).filter(|&left| left > 0)
    };
    let width = crop(coded_width, left, right, sub_width);
    let height = crop(coded_height, top, bottom, sub_height);
    let (Some(width), Some(height)) = (width, height) else {
        return Err(Error::BadSps(format!("conformance window leaves no picture of {coded_width}x{coded_height}")));
    };
    Ok(SpsInfo { width, height, profile_idc, high_tier, level_idc, bit_depth: bit_depth_luma_minus8 as u8 + 8, max_num_reorder_pics })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPSs from x265 3.5 (`ffmpeg -f lavfi -i testsrc2=size=WxH -c:v libx265 -f hevc`): 1280x720
    /// Main level 3.1, and 1276x714, coded as 1280x720 with a conformance window.
    const SPS_720P_MAIN: [u8; 43] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80,
        0x2d, 0x16, 0x59, 0x59, 0xa4, 0x93, 0x2b, 0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
    ];
    const SPS_1276X714: [u8; 43] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80,
        0x2d, 0x1d, 0xc9, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
    ];

    #[test]
    fn reads_the_header() {
        assert_eq!(nal_type(&[0x40, 0x01]), NAL_VPS);
        assert_eq!(nal_type(&[0x42, 0x01]), NAL_SPS);
        assert_eq!(nal_type(&[0x26, 0x01]), NAL_IDR_W_RADL);
        assert!(is_irap(NAL_CRA) && !is_irap(1) && is_vcl(1) && !is_vcl(NAL_PPS));
    }

    #[test]
    fn parses_a_720p_main_sps() {
        let info = parse_sps(&SPS_720P_MAIN).expect("valid SPS");
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!((info.profile_idc, info.level_idc, info.high_tier, info.bit_depth), (1, 93, false, 8));
        // x265's default GOP has B-frames.
        assert!(info.max_num_reorder_pics > 0, "{info:?}");
        assert_eq!(info.profile_name(), "Main");
        let cropped = parse_sps(&SPS_1276X714).expect("valid SPS");
        assert_eq!((cropped.width, cropped.height), (1276, 714));
    }

    #[test]
    fn refuses_truncated_and_foreign_units() {
        for len in 0..22 {
            assert!(parse_sps(&SPS_720P_MAIN[..len]).is_err(), "{len} bytes");
        }
        assert!(matches!(parse_sps(&[0x44, 0x01, 0xff]), Err(Error::NotSps(NAL_PPS))));
    }
}
