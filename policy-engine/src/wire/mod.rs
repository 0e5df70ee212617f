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

use serde_json::{Value, json};

/// An OpenAI `tool_calls[]` entry as an Anthropic `tool_use` block. Arguments that are not
/// JSON are an error: the caller decides whether to refuse or substitute `{}`.
pub(crate) fn tool_use_block(call: &Value) -> Result<Value, WireError> {
    let f = call.get("function").unwrap_or(call);
    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
    let input: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
        .map_err(|e| WireError(format!("tool call arguments are not JSON: {e}")))?;
    Ok(json!({
        "type": "tool_use",
        "id": call.get("id").cloned().unwrap_or_else(|| json!("")),
        "name": f.get("name").cloned().unwrap_or_else(|| json!("")),
        "input": input,
    }))
}
