//! Fragmented MP4 for recordings and HLS (ISO/IEC 14496-12 §8.8 movie fragments; ISO/IEC 14496-15
//! §5.3.3 `avcC` and §8.3.3 `hvcC`), built from mp4-atom's boxes:
//!
//! - an init segment (`ftyp` + `moov` with `mvex`) per codec configuration: a video track
//!   (track 1, 90 kHz timescale, the parameter sets in the sample entry `avc1` / `hvc1`) and,
//!   when the camera sends AAC, an audio track (track 2, `mp4a` with its AudioSpecificConfig
//!   in `esds`, ISO/IEC 14496-14 §3.1.2; timescale its sampling rate);
//! - fragments (`moof` + `mdat`) of whole access units, samples length-prefixed (4 bytes),
//!   parameter sets and access unit delimiters left out (they are in the init segment);
//!   decoding times are the fragment's presentation times sorted (B-frames get signed
//!   composition offsets, `trun` version 1), so a fragment needs no look-ahead; audio
//!   samples (raw AAC access units) in a second `traf`, their bytes after the video's in the
//!   one `mdat`;
//! - [`scan`]: the fragments of a file written so, where the last complete one ends (crash
//!   recovery), and each one's time and byte range (export, playback).

use std::io::{Read, Seek, SeekFrom};

use std::ops::Range;

use crate::VideoCodec;
use crate::audio::AacConfig;
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Any, Atom, Audio, Avc1, Avcc, AvccExt, Decode, Dinf, Dref, Encode, Esds, FixedPoint, FourCC, Ftyp, Hdlr, Header, Hvc1, HvcCArray, Hvcc,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trex, Trun,
    TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

/// A `moof` larger than this is not one of ours (a scan stops there rather than allocate it).
const MAX_MOOF: usize = 4 << 20;
/// Media timescale: the RTP video clock, 90 kHz.
pub const TIMESCALE: u64 = 90_000;
const TRACK: u32 = 1;
/// The audio track's id.
const AUDIO_TRACK: u32 = 2;
/// `trun` sample flags (§8.8.3.1): a sync sample (depends on no other).
const SYNC: u32 = 0x0200_0000;
/// A non-sync sample that depends on others.
const NON_SYNC: u32 = 0x0101_0000;

/// One access unit to store: its presentation time (90 kHz ticks since the Unix epoch) and
/// its NAL units, length-prefixed.
#[derive(Debug)]
pub struct Sample {
    /// Presentation time, 90 kHz ticks (recordings: since the Unix epoch).
    pub pts: i64,
    /// Whether it is a keyframe (IDR/IRAP: a sync sample).
    pub keyframe: bool,
    /// Its NAL units, each after a 4-byte big-endian length.
    pub data: Vec<u8>,
}

/// One AAC access unit to store, raw (its ADTS header dropped: the configuration is in the
/// init segment).
#[derive(Debug)]
pub struct AudioSample {
    /// Decoding time in the audio track's timescale, its sampling rate (recordings: since
    /// the Unix epoch).
    pub dts: u64,
    /// Duration in the same timescale (1024 for one AAC-LC frame; longer over a gap, so the
    /// track has no hole a player would stall at).
    pub duration: u32,
    /// The raw access unit.
    pub data: Vec<u8>,
}

/// The parameter sets of an access unit (Annex B NAL units without start codes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParameterSets {
    /// H.265 video parameter sets.
    pub vps: Vec<Vec<u8>>,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

impl ParameterSets {
    /// Whether an SPS (and a PPS) are known: an init segment can be made.
    pub fn complete(&self, codec: VideoCodec) -> bool {
        !self.sps.is_empty() && !self.pps.is_empty() && (codec == VideoCodec::H264 || !self.vps.is_empty())
    }
}

