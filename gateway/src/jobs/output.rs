//! A job's outputs: the processed video (fragmented MP4 through [`media::fmp4`], one fragment
//! per chunk, written in order as chunks come back in any order), the metrics JSON and the
//! preview contact sheet.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use ffmpeg_next as ffmpeg;
use media::VideoCodec;
use media::fmp4::{self, Sample};
use serde::Serialize;
use wire::job::{ChunkResult, unit_slices};

/// Writes chunks to the MP4 in order; holds those that arrive early.
#[derive(Debug)]
pub(crate) struct Mp4Writer {
    file: std::io::BufWriter<std::fs::File>,
    /// Ticks the last picture lasts (the input's frame step).
    step: u32,
    next: u32,
    waiting: BTreeMap<u32, ChunkResult>,
    init_written: bool,
    /// Pictures written.
    pub(crate) frames: u64,
}

impl Mp4Writer {
    /// A writer to `path` (created).
    pub(crate) fn create(path: &Path, step: i64) -> std::io::Result<Mp4Writer> {
        let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        Ok(Mp4Writer {
            file,
            step: step.clamp(1, i64::from(u32::MAX)) as u32,
            next: 0,
            waiting: BTreeMap::new(),
            init_written: false,
            frames: 0,
        })
    }

    /// Takes a chunk (any order); writes every chunk now in order. Returns the chunks written.
    pub(crate) fn push(&mut self, result: ChunkResult) -> Result<Vec<ChunkResult>, String> {
        if result.header.chunk >= self.next {
            self.waiting.insert(result.header.chunk, result);
        }
        let mut written = Vec::new();
        while let Some(r) = self.waiting.remove(&self.next) {
            self.write(&r)?;
            self.next += 1;
            written.push(r);
        }
        Ok(written)
    }

    fn write(&mut self, r: &ChunkResult) -> Result<(), String> {
        let h = &r.header;
        let mut samples = Vec::with_capacity(h.units.len());
        for (unit, bytes) in unit_slices(&h.units, r.units()) {
            let (sets, data) = fmp4::sample_data(VideoCodec::H264, bytes);
            if !self.init_written {
                let init = fmp4::init_segment(VideoCodec::H264, &sets, h.width, h.height).map_err(|e| format!("chunk {}: {e}", h.chunk))?;
                self.file.write_all(&init).map_err(|e| e.to_string())?;
                self.init_written = true;
            }
            samples.push(Sample { pts: unit.pts, keyframe: unit.key, data });
        }
        if samples.is_empty() {
            return Ok(());
        }
        let fragment = fmp4::fragment(h.chunk + 1, &samples, self.step)?;
        self.file.write_all(&fragment).map_err(|e| e.to_string())?;
        self.frames += samples.len() as u64;
        Ok(())
    }

    /// Chunks written so far.
    pub(crate) fn written(&self) -> u32 {
        self.next
    }

    /// Flushes and syncs the file.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()
    }
}

