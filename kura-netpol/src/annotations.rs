//! Pod annotations: bandwidth limits and merging user keys with controller keys.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::quantity::Bandwidth;

/// Pod annotation capping the pod's egress, in bits per second (read by the
/// CNI bandwidth plugin and Cilium's bandwidth manager).
pub const EGRESS_BANDWIDTH_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";
/// Pod annotation capping the pod's ingress, in bits per second.
pub const INGRESS_BANDWIDTH_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";

/// The bandwidth limits of a pod.
///
/// ```
/// use std::collections::BTreeMap;
/// use kura_netpol::{Bandwidth, BandwidthLimits, EGRESS_BANDWIDTH_ANNOTATION};
///
/// let user = BTreeMap::from([(EGRESS_BANDWIDTH_ANNOTATION.to_owned(), "750M".to_owned())]);
/// let limits = BandwidthLimits::from_annotations(&user)?;
/// assert_eq!(limits.egress.map(|b| b.bits_per_second()), Some(750_000_000));
/// assert_eq!(limits.to_annotations(), user);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BandwidthLimits {
    /// `kubernetes.io/egress-bandwidth`.
    pub egress: Option<Bandwidth>,
    /// `kubernetes.io/ingress-bandwidth`.
    pub ingress: Option<Bandwidth>,
}

impl BandwidthLimits {
    /// Reads and validates the bandwidth annotations of a map; other keys are
    /// ignored. Fails with [`Error::InvalidBandwidthAnnotation`] naming the key.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Self, Error> {
        let read = |key: &'static str| {
            annotations
                .get(key)
                .map(|value| {
                    Bandwidth::parse(value).map_err(|source| Error::InvalidBandwidthAnnotation {
                        annotation: key,
                        source: Box::new(source),
                    })
                })
                .transpose()
        };
        Ok(BandwidthLimits {
            egress: read(EGRESS_BANDWIDTH_ANNOTATION)?,
            ingress: read(INGRESS_BANDWIDTH_ANNOTATION)?,
        })
    }

    /// The annotations for the limits that are set, values in canonical
    /// quantity form.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        [
            (EGRESS_BANDWIDTH_ANNOTATION, self.egress),
            (INGRESS_BANDWIDTH_ANNOTATION, self.ingress),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key.to_owned(), v.to_string())))
        .collect()
    }
}

/// The controller-owned scrape annotations of a Kura pod
/// (`prometheus.io/scrape`, `prometheus.io/port-name`, `prometheus.io/path`).
pub fn prometheus_annotations() -> BTreeMap<String, String> {
    [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port-name", crate::policy::HTTP_PORT_NAME),
        ("prometheus.io/path", "/metrics"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A user annotation that a controller-owned key replaced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OverriddenAnnotation {
    /// The key.
    pub key: String,
    /// What the user asked for.
    pub user_value: String,
    /// What the controller wrote instead.
    pub controller_value: String,
}

/// The result of [`merge_annotations`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedAnnotations {
    /// User annotations with the controller-owned keys written over them.
    pub annotations: BTreeMap<String, String>,
    /// User keys whose value the controller replaced, sorted by key. A user
    /// key that already had the controller's value is not listed.
    pub overridden: Vec<OverriddenAnnotation>,
}

/// Merges user annotations with controller-owned ones: the controller wins,
/// and the result lists every user value it replaced so that a caller can
/// surface it (an event, a status message) instead of dropping it silently.
///
/// ```
/// use std::collections::BTreeMap;
/// use kura_netpol::{merge_annotations, prometheus_annotations};
///
/// let user = BTreeMap::from([
///     ("prometheus.io/path".to_owned(), "/custom".to_owned()),
///     ("team".to_owned(), "ios".to_owned()),
/// ]);
/// let merged = merge_annotations(&user, &prometheus_annotations());
/// assert_eq!(merged.annotations["prometheus.io/path"], "/metrics");
/// assert_eq!(merged.annotations["team"], "ios");
/// assert_eq!(merged.overridden[0].key, "prometheus.io/path");
/// assert_eq!(merged.overridden[0].user_value, "/custom");
/// ```
pub fn merge_annotations(
    user: &BTreeMap<String, String>,
    controller: &BTreeMap<String, String>,
) -> MergedAnnotations {
    let mut annotations = user.clone();
    let mut overridden = Vec::new();
    for (key, value) in controller {
        if let Some(previous) = annotations.insert(key.clone(), value.clone())
            && previous != *value
        {
            overridden.push(OverriddenAnnotation {
                key: key.clone(),
                user_value: previous,
                controller_value: value.clone(),
            });
        }
    }
    MergedAnnotations {
        annotations,
        overridden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bad_bandwidth_names_the_annotation() {
        let err =
            BandwidthLimits::from_annotations(&map(&[(INGRESS_BANDWIDTH_ANNOTATION, "lots")]))
                .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidBandwidthAnnotation {
                annotation: INGRESS_BANDWIDTH_ANNOTATION,
                ..
            }
        ));
        assert!(
            err.to_string().starts_with(
                "annotation kubernetes.io/ingress-bandwidth: invalid quantity \"lots\""
            ),
            "{err}"
        );
        assert_eq!(
            BandwidthLimits::from_annotations(&map(&[("x", "y")])).unwrap(),
            BandwidthLimits::default()
        );
    }

    #[test]
    fn controller_wins_and_reports_only_real_overrides() {
        let user = map(&[
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port-name", "metrics"),
            (EGRESS_BANDWIDTH_ANNOTATION, "1G"),
            ("a", "b"),
        ]);
        let limits = BandwidthLimits {
            egress: Some(Bandwidth::parse("750M").unwrap()),
            ingress: None,
        };
        let mut controller = prometheus_annotations();
        controller.extend(limits.to_annotations());
        let merged = merge_annotations(&user, &controller);
        assert_eq!(
            merged.annotations,
            map(&[
                ("a", "b"),
                (EGRESS_BANDWIDTH_ANNOTATION, "750M"),
                ("prometheus.io/path", "/metrics"),
                ("prometheus.io/port-name", "http"),
                ("prometheus.io/scrape", "true"),
            ])
        );
        let keys: Vec<_> = merged.overridden.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [EGRESS_BANDWIDTH_ANNOTATION, "prometheus.io/port-name"]
        );
        assert_eq!(merged.overridden[0].user_value, "1G");
        assert_eq!(merged.overridden[0].controller_value, "750M");
    }
}
