//! Prometheus metrics, with the metric names of the node we replace.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `kura_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels with only the route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template.
    pub route: String,
}

/// Labels of the artifact counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArtifactLabels {
    /// Protocol kind (`gradle`, `bazel_cas`, …).
    pub kind: &'static str,
    /// `hit`, `miss`, `ok` or `error`.
    pub result: &'static str,
}

/// Labels of `kura_node_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Region.
    pub region: String,
    /// Tenant id.
    pub tenant_id: String,
}

/// Labels of per-token counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Non-secret token label.
    pub token: String,
    /// `read` or `write`.
    pub op: &'static str,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// All metrics of the daemon.
pub struct Metrics {
    registry: Registry,
    /// `kura_http_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `kura_http_request_duration_seconds`.
    pub durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `kura_artifact_reads_total`.
    pub reads: Family<ArtifactLabels, Counter>,
    /// `kura_artifact_writes_total`.
    pub writes: Family<ArtifactLabels, Counter>,
    /// `kura_artifact_read_bytes_total`.
    pub read_bytes: Family<ArtifactLabels, Counter>,
    /// `kura_artifact_write_bytes_total`.
    pub write_bytes: Family<ArtifactLabels, Counter>,
    /// `kura_token_requests_total`.
    pub token_requests: Family<TokenLabels, Counter>,
    /// `kura_store_objects`.
    pub store_objects: Gauge,
    /// `kura_store_bytes`.
    pub store_bytes: Gauge,
    /// `kura_store_ghosts` (evicted objects whose summary entry is kept).
    pub store_ghosts: Gauge,
    /// `kura_store_evictions_total` (mirrors the store's counter).
    pub store_evictions: Gauge,
    /// `kura_store_corrupt_objects_total` (mirrors the store's counter).
    pub store_corrupt: Gauge,
    /// `kura_store_read_cache_hits_total` (mirrors the store's counter).
    pub read_cache_hits: Gauge,
    /// `kura_store_read_cache_misses_total` (mirrors the store's counter).
    pub read_cache_misses: Gauge,
    /// `kura_store_read_cache_bytes`.
    pub read_cache_bytes: Gauge,
    /// `kura_store_read_cache_objects`.
    pub read_cache_objects: Gauge,
    /// `kura_store_log_segments`.
    pub log_segments: Gauge,
    /// `kura_store_log_bytes`.
    pub log_bytes: Gauge,
    /// `kura_store_log_live_bytes`.
    pub log_live_bytes: Gauge,
    /// `kura_process_resident_memory_bytes`.
    pub rss: Gauge,
    /// `kura_http_requests_in_flight`.
    pub in_flight: Gauge,
    /// `kura_http_requests_rejected_total` (overload 503s).
    pub rejected: Counter,
    /// `kura_scrub_passes_total` (completed background scrub passes).
    pub scrub_passes: Counter,
    /// `kura_scrub_bytes_total` (bytes re-read and verified by the scrubber).
    pub scrub_bytes: Counter,
    /// `kura_scrub_corrupt_objects_total` (corrupt objects the scrubber quarantined).
    pub scrub_corrupt: Counter,
    /// Replication metrics (`kura_replication_*`, `kura_outbox_messages`, …).
    pub mesh: crate::mesh::MeshMetrics,
    /// `kura_http_fast_path_requests_total`: requests answered by the
    /// HTTP/1.1 read fast path.
    pub fast_requests: Counter,
    /// `kura_http_fast_path_handoffs_total`: connections handed from the
    /// fast path to the general HTTP stack.
    pub fast_handoffs: Counter,
    /// `kura_http_sendfile_bytes_total`: response bytes sent with `sendfile`.
    pub sendfile_bytes: Counter,
    /// Per-route handles of `requests` and `durations`, so recording a
    /// request does not build label sets (two `String`s) every time.
    route_handles: std::sync::RwLock<std::collections::HashMap<String, Arc<RouteHandles>>>,
}

