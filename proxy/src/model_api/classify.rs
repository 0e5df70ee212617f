//! The external injection classifier (`prompt-injection.detection.external`): asked after
//! the input phase allowed a request, before any provider is contacted. The request and
//! answer shapes and the folding of the answer into the decision are kt-policy's
//! ([`kt_policy::external`]); this stage does the asking, within the configured timeout.

use std::time::Instant;

use bytes::Bytes;
use kt_policy::Decision;
use kt_policy::external::{ExternalClassifier, Folded, MAX_ANSWER_BYTES};
use serde_json::Value;

use crate::error::RequestError;
use crate::gateway::Gateway;
use crate::routing::{EnvLookup, StoreValues};
use crate::upstream::Upstream;

/// Where the classifier is and how to reach it, resolved once per configuration.
#[derive(Debug)]
pub struct ExternalBackend {
    upstream: Upstream,
    /// The URL's path and query, sent as they are.
    path: String,
}

impl ExternalBackend {
    /// The backend of `spec`; its key is resolved like a provider target's.
    pub fn new(spec: &ExternalClassifier, env: EnvLookup<'_>, store: Option<&StoreValues>) -> Result<Self, String> {
        const OWNER: &str = "prompt-injection.detection.external";
        let auth = match &spec.key {
            Some(r) => {
                let key = crate::routing::secret_value(OWNER, r, &spec.url, env, store)?;
                Some(("authorization".to_owned(), format!("Bearer {key}")))
            }
            None => None,
        };
        let uri: http::Uri = spec.url.parse().map_err(|e| format!("{OWNER}.url: {e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut upstream = Upstream::from_url("external-classifier", &spec.url, auth).map_err(|e| e.to_string())?;
        upstream.base_path = String::new();
        Ok(ExternalBackend { upstream, path })
    }
}

/// Asks the classifier about `request` and folds its answer into `decision`; a failure
/// under `fail_mode: closed` ends the request with 503.
pub(super) async fn check(
    gw: &Gateway,
    spec: &ExternalClassifier,
    backend: &ExternalBackend,
    request: &Value,
    decision: &mut Decision,
) -> Result<(), RequestError> {
    let Some(body) = spec.request_body(request) else {
        return Ok(());
    };
    let started = Instant::now();
    let result = match tokio::time::timeout(spec.timeout, ask(gw, backend, body, spec)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", spec.timeout.as_millis())),
    };
    let outcome = match &result {
        Ok(p) if *p >= spec.threshold => "flagged",
        Ok(_) => "passed",
        Err(_) => "error",
    };
    gw.metrics.external_classifier(outcome, started.elapsed());
    if let Err(e) = &result {
        tracing::warn!("external classifier at {}: {e}", spec.url);
    }
    match spec.fold(decision, result, started.elapsed()) {
        Folded::Unavailable(_) => Err(RequestError::ClassifierUnavailable),
        Folded::Unchanged | Folded::Decided => Ok(()),
    }
}

/// One exchange: the highest score of the answer, or what went wrong.
async fn ask(gw: &Gateway, backend: &ExternalBackend, body: Vec<u8>, spec: &ExternalClassifier) -> Result<f64, String> {
    let exchange = backend
        .upstream
        .send(&gw.upstreams, &backend.path, Bytes::from(body), None, spec.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let status = exchange.status();
    let answer = exchange.body(MAX_ANSWER_BYTES).await.map_err(|e| e.to_string())?;
    ExternalClassifier::read_answer(status, &answer)
}