/// Splits an Annex B access unit into its parameter sets and the sample's length-prefixed
/// NAL units (access unit delimiters dropped).
pub fn sample_data(codec: VideoCodec, annexb: &[u8]) -> (ParameterSets, Vec<u8>) {
    let mut sets = ParameterSets::default();
    let mut data = Vec::with_capacity(annexb.len() + 16);
    for nal in crate::h264::nal_units(annexb).filter(|n| !n.is_empty()) {
        let kind = match codec {
            VideoCodec::H264 => match nal[0] & 0x1f {
                7 => Some(&mut sets.sps),
                8 => Some(&mut sets.pps),
                9 => continue, // access unit delimiter
                _ => None,
            },
            VideoCodec::H265 => match (nal[0] >> 1) & 0x3f {
                32 => Some(&mut sets.vps),
                33 => Some(&mut sets.sps),
                34 => Some(&mut sets.pps),
                35 => continue,
                _ => None,
            },
        };
        match kind {
            Some(list) => list.push(nal.to_vec()),
            None => {
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(nal);
            }
        }
    }
    (sets, data)
}

/// The RFC 6381 `CODECS` value of a video with `sets` (HLS multivariant playlists): H.264
/// `avc1.PPCCLL` from the SPS's profile, constraint flags and level; H.265
/// `hvc1.P.C.TL.B0` (ISO/IEC 14496-15 Annex E) from its SPS. `None` without an SPS.
pub fn codecs(codec: VideoCodec, sets: &ParameterSets) -> Option<String> {
    let sps = sets.sps.first()?;
    match codec {
        VideoCodec::H264 => (sps.len() >= 4).then(|| format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3])),
        VideoCodec::H265 => {
            let info = crate::h265::parse_sps(sps).ok()?;
            // The compatibility flags in reverse bit order: flag `profile_idc` alone, as in the
            // init segment's hvcC.
            let compatibility = 1u32.checked_shl(u32::from(info.profile_idc)).unwrap_or(0);
            let tier = if info.high_tier { 'H' } else { 'L' };
            Some(format!("hvc1.{}.{compatibility:X}.{tier}{}.B0", info.profile_idc, info.level_idc))
        }
    }
}

fn encode(atom: &impl Encode, out: &mut Vec<u8>) -> Result<(), String> {
    atom.encode(out).map_err(|e| format!("MP4 encoding: {e}"))
}

/// The init segment (`ftyp` + `moov`) of a `width`×`height` video with `sets`.
///
/// Errors: parameter sets missing, or an SPS that does not parse.
pub fn init_segment(codec: VideoCodec, sets: &ParameterSets, width: u32, height: u32) -> Result<Vec<u8>, String> {
    init_segment_with_audio(codec, sets, width, height, None)
}

