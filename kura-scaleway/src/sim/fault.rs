//! Fault injection.

use std::time::Duration;

use bytes::Bytes;
use http::Method;

/// What a fault does to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Answer `status` with `body` (JSON when it parses as such) without
    /// applying the request.
    Respond {
        /// Status.
        status: u16,
        /// Body.
        body: Bytes,
    },
    /// Apply the request, then lose the response (the client sees a timeout).
    DropResponse,
    /// Answer 429 without applying the request.
    RateLimit {
        /// Send a `too_many_requests` body (else an empty body).
        with_body: bool,
        /// `Retry-After` seconds, if any.
        retry_after: Option<u64>,
    },
    /// Apply the request and answer after a delay on the simulator clock.
    Latency(Duration),
}

/// A fault: the `nth` request (1-based) matching `method` and whose path
/// contains `path_contains` gets `action`, and so do the `times - 1`
/// following matching requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub(super) method: Option<Method>,
    pub(super) path_contains: String,
    pub(super) nth: u64,
    pub(super) times: u64,
    pub(super) action: FaultAction,
}

impl Fault {
    /// Matches requests with `method` whose path contains `path_contains`.
    /// The default action answers 503 `{"message":"Service Unavailable"}`.
    pub fn on(method: Method, path_contains: &str) -> Self {
        Self {
            method: Some(method),
            path_contains: path_contains.to_owned(),
            nth: 1,
            times: 1,
            action: FaultAction::Respond {
                status: 503,
                body: Bytes::from_static(br#"{"message":"Service Unavailable"}"#),
            },
        }
    }
    /// Matches any method.
    pub fn on_any(path_contains: &str) -> Self {
        Self {
            method: None,
            ..Self::on(Method::GET, path_contains)
        }
    }
    /// Matches the `n`th request (1-based) the simulator sees from now on,
    /// whatever its method and path: a fault sweep injects at "call index
    /// `n`" with `Fault::at_call(n)` plus an action (the default answers 503,
    /// `.drop_response()` applies the call and loses the answer).
    pub fn at_call(n: u64) -> Self {
        Self::on_any("").nth(n)
    }
    /// Fires first on the `n`th matching request (1-based, default 1).
    pub fn nth(mut self, n: u64) -> Self {
        self.nth = n.max(1);
        self
    }
    /// Fires on `times` consecutive matching requests (default 1; `u64::MAX` = always).
    pub fn times(mut self, times: u64) -> Self {
        self.times = times;
        self
    }
    /// Answers `status` with `body`.
    pub fn respond(mut self, status: u16, body: &str) -> Self {
        self.action = FaultAction::Respond {
            status,
            body: Bytes::from(body.to_owned()),
        };
        self
    }
    /// Applies the request, then loses the response.
    pub fn drop_response(mut self) -> Self {
        self.action = FaultAction::DropResponse;
        self
    }
    /// Answers 429 with an empty body and no `Retry-After` (as reported in the wild).
    pub fn rate_limit(mut self) -> Self {
        self.action = FaultAction::RateLimit {
            with_body: false,
            retry_after: None,
        };
        self
    }
    /// Answers 429 with a `too_many_requests` body and optionally `Retry-After`.
    pub fn rate_limit_with_body(mut self, retry_after: Option<u64>) -> Self {
        self.action = FaultAction::RateLimit {
            with_body: true,
            retry_after,
        };
        self
    }
    /// Adds latency.
    pub fn latency(mut self, d: Duration) -> Self {
        self.action = FaultAction::Latency(d);
        self
    }
}

/// Identifies an injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultId(usize);

struct Entry {
    fault: Fault,
    seen: u64,
    fired: u64,
}

#[derive(Default)]
pub(super) struct Faults {
    entries: Vec<Entry>,
}

impl Faults {
    pub(super) fn add(&mut self, fault: Fault) -> FaultId {
        self.entries.push(Entry {
            fault,
            seen: 0,
            fired: 0,
        });
        FaultId(self.entries.len() - 1)
    }
    pub(super) fn fired(&self, id: FaultId) -> u64 {
        self.entries.get(id.0).map_or(0, |e| e.fired)
    }
    pub(super) fn clear(&mut self) {
        for e in &mut self.entries {
            e.fault.times = 0;
        }
    }
    /// Counts the request against every matching fault; returns the action of
    /// the first one due.
    pub(super) fn check(&mut self, method: &Method, path: &str) -> Option<FaultAction> {
        let mut action = None;
        for e in &mut self.entries {
            let m = e.fault.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&e.fault.path_contains);
            if !m {
                continue;
            }
            e.seen += 1;
            if action.is_none() && e.seen >= e.fault.nth && e.fired < e.fault.times {
                e.fired += 1;
                action = Some(e.fault.action.clone());
            }
        }
        action
    }
}
