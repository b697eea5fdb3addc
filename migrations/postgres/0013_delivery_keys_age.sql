-- Delivery keys by age, PostgreSQL flavour. migrations/sqlite/0013_delivery_keys_age.sql is the
-- same change in SQLite's dialect: keep the two in step.
--
-- `deliveries` keeps one key per delivered copy so that a retried delivery stores nothing
-- twice. No retry can come once the queue has given the message up (the MTA's `max_age_secs`),
-- so the MTA's queue runner deletes keys older than that, oldest first, in bounded batches
-- (`Store::purge_delivery_keys`); this index finds them without reading the whole table.
CREATE INDEX deliveries_created ON deliveries (created_at);
