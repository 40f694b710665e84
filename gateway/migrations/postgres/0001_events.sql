-- Analytics events (issue #13): one row per event, its id the stable id the lease holder made
-- (so a replayed event is the same row), and the snapshot JPEG beside it, deleted with it.
CREATE TABLE events (
    id TEXT PRIMARY KEY NOT NULL,
    stream TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    track_id BIGINT NOT NULL,
    line TEXT,
    direction TEXT,
    zone TEXT,
    inside_ms BIGINT,
    ts_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    rtp_timestamp BIGINT NOT NULL,
    box_x DOUBLE PRECISION,
    box_y DOUBLE PRECISION,
    box_w DOUBLE PRECISION,
    box_h DOUBLE PRECISION,
    snapshot_bytes BIGINT NOT NULL DEFAULT 0,
    replica TEXT NOT NULL,
    stored_ms BIGINT NOT NULL
);
CREATE INDEX events_by_time ON events (ts_ms DESC, id DESC);
CREATE INDEX events_by_stream ON events (stream, ts_ms DESC, id DESC);
CREATE INDEX events_by_kind ON events (stream, kind, ts_ms);

CREATE TABLE event_snapshots (
    id TEXT PRIMARY KEY NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    jpeg BYTEA NOT NULL
);
