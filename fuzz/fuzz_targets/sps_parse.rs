//! Fuzzes H.264 and H.265 bitstream parsing as ingest runs it on every keyframe a camera
//! sends (`media::h264`, `media::h265`): arbitrary bytes as an Annex B access unit are split
//! into NAL units, and every SPS among them is parsed, as either codec.
//!
//! Checks: no panic; every NAL unit is a non-empty part of the input, and together they are
//! no longer than it; a NAL unit that is not an SPS is refused as such; an SPS that parses
//! has a non-empty picture (and for H.264 a six-hex-digit `profile-level-id`, RFC 6184 §8.1;
//! for H.265 a bit depth of 8..=16), and parsing it again gives the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::Error;
use media::h264::{NAL_SPS, nal_type, nal_units, parse_sps};
use media::h265;

fuzz_target!(|data: &[u8]| {
    let range = data.as_ptr_range();
    let mut total = 0;
    for nal in nal_units(data) {
        assert!(!nal.is_empty(), "empty NAL unit");
        let r = nal.as_ptr_range();
        assert!(range.start <= r.start && r.end <= range.end, "a NAL unit outside the input");
        total += nal.len();
        match parse_sps(nal) {
            Ok(sps) => {
                assert_eq!(nal_type(nal), NAL_SPS);
                assert!(sps.width > 0 && sps.height > 0, "{sps:?}");
                let plid = sps.profile_level_id();
                assert!(plid.len() == 6 && plid.bytes().all(|b| b.is_ascii_hexdigit()), "{plid}");
                assert_eq!(parse_sps(nal), Ok(sps));
            }
            Err(Error::NotSps(t)) => assert_ne!(t, NAL_SPS),
            Err(e) => assert!(nal_type(nal) == NAL_SPS && matches!(e, Error::BadSps(_)), "{e}"),
        }
        match h265::parse_sps(nal) {
            Ok(sps) => {
                assert_eq!(h265::nal_type(nal), h265::NAL_SPS);
                assert!(sps.width > 0 && sps.height > 0 && (8..=16).contains(&sps.bit_depth), "{sps:?}");
                assert_eq!(h265::parse_sps(nal), Ok(sps));
            }
            Err(Error::NotSps(t)) => assert_ne!(t, h265::NAL_SPS),
            Err(e) => assert!(h265::nal_type(nal) == h265::NAL_SPS && matches!(e, Error::BadSps(_)), "{e}"),
        }
    }
    assert!(total <= data.len());
});
