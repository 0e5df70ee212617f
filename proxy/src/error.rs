//! `RequestError`: everything a model API request can fail with before its answer starts,
//! and the one place that knows, for each, its HTTP status, its error envelope in the
//! client's API (OpenAI `{"error": {…}}`, Anthropic `{"type": "error", "error": {…}}`), its
//! reason code and how loudly it is logged.

use kt_policy::Decision;
use serde_json::{Value, json};

use crate::gateway::ClientApi;

/// Why a model request ends with an error answer.
#[derive(Debug)]
pub enum RequestError {
    /// A rate or token limit is spent (`unit`: requests or tokens).
    RateLimited {
        scope: &'static str,
        limit: u64,
        reset: u64,
        unit: &'static str,
    },
    /// The body is larger than `size_limits.max_body_bytes`.
    TooLarge {
        limit: u64,
    },
    UnsupportedMediaType(String),
    /// The body did not arrive within `--body-timeout` (seconds; 0: a read stalled).
    BodyTimeout(u64),
    /// The body's HTTP framing is broken (a malformed chunk size, …).
    BadFraming(String),
    /// The body is not a request of this API (`code`: invalid_json, duplicate_key, …).
    InvalidBody {
        code: &'static str,
        message: String,
    },
    /// The policy chain blocked or escalated the request.
    Policy(Box<Decision>),
    ModelNotAllowed(String),
    /// The caller's key or consumer group may not use this model (their
    /// `allowed_models` or `providers`); the message says which.
    ModelNotAllowedFor(String),
    /// A gateway key names a consumer group the configuration does not declare (403).
    GroupUnavailable(String),
    /// `caller_auth` refused the request (`missing_api_key`, `invalid_api_key`,
    /// `conflicting_api_keys`).
    Unauthorized(&'static str),
    ModelNotFound {
        model: String,
        known: String,
    },
    /// No configured target serves this API family.
    NoTargetFor(&'static str),
    /// data-routing-policy allows none of the model's targets.
    NoCompliantTarget,
    Overloaded {
        max: usize,
    },
    CircuitOpen,
    NoTarget,
    /// The provider's own error answer, already in the client's shape.
    ProviderStatus {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    UpstreamTimeout(String),
    UpstreamUnavailable(String),
    UpstreamTooLarge(String),
    InvalidUpstreamResponse(String),
    /// The chosen target cannot serve this request (an API its wire format lacks).
    UnsupportedForTarget(String),
    /// The external injection classifier could not judge the request and its
    /// `fail_mode` is `closed` (the cause is logged where it happened, not sent).
    ClassifierUnavailable,
    /// `shared_state`'s Redis could not answer and a limit's fail mode is `closed`.
    LimitsUnavailable,
    /// A hard budget (its name) has no room for the request's most possible cost.
    BudgetExceeded {
        name: String,
        /// Seconds until the budget's period ends.
        reset: u64,
    },
    /// A hard budget applies but the model (its name) has no price.
    ModelNotPriced(String),
}

/// How loudly a failure is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    /// The client's doing (a bad body, a limit, a policy decision).
    Debug,
    /// The gateway or an upstream could not serve a valid request.
    Warn,
}

impl RequestError {
    pub fn status(&self) -> u16 {
        use RequestError::*;
        match self {
            RateLimited { .. } | BudgetExceeded { .. } => 429,
            TooLarge { .. } => 413,
            UnsupportedMediaType(_) => 415,
            BodyTimeout(_) => 408,
            BadFraming(_) => 400,
            InvalidBody { .. } | NoTargetFor(_) | UnsupportedForTarget(_) | ModelNotPriced(_) => 422,
            Policy(d) => d.http_status(),
            ModelNotAllowed(_) | ModelNotAllowedFor(_) | GroupUnavailable(_) => 403,
            Unauthorized(_) => 401,
            ModelNotFound { .. } => 404,
            NoCompliantTarget => 409,
            Overloaded { .. } | CircuitOpen | NoTarget | ClassifierUnavailable | LimitsUnavailable => 503,
            ProviderStatus { status, .. } if *status >= 500 => 502,
            ProviderStatus { status, .. } => *status,
            UpstreamTimeout(_) => 504,
            UpstreamUnavailable(_) | UpstreamTooLarge(_) | InvalidUpstreamResponse(_) => 502,
        }
    }

    /// The reason code clients and logs see.
    pub fn code(&self) -> &'static str {
        use RequestError::*;
        match self {
            RateLimited { .. } => "rate_limited",
            TooLarge { .. } => "request_too_large",
            UnsupportedMediaType(_) => "unsupported_media_type",
            BodyTimeout(_) => "request_timeout",
            BadFraming(_) => "bad_request",
            InvalidBody { code, .. } => code,
            Policy(_) => "policy",
            ModelNotAllowed(_) | ModelNotAllowedFor(_) => "model_not_allowed",
            GroupUnavailable(_) => "consumer_group_unavailable",
            Unauthorized(code) => code,
            ModelNotFound { .. } => "model_not_found",
            NoTargetFor(_) | UnsupportedForTarget(_) => "unsupported_for_target",
            NoCompliantTarget => "no_compliant_target",
            Overloaded { .. } => "overloaded",
            CircuitOpen => "circuit_open",
            NoTarget => "no_target",
            ClassifierUnavailable => "classifier_unavailable",
            LimitsUnavailable => "limits_unavailable",
            BudgetExceeded { .. } => "budget_exceeded",
            ModelNotPriced(_) => "model_not_priced",
            ProviderStatus { .. } => "provider_error",
            UpstreamTimeout(_) => "upstream_timeout",
            UpstreamUnavailable(_) => "upstream_unavailable",
            UpstreamTooLarge(_) => "upstream_response_too_large",
            InvalidUpstreamResponse(_) => "invalid_upstream_response",
        }
    }

    fn kind(&self) -> &'static str {
        use RequestError::*;
        match self {
            RateLimited { .. } | BudgetExceeded { .. } => "rate_limit",
            ModelNotAllowed(_) | ModelNotAllowedFor(_) | GroupUnavailable(_) | NoCompliantTarget | Policy(_) => {
                "policy_violation"
            }
            Unauthorized(_) => "authentication_error",
            TooLarge { .. } | UnsupportedMediaType(_) | InvalidBody { .. } | ModelNotFound { .. } => "validation_error",
            BodyTimeout(_) | BadFraming(_) => "validation_error",
            NoTargetFor(_) | UnsupportedForTarget(_) | ModelNotPriced(_) => "validation_error",
            _ => "upstream_error",
        }
    }