/// [`init_segment`] with an AAC audio track (track 2) when `audio` is given.
///
/// Errors: as [`init_segment`].
pub fn init_segment_with_audio(
    codec: VideoCodec,
    sets: &ParameterSets,
    width: u32,
    height: u32,
    audio: Option<&AacConfig>,
) -> Result<Vec<u8>, String> {
    if !sets.complete(codec) {
        return Err("the keyframe carries no parameter sets".into());
    }
    let visual = Visual { width: width as u16, height: height as u16, ..Default::default() };
    let entry = match codec {
        VideoCodec::H264 => {
            let sps = &sets.sps[0];
            if sps.len() < 4 {
                return Err("an SPS shorter than 4 bytes".into());
            }
            let high = matches!(sps[1], 100 | 110 | 122 | 244);
            Avc1 {
                visual,
                avcc: Avcc {
                    configuration_version: 1,
                    avc_profile_indication: sps[1],
                    profile_compatibility: sps[2],
                    avc_level_indication: sps[3],
                    length_size: 4,
                    sequence_parameter_sets: sets.sps.clone(),
                    picture_parameter_sets: sets.pps.clone(),
                    ext: high.then(AvccExt::default),
                },
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: None,
            }
            .into()
        }
        VideoCodec::H265 => {
            let info = crate::h265::parse_sps(&sets.sps[0]).map_err(|e| format!("H.265 SPS: {e}"))?;
            let compatibility = 1u32.checked_shl(31 - u32::from(info.profile_idc.min(31))).unwrap_or(0).to_be_bytes();
            let array = |nal_unit_type: u8, nalus: &Vec<Vec<u8>>| HvcCArray { completeness: true, nal_unit_type, nalus: nalus.clone() };
            Hvc1 {
                visual,
                hvcc: Hvcc {
                    configuration_version: 1,
                    general_tier_flag: info.high_tier,
                    general_profile_idc: info.profile_idc,
                    general_profile_compatibility_flags: compatibility,
                    general_level_idc: info.level_idc,
                    chroma_format_idc: 1,
                    bit_depth_luma_minus8: info.bit_depth.saturating_sub(8),
                    bit_depth_chroma_minus8: info.bit_depth.saturating_sub(8),
                    num_temporal_layers: 1,
                    temporal_id_nested: true,
                    length_size_minus_one: 3,
                    arrays: vec![array(32, &sets.vps), array(33, &sets.sps), array(34, &sets.pps)],
                    ..Hvcc::new()
                },
                lhvc: None,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                ccst: None,
                spatial: None,
            }
            .into()
        }
    };
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"cmfc"), FourCC::new(b"mp41")],
    };
    let mut trex = vec![Trex { track_id: TRACK, default_sample_description_index: 1, ..Default::default() }];
    if audio.is_some() {
        trex.push(Trex { track_id: AUDIO_TRACK, default_sample_description_index: 1, ..Default::default() });
    }
    let mut moov = Moov {
        mvhd: Mvhd { timescale: 1000, rate: 1.into(), volume: 1.into(), next_track_id: AUDIO_TRACK + 1, ..Default::default() },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: vec![mp4_atom::Trak {
            tkhd: Tkhd {
                track_id: TRACK,
                enabled: true,
                in_movie: true,
                width: (width as u16).into(),
                height: (height as u16).into(),
                ..Default::default()
            },
            mdia: media_box(
                TIMESCALE as u32,
                b"vide",
                "Sightline video",
                Minf { vmhd: Some(Vmhd::default()), ..Default::default() },
                entry,
            ),
            ..Default::default()
        }],
        ..Default::default()
    };
    if let Some(config) = audio {
        moov.trak.push(audio_trak(config)?);
    }
    let mut out = Vec::with_capacity(1024);
    encode(&ftyp, &mut out)?;
    encode(&moov, &mut out)?;
    Ok(out)
}

/// The AAC track: `mp4a` with an `esds` (ISO/IEC 14496-14 §3.1.2; object type indication
/// 0x40, audio stream type 5) holding the AudioSpecificConfig; timescale the sampling rate.
fn audio_trak(config: &AacConfig) -> Result<mp4_atom::Trak, String> {
    let rate = config.sample_rate();
    if rate == 0 {
        return Err("an AAC configuration without a sampling rate".into());
    }
    let asc = config.audio_specific_config();
    let entry = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(config.channels.max(1)),
            sample_size: 16,
            // 16.16 fixed point: rates over 65535 Hz do not fit (the timescale has it).
            sample_rate: FixedPoint::new(rate.min(u32::from(u16::MAX)) as u16, 0),
        },
        esds: Esds {
            es_desc: EsDescriptor {
                es_id: AUDIO_TRACK as u16,
                dec_config: DecoderConfig {
                    object_type_indication: 0x40,
                    stream_type: 5,
                    dec_specific: Some(DecoderSpecific {
                        profile: config.object_type,
                        freq_index: config.frequency_index,
                        chan_conf: config.channels,
                        raw: asc.to_vec(),
                    }),
                    ..Default::default()
                },
                sl_config: SLConfig {},
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    };
    Ok(mp4_atom::Trak {
        tkhd: Tkhd { track_id: AUDIO_TRACK, enabled: true, in_movie: true, alternate_group: 1, volume: 1.into(), ..Default::default() },
        mdia: media_box(rate, b"soun", "Sightline audio", Minf { smhd: Some(Smhd::default()), ..Default::default() }, entry.into()),
        ..Default::default()
    })
}

