-- Configurations (immutable, validated versions), gateways with their desired and applied
-- versions, and rollouts. A gateway token is bound to its gateway.
CREATE TABLE configurations (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT 'production',
    status TEXT NOT NULL DEFAULT 'active',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE configuration_versions (
    configuration_id TEXT NOT NULL REFERENCES configurations(id),
    version BIGINT NOT NULL,
    pack_version TEXT NOT NULL,
    yaml TEXT NOT NULL,
    digest TEXT NOT NULL,
    change_detail TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'api',
    created_by TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (configuration_id, version)
);

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    configuration_id TEXT REFERENCES configurations(id),
    desired_version BIGINT,
    reload_generation BIGINT NOT NULL DEFAULT 0,
    applied_configuration_id TEXT,
    applied_version BIGINT,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    applied_at BIGINT,
    last_error TEXT,
    last_seen_at BIGINT,
    poll_interval BIGINT NOT NULL DEFAULT 30,
    runtime_version TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    configuration_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    gateway_ids TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL
);

ALTER TABLE tokens ADD COLUMN gateway_id TEXT;
