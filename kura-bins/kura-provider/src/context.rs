//! What the reconcilers are given: the Scaleway client, the Kubernetes side,
//! the SSH runner, configuration, a wall clock and metrics.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::cloudinit::KubernetesMinor;

/// Requeue intervals (from the reference provider).
pub mod requeue {
    use std::time::Duration;
    /// Owner Machine/Cluster missing, or infrastructure not ready.
    pub const GATE: Duration = Duration::from_secs(30);
    /// Node missing, not Ready, or `tuist.dev/pn-ipv4` not stamped yet.
    pub const NODE: Duration = Duration::from_secs(20);
    /// Elastic Metal delivery and OS install, option enabling, deletion.
    pub const ELASTIC_METAL: Duration = Duration::from_secs(60);
    /// Elastic Metal PN attachment and public IP.
    pub const ELASTIC_METAL_SHORT: Duration = Duration::from_secs(30);
    /// Instance power transitions and deletion steps.
    pub const INSTANCE: Duration = Duration::from_secs(10);
    /// A retryable API error (429, 5xx, lost response, Kubernetes API).
    pub const API_ERROR: Duration = Duration::from_secs(10);
    /// Periodic resync of a Ready machine.
    pub const READY: Duration = Duration::from_secs(300);
}

/// Provider configuration (parsed by the binary).
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Scaleway project of everything the provider creates.
    pub project_id: kura_scaleway::ProjectId,
    /// API server URL written into kubelet bootstrap kubeconfigs.
    pub api_server: String,
    /// Cluster CA (PEM) written into kubelet bootstrap kubeconfigs.
    pub cluster_ca_pem: String,
    /// Cluster DNS service IP (`clusterDNS`), when known.
    pub cluster_dns: Option<IpAddr>,
    /// Kubernetes minor when the CAPI Machine has no `spec.version`.
    pub default_kubernetes_minor: KubernetesMinor,
    /// First retry delay after a failure.
    pub failure_backoff_base: Duration,
    /// Upper bound of the retry delay after failures.
    pub failure_backoff_cap: Duration,
    /// Lifetime of a kubelet bootstrap token.
    pub bootstrap_token_ttl: Duration,
    /// SSH user on Elastic Metal servers.
    pub ssh_user: String,
}

impl ProviderConfig {
    /// Defaults for `project_id`, `api_server` and `cluster_ca_pem`.
    pub fn new(
        project_id: kura_scaleway::ProjectId,
        api_server: &str,
        cluster_ca_pem: &str,
    ) -> Self {
        Self {
            project_id,
            api_server: api_server.to_owned(),
            cluster_ca_pem: cluster_ca_pem.to_owned(),
            cluster_dns: None,
            default_kubernetes_minor: KubernetesMinor::new(34),
            failure_backoff_base: Duration::from_secs(30),
            failure_backoff_cap: Duration::from_secs(3600),
            bootstrap_token_ttl: Duration::from_secs(24 * 3600),
            ssh_user: "ubuntu".into(),
        }
    }

    /// Delay before retry `attempt` (1-based) after a failure:
    /// `base * 2^(attempt-1)`, capped.
    pub fn failure_backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(30))
            .unwrap_or(u32::MAX);
        self.failure_backoff_base
            .saturating_mul(factor)
            .min(self.failure_backoff_cap)
    }
}

/// Wall-clock time for status timestamps and retry deadlines.
pub trait WallClock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A wall clock that is `base` plus a monotonic [`kura_scaleway::transport::Clock`]
/// (e.g. the simulator's virtual clock).
#[derive(Clone, Debug)]
pub struct OffsetClock<C> {
    base: OffsetDateTime,
    clock: C,
}

impl<C: kura_scaleway::transport::Clock> OffsetClock<C> {
    /// `base + clock.now()`.
    pub fn new(base: OffsetDateTime, clock: C) -> Self {
        Self { base, clock }
    }
}

impl<C: kura_scaleway::transport::Clock> WallClock for OffsetClock<C> {
    fn now(&self) -> OffsetDateTime {
        self.base + self.clock.now()
    }
}

/// RFC 3339 (seconds precision) of `t`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses RFC 3339.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// SSH failures.
#[derive(Debug, thiserror::Error)]
#[error("ssh to {host}: {message}")]
pub struct SshError {
    /// Host.
    pub host: Ipv4Addr,
    /// What happened.
    pub message: String,
}

/// Runs a script over SSH (Elastic Metal has no user-data channel).
pub trait SshRunner: Send + Sync + 'static {
    /// Runs `script` with bash as `user` on `host`.
    fn run(
        &self,
        host: Ipv4Addr,
        user: &str,
        script: &str,
    ) -> impl Future<Output = Result<(), SshError>> + Send;
}

