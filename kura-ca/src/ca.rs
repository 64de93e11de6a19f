//! Account certificate authorities: generation, Secret encoding, loading and
//! validation.

use std::collections::BTreeMap;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{CaProblem, Error};
use crate::names::AccountHandle;
use crate::{SecretData, pem};

/// Secret data key of the CA certificate (and of the trust bundle in a leaf Secret).
pub const CA_CERT_KEY: &str = "ca.pem";
/// Secret data key of the CA private key (PKCS#8 PEM).
pub const CA_KEY_KEY: &str = "ca-key.pem";

/// Default CA lifetime: 10 years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::days(3650);
/// Default backdating of NotBefore, absorbing clock skew between nodes: 1 hour.
pub const DEFAULT_BACKDATE: Duration = Duration::hours(1);

/// The key algorithm of a generated CA or leaf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default, as in the system we replace).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    pub(crate) fn generate(self) -> Result<KeyPair, Error> {
        let alg = match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        };
        Ok(KeyPair::generate_for(alg)?)
    }
}

/// Options for [`AccountCa::generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaOptions {
    /// Key algorithm (default ECDSA P-256).
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime from issuance (default 10 years).
    pub validity: Duration,
    /// How far NotBefore is set in the past (default 1 hour).
    pub backdate: Duration,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            key_algorithm: KeyAlgorithm::default(),
            validity: DEFAULT_CA_VALIDITY,
            backdate: DEFAULT_BACKDATE,
        }
    }
}

impl CaOptions {
    /// Sets the key algorithm.
    pub fn key_algorithm(mut self, alg: KeyAlgorithm) -> Self {
        self.key_algorithm = alg;
        self
    }

    /// Sets the lifetime.
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }
}

/// A random positive 128-bit serial number (top bit cleared, never zero).
pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::InvalidOption("system random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6; // keep the serial a full 16 bytes and non-zero
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn check_validity(validity: Duration, backdate: Duration) -> Result<(), Error> {
    if validity <= Duration::ZERO {
        return Err(Error::InvalidOption(format!(
            "validity must be positive, got {validity}"
        )));
    }
    if backdate < Duration::ZERO {
        return Err(Error::InvalidOption(format!(
            "backdate must not be negative, got {backdate}"
        )));
    }
    Ok(())
}

/// Converts an x509-parser time to `OffsetDateTime`.
pub(crate) fn asn1_time(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    t.to_datetime()
}

/// The subject common name of an account CA: `kura <account> peer CA`.
pub fn ca_common_name(account: &AccountHandle) -> String {
    format!("kura {} peer CA", account.as_str())
}

/// A per-account certificate authority: its certificate and signing key.
///
/// ```
/// use kura_ca::{AccountCa, AccountHandle, CaOptions};
/// let now = time::OffsetDateTime::now_utc();
/// let ca = AccountCa::generate(&AccountHandle::new("acme")?, &CaOptions::default(), now)?;
/// let data = ca.to_secret_data();
/// let loaded = AccountCa::from_secret_data(&data, now)?;
/// assert_eq!(loaded.cert_der(), ca.cert_der());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AccountCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    common_name: String,
}

