//! The account PKI with zero-downtime CA rotation as explicit states.
//!
//! A rotation moves through four states; every node must have picked up the
//! Secret data of one state before the controller advances to the next:
//!
//! | phase | signs leaves | trust bundle (`ca.pem` of every leaf) |
//! |---|---|---|
//! | [`Stable`](RotationPhase::Stable) | current CA | {current} |
//! | [`NextPublished`](RotationPhase::NextPublished) | current (old) CA | {next, current} |
//! | [`SigningWithNext`](RotationPhase::SigningWithNext) | new CA | {new, previous} |
//! | back to `Stable` | new CA | {new} |
//!
//! In `NextPublished` every node learns to trust the new CA before any leaf
//! signed by it exists; in `SigningWithNext` old and new leaves coexist and
//! authenticate each other because both CAs are trusted everywhere; only when
//! every leaf has been re-issued is the old CA dropped.
//!
//! The state is stored in the CA Secret: `ca.pem` / `ca-key.pem` always hold the
//! signing CA; `next-ca.pem` / `next-ca-key.pem` exist only in `NextPublished`;
//! `previous-ca.pem` exists only in `SigningWithNext`.

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::ca::{AccountCa, CA_CERT_KEY, CA_KEY_KEY, CaOptions};
use crate::error::Error;
use crate::leaf::{IssuedLeaf, LeafInfo, LeafProblem, LeafRequest, TrustBundle};
use crate::names::AccountHandle;
use crate::{SecretData, pem};

/// Secret data key of the next CA certificate during [`RotationPhase::NextPublished`].
pub const NEXT_CA_CERT_KEY: &str = "next-ca.pem";
/// Secret data key of the next CA key during [`RotationPhase::NextPublished`].
pub const NEXT_CA_KEY_KEY: &str = "next-ca-key.pem";
/// Secret data key of the previous CA certificate during [`RotationPhase::SigningWithNext`].
pub const PREVIOUS_CA_CERT_KEY: &str = "previous-ca.pem";

/// Where an account is in a CA rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RotationPhase {
    /// One CA, trusted and signing.
    Stable,
    /// A new CA is trusted everywhere; the old one still signs.
    NextPublished,
    /// The new CA signs; the previous one is still trusted.
    SigningWithNext,
}

/// An account's CA material across a rotation: which CA signs, which CAs are
/// trusted.
///
/// ```
/// use kura_ca::*;
/// let now = time::OffsetDateTime::now_utc();
/// let acct = AccountHandle::new("acme")?;
/// let pki = AccountPki::generate(&acct, &CaOptions::default(), now)?;
/// assert_eq!(pki.phase(), RotationPhase::Stable);
/// let pki = pki.begin_rotation(&acct, &CaOptions::default(), now)?; // publish the next CA
/// assert_eq!(pki.trust_bundle().certs().len(), 2);
/// let pki = pki.promote_next()?;          // re-issue leaves with the new CA
/// let pki = pki.drop_previous()?;         // every leaf re-issued: drop the old CA
/// assert_eq!(pki.phase(), RotationPhase::Stable);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AccountPki {
    signing: AccountCa,
    next: Option<AccountCa>,
    previous: Option<CertificateDer<'static>>,
}

impl AccountPki {
    /// A stable PKI around a freshly generated CA.
    pub fn generate(
        account: &AccountHandle,
        options: &CaOptions,
        now: OffsetDateTime,
    ) -> Result<Self, Error> {
        Ok(Self::from_ca(AccountCa::generate(account, options, now)?))
    }

    /// A stable PKI around an existing CA.
    pub fn from_ca(ca: AccountCa) -> Self {
        Self {
            signing: ca,
            next: None,
            previous: None,
        }
    }

    /// Loads the PKI (and its rotation phase) from CA Secret data, validating
    /// every CA it holds at `now`.
    pub fn from_secret_data(data: &SecretData, now: OffsetDateTime) -> Result<Self, Error> {
        let signing = AccountCa::from_secret_data(data, now)?;
        let next = match (data.get(NEXT_CA_CERT_KEY), data.get(NEXT_CA_KEY_KEY)) {
            (Some(c), Some(k)) => Some(AccountCa::from_pem(c, k, now)?),
            (None, None) => None,
            _ => {
                return Err(Error::Rotation(format!(
                    "{NEXT_CA_CERT_KEY} and {NEXT_CA_KEY_KEY} must be present together"
                )));
            }
        };
        let previous = data
            .get(PREVIOUS_CA_CERT_KEY)
            .map(|p| pem::one_cert(PREVIOUS_CA_CERT_KEY, p))
            .transpose()?;
        if next.is_some() && previous.is_some() {
            return Err(Error::Rotation(
                "a next and a previous CA cannot both be present".into(),
            ));
        }
        Ok(Self {
            signing,
            next,
            previous,
        })
    }

