//! The client: authentication, retries, pagination and waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::request::{ApiRequest, DEFAULT_BASE_URL, SecretKey};
use crate::transport::{BoxFuture, Clock, TokioClock, Transport};
use crate::{Error, ProjectId};

/// Retry behaviour for 429, 5xx and transport failures.
///
/// Idempotent requests (GET, PUT, PATCH, DELETE) are retried on all three.
/// Non-idempotent requests (POST: creates, actions, orders) are retried only
/// on 429, which Scaleway answers before doing anything; a 5xx or a lost
/// response on a create is returned to the caller, who must look the resource
/// up by name or tag before creating again (see the crate docs).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retries).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of one delay (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Retry 429 on non-idempotent requests too.
    pub retry_rate_limited_posts: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            retry_rate_limited_posts: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }
    /// The delay before retry number `attempt` (0-based), with "equal jitter":
    /// half the exponential delay plus a random part of the other half.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_backoff);
        let half = capped / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if half_nanos == 0 {
            0
        } else {
            random % (half_nanos + 1)
        };
        half + Duration::from_nanos(jitter)
    }
}

/// How long and how often a waiter polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitOptions {
    /// Delay between polls.
    pub interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl WaitOptions {
    /// Instance server and NIC waiters: every 5 s for 5 min.
    pub const INSTANCE: Self = Self {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(300),
    };
    /// Elastic Metal waiters: every 15 s for 2 h.
    pub const BAREMETAL: Self = Self {
        interval: Duration::from_secs(15),
        timeout: Duration::from_secs(7200),
    };
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The total across pages (`X-Total-Count` or `total_count`), when given.
    pub total_count: Option<u64>,
}

type FetchPage<'a, T> = Box<dyn FnMut(u32) -> BoxFuture<'a, Result<Page<T>, Error>> + Send + 'a>;

/// Streams the pages of a list, one request per [`Paginator::next_page`].
///
/// Stops at an empty page, or once `total_count` items were seen.
pub struct Paginator<'a, T> {
    fetch: FetchPage<'a, T>,
    page: u32,
    seen: u64,
    done: bool,
}

impl<T> std::fmt::Debug for Paginator<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paginator")
            .field("page", &self.page)
            .field("seen", &self.seen)
            .finish()
    }
}

impl<'a, T: Send + 'a> Paginator<'a, T> {
    /// A paginator calling `fetch(page)` with 1-based page numbers.
    pub fn new(
        fetch: impl FnMut(u32) -> BoxFuture<'a, Result<Page<T>, Error>> + Send + 'a,
    ) -> Self {
        Self {
            fetch: Box::new(fetch),
            page: 1,
            seen: 0,
            done: false,
        }
    }

    /// The next page, or `None` when all were read.
    pub async fn next_page(&mut self) -> Option<Result<Vec<T>, Error>> {
        if self.done {
            return None;
        }
        let page = match (self.fetch)(self.page).await {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.page = self.page.saturating_add(1);
        self.seen += page.items.len() as u64;
        if page.items.is_empty() {
            self.done = true;
            return None;
        }
        if page.total_count.is_some_and(|t| self.seen >= t) || self.page > 100_000 {
            self.done = true;
        }
        Some(Ok(page.items))
    }

    /// Reads every page.
    pub async fn collect_all(mut self) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await {
            all.extend(page?);
        }
        Ok(all)
    }
}

/// A successful response.
#[derive(Clone, Debug)]
pub struct ApiResponse {
    /// Status (2xx).
    pub status: http::StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl ApiResponse {
    /// The `X-Request-Id`.
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    }
    /// The `X-Total-Count` header.
    pub fn total_count_header(&self) -> Option<u64> {
        self.headers
            .get("x-total-count")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    /// Decodes the JSON body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            status: self.status.as_u16(),
            request_id: self.request_id().map(str::to_owned),
            source,
        })
    }
}

struct Inner {
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    base_url: String,
    key: SecretKey,
    retry: RetryPolicy,
    default_project: Option<ProjectId>,
    rng: Mutex<u64>,
}

/// A Scaleway API client. Cheap to clone.
///
/// Methods are grouped per API: [`Client::instance`], [`Client::marketplace`],
/// [`Client::ipam`], [`Client::vpc`], [`Client::baremetal`], [`Client::block`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    key: SecretKey,
    base_url: String,
    transport: Option<Arc<dyn Transport>>,
    clock: Option<Arc<dyn Clock>>,
    retry: RetryPolicy,
    default_project: Option<ProjectId>,
    seed: Option<u64>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Sets the endpoint (default `https://api.scaleway.com`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }
    /// Uses `transport` instead of the default HTTPS transport.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }
    /// Uses an already shared transport.
    pub fn shared_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }
    /// Uses `clock` for retry delays and waiters (default: real time).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }
    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// The project used by helpers when none is given.
    pub fn default_project(mut self, project: impl Into<ProjectId>) -> Self {
        self.default_project = Some(project.into());
        self
    }
    /// Seeds the jitter generator (deterministic tests).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Builds the client.
    pub fn build(mut self) -> Result<Client, Error> {
        let transport = match self.transport.take() {
            Some(t) => t,
            None => default_transport()?,
        };
        Ok(self.finish(transport))
    }

    /// Builds the client on `transport` (infallible).
    pub(crate) fn finish(self, transport: Arc<dyn Transport>) -> Client {
        let seed = self.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5ca1e);
            h.finish()
        });
        Client {
            inner: Arc::new(Inner {
                transport,
                clock: self
                    .clock
                    .unwrap_or_else(|| Arc::new(TokioClock::default())),
                base_url: self.base_url,
                key: self.key,
                retry: self.retry,
                default_project: self.default_project,
                rng: Mutex::new(seed | 1),
            }),
        }
    }
}

