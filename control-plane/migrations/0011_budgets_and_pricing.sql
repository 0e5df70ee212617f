-- Budgets kept by the control plane and applied by every managed gateway of the
-- organisation over its configuration's: scope organisation, caller_key, consumer_group
-- or provider; target names the key, group or provider (NULL: each has its own).
CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    target TEXT,
    limit_nanos BIGINT NOT NULL,
    period TEXT NOT NULL,
    mode TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX budgets_org_name ON budgets (org_id, name);

-- An organisation's model prices, US dollars per 1,000 tokens, over the shipped ones.
CREATE TABLE model_pricing (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    model TEXT NOT NULL,
    provider TEXT,
    input_cost DOUBLE PRECISION NOT NULL,
    output_cost DOUBLE PRECISION NOT NULL,
    cached_input_cost DOUBLE PRECISION,
    reasoning_cost DOUBLE PRECISION,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, model)
);
