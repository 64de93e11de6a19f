//! Per-machine kubelet identities.
//!
//! Each machine gets a bootstrap token (a `bootstrap.kubernetes.io/token`
//! Secret `bootstrap-token-<id>` in `kube-system`, group
//! [`crate::rbac::BOOTSTRAP_GROUP`]) rendered into a bootstrap kubeconfig.
//! The kubelet uses it once to request its `system:node:<name>` client
//! certificate (TLS bootstrapping), so the node ends up with a real
//! `system:node` identity under NodeRestriction. The token id is derived
//! from the machine's namespace and name, so finding it again is a GET.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;

use crate::context::{ProviderConfig, rfc3339};
use crate::kube_side::{KubeApi, KubeError};
use crate::rbac::{BOOTSTRAP_GROUP, TOKEN_NAMESPACE};

/// The 6-character token id of machine `namespace/name` (`[a-z0-9]{6}`).
pub fn token_id(namespace: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0u8]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|i| ALPHABET[((h >> (i * 6)) % 36) as usize] as char)
        .collect()
}

/// The name of the Secret holding the identity of `namespace/name`.
pub fn secret_name(namespace: &str, name: &str) -> String {
    format!("bootstrap-token-{}", token_id(namespace, name))
}

fn random_secret() -> Result<String, KubeError> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| KubeError::Api(format!("no randomness for a bootstrap token: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % 36] as char)
        .collect())
}

/// A bootstrap kubeconfig for `token` against `config.api_server`.
pub fn bootstrap_kubeconfig(config: &ProviderConfig, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(config.cluster_ca_pem.as_bytes());
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1\nkind: Config\nclusters:\n  - name: cluster\n    cluster:\n      server: {}\n      certificate-authority-data: {ca}\nusers:\n  - name: kubelet-bootstrap\n    user:\n      token: {token}\ncontexts:\n  - name: kubelet-bootstrap\n    context:\n      cluster: cluster\n      user: kubelet-bootstrap\ncurrent-context: kubelet-bootstrap\n",
        serde_json::Value::String(config.api_server.clone())
    );
    s
}

/// Returns the bootstrap kubeconfig of machine `namespace/name`, minting
/// the token when it does not exist yet.
pub async fn ensure<K: KubeApi>(
    kube: &K,
    config: &ProviderConfig,
    now: time::OffsetDateTime,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<String, KubeError> {
    let id = token_id(namespace, name);
    let secret = secret_name(namespace, name);
    let mut existing = kube.get_secret(TOKEN_NAMESPACE, &secret).await?;
    // A token that expires within the hour is replaced: a node rendered
    // with it could not join (e.g. a Failed machine retried days later).
    let expiring = existing
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(crate::context::parse_rfc3339)
        .is_some_and(|exp| exp < now + std::time::Duration::from_secs(3600));
    if expiring {
        kube.delete_secret(TOKEN_NAMESPACE, &secret).await?;
        existing = None;
    }
    let token_secret = match existing
        .as_ref()
        .and_then(|d| d.get("token-secret"))
        .and_then(|v| String::from_utf8(v.clone()).ok())
    {
        Some(s) => s,
        None => {
            let s = random_secret()?;
            let expiration = now + config.bootstrap_token_ttl;
            let data = BTreeMap::from([
                ("token-id".to_owned(), id.clone().into_bytes()),
                ("token-secret".to_owned(), s.clone().into_bytes()),
                (
                    "description".to_owned(),
                    format!("kubelet identity of {kind} {namespace}/{name}").into_bytes(),
                ),
                ("expiration".to_owned(), rfc3339(expiration).into_bytes()),
                (
                    "usage-bootstrap-authentication".to_owned(),
                    b"true".to_vec(),
                ),
                (
                    "auth-extra-groups".to_owned(),
                    BOOTSTRAP_GROUP.as_bytes().to_vec(),
                ),
            ]);
            let labels = BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "kura-provider".to_owned(),
                ),
                ("cluster.x-k8s.io/machine-kind".to_owned(), kind.to_owned()),
            ]);
            match kube
                .create_secret(
                    TOKEN_NAMESPACE,
                    &secret,
                    "bootstrap.kubernetes.io/token",
                    labels,
                    data,
                )
                .await
            {
                Ok(()) => s,
                // Created concurrently (or by a create whose answer was lost): read it.
                Err(KubeError::AlreadyExists(_)) => kube
                    .get_secret(TOKEN_NAMESPACE, &secret)
                    .await?
                    .and_then(|d| d.get("token-secret").cloned())
                    .and_then(|v| String::from_utf8(v).ok())
                    .ok_or_else(|| {
                        KubeError::Api(format!("secret {secret} has no token-secret"))
                    })?,
                Err(e) => return Err(e),
            }
        }
    };
    Ok(bootstrap_kubeconfig(
        config,
        &format!("{id}.{token_secret}"),
    ))
}

/// Deletes the identity of machine `namespace/name` (absent is fine).
pub async fn delete<K: KubeApi>(kube: &K, namespace: &str, name: &str) -> Result<(), KubeError> {
    kube.delete_secret(TOKEN_NAMESPACE, &secret_name(namespace, name))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_tokens_are_replaced_and_live_ones_reused() {
        let kube = crate::kube_side::MemoryKube::new();
        let config = ProviderConfig::new(kura_scaleway::ProjectId::new("p"), "https://k", "ca");
        let t0 = time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        let a = ensure(&kube, &config, t0, "K", "ns", "m").await.unwrap();
        let b = ensure(
            &kube,
            &config,
            t0 + std::time::Duration::from_secs(3600),
            "K",
            "ns",
            "m",
        )
        .await
        .unwrap();
        assert_eq!(a, b, "a live token is reused");
        let c = ensure(
            &kube,
            &config,
            t0 + std::time::Duration::from_secs(24 * 3600),
            "K",
            "ns",
            "m",
        )
        .await
        .unwrap();
        assert_ne!(a, c, "an expiring token is replaced");
        assert!(kube.has_secret(TOKEN_NAMESPACE, &secret_name("ns", "m")));
        delete(&kube, "ns", "m").await.unwrap();
        assert_eq!(kube.secret_count(), 0);
    }

    #[test]
    fn token_ids_are_valid_and_stable() {
        let a = token_id("default", "node-a");
        assert_eq!(a, token_id("default", "node-a"));
        assert_ne!(a, token_id("default", "node-b"));
        assert_ne!(token_id("ab", "c"), token_id("a", "bc"));
        assert_eq!(a.len(), 6);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
