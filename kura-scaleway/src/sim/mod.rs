//! A faithful simulator of the Scaleway APIs this crate covers (`sim` feature).
//!
//! * [`Simulator::handle`] answers an `http::Request` in process;
//!   [`Simulator::client`] returns a [`Client`] wired to it (no sockets) and
//!   [`Simulator::serve`] exposes it over HTTP on loopback.
//! * State transitions (power-on, Elastic Metal delivery, install, option
//!   enabling, private network attachment…) run on a **virtual clock** that
//!   tests advance with [`Simulator::advance`], or on real time scaled by a
//!   speed factor ([`ClockMode::Real`]). A client built by
//!   [`Simulator::client`] sleeps by advancing the virtual clock, so waiters
//!   finish instantly and deterministically.
//! * [`Fault`]s fail the Nth matching request, drop a response after applying
//!   the change, answer 429 with or without a body, or add latency.
//! * The [`Ledger`] records every billable resource with its creation and
//!   deletion times.
//!
//! The behaviours, and the choices made where the real API's behaviour is
//! unknown, are listed in `docs/scaleway.md`.
//!
//! # Example: a lost response must not cost a second server
//!
//! ```
//! use kura_scaleway::http::Method;
//! use kura_scaleway::sim::{BillableKind, Fault, Simulator};
//! use kura_scaleway::{CreateServerRequest, WaitOptions, Zone};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let sim = Simulator::with_token("t");
//! let client = sim.client();
//! let zone = Zone::new("fr-par-1")?;
//! let image = client
//!     .marketplace()
//!     .find_local_image(&zone, "ubuntu_noble", &"PRO2-S".into(), "instance_sbs")
//!     .await?;
//! let req = CreateServerRequest::new("machine-a", "PRO2-S", image.id, sim.project_id());
//!
//! // The create is applied, but its response never arrives.
//! sim.inject(Fault::on(Method::POST, "/servers").drop_response());
//! assert!(client.instance().create_server(&zone, &req).await.is_err());
//!
//! // A reconciler looks up by name before creating again.
//! let server = match client.instance().find_server_by_name(&zone, "machine-a", None).await? {
//!     Some(server) => server,
//!     None => client.instance().create_server(&zone, &req).await?,
//! };
//!
//! // Power on and delete; a 40-minute wait would take no real time either.
//! client.instance().ensure_powered_on(&zone, &server.id).await?;
//! client.instance().delete_server_and_wait(&zone, &server.id, WaitOptions::INSTANCE).await?;
//!
//! let ledger = sim.ledger();
//! assert_eq!(ledger.max_concurrent(BillableKind::InstanceServer, "machine-a"), 1);
//! assert!(ledger.live_of(BillableKind::InstanceServer).is_empty());
//! // The SBS root volume outlives its server and is still billed.
//! assert_eq!(ledger.live_of(BillableKind::Volume).len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod fault;
mod http_server;
mod ledger;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{TransportError, TransportErrorKind};
use crate::transport::{BoxFuture, Clock, Transport};
use crate::{Client, RetryPolicy, SecretKey};

pub use clock::ClockMode;
pub use fault::{Fault, FaultAction, FaultId};
pub use http_server::SimServer;
pub use ledger::{BillableKind, Ledger, LedgerEntry};

/// How long simulated operations take (on the simulator's clock).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durations {
    /// Instance `poweron`: starting → running.
    pub poweron: Duration,
    /// Instance `poweroff`: stopping → stopped.
    pub poweroff: Duration,
    /// Instance `stop_in_place`.
    pub stop_in_place: Duration,
    /// Instance `reboot`.
    pub reboot: Duration,
    /// Instance `terminate`: stopping → gone.
    pub terminate: Duration,
    /// Private NIC: syncing → available.
    pub nic_sync: Duration,
    /// Elastic Metal order: delivering → ready.
    pub em_delivery: Duration,
    /// Elastic Metal install: installing → completed.
    pub em_install: Duration,
    /// Elastic Metal option: enabling → enable (and disabling → removed).
    pub em_option: Duration,
    /// Elastic Metal private network: attaching → attached (and detaching → removed).
    pub em_pn: Duration,
    /// Elastic Metal start/stop/reboot.
    pub em_power: Duration,
    /// Elastic Metal delete: deleting → gone.
    pub em_delete: Duration,
}

impl Default for Durations {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            poweron: s(6),
            poweroff: s(50),
            stop_in_place: s(20),
            reboot: s(30),
            terminate: s(30),
            nic_sync: s(3),
            em_delivery: s(10 * 60),
            em_install: s(40 * 60),
            em_option: s(5 * 60),
            em_pn: s(2 * 60),
            em_power: s(3 * 60),
            em_delete: s(60),
        }
    }
}

