//! The request body: read whole and bounded (`size_limits.max_body_bytes`, `100-continue`
//! answered), parsed once and strictly (a repeated key anywhere is refused: the policies
//! and the provider could read different copies), and checked against the API's shape.

use std::time::Duration;

use bytes::Bytes;
use kt_policy::config::SizeLimits;
use kt_policy::json::member;
use pingora::protocols::http::ServerSession as Session;
use serde_json::Value;

use super::Stop;
use crate::error::RequestError;
use crate::gateway::ClientApi;

/// A request body as the later stages use it.
pub(crate) struct Parsed {
    pub request: Value,
    pub stream: bool,
    /// The client asked for usage in its stream.
    pub include_usage: bool,
    /// The model asked for, once the input phase ran.
    pub model: Option<String>,
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

/// The whole body, refused early when its declared length or its content type is wrong.
pub(crate) async fn read(session: &mut Session, limits: &SizeLimits, deadline: Duration) -> Result<Bytes, Stop> {
    if header(session, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        session.write_continue_response().await?;
    }
    let max = limits.max_body_bytes;
    let declared = header(session, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(RequestError::TooLarge { limit: max }.into());
    }
    if let Some(ct) = header(session, "content-type")
        && !ct.to_ascii_lowercase().contains("json")
    {
        return Err(RequestError::UnsupportedMediaType(ct.to_owned()).into());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(max) as usize);
    let whole = async {
        while let Some(chunk) = session.read_request_body().await.map_err(body_error)? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > max {
                return Err(RequestError::TooLarge { limit: max }.into());
            }
        }
        Ok::<(), Stop>(())
    };
    match pingora::time::timeout(deadline, whole).await {
        Ok(r) => r?,
        Err(_) => return Err(RequestError::BodyTimeout(deadline.as_secs()).into()),
    }
    Ok(Bytes::from(body))
}

/// A body read that failed: the client's framing (400, e.g. a malformed chunk size) or its
/// connection (nothing to answer).
fn body_error(e: Box<pingora::Error>) -> Stop {
    use pingora::ErrorType::*;
    match e.etype() {
        ConnectionClosed | ReadError | WriteError => Stop::Io(e),
        ReadTimedout => Stop::Answer(RequestError::BodyTimeout(0)),
        _ => Stop::Answer(RequestError::BadFraming(
            "the request body is not valid HTTP/1.1 framing (chunk sizes or lengths)".into(),
        )),
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::InvalidBody {
        code,
        message: message.into(),
    }
}

/// Parses the body once, strictly, and checks the fields every later stage relies on.
pub(crate) fn parse(body: &[u8], client: ClientApi) -> Result<Parsed, RequestError> {
    let request = match kt_policy::json::parse_strict(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err(invalid("invalid_request", "request body must be a JSON object")),
        Err(e) => return Err(invalid(e.code(), e.to_string())),
    };
    let shape_error = match client {
        ClientApi::OpenAiChat | ClientApi::AnthropicMessages => member(&request, "messages")
            .and_then(Value::as_array)
            .is_none()
            .then_some("`messages` must be a list"),
        ClientApi::Responses | ClientApi::Embeddings => {
            (!matches!(member(&request, "input"), Some(Value::String(_) | Value::Array(_))))
                .then_some("`input` must be a string or a list")
        }
    };
    if let Some(msg) = shape_error {
        return Err(invalid("invalid_request", msg));
    }
    if member(&request, "model").is_some_and(|m| !m.is_string()) {
        return Err(invalid("invalid_request", "`model` must be a string"));
    }
    let stream = client != ClientApi::Embeddings && member(&request, "stream").and_then(Value::as_bool) == Some(true);
    let include_usage = member(&request, "stream_options")
        .and_then(|o| member(o, "include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    Ok(Parsed {
        request,
        stream,
        include_usage,
        model: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str, client: ClientApi) -> Option<&'static str> {
        parse(body.as_bytes(), client).err().map(|e| e.code())
    }

    #[test]
    fn bodies_are_parsed_strictly_and_shape_checked() {
        let chat = ClientApi::OpenAiChat;
        assert_eq!(code(r#"{"messages":[],"messages":[]}"#, chat), Some("duplicate_key"));
        assert_eq!(code(r#"{"messages":"#, chat), Some("invalid_json"));
        let not_utf8 = parse(b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}", chat);
        assert_eq!(not_utf8.as_ref().err().map(|e| e.code()), Some("invalid_json"));
        let body = not_utf8.err().map(|e| e.body(chat).to_string()).unwrap_or_default();
        assert!(body.contains("not UTF-8 (byte 39)"), "{body}");
        assert_eq!(code("[1]", chat), Some("invalid_request"));
        assert_eq!(code(r#"{"model":"m"}"#, chat), Some("invalid_request"));
        assert_eq!(code(r#"{"model":5,"messages":[]}"#, chat), Some("invalid_request"));
        assert_eq!(code(r#"{"input":{}}"#, ClientApi::Embeddings), Some("invalid_request"));
        let p = parse(
            br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
            chat,
        )
        .map_err(|e| e.code())
        .expect("valid");
        assert!(p.stream && p.include_usage);
        let e = parse(br#"{"input":"x","stream":true}"#, ClientApi::Embeddings).map_err(|e| e.code());
        assert!(e.is_ok_and(|p| !p.stream), "embeddings never stream");
    }
}
