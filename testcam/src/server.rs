//! The test camera's tokio shell: accepts RTSP connections and drives one
//! [`RtspConnection`] per connection, sending RTP interleaved on the same TCP connection
//! (RFC 2326 §10.12: `$`, channel, 16-bit length, packet), and an RTCP sender report on the
//! next channel at the first frame and every second after it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tracing::{Instrument, debug, info, warn};

use media::rtcp::{SenderReport, ntp_from_unix_ms};
use media::rtp::RtpHeader;
use media::{SeqNo, Ssrc};

use crate::rtsp::{Event, MediaInfo, PAYLOAD_TYPE, RtspConnection};
use crate::{EncodedFrame, TestCamera};

/// How often a playing client gets a sender report: RFC 3550 §6.2's 5 s minimum is for
/// sessions sharing bandwidth; one report a second costs 32 bytes/s and lets a client map
/// timestamps to capture times within a second of playing.
const SENDER_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves RTSP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, camera: Arc<TestCamera>) {
    let addr = listener.local_addr().ok();
    info!(?addr, "test camera listening");
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let camera = camera.clone();
                let span = tracing::info_span!("testcam_conn", %peer);
                tokio::spawn(
                    async move {
                        if let Err(e) = connection(sock, &camera).await {
                            debug!(error = %e, "test camera connection ended");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                warn!(error = %e, "test camera accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds `addr` and serves the camera in a background task; returns the bound address.
pub async fn spawn(addr: SocketAddr, camera: Arc<TestCamera>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, camera));
    Ok(local)
}

struct Sender {
    channel: u8,
    sequence_number: SeqNo,
    ssrc: Ssrc,
    frames: tokio::sync::broadcast::Receiver<Arc<EncodedFrame>>,
    /// Waiting for a keyframe: at start and after falling behind.
    need_keyframe: bool,
    /// RTP packets and payload octets sent, for sender reports.
    packets: u32,
    octets: u32,
    last_report: Option<std::time::Instant>,
}

async fn connection(mut sock: TcpStream, camera: &TestCamera) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let session_id = format!("{:016X}", rand::random::<u64>());
    let mut conn = RtspConnection::new(session_id, SeqNo(rand::random()));
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut sender: Option<Sender> = None;
    loop {
        tokio::select! {
            read = sock.read_buf(&mut inbuf) => {
                if read? == 0 {
                    return Ok(());
                }
                let media = MediaInfo {
                    fmtp: camera.fmtp(),
                    fps: camera.settings().fps,
                    next_rtp_timestamp: camera.next_rtp_timestamp(),
                };
                while let Some(o) = conn.handle(&inbuf, &media)? {
                    let request = inbuf.split_to(o.consumed);
                    tracing::trace!(request = %String::from_utf8_lossy(&request[..request.len().min(600)]), replied = o.response.is_some(), "RTSP message");
                    if let Some(resp) = o.response {
                        sock.write_all(&resp).await?;
                    }
                    match o.event {
                        Some(Event::Play { channel, sequence_number }) => {
                            sender = Some(Sender {
                                channel,
                                sequence_number,
                                ssrc: Ssrc(rand::random()),
                                frames: camera.subscribe(),
                                need_keyframe: true,
                                packets: 0,
                                octets: 0,
                                last_report: None,
                            });
                        }
                        Some(Event::Pause | Event::Teardown) => sender = None,
                        None => {}
                    }
                }
            }
            frame = recv(&mut sender) => {
                let Some(s) = sender.as_mut() else { continue };
                match frame {
                    Ok(frame) => {
                        if s.need_keyframe && !frame.keyframe {
                            continue;
                        }
                        s.need_keyframe = false;
                        out.clear();
                        let n = write_interleaved(&mut out, s, &frame);
                        conn.packets_sent(n);
                        sock.write_all(&out).await?;
                    }
                    Err(RecvError::Lagged(skipped)) => {
                        debug!(skipped, "client fell behind; waiting for the next keyframe");
                        s.need_keyframe = true;
                        camera.request_keyframe();
                    }
                    Err(RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

async fn recv(sender: &mut Option<Sender>) -> Result<Arc<EncodedFrame>, RecvError> {
    match sender {
        Some(s) => s.frames.recv().await,
        None => std::future::pending().await,
    }
}

/// Appends the frame's RTP packets, interleaved, to `out`, then a sender report for this
/// frame if one is due; returns the number of RTP packets.
fn write_interleaved(out: &mut BytesMut, s: &mut Sender, frame: &EncodedFrame) -> u16 {
    let last = frame.payloads.len().saturating_sub(1);
    for (i, payload) in frame.payloads.iter().enumerate() {
        let header = RtpHeader {
            payload_type: PAYLOAD_TYPE,
            marker: i == last,
            sequence_number: s.sequence_number,
            timestamp: frame.rtp_timestamp,
            ssrc: s.ssrc,
        };
        s.sequence_number = s.sequence_number.next();
        out.put_u8(b'$');
        out.put_u8(s.channel);
        out.put_u16((RtpHeader::LEN + payload.len()) as u16);
        header.write(out);
        out.put_slice(payload);
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add(payload.len() as u32);
    }
    // After the frame's packets, so the client knows the SSRC before the first report
    // (retina drops RTCP from an unknown SSRC).
    if s.last_report.is_none_or(|t| t.elapsed() >= SENDER_REPORT_INTERVAL) {
        s.last_report = Some(std::time::Instant::now());
        let report = SenderReport {
            ssrc: s.ssrc,
            ntp: ntp_from_unix_ms(frame.capture_ms),
            rtp_timestamp: frame.rtp_timestamp,
            packets: s.packets,
            octets: s.octets,
        };
        let bytes = report.to_bytes();
        out.put_u8(b'$');
        out.put_u8(s.channel.wrapping_add(1));
        out.put_u16(bytes.len() as u16);
        out.put_slice(&bytes);
    }
    frame.payloads.len() as u16
}
