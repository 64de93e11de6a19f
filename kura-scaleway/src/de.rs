//! Decoding helpers.

use serde::{Deserialize, Deserializer};

/// Decodes `null` as the default value (Scaleway sends `null` for empty lists
/// in some APIs).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
