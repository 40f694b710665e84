//! Offline job chunks (issue #15): decode a chunk (libavcodec, H.264/H.265, B-frames), run
//! its filters on each picture's 4:2:0 planes as decoded (`libblur` for the Gaussian blur,
//! `imageproc` for Canny edges and drawing; the YOLO model for `detect`), encode it again (x264 through libavcodec, no B-frames, SPS/PPS in front of the
//! keyframe) and answer a [`ChunkResult`] with per-picture timings and a preview JPEG.
//!
//! Each chunk starts at a keyframe and decodes on its own; its output starts with an IDR, so
//! the gateway concatenates chunks in order into one MP4. Pictures keep their presentation
//! times: the output has the input's frame count, order and frame rate.

use std::time::Instant;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next as ffmpeg;
use image::{GrayImage, Luma};
use wire::job::{ChunkResult, Codec, FrameBoxes, FrameTiming, JobBox, ResultHeader, Stage, Task, Unit, unit_slices};

use crate::runtime::Detector;

/// Output quality: x264's constant rate factor (lower is better; 18-23 is "visually lossless"
/// to "good").
const CRF: &str = "20";
/// The preview picture's width, px.
const PREVIEW_WIDTH: u32 = 320;
/// Fonts tried for `detect` labels (Debian's `fonts-dejavu-core`); without one, boxes only.
const FONTS: [&str; 2] = ["/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"];

/// The SeetaFace frontal face model (FuSt cascade, BSD-2-Clause), from the `rustface` crate's
/// package (build.rs).
const FACE_MODEL: &[u8] = include_bytes!(env!("SEETA_FD_MODEL"));
/// Faces are looked for on the luma scaled down to at most this width (1080p and smaller as
/// they are): the detector's cost grows with the pixels, and its window is 20 px at least
/// (at 640 px wide it missed 28 of the 29 faces of the Solvay photograph, ~12 px there).
const FACE_WIDTH: u32 = 1920;