    fn message(&self) -> String {
        use RequestError::*;
        match self {
            RateLimited {
                scope,
                limit,
                reset,
                unit,
            } => format!("rate limit exceeded ({scope}: {limit} {unit} per window); retry in {reset} s"),
            TooLarge { limit } => format!("request body exceeds size_limits.max_body_bytes ({limit} bytes)"),
            UnsupportedMediaType(ct) => format!("content-type must be application/json, got '{ct}'"),
            BodyTimeout(0) => "the request body stalled; the connection is closed".into(),
            BodyTimeout(s) => format!("the request body did not arrive within {s} s"),
            BadFraming(m) => m.clone(),
            InvalidBody { message, .. } => message.clone(),
            ModelNotAllowed(m) => format!("model '{m}' is not in unified_access.allowed_models"),
            ModelNotAllowedFor(m) => m.clone(),
            GroupUnavailable(g) => format!(
                "the caller key belongs to consumer group '{g}', which this gateway's configuration does not declare"
            ),
            Unauthorized("missing_api_key") => {
                "this gateway needs a caller key: send Authorization: Bearer <key> or x-api-key: <key>".into()
            }
            Unauthorized("conflicting_api_keys") => {
                "the request carries two different keys (Authorization and x-api-key, or a repeated header); send one"
                    .into()
            }
            Unauthorized("expired_api_key") => "the caller key has expired; ask for a new one".into(),
            Unauthorized(_) => "the caller key is not valid for this gateway".into(),
            ModelNotFound { model, known } => {
                format!("no provider target serves model '{model}'; available: {known}")
            }
            NoTargetFor(api) => format!("no configured provider target serves the {api} API"),
            NoCompliantTarget => "data-routing-policy allows none of the targets that serve this model".into(),
            Overloaded { max } => {
                format!("the gateway is at --max-concurrency ({max}) upstream requests; retry shortly")
            }
            CircuitOpen => "every provider target for this request has an open circuit; retry later".into(),
            NoTarget => "no provider target could be tried".into(),
            ClassifierUnavailable => {
                "the prompt-injection classifier could not judge this request (policy fail_mode: closed); retry shortly"
                    .into()
            }
            LimitsUnavailable => {
                "the shared limit store cannot be reached and this limit's shared_state fail mode is closed; retry shortly"
                    .into()
            }
            BudgetExceeded { name, reset } => format!(
                "budget '{name}' has no room for this request's most possible cost (its input plus its output maximum); lower max_tokens, or retry when requests in flight settle or the period ends in {reset} s"
            ),
            ModelNotPriced(model) => format!(
                "model '{model}' has no price, so a hard budget cannot be held; add it under pricing.models"
            ),
            UpstreamTimeout(m) | UpstreamUnavailable(m) | UpstreamTooLarge(m) | InvalidUpstreamResponse(m) => m.clone(),
            UnsupportedForTarget(m) => m.clone(),
            Policy(_) | ProviderStatus { .. } => String::new(),
        }
    }

