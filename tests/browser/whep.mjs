// Plays a stream over WHEP in headless Debian Chromium (playwright-core, no browser
// download) with the browser's own RTCPeerConnection, and checks what a viewer gets.
// Usage: node tests/browser/whep.mjs BASE_URL STREAM_ID [SECONDS] [audio]
// With `audio` the offer also has a recvonly audio m-line, and `audio` in the result gives the
// audio inbound-rtp stats (codec, packetsReceived, totalSamplesReceived at the start and the
// end of the measured span, audioLevel).
// Prints one JSON line with the measurements (lastSecondsFrames: frames displayed in the
// last 3 s; detections: detection messages on the data channel, detectionsOnDisplayedFrames:
// those whose rtp_timestamp equals the camera timestamp (rVFC rtpTimestamp minus the
// session's rtp_offset) of a displayed frame); exits non-zero if the page script failed.
import { startBrowserTest } from './chromium.mjs';

const [base, stream, seconds = '5', audioArg] = process.argv.slice(2);
const withAudio = audioArg === 'audio';
if (!base || !stream) {
  console.error('usage: node whep.mjs BASE_URL STREAM_ID [SECONDS]');
  process.exit(2);
}

const { browser, fail, done } = await startBrowserTest(90_000);
try {
  const page = await browser.newPage();
  await page.goto(`${base}/healthz`);
  const result = await page.evaluate(async ({ stream, seconds, withAudio }) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    if (withAudio) pc.addTransceiver('audio', { direction: 'recvonly' });
    const dc = pc.createDataChannel('sightline');
    const messages = [];
    const detections = [];
    let offset = 0;
    dc.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === 'hello' || m.type === 'timing') offset = m.rtp_offset >>> 0;
      if (m.type === 'detections') detections.push(m.rtp_timestamp);
      else messages.push(m);
    };
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    document.body.append(video);
    const received = new MediaStream();
    // The loudest sample heard (WebAudio analyser on the received audio track), 0..1.
    let peak = 0;
    pc.ontrack = (e) => {
      received.addTrack(e.track);
      video.srcObject = received;
      if (e.track.kind === 'audio') listen(e.track);
    };
    function listen(track) {
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
      const buf = new Float32Array(analyser.fftSize);
      setInterval(() => {
        analyser.getFloatTimeDomainData(buf);
        for (const v of buf) peak = Math.max(peak, Math.abs(v));
      }, 50);
    }
    await pc.setLocalDescription(await pc.createOffer());
    const t0 = performance.now();
    const resp = await fetch(`/api/streams/${stream}/whep`, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
    });
    if (resp.status !== 201) return { error: `POST ${resp.status}: ${await resp.text()}` };
    const location = resp.headers.get('Location');
    const etag = resp.headers.get('ETag');
    await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });

    // requestVideoFrameCallback: one call per displayed frame, with its RTP timestamp.
    const frames = [];
    let firstFrameMs = null;
    const onFrame = (_now, meta) => {
      if (firstFrameMs === null) firstFrameMs = performance.now() - t0;
      frames.push({ rtp: meta.rtpTimestamp, camera: (meta.rtpTimestamp - offset) >>> 0, at: performance.now() });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    // Measure over `seconds` from the first displayed frame.
    const deadline = Date.now() + 20_000;
    while (firstFrameMs === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const startStats = await inbound(pc);
    const startAudio = await inbound(pc, 'audio');
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const stats = await inbound(pc);
    const audioStats = await inbound(pc, 'audio');
    const report = await pc.getStats();
    const audioCodec = audioStats?.codecId ? report.get(audioStats.codecId)?.mimeType : null;
    const steps = {};
    for (let i = 1; i < frames.length; i++) {
      const d = (frames[i].rtp - frames[i - 1].rtp + 2 ** 32) % 2 ** 32;
      steps[d] = (steps[d] || 0) + 1;
    }
    const displayed = new Set(frames.map((f) => f.camera));
    const del = await fetch(location, { method: 'DELETE' });
    pc.close();
    return {
      location, etag, firstFrameMs,
      framesDecoded: (stats?.framesDecoded ?? 0) - (startStats?.framesDecoded ?? 0),
      // Whole frames assembled from RTP over the same span (webrtc-stats §7.5).
      framesReceived: (stats?.framesReceived ?? 0) - (startStats?.framesReceived ?? 0),
      width: stats?.frameWidth, height: stats?.frameHeight,
      packetsLost: stats?.packetsLost, packetsReceived: stats?.packetsReceived,
      rvfcFrames: frames.length, rtpSteps: steps,
      lastSecondsFrames: frames.filter((f) => f.at > performance.now() - 3000).length,
      lastRtpTimestamps: frames.slice(-5).map((f) => f.rtp),
      messages: messages.map((m) => m.type), hello: messages.find((m) => m.type === 'hello'),
      detections: detections.length,
      detectionsOnDisplayedFrames: detections.filter((ts) => displayed.has(ts)).length,
      deleteStatus: del.status,
      audio: withAudio ? {
        codec: audioCodec,
        packetsReceived: audioStats?.packetsReceived ?? 0,
        samplesAtStart: startAudio?.totalSamplesReceived ?? 0,
        samplesAtEnd: audioStats?.totalSamplesReceived ?? 0,
        audioLevel: audioStats?.audioLevel ?? null,
        peak,
        concealedSamples: audioStats?.concealedSamples ?? null,
        packetsLost: audioStats?.packetsLost ?? null,
      } : null,
    };

    async function inbound(pc, kind = 'video') {
      const report = await pc.getStats();
      let found = null;
      report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === kind) found = s; });
      return found;
    }
  }, { stream, seconds: Number(seconds), withAudio });
  console.log(JSON.stringify(result));
  if (result.error) process.exitCode = 1;
} catch (e) {
  await fail(e.stack || String(e));
}
await done();