/// Copies the audio of `source` (its main audio stream, as encoded: no re-encode) beside the
/// video of `video` into a new MP4 at `out` (`moov` first, so players start before the end
/// has loaded). The audio is aligned on the source's first video packet, which is the
/// result's time 0 ([`super::input`] times pictures from it); audio before that picture is
/// left out. Packets are written in time order from both files (a two-way merge: memory
/// stays small whatever the length).
///
/// Returns the audio codec's name (`aac`, `opus`, `mp3`, ...). Errors when a file does not
/// open or read, or the codec cannot be carried in MP4 (PCM from a MOV or MKV, for one).
pub(crate) fn add_audio(video: &Path, source: &Path, out: &Path) -> Result<String, String> {
    use ffmpeg::Rescale;
    crate::pipeline::codec::ffmpeg_ready().map_err(|e| format!("FFmpeg: {e}"))?;
    let mut vin = ffmpeg::format::input(&video).map_err(|e| format!("the result: {e}"))?;
    let mut ain = ffmpeg::format::input(&source).map_err(|e| format!("the input: {e}"))?;
    let vst = vin.streams().best(ffmpeg::media::Type::Video).ok_or("the result has no video stream")?;
    let (v_index, v_tb, v_params) = (vst.index(), vst.time_base(), vst.parameters());
    let ast = ain.streams().best(ffmpeg::media::Type::Audio).ok_or("the input has no audio stream")?;
    let (a_index, a_tb, a_params) = (ast.index(), ast.time_base(), ast.parameters());
    let codec = format!("{:?}", a_params.id()).to_lowercase();
    let src_video = ain.streams().best(ffmpeg::media::Type::Video).map(|s| (s.index(), s.time_base()));
    // The source's first video packet, as the splitter saw it.
    let origin = match src_video {
        Some((index, tb)) => {
            let mut probe = ffmpeg::format::input(&source).map_err(|e| format!("the input: {e}"))?;
            let first = probe.packets().find(|(s, _)| s.index() == index).and_then(|(_, p)| p.pts().or(p.dts())).unwrap_or(0);
            first.rescale(tb, a_tb)
        }
        None => 0,
    };
    let mut octx = ffmpeg::format::output_as(&out, "mp4").map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for params in [v_params, a_params] {
        let mut stream = octx.add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None)).map_err(|e| e.to_string())?;
        stream.set_parameters(params);
    }
    let mut options = ffmpeg::Dictionary::new();
    options.set("movflags", "+faststart");
    octx.write_header_with(options).map_err(|e| format!("{codec} audio cannot be carried in MP4 ({e})"))?;
    let out_tb = |octx: &ffmpeg::format::context::Output, i: usize| octx.stream(i).map(|s| s.time_base());
    let (ov_tb, oa_tb) = (out_tb(&octx, 0).ok_or("no output video stream")?, out_tb(&octx, 1).ok_or("no output audio stream")?);
    let seconds = |p: &ffmpeg::Packet, tb: ffmpeg::Rational| p.dts().or(p.pts()).unwrap_or(0) as f64 * f64::from(tb);
    let next = |ctx: &mut ffmpeg::format::context::Input, index: usize| -> Result<Option<ffmpeg::Packet>, String> {
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(ctx) {
                Ok(()) if packet.stream() == index => return Ok(Some(packet)),
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let mut v = next(&mut vin, v_index)?;
    let mut a = loop {
        // Audio before the first picture is left out.
        match next(&mut ain, a_index)? {
            Some(mut p) => {
                let (pts, dts) = (p.pts().map(|t| t - origin), p.dts().map(|t| t - origin));
                if pts.or(dts).is_some_and(|t| t < 0) {
                    continue;
                }
                p.set_pts(pts);
                p.set_dts(dts);
                break Some(p);
            }
            None => break None,
        }
    };
    let mut last_duration = 0;
    while v.is_some() || a.is_some() {
        let video_first = match (&v, &a) {
            (Some(vp), Some(ap)) => seconds(vp, v_tb) <= seconds(ap, a_tb),
            (Some(_), None) => true,
            _ => false,
        };
        let (mut packet, stream, from, to) = if video_first {
            let mut packet = v.take().expect("checked");
            v = next(&mut vin, v_index)?;
            // Durations: libavformat reads none from the fragments, and the MP4 muxer's
            // edit list would then end at the last picture's start (players drop it).
            if packet.duration() <= 0 {
                let step = v.as_ref().and_then(|n| Some(n.dts()? - packet.dts()?)).filter(|d| *d > 0);
                packet.set_duration(step.unwrap_or(last_duration));
            }
            last_duration = packet.duration();
            (packet, 0, v_tb, ov_tb)
        } else {
            (a.take().expect("checked"), 1, a_tb, oa_tb)
        };
        packet.rescale_ts(from, to);
        packet.set_position(-1);
        packet.set_stream(stream);
        packet.write_interleaved(&mut octx).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        if !video_first {
            a = next(&mut ain, a_index)?.map(|mut p| {
                p.set_pts(p.pts().map(|t| t - origin));
                p.set_dts(p.dts().map(|t| t - origin));
                p
            });
        }
    }
    octx.write_trailer().map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(codec)
}

/// One picture in the metrics.
#[derive(Debug, Serialize)]
pub(crate) struct FrameMetric {
    /// Output index (presentation order).
    pub(crate) index: u64,
    /// Presentation time, ms from the start.
    pub(crate) pts_ms: f64,
    /// The chunk that carried it.
    pub(crate) chunk: u32,
    /// The worker that processed it.
    pub(crate) worker: String,
    /// Filters + encoding, ms.
    pub(crate) ms: f32,
    /// Times its chunk was handed to another worker.
    pub(crate) retries: u32,
    /// Its chunk's wait in the queue, ms.
    pub(crate) queue_wait_ms: u64,
}

/// Per-worker totals.
#[derive(Debug, Default, Serialize)]
pub(crate) struct WorkerMetric {
    /// Chunks done.
    pub(crate) chunks: u32,
    /// Pictures done.
    pub(crate) frames: u64,
    /// Time spent on them, ms.
    pub(crate) busy_ms: f64,
}

/// What a job measured, built up chunk by chunk.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Metrics {
    /// Pictures processed.
    pub(crate) frames: u64,
    /// Chunks.
    pub(crate) chunks: u32,
    /// From the job's start to its last chunk written, s.
    pub(crate) wall_s: f64,
    /// `frames / wall_s`.
    pub(crate) effective_fps: f64,
    /// Workers' time on the chunks (decode, filters, encode; a `track` job's detection pass
    /// too), s: the wall time one worker would need.
    pub(crate) worker_s: f64,
    /// `worker_s / wall_s`: how many workers' worth of work ran at once.
    pub(crate) speedup_vs_one_worker: f64,
    /// Chunks a worker took over from one that died or stalled.
    pub(crate) retried_chunks: u32,
    /// Pictures in those chunks.
    pub(crate) retried_frames: u64,
    /// `retried_frames / frames`, %.
    pub(crate) retried_frames_pct: f64,
    /// Decoding, filters and encoding, ms over all chunks.
    pub(crate) decode_ms: f64,
    /// Filters, ms.
    pub(crate) filter_ms: f64,
    /// Encoding, ms.
    pub(crate) encode_ms: f64,
    /// Median wait of a chunk between being queued and a worker taking it, ms.
    pub(crate) queue_wait_p50_ms: u64,
    /// Longest such wait, ms.
    pub(crate) queue_wait_max_ms: u64,
    /// Median per-chunk distribution overhead, ms: from being queued to its result back at
    /// the gateway, less the worker's time on it (waiting for a free worker, transfer both
    /// ways, Redis).
    pub(crate) overhead_p50_ms: f64,
    /// Median time from a worker's end of a chunk to its result at the gateway, ms: the
    /// result's way back (message, Redis `RPUSH` and `BLPOP`, or the pipe), without any wait
    /// (worker and gateway clocks; across machines their skew adds in).
    pub(crate) return_p50_ms: f64,
    /// Per worker.
    pub(crate) workers: BTreeMap<String, WorkerMetric>,
    /// Per picture, in output order.
    pub(crate) per_frame: Vec<FrameMetric>,
    #[serde(skip)]
    waits: Vec<u64>,
    #[serde(skip)]
    overheads: Vec<f64>,
    #[serde(skip)]
    returns: Vec<f64>,
}

