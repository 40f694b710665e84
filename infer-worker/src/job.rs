//! Offline job chunks (issue #15): decode a chunk (libavcodec, H.264/H.265, B-frames), run
//! its filters on each picture (the `image` and `imageproc` crates; the YOLO model for
//! `detect`), encode it again (x264 through libavcodec, no B-frames, SPS/PPS in front of the
//! keyframe) and answer a [`ChunkResult`] with per-picture timings and a preview JPEG.
//!
//! Each chunk starts at a keyframe and decodes on its own; its output starts with an IDR, so
//! the gateway concatenates chunks in order into one MP4. Pictures keep their presentation
//! times: the output has the input's frame count, order and frame rate.

use std::time::Instant;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next as ffmpeg;
use image::{GrayImage, Rgb, RgbImage};
use wire::job::{ChunkResult, Codec, FrameTiming, ResultHeader, Stage, Task, Unit, unit_slices};

use crate::runtime::Detector;

/// Output quality: x264's constant rate factor (lower is better; 18-23 is "visually lossless"
/// to "good").
const CRF: &str = "20";
/// The preview picture's width, px.
const PREVIEW_WIDTH: u32 = 320;
/// Fonts tried for `detect` labels (Debian's `fonts-dejavu-core`); without one, boxes only.
const FONTS: [&str; 2] = ["/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"];

/// Processes chunks; one per worker process, reused for every chunk.
pub struct Processor {
    /// This worker's name in results and metrics.
    pub worker: String,
    detector: Option<Detector>,
    font: Option<ab_glyph::FontArc>,
    /// x264 threads per chunk.
    threads: usize,
    /// x264 preset.
    preset: String,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor").field("worker", &self.worker).field("detector", &self.detector.is_some()).finish_non_exhaustive()
    }
}

/// Timings of one chunk, ms.
#[derive(Default)]
struct Spent {
    decode: f32,
    filter: f32,
    encode: f32,
}

fn ms(since: Instant) -> f32 {
    since.elapsed().as_secs_f32() * 1000.0
}

impl Processor {
    /// A processor named `worker`; `detector` serves `detect` stages (without one they fail).
    pub fn new(worker: String, detector: Option<Detector>, threads: usize, preset: &str) -> Processor {
        let font = FONTS.iter().find_map(|p| std::fs::read(p).ok()).and_then(|b| ab_glyph::FontArc::try_from_vec(b).ok());
        Processor { worker, detector, font, threads: threads.max(1), preset: preset.to_owned() }
    }

    /// Processes one task; never panics on bad input: an error goes back in the result.
    pub fn process(&mut self, task: &Task, retried: bool) -> ChunkResult {
        let started_ms = now_ms();
        let started = Instant::now();
        let h = &task.header;
        let mut header = ResultHeader {
            job: h.job.clone(),
            chunk: h.chunk,
            worker: self.worker.clone(),
            retried,
            error: None,
            units: Vec::new(),
            width: h.width,
            height: h.height,
            frames: Vec::new(),
            started_ms,
            decode_ms: 0.0,
            filter_ms: 0.0,
            encode_ms: 0.0,
            total_ms: 0.0,
            preview_len: 0,
        };
        let mut payload = Vec::new();
        let mut spent = Spent::default();
        match self.run(task, &mut header, &mut payload, &mut spent) {
            Ok(()) => {}
            Err(e) => {
                header.error = Some(format!("chunk {}: {e}", h.chunk));
                header.units.clear();
                header.preview_len = 0;
                payload.clear();
            }
        }
        header.decode_ms = spent.decode;
        header.filter_ms = spent.filter;
        header.encode_ms = spent.encode;
        header.total_ms = ms(started);
        ChunkResult { header, payload }
    }

