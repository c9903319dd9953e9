-- Rate limits per tenant and per key; a zero rate takes the next level's (key -> tenant ->
-- platform default), a zero burst one second's worth of requests.
ALTER TABLE tenants
    ADD COLUMN rate_per_second double precision NOT NULL DEFAULT 0,
    ADD COLUMN rate_burst integer NOT NULL DEFAULT 0;

ALTER TABLE api_keys
    ADD COLUMN rate_per_second double precision NOT NULL DEFAULT 0,
    ADD COLUMN rate_burst integer NOT NULL DEFAULT 0;

-- What each create request carried, by its request_id, so a retry with other parameters is
-- refused whichever service owns the resource; resource_id lets a retry be answered without
-- repeating the create.
CREATE TABLE idempotency_keys (
    tenant_id text NOT NULL,
    method text NOT NULL,
    request_id text NOT NULL,
    fingerprint bytea NOT NULL,
    resource_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, method, request_id)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
