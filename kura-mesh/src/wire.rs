//! The peer protocol's messages and their (total) parsers.
//!
//! Routes, all under `/_internal/` on the mTLS peer listener, HTTP/2:
//!
//! | method | path | request | response |
//! |---|---|---|---|
//! | `GET` | `/_internal/status` | – | [`Status`] JSON |
//! | `POST` | `/_internal/replicate` | header [`RECORD_HEADER`]; body = object bytes for a put | [`PushOutcome`] JSON |
//! | `POST` | `/_internal/summary` | [`SummaryRequest`] JSON | [`SummaryResponse`] JSON |
//! | `POST` | `/_internal/buckets` | [`BucketRequest`] JSON | [`BucketResponse`] JSON |
//! | `GET` | `/_internal/object?namespace=N&key=K` | – | object bytes; header [`RECORD_HEADER`] |
//! | `GET` | `/_internal/list?namespace=N[&after=K][&limit=L]` | – | [`ListResponse`] JSON |
//! | `POST` | `/_internal/repair?node=ID` | – | `202`: the caller (node `ID`) dropped its backlog for us; we pull from it soon |
//!
//! Keys in query strings are base64url (no padding) so that any valid key travels
//! unchanged. A record header is the store's compact [`ReplicatedRecord`] encoding,
//! base64url. Pushes of a namespace tombstone or key deletion carry no body. A push
//! whose record the receiver would not apply is answered `{"applied":false}` before
//! a byte of the body is read.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kura_store::summary::{BucketEntry, NodeHash};
use kura_store::{Digest, Hlc, Key, Namespace, NodeId, ReplicatedRecord, Version};
use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// Header carrying a [`ReplicatedRecord`] (base64url of its compact encoding).
pub const RECORD_HEADER: &str = "kura-record";

/// Request header of a status probe carrying the prober's own peer URL
/// (`https://host:port`): a node that dials us over mTLS announces itself, and we
/// dial it back (inbound peer learning).
pub const NODE_URL_HEADER: &str = "kura-node-url";
/// Largest accepted JSON request body (summary and bucket requests).
pub const MAX_JSON_REQUEST: usize = 1 << 20;
/// Largest accepted JSON response body on the client side.
pub const MAX_JSON_RESPONSE: usize = 64 << 20;
/// Most summary nodes per [`SummaryRequest`].
pub const MAX_SUMMARY_NODES: usize = 4096;
/// Most leaves per [`BucketRequest`].
pub const MAX_BUCKET_LEAVES: usize = 1024;
/// Most entries per [`ListResponse`].
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Encodes a record for [`RECORD_HEADER`].
pub fn encode_record(record: &ReplicatedRecord) -> String {
    URL_SAFE_NO_PAD.encode(record.to_bytes())
}

/// Decodes a [`RECORD_HEADER`] value. Total: bad input is an error, never a panic.
pub fn decode_record(value: &[u8]) -> Result<ReplicatedRecord, WireError> {
    if value.len() > 16 * 1024 {
        return Err(WireError::TooLarge {
            what: "record header",
            limit: 16 * 1024,
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| WireError::Invalid {
            what: "record header",
            reason: e.to_string(),
        })?;
    ReplicatedRecord::from_bytes(&bytes).map_err(|e| WireError::Invalid {
        what: "record",
        reason: e.to_string(),
    })
}

/// Encodes a key for a query string.
pub fn encode_key(key: &Key) -> String {
    URL_SAFE_NO_PAD.encode(key.as_str())
}

/// Decodes a key from a query string.
pub fn decode_key(value: &str) -> Result<Key, WireError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| WireError::Invalid {
            what: "key",
            reason: e.to_string(),
        })?;
    let s = String::from_utf8(bytes).map_err(|_| WireError::Invalid {
        what: "key",
        reason: "not UTF-8".into(),
    })?;
    Key::new(s).map_err(|e| WireError::Invalid {
        what: "key",
        reason: e.to_string(),
    })
}

/// Parses a namespace field.
pub fn parse_namespace(s: &str) -> Result<Namespace, WireError> {
    Namespace::new(s).map_err(|e| WireError::Invalid {
        what: "namespace",
        reason: e.to_string(),
    })
}

/// Query parameters of a request path (`a=b&c=d`), without percent-decoding (every
/// value this protocol sends is already URL-safe).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Parses a JSON message. Total.
pub fn parse_json<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|e| WireError::Invalid {
        what,
        reason: e.to_string(),
    })
}

fn hex(h: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(h.len() * 2);
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses a 64-hex-character node hash.
pub fn parse_hash(what: &'static str, s: &str) -> Result<NodeHash, WireError> {
    Digest::from_hex(s)
        .map(|d| d.0)
        .map_err(|e| WireError::Invalid {
            what,
            reason: e.to_string(),
        })
}

/// Hex form of a node hash.
pub fn hash_hex(h: &NodeHash) -> String {
    hex(h)
}

/// A version on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVersion {
    /// Hybrid logical clock value.
    pub hlc: u64,
    /// Node id.
    pub node: u64,
}