    fn run(&mut self, task: &Task, header: &mut ResultHeader, payload: &mut Vec<u8>, spent: &mut Spent) -> anyhow::Result<()> {
        let h = &task.header;
        if h.pipeline.contains(&Stage::Detect) && self.detector.is_none() {
            anyhow::bail!("the pipeline has `detect` but this worker has no model (start it with --model)");
        }
        crate::ffmpeg_ready()?;
        let t = Instant::now();
        let pictures = decode(h.codec, &h.units, &task.payload)?;
        spent.decode += ms(t);
        if pictures.len() != h.units.len() {
            anyhow::bail!(
                "{} access units decoded into {} pictures (a GOP that does not decode on its own?)",
                h.units.len(),
                pictures.len()
            );
        }
        let frame_rate = frame_rate(&h.units);
        let mut encoder: Option<Encoder> = None;
        let mut previous: Option<GrayImage> = None;
        let mut units = Vec::new();
        let mut preview: Option<Vec<u8>> = None;
        let mut rgb_of = RgbConverter::default();
        for (i, frame) in pictures.iter().enumerate() {
            let t = Instant::now();
            let mut rgb = rgb_of.convert(frame)?;
            let gray = image::imageops::grayscale(&rgb);
            // Motion against the previous picture; a chunk's first compares with its second.
            let reference = previous
                .take()
                .or_else(|| pictures.get(i + 1).and_then(|f| rgb_of.convert(f).ok()).map(|n| image::imageops::grayscale(&n)));
            for stage in &h.pipeline {
                rgb = self.filter(stage, rgb, &gray, reference.as_ref())?;
            }
            previous = Some(gray);
            let filter_ms = ms(t);
            spent.filter += filter_ms;
            if i == 0 {
                // Held until the units are in: the preview goes last.
                preview = Some(preview_jpeg(&rgb)?);
            }
            let t = Instant::now();
            let pts = frame.pts().unwrap_or_default();
            let enc = match encoder.as_mut() {
                Some(e) => e,
                None => encoder.insert(Encoder::open(rgb.width(), rgb.height(), frame_rate, self.threads, &self.preset)?),
            };
            enc.send(&rgb, pts, &mut units, payload)?;
            let encode_ms = ms(t);
            spent.encode += encode_ms;
            header.frames.push(FrameTiming { pts, ms: filter_ms + encode_ms });
            header.width = rgb.width();
            header.height = rgb.height();
        }
        if let Some(mut enc) = encoder {
            let t = Instant::now();
            enc.finish(&mut units, payload)?;
            spent.encode += ms(t);
        }
        if units.len() != pictures.len() {
            anyhow::bail!("{} pictures encoded into {} access units", pictures.len(), units.len());
        }
        header.units = units;
        if let Some(preview) = preview {
            header.preview_len = preview.len() as u32;
            payload.extend_from_slice(&preview);
        }
        Ok(())
    }

    fn filter(&mut self, stage: &Stage, rgb: RgbImage, gray: &GrayImage, reference: Option<&GrayImage>) -> anyhow::Result<RgbImage> {
        Ok(match stage {
            // Three box blurs approximating a Gaussian (image's `fast_blur`): the cost does not
            // grow with sigma, unlike a true separable Gaussian kernel.
            Stage::Blur { sigma } => image::imageops::fast_blur(&rgb, *sigma),
            Stage::Grayscale => gray_to_rgb(&image::imageops::grayscale(&rgb)),
            Stage::Edges { low, high } => gray_to_rgb(&imageproc::edges::canny(&image::imageops::grayscale(&rgb), *low, *high)),
            Stage::Motion => motion(&rgb, gray, reference),
            Stage::Detect => self.detect(rgb)?,
        })
    }

    fn detect(&mut self, mut rgb: RgbImage) -> anyhow::Result<RgbImage> {
        let Some(detector) = self.detector.as_mut() else { anyhow::bail!("no model") };
        let (w, h) = rgb.dimensions();
        let boxes = detector.detect_rgb(rgb.as_raw(), w, h)?;
        for d in &boxes {
            let colour = palette(d.class_id);
            let (x, y) = (d.x.max(0.0) as i32, d.y.max(0.0) as i32);
            let (bw, bh) = (d.w.max(1.0) as u32, d.h.max(1.0) as u32);
            for inset in 0..3i32 {
                let (iw, ih) = (bw.saturating_sub(2 * inset as u32).max(1), bh.saturating_sub(2 * inset as u32).max(1));
                imageproc::drawing::draw_hollow_rect_mut(&mut rgb, imageproc::rect::Rect::at(x + inset, y + inset).of_size(iw, ih), colour);
            }
            if let Some(font) = &self.font {
                let name = detector.names.get(d.class_id).cloned().unwrap_or_else(|| d.class_id.to_string());
                let label = format!("{name} {:.0}%", d.score * 100.0);
                let scale = ab_glyph::PxScale::from(16.0);
                let (tw, th) = imageproc::drawing::text_size(scale, font, &label);
                let ty = (y - th as i32 - 4).max(0);
                imageproc::drawing::draw_filled_rect_mut(&mut rgb, imageproc::rect::Rect::at(x, ty).of_size(tw + 6, th + 4), colour);
                imageproc::drawing::draw_text_mut(&mut rgb, Rgb([0, 0, 0]), x + 3, ty + 2, scale, font, &label);
            }
        }
        Ok(rgb)
    }
}

