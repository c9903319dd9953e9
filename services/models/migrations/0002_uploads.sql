-- Multipart uploads in progress: the client PUTs parts straight to object storage under
-- storage_key through presigned URLs; CompleteModelUpload checks the file and registers it.
CREATE TABLE uploads (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    -- The sha256 the client promised, if any.
    sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    part_size bigint NOT NULL CHECK (part_size > 0),
    part_count integer NOT NULL CHECK (part_count >= 1),
    -- Where the parts assemble, apart from the registry's content-addressed files.
    storage_key text NOT NULL,
    -- The object store's own id of the multipart upload.
    s3_upload_id text NOT NULL,
    state text NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'completing', 'completed', 'refused', 'aborted', 'expired')),
    model_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL
);

-- The sweep: open uploads past their expiry, completions that stopped half way.
CREATE INDEX uploads_unfinished ON uploads (state, expire_time)
    WHERE state IN ('open', 'completing');
-- Forgetting finished uploads after a while.
CREATE INDEX uploads_updated ON uploads (updated_at);