impl From<Version> for WireVersion {
    fn from(v: Version) -> Self {
        Self {
            hlc: v.hlc.0,
            node: v.node.0,
        }
    }
}

impl From<WireVersion> for Version {
    fn from(v: WireVersion) -> Self {
        Version::new(Hlc(v.hlc), NodeId(v.node))
    }
}

/// Root hash of one namespace, in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRoot {
    /// Namespace name.
    pub namespace: String,
    /// Hex root hash of its digest summary.
    pub root: String,
}

/// A namespace tombstone, in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceTombstone {
    /// Namespace name.
    pub namespace: String,
    /// Its version.
    pub version: WireVersion,
}

/// `GET /_internal/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The answering node's id.
    pub node_id: u64,
    /// Its account (tenant).
    pub account: String,
    /// Its region.
    pub region: String,
    /// Its peer URL, if configured.
    pub node_url: String,
    /// Its current HLC.
    pub hlc: u64,
    /// Last change-feed sequence number.
    pub last_seq: u64,
    /// Root of every namespace that has summary entries (objects or key tombstones).
    pub namespaces: Vec<NamespaceRoot>,
    /// Every namespace tombstone.
    pub tombstones: Vec<NamespaceTombstone>,
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// Whether the receiver applied the record (false: it already had it or something newer).
    pub applied: bool,
}

/// A push refused after its response had started (see [`PushReply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushFailure {
    /// The HTTP status the refusal would have had (400 for a body that does not
    /// match its length or digest, 507 when the receiver is full, …).
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// The last JSON document of a push response.
///
/// A push whose body the receiver reads is answered `200` at once; while the
/// receiver streams the body to disk and makes it durable (an `fsync` of a multi-GB
/// object can take seconds after the last byte arrived) it sends
/// [`PUSH_HEARTBEAT`] bytes, so the sender's stall watchdog sees a live transfer.
/// The outcome or the refusal follows the heartbeats. Pushes answered before the
/// body is read (stale, refused) carry a plain [`PushOutcome`] or an error status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PushReply {
    /// Applied or not.
    Outcome(PushOutcome),
    /// Refused.
    Failure(PushFailure),
}

/// A heartbeat in a streamed push response (JSON whitespace).
pub const PUSH_HEARTBEAT: &[u8] = b"\n";

/// Parses a push response body: heartbeats, then one [`PushReply`].
pub fn parse_push_reply(bytes: &[u8]) -> Result<PushReply, WireError> {
    parse_json("push outcome", bytes.trim_ascii())
}

/// `POST /_internal/summary`: children of summary nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRequest {
    /// Namespace.
    pub namespace: String,
    /// `(level, index)` of each node whose 16 children are wanted (level < 3).
    pub nodes: Vec<(u8, u32)>,
}

/// Answer to a [`SummaryRequest`]: 16 hex child hashes per requested node, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryResponse {
    /// Children per node.
    pub children: Vec<Vec<String>>,
}

/// `POST /_internal/buckets`: entries of leaf buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRequest {
    /// Namespace.
    pub namespace: String,
    /// Leaf indices (< 4096).
    pub leaves: Vec<u32>,
}

/// One bucket entry on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Key.
    pub key: String,
    /// Version.
    pub version: WireVersion,
    /// Hex SHA-256 when present; `None` for a key tombstone.
    pub digest: Option<String>,
    /// Whether the peer holds the object's bytes; `false` for a ghost (evicted, entry
    /// kept). Omitted when `true`, and a missing field means `true`, so older peers
    /// interoperate.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub held: bool,
    /// For a ghost: when the peer evicted it, ms since the Unix epoch (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evicted_ms: u64,
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` signature
fn is_yes(b: &bool) -> bool {
    *b
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` signature
fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl WireEntry {
    /// From a store bucket entry.
    pub fn from_entry(e: &BucketEntry) -> Self {
        Self {
            key: e.key.as_str().to_owned(),
            version: e.version.into(),
            digest: match e.payload {
                kura_store::merge::Payload::Present(d) => Some(d.to_hex()),
                kura_store::merge::Payload::Deleted => None,
            },
            held: e.held,
            evicted_ms: if e.held { 0 } else { e.evicted_ms },
        }
    }

    /// Validates into a store bucket entry.
    pub fn to_entry(&self) -> Result<BucketEntry, WireError> {
        let key = Key::new(self.key.as_str()).map_err(|e| WireError::Invalid {
            what: "key",
            reason: e.to_string(),
        })?;
        let payload = match &self.digest {
            None => kura_store::merge::Payload::Deleted,
            Some(h) => kura_store::merge::Payload::Present(Digest::from_hex(h).map_err(|e| {
                WireError::Invalid {
                    what: "digest",
                    reason: e.to_string(),
                }
            })?),
        };
        // Only a present entry can be a ghost.
        let held = self.held || payload == kura_store::merge::Payload::Deleted;
        Ok(BucketEntry {
            key,
            version: self.version.into(),
            payload,
            held,
            evicted_ms: if held { 0 } else { self.evicted_ms },
        })
    }
}

