//! Responses the gateway writes itself: JSON bodies with the right framing, and the error
//! envelope `{"error": {"type", "message", "code"}}` for every non-policy failure.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;
use pingora::{Error, ErrorType, Result};
use serde_json::{Value, json};

/// Extra response headers (name, value).
pub type Headers = Vec<(&'static str, String)>;

pub async fn json(session: &mut Session, status: u16, body: &Value, extra: &Headers) -> Result<()> {
    let bytes =
        Bytes::from(serde_json::to_vec(body).map_err(|e| Error::because(ErrorType::InternalError, "encode json", e))?);
    let extra = extra.iter().map(|(k, v)| (*k, v.as_str()));
    write_json(session, status, bytes, extra).await
}

/// A JSON body already encoded. The header values move into the answer head uncopied.
pub async fn raw_json(session: &mut Session, status: u16, bytes: Bytes, extra: Headers) -> Result<()> {
    write_json(session, status, bytes, extra.into_iter()).await
}

async fn write_json<V: TryInto<HeaderValue>>(
    session: &mut Session,
    status: u16,
    bytes: Bytes,
    extra: impl ExactSizeIterator<Item = (&'static str, V)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build_no_case(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", bytes.len().to_string())?;
    for (k, v) in extra {
        resp.insert_header(k, v)?;
    }
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(bytes, true).await?;
    Ok(())
}

/// The error envelope for gateway-side failures.
pub fn error(kind: &str, code: &str, message: impl Into<String>) -> Value {
    json!({"error": {"type": kind, "message": message.into(), "code": code}})
}

/// A plain-text body (the Prometheus exposition).
pub async fn text(session: &mut Session, status: u16, content_type: &str, body: String) -> Result<()> {
    let bytes = Bytes::from(body);
    let mut resp = ResponseHeader::build_no_case(status, Some(2))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", bytes.len().to_string())?;
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(bytes, true).await?;
    Ok(())
}
