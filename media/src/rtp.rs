//! RTP (RFC 3550) header writing, H.264 packetization (RFC 6184, packetization-mode=1) and
//! H.265 packetization (RFC 7798: single NAL unit packets and fragmentation units).
//!
//! The packetizer turns one access unit into RTP *payloads* once; each receiver then prepends
//! its own 12-byte header (its SSRC and sequence numbers), so payload bytes are shared, never
//! copied per receiver.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Error, Pt, RtpTimestamp, SeqNo, Ssrc, VideoCodec, h264, h265};

/// Default largest RTP payload in bytes: keeps a packet (with IP/UDP/RTP/SRTP headers) under a
/// 1280-byte path MTU, the size WebRTC stacks assume.
pub const DEFAULT_MAX_PAYLOAD: usize = 1200;

/// FU-A NAL unit type (RFC 6184 §5.8).
const FU_A: u8 = 28;
/// H.265 aggregation packet type (RFC 7798 §4.4.2).
const H265_AP: u8 = 48;
/// H.265 fragmentation unit type (RFC 7798 §4.4.3).
const H265_FU: u8 = 49;

/// The fixed RTP header fields (RFC 3550 §5.1) without CSRCs or extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type.
    pub payload_type: Pt,
    /// Marker bit: for H.264, set on the last packet of an access unit (RFC 6184 §5.1).
    pub marker: bool,
    /// Sequence number.
    pub sequence_number: SeqNo,
    /// Timestamp in the payload's clock (90 kHz for video).
    pub timestamp: RtpTimestamp,
    /// Synchronization source.
    pub ssrc: Ssrc,
}

impl RtpHeader {
    /// Length of the header written by [`RtpHeader::write`], in bytes.
    pub const LEN: usize = 12;

    /// Appends the 12-byte header (version 2, no padding, extension or CSRCs) to `out`.
    pub fn write(&self, out: &mut impl BufMut) {
        out.put_u8(0x80);
        out.put_u8((u8::from(self.marker) << 7) | self.payload_type.get());
        out.put_u16(self.sequence_number.0);
        out.put_u32(self.timestamp.get());
        out.put_u32(self.ssrc.0);
    }

    /// Parses the fixed header of an RTP packet; returns the header and the payload offset.
    /// Returns `None` for a packet that is too short or not version 2.
    pub fn parse(packet: &[u8]) -> Option<(RtpHeader, usize)> {
        if packet.len() < Self::LEN || packet[0] >> 6 != 2 {
            return None;
        }
        let csrc_count = usize::from(packet[0] & 0x0f);
        let mut offset = Self::LEN + 4 * csrc_count;
        if packet[0] & 0x10 != 0 {
            let ext = packet.get(offset + 2..offset + 4)?;
            offset += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        if offset > packet.len() {
            return None;
        }
        let header = RtpHeader {
            payload_type: Pt::new(packet[1]),
            marker: packet[1] & 0x80 != 0,
            sequence_number: SeqNo(u16::from_be_bytes([packet[2], packet[3]])),
            timestamp: RtpTimestamp::new(u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]])),
            ssrc: Ssrc(u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])),
        };
        Some((header, offset))
    }
}

/// Splits an Annex B access unit into RTP payloads: a NAL unit that fits goes whole (single
/// NAL unit packet, RFC 6184 §5.6), a larger one is cut into FU-A fragments (§5.8). The
/// caller sets the marker bit on the last payload's packet.
///
/// Whole NAL units are zero-copy slices of `access_unit`; FU-A fragments share one new buffer.
/// Access unit delimiters are dropped (they carry nothing a receiver needs), and so are NAL
/// units of type 0 or 24..=31 (unspecified in H.264 Table 7-1): RFC 6184 §5.2 gives those
/// numbers to aggregation and fragmentation packets, so a receiver would misread them.
pub fn packetize_h264(access_unit: &Bytes, max_payload: usize) -> Vec<Bytes> {
    assert!(max_payload > 2, "max_payload must leave room for the FU-A headers");
    let mut payloads = Vec::new();
    let fu_bytes: usize =
        h264::nal_units(access_unit).filter(|n| n.len() > max_payload).map(|n| n.len() + 2 * n.len().div_ceil(max_payload - 2)).sum();
    let mut fu_buf = BytesMut::with_capacity(fu_bytes);
    for nal in h264::nal_units(access_unit) {
        if !packetizable(h264::nal_type(nal)) {
            continue;
        }
        if nal.len() <= max_payload {
            payloads.push(access_unit.slice_ref(nal));
            continue;
        }
        let indicator = (nal[0] & 0xe0) | FU_A;
        push_fragments(&mut fu_buf, &[indicator], nal[0] & 0x1f, &nal[1..], max_payload, &mut payloads);
    }
    payloads
}