/// A fragmented track's `mdia`: its timescale, handler, media header (in `minf`, completed
/// here) and one sample entry; the sample tables empty (the samples are in fragments).
fn media_box(timescale: u32, handler: &[u8; 4], name: &str, minf: Minf, entry: mp4_atom::Codec) -> Mdia {
    Mdia {
        mdhd: Mdhd { timescale, language: "und".into(), ..Default::default() },
        hdlr: Hdlr { handler: FourCC::new(handler), name: name.into() },
        minf: Minf {
            dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
            stbl: Stbl {
                stsd: Stsd { codecs: vec![entry] },
                stts: Stts::default(),
                stsc: Stsc::default(),
                stsz: Stsz::default(),
                stco: Some(Stco::default()),
                ..Default::default()
            },
            ..minf
        },
    }
}

/// The audio track's timescale (its sampling rate) in an init segment made by
/// [`init_segment_with_audio`]; `None` without an audio track, or bytes that are no init
/// segment.
pub fn audio_timescale(init: &[u8]) -> Option<u32> {
    let mut buf = init;
    while !buf.is_empty() {
        if let Any::Moov(moov) = Any::decode(&mut buf).ok()? {
            return moov.trak.iter().find(|t| t.tkhd.track_id == AUDIO_TRACK).map(|t| t.mdia.mdhd.timescale);
        }
    }
    None
}

/// One fragment (`moof` + `mdat`) numbered `sequence` of `samples` (decoding order, the
/// first a keyframe or not), the last one lasting `last_duration` (90 kHz ticks).
///
/// Decoding times are the samples' presentation times sorted; `tfdt` is the first of them.
pub fn fragment(sequence: u32, samples: &[Sample], last_duration: u32) -> Result<Vec<u8>, String> {
    fragment_with_audio(sequence, samples, last_duration, &[])
}

/// [`fragment`] with `audio` samples (in decoding order, on the audio track's timescale) in
/// the audio track's `traf`, their bytes after the video's in the `mdat`. No audio `traf`
/// when `audio` is empty.
pub fn fragment_with_audio(sequence: u32, samples: &[Sample], last_duration: u32, audio: &[AudioSample]) -> Result<Vec<u8>, String> {
    let mut dts: Vec<i64> = samples.iter().map(|s| s.pts).collect();
    dts.sort_unstable();
    let base = dts.first().copied().unwrap_or(0).max(0);
    let durations: Vec<u32> = (0..samples.len())
        .map(|i| dts.get(i + 1).map_or(i64::from(last_duration), |next| next - dts[i]).clamp(1, i64::from(u32::MAX)) as u32)
        .collect();
    // Fields every sample shares go once in `tfhd` (as FFmpeg's muxer does): a constant
    // duration, the non-sync flags (with the first sample's own), no composition offsets
    // without B-frames.
    let same_duration = durations.windows(2).all(|w| w[0] == w[1]);
    let one_keyframe = samples.iter().skip(1).all(|s| !s.keyframe);
    let reordered = samples.iter().zip(&dts).any(|(s, d)| s.pts != *d);
    let entries: Vec<TrunEntry> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| TrunEntry {
            duration: (!same_duration).then_some(durations[i]),
            size: Some(s.data.len() as u32),
            flags: (i == 0 || !one_keyframe).then_some(if s.keyframe { SYNC } else { NON_SYNC }),
            cts: reordered.then_some(s.pts - dts[i]),
        })
        .collect();
    let video_bytes: usize = samples.iter().map(|s| s.data.len()).sum();
    let audio_bytes: usize = audio.iter().map(|s| s.data.len()).sum();
    let moof = |data_offset: i32| {
        let mut traf = vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK,
                default_base_is_moof: true,
                default_sample_duration: same_duration.then(|| durations.first().copied()).flatten(),
                default_sample_flags: Some(NON_SYNC),
                ..Default::default()
            },
            tfdt: Some(Tfdt { base_media_decode_time: base as u64 }),
            trun: vec![Trun { data_offset: Some(data_offset), samples: TrunSamples::Explicit(entries.clone()) }],
            ..Default::default()
        }];
        if let Some(first) = audio.first() {
            let same = audio.windows(2).all(|w| w[0].duration == w[1].duration);
            let entries = audio
                .iter()
                .map(|a| TrunEntry { duration: (!same).then_some(a.duration), size: Some(a.data.len() as u32), flags: None, cts: None })
                .collect();
            traf.push(Traf {
                tfhd: Tfhd {
                    track_id: AUDIO_TRACK,
                    default_base_is_moof: true,
                    default_sample_duration: same.then_some(first.duration),
                    default_sample_flags: Some(SYNC),
                    ..Default::default()
                },
                tfdt: Some(Tfdt { base_media_decode_time: first.dts }),
                trun: vec![Trun { data_offset: Some(data_offset + video_bytes as i32), samples: TrunSamples::Explicit(entries) }],
                ..Default::default()
            });
        }
        Moof { mfhd: Mfhd { sequence_number: sequence }, traf }
    };
    let mut out = Vec::new();
    encode(&moof(0), &mut out)?;
    let moof_len = out.len();
    out.clear();
    encode(&moof(moof_len as i32 + 8), &mut out)?;
    let body = video_bytes + audio_bytes;
    out.reserve(body + 16);
    let mdat_len = u32::try_from(body + 8).map_err(|_| "a fragment over 4 GiB")?;
    out.extend_from_slice(&mdat_len.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in samples {
        out.extend_from_slice(&s.data);
    }
    for a in audio {
        out.extend_from_slice(&a.data);
    }
    Ok(out)
}

