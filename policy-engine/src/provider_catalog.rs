//! The provider catalog: every provider id kt knows, the wire format it is served over,
//! its default base URL and the environment variables its key is read from. Lint, the
//! control plane's validation, `kt doctor` and the gateway all resolve a target through
//! [`serving`], so a configuration that lint accepts is one the gateway starts on.

use crate::config::{ProviderTarget, WireFormat};

/// The API a target is called over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions, responses, embeddings (`Authorization: Bearer`).
    OpenAi,
    /// Anthropic Messages (`x-api-key`, `anthropic-version`).
    Anthropic,
    /// Azure OpenAI deployments (`api-key`, `?api-version=`).
    Azure,
}

impl Wire {
    /// The credential header and the prefix of its value.
    pub fn auth(self) -> (&'static str, &'static str) {
        match self {
            Wire::OpenAi => ("Authorization", "Bearer "),
            Wire::Anthropic => ("x-api-key", ""),
            Wire::Azure => ("api-key", ""),
        }
    }
}

/// One provider id.
#[derive(Debug, Clone, Copy)]
pub struct ProviderInfo {
    pub id: &'static str,
    /// How this version serves it; `None`: documented, not served yet.
    pub wire: Option<Wire>,
    /// The public endpoint, when the provider has one (self-hosted servers need `base_url`).
    pub base_url: Option<&'static str>,
    /// Variables the key is read from when the target names none (first one set wins).
    pub key_env: &'static [&'static str],
}

const fn p(
    id: &'static str,
    wire: Option<Wire>,
    base_url: Option<&'static str>,
    key_env: &'static [&'static str],
) -> ProviderInfo {
    ProviderInfo {
        id,
        wire,
        base_url,
        key_env,
    }
}

const OA: Option<Wire> = Some(Wire::OpenAi);
const NOT_SERVED: Option<Wire> = None;

/// Every provider id of the product, served or not.
pub const CATALOG: &[ProviderInfo] = &[
    p("openai", OA, Some("https://api.openai.com/v1"), &["OPENAI_API_KEY"]),
    p(
        "anthropic",
        Some(Wire::Anthropic),
        Some("https://api.anthropic.com/v1"),
        &["ANTHROPIC_API_KEY"],
    ),
    p(
        "azure",
        Some(Wire::Azure),
        None,
        &["AZURE_OPENAI_API_KEY", "AZURE_OPENAI_KEY"],
    ),
    p(
        "azure-openai",
        Some(Wire::Azure),
        None,
        &["AZURE_OPENAI_API_KEY", "AZURE_OPENAI_KEY"],
    ),
    p("openai-compatible", OA, None, &[]),
    p("vllm", OA, None, &[]),
    p("ollama", OA, Some("http://127.0.0.1:11434/v1"), &[]),
    p("localai", OA, None, &[]),
    p("litellm", OA, None, &[]),
    p("groq", OA, Some("https://api.groq.com/openai/v1"), &["GROQ_API_KEY"]),
    p(
        "together",
        OA,
        Some("https://api.together.xyz/v1"),
        &["TOGETHER_API_KEY"],
    ),
    p("mistral", OA, Some("https://api.mistral.ai/v1"), &["MISTRAL_API_KEY"]),
    p(
        "fireworks",
        OA,
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_API_KEY"],
    ),
    p(
        "cerebras",
        OA,
        Some("https://api.cerebras.ai/v1"),
        &["CEREBRAS_API_KEY"],
    ),
    p(
        "deepseek",
        OA,
        Some("https://api.deepseek.com/v1"),
        &["DEEPSEEK_API_KEY"],
    ),
    p(
        "openrouter",
        OA,
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_KEY"],
    ),
    p("xai", OA, Some("https://api.x.ai/v1"), &["XAI_API_KEY"]),
    p("perplexity", OA, None, &["PERPLEXITY_API_KEY"]),
    p("github-models", OA, None, &[]),
    p("aimlapi", OA, None, &[]),
    p("alibaba", OA, None, &[]),
    p("cloudera", OA, None, &[]),
    p("cloudflare-gateway", OA, None, &[]),
    p("truefoundry", OA, None, &[]),
    p("llamaApi", OA, None, &[]),
    p("aws-bedrock", NOT_SERVED, None, &[]),
    p("bedrock", NOT_SERVED, None, &[]),
    p("google", NOT_SERVED, None, &[]),
    p("google-vertex", NOT_SERVED, None, &[]),
    p("cohere", NOT_SERVED, None, &[]),
    p("mcp", NOT_SERVED, None, &[]),
    p("cloudflare-workers-ai", NOT_SERVED, None, &[]),
    p("snowflake-cortex", NOT_SERVED, None, &[]),
    p("voyage", NOT_SERVED, None, &[]),
];

pub fn lookup(id: &str) -> Option<&'static ProviderInfo> {
    CATALOG.iter().find(|p| p.id == id)
}

pub fn ids() -> impl Iterator<Item = &'static str> {
    CATALOG.iter().map(|p| p.id)
}

