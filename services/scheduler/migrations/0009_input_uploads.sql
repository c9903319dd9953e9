-- Large input files PUT by the client straight to object storage through a presigned URL,
-- then named by executions (InputFile.upload_id). A row lives until expires_at; the sweep
-- then deletes it and its staged object. Each execution that names an upload gets its own
-- copy of the file, so executions never depend on the upload's lifetime.
CREATE TABLE input_uploads (
    id             text PRIMARY KEY,
    tenant         text NOT NULL,
    name           text NOT NULL,
    key            text NOT NULL,
    size_bytes     bigint NOT NULL CHECK (size_bytes > 0),
    -- The declared hex sha256; '' when none was declared.
    sha256         text NOT NULL,
    content_type   text NOT NULL,
    request_id     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    url_expires_at timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    UNIQUE (tenant, request_id)
);

CREATE INDEX input_uploads_expiry ON input_uploads (expires_at);
