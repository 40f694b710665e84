//! `loadtest`: load generator for the Sightline camera gateway.
//!
//! `loadtest sse --url http://127.0.0.1:8080 --stream ID --viewers N --fps F --seconds S`
//! opens N concurrent SSE feed viewers for S seconds; `loadtest whep --url … --stream ID
//! --viewers N --seconds S` opens N WebRTC viewers over WHEP. Both print a summary:
//! human-readable lines, then one JSON object as the last line of stdout.
//!
//! Exit status: 0 when the run happened (even if viewers saw errors), 2 for bad arguments,
//! 1 if the run could not be set up.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};

mod hls;
mod jpeg;
mod report;
mod sse;
mod stats;
mod whep;

/// Load generator for Sightline.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
struct Cli {
    /// What kind of viewers to simulate.
    #[command(subcommand)]
    mode: Mode,
}

/// Load modes.
#[derive(Debug, Subcommand)]
enum Mode {
    /// N concurrent SSE viewers of `/api/streams/{ID}/feed`.
    Sse(sse::SseArgs),
    /// N concurrent WebRTC viewers over WHEP (`/api/streams/{ID}/whep`), no decoding.
    Whep(whep::WhepArgs),
    /// N concurrent LL-HLS viewers (`/api/streams/{ID}/hls/index.m3u8`), fetching like hls.js.
    Hls(hls::HlsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on bad arguments
    if let Err(msg) = validate(&cli.mode) {
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit();
    }
    match run(&cli.mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks that clap cannot express.
fn validate(mode: &Mode) -> Result<(), String> {
    match mode {
        Mode::Sse(args) => args.validate(),
        Mode::Whep(args) => args.validate(),
        Mode::Hls(args) => args.validate(),
    }
}

/// Runs the chosen mode on a fresh runtime and prints its report.
fn run(mode: &Mode) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let printed = rt.block_on(async {
        match mode {
            Mode::Sse(args) => report::print(&sse::run(args).await?),
            Mode::Whep(args) => whep::print(&whep::run(args).await?),
            Mode::Hls(args) => report::print(&hls::run(args).await?),
        }
    });
    // Don't wait for aborted tasks or lingering connections on the way out.
    rt.shutdown_timeout(Duration::from_millis(100));
    printed
}