/// Appends `body` (a NAL unit without its header) as fragmentation units of at most
/// `max_payload` bytes: each is `header` (H.264 FU indicator, H.265 payload header), an FU
/// header (S and E bits, `nal_type`), and the next chunk.
fn push_fragments(buf: &mut BytesMut, header: &[u8], nal_type: u8, body: &[u8], max_payload: usize, out: &mut Vec<Bytes>) {
    let chunks = body.chunks(max_payload - header.len() - 1);
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.enumerate() {
        let mut fu_header = nal_type;
        if i == 0 {
            fu_header |= 0x80; // S bit
        }
        if i == last {
            fu_header |= 0x40; // E bit
        }
        buf.put_slice(header);
        buf.put_u8(fu_header);
        buf.put_slice(chunk);
        out.push(buf.split().freeze());
    }
}

/// Packetizes one access unit of `codec` (see [`packetize_h264`], [`packetize_h265`]).
pub fn packetize(codec: VideoCodec, access_unit: &Bytes, max_payload: usize) -> Vec<Bytes> {
    match codec {
        VideoCodec::H264 => packetize_h264(access_unit, max_payload),
        VideoCodec::H265 => packetize_h265(access_unit, max_payload),
    }
}

/// Splits an H.265 access unit (Annex B) into RTP payloads of at most `max_payload` bytes
/// (RFC 7798, `sprop-max-don-diff` = 0): NAL units that fit go whole (§4.4.1), larger ones
/// as fragmentation units (§4.4.3: the 2-byte payload header with type 49 and the NAL unit's
/// layer id and temporal id, then an FU header with S/E bits and the NAL unit type).
///
/// Whole NAL units are zero-copy slices of `access_unit`. Access unit delimiters are dropped,
/// and so are NAL units of types 48..=63 (unspecified in H.265 Table 7-1; RFC 7798 uses 48,
/// 49 and 50 for its own packets).
pub fn packetize_h265(access_unit: &Bytes, max_payload: usize) -> Vec<Bytes> {
    assert!(max_payload > 3, "max_payload must leave room for the FU headers");
    let mut payloads = Vec::new();
    let mut fu_buf = BytesMut::new();
    for nal in h264::nal_units(access_unit) {
        let nal_type = h265::nal_type(nal);
        if nal.len() < 2 || nal_type == h265::NAL_AUD || nal_type >= H265_AP {
            continue;
        }
        if nal.len() <= max_payload {
            payloads.push(access_unit.slice_ref(nal));
            continue;
        }
        let body = &nal[2..];
        fu_buf.reserve(body.len() + 3 * body.len().div_ceil(max_payload - 3));
        let header = [(nal[0] & 0x81) | (H265_FU << 1), nal[1]];
        push_fragments(&mut fu_buf, &header, nal_type, body, max_payload, &mut payloads);
    }
    payloads
}

/// Reassembles H.265 NAL units from RTP payloads (RFC 7798: single NAL unit packets,
/// aggregation packets, fragmentation units; no DONL). Used by tests and the load generator
/// to check what was sent.
#[derive(Debug, Default)]
pub struct H265Depacketizer {
    fu: Option<Vec<u8>>,
}