/// A heat map of change: the picture dimmed to grey, red where its luma differs from
/// `reference` (the previous picture), in proportion to the difference.
fn motion(rgb: &RgbImage, gray: &GrayImage, reference: Option<&GrayImage>) -> RgbImage {
    let (w, h) = rgb.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let g = gray.get_pixel(x, y)[0];
        let diff = reference.filter(|r| r.dimensions() == (w, h)).map_or(0, |r| g.abs_diff(r.get_pixel(x, y)[0]));
        let heat = u16::from(diff).saturating_mul(4).min(255) as u8;
        let base = g / 2;
        Rgb([base.saturating_add(heat), base.saturating_sub(heat / 2), base.saturating_sub(heat / 2)])
    })
}

fn gray_to_rgb(gray: &GrayImage) -> RgbImage {
    RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
        let v = gray.get_pixel(x, y)[0];
        Rgb([v, v, v])
    })
}

/// A distinct colour per class.
fn palette(class: usize) -> Rgb<u8> {
    const COLOURS: [[u8; 3]; 6] = [[255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255], [0, 220, 220]];
    Rgb(COLOURS[class % COLOURS.len()])
}

/// The frame rate the units' presentation times show (the most common step), for the
/// encoder's rate control; 25 when there is a single unit.
fn frame_rate(units: &[Unit]) -> ffmpeg::Rational {
    let mut pts: Vec<i64> = units.iter().map(|u| u.pts).collect();
    pts.sort_unstable();
    let mut steps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).collect();
    steps.sort_unstable();
    match steps.get(steps.len() / 2) {
        Some(&step) => ffmpeg::Rational::new(90_000 / step.gcd_with(90_000) as i32, (step / step.gcd_with(90_000)) as i32),
        None => ffmpeg::Rational::new(25, 1),
    }
}

trait Gcd {
    fn gcd_with(self, other: i64) -> i64;
}

impl Gcd for i64 {
    fn gcd_with(self, other: i64) -> i64 {
        let (mut a, mut b) = (self.abs(), other.abs());
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a.max(1)
    }
}

