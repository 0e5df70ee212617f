-- Where each secret may be sent: a comma-separated list of allowed hosts (`host`,
-- `host:port`, `*.domain`). NULL: only the public endpoints of the provider catalog.
ALTER TABLE secrets ADD COLUMN allowed_hosts TEXT;