impl Metrics {
    /// Counts a chunk written: `retries` times handed over, queued at `queued_ms`, its result
    /// back at `back_ms`.
    pub(crate) fn add(&mut self, r: &ChunkResult, retries: u32, queued_ms: u64, back_ms: u64) {
        let h = &r.header;
        let wait = h.started_ms.saturating_sub(queued_ms);
        self.waits.push(wait);
        self.overheads.push((back_ms.saturating_sub(queued_ms) as f64 - f64::from(h.total_ms)).max(0.0));
        self.returns.push((back_ms as f64 - h.started_ms as f64 - f64::from(h.total_ms)).max(0.0));
        self.chunks += 1;
        self.worker_s += f64::from(h.total_ms) / 1000.0;
        self.decode_ms += f64::from(h.decode_ms);
        self.filter_ms += f64::from(h.filter_ms);
        self.encode_ms += f64::from(h.encode_ms);
        if retries > 0 {
            self.retried_chunks += 1;
            self.retried_frames += h.frames.len() as u64;
        }
        let w = self.workers.entry(h.worker.clone()).or_default();
        w.chunks += 1;
        w.frames += h.frames.len() as u64;
        w.busy_ms += f64::from(h.total_ms);
        for f in &h.frames {
            self.per_frame.push(FrameMetric {
                index: self.frames,
                pts_ms: f.pts as f64 / 90.0,
                chunk: h.chunk,
                worker: h.worker.clone(),
                ms: f.ms,
                retries,
                queue_wait_ms: wait,
            });
            self.frames += 1;
        }
    }

    /// Totals, once the job ran `wall_s`.
    pub(crate) fn finish(&mut self, wall_s: f64) {
        self.wall_s = wall_s;
        self.effective_fps = if wall_s > 0.0 { self.frames as f64 / wall_s } else { 0.0 };
        self.speedup_vs_one_worker = if wall_s > 0.0 { self.worker_s / wall_s } else { 0.0 };
        self.retried_frames_pct = if self.frames > 0 { 100.0 * self.retried_frames as f64 / self.frames as f64 } else { 0.0 };
        self.waits.sort_unstable();
        self.queue_wait_p50_ms = self.waits.get(self.waits.len() / 2).copied().unwrap_or(0);
        self.queue_wait_max_ms = self.waits.last().copied().unwrap_or(0);
        self.overheads.sort_by(f64::total_cmp);
        self.overhead_p50_ms = self.overheads.get(self.overheads.len() / 2).copied().unwrap_or(0.0);
        self.returns.sort_by(f64::total_cmp);
        self.return_p50_ms = self.returns.get(self.returns.len() / 2).copied().unwrap_or(0.0);
    }
}

/// A contact sheet: the previews (JPEG, one per sampled chunk, in order) tiled four across,
/// as one JPEG. `None` without previews.
pub(crate) fn contact_sheet(previews: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut tiles = Vec::new();
    for jpeg in previews {
        if let Ok(img) = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB) {
            tiles.push(img);
        }
    }
    let first = tiles.first()?;
    let (tw, th) = (first.width, first.height);
    let cols = tiles.len().min(4);
    let rows = tiles.len().div_ceil(4);
    let (w, h) = (tw * cols, th * rows);
    let mut sheet = vec![0u8; w * h * 3];
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = ((i % 4) * tw, (i / 4) * th);
        for y in 0..th.min(tile.height) {
            let src = &tile.pixels[y * tile.pitch..y * tile.pitch + tw.min(tile.width) * 3];
            let at = ((y0 + y) * w + x0) * 3;
            sheet[at..at + src.len()].copy_from_slice(src);
        }
    }
    let img = turbojpeg::Image { pixels: sheet.as_slice(), width: w, pitch: w * 3, height: h, format: turbojpeg::PixelFormat::RGB };
    turbojpeg::compress(img, 80, turbojpeg::Subsamp::Sub2x2).ok().map(|b| b.to_vec())
}
