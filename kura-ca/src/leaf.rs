//! Instance peer leaves: issuance, trust bundles, validation and renewal.

use std::collections::BTreeMap;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{
    AccountCa, CA_CERT_KEY, DEFAULT_BACKDATE, KeyAlgorithm, asn1_time, check_validity,
};
use crate::error::{Error, PemProblem};
use crate::names::{
    AccountHandle, ClusterDomain, HostName, InstanceName, Namespace, leaf_sans,
    peer_service_dns_name,
};
use crate::{SecretData, pem};

/// Secret data key of the leaf certificate.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret data key of the leaf private key (PKCS#8 PEM).
pub const TLS_KEY_KEY: &str = "tls.key";

/// Default leaf lifetime: 2 years.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::days(730);

/// The set of CA certificates a node trusts for peers: the current account CA,
/// and during a rotation also the next or previous one.
///
/// Order is significant only for output (the newest CA first); membership is what
/// verification uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    certs: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// A bundle of the given CA certificates (duplicates are dropped).
    pub fn new(certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<Self, Error> {
        let mut out: Vec<CertificateDer<'static>> = Vec::new();
        for c in certs {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err(Error::InvalidOption(
                "a trust bundle needs at least one CA".into(),
            ));
        }
        Ok(Self { certs: out })
    }

    /// A bundle trusting a single CA.
    pub fn single(ca: &AccountCa) -> Self {
        Self {
            certs: vec![ca.cert_der().clone()],
        }
    }

    /// Decodes a PEM bundle (one or more `CERTIFICATE` sections).
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        Self::new(pem::certs(CA_CERT_KEY, pem)?)
    }

    /// The bundle as PEM, as stored under `ca.pem`.
    pub fn to_pem(&self) -> String {
        pem::encode_certs(&self.certs)
    }

    /// The CA certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// Whether `ca` is in the bundle.
    pub fn contains(&self, ca: &CertificateDer<'_>) -> bool {
        self.certs.iter().any(|c| c.as_ref() == ca.as_ref())
    }

    /// A rustls root store holding exactly these CAs (never the web PKI).
    pub fn root_store(&self) -> Result<rustls::RootCertStore, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.certs {
            roots.add(c.clone())?;
        }
        Ok(roots)
    }
}

/// What to put in an instance's peer leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeafRequest {
    /// The KuraInstance name.
    pub instance: InstanceName,
    /// Its namespace.
    pub namespace: Namespace,
    /// The owning account.
    pub account: AccountHandle,
    /// The cluster domain (default `cluster.local`).
    pub cluster_domain: ClusterDomain,
    /// Extra host names (for example a public mesh peer host), appended to the SANs.
    pub extra_names: Vec<HostName>,
    /// Key algorithm (default ECDSA P-256).
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime from issuance (default 2 years).
    pub validity: Duration,
    /// How far NotBefore is set in the past (default 1 hour).
    pub backdate: Duration,
}

impl LeafRequest {
    /// A request with the defaults: ECDSA P-256, 2 years, `cluster.local`.
    pub fn new(instance: InstanceName, namespace: Namespace, account: AccountHandle) -> Self {
        Self {
            instance,
            namespace,
            account,
            cluster_domain: ClusterDomain::default(),
            extra_names: Vec::new(),
            key_algorithm: KeyAlgorithm::default(),
            validity: DEFAULT_LEAF_VALIDITY,
            backdate: DEFAULT_BACKDATE,
        }
    }

    /// Adds an extra host name SAN.
    pub fn extra_name(mut self, name: HostName) -> Self {
        self.extra_names.push(name);
        self
    }

    /// Sets the lifetime.
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// Sets the key algorithm.
    pub fn key_algorithm(mut self, alg: KeyAlgorithm) -> Self {
        self.key_algorithm = alg;
        self
    }

    /// Sets the cluster domain.
    pub fn cluster_domain(mut self, domain: ClusterDomain) -> Self {
        self.cluster_domain = domain;
        self
    }

    /// The SANs this request produces, in order (see [`leaf_sans`]).
    pub fn sans(&self) -> Vec<String> {
        leaf_sans(
            &self.instance,
            &self.namespace,
            &self.account,
            &self.cluster_domain,
            &self.extra_names,
        )
    }

