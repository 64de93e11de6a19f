//! rustls configurations for the peer listener and the replication client.
//!
//! Both sides trust **only** the account trust bundle (never the web PKI) and
//! present the instance leaf. The server requires a client certificate; the
//! client verifies the server under the account peer Service name whatever
//! address it dialled, so a node can connect to `https://10.1.2.3:7443` (a pod
//! IP) and still verify `kura-<account>-peers.<ns>.svc.cluster.local`.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::error::Error;
use crate::leaf::{TLS_CERT_KEY, TLS_KEY_KEY, TrustBundle};
use crate::{SecretData, pem};

/// ALPN protocols offered by peers: HTTP/2 first, then HTTP/1.1.
pub const PEER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's own certificate chain and private key.
pub struct PeerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for PeerIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl PeerIdentity {
    /// From PEM: the leaf (optionally followed by intermediates) and its PKCS#8 key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain = pem::certs(TLS_CERT_KEY, cert_pem)?;
        let key = pem::key(TLS_KEY_KEY, key_pem)?;
        Ok(Self {
            chain,
            key: pem::rustls_key(&key),
        })
    }

    /// From leaf Secret data (`tls.crt`, `tls.key`); see [`TrustBundle::from_pem`]
    /// for `ca.pem`.
    pub fn from_secret_data(data: &SecretData) -> Result<Self, Error> {
        let cert = data
            .get(TLS_CERT_KEY)
            .ok_or(Error::MissingKey { key: TLS_CERT_KEY })?;
        let key = data
            .get(TLS_KEY_KEY)
            .ok_or(Error::MissingKey { key: TLS_KEY_KEY })?;
        Self::from_pem(cert, key)
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

/// Options for [`server_config`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerOptions {
    /// When set, a client certificate must also be valid for this DNS name (the
    /// account peer Service), on top of chaining to the trust bundle.
    pub require_client_name: Option<ServerName<'static>>,
}

impl ServerOptions {
    /// Require client certificates to name `name` (the account peer Service).
    pub fn require_client_name(mut self, name: &str) -> Result<Self, Error> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::InvalidOption(format!("invalid peer name {name:?}: {e}")))?;
        self.require_client_name = Some(name);
        Ok(self)
    }
}

/// A server config for the peer listener: TLS 1.2/1.3, ALPN `h2` and
/// `http/1.1`, **requiring** a client certificate that chains to `trust` and
/// carries `clientAuth`.
pub fn server_config(
    identity: &PeerIdentity,
    trust: &TrustBundle,
    options: &ServerOptions,
) -> Result<Arc<ServerConfig>, Error> {
    let roots = Arc::new(trust.root_store()?);
    let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
    let verifier: Arc<dyn ClientCertVerifier> = match &options.require_client_name {
        Some(name) => Arc::new(NamedClientVerifier {
            inner: webpki,
            name: name.clone(),
        }),
        None => webpki,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = PEER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config plus the name it verifies servers under.
#[derive(Debug, Clone)]
pub struct PeerClientConfig {
    /// The rustls config; connect with [`server_name`](Self::server_name) as SNI.
    pub config: Arc<ClientConfig>,
    /// The account peer Service name (SNI and verification name).
    pub server_name: ServerName<'static>,
}

/// A client config for replication: trusts only `trust`, presents `identity`,
/// offers ALPN `h2` and `http/1.1`, and verifies every server under
/// `peer_service_name` regardless of the name passed to `connect` — so dialling
/// a pod IP still verifies the account peer Service.
pub fn client_config(
    identity: &PeerIdentity,
    trust: &TrustBundle,
    peer_service_name: &str,
) -> Result<PeerClientConfig, Error> {
    let server_name = ServerName::try_from(peer_service_name.to_owned()).map_err(|e| {
        Error::InvalidOption(format!(
            "invalid peer service name {peer_service_name:?}: {e}"
        ))
    })?;
    let roots = Arc::new(trust.root_store()?);
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::InvalidOption(format!("server verifier: {e}")))?;
    let verifier = Arc::new(ServiceNameVerifier {
        inner,
        name: server_name.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous() // only to install a verifier that is *stricter* than the default
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = PEER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(PeerClientConfig {
        config: Arc::new(config),
        server_name,
    })
}

/// Full webpki server verification, always against the configured Service name.
#[derive(Debug)]
struct ServiceNameVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for ServiceNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// webpki client verification plus a name check on the client's leaf.
#[derive(Debug)]
struct NamedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for NamedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        ee.verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn offer_client_auth(&self) -> bool {
        true
    }
}
