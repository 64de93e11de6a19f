//! Configuration: command-line flags, each also readable from a `KURA_*`
//! environment variable. Values are parsed after clap so that *every* problem
//! is reported at once, each with its flag and variable name.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kura_store::{Account, Capacity, Durability};

/// Raw flags as clap sees them (strings, validated in [`Args::validate`]).
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "kurad",
    version,
    about = "Kura cache daemon: Gradle, Bazel, ccache, Turborepo and Nx remote caches on local disk"
)]
pub struct Args {
    /// Port of the public cache listener.
    #[arg(long, env = "KURA_PORT", default_value = "4000")]
    pub port: String,
    /// Port of an additional gRPC-only (REAPI) listener; gRPC is always served
    /// on the public port too.
    #[arg(long, env = "KURA_GRPC_PORT")]
    pub grpc_port: Option<String>,
    /// Address to bind the public listener to.
    #[arg(long, env = "KURA_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Data directory of the store (created if missing).
    #[arg(long, env = "KURA_DATA_DIR", default_value = "./kura-data")]
    pub data_dir: PathBuf,
    /// Directory for temporary upload state (defaults to `<data dir>/tmp`).
    #[arg(long, env = "KURA_TMP_DIR")]
    pub tmp_dir: Option<PathBuf>,
    /// The account (tenant) this node serves; compatibility routes must name it.
    #[arg(long, env = "KURA_TENANT_ID")]
    pub tenant_id: Option<String>,
    /// Region label reported by `/up` and metrics.
    #[arg(long, env = "KURA_REGION", default_value = "local")]
    pub region: String,
    /// This node's peer URL (`https://host:7443`), reported by `/up`.
    #[arg(long, env = "KURA_NODE_URL")]
    pub node_url: Option<String>,
    /// Maximum bytes of a keyvalue PUT body.
    #[arg(long, env = "KURA_MAX_KEYVALUE_BYTES", default_value = "1048576")]
    pub max_keyvalue_bytes: String,
    /// Maximum bytes of a Gradle entry (`/cache/`, `/api/cache/gradle/`).
    #[arg(long, env = "KURA_MAX_GRADLE_BYTES", default_value = "104857600")]
    pub max_gradle_bytes: String,
    /// Maximum bytes of an Xcode CAS object (`/api/cache/cas/`).
    #[arg(long, env = "KURA_MAX_XCODE_CAS_BYTES", default_value = "26214400")]
    pub max_xcode_cas_bytes: String,
    /// Maximum bytes of any other object (Bazel, ccache, turbo, Nx, Metro).
    #[arg(long, env = "KURA_MAX_OBJECT_BYTES", default_value = "4294967296")]
    pub max_object_bytes: String,
    /// Objects up to this size are SHA-256-verified while they stream to the
    /// client (a corrupt one ends in a truncated response); larger file-backed
    /// objects stream straight from their file in 1 MiB reads without hashing,
    /// as `sendfile` would, and rely on the background scrubber
    /// (`KURA_SCRUB_BYTES_PER_SECOND`). `unlimited` verifies every read.
    #[arg(long, env = "KURA_VERIFY_READS_MAX_BYTES", default_value = "16MiB")]
    pub verify_reads_max_bytes: String,
    /// Serve plain HTTP/1.1 object reads and small writes (GET/HEAD, and PUT
    /// up to 1 MiB, of the Gradle, Bazel, ccache and Nx mount points) on a lean
    /// path that writes responses itself, with `sendfile` for large objects;
    /// anything else moves the connection to the general HTTP stack. `off`
    /// sends every request through the general stack.
    #[arg(long, env = "KURA_HTTP_FAST_PATH", default_value = "on")]
    pub http_fast_path: String,
    /// Memory for recently read small objects, served without touching the
    /// metadata database or re-hashing (they were verified when cached);
    /// `0` disables the cache.
    #[arg(long, env = "KURA_READ_CACHE_BYTES", default_value = "32MiB")]
    pub read_cache_bytes: String,
    /// Memory for the metadata database's pages (small objects included). It
    /// also bounds the pages a redo-log checkpoint writes while PUTs wait.
    #[arg(long, env = "KURA_METADATA_CACHE_BYTES", default_value = "64MiB")]
    pub metadata_cache_bytes: String,
    /// Sync the metadata database in the background between checkpoints
    /// (`on`/`off`): shorter write stalls at checkpoints, for 15-30 % less
    /// durable small-PUT throughput (best with a 16 MiB metadata cache).
    #[arg(long, env = "KURA_BACKGROUND_WRITEBACK", default_value = "off")]
    pub background_writeback: String,
    /// Background scrub rate: every stored object is re-read and its SHA-256
    /// checked at most this many bytes per second (corrupt objects are
    /// quarantined, and a mesh peer's copy replaces them); `0` disables it.
    #[arg(long, env = "KURA_SCRUB_BYTES_PER_SECOND", default_value = "32MiB")]
    pub scrub_bytes_per_second: String,
    /// Seconds between the end of one scrub pass and the start of the next
    /// (the first pass starts this long after startup).
    #[arg(long, env = "KURA_SCRUB_INTERVAL_SECS", default_value = "3600")]
    pub scrub_interval_secs: String,
    /// Store capacity: bytes with an optional unit (`50GiB`, `500M`) or a
    /// percentage of the filesystem (`80%`); `unlimited` for none.
    #[arg(long, env = "KURA_CAPACITY", default_value = "unlimited")]
    pub capacity: String,
    /// Durability: `always` (fsync before acknowledging, group commit),
    /// `batch` (acknowledge, fsync within 50 ms) or `none`.
    #[arg(long, env = "KURA_DURABILITY", default_value = "always")]
    pub durability: String,
    /// Tokens file enabling authentication (see `docs/kurad.md`); off when unset.
    #[arg(long, env = "KURA_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "KURA_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Maximum requests in flight; more get 503 with `Retry-After`.
    #[arg(long, env = "KURA_MAX_IN_FLIGHT", default_value = "1024")]
    pub max_in_flight: String,
    /// Seconds a request body may stall (no bytes received) before it is cut.
    #[arg(long, env = "KURA_BODY_TIMEOUT_SECS", default_value = "30")]
    pub body_timeout_secs: String,
    /// Seconds to finish in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "KURA_SHUTDOWN_GRACE_SECS", default_value = "25")]
    pub shutdown_grace_secs: String,
    /// Replication mesh flags.
    #[command(flatten)]
    pub mesh: crate::mesh::MeshArgs,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-protocol request body limits, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Keyvalue PUT bodies.
    pub keyvalue: u64,
    /// Gradle entries.
    pub gradle: u64,
    /// Xcode CAS objects.
    pub xcode_cas: u64,
    /// Everything else.
    pub object: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            keyvalue: 1 << 20,
            gradle: 100 << 20,
            xcode_cas: 25 << 20,
            object: 4 << 30,
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener address.
    pub listen: SocketAddr,
    /// gRPC-only listener address (`KURA_GRPC_PORT`), if any.
    pub grpc_listen: Option<SocketAddr>,
    /// Store data directory.
    pub data_dir: PathBuf,
    /// Temporary upload directory.
    pub tmp_dir: PathBuf,
    /// The account objects are stored under (`KURA_TENANT_ID`, else `local`).
    pub account: Account,
    /// Whether a tenant id was configured (compatibility routes must then match it).
    pub tenant_configured: bool,
    /// Region label.
    pub region: String,
    /// Peer URL, if any.
    pub node_url: Option<String>,
    /// Body limits.
    pub limits: Limits,
    /// Largest object verified while streaming (`u64::MAX`: all).
    pub verify_reads_max: u64,
    /// Whether plain HTTP/1.1 object reads take the fast path
    /// (`KURA_HTTP_FAST_PATH`).
    pub http_fast_path: bool,
    /// Bytes of the store's read cache of small objects
    /// (`KURA_READ_CACHE_BYTES`; 0: none).
    pub read_cache_bytes: usize,
    /// Bytes of the metadata database's page cache (`KURA_METADATA_CACHE_BYTES`).
    pub metadata_cache_bytes: usize,
    /// Background sync of the metadata database (`KURA_BACKGROUND_WRITEBACK`).
    pub background_writeback: bool,
    /// Background scrub rate in bytes/s (`None`: no scrubbing).
    pub scrub_rate: Option<u64>,
    /// Pause between scrub passes.
    pub scrub_interval: Duration,
    /// Store capacity.
    pub capacity: Capacity,
    /// Store durability.
    pub durability: Durability,
    /// Tokens file.
    pub auth_tokens_file: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// In-flight request cap.
    pub max_in_flight: usize,
    /// Body stall timeout.
    pub body_timeout: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Replication mesh, when enabled.
    pub mesh: Option<crate::mesh::MeshSettings>,
}

