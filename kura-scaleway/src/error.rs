//! The crate's error type and the decoding of Scaleway's error envelope.

use std::time::Duration;

use serde::Deserialize;

/// One `invalid_arguments` detail.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct ArgumentError {
    /// The argument, e.g. `commercial_type`.
    #[serde(default)]
    pub argument_name: String,
    /// `required`, `format`, `constraint` or `unknown`.
    #[serde(default)]
    pub reason: String,
    /// Human readable help.
    #[serde(default)]
    pub help_message: Option<String>,
}

/// One `quotas_exceeded` detail.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct QuotaDetail {
    /// The resource whose quota is exceeded.
    #[serde(default)]
    pub resource: String,
    /// The quota.
    #[serde(default)]
    pub quota: Option<u64>,
    /// The current usage.
    #[serde(default)]
    pub current: Option<u64>,
}

/// One `permissions_denied` detail.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct PermissionDetail {
    /// The denied action, e.g. `read`.
    #[serde(default)]
    pub action: String,
    /// The resource, e.g. `api_key`.
    #[serde(default)]
    pub resource: String,
}

/// Where a transport failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The connection could not be established.
    Connect,
    /// The request timed out or its response was lost (it may have been applied).
    Timeout,
    /// Any other I/O or protocol failure.
    Other,
}

/// A failure below HTTP: connection, TLS, timeout, lost response.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} transport error: {message}")]
pub struct TransportError {
    /// What went wrong.
    pub kind: TransportErrorKind,
    /// Description.
    pub message: String,
    /// Underlying error, when there is one.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// A new transport error without a source.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }
}

