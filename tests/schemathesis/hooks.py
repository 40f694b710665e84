"""Schemathesis hooks for Sightline: bodies for the WHEP media types, which are text, not JSON.

Loaded with SCHEMATHESIS_HOOKS=hooks (PYTHONPATH=tests/schemathesis) by gateway/tests/openapi.rs.
"""
import pathlib

from hypothesis import strategies as st

import schemathesis

# A real browser offer (H.264 + data channel) now and then, so the 201 path is checked too;
# otherwise arbitrary text and SDP-looking lines.
_ROOT = pathlib.Path(__file__).resolve().parents[2]
_OFFER = (_ROOT / "signaling/testdata/chromium156_recvonly_video_datachannel.sdp").read_text(encoding="utf-8")

_sdp_lines = st.lists(
    st.sampled_from(["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
                     "a=rtpmap:96 H264/90000", "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdef012345",
                     "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "a=mid:0", "a=sendrecv", "c=IN IP4 0.0.0.0"])
    | st.text(max_size=80),
    max_size=20,
).map("\r\n".join)

schemathesis.openapi.media_type("application/sdp", st.one_of(st.just(_OFFER), _sdp_lines, st.text()).map(str.encode))
schemathesis.openapi.media_type("application/trickle-ice-sdpfrag", st.one_of(_sdp_lines, st.text()).map(str.encode))
