# Sightline gateway image: multi-stage build, non-root runtime.
#   docker build -t sightline .
#   docker run -p 8080:8080 -p 8189-8190:8189-8190/udp \
#     -e SIGHTLINE_AUTH__CONTROL_TOKENS='["<openssl rand -hex 32>"]' -e SIGHTLINE_AUTH__JWT_SECRET=<openssl rand -hex 32> \
#     sightline --listen 0.0.0.0:8080
# (listening beyond loopback turns auth on: the gateway does not start without the secrets)
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake nasm pkg-config \
        clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin gateway --bin infer-worker --bin loadtest --bin sightline

FROM python:3.11-slim-bookworm AS onnxruntime
# The ONNX Runtime shared library for infer-worker, from the PyPI wheel.
RUN pip install --no-cache-dir onnxruntime==1.31.1 \
    && cp /usr/local/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.* /usr/local/lib/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
        libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /opt/sightline sightline \
    && install -d -o sightline /var/lib/sightline
# The SQLite event database (and later recordings): a volume the gateway's user can write.
ENV SIGHTLINE_DATA_DIR=/var/lib/sightline
VOLUME /var/lib/sightline
# infer-worker next to gateway: the gateway spawns it from its own directory.
COPY --from=build /src/target/release/gateway /src/target/release/infer-worker /src/target/release/loadtest /src/target/release/sightline /usr/local/bin/
COPY --from=onnxruntime /usr/local/lib/libonnxruntime.so.* /usr/local/lib/
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.31.1
COPY static /opt/sightline/static
COPY config /opt/sightline/config
COPY models /opt/sightline/models
WORKDIR /opt/sightline
USER sightline
EXPOSE 8080 8554 8000-8001/udp 8189-8190/udp
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["gateway"]
CMD ["--listen", "0.0.0.0:8080"]
