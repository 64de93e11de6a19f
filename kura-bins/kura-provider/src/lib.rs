//! `kura-provider`: a Cluster API infrastructure provider that runs Kura
//! cache nodes on Scaleway — `ScalewayInstanceMachine` (an Instance with an
//! SBS root volume, joined by cloud-init) and `ScalewayElasticMetalMachine`
//! (an Elastic Metal server with local NVMe, joined over SSH).
//!
//! Every reconcile step is idempotent and starts from the persisted object
//! and the live Scaleway state, so the provider survives an error or a lost
//! response at any API call and a restart at any point without ordering a
//! second server; a machine in `Failed` is retried with exponential backoff.
//! `docs/provider.md` in the repository describes the design.
//!
//! # Example
//!
//! Render the cloud-init document that joins an Instance to the cluster:
//!
//! ```
//! use kura_provider::cloudinit::{JoinParams, parse_taint, render_cloud_init};
//!
//! let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n  - name: c\n    cluster:\n      server: https://10.0.0.1:6443\n";
//! let doc = render_cloud_init(&JoinParams {
//!     node_name: "cache-0".into(),
//!     taints: vec![parse_taint("tuist.dev/runner-cache=true:NoSchedule")?],
//!     cluster_dns: Some("10.96.0.10".parse()?),
//!     node_ip: None,
//!     kubeconfig: kubeconfig.into(),
//!     kubernetes_minor: "v1.34".parse()?,
//! })?;
//! assert!(doc.starts_with("#cloud-config\n"));
//! assert!(doc.ends_with("runcmd:\n  - [bash, /opt/bootstrap-node.sh]\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Reconcilers ([`instance::reconcile`], [`elastic_metal::reconcile`]) take a
//! [`context::Context`]: a `kura_scaleway::Client`, a [`kube_side::KubeApi`]
//! ([`kube_impl::KubeClient`] on a cluster, [`kube_side::MemoryKube`] in
//! tests), an [`context::SshRunner`], configuration, a clock and metrics.

pub mod cloudinit;
mod common;
pub mod context;
pub mod controller;
pub mod crd;
pub mod elastic_metal;
pub mod identity;
pub mod instance;
pub mod kube_impl;
pub mod kube_side;
pub mod rbac;
mod run;

pub use common::PN_IPV4_LABEL;