/// Runs scripts with the `ssh` binary (`ssh -i KEY user@host bash -s`, the
/// script on stdin).
#[derive(Clone, Debug)]
pub struct OpenSsh {
    /// Private key file.
    pub identity_file: std::path::PathBuf,
    /// Known-hosts file (host keys are accepted on first use and pinned).
    pub known_hosts: std::path::PathBuf,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl SshRunner for OpenSsh {
    async fn run(&self, host: Ipv4Addr, user: &str, script: &str) -> Result<(), SshError> {
        use tokio::io::AsyncWriteExt;
        let err = |message: String| SshError { host, message };
        let mut child = tokio::process::Command::new("ssh")
            .arg("-o")
            .arg("BatchMode=yes")
            .arg("-o")
            .arg("StrictHostKeyChecking=accept-new")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.connect_timeout.as_secs().max(1)
            ))
            .arg("-i")
            .arg(&self.identity_file)
            .arg(format!("{user}@{host}"))
            .arg("sudo bash -s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot start ssh: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(|e| err(format!("writing the script: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| err(format!("waiting for ssh: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            Err(err(format!("exit {}: {tail}", out.status)))
        }
    }
}

/// An [`SshRunner`] that records scripts instead of running them, and can
/// fail the next calls (tests).
#[derive(Clone, Debug, Default)]
pub struct RecordingSsh {
    inner: Arc<Mutex<SshLog>>,
}

type SshLog = (Vec<(Ipv4Addr, String)>, u32);

impl RecordingSsh {
    /// Scripts run so far, with their host.
    pub fn runs(&self) -> Vec<(Ipv4Addr, String)> {
        self.inner.lock().map(|g| g.0.clone()).unwrap_or_default()
    }
    /// The next `n` runs fail.
    pub fn fail_next(&self, n: u32) {
        if let Ok(mut g) = self.inner.lock() {
            g.1 = n;
        }
    }
}

impl SshRunner for RecordingSsh {
    async fn run(&self, host: Ipv4Addr, _user: &str, script: &str) -> Result<(), SshError> {
        let mut g = self.inner.lock().map_err(|_| SshError {
            host,
            message: "poisoned".into(),
        })?;
        if g.1 > 0 {
            g.1 -= 1;
            return Err(SshError {
                host,
                message: "injected: connection refused".into(),
            });
        }
        g.0.push((host, script.to_owned()));
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    kind: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    result: String,
}

/// Provider metrics: machines by phase, API errors by type, reconciliations.
#[derive(Clone, Debug)]
pub struct Metrics {
    machines: Family<PhaseLabels, Gauge>,
    api_errors: Family<ErrorLabels, Counter>,
    reconciles: Family<ReconcileLabels, Counter>,
    phases: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            machines: Family::default(),
            api_errors: Family::default(),
            reconciles: Family::default(),
            phases: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl Metrics {
    /// Registers the metrics in `registry` (prefix `kura_provider`).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("kura_provider");
        sub.register(
            "machines",
            "Machines by kind and phase",
            self.machines.clone(),
        );
        sub.register(
            "api_errors",
            "Scaleway and Kubernetes API errors by type",
            self.api_errors.clone(),
        );
        sub.register(
            "reconciliations",
            "Reconciliations by kind and result",
            self.reconciles.clone(),
        );
    }

    /// Records the phase of machine `key` of `kind` (`None`: the machine is gone).
    pub fn set_phase(&self, kind: &str, key: &str, phase: Option<&str>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        let k = (kind.to_owned(), key.to_owned());
        if let Some(old) = phases.remove(&k) {
            self.machines
                .get_or_create(&PhaseLabels {
                    kind: kind.to_owned(),
                    phase: old,
                })
                .dec();
        }
        if let Some(p) = phase {
            self.machines
                .get_or_create(&PhaseLabels {
                    kind: kind.to_owned(),
                    phase: p.to_owned(),
                })
                .inc();
            phases.insert(k, p.to_owned());
        }
    }

    /// Machines of `kind` in `phase`.
    pub fn machines_in_phase(&self, kind: &str, phase: &str) -> i64 {
        self.machines
            .get_or_create(&PhaseLabels {
                kind: kind.to_owned(),
                phase: phase.to_owned(),
            })
            .get()
    }

    /// Counts an API error of `error_type`.
    pub fn api_error(&self, error_type: &str) {
        self.api_errors
            .get_or_create(&ErrorLabels {
                error_type: error_type.to_owned(),
            })
            .inc();
    }

    /// API errors of `error_type` so far.
    pub fn api_errors_of(&self, error_type: &str) -> u64 {
        self.api_errors
            .get_or_create(&ErrorLabels {
                error_type: error_type.to_owned(),
            })
            .get()
    }

    /// Counts a reconciliation.
    pub fn reconciled(&self, kind: &str, result: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The error type label of a Scaleway error.
pub fn scaleway_error_type(e: &kura_scaleway::Error) -> &'static str {
    use kura_scaleway::Error as E;
    match e {
        E::InvalidArguments { .. } => "invalid_arguments",
        E::NotFound { .. } => "not_found",
        E::TransientState { .. } => "transient_state",
        E::PreconditionFailed { .. } => "precondition_failed",
        E::QuotasExceeded { .. } => "quotas_exceeded",
        E::PermissionsDenied { .. } => "permissions_denied",
        E::DeniedAuthentication { .. } => "denied_authentication",
        E::OutOfStock { .. } => "out_of_stock",
        E::TooManyRequests { .. } => "too_many_requests",
        E::Locked { .. } => "locked",
        E::ResourceExpired { .. } => "resource_expired",
        E::AlreadyExists { .. } => "already_exists",
        E::InvalidRequest { .. } => "invalid_request_error",
        E::Untyped { .. } => "untyped",
        E::Transport { .. } => "transport",
        E::Decode { .. } => "decode",
        E::Ambiguous { .. } => "ambiguous",
        E::WaitTimeout { .. } => "wait_timeout",
        E::UnexpectedResponse { .. } => "unexpected_response",
        _ => "other",
    }
}

/// Everything a reconciler needs.
pub struct Context<K, S> {
    /// Scaleway client.
    pub scw: kura_scaleway::Client,
    /// Kubernetes side.
    pub kube: K,
    /// SSH runner (Elastic Metal self-join).
    pub ssh: S,
    /// Configuration.
    pub config: ProviderConfig,
    /// Wall clock.
    pub clock: Arc<dyn WallClock>,
    /// Metrics.
    pub metrics: Metrics,
}

impl<K, S> std::fmt::Debug for Context<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What to do after a reconciliation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Reconcile again after this long.
    Requeue(Duration),
    /// Nothing to do until the object changes.
    Wait,
}
