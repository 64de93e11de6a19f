//! API errors and the one place where store errors become HTTP status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// How an error body is rendered: clients differ in what they parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `{"message": "..."}` (Kura node API, Gradle, Bazel, ccache).
    Json,
    /// `text/plain` (Nx treats a non-text 401 as a misconfiguration).
    Text,
    /// `{"error": {"code": ..., "message": ...}}` (Turborepo).
    Turbo,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Human-readable reason.
    pub message: String,
    /// Body format.
    pub style: Style,
    /// Extra `Retry-After` seconds (503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with the given status and message, JSON-styled.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            style: Style::Json,
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }

    /// Renders with another body style.
    pub fn styled(mut self, style: Style) -> Self {
        self.style = style;
        self
    }

    /// Maps a store error to a status code (the only such mapping).
    pub fn from_store(err: &kura_store::Error) -> Self {
        use kura_store::Error as E;
        let status = match err {
            E::InvalidKey { .. } | E::InvalidDigest { .. } => StatusCode::BAD_REQUEST,
            // A body that does not match its declared length or digest.
            E::LengthMismatch { .. } | E::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            // An action-cache entry naming CAS blobs that are not stored.
            E::MissingReference { .. } => StatusCode::CONFLICT,
            E::InvalidRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            E::Body { .. } => StatusCode::BAD_REQUEST,
            E::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut e = Self::new(status, err.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            e.retry_after = Some(1);
        }
        e
    }
}

impl From<kura_store::Error> for ApiError {
    fn from(err: kura_store::Error) -> Self {
        Self::from_store(&err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (content_type, body) = match self.style {
            Style::Json => (
                "application/json",
                serde_json::json!({ "message": self.message }).to_string(),
            ),
            Style::Text => ("text/plain; charset=utf-8", self.message),
            Style::Turbo => {
                let code = match self.status {
                    StatusCode::FORBIDDEN => "remote_caching_disabled",
                    StatusCode::UNAUTHORIZED => "unauthorized",
                    StatusCode::NOT_FOUND => "not_found",
                    StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                    s if s.is_client_error() => "bad_request",
                    _ => "internal_error",
                };
                (
                    "application/json",
                    serde_json::json!({ "error": { "code": code, "message": self.message } })
                        .to_string(),
                )
            }
        };
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
