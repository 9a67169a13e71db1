//! The HTTP plumbing of the API: JSON answers, errors that name their field, strict query and path
//! decoding, JSON bodies bounded in size and in time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Largest request body accepted; the API's bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send a body, so a slow one cannot hold a connection slot for long.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler returns.
pub type HttpResponse = Response<Full<Bytes>>;

/// A refused request: its status and the field at fault. The body is `{"error": message, "field": field}`,
/// and `message` starts with the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, field, message)
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, field, message)
    }

    pub fn response(&self) -> HttpResponse {
        json_response(
            self.status,
            &json!({"error": self.message, "field": self.field}),
        )
    }
}

/// `value` as a JSON answer.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"cannot encode the answer: {e}\"}}").into_bytes()
    });
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Decodes `%XX` escapes (and, in a query, `+` as a space) strictly: a `%` not followed by two hex
/// digits, or bytes that are not UTF-8, are errors rather than guessed at.
pub fn decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape at byte {i} of {text:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

/// The query's `name=value` pairs, decoded.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name =
                decode(name, true).map_err(|e| ApiError::bad("query", format!("query: {e}")))?;
            let value = decode(value, true)
                .map_err(|e| ApiError::bad(name.clone(), format!("{name}: {e}")))?;
            Ok((name, value))
        })
        .collect()
}

/// Reads a JSON object body of at most [`MAX_BODY_BYTES`], sent within [`BODY_READ_TIMEOUT`].
pub async fn json_body<B>(body: B) -> Result<Map<String, Value>, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body",
            format!("body: not received within {BODY_READ_TIMEOUT:?}"),
        )
    })?;
    let bytes = collected
        .map_err(|e| ApiError::bad("body", format!("body: cannot be read: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Err(ApiError::bad("body", "body: a JSON object is required"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad("body", "body: must be a JSON object")),
        Err(e) => Err(ApiError::bad("body", format!("body: not JSON: {e}"))),
    }
}

/// Refuses keys other than `known`, naming the first unknown one.
pub fn only_fields(map: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ApiError::bad(
            key.clone(),
            format!("{key}: unknown field; expected {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_strict() {
        assert_eq!(decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(decode("a+b%2Fc", false).unwrap(), "a+b/c");
        assert_eq!(decode("%5B%3A%3A1%5D%3A80", false).unwrap(), "[::1]:80");
        for bad in ["%", "%2", "%zz", "%ff"] {
            assert!(decode(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let pairs = query_pairs(Some("a=1&b&&c=x%20y")).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), String::new()),
                ("c".into(), "x y".into())
            ]
        );
        let err = query_pairs(Some("serviceName=%zz")).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.field.as_str()),
            (400, "serviceName")
        );
        assert!(err.message.starts_with("serviceName: bad escape"), "{err}");
        assert_eq!(query_pairs(Some("%=1")).unwrap_err().field, "query");
    }

    #[test]
    fn errors_are_json_with_their_field() {
        let response = ApiError::bad("weight", "weight: 1001 is outside 1..=1000").response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    /// A client that sent its head and then nothing.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_408() {
        let started = tokio::time::Instant::now();
        let err = json_body(Stalled).await.unwrap_err();
        assert_eq!((err.status.as_u16(), err.field.as_str()), (408, "body"));
        assert_eq!(started.elapsed(), BODY_READ_TIMEOUT);
        let ok = json_body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .await
            .unwrap();
        assert_eq!(ok["a"], 1);
    }

    #[test]
    fn unknown_fields_are_named() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"state":"drain","wieght":3}"#).unwrap();
        let err = only_fields(&map, &["state", "weight"]).unwrap_err();
        assert_eq!(err.field, "wieght");
    }
}
