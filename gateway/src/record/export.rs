//! One MP4 out of stored fragments (`GET /api/streams/{id}/export.mp4`): the first
//! segment's init segment, then every fragment from the keyframe at or before `from` to the
//! last one starting before `to`, re-timed so the file starts at 0 (only each `moof`'s
//! `tfdt` is rewritten; the samples are read from the segment files as they are). The size is
//! known before the first byte, so byte ranges (RFC 9110 §14) can be served.

use std::io::SeekFrom;
use std::path::PathBuf;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Recorders;
use super::fmp4::{self, TIMESCALE};
use crate::core::Error;

/// Bytes read from a file per chunk of the body.
const CHUNK: u64 = 256 * 1024;

/// A piece of the exported file.
#[derive(Clone, Debug)]
enum Piece {
    Memory(Bytes),
    File { path: PathBuf, offset: u64, len: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Memory(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        }
    }
}

/// An export planned: its pieces, total size and the time it covers.
#[derive(Debug)]
pub(crate) struct Export {
    pieces: Vec<Piece>,
    /// Total bytes.
    pub(crate) len: u64,
    /// Wall-clock time of its first fragment (a keyframe), ms since the Unix epoch.
    pub(crate) start_ms: u64,
    /// End of its last fragment, ms since the Unix epoch.
    pub(crate) end_ms: u64,
    /// Fragments in it.
    pub(crate) fragments: usize,
}

/// A fragment with the segment it is in.
struct Found {
    file: PathBuf,
    init: Option<Bytes>,
    info: fmp4::FragmentInfo,
}

impl Found {
    fn start_ms(&self) -> u64 {
        self.info.start * 1000 / TIMESCALE
    }
    fn end_ms(&self) -> u64 {
        (self.info.start + self.info.duration) * 1000 / TIMESCALE
    }
}

/// Plans the export of `stream` over `[from_ms, to_ms)`.
///
/// Errors: nothing recorded in the range (404 `UnknownRecording`), the database not open
/// (503), a segment file unreadable (500).
pub(crate) async fn plan(recorders: &Recorders, stream: &str, from_ms: u64, to_ms: u64) -> Result<Export, Error> {
    let segments = recorders.segments(stream, from_ms, to_ms).await?;
    let files: Vec<PathBuf> = segments.iter().map(|s| recorders.file(s)).collect();
    let found = tokio::task::spawn_blocking(move || scan_all(files))
        .await
        .map_err(|e| Error::RecordingUnreadable(e.to_string()))?
        .map_err(|e| Error::RecordingUnreadable(e.to_string()))?;
    // From the keyframe fragment at or before `from` to the last fragment starting before `to`.
    let first = found.iter().position(|f| f.end_ms() > from_ms);
    let first = first.map(|i| (0..=i).rev().find(|&j| found[j].info.keyframe).unwrap_or(i));
    let Some(first) = first else {
        return Err(Error::UnknownRecording { stream: stream.to_owned() });
    };
    let init = found[first].init.clone().expect("every scanned fragment carries its segment's init segment");
    let shift = -(found[first].info.start as i64);
    let mut pieces = vec![Piece::Memory(init.clone())];
    let mut end_ms = found[first].end_ms();
    let mut fragments = 0;
    for f in found[first..].iter().take_while(|f| f.start_ms() < to_ms) {
        if f.init.as_ref() != Some(&init) {
            break; // another codec configuration: the export ends before it
        }
        let moof = read_range(&f.file, f.info.offset, f.info.moof_len).await?;
        let moof = fmp4::shift_moof(&moof, shift).map_err(|e| Error::RecordingUnreadable(e.to_string()))?;
        pieces.push(Piece::Memory(Bytes::from(moof)));
        pieces.push(Piece::File { path: f.file.clone(), offset: f.info.offset + f.info.moof_len, len: f.info.len - f.info.moof_len });
        end_ms = f.end_ms();
        fragments += 1;
    }
    let len = pieces.iter().map(Piece::len).sum();
    Ok(Export { pieces, len, start_ms: found[first].start_ms(), end_ms, fragments })
}

/// Every fragment of `files`, in order, each with its segment's init.
fn scan_all(files: Vec<PathBuf>) -> std::io::Result<Vec<Found>> {
    use std::io::{Read, Seek};
    let mut found = Vec::new();
    for path in files {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let scan = fmp4::scan(&mut file, len);
        let mut init = vec![0u8; scan.init_len as usize];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut init)?;
        let init = Bytes::from(init);
        for info in scan.fragments {
            found.push(Found { file: path.clone(), init: Some(init.clone()), info });
        }
    }
    Ok(found)
}

async fn read_range(path: &PathBuf, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
    let io = |e: std::io::Error| Error::RecordingUnreadable(format!("{}: {e}", path.display()));
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    f.seek(SeekFrom::Start(offset)).await.map_err(io)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).await.map_err(io)?;
    Ok(buf)
}

impl Export {
    /// The bytes `[start, end)` of the file (the whole file: `0..len`), read as sent.
    pub(crate) fn body(self, start: u64, end: u64) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        // The pieces cut to the range.
        let mut cut = Vec::new();
        let mut at = 0u64;
        for p in self.pieces {
            let (p_start, p_end) = (at, at + p.len());
            at = p_end;
            let (s, e) = (start.max(p_start), end.min(p_end));
            if s >= e {
                continue;
            }
            let (skip, take) = (s - p_start, e - s);
            cut.push(match p {
                Piece::Memory(b) => Piece::Memory(b.slice(skip as usize..(skip + take) as usize)),
                Piece::File { path, offset, .. } => Piece::File { path, offset: offset + skip, len: take },
            });
        }
        futures::stream::unfold(std::collections::VecDeque::from(cut), |mut pieces| async move {
            loop {
                let piece = pieces.pop_front()?;
                match piece {
                    Piece::Memory(b) => return Some((Ok(b), pieces)),
                    Piece::File { path, offset, len } => {
                        if len == 0 {
                            continue;
                        }
                        let n = len.min(CHUNK);
                        let read = async {
                            let mut f = tokio::fs::File::open(&path).await?;
                            f.seek(SeekFrom::Start(offset)).await?;
                            let mut buf = vec![0u8; n as usize];
                            f.read_exact(&mut buf).await?;
                            Ok::<_, std::io::Error>(Bytes::from(buf))
                        }
                        .await;
                        // The rest of this piece goes back in front.
                        pieces.push_front(Piece::File { path, offset: offset + n, len: len - n });
                        return Some((read, pieces));
                    }
                }
            }
        })
    }
}
