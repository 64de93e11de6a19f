//! Total PEM decoding for Secret data: every failure is a typed [`PemProblem`].

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, PemProblem};

fn pem_err(key: &'static str, reason: PemProblem) -> Error {
    Error::Pem { key, reason }
}

/// Decodes every `CERTIFICATE` section of `pem`, checking that each one is a
/// parsable X.509 certificate. At least one is required.
pub(crate) fn certs(key: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let der = item.map_err(|e| pem_err(key, PemProblem::Malformed(e.to_string())))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| pem_err(key, PemProblem::BadCertificate(e.to_string())))?;
        out.push(der);
    }
    if out.is_empty() {
        return Err(pem_err(
            key,
            PemProblem::NoSection {
                expected: "CERTIFICATE",
            },
        ));
    }
    Ok(out)
}

/// Decodes exactly one `CERTIFICATE` section.
pub(crate) fn one_cert(key: &'static str, pem: &[u8]) -> Result<CertificateDer<'static>, Error> {
    let mut all = certs(key, pem)?;
    if all.len() != 1 {
        return Err(pem_err(
            key,
            PemProblem::TooMany {
                expected: "CERTIFICATE",
                found: all.len(),
            },
        ));
    }
    all.pop().ok_or(pem_err(
        key,
        PemProblem::NoSection {
            expected: "CERTIFICATE",
        },
    ))
}

/// Decodes one PKCS#8 `PRIVATE KEY` section into an rcgen key pair (which checks
/// that the key is well-formed and of a supported algorithm).
pub(crate) fn key(key: &'static str, pem: &[u8]) -> Result<rcgen::KeyPair, Error> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => pem_err(
            key,
            PemProblem::NoSection {
                expected: "PRIVATE KEY",
            },
        ),
        other => pem_err(key, PemProblem::Malformed(other.to_string())),
    })?;
    rcgen::KeyPair::try_from(der.secret_pkcs8_der())
        .map_err(|e| pem_err(key, PemProblem::BadKey(e.to_string())))
}

/// The rustls form of an rcgen key pair.
pub(crate) fn rustls_key(key: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// Encodes DER certificates as a PEM bundle (LF line endings, 64 columns).
pub(crate) fn encode_certs<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    let sections: Vec<::pem::Pem> = certs
        .into_iter()
        .map(|c| ::pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))
        .collect();
    ::pem::encode_many_config(
        &sections,
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_typed() {
        assert!(matches!(
            certs("ca.pem", b"hello"),
            Err(Error::Pem {
                key: "ca.pem",
                reason: PemProblem::NoSection { .. }
            })
        ));
        assert!(matches!(
            certs(
                "ca.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err(Error::Pem {
                reason: PemProblem::BadCertificate(_),
                ..
            })
        ));
        assert!(matches!(
            key(
                "tls.key",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(Error::Pem {
                reason: PemProblem::BadKey(_),
                ..
            })
        ));
    }
}