/// How `DELETE /servers/{id}` refuses a server that is not stopped (reports
/// disagree, see the reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeleteRefusal {
    /// 400 `invalid_request_error` "instance should be powered off".
    #[default]
    LegacyBadRequest,
    /// 412 `precondition_failed` `resource_still_in_use`.
    PreconditionFailed,
}

/// Simulator settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimConfig {
    /// The secret key requests must carry in `X-Auth-Token`.
    pub token: String,
    /// Project of the token (used when a request names none).
    pub project_id: String,
    /// Organization of the token.
    pub organization_id: String,
    /// Operation durations.
    pub durations: Durations,
    /// Reject `ListIPs` with more than one source filter (400
    /// `invalid_arguments`, reason `constraint`). Default true.
    pub strict_ipam_source_filter: bool,
    /// How DELETE of a non-stopped server is refused.
    pub delete_refusal: DeleteRefusal,
    /// Clock.
    pub clock: ClockMode,
}

impl SimConfig {
    /// Defaults with `token` as the accepted secret key.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            project_id: "11111111-1111-4111-8111-111111111111".into(),
            organization_id: "22222222-2222-4222-8222-222222222222".into(),
            durations: Durations::default(),
            strict_ipam_source_filter: true,
            delete_refusal: DeleteRefusal::default(),
            clock: ClockMode::Virtual,
        }
    }
    /// Sets the clock mode.
    pub fn clock(mut self, clock: ClockMode) -> Self {
        self.clock = clock;
        self
    }
    /// Sets the durations.
    pub fn durations(mut self, durations: Durations) -> Self {
        self.durations = durations;
        self
    }
    /// Sets how DELETE of a non-stopped server is refused.
    pub fn delete_refusal(mut self, refusal: DeleteRefusal) -> Self {
        self.delete_refusal = refusal;
        self
    }
    /// Accepts (AND-combines) several IPAM source filters instead of rejecting them.
    pub fn lenient_ipam_source_filter(mut self) -> Self {
        self.strict_ipam_source_filter = false;
        self
    }
}

/// One request seen by the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// Method.
    pub method: http::Method,
    /// Path (without query).
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Request body.
    pub body: Bytes,
    /// Status answered (also when the response was then dropped).
    pub status: u16,
    /// When (simulator clock).
    pub at: Duration,
    /// Whether a fault replaced or dropped the response.
    pub faulted: bool,
}

/// A snapshot of a simulated Instance server, for assertions in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceServerInfo {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// State.
    pub state: crate::ServerState,
    /// State detail.
    pub state_detail: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Private networks it has a NIC on.
    pub private_networks: Vec<String>,
    /// User data keys.
    pub user_data_keys: Vec<String>,
    /// Whether it currently has a (dynamic) public IP.
    pub has_public_ip: bool,
}

/// A snapshot of a simulated Elastic Metal server, for assertions in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BaremetalServerInfo {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// Status, e.g. `ready`.
    pub status: String,
    /// Install status, when an install was requested.
    pub install_status: Option<String>,
    /// Options as (name, status).
    pub options: Vec<(String, String)>,
    /// Attached private networks as (private network id, VLAN, status).
    pub private_networks: Vec<(String, u32, String)>,
}

/// What the simulator did with one request.
#[derive(Debug)]
pub struct Outcome {
    /// The response.
    pub response: http::Response<Bytes>,
    /// The change was applied but the response must be lost.
    pub dropped: bool,
    /// Delay before answering.
    pub latency: Option<Duration>,
}

struct Shared {
    state: Mutex<state::State>,
    clock: clock::SimClockState,
}