impl H265Depacketizer {
    /// Feeds one payload; returns the NAL units it completed (2-byte header included).
    /// A malformed or out-of-order fragment resets the FU state and returns an error.
    pub fn push(&mut self, payload: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        if payload.len() < 2 {
            return Err(Error::EmptyPayload);
        }
        match h265::nal_type(payload) {
            0..=47 => Ok(vec![payload.to_vec()]),
            H265_AP => {
                let mut nals = Vec::new();
                let mut rest = &payload[2..];
                while rest.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let nal = rest.get(2..2 + len).ok_or(Error::FuWithoutHeader)?;
                    nals.push(nal.to_vec());
                    rest = &rest[2 + len..];
                }
                Ok(nals)
            }
            H265_FU => {
                let fu_header = *payload.get(2).ok_or(Error::FuWithoutHeader)?;
                if fu_header & 0x80 != 0 {
                    let mut nal = Vec::with_capacity(payload.len() * 4);
                    nal.push((payload[0] & 0x81) | ((fu_header & 0x3f) << 1));
                    nal.push(payload[1]);
                    self.fu = Some(nal);
                }
                let Some(nal) = self.fu.as_mut() else { return Err(Error::FuWithoutStart) };
                nal.extend_from_slice(&payload[3..]);
                Ok(if fu_header & 0x40 != 0 { self.fu.take().into_iter().collect() } else { Vec::new() })
            }
            other => {
                self.fu = None;
                Err(Error::UnsupportedPayload(other))
            }
        }
    }
}

/// Whether a NAL unit of this type goes to receivers (see [`packetize_h264`]).
pub fn packetizable(nal_type: u8) -> bool {
    matches!(nal_type, 1..=23) && nal_type != h264::NAL_AUD
}

/// Reassembles NAL units from RTP payloads produced by [`packetize_h264`] (single NAL unit
/// and FU-A packets only). Used by tests and the load generator to check what was sent.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    fu: Option<Vec<u8>>,
}

