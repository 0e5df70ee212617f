//! Responses the gateway writes itself: JSON bodies with the right framing, and the error
//! envelope `{"error": {"type", "message", "code"}}` for every non-policy failure.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;
use pingora::{Error, ErrorType, Result};
use serde_json::{Value, json};

/// Extra response headers (name, value).
pub type Headers = Vec<(HeaderName, String)>;

/// The names of the headers the gateway writes itself, built at compile time.
pub mod names {
    use http::HeaderName;

    pub use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const DECISION: HeaderName = HeaderName::from_static("x-keeptrusts-decision");
    pub const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-keeptrusts-overhead-ms");
    pub const TARGET: HeaderName = HeaderName::from_static("x-keeptrusts-target");
    pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-keeptrusts-attempts");
    pub const CACHE: HeaderName = HeaderName::from_static("x-keeptrusts-cache");
    pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
}

pub async fn json(session: &mut Session, status: u16, body: &Value, extra: &Headers) -> Result<()> {
    let bytes =
        Bytes::from(serde_json::to_vec(body).map_err(|e| Error::because(ErrorType::InternalError, "encode json", e))?);
    let extra = extra.iter().map(|(k, v)| (k.clone(), v.as_str()));
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
    extra: impl ExactSizeIterator<Item = (HeaderName, V)>,
) -> Result<()> {
    let fixed = [
        (http::header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len())),
    ];
    session.write_response_header(head(status, fixed, extra)?).await?;
    session.write_response_body(bytes, true).await?;
    Ok(())
}

/// An answer head: the `fixed` headers, then `extra` (a later header replaces an earlier
/// one of the same name). Built as `http` parts, so that the gateway's own header names
/// are neither parsed nor copied.
pub fn head<V: TryInto<HeaderValue>>(
    status: u16,
    fixed: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    extra: impl ExactSizeIterator<Item = (HeaderName, V)>,
) -> Result<Box<ResponseHeader>> {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status =
        http::StatusCode::from_u16(status).map_err(|e| Error::because(ErrorType::InternalError, "status", e))?;
    let headers = &mut parts.headers;
    headers.reserve(4 + extra.len());
    for (k, v) in fixed {
        headers.insert(k, v);
    }
    for (k, v) in extra {
        let v = v
            .try_into()
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, format!("invalid value for {k}")))?;
        headers.insert(k, v);
    }
    Ok(Box::new(ResponseHeader::from(parts)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_holds_its_fixed_and_extra_headers_the_last_of_a_name_winning() {
        let fixed = [(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        let extra = vec![
            (names::REQUEST_ID, "r1".to_owned()),
            (names::RETRY_AFTER, "3".to_owned()),
            (names::REQUEST_ID, "r2".to_owned()),
        ];
        let h = head(429, fixed, extra.into_iter()).expect("head");
        assert_eq!(h.status.as_u16(), 429);
        assert_eq!(
            h.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert_eq!(h.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"3"[..]));
        assert_eq!(h.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(h.headers.get("x-request-id").map(|v| v.as_bytes()), Some(&b"r2"[..]));
    }

    #[test]
    fn a_bad_header_value_or_status_is_an_error_not_a_panic() {
        let bad = vec![(names::TARGET, "line\r\nbreak".to_owned())];
        assert!(head(200, [], bad.into_iter()).is_err());
        assert!(head(1000, [], Headers::new().into_iter()).is_err());
    }
}