/// One stored fragment as [`scan`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Byte offset of its `moof` in the file.
    pub offset: u64,
    /// Bytes of `moof` + `mdat`.
    pub len: u64,
    /// Bytes of the `moof` alone.
    pub moof_len: u64,
    /// `tfdt`: decoding time of its first sample on the recording timeline (90 kHz ticks
    /// since the Unix epoch).
    pub start: u64,
    /// Sum of its sample durations, 90 kHz.
    pub duration: u64,
    /// Samples in it.
    pub samples: u32,
    /// Whether its first sample is a keyframe (a player may start here).
    pub keyframe: bool,
}

/// What a recorded file holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Bytes of `ftyp` + `moov` at the start.
    pub init_len: u64,
    /// Complete fragments, in file order.
    pub fragments: Vec<FragmentInfo>,
    /// Where the last complete box ends: what follows is a fragment cut short (a crash).
    pub valid_len: u64,
}

impl Scan {
    /// End of the last fragment on the recording timeline.
    pub fn end(&self) -> u64 {
        self.fragments.last().map_or(0, |f| f.start + f.duration)
    }
}

/// Reads the box structure of a recording (`file` of `len` bytes): the init segment, then
/// each `moof` (decoded) and `mdat` (skipped). Stops at the first box cut short or not
/// understood; everything before it is usable.
pub fn scan<R: Read + Seek>(file: &mut R, len: u64) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0u64;
    let mut pending: Option<(Moof, u64, u64)> = None; // a moof waiting for its mdat
    while at < len {
        let Some((header, header_len)) = read_header(file, at, len) else { break };
        let Some(size) = header.size else { break };
        let Some(end) = at.checked_add(header_len).and_then(|e| e.checked_add(size as u64)).filter(|&e| e <= len) else {
            break;
        };
        match header.kind.as_ref() {
            b"ftyp" | b"moov" if pending.is_none() && scan.fragments.is_empty() => scan.init_len = end,
            b"moof" if pending.is_none() && scan.init_len > 0 && size <= MAX_MOOF => {
                let mut body = vec![0u8; size];
                if file.read_exact(&mut body).is_err() {
                    break;
                }
                match Moof::decode_body(&mut &body[..]) {
                    Ok(moof) => pending = Some((moof, at, end - at)),
                    Err(_) => break,
                }
            }
            b"mdat" if pending.is_some() => {
                let (moof, offset, moof_len) = pending.take().expect("checked");
                // The video track's `traf` (fragments without one are not ours).
                let Some(traf) = moof.traf.iter().find(|t| t.tfhd.track_id == TRACK) else { break };
                let trun = traf.trun.first();
                let samples = trun.map_or(0, |t| t.samples.len() as u32);
                let duration = trun.map_or(0, |t| {
                    t.samples.iter().map(|s| u64::from(s.duration.or(traf.tfhd.default_sample_duration).unwrap_or(0))).sum()
                });
                let first_flags = trun.and_then(|t| t.samples.get(0)).and_then(|s| s.flags).or(traf.tfhd.default_sample_flags).unwrap_or(0);
                scan.fragments.push(FragmentInfo {
                    offset,
                    len: end - offset,
                    moof_len,
                    start: traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time),
                    duration,
                    samples,
                    keyframe: first_flags & 0x0001_0000 == 0,
                });
            }
            _ => break,
        }
        at = end;
        if pending.is_none() {
            scan.valid_len = at;
        }
    }
    scan
}

