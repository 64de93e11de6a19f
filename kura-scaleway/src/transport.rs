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
