-- Organisations, users and tokens (sessions, access tokens and gateway tokens share one
-- table). Times are unix seconds; flags are 0/1 integers so that the same SQL runs on
-- SQLite and PostgreSQL.
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    mfa_secret TEXT,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    last_failed_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    user_id TEXT REFERENCES users(id),
    name TEXT NOT NULL,
    token_type TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    mfa_authenticated BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX tokens_org ON tokens (org_id, token_type);