    /// The account peer Service name that peers verify (SNI):
    /// `kura-<account>-peers.<ns>.svc.<domain>`.
    pub fn peer_service_dns_name(&self) -> String {
        peer_service_dns_name(&self.account, &self.namespace, &self.cluster_domain)
    }
}

/// A freshly issued leaf with its key and the trust bundle it was issued under.
pub struct IssuedLeaf {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    trust: TrustBundle,
}

impl std::fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLeaf").finish_non_exhaustive()
    }
}

impl IssuedLeaf {
    /// The leaf certificate (PEM), stored under `tls.crt`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The leaf certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The private key (PKCS#8 PEM), stored under `tls.key`.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The trust bundle, stored under `ca.pem`.
    pub fn trust(&self) -> &TrustBundle {
        &self.trust
    }

    /// Secret data for the leaf Secret: `ca.pem`, `tls.crt`, `tls.key`.
    pub fn to_secret_data(&self) -> SecretData {
        BTreeMap::from([
            (CA_CERT_KEY.to_owned(), self.trust.to_pem().into_bytes()),
            (TLS_CERT_KEY.to_owned(), self.cert_pem.clone().into_bytes()),
            (TLS_KEY_KEY.to_owned(), self.key_pem.clone().into_bytes()),
        ])
    }
}

impl AccountCa {
    /// Issues a leaf for `request`, signed by this CA, valid from
    /// `now - backdate` for `request.validity`, and records `trust` as its bundle.
    ///
    /// The leaf has CN `<instance> peer`, key usage `digitalSignature,
    /// keyEncipherment`, extended key usage `serverAuth, clientAuth`, and the SANs
    /// of [`LeafRequest::sans`] in that order.
    pub fn issue_leaf(
        &self,
        request: &LeafRequest,
        trust: &TrustBundle,
        now: OffsetDateTime,
    ) -> Result<IssuedLeaf, Error> {
        if !trust.contains(self.cert_der()) {
            return Err(Error::InvalidOption(
                "the trust bundle must contain the issuing CA".into(),
            ));
        }
        check_validity(request.validity, request.backdate)?;
        let key = request.key_algorithm.generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("{} peer", request.instance.as_str()),
        );
        params.distinguished_name = dn;
        params.serial_number = Some(crate::ca::random_serial()?);
        params.not_before = now - request.backdate;
        params.not_after = now + request.validity;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = request
            .sans()
            .into_iter()
            .map(|s| s.try_into().map(SanType::DnsName))
            .collect::<Result<_, _>>()?;
        let cert = params.signed_by(&key, self.issuer())?;
        let cert_der = cert.der().clone();
        Ok(IssuedLeaf {
            cert_pem: pem::encode_certs([&cert_der]),
            cert_der,
            key_pem: key.serialize_pem(),
            trust: trust.clone(),
        })
    }
}

/// An extended key usage a peer leaf must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Eku {
    /// TLS server authentication.
    ServerAuth,
    /// TLS client authentication.
    ClientAuth,
}

impl std::fmt::Display for Eku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ServerAuth => "serverAuth",
            Self::ClientAuth => "clientAuth",
        })
    }
}

