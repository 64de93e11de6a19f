//! Primary pod selection.
//!
//! The primary pod is the one the primary Service and the `-external` NodePort
//! Service are pinned to. The choice is sticky (read back from the live
//! primary Service's selector, so it survives operator restarts):
//!
//! 1. keep the current primary if it is routable;
//! 2. else the routable pod with the lowest ordinal;
//! 3. else keep the current primary;
//! 4. else `<instance>-0`.
//!
//! A pod is routable iff its `GET http://<podIP>:4000/status/rollout` (2 s
//! timeout) answers `ready && state == "serving" && writer_lock_owned &&
//! ring_members >= (replicas <= 1 ? 1 : 2)`. The probe is behind the
//! [`Routability`] trait so tests need no pod network.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

/// The body of `/status/rollout`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RolloutStatus {
    /// The node answers `/ready`.
    pub ready: bool,
    /// Lifecycle state (`serving` when routable).
    pub state: String,
    /// Members of the hash ring the node sees.
    pub ring_members: u32,
    /// Whether the node holds its writer lock.
    pub writer_lock_owned: bool,
}

impl RolloutStatus {
    /// The routability rule of the module docs.
    pub fn routable(&self, replicas: i32) -> bool {
        let min_members = if replicas <= 1 { 1 } else { 2 };
        self.ready
            && self.state == "serving"
            && self.writer_lock_owned
            && self.ring_members >= min_members
    }
}

/// Asks a pod whether it can take traffic.
pub trait Routability: Send + Sync {
    /// The pod's rollout status; `None` when it cannot be read (no IP, timeout,
    /// bad answer).
    fn rollout<'a>(&'a self, pod_ip: &'a str) -> BoxFuture<'a, Option<RolloutStatus>>;
}

/// A candidate pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Pod name (`<instance>-<ordinal>`).
    pub name: String,
    /// StatefulSet ordinal.
    pub ordinal: u32,
    /// Pod IP, when assigned.
    pub ip: Option<String>,
}

/// The ordinal of `<instance>-<ordinal>`.
pub fn ordinal_of(instance: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(instance)?.strip_prefix('-')?.parse().ok()
}

/// Chooses the primary pod (see the module docs).
pub async fn choose(
    instance: &str,
    current: Option<&str>,
    pods: &[Candidate],
    replicas: i32,
    probe: &dyn Routability,
) -> String {
    let routable = |pod: &Candidate| {
        let ip = pod.ip.clone();
        async move {
            match ip {
                Some(ip) => probe
                    .rollout(&ip)
                    .await
                    .is_some_and(|s| s.routable(replicas)),
                None => false,
            }
        }
    };
    if let Some(cur) = current
        && let Some(pod) = pods.iter().find(|p| p.name == cur)
        && routable(pod).await
    {
        return cur.to_owned();
    }
    let mut sorted: Vec<&Candidate> = pods.iter().collect();
    sorted.sort_by_key(|p| p.ordinal);
    for pod in sorted {
        if Some(pod.name.as_str()) != current && routable(pod).await {
            return pod.name.clone();
        }
    }
    match current {
        Some(cur) => cur.to_owned(),
        None => format!("{instance}-0"),
    }
}

/// The HTTP client [`HttpRoutability`] probes with (plain HTTP/1.1).
pub type ProbeClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// [`Routability`] over plain HTTP to `http://<podIP>:<port>/status/rollout`.
///
/// The caller owns the client (connection pool, connector settings); the
/// binary builds one with
/// `Client::builder(TokioExecutor::new()).build_http()`.
#[derive(Debug, Clone)]
pub struct HttpRoutability {
    client: ProbeClient,
    port: u16,
    timeout: Duration,
}

impl HttpRoutability {
    /// Probes port `port` through `client` with a `timeout` per probe (the
    /// reference uses 4000 and 2 s).
    pub fn new(client: ProbeClient, port: u16, timeout: Duration) -> Self {
        Self {
            client,
            port,
            timeout,
        }
    }
}

impl Routability for HttpRoutability {
    fn rollout<'a>(&'a self, pod_ip: &'a str) -> BoxFuture<'a, Option<RolloutStatus>> {
        Box::pin(async move {
            let ip: std::net::IpAddr = pod_ip.parse().ok()?;
            let uri: http::Uri = format!(
                "http://{}/status/rollout",
                std::net::SocketAddr::new(ip, self.port)
            )
            .parse()
            .ok()?;
            let fetch = async {
                use http_body_util::BodyExt;
                let resp = self.client.get(uri).await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                    .collect()
                    .await
                    .ok()?
                    .to_bytes();
                serde_json::from_slice(&body).ok()
            };
            tokio::time::timeout(self.timeout, fetch)
                .await
                .ok()
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fixed(BTreeMap<String, RolloutStatus>);
    impl Routability for Fixed {
        fn rollout<'a>(&'a self, ip: &'a str) -> BoxFuture<'a, Option<RolloutStatus>> {
            Box::pin(async move { self.0.get(ip).cloned() })
        }
    }

    fn serving(members: u32) -> RolloutStatus {
        RolloutStatus {
            ready: true,
            state: "serving".into(),
            ring_members: members,
            writer_lock_owned: true,
        }
    }

    fn pods() -> Vec<Candidate> {
        (0..3)
            .map(|n| Candidate {
                name: format!("k-{n}"),
                ordinal: n,
                ip: Some(format!("10.0.0.{n}")),
            })
            .collect()
    }

    #[tokio::test]
    async fn selection_is_sticky_then_lowest_ordinal_then_current_then_zero() {
        let all = Fixed(
            (0..3)
                .map(|n| (format!("10.0.0.{n}"), serving(3)))
                .collect(),
        );
        assert_eq!(choose("k", Some("k-2"), &pods(), 3, &all).await, "k-2");
        let only1 = Fixed(BTreeMap::from([("10.0.0.1".into(), serving(3))]));
        assert_eq!(choose("k", Some("k-2"), &pods(), 3, &only1).await, "k-1");
        let none = Fixed(BTreeMap::new());
        assert_eq!(choose("k", Some("k-2"), &pods(), 3, &none).await, "k-2");
        assert_eq!(choose("k", None, &pods(), 3, &none).await, "k-0");
        // A lone node of a 3-replica instance is not routable (ring of 1).
        let lonely = Fixed(BTreeMap::from([("10.0.0.1".into(), serving(1))]));
        assert_eq!(choose("k", Some("k-2"), &pods(), 3, &lonely).await, "k-2");
        assert!(serving(1).routable(1));
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("kura-a", "kura-a-12"), Some(12));
        assert_eq!(ordinal_of("kura-a", "kura-ab-1"), None);
        assert_eq!(ordinal_of("kura-a", "kura-a-x"), None);
    }
}
