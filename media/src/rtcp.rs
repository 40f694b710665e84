//! RTCP sender reports (RFC 3550 §6.4.1): writing them (the test camera) and using them to
//! learn when a camera captured each frame ([`CaptureClock`]).
//!
//! A sender report pairs an NTP wall-clock time (RFC 5905 §6 format: 32 bits of seconds
//! since 1900, 32 bits of fraction) with the RTP timestamp of the same instant; every later
//! RTP timestamp maps to wall-clock time through it. All replicas pulling one camera read
//! the same reports, so they agree on each frame's capture time to the millisecond.

use crate::{RtpTimestamp, Ssrc};

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
/// RTCP packet type of a sender report (RFC 3550 §12.1).
pub const PT_SENDER_REPORT: u8 = 200;
/// Bytes of a sender report without report blocks.
pub const SENDER_REPORT_LEN: usize = 28;

/// An NTP timestamp (64-bit, RFC 5905 §6) for `unix_ms` ms since the Unix epoch.
pub fn ntp_from_unix_ms(unix_ms: u64) -> u64 {
    let secs = unix_ms / 1000 + NTP_UNIX_OFFSET_S;
    let frac = ((unix_ms % 1000) << 32) / 1000;
    (secs << 32) | frac
}

/// Milliseconds since the Unix epoch for an NTP timestamp, or `None` before 1970. Times with
/// the top bit of the seconds clear are read as era 1 (from February 2036), as RFC 4330 §3
/// advises.
pub fn unix_ms_from_ntp(ntp: u64) -> Option<u64> {
    let mut secs = ntp >> 32;
    if secs & 0x8000_0000 == 0 {
        secs += 1 << 32;
    }
    // Rounded, so a time made by `ntp_from_unix_ms` comes back to the same millisecond.
    let ms_frac = ((ntp & 0xffff_ffff) * 1000 + (1 << 31)) >> 32;
    secs.checked_sub(NTP_UNIX_OFFSET_S).map(|s| s * 1000 + ms_frac)
}

/// A sender report without reception report blocks (RFC 3550 §6.4.1), ready to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender's SSRC: the one on its RTP packets.
    pub ssrc: Ssrc,
    /// Wall-clock time of the instant, 64-bit NTP format.
    pub ntp: u64,
    /// The RTP timestamp of the same instant.
    pub rtp_timestamp: RtpTimestamp,
    /// RTP packets sent so far.
    pub packets: u32,
    /// RTP payload octets sent so far.
    pub octets: u32,
}

impl SenderReport {
    /// The 28 bytes of the packet.
    pub fn to_bytes(&self) -> [u8; SENDER_REPORT_LEN] {
        let mut out = [0u8; SENDER_REPORT_LEN];
        out[0] = 0x80; // V=2, no padding, no report blocks
        out[1] = PT_SENDER_REPORT;
        out[2..4].copy_from_slice(&((SENDER_REPORT_LEN / 4 - 1) as u16).to_be_bytes());
        out[4..8].copy_from_slice(&self.ssrc.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.ntp.to_be_bytes());
        out[16..20].copy_from_slice(&self.rtp_timestamp.get().to_be_bytes());
        out[20..24].copy_from_slice(&self.packets.to_be_bytes());
        out[24..28].copy_from_slice(&self.octets.to_be_bytes());
        out
    }

    /// Parses a sender report (the first packet of a compound packet); `None` for anything
    /// else or a truncated one.
    pub fn parse(packet: &[u8]) -> Option<SenderReport> {
        if packet.len() < SENDER_REPORT_LEN || packet[0] >> 6 != 2 || packet[1] != PT_SENDER_REPORT {
            return None;
        }
        let word = |at: usize| u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]);
        Some(SenderReport {
            ssrc: Ssrc(word(4)),
            ntp: (u64::from(word(8)) << 32) | u64::from(word(12)),
            rtp_timestamp: RtpTimestamp::new(word(16)),
            packets: word(20),
            octets: word(24),
        })
    }
}

/// Maps a stream's RTP timestamps to the sender's wall clock, from its latest sender report.
///
/// Feed every report to [`CaptureClock::sender_report`]; [`CaptureClock::capture_ms`] then
/// gives the capture time of any frame within ±6 hours of the report (the 32-bit timestamp's
/// half circle at 90 kHz), or `None` before the first report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureClock {
    /// (wall clock ms since the Unix epoch, RTP timestamp) of the last report.
    anchor: Option<(u64, RtpTimestamp)>,
}