/// Why a leaf Secret is not (or no longer) valid. Every variant means "re-issue".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeafProblem {
    /// A required Secret data key is missing.
    #[error("leaf secret has no {key:?} entry")]
    MissingKey {
        /// The missing key.
        key: &'static str,
    },
    /// An entry is not valid PEM.
    #[error("{key:?} is not valid PEM: {reason}")]
    Pem {
        /// The key.
        key: &'static str,
        /// What was wrong.
        reason: PemProblem,
    },
    /// `ca.pem` is not the live trust bundle (the CA was rotated or replaced).
    #[error("ca.pem does not match the live account trust bundle")]
    CaMismatch,
    /// `tls.key` does not belong to `tls.crt`.
    #[error("tls.key does not match tls.crt")]
    KeyMismatch,
    /// The leaf has expired.
    #[error("leaf expired at {not_after}")]
    Expired {
        /// Its NotAfter.
        not_after: OffsetDateTime,
    },
    /// The leaf is not valid yet.
    #[error("leaf is not valid before {not_before}")]
    NotYetValid {
        /// Its NotBefore.
        not_before: OffsetDateTime,
    },
    /// The leaf does not cover an expected name.
    #[error("leaf does not cover the name {name:?}")]
    NameNotCovered {
        /// The uncovered name.
        name: String,
    },
    /// A required extended key usage is missing.
    #[error("leaf lacks the {which} extended key usage")]
    MissingEku {
        /// Which usage.
        which: Eku,
    },
    /// The chain does not verify to the trust bundle.
    #[error("leaf does not chain to the account trust bundle: {reason}")]
    ChainInvalid {
        /// The verifier's reason.
        reason: String,
    },
    /// The leaf chains to the bundle, but was not signed by the CA that currently
    /// issues leaves (a rotation is in progress).
    #[error("leaf was not issued by the current signing CA")]
    StaleIssuer,
}

impl LeafProblem {
    fn from_error(err: Error) -> Self {
        match err {
            Error::MissingKey { key } => Self::MissingKey { key },
            Error::Pem { key, reason } => Self::Pem { key, reason },
            other => Self::ChainInvalid {
                reason: other.to_string(),
            },
        }
    }
}

/// When to renew a valid leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    numerator: u32,
    denominator: u32,
}

impl Default for RenewalPolicy {
    /// Renew once less than a third of the lifetime remains.
    fn default() -> Self {
        Self {
            numerator: 1,
            denominator: 3,
        }
    }
}

impl RenewalPolicy {
    /// Renew once less than `numerator / denominator` of the lifetime remains.
    /// The fraction must be in `(0, 1]`.
    pub fn remaining_fraction(numerator: u32, denominator: u32) -> Result<Self, Error> {
        if numerator == 0 || denominator == 0 || numerator > denominator {
            return Err(Error::InvalidOption(format!(
                "renewal fraction {numerator}/{denominator} must be in (0, 1]"
            )));
        }
        Ok(Self {
            numerator,
            denominator,
        })
    }
}

/// Facts about a leaf that passed [`validate_leaf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// DNS SANs, in certificate order.
    pub dns_names: Vec<String>,
    /// The leaf certificate (DER).
    pub cert_der: CertificateDer<'static>,
}

impl LeafInfo {
    /// Whether less than a third of the lifetime remains at `now` (or it expired).
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        self.needs_renewal_with(RenewalPolicy::default(), now)
    }

    /// Whether less than the policy's fraction of the lifetime remains at `now`.
    pub fn needs_renewal_with(&self, policy: RenewalPolicy, now: OffsetDateTime) -> bool {
        let lifetime = self.not_after - self.not_before;
        let remaining = self.not_after - now;
        // remaining / lifetime < n / d  <=>  remaining * d < lifetime * n
        let r = remaining.whole_seconds() as i128 * i128::from(policy.denominator);
        let l = lifetime.whole_seconds() as i128 * i128::from(policy.numerator);
        r < l
    }
}

