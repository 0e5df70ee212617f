-- TOTP enrolment awaiting its first code, and the last time step accepted (a code is
-- good once).
ALTER TABLE users ADD COLUMN mfa_pending_secret TEXT;
ALTER TABLE users ADD COLUMN mfa_last_step BIGINT NOT NULL DEFAULT 0;