    /// CA Secret data for the current phase.
    pub fn to_secret_data(&self) -> SecretData {
        let mut data = self.signing.to_secret_data();
        if let Some(next) = &self.next {
            let n = next.to_secret_data();
            for (from, to) in [
                (CA_CERT_KEY, NEXT_CA_CERT_KEY),
                (CA_KEY_KEY, NEXT_CA_KEY_KEY),
            ] {
                if let Some(v) = n.get(from) {
                    data.insert(to.to_owned(), v.clone());
                }
            }
        }
        if let Some(prev) = &self.previous {
            data.insert(
                PREVIOUS_CA_CERT_KEY.to_owned(),
                pem::encode_certs([prev]).into_bytes(),
            );
        }
        data
    }

    /// The rotation phase.
    pub fn phase(&self) -> RotationPhase {
        match (&self.next, &self.previous) {
            (Some(_), _) => RotationPhase::NextPublished,
            (None, Some(_)) => RotationPhase::SigningWithNext,
            (None, None) => RotationPhase::Stable,
        }
    }

    /// The CA that signs leaves now.
    pub fn signing_ca(&self) -> &AccountCa {
        &self.signing
    }

    /// The CAs every node must trust now, newest first.
    pub fn trust_bundle(&self) -> TrustBundle {
        let mut certs = Vec::with_capacity(2);
        if let Some(next) = &self.next {
            certs.push(next.cert_der().clone());
        }
        certs.push(self.signing.cert_der().clone());
        if let Some(prev) = &self.previous {
            certs.push(prev.clone());
        }
        // Never empty: the signing CA is always present.
        TrustBundle::new(certs).unwrap_or_else(|_| TrustBundle::single(&self.signing))
    }

    /// Issues a leaf signed by the signing CA, carrying the current trust bundle.
    pub fn issue_leaf(
        &self,
        request: &LeafRequest,
        now: OffsetDateTime,
    ) -> Result<IssuedLeaf, Error> {
        self.signing.issue_leaf(request, &self.trust_bundle(), now)
    }

    /// [`validate_leaf`](crate::validate_leaf) against the current trust bundle, plus the check that the
    /// leaf was signed by the current signing CA ([`LeafProblem::StaleIssuer`]
    /// otherwise), so a rotation re-issues every leaf.
    pub fn validate_leaf(
        &self,
        data: &SecretData,
        expected_names: &[&str],
        now: OffsetDateTime,
    ) -> Result<LeafInfo, LeafProblem> {
        crate::leaf::validate_leaf_signed_by(
            data,
            &self.trust_bundle(),
            Some(self.signing.cert_der()),
            expected_names,
            now,
        )
    }

    /// `Stable` → `NextPublished`: generates the next CA and adds it to the bundle.
    pub fn begin_rotation(
        self,
        account: &AccountHandle,
        options: &CaOptions,
        now: OffsetDateTime,
    ) -> Result<Self, Error> {
        if self.phase() != RotationPhase::Stable {
            return Err(Error::Rotation(format!(
                "cannot begin a rotation in phase {:?}",
                self.phase()
            )));
        }
        Ok(Self {
            next: Some(AccountCa::generate(account, options, now)?),
            ..self
        })
    }

    /// `NextPublished` → `SigningWithNext`: the new CA signs, the old one stays trusted.
    pub fn promote_next(self) -> Result<Self, Error> {
        match self.next {
            Some(next) => Ok(Self {
                previous: Some(self.signing.cert_der().clone()),
                signing: next,
                next: None,
            }),
            None => Err(Error::Rotation(format!(
                "cannot promote in phase {:?}: no next CA",
                self.phase()
            ))),
        }
    }

    /// `SigningWithNext` → `Stable`: drops the previous CA from the bundle. Call
    /// only once every leaf has been re-issued by the new CA.
    pub fn drop_previous(self) -> Result<Self, Error> {
        if self.phase() != RotationPhase::SigningWithNext {
            return Err(Error::Rotation(format!(
                "cannot drop the previous CA in phase {:?}",
                self.phase()
            )));
        }
        Ok(Self {
            previous: None,
            ..self
        })
    }
}
