#!/usr/bin/env python3
"""WebRTC viewers made with aiortc, an implementation independent of str0m, for comparing
WebRTC servers (issue #17 §1): each viewer negotiates one recvonly H.264 video track and
counts its RTP packets without decoding them (no jitter buffer, no NACK, PLI or REMB: the
server sends what it would send to a viewer that never complains).

Two signalling flavours:
  whep   Sightline: the viewer offers, POSTs the SDP to URL (draft-ietf-wish-whep §4.2).
  janus  Janus's streaming plugin over its HTTP API (URL = http://host:8088/janus): create,
         attach janus.plugin.streaming, "watch" mountpoint MOUNT; Janus offers, the viewer
         answers with "start".

    python3 scripts/aiortc_viewers.py whep http://10.99.0.1:18280/api/streams/cam/whep \\
        --viewers 50 --seconds 20
    python3 scripts/aiortc_viewers.py janus http://127.0.0.1:8088/janus --mount 1 ...

Prints {"window": N} when the steady window starts (N viewers answered), then one JSON line:
viewers asked for and connected (got a keyframe), packets received in the window and over
the run (from each viewer's first keyframe on), bytes, packets lost in the window and over the
run, packets lost (gaps in each viewer's RTP sequence numbers), and the
time from starting to watch to the first packet of a keyframe (SPS or IDR, RFC 6184 §5.6-5.8;
what a decoder needs before it shows anything), median and max in ms.

Needs: pip install aiortc (1.16 measured).
"""

import argparse
import asyncio
import json
import statistics
import time
import urllib.request
import uuid

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpCodecParameters, RTCSessionDescription
from aiortc import codecs as aiortc_codecs
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtcrtpreceiver import RTCRtpReceiver

# The test cameras send H.264 Main (profile_idc 77) or High: aiortc's own list has only
# Constrained Baseline, and it matches H.264 by profile. Nothing is decoded, so offering Main
# and High without feedback is honest for a packet counter.
def offer_codecs(nack):
    """H.264 Main, High and Constrained Baseline; with `nack`, generic NACK (RFC 4585 §4.2)
    and RTX are negotiated, as browsers do, so the server keeps its resend history (none is sent:
    the viewers never send a NACK)."""
    feedback = [RTCRtcpFeedback(type="nack")] if nack else []
    video = []
    for pt, profile in ((102, "4d001f"), (104, "64001f"), (106, "42e01f")):
        video.append(RTCRtpCodecParameters(
            mimeType="video/H264", clockRate=90000, payloadType=pt, rtcpFeedback=feedback,
            parameters={"level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": profile},
        ))
        if nack:  # resends on their own SSRC and payload type (RFC 4588), as Chromium offers
            video.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=pt + 1, parameters={"apt": pt}))
    aiortc_codecs.CODECS["video"] = video

KEYFRAME_NAL_TYPES = (5, 7)  # IDR slice, SPS
RTX_PAYLOAD_TYPES = (103, 105, 107)  # see offer_codecs


def starts_keyframe(payload: bytes) -> bool:
    """Whether an H.264 RTP payload carries (the start of) an SPS or IDR NAL unit: a single
    NAL unit packet, a STAP-A (type 24, RFC 6184 §5.7.1) or the first FU-A (type 28, §5.8)."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in KEYFRAME_NAL_TYPES:
        return True
    if nal == 24:
        i = 1
        while i + 2 < len(payload):
            size = int.from_bytes(payload[i:i + 2], "big")
            if payload[i + 2] & 0x1F in KEYFRAME_NAL_TYPES:
                return True
            i += 2 + size
        return False
    if nal == 28 and len(payload) > 1:
        return bool(payload[1] & 0x80) and (payload[1] & 0x1F) in KEYFRAME_NAL_TYPES
    return False


class Count:
    """One viewer's packets."""

    def __init__(self):
        self.started = time.monotonic()
        self.first_keyframe_ms = None
        self.packets = 0
        self.bytes = 0
        self.first_seq = None
        self.highest = None  # extended sequence number
        # Packets received and lost when the steady window began.
        self.window_packets = 0
        self.window_lost = 0

    def packet(self, packet):
        if self.first_keyframe_ms is None:
            if not starts_keyframe(packet.payload):
                return  # a decoder would wait: count from the first keyframe on
            self.first_keyframe_ms = (time.monotonic() - self.started) * 1000
        self.packets += 1
        self.bytes += len(packet.payload)
        seq = packet.sequence_number
        if self.highest is None:
            self.first_seq = self.highest = seq
            return
        delta = (seq - self.highest) & 0xFFFF
        if 0 < delta < 0x8000:
            self.highest += delta

    def lost(self):
        if self.highest is None:
            return 0
        return max(0, self.highest - self.first_seq + 1 - self.packets)