impl H264Depacketizer {
    /// Feeds one payload; returns a completed NAL unit (header byte included) if any.
    /// A malformed or out-of-order fragment resets the FU-A state and returns an error.
    pub fn push(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some(&first) = payload.first() else {
            return Err(Error::EmptyPayload);
        };
        match first & 0x1f {
            1..=23 => Ok(Some(payload.to_vec())),
            FU_A => {
                let fu_header = *payload.get(1).ok_or(Error::FuWithoutHeader)?;
                let start = fu_header & 0x80 != 0;
                let end = fu_header & 0x40 != 0;
                if start {
                    let mut nal = Vec::with_capacity(payload.len() * 4);
                    nal.push((first & 0xe0) | (fu_header & 0x1f));
                    self.fu = Some(nal);
                }
                let nal = self.fu.as_mut().ok_or(Error::FuWithoutStart)?;
                nal.extend_from_slice(&payload[2..]);
                Ok(if end { self.fu.take() } else { None })
            }
            other => Err(Error::UnsupportedPayload(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_unit(sizes: &[(u8, usize)]) -> Bytes {
        let mut au = Vec::new();
        for &(header, len) in sizes {
            au.extend_from_slice(&h264::START_CODE);
            au.push(header);
            au.extend((1..len).map(|i| (i % 251) as u8 + 2));
        }
        Bytes::from(au)
    }

    #[test]
    fn header_round_trips() {
        let h = RtpHeader {
            payload_type: Pt::new(96),
            marker: true,
            sequence_number: SeqNo(65535),
            timestamp: RtpTimestamp::new(0xdead_beef),
            ssrc: Ssrc(42),
        };
        let mut buf = Vec::new();
        h.write(&mut buf);
        assert_eq!(buf.len(), RtpHeader::LEN);
        assert_eq!(buf[1], 0x80 | 96);
        assert_eq!(RtpHeader::parse(&buf), Some((h, 12)));
        assert_eq!(RtpHeader::parse(&buf[..11]), None);
    }

    #[test]
    fn small_nal_units_go_whole_and_large_ones_fragment() {
        let au = access_unit(&[(0x67, 20), (0x68, 4), (0x65, 3000)]);
        let payloads = packetize_h264(&au, 1200);
        assert_eq!(payloads.len(), 2 + 3);
        assert_eq!(payloads[0][0], 0x67);
        assert_eq!(payloads[1][0], 0x68);
        for p in &payloads[2..] {
            assert!(p.len() <= 1200);
            assert_eq!(p[0], 0x60 | 28, "FU indicator keeps NRI, type 28");
        }
        assert_eq!(payloads[2][1], 0x80 | 5);
        assert_eq!(payloads[3][1], 5);
        assert_eq!(payloads[4][1], 0x40 | 5);

        let mut depack = H264Depacketizer::default();
        let nals: Vec<Vec<u8>> = payloads.iter().filter_map(|p| depack.push(p).unwrap()).collect();
        let original: Vec<&[u8]> = h264::nal_units(&au).collect();
        assert_eq!(nals.len(), 3);
        for (a, b) in nals.iter().zip(original) {
            assert_eq!(a.as_slice(), b);
        }
    }

    #[test]
    fn unspecified_nal_types_are_not_sent() {
        // Type 24 would read as STAP-A, type 0 is unspecified; the AUD (9) carries nothing.
        let au = access_unit(&[(0x18, 10), (0x00, 10), (0x09, 2), (0x65, 10)]);
        let payloads = packetize_h264(&au, 1200);
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads[0][0], 0x65);
    }

    #[test]
    fn h265_units_go_whole_or_as_fragmentation_units_and_come_back() {
        // VPS, SPS, PPS (2-byte headers 0x40 01, 0x42 01, 0x44 01), an AUD, and a 3000-byte
        // IDR_W_RADL (type 19: 0x26 01).
        let mut au = Vec::new();
        for (header, len) in [([0x40, 1], 24), ([0x42, 1], 40), ([0x44, 1], 8), ([0x46, 1], 3), ([0x26, 1], 3000)] {
            au.extend_from_slice(&h264::START_CODE);
            au.extend_from_slice(&header);
            au.extend((2..len).map(|i| (i % 251) as u8 + 2));
        }
        let au = Bytes::from(au);
        let payloads = packetize(VideoCodec::H265, &au, 1200);
        assert_eq!(payloads.len(), 3 + 3, "VPS, SPS, PPS whole, the AUD dropped, the IDR in 3 FUs");
        for p in &payloads[3..] {
            assert!(p.len() <= 1200);
            assert_eq!((h265::nal_type(p), p[1]), (H265_FU, 1), "FU payload header keeps layer and temporal id");
        }
        assert_eq!((payloads[3][2], payloads[4][2], payloads[5][2]), (0x80 | 19, 19, 0x40 | 19), "S, middle, E");
        let mut depack = H265Depacketizer::default();
        let nals: Vec<Vec<u8>> = payloads.iter().flat_map(|p| depack.push(p).unwrap()).collect();
        let sent: Vec<&[u8]> = h264::nal_units(&au).filter(|n| h265::nal_type(n) != h265::NAL_AUD).collect();
        assert_eq!(nals.len(), 4);
        for (a, b) in nals.iter().zip(sent) {
            assert_eq!(a.as_slice(), b);
        }
        // An aggregation packet (RFC 7798 §4.4.2) of two NAL units.
        let ap = [&[0x60, 1][..], &[0, 3, 0x40, 1, 9], &[0, 2, 0x42, 1]].concat();
        assert_eq!(depack.push(&ap).unwrap(), vec![vec![0x40, 1, 9], vec![0x42, 1]]);
        assert!(depack.push(&[0x62, 1, 19, 5]).is_err(), "a middle FU without its start");
    }

    #[test]
    fn depacketizer_rejects_orphan_fragments() {
        let mut depack = H264Depacketizer::default();
        assert!(depack.push(&[0x7c, 0x05, 1, 2]).is_err());
        assert!(depack.push(&[]).is_err());
        assert!(depack.push(&[0x78, 0]).is_err(), "STAP-A is not produced by our packetizer");
    }
}
