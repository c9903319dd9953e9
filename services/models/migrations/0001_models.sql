-- One row per version of a model file; the file itself is in object storage under storage_key.
CREATE TABLE models (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    format text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    storage_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, name, type, version)
);

-- Listing a tenant's models in id order (ids are time-ordered), with or without a type.
CREATE INDEX models_tenant_id ON models (tenant, id);
CREATE INDEX models_tenant_type_id ON models (tenant, type, id);
-- Whether any row still needs a stored file, before the file is deleted.
CREATE INDEX models_storage_key ON models (storage_key);

-- The last version number given to each name+type, so a deleted version's number is never
-- given to different bytes later.
CREATE TABLE model_versions (
    tenant text NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    last_version integer NOT NULL CHECK (last_version >= 1),
    PRIMARY KEY (tenant, name, type)
);