/// The simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator with the default catalogue (marketplace images, Elastic
    /// Metal offers/options/OS) accepting `config.token`.
    pub fn new(config: SimConfig) -> Self {
        let clock = clock::SimClockState::new(config.clock);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state::State::new(config)),
                clock,
            }),
        }
    }

    /// Shorthand for `Simulator::new(SimConfig::new(token))`.
    pub fn with_token(token: &str) -> Self {
        Self::new(SimConfig::new(token))
    }

    fn lock(&self) -> MutexGuard<'_, state::State> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.tick(self.shared.clock.now());
        st
    }

    /// The simulator's current time (from its start).
    pub fn now(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Advances the clock and applies every transition that became due.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
        drop(self.lock());
    }

    /// Waits `d` on the simulator clock: advances a virtual clock, sleeps
    /// `d / speed` on a real one.
    pub async fn sleep(&self, d: Duration) {
        match self.shared.clock.mode() {
            ClockMode::Virtual => self.advance(d),
            ClockMode::Real { speed } => {
                let speed = if speed.is_finite() && speed > 0.0 {
                    speed
                } else {
                    1.0
                };
                let real = Duration::try_from_secs_f64(d.as_secs_f64() / speed)
                    .unwrap_or(Duration::from_secs(86_400));
                tokio::time::sleep(real).await;
            }
        }
    }

    /// The configuration's token.
    pub fn token(&self) -> String {
        self.lock().config.token.clone()
    }

    /// The project of the token.
    pub fn project_id(&self) -> crate::ProjectId {
        crate::ProjectId::new(self.lock().config.project_id.clone())
    }

    /// Answers one request, applying faults.
    pub fn process(&self, request: http::Request<Bytes>) -> Outcome {
        let now = self.now();
        self.lock().process(request, now)
    }

    /// Answers one request; a dropped response is returned anyway.
    pub fn handle(&self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        self.process(request).response
    }

    /// Adds a fault; it applies to the following matching requests.
    pub fn inject(&self, fault: Fault) -> FaultId {
        self.lock().faults.add(fault)
    }

    /// How many times fault `id` fired.
    pub fn fault_fired(&self, id: FaultId) -> u64 {
        self.lock().faults.fired(id)
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().log.clone()
    }

    /// How many requests matched `method` and contained `path_contains`.
    pub fn count_requests(&self, method: &http::Method, path_contains: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == *method && r.path.contains(path_contains))
            .count()
    }

    /// The billing ledger at the current time.
    pub fn ledger(&self) -> Ledger {
        self.lock().ledger.clone()
    }

    /// A transport answering in process.
    pub fn transport(&self) -> SimTransport {
        SimTransport { sim: self.clone() }
    }

    /// A [`Clock`] on the simulator's time (advancing it when virtual).
    pub fn clock(&self) -> SimClock {
        SimClock { sim: self.clone() }
    }

    /// A client wired to this simulator in process, on its clock, with the
    /// token's project as default project and a fixed jitter seed.
    pub fn client(&self) -> Client {
        self.client_with_retry(RetryPolicy::default())
    }

    /// Like [`Simulator::client`] with a retry policy.
    pub fn client_with_retry(&self, retry: RetryPolicy) -> Client {
        let (token, project) = {
            let st = self.lock();
            (st.config.token.clone(), st.config.project_id.clone())
        };
        Client::builder(SecretKey::new(token))
            .base_url("http://scaleway-sim.invalid")
            .clock(self.clock())
            .retry(retry)
            .default_project(project)
            .jitter_seed(7)
            .finish(Arc::new(self.transport()))
    }

    /// Serves the simulator over HTTP on `127.0.0.1:port` (0 = any port).
    pub async fn serve(&self, port: u16) -> std::io::Result<SimServer> {
        http_server::serve(self.clone(), port).await
    }

    /// The state of an Instance server, `None` when it does not exist.
    pub fn instance_server_state(
        &self,
        id: &str,
    ) -> Option<(crate::ServerState, Vec<crate::ServerAction>)> {
        let st = self.lock();
        st.servers
            .iter()
            .find(|s| s.id == id)
            .map(|s| (s.state.clone(), s.allowed_actions()))
    }

    /// Every Instance server that exists now.
    pub fn instance_servers(&self) -> Vec<InstanceServerInfo> {
        self.lock().instance_infos()
    }

    /// Every Elastic Metal server that exists now (including `deleting`).
    pub fn baremetal_servers(&self) -> Vec<BaremetalServerInfo> {
        self.lock().baremetal_infos()
    }

    /// The user data `key` of Instance server `id`, read directly (no
    /// request is logged and no fault applies): what cloud-init would get.
    pub fn instance_user_data(&self, id: &str, key: &str) -> Option<Bytes> {
        self.lock().user_data(id, key)
    }

    /// Makes the next `count` Elastic Metal OS installs that finish end in
    /// install status `error` instead of `completed` (a reinstall afterwards
    /// succeeds once the count is used up).
    pub fn fail_next_baremetal_installs(&self, count: u32) {
        self.lock().em_install_failures = count;
    }

    /// Puts an Instance server in the `locked` state (or back to `stopped`).
    pub fn set_instance_server_locked(&self, id: &str, locked: bool) -> bool {
        self.lock().set_locked(id, locked)
    }
}

/// The in-process transport of a [`Simulator`].
#[derive(Clone, Debug)]
pub struct SimTransport {
    sim: Simulator,
}

impl Transport for SimTransport {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'_, Result<http::Response<Bytes>, TransportError>> {
        Box::pin(async move {
            let out = self.sim.process(request);
            if let Some(l) = out.latency {
                self.sim.sleep(l).await;
            }
            if out.dropped {
                return Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    "simulated: the response was lost after the request was applied",
                ));
            }
            Ok(out.response)
        })
    }
}

/// The [`Clock`] of a [`Simulator`].
#[derive(Clone, Debug)]
pub struct SimClock {
    sim: Simulator,
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        self.sim.now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(self.sim.sleep(duration))
    }
}
