CREATE TABLE tenants (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    max_concurrency integer NOT NULL DEFAULT 0,
    request_id text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (id),
    -- sha256 of the secret part; the secret itself is never stored.
    secret_sha256 bytea NOT NULL,
    description text NOT NULL DEFAULT '',
    scopes text[] NOT NULL,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    UNIQUE (tenant_id, request_id)
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at DESC);