impl Config {
    /// A configuration for tests: loopback port 0, the given data directory.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_listen: None,
            tmp_dir: data_dir.join("tmp"),
            data_dir,
            account: local_account(),
            tenant_configured: false,
            region: "local".into(),
            node_url: None,
            limits: Limits::default(),
            verify_reads_max: DEFAULT_VERIFY_READS_MAX,
            http_fast_path: true,
            read_cache_bytes: 32 << 20,
            metadata_cache_bytes: 64 << 20,
            background_writeback: false,
            scrub_rate: None,
            scrub_interval: Duration::from_secs(3600),
            capacity: Capacity::Unlimited,
            durability: Durability::Always,
            auth_tokens_file: None,
            log_format: LogFormat::Text,
            max_in_flight: 1024,
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            mesh: None,
        }
    }
}

/// The account used when no tenant is configured.
#[allow(clippy::expect_used)]
pub fn local_account() -> Account {
    Account::new("local").expect("\"local\" matches the account grammar")
}

/// One configuration problem, naming the flag and the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, e.g. `--capacity`.
    pub flag: &'static str,
    /// The environment variable, e.g. `KURA_CAPACITY`.
    pub env: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.env, self.flag, self.message)
    }
}

/// Default of `KURA_VERIFY_READS_MAX_BYTES`.
pub const DEFAULT_VERIFY_READS_MAX: u64 = 16 << 20;

