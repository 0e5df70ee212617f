-- A rotated gateway key keeps its id (what configurations, budgets and spend name it by)
-- and gets a new value; this is when that last happened.
ALTER TABLE gateway_keys ADD COLUMN rotated_at BIGINT;
