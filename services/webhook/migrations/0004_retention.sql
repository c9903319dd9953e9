-- Finished deliveries are pruned once older than the retention period: find them by age
-- without walking pending ones.
CREATE INDEX deliveries_finished ON deliveries (update_time) WHERE state <> 'pending';
