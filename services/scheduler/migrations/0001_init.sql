-- The scheduler's own tables: executions and their attempts, inputs and outputs, the event
-- history with its outbox, and the registered executors.

CREATE TABLE executions (
    id               text PRIMARY KEY,
    tenant           text NOT NULL,
    state            text NOT NULL CHECK (state IN
                         ('QUEUED', 'DISPATCHED', 'RUNNING', 'RETRYING',
                          'SUCCEEDED', 'FAILED', 'CANCELLED')),
    workflow_json    text NOT NULL,
    -- The class_types the workflow uses, matched against what executors can run.
    node_types       text[] NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    labels           jsonb NOT NULL DEFAULT '{}',
    request_id       text,
    -- A digest of the request's parameters, to tell a retry from a reused request_id.
    request_hash     text NOT NULL,
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    attempt          integer NOT NULL DEFAULT 0,
    queue_timeout_s  double precision NOT NULL,
    run_timeout_s    double precision NOT NULL,
    -- When the execution last joined the queue: acceptance, or the end of a retry backoff.
    queued_since     timestamptz NOT NULL,
    -- Not dispatched before this time (retry backoff).
    not_before       timestamptz NOT NULL,
    lease_expires_at timestamptz,
    executor_id      text,
    provider         text,
    error            bytea,          -- google.rpc.Status
    metrics          bytea,          -- comfyfleet.executions.v1.ExecutionMetrics
    progress         bytea,          -- comfyfleet.executions.v1.NodeProgress
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    updated_at       timestamptz NOT NULL,
    last_sequence    bigint NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX executions_request_id ON executions (tenant, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX executions_by_tenant ON executions (tenant, id DESC);
CREATE INDEX executions_waiting ON executions (priority DESC, created_at, id)
    WHERE state IN ('QUEUED', 'RETRYING');
CREATE INDEX executions_active ON executions (tenant)
    WHERE state IN ('DISPATCHED', 'RUNNING');
CREATE INDEX executions_leases ON executions (lease_expires_at)
    WHERE state IN ('DISPATCHED', 'RUNNING');

CREATE TABLE attempts (
    execution_id     text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    number           integer NOT NULL,
    executor_id      text NOT NULL,
    executor_address text NOT NULL,
    provider         text NOT NULL,
    state            text NOT NULL CHECK (state IN
                         ('DISPATCHED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    dispatched_at    timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    error            bytea,
    PRIMARY KEY (execution_id, number)
);

CREATE INDEX attempts_busy ON attempts (executor_id)
    WHERE state IN ('DISPATCHED', 'RUNNING');

CREATE TABLE inputs (
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key          text NOT NULL,
    size_bytes   bigint NOT NULL,
    content_type text NOT NULL,
    sha256       text NOT NULL,
    PRIMARY KEY (execution_id, name)
);

CREATE TABLE outputs (
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    slot         integer NOT NULL,
    key          text NOT NULL,
    node_id      text NOT NULL,
    filename     text NOT NULL,
    subfolder    text NOT NULL,
    kind         text NOT NULL,
    content_type text NOT NULL,
    size_bytes   bigint NOT NULL,
    sha256       text NOT NULL,
    PRIMARY KEY (execution_id, attempt, slot)
);

CREATE TABLE events (
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    sequence     bigint NOT NULL,
    event_id     text NOT NULL UNIQUE,
    event_type   text NOT NULL,
    created_at   timestamptz NOT NULL,
    payload      bytea NOT NULL,   -- comfyfleet.executions.v1.WorkflowExecutionEvent
    PRIMARY KEY (execution_id, sequence)
);

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE executors (
    id                     text PRIMARY KEY,
    address                text NOT NULL,
    provider               text NOT NULL,
    engine                 text NOT NULL,
    node_types             text[] NOT NULL,
    slots                  integer NOT NULL,
    busy_slots             integer NOT NULL,
    gpu_name               text NOT NULL,
    gpu_total_memory_bytes bigint NOT NULL,
    gpu_free_memory_bytes  bigint NOT NULL,
    cached_models          text[] NOT NULL,
    registered_at          timestamptz NOT NULL,
    last_seen              timestamptz NOT NULL
);
