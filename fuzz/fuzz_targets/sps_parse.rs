//! Fuzzes H.264 bitstream parsing as ingest runs it on every keyframe a camera sends
//! (`media::h264`): arbitrary bytes as an Annex B access unit are split into NAL units, and
//! every SPS among them is parsed.
//!
//! Checks: no panic; every NAL unit is a non-empty part of the input, and together they are
//! no longer than it; a NAL unit that is not an SPS is refused as such; an SPS that parses
//! has a non-empty picture and a six-hex-digit `profile-level-id` (RFC 6184 §8.1), and
//! parsing it again gives the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::Error;
use media::h264::{NAL_SPS, nal_type, nal_units, parse_sps};

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
    }
    assert!(total <= data.len());
});
