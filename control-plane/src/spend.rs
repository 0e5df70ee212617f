//! Spend: managed gateways report what their answers cost (`POST /v1/gateway/usage`, hourly
//! rows per caller key, consumer group, model and provider), and `GET /v1/spend/summary`
//! sums them by one of those or by gateway.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kt_api::{SpendLine, SpendSummary, UsageReport};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::{AppState, now};

/// Rows one report may carry.
pub const MAX_ROWS: usize = 2_000;
/// The longest id, model or provider name accepted in a row.
const MAX_FIELD_BYTES: usize = 256;
/// The most one row may count of anything (tokens, nano-dollars, requests).
const MAX_COUNT: u64 = 1_000_000_000_000_000;
/// Where a stored total stops growing (well inside signed 64 bits).
const TOTAL_CAP: i64 = 4_000_000_000_000_000_000;
/// The widest period a summary covers.
const MAX_SPAN_SECS: i64 = 400 * 86_400;
/// How long applied batch ids are remembered (a retry later than this would count again).
const BATCH_MEMORY_SECS: i64 = 7 * 86_400;
/// The default and the longest period a summary covers.
const DEFAULT_SINCE_SECS: i64 = 30 * 86_400;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/gateway/usage", post(report))
        .route("/v1/spend/summary", get(summary))
}

fn field_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD_BYTES && !s.chars().any(char::is_control)
}

/// Checks a report before anything of it is stored.
fn validate(r: &UsageReport) -> ApiResult<()> {
    if !field_ok(&r.batch_id) || r.batch_id.len() > 64 {
        return Err(ApiError::validation("batch_id needs 1 to 64 printable characters"));
    }
    if r.rows.len() > MAX_ROWS {
        return Err(ApiError::validation(format!(
            "a report holds at most {MAX_ROWS} rows; send the rest in another"
        )));
    }
    for (i, row) in r.rows.iter().enumerate() {
        let fields = [&row.caller_key, &row.consumer_group, &row.model, &row.provider];
        if fields.iter().any(|f| !field_ok(f)) {
            return Err(ApiError::validation(format!(
                "rows[{i}]: caller_key, consumer_group, model and provider need 1 to {MAX_FIELD_BYTES} printable bytes"
            )));
        }
        if row.hour % 3600 != 0 || row.hour < 0 {
            return Err(ApiError::validation(format!(
                "rows[{i}].hour is not the start of an hour"
            )));
        }
        let counts = [row.requests, row.input_tokens, row.output_tokens, row.cost_nanos];
        if counts.iter().any(|n| *n > MAX_COUNT) {
            return Err(ApiError::validation(format!("rows[{i}] holds a count out of range")));
        }
    }
    Ok(())
}

/// `POST /v1/gateway/usage` (gateway tokens): adds a report's rows to the gateway's spend,
/// once per batch id.
async fn report(State(st): State<AppState>, p: Principal, Body(r): Body<UsageReport>) -> ApiResult<Json<Value>> {
    let gid = crate::fleet::bound_gateway(&p, None)?;
    validate(&r)?;
    let mut tx = st.db.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO usage_batches (gateway_id, batch_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&gid)
    .bind(&r.batch_id)
    .bind(now())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        tx.rollback().await?;
        return Ok(Json(
            json!({"applied": false, "reason": "this batch was counted before"}),
        ));
    }
    for row in &r.rows {
        sqlx::query(
            "INSERT INTO spend (org_id, gateway_id, hour, caller_key, consumer_group, model, provider, requests, \
             input_tokens, output_tokens, cost_nanos) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (org_id, gateway_id, hour, caller_key, consumer_group, model, provider) DO UPDATE SET \
             requests = CASE WHEN spend.requests > $12 - excluded.requests THEN $12 ELSE spend.requests + excluded.requests END, \
             input_tokens = CASE WHEN spend.input_tokens > $12 - excluded.input_tokens THEN $12 ELSE spend.input_tokens + excluded.input_tokens END, \
             output_tokens = CASE WHEN spend.output_tokens > $12 - excluded.output_tokens THEN $12 ELSE spend.output_tokens + excluded.output_tokens END, \
             cost_nanos = CASE WHEN spend.cost_nanos > $12 - excluded.cost_nanos THEN $12 ELSE spend.cost_nanos + excluded.cost_nanos END",
        )
        .bind(&p.org_id)
        .bind(&gid)
        .bind(row.hour)
        .bind(&row.caller_key)
        .bind(&row.consumer_group)
        .bind(&row.model)
        .bind(&row.provider)
        .bind(row.requests as i64)
        .bind(row.input_tokens as i64)
        .bind(row.output_tokens as i64)
        .bind(row.cost_nanos as i64)
        .bind(TOTAL_CAP)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM usage_batches WHERE gateway_id = $1 AND received_at < $2")
        .bind(&gid)
        .bind(now() - BATCH_MEMORY_SECS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(json!({"applied": true, "rows": r.rows.len()})))
}

#[derive(Debug, Deserialize)]
struct SummaryQuery {
    by: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
}

/// The column a summary groups by (from a fixed list: never the caller's text).
fn column(by: &str) -> ApiResult<&'static str> {
    Ok(match by {
        "key" => "caller_key",
        "group" => "consumer_group",
        "model" => "model",
        "provider" => "provider",
        "gateway" => "gateway_id",
        other => {
            return Err(ApiError::validation(format!(
                "cannot sum spend by '{other}': use key, group, model, provider or gateway"
            )));
        }
    })
}

