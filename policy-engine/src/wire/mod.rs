//! Wire-format translation between the APIs the gateway speaks and the providers it calls:
//! `anthropic` turns OpenAI chat requests into Anthropic Messages requests and Anthropic
//! answers (whole or streamed) back into OpenAI ones; `openai` does the reverse for
//! Anthropic clients of OpenAI-compatible targets. Pure JSON in, JSON out.

pub mod anthropic;
pub mod openai;

/// A request that cannot be expressed in the target format (answered with 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);