/// Every error this crate returns.
///
/// API errors carry the HTTP `status`, the `message` and the `X-Request-Id`
/// (`request_id`) to quote to Scaleway support.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `invalid_arguments` (400).
    #[error("invalid arguments ({status}): {message}")]
    InvalidArguments {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Per-argument details.
        details: Vec<ArgumentError>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `not_found` (404), the Instance legacy `unknown_resource`, or an untyped 404.
    #[error("not found ({status}): {message}")]
    NotFound {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Resource kind, e.g. `instance_server`.
        resource: Option<String>,
        /// Resource id.
        resource_id: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `transient_state` (409): the resource is busy.
    #[error("transient state ({status}): {message}")]
    TransientState {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Resource kind.
        resource: Option<String>,
        /// Resource id.
        resource_id: Option<String>,
        /// Its current state.
        current_state: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `precondition_failed` (412), e.g. `resource_still_in_use`.
    #[error("precondition failed ({status}): {message}")]
    PreconditionFailed {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// The precondition, e.g. `resource_still_in_use`.
        precondition: Option<String>,
        /// Help.
        help_message: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `quotas_exceeded` (403).
    #[error("quotas exceeded ({status}): {message}")]
    QuotasExceeded {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Which quotas.
        details: Vec<QuotaDetail>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `permissions_denied` (403).
    #[error("permissions denied ({status}): {message}")]
    PermissionsDenied {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Denied actions.
        details: Vec<PermissionDetail>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `denied_authentication` (401): bad or missing secret key.
    #[error("authentication denied ({status}): {message}")]
    DeniedAuthentication {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Authentication method, e.g. `api_key`.
        method: Option<String>,
        /// Reason, e.g. `not_found`.
        reason: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `out_of_stock`.
    #[error("out of stock ({status}): {message}")]
    OutOfStock {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Resource kind.
        resource: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// 429, with or without a `too_many_requests` body.
    #[error("too many requests ({status}): {message}")]
    TooManyRequests {
        /// HTTP status.
        status: u16,
        /// Message (the status line when the body was empty).
        message: String,
        /// From `Retry-After` or `reset_seconds`, when present.
        retry_after: Option<Duration>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `locked` (423).
    #[error("locked ({status}): {message}")]
    Locked {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Resource kind.
        resource: Option<String>,
        /// Resource id.
        resource_id: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `resource_expired` (410).
    #[error("resource expired ({status}): {message}")]
    ResourceExpired {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Resource kind.
        resource: Option<String>,
        /// Resource id.
        resource_id: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// `already_exists` (409).
    #[error("already exists ({status}): {message}")]
    AlreadyExists {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// Resource kind.
        resource: Option<String>,
        /// Resource id.
        resource_id: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// The Instance API's legacy `invalid_request_error`, e.g. "server should
    /// be running" when an action is not in `allowed_actions`.
    #[error("invalid request ({status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
        /// The optional `fields` map of validation errors.
        fields: Option<serde_json::Value>,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// An error body without `type` (typical of Elastic Metal:
    /// `{"message":"Server is not delivered"}`), or a non-JSON error body.
    #[error("API error ({status}): {message}")]
    Untyped {
        /// HTTP status.
        status: u16,
        /// Message, or the status line when there was none.
        message: String,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// An error `type` this crate does not know.
    #[error("API error {error_type} ({status}): {message}")]
    Other {
        /// HTTP status.
        status: u16,
        /// The `type` field.
        error_type: String,
        /// Message.
        message: String,
        /// The whole body.
        body: serde_json::Value,
        /// `X-Request-Id`.
        request_id: Option<String>,
    },
    /// The request could not be sent or its response was lost.
    #[error("transport error")]
    Transport {
        /// The failure.
        #[source]
        source: TransportError,
    },
    /// A 2xx response whose body did not decode.
    #[error("cannot decode response ({status})")]
    Decode {
        /// HTTP status.
        status: u16,
        /// `X-Request-Id`.
        request_id: Option<String>,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The caller's input was rejected before sending anything.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// A lookup by name matched more than one resource.
    #[error("{count} {kind} resources are named {name:?}")]
    Ambiguous {
        /// Resource kind.
        kind: &'static str,
        /// The name looked up.
        name: String,
        /// How many matched exactly.
        count: usize,
    },
    /// A waiter gave up.
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last_seen}")]
    WaitTimeout {
        /// What was awaited.
        what: String,
        /// Time waited.
        waited: Duration,
        /// The last observed state.
        last_seen: String,
    },
    /// The API answered something the operation cannot use (e.g. a VLAN of 0).
    #[error("unexpected response: {message}")]
    UnexpectedResponse {
        /// What is wrong.
        message: String,
    },
}

impl From<TransportError> for Error {
    fn from(source: TransportError) -> Self {
        Self::Transport { source }
    }
}

#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(rename = "type", default)]
    error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    current_state: Option<String>,
    #[serde(default)]
    precondition: Option<String>,
    #[serde(default)]
    help_message: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
    #[serde(default)]
    fields: Option<serde_json::Value>,
    #[serde(default)]
    reset_seconds: Option<u64>,
}

fn parse_details<T: for<'de> Deserialize<'de>>(v: &Option<serde_json::Value>) -> Vec<T> {
    match v {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|i| serde_json::from_value(i.clone()).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses a `Retry-After` value given in seconds.
pub(crate) fn parse_retry_after(v: Option<&http::HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    s.parse::<u64>().ok().map(Duration::from_secs)
}

impl Error {
    /// Decodes a non-2xx response into an error. Never fails: unknown shapes
    /// become [`Error::Other`] or [`Error::Untyped`].
    pub fn from_response(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after_header = parse_retry_after(headers.get(http::header::RETRY_AFTER));
        let code = status.as_u16();
        let status_line = || {
            format!("{} {}", code, status.canonical_reason().unwrap_or(""))
                .trim()
                .to_owned()
        };
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let env: Envelope = value
            .as_ref()
            .filter(|v| v.is_object())
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let message = env
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(status_line);
        let ty = env.error_type.clone().unwrap_or_default();
        match ty.as_str() {
            "invalid_arguments" => Self::InvalidArguments {
                status: code,
                message,
                details: parse_details(&env.details),
                request_id,
            },
            "not_found" | "unknown_resource" => Self::NotFound {
                status: code,
                message,
                resource: env.resource,
                resource_id: env.resource_id,
                request_id,
            },
            "transient_state" => Self::TransientState {
                status: code,
                message,
                resource: env.resource,
                resource_id: env.resource_id,
                current_state: env.current_state,
                request_id,
            },
            "precondition_failed" => Self::PreconditionFailed {
                status: code,
                message,
                precondition: env.precondition,
                help_message: env.help_message,
                request_id,
            },
            "quotas_exceeded" => Self::QuotasExceeded {
                status: code,
                message,
                details: parse_details(&env.details),
                request_id,
            },
            "permissions_denied" => Self::PermissionsDenied {
                status: code,
                message,
                details: parse_details(&env.details),
                request_id,
            },
            "denied_authentication" => Self::DeniedAuthentication {
                status: code,
                message,
                method: env.method,
                reason: env.reason,
                request_id,
            },
            "out_of_stock" => Self::OutOfStock {
                status: code,
                message,
                resource: env.resource,
                request_id,
            },
            "too_many_requests" => Self::TooManyRequests {
                status: code,
                message,
                retry_after: retry_after_header.or(env.reset_seconds.map(Duration::from_secs)),
                request_id,
            },
            "locked" => Self::Locked {
                status: code,
                message,
                resource: env.resource,
                resource_id: env.resource_id,
                request_id,
            },
            "resource_expired" => Self::ResourceExpired {
                status: code,
                message,
                resource: env.resource,
                resource_id: env.resource_id,
                request_id,
            },
            "already_exists" => Self::AlreadyExists {
                status: code,
                message,
                resource: env.resource,
                resource_id: env.resource_id,
                request_id,
            },
            "invalid_request_error" => Self::InvalidRequest {
                status: code,
                message,
                fields: env.fields,
                request_id,
            },
            "" => match code {
                429 => Self::TooManyRequests {
                    status: code,
                    message,
                    retry_after: retry_after_header,
                    request_id,
                },
                404 => Self::NotFound {
                    status: code,
                    message,
                    resource: None,
                    resource_id: None,
                    request_id,
                },
                _ => Self::Untyped {
                    status: code,
                    message,
                    request_id,
                },
            },
            other => Self::Other {
                status: code,
                error_type: other.to_owned(),
                message,
                body: value.unwrap_or(serde_json::Value::Null),
                request_id,
            },
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::InvalidArguments { status, .. }
            | Self::NotFound { status, .. }
            | Self::TransientState { status, .. }
            | Self::PreconditionFailed { status, .. }
            | Self::QuotasExceeded { status, .. }
            | Self::PermissionsDenied { status, .. }
            | Self::DeniedAuthentication { status, .. }
            | Self::OutOfStock { status, .. }
            | Self::TooManyRequests { status, .. }
            | Self::Locked { status, .. }
            | Self::ResourceExpired { status, .. }
            | Self::AlreadyExists { status, .. }
            | Self::InvalidRequest { status, .. }
            | Self::Untyped { status, .. }
            | Self::Other { status, .. }
            | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `X-Request-Id` of the failed response, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::InvalidArguments { request_id, .. }
            | Self::NotFound { request_id, .. }
            | Self::TransientState { request_id, .. }
            | Self::PreconditionFailed { request_id, .. }
            | Self::QuotasExceeded { request_id, .. }
            | Self::PermissionsDenied { request_id, .. }
            | Self::DeniedAuthentication { request_id, .. }
            | Self::OutOfStock { request_id, .. }
            | Self::TooManyRequests { request_id, .. }
            | Self::Locked { request_id, .. }
            | Self::ResourceExpired { request_id, .. }
            | Self::AlreadyExists { request_id, .. }
            | Self::InvalidRequest { request_id, .. }
            | Self::Untyped { request_id, .. }
            | Self::Other { request_id, .. }
            | Self::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The resource does not exist (typed `not_found`, legacy
    /// `unknown_resource`, or any 404 such as Elastic Metal's `{"message":"Not Found"}`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. }) || self.status() == Some(404)
    }

    /// Worth retrying later: 429, 5xx (except `out_of_stock`), and transport
    /// failures. A `transient_state` is reported by [`Error::is_transient_state`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::TooManyRequests { .. } | Self::Transport { .. } => true,
            Self::OutOfStock { .. } => false,
            other => other
                .status()
                .is_some_and(|s| s >= 500 && !matches!(other, Self::Decode { .. })),
        }
    }

    /// The resource is busy (`transient_state`): wait and try again.
    pub fn is_transient_state(&self) -> bool {
        matches!(self, Self::TransientState { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    fn decode(status: u16, body: &str) -> Error {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", http::HeaderValue::from_static("req-1"));
        Error::from_response(StatusCode::from_u16(status).unwrap(), &h, body.as_bytes())
    }

    #[test]
    fn decodes_recorded_envelopes() {
        let e = decode(
            401,
            r#"{"message":"authentication is denied","method":"api_key","reason":"not_found","type":"denied_authentication"}"#,
        );
        assert!(
            matches!(&e, Error::DeniedAuthentication { method: Some(m), reason: Some(r), .. } if m == "api_key" && r == "not_found")
        );
        assert_eq!(e.request_id(), Some("req-1"));
        let e = decode(
            403,
            r#"{"details":[{"action":"read","resource":"api_key"}],"message":"insufficient permissions","type":"permissions_denied"}"#,
        );
        assert!(
            matches!(&e, Error::PermissionsDenied { details, .. } if details[0].action == "read")
        );
        let e = decode(
            400,
            r#"{"details":[{"argument_name":"commercial_type","reason":"required","help_message":"x"}],"message":"invalid argument(s)","type":"invalid_arguments","extra":1}"#,
        );
        assert!(
            matches!(&e, Error::InvalidArguments { details, .. } if details[0].argument_name == "commercial_type")
        );
        let e = decode(
            404,
            r#"{"type":"not_found","resource":"instance_server","resource_id":"x","message":"resource is not found"}"#,
        );
        assert!(e.is_not_found());
        let e = decode(
            404,
            r#"{"type":"unknown_resource","message":"\"abc\" not found"}"#,
        );
        assert!(e.is_not_found());
        let e = decode(
            400,
            r#"{"type":"invalid_request_error","message":"server should be running"}"#,
        );
        assert!(
            matches!(&e, Error::InvalidRequest { message, .. } if message == "server should be running")
        );
        assert!(!e.is_retryable());
        let e = decode(
            412,
            r#"{"type":"precondition_failed","precondition":"resource_still_in_use","message":"m"}"#,
        );
        assert!(
            matches!(&e, Error::PreconditionFailed { precondition: Some(p), .. } if p == "resource_still_in_use")
        );
        let e = decode(
            409,
            r#"{"type":"transient_state","resource":"instance_server","current_state":"starting","message":"m"}"#,
        );
        assert!(e.is_transient_state());
        let e = decode(
            403,
            r#"{"type":"quotas_exceeded","details":[{"resource":"instances","quota":10,"current":10}],"message":"m"}"#,
        );
        assert!(
            matches!(&e, Error::QuotasExceeded { details, .. } if details[0].quota == Some(10))
        );
    }

    #[test]
    fn untyped_and_empty_bodies_fall_back_to_status() {
        let e = decode(404, r#"{"message":"Not Found"}"#);
        assert!(e.is_not_found());
        let e = decode(400, r#"{"message":"Server is not delivered"}"#);
        assert!(
            matches!(&e, Error::Untyped { message, status: 400, .. } if message == "Server is not delivered")
        );
        let e = decode(
            503,
            r#"{"message":"cloud-init is not supported on this offer"}"#,
        );
        assert!(e.is_retryable());
        let e = decode(429, "");
        assert!(
            matches!(&e, Error::TooManyRequests { message, retry_after: None, .. } if message == "429 Too Many Requests")
        );
        assert!(e.is_retryable());
        let e = decode(502, "<html>bad gateway</html>");
        assert!(matches!(&e, Error::Untyped { message, .. } if message == "502 Bad Gateway"));
        let e = decode(418, r#"{"type":"teapot","message":"short and stout"}"#);
        assert!(matches!(&e, Error::Other { error_type, .. } if error_type == "teapot"));
        let e = decode(
            503,
            r#"{"type":"out_of_stock","resource":"baremetal_offer","message":"m"}"#,
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn retry_after_header_and_reset_seconds() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        let e = Error::from_response(StatusCode::TOO_MANY_REQUESTS, &h, b"");
        assert!(
            matches!(e, Error::TooManyRequests { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        let e = decode(
            429,
            r#"{"type":"too_many_requests","message":"slow down","reset_seconds":3}"#,
        );
        assert!(
            matches!(e, Error::TooManyRequests { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
    }
}