/// The ids this version serves.
pub fn served_ids() -> impl Iterator<Item = &'static str> {
    CATALOG.iter().filter(|p| p.wire.is_some()).map(|p| p.id)
}

/// How one target is called: resolved from the catalog and the target's own overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub wire: Wire,
    pub base_url: String,
    /// Credential header name and value prefix.
    pub auth_header: String,
    pub auth_prefix: String,
    /// Where the key is read from when the target names none.
    pub key_env: &'static [&'static str],
}

/// Why a target cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServingError {
    #[error("unknown provider '{0}'")]
    Unknown(String),
    #[error(
        "provider '{0}' is not served by this version (served: openai, anthropic, azure and OpenAI-compatible servers); for an OpenAI-compatible endpoint of it, set `format: openai` and its `base_url`"
    )]
    NotServed(String),
    #[error("provider '{0}' has no public endpoint: set the target's `base_url`")]
    NeedsBaseUrl(String),
    #[error("an Azure target needs `azure_deployment` or `model` (the deployment name)")]
    NeedsDeployment,
    #[error("base_url '{0}' is not an http(s) URL with a host")]
    BadBaseUrl(String),
}

/// How `t` is served, or why it cannot be. An explicit `format` (or `provider_type`) wins
/// over the provider's own wire format.
pub fn serving(t: &ProviderTarget) -> Result<Serving, ServingError> {
    let info = lookup(&t.provider).ok_or_else(|| ServingError::Unknown(t.provider.clone()))?;
    let wire = match t.format.or(t.provider_type) {
        Some(WireFormat::Openai) => Wire::OpenAi,
        Some(WireFormat::Anthropic) => Wire::Anthropic,
        Some(WireFormat::Azure) => Wire::Azure,
        None => info.wire.ok_or_else(|| ServingError::NotServed(t.provider.clone()))?,
    };
    // A provider's public endpoint holds only for its own wire format.
    let default_url = info.base_url.filter(|_| Some(wire) == info.wire);
    let base_url = t
        .base_url
        .clone()
        .or_else(|| default_url.map(str::to_owned))
        .ok_or_else(|| ServingError::NeedsBaseUrl(t.provider.clone()))?;
    let host = base_url
        .strip_prefix("https://")
        .or_else(|| base_url.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if host.is_none_or(|h| h.is_empty() || h.starts_with(':') || h.contains(char::is_whitespace)) {
        return Err(ServingError::BadBaseUrl(base_url));
    }
    if wire == Wire::Azure && t.azure_deployment.is_none() && t.model.is_none() {
        return Err(ServingError::NeedsDeployment);
    }
    let (header, prefix) = wire.auth();
    Ok(Serving {
        wire,
        base_url,
        auth_header: t.api_key_header.clone().unwrap_or_else(|| header.to_owned()),
        auth_prefix: t.api_key_prefix.clone().unwrap_or_else(|| prefix.to_owned()),
        key_env: info.key_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(provider: &str, base_url: Option<&str>) -> ProviderTarget {
        ProviderTarget {
            id: "t".into(),
            provider: provider.into(),
            base_url: base_url.map(str::to_owned),
            ..ProviderTarget::default()
        }
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = ids().collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn targets_resolve_or_say_why_not() {
        let s = serving(&target("openai", None)).expect("served");
        assert_eq!(s.base_url, "https://api.openai.com/v1");
        assert_eq!(
            (s.auth_header.as_str(), s.auth_prefix.as_str()),
            ("Authorization", "Bearer ")
        );
        let s = serving(&target("anthropic", None)).expect("served");
        assert_eq!((s.wire, s.auth_header.as_str()), (Wire::Anthropic, "x-api-key"));
        assert_eq!(
            serving(&target("google", Some("https://x"))),
            Err(ServingError::NotServed("google".into()))
        );
        assert_eq!(
            serving(&target("vllm", None)),
            Err(ServingError::NeedsBaseUrl("vllm".into()))
        );
        assert_eq!(
            serving(&target("azure", None)),
            Err(ServingError::NeedsBaseUrl("azure".into()))
        );
        assert_eq!(
            serving(&target("nope", None)),
            Err(ServingError::Unknown("nope".into()))
        );
        assert_eq!(
            serving(&target("azure", Some("https://r.openai.azure.com"))),
            Err(ServingError::NeedsDeployment)
        );
        for bad in ["ftp://x", "https://", "http://:80/v1", "https://a b/v1"] {
            assert!(
                matches!(serving(&target("vllm", Some(bad))), Err(ServingError::BadBaseUrl(_))),
                "{bad}"
            );
        }
        let mut g = target("google", Some("https://gw.example/v1"));
        g.format = Some(WireFormat::Openai);
        assert_eq!(
            serving(&g).map(|s| s.wire),
            Ok(Wire::OpenAi),
            "an explicit format serves it"
        );
        let mut o = target("openai", None);
        o.format = Some(WireFormat::Anthropic);
        assert!(
            matches!(serving(&o), Err(ServingError::NeedsBaseUrl(_))),
            "openai's endpoint does not speak Anthropic"
        );
    }
}
