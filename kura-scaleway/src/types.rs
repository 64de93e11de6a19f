//! Identifiers, locations and state enums shared by every API.
//!
//! Every enum that mirrors an API value has an `Unknown(String)` fallback so
//! that a value added by Scaleway tomorrow never breaks decoding today.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

macro_rules! id_newtype {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a raw identifier.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            /// The identifier as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}

id_newtype!(
    /// Instance server id.
    ServerId,
    /// Instance private NIC id.
    PrivateNicId,
    /// VPC private network id.
    PrivateNetworkId,
    /// VPC id.
    VpcId,
    /// VPC subnet id.
    SubnetId,
    /// Image id (marketplace local image or Instance image).
    ImageId,
    /// IPAM IP id, or Instance IP id.
    IpId,
    /// Volume id (Instance or Block).
    VolumeId,
    /// Project id.
    ProjectId,
    /// Organization id.
    OrganizationId,
    /// Instance task id.
    TaskId,
    /// Elastic Metal server id.
    BaremetalServerId,
    /// Elastic Metal offer id.
    OfferId,
    /// Elastic Metal option id.
    OptionId,
    /// Elastic Metal OS id.
    OsId,
    /// Elastic Metal server private network (attachment) id.
    ServerPrivateNetworkId,
    /// Instance commercial type such as `PRO2-S`.
    CommercialType,
);

/// A Scaleway zone such as `fr-par-1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Zone(String);

/// A Scaleway region such as `fr-par`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Region(String);

fn is_location_part(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase())
}

impl Zone {
    /// Parses a zone (`<country>-<city>-<n>`, e.g. `fr-par-1`).
    pub fn new(zone: impl Into<String>) -> Result<Self, Error> {
        let zone = zone.into();
        let parts: Vec<&str> = zone.split('-').collect();
        let ok = parts.len() == 3
            && is_location_part(parts[0])
            && is_location_part(parts[1])
            && !parts[2].is_empty()
            && parts[2].bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(Self(zone))
        } else {
            Err(Error::InvalidInput {
                message: format!("invalid zone {zone:?}: expected e.g. fr-par-1"),
            })
        }
    }
    /// The zone name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The region this zone belongs to (`fr-par-1` → `fr-par`).
    pub fn region(&self) -> Region {
        let mut parts = self.0.rsplitn(2, '-');
        let _n = parts.next();
        Region(parts.next().unwrap_or(&self.0).to_owned())
    }
}

impl Region {
    /// Parses a region (`<country>-<city>`, e.g. `fr-par`).
    pub fn new(region: impl Into<String>) -> Result<Self, Error> {
        let region = region.into();
        let parts: Vec<&str> = region.split('-').collect();
        if parts.len() == 2 && parts.iter().all(|p| is_location_part(p)) {
            Ok(Self(region))
        } else {
            Err(Error::InvalidInput {
                message: format!("invalid region {region:?}: expected e.g. fr-par"),
            })
        }
    }
    /// The region name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}
impl FromStr for Region {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A MAC address as reported by an API.
///
/// The Instance API reports lower case, IPAM upper case: equality and hashing
/// are therefore case-insensitive.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct MacAddress(String);

impl MacAddress {
    /// Wraps a MAC address string.
    pub fn new(mac: impl Into<String>) -> Self {
        Self(mac.into())
    }
    /// The address as reported by the API (case preserved).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Case-insensitive comparison with a string.
    pub fn matches(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}
impl PartialEq for MacAddress {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}
impl Eq for MacAddress {}
impl std::hash::Hash for MacAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}
impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! api_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $wire:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A value this version of the crate does not know.
            Unknown(String),
        }
        impl $name {
            /// The value as sent on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Unknown(s) => s.as_str(),
                }
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::Unknown(String::new())
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => Self::$variant,)*
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from(s.as_ref()))
            }
        }
    };
}