#[cfg(feature = "http-transport")]
fn default_transport() -> Result<Arc<dyn Transport>, Error> {
    Ok(Arc::new(crate::transport::HttpTransport::new(
        Duration::from_secs(60),
    )?))
}

#[cfg(not(feature = "http-transport"))]
fn default_transport() -> Result<Arc<dyn Transport>, Error> {
    Err(Error::InvalidInput {
        message: "no transport given and the `http-transport` feature is disabled".into(),
    })
}

fn should_retry(err: &Error, idempotent: bool, policy: &RetryPolicy) -> bool {
    match err {
        Error::TooManyRequests { .. } => idempotent || policy.retry_rate_limited_posts,
        Error::OutOfStock { .. } => false,
        Error::Transport { .. } => idempotent,
        other => idempotent && other.status().is_some_and(|s| s >= 500),
    }
}

impl Client {
    /// Starts building a client authenticated with `secret_key`.
    pub fn builder(secret_key: SecretKey) -> ClientBuilder {
        ClientBuilder {
            key: secret_key,
            base_url: DEFAULT_BASE_URL.to_owned(),
            transport: None,
            clock: None,
            retry: RetryPolicy::default(),
            default_project: None,
            seed: None,
        }
    }

    /// The default project given to the builder.
    pub fn default_project(&self) -> Option<&ProjectId> {
        self.inner.default_project.as_ref()
    }

    /// The clock used for retries and waiters.
    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    fn next_random(&self) -> u64 {
        let mut s = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Sends `request`, retrying per the [`RetryPolicy`]; non-2xx become [`Error`]s.
    pub async fn execute(&self, request: &ApiRequest) -> Result<ApiResponse, Error> {
        let policy = &self.inner.retry;
        let mut attempt = 0u32;
        loop {
            let http_req = request.to_http(&self.inner.base_url, &self.inner.key)?;
            let err = match self.inner.transport.send(http_req).await {
                Ok(resp) if resp.status().is_success() => {
                    let (parts, body) = resp.into_parts();
                    return Ok(ApiResponse {
                        status: parts.status,
                        headers: parts.headers,
                        body,
                    });
                }
                Ok(resp) => Error::from_response(resp.status(), resp.headers(), resp.body()),
                Err(t) => Error::from(t),
            };
            if attempt >= policy.max_retries || !should_retry(&err, request.idempotent, policy) {
                return Err(err);
            }
            let mut delay = policy.backoff(attempt, self.next_random());
            if let Error::TooManyRequests {
                retry_after: Some(ra),
                ..
            } = &err
            {
                delay = (*ra).min(policy.max_backoff);
            }
            self.inner.clock.sleep(delay).await;
            attempt += 1;
        }
    }

    /// Sends `request` and decodes the JSON body.
    pub async fn execute_json<T: DeserializeOwned>(
        &self,
        request: &ApiRequest,
    ) -> Result<T, Error> {
        self.execute(request).await?.json()
    }

    /// Polls `probe` every `opts.interval` until it returns `Some`, or fails
    /// with [`Error::WaitTimeout`].
    pub async fn wait_until<T, F>(
        &self,
        what: &str,
        opts: WaitOptions,
        mut probe: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> BoxFuture<'static, Result<(Option<T>, String), Error>>,
    {
        let clock = &self.inner.clock;
        let start = clock.now();
        loop {
            let (done, seen) = probe().await?;
            if let Some(v) = done {
                return Ok(v);
            }
            let waited = clock.now().saturating_sub(start);
            if waited >= opts.timeout {
                return Err(Error::WaitTimeout {
                    what: what.to_owned(),
                    waited,
                    last_seen: seen,
                });
            }
            clock.sleep(opts.interval.min(opts.timeout - waited)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        for attempt in 0..40 {
            for r in [0, 1, u64::MAX, 12345] {
                let d = p.backoff(attempt, r);
                assert!(d <= p.max_backoff, "{attempt} {d:?}");
                let exp = p
                    .initial_backoff
                    .saturating_mul(1 << attempt.min(20))
                    .min(p.max_backoff);
                assert!(d >= exp / 2);
            }
        }
        assert!(p.backoff(3, 0) > p.backoff(0, u64::MAX));
    }
}