async def counting_handler(self, packet, arrival_time_ms):
    count = getattr(self, "_sl_count", None)
    # Resends (RTX, their own payload types and sequence numbers) are not counted; none come
    # anyway, since these viewers never send a NACK.
    if count is not None and packet.payload_type not in RTX_PAYLOAD_TYPES:
        count.packet(packet)


# Replaces the receiver's jitter buffer, decoder and feedback with the count.
RTCRtpReceiver._handle_rtp_packet = counting_handler


def http(method, url, body=None, content_type="application/json"):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=20) as resp:
        return resp.status, resp.read().decode()


async def call(*args):
    return await asyncio.get_running_loop().run_in_executor(None, http, *args)


def peer():
    # No STUN server: aiortc's default (a public one) is unreachable here and its gathering
    # would wait ~5 s for it; host candidates are all a loopback benchmark needs.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def attach_count(pc, count):
    for t in pc.getTransceivers():
        t.receiver._sl_count = count


async def watch_whep(url, count):
    pc = peer()
    pc.addTransceiver("video", direction="recvonly")
    attach_count(pc, count)
    await pc.setLocalDescription(await pc.createOffer())
    status, answer = await call("POST", url, pc.localDescription.sdp, "application/sdp")
    if status != 201:
        raise RuntimeError(f"WHEP POST answered {status}: {answer[:200]}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc


async def janus(url, message):
    message = dict(message, transaction=uuid.uuid4().hex)
    _, body = await call("POST", url, json.dumps(message))
    reply = json.loads(body)
    if reply.get("janus") == "error":
        raise RuntimeError(f"Janus: {reply}")
    return reply


async def watch_janus(url, mount, count):
    session = (await janus(url, {"janus": "create"}))["data"]["id"]
    handle = (await janus(f"{url}/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}))["data"]["id"]
    await janus(f"{url}/{session}/{handle}", {"janus": "message", "body": {"request": "watch", "id": mount}})
    offer = None
    while offer is None:  # the offer comes as an event on the session's long poll
        _, body = await call("GET", f"{url}/{session}?maxev=1")
        event = json.loads(body)
        if event.get("janus") == "event" and "jsep" in event:
            offer = event["jsep"]
    pc = peer()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
    attach_count(pc, count)
    await pc.setLocalDescription(await pc.createAnswer())
    await janus(
        f"{url}/{session}/{handle}",
        {"janus": "message", "body": {"request": "start"}, "jsep": {"type": "answer", "sdp": pc.localDescription.sdp}},
    )

    async def keepalive():
        while True:
            await asyncio.sleep(20)
            await janus(f"{url}/{session}", {"janus": "keepalive"})

    pc._sl_keepalive = asyncio.ensure_future(keepalive())
    return pc


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("flavour", choices=("whep", "janus"))
    p.add_argument("url")
    p.add_argument("--mount", type=int, default=1, help="Janus streaming mountpoint id")
    p.add_argument("--viewers", type=int, default=10)
    p.add_argument("--settle", type=float, default=3, help="seconds from the last answer to the window")
    p.add_argument("--seconds", type=float, default=10, help="the window's length")
    p.add_argument("--nack", action="store_true", help="negotiate NACK (the server keeps a resend history)")
    p.add_argument("--ramp-ms", type=float, default=50, help="a new viewer every N ms")
    a = p.parse_args()
    offer_codecs(a.nack)

    counts, pcs, errors = [], [], []

    async def one():
        count = Count()
        try:
            pc = await (watch_whep(a.url, count) if a.flavour == "whep" else watch_janus(a.url, a.mount, count))
            counts.append(count)
            pcs.append(pc)
        except Exception as e:  # noqa: BLE001 - reported in the JSON line
            errors.append(str(e)[:200])

    tasks = []
    for _ in range(a.viewers):
        tasks.append(asyncio.ensure_future(one()))
        await asyncio.sleep(a.ramp_ms / 1000)
    await asyncio.gather(*tasks)
    # The steady window: from --settle s after the last viewer was answered, --seconds long.
    await asyncio.sleep(a.settle)
    for c in counts:
        c.window_packets, c.window_lost = c.packets, c.lost()
    print(json.dumps({"window": len(counts)}), flush=True)
    await asyncio.sleep(a.seconds)
    first = sorted(c.first_keyframe_ms for c in counts if c.first_keyframe_ms is not None)
    result = {
        "flavour": a.flavour,
        "viewers": a.viewers,
        "connected": len(first),
        "errors": errors[:3],
        "error_count": len(errors),
        "packets": sum(c.packets for c in counts),
        "window_packets": sum(c.packets - c.window_packets for c in counts),
        "window_seconds": a.seconds,
        "bytes": sum(c.bytes for c in counts),
        "packets_lost": sum(c.lost() for c in counts),
        "window_lost": sum(c.lost() - c.window_lost for c in counts),
        "first_keyframe_ms_p50": round(statistics.median(first), 1) if first else None,
        "first_keyframe_ms_max": round(first[-1], 1) if first else None,
    }
    print(json.dumps(result), flush=True)
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
