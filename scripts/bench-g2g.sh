#!/usr/bin/env bash
# Glass-to-glass latency of the live view (issue 17 §6), release build: the gateway with its
# built-in test camera, detection off and then on (the test model, one worker, 10 fps), and
# for each a headless Chromium page of the web UI per transport (tests/browser/g2g.mjs: the
# card's own pixel-clock probe, p50/p90 over SECONDS_PER_RUN). One JSON line per run.
#   scripts/bench-g2g.sh            (SECONDS_PER_RUN=15)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin gateway --bin infer-worker >&2
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >&2
seconds=${SECONDS_PER_RUN:-15}
port=18680
config=$(mktemp)
trap 'rm -f "$config"' EXIT
printf '[detect]\nmodel = "%s/models/testcam-shapes.onnx"\nworkers = 1\nfps = 10\n' "$PWD" > "$config"
for detect in false true; do
  SIGHTLINE_DETECT__ENABLED=$detect SIGHTLINE_RESTREAM__LISTEN=127.0.0.1:0 SIGHTLINE_RESTREAM__UDP_PORT=0 SIGHTLINE_WEBRTC__UDP_PORT=0 \
    target/release/gateway --config "$config" --listen 127.0.0.1:$port 2>/tmp/bench-g2g-gateway.log &
  gw=$!
  trap 'kill $gw 2>/dev/null; rm -f "$config"' EXIT
  sleep 3
  for transport in webrtc sse; do
    echo -n "{\"detection\":$detect,"
    node tests/browser/g2g.mjs "http://127.0.0.1:$port" "$transport" "$seconds" | sed 's/^{//'
  done
  kill $gw
  wait $gw 2>/dev/null || true
done
