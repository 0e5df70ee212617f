//! Budgets and model prices kept by the control plane. Every managed gateway of the
//! organisation receives them with its gateway keys (`GET /v1/gateway/keys`, pushed as
//! they change) and applies them over its configuration's `budgets` and `pricing`.
//! Provider budgets (`/v1/provider-budgets`) are budgets of scope `provider`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use kt_api::{BudgetInfo, BudgetList, CreateBudget, ModelPricing, ModelPricingList, UpdateBudget};
use sqlx::Row;
use sqlx::any::AnyRow;

// Names as a configuration's: they appear in refusals, events, metrics and Redis keys.
use kt_policy::config::well_formed_name as well_formed;

use crate::auth::{self, Principal};
use crate::changes::{Change, announce};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::{AppState, now};

/// Budgets one organisation may hold (provider budgets included).
pub const MAX_BUDGETS: i64 = 1_000;
/// Model prices one organisation may set.
pub const MAX_PRICES: i64 = 2_000;
/// The largest budget, in US dollars (as a configuration's `budgets`).
const MAX_BUDGET_USD: f64 = 1_000_000_000.0;
/// The largest price per 1,000 tokens (as a configuration's `pricing`).
const MAX_PRICE: f64 = 1_000.0;
const MAX_MODEL_BYTES: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/budgets", get(list_budgets).post(create_budget))
        .route(
            "/v1/budgets/{id}",
            get(get_budget).patch(update_budget).delete(delete_budget),
        )
        .route(
            "/v1/provider-budgets",
            get(list_provider_budgets).post(create_provider_budget),
        )
        .route(
            "/v1/provider-budgets/{id}",
            get(get_provider_budget).delete(delete_provider_budget),
        )
        .route("/v1/model-pricing", get(list_prices).post(set_price))
        .route("/v1/model-pricing/{model}", axum::routing::delete(delete_price))
}

/// Which of the two views over the budgets a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Organisation, caller key and consumer group budgets.
    Spend,
    Provider,
}

impl Kind {
    fn holds(self, scope: &str) -> bool {
        (scope == "provider") == (self == Kind::Provider)
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Spend => "budget",
            Kind::Provider => "provider budget",
        }
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if well_formed(name) {
        Ok(())
    } else {
        Err(ApiError::validation(
            "name needs 1 to 64 letters, digits, '-', '_' or '.' (it appears in refusals and events)",
        ))
    }
}

fn check_limit(usd: f64) -> ApiResult<()> {
    // At least one nano-dollar: a smaller limit would be stored as 0.
    if usd.is_finite() && (1e-9..=MAX_BUDGET_USD).contains(&usd) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "limit_usd must be above 0 and at most {MAX_BUDGET_USD}"
        )))
    }
}

fn check_period(period: &str) -> ApiResult<()> {
    if matches!(period, "hour" | "day" | "month") {
        Ok(())
    } else {
        Err(ApiError::validation("period must be hour, day or month (UTC)"))
    }
}

fn check_mode(mode: &str) -> ApiResult<()> {
    if matches!(mode, "hard" | "soft") {
        Ok(())
    } else {
        Err(ApiError::validation("mode must be hard or soft"))
    }
}

