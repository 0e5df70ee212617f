-- Wrong TOTP codes are counted; past the limit the factor is locked until the given time.
ALTER TABLE users ADD COLUMN mfa_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN mfa_locked_until BIGINT NOT NULL DEFAULT 0;
-- 1 when the token was minted by an MFA-authenticated session.
ALTER TABLE tokens ADD COLUMN minted_mfa BIGINT NOT NULL DEFAULT 0;