api_enum!(
    /// Instance server state.
    ServerState {
        /// Running.
        Running => "running",
        /// Stopped (deallocated, not billed for compute).
        Stopped => "stopped",
        /// Stopped but still allocated on its hypervisor.
        StoppedInPlace => "stopped in place",
        /// Starting.
        Starting => "starting",
        /// Stopping (also while terminating).
        Stopping => "stopping",
        /// Locked by Scaleway.
        Locked => "locked",
    }
);

impl ServerState {
    /// Whether the Instance server waiter stops on this state.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Running | Self::Stopped | Self::StoppedInPlace | Self::Locked
        )
    }
}

api_enum!(
    /// Instance server action (`POST /servers/{id}/action`).
    ServerAction {
        /// Power on.
        Poweron => "poweron",
        /// Power off (deallocates).
        Poweroff => "poweroff",
        /// Stop, keeping the allocation.
        StopInPlace => "stop_in_place",
        /// Reboot.
        Reboot => "reboot",
        /// Back up.
        Backup => "backup",
        /// Power off and delete the server and its local volumes.
        Terminate => "terminate",
        /// Switch to routed IPs.
        EnableRoutedIp => "enable_routed_ip",
    }
);

api_enum!(
    /// Instance task status.
    TaskStatus {
        /// Pending.
        Pending => "pending",
        /// Started.
        Started => "started",
        /// Succeeded.
        Success => "success",
        /// Failed.
        Failure => "failure",
    }
);

api_enum!(
    /// Instance private NIC state.
    PrivateNicState {
        /// Ready.
        Available => "available",
        /// Being configured.
        Syncing => "syncing",
        /// Configuration failed.
        SyncingError => "syncing_error",
    }
);

impl PrivateNicState {
    /// Whether the NIC waiter stops on this state.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Available | Self::SyncingError)
    }
}

api_enum!(
    /// Instance public IP state.
    IpState {
        /// Being attached.
        Pending => "pending",
        /// Attached.
        Attached => "attached",
        /// Detached.
        Detached => "detached",
        /// Error.
        Error => "error",
    }
);

api_enum!(
    /// Instance IP family.
    IpFamily {
        /// IPv4.
        Inet => "inet",
        /// IPv6.
        Inet6 => "inet6",
    }
);

api_enum!(
    /// Instance volume type.
    VolumeType {
        /// Local SSD (deleted with the server on terminate).
        LSsd => "l_ssd",
        /// Block Storage (SBS) volume (survives terminate).
        SbsVolume => "sbs_volume",
        /// Scratch volume.
        Scratch => "scratch",
    }
);

api_enum!(
    /// Instance boot type.
    BootType {
        /// Boot from the local volume.
        Local => "local",
        /// Rescue image.
        Rescue => "rescue",
        /// Boot script (legacy).
        Bootscript => "bootscript",
    }
);

api_enum!(
    /// IPAM resource type.
    ResourceType {
        /// No filter (the Go SDK's default).
        UnknownType => "unknown_type",
        /// Instance server.
        InstanceServer => "instance_server",
        /// Instance flexible IP.
        InstanceIp => "instance_ip",
        /// Instance private NIC.
        InstancePrivateNic => "instance_private_nic",
        /// Elastic Metal server.
        BaremetalServer => "baremetal_server",
        /// Elastic Metal private NIC (server private network).
        BaremetalPrivateNic => "baremetal_private_nic",
        /// Load balancer server.
        LbServer => "lb_server",
        /// VPC gateway.
        VpcGateway => "vpc_gateway",
    }
);

api_enum!(
    /// Elastic Metal server status.
    BaremetalServerStatus {
        /// Unknown.
        UnknownStatus => "unknown",
        /// Being delivered.
        Delivering => "delivering",
        /// Delivered and usable.
        Ready => "ready",
        /// Stopping.
        Stopping => "stopping",
        /// Stopped.
        Stopped => "stopped",
        /// Starting.
        Starting => "starting",
        /// Error.
        Error => "error",
        /// Being deleted.
        Deleting => "deleting",
        /// Locked.
        Locked => "locked",
        /// Out of stock.
        OutOfStock => "out_of_stock",
        /// Ordered.
        Ordered => "ordered",
        /// Resetting.
        Resetting => "resetting",
        /// Migrating.
        Migrating => "migrating",
    }
);