/// Answer to a [`BucketRequest`]: entries per requested leaf, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketResponse {
    /// Entries per leaf.
    pub buckets: Vec<Vec<WireEntry>>,
}

/// One object in a [`ListResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedObject {
    /// Key.
    pub key: String,
    /// Length in bytes.
    pub len: u64,
    /// Hex SHA-256.
    pub digest: String,
    /// Version.
    pub version: WireVersion,
}

/// `GET /_internal/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Objects in key order.
    pub objects: Vec<ListedObject>,
    /// Pass as `after` for the next page; `None` at the end.
    pub next_after: Option<String>,
}

/// Error body of the peer API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_store::ObjectId;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = ReplicatedRecord> {
        (
            "[a-z0-9][a-z0-9._-]{0,8}",
            "[a-z0-9][a-z0-9._-]{0,8}",
            "[a-zA-Z0-9:/é _-]{0,20}[a-z]",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            0u8..3,
        )
            .prop_map(|(a, n, k, h, node, len, d, kind)| {
                let id = ObjectId::parse(
                    &a,
                    &n,
                    &k.replace("//", "/")
                        .trim_start_matches('/')
                        .replace("./", "x/"),
                )
                .unwrap_or_else(|_| ObjectId::parse("a", "n", "k").unwrap());
                let version = Version::new(Hlc(h), NodeId(node));
                match kind {
                    0 => ReplicatedRecord::Put {
                        id,
                        version,
                        content_type: "application/octet-stream".into(),
                        len,
                        digest: Digest(d),
                        refs: vec![],
                    },
                    1 => ReplicatedRecord::Delete { id, version },
                    _ => ReplicatedRecord::DeleteNamespace {
                        namespace: id.namespace_id(),
                        version,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn record_header_round_trips(r in record()) {
            let h = encode_record(&r);
            prop_assert!(http::HeaderValue::from_str(&h).is_ok());
            prop_assert_eq!(decode_record(h.as_bytes()).unwrap(), r);
        }

        #[test]
        fn decode_record_is_total(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_record(&b);
        }

        #[test]
        fn key_param_round_trips(k in "[a-zA-Z0-9:é_-][a-zA-Z0-9:/é _-]{0,40}") {
            if let Ok(key) = Key::new(k) {
                prop_assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
            }
        }

        #[test]
        fn wire_entry_round_trips(k in "[a-z][a-z0-9/_-]{0,20}", h in any::<u64>(), n in any::<u64>(), d in proptest::option::of(any::<[u8; 32]>()), ghost in proptest::option::of(any::<u64>())) {
            let key = Key::new(k).unwrap();
            let held = ghost.is_none() || d.is_none();
            let e = BucketEntry {
                key,
                version: Version::new(Hlc(h), NodeId(n)),
                payload: match d { Some(d) => kura_store::merge::Payload::Present(Digest(d)), None => kura_store::merge::Payload::Deleted },
                held,
                evicted_ms: if held { 0 } else { ghost.unwrap_or(0) },
            };
            let w = WireEntry::from_entry(&e);
            let json = serde_json::to_vec(&w).unwrap();
            let back: WireEntry = parse_json("entry", &json).unwrap();
            prop_assert_eq!(back.to_entry().unwrap(), e);
        }
    }

    /// Entries from peers that predate ghosts (no `held` field) are held.
    #[test]
    fn wire_entry_without_held_flag_is_held() {
        let json = br#"{"key":"k","version":{"hlc":5,"node":1},"digest":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        let w: WireEntry = parse_json("entry", json).unwrap();
        assert!(w.held);
        assert!(w.to_entry().unwrap().held);
        let ghost = WireEntry {
            held: false,
            evicted_ms: 7,
            ..w
        };
        let json = serde_json::to_string(&ghost).unwrap();
        assert!(
            json.contains(r#""held":false"#) && json.contains(r#""evicted_ms":7"#),
            "{json}"
        );
        let e = ghost.to_entry().unwrap();
        assert!(!e.held);
        assert_eq!(e.evicted_ms, 7);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&b=2"), "b"), Some("2"));
        assert_eq!(query_param(Some("a=1&b"), "b"), None);
        assert_eq!(query_param(None, "a"), None);
    }
}
