-- Subscriptions, their signing secrets, deliveries and the log of every attempt.

CREATE TABLE subscriptions (
    id              text PRIMARY KEY,
    tenant          text NOT NULL,
    url             text NOT NULL,
    event_types     text[] NOT NULL DEFAULT '{}',
    description     text NOT NULL DEFAULT '',
    enabled         boolean NOT NULL DEFAULT true,
    -- Why the platform turned the subscription off (410, failing for too long); '' otherwise.
    disabled_reason text NOT NULL DEFAULT '',
    -- The first failed attempt since the last success; NULL while healthy.
    failing_since   timestamptz,
    -- The creating request's idempotency key, when it had one.
    request_id      text,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX subscriptions_request ON subscriptions (tenant, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX subscriptions_tenant ON subscriptions (tenant, id);

-- A subscription's secrets: the current one (expire_time NULL) and rotated-out ones that
-- still sign until they expire, so receivers can switch secrets without losing events.
CREATE TABLE subscription_secrets (
    subscription_id text NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    secret          text NOT NULL,
    create_time     timestamptz NOT NULL DEFAULT now(),
    expire_time     timestamptz,
    PRIMARY KEY (subscription_id, secret)
);

CREATE TABLE deliveries (
    -- Sent as webhook-id on every attempt, so receivers can drop duplicates.
    id                text PRIMARY KEY,
    subscription_id   text NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    tenant            text NOT NULL,
    event_id          text NOT NULL,
    event_type        text NOT NULL,
    -- The exact JSON body, the same bytes on every attempt.
    payload           text NOT NULL,
    state             text NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    -- Attempts started, ever; numbers the attempt log.
    attempts          integer NOT NULL DEFAULT 0,
    -- Attempts since creation or the last redelivery: the place in the retry schedule.
    round_attempts    integer NOT NULL DEFAULT 0,
    -- Bumped by every claim and redelivery; a worker's result only lands while it matches.
    lease             bigint NOT NULL DEFAULT 0,
    next_attempt_time timestamptz,
    last_status_code  integer NOT NULL DEFAULT 0,
    last_error        text NOT NULL DEFAULT '',
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    -- Turning an event into deliveries again (a redelivered NATS message) adds nothing.
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_time) WHERE state = 'pending';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, id);
CREATE INDEX deliveries_failed ON deliveries (subscription_id, create_time) WHERE state = 'failed';

CREATE TABLE delivery_attempts (
    delivery_id      text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number           integer NOT NULL,
    attempt_time     timestamptz NOT NULL,
    status_code      integer NOT NULL DEFAULT 0,
    latency_ms       double precision NOT NULL,
    response_excerpt text NOT NULL DEFAULT '',
    error            text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, number)
);
