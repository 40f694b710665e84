#!/usr/bin/env bash
# 1 000 WebRTC viewers on this machine (issue 17 §3), the load generator on the same cores:
# one 2 Mbit/s stream x 1 000 viewers, then the camera as 10 streams x 100 viewers. Each line
# is bench-whep.sh's (gateway CPU, RSS, packets/s, us per packet per viewer, send delay and
# fan-out quantiles) followed by loadtest's JSON (connected, with media, lost). A benchmark,
# not a test: about 3 minutes; not in CI.
#   scripts/bench-1000.sh [VIEWERS=1000]
# The viewers count packets from their RTP headers (HEADERS_ONLY, see bench-whep.sh): the
# full SRTP path of 1 000 str0m viewers needs more than the gateway's own CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-1000}
export SIGHTLINE_WEBRTC__MAX_SESSIONS=$(( viewers + viewers / 5 )) RAMP_MS=${RAMP_MS:-20} SECONDS_PER_RUN=${SECONDS_PER_RUN:-50} HEADERS_ONLY=1
echo "# one stream x $viewers viewers"
scripts/bench-whep.sh "$viewers"
echo "# 10 streams x $(( viewers / 10 )) viewers"
STREAMS=10 scripts/bench-whep.sh "$viewers"
