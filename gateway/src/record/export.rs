//! One MP4 out of stored fragments (`GET /api/streams/{id}/export.mp4`): the first
//! segment's init segment, then every fragment from the keyframe at or before `from` to the
//! frame before `to`, re-timed so the file starts at 0 (each `moof` is rewritten: its
//! tracks' `tfdt`s, and the last one's sample counts; audio before the first keyframe left
//! out; the samples are read from the segment files as they are). The size is known before the first byte, so byte ranges (RFC 9110 §14) can be
//! served.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::PathBuf;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Recorders;
use crate::core::Error;
use media::fmp4::{self, TIMESCALE};

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

/// A stored fragment with the segment file it is in.
#[derive(Debug)]
pub(crate) struct Found {
    /// The segment file.
    pub(crate) file: PathBuf,
    /// The segment's init segment.
    pub(crate) init: Bytes,
    /// Where the fragment is in the file, and its times.
    pub(crate) info: fmp4::FragmentInfo,
}

impl Found {
    /// Wall-clock start, ms since the Unix epoch.
    pub(crate) fn start_ms(&self) -> u64 {
        self.info.start * 1000 / TIMESCALE
    }
    /// Wall-clock end, ms since the Unix epoch.
    pub(crate) fn end_ms(&self) -> u64 {
        (self.info.start + self.info.duration) * 1000 / TIMESCALE
    }
}

/// Plans the export of `stream` over `[from_ms, to_ms)`.
///
/// Errors: nothing recorded in the range (404 `UnknownRecording`), the database not open
/// (503), a segment file unreadable (500).
pub(crate) async fn plan(recorders: &Recorders, stream: &str, from_ms: u64, to_ms: u64) -> Result<Export, Error> {
    let (found, range) = select(recorders, stream, from_ms, to_ms).await?;
    let first = &found[range.start];
    let init = first.init.clone();
    let shift = -(first.info.start as i64);
    let mut pieces = vec![Piece::Memory(init)];
    let mut end_ms = first.end_ms();
    let until = to_ms * TIMESCALE / 1000;
    // Every fragment shares the first one's init segment (`select`), so its audio track.
    let audio_timescale = fmp4::audio_timescale(&first.init);
    for f in &found[range.clone()] {
        let moof = read_range(&f.file, f.info.offset, f.info.moof_len).await?;
        // The last fragment is cut at `to` (to the frame).
        let cut = (f.info.start + f.info.duration > until).then_some(until);
        let (head, payload) = fmp4::retime(&moof, shift, cut, audio_timescale).map_err(Error::RecordingUnreadable)?;
        pieces.push(Piece::Memory(Bytes::from(head)));
        let at = f.info.offset + f.info.moof_len + 8;
        pieces.extend(payload.into_iter().map(|r| Piece::File { path: f.file.clone(), offset: at + r.start, len: r.end - r.start }));
        end_ms = f.end_ms().min(to_ms);
    }
    let len = pieces.iter().map(Piece::len).sum();
    Ok(Export { pieces, len, start_ms: first.start_ms(), end_ms, fragments: range.len() })
}

/// `stream`'s stored fragments for `[from_ms, to_ms)`: all fragments of the segments in the
/// range, and which of them to play: from the keyframe fragment at or before `from` to the
/// last one starting before `to`, ending early where the codec configuration changes.
///
/// Errors: nothing recorded in the range (404), the database not open (503), a segment file
/// unreadable (500).
pub(crate) async fn select(recorders: &Recorders, stream: &str, from_ms: u64, to_ms: u64) -> Result<(Vec<Found>, Range<usize>), Error> {
    let segments = recorders.segments(stream, from_ms, to_ms).await?;
    let files: Vec<PathBuf> = segments.iter().map(|s| recorders.file(s)).collect();
    let found = tokio::task::spawn_blocking(move || scan_all(files))
        .await
        .map_err(|e| Error::RecordingUnreadable(e.to_string()))?
        .map_err(|e| Error::RecordingUnreadable(e.to_string()))?;
    let first = found.iter().position(|f| f.end_ms() > from_ms);
    let Some(first) = first.map(|i| (0..=i).rev().find(|&j| found[j].info.keyframe).unwrap_or(i)) else {
        return Err(Error::UnknownRecording { stream: stream.to_owned() });
    };
    // The end: `to`, another codec configuration, or a fragment starting before the one
    // before it ended (a camera clock set back between segments: the file's timeline would
    // go backwards).
    let init = &found[first].init;
    let mut end = first + 1;
    while end < found.len() {
        let (prev, f) = (&found[end - 1].info, &found[end]);
        if f.start_ms() >= to_ms || f.init != *init || f.info.start + TIMESCALE / 20 < prev.start + prev.duration {
            break;
        }
        end += 1;
    }
    Ok((found, first..end))
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
            found.push(Found { file: path.clone(), init: init.clone(), info });
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
    /// A whole file as an export (one segment file served as stored).
    pub(crate) fn file(path: PathBuf, len: u64) -> Export {
        Export { pieces: vec![Piece::File { path, offset: 0, len }], len, start_ms: 0, end_ms: 0, fragments: 0 }
    }

    /// An entity tag (RFC 9110 §8.8.3) that changes when the bytes would: the size, the
    /// time covered and the fragment count (an export whose range is still being recorded
    /// grows; a segment file grows).
    pub(crate) fn etag(&self) -> String {
        format!("\"{:x}-{:x}-{:x}-{:x}\"", self.len, self.start_ms, self.end_ms, self.fragments)
    }

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