/// Processes chunks; one per worker process, reused for every chunk.
pub struct Processor {
    /// This worker's name in results and metrics.
    pub worker: String,
    detector: Option<Detector>,
    faces: Option<Box<dyn rustface::Detector>>,
    font: Option<ab_glyph::FontArc>,
    /// Labels rasterized once: text -> coverage (0..255) at the label size. Scores make a
    /// few hundred distinct labels per class; cleared past [`LABEL_CACHE`].
    labels: std::collections::HashMap<String, GrayImage>,
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
        Processor {
            worker,
            detector,
            faces: None,
            font,
            labels: std::collections::HashMap::new(),
            threads: threads.max(1),
            preset: preset.to_owned(),
        }
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
            detections: Vec::new(),
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
        if (h.pipeline.contains(&Stage::Detect) || h.detect_only) && self.detector.is_none() {
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
        if h.detect_only {
            return self.detect_all(&pictures, header, spent);
        }
        let frame_rate = frame_rate(&h.units);
        let motion = h.pipeline.contains(&Stage::Motion);
        let tracks: std::collections::HashMap<i64, &[JobBox]> = h.tracks.iter().map(|f| (f.pts, f.boxes.as_slice())).collect();
        let mut encoder: Option<Encoder> = None;
        let mut previous: Option<GrayImage> = None;
        let mut units = Vec::new();
        let mut preview: Option<Vec<u8>> = None;
        let mut planes = PlaneReader::default();
        for (i, frame) in pictures.iter().enumerate() {
            let t = Instant::now();
            let mut picture = planes.read(frame)?;
            // Motion against the previous picture's luma; a chunk's first compares with its second.
            let reference =
                if motion { previous.take().or_else(|| pictures.get(i + 1).and_then(|f| planes.read(f).ok()).map(|p| p.y)) } else { None };
            let luma = motion.then(|| picture.y.clone());
            let boxes = tracks.get(&frame.pts().unwrap_or_default()).copied().unwrap_or_default();
            for stage in &h.pipeline {
                self.filter(stage, &mut picture, reference.as_ref(), boxes)?;
            }
            previous = luma;
            let filter_ms = ms(t);
            spent.filter += filter_ms;
            if i == 0 {
                // Held until the units are in: the preview goes last.
                preview = Some(preview_jpeg(&picture)?);
            }
            let t = Instant::now();
            let pts = frame.pts().unwrap_or_default();
            let enc = match encoder.as_mut() {
                Some(e) => e,
                None => encoder.insert(Encoder::open(picture.width(), picture.height(), frame_rate, self.threads, &self.preset)?),
            };
            enc.send(&picture, pts, &mut units, payload)?;
            let encode_ms = ms(t);
            spent.encode += encode_ms;
            header.frames.push(FrameTiming { pts, ms: filter_ms + encode_ms });
            header.width = enc.width;
            header.height = enc.height;
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

    /// A `detect_only` task: the model's boxes on every picture, nothing encoded.
    fn detect_all(&mut self, pictures: &[ffmpeg::frame::Video], header: &mut ResultHeader, spent: &mut Spent) -> anyhow::Result<()> {
        let mut planes = PlaneReader::default();
        for frame in pictures {
            let t = Instant::now();
            let picture = planes.read(frame)?;
            let boxes = self.boxes(&picture)?;
            let pts = frame.pts().unwrap_or_default();
            let took = ms(t);
            spent.filter += took;
            header.frames.push(FrameTiming { pts, ms: took });
            header.detections.push(FrameBoxes { pts, boxes });
        }
        Ok(())
    }

    /// One stage on the picture's planes (4:2:0, limited range): no conversion to RGB and
    /// back. `tracks`: the picture's tracked boxes (a `track` stage draws them).
    fn filter(&mut self, stage: &Stage, p: &mut Planes, reference: Option<&GrayImage>, tracks: &[JobBox]) -> anyhow::Result<()> {
        match stage {
            Stage::Blur { sigma } => {
                p.y = gaussian(&p.y, *sigma)?;
                // Chroma planes are half size: half the sigma is the same blur.
                let chroma = (*sigma / 2.0).max(0.5);
                p.u = gaussian(&p.u, chroma)?;
                p.v = gaussian(&p.v, chroma)?;
            }
            Stage::Grayscale => p.neutral_chroma(),
            Stage::Edges { low, high } => {
                p.y = imageproc::edges::canny(&p.y, *low, *high);
                p.neutral_chroma();
            }
            Stage::Motion => motion(p, reference),
            Stage::Detect => {
                for b in self.boxes(p)? {
                    let label = format!("{} {:.0}%", b.label, b.bbox.score * 100.0);
                    self.draw_box(p, &b, palette(b.bbox.class_id as usize), &label);
                }
            }
            Stage::Track => {
                for b in tracks {
                    let id = b.track_id.unwrap_or_default();
                    self.draw_box(p, b, palette(id as usize), &format!("{} #{id}", b.label));
                }
            }
            Stage::BlurFaces { sigma } => {
                for (x, y, w, h) in self.find_faces(p)? {
                    // The whole head: the detector's box is the face's inner part.
                    let (mx, my) = (w / 4, h / 3);
                    let (x, y, w, h) = (x.saturating_sub(mx) & !1, y.saturating_sub(my) & !1, (w + 2 * mx + 1) & !1, (h + 2 * my + 1) & !1);
                    blur_region(&mut p.y, x, y, w, h, *sigma)?;
                    blur_region(&mut p.u, x / 2, y / 2, w / 2, h / 2, *sigma / 2.0)?;
                    blur_region(&mut p.v, x / 2, y / 2, w / 2, h / 2, *sigma / 2.0)?;
                }
            }
            Stage::Faces => {
                let (cy, cu, cv) = yuv([0, 220, 220]);
                for (x, y, w, h) in self.find_faces(p)? {
                    outline(p, (x as i32, y as i32, w, h), (cy, cu, cv));
                }
            }
        }
        Ok(())
    }

    /// Faces in the picture, as (x, y, width, height) in its pixels: SeetaFace's frontal
    /// detector (`rustface`) on the luma, scaled to at most 1920 px wide.
    pub fn find_faces_in(&mut self, luma: &GrayImage) -> anyhow::Result<Vec<(u32, u32, u32, u32)>> {
        let detector = match self.faces.as_mut() {
            Some(d) => d,
            None => {
                let model = rustface::read_model(std::io::Cursor::new(FACE_MODEL)).map_err(|e| anyhow::anyhow!("face model: {e}"))?;
                let mut d = rustface::create_detector_with_model(model);
                d.set_min_face_size(20);
                d.set_score_thresh(2.0);
                d.set_pyramid_scale_factor(0.8);
                d.set_slide_window_step(4, 4);
                self.faces.insert(d)
            }
        };
        let (w, h) = luma.dimensions();
        if w < 20 || h < 20 {
            return Ok(Vec::new());
        }
        let scaled;
        let (small, scale) = if w > FACE_WIDTH {
            let sh = (u64::from(h) * u64::from(FACE_WIDTH) / u64::from(w)).max(20) as u32;
            scaled = image::imageops::resize(luma, FACE_WIDTH, sh, image::imageops::FilterType::Triangle);
            (&scaled, f64::from(w) / f64::from(FACE_WIDTH))
        } else {
            (luma, 1.0)
        };
        let faces = detector.detect(&rustface::ImageData::new(small.as_raw(), small.width(), small.height()));
        Ok(faces
            .iter()
            .map(|f| {
                let b = f.bbox();
                let x = (f64::from(b.x().max(0)) * scale) as u32;
                let y = (f64::from(b.y().max(0)) * scale) as u32;
                let bw = ((f64::from(b.width()) * scale) as u32).min(w.saturating_sub(x));
                let bh = ((f64::from(b.height()) * scale) as u32).min(h.saturating_sub(y));
                (x, y, bw, bh)
            })
            .filter(|&(_, _, bw, bh)| bw > 0 && bh > 0)
            .collect())
    }

    fn find_faces(&mut self, p: &Planes) -> anyhow::Result<Vec<(u32, u32, u32, u32)>> {
        self.find_faces_in(&p.y)
    }

    /// The model's boxes on the picture.
    fn boxes(&mut self, p: &Planes) -> anyhow::Result<Vec<JobBox>> {
        let Some(detector) = self.detector.as_mut() else {
            anyhow::bail!("the pipeline needs the model (`detect`, `track`) but this worker has none (start it with --model)")
        };
        let (w, h) = p.y.dimensions();
        let picture = crate::image::I420 {
            width: w,
            height: h,
            y: p.y.as_raw(),
            u: p.u.as_raw(),
            v: p.v.as_raw(),
            strides: (w, p.u.width()),
            full_range: false,
        };
        let found = detector.detect_i420(&picture)?;
        Ok(found
            .iter()
            .map(|d| JobBox {
                bbox: wire::WireBox { x: d.x, y: d.y, w: d.w, h: d.h, class_id: d.class_id as u32, score: d.score },
                label: detector.names.get(d.class_id).cloned().unwrap_or_else(|| d.class_id.to_string()),
                track_id: None,
            })
            .collect())
    }

    /// A box outlined in `rgb` with `label` on a filled tab above it (DejaVu Sans, 16 px;
    /// no label without the font).
    fn draw_box(&mut self, p: &mut Planes, b: &JobBox, rgb: [u8; 3], label: &str) {
        let (cy, cu, cv) = yuv(rgb);
        let b = &b.bbox;
        let (x, y) = (b.x.max(0.0) as i32, b.y.max(0.0) as i32);
        outline(p, (x, y, b.w.max(2.0) as u32, b.h.max(2.0) as u32), (cy, cu, cv));
        let Some(font) = &self.font else { return };
        // Laying out and rasterizing the glyphs was ~2-3 ms of a 720p frame with dozens of
        // boxes: each label is rasterized once (white on black = coverage) and blended after.
        if !self.labels.contains_key(label) {
            if self.labels.len() >= LABEL_CACHE {
                self.labels.clear();
            }
            let scale = ab_glyph::PxScale::from(16.0);
            let (tw, th) = imageproc::drawing::text_size(scale, font, label);
            let mut c = GrayImage::new(tw.max(1), th.max(1));
            imageproc::drawing::draw_text_mut(&mut c, Luma([255]), 0, 0, scale, font, label);
            self.labels.insert(label.to_owned(), c);
        }
        let coverage = &self.labels[label];
        let (tw, th) = coverage.dimensions();
        let ty = (y - th as i32 - 4).max(0) & !1;
        let (lw, lh) = ((tw + 6 + 1) & !1, (th + 4 + 1) & !1);
        let x = x & !1;
        imageproc::drawing::draw_filled_rect_mut(&mut p.y, imageproc::rect::Rect::at(x, ty).of_size(lw, lh), Luma([cy]));
        imageproc::drawing::draw_filled_rect_mut(&mut p.u, imageproc::rect::Rect::at(x / 2, ty / 2).of_size(lw / 2, lh / 2), Luma([cu]));
        imageproc::drawing::draw_filled_rect_mut(&mut p.v, imageproc::rect::Rect::at(x / 2, ty / 2).of_size(lw / 2, lh / 2), Luma([cv]));
        let (ox, oy) = (x + 3, ty + 2);
        // Dark grey text, blended by coverage as `draw_text_mut` blends.
        for (col, row, a) in coverage.enumerate_pixels().filter(|(_, _, a)| a[0] > 0) {
            let (px, py) = (u32::try_from(ox + col as i32), u32::try_from(oy + row as i32));
            if let Some(dst) = px.ok().zip(py.ok()).and_then(|(px, py)| p.y.get_pixel_mut_checked(px, py)) {
                let weight = f32::from(a[0]) / 255.0;
                *dst = imageproc::pixelops::weighted_sum(*dst, Luma([16]), 1.0 - weight, weight);
            }
        }
    }
}

/// Distinct labels kept rasterized (see `Processor::labels`).
const LABEL_CACHE: usize = 4096;

/// A box 4 px wide in colour `(y, u, v)` around `(x, y, w, h)`, on all three planes.
fn outline(p: &mut Planes, (x, y, bw, bh): (i32, i32, u32, u32), (cy, cu, cv): (u8, u8, u8)) {
    let rect = |x: i32, y: i32, w: u32, h: u32| imageproc::rect::Rect::at(x, y).of_size(w.max(1), h.max(1));
    for inset in 0..4i32 {
        let shrink = 2 * inset as u32;
        imageproc::drawing::draw_hollow_rect_mut(
            &mut p.y,
            rect(x + inset, y + inset, bw.saturating_sub(shrink), bh.saturating_sub(shrink)),
            Luma([cy]),
        );
        if inset < 2 {
            let (hx, hy, hw, hh) =
                ((x + inset * 2) / 2, (y + inset * 2) / 2, bw.saturating_sub(shrink * 2) / 2, bh.saturating_sub(shrink * 2) / 2);
            imageproc::drawing::draw_hollow_rect_mut(&mut p.u, rect(hx, hy, hw, hh), Luma([cu]));
            imageproc::drawing::draw_hollow_rect_mut(&mut p.v, rect(hx, hy, hw, hh), Luma([cv]));
        }
    }
}

/// Blurs the part `(x, y, w, h)` of a plane (clipped to it) in place.
fn blur_region(plane: &mut GrayImage, x: u32, y: u32, w: u32, h: u32, sigma: f32) -> anyhow::Result<()> {
    let (pw, ph) = plane.dimensions();
    let (w, h) = (w.min(pw.saturating_sub(x)), h.min(ph.saturating_sub(y)));
    if w < 2 || h < 2 {
        return Ok(());
    }
    let part = image::imageops::crop_imm(plane, x, y, w, h).to_image();
    let blurred = gaussian(&part, sigma)?;
    image::imageops::replace(plane, &blurred, i64::from(x), i64::from(y));
    Ok(())
}

/// A picture as its three 4:2:0 planes (chroma half size, rounded up).
struct Planes {
    y: GrayImage,
    u: GrayImage,
    v: GrayImage,
}

impl Planes {
    fn width(&self) -> u32 {
        self.y.width()
    }

    fn height(&self) -> u32 {
        self.y.height()
    }

    /// No colour: both chroma planes at their neutral value.
    fn neutral_chroma(&mut self) {
        for plane in [&mut self.u, &mut self.v] {
            for px in plane.iter_mut() {
                *px = 128;
            }
        }
    }
}

/// Gaussian blur of one plane (libblur: separable kernel, fixed-point, SIMD; one thread: a
/// worker is one core).
fn gaussian(plane: &GrayImage, sigma: f32) -> anyhow::Result<GrayImage> {
    let (w, h) = plane.dimensions();
    let src = libblur::BlurImage::borrow(plane.as_raw(), w, h, libblur::FastBlurChannels::Plane);
    let mut out = vec![0u8; (w * h) as usize];
    let mut dst = libblur::BlurImageMut::borrow(&mut out, w, h, libblur::FastBlurChannels::Plane);
    libblur::gaussian_blur(
        &src,
        &mut dst,
        libblur::GaussianBlurParams::new_from_sigma(f64::from(sigma)),
        libblur::EdgeMode2D::new(libblur::EdgeMode::Clamp),
        libblur::ThreadingPolicy::Single,
        libblur::ConvolutionMode::FixedPoint,
    )
    .map_err(|e| anyhow::anyhow!("blur: {e:?}"))?;
    GrayImage::from_raw(w, h, out).ok_or_else(|| anyhow::anyhow!("blur: plane size"))
}

/// A heat map of change: the picture dimmed, red where its luma differs from `reference` (the
/// previous picture's), in proportion to the difference.
fn motion(p: &mut Planes, reference: Option<&GrayImage>) {
    let (w, h) = p.y.dimensions();
    let reference = reference.filter(|r| r.dimensions() == (w, h));
    let heat = |x: u32, y: u32, luma: u8| -> u8 {
        reference.map_or(0, |r| u16::from(luma.abs_diff(r.get_pixel(x, y)[0])).saturating_mul(4).min(255) as u8)
    };
    let (cw, ch) = p.u.dimensions();
    for cy in 0..ch {
        for cx in 0..cw {
            let (x, y) = ((2 * cx).min(w - 1), (2 * cy).min(h - 1));
            let hot = heat(x, y, p.y.get_pixel(x, y)[0]);
            p.v.put_pixel(cx, cy, Luma([128u8.saturating_add(hot / 2)]));
            p.u.put_pixel(cx, cy, Luma([128u8.saturating_sub(hot / 4)]));
        }
    }
    for px in p.y.iter_mut() {
        *px = 16 + (*px).saturating_sub(16) / 2;
    }
}

/// BT.601 limited-range Y, Cb, Cr of an RGB colour.
fn yuv(rgb: [u8; 3]) -> (u8, u8, u8) {
    let [r, g, b] = rgb.map(f32::from);
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    (y.round() as u8, u.round() as u8, v.round() as u8)
}

/// A distinct colour per class.
fn palette(class: usize) -> [u8; 3] {
    const COLOURS: [[u8; 3]; 6] = [[255, 64, 64], [64, 200, 64], [64, 128, 255], [255, 200, 0], [200, 64, 255], [0, 220, 220]];
    COLOURS[class % COLOURS.len()]
}

/// The frame rate the units' presentation times show (the most common step), for the
/// encoder's rate control; 25 when there is a single unit.
fn frame_rate(units: &[Unit]) -> ffmpeg::Rational {
    match wire::job::frame_step(units.iter().map(|u| u.pts)) {
        Some(step) => {
            let g = gcd(step, 90_000);
            ffmpeg::Rational::new((90_000 / g) as i32, (step / g) as i32)
        }
        None => ffmpeg::Rational::new(25, 1),
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
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

/// Decoded pictures as packed 8-bit 4:2:0 planes: copied as they are, or through swscale for
/// other formats (10-bit, 4:2:2, 4:4:4), the scaler kept while format and size stay.
#[derive(Default)]
struct PlaneReader {
    scaler: Option<(Pixel, u32, u32, Scaler)>,
}

impl PlaneReader {
    fn read(&mut self, frame: &ffmpeg::frame::Video) -> anyhow::Result<Planes> {
        let (w, h, format) = (frame.width(), frame.height(), frame.format());
        if matches!(format, Pixel::YUV420P | Pixel::YUVJ420P) {
            return planes_of(frame, w, h);
        }
        if !self.scaler.as_ref().is_some_and(|(f, sw, sh, _)| (*f, *sw, *sh) == (format, w, h)) {
            self.scaler = Some((format, w, h, Scaler::get(format, w, h, Pixel::YUV420P, w, h, Flags::BILINEAR)?));
        }
        let Some((_, _, _, scaler)) = self.scaler.as_mut() else { anyhow::bail!("no scaler") };
        let mut yuv = ffmpeg::frame::Video::empty();
        scaler.run(frame, &mut yuv)?;
        planes_of(&yuv, w, h)
    }
}

fn planes_of(frame: &ffmpeg::frame::Video, w: u32, h: u32) -> anyhow::Result<Planes> {
    let plane = |i: usize, pw: u32, ph: u32| -> anyhow::Result<GrayImage> {
        let stride = frame.stride(i);
        let data = frame.data(i);
        let mut packed = Vec::with_capacity((pw * ph) as usize);
        for row in 0..ph as usize {
            packed.extend_from_slice(
                data.get(row * stride..row * stride + pw as usize).ok_or_else(|| anyhow::anyhow!("plane {i} too short"))?,
            );
        }
        GrayImage::from_raw(pw, ph, packed).ok_or_else(|| anyhow::anyhow!("plane {i} size"))
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    Ok(Planes { y: plane(0, w, h)?, u: plane(1, cw, ch)?, v: plane(2, cw, ch)? })
}

fn preview_jpeg(p: &Planes) -> anyhow::Result<Vec<u8>> {
    let (w, h) = (p.width(), p.height());
    let pw = PREVIEW_WIDTH.min(w).max(2) & !1;
    let ph = ((u64::from(h) * u64::from(pw) / u64::from(w.max(1))).max(2) as u32) & !1;
    let y = image::imageops::thumbnail(&p.y, pw, ph);
    let u = image::imageops::thumbnail(&p.u, pw / 2, ph / 2);
    let v = image::imageops::thumbnail(&p.v, pw / 2, ph / 2);
    let planes = turbojpeg::YuvPlanesImage {
        y_plane: y.as_raw().as_slice(),
        u_plane: u.as_raw().as_slice(),
        v_plane: v.as_raw().as_slice(),
        width: pw as usize,
        height: ph as usize,
        y_stride: pw as usize,
        u_stride: pw as usize / 2,
        v_stride: pw as usize / 2,
        subsamp: turbojpeg::Subsamp::Sub2x2,
    };
    let mut c = turbojpeg::Compressor::new()?;
    c.set_quality(75)?;
    Ok(c.compress_yuv_planes_to_vec(&planes)?)
}

/// x264 through libavcodec for one chunk: the first picture an IDR with SPS/PPS, no
/// B-frames (decoding order = presentation order), quality by CRF. Odd sizes lose their last
/// column or row (4:2:0 needs even ones).
struct Encoder {
    encoder: ffmpeg::encoder::Video,
    width: u32,
    height: u32,
    first: bool,
}

impl Encoder {
    fn open(width: u32, height: u32, frame_rate: ffmpeg::Rational, threads: usize, preset: &str) -> anyhow::Result<Encoder> {
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or_else(|| anyhow::anyhow!("libavcodec has no libx264 encoder"))?;
        let mut encoder = ffmpeg::codec::Context::new_with_codec(codec).encoder().video()?;
        let (width, height) = (width & !1, height & !1);
        encoder.set_width(width);
        encoder.set_height(height);
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
        Ok(Encoder { encoder, width, height, first: true })
    }

    fn send(&mut self, picture: &Planes, pts: i64, units: &mut Vec<Unit>, payload: &mut Vec<u8>) -> anyhow::Result<()> {
        let mut frame = ffmpeg::frame::Video::new(Pixel::YUV420P, self.width, self.height);
        for (i, plane, w, h) in [
            (0, &picture.y, self.width, self.height),
            (1, &picture.u, self.width / 2, self.height / 2),
            (2, &picture.v, self.width / 2, self.height / 2),
        ] {
            let stride = frame.stride(i);
            let src_stride = plane.width() as usize;
            let src = plane.as_raw();
            let dst = frame.data_mut(i);
            for row in 0..h as usize {
                dst[row * stride..row * stride + w as usize].copy_from_slice(&src[row * src_stride..row * src_stride + w as usize]);
            }
        }
        frame.set_pts(Some(pts));
        frame.set_kind(if self.first { ffmpeg::picture::Type::I } else { ffmpeg::picture::Type::None });
        self.first = false;
        self.encoder.send_frame(&frame)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn planes(w: u32, h: u32, luma: u8) -> Planes {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        Planes {
            y: GrayImage::from_pixel(w, h, Luma([luma])),
            u: GrayImage::from_pixel(cw, ch, Luma([128])),
            v: GrayImage::from_pixel(cw, ch, Luma([128])),
        }
    }

    #[test]
    fn frame_rate_from_presentation_times() {
        let units = |step: i64| (0..10).map(|i| Unit { pts: (i * 7 % 10) * step, key: i == 0, len: 1 }).collect::<Vec<_>>();
        assert_eq!(frame_rate(&units(3600)), ffmpeg::Rational::new(25, 1), "25 fps, B-frame order");
        assert_eq!(frame_rate(&units(3003)), ffmpeg::Rational::new(30_000, 1001), "29.97 fps");
        assert_eq!(frame_rate(&units(3600)[..1]), ffmpeg::Rational::new(25, 1), "one unit: the default");
    }

    #[test]
    fn motion_marks_what_changed_and_blur_smooths() {
        let mut p = planes(64, 32, 100);
        let mut reference = GrayImage::from_pixel(64, 32, Luma([100]));
        for x in 0..8 {
            for y in 0..8 {
                reference.put_pixel(40 + x, 10 + y, Luma([180]));
            }
        }
        motion(&mut p, Some(&reference));
        assert!(p.v.get_pixel(22, 7)[0] > 200, "red where the picture changed");
        assert_eq!(p.v.get_pixel(2, 2)[0], 128, "neutral where it did not");
        assert_eq!(p.y.get_pixel(2, 2)[0], 58, "the picture dimmed (limited range)");

        let mut edge = GrayImage::from_pixel(32, 8, Luma([16]));
        for x in 16..32 {
            for y in 0..8 {
                edge.put_pixel(x, y, Luma([235]));
            }
        }
        let blurred = gaussian(&edge, 2.0).unwrap();
        let (a, b) = (blurred.get_pixel(15, 4)[0], blurred.get_pixel(16, 4)[0]);
        assert!(a > 16 && b < 235 && a < b, "a soft step: {a} {b}");
        assert_eq!(blurred.get_pixel(0, 4)[0], 16, "far from the step: unchanged");
    }

    /// SeetaFace on a face you can see: the rustface package's test picture, the 1927 Solvay
    /// conference photograph (29 people facing the camera, 1666x1136).
    #[test]
    fn faces_found_on_the_solvay_photograph_and_blurred() {
        let path = std::path::Path::new(env!("RUSTFACE_DIR")).join("test.png");
        let luma = image::open(&path).expect("rustface's test.png").to_luma8();
        let mut processor = Processor::new("test".into(), None, 1, "ultrafast");
        let faces = processor.find_faces_in(&luma).unwrap();
        eprintln!("faces found: {} of 29", faces.len());
        assert!((27..=31).contains(&faces.len()), "{} faces of 29: {faces:?}", faces.len());
        for &(x, y, w, h) in &faces {
            assert!(
                y < luma.height() * 3 / 4 && (15..200).contains(&w) && (15..200).contains(&h),
                "a face in the group, face-sized: {x},{y} {w}x{h}"
            );
        }
        // blur_faces: detail gone inside the faces, the rest untouched.
        let (w, h) = luma.dimensions();
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut p =
            Planes { y: luma.clone(), u: GrayImage::from_pixel(cw, ch, Luma([128])), v: GrayImage::from_pixel(cw, ch, Luma([128])) };
        processor.filter(&Stage::BlurFaces { sigma: 12.0 }, &mut p, None, &[]).unwrap();
        let detail = |img: &GrayImage, (x, y, w, h): (u32, u32, u32, u32)| -> u64 {
            (y..y + h)
                .flat_map(|yy| (x..x + w - 1).map(move |xx| (xx, yy)))
                .map(|(xx, yy)| u64::from(img.get_pixel(xx, yy)[0].abs_diff(img.get_pixel(xx + 1, yy)[0])))
                .sum()
        };
        let face = faces[0];
        assert!(detail(&p.y, face) * 3 < detail(&luma, face), "the face is blurred");
        let ground = (100, h - 100, 300, 50);
        assert_eq!(detail(&p.y, ground), detail(&luma, ground), "away from faces nothing changes");
    }

    #[test]
    fn palette_colours_in_limited_range_yuv() {
        assert_eq!(yuv([255, 255, 255]), (235, 128, 128));
        assert_eq!(yuv([0, 0, 0]), (16, 128, 128));
        let (_, u, v) = yuv(palette(0));
        assert!(v > 200 && u < 128, "red: high Cr");
    }
}
