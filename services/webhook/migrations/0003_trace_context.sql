-- The trace a delivery belongs to: the W3C traceparent its event arrived with, so that
-- every attempt, however much later, joins its execution's trace. '' when untraced.
ALTER TABLE deliveries ADD COLUMN traceparent text NOT NULL DEFAULT '';