impl std::fmt::Debug for AccountCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("AccountCa")
            .field("common_name", &self.common_name)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl AccountCa {
    /// Generates a new CA for `account`, valid from `now - backdate` for
    /// `options.validity`.
    ///
    /// The certificate has CN `kura <account> peer CA`, a random positive 128-bit
    /// serial, `basicConstraints CA:true, pathlen:0` (it signs leaves only) and
    /// key usage `keyCertSign, cRLSign`.
    pub fn generate(
        account: &AccountHandle,
        options: &CaOptions,
        now: OffsetDateTime,
    ) -> Result<Self, Error> {
        check_validity(options.validity, options.backdate)?;
        let key = options.key_algorithm.generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, ca_common_name(account));
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        params.not_before = now - options.backdate;
        params.not_after = now + options.validity;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let cert_pem = pem::encode_certs([&cert_der]);
        Ok(Self {
            not_before: params.not_before,
            not_after: params.not_after,
            common_name: ca_common_name(account),
            issuer: Issuer::new(params, key),
            cert_der,
            cert_pem,
        })
    }

    /// Loads a CA from Secret data (`ca.pem`, `ca-key.pem`) and checks that it is
    /// usable at `now`: a CA certificate allowed to sign, whose key matches, and
    /// within its validity period. Failures are [`Error::InvalidCa`] with a
    /// [`CaProblem`], or [`Error::MissingKey`] / [`Error::Pem`] for bad data.
    pub fn from_secret_data(data: &SecretData, now: OffsetDateTime) -> Result<Self, Error> {
        let cert_pem = data
            .get(CA_CERT_KEY)
            .ok_or(Error::MissingKey { key: CA_CERT_KEY })?;
        let key_pem = data
            .get(CA_KEY_KEY)
            .ok_or(Error::MissingKey { key: CA_KEY_KEY })?;
        Self::from_pem(cert_pem, key_pem, now)
    }

    /// Like [`from_secret_data`](Self::from_secret_data), from the two PEM documents.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], now: OffsetDateTime) -> Result<Self, Error> {
        let cert_der = pem::one_cert(CA_CERT_KEY, cert_pem)?;
        let key = pem::key(CA_KEY_KEY, key_pem)?;
        let (_, x509) = X509Certificate::from_der(cert_der.as_ref()).map_err(|e| Error::Pem {
            key: CA_CERT_KEY,
            reason: crate::PemProblem::BadCertificate(e.to_string()),
        })?;
        let is_ca = x509
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaProblem::NotACa.into());
        }
        let can_sign = x509
            .key_usage()
            .ok()
            .flatten()
            .is_none_or(|ku| ku.value.key_cert_sign());
        if !can_sign {
            return Err(CaProblem::CannotSign.into());
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaProblem::KeyMismatch.into());
        }
        let not_before = asn1_time(x509.validity().not_before);
        let not_after = asn1_time(x509.validity().not_after);
        if now < not_before {
            return Err(CaProblem::NotYetValid { not_before }.into());
        }
        if now > not_after {
            return Err(CaProblem::Expired { not_after }.into());
        }
        let common_name = x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Self {
            cert_pem: pem::encode_certs([&cert_der]),
            cert_der,
            issuer,
            not_before,
            not_after,
            common_name,
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key as PKCS#8 PEM. Handle with care.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The subject common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the validity period.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Secret data for the CA Secret: `ca.pem` and `ca-key.pem`.
    pub fn to_secret_data(&self) -> SecretData {
        BTreeMap::from([
            (CA_CERT_KEY.to_owned(), self.cert_pem.clone().into_bytes()),
            (CA_KEY_KEY.to_owned(), self.key_pem().into_bytes()),
        ])
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct() -> AccountHandle {
        AccountHandle::new("acme").unwrap()
    }

    #[test]
    fn generated_ca_has_reference_shape() {
        let now = OffsetDateTime::now_utc();
        let ca = AccountCa::generate(&acct(), &CaOptions::default(), now).unwrap();
        let (_, x) = X509Certificate::from_der(ca.cert_der().as_ref()).unwrap();
        assert_eq!(
            x.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "kura acme peer CA"
        );
        assert!(x.basic_constraints().unwrap().unwrap().value.ca);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        let serial = x.raw_serial();
        assert_eq!(serial.len(), 16, "128-bit serial");
        assert_eq!(serial[0] & 0x80, 0, "positive");
        let nb = asn1_time(x.validity().not_before);
        let na = asn1_time(x.validity().not_after);
        assert!((now - nb - Duration::hours(1)).abs() < Duration::seconds(2));
        assert!((na - now - Duration::days(3650)).abs() < Duration::seconds(2));
    }

    #[test]
    fn serials_differ() {
        let now = OffsetDateTime::now_utc();
        let a = AccountCa::generate(&acct(), &CaOptions::default(), now).unwrap();
        let b = AccountCa::generate(&acct(), &CaOptions::default(), now).unwrap();
        let (_, xa) = X509Certificate::from_der(a.cert_der().as_ref()).unwrap();
        let (_, xb) = X509Certificate::from_der(b.cert_der().as_ref()).unwrap();
        assert_ne!(xa.raw_serial(), xb.raw_serial());
    }

    #[test]
    fn load_rejects_mismatched_key_and_expired() {
        let now = OffsetDateTime::now_utc();
        let a = AccountCa::generate(&acct(), &CaOptions::default(), now).unwrap();
        let b = AccountCa::generate(&acct(), &CaOptions::default(), now).unwrap();
        let err =
            AccountCa::from_pem(a.cert_pem().as_bytes(), b.key_pem().as_bytes(), now).unwrap_err();
        assert!(matches!(err, Error::InvalidCa(CaProblem::KeyMismatch)));
        let err = AccountCa::from_secret_data(&a.to_secret_data(), now + Duration::days(3651))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidCa(CaProblem::Expired { .. })));
        let err =
            AccountCa::from_secret_data(&a.to_secret_data(), now - Duration::days(1)).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidCa(CaProblem::NotYetValid { .. })
        ));
        let mut data = a.to_secret_data();
        data.remove(CA_KEY_KEY);
        assert!(matches!(
            AccountCa::from_secret_data(&data, now),
            Err(Error::MissingKey { key: "ca-key.pem" })
        ));
    }

    #[test]
    fn all_key_algorithms_round_trip() {
        let now = OffsetDateTime::now_utc();
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
        ] {
            let ca = AccountCa::generate(&acct(), &CaOptions::default().key_algorithm(alg), now)
                .unwrap();
            let back = AccountCa::from_secret_data(&ca.to_secret_data(), now).unwrap();
            assert_eq!(back.cert_der(), ca.cert_der());
            assert_eq!(back.key_pem(), ca.key_pem());
        }
    }

    #[test]
    fn zero_validity_is_rejected() {
        let now = OffsetDateTime::now_utc();
        let err = AccountCa::generate(&acct(), &CaOptions::default().validity(Duration::ZERO), now)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)));
    }
}
