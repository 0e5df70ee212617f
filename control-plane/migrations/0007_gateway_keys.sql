-- Caller keys (gateway keys) that applications send to managed gateways. Only the
-- SHA-256 hash of a key and its first characters are kept. A revoked key stays listed;
-- a rotated key names its successor.
CREATE TABLE gateway_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    consumer_group TEXT,
    -- JSON array of model names, or NULL for every model.
    allowed_models TEXT,
    rate_max_requests BIGINT,
    rate_window_seconds BIGINT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    replaced_by TEXT
);
CREATE INDEX gateway_keys_org ON gateway_keys (org_id, revoked_at);
