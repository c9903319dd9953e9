-- StartModelUpload's idempotency key: a retried start finds the upload it opened.
ALTER TABLE uploads ADD COLUMN request_id text;
CREATE UNIQUE INDEX uploads_request ON uploads (tenant, request_id) WHERE request_id IS NOT NULL;
