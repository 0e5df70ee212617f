-- A gateway key's own hard budget: nano-dollars per period (hour, day or month).
ALTER TABLE gateway_keys ADD COLUMN budget_nanos BIGINT;
ALTER TABLE gateway_keys ADD COLUMN budget_period TEXT;
