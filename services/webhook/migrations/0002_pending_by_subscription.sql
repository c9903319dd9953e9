-- Claims walk the subscriptions that have pending deliveries and take the earliest due
-- ones of each, so they need pending deliveries ordered by subscription, then due time.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_pending ON deliveries (subscription_id, next_attempt_time)
    WHERE state = 'pending';
