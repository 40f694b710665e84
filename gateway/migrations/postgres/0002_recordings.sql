-- Recordings (issue #14): one row per fragmented-MP4 segment file, kept by the node whose
-- data_dir holds it (`node`: the id in {data_dir}/node_id), so replicas sharing a database
-- index their own disks. Times are wall-clock milliseconds since the Unix epoch.
CREATE TABLE recordings (
    node TEXT NOT NULL,
    path TEXT NOT NULL,
    stream TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    keyframes BIGINT NOT NULL,
    codec TEXT NOT NULL,
    PRIMARY KEY (node, path)
);
CREATE INDEX recordings_by_time ON recordings (node, stream, start_ms);
