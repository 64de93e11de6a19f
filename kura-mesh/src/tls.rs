//! The node's TLS material, swappable at run time (certificate rotation).

use std::sync::{Arc, RwLock};

use kura_ca::{PeerClientConfig, PeerIdentity, ServerOptions, TrustBundle};
use rustls::ServerConfig;

use crate::error::Result;

/// Server and client configs built from one leaf and trust bundle. New connections
/// use the current configs; [`TlsState::reload`] swaps them (rotation without restart).
#[derive(Debug)]
pub struct TlsState {
    server: RwLock<Arc<ServerConfig>>,
    client: RwLock<PeerClientConfig>,
}

impl TlsState {
    /// Builds both configs. `peer_service_name` is the account peer Service that
    /// every server must present (and the SNI sent), whatever address is dialled.
    pub fn new(
        identity: &PeerIdentity,
        trust: &TrustBundle,
        peer_service_name: &str,
    ) -> Result<Self> {
        let (server, client) = Self::build(identity, trust, peer_service_name)?;
        Ok(Self {
            server: RwLock::new(server),
            client: RwLock::new(client),
        })
    }

    /// From PEM files' contents: CA bundle, leaf chain, leaf key.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8], peer_service_name: &str) -> Result<Self> {
        let identity = PeerIdentity::from_pem(cert, key)?;
        let trust = TrustBundle::from_pem(ca)?;
        Self::new(&identity, &trust, peer_service_name)
    }

    fn build(
        identity: &PeerIdentity,
        trust: &TrustBundle,
        peer_service_name: &str,
    ) -> Result<(Arc<ServerConfig>, PeerClientConfig)> {
        let server = kura_ca::server_config(identity, trust, &ServerOptions::default())?;
        let client = kura_ca::client_config(identity, trust, peer_service_name)?;
        Ok((server, client))
    }

    /// Replaces both configs; established connections keep their session.
    pub fn reload(
        &self,
        identity: &PeerIdentity,
        trust: &TrustBundle,
        peer_service_name: &str,
    ) -> Result<()> {
        let (server, client) = Self::build(identity, trust, peer_service_name)?;
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = server;
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(())
    }

    /// The current server config.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.server
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current client config.
    pub fn client(&self) -> PeerClientConfig {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