/// Checks a new budget: its scope and target as a configuration's `budgets` would be.
fn validate(req: &CreateBudget) -> ApiResult<()> {
    check_name(&req.name)?;
    check_limit(req.limit_usd)?;
    check_period(&req.period)?;
    check_mode(&req.mode)?;
    let target = req.target.as_deref();
    match (req.scope.as_str(), target) {
        ("organisation", Some(_)) => Err(ApiError::validation(
            "an organisation budget takes no target; set scope caller_key, consumer_group or provider",
        )),
        ("organisation", None) => Ok(()),
        ("caller_key" | "consumer_group", Some(t)) if !well_formed(t) => Err(ApiError::validation(format!(
            "target '{}' is not a gateway key id or group name (1 to 64 letters, digits, '-', '_' or '.')",
            t.chars().take(40).collect::<String>()
        ))),
        ("caller_key" | "consumer_group", _) => Ok(()),
        ("provider", Some(t)) if kt_policy::provider_catalog::lookup(t).is_none() => {
            Err(ApiError::validation(format!(
                "target '{}' is not a provider; use a provider name as configurations name it (openai, anthropic, azure…)",
                t.chars().take(40).collect::<String>()
            )))
        }
        ("provider", _) => Ok(()),
        (other, _) => Err(ApiError::validation(format!(
            "scope '{}' is not one of organisation, caller_key, consumer_group, provider",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

const COLUMNS: &str = "id, name, scope, target, limit_nanos, period, mode, created_at, updated_at";

fn budget_info(r: &AnyRow) -> ApiResult<BudgetInfo> {
    let nanos: i64 = r.try_get("limit_nanos")?;
    Ok(BudgetInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scope: r.try_get("scope")?,
        target: r.try_get("target")?,
        limit_usd: nanos.max(0) as f64 / 1e9,
        period: r.try_get("period")?,
        mode: r.try_get("mode")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn nanos(usd: f64) -> i64 {
    (usd * 1e9).round() as i64
}

/// How many rows of `table` (a table of this module) the organisation holds.
async fn count_of(st: &AppState, table: &'static str, org_id: &str) -> ApiResult<i64> {
    Ok(sqlx::query(&format!("SELECT COUNT(*) FROM {table} WHERE org_id = $1"))
        .bind(org_id)
        .fetch_one(&st.db)
        .await?
        .try_get(0)?)
}

/// Every budget of an organisation, provider budgets included, by name.
pub(crate) async fn all_budgets(st: &AppState, org_id: &str) -> ApiResult<Vec<BudgetInfo>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM budgets WHERE org_id = $1 ORDER BY name"
    ))
    .bind(org_id)
    .fetch_all(&st.db)
    .await?;
    rows.iter().map(budget_info).collect()
}

async fn find(st: &AppState, org_id: &str, id: &str, kind: Kind) -> ApiResult<BudgetInfo> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM budgets WHERE id = $1 AND org_id = $2"))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&st.db)
        .await?;
    match row.map(|r| budget_info(&r)).transpose()? {
        Some(b) if kind.holds(&b.scope) => Ok(b),
        _ => Err(ApiError::NotFound(format!(
            "no {} '{}' in this organisation",
            kind.noun(),
            id.chars().take(64).collect::<String>()
        ))),
    }
}

async fn list(st: &AppState, p: &Principal, kind: Kind) -> ApiResult<Json<BudgetList>> {
    p.require("budgets:read")?;
    let data = all_budgets(st, &p.org_id)
        .await?
        .into_iter()
        .filter(|b| kind.holds(&b.scope))
        .collect();
    Ok(Json(BudgetList { data }))
}

async fn list_budgets(State(st): State<AppState>, p: Principal) -> ApiResult<Json<BudgetList>> {
    list(&st, &p, Kind::Spend).await
}

async fn list_provider_budgets(State(st): State<AppState>, p: Principal) -> ApiResult<Json<BudgetList>> {
    list(&st, &p, Kind::Provider).await
}

async fn get_budget(State(st): State<AppState>, p: Principal, Path(id): Path<String>) -> ApiResult<Json<BudgetInfo>> {
    p.require("budgets:read")?;
    Ok(Json(find(&st, &p.org_id, &id, Kind::Spend).await?))
}

async fn get_provider_budget(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetInfo>> {
    p.require("budgets:read")?;
    Ok(Json(find(&st, &p.org_id, &id, Kind::Provider).await?))
}

/// A unique-index violation: the name is taken (a concurrent create included).
fn name_taken(e: sqlx::Error, name: &str) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ApiError::Conflict(format!(
            "a budget named '{name}' exists already; budget names are unique"
        )),
        _ => e.into(),
    }
}

async fn create(
    st: &AppState,
    p: &Principal,
    req: CreateBudget,
    kind: Kind,
) -> ApiResult<(StatusCode, Json<BudgetInfo>)> {
    p.require("budgets:write")?;
    if !kind.holds(&req.scope) {
        return Err(ApiError::validation(match kind {
            Kind::Spend => "provider budgets are made with POST /v1/provider-budgets (kt spend provider-budget create)",
            Kind::Provider => "a provider budget's scope is provider",
        }));
    }
    validate(&req)?;
    let full = || {
        ApiError::Conflict(format!(
            "the organisation holds {MAX_BUDGETS} budgets, the most allowed; delete unused ones first"
        ))
    };
    if count_of(st, "budgets", &p.org_id).await? >= MAX_BUDGETS {
        return Err(full());
    }
    let id = auth::new_id("bud");
    let at = now();
    sqlx::query(
        "INSERT INTO budgets (id, org_id, name, scope, target, limit_nanos, period, mode, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(&p.org_id)
    .bind(&req.name)
    .bind(&req.scope)
    .bind(&req.target)
    .bind(nanos(req.limit_usd))
    .bind(&req.period)
    .bind(&req.mode)
    .bind(at)
    .bind(at)
    .execute(&st.db)
    .await
    .map_err(|e| name_taken(e, &req.name))?;
    // Concurrent creates may each have seen room: counted again, the one over is undone.
    if count_of(st, "budgets", &p.org_id).await? > MAX_BUDGETS {
        sqlx::query("DELETE FROM budgets WHERE id = $1")
            .bind(&id)
            .execute(&st.db)
            .await?;
        return Err(full());
    }
    announce(st, Change::Keys).await;
    Ok((StatusCode::CREATED, Json(find(st, &p.org_id, &id, kind).await?)))
}

async fn create_budget(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<CreateBudget>,
) -> ApiResult<(StatusCode, Json<BudgetInfo>)> {
    create(&st, &p, req, Kind::Spend).await
}

async fn create_provider_budget(
    State(st): State<AppState>,
    p: Principal,
    Body(mut req): Body<CreateBudget>,
) -> ApiResult<(StatusCode, Json<BudgetInfo>)> {
    // The scope is implied by the route; one given must agree.
    if req.scope == "organisation" {
        req.scope = "provider".into();
    }
    create(&st, &p, req, Kind::Provider).await
}

async fn update_budget(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Body(req): Body<UpdateBudget>,
) -> ApiResult<Json<BudgetInfo>> {
    p.require("budgets:write")?;
    crate::mfa::require_mfa(&st, &p, "changing a budget").await?;
    let old = find(&st, &p.org_id, &id, Kind::Spend).await?;
    if req == UpdateBudget::default() {
        return Err(ApiError::validation(
            "nothing to change: give name, limit_usd, period or mode",
        ));
    }
    let name = req.name.unwrap_or(old.name);
    let limit = req.limit_usd.unwrap_or(old.limit_usd);
    let period = req.period.unwrap_or(old.period);
    let mode = req.mode.unwrap_or(old.mode);
    check_name(&name)?;
    check_limit(limit)?;
    check_period(&period)?;
    check_mode(&mode)?;
    sqlx::query(
        "UPDATE budgets SET name = $1, limit_nanos = $2, period = $3, mode = $4, updated_at = $5 \
         WHERE id = $6 AND org_id = $7",
    )
    .bind(&name)
    .bind(nanos(limit))
    .bind(&period)
    .bind(&mode)
    .bind(now())
    .bind(&id)
    .bind(&p.org_id)
    .execute(&st.db)
    .await
    .map_err(|e| name_taken(e, &name))?;
    announce(&st, Change::Keys).await;
    Ok(Json(find(&st, &p.org_id, &id, Kind::Spend).await?))
}

async fn delete(st: &AppState, p: &Principal, id: &str, kind: Kind) -> ApiResult<Json<BudgetInfo>> {
    p.require("budgets:write")?;
    crate::mfa::require_mfa(st, p, "deleting a budget").await?;
    let old = find(st, &p.org_id, id, kind).await?;
    let done = sqlx::query("DELETE FROM budgets WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(&p.org_id)
        .execute(&st.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound(format!(
            "{} '{id}' was deleted meanwhile",
            kind.noun()
        )));
    }
    announce(st, Change::Keys).await;
    Ok(Json(old))
}

async fn delete_budget(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetInfo>> {
    delete(&st, &p, &id, Kind::Spend).await
}

async fn delete_provider_budget(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetInfo>> {
    delete(&st, &p, &id, Kind::Provider).await
}

// ---------------------------------------------------------------------------------------
// Model prices

fn price_ok(x: f64) -> bool {
    x.is_finite() && (0.0..=MAX_PRICE).contains(&x)
}

fn validate_price(req: &ModelPricing) -> ApiResult<()> {
    let m = &req.model;
    if m.trim().is_empty() || m.len() > MAX_MODEL_BYTES || m.chars().any(char::is_control) {
        return Err(ApiError::validation(format!(
            "model needs 1 to {MAX_MODEL_BYTES} printable bytes"
        )));
    }
    if let Some(p) = &req.provider
        && kt_policy::provider_catalog::lookup(p).is_none()
    {
        return Err(ApiError::validation(format!(
            "provider '{}' is not a provider (openai, anthropic, azure…); leave it out if unsure",
            p.chars().take(40).collect::<String>()
        )));
    }
    let prices = [
        Some(req.input_cost_per_1k_tokens),
        Some(req.output_cost_per_1k_tokens),
        req.cached_input_cost_per_1k_tokens,
        req.reasoning_cost_per_1k_tokens,
    ];
    if prices.into_iter().flatten().any(|x| !price_ok(x)) {
        return Err(ApiError::validation(format!(
            "prices are US dollars per 1,000 tokens, from 0 to {MAX_PRICE}"
        )));
    }
    Ok(())
}

fn price_of(r: &AnyRow) -> ApiResult<ModelPricing> {
    Ok(ModelPricing {
        model: r.try_get("model")?,
        provider: r.try_get("provider")?,
        input_cost_per_1k_tokens: r.try_get("input_cost")?,
        output_cost_per_1k_tokens: r.try_get("output_cost")?,
        cached_input_cost_per_1k_tokens: r.try_get("cached_input_cost")?,
        reasoning_cost_per_1k_tokens: r.try_get("reasoning_cost")?,
        updated_at: Some(r.try_get("updated_at")?),
    })
}

/// Every model price of an organisation, by model.
pub(crate) async fn all_prices(st: &AppState, org_id: &str) -> ApiResult<Vec<ModelPricing>> {
    let rows = sqlx::query(
        "SELECT model, provider, input_cost, output_cost, cached_input_cost, reasoning_cost, updated_at \
         FROM model_pricing WHERE org_id = $1 ORDER BY model",
    )
    .bind(org_id)
    .fetch_all(&st.db)
    .await?;
    rows.iter().map(price_of).collect()
}

async fn list_prices(State(st): State<AppState>, p: Principal) -> ApiResult<Json<ModelPricingList>> {
    p.require("model_pricing:read")?;
    Ok(Json(ModelPricingList {
        data: all_prices(&st, &p.org_id).await?,
    }))
}

/// `POST /v1/model-pricing`: sets one model's price (a new one, or a change).
async fn set_price(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<ModelPricing>,
) -> ApiResult<Json<ModelPricing>> {
    p.require("model_pricing:write")?;
    // A price decides what every budget counts: lowering one loosens them all.
    crate::mfa::require_mfa(&st, &p, "setting a model price").await?;
    validate_price(&req)?;
    let model = req.model.trim().to_owned();
    let exists = sqlx::query("SELECT 1 FROM model_pricing WHERE org_id = $1 AND model = $2")
        .bind(&p.org_id)
        .bind(&model)
        .fetch_optional(&st.db)
        .await?
        .is_some();
    let full = || {
        ApiError::Conflict(format!(
            "the organisation has {MAX_PRICES} model prices, the most allowed; delete unused ones first"
        ))
    };
    if !exists && count_of(&st, "model_pricing", &p.org_id).await? >= MAX_PRICES {
        return Err(full());
    }
    sqlx::query(
        "INSERT INTO model_pricing (org_id, model, provider, input_cost, output_cost, cached_input_cost, reasoning_cost, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (org_id, model) DO UPDATE SET provider = excluded.provider, input_cost = excluded.input_cost, \
         output_cost = excluded.output_cost, cached_input_cost = excluded.cached_input_cost, \
         reasoning_cost = excluded.reasoning_cost, updated_at = excluded.updated_at",
    )
    .bind(&p.org_id)
    .bind(&model)
    .bind(&req.provider)
    .bind(req.input_cost_per_1k_tokens)
    .bind(req.output_cost_per_1k_tokens)
    .bind(req.cached_input_cost_per_1k_tokens)
    .bind(req.reasoning_cost_per_1k_tokens)
    .bind(now())
    .execute(&st.db)
    .await?;
    // Concurrent new models may each have seen room: counted again, the one over is undone.
    if !exists && count_of(&st, "model_pricing", &p.org_id).await? > MAX_PRICES {
        sqlx::query("DELETE FROM model_pricing WHERE org_id = $1 AND model = $2")
            .bind(&p.org_id)
            .bind(&model)
            .execute(&st.db)
            .await?;
        return Err(full());
    }
    announce(&st, Change::Keys).await;
    all_prices(&st, &p.org_id)
        .await?
        .into_iter()
        .find(|x| x.model == model)
        .map(Json)
        .ok_or_else(|| ApiError::Internal("the price was set but cannot be read back".into()))
}

async fn delete_price(
    State(st): State<AppState>,
    p: Principal,
    Path(model): Path<String>,
) -> ApiResult<Json<ModelPricing>> {
    p.require("model_pricing:write")?;
    crate::mfa::require_mfa(&st, &p, "deleting a model price").await?;
    let old = all_prices(&st, &p.org_id)
        .await?
        .into_iter()
        .find(|x| x.model == model)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "this organisation sets no price for model '{}' (GET /v1/model-pricing lists them)",
                model.chars().take(64).collect::<String>()
            ))
        })?;
    sqlx::query("DELETE FROM model_pricing WHERE org_id = $1 AND model = $2")
        .bind(&p.org_id)
        .bind(&model)
        .execute(&st.db)
        .await?;
    announce(&st, Change::Keys).await;
    Ok(Json(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(scope: &str, target: Option<&str>) -> CreateBudget {
        CreateBudget {
            name: "b-1".into(),
            scope: scope.into(),
            target: target.map(str::to_owned),
            limit_usd: 10.0,
            period: "day".into(),
            mode: "hard".into(),
        }
    }

    #[test]
    fn budgets_are_checked_as_configurations_are() {
        assert!(validate(&budget("organisation", None)).is_ok());
        assert!(validate(&budget("organisation", Some("x"))).is_err());
        assert!(validate(&budget("caller_key", Some("gk_1"))).is_ok());
        assert!(validate(&budget("caller_key", None)).is_ok());
        assert!(validate(&budget("consumer_group", Some("team a"))).is_err());
        assert!(validate(&budget("provider", Some("openai"))).is_ok());
        assert!(validate(&budget("provider", Some("opnai"))).is_err());
        assert!(validate(&budget("everyone", None)).is_err());
        for (name, usd, period, mode) in [
            ("a:b", 1.0, "day", "hard"),
            ("", 1.0, "day", "hard"),
            ("ok", 0.0, "day", "hard"),
            ("ok", f64::NAN, "day", "hard"),
            ("ok", f64::INFINITY, "day", "hard"),
            ("ok", 2e9, "day", "hard"),
            ("ok", 1.0, "week", "hard"),
            ("ok", 1.0, "day", "strict"),
        ] {
            let b = CreateBudget {
                name: name.into(),
                limit_usd: usd,
                period: period.into(),
                mode: mode.into(),
                ..budget("organisation", None)
            };
            assert!(validate(&b).is_err(), "{name} {usd} {period} {mode}");
        }
    }

    #[test]
    fn prices_are_bounded() {
        let price = |input: f64, cached: Option<f64>| ModelPricing {
            model: "m".into(),
            provider: None,
            input_cost_per_1k_tokens: input,
            output_cost_per_1k_tokens: 1.0,
            cached_input_cost_per_1k_tokens: cached,
            reasoning_cost_per_1k_tokens: None,
            updated_at: None,
        };
        assert!(validate_price(&price(0.0, None)).is_ok());
        assert!(validate_price(&price(-1.0, None)).is_err());
        assert!(validate_price(&price(f64::NAN, None)).is_err());
        assert!(validate_price(&price(1.0, Some(1e6))).is_err());
        let unnamed = ModelPricing {
            model: " ".into(),
            ..price(1.0, None)
        };
        assert!(validate_price(&unnamed).is_err());
        let odd = ModelPricing {
            provider: Some("nobody".into()),
            ..price(1.0, None)
        };
        assert!(validate_price(&odd).is_err());
    }
}