/// The box header at `at`, and its length in bytes.
fn read_header<R: Read + Seek>(file: &mut R, at: u64, len: u64) -> Option<(Header, u64)> {
    let want = (len - at).min(16) as usize;
    if want < 8 {
        return None;
    }
    let mut raw = [0u8; 16];
    file.seek(SeekFrom::Start(at)).ok()?;
    file.read_exact(&mut raw[..want]).ok()?;
    let mut buf = &raw[..want];
    let header = Header::decode(&mut buf).ok()?;
    let header_len = (want - buf.len()) as u64;
    file.seek(SeekFrom::Start(at + header_len)).ok()?;
    Some((header, header_len))
}

/// A stored fragment made ready for an export: its `moof` (given) with every track's
/// `tfdt` moved by `shift` (90 kHz ticks; the audio track's in its `audio_timescale`), cut to
/// the samples decoded before `until` (90 kHz ticks on the stored timeline; at least one video
/// sample kept), audio samples that would start before 0 dropped, followed by its new `mdat`
/// header. Returns those bytes and the byte ranges of the stored `mdat` payload (from its
/// start) that follow them, in order.
///
/// Errors: a `moof` that does not decode, or not as this module writes them.
pub fn retime(moof: &[u8], shift: i64, until: Option<u64>, audio_timescale: Option<u32>) -> Result<(Vec<u8>, Vec<Range<u64>>), String> {
    let bad = |e: mp4_atom::Error| format!("stored fragment: {e}");
    let mut m = Moof::decode(&mut &moof[..]).map_err(bad)?;
    // Where each track's bytes start in the stored `mdat` payload (data offsets are from the
    // `moof`'s first byte; the payload starts after the `mdat` header).
    let payload_at = moof.len() as i64 + 8;
    let mut ranges = Vec::new();
    let mut kept = Vec::new();
    for mut traf in std::mem::take(&mut m.traf) {
        let video = traf.tfhd.track_id == TRACK;
        // Ticks of this track per 90 kHz tick, as a ratio.
        let scale = |t: i64| if video { t } else { t * i64::from(audio_timescale.unwrap_or(TIMESCALE as u32)) / TIMESCALE as i64 };
        let (default_duration, default_size) = (traf.tfhd.default_sample_duration, traf.tfhd.default_sample_size);
        let tfdt = traf.tfdt.as_mut().ok_or("stored fragment without tfdt")?;
        let trun = traf.trun.first_mut().ok_or("stored fragment without trun")?;
        let offset = trun.data_offset.map_or(0, i64::from) - payload_at;
        let TrunSamples::Explicit(entries) = &mut trun.samples else { return Err("stored fragment without sample sizes".into()) };
        let duration = |e: &TrunEntry| i64::from(e.duration.or(default_duration).unwrap_or(0));
        let size = |e: &TrunEntry| u64::from(e.size.or(default_size).unwrap_or(0));
        let (shift, until) = (scale(shift), until.map(|u| scale(u as i64)));
        let mut dts = tfdt.base_media_decode_time as i64;
        let mut from = u64::try_from(offset).map_err(|_| "stored fragment with its data before its mdat")?;
        // Audio before the export's start (its first keyframe) is left out.
        let mut skip = 0;
        while !video && skip < entries.len() && dts + shift < 0 {
            dts += duration(&entries[skip]);
            from += size(&entries[skip]);
            skip += 1;
        }
        entries.drain(..skip);
        tfdt.base_media_decode_time = (dts + shift).max(0) as u64;
        let mut keep = 0;
        for e in entries.iter() {
            if (keep > 0 || !video) && until.is_some_and(|u| dts >= u) {
                break;
            }
            dts += duration(e);
            keep += 1;
        }
        entries.truncate(keep);
        if entries.is_empty() {
            continue;
        }
        let bytes: u64 = entries.iter().map(size).sum();
        ranges.push(from..from + bytes);
        kept.push(traf);
    }
    if !kept.iter().any(|t| t.tfhd.track_id == TRACK) {
        return Err("stored fragment without a video track".into());
    }
    m.traf = kept;
    let place = |m: &mut Moof, at: i32| {
        let mut at = at;
        for (traf, range) in m.traf.iter_mut().zip(&ranges) {
            if let Some(trun) = traf.trun.first_mut() {
                trun.data_offset = Some(at);
            }
            at += (range.end - range.start) as i32;
        }
    };
    let mut out = Vec::with_capacity(moof.len() + 8);
    place(&mut m, 0);
    encode(&m, &mut out)?;
    let moof_len = out.len();
    out.clear();
    place(&mut m, moof_len as i32 + 8);
    encode(&m, &mut out)?;
    let payload: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    let mdat_len = u32::try_from(payload + 8).map_err(|_| "a fragment over 4 GiB")?;
    out.extend_from_slice(&mdat_len.to_be_bytes());
    out.extend_from_slice(b"mdat");
    Ok((out, ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 10] = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
    const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

    fn unit(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| [&[0, 0, 0, 1][..], n].concat()).collect()
    }

    #[test]
    fn fragments_scan_back_and_a_cut_tail_is_found() {
        let (sets, key) = sample_data(VideoCodec::H264, &unit(&[&[0x09, 0xf0], &SPS, &PPS, &[0x65, 1, 2, 3]]));
        assert_eq!((sets.sps.len(), sets.pps.len()), (1, 1));
        assert_eq!(codecs(VideoCodec::H264, &sets).as_deref(), Some("avc1.42c01e"), "RFC 6381 from the SPS");
        assert_eq!(key, vec![0, 0, 0, 4, 0x65, 1, 2, 3], "delimiter and parameter sets left out");
        let mut file = init_segment(VideoCodec::H264, &sets, 640, 360).unwrap();
        let init_len = file.len() as u64;
        // Two fragments; the second with B-frames (presentation order 0, 3, 1, 2).
        let s = |pts: i64, keyframe: bool| Sample { pts, keyframe, data: vec![0, 0, 0, 2, 0x41, 0] };
        file.extend(fragment(1, &[s(0, true), s(3600, false)], 3600).unwrap());
        let second = vec![s(7200, true), s(18000, false), s(10800, false), s(14400, false)];
        file.extend(fragment(2, &second, 3600).unwrap());
        let whole = file.len() as u64;
        file.extend_from_slice(&[0, 0, 1, 0, b'm', b'o', b'o', b'f', 1, 2]); // cut short
        let scan = scan(&mut std::io::Cursor::new(&file), file.len() as u64);
        assert_eq!(scan.init_len, init_len);
        assert_eq!(scan.valid_len, whole);
        assert_eq!(scan.fragments.len(), 2);
        assert_eq!((scan.fragments[0].start, scan.fragments[0].duration, scan.fragments[0].samples), (0, 7200, 2));
        assert_eq!((scan.fragments[1].start, scan.fragments[1].duration, scan.fragments[1].keyframe), (7200, 14400, true));
        assert_eq!(scan.end(), 21600);
        // Re-timed and cut: two of the four samples (decoded before 14400), 12 bytes.
        let f = &scan.fragments[1];
        let moof = &file[f.offset as usize..(f.offset + f.moof_len) as usize];
        let (head, payload) = retime(moof, -7200, Some(14_400), None).unwrap();
        assert_eq!(payload, vec![0..12]);
        let mut cut = file[..init_len as usize].to_vec();
        cut.extend_from_slice(&head);
        cut.extend_from_slice(&file[(f.offset + f.moof_len + 8) as usize..][..12]);
        let again = super::scan(&mut std::io::Cursor::new(&cut), cut.len() as u64);
        assert_eq!((again.fragments.len(), again.fragments[0].start, again.fragments[0].samples), (1, 0, 2));
        assert_eq!(again.valid_len, cut.len() as u64);
        // Garbage is no fragment, not a panic.
        assert!(super::scan(&mut std::io::Cursor::new(&[7u8; 40][..]), 40).fragments.is_empty());
    }

    #[test]
    fn audio_rides_in_a_second_track_and_is_cut_with_the_video() {
        let (sets, _) = sample_data(VideoCodec::H264, &unit(&[&SPS, &PPS, &[0x65, 1]]));
        let aac = AacConfig::lc(16_000, 1).unwrap();
        let init = init_segment_with_audio(VideoCodec::H264, &sets, 640, 360, Some(&aac)).unwrap();
        assert_eq!(audio_timescale(&init), Some(16_000));
        assert_eq!(audio_timescale(&init_segment(VideoCodec::H264, &sets, 640, 360).unwrap()), None);
        // 400 ms of video at 25 fps from 1 s; AAC frames (1024 samples at 16 kHz) from 0.99 s.
        let video: Vec<Sample> =
            (0..10).map(|i| Sample { pts: 90_000 + i * 3600, keyframe: i == 0, data: vec![0, 0, 0, 2, 0x41, i as u8] }).collect();
        let audio: Vec<AudioSample> =
            (0..7).map(|i| AudioSample { dts: 15_840 + i * 1024, duration: 1024, data: vec![0xA0 + i as u8; 5] }).collect();
        let mut file = init.clone();
        file.extend(fragment_with_audio(1, &video, 3600, &audio).unwrap());
        let scanned = scan(&mut std::io::Cursor::new(&file), file.len() as u64);
        assert_eq!(scanned.valid_len, file.len() as u64);
        let f = &scanned.fragments[0];
        assert_eq!((f.start, f.duration, f.samples, f.keyframe), (90_000, 36_000, 10, true), "times are the video track's");
        // Exported from the keyframe (shift -1 s) to 1.2 s: 5 video samples; the first AAC
        // frame (at -10 ms) left out, then the 3 decoded before 1.2 s (19 200 at 16 kHz).
        let moof = &file[f.offset as usize..(f.offset + f.moof_len) as usize];
        let (head, ranges) = retime(moof, -90_000, Some(108_000), Some(16_000)).unwrap();
        assert_eq!(ranges, vec![0..30, 65..80]);
        let m = Moof::decode(&mut &head[..]).unwrap();
        let tracks: Vec<(u32, u64, usize)> =
            m.traf.iter().map(|t| (t.tfhd.track_id, t.tfdt.as_ref().unwrap().base_media_decode_time, t.trun[0].samples.len())).collect();
        assert_eq!(tracks, vec![(1, 0, 5), (2, 864, 3)]);
        // The re-made fragment reads back, its audio bytes where its trun says.
        let payload = &file[(f.offset + f.moof_len + 8) as usize..];
        let mut cut = init.clone();
        cut.extend_from_slice(&head);
        for r in &ranges {
            cut.extend_from_slice(&payload[r.start as usize..r.end as usize]);
        }
        let again = scan(&mut std::io::Cursor::new(&cut), cut.len() as u64);
        assert_eq!((again.fragments.len(), again.fragments[0].samples, again.valid_len), (1, 5, cut.len() as u64));
        let audio_at = init.len() + m.traf[1].trun[0].data_offset.unwrap() as usize;
        assert_eq!(&cut[audio_at..audio_at + 5], &[0xA1; 5], "the second AAC frame first");
    }
}
