//! The test camera's tokio shell: accepts RTSP connections and drives one
//! [`RtspConnection`] (media's sans-IO server) per connection, serving one H.264 track at
//! any path, sending RTP interleaved on the same TCP connection
//! (RFC 2326 §10.12: `$`, channel, 16-bit length, packet), and an RTCP sender report on the
//! next channel at the first frame and every second after it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tracing::{Instrument, debug, info, warn};

use crate::{EncodedFrame, TestCamera};
use media::rtcp::{SenderReport, ntp_from_unix_ms};
use media::rtp::RtpHeader;
use media::rtsp::{Event, MediaKind, MediaSection, Mounts, Presentation, Refusal, RtspConnection, ServerInfo, Target, Transport};
use media::{Pt, SeqNo, Ssrc};

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

/// RTP payload type advertised for H.264 (dynamic range, RFC 3551 §6).
pub const PAYLOAD_TYPE: Pt = Pt::new(96);

/// The camera's one presentation, at any path.
struct CameraMount<'a>(&'a TestCamera);

impl Mounts for CameraMount<'_> {
    fn describe(&mut self, _: &Target<'_>) -> Result<Presentation, Refusal> {
        let camera = self.0;
        Ok(Presentation {
            name: "Sightline test camera".into(),
            media: vec![MediaSection {
                kind: MediaKind::Video,
                payload_type: PAYLOAD_TYPE,
                rtpmap: "H264/90000".into(),
                fmtp: Some(camera.fmtp()),
                attributes: vec![format!("framerate:{}", camera.settings().fps)],
                rtptime: Some(camera.next_rtp_timestamp()),
            }],
        })
    }
}

async fn connection(mut sock: TcpStream, camera: &TestCamera) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let session_id = format!("{:016X}", rand::random::<u64>());
    let server = ServerInfo { name: "Sightline test camera".into(), udp_ports: None };
    let mut conn = RtspConnection::new(server, session_id, SeqNo(rand::random()));
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut sender: Option<Sender> = None;
    loop {
        tokio::select! {
            read = sock.read_buf(&mut inbuf) => {
                if read? == 0 {
                    return Ok(());
                }
                while let Some(o) = conn.handle(&inbuf, &mut CameraMount(camera))? {
                    let request = inbuf.split_to(o.consumed);
                    tracing::trace!(request = %String::from_utf8_lossy(&request[..request.len().min(600)]), replied = o.response.is_some(), "RTSP message");
                    if let Some(resp) = o.response {
                        sock.write_all(&resp).await?;
                    }
                    match o.event {
                        Some(Event::Play { tracks, .. }) => {
                            // Without UDP ports the connection sets up interleaved tracks only.
                            let Some((channel, sequence_number, ssrc)) = tracks.first().and_then(|t| match t.transport {
                                Transport::Interleaved { channel } => Some((channel, t.sequence_number, t.ssrc)),
                                Transport::Udp { .. } => None,
                            }) else {
                                continue;
                            };
                            info!(channel, "client playing");
                            sender = Some(Sender {
                                channel,
                                sequence_number,
                                ssrc,
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
                        conn.packets_sent(0, n);
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