/// The metric handles of one route.
struct RouteHandles {
    duration: Histogram,
    /// `(method, status)` → counter; a handful per route.
    counters: std::sync::Mutex<Vec<(http::Method, u16, Counter)>>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(region: &str, tenant_id: &str) -> Self {
        let mut registry = Registry::with_prefix("kura");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            request_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            durations.clone(),
        );
        let reads = Family::<ArtifactLabels, Counter>::default();
        registry.register(
            "artifact_reads",
            "Artifact reads by kind and result",
            reads.clone(),
        );
        let writes = Family::<ArtifactLabels, Counter>::default();
        registry.register(
            "artifact_writes",
            "Artifact writes by kind and result",
            writes.clone(),
        );
        let read_bytes = Family::<ArtifactLabels, Counter>::default();
        registry.register(
            "artifact_read_bytes",
            "Artifact bytes served",
            read_bytes.clone(),
        );
        let write_bytes = Family::<ArtifactLabels, Counter>::default();
        registry.register(
            "artifact_write_bytes",
            "Artifact bytes stored",
            write_bytes.clone(),
        );
        let token_requests = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Authenticated requests per token",
            token_requests.clone(),
        );
        let node_info = Family::<NodeLabels, Gauge>::default();
        node_info
            .get_or_create(&NodeLabels {
                region: region.to_owned(),
                tenant_id: tenant_id.to_owned(),
            })
            .set(1);
        registry.register("node_info", "Node identity", node_info);
        let store_objects = Gauge::default();
        registry.register(
            "store_objects",
            "Objects in the store",
            store_objects.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Bytes of object content in the store",
            store_bytes.clone(),
        );
        let store_ghosts = Gauge::default();
        registry.register(
            "store_ghosts",
            "Evicted objects whose digest-summary entry is kept so replication does not fetch them back",
            store_ghosts.clone(),
        );
        let store_evictions = Gauge::default();
        registry.register(
            "store_evictions_total",
            "Objects evicted since start",
            store_evictions.clone(),
        );
        let store_corrupt = Gauge::default();
        registry.register(
            "store_corrupt_objects_total",
            "Corrupt objects found since start",
            store_corrupt.clone(),
        );
        let read_cache_hits = Gauge::default();
        registry.register(
            "store_read_cache_hits_total",
            "Small-object reads served from the read cache since start",
            read_cache_hits.clone(),
        );
        let read_cache_misses = Gauge::default();
        registry.register(
            "store_read_cache_misses_total",
            "Object reads not served from the read cache since start",
            read_cache_misses.clone(),
        );
        let read_cache_bytes = Gauge::default();
        registry.register(
            "store_read_cache_bytes",
            "Bytes held by the read cache of small objects",
            read_cache_bytes.clone(),
        );
        let read_cache_objects = Gauge::default();
        registry.register(
            "store_read_cache_objects",
            "Objects held by the read cache",
            read_cache_objects.clone(),
        );
        let log_segments = Gauge::default();
        registry.register(
            "store_log_segments",
            "Value-log segment files (batch records with small objects' bytes)",
            log_segments.clone(),
        );
        let log_bytes = Gauge::default();
        registry.register(
            "store_log_bytes",
            "Bytes in value-log segments",
            log_bytes.clone(),
        );
        let log_live_bytes = Gauge::default();
        registry.register(
            "store_log_live_bytes",
            "Bytes of small objects' bodies in the value log that objects still point at",
            log_live_bytes.clone(),
        );
        let rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size",
            rss.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        let scrub_passes = Counter::default();
        registry.register(
            "scrub_passes",
            "Completed background scrub passes",
            scrub_passes.clone(),
        );
        let scrub_bytes = Counter::default();
        registry.register(
            "scrub_bytes",
            "Bytes re-read and checksum-verified by the background scrubber",
            scrub_bytes.clone(),
        );
        let scrub_corrupt = Counter::default();
        registry.register(
            "scrub_corrupt_objects",
            "Corrupt objects found (and quarantined) by the background scrubber",
            scrub_corrupt.clone(),
        );
        let rejected = Counter::default();
        registry.register(
            "http_requests_rejected",
            "Requests rejected with 503 (overload)",
            rejected.clone(),
        );
        let fast_requests = Counter::default();
        registry.register(
            "http_fast_path_requests",
            "Requests answered by the HTTP/1.1 read fast path",
            fast_requests.clone(),
        );
        let fast_handoffs = Counter::default();
        registry.register(
            "http_fast_path_handoffs",
            "Connections handed from the read fast path to the general HTTP stack",
            fast_handoffs.clone(),
        );
        let sendfile_bytes = Counter::default();
        registry.register(
            "http_sendfile_bytes",
            "Response bytes sent zero-copy from the blob file with sendfile",
            sendfile_bytes.clone(),
        );
        let mesh = crate::mesh::MeshMetrics::register(&mut registry);
        Self {
            mesh,
            fast_requests,
            fast_handoffs,
            sendfile_bytes,
            route_handles: std::sync::RwLock::default(),
            registry,
            requests,
            durations,
            reads,
            writes,
            read_bytes,
            write_bytes,
            token_requests,
            store_objects,
            store_bytes,
            store_ghosts,
            store_evictions,
            store_corrupt,
            read_cache_hits,
            read_cache_misses,
            read_cache_bytes,
            read_cache_objects,
            log_segments,
            log_bytes,
            log_live_bytes,
            rss,
            in_flight,
            rejected,
            scrub_passes,
            scrub_bytes,
            scrub_corrupt,
        }
    }

    /// Counts one finished request in `kura_http_requests_total` and
    /// `kura_http_request_duration_seconds`.
    pub fn record_request(&self, route: &str, method: &http::Method, status: u16, secs: f64) {
        let cached = self
            .route_handles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .cloned();
        let handles = match cached {
            Some(h) => h,
            None => {
                let h = Arc::new(RouteHandles {
                    duration: self
                        .durations
                        .get_or_create(&RouteLabels {
                            route: route.to_owned(),
                        })
                        .clone(),
                    counters: std::sync::Mutex::default(),
                });
                self.route_handles
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(route.to_owned())
                    .or_insert(h)
                    .clone()
            }
        };
        handles.duration.observe(secs);
        let mut counters = handles
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, c)) = counters
            .iter()
            .find(|(m, s, _)| *s == status && m == method)
        {
            c.inc();
            return;
        }
        let c = self
            .requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.as_str().to_owned(),
                status,
            })
            .clone();
        c.inc();
        counters.push((method.clone(), status, c));
    }

    /// Refreshes the store gauges and renders the OpenMetrics text.
    pub fn render(&self, stats: &kura_store::Stats) -> String {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.store_objects.set(clamp(stats.objects));
        self.store_bytes.set(clamp(stats.bytes));
        self.store_ghosts.set(clamp(stats.ghosts));
        self.store_evictions.set(clamp(stats.evictions));
        self.store_corrupt.set(clamp(stats.corrupt_objects));
        self.read_cache_hits.set(clamp(stats.read_cache_hits));
        self.read_cache_misses.set(clamp(stats.read_cache_misses));
        self.read_cache_bytes.set(clamp(stats.read_cache_bytes));
        self.read_cache_objects.set(clamp(stats.read_cache_objects));
        self.log_segments.set(clamp(stats.log_segments));
        self.log_bytes.set(clamp(stats.log_bytes));
        self.log_live_bytes.set(clamp(stats.log_live_bytes));
        self.rss.set(clamp(resident_memory_bytes()));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
