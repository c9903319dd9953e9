-- Environments: the runtimes executions run in. An environment is declared by an admin
-- (CreateEnvironment) or by the first executor of it that registers; its node catalog (the
-- engine's GET /object_info) is recorded whenever an executor reports a different one, so
-- workflows validate and route while its pool is at zero.
CREATE TABLE environments (
    name               text PRIMARY KEY,
    engine             text NOT NULL CHECK (engine IN ('native', 'comfyui')),
    -- The Environment's descriptive fields as proto JSON with the proto's field names:
    -- engine, comfyui_version, custom_nodes, python_packages, apt_packages, models,
    -- description.
    spec               jsonb NOT NULL,
    -- The catalog as the JSON text the executor sent (text, not jsonb: kept byte for byte,
    -- in the engine's own order, which its digest is taken over); NULL until one is known.
    catalog            text,
    -- The hex sha256 of catalog; NULL while it is unknown.
    catalog_digest     text,
    node_type_count    integer NOT NULL DEFAULT 0,
    catalog_updated_at timestamptz,
    -- The idempotency key of the CreateEnvironment call that declared it, if any.
    request_id         text UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- The native engine is always there; the scheduler records its catalog at start when no
-- executor has yet.
INSERT INTO environments (name, engine, spec)
VALUES ('native', 'native',
        '{"engine": "native", "description": "The native torch engine: the weight-free core node types."}');

-- Executions and executors name their environment; everything before this ran natively.
ALTER TABLE executions ADD COLUMN environment text NOT NULL DEFAULT 'native';
ALTER TABLE executors ADD COLUMN environment text NOT NULL DEFAULT 'native';
