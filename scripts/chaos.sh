#!/usr/bin/env bash
# Chaos and soak runs (scripts/chaos.py) on release binaries:
#   bash scripts/chaos.sh camera --minutes 10 --period 30 --viewers 5
#   bash scripts/chaos.sh worker --minutes 10 --period 10
#   bash scripts/chaos.sh redis  --minutes 5  --period 20
#   bash scripts/chaos.sh soak   --minutes 30 --viewers 100 --out /tmp/soak
# Needs what scripts/test installs (GStreamer, redis-server, onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sightline-gateway -p sightline-infer-worker -p sightline-loadtest
exec python3 scripts/chaos.py "$@" --bin-dir "${CARGO_TARGET_DIR:-target}/release"
