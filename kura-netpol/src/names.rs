//! Validated names: instance, namespace, account, region, pod.

use std::fmt;

use crate::error::Error;

fn invalid(kind: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidName {
        kind,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// RFC 1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends.
fn check_dns_label(
    kind: &'static str,
    value: &str,
    max: usize,
    alpha_first: bool,
) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(kind, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            kind,
            value,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(
            kind,
            value,
            format!("{c:?} is not allowed (lowercase letters, digits and '-' only)"),
        ));
    }
    let first = value.as_bytes()[0];
    if alpha_first && !first.is_ascii_lowercase() {
        return Err(invalid(kind, value, "must start with a lowercase letter"));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid(
            kind,
            value,
            "must start and end with a letter or digit",
        ));
    }
    Ok(())
}

/// Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn check_label_value(kind: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(kind, value, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(invalid(kind, value, "must be at most 63 characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(
            kind,
            value,
            format!("{c:?} is not allowed (letters, digits, '-', '_' and '.' only)"),
        ));
    }
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    if !alnum(value.as_bytes().first()) || !alnum(value.as_bytes().last()) {
        return Err(invalid(
            kind,
            value,
            "must start and end with a letter or digit",
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, |$v:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Validates and wraps a ", $kind, ".")]
            pub fn new(value: impl Into<String>) -> Result<Self, Error> {
                let $v: String = value.into();
                $check?;
                Ok($name($v))
            }

            #[doc = concat!("The ", $kind, " as a string.")]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::new(value)
            }
        }
    };
}

name_type!(
    /// A Kura instance name: an RFC 1035 label short enough that
    /// `<instance>-external` (a Service name) stays within 63 characters,
    /// so at most 54 characters.
    InstanceName,
    "instance name",
    |v| check_dns_label("instance name", &v, InstanceName::MAX_LEN, true)
);

impl InstanceName {
    /// Longest accepted instance name.
    pub const MAX_LEN: usize = 63 - "-external".len();
}

name_type!(
    /// A Kubernetes namespace name (RFC 1123 label).
    Namespace,
    "namespace",
    |v| check_dns_label("namespace", &v, 63, false)
);

name_type!(
    /// A tenant's account handle, used as the `tuist.dev/account` label value.
    AccountHandle,
    "account handle",
    |v| check_label_value("account handle", &v)
);

name_type!(
    /// A region, used as the `tuist.dev/region` label value.
    Region,
    "region",
    |v| check_label_value("region", &v)
);

name_type!(
    /// A pod name used in the `statefulset.kubernetes.io/pod-name` selector:
    /// an RFC 1123 label (StatefulSet pod names are `<statefulset>-<ordinal>`).
    PodName,
    "pod name",
    |v| check_dns_label("pod name", &v, 63, false)
);

name_type!(
    /// The `app.kubernetes.io/managed-by` label value.
    ManagedBy,
    "managed-by label value",
    |v| check_label_value("managed-by label value", &v)
);

impl PodName {
    /// The pod of `instance` with the given StatefulSet ordinal
    /// (`<instance>-<ordinal>`).
    ///
    /// Fails when the result would exceed 63 characters.
    pub fn of_instance(instance: &InstanceName, ordinal: u32) -> Result<PodName, Error> {
        PodName::new(format!("{instance}-{ordinal}"))
    }
}

impl Default for ManagedBy {
    fn default() -> Self {
        ManagedBy("kura-operator".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_leave_room_for_suffixes() {
        assert!(InstanceName::new("kura-acme").is_ok());
        assert!(InstanceName::new("a".repeat(54)).is_ok());
        assert!(InstanceName::new("a".repeat(55)).is_err());
        for bad in ["", "1abc", "Kura", "kura_", "-kura", "kura-", "ku.ra"] {
            let err = InstanceName::new(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidName {
                        kind: "instance name",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn namespaces_pods_and_label_values() {
        assert!(Namespace::new("0cache").is_ok());
        assert!(Namespace::new("a".repeat(64)).is_err());
        assert!(AccountHandle::new("Acme_Corp.io").is_ok());
        assert!(AccountHandle::new("acme corp").is_err());
        assert!(AccountHandle::new("_acme").is_err());
        assert!(AccountHandle::new("a".repeat(64)).is_err());
        assert!(Region::new("fr-par").is_ok());
        assert!(PodName::new("kura-acme-0").is_ok());
        assert!(
            PodName::new("kura.acme-0").is_err(),
            "not a valid label value"
        );
        let instance = InstanceName::new("a".repeat(54)).unwrap();
        assert_eq!(
            PodName::of_instance(&instance, 99_999_999)
                .unwrap()
                .as_str()
                .len(),
            63
        );
        assert!(PodName::of_instance(&instance, 999_999_999).is_err());
        assert_eq!(ManagedBy::default().as_str(), "kura-operator");
    }
}