    /// The answer's body, in the client's API shape.
    pub fn body(&self, client: ClientApi) -> Value {
        match self {
            RequestError::Policy(d) => {
                let mut body = d.error_body();
                // Anthropic clients read `{"type": "error", "error": {...}}`.
                if client == ClientApi::AnthropicMessages {
                    body["type"] = json!("error");
                }
                body
            }
            RequestError::ProviderStatus { body, .. } => body.clone(),
            _ => envelope(client, self.kind(), self.code(), self.message()),
        }
    }

    /// `Retry-After` seconds, for the failures a retry can cure.
    pub fn retry_after(&self) -> Option<String> {
        match self {
            RequestError::RateLimited { reset, .. } | RequestError::BudgetExceeded { reset, .. } => {
                Some(reset.max(&1).to_string())
            }
            RequestError::Overloaded { .. }
            | RequestError::CircuitOpen
            | RequestError::ClassifierUnavailable
            | RequestError::LimitsUnavailable => Some("1".into()),
            RequestError::ProviderStatus { retry_after, .. } => retry_after.clone(),
            _ => None,
        }
    }

    /// Whether the connection is closed after the answer (the rest of the body is unread).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            RequestError::TooLarge { .. }
                | RequestError::BodyTimeout(_)
                | RequestError::BadFraming(_)
                | RequestError::Unauthorized(_)
        )
    }

    pub fn loudness(&self) -> Loudness {
        use RequestError::*;
        match self {
            Overloaded { .. }
            | CircuitOpen
            | NoTarget
            | ClassifierUnavailable
            | LimitsUnavailable
            | UpstreamTimeout(_)
            | UpstreamUnavailable(_)
            | UpstreamTooLarge(_)
            | InvalidUpstreamResponse(_) => Loudness::Warn,
            _ => Loudness::Debug,
        }
    }
}

/// The error envelope of `client`'s API.
pub fn envelope(client: ClientApi, kind: &str, code: &str, message: impl Into<String>) -> Value {
    let message = message.into();
    if client == ClientApi::AnthropicMessages {
        json!({"type": "error", "error": {"type": kind, "message": message, "code": code}})
    } else {
        json!({"error": {"type": kind, "message": message, "code": code}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_code_and_the_clients_shape() {
        let e = RequestError::TooLarge { limit: 10 };
        assert_eq!((e.status(), e.code()), (413, "request_too_large"));
        assert!(e.closes_connection());
        assert_eq!(e.body(ClientApi::OpenAiChat)["error"]["code"], "request_too_large");
        let anthropic = e.body(ClientApi::AnthropicMessages);
        assert_eq!(
            (anthropic["type"].as_str(), anthropic["error"]["type"].as_str()),
            (Some("error"), Some("validation_error"))
        );
        let p = RequestError::ProviderStatus {
            status: 503,
            body: json!({"error": {"message": "down"}}),
            retry_after: Some("7".into()),
        };
        assert_eq!((p.status(), p.retry_after().as_deref()), (502, Some("7")));
        assert_eq!(p.body(ClientApi::OpenAiChat)["error"]["message"], "down");
        let r = RequestError::RateLimited {
            scope: "ip_rate_limit",
            limit: 5,
            reset: 0,
            unit: "requests",
        };
        assert_eq!((r.status(), r.retry_after().as_deref()), (429, Some("1")));
        assert_eq!(RequestError::UpstreamTimeout("slow".into()).loudness(), Loudness::Warn);
        assert_eq!(RequestError::NoCompliantTarget.status(), 409);
    }

    #[test]
    fn policy_blocks_take_the_clients_shape() {
        let d = Decision {
            verdict: kt_policy::Verdict::Block,
            policy: Some("dlp-filter"),
            reason_code: Some("dlp_filter.blocked_term".into()),
            ..Decision::default()
        };
        let e = RequestError::Policy(Box::new(d));
        let openai = e.body(ClientApi::OpenAiChat);
        assert_eq!(openai.get("type"), None);
        assert_eq!(openai["error"]["reason_code"], "dlp_filter.blocked_term");
        let anthropic = e.body(ClientApi::AnthropicMessages);
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "policy_violation");
        assert_eq!(anthropic["error"]["reason_code"], "dlp_filter.blocked_term");
    }
}
