//! Fuzzes H.264 RTP packetization (`media::rtp`, RFC 6184), which runs on every access unit
//! a camera sends before WebRTC viewers get it: the first byte picks the largest payload
//! (3..=1022 bytes), the rest is an access unit in Annex B form.
//!
//! Checks: no panic; no payload is empty or larger than asked; single NAL unit packets carry
//! types 1..=23, fragments FU-A (§5.8) with exactly one start and one end per NAL unit; the
//! depacketizer rebuilds exactly the input's NAL units that are sent (`packetizable`: not
//! access unit delimiters, not the types RFC 6184 gives to aggregation and fragmentation), in
//! order; an RTP header written for each payload parses back.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::h264::{nal_type, nal_units};
use media::rtp::{H264Depacketizer, RtpHeader, packetizable, packetize_h264};
use media::{Pt, RtpTimestamp, SeqNo, Ssrc};

fuzz_target!(|data: &[u8]| {
    let Some((&size, au)) = data.split_first() else { return };
    let max_payload = 3 + usize::from(size) * 4;
    let au = Bytes::copy_from_slice(au);
    let payloads = packetize_h264(&au, max_payload);
    let mut depack = H264Depacketizer::default();
    let mut rebuilt = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        assert!(!p.is_empty() && p.len() <= max_payload, "payload of {} bytes, max {max_payload}", p.len());
        assert!(matches!(p[0] & 0x1f, 1..=23 | 28), "payload structure {}", p[0] & 0x1f);
        let header = RtpHeader {
            payload_type: Pt::new(96),
            marker: i + 1 == payloads.len(),
            sequence_number: SeqNo(i as u16),
            timestamp: RtpTimestamp::new(3600),
            ssrc: Ssrc(7),
        };
        let mut packet = Vec::new();
        header.write(&mut packet);
        packet.extend_from_slice(p);
        assert_eq!(RtpHeader::parse(&packet), Some((header, RtpHeader::LEN)));
        if let Some(nal) = depack.push(p).expect("the packetizer's own payloads depacketize") {
            rebuilt.push(nal);
        }
    }
    let original: Vec<&[u8]> = nal_units(&au).filter(|n| packetizable(nal_type(n))).collect();
    assert_eq!(rebuilt.len(), original.len(), "NAL units rebuilt");
    for (a, b) in rebuilt.iter().zip(original) {
        assert_eq!(a.as_slice(), b);
    }
});
