//! Endpoint hand-off: the opt-in read-only HTTP API that runner dispatch asks
//! for an account's cache URL.
//!
//! `GET /v1/endpoints/{account}?platform=macos|linux` answers
//! `{"url", "instance", "confirmed_at"}` for the account's instance that serves
//! that platform (annotation `kura.tuist.dev/runner-platforms`, a comma list):
//!
//! - `http://<nodeAddress>:<nodePortCache>` for instances with `exposeNodePort`;
//! - `http://<instance>.<ns>.svc.cluster.local:4000` otherwise.
//!
//! `confirmed_at` is the instance's `status.lastReconciledAt`, which the
//! operator re-stamps on every reconcile (at least every 30 s). The answer is
//! `503` when the chain is incomplete (not `Ready`, no node address or node
//! port yet) or stale (confirmed more than 120 s ago), `404` when no instance
//! of the account serves the platform, `400` for an unknown platform.
//! Several matching instances: the `Ready` ones win, then the first by name.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::ResourceExt;
use kura_ca::time::format_description::well_known::Rfc3339;
use kura_ca::time::{Duration, OffsetDateTime};
use serde::{Deserialize, Serialize};

use crate::crd::{KuraInstance, RUNNER_PLATFORMS_ANNOTATION};
use crate::render::HTTP_PORT;
use crate::status::PHASE_READY;

/// An endpoint older than this is stale.
pub const STALE_AFTER: Duration = Duration::seconds(120);

/// A runner platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// macOS runners.
    Macos,
    /// Linux runners.
    Linux,
}

impl Platform {
    /// Parses `macos` / `linux` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "macos" => Some(Platform::Macos),
            "linux" => Some(Platform::Linux),
            _ => None,
        }
    }
}

/// The platforms an instance serves, from its annotation.
pub fn platforms_of(ki: &KuraInstance) -> Vec<Platform> {
    ki.annotations()
        .get(RUNNER_PLATFORMS_ANNOTATION)
        .map(|v| v.split(',').filter_map(Platform::parse).collect())
        .unwrap_or_default()
}

/// The hand-off answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Where runners reach the cache.
    pub url: String,
    /// The KuraInstance name.
    pub instance: String,
    /// When the operator last confirmed the chain (RFC 3339).
    pub confirmed_at: String,
}

/// Why no endpoint can be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// No instance of the account serves the platform (404).
    #[error("no instance of account {account:?} serves {platform}")]
    NotFound {
        /// The account.
        account: String,
        /// The platform.
        platform: String,
    },
    /// The chain is incomplete (503).
    #[error("instance {instance}: {reason}")]
    Incomplete {
        /// The instance.
        instance: String,
        /// What is missing.
        reason: String,
    },
    /// The endpoint was last confirmed too long ago (503).
    #[error("instance {instance}: endpoint last confirmed at {confirmed_at}, more than 120 s ago")]
    Stale {
        /// The instance.
        instance: String,
        /// Last confirmation.
        confirmed_at: String,
    },
}

impl EndpointError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            EndpointError::NotFound { .. } => StatusCode::NOT_FOUND,
            EndpointError::Incomplete { .. } | EndpointError::Stale { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Finds the endpoint of `account` for `platform` among `instances` at `now`.
pub fn endpoint_for(
    instances: &[Arc<KuraInstance>],
    account: &str,
    platform: Platform,
    now: OffsetDateTime,
) -> Result<Endpoint, EndpointError> {
    let mut matching: Vec<&Arc<KuraInstance>> = instances
        .iter()
        .filter(|ki| ki.spec.account_handle == account && platforms_of(ki).contains(&platform))
        .collect();
    let ready = |ki: &KuraInstance| {
        ki.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(PHASE_READY)
    };
    matching.sort_by_key(|ki| (!ready(ki), ki.name_any()));
    let Some(ki) = matching.first() else {
        return Err(EndpointError::NotFound {
            account: account.to_owned(),
            platform: format!("{platform:?}").to_lowercase(),
        });
    };
    let instance = ki.name_any();
    let incomplete = |reason: &str| EndpointError::Incomplete {
        instance: instance.clone(),
        reason: reason.to_owned(),
    };
    let status = ki.status.clone().unwrap_or_default();
    if !ready(ki) {
        return Err(incomplete("not Ready"));
    }
    let confirmed_at = status
        .last_reconciled_at
        .clone()
        .ok_or_else(|| incomplete("never reconciled"))?;
    let confirmed = OffsetDateTime::parse(&confirmed_at, &Rfc3339)
        .map_err(|_| incomplete("unreadable lastReconciledAt"))?;
    if now - confirmed > STALE_AFTER {
        return Err(EndpointError::Stale {
            instance,
            confirmed_at,
        });
    }
    let url = if ki.spec.exposes_node_port() {
        let address = status
            .node_address
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                incomplete("no nodeAddress yet (primary pod's node has no tuist.dev/pn-ipv4 label)")
            })?;
        let port = status
            .node_port_cache
            .filter(|p| *p > 0)
            .ok_or_else(|| incomplete("no nodePortCache yet"))?;
        format!("http://{address}:{port}")
    } else {
        let ns = ki.namespace().unwrap_or_default();
        format!("http://{instance}.{ns}.svc.cluster.local:{HTTP_PORT}")
    };
    Ok(Endpoint {
        url,
        instance,
        confirmed_at,
    })
}

/// Where the router gets instances and the time from.
#[derive(Clone)]
pub struct EndpointState {
    /// The current instances (e.g. the controller's reflector store).
    pub instances: Arc<dyn Fn() -> Vec<Arc<KuraInstance>> + Send + Sync>,
    /// The clock.
    pub clock: Arc<dyn Fn() -> OffsetDateTime + Send + Sync>,
}

#[derive(Deserialize)]
struct PlatformQuery {
    platform: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: message })).into_response()
}

async fn handoff(
    State(state): State<EndpointState>,
    Path(account): Path<String>,
    Query(q): Query<PlatformQuery>,
) -> Response {
    let Some(platform) = q.platform.as_deref().and_then(Platform::parse) else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameter platform must be macos or linux".to_owned(),
        );
    };
    match endpoint_for(&(state.instances)(), &account, platform, (state.clock)()) {
        Ok(ep) => axum::Json(ep).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

/// `/healthz`, `/readyz` and (when `handoff` is on) `/v1/endpoints/{account}`.
pub fn app(state: EndpointState, handoff_enabled: bool) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    if handoff_enabled {
        router = router.route("/v1/endpoints/{account}", get(handoff));
    }
    router.with_state(state)
}