fn unix_time(t: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

/// Verifies `leaf` against `anchors` for `usage` at `now` with webpki.
pub(crate) fn verify_chain(
    leaf: &CertificateDer<'_>,
    anchors: &[CertificateDer<'static>],
    now: OffsetDateTime,
    usage: webpki::KeyUsage,
) -> Result<(), String> {
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
    let anchors: Vec<_> = anchors
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        unix_time(now),
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Checks that leaf Secret data is complete, consistent and valid at `now` for
/// every name in `expected_names`, under the live trust bundle `trust`.
///
/// The checks, in order (the first failure is returned):
/// all keys present; each entry valid PEM; `ca.pem` equal to `trust` (so a CA
/// rotation re-issues every leaf); key matches certificate; within validity;
/// `serverAuth` and `clientAuth` present; the chain verifies to `trust`; every
/// expected name covered.
///
/// ```
/// use kura_ca::*;
/// let now = time::OffsetDateTime::now_utc();
/// let account = AccountHandle::new("acme")?;
/// let ca = AccountCa::generate(&account, &CaOptions::default(), now)?;
/// let trust = TrustBundle::single(&ca);
/// let req = LeafRequest::new(InstanceName::new("eu-1")?, Namespace::new("kura")?, account);
/// let leaf = ca.issue_leaf(&req, &trust, now)?;
/// let info = validate_leaf(&leaf.to_secret_data(), &trust, &[&req.peer_service_dns_name()], now)?;
/// assert!(!info.needs_renewal(now));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate_leaf(
    data: &SecretData,
    trust: &TrustBundle,
    expected_names: &[&str],
    now: OffsetDateTime,
) -> Result<LeafInfo, LeafProblem> {
    validate_leaf_signed_by(data, trust, None, expected_names, now)
}

/// [`validate_leaf`], also requiring (when `signer` is given) that the leaf was
/// issued by `signer`, a member of `trust`: [`LeafProblem::StaleIssuer`] if it
/// chains to another CA of the bundle.
pub(crate) fn validate_leaf_signed_by(
    data: &SecretData,
    trust: &TrustBundle,
    signer: Option<&CertificateDer<'static>>,
    expected_names: &[&str],
    now: OffsetDateTime,
) -> Result<LeafInfo, LeafProblem> {
    for key in [CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY] {
        if !data.contains_key(key) {
            return Err(LeafProblem::MissingKey { key });
        }
    }
    let get = |k: &str| data.get(k).map(Vec::as_slice).unwrap_or_default();
    let bundle = pem::certs(CA_CERT_KEY, get(CA_CERT_KEY)).map_err(LeafProblem::from_error)?;
    let cert_der =
        pem::one_cert(TLS_CERT_KEY, get(TLS_CERT_KEY)).map_err(LeafProblem::from_error)?;
    let key = pem::key(TLS_KEY_KEY, get(TLS_KEY_KEY)).map_err(LeafProblem::from_error)?;
    if bundle.as_slice() != trust.certs() {
        return Err(LeafProblem::CaMismatch);
    }
    let (_, x509) = X509Certificate::from_der(cert_der.as_ref()).map_err(|e| LeafProblem::Pem {
        key: TLS_CERT_KEY,
        reason: PemProblem::BadCertificate(e.to_string()),
    })?;
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(LeafProblem::KeyMismatch);
    }
    let not_before = asn1_time(x509.validity().not_before);
    let not_after = asn1_time(x509.validity().not_after);
    if now < not_before {
        return Err(LeafProblem::NotYetValid { not_before });
    }
    if now > not_after {
        return Err(LeafProblem::Expired { not_after });
    }
    let eku = x509.extended_key_usage().ok().flatten().map(|e| e.value);
    for (which, present) in [
        (Eku::ServerAuth, eku.is_some_and(|e| e.server_auth || e.any)),
        (Eku::ClientAuth, eku.is_some_and(|e| e.client_auth || e.any)),
    ] {
        if !present {
            return Err(LeafProblem::MissingEku { which });
        }
    }
    let chain = |anchors: &[CertificateDer<'static>]| {
        verify_chain(&cert_der, anchors, now, webpki::KeyUsage::server_auth())
    };
    match signer {
        // The common case costs one verification: the leaf chains to the signer.
        Some(s) if chain(std::slice::from_ref(s)).is_ok() => {}
        Some(_) => {
            chain(trust.certs()).map_err(|reason| LeafProblem::ChainInvalid { reason })?;
            return Err(LeafProblem::StaleIssuer);
        }
        None => chain(trust.certs()).map_err(|reason| LeafProblem::ChainInvalid { reason })?,
    }
    let ee = webpki::EndEntityCert::try_from(&cert_der).map_err(|e| LeafProblem::ChainInvalid {
        reason: e.to_string(),
    })?;
    for name in expected_names {
        let covered = ServerName::try_from(*name)
            .ok()
            .is_some_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok());
        if !covered {
            return Err(LeafProblem::NameNotCovered {
                name: (*name).to_owned(),
            });
        }
    }
    let dns_names = x509
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(n) => Some((*n).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LeafInfo {
        not_before,
        not_after,
        dns_names,
        cert_der,
    })
}
