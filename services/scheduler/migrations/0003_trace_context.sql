-- The trace an execution belongs to: the W3C traceparent of the call that created it, so
-- that work done for it later (its attempts, its published events) joins that trace. An
-- outbox row carries its execution's, for the relay that publishes it. '' when untraced.
ALTER TABLE executions ADD COLUMN traceparent text NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN traceparent text NOT NULL DEFAULT '';
