//! `sightline`, Sightline's command-line client.
//!
//! `sightline track --mot IN.txt > OUT.txt` runs the gateway's tracker on MOTChallenge
//! detections (one `frame,id,x,y,w,h,score[,...]` line per box, frames from 1, `id` ignored)
//! and writes MOTChallenge results (`frame,track_id,x,y,w,h,score,-1,-1,-1`): the entry point of
//! the tracking benchmark (README "Performance").
//!
//! `sightline job submit VIDEO --pipeline blur,detect --out result.mp4 [--server URL]` runs an
//! offline job on a gateway (upload, progress bar, result and metrics downloaded);
//! `sightline job status|list|cancel` manage them.

mod job;

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use track::{Bbox, Detection, Tracker, TrackerConfig};

/// Sightline's command-line client.
#[derive(Debug, Parser)]
#[command(name = "sightline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline video jobs on a gateway: submit, status, list, cancel.
    Job {
        #[command(flatten)]
        server: job::Server,
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Track MOTChallenge-format detections (frame,id,x,y,w,h,score,...) and print
    /// MOTChallenge results (frame,track_id,x,y,w,h,score,-1,-1,-1) to stdout.
    Track {
        /// Detections file; `-` reads stdin.
        #[arg(long)]
        mot: PathBuf,
        /// Frame rate of the sequence: frame numbers become times for the Kalman filters
        /// and `--max-lost-ms`.
        #[arg(long, default_value_t = 25.0)]
        fps: f64,
        /// Detections at least this confident start and continue tracks.
        #[arg(long, default_value_t = TrackerConfig::default().high_score)]
        high_score: f32,
        /// A track unmatched this long is forgotten, ms.
        #[arg(long, default_value_t = TrackerConfig::default().max_lost_ms)]
        max_lost_ms: u64,
    },
}

/// One parsed line: frame number and detection.
fn parse_line(line: &str) -> anyhow::Result<(u64, Detection)> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() < 7 {
        bail!("expected frame,id,x,y,w,h,score[,...], got {} fields", fields.len());
    }
    let num = |i: usize, name: &str| fields[i].parse::<f64>().with_context(|| format!("{name} {:?}", fields[i]));
    let frame = num(0, "frame")?;
    if frame < 0.0 || frame.fract() != 0.0 {
        bail!("frame {frame} is not a frame number");
    }
    let (x, y, w, h, score) = (num(2, "x")?, num(3, "y")?, num(4, "w")?, num(5, "h")?, num(6, "score")?);
    if ![x, y, w, h, score].iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 {
        bail!("a box needs finite numbers and a positive size");
    }
    let bbox = Bbox { x: x as f32, y: y as f32, w: w as f32, h: h as f32 };
    Ok((frame as u64, Detection { bbox, score: score.clamp(0.0, 1.0) as f32, class_id: 0 }))
}

fn track(mot: &PathBuf, fps: f64, config: TrackerConfig) -> anyhow::Result<()> {
    if !(fps.is_finite() && fps > 0.0) {
        bail!("--fps must be positive");
    }
    let reader: Box<dyn BufRead> = if mot.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(mot).with_context(|| format!("cannot open {}", mot.display()))?))
    };
    let mut frames: std::collections::BTreeMap<u64, Vec<Detection>> = std::collections::BTreeMap::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read", mot.display()))?;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (frame, det) = parse_line(&line).with_context(|| format!("{} line {}", mot.display(), n + 1))?;
        frames.entry(frame).or_default().push(det);
    }
    let mut tracker = Tracker::new(config);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let started = Instant::now();
    let (Some(&first), Some(&last)) = (frames.keys().next(), frames.keys().next_back()) else { return Ok(()) };
    let mut boxes = 0usize;
    // Every frame, also those without detections (the tracks age).
    for frame in first..=last {
        let dets = frames.get(&frame).map_or(&[][..], Vec::as_slice);
        boxes += dets.len();
        let at_ms = (frame as f64 * 1000.0 / fps).round() as u64;
        for (det, id) in dets.iter().zip(tracker.update(at_ms, dets)) {
            if let Some(id) = id {
                let b = det.bbox;
                writeln!(out, "{frame},{id},{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1", b.x, b.y, b.w, b.h, det.score)?;
            }
        }
    }
    out.flush()?;
    let took = started.elapsed();
    let frames_n = last - first + 1;
    eprintln!(
        "tracked {frames_n} frames, {boxes} detections in {:.1} ms: {:.0} frames/s",
        took.as_secs_f64() * 1000.0,
        frames_n as f64 / took.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Job { server, command } => job::run(&server, command),
        Command::Track { mot, fps, high_score, max_lost_ms } => {
            let config = TrackerConfig { high_score, max_lost_ms, ..TrackerConfig::default() };
            track(&mot, fps, config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mot_lines() {
        let (frame, d) = parse_line("3,-1,10.5,20,30,60,0.87,-1,-1,-1").unwrap();
        assert_eq!(frame, 3);
        assert_eq!(d.bbox, Bbox { x: 10.5, y: 20.0, w: 30.0, h: 60.0 });
        assert!((d.score - 0.87).abs() < 1e-6);
        assert!(parse_line("1,-1,10,20,30").is_err(), "too few fields");
        assert!(parse_line("1,-1,10,20,-30,60,0.9").is_err(), "negative width");
        assert!(parse_line("x,-1,10,20,30,60,0.9").is_err());
        assert!(parse_line("1.5,-1,10,20,30,60,0.9").is_err());
        assert!(parse_line("1,-1,NaN,20,30,60,0.9").is_err());
    }
}