impl CaptureClock {
    /// Takes a sender report's NTP time and RTP timestamp; returns the report's wall-clock
    /// time in Unix ms (`None`, and ignored, for a time before 1970).
    pub fn sender_report(&mut self, ntp: u64, rtp_timestamp: RtpTimestamp) -> Option<u64> {
        let ms = unix_ms_from_ntp(ntp)?;
        self.anchor = Some((ms, rtp_timestamp));
        Some(ms)
    }

    /// The wall-clock capture time (Unix ms) of the frame with `rtp_timestamp` at a clock rate
    /// of [`RtpTimestamp::CLOCK_HZ`].
    pub fn capture_ms(&self, rtp_timestamp: RtpTimestamp) -> Option<u64> {
        self.capture_ms_at(rtp_timestamp, RtpTimestamp::CLOCK_HZ)
    }

    /// [`CaptureClock::capture_ms`] for a stream whose RTP clock runs at `clock_hz` (an audio
    /// track: 8 000 for G.711, the sampling rate for AAC; RFC 3550 §6.4.1: a sender report's
    /// RTP timestamp is in the clock of the packets it reports on).
    pub fn capture_ms_at(&self, rtp_timestamp: RtpTimestamp, clock_hz: u32) -> Option<u64> {
        let (ms, at) = self.anchor?;
        let delta_ms = rtp_timestamp.ticks_since(at) * 1000 / i64::from(clock_hz.max(1));
        ms.checked_add_signed(delta_ms)
    }

    /// Forgets the report (a new camera session starts a new timeline).
    pub fn reset(&mut self) {
        self.anchor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_round_trips_to_the_millisecond() {
        for ms in (0..2000u64).chain([1_764_366_000_123, 1_795_907_145_633, 2_085_978_496_000 + 5]) {
            assert_eq!(unix_ms_from_ntp(ntp_from_unix_ms(ms)), Some(ms), "{ms}");
        }
        // RFC 3550's example era: 0xe4362f99 s is 2021-04-30 (retina's rtcp test packet).
        assert_eq!(unix_ms_from_ntp(0xe436_2f99_cccc_cccc), Some(1_619_767_577_800));
        assert_eq!(unix_ms_from_ntp(0x8000_0000_0000_0000), None, "1968 is before the Unix epoch");
    }

    #[test]
    fn sender_reports_round_trip() {
        let sr =
            SenderReport { ssrc: Ssrc(7), ntp: 0x1234_5678_9abc_def0, rtp_timestamp: RtpTimestamp::new(90_000), packets: 3, octets: 4 };
        let bytes = sr.to_bytes();
        assert_eq!(&bytes[..4], &[0x80, 200, 0, 6]);
        assert_eq!(SenderReport::parse(&bytes), Some(sr));
        assert_eq!(SenderReport::parse(&bytes[..27]), None);
        let mut rr = bytes;
        rr[1] = 201;
        assert_eq!(SenderReport::parse(&rr), None, "a receiver report is not a sender report");
    }

    #[test]
    fn capture_times_follow_the_report() {
        let mut clock = CaptureClock::default();
        assert_eq!(clock.capture_ms(RtpTimestamp::new(0)), None, "no report yet");
        let at = RtpTimestamp::new(0xffff_0000);
        assert_eq!(clock.sender_report(ntp_from_unix_ms(1_000_000), at), Some(1_000_000));
        assert_eq!(clock.capture_ms(at.wrapping_add(3600)), Some(1_000_040), "one frame at 25 fps later, across the wrap");
        assert_eq!(clock.capture_ms(at.wrapping_sub(90_000)), Some(999_000), "a frame before the report");
        assert_eq!(clock.capture_ms_at(at.wrapping_add(1024), 16_000), Some(1_000_064), "an AAC frame at 16 kHz");
        assert_eq!(clock.capture_ms_at(at.wrapping_sub(160), 8_000), Some(999_980), "G.711, 20 ms earlier");
        clock.reset();
        assert_eq!(clock.capture_ms(at), None);
    }
}