/// Decodes the units (decoding order) into pictures (presentation order), pts kept.
fn decode(codec: Codec, units: &[Unit], payload: &[u8]) -> anyhow::Result<Vec<ffmpeg::frame::Video>> {
    let id = match codec {
        Codec::H264 => ffmpeg::codec::Id::H264,
        Codec::H265 => ffmpeg::codec::Id::HEVC,
    };
    let found = ffmpeg::decoder::find(id).ok_or_else(|| anyhow::anyhow!("no {codec:?} decoder in libavcodec"))?;
    // One thread (libavcodec's default): parallelism comes from running several workers.
    let mut decoder = ffmpeg::codec::Context::new_with_codec(found).decoder().video()?;
    let mut out = Vec::with_capacity(units.len());
    let drain = |decoder: &mut ffmpeg::decoder::Video, out: &mut Vec<ffmpeg::frame::Video>| {
        let mut frame = ffmpeg::frame::Video::empty();
        while decoder.receive_frame(&mut frame).is_ok() {
            out.push(std::mem::replace(&mut frame, ffmpeg::frame::Video::empty()));
        }
    };
    for (unit, bytes) in unit_slices(units, payload) {
        let mut packet = ffmpeg::Packet::copy(bytes);
        packet.set_pts(Some(unit.pts));
        if unit.key {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        decoder.send_packet(&packet).map_err(|e| anyhow::anyhow!("undecodable access unit at pts {}: {e}", unit.pts))?;
        drain(&mut decoder, &mut out);
    }
    decoder.send_eof()?;
    drain(&mut decoder, &mut out);
    // Presentation order by pts (the decoder's order already; a damaged stream may not be).
    out.sort_by_key(|f| f.pts().unwrap_or_default());
    Ok(out)
}

/// Decoded pictures to packed RGB (swscale; BT.601, the picture's own range), the scaler
/// kept while the format and size stay.
#[derive(Default)]
struct RgbConverter {
    scaler: Option<(Pixel, u32, u32, Scaler)>,
}

impl RgbConverter {
    fn convert(&mut self, frame: &ffmpeg::frame::Video) -> anyhow::Result<RgbImage> {
        let (w, h, format) = (frame.width(), frame.height(), frame.format());
        if !self.scaler.as_ref().is_some_and(|(f, sw, sh, _)| (*f, *sw, *sh) == (format, w, h)) {
            self.scaler = Some((format, w, h, Scaler::get(format, w, h, Pixel::RGB24, w, h, Flags::BILINEAR)?));
        }
        let Some((_, _, _, scaler)) = self.scaler.as_mut() else { anyhow::bail!("no scaler") };
        let mut rgb = ffmpeg::frame::Video::empty();
        scaler.run(frame, &mut rgb)?;
        packed_rgb(&rgb, w, h)
    }
}

fn packed_rgb(rgb: &ffmpeg::frame::Video, w: u32, h: u32) -> anyhow::Result<RgbImage> {
    let stride = rgb.stride(0);
    let data = rgb.data(0);
    let row = w as usize * 3;
    let mut packed = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        packed.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    RgbImage::from_raw(w, h, packed).ok_or_else(|| anyhow::anyhow!("picture size {w}x{h}"))
}

fn preview_jpeg(rgb: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let (w, h) = rgb.dimensions();
    let pw = PREVIEW_WIDTH.min(w).max(1);
    let ph = (u64::from(h) * u64::from(pw) / u64::from(w.max(1))).max(1) as u32;
    let small = image::imageops::thumbnail(rgb, pw, ph);
    let img = turbojpeg::Image {
        pixels: small.as_raw().as_slice(),
        width: pw as usize,
        pitch: pw as usize * 3,
        height: ph as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    Ok(turbojpeg::compress(img, 75, turbojpeg::Subsamp::Sub2x2)?.to_vec())
}

/// x264 through libavcodec for one chunk: the first picture an IDR with SPS/PPS, no
/// B-frames (decoding order = presentation order), quality by CRF.
struct Encoder {
    encoder: ffmpeg::encoder::Video,
    scaler: Scaler,
    rgb: ffmpeg::frame::Video,
    first: bool,
}

impl Encoder {
    fn open(width: u32, height: u32, frame_rate: ffmpeg::Rational, threads: usize, preset: &str) -> anyhow::Result<Encoder> {
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or_else(|| anyhow::anyhow!("libavcodec has no libx264 encoder"))?;
        let mut encoder = ffmpeg::codec::Context::new_with_codec(codec).encoder().video()?;
        // x264 wants even sizes for 4:2:0; the scaler pads nothing, so round down.
        encoder.set_width(width & !1);
        encoder.set_height(height & !1);
        encoder.set_format(Pixel::YUV420P);
        encoder.set_time_base(ffmpeg::Rational::new(1, 90_000));
        encoder.set_frame_rate(Some(frame_rate));
        encoder.set_max_b_frames(0);
        encoder.set_gop(1 << 20);
        let mut options = ffmpeg::Dictionary::new();
        options.set("preset", preset);
        options.set("crf", CRF);
        options.set("threads", &threads.to_string());
        options.set("x264-params", "repeat-headers=1:scenecut=0");
        let encoder = encoder.open_with(options)?;
        let scaler = Scaler::get(Pixel::RGB24, width, height, Pixel::YUV420P, width & !1, height & !1, Flags::BILINEAR)?;
        Ok(Encoder { encoder, scaler, rgb: ffmpeg::frame::Video::new(Pixel::RGB24, width, height), first: true })
    }

    fn send(&mut self, picture: &RgbImage, pts: i64, units: &mut Vec<Unit>, payload: &mut Vec<u8>) -> anyhow::Result<()> {
        let row = picture.width() as usize * 3;
        let stride = self.rgb.stride(0);
        let src = picture.as_raw();
        let dst = self.rgb.data_mut(0);
        for y in 0..picture.height() as usize {
            dst[y * stride..y * stride + row].copy_from_slice(&src[y * row..(y + 1) * row]);
        }
        let mut yuv = ffmpeg::frame::Video::empty();
        self.scaler.run(&self.rgb, &mut yuv)?;
        yuv.set_pts(Some(pts));
        yuv.set_kind(if self.first { ffmpeg::picture::Type::I } else { ffmpeg::picture::Type::None });
        self.first = false;
        self.encoder.send_frame(&yuv)?;
        self.receive(units, payload);
        Ok(())
    }

    fn finish(&mut self, units: &mut Vec<Unit>, payload: &mut Vec<u8>) -> anyhow::Result<()> {
        self.encoder.send_eof()?;
        self.receive(units, payload);
        Ok(())
    }

    fn receive(&mut self, units: &mut Vec<Unit>, payload: &mut Vec<u8>) {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            units.push(Unit { pts: packet.pts().unwrap_or_default(), key: packet.is_key(), len: data.len() as u32 });
            payload.extend_from_slice(data);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
