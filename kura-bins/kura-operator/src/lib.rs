//! The `KuraInstance` controller.
//!
//! `kura-operator` turns `kura.tuist.dev/v1alpha1` `KuraInstance` objects into
//! the Kubernetes objects of a Kura cache instance: a StatefulSet, its
//! Services (headless, account peers, primary, NodePort `<instance>-external`),
//! NetworkPolicy, PodDisruptionBudget, Ingress and the per-account peer CA and
//! per-instance leaf Secrets. It accepts the manifests of the controller it
//! replaces unchanged (see `docs/operator.md`).
//!
//! The crate is split so that almost everything is a pure function:
//!
//! - [`crd`]: the custom resource types (and the CRD via `kube::CustomResourceExt`);
//! - [`render`]: every desired object of an instance from the instance, the
//!   live objects it depends on and the time — no I/O;
//! - [`status`]: the status rules (phase, ready replicas, node address, node port);
//! - [`primary`]: primary pod selection, behind the [`primary::Routability`] trait;
//! - [`rbac`] and [`manifests`]: RBAC from one permission table, the CRD and
//!   the operator Deployment;
//! - [`reconcile`]: the kube-rs `Controller` wiring, server-side apply,
//!   finalizer, events;
//! - [`endpoints`]: the opt-in endpoint hand-off HTTP API for runner dispatch.
//!
//! # Example: a dry run
//!
//! ```
//! use kura_operator::crd::KuraInstance;
//! use kura_operator::render::{render, LiveObjects, RenderOptions};
//!
//! let instance: KuraInstance = serde_norway::from_str(r#"
//! apiVersion: kura.tuist.dev/v1alpha1
//! kind: KuraInstance
//! metadata: {name: kura-acme, namespace: kura, uid: 6c1f0c52-0000-4000-8000-000000000001}
//! spec:
//!   accountHandle: acme
//!   tenantID: "42"
//!   region: fr-par
//!   image: ghcr.io/tuist/kura:1.0.0
//!   exposeNodePort: true
//!   clientCIDRs: ["172.16.0.0/22"]
//! "#)?;
//! let now = kura_ca::time::OffsetDateTime::now_utc();
//! let rendered = render(&instance, &LiveObjects::default(), None, &RenderOptions::default(), now)?;
//! assert!(rendered.find("Service", "kura-acme-external").is_some());
//! assert!(rendered.find("StatefulSet", "kura-acme").is_some());
//! let yaml = rendered.to_yaml_stream()?;
//! assert!(yaml.contains("externalTrafficPolicy: Local"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod crd;
pub mod endpoints;
pub mod error;
pub mod manifests;
pub mod primary;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod status;

pub use error::{Error, SpecError};