impl BaremetalServerStatus {
    /// Whether the Elastic Metal server waiter stops on this status.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Self::Delivering
                | Self::Stopping
                | Self::Starting
                | Self::Deleting
                | Self::Ordered
                | Self::Resetting
                | Self::Migrating
        )
    }
}

api_enum!(
    /// Elastic Metal OS installation status.
    InstallStatus {
        /// Unknown.
        UnknownStatus => "unknown",
        /// Queued.
        ToInstall => "to_install",
        /// Installing.
        Installing => "installing",
        /// Installed.
        Completed => "completed",
        /// Failed.
        Error => "error",
    }
);

impl InstallStatus {
    /// Whether the install waiter stops on this status.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Error | Self::UnknownStatus)
    }
}

api_enum!(
    /// Elastic Metal server option status.
    OptionStatus {
        /// Unknown.
        UnknownStatus => "option_status_unknown",
        /// Enabled.
        Enable => "option_status_enable",
        /// Being enabled.
        Enabling => "option_status_enabling",
        /// Being disabled.
        Disabling => "option_status_disabling",
        /// Failed.
        Error => "option_status_error",
    }
);

impl OptionStatus {
    /// Whether the option waiter stops on this status.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Enable | Self::Error | Self::UnknownStatus)
    }
}

api_enum!(
    /// Elastic Metal server ↔ private network attachment status.
    PrivateNetworkAttachmentStatus {
        /// Unknown.
        UnknownStatus => "unknown",
        /// Being attached.
        Attaching => "attaching",
        /// Attached.
        Attached => "attached",
        /// Error.
        Error => "error",
        /// Being detached.
        Detaching => "detaching",
        /// Locked.
        Locked => "locked",
    }
);

impl PrivateNetworkAttachmentStatus {
    /// Whether the private network waiter stops on this status.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Attached | Self::Error | Self::UnknownStatus | Self::Locked
        )
    }
}

api_enum!(
    /// Elastic Metal offer stock.
    OfferStock {
        /// None left.
        Empty => "empty",
        /// A few left.
        Low => "low",
        /// Available.
        Available => "available",
    }
);

api_enum!(
    /// Elastic Metal IP version.
    IpVersion {
        /// IPv4.
        IPv4 => "IPv4",
        /// IPv6.
        IPv6 => "IPv6",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_region_and_validation() {
        let z = Zone::new("fr-par-1").unwrap();
        assert_eq!(z.region().as_str(), "fr-par");
        assert_eq!(
            Zone::new("it-mil-1").unwrap().region(),
            Region::new("it-mil").unwrap()
        );
        assert!(Zone::new("fr-par").is_err());
        assert!(Zone::new("FR-par-1").is_err());
        assert!(Zone::new("fr-par-x").is_err());
        assert!(Region::new("fr-par-1").is_err());
    }

    #[test]
    fn enum_unknown_fallback_round_trips() {
        let s: ServerState = serde_json::from_str("\"hibernating\"").unwrap();
        assert_eq!(s, ServerState::Unknown("hibernating".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hibernating\"");
        let s: ServerState = serde_json::from_str("\"stopped in place\"").unwrap();
        assert_eq!(s, ServerState::StoppedInPlace);
    }

    #[test]
    fn mac_comparison_is_case_insensitive() {
        assert_eq!(
            MacAddress::new("02:00:00:1b:a4:b6"),
            MacAddress::new("02:00:00:1B:A4:B6")
        );
        assert!(MacAddress::new("02:00:00:1b:a4:b6").matches("02:00:00:1B:A4:B6"));
    }
}
