//! YAML output.

use serde::Serialize;

use crate::error::Error;

/// Serialises one object as a YAML document (no leading `---`, ends with a newline).
pub fn to_yaml<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    let mut text = serde_norway::to_string(value).map_err(|e| Error::Serialize {
        what: std::any::type_name::<T>(),
        format: "YAML",
        message: e.to_string(),
    })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Serialises objects as a YAML stream: each document starts with `---`, as
/// `kubectl apply -f -` expects.
///
/// ```
/// use kura_netpol::{InstancePolicy, PodName, YamlStream};
///
/// let policy = InstancePolicy::new("kura-acme".parse()?, "kura".parse()?, "acme".parse()?);
/// let mut stream = YamlStream::new();
/// stream.push(&policy.network_policy())?;
/// stream.push(&policy.external_service(&PodName::of_instance(policy.instance(), 0)?, None))?;
/// let text = stream.finish();
/// assert_eq!(text.matches("---\n").count(), 2);
/// assert!(text.contains("kind: NetworkPolicy") && text.contains("type: NodePort"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct YamlStream {
    out: String,
}

impl YamlStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one document.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<&mut Self, Error> {
        let doc = to_yaml(value)?;
        self.out.push_str("---\n");
        self.out.push_str(&doc);
        Ok(self)
    }

    /// The stream's text.
    pub fn finish(self) -> String {
        self.out
    }
}
