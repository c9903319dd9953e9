-- What the autoscaler remembers per provider between its rounds.
CREATE TABLE scaling_state (
    provider       text PRIMARY KEY,
    last_up_at     timestamptz,
    last_down_at   timestamptz,
    last_active_at timestamptz
);

-- Every change of replicas the autoscaler decided, applied or only recorded.
CREATE TABLE scaling_decisions (
    id               bigserial PRIMARY KEY,
    provider         text NOT NULL,
    current_replicas integer NOT NULL,
    desired_replicas integer NOT NULL,
    reason           text NOT NULL,
    applied          boolean NOT NULL,
    note             text NOT NULL,
    queue_depth      bigint NOT NULL,
    oldest_wait_s    double precision NOT NULL,
    utilization      double precision NOT NULL,
    decided_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scaling_decisions_by_provider ON scaling_decisions (provider, id DESC);