/// Parses an on/off switch: `on`, `true`, `1` or `off`, `false`, `0`.
pub fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

/// Parses a byte size: a plain number or a number with a unit
/// (`K`, `M`, `G`, `T` are powers of 1000; `Ki`, `Mi`, `Gi`, `Ti` powers of 1024;
/// an optional trailing `B`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size (expected e.g. 1048576, 500M, 50GiB)"
        ));
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    let unit = unit.trim();
    let unit = unit.strip_suffix('B').unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => return Err(format!("{s:?} has an unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl Args {
    /// Validates every value, returning all problems at once.
    pub fn validate(&self) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |flag: &'static str, env: &'static str, message: String| {
            errors.push(ConfigError { flag, env, message });
        };

        let port: Option<u16> = match self.port.trim().parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                err(
                    "--port",
                    "KURA_PORT",
                    format!("{:?} is not a port number (0-65535)", self.port),
                );
                None
            }
        };
        let grpc_port: Option<u16> = match &self.grpc_port {
            None => None,
            Some(p) => match p.trim().parse::<u16>() {
                Ok(p) => Some(p),
                Err(_) => {
                    err(
                        "--grpc-port",
                        "KURA_GRPC_PORT",
                        format!("{p:?} is not a port number (0-65535)"),
                    );
                    None
                }
            },
        };
        let ip: Option<IpAddr> = match self.bind_address.trim().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                err(
                    "--bind-address",
                    "KURA_BIND_ADDRESS",
                    format!("{:?} is not an IP address", self.bind_address),
                );
                None
            }
        };
        let account = match &self.tenant_id {
            Some(t) => match Account::new(t.as_str()) {
                Ok(a) => Some(a),
                Err(e) => {
                    err("--tenant-id", "KURA_TENANT_ID", format!("{t:?}: {e}"));
                    None
                }
            },
            None => Some(local_account()),
        };
        if self.region.trim().is_empty() {
            err("--region", "KURA_REGION", "must not be empty".into());
        }
        if let Some(url) = &self.node_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
            if !ok {
                err(
                    "--node-url",
                    "KURA_NODE_URL",
                    format!("{url:?} is not an http(s) URL with a host"),
                );
            }
        }
        let mut size = |v: &str, flag: &'static str, env: &'static str| match parse_bytes(v) {
            Ok(0) => {
                err(flag, env, "must be greater than zero".into());
                0
            }
            Ok(n) => n,
            Err(e) => {
                err(flag, env, e);
                0
            }
        };
        let limits = Limits {
            keyvalue: size(
                &self.max_keyvalue_bytes,
                "--max-keyvalue-bytes",
                "KURA_MAX_KEYVALUE_BYTES",
            ),
            gradle: size(
                &self.max_gradle_bytes,
                "--max-gradle-bytes",
                "KURA_MAX_GRADLE_BYTES",
            ),
            xcode_cas: size(
                &self.max_xcode_cas_bytes,
                "--max-xcode-cas-bytes",
                "KURA_MAX_XCODE_CAS_BYTES",
            ),
            object: size(
                &self.max_object_bytes,
                "--max-object-bytes",
                "KURA_MAX_OBJECT_BYTES",
            ),
        };
        let verify_reads_max = match self.verify_reads_max_bytes.trim() {
            "unlimited" => u64::MAX,
            v => parse_bytes(v).unwrap_or_else(|e| {
                err("--verify-reads-max-bytes", "KURA_VERIFY_READS_MAX_BYTES", e);
                0
            }),
        };
        let read_cache_bytes = parse_bytes(self.read_cache_bytes.trim()).unwrap_or_else(|e| {
            err("--read-cache-bytes", "KURA_READ_CACHE_BYTES", e);
            0
        });
        let metadata_cache_bytes = parse_bytes(self.metadata_cache_bytes.trim())
            .and_then(|n| {
                if n < 1 << 20 {
                    Err("must be at least 1MiB".to_owned())
                } else {
                    Ok(n)
                }
            })
            .unwrap_or_else(|e| {
                err("--metadata-cache-bytes", "KURA_METADATA_CACHE_BYTES", e);
                0
            });
        let background_writeback = parse_switch(&self.background_writeback).unwrap_or_else(|e| {
            err("--background-writeback", "KURA_BACKGROUND_WRITEBACK", e);
            false
        });
        let http_fast_path = parse_switch(&self.http_fast_path).unwrap_or_else(|e| {
            err("--http-fast-path", "KURA_HTTP_FAST_PATH", e);
            true
        });
        let scrub_rate = match parse_bytes(self.scrub_bytes_per_second.trim()) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) => {
                err(
                    "--scrub-bytes-per-second",
                    "KURA_SCRUB_BYTES_PER_SECOND",
                    format!("{e}; 0 disables scrubbing"),
                );
                None
            }
        };
        let capacity = match self.capacity.trim() {
            "unlimited" | "" => Capacity::Unlimited,
            c => match c.strip_suffix('%') {
                Some(pct) => match pct.trim().parse::<u8>() {
                    Ok(p) if (1..=100).contains(&p) => Capacity::PercentOfFilesystem(p),
                    _ => {
                        err(
                            "--capacity",
                            "KURA_CAPACITY",
                            format!("{c:?}: a percentage must be 1%-100%"),
                        );
                        Capacity::Unlimited
                    }
                },
                None => match parse_bytes(c) {
                    Ok(n) if n > 0 => Capacity::Bytes(n),
                    Ok(_) => {
                        err(
                            "--capacity",
                            "KURA_CAPACITY",
                            "must be greater than zero".into(),
                        );
                        Capacity::Unlimited
                    }
                    Err(e) => {
                        err(
                            "--capacity",
                            "KURA_CAPACITY",
                            format!("{e}; or a percentage like 80%, or unlimited"),
                        );
                        Capacity::Unlimited
                    }
                },
            },
        };
        let durability = match self.durability.trim() {
            "always" => Durability::Always,
            "batch" => Durability::Batch {
                max_delay: Duration::from_millis(50),
            },
            "none" => Durability::None {
                checkpoint: Duration::from_secs(1),
            },
            d => {
                err(
                    "--durability",
                    "KURA_DURABILITY",
                    format!("{d:?}: expected always, batch or none"),
                );
                Durability::Always
            }
        };
        let log_format = match self.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            f => {
                err(
                    "--log-format",
                    "KURA_LOG_FORMAT",
                    format!("{f:?}: expected text or json"),
                );
                LogFormat::Text
            }
        };
        let mut count =
            |v: &str, flag: &'static str, env: &'static str| match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    err(flag, env, format!("{v:?} is not a positive integer"));
                    1
                }
            };
        let max_in_flight = count(&self.max_in_flight, "--max-in-flight", "KURA_MAX_IN_FLIGHT");
        let body_timeout = count(
            &self.body_timeout_secs,
            "--body-timeout-secs",
            "KURA_BODY_TIMEOUT_SECS",
        );
        let grace = count(
            &self.shutdown_grace_secs,
            "--shutdown-grace-secs",
            "KURA_SHUTDOWN_GRACE_SECS",
        );
        let scrub_interval = count(
            &self.scrub_interval_secs,
            "--scrub-interval-secs",
            "KURA_SCRUB_INTERVAL_SECS",
        );
        if let Some(f) = &self.auth_tokens_file {
            if !f.is_file() {
                err(
                    "--auth-tokens-file",
                    "KURA_AUTH_TOKENS_FILE",
                    format!("{} is not a readable file", f.display()),
                );
            }
        }

        let mesh = match self.mesh.validate(self.node_url.as_deref()) {
            Ok(m) => m,
            Err(es) => {
                errors.extend(es);
                None
            }
        };
        match (errors.is_empty(), port, ip, account) {
            (true, Some(port), Some(ip), Some(account)) => Ok(Config {
                listen: SocketAddr::new(ip, port),
                grpc_listen: grpc_port.map(|p| SocketAddr::new(ip, p)),
                tmp_dir: self
                    .tmp_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("tmp")),
                data_dir: self.data_dir.clone(),
                account,
                tenant_configured: self.tenant_id.is_some(),
                region: self.region.trim().to_owned(),
                node_url: self.node_url.clone(),
                limits,
                verify_reads_max,
                http_fast_path,
                read_cache_bytes: usize::try_from(read_cache_bytes).unwrap_or(usize::MAX),
                metadata_cache_bytes: usize::try_from(metadata_cache_bytes).unwrap_or(usize::MAX),
                background_writeback,
                scrub_rate,
                scrub_interval: Duration::from_secs(scrub_interval),
                capacity,
                durability,
                auth_tokens_file: self.auth_tokens_file.clone(),
                log_format,
                max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
                body_timeout: Duration::from_secs(body_timeout),
                shutdown_grace: Duration::from_secs(grace),
                mesh,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args::try_parse_from(["kurad"]).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = args().validate().unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.account.as_str(), "local");
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn all_errors_are_reported_together() {
        let mut a = args();
        a.port = "70000".into();
        a.capacity = "lots".into();
        a.durability = "sometimes".into();
        a.max_keyvalue_bytes = "0".into();
        a.verify_reads_max_bytes = "lots".into();
        a.read_cache_bytes = "lots".into();
        a.metadata_cache_bytes = "1KiB".into();
        a.background_writeback = "sometimes".into();
        a.http_fast_path = "maybe".into();
        a.tenant_id = Some("bad tenant".into());
        let errs = a.validate().unwrap_err();
        let envs: Vec<_> = errs.iter().map(|e| e.env).collect();
        assert_eq!(
            envs,
            [
                "KURA_PORT",
                "KURA_TENANT_ID",
                "KURA_MAX_KEYVALUE_BYTES",
                "KURA_VERIFY_READS_MAX_BYTES",
                "KURA_READ_CACHE_BYTES",
                "KURA_METADATA_CACHE_BYTES",
                "KURA_BACKGROUND_WRITEBACK",
                "KURA_HTTP_FAST_PATH",
                "KURA_CAPACITY",
                "KURA_DURABILITY"
            ]
        );
        assert!(errs[0].to_string().starts_with("KURA_PORT (--port): "));
    }

    #[test]
    fn mesh_settings_are_validated_with_the_rest() {
        let mut a = args();
        // Mesh settings are checked once the mesh is asked for (a peer here).
        a.mesh.peers = vec!["https://127.0.0.1:7443".into()];
        a.mesh.ghost_ttl_secs = "a week".into();
        a.mesh.outbox_max_messages = "0".into();
        let envs: Vec<_> = a.validate().unwrap_err().iter().map(|e| e.env).collect();
        assert!(envs.contains(&"KURA_GHOST_TTL_SECS"), "{envs:?}");
        assert!(envs.contains(&"KURA_OUTBOX_MAX_MESSAGES"), "{envs:?}");
        a.mesh.ghost_ttl_secs = "0".into();
        a.mesh.outbox_max_messages = "10".into();
        let envs: Vec<_> = a.validate().unwrap_err().iter().map(|e| e.env).collect();
        assert!(
            !envs.contains(&"KURA_GHOST_TTL_SECS"),
            "0 keeps ghosts forever"
        );
    }

    #[test]
    fn sizes_and_capacity_parse() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("50GiB"), Ok(50 << 30));
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("5XB").is_err());
        assert!(parse_bytes("99999999999999999999").is_err());
        let mut a = args();
        assert_eq!(a.validate().unwrap().verify_reads_max, 16 << 20);
        a.verify_reads_max_bytes = "unlimited".into();
        assert_eq!(a.validate().unwrap().verify_reads_max, u64::MAX);
        assert_eq!(a.validate().unwrap().scrub_rate, Some(32 << 20));
        a.scrub_bytes_per_second = "0".into();
        assert_eq!(a.validate().unwrap().scrub_rate, None);
        a.scrub_bytes_per_second = "fast".into();
        a.scrub_interval_secs = "0".into();
        let envs: Vec<_> = a.validate().unwrap_err().iter().map(|e| e.env).collect();
        assert_eq!(
            envs,
            ["KURA_SCRUB_BYTES_PER_SECOND", "KURA_SCRUB_INTERVAL_SECS"]
        );
        let mut a = args();
        a.capacity = "80%".into();
        assert_eq!(
            a.validate().unwrap().capacity,
            Capacity::PercentOfFilesystem(80)
        );
        a.capacity = "101%".into();
        assert!(a.validate().is_err());
    }
}
