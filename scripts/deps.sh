#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Sightline needs, only those missing.
#   scripts/deps.sh build        cmake + nasm (bundled libjpeg-turbo, openh264 assembly), FFmpeg's
#                                libraries (libavcodec decodes H.264/H.265) with clang for their bindings
#   scripts/deps.sh build test   + the real components the tests run: GStreamer's RTSP server
#                                (with Debian's python3-gi), ffmpeg/ffprobe, Chromium, Redis, nginx, Mosquitto,
#                                PostgreSQL (the tests start their own server with initdb/pg_ctl),
#                                Prometheus (the dashboard test queries a real one), Xvfb (screen sources)
set -euo pipefail

packages=()
for group in "$@"; do
  case "$group" in
    build) packages+=(cmake nasm pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev) ;;
    test) packages+=(ffmpeg chromium redis-server nginx-light gstreamer1.0-tools gstreamer1.0-libav python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
                     gstreamer1.0-plugins-base gstreamer1.0-plugins-good
                     gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-x mosquitto mosquitto-clients postgresql
                     fonts-dejavu-core prometheus xvfb) ;;
    *) echo "deps.sh: unknown group $group (build, test)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps.sh: installing ${missing[*]}" >&2
$sudo apt-get update -q -o DPkg::Lock::Timeout=600
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
  -o DPkg::Lock::Timeout=600 "${missing[@]}"
