-- Write-only secrets and config variables. `encryption` is 'aes-gcm-siv' (value is
-- base64 of nonce || ciphertext, bound to org and name) or 'plaintext' (legacy rows,
-- re-encrypted when updated).
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    value TEXT NOT NULL,
    encryption TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE config_variables (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    value TEXT NOT NULL,
    sensitive BIGINT NOT NULL DEFAULT 0,
    encryption TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