/// `GET /v1/spend/summary?by=key|group|model|provider|gateway&since=&until=` (unix
/// seconds; default the last 30 days).
async fn summary(
    State(st): State<AppState>,
    p: Principal,
    Query(q): Query<SummaryQuery>,
) -> ApiResult<Json<SpendSummary>> {
    p.require("spend:read")?;
    let by = q.by.unwrap_or_else(|| "key".into());
    let col = column(&by)?;
    // Times beyond year 36812 are not times: clamp before any arithmetic.
    let clamp = |t: i64| t.clamp(0, 1 << 40);
    let until = clamp(q.until.unwrap_or_else(|| now() + 1));
    let since = clamp(q.since.unwrap_or(until - DEFAULT_SINCE_SECS)).max(until - MAX_SPAN_SECS);
    if since >= until {
        return Err(ApiError::validation("since must be before until"));
    }
    // Spend is kept per hour: `since` counts from the start of its hour.
    let first_hour = since.div_euclid(3600) * 3600;
    let rows = sqlx::query(&format!(
        "SELECT {col} AS id, SUM(CAST(requests AS DOUBLE PRECISION)) AS requests, \
         SUM(CAST(input_tokens AS DOUBLE PRECISION)) AS input_tokens, \
         SUM(CAST(output_tokens AS DOUBLE PRECISION)) AS output_tokens, \
         SUM(CAST(cost_nanos AS DOUBLE PRECISION)) AS cost_nanos \
         FROM spend WHERE org_id = $1 AND hour >= $2 AND hour < $3 GROUP BY {col} ORDER BY cost_nanos DESC, id"
    ))
    .bind(&p.org_id)
    .bind(first_hour)
    .bind(until)
    .fetch_all(&st.db)
    .await?;
    let names = names_for(&st, &p.org_id, &by).await?;
    let mut total = line("total".into(), None, 0, 0, 0, 0);
    let mut data = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        // Summed as floating point: totals of many rows cannot overflow.
        let counts: [f64; 4] = [
            r.try_get("requests")?,
            r.try_get("input_tokens")?,
            r.try_get("output_tokens")?,
            r.try_get("cost_nanos")?,
        ];
        let [requests, input, output, nanos] = counts.map(|n| n.max(0.0) as u64);
        total.requests = total.requests.saturating_add(requests);
        total.input_tokens = total.input_tokens.saturating_add(input);
        total.output_tokens = total.output_tokens.saturating_add(output);
        total.cost_usd += nanos as f64 / 1e9;
        let name = names.get(&id).cloned();
        data.push(line(id, name, requests, input, output, nanos));
    }
    total.cost_usd = round_usd(total.cost_usd);
    Ok(Json(SpendSummary {
        by,
        since: first_hour,
        until,
        data,
        total,
    }))
}

fn round_usd(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

fn line(id: String, name: Option<String>, requests: u64, input: u64, output: u64, nanos: u64) -> SpendLine {
    SpendLine {
        id,
        name,
        requests,
        input_tokens: input,
        output_tokens: output,
        cost_usd: round_usd(nanos as f64 / 1e9),
    }
}

/// The names of the organisation's gateway keys or gateways, by id.
async fn names_for(st: &AppState, org_id: &str, by: &str) -> ApiResult<HashMap<String, String>> {
    let table = match by {
        "key" => "gateway_keys",
        "gateway" => "gateways",
        _ => return Ok(HashMap::new()),
    };
    let rows = sqlx::query(&format!("SELECT id, name FROM {table} WHERE org_id = $1"))
        .bind(org_id)
        .fetch_all(&st.db)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kt_api::UsageRow;

    fn row() -> UsageRow {
        UsageRow {
            hour: 7200,
            caller_key: "gk_1".into(),
            consumer_group: "none".into(),
            model: "m".into(),
            provider: "mock".into(),
            requests: 1,
            input_tokens: 2,
            output_tokens: 3,
            cost_nanos: 4,
        }
    }

    #[test]
    fn reports_are_checked_before_anything_is_stored() {
        let ok = UsageReport {
            batch_id: "b1".into(),
            rows: vec![row()],
        };
        assert!(validate(&ok).is_ok());
        let bad = [
            UsageReport {
                batch_id: String::new(),
                rows: vec![],
            },
            UsageReport {
                batch_id: "b".into(),
                rows: vec![UsageRow { hour: 7201, ..row() }],
            },
            UsageReport {
                batch_id: "b".into(),
                rows: vec![UsageRow {
                    model: "x".repeat(MAX_FIELD_BYTES + 1),
                    ..row()
                }],
            },
            UsageReport {
                batch_id: "b".into(),
                rows: vec![UsageRow {
                    provider: "a\nb".into(),
                    ..row()
                }],
            },
            UsageReport {
                batch_id: "b".into(),
                rows: vec![UsageRow {
                    cost_nanos: u64::MAX,
                    ..row()
                }],
            },
            UsageReport {
                batch_id: "b".into(),
                rows: vec![row(); MAX_ROWS + 1],
            },
        ];
        for r in &bad {
            assert!(validate(r).is_err(), "{:?} passed", r.batch_id);
        }
        assert!(column("key; DROP TABLE spend").is_err());
        assert_eq!(column("gateway").ok(), Some("gateway_id"));
    }
}
