-- What managed gateways spent, per hour, gateway, caller key, consumer group, model and
-- provider (reported by the gateways). Costs are nano-dollars.
CREATE TABLE spend (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    gateway_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    caller_key TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    PRIMARY KEY (org_id, gateway_id, hour, caller_key, consumer_group, model, provider)
);
CREATE INDEX spend_org_hour ON spend (org_id, hour);

-- Usage reports already counted, so a report retried after a lost answer counts once.
CREATE TABLE usage_batches (
    gateway_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, batch_id)
);
