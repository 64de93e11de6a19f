//! The injected transport and time source.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::error::TransportError;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one HTTP request and returns its response, whatever the status.
///
/// Implementations: [`HttpTransport`] (reqwest + rustls), the simulator's
/// in-process transport (`sim` feature), or a recorded transport in tests.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request`. Non-2xx statuses are responses, not errors.
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>>;
}

/// The time source used by retries and waiters.
///
/// [`TokioClock`] uses real time; the simulator provides one that advances its
/// virtual clock, so a two-hour wait takes no real time in tests.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since an arbitrary origin.
    fn now(&self) -> Duration;
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// Real time, via tokio.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: std::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A transport that answers from a script and records what it was sent, for
/// tests at the transport boundary (recorded exchanges, exact request checks).
///
/// Responses are returned in order; when the script is exhausted it answers
/// 500 with an explanatory body.
#[derive(Clone, Default)]
pub struct ScriptedTransport {
    inner: std::sync::Arc<std::sync::Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    responses: std::collections::VecDeque<Result<http::Response<Bytes>, TransportError>>,
    requests: Vec<http::Request<Bytes>>,
}

impl std::fmt::Debug for ScriptedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedTransport").finish_non_exhaustive()
    }
}

impl ScriptedTransport {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a response with `status`, `headers` and `body`.
    pub fn push(&self, status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> &Self {
        let mut builder = http::Response::builder().status(status);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let resp = builder.body(body.into()).map_err(|e| {
            TransportError::new(
                crate::TransportErrorKind::Other,
                format!("bad scripted response: {e}"),
            )
        });
        self.lock().responses.push_back(resp);
        self
    }

    /// Queues a JSON response.
    pub fn push_json(&self, status: u16, body: &str) -> &Self {
        self.push(
            status,
            &[("content-type", "application/json")],
            body.to_owned(),
        )
    }

    /// Queues a transport failure.
    pub fn push_error(&self, error: TransportError) -> &Self {
        self.lock().responses.push_back(Err(error));
        self
    }

    /// The requests sent so far.
    pub fn requests(&self) -> Vec<http::Request<Bytes>> {
        self.lock().requests.clone()
    }

    /// How many scripted responses are left.
    pub fn remaining(&self) -> usize {
        self.lock().responses.len()
    }
}

impl Transport for ScriptedTransport {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        let next = {
            let mut script = self.lock();
            script.requests.push(request);
            script.responses.pop_front()
        };
        Box::pin(async move {
            match next {
                Some(r) => r,
                None => {
                    let mut resp = http::Response::new(Bytes::from_static(
                        br#"{"message":"ScriptedTransport: no response left"}"#,
                    ));
                    *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok(resp)
                }
            }
        })
    }
}

#[cfg(feature = "http-transport")]
pub use http_impl::HttpTransport;

#[cfg(feature = "http-transport")]
mod http_impl {
    use super::*;
    use crate::error::TransportErrorKind;

    /// HTTPS transport over reqwest with rustls (ring provider, webpki roots).
    #[derive(Clone, Debug)]
    pub struct HttpTransport {
        client: reqwest::Client,
    }

    impl HttpTransport {
        /// A transport with a per-request `timeout`.
        pub fn new(timeout: Duration) -> Result<Self, TransportError> {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(10).min(timeout))
                .build()
                .map_err(|e| TransportError {
                    kind: TransportErrorKind::Other,
                    message: "cannot build HTTP client".into(),
                    source: Some(Box::new(e)),
                })?;
            Ok(Self { client })
        }
        /// Uses an existing reqwest client.
        pub fn with_client(client: reqwest::Client) -> Self {
            Self { client }
        }
    }

    fn classify(e: reqwest::Error) -> TransportError {
        let kind = if e.is_timeout() {
            TransportErrorKind::Timeout
        } else if e.is_connect() {
            TransportErrorKind::Connect
        } else {
            TransportErrorKind::Other
        };
        TransportError {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    impl Transport for HttpTransport {
        fn send(
            &self,
            request: http::Request<Bytes>,
        ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
            Box::pin(async move {
                let req = reqwest::Request::try_from(request).map_err(classify)?;
                let resp = self.client.execute(req).await.map_err(classify)?;
                let mut builder = http::Response::builder().status(resp.status());
                for (k, v) in resp.headers() {
                    builder = builder.header(k, v);
                }
                let body = resp.bytes().await.map_err(classify)?;
                builder.body(body).map_err(|e| TransportError {
                    kind: TransportErrorKind::Other,
                    message: e.to_string(),
                    source: None,
                })
            })
        }
    }
}
