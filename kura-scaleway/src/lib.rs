//! A typed Scaleway API client — Instance, Marketplace, IPAM, VPC, Elastic
//! Metal and Block — and, behind the `sim` feature, a faithful simulator of
//! those APIs with a virtual clock, fault injection and a billing ledger.
//!
//! It covers what a machine provider needs (create a server, attach it to a
//! private network, power it on, find its private IPv4; order, install and
//! network an Elastic Metal server) with the quirks of the real API handled
//! once, here, instead of being rediscovered in production.
//!
//! # Example
//!
//! Create an Instance server, attach it to a private network, power it on and
//! read its private IPv4 — here against the in-process simulator; for the real
//! API build the client with `Client::builder(SecretKey::new(key)).build()?`.
//!
//! ```
//! use kura_scaleway::sim::Simulator;
//! use kura_scaleway::{CommercialType, CreateServerRequest, VolumeTemplate, WaitOptions, Zone};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let sim = Simulator::with_token("my-secret-key");
//! let client = sim.client();
//! let zone = Zone::new("fr-par-1")?;
//! let project = sim.project_id();
//!
//! // Find-or-create the private network by exact name.
//! let pn = client
//!     .vpc()
//!     .ensure_private_network(&zone.region(), &project, "kura-runners", Some("172.16.8.0/22"), &[])
//!     .await?;
//!
//! // Resolve the image label for the commercial type.
//! let ty = CommercialType::new("PRO2-S");
//! let image =
//!     client.marketplace().find_local_image(&zone, "ubuntu_noble", &ty, "instance_sbs").await?;
//!
//! // Look up by exact name before creating: a create is never retried blindly.
//! let instance = client.instance();
//! let server = match instance.find_server_by_name(&zone, "runner-1", Some(&project)).await? {
//!     Some(server) => server,
//!     None => {
//!         let req = CreateServerRequest::new("runner-1", ty, image.id, project.clone())
//!             .root_volume(VolumeTemplate::sbs_gb(50))
//!             .tags(["capi"]);
//!         instance.create_server(&zone, &req).await?
//!     }
//! };
//!
//! // User data and private network on the stopped server, then power on.
//! instance.set_user_data(&zone, &server.id, "cloud-init", "#cloud-config\n").await?;
//! instance.ensure_private_nic(&zone, &server.id, &pn.id).await?;
//! instance.ensure_powered_on(&zone, &server.id).await?;
//! let server = instance.wait_for_server(&zone, &server.id, WaitOptions::INSTANCE).await?;
//! assert_eq!(server.state, kura_scaleway::ServerState::Running);
//!
//! // The NIC carries no address: IPAM does (IPv4 only, prefix stripped).
//! let ipv4 = instance.private_network_ipv4(&zone, &server, &pn.id).await?;
//! assert_eq!(ipv4, Some("172.16.8.2".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! * **Requests are built without I/O**: an [`ApiRequest`] becomes an
//!   [`http::Request`] with [`ApiRequest::to_http`]; a [`transport::Transport`]
//!   sends it. [`transport::HttpTransport`] (feature `http-transport`, on by
//!   default) uses reqwest with rustls (ring); the simulator provides an
//!   in-process one; tests can record or script their own.
//! * **One error type**, [`Error`], with a variant per Scaleway error `type`
//!   (including the Instance legacy `invalid_request_error` and untyped
//!   Elastic Metal errors), transport and decoding failures, and the
//!   `X-Request-Id`. [`Error::is_not_found`] and [`Error::is_retryable`]
//!   answer the two questions a reconciler asks.
//! * **Decoding never breaks on new values**: every state enum has an
//!   `Unknown(String)` fallback and unknown fields are ignored.
//!
//! # Retries and idempotency
//!
//! [`RetryPolicy`] retries 429, 5xx and transport failures with exponential
//! backoff and jitter, honouring `Retry-After` (a 429 without a body is still
//! a 429). Only idempotent requests (GET, PUT, PATCH, DELETE) are retried
//! after a 5xx or a lost response; a POST (create, action, order) is retried
//! only after a 429, which the API answers before doing anything.
//!
//! A create whose response was lost may have succeeded. Make creates safe by
//! looking the resource up first, on every attempt:
//! [`InstanceApi::find_server_by_name`] (exact name; the API filter is a
//! substring match), [`VpcApi::ensure_private_network`],
//! [`BaremetalApi::find_server_by_name`]. Give each resource a unique name
//! (or tag) derived from what it is for, and record its id as soon as you
//! have it.
//!
//! # Guards against known production bugs
//!
//! * IPAM `ListIPs` takes **one** source filter: [`ListIpsRequest::source`] is
//!   an enum, so two cannot be sent; the region is part of the path argument.
//! * [`MacAddress`] compares case-insensitively (Instance reports lower case,
//!   IPAM upper case).
//! * IPv4 vs IPv6 is explicit ([`Ip::ipv4`], `is_ipv6` filter);
//!   [`InstanceApi::private_network_ipv4`] never returns an IPv6 or a prefix.
//! * [`InstanceApi::delete_server_step`] and [`InstanceApi::ensure_powered_on`]
//!   only send actions in `allowed_actions`, and treat "already gone" as done.
//! * [`BaremetalApi::ensure_pn_attached`] refuses a VLAN of 0.
//!
//! # Pagination and waiting
//!
//! List methods come as one page (`*_page`), a [`Paginator`] streaming pages,
//! or all items; both pagination styles (Instance `per_page` with
//! `X-Total-Count`, and `page_size` with `total_count`) are handled. Waiters
//! use the intervals and timeouts of the official SDKs ([`WaitOptions`]) on
//! the client's [`transport::Clock`], so a simulator client waits in virtual
//! time.
//!
//! # Simulator
//!
//! See the `sim` module (feature `sim`): `Simulator::client()` in process,
//! `Simulator::serve(port)` over HTTP, or the `kura-scaleway-sim` binary.
//! `docs/scaleway.md` in the repository lists what the real API does and what
//! the simulator reproduces.

mod baremetal;
mod block;
mod client;
mod de;
mod error;
mod instance;
mod ipam;
mod marketplace;
pub mod request;
pub mod transport;
mod types;
mod vpc;

#[cfg(feature = "sim")]
pub mod sim;

/// The `http` crate, whose types appear in this crate's API.
pub use http;

pub use baremetal::{
    BaremetalApi, BaremetalIp, BaremetalServer, CreateBaremetalServerRequest, Install,
    InstallRequest, Offer, OfferOption, Os, PrivateNetworkOptionInfo, ServerOption,
    ServerPrivateNetwork,
};
pub use block::BlockApi;
pub use client::{ApiResponse, Client, ClientBuilder, Page, Paginator, RetryPolicy, WaitOptions};
pub use error::{
    ArgumentError, Error, PermissionDetail, QuotaDetail, TransportError, TransportErrorKind,
};
pub use instance::{
    CreatePrivateNicRequest, CreateServerRequest, DeleteStep, InstanceApi, ListServersRequest,
    PowerOnStep, PrivateNic, PublicIp, Server, ServerImage, ServerVolume, Task,
    UpdateServerRequest, VolumeTemplate,
};
pub use ipam::{Ip, IpResource, IpSource, IpSourceInfo, IpamApi, ListIpsRequest, list_ips_request};
pub use marketplace::{LocalImage, MarketplaceApi};
pub use request::{ApiRequest, SecretKey};
pub use types::*;
pub use vpc::{
    CreatePrivateNetworkRequest, ListPrivateNetworksRequest, PrivateNetwork, Subnet, VpcApi,
};
